"""Helpers for the bounds scenarios (test_flood_*, test_*_deadlines): a
client that sends without ever reading until its send stalls, a backend
that greets and never reads, and the slack and memory rules those
scenarios share.

A bound is asserted from the client's side: with small socket buffers
(set before connect or listen, so the kernel holds little), a mailproxy
that stops reading makes the client's send block, which a send timeout
turns into "stalled"; a mailproxy that ends the session makes it fail
("closed"). A mailproxy that reads without bound lets the client send
until the test's own cap ("unbounded"), so no scenario can run away.

RSS is a second check, in the release build only: under valgrind the
RSS is valgrind's, and AddressSanitizer's quarantine keeps freed memory.
"""

import os
import socket
import ssl
import threading
import time

VALGRIND = os.environ.get("MAILPROXY_VALGRIND") == "1"
SANITIZED = "ASAN_OPTIONS" in os.environ or "TSAN_OPTIONS" in os.environ

# Added to a configured deadline before a test calls it missed.
SLACK = 40 if VALGRIND else 15 if SANITIZED else 10
# A send that makes no progress this long means mailproxy stopped reading.
STALL = 10 if VALGRIND else 3
# What a client may get through before its send stalls: the kernel's
# buffers on both hops (Linux autotunes mailproxy's receive buffer to a
# few MB) and mailproxy's queues. Without a bound it is everything.
SEND_BOUND = 32 * 1024 * 1024
# How long an ended session may linger, reading and dropping what the
# client sends while its goodbye goes out (session.c FLUSH_TIMEOUT_MS).
FLUSH = 5
# Growth of mailproxy's RSS that a bounded session may cause.
RSS_GROWTH_KB = 8 * 1024
SMALL_BUF = 4096


def rss_checked():
    """Whether RSS measures mailproxy (the release build, natively)."""
    return not (VALGRIND or SANITIZED)


def small_socket(rcvbuf=SMALL_BUF, sndbuf=SMALL_BUF):
    """An unconnected TCP socket with small kernel buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return sock


def small_connect(port, rcvbuf=SMALL_BUF, sndbuf=SMALL_BUF, timeout=30):
    sock = small_socket(rcvbuf, sndbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Flood:
    """The outcome of send_until_stalled: sent (raw bytes on the wire),
    outcome ("stalled", "closed" or "unbounded") and error (the send's
    exception, if any)."""

    def __init__(self, sent, outcome, error=None):
        self.sent, self.outcome, self.error = sent, outcome, error

    def __repr__(self):
        return "<Flood %s after %d bytes (%.1f MB)%s>" % (
            self.outcome, self.sent, self.sent / 1048576.0,
            ": %r" % self.error if self.error else "")


def send_until_stalled(sock, chunks, bound=SEND_BOUND, stall=STALL):
    """Sends the byte strings chunks() yields on the raw socket sock, never
    reading, until a send makes no progress for stall seconds ("stalled"),
    the connection fails ("closed"), or bound bytes went through
    ("unbounded": the test's cap)."""
    sock.settimeout(stall)
    sent = 0
    for chunk in chunks():
        view = memoryview(chunk)
        while view:
            try:
                n = sock.send(view)
            except socket.timeout:
                return Flood(sent, "stalled")
            except OSError as exc:
                return Flood(sent, "closed", exc)
            sent += n
            view = view[n:]
            if sent >= bound:
                return Flood(sent, "unbounded")
    return Flood(sent, "exhausted")


def drain(sock, limit=1 << 20, timeout=SLACK):
    """What sock delivers until EOF, an error, limit bytes or timeout
    seconds; returns (data, whether it ended in EOF)."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return data, False
        if not chunk:
            return data, True
        data += chunk
    return data, False


def repeat(data, size=65536):
    """A chunks() for send_until_stalled: data repeated, about size bytes
    per chunk, forever."""
    block = data * max(1, size // len(data))

    def chunks():
        while True:
            yield block
    return chunks


class TlsWire:
    """A TLS client over memory BIOs on a raw socket: every encrypted byte
    goes out through send_until_stalled, so what counts is what reached the
    wire, and a send that blocks is seen as such."""

    def __init__(self, sock, ctx, server_hostname="localhost"):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out,
                                server_hostname=server_hostname)
        self.buf = b""

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        self._flush()
        raw = self.sock.recv(65536)
        if raw:
            self.inc.write(raw)
        else:
            self.inc.write_eof()
        return bool(raw)

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._fill()
        self._flush()
        return self

    def send(self, data):
        self.tls.write(data)
        self._flush()

    def line(self):
        """One line of application data (or what came before EOF)."""
        while b"\n" not in self.buf:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._fill():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not data:
                break
            self.buf += data
        if b"\n" not in self.buf:
            line, self.buf = self.buf, b""
            return line
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def encrypted(self, plaintext_chunks):
        """A chunks() for send_until_stalled: the TLS records of what
        plaintext_chunks() yields."""
        def chunks():
            for data in plaintext_chunks():
                self.tls.write(data)
                yield self.out.read()
        return chunks

    def close(self):
        self.sock.close()


class SilentBackend:
    """A plaintext backend on 127.0.0.1 with a small receive buffer that
    sends greeting (if any) on each connection and then never reads, so
    whatever mailproxy forwards piles up in front of it."""

    def __init__(self, greeting=b"", rcvbuf=SMALL_BUF):
        self.greeting = greeting
        self.sock = small_socket(rcvbuf=rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.sock.getsockname()[1]

    def connections(self):
        with self.lock:
            return len(self.conns)

    def _accept(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.conns.append(c)
            if self.greeting:
                try:
                    c.sendall(self.greeting)
                except OSError:
                    pass

    def stop(self):
        self.running = False
        self.thread.join()
        with self.lock:
            conns, self.conns = list(self.conns), []
        for c in conns:
            c.close()
        self.sock.close()


class Deadline:
    """Seconds since it was made; limit is the configured deadline plus
    SLACK."""

    def __init__(self, configured):
        self.start = time.monotonic()
        self.configured = configured
        self.limit = configured + SLACK

    def elapsed(self):
        return time.monotonic() - self.start
