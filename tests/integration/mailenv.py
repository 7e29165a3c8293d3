"""Throw-away Dovecot + Postfix backends for mailproxy's integration tests.

A MailEnv starts a real Dovecot (IMAP + POP3, plaintext) and a real Postfix
(SMTP, virtual delivery) as foreground children of the test process.  Each
environment lives entirely in its own temporary directory (configs, queue,
runtime sockets, logs, Maildir) and listens only on 127.0.0.1 on ports picked
at runtime, so several environments -- in one process or in parallel test
processes -- never interfere, and nothing under /etc is read for
configuration or modified.

Typical use::

    with MailEnv() as env:
        env.seed_message(make_message(1 << 20, "big"))
        imap = imaplib.IMAP4(env.host, env.imap_port)
        ...

Requirements: root (Postfix's master and Dovecot's privilege separation need
it), the Debian 12 packages dovecot-core, dovecot-imapd, dovecot-pop3d,
postfix and openssl, and the system users dovecot, dovenull, postfix and
group postdrop that those packages create.

Line endings: files in the Maildir may use LF or CRLF.  Dovecot always sends
messages with CRLF on the wire (LF-only files are converted, CRLF files are
sent as they are), so the bytes an IMAP FETCH BODY[] or a POP3 RETR returns
are ``to_crlf(file_contents)``.  Postfix's virtual(8) writes LF-only files.

Set MAILPROXY_KEEP_TMP=1 to keep the temporary directory (configs and logs)
after the environment stops.
"""

import atexit
import ctypes
import email.parser
import email.policy
import hashlib
import imaplib
import ipaddress
import itertools
import grp
import os
import poplib
import pwd
import random
import shutil
import signal
import smtplib
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import unittest

