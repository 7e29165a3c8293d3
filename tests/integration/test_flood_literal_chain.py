"""IMAP non-synchronising literals before authentication.

The flood: an IMAPS client chains `a NOOP {65536+}` + 65536 octets +
` {65536+}` + ... into one endless command, towards a backend that
advertised LITERAL+ in its greeting and never reads after it (small
receive buffer). Every literal is forwarded at once, so a mailproxy that
keeps reading the client while its queue towards the backend is full holds
all of them. Bounded: the client's send stalls before SEND_BOUND bytes
went through, or the session ends (a session that has ended may read and
drop for up to FLUSH seconds, so then its end, not the count, is what
shows), and in the release build mailproxy's RSS grows by less than
RSS_GROWTH_KB.

The rule: a `{n+}` literal is forwarded only when the backend advertised
LITERAL+ (or LITERAL- and n <= 4096) in a capability list mailproxy saw
(the greeting's [CAPABILITY ...] code or a `* CAPABILITY` response).
Otherwise the client gets `TAG BAD ...`, the session ends
(end=protocol_error) and the backend never sees the command.
"""

import re
import ssl
import unittest

from flood import (FLUSH, RSS_GROWTH_KB, SEND_BOUND, SLACK, SilentBackend,
                   TlsWire, rss_checked, send_until_stalled, small_connect)
from proxy import tls_connect
from wire import FakeBackend, StarttlsCase

LITERAL = 65536


def literal_chain():
    """One IMAP command that never ends: literal after literal."""
    data = b"x" * LITERAL
    yield b"a NOOP {%d+}\r\n" % LITERAL + data
    link = b" {%d+}\r\n" % LITERAL + data
    while True:
        yield link


def read_to_eof(f):
    """The lines f delivers until EOF (or the connection fails)."""
    lines = []
    while True:
        try:
            line = f.readline()
        except (OSError, ssl.SSLError):
            break
        if not line:
            break
        lines.append(line)
    return lines


def synchronised(command):
    """What the backend receives of command: mailproxy forwards each {n+}
    as {n}, and its octets after the backend's "+"."""
    return re.sub(rb"\{(\d+)\+\}\r\n", rb"{\1}\r\n", command)


