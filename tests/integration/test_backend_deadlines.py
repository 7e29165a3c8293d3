"""timeout_backend: before the client has authenticated, the backend's
greeting and each of its replies must come within timeout_backend, else
the client gets its protocol's notice and the session ends (end=timeout;
state=greeting when the greeting never came, state=dialog when a reply
never came). Today nothing bounds a backend that accepts and says nothing
but the relay's idle timeout (31m / 10m / 5m).

Backends: a FakeBackend that accepts and never greets, and one that greets
and never answers the client's first command (IMAP CAPABILITY, POP3 CAPA,
SMTP EHLO). Implicit-TLS listeners, timeout_backend = 2s; the notice must
come no earlier than the deadline and within it plus SLACK.
"""

import socket
import time
import unittest

from flood import SLACK, Deadline
from wire import SERVER_NAME, Client, FakeBackend, StarttlsCase

TIMEOUT = 2
NOTICE = {
    "imap": b"* BYE [UNAVAILABLE] Backend server not available.\r\n",
    "pop3": b"-ERR [SYS/TEMP] Backend server not available.\r\n",
    "smtp": b"421 4.3.0 %s Service not available, closing transmission "
            b"channel\r\n" % SERVER_NAME.encode(),
}
FIRST = {"imap": ("CAPABILITY", b"a CAPABILITY\r\n"),
         "pop3": ("CAPA", b"CAPA\r\n"),
         "smtp": ("EHLO", b"EHLO client.example.org\r\n")}
GREETED = {"imap": b"* OK ", "pop3": b"+OK ", "smtp": b"220 "}


class BackendDeadlinesTest(StarttlsCase):

    def silent(self, protocol, greets):
        """A session whose backend never greets (greets False) or greets
        and never answers the first command; checks the notice, its time
        and the log line."""
        word, command = FIRST[protocol]
        backend = FakeBackend(protocol, greeting=None if greets else b"",
                              replies={word: b""})
        self.addCleanup(backend.stop)
        with self.serve(protocol, backend.address, tls="implicit",
                        extra="timeout_backend = %ds\n" % TIMEOUT) as mp:
            c = Client(mp.port("l"), timeout=TIMEOUT + SLACK)
            self.addCleanup(c.close)
            c.starttls(self.context())
            deadline = Deadline(TIMEOUT)
            if greets:
                self.assertTrue(c.line().startswith(GREETED[protocol]))
                c.send(command)
                deadline = Deadline(TIMEOUT)
            try:
                got = c.until_closed()
            except socket.timeout:
                self.fail("%s: neither a notice nor the end of the session "
                          "within %d s" % (protocol, deadline.limit))
            elapsed = deadline.elapsed()
            self.assertEqual(got, NOTICE[protocol])
            self.assertLess(elapsed, deadline.limit)
            self.assertGreater(elapsed, TIMEOUT - 0.5)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["end"], "timeout", line)
        self.assertEqual(line["state"], "dialog" if greets else "greeting",
                         line)
        self.assertEqual(backend.commands(), [command] if greets else [])

    def test_imap_no_greeting(self):
        self.silent("imap", greets=False)

    def test_imap_no_reply(self):
        self.silent("imap", greets=True)

    def test_pop3_no_greeting(self):
        self.silent("pop3", greets=False)

    def test_pop3_no_reply(self):
        self.silent("pop3", greets=True)

    def test_smtp_no_greeting(self):
        self.silent("smtp", greets=False)

    def test_smtp_no_reply(self):
        self.silent("smtp", greets=True)

    def test_smtp_pipelined_commands_each_have_the_deadline(self):
        # Every reply comes 0.6 s after its command, nine of them in a
        # pipeline: 5.4 s in all, more than timeout_backend, and none
        # late. The deadline counts from each command, not the first.
        def slow(conn, tag, text):
            time.sleep(0.6)
            return b"250 2.1.0 Ok\r\n"
        backend = FakeBackend("smtp", replies={"MAIL": slow, "RCPT": slow})
        self.addCleanup(backend.stop)
        pipeline = b"MAIL FROM:<a@b.test>\r\n" + b"".join(
            b"RCPT TO:<r%d@b.test>\r\n" % i for i in range(8))
        with self.serve("smtp", backend.address, tls="implicit",
                        extra="timeout_backend = %ds\n" % TIMEOUT) as mp:
            c = Client(mp.port("l"), timeout=TIMEOUT + SLACK)
            self.addCleanup(c.close)
            c.starttls(self.context())
            self.assertTrue(c.line().startswith(GREETED["smtp"]))
            c.send(pipeline)
            for _ in range(9):
                self.assertEqual(c.line(), b"250 2.1.0 Ok\r\n")
            c.send(b"QUIT\r\n")
            c.until_closed()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertNotEqual(line["end"], "timeout", line)
        self.assertEqual(backend.commands()[:9],
                         pipeline.splitlines(keepends=True))


if __name__ == "__main__":
    unittest.main()
