"""STARTTLS command injection (research/protocols.md §14 A1-A9) and the
last plaintext byte (E45), on the wire with raw sockets.

Bytes a client sends after its STARTTLS line, before mailproxy's reply,
are discarded and counted (discarded=); nothing of them is answered inside
TLS or reaches the backend, which is a scripted fake that records every
byte (and, for the EAST shapes A1-A3, the real Dovecot and Postfix). A
ClientHello pipelined with STARTTLS (A8) ends the session at once
(docs/dialogue.md). Every upgrade in these tests also checks E45: the
STARTTLS reply is the last plaintext mailproxy sends and the next byte on
the wire opens a TLS record (wire.Client.starttls).
"""

import time
import unittest

from wire import (EHLO_REPLY, GREETING, STARTTLS_OK, FakeBackend,
                  StarttlsCase, client_hello)

# A command sent inside TLS after the upgrade, and the fake backend's
# answer to it.
PROBE = {
    "imap": (b"c NOOP\r\n", [b"c OK NOOP completed.\r\n"]),
    "pop3": (b"USER alice\r\n", [b"+OK\r\n"]),
    "smtp": (b"NOOP\r\n", [b"250 2.0.0 Ok\r\n"]),
}
# The STARTTLS command in one write with something after it.
STARTTLS_LINE = {"imap": b"a STARTTLS\r\n", "pop3": b"STLS\r\n",
                 "smtp": b"STARTTLS\r\n"}
OK_LINE = {"imap": b"a OK Begin TLS negotiation now.\r\n",
           "pop3": STARTTLS_OK["pop3"], "smtp": STARTTLS_OK["smtp"]}


