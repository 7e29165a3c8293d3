"""SMTP: a client cannot forge its identity towards the backend (issue 12).

Postfix here trusts mailproxy's address for XCLIENT and XFORWARD
(smtpd_authorized_xclient_hosts and smtpd_authorized_xforward_hosts =
127.0.0.0/8), as a backend behind a proxy may, so a forwarded XCLIENT
would take effect: Postfix would log the client as spoof.test[6.6.6.6].
mailproxy refuses XCLIENT and XFORWARD itself (550 5.7.0 Error:
insufficient authorization), and STARTTLS on TLS (554 5.5.1 Error: TLS
already active), until a successful AUTH, whatever came before (MAIL,
RSET, DATA, BDAT); on a `starttls = optional` (port 25) listener for the
whole session. Today MAIL ends the filtering and the rest is relayed.

DATA bodies and BDAT chunks are passed through untouched: a body line
reading `XCLIENT ADDR=6.6.6.6` is delivered byte for byte (and a BDAT
chunk holding a lone "." line does not end anything). `BDAT 3` with its 3
octets before MAIL gets Postfix's own 503 at once, not after the idle
timeout (today mailproxy waits for the reply to `BDAT 3` before it
forwards the octets Postfix is waiting for).
"""

import email.utils
import smtplib
import socket
import unittest

import mailenv
from flood import SLACK
from wire import StarttlsCase

INSUFFICIENT = (550, b"5.7.0 Error: insufficient authorization")
TLS_ACTIVE = (554, b"5.5.1 Error: TLS already active")
SPOOF = "ADDR=6.6.6.6 NAME=spoof.test"
# Body lines that are commands, and a lone dot (dot-stuffed by DATA,
# plain data in a BDAT chunk).
TRAP = b"XCLIENT ADDR=6.6.6.6\r\n.\r\nXFORWARD ADDR=6.6.6.6\r\n"


def body_of(raw):
    return mailenv.to_crlf(raw).split(b"\r\n\r\n", 1)[1]


