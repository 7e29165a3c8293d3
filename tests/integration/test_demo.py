"""The README's first quick-start command keeps working: the demo runs
the shipped etc/mailproxy.ini (pointed at a demo Dovecot and Postfix) and
checks IMAPS, POP3S and SMTPS with curl. The shipped example itself passes
mailproxy -t once its certificate paths exist.
"""

import os
import re
import subprocess
import sys
import unittest

import mailenv
from proxy import ROOT, binary

HERE = os.path.dirname(os.path.abspath(__file__))


class DemoTest(unittest.TestCase):

    def test_demo_check_passes(self):
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "demo.py"), "--check",
             "--ports", "random"], capture_output=True, timeout=300)
        text = out.stdout.decode("utf-8", "replace")
        self.assertEqual(out.returncode, 0, text + out.stderr.decode())
        self.assertIn("demo: all checks passed", text)
        # IMAPS, POP3S, SMTPS, then IMAP, POP3, submission by STARTTLS.
        self.assertEqual(len(re.findall(r"event=close .*end=", text)), 6,
                         text)
        self.assertEqual(len(re.findall(r"event=close .*starttls=yes", text)),
                         3, text)

    def test_example_config_is_valid(self):
        ca = mailenv.TestCA()
        with open(os.path.join(ROOT, "etc", "mailproxy.ini")) as f:
            text = f.read()
        text = text.replace("/etc/mailproxy/tls/fullchain.pem", ca.chain_pem)
        text = text.replace("/etc/mailproxy/tls/privkey.pem", ca.key_pem)
        path = os.path.join(ca.directory, "example.ini")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([binary(), "-t", "-c", path],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)


if __name__ == "__main__":
    unittest.main()