class StarttlsInjectionTest(StarttlsCase):

    def reply(self, c, protocol, tag=b"c"):
        if protocol == "imap":
            return c.imap_reply(tag)
        if protocol == "pop3":
            return c.pop3_reply()
        return c.smtp_reply()

    def probe(self, c, protocol):
        command, answer = PROBE[protocol]
        c.send(command)
        self.assertEqual(self.reply(c, protocol), answer)

    def pipelined(self, protocol, after, expected_commands=None):
        """STARTTLS and after in one write; the upgrade works, after is
        discarded, and the backend sees only the probe."""
        with FakeBackend(protocol) as fb, \
                self.serve(protocol, fb.address) as mp:
            c = self.greeted(mp, protocol)
            c.send(STARTTLS_LINE[protocol] + after)
            self.assertEqual(c.line(), OK_LINE[protocol])
            c.starttls(self.context())
            self.probe(c, protocol)
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [PROBE[protocol][0]])
        self.assertCounts(line, starttls="yes", discarded=len(after),
                          refused=0)
        return line

    # -- A1-A3: the EAST shapes, against fakes and the real servers --------

    def test_a01_imap_command_after_starttls_discarded(self):
        self.pipelined("imap", b"XKQZP NOOP\r\n")

    def test_a01_imap_command_after_starttls_discarded_dovecot(self):
        with self.serve("imap", "127.0.0.1:%d" % self.env.imap_port) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a STARTTLS\r\nXKQZP NOOP\r\n")
            self.assertEqual(c.line(), OK_LINE["imap"])
            c.starttls(self.context())
            # Nothing arrives unprompted: the first reply is to c.
            c.send(b"c NOOP\r\n")
            self.assertEqual(c.imap_reply(b"c"),
                             [b"c OK NOOP completed.\r\n"])
            c.send(b"d LOGOUT\r\n")
            reply = c.imap_reply(b"d")
            self.assertTrue(reply[-1].startswith(b"d OK"), reply)
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=12, refused=0)

    def test_a02_pop3_capa_after_stls_discarded(self):
        self.pipelined("pop3", b"CAPA\r\n")

    def test_a02_pop3_capa_after_stls_discarded_dovecot(self):
        with self.serve("pop3", "127.0.0.1:%d" % self.env.pop3_port) as mp:
            c = self.greeted(mp, "pop3")
            c.send(b"STLS\r\nCAPA\r\n")
            self.assertEqual(c.line(), OK_LINE["pop3"])
            c.starttls(self.context())
            c.send(b"USER alice\r\n")
            self.assertEqual(c.line(), b"+OK\r\n")
            c.send(b"QUIT\r\n")
            # No CAPA list in between: only the answer to QUIT.
            self.assertEqual(c.line(), b"+OK Logging out\r\n")
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=6, refused=0)

    def test_a03_smtp_ehlo_after_starttls_discarded(self):
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            c = self.greeted(mp, "smtp")
            c.send(b"EHLO t\r\n")
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            c.send(b"STARTTLS\r\nEHLO commandinjectiontester\r\n")
            self.assertEqual(c.line(), OK_LINE["smtp"])
            c.starttls(self.context())
            c.send(b"FAKE t\r\n")
            self.assertEqual(c.smtp_reply(), [
                b"502 5.5.2 Error: command not recognized\r\n"])
            c.send(b"QUIT\r\n")
            self.assertEqual(c.smtp_reply(), [b"221 2.0.0 Bye\r\n"])
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"FAKE t\r\n", b"QUIT\r\n"])
        self.assertCounts(line, starttls="yes",
                          discarded=len(b"EHLO commandinjectiontester\r\n"),
                          refused=0)

    def test_a03_smtp_ehlo_after_starttls_discarded_postfix(self):
        with self.serve("smtp", "127.0.0.1:%d" % self.env.smtp_port) as mp:
            c = self.greeted(mp, "smtp")
            c.send(b"EHLO t\r\n")
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            c.send(b"STARTTLS\r\nEHLO commandinjectiontester\r\n")
            self.assertEqual(c.line(), OK_LINE["smtp"])
            c.starttls(self.context())
            # No unsolicited 250: the first reply is Postfix's to FAKE.
            c.send(b"FAKE t\r\n")
            reply = c.smtp_reply()
            self.assertEqual(len(reply), 1, reply)
            self.assertTrue(reply[0].startswith(b"5"), reply)
            c.send(b"QUIT\r\n")
            self.assertTrue(c.smtp_reply()[-1].startswith(b"221 "))
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes",
                          discarded=len(b"EHLO commandinjectiontester\r\n"),
                          refused=0)

    # -- A4: STARTTLS split across reads --------------------------------

    def test_a04_starttls_split_across_reads(self):
        cases = {"imap": (b"a START", b"TLS\r\n", b"b NOOP\r\n"),
                 "pop3": (b"ST", b"LS\r\n", b"CAPA\r\n"),
                 "smtp": (b"START", b"TLS\r\n", b"NOOP\r\n")}
        for protocol, (first, rest, after) in cases.items():
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(first)
                time.sleep(0.2)   # a separate segment, a separate read
                c.send(rest + after)
                self.assertEqual(c.line(), OK_LINE[protocol])
                c.starttls(self.context())
                self.probe(c, protocol)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.commands(), [PROBE[protocol][0]])
                self.assertCounts(line, starttls="yes",
                                  discarded=len(after), refused=0)

    # -- A5: plaintext after the reply goes to the TLS engine ------------

    def test_a05_plaintext_after_the_reply_fails_the_handshake(self):
        after = {"imap": b"b LOGOUT\r\n", "pop3": b"QUIT\r\n",
                 "smtp": b"QUIT\r\n"}
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.greeted(mp, protocol)
                c.send(STARTTLS_LINE[protocol])
                self.assertEqual(c.line(), OK_LINE[protocol])
                c.send(after[protocol])
                got = c.until_closed()
                # At most a TLS alert record, never a plaintext answer.
                if got:
                    self.assertEqual(got[0], 0x15, got)
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.connections(), 0)
                self.assertEqual(line["end"], "tls_error", line)
                self.assertEqual(line["state"], "handshake", line)
                self.assertCounts(line, discarded=0, refused=0)
                self.assertNoBackend(line)

    # -- A6, A7: credential-theft shapes ----------------------------------

    def test_a06_imap_login_and_append_after_starttls_discarded(self):
        self.pipelined("imap", b"b LOGIN attacker pw\r\n"
                               b"c APPEND INBOX {300}\r\n")

    def test_a07_smtp_transaction_after_starttls_discarded(self):
        after = (b"MAIL FROM:<a@x>\r\nRCPT TO:<attacker@x>\r\nDATA\r\n")
        with FakeBackend("smtp") as fb, \
                self.serve("smtp", fb.address) as mp:
            c = self.greeted(mp, "smtp")
            c.send(b"EHLO t\r\n")
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            c.send(b"STARTTLS\r\n" + after)
            self.assertEqual(c.line(), OK_LINE["smtp"])
            c.starttls(self.context())
            c.send(b"EHLO t\r\n")
            self.assertEqual(c.smtp_reply()[0], b"250-fake.example\r\n")
            c.send(b"QUIT\r\n")
            self.assertEqual(c.smtp_reply(), [b"221 2.0.0 Bye\r\n"])
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(fb.commands(), [b"EHLO t\r\n", b"QUIT\r\n"])
        self.assertCounts(line, starttls="yes", discarded=len(after),
                          refused=0)

    def test_a07_smtp_transaction_after_starttls_discarded_postfix(self):
        with self.serve("smtp", "127.0.0.1:%d" % self.env.smtp_port) as mp:
            c = self.greeted(mp, "smtp")
            after = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<%s>\r\n"
                     b"DATA\r\n" % self.env.address.encode())
            c.send(b"EHLO t\r\nSTARTTLS\r\n" + after)
            self.assertEqual(b"".join(c.smtp_reply()), EHLO_REPLY)
            self.assertEqual(c.line(), OK_LINE["smtp"])
            c.starttls(self.context())
            c.send(b"EHLO t\r\n")
            self.assertEqual(c.smtp_reply()[-1][:4], b"250 ")
            # Postfix never saw the MAIL command.
            c.send(b"RCPT TO:<%s>\r\n" % self.env.address.encode())
            self.assertEqual(c.smtp_reply(),
                             [b"503 5.5.1 Error: need MAIL command\r\n"])
            c.send(b"QUIT\r\n")
            self.assertTrue(c.smtp_reply()[-1].startswith(b"221 "))
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=len(after),
                          refused=0)

    # -- A8: a ClientHello in the same write as STARTTLS ------------------

    def test_a08_client_hello_pipelined_with_starttls_ends_session(self):
        for protocol in ("imap", "pop3", "smtp"):
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                hello = client_hello(self.context())
                c = self.greeted(mp, protocol)
                c.send(STARTTLS_LINE[protocol] + hello)
                self.assertEqual(c.until_closed(), OK_LINE[protocol])
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.connections(), 0)
                self.assertEqual(line["end"], "protocol_error", line)
                self.assertEqual(line["error"],
                                 "TLS data sent before the STARTTLS reply")
                self.assertCounts(line, discarded=len(hello), refused=0)
                self.assertNoBackend(line)
                self.assertIsNone(line["tls"])

    # -- A9: a pipelined group ending in STARTTLS --------------------------

    def test_a09_pipelined_group_ending_in_starttls(self):
        cases = {
            "imap": (b"a CAPABILITY\r\nb STARTTLS\r\n",
                     b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n"
                     b"a OK CAPABILITY completed.\r\n"
                     b"b OK Begin TLS negotiation now.\r\n"),
            "pop3": (b"CAPA\r\nSTLS\r\n",
                     b"+OK Capability list follows\r\nCAPA\r\nSTLS\r\n"
                     b".\r\n+OK Begin TLS negotiation now.\r\n"),
            "smtp": (b"EHLO t\r\nNOOP\r\nSTARTTLS\r\n",
                     EHLO_REPLY + b"250 2.0.0 Ok\r\n"
                     b"220 2.0.0 Ready to start TLS\r\n"),
        }
        for protocol, (group, answers) in cases.items():
            with self.subTest(protocol=protocol), \
                    FakeBackend(protocol) as fb, \
                    self.serve(protocol, fb.address) as mp:
                c = self.connect(mp)
                c.send(group)
                expected = GREETING[protocol] + answers
                self.assertEqual(c.read_exact(len(expected)), expected)
                self.assertEqual(c.plain, expected)
                c.starttls(self.context())
                self.probe(c, protocol)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertEqual(fb.commands(), [PROBE[protocol][0]])
                self.assertCounts(line, starttls="yes", discarded=0,
                                  refused=0)

    # -- E45: the last plaintext byte --------------------------------------

    def test_e44_backend_alert_never_in_plaintext_after_the_reply(self):
        # Late connect: the backend is dialled only after the handshake,
        # so its greeting (an ALERT here) cannot race the STARTTLS reply.
        # Swallowed on a STARTTLS listener: the client had mailproxy's.
        alert = b"* OK [ALERT] maintenance at noon\r\n"
        with FakeBackend("imap", greeting=alert) as fb, \
                self.serve("imap", fb.address) as mp:
            c = self.greeted(mp, "imap")
            c.send(b"a STARTTLS\r\n")
            # Nothing connected while the client is in plaintext.
            self.assertEqual(c.line(), OK_LINE["imap"])
            self.assertEqual(fb.connections(), 0)
            c.starttls(self.context())
            self.probe(c, "imap")
            c.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNotIn(b"ALERT", c.plain)
        self.assertEqual(fb.connections(), 1)
        self.assertCounts(line, starttls="yes", discarded=0)

    def test_e45_last_plaintext_byte_is_the_lf_of_the_reply(self):
        # Against the real servers: everything mailproxy sent in
        # plaintext is exactly its greeting, one answer and the STARTTLS
        # reply; the byte after that LF on the wire is a TLS handshake
        # record, and the session then works.
        cases = {
            "imap": (self.env.imap_port, b"a CAPABILITY\r\n",
                     b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n"
                     b"a OK CAPABILITY completed.\r\n", b"t",
                     b"c CAPABILITY\r\n", b"c OK"),
            "pop3": (self.env.pop3_port, b"CAPA\r\n",
                     b"+OK Capability list follows\r\nCAPA\r\nSTLS\r\n"
                     b".\r\n", b"t", b"CAPA\r\n", b"."),
            "smtp": (self.env.smtp_port, b"EHLO t\r\n", EHLO_REPLY, b"t",
                     b"EHLO t\r\n", b"250 "),
        }
        for protocol, (port, ask, answer, tag, probe, last) in \
                cases.items():
            with self.subTest(protocol=protocol), \
                    self.serve(protocol, "127.0.0.1:%d" % port) as mp:
                c = self.greeted(mp, protocol)
                c.send(ask)
                self.assertEqual(c.read_exact(len(answer)), answer)
                self.upgrade(c, protocol, tag)
                self.assertEqual(
                    c.plain, GREETING[protocol] + answer
                    + (STARTTLS_OK[protocol] % tag if protocol == "imap"
                       else STARTTLS_OK[protocol]))
                self.assertEqual(c.raw_tls[:1], b"\x16")
                c.send(probe)
                while True:
                    got = c.line()
                    self.assertNotIn(b"STARTTLS", got.upper())
                    self.assertNotEqual(got.strip(), b"STLS")
                    if not got or got.startswith(last):
                        break
                self.assertTrue(got.startswith(last), got)
                c.close()
                line = self.only_line(mp)
                self.assertStopsCleanly(mp)
                self.assertCounts(line, starttls="yes", discarded=0,
                                  refused=0)


if __name__ == "__main__":
    unittest.main()
