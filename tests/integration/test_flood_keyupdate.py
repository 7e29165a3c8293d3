"""TLS 1.3 KeyUpdate flood: a client that never reads sends KeyUpdate
after KeyUpdate, each asking for one back (update_requested). OpenSSL
answers every one with a KeyUpdate of its own, a record mailproxy must
deliver to the client; a mailproxy that keeps reading while those answers
cannot be delivered holds them all, however little application data
flows.

tests/support/keyupdate_flood (MAILPROXY_KEYUPDATE_FLOOD, or
build/tests/keyupdate_flood) does the flooding with small socket buffers
and reports how its sending ended. Bounded: its send stalled (mailproxy
stopped reading) or the session ended, before SEND_BOUND bytes and before
the flood's time ran out; in the release build mailproxy's RSS grows by
less than RSS_GROWTH_KB. Before login (an IMAPS session whose backend, a
FakeBackend, has greeted) and after login (IMAPS to the real Dovecot,
logged in as alice, so the session relays).
"""

import os
import re
import subprocess
import unittest

from flood import (RSS_GROWTH_KB, SANITIZED, SEND_BOUND, STALL, VALGRIND,
                   rss_checked)
from proxy import ROOT
from wire import FakeBackend, StarttlsCase

HELPER = os.environ.get("MAILPROXY_KEYUPDATE_FLOOD",
                        os.path.join(ROOT, "build", "tests",
                                     "keyupdate_flood"))
# Far longer than a bounded mailproxy needs to stop reading (a blocking
# Python TLS server, which stops reading when its KeyUpdate answers
# cannot be sent, stalls the helper after about 10 s; mailproxy is
# slower under sanitizers and valgrind).
# Under valgrind mailproxy answers about 600 KeyUpdates a second, and
# the kernel takes some 3 MB of answers into its send buffer before the
# pump's queue fills: the stall comes after 3 to 4 minutes.
FLOOD_SECONDS = 400 if VALGRIND else 60 if SANITIZED else 30
RESULT = re.compile(r"keyupdates=(\d+) bytes=(\d+) result=(\w+)\n")


class FloodKeyUpdateTest(StarttlsCase):

    def flood(self, mp, *args):
        """Runs the helper against listener "l"; returns (KeyUpdates
        sent, bytes sent, result) and the RSS growth while it ran."""
        before = mp.rss_kb()
        out = subprocess.run(
            [HELPER, "-p", str(mp.port("l")), "-t", str(FLOOD_SECONDS),
             "-T", str(STALL)] + list(args),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=FLOOD_SECONDS + 120)
        peak = mp.rss_kb("VmHWM")
        self.assertEqual(out.returncode, 0, out.stderr)
        m = RESULT.fullmatch(out.stdout)
        self.assertTrue(m, out.stdout)
        count, sent, result = int(m.group(1)), int(m.group(2)), m.group(3)
        print("\n%s: %d KeyUpdates, %d bytes, %s; RSS %d kB before, "
              "peak %d kB" % (" ".join(args), count, sent, result, before,
                              peak))
        self.assertIn(result, ("stalled", "closed"),
                      "%d KeyUpdates (%d bytes) in %d s went through to a "
                      "client that reads nothing" % (count, sent,
                                                     FLOOD_SECONDS))
        self.assertLess(sent, SEND_BOUND)
        return peak - before

    def test_before_login(self):
        backend = FakeBackend("imap")
        self.addCleanup(backend.stop)
        with self.serve("imap", backend.address, tls="implicit",
                        workers=1) as mp:
            # Past the backend's greeting: the dialogue before login.
            growth = self.flood(mp, "-e", "* OK")
            self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(backend.connections(), 1)
        if rss_checked():
            self.assertLess(growth, RSS_GROWTH_KB)

    def test_after_login(self):
        with self.serve("imap", "127.0.0.1:%d" % self.env.imap_port,
                        tls="implicit", workers=1) as mp:
            growth = self.flood(
                mp, "-s", "a LOGIN %s %s" % (self.env.user,
                                             self.env.password),
                "-e", "a OK")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(line["state"], "relay", line)
        if rss_checked():
            self.assertLess(growth, RSS_GROWTH_KB)


if __name__ == "__main__":
    unittest.main()
