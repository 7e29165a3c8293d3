#!/bin/sh
# Installs every Debian 12 package mailproxy needs to build and to run its
# tests (real Dovecot and Postfix, real clients). Needs root. Installs only
# what is missing; runs apt-get update first when it installs anything.
set -eu

PACKAGES="cmake gcc make pkg-config libssl-dev libuv1-dev libinih-dev
libcmocka-dev libsystemd-dev clang-format openssl curl python3 procps valgrind
dovecot-imapd dovecot-pop3d postfix haproxy python3-prometheus-client"

missing=""
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
	    grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "tests/deps.sh: missing packages:$missing; run as root" >&2
	exit 1
fi

# The tests start their own Dovecot and Postfix on loopback ports; the
# packages' own services must not start system-wide on install.
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	made_policy=yes
fi
cleanup() { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT

echo "postfix postfix/main_mailer_type select No configuration" |
    debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
