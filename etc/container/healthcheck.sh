#!/bin/bash
# Container health check for mailproxy, without curl: bash's /dev/tcp.
# Installed in the image as /usr/local/bin/mailproxy-healthcheck and run by
# its HEALTHCHECK. Usage:
#   mailproxy-healthcheck [PATH [PORT]]    (default /healthz 9593)
# Asks GET PATH of the metrics listener on 127.0.0.1 and exits 0 on a
# 200 answer, 1 otherwise (connection refused, another status, no
# answer within 4 s), printing the status line or the reason.
path=${1:-/healthz}
port=${2:-${MAILPROXY_METRICS_PORT:-9593}}

if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
	echo "unhealthy: cannot connect to 127.0.0.1:$port"
	exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
if ! IFS=' ' read -r -t 4 version code reason <&3; then
	echo "unhealthy: no answer from 127.0.0.1:$port$path"
	exit 1
fi
exec 3<&-
reason=${reason%$'\r'}
echo "$path: $code $reason"
[ "$code" = 200 ]
