"""Raw-socket clients and scripted backends for the STARTTLS scenarios.

Client speaks a mail protocol byte by byte to a mailproxy listener:
plaintext first, then TLS over memory BIOs after STARTTLS, so the test
sees every byte mailproxy sent on the wire. Its starttls() fails the test
when mailproxy sent any plaintext after the STARTTLS reply (research case
E45): the reply must be the last plaintext it ever sends, and the first
byte that follows on the wire must be a TLS record.

FakeBackend is a plaintext IMAP, POP3 or SMTP server on 127.0.0.1 that
answers from a script and records every byte it receives, per
connection, so a test can check exactly what mailproxy forwarded
(nginx-tests' smtp_test_daemon).
"""

import re
import socket
import ssl
import struct
import threading

import mailenv
from proxy import ProxyTestCase

TIMEOUT = 10


class PlaintextAfterReply(AssertionError):
    """mailproxy sent plaintext after its STARTTLS reply."""


class Client:
    """One raw connection to a listener, plaintext until starttls()."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = None
        self.inbuf = b""        # received (decrypted) bytes not yet read
        self.plain = b""        # every plaintext byte received before TLS
        self.raw_tls = b""      # raw bytes received since TLS started
        self.eof = False
        self.error = None       # why the connection ended, if not EOF

    # -- sending ----------------------------------------------------------

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.tls is None:
            self.sock.sendall(data)
        else:
            self.tls.write(data)
            self._flush()

    def send_raw(self, data):
        """Bytes on the wire, past the TLS layer if there is one."""
        self.sock.sendall(data)

    def _flush(self):
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    # -- receiving --------------------------------------------------------

    def _recv_raw(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise
        except OSError as exc:
            self.error = exc
            return b""
        return data

    def _more(self):
        """Reads more; False at the end of the stream."""
        if self.eof:
            return False
        if self.tls is None:
            data = self._recv_raw()
            if not data:
                self.eof = True
                return False
            self.inbuf += data
            self.plain += data
            return True
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                raw = self._recv_raw()
                if not raw:
                    self._in.write_eof()
                else:
                    self.raw_tls += raw
                    self._in.write(raw)
                continue
            except ssl.SSLZeroReturnError:
                self.eof = True
                return False
            except ssl.SSLError as exc:
                self.error = exc
                self.eof = True
                return False
            if not data:
                self.eof = True
                return False
            self.inbuf += data
            return True

    def line(self):
        """The next line, CRLF included; b"" (or a partial line) at EOF."""
        while b"\n" not in self.inbuf:
            if not self._more():
                rest, self.inbuf = self.inbuf, b""
                return rest
        line, self.inbuf = self.inbuf.split(b"\n", 1)
        return line + b"\n"

    def read_exact(self, n):
        while len(self.inbuf) < n:
            if not self._more():
                break
        data, self.inbuf = self.inbuf[:n], self.inbuf[n:]
        return data

    def until_closed(self):
        """Everything until the peer closes (or the connection fails);
        then closes this end too, as a client does (mailproxy lingers
        after the backend's close until the client's)."""
        while self._more():
            pass
        rest, self.inbuf = self.inbuf, b""
        self.close()
        return rest

    def imap_reply(self, tag):
        """Lines up to and including the one tagged tag (or EOF)."""
        if isinstance(tag, str):
            tag = tag.encode()
        lines = []
        while True:
            line = self.line()
            if not line:
                return lines
            lines.append(line)
            if line.startswith(tag + b" ") or not line.endswith(b"\n"):
                return lines

    def pop3_reply(self, multiline=False):
        first = self.line()
        lines = [first]
        if multiline and first.startswith(b"+OK"):
            while True:
                line = self.line()
                if not line:
                    break
                lines.append(line)
                if line == b".\r\n":
                    break
        return lines

    def smtp_reply(self):
        """The lines of one SMTP reply (the last has a space or nothing
        after the code)."""
        lines = []
        while True:
            line = self.line()
            if not line:
                return lines
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    # -- TLS --------------------------------------------------------------

    def starttls(self, ctx, server_hostname="localhost"):
        """Handshake after mailproxy's STARTTLS reply has been read."""
        if self.inbuf:
            raise PlaintextAfterReply(
                "plaintext after the STARTTLS reply: %r" % self.inbuf)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._in, self._out,
                                server_hostname=server_hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                raw = self._recv_raw()
                if not raw:
                    self._in.write_eof()
                else:
                    self.raw_tls += raw
                    self._in.write(raw)
        self._flush()
        # The first byte after the reply opens a TLS handshake record.
        if self.raw_tls[:1] != b"\x16":
            raise PlaintextAfterReply("first bytes after the STARTTLS reply "
                                      "are %r" % self.raw_tls[:16])
        return self

    def close(self):
        if self.sock.fileno() < 0:
            return
        if self.tls is not None and not self.eof:
            try:
                self.tls.unwrap()
            except ssl.SSLError:
                pass
            try:
                self._flush()
            except OSError:
                pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def client_hello(ctx, server_hostname="localhost"):
    """The bytes of a ClientHello made by ctx."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def set_compression(hello, methods):
    """A copy of a ClientHello record whose compression methods are
    methods (a bytes of method ids), with the lengths fixed."""
    assert hello[0] == 0x16 and hello[5] == 0x01, hello[:8]
    body = hello[9:5 + struct.unpack("!H", hello[3:5])[0]]
    pos = 2 + 32
    pos += 1 + body[pos]                                   # session id
    pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]   # cipher suites
    end = pos + 1 + body[pos]
    body = body[:pos] + bytes([len(methods)]) + methods + body[end:]
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return hello[:3] + struct.pack("!H", len(handshake)) + handshake


def read_record(sock):
    """One TLS record (type, version, payload) from a raw socket, or None
    at EOF."""
    head = _recv_exact(sock, 5)
    if len(head) < 5:
        return None
    length = struct.unpack("!H", head[3:5])[0]
    payload = _recv_exact(sock, length)
    return head[0], head[1:3], payload


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------
# Scripted backends

IMAP_CAPS = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN"
POP3_CAPA = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "USER",
             "SASL PLAIN LOGIN"]
SMTP_EHLO = ["fake.example", "PIPELINING", "SIZE 10240000", "AUTH PLAIN LOGIN",
             "ENHANCEDSTATUSCODES", "8BITMIME"]

_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n$")


class Conn:
    """What one backend connection received."""

    def __init__(self, sock):
        self.sock = sock
        self.data = b""          # every byte received
        self.commands = []       # command lines (IMAP: literals inlined)
        self.sasl = []           # SASL continuation lines from the client
        self.messages = []       # SMTP DATA contents
        self.closed = threading.Event()
        self._buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            raise EOFError
        self.data += chunk
        self._buf += chunk

    def read_line(self):
        while b"\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\n", 1)
        return line + b"\n"

    def read_exact(self, n):
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


class FakeBackend:
    """A plaintext backend that answers from a script and records.

    protocol is "imap", "pop3" or "smtp". greeting (bytes) replaces the
    default greeting (b"" sends none); caps replaces the capability list
    (IMAP: a string used in CAPABILITY replies; POP3 and SMTP: a list of
    lines for CAPA and EHLO). replies maps an upper-case command word to
    the bytes to answer (IMAP: "{tag}" is replaced by the tag), to
    ("close", bytes) to answer and hang up, or to a callable
    (conn, tag, text) -> either of those.
    """

    def __init__(self, protocol, greeting=None, caps=None, replies=None):
        self.protocol = protocol
        if protocol == "imap":
            self.caps = caps if caps is not None else IMAP_CAPS
            default = b"* OK [CAPABILITY %s] Fake ready.\r\n" % (
                self.caps.encode())
        elif protocol == "pop3":
            self.caps = caps if caps is not None else POP3_CAPA
            default = b"+OK Fake ready.\r\n"
        else:
            self.caps = caps if caps is not None else SMTP_EHLO
            default = b"220 fake.example ESMTP Fake\r\n"
        self.greeting = default if greeting is None else greeting
        self.replies = {k.upper(): v for k, v in (replies or {}).items()}
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.running = True
        self.threads = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.sock.getsockname()[1]

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def commands(self):
        """Every command line received, over all connections."""
        with self.lock:
            return [c for conn in self.conns for c in conn.commands]

    def data(self):
        """Every byte received, over all connections."""
        with self.lock:
            return b"".join(conn.data for conn in self.conns)

    def connections(self):
        with self.lock:
            return len(self.conns)

    def wait_closed(self, timeout=TIMEOUT):
        """Waits until every connection so far has ended."""
        with self.lock:
            conns = list(self.conns)
        return all(c.closed.wait(timeout) for c in conns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self.running = False
        self.thread.join()
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(10)
        for conn in conns:
            conn.sock.close()
        self.sock.close()

    def _accept(self):
        while self.running:
            try:
                s, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            s.settimeout(None)
            conn = Conn(s)
            with self.lock:
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,),
                                 daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            if self.greeting:
                conn.send(self.greeting)
            while True:
                line = conn.read_line()
                if self.protocol == "imap":
                    # A command with literals is one command.
                    full = line
                    while True:
                        m = _LITERAL.search(line)
                        if not m:
                            break
                        if not m.group(2):
                            conn.send(b"+ Ready for literal data\r\n")
                        full += conn.read_exact(int(m.group(1)))
                        line = conn.read_line()
                        full += line
                    line = full
                conn.commands.append(line)
                reply = self._reply(conn, line)
                close = isinstance(reply, tuple)
                if close:
                    reply = reply[1]
                if reply:
                    conn.send(reply)
                if close:
                    break
        except (OSError, EOFError):
            pass
        finally:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.closed.set()

    def _reply(self, conn, line):
        text = line.rstrip(b"\r\n").decode("latin-1")
        if self.protocol == "imap":
            tag, _, rest = text.partition(" ")
            word = rest.split(" ", 1)[0].upper()
        else:
            tag, word = "", text.split(" ", 1)[0].upper()
        scripted = self.replies.get(word)
        if callable(scripted):
            return scripted(conn, tag, text)
        if scripted is not None:
            if isinstance(scripted, tuple):
                return scripted[0], scripted[1].replace(b"{tag}",
                                                        tag.encode())
            return scripted.replace(b"{tag}", tag.encode())
        handler = getattr(self, "_" + self.protocol)
        return handler(conn, tag.encode(), word, text)

    def _imap(self, conn, t, word, text):
        if word == "CAPABILITY":
            return b"* CAPABILITY %s\r\n%s OK Capability completed.\r\n" % (
                self.caps.encode(), t)
        if word == "AUTHENTICATE" and len(text.split(" ")) < 4:
            conn.send(b"+ \r\n")
            conn.sasl.append(conn.read_line())
            word = "LOGIN"
        if word in ("LOGIN", "AUTHENTICATE"):
            return b"%s OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n" % t
        if word == "LOGOUT":
            return ("close", b"* BYE Logging out\r\n%s OK Logout completed."
                    b"\r\n" % t)
        if word == "ID":
            return b"* ID (\"name\" \"fake\")\r\n%s OK ID completed.\r\n" % t
        return b"%s OK %s completed.\r\n" % (t, word.encode())

    def _pop3(self, conn, t, word, text):
        if word == "CAPA":
            return b"+OK\r\n" + b"".join(
                c.encode() + b"\r\n" for c in self.caps) + b".\r\n"
        if word == "QUIT":
            return ("close", b"+OK Logging out.\r\n")
        if word == "AUTH" and len(text.split(" ")) == 2:
            conn.send(b"+ \r\n")
            conn.sasl.append(conn.read_line())
            return b"+OK Logged in.\r\n"
        if word in ("PASS", "AUTH", "APOP"):
            return b"+OK Logged in.\r\n"
        return b"+OK\r\n"

    def _smtp(self, conn, t, word, text):
        if word == "EHLO":
            last = len(self.caps) - 1
            return b"".join(
                b"250%s%s\r\n" % (b" " if i == last else b"-", c.encode())
                for i, c in enumerate(self.caps))
        if word == "HELO":
            return b"250 fake.example\r\n"
        if word == "AUTH":
            if len(text.split(" ")) == 2:
                conn.send(b"334 \r\n")
                conn.sasl.append(conn.read_line())
            return b"235 2.7.0 Authentication successful\r\n"
        if word in ("MAIL", "RCPT", "RSET", "NOOP"):
            return b"250 2.0.0 Ok\r\n"
        if word == "DATA":
            conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            message = b""
            while True:
                line = conn.read_line()
                if line == b".\r\n":
                    break
                message += line
            conn.messages.append(message)
            return b"250 2.0.0 Ok: queued\r\n"
        if word == "QUIT":
            return ("close", b"221 2.0.0 Bye\r\n")
        return b"502 5.5.2 Error: command not recognized\r\n"


# --------------------------------------------------------------------------
# What mailproxy says before TLS (docs/dialogue.md), for listeners made by
# StarttlsCase.listener (server_name SERVER_NAME, default greeting).

SERVER_NAME = "mx.proxy.test"

GREETING = {
    "imap": b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] "
            b"Server ready.\r\n",
    "pop3": b"+OK Server ready.\r\n",
    "smtp": b"220 mx.proxy.test ESMTP Server ready.\r\n",
}
STARTTLS_CMD = {"imap": b"%s STARTTLS\r\n", "pop3": b"STLS\r\n",
                "smtp": b"STARTTLS\r\n"}
STARTTLS_OK = {"imap": b"%s OK Begin TLS negotiation now.\r\n",
               "pop3": b"+OK Begin TLS negotiation now.\r\n",
               "smtp": b"220 2.0.0 Ready to start TLS\r\n"}
EHLO_REPLY = (b"250-mx.proxy.test\r\n250-PIPELINING\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
PROTOCOL_ERROR = {
    "imap": re.compile(rb"\* BYE Protocol error: [^\r\n]+\.\r\n"),
    "pop3": re.compile(rb"-ERR Protocol error: [^\r\n]+\.\r\n"),
    "smtp": re.compile(rb"421 4\.7\.0 mx\.proxy\.test Protocol error: "
                       rb"[^\r\n]+\r\n"),
}
IMAP_PRIVACY = (b" NO [PRIVACYREQUIRED] Cleartext authentication disallowed "
                b"on non-secure (SSL/TLS) connections.\r\n")
POP3_PRIVACY = (b"-ERR [AUTH] Cleartext authentication disallowed on "
                b"non-secure (SSL/TLS) connections.\r\n")
SMTP_MUST_STARTTLS = b"530 5.7.0 Must issue a STARTTLS command first\r\n"


def cmd(protocol, template, tag=b"s"):
    return template % tag if protocol == "imap" else template


class StarttlsCase(ProxyTestCase):
    """Scenario helpers: one-listener proxies, raw clients, upgrades."""

    def listener(self, protocol, backend, mode=None, extra="",
                 tls="starttls"):
        text = "server_name = %s\n" % SERVER_NAME
        if tls == "starttls":
            text += "tls = starttls\n"
        if mode:
            text += "starttls = %s\n" % mode
        return (protocol, backend, text + extra)

    def proxy(self, **kwargs):
        # A test that fails with a session open should not wait out the
        # 30 s default drain on its way out.
        kwargs["global_extra"] = ("drain_timeout = 3s\n" +
                                  kwargs.get("global_extra", ""))
        return super().proxy(**kwargs)

    def serve(self, protocol, backend, mode=None, extra="", tls="starttls",
              **kwargs):
        """A Mailproxy (not started) with one listener named "l"."""
        return self.proxy(listeners={
            "l": self.listener(protocol, backend, mode, extra, tls)},
            **kwargs)

    def connect(self, mp, name="l"):
        c = Client(mp.port(name))
        self.addCleanup(c.close)
        return c

    def context(self, alpn=None, **kwargs):
        ctx = self.ca.client_context(**kwargs)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def greeted(self, mp, protocol, name="l"):
        """A client that has read mailproxy's greeting."""
        c = self.connect(mp, name)
        self.assertEqual(c.line(), GREETING[protocol])
        return c

    def upgrade(self, c, protocol, tag=b"s", ctx=None,
                server_hostname="localhost"):
        """STARTTLS, its exact reply, and the handshake."""
        c.send(cmd(protocol, STARTTLS_CMD[protocol], tag))
        self.assertEqual(c.line(), cmd(protocol, STARTTLS_OK[protocol], tag))
        c.starttls(ctx or self.context(), server_hostname)
        return c

    def assertProtocolError(self, c, protocol, before=b""):
        """The protocol's goodbye (after the exact bytes before), then
        the end of the stream."""
        got = c.until_closed()
        self.assertTrue(got.startswith(before), got)
        self.assertTrue(PROTOCOL_ERROR[protocol].fullmatch(
            got[len(before):]), got)

    def only_line(self, mp, timeout=30):
        """The one close line of a proxy that served one connection."""
        lines = mp.wait_sessions(1, timeout=timeout)
        self.assertEqual(len(lines), 1, mp.log_text())
        return lines[0]

    def assertCounts(self, line, starttls=None, discarded=None,
                     refused=None):
        if starttls is not None:
            self.assertEqual(line.get("starttls"), starttls, line)
        if discarded is not None:
            self.assertEqual(str(line.get("discarded")), str(discarded),
                             line)
        if refused is not None:
            self.assertEqual(str(line.get("refused")), str(refused), line)

    def assertNoBackend(self, line):
        """The session never reached the backend."""
        self.assertIsNone(line.get("backend_addr"), line)
        self.assertEqual(str(line.get("backend_out")), "0", line)


def sasl_env_options():
    """MailEnv options for a Postfix that offers AUTH through Dovecot's
    auth service (on a loopback TCP port), as a real submission server
    does."""
    port = mailenv.free_port()
    return {
        "dovecot_extra": "service auth {\n  inet_listener {\n"
                         "    address = 127.0.0.1\n    port = %d\n  }\n}\n"
                         % port,
        "postfix_extra": {"smtpd_sasl_type": "dovecot",
                          "smtpd_sasl_path": "inet:127.0.0.1:%d" % port,
                          "smtpd_sasl_auth_enable": "yes"},
    }
