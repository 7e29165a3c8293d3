"""Timeouts on the wire: an idle relayed session is closed after
timeout_idle (logged as end=timeout state=relay), an active one is not,
and a backend that accepts nothing within timeout_connect gets the client
its protocol's error. The handshake timeout is in test_bad_clients.
"""

import imaplib
import socket
import time
import unittest

from proxy import ProxyTestCase, recv_until_closed, tls_connect


class TimeoutsTest(ProxyTestCase):

    def test_idle_session_closed_active_one_kept(self):
        extra = "timeout_idle = 1s\n"
        listeners = {"imaps": ("imap", "127.0.0.1:%d" % self.env.imap_port,
                               extra)}
        with self.proxy(listeners=listeners) as mp:
            idle = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=30)
            idle.login(self.env.user, self.env.password)
            busy = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=30)
            busy.login(self.env.user, self.env.password)
            # The busy session keeps talking more often than the idle
            # limit until the idle one has been closed.
            while not mp.sessions(end="timeout"):
                self.assertEqual(busy.noop()[0], "OK")
                time.sleep(0.2)
            self.assertEqual(idle.readline(), b"")
            idle.shutdown()
            self.assertEqual(busy.noop()[0], "OK")
            busy.logout()
            self.assertStopsCleanly(mp)
        line, = mp.sessions(end="timeout")
        self.assertEqual(line["state"], "relay")
        self.assertEqual(len(mp.normal_sessions()), 1)

    def test_backend_that_never_answers_connect(self):
        # A listening socket whose backlog is full: SYNs go unanswered,
        # so the connect neither succeeds nor fails by itself.
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        fillers = []
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(blackhole.getsockname())
            fillers.append(f)
        extra = "timeout_connect = 1s\n"
        listeners = {"imaps": ("imap", "127.0.0.1:%d"
                               % blackhole.getsockname()[1], extra)}
        try:
            with self.proxy(listeners=listeners) as mp:
                with tls_connect(self.ca, mp.port("imaps")) as s:
                    self.assertEqual(
                        recv_until_closed(s),
                        b"* BYE [UNAVAILABLE] Backend server not "
                        b"available.\r\n")
                self.assertStopsCleanly(mp)
        finally:
            for f in fillers:
                f.close()
            blackhole.close()
        line, = mp.sessions()
        self.assertEqual(line["end"], "backend_unreachable")
        self.assertEqual(line["state"], "connect")
        self.assertEqual(line["error"], "connection timed out")


if __name__ == "__main__":
    unittest.main()
