"""IMAPS (993): real Dovecot behind mailproxy, real clients in front.

Python's IMAP4_SSL and curl log in, list, and fetch a 5 MB message; what
they get must equal, byte for byte, what Dovecot serves directly. Each
session leaves exactly one log line with the TLS facts and byte counts.
"""

import imaplib
import socket
import time
import unittest

import mailenv
from proxy import ProxyTestCase, recv_until_closed

BIG = 5 * 1024 * 1024


class ImapsTest(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(BIG, "five megabytes")
        cls.small = cls.seed(2000, "small one")

    def direct_fetch(self):
        imap = self.env.imap_login()
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch(b"1:*", "(BODY.PEEK[])")
        imap.logout()
        return [part[1] for part in data if isinstance(part, tuple)]

    def test_imaplib_login_list_fetch_byte_exact(self):
        expected = self.direct_fetch()
        self.assertEqual(sorted(expected, key=len),
                         sorted([mailenv.to_crlf(self.message),
                                 mailenv.to_crlf(self.small)], key=len))
        with self.proxy() as mp:
            ctx = self.ca.client_context()
            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=ctx, timeout=60)
            self.assertIn(b"Dovecot", imap.welcome)
            self.assertImapFetchExact(imap, expected)
            cipher = imap.sock.cipher()
            imap.logout()
            self.assertStopsCleanly(mp)

        lines = mp.sessions()
        self.assertEqual(len(lines), 1, mp.log_text())
        line = lines[0]
        self.assertEqual(line["listener"], "imaps")
        self.assertEqual(line["proto"], "imap")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertEqual(line["cipher"], cipher[0])
        self.assertEqual(line["sni"], "localhost")
        self.assertEqual(line["resumed"], "no")
        self.assertRegex(line["client"], r"^127\.0\.0\.1:\d+$")
        self.assertEqual(line["local"], "127.0.0.1:%d" % mp.port("imaps"))
        self.assertEqual(line["backend"], "127.0.0.1:%d" % self.env.imap_port)
        self.assertNormalEnd(line)
        # What the backend sent reached the client inside TLS, so the
        # client side carries at least as many bytes, and the
        # plaintext totals exceed the message itself.
        backend_in = int(line["backend_in"])
        self.assertGreater(backend_in, BIG)
        self.assertGreater(int(line["client_out"]), backend_in)
        self.assertGreater(int(line["client_in"]), int(line["backend_out"]))
        self.assertRegex(line["duration"], r"^\d+\.\d{3}$")

    def test_curl_imaps_fetch_byte_exact(self):
        with self.proxy() as mp:
            out = self.curl("imaps://localhost:%d/INBOX;UID=1"
                            % mp.port("imaps"))
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, mailenv.to_crlf(self.message))
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.sessions()), 1, mp.log_text())

    def test_busy_poll_fetch_byte_exact_then_workers_sleep(self):
        """busy_poll: the relay is unchanged, and once the sessions are
        quiet the workers sleep again instead of each holding a core."""
        expected = self.direct_fetch()
        with self.proxy(global_extra="busy_poll = 20ms\n") as mp:
            self.assertIn("started with 2 workers, busy_poll 20ms",
                          mp.log_text())
            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=60)
            self.assertImapFetchExact(imap, expected)
            # An open session that says nothing for a while is quiet too.
            before = mp.cpu_seconds()
            time.sleep(2)
            idle_cpu = mp.cpu_seconds() - before
            imap.logout()
            mp.wait_sessions(1)
            # Spinning, two workers would use about 4 CPU-seconds here
            # (with busy_poll = 1s, 1.8 were measured).
            self.assertLess(idle_cpu, 0.5, mp.log_text())
            self.assertStopsCleanly(mp)
        self.assertNormalEnd(mp.sessions()[0])

    def test_busy_poll_spins_after_io_but_not_after_a_timer(self):
        """A worker polls for busy_poll after an accept; a timer that
        wakes it later (here a handshake timeout) does not start a
        spell of its own."""
        # A spell is wall-clock time; the CPU it gets is the machine's
        # share, a few per cent on a loaded one. So the spell is shown by
        # the time the worker was on a CPU or waiting for one, and the
        # quiet after the timer by CPU time, which load only lowers.
        # Each wait leaves 0.6 s for the worker to get going after the
        # spell's second; the timer fires after that and after the
        # measurement.
        extra = "timeout_handshake = 3s\n"
        with self.proxy(workers=1, global_extra="busy_poll = 1s\n",
                        listeners={"imaps": ("imap", "127.0.0.1:%d"
                                             % self.env.imap_port, extra)
                                   }) as mp:
            time.sleep(1.6)     # the spell at the worker's start is over
            start = mp.runnable_seconds()
            # Connected, never a ClientHello: one accept, then the timer.
            with socket.create_connection(("127.0.0.1", mp.port("imaps")),
                                          timeout=30) as s:
                time.sleep(1.6)
                after_accept = mp.runnable_seconds()
                cpu_after_accept = mp.cpu_seconds()
                mp.wait_sessions(1, end="timeout")
                time.sleep(0.6)
                cpu_after_timer = mp.cpu_seconds()
                self.assertEqual(recv_until_closed(s), b"")
            self.assertStopsCleanly(mp)
        # Polling, the worker was runnable for about the whole second
        # after the accept. A thread that sleeps is runnable only while
        # it waits to handle a wake-up: a tenth of a second at worst on a
        # loaded machine, for a sanitizer's thread as for the worker.
        spell = {tid: t - start.get(tid, 0) for tid, t in
                 after_accept.items()}
        self.assertGreater(max(spell.values()), 0.5, "%s\n%s"
                           % (spell, mp.log_text()))
        # A worker that only ever sleeps uses next to nothing.
        self.assertLess(cpu_after_timer - cpu_after_accept, 0.1,
                        mp.log_text())


if __name__ == "__main__":
    unittest.main()
