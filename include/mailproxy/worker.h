/*
 * A worker: one process forked by the master, one uv_loop_t on the
 * listening sockets the master opened, its own sessions with their chunk
 * pool (struct session_host). It inherits the configuration and the
 * SSL_CTXs of its generation at fork and shares nothing mutable with any
 * other process (the design's process model). The master talks to it by
 * signals only:
 *
 *   SIGTERM  stop accepting; end the sessions at drain_timeout (stop)
 *   SIGINT   stop accepting; end the sessions now
 *   SIGQUIT  stop accepting; serve the sessions for reload_drain_timeout,
 *            then end what is left spread over WORKER_SPREAD_MS (reload)
 *   SIGUSR2  as SIGQUIT, but the deadline is now (too many generations)
 *   SIGUSR1  reopen the log file
 *
 * A worker whose master dies gets SIGTERM from the kernel.
 */
#ifndef MAILPROXY_WORKER_H
#define MAILPROXY_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/metrics.h"
#include "mailproxy/session.h"

#define WORKER_MAGIC 0x3023c3e1u

/* Sessions left at a retiring worker's deadline end spread over this, so
 * their clients do not all reconnect in the same second. */
#define WORKER_SPREAD_MS 60000

struct worker;

/* One [listener] as a worker runs it. */
struct worker_listener {
	struct worker *worker;
	struct session_listener session; /* what its sessions see */
	size_t socket_count;             /* one per listen address */
	uv_tcp_t *sockets;
};

/* What the master hands a worker it forks. */
struct worker_spec {
	unsigned index;      /* slot within the generation */
	unsigned workers;    /* how many the generation has */
	unsigned generation; /* 1 for the first, +1 per reload */
	pid_t master;        /* to notice the master is gone */
	struct config *cfg;
	SSL_CTX *const *ctxs; /* one per listener of cfg */
	const int *fds;     /* per listener in order, one per listen address */
	size_t session_max; /* this process's sessions before end=limit */
	int ready_fd;       /* where to write its pid once it listens */
	struct metrics_shared *metrics; /* the instance's counters */
	int metrics_slot;               /* this worker's; -1: none */
	uint64_t max_sessions; /* the instance's, all workers together */
};

struct worker {
	uint32_t magic;
	const struct worker_spec *spec;
	uv_loop_t loop;
	int sigfd; /* the master's signals, read in the loop */
	uv_poll_t sigpoll;
	uv_timer_t drain_timer;
	bool draining;       /* listeners closed */
	bool retiring;       /* replaced by a reload: spread the last ends */
	bool spreading;      /* past the deadline, ending a batch a second */
	bool finishing;      /* last handles closing; the loop is ending */
	size_t spread_batch; /* sessions ended per spread tick */
	struct config *cfg;
	struct worker_listener *listeners;
	size_t listener_count;
	struct session_host sessions;
	size_t session_peak; /* most sessions since the heap was last trimmed */
	atomic_size_t process_sessions;
	struct metrics_worker metrics;
};

/*
 * Runs a worker in the process the master just forked, until its last
 * session has ended after a stop or a retirement. Returns the exit
 * status for the process (0: ended as asked). Logs what fails.
 */
int worker_run(const struct worker_spec *spec);

#endif