class SmtpIdentityFilterTest(StarttlsCase):

    env_options = {"postfix_extra": {
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
    }}

    def setUp(self):
        postfix = "127.0.0.1:%d" % self.env.smtp_port
        # Started by each test's "with self.mp:".
        self.mp = self.proxy(listeners={
            "smtps": self.listener("smtp", postfix, tls="implicit"),
            "mx": self.listener("smtp", postfix, mode="optional"),
        })
        self.since = self.env.log_size("postfix")

    # -- clients -----------------------------------------------------------

    def smtps(self):
        smtp = smtplib.SMTP_SSL("localhost", self.mp.port("smtps"),
                                context=self.context(), timeout=30)
        self.addCleanup(smtp.close)
        return smtp

    def mx(self, starttls):
        smtp = smtplib.SMTP("localhost", self.mp.port("mx"), timeout=30)
        self.addCleanup(smtp.close)
        if starttls:
            smtp.ehlo("client.example.org")
            code, _ = smtp.starttls(context=self.context())
            self.assertEqual(code, 220)
        return smtp

    # -- checks ------------------------------------------------------------

    def message(self, what):
        """A message (CRLF) whose body holds TRAP; its subject."""
        subject = "%s %s" % (what, email.utils.make_msgid())
        message = mailenv.make_message(3000, subject,
                                       recipient=self.env.address)
        head, body = message.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n" + TRAP + body, subject

    def assertDelivered(self, subject, message):
        path = self.env.wait_for_delivery(subject)
        with open(path, "rb") as f:
            self.assertEqual(body_of(f.read()), body_of(message))

    def assertRefused(self, smtp, tls, all_three=True):
        """XCLIENT and XFORWARD (and STARTTLS on TLS) are mailproxy's to
        refuse. Each counts towards the five refusals that end a session
        (DIALOG_REFUSED_MAX): all_three=False checks XCLIENT alone."""
        self.assertEqual(smtp.docmd("XCLIENT", SPOOF), INSUFFICIENT)
        if not all_three:
            return
        self.assertEqual(smtp.docmd("XFORWARD", SPOOF), INSUFFICIENT)
        if tls:
            self.assertEqual(smtp.docmd("STARTTLS"), TLS_ACTIVE)

    def assertPostfixSawNoSpoof(self):
        """After the client's QUIT: Postfix never took the forged
        identity (it would name the client spoof.test[6.6.6.6])."""
        log = self.server_log("postfix", self.since, "disconnect from")
        self.assertIn("disconnect from", log)
        self.assertNotIn("6.6.6.6", log)
        self.assertNotIn("spoof.test", log)

    def mail_rset_then_refused(self, smtp, tls):
        self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
        self.assertFalse(smtp.has_extn("xclient"))
        self.assertFalse(smtp.has_extn("xforward"))
        self.assertEqual(smtp.mail("x@a.test"), (250, b"2.1.0 Ok"))
        self.assertEqual(smtp.rset(), (250, b"2.0.0 Ok"))
        self.assertRefused(smtp, tls)
        # A whole transaction after it, so Postfix logs the client it
        # believes in.
        message, subject = self.message("after refusals")
        self.assertEqual(smtp.sendmail("x@a.test", [self.env.address],
                                       message), {})
        self.assertRefused(smtp, tls, all_three=False)
        smtp.quit()
        self.assertDelivered(subject, message)
        self.assertPostfixSawNoSpoof()

    # -- scenarios ---------------------------------------------------------

    def test_smtps_after_mail_and_rset(self):
        with self.mp:
            self.mail_rset_then_refused(self.smtps(), tls=True)
            self.assertStopsCleanly(self.mp)

    def test_port25_plaintext_after_mail_and_rset(self):
        with self.mp:
            self.mail_rset_then_refused(self.mx(starttls=False), tls=False)
            self.assertStopsCleanly(self.mp)

    def test_port25_starttls_after_mail_and_rset(self):
        with self.mp:
            self.mail_rset_then_refused(self.mx(starttls=True), tls=True)
            self.assertStopsCleanly(self.mp)

    def test_data_body_delivered_intact_then_still_refused(self):
        with self.mp:
            for name, smtp, tls in (("smtps", self.smtps(), True),
                                    ("mx", self.mx(starttls=False), False)):
                with self.subTest(listener=name):
                    self.since = self.env.log_size("postfix")
                    self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
                    message, subject = self.message("DATA via " + name)
                    self.assertEqual(smtp.sendmail(
                        "x@a.test", [self.env.address], message), {})
                    self.assertDelivered(subject, message)
                    # After the final dot: still mailproxy's to refuse.
                    self.assertRefused(smtp, tls)
                    smtp.quit()
                    self.assertPostfixSawNoSpoof()
            self.assertStopsCleanly(self.mp)

    def test_bdat_chunk_delivered_intact_then_still_refused(self):
        with self.mp:
            smtp = self.smtps()
            self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
            self.assertTrue(smtp.has_extn("chunking"))
            message, subject = self.message("BDAT")
            self.assertEqual(smtp.mail("x@a.test"), (250, b"2.1.0 Ok"))
            self.assertEqual(smtp.rcpt(self.env.address)[0], 250)
            smtp.send(b"BDAT %d LAST\r\n" % len(message) + message)
            code, text = smtp.getreply()
            self.assertEqual(code, 250, text)
            self.assertIn(b" queued as ", text)
            self.assertDelivered(subject, message)
            self.assertRefused(smtp, tls=True)
            smtp.quit()
            self.assertPostfixSawNoSpoof()
            self.assertStopsCleanly(self.mp)

    def test_bdat_before_mail_answered_at_once(self):
        with self.mp:
            smtp = self.smtps()
            self.assertEqual(smtp.ehlo("client.example.org")[0], 250)
            smtp.sock.settimeout(SLACK)
            smtp.send(b"BDAT 3\r\nabc")
            try:
                code, text = smtp.getreply()
            except smtplib.SMTPServerDisconnected as exc:
                self.fail("no reply to BDAT 3 and its 3 octets in %d s "
                          "(Postfix answers at once): %s" % (SLACK, exc))
            # Postfix 3.7 says "503 5.5.1 Error: need RCPT command".
            self.assertEqual(code, 503, text)
            self.assertTrue(text.startswith(b"5.5.1 Error: need "), text)
            # The 3 octets were the chunk, not a command.
            self.assertEqual(smtp.noop(), (250, b"2.0.0 Ok"))
            self.assertRefused(smtp, tls=True)
            smtp.quit()
            self.assertPostfixSawNoSpoof()
            self.assertStopsCleanly(self.mp)

    def test_port25_half_close_after_quit_still_answered(self):
        # A sending MTA that pipelines the end of its message and QUIT,
        # then shuts down its half: the dialogue still forwards both and
        # the client still hears both replies, as a relay would (a client
        # that never sees the 250 sends the message again).
        with self.mp:
            subject = "half-close %s" % email.utils.make_msgid()
            message = mailenv.make_message(3000, subject,
                                           recipient=self.env.address)
            # RFC 5321 §4.5.2: the client stuffs leading dots.
            stuffed = message.replace(b"\r\n.", b"\r\n..")
            with socket.create_connection(
                    ("127.0.0.1", self.mp.port("mx")), timeout=30) as c:
                f = c.makefile("rb")
                self.assertTrue(f.readline().startswith(b"220 "))

                def command(line):
                    c.sendall(line)
                    while True:
                        reply = f.readline()
                        if reply[3:4] != b"-":
                            return reply
                self.assertTrue(command(b"EHLO client.example.org\r\n")
                                .startswith(b"250 "))
                self.assertTrue(command(b"MAIL FROM:<x@a.test>\r\n")
                                .startswith(b"250 "))
                self.assertTrue(command(b"RCPT TO:<%s>\r\n"
                                        % self.env.address.encode())
                                .startswith(b"250 "))
                self.assertTrue(command(b"DATA\r\n").startswith(b"354 "))
                c.sendall(stuffed + b".\r\nQUIT\r\n")
                c.shutdown(socket.SHUT_WR)
                rest = f.read()
            self.assertRegex(rest, rb"^250 2\.0\.0 Ok: queued as \S+\r\n"
                                   rb"221 2\.0\.0 Bye\r\n$")
            self.assertDelivered(subject, message)
            line, = self.mp.wait_sessions(1)
            self.assertStopsCleanly(self.mp)
        self.assertEqual(line["end"], "client_closed")
        self.assertEqual(line["state"], "dialog")


if __name__ == "__main__":
    unittest.main()
