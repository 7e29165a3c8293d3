#!/usr/bin/python3
"""Proves the mailenv harness: real Dovecot and Postfix, no proxy involved.

Run:  /usr/bin/python3 tests/integration/test_backends.py   (as root)
"""

import os
import re
import smtplib
import socket
import ssl
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import mailenv  # noqa: E402
from mailenv import MailEnv, make_message, to_crlf, to_lf  # noqa: E402

BIG_SIZE = 5 * 1024 * 1024
BIG_SUBJECT = "backends-seeded-5mb"
LF_SUBJECT = "backends-seeded-lf"


def imap_find(imap, subject):
    """Sequence numbers of INBOX messages whose Subject contains subject."""
    typ, data = imap.search(None, "HEADER", "Subject", '"%s"' % subject)
    assert typ == "OK", (typ, data)
    return data[0].split()


def imap_fetch(imap, num, item):
    typ, data = imap.fetch(num, "(%s)" % item)
    assert typ == "OK", (typ, data)
    # [(b'1 (BODY[] {n}', literal), b')']
    return data[0][1]


def assert_logged(test, env, which, pattern, timeout=10):
    """pattern turns up in the "dovecot" or "postfix" log within timeout:
    both servers write their logs through a process of their own, a
    moment after the client has had its answer."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, env.read_log(which)):
        if time.monotonic() > deadline:
            test.assertRegex(env.read_log(which), pattern)
        time.sleep(0.05)


class BackendTests(mailenv.DumpLogsOnFailure, unittest.TestCase):
    """One environment shared by the class: starting it is cheap but not
    free, and the scenarios do not disturb each other."""

    @classmethod
    def setUpClass(cls):
        cls.env = MailEnv()
        cls.env.start()
        cls.mail_envs = [cls.env]
        print("\nmailenv startup: %.2f s (imap %d, pop3 %d, smtp %d, %s)"
              % (cls.env.startup_seconds, cls.env.imap_port,
                 cls.env.pop3_port, cls.env.smtp_port, cls.env.tmp),
              file=sys.stderr)
        # Seeded with CRLF: Dovecot must hand back exactly these bytes.
        cls.big = make_message(BIG_SIZE, BIG_SUBJECT)
        cls.env.seed_message(cls.big)
        # Seeded LF-only: Dovecot must put CRLF on the wire.
        cls.lf_msg = make_message(20000, LF_SUBJECT)
        cls.env.seed_message(to_lf(cls.lf_msg))

    @classmethod
    def tearDownClass(cls):
        env = cls.env
        env.stop()
        # Checked here (not in a test) because only now is everything down.
        leftovers = env.leftover_pids()
        if leftovers or not env.stopped_cleanly:
            raise AssertionError("servers not stopped cleanly, leftover "
                                 "PIDs: %s" % leftovers)
        if os.path.exists(env.tmp) and not mailenv.keep_tmp():
            raise AssertionError("temp dir %s not removed" % env.tmp)

    def assertLogsClean(self):
        self.assertEqual(self.env.log_problems(), [])

    def test_make_message(self):
        self.assertEqual(len(self.big), BIG_SIZE)
        lines = self.big.split(b"\r\n")
        # Varied content: almost every body line is distinct, some lines
        # need dot-stuffing, and none exceeds the SMTP line limit.
        body = lines[lines.index(b"") + 1:]
        self.assertGreater(len(set(body)), 0.9 * len(body))
        self.assertIn(b".", body)
        self.assertIn(b"..", body)
        self.assertLessEqual(max(map(len, lines)), 78)
        self.assertNotIn(b"\n", self.big.replace(b"\r\n", b""))
        self.assertEqual(make_message(BIG_SIZE, BIG_SUBJECT), self.big)
        self.assertEqual(len(make_message(1001, "odd")), 1001)

    def test_imap_fetch_big_message_byte_exact(self):
        imap = self.env.imap_login()
        try:
            typ, data = imap.select("INBOX")
            self.assertEqual(typ, "OK")
            nums = imap_find(imap, BIG_SUBJECT)
            self.assertEqual(len(nums), 1)
            t0 = time.monotonic()
            raw = imap_fetch(imap, nums[0], "BODY.PEEK[]")
            elapsed = time.monotonic() - t0
            self.assertEqual(len(raw), len(self.big))
            self.assertTrue(raw == self.big, "FETCH BODY[] differs")
            typ, data = imap.fetch(nums[0], "(RFC822.SIZE)")
            self.assertIn(b"RFC822.SIZE %d" % BIG_SIZE, data[0])
            print("\nIMAP FETCH of %d bytes: %.2f s" % (len(raw), elapsed),
                  file=sys.stderr)
        finally:
            imap.logout()
        assert_logged(self, self.env, "dovecot",
                      r"imap-login: Info: Login: user=<alice>, "
                      r"method=PLAIN, rip=127\.0\.0\.1")
        self.assertLogsClean()

    def test_imap_lf_file_comes_back_crlf(self):
        imap = self.env.imap_login()
        try:
            imap.select("INBOX", readonly=True)
            nums = imap_find(imap, LF_SUBJECT)
            self.assertEqual(len(nums), 1)
            raw = imap_fetch(imap, nums[0], "BODY.PEEK[]")
            self.assertEqual(raw, to_crlf(to_lf(self.lf_msg)))
            self.assertEqual(raw, self.lf_msg)
        finally:
            imap.logout()

    def test_pop3_retr_big_message_line_exact(self):
        pop = self.env.pop3_login()
        try:
            count, _ = pop.stat()
            self.assertGreaterEqual(count, 2)
            # Dovecot reports CRLF sizes in LIST; ours is the only 5 MiB one.
            _, listing, _ = pop.list()
            sizes = dict(map(int, entry.split()) for entry in listing)
            matches = [n for n, size in sizes.items() if size == BIG_SIZE]
            self.assertEqual(len(matches), 1, sizes)
            _, lines, octets = pop.retr(matches[0])
            # poplib strips CRLF and undoes dot-stuffing.
            expected = self.big.split(b"\r\n")[:-1]
            self.assertEqual(len(lines), len(expected))
            self.assertTrue(lines == expected, "RETR lines differ")
        finally:
            pop.quit()
        assert_logged(self, self.env, "dovecot",
                      r"pop3-login: Info: Login: user=<alice>, "
                      r"method=PLAIN, rip=127\.0\.0\.1")
        self.assertLogsClean()

    def test_smtp_delivery_readable_over_imap(self):
        subject = "backends-smtp-%d" % os.getpid()
        msg = make_message(300 * 1024, subject)
        body = msg.split(b"\r\n\r\n", 1)[1]
        smtp = self.env.smtp_client()
        try:
            code, banner = smtp.ehlo("client.example.org")
            self.assertEqual(code, 250)
            refused = smtp.sendmail("bob@example.org", [self.env.address],
                                    msg)
            self.assertEqual(refused, {})
        finally:
            smtp.quit()
        path = self.env.wait_for_delivery(subject, timeout=30)
        self.assertTrue(path.startswith(self.env.maildir))

        imap = self.env.imap_login()
        try:
            imap.select("INBOX", readonly=True)
            nums = imap_find(imap, subject)
            self.assertEqual(len(nums), 1)
            self.assertEqual(imap_fetch(imap, nums[0], "BODY.PEEK[TEXT]"),
                             body)
            header = imap_fetch(imap, nums[0], "BODY.PEEK[HEADER]")
            # Postfix's trace headers prove it went through smtpd+virtual.
            self.assertIn(b"Delivered-To: alice@example.test", header)
            self.assertIn(b"by mail.example.test (Postfix)", header)
        finally:
            imap.logout()
        # virtual(8) logs the delivery after the file is in place.
        assert_logged(self, self.env, "postfix",
                      re.escape("status=sent (delivered to maildir)"))
        self.assertLogsClean()

    def test_unknown_recipient_rejected(self):
        smtp = self.env.smtp_client()
        try:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                smtp.sendmail("bob@example.org", ["nobody@example.test"],
                              make_message(500, "reject"))
            code = cm.exception.recipients["nobody@example.test"][0]
            self.assertEqual(code, 550)
        finally:
            smtp.quit()

    def test_two_more_environments_are_independent(self):
        envs = []
        try:
            t0 = time.monotonic()
            with MailEnv() as a, MailEnv() as b:
                envs += [a, b]
                print("\ntwo more environments up in %.2f s"
                      % (time.monotonic() - t0), file=sys.stderr)
                mine = {self.env.imap_port, self.env.pop3_port,
                        self.env.smtp_port}
                for env in (a, b):
                    ports = {env.imap_port, env.pop3_port, env.smtp_port}
                    self.assertEqual(len(ports), 3)
                    self.assertFalse(ports & mine)
                    mine |= ports
                self.assertNotEqual(a.tmp, b.tmp)

                for env in (a, b):
                    with env.smtp_client() as smtp:
                        smtp.sendmail("bob@example.org", [env.address],
                                      make_message(4000, "to-" + env.instance))
                for env, other in ((a, b), (b, a)):
                    env.wait_for_delivery("to-" + env.instance, timeout=30)
                    imap = env.imap_login()
                    try:
                        imap.select("INBOX", readonly=True)
                        self.assertEqual(
                            len(imap_find(imap, "to-" + env.instance)), 1)
                        self.assertEqual(
                            imap_find(imap, "to-" + other.instance), [])
                        # Nothing seeded into the class environment leaks.
                        self.assertEqual(imap_find(imap, BIG_SUBJECT), [])
                    finally:
                        imap.logout()
                    self.assertEqual(env.log_problems(), [])
                stop_t0 = time.monotonic()
            print("two environments stopped in %.2f s"
                  % (time.monotonic() - stop_t0), file=sys.stderr)
        finally:
            for env in envs:
                env.stop()
        for env in envs:
            self.assertTrue(env.stopped_cleanly)
            self.assertEqual(env.leftover_pids(), [])
            if not mailenv.keep_tmp():
                self.assertFalse(os.path.exists(env.tmp))
        # The class environment is unaffected by the others' shutdown.
        imap = self.env.imap_login()
        try:
            self.assertEqual(imap.noop()[0], "OK")
        finally:
            imap.logout()


class ProxyProtocolOptionTests(unittest.TestCase):
    """dovecot_extra / postfix_extra reach the servers: enable the HAProxy
    PROXY protocol (as later proxy tests will) and check the client address
    the servers log is the one from the header, not 127.0.0.1."""

    DOVECOT_EXTRA = """
