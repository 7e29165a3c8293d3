"""A client that never reads floods a STARTTLS listener with commands
mailproxy answers itself before TLS (IMAP CAPABILITY, POP3 CAPA, SMTP
EHLO). Each answer is several times the size of its command, so a
mailproxy that keeps reading while its replies cannot be delivered holds
them all (the issue measured 7 MB -> 2.1 GB of RSS in 8 s).

Bounded: the client's send stalls (mailproxy stopped reading it) or the
session ends (at most 20 commands other than STARTTLS are answered before
TLS: end=protocol_error state=plain) before SEND_BOUND bytes went through;
the backend is never connected; in the release build mailproxy's RSS grows
by less than RSS_GROWTH_KB. The client stops at SEND_BOUND, so a mailproxy
without the bound fails the test instead of eating the machine.
"""

import unittest

from flood import (RSS_GROWTH_KB, SEND_BOUND, repeat, rss_checked,
                   send_until_stalled, small_connect)
from wire import GREETING, FakeBackend, StarttlsCase

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
            self.assertIn(flood.outcome, ("stalled", "closed"),
                          "%r: mailproxy read %d MB of %s commands from a "
                          "client that reads nothing" % (
                              flood, SEND_BOUND >> 20, protocol))
            self.assertLess(flood.sent, SEND_BOUND)
            sock.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["state"], "plain", line)
        if flood.outcome == "closed":
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
