#!/bin/bash
# Builds the container image (etc/container/Dockerfile) with podman and runs
# it: IMAPS through it to a scripted IMAP backend, the image's HEALTHCHECK,
# the shipped configuration under `mailproxy -t`, the user and capabilities,
# SIGHUP reload, and SIGTERM draining an open session. Run as root from
# anywhere:
#
#   tests/container/test_image.sh
#
# Exit status: 0 passed, 1 failed, 77 skipped (this machine cannot build or
# run containers; the reason is printed).
#
# No registry is needed: the base image is made locally with debootstrap
# (Debian 12 minbase, trimmed like debian:bookworm-slim) from the mirror
# this machine's APT uses, and imported as localhost/debian:bookworm-slim.
# It is kept for the next run (remove it with `podman rmi
# localhost/debian:bookworm-slim`); everything else (the image built, the
# container, the scripted backend, temporary files) is removed at the end.
# What is missing is installed with apt-get: podman, debootstrap, and runc
# where crun cannot run containers here.
#
# Environment:
#   MAILPROXY_TEST_BASE    base image (default localhost/debian:bookworm-slim;
#                          made with debootstrap when it is that name and
#                          missing; any other name must exist already)
#   MAILPROXY_TEST_MIRROR  Debian mirror for debootstrap and the base
#                          image's APT (default: this machine's)
#   MAILPROXY_TEST_KEEP=1  keep the built image and the temporary directory
# pipefail: mind `cmd | grep -q`, where grep's early exit fails cmd.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${MAILPROXY_TEST_BASE:-localhost/debian:bookworm-slim}
NAME=mailproxy-test-$$
IMAGE=localhost/mailproxy:test-$$
WORK=
GREETER_PID=
PODMAN=(podman)
T0=$SECONDS

say() { printf '%s [%3ds] %s\n' "test_image:" $((SECONDS - T0)) "$*"; }
skip() { say "SKIP: $*"; exit 77; }
fail() {
	say "FAIL: $*"
	if [ -n "$WORK" ] && "${PODMAN[@]}" container exists "$NAME" 2>/dev/null; then
		echo "--- container log:"
		"${PODMAN[@]}" logs "$NAME" 2>&1 | tail -30
	fi
	exit 1
}

cleanup() {
	local rc=$?
	if [ -n "$WORK" ]; then
		"${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1
		if [ "${MAILPROXY_TEST_KEEP:-}" != 1 ]; then
			"${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
		fi
	fi
	if [ -n "$GREETER_PID" ]; then
		kill "$GREETER_PID" 2>/dev/null
		wait "$GREETER_PID" 2>/dev/null
	fi
	if [ -n "$WORK" ] && [ "${MAILPROXY_TEST_KEEP:-}" != 1 ]; then
		rm -rf "$WORK"
	elif [ -n "$WORK" ]; then
		say "kept $WORK and $IMAGE"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" = 0 ] || skip "needs root (rootful podman, debootstrap)"
command -v python3 >/dev/null || skip "needs python3 on the host"
command -v openssl >/dev/null || skip "needs openssl on the host"

# --- tools ---------------------------------------------------------------
need=()
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
	command -v apt-get >/dev/null || skip "no podman/debootstrap and no apt-get to install them"
	say "installing ${need[*]}"
	if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq "${need[@]}") >/dev/null 2>&1; then
		skip "apt-get install ${need[*]} failed (no network or no mirror?)"
	fi
fi

WORK=$(mktemp -d /tmp/mailproxy-container-test.XXXXXX)
chmod 0755 "$WORK"

