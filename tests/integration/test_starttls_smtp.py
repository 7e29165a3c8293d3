"""SMTP with STARTTLS: submission (587, starttls = required) with AUTH
against a real Postfix that authenticates through Dovecot, and MX (25,
starttls = optional) where a client that never upgrades still delivers in
plaintext. Python's SMTP.starttls(), curl --ssl-reqd and openssl s_client
-starttls smtp send; the mail is read back through mailproxy's IMAP
STARTTLS listener byte for byte.
"""

import base64
import email.utils
import imaplib
import smtplib
import subprocess
import tempfile
import unittest

import mailenv
from wire import StarttlsCase, sasl_env_options


def body_of(raw):
    return mailenv.to_crlf(raw).split(b"\r\n\r\n", 1)[1]


def dot_stuffed(message):
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l
                        for l in lines)


class StarttlsSmtpTest(StarttlsCase):

    @classmethod
    def setUpClass(cls):
        cls.env_options = sasl_env_options()
        super().setUpClass()

    def mailproxy(self):
        postfix = "127.0.0.1:%d" % self.env.smtp_port
        return self.proxy(listeners={
            "submission": self.listener("smtp", postfix),
            "mx": self.listener("smtp", postfix, mode="optional"),
            "imap": self.listener("imap",
                                  "127.0.0.1:%d" % self.env.imap_port),
        })

    def read_back(self, mp, subject):
        """The message with subject, fetched over mailproxy's IMAP
        STARTTLS listener."""
        imap = imaplib.IMAP4("localhost", mp.port("imap"), timeout=60)
        imap.starttls(ssl_context=self.ca.client_context())
        imap.login(self.env.user, self.env.password)
        imap.select("INBOX", readonly=True)
        typ, hits = imap.search(None, "SUBJECT", '"%s"' % subject)
        self.assertEqual(typ, "OK")
        num = hits[0].split()[-1]
        typ, data = imap.fetch(num, "(BODY.PEEK[])")
        imap.logout()
        return data[0][1]

    def delivered(self, mp, subject, message):
        """Waits for the message; checks it byte for byte, stored and
        read back through mailproxy; returns the stored bytes."""
        path = self.env.wait_for_delivery(subject)
        with open(path, "rb") as f:
            stored = f.read()
        self.assertEqual(body_of(stored), body_of(message))
        fetched = self.read_back(mp, subject)
        self.assertEqual(fetched, mailenv.to_crlf(stored))
        return stored

    def test_smtplib_submission_starttls_auth_read_back_over_imap(self):
        subject = "via 587 " + email.utils.make_msgid()
        message = mailenv.make_message(300 * 1024, subject,
                                       recipient=self.env.address)
        since = self.env.log_size("postfix")
        mp = self.mailproxy().start()
        try:
            smtp = smtplib.SMTP(timeout=60)
            # starttls() checks the name the constructor would have kept.
            smtp._host = "localhost"
            code, banner = smtp.connect("localhost", mp.port("submission"))
            self.assertEqual((code, banner),
                             (220, b"mx.proxy.test ESMTP Server ready."))
            self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
            self.assertTrue(smtp.has_extn("starttls"))
            self.assertFalse(smtp.has_extn("auth"))
            self.assertEqual(smtp.mail("bob@example.org"), (
                530, b"5.7.0 Must issue a STARTTLS command first"))
            code, _ = smtp.starttls(context=self.ca.client_context())
            self.assertEqual(code, 220)
            self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
            # Postfix's own EHLO now, without STARTTLS.
            self.assertTrue(smtp.has_extn("auth"))
            self.assertTrue(smtp.has_extn("chunking"))
            self.assertFalse(smtp.has_extn("starttls"))
            code, _ = smtp.login(self.env.user, self.env.password)
            self.assertEqual(code, 235)
            refused = smtp.sendmail("bob@example.org", [self.env.address],
                                    message)
            self.assertEqual(refused, {})
            smtp.quit()
            stored = self.delivered(mp, subject, message)
            self.assertIn(b"Received: from client.example.org (", stored)
            self.assertIn(b"with ESMTPA", stored)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        self.assertIn("sasl_method=PLAIN, sasl_username=alice",
                      self.server_log("postfix", since, "sasl_username="))
        line, = mp.sessions(listener="submission")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertCounts(line, starttls="yes", discarded=0, refused=1)
        self.assertNormalEnd(line)
        self.assertGreater(int(line["backend_out"]), len(message))
        imap_line, = mp.sessions(listener="imap")
        self.assertCounts(imap_line, starttls="yes")
        self.assertNormalEnd(imap_line)

    def test_curl_smtp_ssl_reqd_with_auth(self):
        subject = "via curl 587 " + email.utils.make_msgid()
        message = mailenv.make_message(50 * 1024, subject,
                                       recipient=self.env.address)
        since = self.env.log_size("postfix")
        mp = self.mailproxy().start()
        try:
            with tempfile.NamedTemporaryFile(dir=self.env.tmp) as f:
                f.write(message)
                f.flush()
                out = self.curl("smtp://localhost:%d"
                                % mp.port("submission"), "--ssl-reqd",
                                "--mail-from", "carol@example.org",
                                "--mail-rcpt", self.env.address,
                                "--upload-file", f.name)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.delivered(mp, subject, message)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        self.assertIn("sasl_username=alice",
                      self.server_log("postfix", since, "sasl_username="))
        line, = mp.sessions(listener="submission")
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)
        self.assertNormalEnd(line)

    def test_curl_smtp_without_tls_refused_on_submission(self):
        with self.mailproxy() as mp:
            out = self.curl("smtp://localhost:%d" % mp.port("submission"),
                            "--mail-from", "carol@example.org",
                            "--mail-rcpt", self.env.address,
                            "--upload-file", "/dev/null", login=False)
            self.assertNotEqual(out.returncode, 0)
            line, = mp.wait_sessions(1)
            self.assertStopsCleanly(mp)
        self.assertCounts(line, starttls="no")
        self.assertNotEqual(line["refused"], "0")
        self.assertNoBackend(line)

    def test_openssl_s_client_starttls_smtp(self):
        subject = "via s_client " + email.utils.make_msgid()
        message = mailenv.make_message(4000, subject,
                                       recipient=self.env.address)
        auth = base64.b64encode(b"\0%s\0%s" % (
            self.env.user.encode(), self.env.password.encode()))
        script = (b"EHLO client.example.org\r\nAUTH PLAIN " + auth +
                  b"\r\nMAIL FROM:<bob@example.org>\r\n"
                  b"RCPT TO:<" + self.env.address.encode() + b">\r\n"
                  b"DATA\r\n" + dot_stuffed(message) + b".\r\nQUIT\r\n")
        mp = self.mailproxy().start()
        try:
            out = subprocess.run(
                ["openssl", "s_client", "-starttls", "smtp", "-connect",
                 "127.0.0.1:%d" % mp.port("submission"),
                 "-CAfile", self.ca.ca_pem, "-verify_return_error",
                 "-verify_hostname", "localhost", "-brief", "-ign_eof",
                 "-nocommands"],
                input=script, capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Verification: OK", out.stderr)
            self.assertIn(b"235 2.7.0 Authentication successful",
                          out.stdout)
            self.assertIn(b"250 2.0.0 Ok: queued", out.stdout)
            self.assertIn(b"221 2.0.0 Bye", out.stdout)
            self.assertNotIn(b"STARTTLS", out.stdout)
            self.delivered(mp, subject, message)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        line, = mp.sessions(listener="submission")
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)
        self.assertNormalEnd(line)

    def test_port25_plaintext_delivery_from_a_client_that_never_upgrades(
            self):
        subject = "via 25 plaintext " + email.utils.make_msgid()
        message = mailenv.make_message(200 * 1024, subject,
                                       recipient=self.env.address)
        since = self.env.log_size("postfix")
        mp = self.mailproxy().start()
        try:
            smtp = smtplib.SMTP(timeout=60)
            code, banner = smtp.connect("localhost", mp.port("mx"))
            self.assertEqual(code, 220)
            self.assertEqual(smtp.ehlo("sender.example.net")[0], 250)
            self.assertTrue(smtp.has_extn("starttls"))
            # Postfix offers AUTH; mailproxy never does in plaintext.
            self.assertFalse(smtp.has_extn("auth"))
            auth = base64.b64encode(b"\0alice\0%s"
                                    % self.env.password.encode())
            self.assertEqual(
                smtp.docmd("AUTH", "PLAIN " + auth.decode()),
                (503, b"5.5.1 Error: authentication not enabled"))
            refused = smtp.sendmail("bob@example.org", [self.env.address],
                                    message)
            self.assertEqual(refused, {})
            smtp.quit()
            stored = self.delivered(mp, subject, message)
            # Postfix got the client's EHLO, replayed by mailproxy.
            self.assertIn(b"Received: from sender.example.net (", stored)
            self.assertIn(b"with ESMTP id", stored)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        self.assertNotIn("sasl_", self.env.read_log("postfix", since))
        line, = mp.sessions(listener="mx")
        self.assertIsNone(line["tls"])
        self.assertEqual(line["backend_addr"],
                         "127.0.0.1:%d" % self.env.smtp_port)
        self.assertCounts(line, starttls="no", discarded=0, refused=1)
        self.assertNormalEnd(line)
        self.assertGreater(int(line["backend_out"]), len(message))

    def test_port25_delivery_with_starttls(self):
        subject = "via 25 starttls " + email.utils.make_msgid()
        message = mailenv.make_message(200 * 1024, subject,
                                       recipient=self.env.address)
        mp = self.mailproxy().start()
        try:
            smtp = smtplib.SMTP("localhost", mp.port("mx"), timeout=60)
            smtp.ehlo("tls-sender.example.net")
            code, _ = smtp.starttls(context=self.ca.client_context())
            self.assertEqual(code, 220)
            smtp.ehlo("tls-sender.example.net")
            self.assertFalse(smtp.has_extn("starttls"))
            refused = smtp.sendmail("bob@example.org", [self.env.address],
                                    message)
            self.assertEqual(refused, {})
            smtp.quit()
            stored = self.delivered(mp, subject, message)
            self.assertIn(b"Received: from tls-sender.example.net (",
                          stored)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        line, = mp.sessions(listener="mx")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertCounts(line, starttls="yes", discarded=0, refused=0)
        self.assertNormalEnd(line)

    def test_curl_smtp_port25_plaintext(self):
        subject = "via curl 25 " + email.utils.make_msgid()
        message = mailenv.make_message(20 * 1024, subject,
                                       recipient=self.env.address)
        mp = self.mailproxy().start()
        try:
            with tempfile.NamedTemporaryFile(dir=self.env.tmp) as f:
                f.write(message)
                f.flush()
                out = self.curl("smtp://localhost:%d" % mp.port("mx"),
                                "--mail-from", "dave@example.org",
                                "--mail-rcpt", self.env.address,
                                "--upload-file", f.name, login=False)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.delivered(mp, subject, message)
            self.assertStopsCleanly(mp)
        finally:
            mp.stop()
        line, = mp.sessions(listener="mx")
        self.assertCounts(line, starttls="no", discarded=0, refused=0)
        self.assertNormalEnd(line)


if __name__ == "__main__":
    unittest.main()
