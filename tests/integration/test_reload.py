"""Reload and supervision: SIGHUP starts a new generation of workers on
the same listening sockets while the old one drains; a worker that dies
is replaced; ticket keys outlive reloads and can be shared by instances.

Real Dovecot and Postfix behind mailproxy, real clients (imaplib,
poplib, Python's ssl), certificates replaced on disk by atomic rename as
certbot and friends do.
"""

import imaplib
import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import threading
import time
import unittest

import mailenv
from proxy import ProxyTestCase, Mailproxy, listener_section


def mailenv_binary():
    from proxy import binary
    return binary()


def der_of(pem_path):
    """The first certificate of a PEM file, DER-encoded."""
    with open(pem_path) as f:
        text = f.read()
    first = text[:text.index("-----END CERTIFICATE-----") + 25]
    return ssl.PEM_cert_to_DER_cert(first)


class ReloadTest(ProxyTestCase):

    def setUp(self):
        # Short: a sni_certificate line holds two paths in 197 bytes.
        ReloadTest.made = getattr(ReloadTest, "made", 0) + 1
        self.live = os.path.join(self.env.tmp, "live%d" % self.made)
        shutil.rmtree(self.live, ignore_errors=True)
        os.makedirs(self.live)
        self.chain = os.path.join(self.live, "fullchain.pem")
        self.key = os.path.join(self.live, "privkey.pem")
        self.install(self.chain, self.key, "localhost")

    def install(self, chain, key, name):
        """Issues a new certificate for name and puts it in place of
        chain and key by rename, as certbot does; returns its DER."""
        cert, new_key = self.ca.make_cert(name, ips=("127.0.0.1",))
        with open(chain + ".tmp", "wb") as out:
            for part in (cert, self.ca.ca_pem):
                with open(part, "rb") as f:
                    out.write(f.read())
        shutil.copy(new_key, key + ".tmp")
        os.chmod(key + ".tmp", 0o600)
        os.rename(key + ".tmp", key)
        os.rename(chain + ".tmp", chain)
        return der_of(chain)

    def config(self, listeners, global_extra="", tls_extra="", workers=2):
        parts = ["[global]\nworkers = %d\n%s\n" % (workers, global_extra),
                 "[tls]\ncertificate = %s\nkey = %s\n%s\n"
                 % (self.chain, self.key, tls_extra)]
        for name, (protocol, port, backend) in listeners.items():
            parts.append(listener_section(name, protocol, port, backend))
        return "\n".join(parts)

    def reloadable(self, names=("imaps", "pop3s", "smtps"), workers=2,
                   global_extra="", tls_extra="", tag="", environ=None):
        """A mailproxy on our own certificate files, with listeners of
        the default kinds; returns it (not started) and its listeners."""
        backends = {"imaps": ("imap", self.env.imap_port),
                    "pop3s": ("pop3", self.env.pop3_port),
                    "smtps": ("smtp", self.env.smtp_port)}
        held, listeners = [], {}
        for name in names:
            port, sock = mailenv.reserve_port()
            held.append(sock)
            protocol, backend = backends[name]
            listeners[name] = (protocol, port, "127.0.0.1:%d" % backend)
        mp = Mailproxy(self.env, self.ca, tag=tag, environ=environ,
                       raw_config=self.config(listeners, global_extra,
                                              tls_extra, workers))
        mp.held = held
        mp.ports = {n: l[1] for n, l in listeners.items()}
        self.listeners = listeners
        return mp

    def rewrite(self, mp, listeners, **kwargs):
        with open(mp.config_path + ".tmp", "w") as f:
            f.write(self.config(listeners, **kwargs))
        os.rename(mp.config_path + ".tmp", mp.config_path)

    def reload(self, mp, generation):
        mp.send_signal(signal.SIGHUP)
        self.assertTrue(mp.wait_log("reload: generation %d started"
                                    % generation), mp.log_text())

    def served_der(self, port, name="localhost"):
        ctx = self.ca.client_context()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                return t.getpeercert(binary_form=True)

    def wait_served(self, mp, der, names, sni="localhost", within=2.0):
        """Every listener in names serves der within `within` seconds."""
        deadline = time.monotonic() + within
        for name in names:
            while self.served_der(mp.port(name), sni) != der:
                self.assertLess(time.monotonic(), deadline,
                                "%s still serves the old certificate"
                                % name)
                time.sleep(0.05)

    def imap(self, mp, **kw):
        return imaplib.IMAP4_SSL("localhost", mp.port("imaps"),
                                 ssl_context=self.ca.client_context(),
                                 timeout=60, **kw)

    def test_renewed_certificates_are_served_and_old_sessions_go_on(self):
        message = self.seed(200000, "reload renew")
        expected = mailenv.to_crlf(message)
        sni_chain = os.path.join(self.live, "sni.pem")
        sni_key = os.path.join(self.live, "sni.key")
        sni_der = self.install(sni_chain, sni_key, "mail.example.test")
        mp = self.reloadable(tls_extra="sni_certificate = %s %s\n"
                             % (sni_chain, sni_key))
        with mp:
            old_der = der_of(self.chain)
            imap = self.imap(mp)
            imap.login(self.env.user, self.env.password)
            imap.select("INBOX", readonly=True)
            pop = poplib.POP3_SSL("localhost", mp.port("pop3s"),
                                  context=self.ca.client_context(),
                                  timeout=60)
            pop.user(self.env.user)
            pop.pass_(self.env.password)

            new_der = self.install(self.chain, self.key, "localhost")
            new_sni_der = self.install(sni_chain, sni_key,
                                       "mail.example.test")
            self.assertNotEqual(new_der, old_der)
            self.assertNotEqual(new_sni_der, sni_der)
            mp.send_signal(signal.SIGHUP)
            self.wait_served(mp, new_der, ("imaps", "pop3s", "smtps"))
            self.wait_served(mp, new_sni_der, ("imaps", "pop3s", "smtps"),
                             sni="mail.example.test")
            self.assertTrue(mp.wait_log("reload: generation 2 started"))

            # The sessions from before keep their certificate and work
            # byte for byte.
            self.assertEqual(imap.sock.getpeercert(binary_form=True),
                             old_der)
            typ, data = imap.fetch(b"1:*", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            got = [part[1] for part in data if isinstance(part, tuple)]
            self.assertIn(expected, got)
            resp, lines, _ = pop.retr(got.index(expected) + 1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", expected)
            imap.logout()
            pop.quit()
            # With its last session gone, the old generation ends.
            self.assertTrue(mp.wait_log("generation 1 finished"),
                            mp.log_text())
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        # The certificate probes close after the handshake; the sessions
        # that logged in ended normally.
        relayed = mp.sessions(state="relay")
        self.assertEqual(len(relayed), 3, mp.log_text())
        for line in relayed:
            self.assertNormalEnd(line)

    def test_broken_reload_changes_nothing_and_says_why(self):
        mp = self.reloadable(names=("imaps",))
        with mp:
            old_der = der_of(self.chain)
            imap = self.imap(mp)
            imap.login(self.env.user, self.env.password)

            # A key that does not match the certificate.
            _, other_key = self.ca.make_cert("other.test")
            shutil.copy(other_key, self.key)
            mp.send_signal(signal.SIGHUP)
            self.assertTrue(mp.wait_log("reload failed"), mp.log_text())
            with open(mp.config_path) as f:
                key_line = f.read().split("\n").index("key = %s"
                                                      % self.key) + 1
            self.assertRegex(
                mp.log_text(),
                r"level=warning msg=\"%s:%d: key '%s' "
                % (re.escape(mp.config_path), key_line, re.escape(self.key)))
            self.assertIn("generation 1 goes on", mp.log_text())
            self.assertEqual(self.served_der(mp.port("imaps")), old_der)

            # A syntax error: named with its line.
            with open(mp.config_path, "a") as f:
                f.write("\n[global]\nworkerz = 3\n")
            mp.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while mp.log_text().count("reload failed") < 2:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            self.assertRegex(mp.log_text(),
                             r"msg=\"%s:\d+: \S*" % re.escape(mp.config_path)
                             + r".*workerz")
            time.sleep(0.3)
            self.assertEqual(self.served_der(mp.port("imaps")), old_der)
            self.assertEqual(len(mp.worker_pids()), 2)
            imap.noop()

            # Fixed: the next reload takes the new certificate. A broken
            # sni_certificate does not stop it: it is left out, and said.
            new_der = self.install(self.chain, self.key, "localhost")
            missing = os.path.join(self.live, "gone.pem")
            self.rewrite(mp, self.listeners,
                         tls_extra="sni_certificate = %s\n" % missing)
            self.reload(mp, 2)
            self.assertIn("cannot read certificate '%s': No such file or "
                          "directory; sni_certificate skipped: its names "
                          "get the default certificate" % missing,
                          mp.log_text())
            self.wait_served(mp, new_der, ("imaps",))
            imap.logout()
            self.assertStopsCleanly(mp)
        self.assertNotIn("generation 3", mp.log_text())

    def test_reloads_under_load_lose_nothing(self):
        """Clients connect in a loop and two large downloads run while
        the configuration is reloaded 20 times: no connection refused or
        reset, no transfer cut, every byte as Dovecot has it."""
        message = self.seed(4 << 20, "reload load")
        expected = mailenv.to_crlf(message)
        mp = self.reloadable(names=("imaps",))
        errors, handshakes = [], [0]
        stop = threading.Event()

        def connect_loop():
            ctx = self.ca.client_context()
            while not stop.is_set():
                try:
                    with socket.create_connection(
                            ("127.0.0.1", mp.port("imaps")),
                            timeout=30) as s:
                        with ctx.wrap_socket(
                                s, server_hostname="localhost") as t:
                            if not t.recv(100).startswith(b"* OK"):
                                errors.append("no greeting")
                            t.sendall(b"a LOGOUT\r\n")
                            while t.recv(4096):
                                pass
                    handshakes[0] += 1
                except (OSError, ssl.SSLError) as e:
                    errors.append(repr(e))

        results = {}

        def download(n):
            # Reads slowly, so that the transfer spans every reload.
            imap = self.imap(mp)
            imap.login(self.env.user, self.env.password)
            imap.select("INBOX", readonly=True)
            uid = imap.search(None, "SUBJECT", '"reload load"')[1][0]
            tag = imap._new_tag()
            imap.send(tag + b" FETCH " + uid + b" BODY.PEEK[]\r\n")
            head = imap.readline()
            size = int(re.search(rb"\{(\d+)\}\r\n$", head).group(1))
            body = b""
            while len(body) < size:
                chunk = imap.read(min(16384, size - len(body)))
                if not chunk:
                    break
                body += chunk
                time.sleep(0.02)
            results[n] = body
            imap.readline()                 # the closing parenthesis
            results["tag%d" % n] = imap.readline()
            imap.logout()

        with mp:
            threads = [threading.Thread(target=connect_loop)
                       for _ in range(2)]
            threads += [threading.Thread(target=download, args=(i,))
                        for i in range(2)]
            for t in threads:
                t.start()
            for gen in range(2, 22):
                time.sleep(0.25)
                self.reload(mp, gen)
            stop.set()
            for t in threads:
                t.join(120)
            self.assertStopsCleanly(mp)
        self.assertEqual(errors, [])
        self.assertGreater(handshakes[0], 20)
        for n in range(2):
            self.assertEqual(results[n], expected)
            self.assertRegex(results["tag%d" % n], rb"^\S+ OK ")
        log = mp.log_text()
        self.assertNotIn("ending its sessions now", log)
        self.assertEqual(mp.sessions(end="shutdown"), [])

    def test_fewer_workers_after_a_reload_lose_no_connection(self):
        """workers 3 -> 1 -> 2 by reload while clients connect in a loop:
        the sockets stay open in the master, so every connection is
        served by whichever generation accepts it."""
        mp = self.reloadable(names=("imaps",), workers=3)
        errors, served = [], [0]
        stop = threading.Event()

        def connect_loop():
            ctx = self.ca.client_context()
            while not stop.is_set():
                try:
                    with socket.create_connection(
                            ("127.0.0.1", mp.port("imaps")),
                            timeout=30) as s:
                        with ctx.wrap_socket(
                                s, server_hostname="localhost") as t:
                            if not t.recv(100).startswith(b"* OK"):
                                errors.append("no greeting")
                    served[0] += 1
                except (OSError, ssl.SSLError) as e:
                    errors.append(repr(e))

        with mp:
            threads = [threading.Thread(target=connect_loop)
                       for _ in range(2)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                self.rewrite(mp, self.listeners, workers=1)
                self.reload(mp, 2)
                self.assertTrue(mp.wait_log("generation 1 finished"))
                time.sleep(0.5)
                self.assertEqual(len(mp.worker_pids()), 1)
                self.rewrite(mp, self.listeners, workers=2)
                self.reload(mp, 3)
                time.sleep(0.5)
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
            self.assertTrue(mp.wait_log("generation 2 finished"))
            self.assertEqual(len(mp.worker_pids()), 2)
            self.assertStopsCleanly(mp)
        self.assertEqual(errors, [])
        self.assertGreater(served[0], 20)

    def test_killed_worker_is_replaced_and_nothing_waits_in_vain(self):
        """SIGKILL a worker while clients connect in a loop: every
        connection made after the kill is served (by the other worker,
        then also by the replacement); the master says what happened."""
        mp = self.reloadable(names=("imaps",))
        with mp:
            workers = mp.worker_pids()
            self.assertEqual(len(workers), 2)
            tries = []      # (start, end, error or None)
            stop = threading.Event()

            def connect_loop():
                ctx = self.ca.client_context()
                while not stop.is_set():
                    start, error = time.monotonic(), None
                    try:
                        with socket.create_connection(
                                ("127.0.0.1", mp.port("imaps")),
                                timeout=30) as s:
                            with ctx.wrap_socket(
                                    s, server_hostname="localhost") as t:
                                if not t.recv(100).startswith(b"* OK"):
                                    error = "no greeting"
                    except (OSError, ssl.SSLError) as e:
                        error = repr(e)
                    tries.append((start, time.monotonic(), error))

            t = threading.Thread(target=connect_loop)
            t.start()
            try:
                time.sleep(0.3)
                victim = workers[0]
                # A connection the victim had accepted dies with it;
                # one that starts after the kill must be served.
                os.kill(victim, signal.SIGKILL)
                kills = [time.monotonic()]
                self.assertTrue(mp.wait_log(
                    "(pid %d) was killed by signal 9 (SIGKILL) after "
                    % victim), mp.log_text())
                self.assertTrue(mp.wait_log(" replaced (pid "))
                time.sleep(0.5)
                now = mp.worker_pids()
                self.assertEqual(len(now), 2)
                self.assertNotIn(victim, now)
                # Killed again at once: the back-off doubles.
                again = [p for p in now if p not in workers][0]
                os.kill(again, signal.SIGKILL)
                kills.append(time.monotonic())
                self.assertTrue(mp.wait_log(
                    "(pid %d) was killed by signal 9" % again))
                time.sleep(0.5)
            finally:
                stop.set()
                t.join(60)
            after = [e for start, end, e in tries if start >= kills[0] and
                     not any(start < k <= end for k in kills)]
            self.assertGreater(len(after), 5)
            self.assertEqual([e for e in after if e is not None], [])
            delays = [int(d) for d in
                      re.findall(r"replacing it in (\d+) ms", mp.log_text())]
            self.assertEqual(len(delays), 2, mp.log_text())
            self.assertEqual(delays[1],
                             100 if delays[0] == 0 else 2 * delays[0])
            self.assertEqual(len(mp.worker_pids()), 2)
            self.login_logout(mp)
            self.assertStopsCleanly(mp)

    def test_listener_added_and_removed(self):
        mp = self.reloadable(names=("imaps", "pop3s"))
        with mp:
            imap = self.imap(mp)
            imap.login(self.env.user, self.env.password)
            pop3_port = mp.port("pop3s")
            port, hold = mailenv.reserve_port()
            listeners = {
                "imaps": self.listeners["imaps"],
                "smtps": ("smtp", port, "127.0.0.1:%d" % self.env.smtp_port),
            }
            self.rewrite(mp, listeners)
            self.reload(mp, 2)
            hold.close()
            mp.ports["smtps"] = port
            # Refused once the old workers have closed their copies.
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", pop3_port),
                                             timeout=10).close()
                except ConnectionRefusedError:
                    break
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            import smtplib
            smtp = smtplib.SMTP_SSL("localhost", port, timeout=30,
                                    context=self.ca.client_context())
            self.assertEqual(smtp.ehlo()[0], 250)
            smtp.quit()
            imap.noop()
            imap.logout()
            self.login_logout(mp)
            self.assertStopsCleanly(mp)

    @unittest.skipIf(os.geteuid() != 0, "needs root to drop privileges")
    def test_root_only_certificates_reload_with_unprivileged_workers(self):
        os.chmod(self.live, 0o700)
        mp = self.reloadable(names=("imaps",),
                             global_extra="user = nobody\n")
        with mp:
            new_der = self.install(self.chain, self.key, "localhost")
            os.chmod(self.chain, 0o600)
            self.reload(mp, 2)
            self.wait_served(mp, new_der, ("imaps",))
            self.login_logout(mp)
            self.assertStopsCleanly(mp)

    def resume(self, port, session=None):
        """A TLS 1.3 handshake (resuming session if given); returns the
        session and whether it was resumed."""
        if not hasattr(self, "resume_ctx"):
            # A session resumes only through the context it came from.
            self.resume_ctx = self.ca.client_context()
        ctx = self.resume_ctx
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            with ctx.wrap_socket(s, server_hostname="localhost",
                                 session=session) as t:
                # TLS 1.3 tickets come after the handshake: the greeting
                # is read after them.
                t.recv(100)
                return t.session, t.session_reused

    def test_tickets_resume_across_a_reload(self):
        mp = self.reloadable(names=("imaps",))
        with mp:
            first, reused = self.resume(mp.port("imaps"))
            self.assertFalse(reused)
            self.assertTrue(self.resume(mp.port("imaps"), first)[1])
            # Each reload makes a new key; the one before still opens
            # tickets, and the client gets a new one sealed with the new.
            self.reload(mp, 2)
            second, reused = self.resume(mp.port("imaps"), first)
            self.assertTrue(reused)
            self.reload(mp, 3)
            third, reused = self.resume(mp.port("imaps"), second)
            self.assertTrue(reused)
            # Two keys back is gone: a ticket lives at most two reloads.
            self.assertFalse(self.resume(mp.port("imaps"), first)[1])
            self.assertTrue(self.resume(mp.port("imaps"), third)[1])
            self.assertStopsCleanly(mp)

    def test_one_ticket_per_handshake(self):
        """TLS 1.3: one NewSessionTicket per full handshake (not
        OpenSSL's default two), and one per resumption."""
        import subprocess
        mp = self.reloadable(names=("imaps",))
        with mp:
            sess = os.path.join(self.live, "s.pem")
            counts = []
            for extra in (["-sess_out", sess], ["-sess_in", sess]):
                out = subprocess.run(
                    ["openssl", "s_client", "-connect",
                     "127.0.0.1:%d" % mp.port("imaps"), "-tls1_3", "-msg",
                     "-CAfile", self.ca.ca_pem, "-servername", "localhost",
                     "-quiet"] + extra,
                    input=b"a LOGOUT\r\n", capture_output=True, timeout=60)
                text = (out.stdout + out.stderr).decode("utf-8", "replace")
                counts.append(text.count(", NewSessionTicket"))
            self.assertEqual(counts, [1, 1], counts)
            self.assertStopsCleanly(mp)
        self.assertEqual([l["resumed"] for l in mp.sessions()],
                         ["no", "yes"])

    def test_tickets_resume_across_instances_sharing_a_key_file(self):
        key1 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygp" \
               "KissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk8="
        key2 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkq" \
               "KywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkdISUpLTE1OT1A="
        file_a = os.path.join(self.live, "a.keys")
        file_b = os.path.join(self.live, "b.keys")
        with open(file_a, "w") as f:
            f.write(key1 + "\n")
        # b has rotated: key2 seals, key1 still opens.
        with open(file_b, "w") as f:
            f.write("# newest first\n%s\n%s\n" % (key2, key1))
        a = self.reloadable(names=("imaps",), tag="-a",
                            tls_extra="ticket_key_file = %s\n" % file_a)
        with a:
            b = self.reloadable(names=("imaps",), tag="-b",
                                tls_extra="ticket_key_file = %s\n" % file_b)
            with b:
                from_a, _ = self.resume(a.port("imaps"))
                from_b, reused = self.resume(b.port("imaps"), from_a)
                self.assertTrue(reused)
                # b sealed its new ticket with key2, which a cannot open.
                self.assertFalse(self.resume(a.port("imaps"), from_b)[1])
                # Rotated on a too, by reload: now it opens b's tickets.
                with open(file_a, "w") as f:
                    f.write("%s\n%s\n" % (key2, key1))
                self.reload(a, 2)
                self.assertTrue(self.resume(a.port("imaps"), from_b)[1])
                self.assertStopsCleanly(b)
            self.assertStopsCleanly(a)

    def test_old_generation_ends_spread_at_reload_drain_timeout(self):
        mp = self.reloadable(names=("imaps",), workers=1,
                             global_extra="reload_drain_timeout = 1s\n")
        with mp:
            clients = []
            for _ in range(4):
                imap = self.imap(mp)
                imap.login(self.env.user, self.env.password)
                clients.append(imap)
            self.reload(mp, 2)
            ended = []

            def wait_bye(imap):
                try:
                    while imap.sock.recv(4096):
                        pass
                except OSError:
                    pass
                ended.append(time.monotonic())

            threads = [threading.Thread(target=wait_bye, args=(c,))
                       for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(len(ended), 4)
            # One a second, not all at once.
            self.assertGreater(max(ended) - min(ended), 2.0)
            self.assertIn("reload_drain_timeout, ending 4 sessions over "
                          "60 s", mp.log_text())
            self.assertTrue(mp.wait_log("generation 1 finished"))
            self.login_logout(mp)
            self.assertStopsCleanly(mp)
        shut = mp.sessions(end="shutdown")
        self.assertEqual(len(shut), 4, mp.log_text())

    def test_too_many_draining_generations_end_the_oldest(self):
        mp = self.reloadable(names=("imaps",), workers=1,
                             global_extra="drain_timeout = 1s\n")
        with mp:
            # One session in each generation keeps it draining.
            held = []
            for gen in range(2, 35):
                imap = self.imap(mp)
                imap.login(self.env.user, self.env.password)
                held.append(imap)
                self.reload(mp, gen)
            imap = held[0]
            self.assertTrue(mp.wait_log(
                "generation 1: more than 32 generations draining; ending "
                "its sessions now"), mp.log_text())
            self.assertTrue(mp.wait_log("generation 1 finished"))
            with self.assertRaises((imaplib.IMAP4.abort, OSError)):
                while True:
                    imap.noop()
            self.assertFalse(mp.wait_log("generation 2 finished", 0.5))
            self.login_logout(mp)
            # The others end at drain_timeout when mailproxy stops.
            self.assertStopsCleanly(mp)
        self.assertEqual(len(mp.sessions(end="shutdown")), 33)

    def test_sigusr2_upgrade_keeps_sessions_and_hands_over(self):
        """SIGUSR2 executes the binary again on the same sockets; the old
        master's sessions go on, it exits once they are done, and the
        new master serves (and stops) on its own."""
        message = self.seed(100000, "upgrade")
        expected = mailenv.to_crlf(message)
        mp = self.reloadable(names=("imaps",),
                             global_extra="reload_drain_timeout = 60s\n")
        successor = None
        with mp:
            try:
                imap = self.imap(mp)
                imap.login(self.env.user, self.env.password)
                imap.select("INBOX", readonly=True)
                old_workers = mp.worker_pids()
                mp.send_signal(signal.SIGUSR2)
                # Its workers listen, then it must stay up for 5 s
                # before this master hands over.
                self.assertTrue(mp.wait_log(") listens; handing over in "
                                            "5000 ms if it stays up"),
                                mp.log_text())
                self.assertTrue(mp.wait_log(") serves; the sessions here "
                                            "drain"), mp.log_text())
                successor = int(re.search(
                    r"upgrade: the new master \(pid (\d+)\) serves",
                    mp.log_text()).group(1))
                self.assertEqual(mp.log_text().count("started with 2 "
                                                     "workers"), 2)
                # New sessions go to the new master's workers.
                with open("/proc/%d/task/%d/children"
                          % (successor, successor)) as f:
                    new_workers = [int(p) for p in f.read().split()]
                self.assertEqual(len(new_workers), 2)
                self.login_logout(mp)
                # The old session goes on, byte for byte.
                typ, data = imap.fetch(b"1:*", "(BODY.PEEK[])")
                got = [part[1] for part in data if isinstance(part, tuple)]
                self.assertIn(expected, got)
                imap.logout()
                # Its last session gone, the old master exits, 0.
                self.assertEqual(mp.wait_exit(30), 0, mp.log_text())
                for pid in old_workers:
                    self.assertFalse(os.path.exists("/proc/%d/cmdline"
                                                    % pid)
                                     and open("/proc/%d/cmdline" % pid)
                                     .read())
                self.login_logout(mp)
            finally:
                if successor is not None:
                    os.kill(successor, signal.SIGTERM)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        try:
                            with open("/proc/%d/stat" % successor) as f:
                                if f.read().split(")")[1].split()[0] == "Z":
                                    break
                        except OSError:
                            break
                        time.sleep(0.05)
        self.assertIn("mailproxy stopped: its sessions are done, the new "
                      "master serves", mp.log_text())
        # The new master numbers its generations on from the old one's.
        self.assertIn("generation 2 worker 0 (pid %d) finished"
                      % new_workers[0], mp.log_text())
        self.assertTrue(mp.wait_log("mailproxy stopped\""))
        relayed = mp.sessions(state="relay")
        self.assertEqual(len(relayed), 3, mp.log_text())
        for line in relayed:
            self.assertNormalEnd(line)

    def test_sigusr2_upgrade_that_fails_changes_nothing(self):
        """A binary that is gone, and a stop during an upgrade: the old
        master goes on, or stops the new one with itself."""
        copy = os.path.join(self.live, "mailproxy")
        shutil.copy(mailenv_binary(), copy)
        mp = self.reloadable(names=("imaps",))
        argv = mp.argv
        mp.argv = lambda: [copy if a == mailenv_binary() else a
                           for a in argv()]
        with mp:
            os.rename(copy, copy + ".gone")
            mp.send_signal(signal.SIGUSR2)
            self.assertTrue(mp.wait_log("upgrade failed: the new master "),
                            mp.log_text())
            self.assertIn("SIGUSR2: cannot execute %s: No such file or "
                          "directory" % copy, mp.log_text())
            self.login_logout(mp)
            # Back in place; stopped while the new one starts: it goes
            # too, and nothing serves the port after.
            os.rename(copy + ".gone", copy)
            mp.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while mp.log_text().count("SIGUSR2: starting %s" % copy) < 2:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            mp.send_signal(signal.SIGHUP)
            self.assertTrue(mp.wait_log("SIGHUP: an upgrade is under way"))
            self.assertStopsCleanly(mp)
            successor = int(re.findall(r"stopping the new master \(pid "
                                       r"(\d+)\)", mp.log_text())[0])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with open("/proc/%d/stat" % successor) as f:
                        if f.read().split(")")[1].split()[0] == "Z":
                            break
                except OSError:
                    break
                time.sleep(0.05)
            else:
                os.kill(successor, signal.SIGKILL)
                self.fail("the new master outlived the old one")
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", mp.port("imaps")),
                                         timeout=10).close()

    def test_systemd_hears_ready_reloading_and_failures(self):
        path = os.path.join(self.live, "notify.sock")
        listen = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listen.bind(path)
        listen.settimeout(30)
        try:
            mp = self.reloadable(names=("imaps",),
                                 environ={"NOTIFY_SOCKET": path})
            with mp:
                def until(text):
                    heard = ""
                    while text not in heard:
                        heard += listen.recv(4096).decode() + "\n"
                    return heard

                self.assertIn("STATUS=generation 1, 2 workers",
                              until("READY=1"))
                mp.send_signal(signal.SIGHUP)
                heard = until("READY=1")
                self.assertIn("RELOADING=1", heard)
                self.assertIn("STATUS=generation 2, 2 workers (reloaded)",
                              heard)
                with open(mp.config_path, "a") as f:
                    f.write("\nnot a line\n")
                mp.send_signal(signal.SIGHUP)
                self.assertIn("STATUS=reload failed: see the log; "
                              "generation 2 goes on", until("reload failed"))
                self.assertStopsCleanly(mp)
                self.assertIn("STOPPING=1", until("STOPPING=1"))
        finally:
            listen.close()


if __name__ == "__main__":
    unittest.main()
