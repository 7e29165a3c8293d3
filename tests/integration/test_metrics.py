"""Metrics and health (issue 14): [metrics] listen serves Prometheus
text, /healthz and /readyz from an unprivileged process; the figures move
with real sessions through real Dovecot and Postfix, survive a reload and
a worker's death, and a malformed request gets 400 and a closed
connection, never a crash.

The exposition is read by a real Prometheus parser (Debian's
python3-prometheus-client), with real clients in front (imaplib, smtplib,
Python ssl) and raw sockets for the malformed requests.
"""

import http.client
import imaplib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import unittest

import mailenv
from proxy import ProxyTestCase

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:     # pyenv's python3 on a dev machine: Debian's has it
    import sys
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

WAIT = 15


def http_get(port, path, method="GET", timeout=WAIT):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), \
            dict(resp.getheaders())
    finally:
        conn.close()


def raw_request(port, data, timeout=WAIT):
    """Sends data, returns everything until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


class Samples:
    """Every sample of one exposition, by name and labels."""

    def __init__(self, text):
        self.text = text
        self.families = {}
        self.samples = []
        for fam in text_string_to_metric_families(text):
            self.families[fam.name] = fam
            for s in fam.samples:
                self.samples.append(s)

    def get(self, name, **labels):
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v
                                      for k, v in labels.items()):
                return s.value
        raise KeyError("%s%r not in\n%s" % (name, labels, self.text))

    def total(self, name, **labels):
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v
                                             for k, v in labels.items()))


class MetricsTest(ProxyTestCase):

    def start(self, extra_metrics="", global_extra="", workers=2,
              listeners=None):
        port, sock = mailenv.reserve_port()
        self.metrics_port = port
        mp = self.proxy(workers=workers, listeners=listeners,
                        global_extra=global_extra,
                        tls_extra="\n[metrics]\nlisten = 127.0.0.1:%d\n%s"
                                  % (port, extra_metrics))
        mp.held.append(sock)
        return mp

    def wait_listening(self):
        """Until the workers have said they listen ("started" is logged
        when they are forked), as an orchestrator polls /readyz."""
        deadline = time.monotonic() + WAIT
        while True:
            status, body, _ = http_get(self.metrics_port, "/readyz")
            if body != "no worker listens yet\n":
                return status, body
            self.assertEqual(status, 503)
            if time.monotonic() > deadline:
                self.fail("no worker listens")
            time.sleep(0.05)

    def scrape(self):
        status, body, headers = http_get(self.metrics_port, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("Content-Type"),
                         "text/plain; version=0.0.4; charset=utf-8")
        # promtool's rules: the parser must take every line.
        return Samples(body)

    def wait_for(self, predicate, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            m = self.scrape()
            if predicate(m):
                return m
            if time.monotonic() > deadline:
                self.fail("%s never came true:\n%s" % (what, m.text))
            time.sleep(0.1)

    def metrics_pid(self, mp):
        found = [l for l in mp.log_text().splitlines()
                 if "metrics process (pid " in l]
        self.assertTrue(found, mp.log_text())
        return int(found[-1].split("metrics process (pid ")[1].split(")")[0])

    # ------------------------------------------------------------------

    def test_metrics_move_with_sessions(self):
        mp = self.start()
        with mp:
            m0 = self.scrape()
            for name in ("mailproxy_sessions_active",
                         "mailproxy_sessions", "mailproxy_handshake_failures",
                         "mailproxy_handshake_seconds",
                         "mailproxy_bytes", "mailproxy_limit_refusals",
                         "mailproxy_backend_connect_seconds",
                         "mailproxy_reloads", "mailproxy_workers",
                         "mailproxy_build_info",
                         "mailproxy_certificate_expiry_timestamp_seconds"):
                self.assertIn(name, m0.families, m0.text)
            self.assertEqual(m0.get("mailproxy_workers"), 2)
            info = [s for s in m0.samples
                    if s.name == "mailproxy_build_info"][0]
            self.assertRegex(info.labels["openssl"], r"^3\.")
            self.assertRegex(info.labels["libuv"], r"^1\.")
            # The expiry is the certificate's notAfter.
            out = subprocess.run(
                ["openssl", "x509", "-noout", "-enddate", "-dateopt",
                 "iso_8601", "-in", self.ca.chain_pem],
                capture_output=True, text=True, check=True).stdout
            not_after = time.mktime(time.strptime(
                out.strip().split("=", 1)[1], "%Y-%m-%d %H:%M:%SZ")) \
                - time.timezone
            self.assertEqual(m0.get(
                "mailproxy_certificate_expiry_timestamp_seconds",
                listener="imaps"), not_after)
            before = m0.get("mailproxy_sessions_total", listener="imaps",
                            end="backend_closed")

            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=WAIT)
            imap.login(self.env.user, self.env.password)
            m1 = self.wait_for(lambda m: m.get(
                "mailproxy_sessions_active", listener="imaps") == 1,
                "one active session")
            self.assertEqual(m1.get("mailproxy_handshake_seconds_count",
                                    listener="imaps"), 1)
            self.assertEqual(m1.get("mailproxy_backend_connect_seconds_count",
                                    listener="imaps"), 1)
            imap.logout()
            m2 = self.wait_for(lambda m: m.get(
                "mailproxy_sessions_active", listener="imaps") == 0,
                "the session ended")
            self.assertEqual(m2.total("mailproxy_sessions_total",
                                      listener="imaps") -
                             m0.total("mailproxy_sessions_total",
                                      listener="imaps"), 1)
            line = mp.wait_sessions(1, listener="imaps")[-1]
            self.assertEqual(m2.get("mailproxy_sessions_total",
                                    listener="imaps", end=line["end"]),
                             (before if line["end"] == "backend_closed"
                              else 0) + 1)
            self.assertEqual(m2.get("mailproxy_bytes_total",
                                    listener="imaps", direction="in"),
                             int(line["client_in"]))
            self.assertEqual(m2.get("mailproxy_bytes_total",
                                    listener="imaps", direction="out"),
                             int(line["client_out"]))
            # A handshake that fails is counted by how it ended.
            raw = socket.create_connection(("127.0.0.1", mp.port("smtps")),
                                           timeout=WAIT)
            raw.sendall(b"EHLO not-tls\r\n")
            raw.recv(100)
            raw.close()
            self.wait_for(lambda m: m.total(
                "mailproxy_handshake_failures_total", listener="smtps") == 1,
                "one handshake failure")
            self.assertStopsCleanly(mp)

    def test_health_through_reload_worker_death_and_drain(self):
        mp = self.start(global_extra="drain_timeout = 20s\n")
        with mp:
            self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
            self.assertEqual(self.wait_listening(), (200, "ready\n"))
            # A worker dies: the master supervises on, /healthz stays 200.
            victim = [p for p in mp.worker_pids()
                      if p != self.metrics_pid(mp)][0]
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(mp.wait_log("(pid %d) was killed" % victim))
            self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
            self.wait_for(lambda m: m.get("mailproxy_workers") == 2,
                          "the worker replaced")
            # Counters do not go back across a reload.
            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=WAIT)
            imap.login(self.env.user, self.env.password)
            imap.logout()
            m1 = self.wait_for(lambda m: m.total(
                "mailproxy_sessions_total", listener="imaps") >= 1,
                "a session counted")
            mp.send_signal(signal.SIGHUP)
            self.assertTrue(mp.wait_log("generation 1 finished"))
            m2 = self.wait_for(lambda m: m.get(
                "mailproxy_reloads_total", result="success") == 1,
                "a reload counted")
            self.assertEqual(m2.total("mailproxy_sessions_total",
                                      listener="imaps"),
                             m1.total("mailproxy_sessions_total",
                                      listener="imaps"))
            self.assertEqual(http_get(self.metrics_port, "/readyz")[0], 200)
            # A broken configuration: refused, counted, still healthy.
            with open(mp.config_path) as f:
                good = f.read()
            with open(mp.config_path, "w") as f:
                f.write(good + "\nthis is not ini\n")
            mp.send_signal(signal.SIGHUP)
            self.wait_for(lambda m: m.get(
                "mailproxy_reloads_total", result="failure") == 1,
                "a failed reload counted")
            with open(mp.config_path, "w") as f:
                f.write(good)
            self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
            self.assertEqual(http_get(self.metrics_port, "/readyz")[0], 200)
            # SIGTERM with a session open: draining is not ready, but
            # alive, until the last session is gone.
            imap = imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                     ssl_context=self.ca.client_context(),
                                     timeout=WAIT)
            imap.login(self.env.user, self.env.password)
            mp.send_signal(signal.SIGTERM)
            self.assertTrue(mp.wait_log("SIGTERM: stopping"))
            status, body, _ = http_get(self.metrics_port, "/readyz")
            self.assertEqual((status, body), (503, "stopping\n"))
            self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
            imap.logout()
            self.assertEqual(mp.wait_exit(), 0)

    def test_readyz_backends(self):
        """readyz_backends = yes: /readyz connects to every backend and
        names the one that does not answer."""
        port, sock = mailenv.reserve_port()
        sock.close()        # nothing listens there
        env = self.env
        listeners = {
            "imaps": ("imap", "127.0.0.1:%d" % env.imap_port, ""),
            "dead": ("pop3", "127.0.0.1:%d" % port, ""),
        }
        mp = self.start(extra_metrics="readyz_backends = yes\n",
                        listeners=listeners)
        with mp:
            status, body = self.wait_listening()
            self.assertEqual(status, 503)
            self.assertEqual(body, "backend 127.0.0.1:%d of listener dead "
                                   "does not answer\n" % port)
            status, body, _ = http_get(self.metrics_port, "/readyz",
                                       method="HEAD")
            self.assertEqual((status, body), (503, ""))

    def test_runs_unprivileged(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to switch users")
        mp = self.start(global_extra="user = nobody\ngroup = nogroup\n")
        with mp:
            # Once it answers it has dropped root (before its loop).
            self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
            pid = self.metrics_pid(mp)
            with open("/proc/%d/status" % pid) as f:
                uid = [l for l in f if l.startswith("Uid:")][0].split()
            nobody = subprocess.run(["id", "-u", "nobody"], check=True,
                                    capture_output=True, text=True)
            self.assertEqual(uid[1:], [nobody.stdout.strip()] * 4)

    def test_malformed_requests(self):
        mp = self.start()
        with mp:
            port = self.metrics_port
            cases = [
                (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"400"),
                (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", b"400"),
                (b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n", b"400"),
                (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked"
                 b"\r\n\r\n", b"400"),
                (b"GET http://x/metrics HTTP/1.1\r\n\r\n", b"400"),
                (b"GET /metrics HTTP/2.0\r\n\r\n", b"505"),
                (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", b"400"),
                (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
                 b"431"),
                (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 70 + b"\r\n",
                 b"431"),
                (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                 b"405"),
                (b"GET /nothing HTTP/1.0\r\n\r\n", b"404"),
            ]
            for data, code in cases:
                out = raw_request(port, data)
                self.assertTrue(out.startswith(b"HTTP/1.1 " + code + b" "),
                                (data[:40], out[:80]))
                self.assertIn(b"Connection: close\r\n", out)
            # A client that says nothing is closed at the deadline; one
            # that stops mid-request gets 408.
            t0 = time.monotonic()
            self.assertEqual(raw_request(port, b"", timeout=30), b"")
            self.assertGreater(time.monotonic() - t0, 4)
            out = raw_request(port, b"GET /metr", timeout=30)
            self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out)
            # 64 idle connections held open: a probe still gets in, in
            # the place of the oldest of them.
            socks = [socket.create_connection(("127.0.0.1", port),
                                              timeout=WAIT)
                     for _ in range(64)]
            time.sleep(0.3)
            self.assertEqual(http_get(port, "/healthz")[0], 200)
            self.assertEqual(socks[0].recv(10), b"")
            for s in socks:
                s.close()
            self.assertTrue(mp.wait_log("closing the oldest without a "
                                        "request"))
            # A client that sends more than its request, and reads
            # slowly, still gets the whole answer (no reset).
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"garbage after the request")
            time.sleep(0.3)
            out = b""
            while True:
                chunk = s.recv(1024)
                if not chunk:
                    break
                out += chunk
            s.close()
            head, _, body = out.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            self.assertEqual(len(body), length)
            self.assertTrue(mp.wait_log("metrics: 127.0.0.1: 400 Bad "
                                        "Request"), mp.log_text())
            self.scrape()
            self.assertStopsCleanly(mp)


if __name__ == "__main__":
    unittest.main()
