"""Framing and parser differentials (research/protocols.md §14 D33-D41)
and identity spoofing through the proxy (F46-F48), on the wire.

Before authentication mailproxy parses every client line itself: bare CR,
bare LF, NUL, over-long lines and oversized IMAP literals end the session
with the protocol's goodbye (docs/dialogue.md), before TLS and after it,
and the backend (a recording fake) receives none of it. Identity
overrides are refused even though the real Dovecot and Postfix here
trust 127.0.0.1 and would honour them, as a control connection straight
to them shows.
"""

import email.utils
import socket
import unittest

from wire import (EHLO_REPLY, GREETING, PROTOCOL_ERROR, FakeBackend,
                  StarttlsCase)

TRUSTING = {
    # Dovecot honours ID x-originating-ip and POP3 XCLIENT from these,
    # Postfix XCLIENT and XFORWARD.
    "dovecot_extra": "login_trusted_networks = 127.0.0.0/8\n",
    "postfix_extra": {"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
                      "smtpd_authorized_xforward_hosts": "127.0.0.0/8"},
}

BAD_TAG = b"* BAD Invalid tag.\r\n"
NO_LITERALS = b" BAD Literals are not accepted before STARTTLS.\r\n"


def talk(port, lines):
    """A plain connection straight to a backend: sends each line after
    the previous answer; returns everything received."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f = s.makefile("rb")
    out = f.readline()
    for line, last in lines:
        s.sendall(line)
        while True:
            got = f.readline()
            out += got
            if not got or got.startswith(last):
                break
    s.close()
    return out


class StarttlsFramingTest(StarttlsCase):

    env_options = TRUSTING

    def broken(self, protocol, data, after_tls):
        """data ends the session with a protocol error; the backend
        receives nothing."""
        with FakeBackend(protocol) as fb, \
                self.serve(protocol, fb.address) as mp:
            c = self.greeted(mp, protocol)
            if after_tls:
                self.upgrade(c, protocol)
            c.send(data)
            self.assertProtocolError(c, protocol)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.data(), b"")
        self.assertEqual(line["end"], "protocol_error", line)
        self.assertTrue(line["error"], line)
        if not after_tls:
            self.assertEqual(fb.connections(), 0)
            self.assertNoBackend(line)
        return line

    def each_side_of_tls(self, cases):
        for protocol, data in cases:
            for after_tls in (False, True):
                with self.subTest(protocol=protocol, data=data,
                                  after_tls=after_tls):
                    self.broken(protocol, data, after_tls)

    # -- D33-D34: line ends and NUL -----------------------------------------

    def test_d33_bare_lf(self):
        self.each_side_of_tls([
            ("imap", b"a CAPABILITY\nb LOGIN u p\r\n"),
            ("pop3", b"CAPA\nUSER u\r\n"),
            ("smtp", b"EHLO x\nMAIL FROM:<a@x>\r\n"),
        ])

    def test_d34_bare_cr_and_nul(self):
        self.each_side_of_tls([
            ("imap", b"a NOOP\rb LOGIN u p\r\n"),
            ("imap", b"a NO\0OP\r\n"),
            ("pop3", b"CAPA\rUSER u\r\n"),
            ("pop3", b"CA\0PA\r\n"),
            ("smtp", b"NOOP\rMAIL FROM:<a@x>\r\n"),
            ("smtp", b"NO\0OP\r\n"),
        ])

    # -- D35-D36: spelling of STARTTLS ---------------------------------------

    def test_d35_starttls_case_insensitive(self):
        cases = [("imap", b"a starttls\r\n",
                  b"a OK Begin TLS negotiation now.\r\n"),
                 ("imap", b"A StartTLS\r\n",
                  b"A OK Begin TLS negotiation now.\r\n"),
                 ("pop3", b"stls\r\n", b"+OK Begin TLS negotiation now.\r\n"),
                 ("pop3", b"StLs\r\n", b"+OK Begin TLS negotiation now.\r\n"),
                 ("smtp", b"starttls\r\n",
                  b"220 2.0.0 Ready to start TLS\r\n"),
                 ("smtp", b"StartTls\r\n",
                  b"220 2.0.0 Ready to start TLS\r\n")]
        after = {"imap": (b"x starttls\r\n",
                          b"x BAD TLS is already active.\r\n"),
                 "pop3": (b"stls\r\n", b"-ERR TLS is already active.\r\n"),
                 "smtp": (b"StartTLS\r\n",
                          b"554 5.5.1 Error: TLS already active\r\n")}
        for protocol, command, answer in cases:
            with self.subTest(command=command), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(command)
                self.assertEqual(c.line(), answer)
                c.starttls(self.context())
                c.send(after[protocol][0])
                self.assertEqual(c.line(), after[protocol][1])
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.data(), b"")
                self.assertCounts(line, starttls="yes", refused=1)

    def test_d36_whitespace_around_starttls(self):
        # "split on one or more spaces" (docs/dialogue.md): two spaces
        # are STARTTLS; a tab makes the IMAP tag invalid.
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a\tSTARTTLS\r\n")
            self.assertEqual(c.line(), BAD_TAG)
            c.send(b"b  STARTTLS\r\n")
            self.assertEqual(c.line(), b"b OK Begin TLS negotiation now.\r\n")
            c.starttls(self.context())
            # After TLS, no spelling reaches the backend.
            for command in (b"x  STARTTLS\r\n", b"x STARTTLS \r\n",
                            b"x sTaRtTlS\r\n"):
                c.send(command)
                reply = c.imap_reply(b"x")
                self.assertEqual(len(reply), 1, reply)
                self.assertTrue(reply[0].startswith(b"x BAD "), reply)
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.data(), b"")
        self.assertCounts(line, starttls="yes", refused=4)

    def test_d36_trailing_whitespace_either_starttls_or_refused(self):
        # Not pinned down by docs/dialogue.md: a trailing space or tab may
        # be taken as STARTTLS or as an argument; either way consistently
        # (the handshake then works) and never forwarded.
        cases = [("imap", b"a STARTTLS \r\n",
                  (b"a OK Begin TLS negotiation now.\r\n",
                   b"a BAD STARTTLS takes no arguments.\r\n")),
                 ("pop3", b"STLS \r\n",
                  (b"+OK Begin TLS negotiation now.\r\n",
                   b"-ERR STLS takes no arguments.\r\n")),
                 ("smtp", b"STARTTLS \r\n",
                  (b"220 2.0.0 Ready to start TLS\r\n",
                   b"501 5.5.4 Syntax: STARTTLS\r\n")),
                 # A tab is not a verb character (docs/dialogue.md):
                 # refused as bad syntax, as Postfix would not be.
                 ("smtp", b"STARTTLS\t\r\n",
                  (None, b"500 5.5.2 Error: bad syntax\r\n"))]
        for protocol, command, answers in cases:
            with self.subTest(command=command), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(command)
                reply = c.line()
                self.assertIn(reply, answers)
                if reply == answers[0]:
                    c.starttls(self.context())
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.data(), b"")

    # -- D37: tags ---------------------------------------------------------

    def test_d37_invalid_imap_tags(self):
        batches = [
            [b"* STARTTLS\r\n", b"+ STARTTLS\r\n", b"a(b NOOP\r\n",
             b'"a" NOOP\r\n'],
            [b"a{1 NOOP\r\n", b"a%b NOOP\r\n", b"a\\b NOOP\r\n", b"\r\n"],
        ]
        refused = {}    # client address: refusals expected in its line
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            for batch in batches:
                c = self.greeted(mp, "imap")
                refused["127.0.0.1:%d" % c.sock.getsockname()[1]] = "4"
                for command in batch:
                    c.send(command)
                    self.assertEqual(c.line(), BAD_TAG, command)
                # "]" is allowed in a tag.
                c.send(b"a]b NOOP\r\n")
                self.assertEqual(c.line(), b"a]b OK NOOP completed.\r\n")
                c.close()
            # After TLS a bad tag is answered by mailproxy as well.
            c = self.greeted(mp, "imap")
            refused["127.0.0.1:%d" % c.sock.getsockname()[1]] = "1"
            self.upgrade(c, "imap")
            c.send(b"* NOOP\r\n")
            self.assertEqual(c.line(), BAD_TAG)
            c.send(b"a]b NOOP\r\n")
            self.assertEqual(c.line(), b"a]b OK NOOP completed.\r\n")
            c.close()
            lines = mp.wait_sessions(3)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"a]b NOOP\r\n"])
        # By client, not by position: sessions end on either worker.
        self.assertEqual({l["client"]: l["refused"] for l in lines},
                         refused, lines)

    # -- D38-D40: literals --------------------------------------------------

    def test_d38_synchronizing_literal_refused_without_continuation(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a ID {5}\r\n")
            self.assertEqual(c.line(), b"a" + NO_LITERALS)
            # The next line is a command, not literal data.
            c.send(b"b NOOP\r\n")
            self.assertEqual(c.line(), b"b OK NOOP completed.\r\n")
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNotIn(b"\n+", b"\n" + c.plain)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, refused=1)

    def test_d39_non_synchronizing_literal_closes(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a ID {10+}\r\nb STARTTLS\r\n")
            self.assertEqual(c.until_closed(), b"* BYE Protocol error: "
                             b"literal before STARTTLS.\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertEqual(line["end"], "protocol_error")
        self.assertCounts(line, starttls="no")

    def test_d40_literal_length_overflow_before_tls(self):
        # Over 65536 octets is a protocol error (docs/dialogue.md), even
        # as a synchronizing literal that would only be refused.
        for command in (b"a LOGIN {4294967296}\r\n",
                        b"a LOGIN {99999999999999999999}\r\n",
                        b"a LOGIN {99999999999999999999+}\r\n",
                        b"a LOGIN {65537}\r\n"):
            with self.subTest(command=command):
                self.broken("imap", command, after_tls=False)

    def test_d40_literal_at_the_limit_and_malformed_before_tls(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a LOGIN {65536}\r\n")
            self.assertEqual(c.line(), b"a" + NO_LITERALS)
            c.send(b"d NOOP\r\n")
            self.assertEqual(c.line(), b"d OK NOOP completed.\r\n")
            c.close()
            # Malformed: never a continuation; answered, or a protocol
            # error ("a bad literal", README).
            c = self.greeted(mp, "imap")
            c.send(b"c ID {-1}\r\n")
            reply = c.imap_reply(b"c")
            self.assertFalse(any(l.startswith(b"+") for l in reply), reply)
            if reply[0].startswith(b"* BYE "):
                self.assertTrue(PROTOCOL_ERROR["imap"].fullmatch(reply[0]),
                                reply)
                self.assertEqual(c.until_closed(), b"")
            else:
                c.send(b"d NOOP\r\n")
                self.assertEqual(c.line(), b"d OK NOOP completed.\r\n")
            c.close()
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertEqual(len(lines), 2)

    def test_d40_literal_length_overflow_after_tls(self):
        for command in (b"a LOGIN {4294967296}\r\n",
                        b"a LOGIN {99999999999999999999+}\r\n",
                        b"a LOGIN {18446744073709551617}\r\n",
                        b"a LOGIN {65537}\r\n", b"a LOGIN {65537+}\r\n"):
            with self.subTest(command=command):
                self.broken("imap", command, after_tls=True)

    def test_d40_literals_after_tls_forwarded_never_parsed(self):
        # {n} waits for the backend's "+", {n+} goes at once; the literal
        # data ("c STARTTLS" inside it) is never taken for a command.
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            self.upgrade(c, "imap")
            c.send(b"a LOGIN {12}\r\n")
            self.assertEqual(c.line(), b"+ Ready for literal data\r\n")
            c.send(b"c STARTTLS\r\n {6+}\r\nsecret\r\n")
            self.assertEqual(c.line(), b"a OK [CAPABILITY IMAP4rev1 IDLE] "
                             b"Logged in\r\n")
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        # The {6+} went as {6}, its octets after the backend's "+".
        self.assertEqual(fb.commands(), [
            b"a LOGIN {12}\r\nc STARTTLS\r\n {6}\r\nsecret\r\n"])
        self.assertCounts(line, starttls="yes", refused=0)

    def test_d40_literal_of_an_answered_command_is_never_parsed(self):
        # A command mailproxy answers itself after TLS (ID with a literal,
        # STARTTLS) may end in a non-synchronizing literal: its octets
        # follow at once and are data, never a command, so they must not
        # reach the backend as one ("c NOOP" here).
        cases = [(b'a ID ("name" {6+}\r\nc NOOP)\r\n',
                  [b"* ID NIL\r\n", b"a OK ID completed.\r\n"]),
                 (b"a STARTTLS {6+}\r\nc NOOP\r\n",
                  [b"a BAD TLS is already active.\r\n"])]
        for command, answer in cases:
            with self.subTest(command=command), \
                    FakeBackend("imap") as fb, \
                    self.serve("imap", fb.address) as mp:
                c = self.greeted(mp, "imap")
                self.upgrade(c, "imap")
                c.send(command)
                self.assertEqual(c.imap_reply(b"a"), answer)
                c.send(b"b NOOP\r\n")
                self.assertEqual(c.imap_reply(b"b"),
                                 [b"b OK NOOP completed.\r\n"])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.commands(), [b"b NOOP\r\n"])

    # -- D41: line length ----------------------------------------------------

    LIMITS = {
        # protocol: (limit, filler command, its refusal before TLS)
        "imap": (8192, b"a SELECT ",
                 b"a BAD Command not allowed before STARTTLS.\r\n"),
        "pop3": (2048, b"XTND ",
                 b"-ERR Command not allowed before STLS.\r\n"),
        "smtp": (1024, b"VRFY ",
                 b"530 5.7.0 Must issue a STARTTLS command first\r\n"),
    }

    def test_d41_line_at_the_limit_refused_one_more_closes(self):
        for protocol, (limit, command, refusal) in self.LIMITS.items():
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                at = command + b"x" * (limit - len(command) - 2) + b"\r\n"
                self.assertEqual(len(at), limit)
                c.send(at)
                self.assertEqual(c.line(), refusal)
                c.send(command + b"x" * (limit - len(command) - 1) +
                       b"\r\n")
                self.assertProtocolError(c, protocol)
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(line["end"], "protocol_error")
                self.assertEqual(fb.connections(), 0)

    def test_d41_endless_line_closes_with_bounded_reading(self):
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                sent = 0
                try:
                    for _ in range(64):
                        c.send_raw(b"x" * 65536)
                        sent += 65536
                except OSError:
                    pass
                # The goodbye, unless the reset for the unread rest
                # overtook it.
                got = c.until_closed()
                if got:
                    self.assertRegex(got, self.PROTOCOL_GOODBYE[protocol])
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(line["end"], "protocol_error")
                self.assertLess(int(line["client_in"]), 1 << 20)
                self.assertEqual(fb.connections(), 0)

    PROTOCOL_GOODBYE = {"imap": rb"^\* BYE Protocol error: ",
                        "pop3": rb"^-ERR Protocol error: ",
                        "smtp": rb"^421 4\.7\.0 mx\.proxy\.test Protocol "}

    def test_d41_line_limits_after_tls(self):
        cases = [("imap", b"a NOOP " + b"x" * 8184 + b"\r\n"),
                 ("pop3", b"USER " + b"x" * 2042 + b"\r\n"),
                 ("smtp", b"HELO " + b"x" * 1018 + b"\r\n"),
                 ("smtp", b"AUTH PLAIN " + b"x" * 12276 + b"\r\n")]
        for protocol, data in cases:
            with self.subTest(protocol=protocol, length=len(data)):
                self.assertIn(len(data), (8193, 2049, 1025, 12289))
                self.broken(protocol, data, after_tls=True)

    def test_d41_long_smtp_auth_line_after_tls_forwarded(self):
        # AUTH lines may be 12288 bytes (RFC 4954), CRLF included.
        auth = b"AUTH PLAIN " + b"A" * (12288 - 13) + b"\r\n"
        self.assertEqual(len(auth), 12288)
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            c = self.greeted(mp, "smtp")
            self.upgrade(c, "smtp")
            c.send(b"EHLO t\r\n")
            self.assertEqual(c.smtp_reply()[-1], b"250 8BITMIME\r\n")
            c.send(auth)
            self.assertEqual(c.smtp_reply(), [
                b"235 2.7.0 Authentication successful\r\n"])
            c.close()
            self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"EHLO t\r\n", auth])

    # -- F46-F48: identity overrides ------------------------------------------

    def test_f46_imap_id_x_fields_never_reach_dovecot(self):
        spoof = b'("x-originating-ip" "1.2.3.4" "x-client-transport" "TLS")'
        # Control: straight to Dovecot, the spoof works.
        since = self.env.log_size("dovecot")
        talk(self.env.imap_port, [
            (b"a ID " + spoof + b"\r\n", b"a "),
            (b"b LOGIN alice %s\r\n" % self.env.password.encode(), b"b "),
            (b"c LOGOUT\r\n", b"c ")])
        self.assertIn("rip=1.2.3.4,",
                      self.server_log("dovecot", since, "rip=1.2.3.4,"))
        for tls in ("starttls", "implicit"):
            since = self.env.log_size("dovecot")
            with self.subTest(tls=tls), \
                    self.serve("imap", "127.0.0.1:%d" % self.env.imap_port,
                               tls=tls) as mp:
                c = self.connect(mp)
                if tls == "starttls":
                    self.assertEqual(c.line(), GREETING["imap"])
                    c.send(b"p ID " + spoof + b"\r\n")
                    self.assertEqual(c.imap_reply(b"p"), [
                        b"* ID NIL\r\n", b"p OK ID completed.\r\n"])
                    self.upgrade(c, "imap")
                else:
                    c.starttls(self.context())
                    self.assertTrue(c.line().startswith(b"* OK "))
                for command in (b"a ID " + spoof,
                                b'a ID ("X-Originating-IP" "1.2.3.4")'):
                    c.send(command + b"\r\n")
                    self.assertEqual(c.imap_reply(b"a"), [
                        b"* ID NIL\r\n", b"a OK ID completed.\r\n"])
                # An ID without x- fields is Dovecot's to answer.
                c.send(b'b ID ("name" "test")\r\n')
                self.assertEqual(c.imap_reply(b"b"), [
                    b'* ID ("name" "Dovecot")\r\n',
                    b"b OK ID completed.\r\n"])
                c.send(b"c LOGIN alice %s\r\n" % self.env.password.encode())
                self.assertTrue(c.imap_reply(b"c")[-1].startswith(b"c OK"))
                c.send(b"d LOGOUT\r\n")
                self.assertTrue(c.imap_reply(b"d")[-1].startswith(b"d OK"))
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                log = self.server_log("dovecot", since, "Login: user=<")
                self.assertIn("Login: user=<alice>, method=PLAIN, "
                              "rip=127.0.0.1,", log)
                self.assertNotIn("1.2.3.4", log)
                self.assertCounts(line, refused=2)

    def test_f47_pop3_xclient_and_xoip_refused(self):
        since = self.env.log_size("dovecot")
        talk(self.env.pop3_port, [
            (b"XCLIENT ADDR=1.2.3.4 PORT=4242\r\n", b"+OK"),
            (b"USER alice\r\n", b"+OK"),
            (b"PASS %s\r\n" % self.env.password.encode(), b"+OK"),
            (b"QUIT\r\n", b"+OK")])
        self.assertIn("rip=1.2.3.4,",
                      self.server_log("dovecot", since, "rip=1.2.3.4,"))
        since = self.env.log_size("dovecot")
        unknown = [b"-ERR Unknown command.\r\n"]
        with self.serve("pop3", "127.0.0.1:%d" % self.env.pop3_port) as mp:
            c = self.greeted(mp, "pop3")
            for command in (b"XCLIENT ADDR=1.2.3.4 PORT=4242\r\n",
                            b"xoip 1.2.3.4\r\n"):
                c.send(command)
                self.assertEqual(c.pop3_reply(), unknown)
            self.upgrade(c, "pop3")
            # Two more: the fifth refusal would end the session.
            for command in (b"xclient ADDR=1.2.3.4 PORT=4242\r\n",
                            b"XOIP 1.2.3.4\r\n"):
                c.send(command)
                self.assertEqual(c.pop3_reply(), unknown)
            c.send(b"USER alice\r\n")
            self.assertEqual(c.pop3_reply(), [b"+OK\r\n"])
            c.send(b"PASS %s\r\n" % self.env.password.encode())
            self.assertEqual(c.pop3_reply(), [b"+OK Logged in.\r\n"])
            c.send(b"QUIT\r\n")
            self.assertEqual(c.pop3_reply(), [b"+OK Logging out.\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        log = self.server_log("dovecot", since, "Login: user=<")
        self.assertIn("Login: user=<alice>, method=PLAIN, rip=127.0.0.1,",
                      log)
        self.assertNotIn("1.2.3.4", log)
        self.assertCounts(line, starttls="yes", refused=4)

    def test_f48_smtp_xclient_and_xforward_refused(self):
        since = self.env.log_size("postfix")
        out = talk(self.env.smtp_port, [
            (b"EHLO control.example\r\n", b"250 "),
            (b"XCLIENT ADDR=1.2.3.4\r\n", b"220 "),
            (b"QUIT\r\n", b"221 ")])
        self.assertIn(b"250-XCLIENT", out)
        self.assertIn("[1.2.3.4]",
                      self.server_log("postfix", since, "[1.2.3.4]"))
        denied = [b"550 5.7.0 Error: insufficient authorization\r\n"]
        for tls in ("starttls", "implicit"):
            subject = "xclient %s %s" % (tls, email.utils.make_msgid())
            since = self.env.log_size("postfix")
            with self.subTest(tls=tls), \
                    self.serve("smtp", "127.0.0.1:%d" % self.env.smtp_port,
                               tls=tls) as mp:
                c = self.connect(mp)
                if tls == "starttls":
                    self.assertEqual(c.line(), GREETING["smtp"])
                    c.send(b"EHLO c.example\r\n")
                    self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
                    for command in (b"XCLIENT ADDR=1.2.3.4\r\n",
                                    b"XFORWARD ADDR=1.2.3.4\r\n"):
                        c.send(command)
                        self.assertEqual(c.smtp_reply(), denied)
                    self.upgrade(c, "smtp")
                else:
                    c.starttls(self.context())
                    self.assertTrue(c.line().startswith(b"220 "))
                c.send(b"EHLO c.example\r\n")
                ehlo = b"".join(c.smtp_reply())
                # Postfix's list, minus what mailproxy removes.
                self.assertIn(b"250-PIPELINING\r\n", ehlo)
                self.assertTrue(ehlo.endswith(b"250 CHUNKING\r\n"), ehlo)
                for word in (b"XCLIENT", b"XFORWARD", b"STARTTLS"):
                    self.assertNotIn(word, ehlo)
                for command in (b"xclient NAME=spoofed.example\r\n",
                                b"XFORWARD ADDR=1.2.3.4\r\n"):
                    c.send(command)
                    self.assertEqual(c.smtp_reply(), denied)
                c.send(b"MAIL FROM:<bob@example.org>\r\n")
                self.assertEqual(c.smtp_reply(), [b"250 2.1.0 Ok\r\n"])
                c.send(b"RCPT TO:<%s>\r\n" % self.env.address.encode())
                self.assertEqual(c.smtp_reply(), [b"250 2.1.5 Ok\r\n"])
                c.send(b"DATA\r\n")
                self.assertTrue(c.smtp_reply()[0].startswith(b"354 "))
                c.send(b"Subject: %s\r\n\r\nhello\r\n.\r\n" %
                       subject.encode())
                self.assertTrue(c.smtp_reply()[0].startswith(b"250 "))
                c.send(b"QUIT\r\n")
                self.assertTrue(c.smtp_reply()[0].startswith(b"221 "))
                c.close()
                path = self.env.wait_for_delivery(subject)
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                with open(path, "rb") as f:
                    stored = f.read()
                self.assertIn(b"Received: from c.example (unknown "
                              b"[127.0.0.1])", stored)
                self.assertNotIn(b"1.2.3.4", stored)
                self.assertNotIn("1.2.3.4",
                                 self.env.read_log("postfix", since))
                self.assertCounts(line, refused=4 if tls == "starttls"
                                  else 2)


if __name__ == "__main__":
    unittest.main()