# --- the base image ------------------------------------------------------
mirror_of() {   # the first URI of this machine's APT sources ending in $1
	local uri
	uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
	    /etc/apt/sources.list.d/*.sources 2>/dev/null |
	    grep -oE '(https?|file)://[^ ]+' | grep -E "$1/?\$" | head -1)
	echo "${uri%/}"
}

make_base() {
	local mirror security rootfs=$WORK/rootfs
	mirror=${MAILPROXY_TEST_MIRROR:-$(mirror_of /debian)}
	mirror=${mirror:-http://deb.debian.org/debian}
	security=$(mirror_of /debian-security)
	security=${security:-${mirror%/debian}/debian-security}
	say "making $BASE with debootstrap from $mirror (a minute or two)"
	if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
	    >"$WORK/debootstrap.log" 2>&1; then
		tail -5 "$WORK/debootstrap.log"
		skip "debootstrap failed (no network or no mirror?); log above"
	fi
	# Trim it as the official debian:bookworm-slim is trimmed.
	rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
	    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
	    "$rootfs"/var/log/apt/* "$rootfs"/usr/share/man/* \
	    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
	    "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
	find "$rootfs"/usr/share/doc -mindepth 2 ! -name copyright -delete 2>/dev/null
	: >"$rootfs"/etc/machine-id
	rm -f "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname \
	    "$rootfs"/etc/apt/sources.list
	cat >"$rootfs"/etc/apt/sources.list.d/debian.sources <<-EOF
		Types: deb
		URIs: $mirror
		Suites: bookworm bookworm-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: $security
		Suites: bookworm-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	cat >"$rootfs"/etc/dpkg/dpkg.cfg.d/docker <<-'EOF'
		path-exclude /usr/share/doc/*
		path-include /usr/share/doc/*/copyright
		path-exclude /usr/share/man/*
		path-exclude /usr/share/groff/*
		path-exclude /usr/share/info/*
		path-exclude /usr/share/lintian/*
		path-exclude /usr/share/linda/*
		path-exclude /usr/share/locale/*
	EOF
	cat >"$rootfs"/etc/apt/apt.conf.d/docker-clean <<-'EOF'
		DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
	EOF
	echo 'Acquire::Languages "none";' \
	    >"$rootfs"/etc/apt/apt.conf.d/docker-no-languages
	printf '#!/bin/sh\nexit 101\n' >"$rootfs"/usr/sbin/policy-rc.d
	chmod 0755 "$rootfs"/usr/sbin/policy-rc.d
	tar --numeric-owner -C "$rootfs" -c . |
	    "${PODMAN[@]}" import --change 'CMD ["bash"]' - "$BASE" >/dev/null 2>&1 ||
	    fail "podman import of the debootstrap tree failed"
	rm -rf "$rootfs"
}

# --- can podman run containers here? --------------------------------------
# Tried in turn, the first that runs `true` in the base image wins:
#   the system's configuration;
#   ulimits within this machine's hard limits (root podman asks for
#   nofile 1048576, refused without CAP_SYS_RESOURCE);
#   that with runc (crun 1.8 refuses a cgroup v1 host whose cgroup2
#   hierarchy has controllers: "cgroups in hybrid mode not supported").
# Without systemd, podman needs cgroupfs and a file for events.
if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
	PODMAN+=(--cgroup-manager cgroupfs --events-backend file)
fi
if ! "${PODMAN[@]}" info >"$WORK/info.log" 2>&1; then
	# No overlay here (a container in a container): vfs, in its own store.
	PODMAN+=(--storage-driver vfs --root /var/lib/containers/storage-vfs
	    --runroot /run/containers/storage-vfs)
	"${PODMAN[@]}" info >"$WORK/info.log" 2>&1 ||
	    skip "podman info fails, also with vfs storage: $(tail -3 "$WORK/info.log")"
fi

if ! "${PODMAN[@]}" image exists "$BASE"; then
	[ "$BASE" = localhost/debian:bookworm-slim ] ||
	    skip "base image $BASE is missing (set MAILPROXY_TEST_BASE or leave it unset)"
	make_base
fi

try_run() {
	"${PODMAN[@]}" run --rm --network none "$BASE" true >"$WORK/try.log" 2>&1
}
conf=$WORK/containers.conf
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
write_conf() {
	{
		echo '[containers]'
		echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=4096:4096\"]"
		if [ -n "${1:-}" ]; then
			echo '[engine]'
			echo "runtime = \"$1\""
		fi
	} >"$conf"
}
why=()
if ! try_run; then
	why+=("system configuration: $(tail -1 "$WORK/try.log")")
	write_conf
	export CONTAINERS_CONF=$conf
	if ! try_run; then
		why+=("ulimits nofile=$nofile nproc=4096: $(tail -1 "$WORK/try.log")")
		if ! command -v runc >/dev/null && command -v apt-get >/dev/null; then
			say "installing runc"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc \
			    >/dev/null 2>&1
		fi
		write_conf runc
		if ! try_run; then
			why+=("runc: $(tail -1 "$WORK/try.log")")
			printf '  %s\n' "${why[@]}"
			skip "podman cannot run a container on this machine (tries above)"
		fi
	fi
	say "podman runs containers with $(cat "$conf" | tr '\n' ' ')"
fi

# --- build ---------------------------------------------------------------
commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
say "building $IMAGE from $BASE"
build_start=$SECONDS
# --layers=false: no intermediate images are left behind.
# --format docker: keep HEALTHCHECK (the OCI format has none).
if ! "${PODMAN[@]}" build --layers=false --format docker \
    --build-arg BASE="$BASE" --build-arg MAILPROXY_COMMIT="$commit" \
    -f "$ROOT/etc/container/Dockerfile" -t "$IMAGE" "$ROOT" \
    >"$WORK/build.log" 2>&1; then
	tail -30 "$WORK/build.log"
	fail "podman build failed (log above)"
fi
say "built in $((SECONDS - build_start)) s: $("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}') bytes"

inspect() { "${PODMAN[@]}" image inspect "$IMAGE" --format "$1"; }
[ "$(inspect '{{.Config.User}}')" = 10993:10993 ] || fail "image user is not 10993:10993"
[ "$(inspect '{{.Config.StopSignal}}')" = SIGTERM ] || fail "STOPSIGNAL is not SIGTERM"
case $(inspect '{{.Config.Healthcheck.Test}}') in
*mailproxy-healthcheck*) ;;
*) fail "no HEALTHCHECK in the image" ;;
esac

# --- test certificate, configuration, backend ----------------------------
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 30 -subj /CN=mail.example.test \
    -addext subjectAltName=DNS:mail.example.test \
    -keyout "$WORK/tls/privkey.pem" -out "$WORK/tls/fullchain.pem" \
    >/dev/null 2>&1 || fail "openssl req failed"
# As an operator would: the key readable by the image's group only.
chgrp 10993 "$WORK/tls/privkey.pem" && chmod 0640 "$WORK/tls/privkey.pem"
chmod 0755 "$WORK/tls"

# The shipped configuration, checked as it is.
out=$("${PODMAN[@]}" run --rm --network none \
    -v "$WORK/tls:/etc/mailproxy/tls:ro" "$IMAGE" -t 2>&1) ||
    fail "mailproxy -t rejects etc/container/mailproxy.ini: $out"
say "mailproxy -t accepts the shipped configuration"

read -r P_IMAPS P_POP3S P_SMTPS P_METRICS P_BACKEND < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# The shipped configuration again, on loopback ports of the host network,
# in front of the scripted backend, with a 3 s drain to test SIGTERM.
sed -e "s/^listen = \*:1993/listen = 127.0.0.1:$P_IMAPS/" \
    -e "s/^listen = \*:1995/listen = 127.0.0.1:$P_POP3S/" \
    -e "s/^listen = \*:1465/listen = 127.0.0.1:$P_SMTPS/" \
    -e "s/^listen = 0.0.0.0:9593/listen = 127.0.0.1:$P_METRICS/" \
    -e "s/^backend = dovecot:143/backend = 127.0.0.1:$P_BACKEND/" \
    -e "s/^drain_timeout = .*/drain_timeout = 3s/" \
    "$ROOT/etc/container/mailproxy.ini" >"$WORK/mailproxy.ini"
grep -q "127.0.0.1:$P_BACKEND" "$WORK/mailproxy.ini" &&
    grep -q "127.0.0.1:$P_METRICS" "$WORK/mailproxy.ini" ||
    fail "etc/container/mailproxy.ini no longer has the lines this test rewrites"
chmod 0644 "$WORK/mailproxy.ini"

cat >"$WORK/greeter.py" <<'EOF'
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
def serve(c):
    with c:
        c.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] backend ready.\r\n")
        for line in c.makefile("rb"):
            tag = line.split(b" ", 1)[0]
            if line.upper().split()[1:2] == [b"LOGOUT"]:
                c.sendall(b"* BYE bye\r\n" + tag + b" OK LOGOUT completed.\r\n")
                return
            c.sendall(tag + b" OK done.\r\n")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
