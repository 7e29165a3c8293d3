/*
 * A worker: one thread running one uv_loop_t with its own listening
 * sockets (SO_REUSEPORT, so the kernel spreads connections) and its own
 * sessions, with their chunk pool (struct session_host). Workers share only
 * immutable things: the configuration snapshot and the SSL_CTXs (DESIGN.md §2).
 * The main thread talks to a worker through one atomic command and
 * uv_async_send.
 */
#ifndef MAILPROXY_WORKER_H
#define MAILPROXY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/session.h"

struct worker;

#define WORKER_MAGIC 0x3023c3e1u

/* One [listener] as a worker runs it. */
struct worker_listener {
	struct worker *worker;
	struct session_listener session; /* what its sessions see */
	size_t socket_count;             /* one per listen address */
	uv_tcp_t *sockets;
};

enum worker_command {
	WORKER_RUN,
	WORKER_DRAIN, /* stop accepting; end sessions at the drain timeout */
	WORKER_STOP,  /* stop accepting; end sessions now */
};

struct worker {
	uint32_t magic;
	unsigned index;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t wakeup;      /* main -> worker: look at command */
	uv_mutex_t wakeup_lock; /* wakeup is not sent while it closes */
	bool wakeup_closed;     /* under wakeup_lock */
	uv_timer_t drain_timer;
	atomic_int command;
	atomic_bool finished; /* the loop has ended */
	bool started;         /* the thread runs: worker_free joins it */
	bool draining;        /* listeners closed */
	bool finishing;       /* last handles closing; the loop is ending */
	struct config *cfg;
	struct worker_listener *listeners;
	size_t listener_count;
	/* Its sessions, their chunk pool and write list, the process-wide
	 * session count and limit (set by main before the start). */
	struct session_host sessions;
	size_t session_peak; /* most sessions since the heap was last trimmed */
	uv_async_t *done;    /* main's handle: signalled when the loop ends */
};

/*
 * Creates worker number index, not yet running. cfg gets a reference.
 * ctxs has one SSL_CTX per listener of cfg (borrowed: main frees them
 * after the worker is gone). fds has, for each listener in order, one
 * bound and listening socket per listen address; the worker owns them
 * from now on, also when this fails. done is signalled when the worker's
 * loop has ended. Returns NULL and logs when it cannot.
 */
struct worker *worker_create(unsigned index, struct config *cfg,
    SSL_CTX *const *ctxs, const int *fds, uv_async_t *done);

/* Starts the thread. 0 or a libuv code. */
int worker_start(struct worker *w);

/* From any thread: asks the worker to drain (or stop at once). */
void worker_stop(struct worker *w, bool now);

/* Waits for the thread to end (a worker never started is just closed)
 * and frees the worker. NULL is fine. */
void worker_free(struct worker *w);

#endif
