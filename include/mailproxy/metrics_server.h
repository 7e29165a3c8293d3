/*
 * The metrics process: one process the master forks (and replaces, and
 * starts again on a reload) when [metrics] listen is set. It drops to
 * the workers' user, so that the privileged master never parses a byte
 * from the network, and serves from the shared counters (metrics.h):
 *
 *   GET /metrics  Prometheus text format 0.0.4
 *   GET /healthz  200 while the master supervises (it beat in the last
 *                 METRICS_HEARTBEAT_MAX_MS), else 503
 *   GET /readyz   200 once a worker of the current generation listens
 *                 and nothing is stopping; with readyz_backends, also
 *                 only when every backend accepts a connection
 *
 * HTTP/1.0 and 1.1, GET and HEAD, one request per connection, closed
 * after the answer. Bounded: METRICS_CONNS_MAX connections (a new one
 * past it takes the place of the oldest still sending its request), a
 * request head of HTTP_HEAD_MAX within METRICS_REQUEST_MS.
 */
#ifndef MAILPROXY_METRICS_SERVER_H
#define MAILPROXY_METRICS_SERVER_H

#include <sys/types.h>

#include "mailproxy/config.h"
#include "mailproxy/metrics.h"

#define METRICS_CONNS_MAX        64
#define METRICS_REQUEST_MS       5000  /* for the whole request head */
#define METRICS_ANSWER_MS        10000 /* from accept to the last byte */
#define METRICS_LINGER_MS        2000  /* reading the rest after the answer */
#define METRICS_PROBE_MS         2000  /* a backend's connect, /readyz */
#define METRICS_HEARTBEAT_MS     1000  /* the master beats this often */
#define METRICS_HEARTBEAT_MAX_MS 5000

struct metrics_server_spec {
	pid_t master;
	int fd; /* the listening socket, the master's */
	const struct config *cfg;
	struct metrics_shared *shm;
};

/* Runs in the process the master forked until SIGTERM; returns its exit
 * status. */
int metrics_server_run(const struct metrics_server_spec *spec);

#endif
