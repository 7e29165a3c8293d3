"""IMAP before login: a non-synchronising literal cannot carry a command
past the filter (issue 12, found in review).

Dovecot here trusts mailproxy's address (login_trusted_networks), as a
Dovecot behind a TLS front must for ID's x-originating-ip to mean
anything, and logs IDs: a forwarded `ID ("x-originating-ip" ...)` would
make it log the client as rip=6.6.6.6. mailproxy refuses such an ID
itself. The bypass: a line that Dovecot refuses before its literal
(`a LOGIN ) {N+}`), followed by the ID as the literal's N octets. Dovecot
answers BAD, skips to the end of the line and reads the octets as its
next command; a filter that forwards a {N+} at once forwards the ID
unread. mailproxy forwards a {N+} as {N} and sends the octets only after
Dovecot's "+"; after a BAD they are dropped, with the rest of the line.
"""

import unittest

from proxy import ProxyTestCase, recv_until_closed, tls_connect

SPOOF = b'b ID ("x-originating-ip" "6.6.6.6")\r\n'


class ImapLiteralFilterTest(ProxyTestCase):

    env_options = {"dovecot_extra": "login_trusted_networks = 127.0.0.0/8\n"
                                    "imap_id_log = *\n"}

    def test_literal_after_a_refused_line_is_not_a_command(self):
        since = self.env.log_size("dovecot")
        with self.proxy() as mp:
            s = tls_connect(self.ca, mp.port("imaps"))
            self.addCleanup(s.close)
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"* OK "))
            s.sendall(b"a LOGIN ) {%d+}\r\n" % len(SPOOF) + SPOOF + b"\r\n")
            self.assertTrue(f.readline().startswith(b"a BAD "))
            # The session goes on, in step: the next command is one.
            s.sendall(b"c LOGIN %s %s\r\n" % (self.env.user.encode(),
                                             self.env.password.encode()))
            line = f.readline()
            while line.startswith(b"* "):
                line = f.readline()
            self.assertTrue(line.startswith(b"c OK "), line)
            s.sendall(b"d LOGOUT\r\n")
            self.assertIn(b"d OK", recv_until_closed(s))
            f.close()
            s.close()
            mp.wait_sessions(1)
            self.assertStopsCleanly(mp)
        log = self.server_log("dovecot", since, "Login: user=<alice>")
        self.assertIn("Login: user=<alice>", log)
        self.assertNotIn("6.6.6.6", log)
        self.assertNotIn("x-originating-ip", log)

    def test_literal_plus_still_works(self):
        # A client that logs in with LITERAL+ (Dovecot offers it): each
        # literal waits for Dovecot's "+", which the client never sees.
        with self.proxy() as mp:
            s = tls_connect(self.ca, mp.port("imaps"))
            self.addCleanup(s.close)
            f = s.makefile("rb")
            self.assertIn(b"LITERAL+", f.readline())
            user, password = (self.env.user.encode(),
                              self.env.password.encode())
            s.sendall(b"a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n"
                      % (len(user), user, len(password), password))
            line = f.readline()
            while line.startswith(b"* "):
                line = f.readline()
            self.assertTrue(line.startswith(b"a OK "), line)
            s.sendall(b"b LOGOUT\r\n")
            self.assertIn(b"b OK", recv_until_closed(s))
            f.close()
            s.close()
            line, = mp.wait_sessions(1)
            self.assertStopsCleanly(mp)
        self.assertNormalEnd(line)


if __name__ == "__main__":
    unittest.main()
