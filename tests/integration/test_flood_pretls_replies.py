"""A client that never reads floods a STARTTLS listener with commands
mailproxy answers itself before TLS (IMAP CAPABILITY, POP3 CAPA, SMTP
EHLO). Each answer is several times the size of its command, so a
mailproxy that keeps reading while its replies cannot be delivered holds
them all (the issue measured 7 MB -> 2.1 GB of RSS in 8 s).

Bounded: the client's send stalls (mailproxy stopped reading it) before
SEND_BOUND bytes went through, or the session ends (at most 20 commands
other than STARTTLS are answered before TLS: end=protocol_error
state=plain); the backend is never connected; in the release build
mailproxy's RSS grows by less than RSS_GROWTH_KB. The client stops at
SEND_BOUND, so a mailproxy without the bound fails the test instead of
eating the machine.

A session that has ended may still read and drop what the client sends
while its goodbye goes out (so the close is a FIN, not a RST: session.c's
flush state), for up to 5 s, which at loopback speed can be more than
SEND_BOUND. A client that got that far must therefore have been told:
what it received ends in the protocol error, then EOF.
"""

import unittest

from flood import (RSS_GROWTH_KB, SEND_BOUND, drain, repeat, rss_checked,
                   send_until_stalled, small_connect)
from wire import GREETING, PROTOCOL_ERROR, FakeBackend, StarttlsCase

COMMANDS = {
    "imap": b"a CAPABILITY\r\n",
    "pop3": b"CAPA\r\n",
    "smtp": b"EHLO x\r\n",
}


class FloodPretlsRepliesTest(StarttlsCase):

    def flood(self, protocol):
        backend = FakeBackend(protocol)
        self.addCleanup(backend.stop)
        with self.serve(protocol, backend.address, mode="required",
                        workers=1) as mp:
            sock = small_connect(mp.port("l"))
            self.addCleanup(sock.close)
            # The greeting fits in the smallest receive buffer; it is
            # left there, unread, like every answer after it.
            before = mp.rss_kb()
            flood = send_until_stalled(sock, repeat(COMMANDS[protocol]))
            peak = mp.rss_kb("VmHWM")
            print("\n%s: %r, RSS %d kB before, peak %d kB"
                  % (protocol, flood, before, peak))
            if flood.outcome == "unbounded":
                # Only a session that has ended may have taken that
                # much: the goodbye, then EOF, must be waiting.
                got, eof = drain(sock)
                self.assertTrue(
                    eof and PROTOCOL_ERROR[protocol].search(got[-200:]),
                    "%r: mailproxy read %d MB of %s commands from a "
                    "client that reads nothing, and did not end the "
                    "session (the client has %r...%r%s)" % (
                        flood, SEND_BOUND >> 20, protocol, got[:80],
                        got[-80:], ", then EOF" if eof else ""))
            else:
                self.assertIn(flood.outcome, ("stalled", "closed"))
            sock.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["state"], "plain", line)
        if flood.outcome != "stalled":
            self.assertEqual(line["end"], "protocol_error", line)
        self.assertNoBackend(line)
        self.assertEqual(backend.connections(), 0)
        if rss_checked():
            self.assertLess(peak - before, RSS_GROWTH_KB)
        self.assertGreaterEqual(int(line["client_out"]),
                                len(GREETING[protocol]))

    def test_imap_capability_flood(self):
        self.flood("imap")

    def test_pop3_capa_flood(self):
        self.flood("pop3")

    def test_smtp_ehlo_flood(self):
        self.flood("smtp")


if __name__ == "__main__":
    unittest.main()
