"""The connection log on STARTTLS listeners (research/protocols.md §14
J70-J72) and a PROXY header from a client that is not a load balancer
(F49).

J70: every connection, however it ends before, during or after the
upgrade, leaves exactly one close line with the right starttls= field.
J71: a hostile SNI sent after STARTTLS is escaped like any other.
J72: logging in through mailproxy to the real Dovecot and Postfix, over
STARTTLS and implicit TLS, with LOGIN, PLAIN and USER/PASS, leaves no
trace of the password in mailproxy's log, raw or base64.
F49: "PROXY TCP4 ..." or a v2 signature as a client's first bytes is a
command like any other: refused or a protocol error, never forwarded.
"""

import base64
import imaplib
import poplib
import smtplib
import socket
import subprocess
import unittest

from wire import (PROTOCOL_ERROR, SMTP_MUST_STARTTLS, FakeBackend,
                  StarttlsCase, sasl_env_options)

PROXY_V1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class StarttlsLogTest(StarttlsCase):

    @classmethod
    def setUpClass(cls):
        cls.env_options = sasl_env_options()
        super().setUpClass()

    # -- J70 ---------------------------------------------------------------

    def test_j70_one_line_per_connection_however_it_ends(self):
        clients = []    # in the order of the sessions below

        def greeted():
            c = self.greeted(mp, "imap")
            clients.append("127.0.0.1:%d" % c.sock.getsockname()[1])
            return c

        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            # A port scan: connect, close.
            with socket.create_connection(("127.0.0.1", mp.port("l"))) as s:
                clients.append("127.0.0.1:%d" % s.getsockname()[1])
            # Greeted, then gone.
            greeted().close()
            # LOGOUT before TLS.
            c = greeted()
            c.send(b"a LOGOUT\r\n")
            c.until_closed()
            # STARTTLS answered, then gone before the handshake.
            c = greeted()
            c.send(b"a STARTTLS\r\n")
            self.assertEqual(c.line(), b"a OK Begin TLS negotiation now.\r\n")
            c.close()
            # STARTTLS answered, then plaintext garbage for a handshake.
            c = greeted()
            c.send(b"a STARTTLS\r\n")
            c.line()
            c.send_raw(b"GET / HTTP/1.0\r\n\r\n")
            c.until_closed()
            # A whole session: upgrade, a command at the backend, close.
            c = greeted()
            self.upgrade(c, "imap")
            c.send(b"c NOOP\r\n")
            self.assertEqual(c.imap_reply(b"c"), [b"c OK NOOP completed.\r\n"])
            c.close()
            self.assertEqual(len(mp.wait_sessions(6)), 6, mp.log_text())
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.sessions()), 6, mp.log_text())
        # In the order of the connections above, found by client port:
        # two workers write the lines in whatever order the sessions end.
        by_client = {l["client"]: l for l in mp.sessions()}
        self.assertEqual(sorted(by_client), sorted(clients), mp.log_text())
        lines = [by_client[client] for client in clients]
        # starttls=yes only once the handshake completed; an upgrade
        # that failed is known by state=handshake.
        self.assertEqual([l["starttls"] for l in lines],
                         ["no"] * 5 + ["yes"], mp.log_text())
        self.assertEqual([l["state"] for l in lines],
                         ["plain"] * 3 + ["handshake"] * 2 + ["dialog"],
                         mp.log_text())
        # Only the handshaken sessions may have reached the backend, and
        # of those only the whole one did.
        for line in lines[:5]:
            self.assertNoBackend(line)
        self.assertIsNotNone(lines[5].get("backend_addr"), lines[5])
        self.assertEqual(lines[4]["end"], "tls_error", lines[4])
        self.assertEqual(lines[2]["end"], "client_closed", lines[2])
        self.assertEqual(fb.connections(), 1)

    # -- J71 ---------------------------------------------------------------

    def test_j71_hostile_sni_after_starttls_is_escaped(self):
        sni = "evil\x1b[31m\rend=forged"
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            subprocess.run(
                ["openssl", "s_client", "-connect",
                 "127.0.0.1:%d" % mp.port("l"), "-starttls", "imap",
                 "-servername", sni],
                input=b"", capture_output=True, timeout=30)
            lines = mp.wait_sessions(1)
            self.assertStopsCleanly(mp)
        text = mp.log_text()
        self.assertEqual(len(lines), 1, text)
        self.assertEqual(lines[0]["starttls"], "yes", text)
        self.assertIn('sni="evil\\x1b[31m\\x0dend=forged"', text)
        self.assertNotIn("\x1b", text)
        self.assertNotIn(" end=forged", text)

    # -- J72 ---------------------------------------------------------------

    def test_j72_no_credentials_in_the_log(self):
        env = self.env
        user, password = env.user.encode(), env.password.encode()
        imap = "127.0.0.1:%d" % env.imap_port
        pop3 = "127.0.0.1:%d" % env.pop3_port
        smtp = "127.0.0.1:%d" % env.smtp_port
        listeners = {
            "imap": self.listener("imap", imap),
            "pop3": self.listener("pop3", pop3),
            "submission": self.listener("smtp", smtp),
            "imaps": self.listener("imap", imap, tls="implicit"),
        }
        ctx = self.ca.client_context()
        with self.proxy(listeners=listeners) as mp:
            c = imaplib.IMAP4("localhost", mp.port("imap"), timeout=60)
            c.starttls(ssl_context=ctx)
            c.login(env.user, env.password)
            c.logout()
            c = imaplib.IMAP4("localhost", mp.port("imap"), timeout=60)
            c.starttls(ssl_context=ctx)
            c.authenticate("PLAIN", lambda _: b"\0%s\0%s" % (user, password))
            c.logout()
            c = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                  ssl_context=ctx, timeout=60)
            c.login(env.user, env.password)
            c.logout()
            c = poplib.POP3("localhost", mp.port("pop3"), timeout=60)
            c.stls(context=ctx)
            c.user(env.user)
            c.pass_(env.password)
            c.quit()
            c = smtplib.SMTP("localhost", mp.port("submission"), timeout=60)
            c.starttls(context=ctx)
            c.login(env.user, env.password)
            c.quit()
            lines = mp.wait_sessions(5)
            self.assertStopsCleanly(mp)
        text = mp.log_text().encode()
        self.assertEqual(len(lines), 5, text)
        for line in lines:
            self.assertNormalEnd(line)
            self.assertGreater(int(line["backend_in"]), 0, line)
        secrets = [password, base64.b64encode(password),
                   base64.b64encode(b"\0%s\0%s" % (user, password)),
                   # smtplib's AUTH PLAIN and LOGIN shapes
                   base64.b64encode(b"%s\0%s\0%s" % (user, user, password))]
        for secret in secrets:
            self.assertNotIn(secret, text)

    # -- F49 ---------------------------------------------------------------

    def test_f49_proxy_v1_line_from_a_client_is_a_refused_command(self):
        refusals = {
            "imap": b"PROXY BAD Command not allowed before STARTTLS.\r\n",
            "pop3": b"-ERR Command not allowed before STLS.\r\n",
            "smtp": SMTP_MUST_STARTTLS,
        }
        for protocol, refusal in refusals.items():
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(PROXY_V1)
                self.assertEqual(c.line(), refusal)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertCounts(line, starttls="no", refused=1)
                self.assertNoBackend(line)
                self.assertEqual(fb.data(), b"")
                self.assertNotIn("1.2.3.4", mp.log_text())

    def test_f49_proxy_v2_signature_from_a_client_closes(self):
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0c"
                       + bytes([1, 2, 3, 4, 5, 6, 7, 8, 4, 87, 8, 174]))
                got = c.until_closed()
                # An empty first line may be refused first (IMAP: a bad
                # tag, SMTP: bad syntax); then the NUL ends it.
                tail = PROTOCOL_ERROR[protocol].search(got)
                self.assertIsNotNone(tail, got)
                self.assertIn(b"bare CR, LF or NUL", got)
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(line["end"], "protocol_error", line)
                self.assertNoBackend(line)
                self.assertEqual(fb.data(), b"")

    def test_f49_proxy_header_on_an_implicit_listener_is_a_tls_error(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address, tls="implicit") as mp:
            for header in (PROXY_V1, PROXY_V2_SIGNATURE):
                with socket.create_connection(
                        ("127.0.0.1", mp.port("l")), timeout=10) as s:
                    s.sendall(header)
                    s.shutdown(socket.SHUT_WR)
                    # No plaintext answer: at most a TLS alert record.
                    got = s.recv(100)
                    self.assertTrue(got == b"" or got[0] == 21, got)
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual([l["end"] for l in lines], ["tls_error"] * 2,
                         mp.log_text())
        for line in lines:
            self.assertNoBackend(line)
        self.assertEqual(fb.connections(), 0)


if __name__ == "__main__":
    unittest.main()