python3 "$WORK/greeter.py" "$P_BACKEND" &
GREETER_PID=$!

# --- run -------------------------------------------------------------------
# As locked down as it is meant to run: read-only root, no capability, no
# privilege gain, the image's user.
say "running $NAME (host network, read-only, --cap-drop ALL)"
"${PODMAN[@]}" run -d --name "$NAME" --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --health-interval disable -e MAILPROXY_METRICS_PORT="$P_METRICS" \
    -v "$WORK/mailproxy.ini:/etc/mailproxy/mailproxy.ini:ro" \
    -v "$WORK/tls:/etc/mailproxy/tls:ro" \
    "$IMAGE" >"$WORK/run.log" 2>&1 || fail "podman run failed: $(tail -3 "$WORK/run.log")"

for _ in $(seq 50); do
	"${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'started with' >/dev/null && break
	sleep 0.2
done
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'started with' >/dev/null || fail "mailproxy did not start"

imaps() {   # connect, check the greeting, NOOP, LOGOUT; prints the TLS version
	python3 - "$P_IMAPS" "$WORK/tls/fullchain.pem" <<-'EOF'
		import imaplib, ssl, sys
		ctx = ssl.create_default_context(cafile=sys.argv[2])
		ctx.check_hostname = False
		m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx, timeout=10)
		assert b"backend ready" in m.welcome, m.welcome
		assert m.noop()[0] == "OK"
		v = m.sock.version()
		assert m.logout()[0] == "BYE"
		print(v)
	EOF
}
v=$(imaps) || fail "IMAPS through the container failed"
say "IMAPS answers ($v, greeting relayed from the backend)"

