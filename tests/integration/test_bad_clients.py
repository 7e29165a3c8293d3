"""Clients that do not speak TLS properly: plaintext instead of a
ClientHello, a port scan, a handshake that stalls, a TLS 1.1 client and a
hostile SNI. Each gets a clean close (never a hang), exactly one log line
saying why, and the well-behaved session alongside is unaffected.
"""

import imaplib
import re
import socket
import subprocess
import time
import unittest

import proxy
from proxy import ProxyTestCase, recv_until_closed



class BadClientsTest(ProxyTestCase):

    def start_proxy(self):
        extra = "timeout_handshake = 1s\n"
        return self.proxy(listeners={
            "imaps": ("imap", "127.0.0.1:%d" % self.env.imap_port, extra),
        }).start()

    def raw(self, mp):
        return socket.create_connection(("127.0.0.1", mp.port("imaps")),
                                        timeout=30)

    def test_sessions_beyond_the_open_file_limit_are_logged(self):
        # 60 descriptors, one worker: (60 - 16 - 4 listening - 4) / 2 =
        # 18 sessions (fewer under valgrind, which keeps some for itself).
        # Past that libuv would accept and close unseen.
        env = self.env
        starttls = "tls = starttls\n"
        mp = self.proxy(workers=1, global_extra="server_name = mx.test\n",
                        listeners={
            "imaps": ("imap", "127.0.0.1:%d" % env.imap_port, ""),
            "imap": ("imap", "127.0.0.1:%d" % env.imap_port, starttls),
            "pop3": ("pop3", "127.0.0.1:%d" % env.pop3_port, starttls),
            "smtp": ("smtp", "127.0.0.1:%d" % env.smtp_port, starttls),
        })
        argv = mp.argv
        mp.argv = lambda: ["prlimit", "--nofile=60:60"] + argv()
        mp.start()
        held = []
        try:
            self.assertTrue(mp.wait_log(" sessions per worker\""),
                            mp.log_text())
            m = re.search(r"open file limit (\d+) .*: at most (\d+) "
                          r"sessions per worker", mp.log_text())
            limit, most = map(int, m.groups())
            self.assertEqual(most, (limit - 16 - 4 - 4) // 2)
            for _ in range(most):
                held.append(self.raw(mp))
            # Held sessions are accepted in order; give them the time.
            time.sleep(0.5)
            extra = [self.raw(mp) for _ in range(3)]
            for s in extra:
                self.assertEqual(recv_until_closed(s), b"")
                s.close()
            # Where the protocol greets in plaintext, the client is told.
            busy = {
                "imap": b"* BYE [UNAVAILABLE] Too many connections, try "
                        b"again later.\r\n",
                "pop3": b"-ERR [SYS/TEMP] Too many connections, try "
                        b"again later.\r\n",
                "smtp": b"421 4.3.2 mx.test Too many connections, try "
                        b"again later\r\n",
            }
            for name, line in busy.items():
                with socket.create_connection(
                        ("127.0.0.1", mp.port(name)), timeout=30) as s:
                    self.assertEqual(recv_until_closed(s), line)
            refused = mp.wait_sessions(6, end="limit")
            for s in held:
                s.close()
            held = []
            mp.wait_sessions(most + 6)
            # Below the limit again: a real client gets in.
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        finally:
            for s in held:
                s.close()
            mp.stop()
        self.assertEqual(len(refused), 6, mp.log_text())
        for line in refused:
            self.assertEqual(line["error"],
                             "too many sessions for the open file limit")
            self.assertEqual(line["state"], "handshake")
            self.assertEqual(line["client_in"], "0")
            sent = len(busy[line["listener"]]) \
                if line["listener"] in busy else 0
            self.assertEqual(int(line["client_out"]), sent, line)
        self.assertEqual(len(mp.sessions(end="limit")), 6, mp.log_text())

    def test_plaintext_instead_of_client_hello(self):
        mp = self.start_proxy()
        try:
            with self.raw(mp) as s:
                imap_client = "127.0.0.1:%d" % s.getsockname()[1]
                s.sendall(b"a LOGIN alice secret\r\n")
                reply = recv_until_closed(s)
            # At most a TLS alert record, never plaintext IMAP.
            self.assertFalse(reply.startswith(b"*"), reply)
            if reply:
                self.assertEqual(reply[0], 0x15, reply)  # alert
            with self.raw(mp) as s:
                http_client = "127.0.0.1:%d" % s.getsockname()[1]
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                recv_until_closed(s)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        lines = mp.sessions()
        self.assertEqual(len(lines), 2, mp.log_text())
        # Known by client port: with two workers the second session's
        # line may be written first.
        by_client = {line["client"]: line for line in lines}
        self.assertEqual(sorted(by_client), sorted([imap_client,
                                                    http_client]), lines)
        imap, http = by_client[imap_client], by_client[http_client]
        self.assertEqual(imap["end"], "tls_error")
        self.assertEqual(imap["state"], "handshake")
        self.assertEqual(imap["error"], "wrong version number")
        self.assertEqual(http["error"], "http request")
        self.assertIsNone(imap["tls"])
        self.assertEqual(imap["backend_out"], "0")

    def test_port_scan_is_one_quiet_line(self):
        mp = self.start_proxy()
        try:
            self.raw(mp).close()
            line, = mp.wait_sessions(1)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        self.assertEqual(line["end"], "client_closed")
        self.assertEqual(line["state"], "handshake")
        self.assertEqual(line["client_in"], "0")
        self.assertIsNone(line["error"])

    def test_stalled_handshake_closed_at_timeout(self):
        mp = self.start_proxy()
        try:
            with self.raw(mp) as s:
                # The first bytes of a TLS record, then nothing.
                s.sendall(b"\x16\x03\x01\x02\x00\x01")
                self.assertEqual(recv_until_closed(s), b"")
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        line, = mp.sessions()
        self.assertEqual(line["end"], "timeout")
        self.assertEqual(line["state"], "handshake")

    def test_tls_1_1_client_refused(self):
        mp = self.start_proxy()
        try:
            out = subprocess.run(
                ["openssl", "s_client", "-connect",
                 "127.0.0.1:%d" % mp.port("imaps"), "-tls1_1",
                 "-cipher", "DEFAULT:@SECLEVEL=0"],
                input=b"", capture_output=True, timeout=30)
            self.assertNotEqual(out.returncode, 0)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        line, = mp.sessions()
        self.assertEqual(line["end"], "tls_error")
        self.assertEqual(line["error"], "unsupported protocol")

    def test_hostile_sni_is_escaped_in_the_log(self):
        mp = self.start_proxy()
        try:
            sni = "evil\x1b[31m\rend=forged"
            out = subprocess.run(
                ["openssl", "s_client", "-quiet", "-connect",
                 "127.0.0.1:%d" % mp.port("imaps"), "-servername", sni],
                input=b"a LOGOUT\r\n", capture_output=True, timeout=30)
            self.assertIn(b"* BYE", out.stdout)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        text = mp.log_text()
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\r", text)
        self.assertIn('sni="evil\\x1b[31m\\x0dend=forged"', text)
        line, = mp.sessions()
        # LOGOUT before any login: the session ends in the dialogue.
        self.assertIn(line["end"], proxy.NORMAL_ENDS)
        self.assertEqual(line["state"], "dialog")

    def test_bad_clients_do_not_disturb_a_good_session(self):
        mp = self.start_proxy()
        try:
            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=30)
            imap.login(self.env.user, self.env.password)
            stallers = [self.raw(mp) for _ in range(20)]
            for s in stallers:
                s.sendall(b"\x16\x03\x01")
            for _ in range(20):
                with self.raw(mp) as s:
                    s.sendall(b"\x00" * 100)
                    recv_until_closed(s)
            self.assertEqual(imap.noop()[0], "OK")
            imap.select("INBOX")
            imap.logout()
            for s in stallers:
                self.assertEqual(recv_until_closed(s), b"")
                s.close()
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        self.assertEqual(len(mp.normal_sessions()), 1)
        self.assertEqual(len(mp.sessions(end="timeout")), 20)
        self.assertEqual(len(mp.sessions(end="tls_error")), 20)


if __name__ == "__main__":
    unittest.main()
