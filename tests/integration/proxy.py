"""Run the real mailproxy binary in front of a MailEnv, for one scenario.

Mailproxy(env, ca, listeners=...) writes a config file into the
environment's temporary directory, starts the binary named by
$MAILPROXY_BIN (or build/mailproxy) in the foreground with its log on a
file, and waits for its "started" line -- no probe connections, so the
connection log holds only the test's own sessions.  stop() sends SIGTERM
(or another signal), waits, and returns the exit status; the scenario
asserts it is 0, which under ASan also means LeakSanitizer found nothing.

Set MAILPROXY_VALGRIND=1 to run the binary under valgrind: any memory
error or definite leak makes it exit 99 and the scenario fail.
"""

import imaplib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

import mailenv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
START_TIMEOUT = 30
STOP_TIMEOUT = 60

_TEXT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')

# After LOGOUT or QUIT the backend says goodbye and closes, while the
# client, having read it, closes too: either EOF may reach mailproxy
# first, and Python's clients close without close_notify.
NORMAL_ENDS = ("backend_closed", "client_closed")
NORMAL_ERRORS = (None, "unexpected eof while reading")


def is_normal_end(line):
    """A session that ended because one side closed, after the login
    (relay) or, for SMTP, which may send mail without logging in and is
    then filtered to its end, in the dialogue."""
    states = ("relay", "dialog") if line.get("proto") == "smtp" \
        else ("relay",)
    return (line.get("end") in NORMAL_ENDS and line.get("state") in states
            and line.get("error") in NORMAL_ERRORS)


def binary():
    return os.environ.get("MAILPROXY_BIN",
                          os.path.join(ROOT, "build", "mailproxy"))


