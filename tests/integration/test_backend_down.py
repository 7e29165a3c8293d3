"""Backend refusing connections: each client gets its protocol's own error
inside TLS (IMAP "* BYE", POP3 "-ERR", SMTP 421), then a clean close, and
the log says backend_refused. The listener keeps serving afterwards.
"""

import imaplib
import poplib
import smtplib
import socket
import unittest

from proxy import ProxyTestCase, recv_until_closed, tls_connect


class BackendDownTest(ProxyTestCase):

    def down_listeners(self):
        # Bound but never listening: a connect there is refused, and no
        # parallel test can take the port and listen on it meanwhile.
        hole = socket.socket()
        self.addCleanup(hole.close)
        hole.bind(("127.0.0.1", 0))
        dead = hole.getsockname()[1]
        return {
            "imaps": ("imap", "127.0.0.1:%d" % dead, ""),
            "pop3s": ("pop3", "127.0.0.1:%d" % dead, ""),
            "smtps": ("smtp", "127.0.0.1:%d" % dead,
                      "server_name = mx.example.test\n"),
        }

    def test_each_protocol_says_why_inside_tls(self):
        expected = {
            "imaps": b"* BYE [UNAVAILABLE] Backend server not available.\r\n",
            "pop3s": b"-ERR [SYS/TEMP] Backend server not available.\r\n",
            "smtps": b"421 4.3.0 mx.example.test Service not available, "
                     b"closing transmission channel\r\n",
        }
        with self.proxy(listeners=self.down_listeners()) as mp:
            for name, line in expected.items():
                with tls_connect(self.ca, mp.port(name)) as s:
                    self.assertEqual(recv_until_closed(s), line)
            self.assertStopsCleanly(mp)
        for name in expected:
            line, = mp.sessions(listener=name)
            self.assertEqual(line["end"], "backend_refused")
            self.assertEqual(line["state"], "connect")
            self.assertEqual(line["error"], "connection refused")
            self.assertEqual(line["tls"], "TLSv1.3")

    def test_real_clients_see_the_error(self):
        with self.proxy(listeners=self.down_listeners()) as mp:
            ctx = self.ca.client_context()
            with self.assertRaises(imaplib.IMAP4.error) as imap_err:
                imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                  ssl_context=ctx, timeout=30)
            self.assertIn("Backend server not available",
                          str(imap_err.exception))
            with self.assertRaises(poplib.error_proto) as pop_err:
                poplib.POP3_SSL("localhost", mp.port("pop3s"), context=ctx,
                                timeout=30)
            self.assertIn(b"-ERR [SYS/TEMP]",
                          pop_err.exception.args[0])
            with self.assertRaises(smtplib.SMTPConnectError) as smtp_err:
                smtplib.SMTP_SSL("localhost", mp.port("smtps"), context=ctx,
                                 timeout=30)
            self.assertEqual(smtp_err.exception.smtp_code, 421)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.sessions(end="backend_refused")), 3)

    def test_backend_back_up_is_used_again(self):
        """A refused session does not poison the listener."""
        listeners = self.down_listeners()
        listeners["imap-ok"] = ("imap", "127.0.0.1:%d" % self.env.imap_port,
                                "")
        with self.proxy(listeners=listeners) as mp:
            with tls_connect(self.ca, mp.port("imaps")) as s:
                self.assertTrue(recv_until_closed(s).startswith(b"* BYE"))
            self.login_logout(mp, "imap-ok")
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.normal_sessions()), 1)


if __name__ == "__main__":
    unittest.main()
