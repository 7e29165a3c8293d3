"""The command line and operating it: -t checks a config and its
certificates (exit 0 or 1, errors with file and line), --help and
--version, JSON logs, the optional connect line, a log file reopened on
SIGUSR1 after rotation, and dropping to an unprivileged user.
"""

import json
import os
import pwd
import signal
import subprocess
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
        self.assertIn("%s:3: key '%s' " % (path, other_key), out.stderr)
        self.assertIn("key values mismatch", out.stderr)

    def test_help_version_and_bad_usage(self):
        out = self.run_binary("--help")
        self.assertEqual(out.returncode, 0)
        self.assertIn("usage: mailproxy [-t] [-c FILE]", out.stdout)
        out = self.run_binary("-V")
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout, r"^mailproxy \d+\.\d+\.\d+ \(OpenSSL 3")
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

    def test_log_file_reopened_on_sigusr1(self):
        log = os.path.join(self.env.tmp, "sessions.log")
        with self.proxy(log_file=log) as mp:
            self.login_logout(mp)
            self.assertEqual(len(mp.wait_sessions(1)), 1)
            os.rename(log, log + ".1")
            mp.send_signal(signal.SIGUSR1)
            # The reopen logs a line into the new file: wait for it.
            self.assertTrue(mp.wait_log("log file reopened"))
            self.login_logout(mp)
            self.assertEqual(len(mp.wait_sessions(1)), 1)
            self.assertStopsCleanly(mp)
        with open(log + ".1") as f:
            old = f.read()
        with open(log) as f:
            new = f.read()
        self.assertEqual(old.count("event=close"), 1, old)
        self.assertEqual(new.count("event=close"), 1, new)
        self.assertIn("log file reopened", new)

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
