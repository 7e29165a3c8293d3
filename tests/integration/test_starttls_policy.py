"""What mailproxy allows before TLS and what it rewrites after it
(research/protocols.md §14 B10-B22 and C23-C32), on the wire.

Before TLS mailproxy answers from its templates (docs/dialogue.md) and
the backend is not even connected; after TLS it filters the backend's
capabilities and greeting and answers a second STARTTLS itself. The
backends are scripted fakes that record every byte (so "never forwarded"
is checked), and the real Dovecot and Postfix where their own behaviour
is the point (B16, B17, C23).
"""

import base64
import subprocess
import unittest

import proxy
from wire import (EHLO_REPLY, GREETING, IMAP_CAPS, IMAP_PRIVACY, POP3_PRIVACY,
                  SMTP_MUST_STARTTLS, FakeBackend, StarttlsCase)


def tokens(line, prefix):
    """The capability words of line after prefix (up to "]")."""
    assert line.startswith(prefix), line
    return line[len(prefix):].split(b"]")[0].split()


class StarttlsPolicyTest(StarttlsCase):

    env_options = {"postfix_extra": {"smtpd_helo_required": "yes"}}

    def exchange(self, c, pairs, reader):
        for command, answer in pairs:
            c.send(command)
            self.assertEqual(reader(), answer, command)

    def imap_exchange(self, c, pairs):
        for command, answer in pairs:
            c.send(command)
            self.assertEqual(c.imap_reply(command.split(b" ")[0]), answer,
                             command)

    # -- B10-B15: refused before TLS, never forwarded -----------------------

    def test_b10_imap_login_before_tls_refused(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a LOGIN alice Secret-pass-1\r\n")
            self.assertEqual(c.imap_reply(b"a"), [b"a" + IMAP_PRIVACY])
            self.upgrade(c, "imap")
            c.send(b"b NOOP\r\n")
            self.assertEqual(c.imap_reply(b"b"),
                             [b"b OK NOOP completed.\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"b NOOP\r\n"])
        self.assertCounts(line, starttls="yes", refused=1, discarded=0)

    def test_b11_imap_authenticate_before_tls_refused_no_continuation(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a AUTHENTICATE PLAIN dTEAdTEAcDE=\r\n")
            self.assertEqual(c.imap_reply(b"a"), [b"a" + IMAP_PRIVACY])
            c.send(b"b AUTHENTICATE PLAIN\r\n")
            self.assertEqual(c.imap_reply(b"b"), [b"b" + IMAP_PRIVACY])
            # No continuation is pending: the next line is a command.
            c.send(b"c NOOP\r\n")
            self.assertEqual(c.imap_reply(b"c"),
                             [b"c OK NOOP completed.\r\n"])
            c.send(b"d LOGOUT\r\n")
            self.assertEqual(c.until_closed(), b"* BYE Logging out.\r\n"
                             b"d OK LOGOUT completed.\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, starttls="no", refused=2)
        self.assertNoBackend(line)

    def test_b12_pop3_authentication_before_tls_refused(self):
        with FakeBackend("pop3") as fb, \
                self.serve("pop3", fb.address) as mp:
            c = self.greeted(mp, "pop3")
            self.exchange(c, [
                (b"USER alice\r\n", [POP3_PRIVACY]),
                (b"PASS Secret-pass-1\r\n", [POP3_PRIVACY]),
                (b"APOP alice d41d8cd98f00b204e9800998ecf8427e\r\n",
                 [POP3_PRIVACY]),
                (b"AUTH PLAIN\r\n", [POP3_PRIVACY]),
            ], c.pop3_reply)
            self.upgrade(c, "pop3")
            c.send(b"USER alice\r\n")
            self.assertEqual(c.pop3_reply(), [b"+OK\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"USER alice\r\n"])
        self.assertCounts(line, starttls="yes", refused=4, discarded=0)

    def test_b13_smtp_submission_refuses_everything_before_starttls(self):
        auth = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret")
        batches = [
            [auth + b"\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@x>\r\n",
             b"DATA\r\n"],
            [b"BDAT 10 LAST\r\n", b"VRFY x\r\n", b"HELP\r\n"],
        ]
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            for batch in batches:
                c = self.greeted(mp, "smtp")
                c.send(b"EHLO client.example\r\n")
                self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
                self.exchange(c, [(command, [SMTP_MUST_STARTTLS])
                                  for command in batch], c.smtp_reply)
                self.upgrade(c, "smtp")
                c.send(b"EHLO client.example\r\n")
                self.assertEqual(c.smtp_reply()[0], b"250-fake.example\r\n")
                c.close()
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"EHLO client.example\r\n"] * 2)
        self.assertEqual(sorted(int(l["refused"]) for l in lines), [3, 4])

    def test_b14_smtp_port25_plaintext_relay_without_auth(self):
        auth = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret")
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address, mode="optional") as mp:
            address = fb.address
            c = self.greeted(mp, "smtp")
            c.send(b"EHLO client.example\r\n")
            # mailproxy's template: no AUTH, although the backend has it.
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            c.send(auth + b"\r\n")
            self.assertEqual(c.smtp_reply(), [
                b"503 5.5.1 Error: authentication not enabled\r\n"])
            self.assertEqual(fb.connections(), 0)
            # The first command outside the pre-TLS set connects the
            # backend, replays EHLO and relays from MAIL on.
            self.exchange(c, [
                (b"MAIL FROM:<a@example.org>\r\n", [b"250 2.0.0 Ok\r\n"]),
                (b"RCPT TO:<b@example.test>\r\n", [b"250 2.0.0 Ok\r\n"]),
                (b"DATA\r\n",
                 [b"354 End data with <CR><LF>.<CR><LF>\r\n"]),
                (b"Subject: x\r\n\r\nhello\r\n.\r\n",
                 [b"250 2.0.0 Ok: queued\r\n"]),
                (b"QUIT\r\n", [b"221 2.0.0 Bye\r\n"]),
            ], c.smtp_reply)
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [
            b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
            b"RCPT TO:<b@example.test>\r\n", b"DATA\r\n", b"QUIT\r\n"])
        self.assertEqual(fb.conns[0].messages, [b"Subject: x\r\n\r\nhello\r\n"])
        self.assertNotIn(b"AUTH", fb.data())
        self.assertCounts(line, starttls="no", refused=1, discarded=0)
        self.assertIsNone(line["tls"])
        self.assertEqual(line["backend_addr"], address)

    def test_b15_imap_state_changing_commands_before_tls(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            self.imap_exchange(c, [
                (b"a SELECT INBOX\r\n",
                 [b"a BAD Command not allowed before STARTTLS.\r\n"]),
                (b"b ENABLE UTF8=ACCEPT\r\n",
                 [b"b BAD Command not allowed before STARTTLS.\r\n"]),
                (b'c ID ("x-originating-ip" "1.2.3.4")\r\n',
                 [b"* ID NIL\r\n", b"c OK ID completed.\r\n"]),
                (b"d EXAMINE INBOX\r\n",
                 [b"d BAD Command not allowed before STARTTLS.\r\n"]),
            ])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, starttls="no", refused=3)
        self.assertNoBackend(line)

    def test_b16_session_fixation_only_the_post_tls_login_counts(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a LOGIN attacker pw\r\n")
            self.assertEqual(c.imap_reply(b"a"), [b"a" + IMAP_PRIVACY])
            self.upgrade(c, "imap")
            c.send(b"b LOGIN alice Secret-pass-1\r\n")
            self.assertEqual(c.imap_reply(b"b"), [
                b"b OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"b LOGIN alice Secret-pass-1\r\n"])
        self.assertNotIn(b"attacker", fb.data())
        self.assertCounts(line, starttls="yes", refused=1)

    def test_b16_session_fixation_dovecot(self):
        since = self.env.log_size("dovecot")
        with self.serve("imap", "127.0.0.1:%d" % self.env.imap_port) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a LOGIN attacker pw\r\n")
            self.assertEqual(c.imap_reply(b"a"), [b"a" + IMAP_PRIVACY])
            self.upgrade(c, "imap")
            c.send(b"b LOGIN %s %s\r\n" % (self.env.user.encode(),
                                           self.env.password.encode()))
            self.assertTrue(c.imap_reply(b"b")[-1].startswith(b"b OK "))
            c.send(b"c NAMESPACE\r\n")
            self.assertTrue(c.imap_reply(b"c")[-1].startswith(b"c OK "))
            c.send(b"d LOGOUT\r\n")
            self.assertTrue(c.imap_reply(b"d")[-1].startswith(b"d OK "))
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        log = self.server_log("dovecot", since, "Login: user=<")
        self.assertEqual(log.count("Login: user=<"), 1, log)
        self.assertIn("Login: user=<alice>", log)
        self.assertNotIn("attacker", log)
        self.assertCounts(line, starttls="yes", refused=1)
        self.assertNormalEnd(line)

    def test_b17_smtp_fresh_backend_session_after_tls(self):
        # Late connect: Postfix (smtpd_helo_required = yes) never saw the
        # pre-TLS EHLO, so MAIL without a new EHLO is refused by Postfix
        # itself, and its log counts no EHLO for the session.
        since = self.env.log_size("postfix")
        with self.serve("smtp", "127.0.0.1:%d" % self.env.smtp_port) as mp:
            c = self.greeted(mp, "smtp")
            c.send(b"EHLO pre.example\r\n")
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            self.upgrade(c, "smtp")
            c.send(b"MAIL FROM:<a@example.org>\r\n")
            self.assertEqual(c.smtp_reply(), [
                b"503 5.5.1 Error: send HELO/EHLO first\r\n"])
            c.send(b"QUIT\r\n")
            self.assertTrue(c.smtp_reply()[-1].startswith(b"221 "))
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", refused=0)
        log = self.server_log("postfix", since, "disconnect from")
        self.assertIn("disconnect from unknown[127.0.0.1] mail=0/1 quit=1 "
                      "commands=1/2", log)
        self.assertNotIn("ehlo=", log)
        self.assertNotIn("pre.example", log)

    # -- B18-B20: STARTTLS where it does not belong -------------------------

    SECOND_STARTTLS = {
        "imap": (b"x STARTTLS\r\n", [b"x BAD TLS is already active.\r\n"]),
        "pop3": (b"STLS\r\n", [b"-ERR TLS is already active.\r\n"]),
        "smtp": (b"STARTTLS\r\n",
                 [b"554 5.5.1 Error: TLS already active\r\n"]),
    }

    def reader(self, c, protocol):
        if protocol == "imap":
            return lambda: c.imap_reply(b"x")
        if protocol == "pop3":
            return c.pop3_reply
        return c.smtp_reply

    def test_b18_second_starttls_after_tls_refused(self):
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                self.upgrade(c, protocol)
                self.starttls_on_tls_refused(c, protocol, fb, mp, "yes")

    def starttls_on_tls_refused(self, c, protocol, fb, mp, starttls):
        """On TLS, STARTTLS gets the protocol's error and never reaches
        the backend; one refusal in the log."""
        if protocol == "smtp":
            c.send(b"EHLO t\r\n")
            self.assertEqual(c.smtp_reply()[-1], b"250 8BITMIME\r\n")
        command, answer = self.SECOND_STARTTLS[protocol]
        c.send(command)
        self.assertEqual(self.reader(c, protocol)(), answer)
        c.close()
        line = self.only_line(mp)
        self.assertStopsCleanly(mp)
        self.assertNotIn(b"STARTTLS", fb.data().upper())
        self.assertNotIn(b"STLS", fb.data().upper())
        self.assertCounts(line, starttls=starttls, refused=1)

    def test_b19_starttls_on_implicit_listeners_refused(self):
        greetings = {"imap": b"* OK [CAPABILITY %s] Fake ready.\r\n"
                             % IMAP_CAPS.encode(),
                     "pop3": b"+OK Fake ready.\r\n",
                     "smtp": b"220 fake.example ESMTP Fake\r\n"}
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address, tls="implicit") as mp:
                c = self.connect(mp)
                c.starttls(self.context())
                self.assertEqual(c.line(), greetings[protocol])
                self.starttls_on_tls_refused(c, protocol, fb, mp, "no")

    def test_b20_starttls_with_arguments_refused(self):
        cases = {
            "imap": (b"a STARTTLS x\r\n",
                     b"a BAD STARTTLS takes no arguments.\r\n"),
            "pop3": (b"STLS x\r\n", b"-ERR STLS takes no arguments.\r\n"),
            "smtp": (b"STARTTLS x\r\n", b"501 5.5.4 Syntax: STARTTLS\r\n"),
        }
        for protocol, (command, answer) in cases.items():
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(command)
                self.assertEqual(c.line(), answer)
                # Still in plaintext, and a proper STARTTLS works.
                self.upgrade(c, protocol)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertCounts(line, starttls="yes", refused=1)
                self.assertEqual(fb.commands(), [])

    def test_b21_handshake_failure_after_the_reply_closes(self):
        # A TLS 1.1 ClientHello after the STARTTLS reply: the handshake
        # fails, the connection is closed, nothing is parsed after it.
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            out = subprocess.run(
                ["openssl", "s_client", "-starttls", "imap", "-connect",
                 "127.0.0.1:%d" % mp.port("l"), "-tls1_1",
                 "-cipher", "DEFAULT:@SECLEVEL=0", "-ign_eof"],
                input=b"a LOGIN alice Secret-pass-1\n", capture_output=True,
                timeout=30)
            self.assertNotEqual(out.returncode, 0)
            self.assertNotIn(b"a OK", out.stdout)
            self.assertNotIn(b"a NO", out.stdout)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertEqual(line["end"], "tls_error", line)
        self.assertEqual(line["state"], "handshake", line)
        self.assertEqual(line["error"], "unsupported protocol", line)
        self.assertNoBackend(line)

    def test_b21_garbage_after_the_reply_closes(self):
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            c = self.greeted(mp, "smtp")
            c.send(b"STARTTLS\r\n")
            self.assertEqual(c.line(), b"220 2.0.0 Ready to start TLS\r\n")
            c.send(b"\x16\x03\x01\x00\x05hello")
            got = c.until_closed()
            if got:
                self.assertEqual(got[0], 0x15, got)
            try:
                c.send_raw(b"MAIL FROM:<a@x>\r\n")
            except OSError:
                pass
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertEqual(line["end"], "tls_error", line)
        self.assertNoBackend(line)

    def test_b22_starttls_defaults_to_required(self):
        # No "starttls =" line: MAIL before TLS is refused, not relayed;
        # "optional" relays it. "sometimes" is a configuration error.
        with FakeBackend("smtp") as fb:
            with self.serve("smtp", fb.address) as mp:
                c = self.greeted(mp, "smtp")
                c.send(b"EHLO t\r\nMAIL FROM:<a@x>\r\n")
                self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
                self.assertEqual(c.smtp_reply(), [SMTP_MUST_STARTTLS])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)
            self.assertEqual(fb.connections(), 0)
            with self.serve("smtp", fb.address, mode="optional") as mp:
                c = self.greeted(mp, "smtp")
                c.send(b"EHLO t\r\nMAIL FROM:<a@x>\r\n")
                self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
                self.assertEqual(c.smtp_reply(), [b"250 2.0.0 Ok\r\n"])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)
            self.assertEqual(fb.commands(),
                             [b"EHLO t\r\n", b"MAIL FROM:<a@x>\r\n"])
        bad = self.serve("smtp", "127.0.0.1:25", mode="sometimes")
        out = subprocess.run([proxy.binary(), "-t", "-c", bad.config_path],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 1, out)
        with open(bad.config_path) as f:
            lineno = f.read().splitlines().index("starttls = sometimes") + 1
        self.assertIn(b"%s:%d:" % (bad.config_path.encode(), lineno),
                      out.stdout + out.stderr)
        good = self.serve("smtp", "127.0.0.1:25", mode="optional")
        out = subprocess.run([proxy.binary(), "-t", "-c", good.config_path],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out)

    # -- C23-C24: mailproxy's own greeting and capabilities ----------------

    def test_c23_imap_greeting_is_the_template_not_the_backends(self):
        # Dovecot advertises AUTH=PLAIN, LITERAL+ and more; before TLS the
        # client sees none of it.
        backend = "127.0.0.1:%d" % self.env.imap_port
        with self.serve("imap", backend) as mp:
            c = self.greeted(mp, "imap")
            c.close()
            self.only_line(mp)
            self.assertStopsCleanly(mp)
        extra = "greeting = Welcome to the test.\n"
        for protocol, port, greeting in (
                ("imap", self.env.imap_port,
                 b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] "
                 b"Welcome to the test.\r\n"),
                ("pop3", self.env.pop3_port, b"+OK Welcome to the test.\r\n"),
                ("smtp", self.env.smtp_port,
                 b"220 mx.proxy.test ESMTP Welcome to the test.\r\n")):
            with self.subTest(protocol=protocol), \
                    self.serve(protocol, "127.0.0.1:%d" % port,
                               extra=extra) as mp:
                c = self.connect(mp)
                self.assertEqual(c.line(), greeting)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertNoBackend(line)

    def test_c24_imap_commands_answered_before_tls(self):
        with FakeBackend("imap") as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a CAPABILITY\r\nb NOOP\r\nc ID NIL\r\n"
                   b'd ID ("name" "x")\r\ne LOGOUT\r\n')
            self.assertEqual(c.until_closed(),
                             b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED"
                             b"\r\na OK CAPABILITY completed.\r\n"
                             b"b OK NOOP completed.\r\n"
                             b"* ID NIL\r\nc OK ID completed.\r\n"
                             b"* ID NIL\r\nd OK ID completed.\r\n"
                             b"* BYE Logging out.\r\n"
                             b"e OK LOGOUT completed.\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, starttls="no", refused=0, discarded=0)
        self.assertNoBackend(line)

    # -- C25: post-TLS capability filtering --------------------------------

    def test_c25_imap_capabilities_filtered_after_tls(self):
        caps = ("IMAP4rev1 STARTTLS AUTH=SCRAM-SHA-256-PLUS "
                "AUTH=SCRAM-SHA-256 XCLIENT AUTH=PLAIN ID")
        kept = [b"IMAP4rev1", b"AUTH=SCRAM-SHA-256", b"AUTH=PLAIN", b"ID"]
        replies = {"NOOP": b"* OK [CAPABILITY " + caps.encode() +
                           b"] Now this.\r\n{tag} OK NOOP done.\r\n"}
        for tls in ("starttls", "implicit"):
            with self.subTest(tls=tls), \
                    FakeBackend("imap", caps=caps, replies=replies) as fb, \
                    self.serve("imap", fb.address, tls=tls) as mp:
                c = self.connect(mp)
                if tls == "starttls":
                    self.assertEqual(c.line(), GREETING["imap"])
                    self.upgrade(c, "imap")
                else:
                    c.starttls(self.context())
                    greeting = c.line()
                    self.assertEqual(tokens(greeting, b"* OK [CAPABILITY "),
                                     kept)
                    self.assertTrue(greeting.endswith(b"] Fake ready.\r\n"))
                c.send(b"a CAPABILITY\r\n")
                reply = c.imap_reply(b"a")
                self.assertEqual(len(reply), 2, reply)
                self.assertEqual(tokens(reply[0], b"* CAPABILITY "), kept)
                self.assertEqual(reply[1], b"a OK Capability completed.\r\n")
                c.send(b"b NOOP\r\n")
                reply = c.imap_reply(b"b")
                self.assertEqual(tokens(reply[0], b"* OK [CAPABILITY "),
                                 kept)
                self.assertTrue(reply[0].endswith(b"] Now this.\r\n"))
                self.assertEqual(reply[1], b"b OK NOOP done.\r\n")
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)

    def test_c25_pop3_capa_filtered_after_tls(self):
        capa = ["CAPA", "TOP", "STLS", "XCLIENT", "USER", "..odd",
                "SASL PLAIN SCRAM-SHA-256-PLUS SCRAM-SHA-256", "UIDL"]
        with FakeBackend("pop3", caps=capa) as fb, \
                self.serve("pop3", fb.address) as mp:
            c = self.greeted(mp, "pop3")
            self.upgrade(c, "pop3")
            c.send(b"CAPA\r\n")
            self.assertEqual(c.pop3_reply(multiline=True), [
                b"+OK\r\n", b"CAPA\r\n", b"TOP\r\n", b"USER\r\n",
                b"..odd\r\n", b"SASL PLAIN SCRAM-SHA-256\r\n", b"UIDL\r\n",
                b".\r\n"])
            # The reply's end was recognised: the next command goes on.
            c.send(b"USER alice\r\n")
            self.assertEqual(c.pop3_reply(), [b"+OK\r\n"])
            c.close()
            self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"CAPA\r\n", b"USER alice\r\n"])

    def test_c25_smtp_ehlo_filtered_after_tls(self):
        cases = [
            (["fake.example", "PIPELINING", "STARTTLS", "XCLIENT NAME ADDR",
              "XFORWARD NAME ADDR", "AUTH PLAIN SCRAM-SHA-256-PLUS LOGIN",
              "8BITMIME"],
             b"250-fake.example\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN"
             b"\r\n250 8BITMIME\r\n"),
            # A removed last line makes the one before it the last.
            (["fake.example", "AUTH PLAIN SCRAM-SHA-1-PLUS",
              "SIZE 1000", "STARTTLS"],
             b"250-fake.example\r\n250-AUTH PLAIN\r\n250 SIZE 1000\r\n"),
        ]
        for ehlo, expected in cases:
            with self.subTest(ehlo=ehlo), \
                    FakeBackend("smtp", caps=ehlo) as fb, \
                    self.serve("smtp", fb.address) as mp:
                c = self.greeted(mp, "smtp")
                self.upgrade(c, "smtp")
                c.send(b"EHLO t\r\n")
                self.assertEqual(b"".join(c.smtp_reply()), expected)
                c.send(b"NOOP\r\n")
                self.assertEqual(c.smtp_reply(), [b"250 2.0.0 Ok\r\n"])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)

    # -- C26-C28: SMTP replies ----------------------------------------------

    def test_c26_smtp_pre_tls_commands_from_the_template(self):
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            c = self.greeted(mp, "smtp")
            self.exchange(c, [
                (b"EHLO client.example\r\n", EHLO_REPLY.splitlines(True)),
                (b"HELO client.example\r\n", [b"250 mx.proxy.test\r\n"]),
                (b"EHLO\r\n", [b"501 5.5.4 Syntax: EHLO hostname\r\n"]),
                (b"HELO\r\n", [b"501 5.5.4 Syntax: HELO hostname\r\n"]),
                (b"NOOP\r\n", [b"250 2.0.0 Ok\r\n"]),
                (b"RSET\r\n", [b"250 2.0.0 Ok\r\n"]),
                (b"ehlo lower.example\r\n", EHLO_REPLY.splitlines(True)),
                (b"QUIT\r\n", [b"221 2.0.0 Bye\r\n"]),
            ], c.smtp_reply)
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, starttls="no", refused=2)
        self.assertNoBackend(line)

    def test_c27_smtp_single_line_and_bare_code_ehlo_replies(self):
        cases = [
            ({}, b"250 fake.example\r\n", ["fake.example"]),
            ({"EHLO": b"250-fake.example\r\n250-PIPELINING\r\n250\r\n"},
             b"250-fake.example\r\n250-PIPELINING\r\n250\r\n", None),
        ]
        for replies, expected, caps in cases:
            with self.subTest(expected=expected), \
                    FakeBackend("smtp", caps=caps, replies=replies) as fb, \
                    self.serve("smtp", fb.address) as mp:
                c = self.greeted(mp, "smtp")
                self.upgrade(c, "smtp")
                c.send(b"EHLO t\r\n")
                got = c.smtp_reply()
                self.assertEqual(b"".join(got), expected)
                # The end of the reply was recognised: NOOP is forwarded.
                c.send(b"NOOP\r\n")
                self.assertEqual(c.smtp_reply(), [b"250 2.0.0 Ok\r\n"])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.commands(), [b"EHLO t\r\n", b"NOOP\r\n"])

    def test_c28_smtp_ehlo_error_replies_relayed_unchanged(self):
        for reply, closes in ((b"554 5.7.1 No thanks\r\n", False),
                              (b"500 5.5.1 What?\r\n", False),
                              (b"421 4.3.2 Service not available\r\n", True)):
            answer = ("close", reply) if closes else reply
            with self.subTest(reply=reply), \
                    FakeBackend("smtp", replies={"EHLO": answer}) as fb, \
                    self.serve("smtp", fb.address) as mp:
                c = self.greeted(mp, "smtp")
                self.upgrade(c, "smtp")
                c.send(b"EHLO t\r\n")
                self.assertEqual(c.smtp_reply(), [reply])
                if closes:
                    self.assertEqual(c.until_closed(), b"")
                else:
                    c.send(b"HELO t\r\n")
                    self.assertEqual(c.smtp_reply(),
                                     [b"250 fake.example\r\n"])
                c.close()
                self.only_line(mp)
                self.assertStopsCleanly(mp)

    # -- C29-C30: POP3 ------------------------------------------------------

    def test_c29_pop3_capa_before_tls_is_the_template(self):
        with FakeBackend("pop3") as fb, \
                self.serve("pop3", fb.address) as mp:
            c = self.greeted(mp, "pop3")
            c.send(b"CAPA\r\n")
            self.assertEqual(c.pop3_reply(multiline=True), [
                b"+OK Capability list follows\r\n", b"CAPA\r\n",
                b"STLS\r\n", b".\r\n"])
            c.send(b"capa\r\n")
            self.assertEqual(len(c.pop3_reply(multiline=True)), 4)
            c.send(b"QUIT\r\n")
            self.assertEqual(c.until_closed(), b"+OK Logging out.\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.connections(), 0)
        self.assertCounts(line, starttls="no", refused=0)

    def test_c30_pop3_backend_timestamp_never_shown_apop_refused(self):
        stamp = b"<1896.697170952@dbc.mtview.ca.us>"
        with FakeBackend("pop3", greeting=b"+OK ready " + stamp +
                         b"\r\n") as fb, \
                self.serve("pop3", fb.address) as mp:
            c = self.greeted(mp, "pop3")
            c.send(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n")
            self.assertEqual(c.pop3_reply(), [POP3_PRIVACY])
            self.upgrade(c, "pop3")
            # The backend's greeting was swallowed: the first line inside
            # TLS answers our command.
            c.send(b"USER alice\r\n")
            self.assertEqual(c.pop3_reply(), [b"+OK\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNotIn(stamp, c.plain)
        self.assertEqual(fb.commands(), [b"USER alice\r\n"])
        self.assertCounts(line, starttls="yes", refused=1)

    # -- C31: greetings mailproxy does not accept ----------------------------

    def test_c31_imap_preauth_greeting_refused(self):
        for tls in ("starttls", "implicit"):
            with self.subTest(tls=tls), \
                    FakeBackend("imap", greeting=b"* PREAUTH [CAPABILITY "
                                b"IMAP4rev1] Logged in as alice\r\n") as fb, \
                    self.serve("imap", fb.address, tls=tls) as mp:
                c = self.connect(mp)
                if tls == "starttls":
                    self.assertEqual(c.line(), GREETING["imap"])
                    self.upgrade(c, "imap")
                else:
                    c.starttls(self.context())
                self.assertEqual(c.until_closed(),
                                 b"* BYE [UNAVAILABLE] Backend server not "
                                 b"available.\r\n")
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(line["error"], "backend greeting is PREAUTH")
                self.assertEqual(line["end"], "backend_error")
                self.assertEqual(fb.commands(), [])

    def test_c31_bad_greetings_relayed_then_closed(self):
        cases = [("imap", b"* BYE Too many connections\r\n"),
                 ("pop3", b"-ERR [SYS/TEMP] Too busy\r\n"),
                 ("smtp", b"554 5.3.2 fake.example Too busy\r\n"),
                 ("smtp", b"421 4.3.2 fake.example Shutting down\r\n")]
        for protocol, greeting in cases:
            with self.subTest(greeting=greeting), \
                    FakeBackend(protocol, greeting=greeting) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                self.upgrade(c, protocol)
                self.assertEqual(c.until_closed(), greeting)
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(line["end"], "backend_error", line)
                self.assertEqual(fb.commands(), [])

    # -- C32: LOGINDISABLED from the backend after TLS -----------------------

    def test_c32_backend_logindisabled_after_tls_relayed(self):
        caps = "IMAP4rev1 LOGINDISABLED AUTH=PLAIN"
        with FakeBackend("imap", caps=caps) as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            self.upgrade(c, "imap")
            c.send(b"a CAPABILITY\r\n")
            self.assertEqual(c.imap_reply(b"a"), [
                b"* CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN\r\n",
                b"a OK Capability completed.\r\n"])
            c.close()
            self.only_line(mp)
            self.assertStopsCleanly(mp)


if __name__ == "__main__":
    unittest.main()
