/*
 * A worker: one thread running one uv_loop_t with its own listening
 * sockets (SO_REUSEPORT, so the kernel spreads connections), its own chunk
 * pool and its own sessions. Workers share only immutable things: the
 * configuration snapshot and the SSL_CTXs (DESIGN.md §2). The main thread
 * talks to a worker through one atomic command and uv_async_send.
 */
#ifndef MAILPROXY_WORKER_H
#define MAILPROXY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/buf.h"
#include "mailproxy/config.h"
#include "mailproxy/dialog.h"

struct session;
struct worker;

#define WORKER_MAGIC 0x3023c3e1u

/* One [listener] as a worker runs it. */
struct worker_listener {
	struct worker *worker;
	const struct config_listener *conf;
	SSL_CTX *ctx;            /* shared, one reference held by main */
	const char *server_name; /* for SMTP replies */
	struct dialog_params dialog;
	size_t socket_count; /* one per listen address */
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
	/* Sides whose output waits for the end of this loop iteration, so
	 * the records of several reads leave in one writev (relay.c). */
	uv_check_t flush_check;
	uv_idle_t flush_idle; /* active while the list is not empty */
	struct side *flush_head;
	atomic_int command;
	atomic_bool finished; /* the loop has ended */
	bool started;         /* the thread runs: worker_free joins it */
	bool draining;        /* listeners closed */
	bool finishing;       /* last handles closing; the loop is ending */
	struct config *cfg;
	struct worker_listener *listeners;
	size_t listener_count;
	struct buf_pool pool;
	struct session *sessions; /* every live session, for shutdown */
	size_t session_count;
	/* The process's sessions, all workers', counted on accept and free
	 * only (never on the data path); past session_max a new one is
	 * closed at once: end=limit. NULL: no limit. */
	atomic_size_t *process_sessions;
	size_t session_max;
	size_t session_peak; /* most sessions since the heap was last trimmed */
	uint64_t next_seq;
	uint64_t io_events; /* reads and accepts, for busy_poll */
	uv_async_t *done;   /* main's handle: signalled when the loop ends */
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

/* For session.c: keeps the worker's list of sessions. */
void worker_session_add(struct worker *w, struct session *s);
void worker_session_remove(struct worker *w, struct session *s);

#endif
