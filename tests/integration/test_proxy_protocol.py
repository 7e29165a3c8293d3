"""PROXY protocol: the backend sees the real client (issue 4).

mailproxy in front of a real Dovecot and Postfix that expect a PROXY header
(MailEnv(haproxy=True): Dovecot inet listeners with "haproxy = yes" and
haproxy_trusted_networks = 127.0.0.1/32 ::1/128, a Postfix smtpd service
with smtpd_upstream_proxy_protocol = haproxy), and mailproxy behind a load
balancer that sends one (accept_proxy), up to Debian's HAProxy in front of
two mailproxy instances.

Clients connect from 127.0.0.2 while mailproxy reaches the backends from
127.0.0.1, so a backend that logs 127.0.0.2 took the address from the
header. Dovecot runs with disable_plaintext_auth = yes: a proxied
connection (its address from the header differs from the local one) is
"secured" only when the v2 header carries PP2_TYPE_SSL, so a plaintext
LOGIN works through proxy_protocol = v2 from a TLS client and is refused
through v1, which cannot say TLS.

Research cases (protocols.md section 14 G): G51 header first, in one
write, under 536 bytes; G52 IPv6 and IPv4-mapped clients; G53 PP2_TYPE_SSL
only for TLS clients; G54 AUTHORITY only with an SNI, no ALPN TLV; G55 the
header goes out at once even when the client is idle.
"""

import imaplib
import ipaddress
import os
import poplib
import re
import smtplib
import socket
import struct
import subprocess
import threading
import time
import types
import unittest

import mailenv
import proxy
from wire import FakeBackend, StarttlsCase, client_hello

CLIENT_IP = "127.0.0.2"     # where test clients connect from
LB_IP = "127.0.0.1"         # a load balancer (the test) or HAProxy
WAIT = 15

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_CLIENT_SSL = 0x01


# --------------------------------------------------------------------------
# PROXY headers, built and read in Python (the spec, research/protocols.md
# section 10)


def v1_header(src, dst, sport, dport):
    family = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (family, src, dst, sport,
                                         dport)).encode()


def tlv(kind, value):
    return struct.pack("!BH", kind, len(value)) + value


