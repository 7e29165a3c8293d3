"""Limits an operator sets (issue 14): max_sessions for the instance,
max_sessions_per_client and max_connect_rate_per_client per client
address, counted across every worker process, behind accept_proxy by the
header's address, never against a load balancer's LOCAL health check,
and given back when a worker dies.

Real Dovecot and Postfix behind mailproxy, real clients (imaplib, Python
ssl, raw sockets for the refusals), from several loopback addresses
(127.0.0.2, 127.0.0.3, ...). Which worker accepts a connection is up to
the kernel; where a scenario must show that two workers share a count it
stops one worker (SIGSTOP) so that the other accepts, then the other way
round.
"""

import os
import signal
import socket
import ssl
import time
import unittest

from proxy import ProxyTestCase
from test_proxy_protocol import v1_header, v2_header

WAIT = 15


class LimitsTest(ProxyTestCase):

    def imaps(self, mp, source, name="imaps"):
        """A logged-in IMAPS session from source; the caller logs out."""
        raw = socket.create_connection(("127.0.0.1", mp.port(name)),
                                       timeout=WAIT,
                                       source_address=(source, 0))
        ctx = self.ca.client_context()
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        # imaplib cannot bind a source address: IMAP by hand, to LOGIN.
        greeting = tls.recv(4096)
        self.assertTrue(greeting.startswith(b"* OK"), greeting)
        tls.sendall(b"a LOGIN %s %s\r\n" % (self.env.user.encode(),
                                            self.env.password.encode()))
        reply = b""
        while b"a OK" not in reply and b"a NO" not in reply:
            chunk = tls.recv(4096)
            self.assertTrue(chunk, "closed during LOGIN: %r" % reply)
            reply += chunk
        self.assertIn(b"a OK", reply)
        return tls

    def refused_imaps(self, mp, source, name="imaps"):
        """Connects from source and expects the close before the
        handshake that an implicit-TLS listener gives past a limit."""
        raw = socket.create_connection(("127.0.0.1", mp.port(name)),
                                       timeout=WAIT,
                                       source_address=(source, 0))
        ctx = self.ca.client_context()
        with self.assertRaises((ssl.SSLError, OSError)):
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            # A handshake that somehow completed must not serve.
            self.assertEqual(tls.recv(100), b"")
            raise OSError("closed after the handshake")
        raw.close()

    @staticmethod
    def logout(tls):
        try:
            tls.sendall(b"z LOGOUT\r\n")
            tls.recv(4096)
        except OSError:
            pass
        tls.close()

    def limit_lines(self, mp, error, client_ip=None):
        found = []
        for line in mp.sessions(end="limit"):
            if line.get("error") != error:
                continue
            if client_ip and not line.get("client", "").startswith(
                    client_ip + ":"):
                continue
            found.append(line)
        return found

    def workers(self, mp):
        return mp.worker_pids()

    # ------------------------------------------------------------------

    def test_per_client_across_two_workers(self):
        """Three sessions allowed per client: two accepted by one worker,
        one by the other; the fourth is refused whichever accepts it;
        other clients go on; a session that ends makes room."""
        mp = self.proxy(workers=2,
                        global_extra="max_sessions_per_client = 3\n")
        with mp:
            a, b = self.workers(mp)
            held = []
            try:
                os.kill(b, signal.SIGSTOP)
                try:
                    held.append(self.imaps(mp, "127.0.0.2"))
                    held.append(self.imaps(mp, "127.0.0.2"))
                finally:
                    os.kill(b, signal.SIGCONT)
                os.kill(a, signal.SIGSTOP)
                try:
                    held.append(self.imaps(mp, "127.0.0.2"))
                    self.refused_imaps(mp, "127.0.0.2")
                    other = self.imaps(mp, "127.0.0.3")
                    self.logout(other)
                finally:
                    os.kill(a, signal.SIGCONT)
                self.refused_imaps(mp, "127.0.0.2")
                lines = self.limit_lines(
                    mp, "max_sessions_per_client reached", "127.0.0.2")
                deadline = time.monotonic() + WAIT
                while len(lines) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    lines = self.limit_lines(
                        mp, "max_sessions_per_client reached", "127.0.0.2")
                self.assertEqual(len(lines), 2, mp.log_text())
                # The two refusals came from both workers' ids.
                self.assertEqual(lines[0]["state"], "handshake")
                self.logout(held.pop())
                deadline = time.monotonic() + WAIT
                while True:
                    try:
                        held.append(self.imaps(mp, "127.0.0.2"))
                        break
                    except (ssl.SSLError, OSError):
                        # The close line is logged as the count drops;
                        # allow the ordering a moment.
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            finally:
                for t in held:
                    self.logout(t)
            self.assertStopsCleanly(mp)

    def test_dead_worker_gives_back_its_counts(self):
        """A worker killed while holding a client's sessions: its
        replacement and the other worker admit that client again."""
        mp = self.proxy(workers=2,
                        global_extra="max_sessions_per_client = 2\n")
        with mp:
            a, b = self.workers(mp)
            os.kill(b, signal.SIGSTOP)
            try:
                held = [self.imaps(mp, "127.0.0.4"),
                        self.imaps(mp, "127.0.0.4")]
            finally:
                os.kill(b, signal.SIGCONT)
            self.refused_imaps(mp, "127.0.0.4")
            os.kill(a, signal.SIGKILL)
            self.assertTrue(mp.wait_log("worker 0 (pid %d) was killed by "
                                        "signal 9" % a)
                            or mp.wait_log("(pid %d) was killed by signal 9"
                                           % a), mp.log_text())
            for t in held:
                t.close()
            again = [self.imaps(mp, "127.0.0.4"), self.imaps(mp, "127.0.0.4")]
            for t in again:
                self.logout(t)

    def test_max_sessions_instance_and_starttls_answers(self):
        """max_sessions for the instance: past it a STARTTLS client hears
        its protocol's "too many connections, try again later"; per
        client the answer names the address limit (SMTP 421 4.7.0, as
        Postfix's anvil)."""
        env = self.env
        listeners = {
            "imap": ("imap", "127.0.0.1:%d" % env.imap_port,
                     "tls = starttls\n"),
            "pop3": ("pop3", "127.0.0.1:%d" % env.pop3_port,
                     "tls = starttls\nmax_sessions_per_client = 1\n"),
            "smtp": ("smtp", "127.0.0.1:%d" % env.smtp_port,
                     "tls = starttls\nmax_sessions_per_client = 1\n"),
        }
        mp = self.proxy(workers=2, listeners=listeners,
                        global_extra="max_sessions = 3\n"
                                     "max_sessions_per_client = 0\n")
        with mp:
            def plain(name, source):
                s = socket.create_connection(
                    ("127.0.0.1", mp.port(name)), timeout=WAIT,
                    source_address=(source, 0))
                return s, s.recv(4096)

            p1, g = plain("pop3", "127.0.0.5")
            self.assertTrue(g.startswith(b"+OK"), g)
            p2, g = plain("pop3", "127.0.0.5")
            self.assertEqual(
                g, b"-ERR [SYS/TEMP] Too many connections from your "
                   b"address, try again later.\r\n")
            self.assertEqual(p2.recv(100), b"")
            s1, g = plain("smtp", "127.0.0.5")
            self.assertTrue(g.startswith(b"220 "), g)
            s2, g = plain("smtp", "127.0.0.5")
            self.assertRegex(g, rb"^421 4\.7\.0 \S+ Error: too many "
                                rb"connections from your address\r\n$")
            i1, g = plain("imap", "127.0.0.6")
            self.assertTrue(g.startswith(b"* OK"), g)
            # Three held (p1, s1, i1): the instance is full.
            i2, g = plain("imap", "127.0.0.7")
            self.assertEqual(g, b"* BYE [UNAVAILABLE] Too many connections, "
                                b"try again later.\r\n")
            s3, g = plain("smtp", "127.0.0.8")
            self.assertRegex(g, rb"^421 4\.3\.2 ")
            for s in (p1, p2, s1, s2, i1, i2, s3):
                s.close()
            self.assertTrue(mp.wait_sessions(7))
            self.assertEqual(len(self.limit_lines(
                mp, "max_sessions reached")), 2, mp.log_text())
            self.assertEqual(len(self.limit_lines(
                mp, "max_sessions_per_client reached")), 2)
            # Room again once they are gone.
            i3, g = plain("imap", "127.0.0.7")
            self.assertTrue(g.startswith(b"* OK"), g)
            i3.close()
            self.assertStopsCleanly(mp)

    def test_connect_rate_per_client(self):
        """max_connect_rate_per_client = 3: the fourth new session within
        the minute is refused (421 4.7.0), another client is not."""
        env = self.env
        listeners = {"smtp": ("smtp", "127.0.0.1:%d" % env.smtp_port,
                              "tls = starttls\n")}
        mp = self.proxy(workers=2, listeners=listeners,
                        global_extra="max_connect_rate_per_client = 3\n")
        with mp:
            greetings = []
            for _ in range(4):
                s = socket.create_connection(
                    ("127.0.0.1", mp.port("smtp")), timeout=WAIT,
                    source_address=("127.0.0.9", 0))
                greetings.append(s.recv(4096))
                s.sendall(b"QUIT\r\n")
                s.close()
            self.assertTrue(all(g.startswith(b"220 ")
                                for g in greetings[:3]), greetings)
            self.assertRegex(greetings[3], rb"^421 4\.7\.0 ")
            s = socket.create_connection(
                ("127.0.0.1", mp.port("smtp")), timeout=WAIT,
                source_address=("127.0.0.10", 0))
            self.assertTrue(s.recv(4096).startswith(b"220 "))
            s.close()
            self.assertTrue(mp.wait_sessions(5))
            self.assertEqual(len(self.limit_lines(
                mp, "max_connect_rate_per_client reached", "127.0.0.9")), 1)

    def test_accept_proxy_counts_the_header_address(self):
        """Behind a load balancer the limit follows the PROXY header's
        client, and v2 LOCAL health checks count against nobody."""
        env = self.env
        extra = "tls = starttls\naccept_proxy = yes\n" \
                "trusted_proxies = 127.0.0.1\n"
        listeners = {"imap": ("imap", "127.0.0.1:%d" % env.imap_port,
                              extra)}
        mp = self.proxy(workers=2, listeners=listeners,
                        global_extra="max_sessions_per_client = 2\n")
        port = None
        with mp:
            port = mp.port("imap")

            def via_lb(header):
                s = socket.create_connection(("127.0.0.1", port),
                                             timeout=WAIT)
                s.sendall(header)
                return s, s.recv(4096)

            held = []
            for _ in range(2):
                s, g = via_lb(v1_header("192.0.2.77", "127.0.0.1", 40000,
                                        port))
                self.assertTrue(g.startswith(b"* OK"), g)
                held.append(s)
            s, g = via_lb(v1_header("192.0.2.77", "127.0.0.1", 40002, port))
            self.assertTrue(g.startswith(b"* BYE [UNAVAILABLE] Too many "
                                         b"connections from your address"),
                            g)
            s.close()
            s, g = via_lb(v1_header("192.0.2.78", "127.0.0.1", 40003, port))
            self.assertTrue(g.startswith(b"* OK"), g)
            held.append(s)
            # Five health checks at once, all from the balancer itself.
            for i in range(5):
                s, g = via_lb(v2_header("127.0.0.1", "127.0.0.1", 0, 0,
                                        command=0x20))
                self.assertTrue(g.startswith(b"* OK"), (i, g))
                held.append(s)
            for s in held:
                s.close()
            self.assertTrue(mp.wait_sessions(9))
            refused = self.limit_lines(mp, "max_sessions_per_client reached")
            self.assertEqual(len(refused), 1)
            self.assertTrue(refused[0]["client"].startswith("192.0.2.77:"))


if __name__ == "__main__":
    unittest.main()