__all__ = [
    "free_port", "reserve_port", "keep_tmp", "make_message", "to_crlf",
    "to_lf", "TestCA",
    "MailEnv", "DumpLogsOnFailure", "StartupError",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 20.0      # overall cap for a server to become ready
STOP_TIMEOUT = 10.0       # grace period after SIGTERM before SIGKILL
POLL_INTERVAL = 0.02

DOVECOT_BIN = "/usr/sbin/dovecot"
POSTFIX_MASTER_BIN = "/usr/lib/postfix/sbin/master"
OPENSSL_BIN = "openssl"

# Only a few things from the host leak into the servers' environment, so the
# developer's shell (MAIL_CONFIG, locale, ...) cannot change their behaviour.
_CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
if "TZ" in os.environ:
    _CHILD_ENV["TZ"] = os.environ["TZ"]


class StartupError(RuntimeError):
    """A server did not come up; the message carries its log."""


class _PortInUse(Exception):
    """Internal: a port we picked was taken before the server bound it."""


def keep_tmp():
    """True if MAILPROXY_KEEP_TMP=1 asks to keep temp dirs for inspection."""
    return os.environ.get("MAILPROXY_KEEP_TMP") == "1"


def free_port():
    """Return a TCP port on 127.0.0.1 that is free right now.

    There is an unavoidable window between closing this probe socket and the
    server binding the port; MailEnv detects the rare collision (bind error
    or a foreign greeting) and retries with new ports.
    """
    # The kernel may hand the same ephemeral port out twice in a row; a
    # port given once in this process is not given again.
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port
    raise RuntimeError("no free port found")


def reserve_port(host=HOST):
    """Return (port, socket): a TCP port on host and a socket that holds
    it until a server binds it: mailproxy (SO_REUSEADDR) or HAProxy
    (SO_REUSEPORT).

    free_port() does not do for those: a parallel test could pick the
    same port in the window before the bind.  The socket is bound with
    both options and never listens, so the server can bind beside it
    (Linux lets SO_REUSEADDR sockets share a port none of them listens
    on, and SO_REUSEPORT ones of one user share it always) while every
    other bind(0) (free_port(), reserve_port()) skips the port.  Close
    it once the server listens.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port, s
        s.close()
    raise RuntimeError("no free port found")


_GIVEN_PORTS = set()


def to_crlf(data):
    """Normalise line endings to CRLF, as Dovecot puts messages on the wire."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def to_lf(data):
    """Normalise line endings to LF (the form Postfix writes to a Maildir)."""
    return data.replace(b"\r\n", b"\n")


# Printable ASCII without tab; lines never exceed 78 characters so they stay
# well inside SMTP's 998 limit and poplib's 2048-byte line limit.
_BODY_ALPHABET = (string.ascii_letters + string.digits
                  + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def make_message(size_bytes, subject, sender="bob@example.org",
                 recipient="alice@example.test"):
    """Build an RFC 5322 message (CRLF line endings) of exactly size_bytes.

    The body is deterministic for a given (size_bytes, subject) but its lines
    vary in length and content, so an offset or dropped chunk breaks a
    byte-exact comparison.  It deliberately contains lines that start with
    "." and lines that are exactly "." or "..", which exercise SMTP and POP3
    dot-stuffing on every hop.  If size_bytes is smaller than the headers, the
    message is the headers plus a one-line body (i.e. slightly larger).
    """
    digest = hashlib.sha256(("%d/%s" % (size_bytes, subject)).encode())
    rng = random.Random(digest.digest())
    headers = (
        "From: Bob <%s>\r\n"
        "To: Alice <%s>\r\n"
        "Subject: %s\r\n"
        "Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
        "Message-ID: <%s@mailenv.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n" % (sender, recipient, subject, digest.hexdigest()[:32])
    ).encode("ascii")
    remaining = size_bytes - len(headers)
    if remaining < 3:
        return headers + b"x\r\n"

    # Slicing a random pool is much faster than drawing every character and
    # still gives every line different content.
    pool = "".join(rng.choices(_BODY_ALPHABET, k=1 << 16))
    lines = []
    for i in itertools.count():
        if remaining <= 0:
            break
        if i % 997 == 500:
            text = "."
        elif i % 997 == 501:
            text = ".."
        elif i % 53 == 7:
            text = ".%07d leading dot" % i
        elif i % 101 == 50:
            text = ""
        else:
            n = rng.randint(8, 78)
            off = rng.randrange(len(pool) - 80)
            text = ("%07d " % i + pool[off:off + n])[:n]
        # Fit the last line(s) so the total is exact; never leave exactly one
        # byte, which could not hold a CRLF.
        if len(text) + 2 > remaining:
            text = text[:remaining - 2].ljust(remaining - 2, "x")
        elif remaining - (len(text) + 2) == 1:
            text += "x"
        lines.append(text)
        remaining -= len(text) + 2
    return headers + ("\r\n".join(lines) + "\r\n").encode("ascii")


# --------------------------------------------------------------------------
# Process helpers


_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:     # pragma: no cover - glibc is always there on Debian
    _libc = None


def _child_setup():
    # Runs in the forked child before exec.  If the test process dies without
    # running atexit (SIGKILL from a ctest timeout, a crash), the kernel sends
    # the server master SIGTERM, and the masters take their children down.
    # Caveat: the signal fires when the *thread* that started the server
    # exits, so start environments from a thread that outlives them.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# Runs as a separate tiny process per server master.  It blocks reading a
# pipe whose only writer is the test process; EOF means the test process
# exited (or is stopping the server), and the watchdog then terminates the
# master if it is still the very process we started (PID + start time, so a
# recycled PID is never hit).  This backs up PR_SET_PDEATHSIG, which
# Postfix's master loses: the kernel clears it whenever a process changes its
# effective uid/gid, and master does that at startup.
_WATCHDOG = r"""
import os, signal, sys, time
pid, start = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()
def ours():
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    fields = st[st.rfind(")") + 2:].split()
    return fields[19] == start and fields[0] not in ("Z", "X")
if ours():
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        time.sleep(0.1)
        if not ours():
            break
    else:
        os.kill(pid, signal.SIGKILL)
"""


def _start_time(pid):
    """Kernel start time of pid (field 22 of /proc/PID/stat), as text."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2:].split()[19]


def _session_pids(sid):
    """PIDs of live (non-zombie) processes in session sid.

    Every server master is started with setsid(), so its session id equals
    its PID and all of its descendants inherit it; this finds them even
    after they were re-parented to init.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain anything, so
        # parse from the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def _port_bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _tail(path, max_lines=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        return "(cannot read %s: %s)" % (path, exc)
    return "\n".join(lines[-max_lines:])


def _probe(port, tag, quit_cmd, proxy=None):
    """True if our server greets on port; False if nothing listens yet.

    proxy says whether the listener may expect a PROXY protocol header
    before it greets: None (never), "always" (send it at once) or "maybe"
    (send it if no greeting came within 0.25 s; a plain listener that was
    merely slow just sees one unknown command after its greeting).

    Raises _PortInUse if someone else answers (their greeting lacks our
    per-environment tag), which can happen when a parallel test grabbed the
    port between free_port() and our server's bind().
    """
    try:
        s = socket.create_connection((HOST, port), timeout=2)
    except (ConnectionRefusedError, socket.timeout):
        return False
    with s:
        header = b"PROXY TCP4 %s %s %d %d\r\n" % (
            HOST.encode(), HOST.encode(), s.getsockname()[1], port)
        greeting = b""
        try:
            if proxy == "always":
                s.sendall(header)
            elif proxy == "maybe":
                s.settimeout(0.25)
                try:
                    greeting = s.recv(1024)
                except socket.timeout:
                    s.sendall(header)
            # Short: a silent listener must not stall the loop, which also
            # watches for our master exiting.
            s.settimeout(1)
            while b"\n" not in greeting:
                chunk = s.recv(1024)
                if not chunk:
                    return False
                greeting += chunk
            if tag.encode() not in greeting:
                raise _PortInUse("port %d answered %r" % (port, greeting))
            # Say goodbye so the server logs a clean disconnect.
            s.sendall(quit_cmd)
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            return False
    return True


class _Server:
    """One foreground server master we own (Dovecot or Postfix)."""

    def __init__(self, name, argv, log_path, stderr_path, probes,
                 diagnose=None):
        self.name = name
        self.diagnose = diagnose    # callable -> str, for startup errors
        self.argv = argv
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.probes = probes    # [_probe() arguments]
        self.proc = None
        self.watchdog = None
        self.sessions = []      # session ids (= master PIDs) ever started

    def spawn(self):
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                cwd="/", env=_CHILD_ENV, close_fds=True,
                start_new_session=True, preexec_fn=_child_setup)
        self.sessions.append(self.proc.pid)
        self.watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG,
             str(self.proc.pid), _start_time(self.proc.pid)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd="/", close_fds=True,
            start_new_session=True)

    def describe_failure(self, why):
        text = "%s %s\n--- %s (last lines) ---\n%s\n--- %s ---\n%s" % (
            self.name, why, self.log_path, _tail(self.log_path),
            self.stderr_path, _tail(self.stderr_path, 20))
        if self.diagnose:
            text += "\n--- diagnostics ---\n" + self.diagnose()
        return text

    def wait_ready(self, deadline):
        pending = list(self.probes)
        while pending:
            rc = self.proc.poll()
            if rc is not None:
                logs = (_tail(self.log_path, 200)
                        + _tail(self.stderr_path, 50))
                # Postfix's master cannot log a bind() failure (postlogd is
                # not up yet), so also test the ports ourselves.
                if "Address already in use" in logs or not all(
                        _port_bindable(p[0]) for p in self.probes):
                    raise _PortInUse(self.name)
                raise StartupError(self.describe_failure(
                    "exited with status %d during startup" % rc))
            if _probe(*pending[0]):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise StartupError(self.describe_failure(
                    "not ready after %.0f s (port %d)"
                    % (READY_TIMEOUT, pending[0][0])))
            time.sleep(POLL_INTERVAL)

    def terminate(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def reap(self, timeout=STOP_TIMEOUT):
        """Wait for the master and its whole session; True if it was clean."""
        if self.proc is None:
            return True
        clean = True
        sid = self.proc.pid
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            clean = False
            self.proc.kill()
            self.proc.wait()
        # Children notice the master's exit through their status pipe and
        # normally exit within milliseconds; give them a moment, then kill
        # whatever of ours is left (they are all in the session we created).
        deadline = time.monotonic() + 5
        killed = False
        while True:
            left = _session_pids(sid)
            if not left:
                break
            if time.monotonic() > deadline:
                if killed:
                    print("mailenv: %s processes %s survive SIGKILL"
                          % (self.name, left), file=sys.stderr)
                    break
                clean, killed = False, True
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 5
            time.sleep(POLL_INTERVAL)
        self.proc = None
        # Master is gone: release its watchdog, which then finds nothing to
        # do and exits.
        self.watchdog.stdin.close()
        try:
            self.watchdog.wait(5)
        except subprocess.TimeoutExpired:
            self.watchdog.kill()
            self.watchdog.wait()
        self.watchdog = None
        return clean


# --------------------------------------------------------------------------
# Test certificates


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, {leaf_key_usage}
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {san}
"""


class TestCA:
    """A throw-away CA plus a server certificate, made with the openssl CLI.

    Attributes: directory, ca_pem, ca_key, cert_pem (server leaf),
    chain_pem (leaf + CA), key_pem, server_hostname ("localhost").
    The server certificate is valid for DNS:localhost, IP:127.0.0.1 and
    IP:::1.  key_type is "ec" (P-256, default) or "rsa" (2048 bits).
    """

    __test__ = False    # not a unittest/pytest test class despite its name

    server_hostname = "localhost"

    def __init__(self, directory=None, key_type="ec", days=3650):
        if key_type not in ("ec", "rsa"):
            raise ValueError("key_type must be 'ec' or 'rsa'")
        self.key_type = key_type
        self.days = days
        if directory is None:
            directory = tempfile.mkdtemp(prefix="mailenv-ca-")
            if not keep_tmp():
                atexit.register(shutil.rmtree, directory, True)
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca_key = self._path("ca.key")
        self.ca_pem = self._path("ca.pem")
        self._genkey(self.ca_key)
        cnf = self._write_cnf("ca", "mailenv test CA", "DNS:unused.invalid")
        self._openssl("req", "-new", "-x509", "-config", cnf,
                      "-extensions", "v3_ca", "-key", self.ca_key,
                      "-days", str(days), "-sha256", "-out", self.ca_pem)
        self.cert_pem, self.key_pem = self.make_cert(
            "localhost", ips=("127.0.0.1", "::1"), basename="server")
        self.chain_pem = self._path("server-chain.pem")
        with open(self.chain_pem, "wb") as out:
            for part in (self.cert_pem, self.ca_pem):
                with open(part, "rb") as f:
                    out.write(f.read())

    def make_cert(self, name, ips=(), extra_names=(), basename=None):
        """Issue a leaf certificate for DNS name (and optional IPs/names).

        Returns (cert_path, key_path).  Handy for SNI tests.
        """
        base = basename or "cert-" + "".join(
            c if c.isalnum() or c in "-." else "_" for c in name)
        san = ["DNS:" + n for n in (name,) + tuple(extra_names)]
        san += ["IP:" + str(ipaddress.ip_address(ip)) for ip in ips]
        key = self._path(base + ".key")
        csr = self._path(base + ".csr")
        cert = self._path(base + ".pem")
        cnf = self._write_cnf(base, name, ", ".join(san))
        self._genkey(key)
        self._openssl("req", "-new", "-config", cnf, "-key", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_pem,
                      "-CAkey", self.ca_key,
                      "-set_serial", str(random.getrandbits(63)),
                      "-days", str(min(self.days, 825)), "-sha256",
                      "-extfile", cnf, "-extensions", "v3_leaf", "-out", cert)
        os.unlink(csr)
        return cert, key

    def client_context(self, check_hostname=True):
        """SSLContext that trusts only this CA (connect with
        server_hostname="localhost" when check_hostname is on)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=self.ca_pem)
        ctx.check_hostname = check_hostname
        return ctx

    def server_context(self, cert=None, key=None):
        """SSLContext for a Python-side TLS server using our certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert or self.chain_pem, key or self.key_pem)
        return ctx

    def _path(self, name):
        return os.path.join(self.directory, name)

    def _write_cnf(self, base, cn, san):
        # Our own config so the host's /etc/ssl/openssl.cnf cannot add or
        # change extensions.
        path = self._path(base + ".cnf")
        with open(path, "w") as f:
            f.write(_OPENSSL_CNF.format(
                cn=cn, san=san,
                # keyEncipherment only makes sense for RSA key transport.
                leaf_key_usage="digitalSignature" if self.key_type == "ec"
                else "digitalSignature, keyEncipherment"))
        return path

    def _genkey(self, path):
        if self.key_type == "ec":
            opts = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        else:
            opts = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        self._openssl("genpkey", *opts, "-out", path)
        os.chmod(path, 0o600)

    @staticmethod
    def _openssl(*args):
        res = subprocess.run([OPENSSL_BIN, *args], stdin=subprocess.DEVNULL,
                             capture_output=True,
                             env=dict(_CHILD_ENV, OPENSSL_CONF="/dev/null"))
        if res.returncode != 0:
            raise RuntimeError("openssl %s failed:\n%s"
                               % (" ".join(args), res.stderr.decode()))


# --------------------------------------------------------------------------
# The mail environment


_DOVECOT_CONF = """\
# Generated by mailenv.py; everything lives under {tmp}.
instance_name = {instance}
base_dir = {base_dir}
state_dir = {state_dir}
protocols = imap pop3
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
login_greeting = Dovecot {instance} ready.
log_path = {log}
info_log_path = {log}
mail_location = maildir:~/Maildir
# The proxy funnels every test connection through 127.0.0.1; the default of
# 10 sessions per user and IP would make concurrency tests fail spuriously.
mail_max_userip_connections = 200

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail_root}/%n
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

