"""TLS policy on implicit and STARTTLS listeners (research/protocols.md §14
H56-H61): no TLS 1.0/1.1, no renegotiation, no compression, strict ALPN
(ALPACA), certificates chosen by SNI (strict or not), and no 0-RTT data.

openssl s_client does what Python's ssl cannot (old versions,
renegotiation, early data); hand-made ClientHellos check compression.
"""

import base64
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
from imaplib import IMAP4

from wire import GREETING, StarttlsCase, client_hello, read_record, \
    set_compression


def s_client(port, *args, starttls=None, data=b"", timeout=30):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    if starttls:
        cmd += ["-starttls", starttls]
    return subprocess.run(cmd + list(args), input=data,
                          capture_output=True, timeout=timeout)


def with_early_data(pem):
    """A copy of an SSL_SESSION (PEM) that claims its ticket allows 16384
    bytes of early data, so s_client sends some (OpenSSL 3.0's
    SSL_SESSION_ASN1: max_early_data is [15] EXPLICIT INTEGER)."""
    lines = [l for l in pem.splitlines() if l and not l.startswith("-----")]
    der = base64.b64decode("".join(lines))

    def tlv(i):
        length, j = der[i + 1], i + 2
        if length & 0x80:
            n = length & 0x7f
            length, j = int.from_bytes(der[j:j + n], "big"), j + n
        return der[i], j + length

    tag, end = tlv(0)
    assert tag == 0x30
    i = 2 + (der[1] & 0x7f if der[1] & 0x80 else 0)
    fields = []
    while i < end:
        t, e = tlv(i)
        fields.append((t, der[i:e]))
        i = e
    field = bytes([0xAF, 4, 2, 2, 0x40, 0x00])
    out, placed = [], False
    for t, raw in fields:
        if t == 0xAF:
            continue
        if not placed and 0xB0 <= t <= 0xBE:
            out.append(field)
            placed = True
        out.append(raw)
    if not placed:
        out.append(field)
    body = b"".join(out)
    n = len(body)
    length = bytes([n]) if n < 0x80 else \
        bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    b64 = base64.b64encode(b"\x30" + length + body).decode()
    return ("-----BEGIN SSL SESSION PARAMETERS-----\n" +
            "".join(b64[k:k + 64] + "\n" for k in range(0, len(b64), 64)) +
            "-----END SSL SESSION PARAMETERS-----\n")


