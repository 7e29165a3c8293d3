"""IMAP with STARTTLS (143): real Dovecot behind mailproxy, real clients in
front: Python's IMAP4.starttls(), curl --ssl-reqd and openssl s_client
-starttls imap. Before TLS the client sees only mailproxy's template and
cannot log in; after it, it logs in to Dovecot and fetches a 5 MB message
byte for byte. Each session leaves one log line saying starttls=yes.
"""

import imaplib
import subprocess
import unittest

import mailenv
from wire import GREETING, StarttlsCase

BIG = 5 * 1024 * 1024


class StarttlsImapTest(StarttlsCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(BIG, "five megabytes 143")
        cls.small = cls.seed(2000, "small one 143")

    def dovecot(self, **kwargs):
        return self.serve("imap", "127.0.0.1:%d" % self.env.imap_port,
                          **kwargs)

    def direct_fetch(self):
        imap = self.env.imap_login()
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch(b"1:*", "(BODY.PEEK[])")
        imap.logout()
        return [part[1] for part in data if isinstance(part, tuple)]

    def test_imaplib_starttls_login_list_fetch_byte_exact(self):
        expected = self.direct_fetch()
        self.assertEqual(expected, [mailenv.to_crlf(self.message),
                                    mailenv.to_crlf(self.small)])
        with self.dovecot() as mp:
            imap = imaplib.IMAP4("localhost", mp.port("l"), timeout=60)
            self.assertEqual(imap.welcome + b"\r\n", GREETING["imap"])
            self.assertEqual(set(imap.capabilities),
                             {"IMAP4REV1", "STARTTLS", "LOGINDISABLED"})
            # Cleartext login is refused by mailproxy, not by Dovecot.
            with self.assertRaisesRegex(imaplib.IMAP4.error,
                                        "PRIVACYREQUIRED"):
                imap.login(self.env.user, self.env.password)
            typ, _ = imap.starttls(ssl_context=self.ca.client_context())
            self.assertEqual(typ, "OK")
            # Dovecot's own post-TLS capabilities, without STARTTLS.
            self.assertIn("AUTH=PLAIN", imap.capabilities)
            self.assertNotIn("STARTTLS", imap.capabilities)
            self.assertNotIn("LOGINDISABLED", imap.capabilities)
            self.assertImapFetchExact(imap, expected)
            cipher = imap.sock.cipher()
            imap.logout()
            self.assertStopsCleanly(mp)
        line, = mp.sessions()
        self.assertEqual(line["listener"], "l")
        self.assertEqual(line["proto"], "imap")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertEqual(line["cipher"], cipher[0])
        self.assertEqual(line["sni"], "localhost")
        self.assertEqual(line["backend_addr"],
                         "127.0.0.1:%d" % self.env.imap_port)
        self.assertCounts(line, starttls="yes", discarded=0, refused=1)
        self.assertNormalEnd(line)
        self.assertGreater(int(line["backend_in"]), BIG)
        self.assertGreater(int(line["client_out"]),
                           int(line["backend_in"]))

    def test_imaplib_logout_before_tls_never_reaches_dovecot(self):
        with self.dovecot() as mp:
            imap = imaplib.IMAP4("localhost", mp.port("l"), timeout=30)
            typ, data = imap.logout()
            self.assertEqual(typ, "BYE")
            self.assertEqual(data, [b"Logging out."])
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="no", discarded=0, refused=0)
        self.assertNoBackend(line)
        self.assertIsNone(line["tls"])

    def test_curl_ssl_reqd_fetch_byte_exact(self):
        with self.dovecot() as mp:
            out = self.curl("imap://localhost:%d/INBOX;UID=1"
                            % mp.port("l"), "--ssl-reqd")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, mailenv.to_crlf(self.message))
            out = self.curl("imap://localhost:%d/INBOX;UID=2"
                            % mp.port("l"), "--ssl-reqd")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, mailenv.to_crlf(self.small))
            lines = mp.wait_sessions(2)
            self.assertStopsCleanly(mp)
        self.assertEqual(len(lines), 2, mp.log_text())
        for line in lines:
            self.assertCounts(line, starttls="yes", discarded=0, refused=0)
            self.assertEqual(line["tls"], "TLSv1.3")

    def test_curl_without_tls_cannot_log_in(self):
        # No --ssl-reqd: curl sees LOGINDISABLED and no AUTH= mechanism,
        # so it has no way to send the password in the clear.
        with self.dovecot() as mp:
            out = self.curl("imap://localhost:%d/INBOX;UID=2"
                            % mp.port("l"))
            self.assertNotEqual(out.returncode, 0, out.stdout)
            self.assertEqual(out.stdout, b"")
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="no")
        self.assertNoBackend(line)

    def test_openssl_s_client_starttls_imap(self):
        # s_client does CAPABILITY and STARTTLS itself, then pipes our
        # four commands at once: mailproxy holds them until each answer.
        commands = ("a LOGIN %s %s\nb SELECT INBOX\nc FETCH 2 BODY[]\n"
                    "d LOGOUT\n" % (self.env.user, self.env.password))
        with self.dovecot() as mp:
            out = subprocess.run(
                ["openssl", "s_client", "-starttls", "imap", "-connect",
                 "127.0.0.1:%d" % mp.port("l"), "-CAfile", self.ca.ca_pem,
                 "-verify_return_error", "-verify_hostname", "localhost",
                 "-servername", "localhost", "-crlf", "-brief",
                 "-ign_eof"],
                input=commands.encode(), capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Verification: OK", out.stderr)
            replies = out.stdout
            for expected in (b"a OK", b"b OK", b"c OK", b"* BYE",
                             b"d OK"):
                self.assertIn(expected, replies)
            self.assertIn(mailenv.to_crlf(self.small), replies)
            self.assertNotIn(b"STARTTLS", replies)
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)
        self.assertNormalEnd(line)


if __name__ == "__main__":
    unittest.main()