# haproxy=True: PROXY-protocol listeners next to the plain ones.  The login
# log format adds the ports and the real peer, so a test can tell the
# address from the header (rip, rport) from the connection's own
# (real_rip, real_rport: the proxy's).
_DOVECOT_HAPROXY_CONF = """
# haproxy=True
haproxy_trusted_networks = {networks}
login_log_format_elements = user=<%u> method=%m rip=%r rport=%{{rport}} \
  lip=%l lport=%{{lport}} real_rip=%{{real_rip}} \
  real_rport=%{{real_rport}} mpid=%e %c session=<%{{session}}>
service imap-login {{
  inet_listener imap_haproxy {{
    address = {host}
    port = {imap_port}
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3_haproxy {{
    address = {host}
    port = {pop3_port}
    haproxy = yes
  }}
}}
"""

_POSTFIX_MAIN = {
    "compatibility_level": "3.6",
    "myhostname": "mail.example.test",
    "mydomain": "example.test",
    "myorigin": "$myhostname",
    "mydestination": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "alias_maps": "",
    "alias_database": "",
    "biff": "no",
    # No resolver traffic: no reverse lookup of clients, no DNS for
    # outbound mail (there is none anyway, see default_transport).
    "smtpd_peername_lookup": "no",
    "smtp_dns_support_level": "disabled",
    "default_transport": "error:mailenv delivers only to example.test",
    "relay_transport": "error:mailenv delivers only to example.test",
    "in_flow_delay": "0",
    "message_size_limit": "104857600",
    "virtual_mailbox_limit": "0",
}