class TlsPolicyTest(StarttlsCase):

    def listeners(self):
        env = self.env
        imap = "127.0.0.1:%d" % env.imap_port
        pop3 = "127.0.0.1:%d" % env.pop3_port
        smtp = "127.0.0.1:%d" % env.smtp_port
        return {
            "imaps": self.listener("imap", imap, tls="implicit"),
            "pop3s": self.listener("pop3", pop3, tls="implicit"),
            "smtps": self.listener("smtp", smtp, tls="implicit"),
            "imap": self.listener("imap", imap),
            "pop3": self.listener("pop3", pop3),
            "smtp": self.listener("smtp", smtp),
        }

    def mailproxy(self, **kwargs):
        return self.proxy(listeners=self.listeners(), **kwargs)

    def by_client_port(self, mp, port):
        for line in mp.sessions():
            if line["client"] == "127.0.0.1:%d" % port:
                return line
        self.fail("no log line for client port %d:\n%s"
                  % (port, mp.log_text()))

    def imap_works(self, mp):
        """A normal session on each IMAP listener still works."""
        self.login_logout(mp)
        imap = IMAP4("localhost", mp.port("imap"), timeout=30)
        imap.starttls(ssl_context=self.ca.client_context())
        imap.login(self.env.user, self.env.password)
        imap.logout()

    # -- H56 ---------------------------------------------------------------

    def test_h56_tls10_and_tls11_refused(self):
        cases = [("imaps", None), ("pop3s", None), ("smtps", None),
                 ("imap", "imap"), ("pop3", "pop3"), ("smtp", "smtp")]
        with self.mailproxy() as mp:
            count = 0
            for version in ("-tls1", "-tls1_1"):
                for name, starttls in cases:
                    with self.subTest(version=version, listener=name):
                        out = s_client(mp.port(name), version, "-cipher",
                                       "DEFAULT:@SECLEVEL=0",
                                       starttls=starttls)
                        count += 1
                        self.assertNotEqual(out.returncode, 0)
                        self.assertIn(b"alert protocol version",
                                      out.stdout + out.stderr)
            # TLS 1.2 is fine.
            for name, starttls in cases:
                with self.subTest(version="-tls1_2", listener=name):
                    out = s_client(mp.port(name), "-tls1_2", "-CAfile",
                                   self.ca.ca_pem, "-verify_return_error",
                                   starttls=starttls)
                    count += 1
                    self.assertEqual(out.returncode, 0, out.stderr)
                    self.assertIn(b"Protocol  : TLSv1.2", out.stdout)
            lines = mp.wait_sessions(count)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), count)
        refused = [l for l in lines if l["end"] == "tls_error"]
        self.assertEqual(len(refused), 12)
        for line in refused:
            self.assertEqual(line["error"], "unsupported protocol", line)
            self.assertEqual(line["state"], "handshake", line)
            self.assertIsNone(line["tls"])
            self.assertNoBackend(line)
        self.assertEqual(sorted(l["tls"] for l in lines
                                if l["end"] != "tls_error"),
                         ["TLSv1.2"] * 6)

    # -- H57 ---------------------------------------------------------------

    def renegotiate(self, port, starttls=None):
        """s_client -tls1_2, then "R": returns its output once it ends
        by itself (a refused renegotiation ends it; an accepted one
        would leave it waiting for more input)."""
        cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
               "-tls1_2", "-CAfile", self.ca.ca_pem, "-crlf"]
        if starttls:
            cmd += ["-starttls", starttls]
        with tempfile.TemporaryFile() as out:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out,
                                 stderr=subprocess.STDOUT)
            try:
                time.sleep(1)
                p.stdin.write(b"R\n")
                p.stdin.flush()
                # s_client drops whatever came in the same read as the
                # "R": the next line goes only once it has taken that.
                deadline = time.monotonic() + 20
                while (b"RENEGOTIATING" not in os.pread(
                        out.fileno(), 1 << 20, 0)
                       and p.poll() is None
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
                try:
                    # Makes s_client write, which drives the handshake.
                    p.stdin.write(b"n NOOP\n")
                    p.stdin.flush()
                except BrokenPipeError:
                    pass
                try:
                    rc = p.wait(20)
                except subprocess.TimeoutExpired:
                    rc = None
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                try:
                    p.stdin.close()
                except BrokenPipeError:
                    pass  # the unflushed "n NOOP" of an ended s_client
            out.seek(0)
            return rc, out.read()

    def test_h57_renegotiation_refused(self):
        with self.mailproxy() as mp:
            for name, starttls in (("imaps", None), ("imap", "imap"),
                                   ("smtps", None), ("smtp", "smtp")):
                with self.subTest(listener=name):
                    rc, out = self.renegotiate(mp.port(name), starttls)
                    self.assertIn(b"RENEGOTIATING", out)
                    self.assertIsNotNone(rc, "renegotiation accepted?\n%s"
                                         % out.decode("latin-1"))
                    self.assertIn(b"no renegotiation", out)
            # mailproxy is still up and serving.
            self.imap_works(mp)
            lines = mp.wait_sessions(6)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 6, mp.log_text())

    # -- H58 ---------------------------------------------------------------

    def hello_reply(self, sock, methods):
        ctx = self.context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        sock.sendall(set_compression(client_hello(ctx), methods))
        return read_record(sock)

    def compression_of(self, record):
        kind, _, body = record
        self.assertEqual(kind, 22, record)       # handshake
        self.assertEqual(body[0], 2, record)     # ServerHello
        pos = 4 + 2 + 32
        pos += 1 + body[pos] + 2                 # session id, cipher
        return body[pos]

    def test_h58_compression_never_negotiated(self):
        with self.mailproxy() as mp:
            for methods, deflate_only in ((b"\x01\x00", False),
                                          (b"\x01", True)):
                for name in ("imaps", "smtp"):
                    with self.subTest(methods=methods, listener=name):
                        if name == "smtp":
                            c = self.greeted(mp, "smtp", name="smtp")
                            c.send(b"STARTTLS\r\n")
                            self.assertEqual(
                                c.line(), b"220 2.0.0 Ready to start TLS\r\n")
                            sock = c.sock
                        else:
                            sock = socket.create_connection(
                                ("127.0.0.1", mp.port(name)), timeout=20)
                            self.addCleanup(sock.close)
                        record = self.hello_reply(sock, methods)
                        if deflate_only:
                            # No method in common: a fatal alert.
                            self.assertEqual(record[0], 21, record)
                            self.assertEqual(record[2][0], 2, record)
                        else:
                            self.assertEqual(self.compression_of(record), 0)
                        sock.close()
            lines = mp.wait_sessions(4)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 4)

    # -- H59 ---------------------------------------------------------------

    def test_h59_alpn_strict_on_implicit_listeners(self):
        cases = [
            # listener, offered, selected (None: refused in the handshake)
            ("imaps", None, None),
            ("imaps", "imap", "imap"),
            ("imaps", "h2,imap", "imap"),
            ("imaps", "http/1.1", False),
            ("imaps", "h2,http/1.1", False),
            ("pop3s", "pop3", "pop3"),
            ("pop3s", "http/1.1", False),
            ("smtps", "smtp", "smtp"),
            ("smtps", "h2,http/1.1", False),
        ]
        with self.mailproxy() as mp:
            for name, offered, selected in cases:
                with self.subTest(listener=name, alpn=offered):
                    args = ["-CAfile", self.ca.ca_pem,
                            "-verify_return_error"]
                    if offered:
                        args += ["-alpn", offered]
                    out = s_client(mp.port(name), *args)
                    text = out.stdout + out.stderr
                    if selected is False:
                        self.assertNotEqual(out.returncode, 0)
                        self.assertIn(b"alert no application protocol", text)
                    elif selected is None:
                        self.assertEqual(out.returncode, 0, text)
                        self.assertIn(b"No ALPN negotiated", text)
                    else:
                        self.assertEqual(out.returncode, 0, text)
                        self.assertIn(b"ALPN protocol: " +
                                      selected.encode(), text)
            lines = mp.wait_sessions(len(cases))
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), len(cases))
        refused = [l for l in lines if l["end"] == "tls_error"]
        self.assertEqual(len(refused), 4, mp.log_text())
        for line in refused:
            self.assertEqual(line["state"], "handshake", line)
            self.assertNoBackend(line)

    def test_h59_alpn_strict_on_starttls_listeners(self):
        cases = [
            # protocol, offered, selected (False: refused in the handshake)
            ("imap", None, None),
            ("imap", ["imap"], "imap"),
            ("imap", ["h2", "imap"], "imap"),
            ("imap", ["http/1.1"], False),
            ("pop3", ["pop3"], "pop3"),
            ("pop3", ["http/1.1"], False),
            ("smtp", ["smtp"], "smtp"),
            ("smtp", ["h2", "http/1.1"], False),
        ]
        with self.mailproxy() as mp:
            for protocol, offered, selected in cases:
                with self.subTest(protocol=protocol, alpn=offered):
                    c = self.greeted(mp, protocol, name=protocol)
                    ctx = self.context(alpn=offered)
                    if selected is False:
                        with self.assertRaisesRegex(
                                ssl.SSLError, "no application protocol"):
                            self.upgrade(c, protocol, ctx=ctx)
                    else:
                        self.upgrade(c, protocol, ctx=ctx)
                        self.assertEqual(c.tls.selected_alpn_protocol(),
                                         selected)
                    c.close()
            lines = mp.wait_sessions(len(cases))
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), len(cases), mp.log_text())
        refused = [l for l in lines if l["end"] == "tls_error"]
        self.assertEqual(len(refused), 3, mp.log_text())
        for line in refused:
            self.assertEqual(line["state"], "handshake", line)
            self.assertCounts(line, discarded=0)
            self.assertNoBackend(line)

    # -- H60 ---------------------------------------------------------------

    def peer_cn(self, obj):
        subject = dict(x[0] for x in obj.getpeercert()["subject"])
        return subject["commonName"]

    def test_h60_no_sni_gets_the_default_certificate(self):
        ctx = self.context(check_hostname=False)
        with self.mailproxy() as mp:
            c = self.connect(mp, "imaps")
            c.starttls(ctx, server_hostname=None)
            self.assertEqual(self.peer_cn(c.tls), "localhost")
            self.assertTrue(c.line().startswith(b"* OK "))
            c.close()
            c = self.greeted(mp, "imap", name="imap")
            self.upgrade(c, "imap", ctx=ctx, server_hostname=None)
            self.assertEqual(self.peer_cn(c.tls), "localhost")
            c.close()
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 2)
        for line in lines:
            self.assertIsNone(line["sni"], line)

    def sni_config(self, strict=False):
        """Two SNI certificates beside the default ("localhost"): one
        name with its key in a file of its own, and a wildcard whose
        chain and key share one file (the HAProxy and hitch layout)."""
        cert, key = self.ca.make_cert("mail.example.net")
        wcert, wkey = self.ca.make_cert("*.example.org")
        combined = os.path.join(self.env.tmp, "wildcard-combined.pem")
        with open(combined, "wb") as out:
            for part in (wcert, self.ca.ca_pem, wkey):
                with open(part, "rb") as f:
                    out.write(f.read())
        text = "sni_certificate = %s %s\nsni_certificate = %s\n" % (
            cert, key, combined)
        if strict:
            text += "sni_strict = yes\n"
        return text

    def handshake(self, mp, name, server_hostname, ctx=None):
        """A completed handshake on listener name (implicit or STARTTLS);
        returns the client, whose greeting or nothing is left to read."""
        protocol = name.rstrip("s")
        if name.endswith("s"):
            c = self.connect(mp, name)
        else:
            c = self.greeted(mp, protocol, name=name)
        try:
            if name.endswith("s"):
                c.starttls(ctx or self.context(),
                           server_hostname=server_hostname)
            else:
                self.upgrade(c, protocol, ctx=ctx,
                             server_hostname=server_hostname)
        except ssl.SSLError:
            c.close()
            raise
        return c

    def test_h60_known_sni_gets_its_certificate(self):
        # The client checks the name against the chain it gets, so each
        # handshake that completes proves the right certificate was sent.
        expect = [("mail.example.net", "mail.example.net"),
                  ("MAIL.Example.NET", "mail.example.net"),
                  ("imap.example.org", "*.example.org"),
                  ("localhost", "localhost")]
        with self.mailproxy(tls_extra=self.sni_config()) as mp:
            for name in ("imaps", "imap", "pop3s", "smtp"):
                for sni, cn in expect:
                    with self.subTest(listener=name, sni=sni):
                        c = self.handshake(mp, name, sni)
                        self.assertEqual(self.peer_cn(c.tls), cn)
                        c.close()
            # A wildcard covers one label only: the default is served,
            # and a client that checks names refuses it.
            c = self.handshake(mp, "imaps", "a.b.example.org",
                               ctx=self.context(check_hostname=False))
            self.assertEqual(self.peer_cn(c.tls), "localhost")
            c.close()
            # A ticket from an SNI certificate's session resumes it.
            sess = os.path.join(self.env.tmp, "sni-sess.pem")
            for flag, want in (("-sess_out", b"New, TLSv1.3"),
                               ("-sess_in", b"Reused, TLSv1.3")):
                out = s_client(mp.port("imaps"), "-CAfile", self.ca.ca_pem,
                               "-servername", "mail.example.net",
                               "-verify_return_error", "-crlf", "-ign_eof",
                               flag, sess, data=b"a LOGOUT\n")
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn(want, out.stdout)
                self.assertIn(b"CN = mail.example.net", out.stdout)
            lines = mp.wait_sessions(4 * len(expect) + 3)
            self.imap_works(mp)
            self.assertStopsCleanly(mp)
        self.assertIn("mail.example.net", [l["sni"] for l in lines])
        self.assertIn("a.b.example.org", [l["sni"] for l in lines])

    def test_h60_a_session_resumes_only_under_its_own_certificate(self):
        # RFC 6066 §3: a session made under one name must not resume
        # under another; the client gets a full handshake and the other
        # name's certificate. Names served by one certificate share it.
        sess = os.path.join(self.env.tmp, "sni-resume.pem")
        runs = []

        def run(version, flag, sni):
            names = ["-servername", sni] if sni else ["-noservername"]
            out = s_client(mp.port("imaps"), "-CAfile", self.ca.ca_pem,
                           "-crlf", "-ign_eof", version, flag, sess,
                           *names, data=b"a LOGOUT\n")
            self.assertEqual(out.returncode, 0, out.stderr)
            # Its line before the next run's: with two workers a session
            # that ended first may still be logged second.
            runs.append(flag)
            self.assertEqual(len(mp.wait_sessions(len(runs))), len(runs),
                             mp.log_text())
            m = re.search(rb"^(New|Reused), (TLSv1\.[23]),", out.stdout,
                          re.M)
            cn = re.search(rb"^subject=CN = (\S+)", out.stdout, re.M)
            self.assertTrue(m and cn, out.stdout)
            return (m.group(1).decode(), m.group(2).decode(),
                    cn.group(1).decode())

        with self.mailproxy(tls_extra=self.sni_config()) as mp:
            for version, v in (("-tls1_3", "TLSv1.3"),
                               ("-tls1_2", "TLSv1.2")):
                with self.subTest(version=v):
                    self.assertEqual(
                        run(version, "-sess_out", "mail.example.net"),
                        ("New", v, "mail.example.net"))
                    self.assertEqual(
                        run(version, "-sess_in", "mail.example.net"),
                        ("Reused", v, "mail.example.net"))
                    # Another name: a full handshake with its own
                    # certificate, the wildcard's, then no name at all.
                    self.assertEqual(
                        run(version, "-sess_in", "imap.example.org"),
                        ("New", v, "*.example.org"))
                    self.assertEqual(run(version, "-sess_in", None),
                                     ("New", v, "localhost"))
                    # The default certificate's session, with no name.
                    run(version, "-sess_out", "localhost")
                    self.assertEqual(run(version, "-sess_in", None),
                                     ("Reused", v, "localhost"))
            lines = mp.wait_sessions(12)
            self.assertStopsCleanly(mp)
        self.assertEqual([l["resumed"] for l in lines],
                         ["no", "yes", "no", "no", "no", "yes"] * 2)

    def test_h60_unknown_sni_gets_the_default_certificate(self):
        # Without sni_strict an unknown name is served the default
        # certificate and logged, as nginx and HAProxy do.
        ctx = self.context(check_hostname=False)
        with self.mailproxy(tls_extra=self.sni_config()) as mp:
            c = self.greeted(mp, "imap", name="imap")
            self.upgrade(c, "imap", ctx=ctx)
            c.close()
            c = self.connect(mp, "imaps")
            c.starttls(ctx, server_hostname="unknown.example")
            self.assertEqual(self.peer_cn(c.tls), "localhost")
            c.close()
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(sorted(l["sni"] for l in lines),
                         ["localhost", "unknown.example"])

    def test_h60_strict_sni_refuses_unknown_names_with_alert_112(self):
        ctx = self.context(check_hostname=False)
        with self.mailproxy(tls_extra=self.sni_config(strict=True)) as mp:
            for name in ("imaps", "pop3s", "smtps", "imap", "pop3", "smtp"):
                with self.subTest(listener=name):
                    with self.assertRaises(ssl.SSLError) as cm:
                        self.handshake(mp, name, "unknown.example", ctx=ctx)
                    self.assertIn("UNRECOGNIZED_NAME", str(cm.exception))
            # Known names, the default's among them, and no SNI at all
            # are served as without strict mode.
            for sni, cn in (("mail.example.net", "mail.example.net"),
                            ("pop.example.org", "*.example.org"),
                            ("localhost", "localhost"),
                            (None, "localhost")):
                with self.subTest(sni=sni):
                    c = self.handshake(mp, "imaps", sni, ctx=ctx)
                    self.assertEqual(self.peer_cn(c.tls), cn)
                    self.assertTrue(c.line().startswith(b"* OK "))
                    c.close()
            lines = mp.wait_sessions(10)
            # openssl s_client shows the alert by its number.
            out = s_client(mp.port("imaps"), "-servername", "nope.example",
                           data=b"")
            self.assertNotEqual(out.returncode, 0)
            self.assertIn(b"alert number 112", out.stderr)
            lines = mp.wait_sessions(11)
            self.imap_works(mp)
            self.assertStopsCleanly(mp)
        refused = [l for l in lines if l["sni"] in ("unknown.example",
                                                    "nope.example")]
        self.assertEqual(len(refused), 7, lines)
        for line in refused:
            self.assertEqual(line["end"], "tls_error", line)
            self.assertEqual(line["error"], "unknown SNI name", line)
            self.assertIsNone(line["backend_addr"], line)

    # -- H61 ---------------------------------------------------------------

    def test_h61_early_data_never_accepted(self):
        early = os.path.join(self.env.tmp, "early.txt")
        with open(early, "wb") as f:
            f.write(b"e LOGOUT\r\n")
        with self.mailproxy() as mp:
            for name, starttls in (("imaps", None), ("imap", "imap")):
                with self.subTest(listener=name):
                    sess = os.path.join(self.env.tmp, "sess-%s.pem" % name)
                    out = s_client(mp.port(name), "-CAfile", self.ca.ca_pem,
                                   "-crlf", "-ign_eof", "-sess_out", sess,
                                   starttls=starttls,
                                   data=b"a LOGOUT\n")
                    self.assertEqual(out.returncode, 0, out.stderr)
                    self.assertIn(b"a OK", out.stdout)
                    # mailproxy's tickets never allow early data...
                    self.assertIn(b"Max Early Data: 0", out.stdout)
                    with open(sess) as f:
                        forged = with_early_data(f.read())
                    with open(sess, "w") as f:
                        f.write(forged)
                    # ...and a client that sends some anyway gets none of
                    # it executed.
                    out = s_client(mp.port(name), "-CAfile", self.ca.ca_pem,
                                   "-crlf", "-sess_in", sess,
                                   "-early_data", early, starttls=starttls)
                    text = out.stdout + out.stderr
                    self.assertIn(b"Reused, TLSv1.3", text)
                    self.assertNotIn(b"Early data was accepted", text)
                    self.assertIn(b"Early data was rejected", text)
                    self.assertNotIn(b"e OK", text)
                    self.assertNotIn(b"* BYE", text)
            self.imap_works(mp)
            lines = mp.wait_sessions(6)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 6, mp.log_text())


if __name__ == "__main__":
    unittest.main()
