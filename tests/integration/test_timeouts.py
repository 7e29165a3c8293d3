"""Timeouts on the wire: an idle relayed session is closed after
timeout_idle (logged as end=timeout state=relay), an active one is not;
once the backend has closed, the client gets timeout_linger, not
timeout_idle; a backend that accepts nothing within timeout_connect gets
the client its protocol's error, the connect is abandoned (a backend that
wakes up later never sees the client), and a host name's next address is
tried when the first one times out. The handshake timeout is in
test_bad_clients.
"""

import contextlib
import imaplib
import socket
import threading
import time
import unittest

from proxy import ProxyTestCase, fakedns, recv_until_closed, tls_connect


@contextlib.contextmanager
def blackhole(family=socket.AF_INET, host="127.0.0.1", port=0):
    """A listening socket whose accept queue is full: SYNs go unanswered,
    so a connect neither succeeds nor fails by itself. Yields the socket
    and the local ports of the connections that fill it."""
    sock = socket.socket(family)
    fillers = []
    try:
        sock.bind((host, port))
        sock.listen(0)
        for _ in range(2):
            f = socket.socket(family)
            f.setblocking(False)
            f.connect_ex(sock.getsockname())
            fillers.append(f)
        yield sock, {f.getsockname()[1] for f in fillers}
    finally:
        for f in fillers:
            f.close()
        sock.close()


class GreetingServer:
    """A backend on one address: greets each connection with greeting,
    (with login) answers its first line with an OK, then closes it
    (close_after) or keeps it open until stop()."""

    def __init__(self, family, host, port, greeting=b"* OK hi\r\n",
                 close_after=False, login=False):
        self.sock = socket.socket(family)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.greeting = greeting
        self.close_after = close_after
        self.login = login
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            c.sendall(self.greeting)
            if self.login:
                c.settimeout(10)
                with c.makefile("rb") as f:
                    f.readline()
                c.sendall(b"a OK logged in\r\n")
            if self.close_after:
                c.close()
            else:
                self.conns.append(c)

    def stop(self):
        self.running = False
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


class TimeoutsTest(ProxyTestCase):

    def test_idle_session_closed_active_one_kept(self):
        # The busy session talks every 0.2 s or so; a limit well above
        # that keeps it alive on a loaded machine, where a NOOP's round
        # trip through mailproxy and Dovecot can take a while.
        extra = "timeout_idle = 3s\n"
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
        extra = "timeout_connect = 1s\n"
        with blackhole() as (hole, fillers):
            listeners = {"imaps": ("imap", "127.0.0.1:%d"
                                   % hole.getsockname()[1], extra)}
            with self.proxy(listeners=listeners) as mp:
                with tls_connect(self.ca, mp.port("imaps")) as s:
                    self.assertEqual(
                        recv_until_closed(s),
                        b"* BYE [UNAVAILABLE] Backend server not "
                        b"available.\r\n")
                    # Too late: the client was told. The backend now
                    # accepts everything for longer than a SYN retry
                    # takes (1 s, then 2 s); mailproxy's connect must
                    # not be among what arrives.
                    try:
                        s.sendall(b"a1 LOGIN user secret\r\n")
                    except OSError:
                        pass
                    hole.settimeout(0.5)
                    late = []
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        try:
                            c, peer = hole.accept()
                        except socket.timeout:
                            continue
                        if peer[1] not in fillers:
                            late.append(peer)
                        c.close()
                    self.assertEqual(late, [])
                self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["end"], "backend_unreachable")
        self.assertEqual(line["state"], "connect")
        self.assertEqual(line["backend_addr"], line["backend"])
        self.assertEqual(line["error"], "connection timed out")

    def test_next_address_after_connect_error_and_timeout(self):
        # backend.test has three addresses: the first fails at once
        # (a broadcast address: ENETUNREACH from connect itself), the
        # second is a black hole, the third a backend on the same port.
        extra = "timeout_connect = 1s\n"
        with contextlib.ExitStack() as stack:
            for _ in range(20):
                server = GreetingServer(socket.AF_INET, "127.0.0.1", 0,
                                        close_after=True)
                stack.callback(server.stop)
                port = server.sock.getsockname()[1]
                try:
                    stack.enter_context(blackhole(socket.AF_INET,
                                                  "127.0.0.2", port))
                    break
                except OSError:  # the port is taken on 127.0.0.2
                    continue
            listeners = {"imaps": ("imap", "backend.test:%d" % port,
                                   extra)}
            environ = fakedns("backend.test", ["255.255.255.255",
                                               "127.0.0.2", "127.0.0.1"])
            with self.proxy(listeners=listeners, environ=environ) as mp:
                with tls_connect(self.ca, mp.port("imaps")) as s:
                    self.assertEqual(recv_until_closed(s),
                                     b"* OK hi\r\n")
                self.assertEqual(len(mp.wait_sessions(1)), 1)
                self.assertStopsCleanly(mp)
        line, = mp.sessions()
        # Greeted, then closed by the backend before any login.
        self.assertEqual(line["state"], "dialog")
        self.assertEqual(line["end"], "backend_closed")
        self.assertEqual(line["backend"], "backend.test:%d" % port)
        self.assertEqual(line["backend_addr"], "127.0.0.1:%d" % port)

    def test_linger_after_backend_closed(self):
        # The backend greets, logs the client in and hangs up; the
        # client reads everything, close_notify included, and never
        # closes. timeout_linger, not the 60 s timeout_idle, ends it.
        server = GreetingServer(socket.AF_INET, "127.0.0.1", 0,
                                close_after=True, login=True)
        extra = "timeout_idle = 60s\ntimeout_linger = 1s\n"
        try:
            listeners = {"imaps": ("imap", "127.0.0.1:%d"
                                   % server.sock.getsockname()[1], extra)}
            with self.proxy(listeners=listeners) as mp:
                with tls_connect(self.ca, mp.port("imaps")) as s:
                    s.sendall(b"a LOGIN u p\r\n")
                    self.assertEqual(recv_until_closed(s),
                                     b"* OK hi\r\na OK logged in\r\n")
                    line, = mp.wait_sessions(1, timeout=20)
                self.assertStopsCleanly(mp)
        finally:
            server.stop()
        self.assertEqual(line["end"], "backend_closed")
        self.assertEqual(line["state"], "relay")
        self.assertLess(float(line["duration"]), 20)


if __name__ == "__main__":
    unittest.main()