_POSTFIX_MASTER_CF = """\
# Generated by mailenv.py.  No chroot: the queue is a temp dir without the
# files a chroot would need.
{smtp_listen} inet n - n - - smtpd{smtpd_args}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
virtual   unix  -       n       n       -       -       virtual
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
{extra}
"""

# haproxy=True: a second smtpd that expects a PROXY header (v1 or v2; Postfix
# ignores v2 TLVs) and logs as postfix/proxied.
_POSTFIX_HAPROXY_CF = """\
{listen} inet n - n - - smtpd
  -o syslog_name=postfix/proxied
  -o smtpd_upstream_proxy_protocol=haproxy
  -o smtpd_upstream_proxy_timeout=5s
"""

# Queue layout from Postfix's postfix-files: (name, owner, group, mode).
# Creating it here is ~2 s faster than "postfix check" / post-install.
_POSTFIX_QUEUE_DIRS = [
    ("active", "postfix", None, 0o700),
    ("bounce", "postfix", None, 0o700),
    ("corrupt", "postfix", None, 0o700),
    ("defer", "postfix", None, 0o700),
    ("deferred", "postfix", None, 0o700),
    ("flush", "postfix", None, 0o700),
    ("hold", "postfix", None, 0o700),
    ("incoming", "postfix", None, 0o700),
    ("private", "postfix", None, 0o700),
    ("saved", "postfix", None, 0o700),
    ("trace", "postfix", None, 0o700),
    ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710),
    ("pid", "root", None, 0o755),
]

_live_envs = set()
_live_lock = threading.Lock()


def _stop_all_at_exit():
    with _live_lock:
        envs = list(_live_envs)
    for env in envs:
        env.stop()


atexit.register(_stop_all_at_exit)

_instance_counter = itertools.count(1)


