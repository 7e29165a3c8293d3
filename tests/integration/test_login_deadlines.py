"""Deadlines until login, and the command cap before STARTTLS.

- On a `tls = starttls`, `starttls = required` listener, timeout_handshake
  bounds the whole plaintext phase, from accept to the end of the TLS
  handshake: a client that keeps sending NOOPs (each answered) is still
  told `* BYE Disconnected for inactivity.` and closed (end=timeout
  state=plain). Today each command restarts the timer.
- Before TLS at most 20 commands other than STARTTLS are answered; the
  21st gets the protocol error and the session ends (end=protocol_error
  state=plain). STARTTLS after 20 of them still works.
- timeout_login: a client on TLS that has not authenticated this long
  after its handshake is told (IMAP `* BYE Disconnected for inactivity.`,
  POP3 `-ERR Disconnected for inactivity.`, SMTP `421 4.4.2 <name> Error:
  timeout exceeded`) and closed (end=timeout state=dialog), however busy
  it keeps; one that logged in stays; a `starttls = optional` listener is
  not bounded by it. Today the key does not exist.

Every deadline is asserted as reached no earlier than configured and
within it plus SLACK.
"""

import imaplib
import poplib
import select
import socket
import time
import unittest

from flood import SLACK, Deadline
from wire import GREETING, SERVER_NAME, Client, FakeBackend, StarttlsCase

HANDSHAKE = 3
LOGIN = 2
INACTIVITY = {
    "imap": b"* BYE Disconnected for inactivity.\r\n",
    "pop3": b"-ERR Disconnected for inactivity.\r\n",
    "smtp": b"421 4.4.2 %s Error: timeout exceeded\r\n"
            % SERVER_NAME.encode(),
}
TOO_MANY = {
    "imap": b"* BYE Protocol error: too many commands before STARTTLS.\r\n",
    "pop3": b"-ERR Protocol error: too many commands before STARTTLS.\r\n",
    "smtp": b"421 4.7.0 %s Protocol error: too many commands before "
            b"STARTTLS\r\n" % SERVER_NAME.encode(),
}
# A command mailproxy answers itself before STARTTLS, and its answer.
ANSWERED = {
    "imap": (b"t%d NOOP\r\n", [b"t%d OK NOOP completed.\r\n"]),
    "pop3": (b"CAPA\r\n", [b"+OK Capability list follows\r\n", b"CAPA\r\n",
                           b"STLS\r\n", b".\r\n"]),
    "smtp": (b"NOOP\r\n", [b"250 2.0.0 Ok\r\n"]),
}


def answered(protocol, i):
    command, reply = ANSWERED[protocol]
    if protocol == "imap":
        return command % i, [reply[0] % i]
    return command, reply


