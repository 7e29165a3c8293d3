"""POP3S (995): Python's POP3_SSL and curl retrieve a 5 MB message through
mailproxy from a real Dovecot, line for line and byte for byte.
"""

import poplib
import unittest

import mailenv
from proxy import ProxyTestCase

BIG = 5 * 1024 * 1024


class Pop3sTest(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(BIG, "five megabytes pop")

    def test_poplib_login_list_retr_exact(self):
        direct = self.env.pop3_login()
        _, direct_lines, _ = direct.retr(1)
        direct.quit()
        with self.proxy() as mp:
            pop = poplib.POP3_SSL("localhost", mp.port("pop3s"),
                                  context=self.ca.client_context(),
                                  timeout=60)
            self.assertTrue(pop.getwelcome().startswith(b"+OK"))
            self.assertPop3RetrExact(pop, self.message, direct_lines)
            pop.quit()
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["proto"], "pop3")
        self.assertEqual(line["listener"], "pop3s")
        self.assertNormalEnd(line)
        self.assertGreater(int(line["backend_in"]), BIG)

    def test_curl_pop3s_retr_exact(self):
        with self.proxy() as mp:
            out = self.curl("pop3s://localhost:%d/1" % mp.port("pop3s"))
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, mailenv.to_crlf(self.message))
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.sessions()), 1, mp.log_text())


if __name__ == "__main__":
    unittest.main()
