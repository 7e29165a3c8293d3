"""The command line and operating it: -t checks a config and its
certificates (exit 0 or 1, errors with file and line), --help and
--version, JSON logs, the optional connect line, a log file reopened on
SIGUSR1 after rotation, and dropping to an unprivileged user.
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import mailenv
from proxy import ProxyTestCase, binary


class CliTest(ProxyTestCase):

    def run_binary(self, *args):
        return subprocess.run([binary()] + list(args), capture_output=True,
                              timeout=30, text=True)

    def write(self, name, text):
        path = os.path.join(self.env.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config(self, extra_tls="", extra_listener="", key=None):
        return ("[tls]\ncertificate = %s\nkey = %s\n%s"
                "[listener imaps]\nprotocol = imap\nlisten = 127.0.0.1:%d\n"
                "backend = 127.0.0.1:%d\n%s"
                % (self.ca.chain_pem, key or self.ca.key_pem, extra_tls,
                   mailenv.free_port(), self.env.imap_port, extra_listener))

    def test_check_ok(self):
        path = self.write("ok.ini", self.config())
        out = self.run_binary("-t", "-c", path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "mailproxy: configuration file %s test "
                                     "is successful\n" % path)

    def test_check_reports_errors_with_line(self):
        path = self.write("bad.ini",
                          self.config(extra_listener="timeout_idle = soon\n"
                                                     "colour = blue\n"))
        out = self.run_binary("--test", "--config", path)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stderr.splitlines(), [
            "mailproxy: %s:8: timeout_idle: 'soon' is not a duration from "
            "1s to 86400s (a number with ms, s, m or h; plain is seconds)"
            % path,
            "mailproxy: %s:9: unknown key 'colour' in [listener]" % path,
            "mailproxy: configuration file %s test failed" % path,
        ])

    def test_check_key_that_does_not_match(self):
        _, other_key = self.ca.make_cert("other.example")
        path = self.write("mismatch.ini", self.config(key=other_key))
        out = self.run_binary("-t", "-c", path)
        self.assertEqual(out.returncode, 1)
        # Plainly: not "is not a key, or does not match".
        self.assertIn("%s:3: key '%s' does not match certificate '%s'"
                      % (path, other_key, self.ca.chain_pem), out.stderr)
        self.assertNotIn(" or ", out.stderr)

    def test_help_version_and_bad_usage(self):
        out = self.run_binary("--help")
        self.assertEqual(out.returncode, 0)
        self.assertIn("usage: mailproxy [-t] [-c FILE]", out.stdout)
        out = self.run_binary("-V")
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout,
                         r"^mailproxy \d+\.\d+\.\d+ \(commit [0-9a-f]{12}"
                         r"(-dirty)?|unknown, \w+ build, (GNU|Clang) [\d.]+\)\n"
                         r"OpenSSL 3\.\d+\.\d+ .*\(built with OpenSSL 3.*"
                         r"\), libuv 1\.\d+\.\d+\n$")
        self.assertEqual(self.run_binary("--bogus").returncode, 1)
        self.assertEqual(self.run_binary("stray").returncode, 1)
        out = self.run_binary("-c", "/nonexistent.ini")
        self.assertEqual(out.returncode, 1)
        self.assertIn("/nonexistent.ini: cannot open", out.stderr)

    def test_json_log_and_connect_line(self):
        with self.proxy(log_format="json",
                        global_extra="log_connect = yes\n") as mp:
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        lines = [json.loads(l) for l in mp.log_text().splitlines()]
        self.assertTrue(all("time" in l for l in lines))
        events = [l for l in lines if "event" in l]
        self.assertEqual([e["event"] for e in events], ["connect", "close"])
        self.assertEqual(events[0]["id"], events[1]["id"])
        self.assertIsNone(events[0]["end"])
        self.assertIsInstance(events[1]["client_in"], int)
        self.assertNormalEnd(events[1])

    def rotate(self, log, global_extra=""):
        """A session, the log renamed and SIGUSR1, another session."""
        with self.proxy(log_file=log, global_extra=global_extra) as mp:
            self.login_logout(mp)
            self.assertEqual(len(mp.wait_sessions(1)), 1)
            os.rename(log, log + ".1")
            mp.send_signal(signal.SIGUSR1)
            # The reopen logs a line into the new file: wait for it.
            self.assertTrue(mp.wait_log("log file reopened"))
            self.login_logout(mp)
            self.assertEqual(len(mp.wait_sessions(1)), 1)
            self.assertStopsCleanly(mp)

    def test_log_file_reopened_on_sigusr1(self):
        log = os.path.join(self.env.tmp, "sessions.log")
        self.rotate(log)
        with open(log + ".1") as f:
            old = f.read()
        with open(log) as f:
            new = f.read()
        self.assertEqual(old.count("event=close"), 1, old)
        self.assertEqual(new.count("event=close"), 1, new)
        self.assertIn("log file reopened", new)

    def test_port_in_use_is_an_error(self):
        """A second mailproxy on the same ports (a stale one) does not
        share them silently: it says who to look for and exits 1; -t
        only warns (it may be checking the running one's next
        configuration); reuse_port = yes shares on purpose."""
        with self.proxy(workers=1) as mp:
            port = mp.port("imaps")
            text = ("[tls]\ncertificate = %s\nkey = %s\n"
                    "[listener imaps]\nprotocol = imap\n"
                    "listen = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n"
                    % (self.ca.chain_pem, self.ca.key_pem, port,
                       self.env.imap_port))
            path = self.write("stale.ini", text)
            out = self.run_binary("-c", path)
            self.assertEqual(out.returncode, 1)
            self.assertIn("%s:6: listener imaps: cannot listen on "
                          "127.0.0.1:%d: another process listens there "
                          "(a mailproxy still running?" % (path, port),
                          out.stderr)
            out = self.run_binary("-t", "-c", path)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("mailproxy: warning: %s:6: listener imaps: cannot "
                          "listen on 127.0.0.1:%d: another process" %
                          (path, port), out.stderr)
        # Two that both ask for it share the port.
        port, sock = mailenv.reserve_port()
        sock.close()
        shared = ("[global]\nreuse_port = yes\nworkers = 1\n"
                  "[tls]\ncertificate = %s\nkey = %s\n"
                  "[listener imaps]\nprotocol = imap\n"
                  "listen = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n"
                  % (self.ca.chain_pem, self.ca.key_pem, port,
                     self.env.imap_port))
        a = self.proxy(raw_config=shared, tag="a")
        b = self.proxy(raw_config=shared, tag="b")
        with a, b:
            a.ports["imaps"] = b.ports["imaps"] = port
            self.login_logout(a)
            self.assertStopsCleanly(b)
            self.assertStopsCleanly(a)

    @unittest.skipIf(os.geteuid() != 0, "needs root to become nobody")
    def test_low_port_without_the_capability(self):
        """Started unprivileged on port 993: the error says how to grant
        the right to bind it."""
        d = tempfile.mkdtemp(prefix="mailproxy-lowport-")
        try:
            os.chmod(d, 0o755)
            for name in (self.ca.chain_pem, self.ca.key_pem):
                shutil.copy(name, d)
                os.chmod(os.path.join(d, os.path.basename(name)), 0o644)
            path = os.path.join(d, "low.ini")
            with open(path, "w") as f:
                f.write("[tls]\ncertificate = %s\nkey = %s\n"
                        "[listener imaps]\nprotocol = imap\n"
                        "listen = 127.0.0.1:993\nbackend = 127.0.0.1:%d\n"
                        % (os.path.join(d, os.path.basename(
                            self.ca.chain_pem)),
                           os.path.join(d, os.path.basename(self.ca.key_pem)),
                           self.env.imap_port))
            os.chmod(path, 0o644)
            out = subprocess.run(["runuser", "-u", "nobody", "--", binary(),
                                  "-t", "-c", path], capture_output=True,
                                 text=True, timeout=30)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn("%s:6: listener imaps: cannot listen on "
                          "127.0.0.1:993: ports below 1024 need root or the "
                          "capability CAP_NET_BIND_SERVICE (systemd: "
                          "AmbientCapabilities=CAP_NET_BIND_SERVICE; "
                          "otherwise: setcap cap_net_bind_service=+ep on the "
                          "binary)" % path, out.stderr)
        finally:
            shutil.rmtree(d)

    @unittest.skipIf(os.geteuid() != 0, "needs root")
    def test_root_workers_warn_and_expiring_certificate(self):
        """Workers left as root are warned about loudly, at -t and at
        start; a certificate within 14 days of its end is a warning
        with the date."""
        ca = mailenv.TestCA(os.path.join(self.env.tmp, "ca-short"), days=5)
        cert, key = ca.make_cert("localhost", ips=("127.0.0.1",))
        path = self.write("root.ini", self.config().replace(
            self.ca.chain_pem, cert).replace(self.ca.key_pem, key))
        out = self.run_binary("-t", "-c", path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("mailproxy: WARNING: started as root with this file "
                      "(no 'user' in [global]), the workers would run as "
                      "root", out.stderr)
        self.assertRegex(out.stderr,
                         r"mailproxy: warning: %s:2: certificate '%s' expires "
                         r"in [45] days \(notAfter " % (path, cert))
        with self.proxy(workers=1) as mp:
            self.assertTrue(mp.wait_log("WARNING: the workers run as root"))

    @unittest.skipIf(os.geteuid() != 0, "needs root to drop privileges")
    def test_log_rotation_after_the_drop(self):
        """With user = nobody the master opens the new log file and
        gives it to the workers' user: their lines land in it."""
        log = os.path.join(self.env.tmp, "dropped.log")
        self.rotate(log, global_extra="user = nobody\n")
        self.assertEqual(os.stat(log).st_uid, pwd.getpwnam("nobody").pw_uid)
        with open(log) as f:
            self.assertEqual(f.read().count("event=close"), 1)

    @unittest.skipIf(os.geteuid() != 0, "needs root to drop privileges")
    def test_workers_drop_to_configured_user(self):
        """The workers run as user; the master, which reads the keys
        again on SIGHUP, stays root and relays nothing."""
        uid = pwd.getpwnam("nobody").pw_uid
        with self.proxy(global_extra="user = nobody\n") as mp:
            workers = mp.worker_pids()
            self.assertEqual(len(workers), 2)
            want = "Uid:\t%d\t%d\t%d\t%d" % ((uid,) * 4)
            for pid in workers:
                # A worker drops right after the fork; the master may
                # have said "started" a moment before.
                deadline = time.monotonic() + 10
                while True:
                    with open("/proc/%d/status" % pid) as f:
                        status = f.read()
                    if want in status or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                self.assertIn(want, status)
            with open("/proc/%d/status" % mp.pid) as f:
                self.assertIn("Uid:\t0\t0\t0\t0", f.read())
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        self.assertIn("workers run as user nobody", mp.log_text())
        self.assertEqual(len(mp.normal_sessions()), 1)


if __name__ == "__main__":
    unittest.main()
