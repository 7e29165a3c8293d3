"""POP3 with STLS (110): real Dovecot behind mailproxy, real clients in
front: Python's POP3.stls(), curl --ssl-reqd and openssl s_client -starttls
pop3. Before TLS, CAPA offers only STLS and USER is refused by mailproxy;
after it, a 5 MB message is retrieved line for line and byte for byte.
"""

import poplib
import subprocess
import unittest

import mailenv
from wire import GREETING, StarttlsCase

BIG = 5 * 1024 * 1024


class StarttlsPop3Test(StarttlsCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(BIG, "five megabytes 110")

    def dovecot(self, **kwargs):
        return self.serve("pop3", "127.0.0.1:%d" % self.env.pop3_port,
                          **kwargs)

    def test_poplib_stls_login_retr_byte_exact(self):
        direct = self.env.pop3_login()
        _, direct_lines, _ = direct.retr(1)
        direct.quit()
        with self.dovecot() as mp:
            pop = poplib.POP3("localhost", mp.port("l"), timeout=60)
            self.assertEqual(pop.getwelcome() + b"\r\n", GREETING["pop3"])
            self.assertEqual(pop.capa(), {"CAPA": [], "STLS": []})
            with self.assertRaisesRegex(poplib.error_proto, r"\[AUTH\]"):
                pop.user(self.env.user)
            resp = pop.stls(context=self.ca.client_context())
            self.assertEqual(resp, b"+OK Begin TLS negotiation now.")
            caps = pop.capa()
            self.assertNotIn("STLS", caps)
            self.assertIn("USER", caps)
            self.assertIn("PLAIN", caps["SASL"])
            self.assertPop3RetrExact(pop, self.message, direct_lines)
            pop.quit()
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["proto"], "pop3")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertEqual(line["backend_addr"],
                         "127.0.0.1:%d" % self.env.pop3_port)
        self.assertCounts(line, starttls="yes", discarded=0, refused=1)
        self.assertNormalEnd(line)
        self.assertGreater(int(line["backend_in"]), BIG)

    def test_poplib_quit_before_tls_never_reaches_dovecot(self):
        with self.dovecot() as mp:
            pop = poplib.POP3("localhost", mp.port("l"), timeout=30)
            self.assertEqual(pop.quit(), b"+OK Logging out.")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="no", discarded=0, refused=0)
        self.assertNoBackend(line)

    def test_curl_ssl_reqd_retr_byte_exact(self):
        with self.dovecot() as mp:
            out = self.curl("pop3://localhost:%d/1" % mp.port("l"),
                            "--ssl-reqd")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, mailenv.to_crlf(self.message))
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)

    def test_curl_without_tls_cannot_log_in(self):
        # Without TLS curl finds nothing to log in with (no USER, no SASL
        # before STLS) or is refused by mailproxy; Dovecot never hears of
        # the session.
        with self.dovecot() as mp:
            out = self.curl("pop3://localhost:%d/1" % mp.port("l"))
            self.assertNotEqual(out.returncode, 0, out.stdout)
            self.assertEqual(out.stdout, b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="no")
        self.assertNoBackend(line)

    def test_openssl_s_client_starttls_pop3(self):
        commands = "USER %s\nPASS %s\nSTAT\nTOP 1 0\nQUIT\n" % (
            self.env.user, self.env.password)
        size = len(mailenv.to_crlf(self.message))
        header = mailenv.to_crlf(self.message).split(b"\r\n\r\n")[0]
        with self.dovecot() as mp:
            out = subprocess.run(
                ["openssl", "s_client", "-starttls", "pop3", "-connect",
                 "127.0.0.1:%d" % mp.port("l"), "-CAfile", self.ca.ca_pem,
                 "-verify_return_error", "-verify_hostname", "localhost",
                 "-crlf", "-brief", "-ign_eof"],
                input=commands.encode(), capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Verification: OK", out.stderr)
            self.assertIn(b"+OK 1 %d\r\n" % size, out.stdout)
            self.assertIn(header + b"\r\n\r\n.\r\n", out.stdout)
            self.assertIn(b"+OK Logging out.", out.stdout)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)
        self.assertNormalEnd(line)


if __name__ == "__main__":
    unittest.main()
