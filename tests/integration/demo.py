"""The README's quick start: mailproxy with the shipped example config in
front of a demo Dovecot and Postfix, checked end to end with curl.

Run through etc/demo.sh (which installs and builds first). Options:
  --check   verify and exit (0 when IMAPS, POP3S and SMTPS all work)
  --ports random|standard   listen on free high ports, or on 993/995/465
            (the default: standard when free, else random)
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import mailenv  # noqa: E402
from proxy import Mailproxy, binary  # noqa: E402

EXAMPLE = os.path.join(ROOT, "etc", "mailproxy.ini")
STANDARD = {"imaps": 993, "pop3s": 995, "submissions": 465, "imap": 143,
            "pop3": 110, "submission": 587, "smtp": 25}


def choose_ports(mode):
    """The listeners' ports, and the sockets that hold random ones until
    mailproxy has bound them (mailenv.reserve_port)."""
    if mode == "standard" or (mode == "auto" and all(
            mailenv._port_bindable(p) for p in STANDARD.values())):
        return dict(STANDARD), []
    reserved = {name: mailenv.reserve_port() for name in STANDARD}
    return ({name: port for name, (port, _) in reserved.items()},
            [sock for _, sock in reserved.values()])


def demo_config(env, ca, ports):
    """The shipped example, pointed at the demo servers and certificate."""
    text = open(EXAMPLE).read()
    text = re.sub(r"(?m)^certificate = .*$", "certificate = " + ca.chain_pem,
                  text, count=1)
    text = re.sub(r"(?m)^key = .*$", "key = " + ca.key_pem, text, count=1)
    backends = {"imaps": env.imap_port, "pop3s": env.pop3_port,
                "submissions": env.smtp_port, "imap": env.imap_port,
                "pop3": env.pop3_port, "submission": env.smtp_port,
                "smtp": env.smtp_port}
    for name, port in ports.items():
        section = re.compile(r"(?s)(\[listener %s\].*?)(?=\n\[|\Z)" % name)
        body = section.search(text).group(1)
        new = re.sub(r"(?m)^listen = .*$", "listen = 127.0.0.1:%d" % port,
                     body)
        new = re.sub(r"(?m)^backend = .*$",
                     "backend = 127.0.0.1:%d" % backends[name], new)
        text = text.replace(body, new)
    return text


def run(cmd, stdin=None):
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    out = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    sys.stdout.write(out.stdout.decode("utf-8", "replace"))
    if out.returncode != 0:
        sys.stdout.write(out.stderr.decode("utf-8", "replace"))
    return out.returncode == 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--ports", choices=("auto", "standard", "random"),
                        default="auto")
    args = parser.parse_args()

    with mailenv.MailEnv() as env:
        env.seed_message(mailenv.make_message(
            1200, "Welcome to the mailproxy demo", sender="demo@example.org",
            recipient=env.address))
        ca = mailenv.TestCA(os.path.join(env.tmp, "tls"))
        ports, held = choose_ports(args.ports)
        config = demo_config(env, ca, ports)
        mp = Mailproxy(env, ca, raw_config=config)
        if not run([binary(), "-t", "-c", mp.config_path]):
            return 1
        with mp:
            for sock in held:
                sock.close()
            print("mailproxy listens on 127.0.0.1: " + ", ".join(
                "%s %d" % (name, port) for name, port in ports.items()))
            user = "%s:%s" % (env.user, env.password)
            ok = run(["curl", "-sS", "--cacert", ca.ca_pem, "-u", user,
                      "imaps://localhost:%d/INBOX;UID=1;SECTION=HEADER"
                      % ports["imaps"]])
            ok &= run(["curl", "-sS", "--cacert", ca.ca_pem, "-u", user,
                       "pop3s://localhost:%d/" % ports["pop3s"]])
            message = (b"From: demo@example.org\r\nTo: %s\r\n"
                       b"Subject: sent through mailproxy\r\n\r\nHello.\r\n"
                       % env.address.encode())
            ok &= run(["curl", "-sS", "--cacert", ca.ca_pem,
                       "--mail-from", "demo@example.org",
                       "--mail-rcpt", env.address, "-T", "-",
                       "smtps://localhost:%d" % ports["submissions"]],
                      stdin=message)
            env.wait_for_delivery("sent through mailproxy")
            print("mail delivered through port %d into the Maildir"
                  % ports["submissions"])
            # The STARTTLS listeners: curl refuses to go on in plaintext
            # (--ssl-reqd), and mailproxy refuses a login before TLS.
            ok &= run(["curl", "-sS", "--ssl-reqd", "--cacert", ca.ca_pem,
                       "-u", user,
                       "imap://localhost:%d/INBOX;UID=1;SECTION=HEADER"
                       % ports["imap"]])
            ok &= run(["curl", "-sS", "--ssl-reqd", "--cacert", ca.ca_pem,
                       "-u", user, "pop3://localhost:%d/" % ports["pop3"]])
            ok &= run(["curl", "-sS", "--ssl-reqd", "--cacert", ca.ca_pem,
                       "--mail-from", "demo@example.org",
                       "--mail-rcpt", env.address, "-T", "-",
                       "smtp://localhost:%d" % ports["submission"]],
                      stdin=message.replace(b"through mailproxy",
                                            b"by STARTTLS"))
            env.wait_for_delivery("sent by STARTTLS")
            print("mail delivered through port %d (STARTTLS) into the "
                  "Maildir" % ports["submission"])
            print("\nconnection log (%s):" % mp.log_path)
            for line in mp.log_text().splitlines():
                if "event=" in line:
                    print("  " + line)
            if not ok:
                print("demo: a check failed")
                return 1
            if args.check:
                print("demo: all checks passed")
                return 0 if mp.stop() == 0 else 1
            print("""
mailproxy is running with %s
(the example config, pointed at a demo Dovecot and Postfix on loopback).
Try it:

  curl --cacert %s -u %s imaps://localhost:%d/INBOX
  curl --cacert %s -u %s pop3s://localhost:%d/1
  curl --ssl-reqd --cacert %s -u %s imap://localhost:%d/INBOX
  openssl s_client -connect localhost:%d -CAfile %s -quiet
  openssl s_client -starttls smtp -connect localhost:%d -CAfile %s -quiet

Press Ctrl-C to stop everything.""" % (
                mp.config_path, ca.ca_pem, user, ports["imaps"], ca.ca_pem,
                user, ports["pop3s"], ca.ca_pem, user, ports["imap"],
                ports["imaps"], ca.ca_pem, ports["submission"], ca.ca_pem),
                flush=True)
            try:
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                pass
            print("stopping mailproxy, Dovecot and Postfix")
            return 0 if mp.stop() == 0 else 1


def on_term(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    sys.exit(main())