class MailEnv:
    """A private Dovecot + Postfix pair for one test (file or class).

    Constructor options:
      dovecot, postfix      -- which servers to run (both by default)
      dovecot_extra         -- text appended to dovecot.conf (later settings
                               override earlier ones, and repeating a
                               service/listener block merges into it, e.g.
                               "service imap-login { inet_listener imap {
                               haproxy = yes } }")
      postfix_extra         -- dict of main.cf overrides (None deletes a key)
      postfix_smtpd_args    -- dict or list of "name=value": extra -o options
                               for the smtpd service
      postfix_master_extra  -- raw text appended to master.cf

    PROXY protocol listeners (opt-in; nothing changes without them):
      haproxy               -- True adds, next to the plain listeners,
                               Dovecot inet listeners with "haproxy = yes"
                               for IMAP and POP3 (imap_haproxy_port,
                               pop3_haproxy_port), haproxy_trusted_networks,
                               a login log format that also shows the ports
                               and the real peer (rport=, real_rip=, ...),
                               and a second Postfix smtpd service with
                               "-o smtpd_upstream_proxy_protocol=haproxy"
                               (smtp_haproxy_port, syslog_name
                               postfix/proxied)
      haproxy_trusted_networks -- Dovecot's list ("127.0.0.1/32 ::1/128")
      disable_plaintext_auth -- True writes "disable_plaintext_auth = yes":
                               Dovecot then refuses a plaintext LOGIN/USER
                               on a connection that is not secured, i.e. a
                               proxied one whose PROXY header does not say
                               TLS (remote address != local address)
      dovecot_ssl           -- Dovecot's "ssl": "no" (default), "yes" or
                               "required"; with yes/required MailEnv makes
                               a certificate for Dovecot (dovecot_ca)

    After start(): host, imap_port, pop3_port, smtp_port (None for a server
    not run), imap_haproxy_port, pop3_haproxy_port, smtp_haproxy_port (None
    without haproxy=True), user, password, domain, address, maildir, tmp,
    dovecot_log, postfix_log, mail_uid, mail_gid, instance,
    startup_seconds.

    Use as a context manager, or call start()/stop() yourself (stop() is
    idempotent and also runs at interpreter exit).
    """

    host = HOST
    user = "alice"
    password = "Secret-pass-1"
    domain = "example.test"
    address = "alice@example.test"

    def __init__(self, dovecot=True, postfix=True, dovecot_extra="",
                 postfix_extra=None, postfix_smtpd_args=None,
                 postfix_master_extra="", haproxy=False,
                 haproxy_trusted_networks="127.0.0.1/32 ::1/128",
                 disable_plaintext_auth=False, dovecot_ssl="no"):
        if dovecot_ssl not in ("no", "yes", "required"):
            raise ValueError("dovecot_ssl must be no, yes or required")
        self.haproxy = haproxy
        self.haproxy_trusted_networks = haproxy_trusted_networks
        self.disable_plaintext_auth = disable_plaintext_auth
        self.dovecot_ssl = dovecot_ssl
        self.dovecot_ca = None
        self.imap_haproxy_port = self.pop3_haproxy_port = None
        self.smtp_haproxy_port = None
        self.run_dovecot = dovecot
        self.run_postfix = postfix
        self.dovecot_extra = dovecot_extra
        self.postfix_extra = dict(postfix_extra or {})
        self.postfix_smtpd_args = postfix_smtpd_args or {}
        self.postfix_master_extra = postfix_master_extra
        # Tags greetings, banners and process titles, so a readiness probe
        # can tell our server from whoever else might hold the port.
        self.instance = "mailenv-%d-%d" % (os.getpid(),
                                           next(_instance_counter))
        self.imap_port = self.pop3_port = self.smtp_port = None
        self.tmp = None
        self.startup_seconds = None
        self._servers = []
        self._seed_counter = itertools.count(1)
        self._started = False
        self.stopped_cleanly = None
        self._old_sessions = []     # sessions of servers already stopped

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type,
                                                   unittest.SkipTest):
            self.dump_logs()
        self.stop()
        return False

    def start(self):
        if self._started:
            raise RuntimeError("MailEnv already started")
        if os.geteuid() != 0:
            raise StartupError("MailEnv must run as root (Postfix's master "
                               "and Dovecot's privilege separation need it)")
        self._started = True
        t0 = time.monotonic()
        with _live_lock:
            _live_envs.add(self)
        try:
            self._prepare_tree()
            servers = []
            if self.run_dovecot:
                servers.append(self._dovecot_server())
            if self.run_postfix:
                servers.append(self._postfix_server())
            # Spawn all first so both servers initialise concurrently.
            for srv in servers:
                self._servers.append(srv)
                srv.spawn()
            deadline = time.monotonic() + READY_TIMEOUT
            for srv in servers:
                self._await(srv, deadline)
        except BaseException:
            # Keep the temp dir: its logs are what explains the failure.
            self._stop(keep=True)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _await(self, srv, deadline):
        for attempt in range(4):
            try:
                srv.wait_ready(deadline)
                return
            except _PortInUse:
                # Lost the race for a port against another process: stop
                # this server, pick new ports and try again.
                srv.terminate()
                srv.reap()
                if attempt == 3:
                    raise StartupError(srv.describe_failure(
                        "could not bind free ports after 4 attempts"))
                rebuilt = (self._dovecot_server() if srv.name == "dovecot"
                           else self._postfix_server())
                srv.argv, srv.probes = rebuilt.argv, rebuilt.probes
                srv.spawn()

    def stop(self):
        """Stop all servers we started and remove the temp dir (idempotent).

        The temp dir is kept if MAILPROXY_KEEP_TMP=1 or if a server had to be
        killed; its path is printed then.
        """
        self._stop(keep=False)

    def _stop(self, keep):
        servers, self._servers = self._servers, []
        # Signal every master first so they shut down in parallel.
        for srv in servers:
            srv.terminate()
        clean = all([srv.reap() for srv in servers])
        for srv in servers:
            self._old_sessions += srv.sessions
        with _live_lock:
            _live_envs.discard(self)
        if self.tmp and os.path.isdir(self.tmp):
            if keep or not clean or keep_tmp():
                print("mailenv: kept %s%s" % (
                    self.tmp, "" if clean else " (unclean server shutdown)"),
                    file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.stopped_cleanly = clean

    def leftover_pids(self):
        """Live PIDs from any server this env ever started.

        Empty after stop() unless something escaped; tests assert on it.
        """
        sids = self._old_sessions + [
            sid for srv in self._servers for sid in srv.sessions]
        return [pid for sid in sids for pid in _session_pids(sid)]

    # -- set-up ------------------------------------------------------------

    def _prepare_tree(self):
        self.tmp = tempfile.mkdtemp(prefix="mailenv-")
        # Dovecot's mail processes (nobody), its login processes (dovenull)
        # and Postfix's daemons (postfix) all need to traverse this tree.
        os.chmod(self.tmp, 0o755)
        _check_traversable(self.tmp)
        nobody = pwd.getpwnam("nobody")
        self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid

        self.mail_root = os.path.join(self.tmp, "mail")
        home = os.path.join(self.mail_root, self.user)
        self.maildir = os.path.join(home, "Maildir")
        for d in (self.mail_root, home, self.maildir) + tuple(
                os.path.join(self.maildir, sub)
                for sub in ("cur", "new", "tmp")):
            os.mkdir(d, 0o755)
        for d in (home, self.maildir, *(os.path.join(self.maildir, s)
                                        for s in ("cur", "new", "tmp"))):
            os.chown(d, self.mail_uid, self.mail_gid)

        self.dovecot_log = os.path.join(self.tmp, "dovecot.log")
        self.postfix_log = os.path.join(self.tmp, "postfix.log")
        # Pre-create the logs so dump_logs() works even if a server never
        # wrote anything.
        for path in (self.dovecot_log, self.postfix_log):
            open(path, "ab").close()

    def _dovecot_server(self):
        d = os.path.join(self.tmp, "dovecot")
        base_dir = os.path.join(d, "run")
        # Unix socket paths (sun_path) are limited to 108 bytes.
        if len(base_dir) + len("/imap-urlauth-worker") >= 100:
            raise StartupError("temp dir path too long for Dovecot's unix "
                               "sockets: %s (set TMPDIR=/tmp)" % base_dir)
        os.makedirs(base_dir, exist_ok=True)
        os.makedirs(os.path.join(d, "state"), exist_ok=True)
        os.chmod(d, 0o755)
        passwd = os.path.join(d, "passwd")
        with open(passwd, "w") as f:
            f.write("%s:{PLAIN}%s\n" % (self.user, self.password))
        # Dovecot 2.3 runs the auth process as $default_internal_user.
        os.chown(passwd, 0, grp.getgrnam("dovecot").gr_gid)
        os.chmod(passwd, 0o640)
        self.imap_port, self.pop3_port = free_port(), free_port()
        conf = os.path.join(d, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(_DOVECOT_CONF.format(
                tmp=self.tmp, instance=self.instance, base_dir=base_dir,
                state_dir=os.path.join(d, "state"), host=HOST,
                log=self.dovecot_log, passwd=passwd, uid=self.mail_uid,
                gid=self.mail_gid, mail_root=self.mail_root,
                imap_port=self.imap_port, pop3_port=self.pop3_port))
            f.write(self._dovecot_options(d))
            if self.dovecot_extra:
                f.write("\n# dovecot_extra\n%s\n" % self.dovecot_extra)
        self.dovecot_conf = conf
        # Listeners switched to "haproxy = yes" by dovecot_extra only greet
        # after a PROXY header.  Which ones is not worth parsing out of
        # Dovecot's config syntax; "maybe" copes with either.
        proxy = "maybe" if "haproxy" in self.dovecot_extra else None
        probes = [(self.imap_port, self.instance, b"a LOGOUT\r\n", proxy),
                  (self.pop3_port, self.instance, b"QUIT\r\n", proxy)]
        if self.haproxy:
            probes += [
                (self.imap_haproxy_port, self.instance, b"a LOGOUT\r\n",
                 "always"),
                (self.pop3_haproxy_port, self.instance, b"QUIT\r\n",
                 "always")]
        return _Server(
            "dovecot", [DOVECOT_BIN, "-F", "-c", conf], self.dovecot_log,
            os.path.join(self.tmp, "dovecot.stderr"), probes)

    def _dovecot_options(self, d):
        """dovecot.conf text for the opt-in options (empty by default)."""
        text = ""
        if self.disable_plaintext_auth:
            text += "\n# disable_plaintext_auth=True\n" \
                    "disable_plaintext_auth = yes\n"
        if self.dovecot_ssl != "no":
            if self.dovecot_ca is None:
                self.dovecot_ca = TestCA(os.path.join(d, "tls"))
            text += ("\n# dovecot_ssl\nssl = %s\nssl_cert = <%s\n"
                     "ssl_key = <%s\n" % (self.dovecot_ssl,
                                          self.dovecot_ca.chain_pem,
                                          self.dovecot_ca.key_pem))
        if self.haproxy:
            self.imap_haproxy_port = free_port()
            self.pop3_haproxy_port = free_port()
            text += _DOVECOT_HAPROXY_CONF.format(
                host=HOST, networks=self.haproxy_trusted_networks,
                imap_port=self.imap_haproxy_port,
                pop3_port=self.pop3_haproxy_port)
        return text

    def _postfix_server(self):
        d = os.path.join(self.tmp, "postfix")
        conf_dir = os.path.join(d, "conf")
        queue = os.path.join(d, "queue")
        data = os.path.join(d, "data")
        for path in (d, conf_dir, queue):
            os.makedirs(path, 0o755, exist_ok=True)
            os.chmod(path, 0o755)
        postfix = pwd.getpwnam("postfix")
        os.makedirs(data, 0o700, exist_ok=True)
        os.chown(data, postfix.pw_uid, postfix.pw_gid)
        for name, owner, group, mode in _POSTFIX_QUEUE_DIRS:
            path = os.path.join(queue, name)
            os.makedirs(path, exist_ok=True)
            uid = pwd.getpwnam(owner).pw_uid
            gid = grp.getgrnam(group).gr_gid if group else 0
            os.chown(path, uid, gid)
            os.chmod(path, mode)

        vmailbox = os.path.join(conf_dir, "vmailbox")
        with open(vmailbox, "w") as f:
            # Relative to virtual_mailbox_base; trailing "/" means Maildir.
            f.write("%s %s/Maildir/\n" % (self.address, self.user))

        self.smtp_port = free_port()
        main = dict(_POSTFIX_MAIN)
        main.update({
            "queue_directory": queue,
            "data_directory": data,
            "maillog_file": self.postfix_log,
            "maillog_file_prefixes": self.tmp,
            "smtpd_banner": "$myhostname ESMTP " + self.instance,
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.mail_root,
            # texthash: needs no postmap run.
            "virtual_mailbox_maps": "texthash:" + vmailbox,
            "virtual_uid_maps": "static:%d" % self.mail_uid,
            "virtual_gid_maps": "static:%d" % self.mail_gid,
            "virtual_minimum_uid": str(min(self.mail_uid, 100)),
        })
        for key, value in self.postfix_extra.items():
            if value is None:
                main.pop(key, None)
            else:
                main[key] = str(value)
        with open(os.path.join(conf_dir, "main.cf"), "w") as f:
            f.write("# Generated by mailenv.py\n")
            for key, value in main.items():
                f.write("%s = %s\n" % (key, value))

        args = self.postfix_smtpd_args
        if isinstance(args, dict):
            args = ["%s=%s" % kv for kv in args.items()]
        smtpd_args = "".join(
            "\n  -o {%s}" % a if any(c.isspace() for c in a)
            else "\n  -o %s" % a for a in args)
        extra = self.postfix_master_extra
        if self.haproxy:
            self.smtp_haproxy_port = free_port()
            extra = _POSTFIX_HAPROXY_CF.format(
                listen="%s:%d" % (HOST, self.smtp_haproxy_port)) + extra
        with open(os.path.join(conf_dir, "master.cf"), "w") as f:
            f.write(_POSTFIX_MASTER_CF.format(
                smtp_listen="%s:%d" % (HOST, self.smtp_port),
                smtpd_args=smtpd_args, extra=extra))
        # Postfix refuses to read a table or main.cf whose mtime is within
        # the last second or two (it waits, assuming a writer is still busy),
        # which alone would cost ~2 s per start.  Backdate the files.
        old = time.time() - 60
        for name in os.listdir(conf_dir):
            os.utime(os.path.join(conf_dir, name), (old, old))
        self.postfix_conf_dir = conf_dir
        # With smtpd_upstream_proxy_protocol set (main.cf or -o), smtpd
        # greets only after a PROXY header; the readiness probe sends one.
        upstream = main.get("smtpd_upstream_proxy_protocol", "")
        for arg in args:
            key, _, value = arg.strip("{} ").partition("=")
            if key.strip() == "smtpd_upstream_proxy_protocol":
                upstream = value.strip()
        proxy = "always" if upstream else None
        probes = [(self.smtp_port, self.instance, b"QUIT\r\n", proxy)]
        if self.haproxy:
            probes.append((self.smtp_haproxy_port, self.instance,
                           b"QUIT\r\n", "always"))
        # master -s: stay in the foreground as our direct child ("postfix
        # start-fg" would interpose a shell and run a slow "postfix check").
        return _Server(
            "postfix", [POSTFIX_MASTER_BIN, "-s", "-c", conf_dir],
            self.postfix_log, os.path.join(self.tmp, "postfix.stderr"),
            probes, diagnose=self._postfix_diagnostics)

    def _postfix_diagnostics(self):
        # master's own fatal errors during startup go nowhere (see
        # wait_ready), but postconf reports most configuration mistakes.
        out = []
        for args in (["-n"], ["-M"]):
            res = subprocess.run(
                ["postconf", "-c", self.postfix_conf_dir] + args,
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                env=_CHILD_ENV)
            out.append("$ postconf -c %s %s (exit %d)\n%s" % (
                self.postfix_conf_dir, " ".join(args), res.returncode,
                res.stderr.strip() or "(no warnings)"))
        out.append("(master reports fatal startup errors, e.g. a bad "
                   "parameter value, only through postlogd, so they may be "
                   "missing above)")
        return "\n".join(out)

    # -- mailbox helpers ---------------------------------------------------

    def seed_message(self, data, name=None, folder="cur", flags="S"):
        """Put a message into alice's Maildir; returns the file's path.

        data is written exactly as given (LF or CRLF line endings); over
        IMAP/POP3 Dovecot returns to_crlf(data).  folder "cur" (default,
        with Maildir info ":2,<flags>") or "new" (unseen, no info).  Files
        are named so that Dovecot assigns UIDs in seeding order.
        """
        if folder not in ("cur", "new"):
            raise ValueError("folder must be 'cur' or 'new'")
        if name is None:
            now = time.time()
            name = "%d.M%06dP%dQ%06d.mailenv" % (
                int(now), int(now % 1 * 1e6), os.getpid(),
                next(self._seed_counter))
        if folder == "cur" and ":2," not in name:
            name += ":2," + flags
        tmp_path = os.path.join(self.maildir, "tmp", name.split(":")[0])
        final = os.path.join(self.maildir, folder, name)
        with open(tmp_path, "wb") as f:
            f.write(data)
        os.chown(tmp_path, self.mail_uid, self.mail_gid)
        os.chmod(tmp_path, 0o600)
        # tmp/ then rename, as the Maildir protocol wants: Dovecot never sees
        # a half-written file.
        os.rename(tmp_path, final)
        return final

    def iter_messages(self):
        """Yield (path, raw bytes) of every message in new/ and cur/."""
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                try:
                    with open(path, "rb") as f:
                        yield path, f.read()
                except FileNotFoundError:
                    # Dovecot moved it from new/ to cur/ meanwhile; the next
                    # poll finds it there.
                    continue

    def wait_for_delivery(self, subject_or_predicate, timeout=30):
        """Poll the Maildir until a matching message arrives; return its path.

        Pass a Subject string (exact match) or a predicate called with the
        raw message bytes.  The path may change later if Dovecot moves the
        file from new/ to cur/.
        """
        if callable(subject_or_predicate):
            match = subject_or_predicate
        else:
            parser = email.parser.BytesHeaderParser(
                policy=email.policy.default)

            def match(raw):
                subject = parser.parsebytes(raw)["Subject"]
                return subject == subject_or_predicate
        deadline = time.monotonic() + timeout
        while True:
            for path, raw in self.iter_messages():
                if match(raw):
                    return path
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "no message matching %r in %s after %s s\n"
                    "--- %s ---\n%s" % (subject_or_predicate, self.maildir,
                                        timeout, self.postfix_log,
                                        _tail(self.postfix_log, 100)))
            time.sleep(0.05)

    # -- clients (plain connections straight to the backends) -------------

    def imap_login(self, timeout=30):
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=timeout)
        conn.login(self.user, self.password)
        return conn

    def pop3_login(self, timeout=30):
        conn = poplib.POP3(self.host, self.pop3_port, timeout=timeout)
        conn.user(self.user)
        conn.pass_(self.password)
        return conn

    def smtp_client(self, timeout=30):
        return smtplib.SMTP(self.host, self.smtp_port, timeout=timeout)

    # -- logs --------------------------------------------------------------

    def read_log(self, which, since=0):
        """Text of the "dovecot" or "postfix" log from byte offset since."""
        path = self.dovecot_log if which == "dovecot" else self.postfix_log
        with open(path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_size(self, which):
        """Current size of a log, to pass as since= to read_log later."""
        path = self.dovecot_log if which == "dovecot" else self.postfix_log
        return os.path.getsize(path)

    def log_problems(self):
        """Warning/error/fatal/panic lines of both servers' logs."""
        bad = []
        for which, markers in (
                ("dovecot", (": Warning:", ": Error:", ": Fatal:",
                             ": Panic:")),
                ("postfix", ("warning:", "error:", "fatal:", "panic:"))):
            try:
                text = self.read_log(which)
            except OSError:
                continue
            bad += [line for line in text.splitlines()
                    if any(m in line for m in markers)]
        return bad

    def dump_logs(self, stream=None):
        """Print both servers' logs (and any stderr output) for debugging."""
        stream = stream or sys.stderr
        if not self.tmp:
            return
        for path in (self.dovecot_log,
                     os.path.join(self.tmp, "dovecot.stderr"),
                     self.postfix_log,
                     os.path.join(self.tmp, "postfix.stderr")):
            if not os.path.exists(path) or os.path.getsize(path) == 0:
                continue
            print("===== %s =====" % path, file=stream)
            print(_tail(path, 100000), file=stream)
        stream.flush()


def _check_traversable(path):
    # mkdtemp honours TMPDIR; a parent like /root (0700) would lock out the
    # unprivileged server processes with confusing errors much later.
    parent = os.path.dirname(path)
    while parent and parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            raise StartupError("%s is not world-searchable; Dovecot and "
                               "Postfix users cannot reach %s (set "
                               "TMPDIR=/tmp)" % (parent, path))
        parent = os.path.dirname(parent)


class DumpLogsOnFailure:
    """unittest mixin: dump the logs of self.mail_envs when a test fails.

    For environments started in setUpClass (where no context manager sees
    the failure).  Put it before unittest.TestCase in the bases and keep the
    environments in a class or instance attribute ``mail_envs`` (a list).
    """

    mail_envs = ()

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for env in self.mail_envs:
                env.dump_logs()
        return result
