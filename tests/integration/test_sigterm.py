"""SIGTERM with sessions open: mailproxy stops accepting at once, lets a
transfer in flight finish (byte exact) within drain_timeout, then says the
protocol's goodbye to idle sessions ("* BYE Server shutting down.") and
exits 0 with nothing leaked. A second SIGTERM ends everything at once.
"""

import imaplib
import signal
import socket
import threading
import time
import unittest

import mailenv
from proxy import ProxyTestCase, recv_until_closed, tls_connect

BIG = 5 * 1024 * 1024


def listening(port):
    """True while a socket listens on 127.0.0.1:port (/proc/net/tcp, so
    the check makes no connection)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(row.split()[1] == want and row.split()[3] == "0A"
                   for row in f.readlines()[1:])


class SigtermTest(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(BIG, "drain me")

    def login(self, mp):
        imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                 ssl_context=self.ca.client_context(),
                                 timeout=60)
        imap.login(self.env.user, self.env.password)
        imap.select("INBOX", readonly=True)
        return imap

    def test_drain_finishes_transfers_and_says_bye_to_idle(self):
        # The transfer and the LOGOUT after it must fit in the drain: a
        # generous one, as both may be slow on a loaded machine.
        mp = self.proxy(global_extra="drain_timeout = 10s\n").start()
        try:
            idle = self.login(mp)
            busy = self.login(mp)
            result = {}

            def fetch():
                # Started before SIGTERM, must complete after it.
                tag = busy._new_tag()
                busy.send(tag + b" FETCH 1 (BODY.PEEK[])\r\n")
                first = busy.readline()
                result["first"] = first
                size = int(first[first.rindex(b"{") + 1:-3])
                result["body"] = busy.read(size)
                result["rest"] = busy.readline()
                result["done"] = busy.readline()

            t = threading.Thread(target=fetch)
            t.start()
            # Wait until the response has started flowing, then stop.
            while "first" not in result and t.is_alive():
                time.sleep(0.01)
            mp.send_signal(signal.SIGTERM)
            t.join(60)
            self.assertEqual(result["body"], mailenv.to_crlf(self.message))
            self.assertEqual(result["rest"], b")\r\n")
            self.assertRegex(result["done"], rb"^\S+ OK Fetch completed")
            busy.logout()
            # No new sessions once stopping: each worker closes its
            # listening socket when the main thread tells it of the
            # signal, which may not have happened yet on a busy machine.
            deadline = time.monotonic() + 5
            while listening(mp.port("imaps")):
                self.assertLess(time.monotonic(), deadline,
                                "still listening after SIGTERM")
                time.sleep(0.01)
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", mp.port("imaps")),
                                         timeout=5)
            # The idle session hears the goodbye at the drain timeout.
            self.assertEqual(idle.readline(),
                             b"* BYE Server shutting down.\r\n")
            self.assertEqual(idle.readline(), b"")
            idle.shutdown()
            self.assertEqual(mp.wait_exit(), 0, mp.log_text())
        finally:
            mp.stop()
        shut = mp.sessions(end="shutdown")
        self.assertEqual(len(shut), 1, mp.log_text())
        self.assertEqual(shut[0]["state"], "relay")
        self.assertEqual(len(mp.normal_sessions()), 1)

    def test_second_signal_ends_sessions_now(self):
        mp = self.proxy(global_extra="drain_timeout = 1h\n").start()
        try:
            idle = self.login(mp)
            stalled = tls_connect(self.ca, mp.port("imaps"))
            greeting = b""
            while not greeting.endswith(b"\r\n"):
                greeting += stalled.recv(100)
            self.assertTrue(greeting.startswith(b"* OK"), greeting)
            mp.send_signal(signal.SIGTERM)
            mp.send_signal(signal.SIGINT)
            self.assertEqual(idle.readline(),
                             b"* BYE Server shutting down.\r\n")
            idle.shutdown()
            self.assertEqual(recv_until_closed(stalled),
                             b"* BYE Server shutting down.\r\n")
            stalled.close()
            self.assertEqual(mp.wait_exit(), 0, mp.log_text())
        finally:
            mp.stop()
        self.assertEqual(len(mp.sessions(end="shutdown")), 2)
        self.assertIn("ending all sessions now", mp.log_text())

    def test_idle_exit_is_immediate_and_clean(self):
        mp = self.proxy().start()
        self.assertStopsCleanly(mp, signal.SIGINT)
        self.assertIn("mailproxy stopped", mp.log_text())
        self.assertEqual(mp.sessions(), [])


if __name__ == "__main__":
    unittest.main()