haproxy_trusted_networks = 127.0.0.0/8
service imap-login {
  inet_listener imap {
    haproxy = yes
  }
}
"""

    def test_proxy_protocol_enabled_via_options(self):
        with MailEnv(dovecot_extra=self.DOVECOT_EXTRA,
                     postfix_extra={"smtpd_upstream_proxy_protocol":
                                    "haproxy"}) as env:
            with socket.create_connection((env.host, env.imap_port), 10) as s:
                f = s.makefile("rwb")
                f.write(b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 143\r\n")
                f.flush()
                self.assertTrue(f.readline().startswith(b"* OK"))
                f.write(b"a LOGIN alice Secret-pass-1\r\n")
                f.flush()
                self.assertTrue(f.readline().startswith(b"a OK"))
                f.write(b"b LOGOUT\r\n")
                f.flush()
                f.read()
            with socket.create_connection((env.host, env.smtp_port), 10) as s:
                f = s.makefile("rwb")
                f.write(b"PROXY TCP4 192.0.2.11 127.0.0.1 40001 25\r\n")
                f.flush()
                self.assertTrue(f.readline().startswith(b"220 "))
                f.write(b"QUIT\r\n")
                f.flush()
                f.read()
            # POP3 was left plain: it must still work without a header.
            env.pop3_login().quit()
            assert_logged(self, env, "postfix",
                          re.escape("unknown[192.0.2.11]"))
            assert_logged(self, env, "dovecot",
                          r"imap-login: Info: Login: user=<alice>, "
                          r"method=PLAIN, rip=192\.0\.2\.10,")
            self.assertEqual(env.log_problems(), [])


class TestCATests(unittest.TestCase):
    """The certificates verify with Python's ssl against only our CA."""

    def handshake(self, ca, server_ctx, server_hostname):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            errors = []

            def serve():
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as s:
                        s.sendall(b"ok")
                except (OSError, ssl.SSLError) as exc:
                    errors.append(exc)

            thread = threading.Thread(target=serve)
            thread.start()
            try:
                with socket.create_connection(("127.0.0.1", port), 10) as raw:
                    with ca.client_context().wrap_socket(
                            raw, server_hostname=server_hostname) as s:
                        self.assertEqual(s.recv(2), b"ok")
                        return s.getpeercert()
            finally:
                thread.join(10)

    def test_ec_and_rsa(self):
        with tempfile.TemporaryDirectory() as tmp:
            for key_type in ("ec", "rsa"):
                ca = mailenv.TestCA(os.path.join(tmp, key_type), key_type)
                for name in ("localhost", "127.0.0.1", "::1"):
                    cert = self.handshake(ca, ca.server_context(), name)
                    self.assertIn(("DNS", "localhost"),
                                  cert["subjectAltName"])
                sni_cert, sni_key = ca.make_cert("imap.example.test")
                cert = self.handshake(
                    ca, ca.server_context(sni_cert, sni_key),
                    "imap.example.test")
                self.assertEqual(cert["subjectAltName"],
                                 (("DNS", "imap.example.test"),))
                # The default server certificate is not valid for the
                # SNI name, so hostname checking must reject it.
                with self.assertRaises(ssl.SSLCertVerificationError):
                    self.handshake(ca, ca.server_context(),
                                   "imap.example.test")


if __name__ == "__main__":
    unittest.main(verbosity=2)