"${PODMAN[@]}" healthcheck run "$NAME" >"$WORK/health.log" 2>&1 ||
    fail "the image's HEALTHCHECK fails: $(cat "$WORK/health.log")"
out=$("${PODMAN[@]}" exec "$NAME" mailproxy-healthcheck /readyz 2>&1) ||
    fail "/readyz: $out"
say "HEALTHCHECK passes (podman healthcheck run); $out"

# Unprivileged: every process 10993, no capability at all.
procs=$("${PODMAN[@]}" exec "$NAME" bash -c \
    'for s in /proc/[0-9]*/status; do
	     while read -r k a b; do
	         case $k in Uid:) u=$a;; CapEff:) c=$b$a;; esac
	     done < $s; echo "$u $c"
	 done' 2>&1) || fail "cannot list the container's processes: $procs"
if echo "$procs" | grep -qv '^10993 0000000000000000$'; then
	fail "a process is not uid 10993 without capabilities: $procs"
fi
say "all $(echo "$procs" | wc -l) processes (master, workers, metrics, the probe) run as 10993 with no capability"

# SIGHUP: a new generation, still serving.
"${PODMAN[@]}" kill -s HUP "$NAME" >/dev/null || fail "podman kill -s HUP failed"
for _ in $(seq 50); do
	"${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'generation 2 started' >/dev/null && break
	sleep 0.2
done
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'generation 2 started' >/dev/null ||
    fail "no reload after SIGHUP"
imaps >/dev/null || fail "IMAPS after the reload failed"
say "SIGHUP reloads (generation 2) and IMAPS still answers"

# SIGTERM with a session open: the client hears the goodbye after
# drain_timeout (3 s here), and the container exits 0.
python3 - "$P_IMAPS" "$WORK/tls/fullchain.pem" "$WORK/drained" <<'EOF' &
import imaplib, ssl, sys, time, os
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx, timeout=30)
m.login("alice", "secret")
open(sys.argv[3] + ".open", "w").close()
t = time.monotonic()
data = b""
while True:
    chunk = m.sock.recv(4096)
    if not chunk:
        break
    data += chunk
with open(sys.argv[3], "w") as f:
    f.write("%.1f %r\n" % (time.monotonic() - t, data))
EOF
client=$!
for _ in $(seq 50); do [ -e "$WORK/drained.open" ] && break; sleep 0.1; done
[ -e "$WORK/drained.open" ] || fail "could not open a session to drain"
stop_start=$SECONDS
"${PODMAN[@]}" stop -t 40 "$NAME" >/dev/null 2>&1 || fail "podman stop failed"
stop_s=$((SECONDS - stop_start))
wait "$client"
rc=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')
[ "$rc" = 0 ] || fail "mailproxy exited $rc after SIGTERM"
grep -q "Server shutting down" "$WORK/drained" ||
    fail "the open session did not hear the goodbye: $(cat "$WORK/drained")"
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'end=shutdown' >/dev/null ||
    fail "no end=shutdown log line"
[ "$stop_s" -ge 2 ] && [ "$stop_s" -le 15 ] ||
    fail "podman stop took $stop_s s with drain_timeout 3s"
say "SIGTERM drained the open session for drain_timeout (stop took $stop_s s; client: $(cut -c1-60 "$WORK/drained")), exit 0"

say "PASS in $((SECONDS - T0)) s"
exit 0
