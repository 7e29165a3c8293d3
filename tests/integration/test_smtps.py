"""SMTPS (465, submissions): mail sent through mailproxy to a real Postfix
is delivered into the Maildir Dovecot serves, and read back through
mailproxy's IMAPS listener byte for byte (Python smtplib and curl).
"""

import email.utils
import imaplib
import smtplib
import tempfile
import unittest

import mailenv
from proxy import ProxyTestCase


def body_of(raw):
    return mailenv.to_crlf(raw).split(b"\r\n\r\n", 1)[1]


class SmtpsTest(ProxyTestCase):

    def fetch_via_proxy(self, mp, subject):
        imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                 ssl_context=self.ca.client_context(),
                                 timeout=60)
        imap.login(self.env.user, self.env.password)
        imap.select("INBOX", readonly=True)
        typ, hits = imap.search(None, "SUBJECT", '"%s"' % subject)
        self.assertEqual(typ, "OK")
        num = hits[0].split()[-1]
        typ, data = imap.fetch(num, "(BODY.PEEK[])")
        imap.logout()
        return data[0][1]

    def test_smtplib_send_then_read_back_over_imaps(self):
        subject = "via smtps " + email.utils.make_msgid()
        message = mailenv.make_message(300 * 1024, subject,
                                       recipient=self.env.address)
        with self.proxy() as mp:
            smtp = smtplib.SMTP_SSL("localhost", mp.port("smtps"),
                                    context=self.ca.client_context(),
                                    timeout=60)
            code, banner = smtp.ehlo("client.example.org")
            self.assertEqual(code, 250)
            refused = smtp.sendmail("bob@example.org", [self.env.address],
                                    message)
            self.assertEqual(refused, {})
            smtp.quit()
            path = self.env.wait_for_delivery(subject)
            with open(path, "rb") as f:
                stored = f.read()
            self.assertEqual(body_of(stored), body_of(message))
            fetched = self.fetch_via_proxy(mp, subject)
            self.assertEqual(fetched, mailenv.to_crlf(stored))
            self.assertEqual(body_of(fetched), body_of(message))
            self.assertStopsCleanly(mp)
        smtp_line, = mp.sessions(listener="smtps")
        self.assertEqual(smtp_line["proto"], "smtp")
        self.assertNormalEnd(smtp_line)
        self.assertGreater(int(smtp_line["backend_out"]), len(message))
        self.assertEqual(len(mp.sessions(listener="imaps")), 1)

    def test_curl_smtps_send(self):
        subject = "via curl " + email.utils.make_msgid()
        message = mailenv.make_message(50 * 1024, subject,
                                       recipient=self.env.address)
        with tempfile.NamedTemporaryFile(dir=self.env.tmp) as f:
            f.write(message)
            f.flush()
            with self.proxy() as mp:
                out = self.curl("smtps://localhost:%d" % mp.port("smtps"),
                                "--mail-from", "carol@example.org",
                                "--mail-rcpt", self.env.address,
                                "--upload-file", f.name, login=False)
                self.assertEqual(out.returncode, 0, out.stderr)
                path = self.env.wait_for_delivery(subject)
                self.assertStopsCleanly(mp)
        with open(path, "rb") as stored:
            self.assertEqual(body_of(stored.read()), body_of(message))
        self.assertEqual(len(mp.sessions(listener="smtps")), 1)


if __name__ == "__main__":
    unittest.main()