class LoginDeadlinesTest(StarttlsCase):

    def reply(self, c, protocol, first):
        """One whole reply, for the protocol and command first."""
        if protocol == "imap":
            return c.imap_reply(first.split(b" ", 1)[0])
        if protocol == "pop3":
            return c.pop3_reply(multiline=first.startswith(b"CAPA"))
        return c.smtp_reply()

    def is_answer(self, protocol, command, lines):
        """Whether lines are a whole, positive answer to command."""
        if not lines or not lines[-1].endswith(b"\n"):
            return False
        if protocol == "imap":
            tag = command.split(b" ", 1)[0]
            return lines[-1].startswith(tag + b" OK ")
        if protocol == "pop3":
            return lines[0].startswith(b"+OK")
        return lines[-1].startswith(b"250 ")

    def keep_busy(self, c, protocol, command, deadline):
        """Sends command (with %d for a counter) every 0.5 s, each answer
        read whole, until mailproxy says something unasked or something
        else, or the connection fails; returns the rest of the stream,
        read to its end."""
        rest = b""
        i = 0
        try:
            while deadline.elapsed() < deadline.limit:
                # Unasked bytes: the notice; no command crosses it.
                if c.inbuf or select.select([c.sock], [], [], 0)[0]:
                    break
                line = command % i if b"%d" in command else command
                try:
                    c.send(line)
                except OSError:
                    break
                lines = self.reply(c, protocol, line)
                if not self.is_answer(protocol, line, lines):
                    rest = b"".join(lines)
                    break
                i += 1
                time.sleep(0.5)
            else:
                self.fail("%d commands in %.0f s, each answered, and no "
                          "deadline" % (i, deadline.limit))
            return rest + c.until_closed()
        except socket.timeout:
            self.fail("no answer and no end within %.0f s"
                      % c.sock.gettimeout())

    def assertDeadline(self, deadline):
        elapsed = deadline.elapsed()
        self.assertLess(elapsed, deadline.limit)
        self.assertGreater(elapsed, deadline.configured - 0.5)

    def fake(self, protocol):
        backend = FakeBackend(protocol)
        self.addCleanup(backend.stop)
        return backend

    # -- the plaintext phase -----------------------------------------------

    def test_noop_trickle_before_starttls(self):
        backend = self.fake("imap")
        with self.serve("imap", backend.address, mode="required",
                        extra="timeout_handshake = %ds\n" % HANDSHAKE) as mp:
            c = Client(mp.port("l"))
            self.addCleanup(c.close)
            deadline = Deadline(HANDSHAKE)
            self.assertEqual(c.line(), GREETING["imap"])
            rest = self.keep_busy(c, "imap", b"t%d NOOP\r\n", deadline)
            self.assertEqual(rest, INACTIVITY["imap"])
            self.assertDeadline(deadline)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["end"], "timeout", line)
        self.assertEqual(line["state"], "plain", line)
        self.assertNoBackend(line)

    def twenty(self, c, protocol):
        for i in range(1, 21):
            command, reply = answered(protocol, i)
            c.send(command)
            self.assertEqual(self.reply(c, protocol, command), reply,
                             "command %d" % i)

    def command_cap(self, protocol):
        backend = self.fake(protocol)
        with self.serve(protocol, backend.address, mode="required") as mp:
            c = self.greeted(mp, protocol)
            self.twenty(c, protocol)
            c.send(answered(protocol, 21)[0])
            self.assertEqual(c.line(), TOO_MANY[protocol])
            self.assertEqual(c.until_closed(), b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["end"], "protocol_error", line)
        self.assertEqual(line["state"], "plain", line)
        self.assertNoBackend(line)
        self.assertEqual(backend.connections(), 0)

    def test_imap_21st_command_before_starttls(self):
        self.command_cap("imap")

    def test_pop3_21st_command_before_starttls(self):
        self.command_cap("pop3")

    def test_smtp_21st_command_before_starttls(self):
        self.command_cap("smtp")

    def test_starttls_after_20_commands(self):
        # Unchanged: STARTTLS is not one of the 20.
        backend = self.fake("imap")
        with self.serve("imap", backend.address, mode="required") as mp:
            c = self.greeted(mp, "imap")
            self.twenty(c, "imap")
            self.upgrade(c, "imap")
            c.send(b"a CAPABILITY\r\n")
            self.assertEqual(c.imap_reply(b"a")[-1],
                             b"a OK Capability completed.\r\n")
            c.send(b"b LOGOUT\r\n")
            self.assertEqual(c.until_closed(),
                             b"* BYE Logging out\r\nb OK Logout completed."
                             b"\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", refused=0)
        self.assertEqual(backend.commands(),
                         [b"a CAPABILITY\r\n", b"b LOGOUT\r\n"])

    # -- after TLS, until login --------------------------------------------

    def backend(self, protocol):
        port = {"imap": self.env.imap_port, "pop3": self.env.pop3_port,
                "smtp": self.env.smtp_port}[protocol]
        return "127.0.0.1:%d" % port

    def no_login(self, protocol, first, busy=False, in_global=False,
                 tls="implicit"):
        """A client on TLS that says first (and, with busy, keeps saying
        it) but never logs in."""
        key = "timeout_login = %ds\n" % LOGIN
        kwargs = {"global_extra": key} if in_global else {"extra": key}
        with self.serve(protocol, self.backend(protocol), tls=tls,
                        mode="required" if tls == "starttls" else None,
                        **kwargs) as mp:
            c = Client(mp.port("l"), timeout=LOGIN + SLACK)
            self.addCleanup(c.close)
            if tls == "starttls":
                self.assertEqual(c.line(), GREETING[protocol])
                self.upgrade(c, protocol)
                deadline = Deadline(LOGIN)
            else:
                c.starttls(self.context())
                deadline = Deadline(LOGIN)
                # The backend's greeting, relayed.
                self.assertTrue(c.line().startswith(
                    {"imap": b"* OK ", "pop3": b"+OK ",
                     "smtp": b"220 "}[protocol]))
            if busy:
                rest = self.keep_busy(c, protocol, first, deadline)
            else:
                c.send(first)
                reply = self.reply(c, protocol, first)
                self.assertTrue(self.is_answer(protocol, first, reply),
                                reply)
                try:
                    rest = c.until_closed()
                except socket.timeout:
                    self.fail("no notice and no end within %.0f s"
                              % deadline.limit)
            self.assertEqual(rest, INACTIVITY[protocol])
            self.assertDeadline(deadline)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["end"], "timeout", line)
        self.assertEqual(line["state"], "dialog", line)

    def test_imaps_no_login(self):
        self.no_login("imap", b"a CAPABILITY\r\n")

    def test_imaps_no_login_however_busy(self):
        self.no_login("imap", b"a%d CAPABILITY\r\n", busy=True)

    def test_imap_starttls_no_login(self):
        self.no_login("imap", b"a CAPABILITY\r\n", tls="starttls")

    def test_pop3s_no_login(self):
        # timeout_login in [global] this time.
        self.no_login("pop3", b"CAPA\r\n", in_global=True)

    def test_smtps_no_login(self):
        self.no_login("smtp", b"EHLO client.example.org\r\n")

    # -- logged in, or not bounded -----------------------------------------

    def test_imaps_logged_in_stays(self):
        extra = "timeout_login = %ds\n" % LOGIN
        with self.serve("imap", self.backend("imap"), tls="implicit",
                        extra=extra) as mp:
            imap = imaplib.IMAP4_SSL("localhost", mp.port("l"),
                                     ssl_context=self.context(), timeout=30)
            imap.login(self.env.user, self.env.password)
            time.sleep(LOGIN + 1)
            self.assertEqual(imap.noop()[0], "OK")
            imap.logout()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNormalEnd(line)

    def test_pop3s_logged_in_stays(self):
        extra = "timeout_login = %ds\n" % LOGIN
        with self.serve("pop3", self.backend("pop3"), tls="implicit",
                        extra=extra) as mp:
            pop = poplib.POP3_SSL("localhost", mp.port("l"),
                                  context=self.context(), timeout=30)
            pop.user(self.env.user)
            pop.pass_(self.env.password)
            time.sleep(LOGIN + 1)
            self.assertTrue(pop.noop().startswith(b"+OK"))
            pop.quit()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNormalEnd(line)

    def test_port25_after_starttls_not_bounded(self):
        extra = "timeout_login = %ds\n" % LOGIN
        with self.serve("smtp", self.backend("smtp"), mode="optional",
                        extra=extra) as mp:
            c = self.greeted(mp, "smtp")
            self.upgrade(c, "smtp")
            c.send(b"EHLO client.example.org\r\n")
            self.assertTrue(c.smtp_reply()[-1].startswith(b"250 "))
            time.sleep(LOGIN + 1)
            c.send(b"NOOP\r\n")
            self.assertEqual(c.smtp_reply(), [b"250 2.0.0 Ok\r\n"])
            c.send(b"QUIT\r\n")
            self.assertEqual(c.until_closed(), b"221 2.0.0 Bye\r\n")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNormalEnd(line)


if __name__ == "__main__":
    unittest.main()
