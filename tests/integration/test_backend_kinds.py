"""Backends given three ways: a host name (looked up for every session), a
unix socket (a real Postfix smtpd on one), and an IPv6 listener in front;
also a single worker. The same real clients work through all of them.
"""

import email.utils
import os
import smtplib
import unittest

import mailenv
from proxy import Mailproxy, ProxyTestCase, recv_until_closed, tls_connect

SMTPD_SOCKET = "mailproxy-smtpd"


class BackendKindsTest(ProxyTestCase):

    env_options = {
        # A second smtpd, on a unix socket in Postfix's queue directory.
        "postfix_master_extra":
            "%s unix n - n - - smtpd\n" % SMTPD_SOCKET,
    }

    def unix_socket_path(self):
        # private = n: the socket is in the queue's public directory.
        return os.path.join(self.env.tmp, "postfix", "queue", "public",
                            SMTPD_SOCKET)

    def test_host_name_backend(self):
        listeners = {"imaps": ("imap", "localhost:%d" % self.env.imap_port,
                               "")}
        with self.proxy(listeners=listeners, workers=1) as mp:
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["backend"], "localhost:%d" % self.env.imap_port)
        self.assertNormalEnd(line)
        self.assertEqual(line["id"].split("-")[1], "0")

    def test_unresolvable_backend_says_unavailable(self):
        listeners = {"imaps": ("imap", "no-such-host.invalid:143",
                               "timeout_connect = 5s\n")}
        # One quick DNS try, whatever resolver the machine has.
        with self.proxy(listeners=listeners, environ={
                "RES_OPTIONS": "timeout:1 attempts:1"}) as mp:
            with tls_connect(self.ca, mp.port("imaps")) as s:
                self.assertEqual(recv_until_closed(s),
                                 b"* BYE [UNAVAILABLE] Backend server not "
                                 b"available.\r\n")
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["end"], "backend_unreachable")
        self.assertIn(line["state"], ("resolve", "connect"))
        self.assertIsNotNone(line["error"])

    def test_unix_socket_backend(self):
        path = self.unix_socket_path()
        self.assertTrue(os.path.exists(path), path)
        subject = "over a unix socket " + email.utils.make_msgid()
        message = mailenv.make_message(20000, subject,
                                       recipient=self.env.address)
        listeners = {"smtps": ("smtp", "unix:" + path, "")}
        with self.proxy(listeners=listeners) as mp:
            smtp = smtplib.SMTP_SSL("localhost", mp.port("smtps"),
                                    context=self.ca.client_context(),
                                    timeout=30)
            smtp.sendmail("bob@example.org", [self.env.address], message)
            smtp.quit()
            self.env.wait_for_delivery(subject)
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["backend"], "unix:" + path)
        self.assertNormalEnd(line)

    def test_ipv6_listener(self):
        port, hold = mailenv.reserve_port("::1")
        self.addCleanup(hold.close)
        config = ("[tls]\ncertificate = %s\nkey = %s\n"
                  "[listener imaps6]\nprotocol = imap\nlisten = [::1]:%d\n"
                  "backend = 127.0.0.1:%d\n"
                  % (self.ca.chain_pem, self.ca.key_pem, port,
                     self.env.imap_port))
        with Mailproxy(self.env, self.ca, raw_config=config) as mp:
            out = self.curl("imaps://[::1]:%d/" % port)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"INBOX", out.stdout)
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertRegex(line["client"], r"^\[::1\]:\d+$")
        self.assertEqual(line["local"], "[::1]:%d" % port)


if __name__ == "__main__":
    unittest.main()