class FloodLiteralChainTest(StarttlsCase):

    def imaps(self, backend, **kwargs):
        return self.serve("imap", backend, tls="implicit", **kwargs)

    def test_literal_chain_to_a_backend_that_never_reads(self):
        greeting = b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"
        backend = SilentBackend(greeting)
        self.addCleanup(backend.stop)
        with self.imaps(backend.address, workers=1) as mp:
            sock = small_connect(mp.port("l"))
            self.addCleanup(sock.close)
            tls = TlsWire(sock, self.context()).handshake()
            # mailproxy has seen the backend's LITERAL+.
            self.assertEqual(tls.line(), greeting)
            before = mp.rss_kb()
            flood = send_until_stalled(sock, tls.encrypted(literal_chain))
            peak = mp.rss_kb("VmHWM")
            print("\n%r, RSS %d kB before, peak %d kB"
                  % (flood, before, peak))
            if flood.outcome == "unbounded":
                # Only a session that has ended may take that much (read
                # and dropped while its goodbye goes out): its log line
                # comes while the client is still connected.
                self.assertTrue(
                    mp.wait_sessions(1, timeout=FLUSH + SLACK),
                    "%r: mailproxy took %d MB of literals for a backend "
                    "that reads nothing, and the session goes on" % (
                        flood, SEND_BOUND >> 20))
            else:
                self.assertIn(flood.outcome, ("stalled", "closed"))
            tls.close()
            backend.stop()
            self.only_line(mp)
            self.assertStopsCleanly(mp)
        if rss_checked():
            self.assertLess(peak - before, RSS_GROWTH_KB)

    def refused(self, greeting, caps, before=(), command=None, size=10):
        """A session to a FakeBackend that greets with greeting; the
        client sends the exchanges in before (command, expected reply
        lines), then command with a {size+} literal, which must get a BAD
        and the end of the session, never reaching the backend."""
        backend = FakeBackend("imap", greeting=greeting, caps=caps)
        self.addCleanup(backend.stop)
        with self.imaps(backend.address) as mp:
            s = tls_connect(self.ca, mp.port("l"))
            self.addCleanup(s.close)
            f = s.makefile("rb")
            self.assertEqual(f.readline(), greeting)
            for line, expected in before:
                s.sendall(line)
                for want in expected:
                    self.assertEqual(f.readline(), want)
            s.sendall(b"z NOOP {%d+}\r\n" % size + b"L" * size
                      + b" done\r\n")
            reply = f.readline()
            self.assertTrue(reply.startswith(b"z BAD "), reply)
            # Then the end of the session, with nothing else tagged z.
            lines = read_to_eof(f)
            f.close()
            s.close()
            self.assertFalse([l for l in lines if l.startswith(b"z ")],
                             lines)
            line = self.only_line(mp)
            self.assertTrue(backend.wait_closed())
            self.assertStopsCleanly(mp)
        self.assertEqual(line["end"], "protocol_error", line)
        self.assertNotIn(b"z NOOP", backend.data())
        self.assertNotIn(b"L" * size, backend.data())
        return backend

    def test_without_literal_plus_in_greeting_refused(self):
        self.refused(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n",
                     "IMAP4rev1 IDLE")

    def test_without_any_capability_seen_refused(self):
        # The backend would say LITERAL+ if asked; nobody asked.
        self.refused(b"* OK ready\r\n", "IMAP4rev1 LITERAL+")

    def test_capability_response_without_literal_plus_refused(self):
        backend = self.refused(
            b"* OK ready\r\n", "IMAP4rev1 IDLE",
            before=[(b"c CAPABILITY\r\n",
                     [b"* CAPABILITY IMAP4rev1 IDLE\r\n",
                      b"c OK Capability completed.\r\n"])])
        self.assertEqual(backend.commands(), [b"c CAPABILITY\r\n"])

    def test_literal_minus_up_to_4096_forwarded_then_4097_refused(self):
        small = b"a NOOP {4096+}\r\n" + b"s" * 4096 + b"\r\n"
        backend = self.refused(
            b"* OK [CAPABILITY IMAP4rev1 LITERAL-] ready\r\n",
            "IMAP4rev1 LITERAL-",
            before=[(small, [b"a OK NOOP completed.\r\n"])], size=4097)
        self.assertEqual(backend.commands(), [synchronised(small)])

    def test_literal_plus_learned_from_capability_response(self):
        # A backend that announces LITERAL+ only when asked still gets
        # the client's non-synchronising literals (as synchronising ones:
        # see test_imap_literal_filter).
        backend = FakeBackend("imap", greeting=b"* OK ready\r\n",
                              caps="IMAP4rev1 LITERAL+")
        self.addCleanup(backend.stop)
        big = b"b NOOP {65536+}\r\n" + b"B" * 65536 + b" {3+}\r\nend\r\n"
        with self.imaps(backend.address) as mp:
            s = tls_connect(self.ca, mp.port("l"))
            self.addCleanup(s.close)
            f = s.makefile("rb")
            self.assertEqual(f.readline(), b"* OK ready\r\n")
            s.sendall(b"a CAPABILITY\r\n")
            self.assertEqual(f.readline(),
                             b"* CAPABILITY IMAP4rev1 LITERAL+\r\n")
            self.assertEqual(f.readline(), b"a OK Capability completed.\r\n")
            s.sendall(big)
            self.assertEqual(f.readline(), b"b OK NOOP completed.\r\n")
            s.sendall(b"c LOGOUT\r\n")
            self.assertEqual(read_to_eof(f), [
                b"* BYE Logging out\r\n", b"c OK Logout completed.\r\n"])
            f.close()
            s.close()
            line = self.only_line(mp)
            self.assertStopsCleanly(mp)
        self.assertEqual(backend.commands(),
                         [b"a CAPABILITY\r\n", synchronised(big),
                          b"c LOGOUT\r\n"])
        # LOGOUT before any login: the session ends in the dialogue.
        self.assertIn(line["end"], ("backend_closed", "client_closed"))
        self.assertEqual(line["state"], "dialog")


if __name__ == "__main__":
    unittest.main()
