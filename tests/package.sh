#!/bin/sh
# The Debian package, end to end: builds it from a clean copy of the tree
# (dpkg-buildpackage -b, unit tests included), runs lintian (errors fail),
# installs it with apt-get, and checks what it installed: the user
# mailproxy in the group ssl-cert, the conffile on the snakeoil
# certificate passing -t as that user, --version, the man pages, the unit's
# systemd-analyze exposure (at most 2.0), and the binary serving the
# snakeoil certificate as mailproxy with the packaged configuration moved
# to free high ports. Then it purges the package, also on failure, and
# undoes what the install added (the user, ssl-cert and its snakeoil pair
# when they were not there before). Run as root on Debian 12; installs the
# build dependencies that are missing.
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
t0=$(date +%s)
step() { echo "== [$(($(date +%s) - t0))s] $*"; }
fail() { echo "tests/package.sh: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root"
if dpkg-query -W -f='${Status}' mailproxy 2>/dev/null | grep -q installed; then
	fail "the package mailproxy is installed already; purge it first"
fi

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null |
	    grep -q "install ok installed"
}

# Port $1 has a listening TCP socket (IPv4 or IPv6).
port_busy() {
	awk -v p="$(printf '%04X' "$1")" \
	    'FNR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) f = 1 }
	     END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# What the machine had before, to leave it so.
had_user=""; getent passwd mailproxy >/dev/null && had_user=yes
had_group=""; getent group mailproxy >/dev/null && had_group=yes
had_sslcert=""; installed ssl-cert && had_sslcert=yes
had_snakeoil=""
[ -e /etc/ssl/certs/ssl-cert-snakeoil.pem ] && had_snakeoil=yes

work=$(mktemp -d /tmp/mailproxy-package.XXXXXX)
chmod 755 "$work"
pid=""
installed_pkg=""
ok=""
cleanup() {
	set +e
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null
	fi
	if [ -n "$installed_pkg" ]; then
		step "purging the package"
		apt-get purge -y -q mailproxy >"$work/purge.log" 2>&1 ||
		    cat "$work/purge.log"
		[ -n "$had_sslcert" ] ||
		    apt-get purge -y -q ssl-cert >>"$work/purge.log" 2>&1
		if [ -z "$had_user" ] && getent passwd mailproxy >/dev/null; then
			deluser --quiet --system mailproxy >/dev/null 2>&1
		fi
		if [ -z "$had_group" ] && getent group mailproxy >/dev/null; then
			delgroup --quiet --system mailproxy >/dev/null 2>&1
		fi
		if [ -z "$had_snakeoil" ]; then
			find /etc/ssl/certs -maxdepth 1 \
			    -lname ssl-cert-snakeoil.pem -delete
			rm -f /etc/ssl/certs/ssl-cert-snakeoil.pem \
			    /etc/ssl/private/ssl-cert-snakeoil.key
		fi
	fi
	if [ -n "$ok" ]; then
		rm -rf "$work"
		echo "tests/package.sh: passed in $(($(date +%s) - t0)) s"
	else
		echo "tests/package.sh: logs kept in $work" >&2
	fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

export DEBIAN_FRONTEND=noninteractive

step "build dependencies"
deps="build-essential debhelper dpkg-dev lintian cmake pkg-config
libssl-dev libuv1-dev libinih-dev libsystemd-dev libcmocka-dev python3
openssl"
missing=""
for p in $deps; do
	installed "$p" || missing="$missing $p"
done
# The install below takes ssl-cert and adduser from the archive: it needs
# package lists that know them.
need_update=""
[ -n "$missing" ] && need_update=yes
for p in ssl-cert adduser; do
	installed "$p" || apt-cache show "$p" >/dev/null 2>&1 ||
	    need_update=yes
done
if [ -n "$need_update" ]; then
	apt-get update -q >"$work/apt-update.log" 2>&1 ||
	    { cat "$work/apt-update.log"; fail "apt-get update"; }
fi
if [ -n "$missing" ]; then
	echo "installing:$missing"
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing \
	    >"$work/apt-deps.log" 2>&1 ||
	    { tail -30 "$work/apt-deps.log"; fail "installing$missing"; }
fi

step "copying the tree to $work/mailproxy"
mkdir "$work/mailproxy"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	# Tracked and untracked files, not what .gitignore names (build*/).
	git -C "$src" ls-files -z -co --exclude-standard |
	    tar -C "$src" --null -T - --ignore-failed-read -cf - 2>/dev/null |
	    tar -C "$work/mailproxy" -xf -
else
	tar -C "$src" --exclude='./build*' --exclude=./.git \
	    --exclude=./.cache -cf - . | tar -C "$work/mailproxy" -xf -
fi

step "dpkg-buildpackage -us -uc -b"
(cd "$work/mailproxy" &&
    DEB_BUILD_OPTIONS="parallel=$(nproc)" \
    dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
    { tail -60 "$work/build.log"; fail "dpkg-buildpackage"; }
grep -E '^[0-9]+% tests passed|tests failed' "$work/build.log" || true
deb=$(ls "$work"/mailproxy_*.deb)
changes=$(ls "$work"/mailproxy_*.changes)
dpkg-deb -c "$deb" | awk '{ print $1, $6, $7, $8 }'

step "lintian (errors fail; warnings and info shown)"
lintian --fail-on error --display-info "$changes" ||
    fail "lintian found errors"

step "apt-get install $(basename "$deb")"
ports_free=yes
for p in 993 995 465; do
	port_busy "$p" && ports_free=""
done
installed_pkg=yes
(cd "$work" && apt-get install -y -q "./$(basename "$deb")") \
    >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "apt-get install"; }
installed ssl-cert || fail "ssl-cert was not installed"

step "the user mailproxy"
getent passwd mailproxy || fail "no user mailproxy"
id mailproxy
[ "$(id -gn mailproxy)" = mailproxy ] || fail "primary group is not mailproxy"
id -Gn mailproxy | tr ' ' '\n' | grep -qx ssl-cert ||
    fail "mailproxy is not in the group ssl-cert"
[ "$(getent passwd mailproxy | cut -d: -f6)" = /nonexistent ] ||
    fail "home is not /nonexistent"
[ "$(id -u mailproxy)" -lt 1000 ] || fail "mailproxy is not a system user"

step "the conffile and mailproxy -t as mailproxy"
conf=/etc/mailproxy/mailproxy.ini
dpkg-query -W -f='${Conffiles}\n' mailproxy | grep -q " $conf " ||
    fail "$conf is not a conffile"
grep -q '^certificate = /etc/ssl/certs/ssl-cert-snakeoil.pem$' "$conf" ||
    fail "$conf is not the packaged configuration"
grep -q '^user' "$conf" && fail "$conf sets user"
# -t binds every address for a moment: as the unit runs it (ExecStartPre),
# with the ambient capability to bind ports below 1024.
setpriv --reuid=mailproxy --regid=mailproxy --init-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=+net_bind_service \
    -- /usr/sbin/mailproxy -t -c "$conf" ||
    fail "mailproxy -t as mailproxy with CAP_NET_BIND_SERVICE"
# A copy on free high ports, for runuser (no capability) and for the run
# below.
run="$work/run"
mkdir "$run"
chmod 755 "$run"
port=19930
for old in 993 995 465; do
	while port_busy "$port"; do port=$((port + 1)); done
	eval "p$old=$port"
	port=$((port + 1))
done
# shellcheck disable=SC2154
sed -e "s/^listen = \*:993\$/listen = 127.0.0.1:$p993/" \
    -e "s/^listen = \*:995\$/listen = 127.0.0.1:$p995/" \
    -e "s/^listen = \*:465\$/listen = 127.0.0.1:$p465/" \
    "$conf" >"$run/mailproxy.ini"
chmod 644 "$run/mailproxy.ini"
[ "$(grep -c '^listen = 127.0.0.1:' "$run/mailproxy.ini")" = 3 ] ||
    fail "the listen lines of $conf were not found"
runuser -u mailproxy -- /usr/sbin/mailproxy -t -c "$run/mailproxy.ini" ||
    fail "runuser -u mailproxy -- mailproxy -t (high ports)"

step "mailproxy --version, the package's files"
version=$(/usr/sbin/mailproxy --version)
echo "$version"
want=$(dpkg-query -W -f='${Version}' mailproxy)
echo "$version" | grep -q "^mailproxy ${want%-*} (commit debian-$want," ||
    fail "--version does not name the package version $want"
# From the .deb: an image's dpkg path-exclude may keep man and doc off disk.
for f in ./usr/share/man/man8/mailproxy.8.gz \
    ./usr/share/man/man5/mailproxy.ini.5.gz \
    ./usr/share/doc/mailproxy/copyright \
    ./usr/share/doc/mailproxy/examples/mailproxy.ini \
    ./etc/logrotate.d/mailproxy; do
	dpkg-deb -c "$deb" | awk '{ print $6 }' | grep -qx "$f" ||
	    fail "$f is not in the package"
done
if command -v logrotate >/dev/null; then
	logrotate -d /etc/logrotate.d/mailproxy >"$work/logrotate.txt" 2>&1 ||
	    { cat "$work/logrotate.txt"; fail "logrotate -d"; }
	echo "logrotate -d /etc/logrotate.d/mailproxy: ok"
fi

step "the systemd unit"
unit=/lib/systemd/system/mailproxy.service
[ -f "$unit" ] || fail "$unit missing"
grep -q '^ExecStart=/usr/sbin/mailproxy ' "$unit" ||
    fail "$unit does not start /usr/sbin/mailproxy"
# verify checks the unit as systemd would load it; without man-db (or
# with the man pages excluded) only its Documentation= check fails.
vrc=0
systemd-analyze verify "$unit" >"$work/verify.txt" 2>&1 || vrc=$?
if [ "$vrc" != 0 ] && grep -qv "Command 'man " "$work/verify.txt"; then
	cat "$work/verify.txt"
	fail "systemd-analyze verify $unit"
fi
echo "systemd-analyze verify: ok$(grep -q "Command 'man " \
    "$work/verify.txt" && echo " (but for: man cannot show the man pages)")"
systemd-analyze security --offline=true --no-pager "$unit" \
    >"$work/security.txt" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for mailproxy.service: \([0-9.]*\).*/\1/p' \
    "$work/security.txt")
[ -n "$score" ] || { cat "$work/security.txt"; fail "no exposure level"; }
echo "systemd-analyze security --offline=true: exposure level $score"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' ||
    { cat "$work/security.txt"; fail "exposure level $score > 2.0"; }
if [ -d /run/systemd/system ]; then
	if [ -n "$ports_free" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
		systemctl is-active mailproxy ||
		    { journalctl -u mailproxy --no-pager | tail -30
		      fail "the service did not start"; }
		echo "mailproxy.service is active"
	else
		echo "skipped: is mailproxy.service active (993/995/465 were" \
		    "busy, or policy-rc.d forbids starts)"
	fi
else
	echo "skipped: is mailproxy.service active (systemd is not running)"
fi

step "the packaged configuration served as mailproxy on free ports"
setpriv --reuid=mailproxy --regid=mailproxy --init-groups --inh-caps=-all \
    -- /usr/sbin/mailproxy -c "$run/mailproxy.ini" >"$run/log" 2>&1 &
pid=$!
i=0
until port_busy "$p993" && port_busy "$p995" && port_busy "$p465"; do
	kill -0 "$pid" 2>/dev/null || { cat "$run/log"; fail "mailproxy exited"; }
	i=$((i + 1))
	[ "$i" -le 100 ] || { cat "$run/log"; fail "mailproxy does not listen"; }
	sleep 0.1
done
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" = "$(id -u mailproxy)" ] ||
    fail "mailproxy does not run as mailproxy"
want=$(openssl x509 -in /etc/ssl/certs/ssl-cert-snakeoil.pem -noout \
    -fingerprint -sha256)
for p in "$p993" "$p995" "$p465"; do
	got=$(openssl s_client -connect "127.0.0.1:$p" -servername localhost \
	    </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256) ||
	    got="(no certificate)"
	echo "127.0.0.1:$p: $got"
	[ "$got" = "$want" ] ||
	    { cat "$run/log"; fail "127.0.0.1:$p does not serve the snakeoil certificate"; }
done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
[ "$status" = 0 ] || { cat "$run/log"; fail "mailproxy exited $status on SIGTERM"; }
sed 's/^/  log: /' "$run/log"

ok=yes
step "all checks passed"