def v2_header(src, dst, sport, dport, tlvs=b"", command=0x21):
    """A v2 PROXY (0x21) or LOCAL (0x20) header for TCP over IPv4 or IPv6."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x21 if a.version == 6 else 0x11
    body = a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIG + struct.pack("!BBH", command, fam, len(body)) + body


def parse_tlvs(data):
    found = []
    while data:
        if len(data) < 3:
            raise ValueError("truncated TLV %r" % data)
        kind, length = struct.unpack("!BH", data[:3])
        if len(data) < 3 + length:
            raise ValueError("TLV 0x%02x longer than the header" % kind)
        found.append((kind, data[3:3 + length]))
        data = data[3 + length:]
    return found


def parse_header(buf):
    """The PROXY header at the start of buf as a dict, None if buf is a
    valid but incomplete prefix; ValueError if it is not a header."""
    if buf.startswith(b"PROXY "):
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= 107:
                raise ValueError("v1 header without CRLF: %r" % buf)
            return None
        words = buf[:end].decode("ascii").split(" ")
        if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
            raise ValueError("bad v1 header %r" % buf[:end])
        return {"version": 1, "len": end + 2, "family": words[1],
                "src": (words[2], int(words[4])),
                "dst": (words[3], int(words[5])), "tlvs": []}
    if len(buf) < 16:
        if SIG.startswith(buf[:12]) or not buf:
            return None
        raise ValueError("not a PROXY header: %r" % buf[:16])
    if buf[:12] != SIG:
        raise ValueError("not a PROXY header: %r" % buf[:16])
    command, fam, length = struct.unpack("!BBH", buf[12:16])
    if len(buf) < 16 + length:
        return None
    body = buf[16:16 + length]
    if fam == 0x11:
        af, n = socket.AF_INET, 4
    elif fam == 0x21:
        af, n = socket.AF_INET6, 16
    else:
        raise ValueError("unexpected family 0x%02x" % fam)
    if len(body) < 2 * n + 4:
        raise ValueError("address block too short")
    sport, dport = struct.unpack("!HH", body[2 * n:2 * n + 4])
    header = {"version": 2, "len": 16 + length, "command": command,
              "fam": fam, "addr_len": 2 * n + 4,
              "src": (socket.inet_ntop(af, body[:n]), sport),
              "dst": (socket.inet_ntop(af, body[n:2 * n]), dport),
              "tlvs": parse_tlvs(body[2 * n + 4:])}
    for kind, value in header["tlvs"]:
        if kind == PP2_TYPE_SSL:
            client, verify = struct.unpack("!BI", value[:5])
            header["ssl"] = {"client": client, "verify": verify,
                             "subs": dict(parse_tlvs(value[5:]))}
    return header


def tlv_kinds(header):
    return [kind for kind, _ in header["tlvs"]]


def tlv_value(header, kind):
    values = [v for k, v in header["tlvs"] if k == kind]
    return values[0] if values else None


def unmapped(host):
    """An IPv4-mapped IPv6 address as IPv4 text, others unchanged."""
    addr = ipaddress.ip_address(host)
    if addr.version == 6 and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


class HeaderBackend(FakeBackend):
    """A FakeBackend that reads the PROXY header before it greets, and
    keeps, per connection, the parsed header and the bytes its first read
    returned (a header sent in one write arrives whole in it)."""

    def __init__(self, protocol, **kwargs):
        self.headers = []               # dicts, or ValueError instances
        self.first_reads = []
        self.header_cond = threading.Condition()
        super().__init__(protocol, **kwargs)

    def _serve(self, conn):
        header = None
        first = None
        try:
            while header is None:
                conn._fill()
                if first is None:
                    first = conn.data
                header = parse_header(conn._buf)
        except (OSError, EOFError, ValueError) as exc:
            with self.header_cond:
                self.headers.append(exc if isinstance(exc, ValueError)
                                    else ValueError("no header: %r"
                                                    % conn.data))
                self.first_reads.append(first)
                self.header_cond.notify_all()
            conn.closed.set()
            return
        conn._buf = conn._buf[header["len"]:]
        with self.header_cond:
            self.headers.append(header)
            self.first_reads.append(first)
            self.header_cond.notify_all()
        super()._serve(conn)

    def wait_headers(self, count, timeout=WAIT):
        with self.header_cond:
            self.header_cond.wait_for(lambda: len(self.headers) >= count,
                                      timeout)
            return list(self.headers)


# --------------------------------------------------------------------------
# Clients that connect from a chosen source address (and may send bytes,
# such as a load balancer's PROXY header, before TLS)


def connect_from(host, port, source, timeout=30, preamble=b""):
    sock = socket.create_connection((host, port), timeout,
                                    source_address=(source, 0))
    if preamble:
        sock.sendall(preamble)
    return sock


class ImapsFrom(imaplib.IMAP4_SSL):
    def __init__(self, port, ctx, source=CLIENT_IP, host="127.0.0.1",
                 sni="localhost", preamble=b"", timeout=30):
        self.source, self.sni, self.preamble = source, sni, preamble
        super().__init__(host, port, ssl_context=ctx, timeout=timeout)

    def _create_socket(self, timeout):
        sock = connect_from(self.host, self.port, self.source, timeout,
                            self.preamble)
        self.source_port = sock.getsockname()[1]
        return self.ssl_context.wrap_socket(sock, server_hostname=self.sni)


class ImapFrom(imaplib.IMAP4):
    def __init__(self, port, source=CLIENT_IP, preamble=b"", timeout=30):
        self.source, self.preamble = source, preamble
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout):
        sock = connect_from(self.host, self.port, self.source, timeout,
                            self.preamble)
        self.source_port = sock.getsockname()[1]
        return sock


class Pop3sFrom(poplib.POP3_SSL):
    def __init__(self, port, ctx, source=CLIENT_IP, timeout=30):
        self.source = source
        super().__init__("127.0.0.1", port, context=ctx, timeout=timeout)

    def _create_socket(self, timeout):
        sock = connect_from(self.host, self.port, self.source, timeout)
        self.source_port = sock.getsockname()[1]
        return self.context.wrap_socket(sock, server_hostname="localhost")


def smtps_from(port, ctx, source=CLIENT_IP):
    smtp = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30,
                            source_address=(source, 0))
    return smtp, smtp.sock.getsockname()[1]


def close_quietly(obj):
    try:
        obj.shutdown()
    except (OSError, AttributeError):
        pass
    try:
        obj.close()
    except OSError:
        pass


# --------------------------------------------------------------------------


class ProxyProtocolCase(StarttlsCase):
    env_options = {"haproxy": True, "disable_plaintext_auth": True}

    def wait_backend_log(self, which, pattern, since=0, count=1,
                         timeout=WAIT):
        """The matches of pattern in the dovecot or postfix log (from byte
        offset since), once there are count of them."""
        regex = re.compile(pattern)
        log = self.poll_server_log(
            which, since,
            lambda text: len(regex.findall(text)) >= count, timeout)
        found = list(regex.finditer(log))
        if len(found) < count:
            self.fail("%d x %r not in the %s log after %s s:\n%s"
                      % (count, pattern, which, timeout, log))
        return found

    def imap_listener(self, version, tls="implicit", extra=""):
        return self.listener(
            "imap", "127.0.0.1:%d" % self.env.imap_haproxy_port, tls=tls,
            extra="proxy_protocol = %s\n%s" % (version, extra))

    def assertClient(self, line, client, proxy_addr=None):
        self.assertEqual(line["client"], client, line)
        self.assertIn("proxy", line)
        if proxy_addr is None:
            self.assertIsNone(line["proxy"], line)
        else:
            self.assertRegex(line["proxy"], proxy_addr, line)

    def login_line(self, service, rport, since, secured=True):
        """Dovecot's Login line for a client at CLIENT_IP:rport that came
        through mailproxy (real_rip 127.0.0.1)."""
        match, = self.wait_backend_log(
            "dovecot", r"%s-login: Info: Login: user=<alice>, method=PLAIN, "
            r"rip=127\.0\.0\.2, rport=%d, lip=127\.0\.0\.1, lport=(\d+), "
            r"real_rip=127\.0\.0\.1, real_rport=\d+, mpid=\d+, ([^\n]*)"
            % (service, rport), since)
        if secured:
            self.assertTrue(match.group(2).startswith("secured,"),
                            match.group(0))
        return match


class BackendsTest(ProxyProtocolCase):
    """proxy_protocol = v1/v2 in front of Dovecot's and Postfix's PROXY
    listeners (cases 1-3 of the brief)."""

    def test_imaps_v2_dovecot_sees_client_and_tls_v1_refused(self):
        listeners = {"v2": self.imap_listener("v2"),
                     "v1": self.imap_listener("v1")}
        since = self.env.log_size("dovecot")
        with self.proxy(listeners=listeners) as mp:
            # v2: the header says TLS, so Dovecot allows LOGIN.
            imap = ImapsFrom(mp.port("v2"), self.context())
            self.assertNotIn("LOGINDISABLED", imap.capabilities)
            typ, _ = imap.login(self.env.user, self.env.password)
            self.assertEqual(typ, "OK")
            self.assertEqual(imap.select("INBOX")[0], "OK")
            imap.logout()
            match = self.login_line("imap", imap.source_port, since)
            self.assertEqual(int(match.group(1)), mp.port("v2"))
            line, = mp.wait_sessions(1, listener="v2")
            self.assertClient(line, "%s:%d" % (CLIENT_IP, imap.source_port))
            self.assertEqual(line["backend_addr"], "127.0.0.1:%d"
                             % self.env.imap_haproxy_port)
            self.assertNormalEnd(line)

            # v1 cannot say TLS: the same Dovecot listener refuses the
            # plaintext LOGIN (the address still comes from the header).
            since = self.env.log_size("dovecot")
            imap = ImapsFrom(mp.port("v1"), self.context())
            self.assertIn("LOGINDISABLED", imap.capabilities)
            with self.assertRaises(imaplib.IMAP4.error):
                imap.login(self.env.user, self.env.password)
            imap.logout()
            self.wait_backend_log(
                "dovecot", r"imap-login: Info: Login failed: Plaintext "
                r"authentication disabled: user=<[^>]*>, rip=127\.0\.0\.2, "
                r"rport=%d, lip=127\.0\.0\.1, lport=%d, real_rip=127\.0\.0\.1"
                % (imap.source_port, mp.port("v1")), since)
            self.assertNotIn("Login: user=<alice>",
                             self.env.read_log("dovecot", since))
            line, = mp.wait_sessions(1, listener="v1")
            self.assertClient(line, "%s:%d" % (CLIENT_IP, imap.source_port))
            self.assertStopsCleanly(mp)

    def test_pop3s_v2_dovecot_sees_client_and_tls_v1_refused(self):
        message = self.seed(3000, "pop3 through PROXY v2")
        listeners = {
            name: self.listener(
                "pop3", "127.0.0.1:%d" % self.env.pop3_haproxy_port,
                tls="implicit", extra="proxy_protocol = %s\n" % name)
            for name in ("v2", "v1")}
        since = self.env.log_size("dovecot")
        with self.proxy(listeners=listeners) as mp:
            pop = Pop3sFrom(mp.port("v2"), self.context())
            pop.user(self.env.user)
            pop.pass_(self.env.password)
            count, _ = pop.stat()
            self.assertGreaterEqual(count, 1)
            lines = [pop.retr(i + 1)[1] for i in range(count)]
            self.assertIn(mailenv.to_crlf(message),
                          [b"\r\n".join(l) + b"\r\n" for l in lines])
            pop.quit()
            match = self.login_line("pop3", pop.source_port, since)
            self.assertEqual(int(match.group(1)), mp.port("v2"))
            line, = mp.wait_sessions(1, listener="v2")
            self.assertClient(line, "%s:%d" % (CLIENT_IP, pop.source_port))
            self.assertNormalEnd(line)

            since = self.env.log_size("dovecot")
            pop = Pop3sFrom(mp.port("v1"), self.context())
            with self.assertRaisesRegex(poplib.error_proto,
                                        "Plaintext authentication"):
                pop.user(self.env.user)
                pop.pass_(self.env.password)
            pop.quit()
            self.wait_backend_log(
                "dovecot", r"pop3-login: Info: Login failed: Plaintext "
                r"authentication disabled: user=<[^>]*>, rip=127\.0\.0\.2, "
                r"rport=%d, lip=127\.0\.0\.1, lport=%d"
                % (pop.source_port, mp.port("v1")), since)
            mp.wait_sessions(1, listener="v1")
            self.assertStopsCleanly(mp)

    def test_smtps_v2_and_v1_postfix_sees_client(self):
        listeners = {
            name: self.listener(
                "smtp", "127.0.0.1:%d" % self.env.smtp_haproxy_port,
                tls="implicit", extra="proxy_protocol = %s\n" % name)
            for name in ("v2", "v1")}
        with self.proxy(listeners=listeners) as mp:
            for name in ("v2", "v1"):
                since = self.env.log_size("postfix")
                subject = "smtps through PROXY %s" % name
                smtp, port = smtps_from(mp.port(name), self.context())
                code, _ = smtp.ehlo("client.example")
                self.assertEqual(code, 250)
                refused = smtp.sendmail(
                    "bob@example.org", [self.env.address],
                    mailenv.make_message(4000, subject))
                self.assertEqual(refused, {})
                smtp.quit()
                self.env.wait_for_delivery(subject)
                # The proxied smtpd logs the header's address, not
                # mailproxy's 127.0.0.1.
                self.wait_backend_log(
                    "postfix", r"postfix/proxied/smtpd\[\d+\]: connect from "
                    r"unknown\[127\.0\.0\.2\]", since)
                self.wait_backend_log(
                    "postfix", r"postfix/proxied/smtpd\[\d+\]: \w+: "
                    r"client=unknown\[127\.0\.0\.2\]", since)
                log = self.env.read_log("postfix", since)
                self.assertNotIn("connect from unknown[127.0.0.1]", log)
                line, = mp.wait_sessions(1, listener=name)
                self.assertClient(line, "%s:%d" % (CLIENT_IP, port))
                self.assertNormalEnd(line)
            self.assertStopsCleanly(mp)
        self.assertEqual([l for l in self.env.log_problems()
                          if "proxied" in l], [])

    def test_starttls_imap_v2_late_connect_says_tls(self):
        listeners = {"l": self.imap_listener("v2", tls="starttls")}
        since = self.env.log_size("dovecot")
        with self.proxy(listeners=listeners) as mp:
            imap = ImapFrom(mp.port("l"))
            typ, _ = imap.starttls(ssl_context=self.context(
                check_hostname=False))
            self.assertEqual(typ, "OK")
            # Dovecot's post-TLS capabilities: the header said TLS.
            self.assertNotIn("LOGINDISABLED", imap.capabilities)
            self.assertIn("AUTH=PLAIN", imap.capabilities)
            typ, _ = imap.login(self.env.user, self.env.password)
            self.assertEqual(typ, "OK")
            imap.logout()
            match = self.login_line("imap", imap.source_port, since)
            self.assertEqual(int(match.group(1)), mp.port("l"))
            line, = mp.wait_sessions(1)
            self.assertClient(line, "%s:%d" % (CLIENT_IP, imap.source_port))
            self.assertEqual(line["starttls"], "yes")
            self.assertNormalEnd(line)
            self.assertStopsCleanly(mp)


class HeaderBytesTest(ProxyProtocolCase):
    """What exactly mailproxy sends, read by a scripted backend
    (protocols.md section 14 G)."""

    def serve_header_backend(self, protocol="imap", tls="implicit",
                             extra="", version="v2", ipv6_too=False):
        backend = HeaderBackend(protocol)
        self.addCleanup(backend.stop)
        text = "proxy_protocol = %s\n%s" % (version, extra)
        port6 = None
        if ipv6_too:
            port6, hold = mailenv.reserve_port("::1")
            self.addCleanup(hold.close)
            text += "listen = [::1]:%d\n" % port6
        mp = self.serve(protocol, backend.address, extra=text, tls=tls)
        return backend, mp, port6

    def test_G51_G53_G54_G55_v2_header_first_whole_with_ssl_tlv(self):
        backend, mp, _ = self.serve_header_backend()
        with mp:
            ctx = self.context()
            ctx.set_alpn_protocols(["imap"])
            raw = connect_from("127.0.0.1", mp.port("l"), CLIENT_IP)
            sport = raw.getsockname()[1]     # wrap_socket detaches raw
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            self.addCleanup(tls.close)
            # G55: the client stays idle after the handshake; the header
            # reaches the backend anyway, before the backend greets.
            header, = backend.wait_headers(1, timeout=2)
            self.assertIsInstance(header, dict, header)
            first = backend.first_reads[0]
            # G51: first on the connection, in one write, < 536 bytes.
            self.assertEqual(header["version"], 2)
            self.assertEqual(header["command"], 0x21)
            self.assertLess(header["len"], 536)
            self.assertGreaterEqual(len(first), header["len"],
                                    "header split over writes: %r" % first)
            self.assertEqual(header["fam"], 0x11)
            self.assertEqual(header["src"], (CLIENT_IP, sport))
            self.assertEqual(header["dst"], ("127.0.0.1", mp.port("l")))
            # G53: the client is on TLS.
            ssl_tlv = header.get("ssl")
            self.assertIsNotNone(ssl_tlv, header)
            self.assertEqual(ssl_tlv["client"] & PP2_CLIENT_SSL,
                             PP2_CLIENT_SSL)
            self.assertNotEqual(ssl_tlv["verify"], 0)   # no client cert
            self.assertEqual(
                ssl_tlv["subs"].get(PP2_SUBTYPE_SSL_VERSION),
                tls.version().encode())
            self.assertEqual(ssl_tlv["subs"].get(PP2_SUBTYPE_SSL_CIPHER),
                             tls.cipher()[0].encode())
            # G54: the SNI as AUTHORITY; no ALPN TLV though ALPN was used.
            self.assertEqual(tls.selected_alpn_protocol(), "imap")
            self.assertEqual(tlv_value(header, PP2_TYPE_AUTHORITY),
                             b"localhost")
            self.assertNotIn(PP2_TYPE_ALPN, tlv_kinds(header))
            # Then the session runs: greeting and LOGOUT through.
            f = tls.makefile("rwb")
            self.assertTrue(f.readline().startswith(b"* OK"))
            f.write(b"a LOGOUT\r\n")
            f.flush()
            self.assertTrue(f.readline().startswith(b"* BYE"))
            f.close()
            tls.close()
            line, = mp.wait_sessions(1)
            self.assertClient(line, "%s:%d" % (CLIENT_IP, sport))
            self.assertStopsCleanly(mp)
        # Nothing but the header came before the client's command.
        self.assertEqual(backend.commands(), [b"a LOGOUT\r\n"])

    def test_G54_no_sni_no_authority(self):
        backend, mp, _ = self.serve_header_backend()
        with mp:
            ctx = self.context(check_hostname=False)
            raw = connect_from("127.0.0.1", mp.port("l"), CLIENT_IP)
            tls = ctx.wrap_socket(raw, server_hostname=None)
            self.addCleanup(tls.close)
            header, = backend.wait_headers(1)
            self.assertIsInstance(header, dict, header)
            self.assertIsNotNone(header.get("ssl"), header)
            self.assertNotIn(PP2_TYPE_AUTHORITY, tlv_kinds(header))
            tls.close()
            mp.wait_sessions(1)
            self.assertStopsCleanly(mp)

    def test_G52_ipv6_client_and_v1(self):
        for version in ("v2", "v1"):
            with self.subTest(version=version):
                backend, mp, port6 = self.serve_header_backend(
                    version=version, ipv6_too=True)
                with mp:
                    raw = socket.create_connection(("::1", port6), 30)
                    sport = raw.getsockname()[1]
                    tls = self.context().wrap_socket(
                        raw, server_hostname="localhost")
                    self.addCleanup(tls.close)
                    header, = backend.wait_headers(1)
                    self.assertIsInstance(header, dict, header)
                    self.assertEqual(header["src"], ("::1", sport))
                    self.assertEqual(header["dst"], ("::1", port6))
                    if version == "v2":
                        self.assertEqual(header["fam"], 0x21)
                        self.assertEqual(header["addr_len"], 36)
                    else:
                        self.assertEqual(header["family"], "TCP6")
                        self.assertEqual(
                            backend.first_reads[0][:header["len"]],
                            v1_header("::1", "::1", sport, port6))
                    tls.close()
                    line, = mp.wait_sessions(1)
                    self.assertRegex(line["client"],
                                     r"^\[?::1\]?:%d$" % sport)
                    self.assertStopsCleanly(mp)

    def test_G52_ipv4_mapped_client_sent_as_ipv4(self):
        # A load balancer on ::1 reports an IPv4-mapped client.
        backend, mp, port6 = self.serve_header_backend(
            extra="accept_proxy = yes\ntrusted_proxies = ::1/128\n",
            ipv6_too=True)
        with mp:
            raw = socket.create_connection(("::1", port6), 30)
            lb_port = raw.getsockname()[1]
            raw.sendall(v1_header("::ffff:127.0.0.2", "::ffff:127.0.0.1",
                                  40002, 993))
            tls = self.context().wrap_socket(raw,
                                             server_hostname="localhost")
            self.addCleanup(tls.close)
            header, = backend.wait_headers(1)
            self.assertIsInstance(header, dict, header)
            self.assertEqual(header["src"][1], 40002)
            self.assertEqual(unmapped(header["src"][0]), "127.0.0.2")
            if header["fam"] == 0x21:
                # Only if the other address is a real IPv6 one may the
                # client's stay in IPv6 form.
                self.assertIsNone(ipaddress.ip_address(
                    header["dst"][0]).ipv4_mapped, header)
            tls.close()
            line, = mp.wait_sessions(1)
            self.assertIn("127.0.0.2", line["client"])
            self.assertRegex(line["proxy"], r"^\[?::1\]?:%d$" % lb_port)
            self.assertStopsCleanly(mp)

    def test_lb_tlvs_not_passed_on(self):
        # The load balancer's header claims an SNI and a client
        # certificate; what goes to the backend is what mailproxy saw.
        lb_ssl = tlv(PP2_TYPE_SSL, struct.pack("!BI", 0x07, 0)
                     + tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.0"))
        header_in = v2_header("192.0.2.7", "127.0.0.1", 51234, 993,
                              tlv(PP2_TYPE_AUTHORITY, b"lb.example")
                              + lb_ssl)
        backend, mp, _ = self.serve_header_backend(
            extra="accept_proxy = yes\ntrusted_proxies = 127.0.0.1/32\n")
        with mp:
            for n, sni in enumerate(("localhost", None)):
                raw = connect_from("127.0.0.1", mp.port("l"), LB_IP)
                raw.sendall(header_in)
                tls = self.context(check_hostname=False).wrap_socket(
                    raw, server_hostname=sni)
                self.addCleanup(tls.close)
                header = backend.wait_headers(n + 1)[n]
                self.assertIsInstance(header, dict, header)
                self.assertEqual(header["src"], ("192.0.2.7", 51234))
                self.assertEqual(tlv_value(header, PP2_TYPE_AUTHORITY),
                                 sni.encode() if sni else None)
                self.assertEqual(header["ssl"]["client"], PP2_CLIENT_SSL)
                self.assertNotEqual(header["ssl"]["verify"], 0)
                self.assertEqual(
                    header["ssl"]["subs"].get(PP2_SUBTYPE_SSL_VERSION),
                    tls.version().encode())
                tls.close()
                mp.wait_sessions(n + 1)
            self.assertStopsCleanly(mp)

    def test_G53_no_ssl_tlv_for_plaintext_smtp_then_ssl_after_starttls(self):
        backend, mp, _ = self.serve_header_backend(
            "smtp", tls="starttls", extra="starttls = optional\n")
        with mp:
            # Port 25 style: the client never upgrades.
            smtp = smtplib.SMTP("127.0.0.1", mp.port("l"), timeout=30,
                                source_address=(CLIENT_IP, 0))
            port = smtp.sock.getsockname()[1]
            self.assertEqual(smtp.ehlo("client.example")[0], 250)
            self.assertEqual(smtp.mail("bob@example.org")[0], 250)
            header, = backend.wait_headers(1)
            self.assertIsInstance(header, dict, header)
            self.assertEqual(header["src"], (CLIENT_IP, port))
            self.assertNotIn(PP2_TYPE_SSL, tlv_kinds(header))
            smtp.quit()
            first = port
            # The same listener after STARTTLS: late connect, TLS said.
            smtp = smtplib.SMTP("127.0.0.1", mp.port("l"), timeout=30,
                                source_address=(CLIENT_IP, 0))
            port = smtp.sock.getsockname()[1]
            smtp.ehlo("client.example")
            self.assertEqual(smtp.starttls(context=self.context(
                check_hostname=False))[0], 220)
            smtp.ehlo("client.example")
            self.assertEqual(smtp.mail("bob@example.org")[0], 250)
            _, header = backend.wait_headers(2)
            self.assertIsInstance(header, dict, header)
            self.assertEqual(header["src"], (CLIENT_IP, port))
            self.assertIn(PP2_TYPE_SSL, tlv_kinds(header))
            self.assertEqual(header["ssl"]["client"] & PP2_CLIENT_SSL,
                             PP2_CLIENT_SSL)
            smtp.quit()
            lines = mp.wait_sessions(2)
            self.assertEqual(len(lines), 2, mp.log_text())
            # By client, not by position: the first session's line may
            # come second (two workers).
            starttls = {l["client"]: l["starttls"] for l in lines}
            self.assertEqual(starttls, {"%s:%d" % (CLIENT_IP, first): "no",
                                        "%s:%d" % (CLIENT_IP, port): "yes"})
            self.assertStopsCleanly(mp)


class AcceptProxyTest(ProxyProtocolCase):
    """accept_proxy = yes: mailproxy behind a load balancer (case 4)."""

    def lb_listener(self, version="v2", extra=""):
        return self.imap_listener(
            version, extra="accept_proxy = yes\n"
            "trusted_proxies = 127.0.0.1/32, ::1/128\n" + extra)

    def login_via_lb(self, mp, header, name="l"):
        imap = ImapsFrom(mp.port(name), self.context(), source=LB_IP,
                         preamble=header)
        self.assertNotIn("LOGINDISABLED", imap.capabilities)
        self.assertEqual(imap.login(self.env.user, self.env.password)[0],
                         "OK")
        imap.logout()
        return imap.source_port

    def test_v1_and_v2_headers_give_the_client_address(self):
        cases = [
            ("v1", v1_header("192.0.2.7", "127.0.0.1", 51234, 993),
             "192.0.2.7", 51234),
            ("v2", v2_header("198.51.100.23", "127.0.0.1", 40123, 993),
             "198.51.100.23", 40123),
            # A TLV from the load balancer is skipped.
            ("v2 tlvs", v2_header("198.51.100.24", "127.0.0.1", 40124, 993,
                                  tlv(PP2_TYPE_AUTHORITY, b"lb.example")),
             "198.51.100.24", 40124),
        ]
        with self.proxy(listeners={"l": self.lb_listener()}) as mp:
            for n, (what, header, ip, port) in enumerate(cases):
                with self.subTest(what):
                    since = self.env.log_size("dovecot")
                    lb_port = self.login_via_lb(mp, header)
                    self.wait_backend_log(
                        "dovecot", r"imap-login: Info: Login: user=<alice>, "
                        r"method=PLAIN, rip=%s, rport=%d, .*real_rip="
                        r"127\.0\.0\.1, .*secured" % (re.escape(ip), port),
                        since)
                    lines = mp.wait_sessions(n + 1)
                    line = lines[n]
                    self.assertClient(line, "%s:%d" % (ip, port),
                                      r"^127\.0\.0\.1:%d$" % lb_port)
                    self.assertNormalEnd(line)
            self.assertStopsCleanly(mp)

    def test_ipv6_header_addresses(self):
        cases = [
            ("v1", v1_header("2001:db8::7", "2001:db8::a", 51234, 993),
             "2001:db8::7", 51234),
            ("v2", v2_header("2001:db8::8", "2001:db8::a", 51235, 993),
             "2001:db8::8", 51235),
        ]
        with self.proxy(listeners={"l": self.lb_listener()}) as mp:
            for n, (what, header, ip, port) in enumerate(cases):
                with self.subTest(what):
                    since = self.env.log_size("dovecot")
                    lb_port = self.login_via_lb(mp, header)
                    self.wait_backend_log(
                        "dovecot", r"imap-login: Info: Login: user=<alice>, "
                        r"method=PLAIN, rip=%s, rport=%d, .*secured"
                        % (re.escape(ip), port), since)
                    line = mp.wait_sessions(n + 1)[n]
                    self.assertRegex(line["client"], r"^\[?%s\]?:%d$"
                                     % (re.escape(ip), port))
                    self.assertEqual(line["proxy"], "127.0.0.1:%d" % lb_port)
                    self.assertNormalEnd(line)
            self.assertStopsCleanly(mp)

    def test_lb_ssl_tlv_is_not_believed_before_starttls(self):
        # A header that claims TLS does not make a plaintext client a TLS
        # one: mailproxy still refuses LOGIN before STARTTLS.
        ssl_claim = tlv(PP2_TYPE_SSL, struct.pack("!BI", PP2_CLIENT_SSL, 0)
                        + tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"))
        listeners = {"l": self.imap_listener(
            "v2", tls="starttls", extra="accept_proxy = yes\n"
            "trusted_proxies = 127.0.0.1/32\n")}
        with self.proxy(listeners=listeners) as mp:
            imap = ImapFrom(mp.port("l"), source=LB_IP, preamble=v2_header(
                "192.0.2.9", "127.0.0.1", 40009, 143, ssl_claim))
            self.assertIn("LOGINDISABLED", imap.capabilities)
            with self.assertRaisesRegex(imaplib.IMAP4.error,
                                        "PRIVACYREQUIRED"):
                imap.login(self.env.user, self.env.password)
            imap.logout()
            line, = mp.wait_sessions(1)
            self.assertClient(line, "192.0.2.9:40009",
                              r"^127\.0\.0\.1:%d$" % imap.source_port)
            self.assertNoBackend(line)
            self.assertStopsCleanly(mp)

    def test_refused_headers_never_reach_the_backend(self):
        backend = FakeBackend("imap")
        self.addCleanup(backend.stop)
        good = v1_header("192.0.2.7", "127.0.0.1", 51234, 993)
        hello = client_hello(self.context())

        def listener(trusted, timeout):
            return self.listener(
                "imap", backend.address, tls="implicit",
                extra="proxy_protocol = v2\naccept_proxy = yes\n"
                "trusted_proxies = %s\ntimeout_proxy = %s\n"
                % (trusted, timeout))

        listeners = {
            "lb": listener("127.0.0.1/32, ::1/128", "30s"),
            "untrusted": listener("10.0.0.0/8", "30s"),
            "fast": listener("127.0.0.1/32", "1s"),
        }
        v2_bad_version = bytearray(v2_header("192.0.2.7", "127.0.0.1",
                                             51234, 993))
        v2_bad_version[12] = 0x31
        cases = [
            # (name, listener, bytes sent, close after sending, end, state)
            ("untrusted peer", "untrusted", good + hello, False,
             "proxy_error", None),
            ("malformed v1", "lb", b"PROXY TCP9 192.0.2.7 127.0.0.1 1 2\r\n"
             + hello, False, "proxy_error", None),
            ("malformed v2", "lb", bytes(v2_bad_version) + hello, False,
             "proxy_error", None),
            ("truncated v2", "lb", v2_header("192.0.2.7", "127.0.0.1",
                                             51234, 993)[:20], True,
             "proxy_error", None),
            ("truncated v1", "lb", good[:20], True, "proxy_error", None),
            ("no header", "lb", hello, False, "proxy_error", None),
            ("timeout", "fast", b"", False, "timeout", "proxy"),
        ]
        with self.proxy(listeners=listeners) as mp:
            for n, (what, name, data, half_close, end, state) in \
                    enumerate(cases):
                with self.subTest(what):
                    sock = socket.create_connection(
                        ("127.0.0.1", mp.port(name)), 30)
                    self.addCleanup(sock.close)
                    t0 = time.monotonic()
                    try:
                        if data:
                            sock.sendall(data)
                        if half_close:
                            sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass    # already closed by mailproxy
                    got = proxy.recv_until_closed(sock)
                    elapsed = time.monotonic() - t0
                    sock.close()
                    # Closed without a TLS byte or greeting.
                    self.assertEqual(got, b"", what)
                    lines = mp.wait_sessions(n + 1)
                    self.assertEqual(len(lines), n + 1, mp.log_text())
                    line = lines[n]
                    self.assertEqual(line["listener"], name, line)
                    self.assertEqual(line["end"], end, line)
                    if state is not None:
                        self.assertEqual(line["state"], state, line)
                    self.assertNoBackend(line)
                    self.assertIsNone(line.get("tls"), line)
                    self.assertEqual(line["state"], "proxy", line)
                    self.assertEqual(line["client_out"], "0", line)
                    if end == "proxy_error":
                        self.assertTrue(line.get("error"), line)
                    if name == "untrusted":
                        self.assertIn("trusted_proxies", line["error"])
                        self.assertEqual(line["client"], line["proxy"])
                    if end == "timeout":
                        self.assertGreaterEqual(elapsed, 0.9)
                        self.assertLess(elapsed, 10)
                    else:
                        # At once, not after timeout_proxy (30 s).
                        self.assertLess(elapsed, 10, what)
                    self.assertEqual(backend.connections(), 0, what)
            self.assertStopsCleanly(mp)
        # One line per connection, nothing more.
        self.assertEqual(len(mp.sessions()), len(cases), mp.log_text())
        self.assertEqual(backend.connections(), 0)

    def test_health_check_header_then_close_is_a_clean_close(self):
        # A balancer's check (HAProxy check-send-proxy) sends the header
        # and hangs up: a client that closed, not a TLS error.
        backend = FakeBackend("imap")
        self.addCleanup(backend.stop)
        local = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00]))
        listeners = {"lb": self.listener(
            "imap", backend.address, tls="implicit",
            extra="accept_proxy = yes\ntrusted_proxies = 127.0.0.1\n")}
        peers = []      # the balancer's address of each check
        with self.proxy(listeners=listeners) as mp:
            for header in (v1_header("192.0.2.7", "127.0.0.1", 51234, 993),
                           local):
                with socket.create_connection(("127.0.0.1", mp.port("lb")),
                                              10) as sock:
                    peers.append("127.0.0.1:%d" % sock.getsockname()[1])
                    sock.sendall(header)
                    sock.shutdown(socket.SHUT_WR)
                    # Nothing, or OpenSSL's alert for the cut handshake.
                    got = proxy.recv_until_closed(sock)
                    self.assertTrue(got == b"" or got[:1] == b"\x15", got)
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 2, mp.log_text())
        # Two workers: the second check's line may come first. Each is
        # known by the balancer's address, which is proxy= in both.
        by_peer = {line["proxy"]: line for line in lines}
        self.assertEqual(sorted(by_peer), sorted(peers), lines)
        for line in lines:
            self.assertEqual(line["end"], "client_closed", line)
            self.assertEqual(line["state"], "handshake", line)
            self.assertIsNone(line.get("error"), line)
            self.assertNoBackend(line)
        self.assertEqual(by_peer[peers[0]]["client"], "192.0.2.7:51234")
        # LOCAL: the connection's own address stands.
        self.assertEqual(by_peer[peers[1]]["client"], peers[1])
        self.assertEqual(backend.connections(), 0)


# --------------------------------------------------------------------------
# HAProxy -> two mailproxy instances -> Dovecot

HAPROXY_BIN = "/usr/sbin/haproxy"

HAPROXY_CFG = """\
# Generated by test_proxy_protocol.py
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend imaps
    bind 127.0.0.1:{port}
    default_backend mailproxies