def fakedns(name, addrs):
    """Environment that makes mailproxy's getaddrinfo answer name with
    addrs (a list of numeric addresses), in that order."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"LD_PRELOAD": os.environ["MAILPROXY_FAKEDNS"],
            "FAKEDNS_NAME": name, "FAKEDNS_ADDRS": ",".join(addrs),
            # The preloaded helper comes before ASan's runtime.
            "ASAN_OPTIONS": (asan + ":" if asan else "")
            + "verify_asan_link_order=0"}


def parse_line(line):
    """One log line (text key=value or JSON) as a dict of strings/ints."""
    line = line.rstrip("\n")
    if line.startswith("{"):
        return json.loads(line)
    fields = {}
    for key, value in _TEXT_FIELD.findall(line):
        if value.startswith('"'):
            value = value[1:-1]
        elif value == "-":
            value = None
        fields[key] = value
    return fields


def listener_section(name, protocol, port, backend, extra=""):
    return ("[listener %s]\nprotocol = %s\nlisten = 127.0.0.1:%d\n"
            "backend = %s\n%s" % (name, protocol, port, backend, extra))


class Mailproxy:
    """The binary under test; a context manager that always stops it."""

    def __init__(self, env, ca, listeners=None, global_extra="",
                 tls_extra="", workers=2, log_format="text",
                 raw_config=None, environ=None, log_file=None, tag=""):
        self.env = env
        self.environ = dict(os.environ, **(environ or {}))
        self.ca = ca
        self.dir = env.tmp
        # tag tells apart the files of two instances run side by side.
        self.config_path = os.path.join(self.dir, "mailproxy%s.ini" % tag)
        # Where stderr goes; with log_file, mailproxy's own log is there
        # instead and stderr holds only what comes before it is opened.
        self.stderr_path = os.path.join(self.dir, "mailproxy%s.log" % tag)
        self.log_path = log_file or self.stderr_path
        if log_file:
            global_extra += "log = %s\n" % log_file
        self.proc = None
        self.ports = {}
        # Sockets that hold the listeners' ports until mailproxy has
        # bound them (mailenv.reserve_port).
        self.held = []
        if raw_config is not None:
            config = raw_config
        else:
            if listeners is None:
                listeners = self.default_listeners()
            parts = ["[global]\nworkers = %d\nlog_format = %s\n%s\n"
                     % (workers, log_format, global_extra),
                     "[tls]\ncertificate = %s\nkey = %s\n%s\n"
                     % (ca.chain_pem, ca.key_pem, tls_extra)]
            for name, (protocol, backend, extra) in listeners.items():
                port, sock = mailenv.reserve_port()
                self.held.append(sock)
                self.ports[name] = port
                parts.append(listener_section(name, protocol, port, backend,
                                              extra))
            config = "\n".join(parts)
        with open(self.config_path, "w") as f:
            f.write(config)

    def default_listeners(self):
        env = self.env
        return {
            "imaps": ("imap", "127.0.0.1:%d" % env.imap_port, ""),
            "pop3s": ("pop3", "127.0.0.1:%d" % env.pop3_port, ""),
            "smtps": ("smtp", "127.0.0.1:%d" % env.smtp_port, ""),
        }

    def argv(self):
        argv = [binary(), "-c", self.config_path]
        if os.environ.get("MAILPROXY_VALGRIND") == "1":
            argv = ["valgrind", "-q", "--error-exitcode=99",
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite,indirect"] + argv
        return argv

    def release_ports(self):
        for sock in getattr(self, "held", ()):
            sock.close()
        self.held = []

    def __del__(self):
        self.release_ports()

    def start(self):
        self.log = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, env=self.environ,
            preexec_fn=mailenv._child_setup)
        try:
            return self._wait_started()
        finally:
            # Bound by now (it binds before it says "started"), or it
            # never will be.
            self.release_ports()

    def _wait_started(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                with open(self.stderr_path, "rb") as f:
                    stderr = f.read().decode("utf-8", "replace")
                raise RuntimeError("mailproxy exited with %d at start:\n%s%s"
                                   % (self.proc.returncode, stderr,
                                      self.log_text()))
            if re.search(r"mailproxy \S+ started", self.log_text()):
                return self
            time.sleep(0.02)
        raise RuntimeError("mailproxy did not start:\n" + self.log_text())

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            sys.stderr.write("--- mailproxy log ---\n%s\n" % self.log_text())
        self.stop()
        return False

    @property
    def pid(self):
        return self.proc.pid

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Stops the process (if running) and returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def wait_exit(self, timeout=STOP_TIMEOUT):
        return self.proc.wait(timeout)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def lines(self):
        """The complete log lines, parsed. mailproxy writes each line
        with one write(2), but a reader may still see the first part of
        one that crosses a page of the file: a last line without its
        newline is left for the next read."""
        text = self.log_text()
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        return [parse_line(l) for l in text.splitlines() if l]

    def sessions(self, event="close", **match):
        """Connection log lines of one event whose fields equal match."""
        found = []
        for fields in self.lines():
            if fields.get("event") != event:
                continue
            if all(str(fields.get(k)) == str(v) for k, v in match.items()):
                found.append(fields)
        return found

    def normal_sessions(self, **match):
        """Close lines of sessions that ended normally (is_normal_end)."""
        return [l for l in self.sessions(**match) if is_normal_end(l)]

    def wait_sessions(self, count, timeout=30, **match):
        """Waits until at least count matching close lines are logged."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.sessions(**match)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def wait_log(self, text, timeout=30):
        """Waits until text appears in the log; returns whether it did."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def port(self, name):
        return self.ports[name]

    def worker_pids(self):
        """The worker processes the master has forked, oldest first."""
        try:
            with open("/proc/%d/task/%d/children"
                      % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def pids(self):
        """The master and its workers."""
        return [self.proc.pid] + self.worker_pids()

    def rss_kb(self, field="VmRSS"):
        """field of /proc/PID/status summed over the master and its
        workers (VmHWM: the sum of each process's peak)."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith(field + ":"):
                            total += int(line.split()[1])
            except OSError:
                continue    # a worker has just ended
        return total

    def cpu_seconds(self):
        """utime + stime of the master and its workers, in seconds."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def runnable_seconds(self):
        """Per "pid/tid" of mailproxy's processes, the seconds it has
        spent on a CPU or waiting on a run queue for one
        (/proc/PID/task/TID/schedstat). A thread that polls adds
        wall-clock time whatever the machine's load, where its CPU time
        would be its share of the machine."""
        found = {}
        for pid in self.pids():
            try:
                tids = os.listdir("/proc/%d/task" % pid)
            except OSError:
                continue
            for tid in tids:
                try:
                    with open("/proc/%d/task/%s/schedstat"
                              % (pid, tid)) as f:
                        on_cpu, waiting = f.read().split()[:2]
                except OSError:
                    continue    # the thread has just ended
                found["%d/%s" % (pid, tid)] = \
                    (int(on_cpu) + int(waiting)) / 1e9
        return found


def tls_connect(ca, port, server_hostname="localhost", timeout=30):
    """A raw TLS socket to a mailproxy listener, verified against ca."""
    ctx = ca.client_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def recv_until_closed(sock, limit=1 << 20):
    """Everything sock delivers until EOF (or an error ends it)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


class ProxyTestCase(mailenv.DumpLogsOnFailure, unittest.TestCase):
    """One MailEnv and one CA for the whole scenario file."""

    env_options = {}

    @classmethod
    def setUpClass(cls):
        cls.env = mailenv.MailEnv(**cls.env_options).start()
        cls.mail_envs = [cls.env]
        cls.ca = mailenv.TestCA(os.path.join(cls.env.tmp, "ca"))

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()

    def proxy(self, **kwargs):
        return Mailproxy(self.env, self.ca, **kwargs)

    def login_logout(self, mp, name="imaps"):
        """A real IMAPS client logs in and out on listener name."""
        imap = imaplib.IMAP4_SSL("localhost", mp.port(name),
                                 ssl_context=self.ca.client_context(),
                                 timeout=30)
        imap.login(self.env.user, self.env.password)
        imap.logout()

    def poll_server_log(self, which, since, done, timeout):
        """The "dovecot" or "postfix" log from since, once done(log) is
        true: both servers log through their own processes, a moment after
        the client has its answer. After timeout, the log as it is."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.env.read_log(which, since)
            if done(log) or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def server_log(self, which, since, text, timeout=10):
        """The log from since, once text is in it (or after timeout)."""
        return self.poll_server_log(which, since, lambda log: text in log,
                                    timeout)

    @classmethod
    def seed(cls, size, subject):
        """A generated message put in the test user's INBOX."""
        message = mailenv.make_message(size, subject)
        cls.env.seed_message(message)
        return message

    def assertImapFetchExact(self, imap, expected):
        """Logs imap in; INBOX is listed and fetches as expected (the
        messages as Dovecot serves them directly), byte for byte."""
        imap.login(self.env.user, self.env.password)
        typ, boxes = imap.list()
        self.assertEqual(typ, "OK")
        self.assertTrue(any(b"INBOX" in b for b in boxes))
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch(b"1:*", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        got = [part[1] for part in data if isinstance(part, tuple)]
        self.assertEqual(got, expected)

    def assertPop3RetrExact(self, pop, message, direct_lines):
        """Logs pop in; its one message is message, byte for byte, and
        reads as it does straight from Dovecot."""
        pop.user(self.env.user)
        pop.pass_(self.env.password)
        count, size = pop.stat()
        self.assertEqual(count, 1)
        self.assertEqual(size, len(mailenv.to_crlf(message)))
        resp, lines, _ = pop.retr(1)
        self.assertTrue(resp.startswith(b"+OK"))
        self.assertEqual(lines, direct_lines)
        # poplib undoes dot-stuffing and splits on CRLF.
        self.assertEqual(b"\r\n".join(lines) + b"\r\n",
                         mailenv.to_crlf(message))

    def curl(self, url, *args, login=True, data=None):
        """curl against a listener, trusting the test CA; returns the
        finished process (stdout bytes)."""
        cmd = ["curl", "-sS", "--cacert", self.ca.ca_pem]
        if login:
            cmd += ["-u", "%s:%s" % (self.env.user, self.env.password)]
        return subprocess.run(cmd + list(args) + [url], input=data,
                              capture_output=True, timeout=120)

    def assertNormalEnd(self, line):
        self.assertTrue(is_normal_end(line), line)

    def assertStopsCleanly(self, mp, signum=signal.SIGTERM):
        status = mp.stop(signum)
        self.assertEqual(status, 0, "mailproxy exit status %s; log:\n%s"
                         % (status, mp.log_text()))
