#!/bin/sh
# Quick start on a fresh Debian 12 machine (as root): installs what is
# missing, builds mailproxy, and runs it with the shipped example config in
# front of a demo Dovecot and Postfix on this machine's loopback, with a
# freshly made certificate. It checks IMAPS, POP3S and SMTPS end to end,
# prints the curl and openssl commands to try, and runs until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build -j "$(nproc)" > /dev/null
exec python3 tests/integration/demo.py "$@"
