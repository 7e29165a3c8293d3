"""200 concurrent sessions across IMAPS, POP3S and SMTPS, all open at the
same time, each checked byte for byte: IMAP and POP3 fetch a 256 KB
message, SMTP sends a distinct message that must be delivered intact.
"""

import email.utils
import imaplib
import poplib
import smtplib
import threading
import unittest

import mailenv
from proxy import ProxyTestCase

IMAP_SESSIONS = 90
POP3_SESSIONS = 60
SMTP_SESSIONS = 50


class ConcurrencyTest(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.message = cls.seed(256 * 1024, "shared message")

    def test_200_sessions_at_once(self):
        expected = mailenv.to_crlf(self.message)
        total = IMAP_SESSIONS + POP3_SESSIONS + SMTP_SESSIONS
        # Everyone logs in (or says EHLO) first, and only then does the
        # transfer, so all 200 sessions are open through mailproxy at
        # the same moment.
        barrier = threading.Barrier(total, timeout=120)
        errors = []
        subjects = []
        ctx = self.ca.client_context()

        # 200 from one address: past the per-client limit (50).
        with self.proxy(workers=2,
                        global_extra="max_sessions_per_client = 0\n") as mp:
            def imap_session():
                imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                         ssl_context=ctx, timeout=120)
                imap.login(self.env.user, self.env.password)
                imap.select("INBOX", readonly=True)
                barrier.wait()
                typ, data = imap.fetch(b"1", "(BODY.PEEK[])")
                if data[0][1] != expected:
                    errors.append("imap: bytes differ")
                imap.logout()

            def pop3_session():
                pop = poplib.POP3_SSL("localhost", mp.port("pop3s"),
                                      context=ctx, timeout=120)
                pop.user(self.env.user)
                pop.pass_(self.env.password)
                barrier.wait()
                _, lines, _ = pop.retr(1)
                if b"\r\n".join(lines) + b"\r\n" != expected:
                    errors.append("pop3: bytes differ")
                pop.quit()

            def smtp_session(i):
                subject = "concurrent %d %s" % (i, email.utils.make_msgid())
                subjects.append(subject)
                message = mailenv.make_message(20000 + i * 97, subject,
                                               recipient=self.env.address)
                smtp = smtplib.SMTP_SSL("localhost", mp.port("smtps"),
                                        context=ctx, timeout=120)
                smtp.ehlo("client%d.example.org" % i)
                barrier.wait()
                smtp.sendmail("bob@example.org", [self.env.address], message)
                smtp.quit()
                sent[subject] = message

            def guarded(fn, *args):
                try:
                    fn(*args)
                except Exception as e:  # collected, asserted below
                    errors.append("%s: %r" % (fn.__name__, e))
                    barrier.abort()

            sent = {}
            threads = [threading.Thread(target=guarded, args=(imap_session,))
                       for _ in range(IMAP_SESSIONS)]
            threads += [threading.Thread(target=guarded, args=(pop3_session,))
                        for _ in range(POP3_SESSIONS)]
            threads += [threading.Thread(target=guarded,
                                         args=(smtp_session, i))
                        for i in range(SMTP_SESSIONS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            self.assertEqual(errors, [])
            self.assertEqual(len(sent), SMTP_SESSIONS)
            for subject, message in sent.items():
                path = self.env.wait_for_delivery(subject, timeout=60)
                with open(path, "rb") as f:
                    stored = mailenv.to_crlf(f.read())
                self.assertEqual(stored.split(b"\r\n\r\n", 1)[1],
                                 mailenv.to_crlf(message)
                                 .split(b"\r\n\r\n", 1)[1])
            self.assertStopsCleanly(mp)

        lines = mp.sessions()
        self.assertEqual(len(lines), total, mp.log_text()[-3000:])
        for l in lines:
            self.assertNormalEnd(l)
        for name, count in (("imaps", IMAP_SESSIONS),
                            ("pop3s", POP3_SESSIONS),
                            ("smtps", SMTP_SESSIONS)):
            self.assertEqual(len(mp.sessions(listener=name)), count)
        # Both workers took connections (SO_REUSEPORT spreads them).
        workers = {l["id"].split("-")[1] for l in lines}
        self.assertEqual(workers, {"0", "1"})


if __name__ == "__main__":
    unittest.main()