backend mailproxies
    balance roundrobin
    server mp1 127.0.0.1:{mp1} send-proxy-v2
    server mp2 127.0.0.1:{mp2} send-proxy-v2
"""


def tcp_listening(port):
    """True if something listens on 127.0.0.1:port (from /proc/net/tcp,
    so the check makes no connection)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            fields = row.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


class HaproxyChainTest(ProxyProtocolCase):
    """HAProxy (send-proxy-v2) -> two mailproxy instances (accept_proxy,
    proxy_protocol = v2) -> Dovecot (case 5, DESIGN.md scale-out)."""

    def start_haproxy(self, cfg_text, directory):
        if not os.path.exists(HAPROXY_BIN):
            self.fail("%s missing: run tests/deps.sh" % HAPROXY_BIN)
        cfg = os.path.join(directory, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(cfg_text)
        check = subprocess.run([HAPROXY_BIN, "-c", "-f", cfg],
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        err_path = os.path.join(directory, "haproxy.stderr")
        err = open(err_path, "wb")
        self.addCleanup(err.close)
        proc = subprocess.Popen([HAPROXY_BIN, "-f", cfg, "-db"],
                                stdin=subprocess.DEVNULL, stdout=err,
                                stderr=err, preexec_fn=mailenv._child_setup)

        def stop():
            if proc.poll() is None:
                proc.terminate()        # this pid only
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)
        return proc, err_path

    def mailproxy(self, name):
        directory = os.path.join(self.env.tmp, name)
        os.makedirs(directory, exist_ok=True)
        listeners = {"l": self.imap_listener(
            "v2", extra="accept_proxy = yes\n"
            "trusted_proxies = 127.0.0.1/32\n")}
        mp = proxy.Mailproxy(types.SimpleNamespace(tmp=directory), self.ca,
                             listeners=listeners,
                             global_extra="drain_timeout = 3s\n")
        return mp

    def test_client_address_end_to_end(self):
        directory = os.path.join(self.env.tmp, "haproxy")
        os.makedirs(directory, exist_ok=True)
        # HAProxy binds with SO_REUSEPORT (mailproxy with reuse_port).
        port, hold = mailenv.reserve_port()
        self.addCleanup(hold.close)
        with self.mailproxy("mp1") as mp1, self.mailproxy("mp2") as mp2:
            proc, err_path = self.start_haproxy(HAPROXY_CFG.format(
                port=port, mp1=mp1.port("l"), mp2=mp2.port("l")), directory)
            deadline = time.monotonic() + 10
            while not tcp_listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(err_path) as f:
                        self.fail("haproxy did not start (%s):\n%s"
                                  % (proc.poll(), f.read()))
                time.sleep(0.05)
            hold.close()

            since = self.env.log_size("dovecot")
            client_ports = []
            for _ in range(6):
                imap = ImapsFrom(port, self.context())
                self.assertNotIn("LOGINDISABLED", imap.capabilities)
                self.assertEqual(imap.login(self.env.user,
                                            self.env.password)[0], "OK")
                imap.logout()
                client_ports.append(imap.source_port)

            # Dovecot: every login from 127.0.0.2 with the client's port,
            # secured by the TLS the header reports.
            logins = self.wait_backend_log(
                "dovecot", r"imap-login: Info: Login: user=<alice>, "
                r"method=PLAIN, rip=127\.0\.0\.2, rport=(\d+), .*"
                r"real_rip=127\.0\.0\.1, .*secured", since, count=6)
            self.assertEqual(sorted(int(m.group(1)) for m in logins),
                             sorted(client_ports))
            self.assertNotRegex(self.env.read_log("dovecot", since),
                                r"Login: user=<alice>, method=PLAIN, "
                                r"rip=127\.0\.0\.1,")

            # Both instances served some, each logging the client from the
            # header and HAProxy as proxy=.
            deadline = time.monotonic() + WAIT
            while len(mp1.sessions()) + len(mp2.sessions()) < 6:
                self.assertLess(time.monotonic(), deadline,
                                mp1.log_text() + mp2.log_text())
                time.sleep(0.05)
            lines1, lines2 = mp1.sessions(), mp2.sessions()
            self.assertGreater(len(lines1), 0)
            self.assertGreater(len(lines2), 0)
            self.assertEqual(len(lines1) + len(lines2), 6)
            seen = []
            for line in lines1 + lines2:
                self.assertRegex(line["client"], r"^127\.0\.0\.2:\d+$")
                self.assertRegex(line["proxy"], r"^127\.0\.0\.1:\d+$")
                self.assertNormalEnd(line)
                seen.append(int(line["client"].rsplit(":", 1)[1]))
            self.assertEqual(sorted(seen), sorted(client_ports))
            self.assertStopsCleanly(mp1)
            self.assertStopsCleanly(mp2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
