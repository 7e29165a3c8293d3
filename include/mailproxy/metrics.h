/*
 * What the processes of one instance count and share: one region of
 * shared memory the master maps before it forks anything. It holds
 *
 *  - per worker process, a slot of counters only that worker writes
 *    (sessions by end, handshake failures, bytes, refusals, two
 *    histograms), read by the metrics process on a scrape;
 *  - the instance's admission counts, which every worker updates with
 *    atomic operations when a session starts and ends (never on the data
 *    path): sessions in all, per listener, and per client address in a
 *    fixed count-min table, plus each client's connection rate;
 *  - what the master says: that it is alive, whether the instance is
 *    ready, reloads, workers, the certificates' expiry times.
 *
 * Nothing in it is locked. A worker that dies leaves its slot behind; the
 * master folds the slot's counters into the instance's totals and takes
 * its admissions back (metrics_slot_release), so a crash frees every
 * count it held. The sizes are fixed whatever the traffic: a client table
 * that is full makes addresses share counts (never forget them); see the
 * README's "Limits".
 */
#ifndef MAILPROXY_METRICS_H
#define MAILPROXY_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "mailproxy/config.h"

#define METRICS_SLOTS        256 /* worker processes alive at once */
#define METRICS_LISTENERS    64  /* listeners counted per generation */
#define METRICS_NAMES        256 /* listener names over the master's life */
#define METRICS_NAME_MAX     32  /* as config.c's LISTENER_NAME_MAX */
#define METRICS_ENDS         16  /* >= the session ends (session.h) */
#define METRICS_CERTS        256 /* certificates whose expiry is shown */
#define METRICS_SUBJECT_MAX  200
/* Count-min table of client addresses: two rows of this many cells. */
#define METRICS_CLIENT_CELLS 4096
/* Histogram bounds in microseconds: Prometheus's default buckets. */
#define METRICS_HIST_BOUNDS  11
#define METRICS_NO_NAME      0xffffu

enum metrics_limit {
	METRICS_LIMIT_SESSIONS,   /* max_sessions, instance or listener */
	METRICS_LIMIT_PER_CLIENT, /* max_sessions_per_client */
	METRICS_LIMIT_RATE,       /* max_connect_rate_per_client */
	METRICS_LIMIT_COUNT_
};

/* Every counter is written by one process only (relaxed loads and
 * stores: no lock prefix) and read by another. */
typedef _Atomic uint64_t metrics_counter;

struct metrics_hist {
	metrics_counter bucket[METRICS_HIST_BOUNDS + 1]; /* last: +Inf */
	metrics_counter sum_us;
	metrics_counter count;
};

/* One listener's counters in one slot (or folded, in the totals). */
struct metrics_counters {
	metrics_counter active; /* admitted sessions not yet ended */
	metrics_counter ends[METRICS_ENDS];
	metrics_counter handshake_failures[METRICS_ENDS]; /* by end */
	metrics_counter bytes[2]; /* client side, in and out, as logged */
	metrics_counter refusals[METRICS_LIMIT_COUNT_];
	struct metrics_hist handshake;
	struct metrics_hist connect;
};

struct metrics_slot {
	_Atomic uint32_t live; /* 1 from fork to release */
	uint32_t listener_count;
	uint16_t name[METRICS_LISTENERS]; /* index into the names */
	/* What this worker holds of the shared admission counts, so that
	 * its death can give them back. */
	_Atomic int64_t sessions;
	_Atomic int32_t clients[2][METRICS_CLIENT_CELLS];
	struct metrics_counters l[METRICS_LISTENERS];
} __attribute__((aligned(64)));

struct metrics_cert {
	uint16_t name; /* the listener */
	int64_t not_after;
	char subject[METRICS_SUBJECT_MAX + 1];
};

struct metrics_shared {
	uint32_t magic;
	uint8_t key[16]; /* the client table's hash key (random) */
	/* Written by the master. */
	_Atomic uint64_t heartbeat_ms; /* CLOCK_MONOTONIC */
	_Atomic uint32_t ready;        /* listeners served, not stopping */
	_Atomic uint32_t stopping;
	metrics_counter reloads_ok, reloads_failed;
	_Atomic uint32_t seq; /* odd while the master rewrites below */
	uint32_t name_count;
	char names[METRICS_NAMES][METRICS_NAME_MAX + 1];
	struct metrics_counters retired[METRICS_NAMES]; /* ended workers' */
	uint32_t cert_count;
	struct metrics_cert certs[METRICS_CERTS];
	/* Written by every worker, atomically. */
	_Atomic int64_t sessions;
	_Atomic int64_t listener_sessions[METRICS_NAMES];
	_Atomic int32_t clients[2][METRICS_CLIENT_CELLS];
	/* Per cell: minute number << 32 | count this minute << 16 | count
	 * the minute before (16 bits each, saturating). */
	_Atomic uint64_t rate[2][METRICS_CLIENT_CELLS];
	struct metrics_slot slots[METRICS_SLOTS];
};

/* The limits of one listener, resolved from [global] and its section. */
struct metrics_limits {
	uint64_t max_sessions;          /* instance-wide; 0: none */
	uint64_t listener_max_sessions; /* this listener's; 0: none */
	uint32_t per_client;            /* 0: none */
	uint32_t rate_per_minute;       /* 0: none */
	unsigned ipv4_prefix, ipv6_prefix;
};

/* What a session holds once admitted, to give back when it ends. */
struct metrics_admission {
	bool counted; /* in the session counts */
	bool client;  /* in the client table (not a LOCAL health check) */
	uint16_t cell[2];
};

/* A worker's handle on its slot. */
struct metrics_worker {
	struct metrics_shared *shm;
	struct metrics_slot *slot; /* NULL: not counted (no slot free) */
	void *mac;                 /* SipHash context (OpenSSL) */
};

/* ---- The master. ---- */

/* Maps the region (shared, anonymous; pages are allocated when first
 * touched). NULL when it cannot. */
struct metrics_shared *metrics_create(void);
void metrics_destroy(struct metrics_shared *shm);

/* In the metrics process: the region becomes read-only there, so that
 * the process facing the network cannot change what the others count. */
int metrics_read_only(struct metrics_shared *shm);

/* The index of name among the listener names, added if new;
 * METRICS_NO_NAME when the table is full. */
unsigned metrics_name(struct metrics_shared *shm, const char *name);

/* Takes a free slot for a worker running cfg; -1 when none is free. */
int metrics_slot_take(struct metrics_shared *shm, const struct config *cfg);

/* The worker of slot i has ended (however): its counters join the
 * totals, what it held of the admission counts is given back, and the
 * slot is cleared for the next. */
void metrics_slot_release(struct metrics_shared *shm, int i);

/* Replaces the certificate expiry list. */
void metrics_set_certs(struct metrics_shared *shm,
    const struct metrics_cert *certs, size_t n);

uint64_t metrics_now_ms(void); /* CLOCK_MONOTONIC, any process */

/* ---- A worker. ---- */

/* false: no memory for the hash (then nothing is limited per client). */
bool metrics_worker_init(struct metrics_worker *w, struct metrics_shared *shm,
    int slot);
void metrics_worker_free(struct metrics_worker *w);

/*
 * Admits a session of listener (its index in the worker's config) from
 * client (NULL: a load balancer's LOCAL health check, counted in the
 * sessions but against no client) under lim. On admission returns
 * METRICS_LIMIT_COUNT_ and fills *a; otherwise the limit that refused it
 * (counted as a refusal; nothing is held).
 */
enum metrics_limit metrics_admit(struct metrics_worker *w, unsigned listener,
    const struct sockaddr *client, const struct metrics_limits *lim,
    struct metrics_admission *a);

/* Gives back what an admitted session held. */
void metrics_leave(struct metrics_worker *w, unsigned listener,
    struct metrics_admission *a);

/* A session of listener has ended (end: session.h's enum), in the
 * handshake or not, with these client-side bytes. */
void metrics_session_end(struct metrics_worker *w, unsigned listener,
    unsigned end, bool in_handshake, uint64_t bytes_in, uint64_t bytes_out);

enum metrics_timing {
	METRICS_HANDSHAKE, /* the TLS handshake */
	METRICS_CONNECT,   /* the backend connect */
};

/* One more duration of that kind, in microseconds. */
void metrics_observe(struct metrics_worker *w, unsigned listener,
    enum metrics_timing which, uint64_t us);

/* The client table's key for an address under the prefixes (exposed for
 * the tests): the address with the host bits cleared. */
void metrics_client_key(const struct sockaddr *sa, unsigned ipv4_prefix,
    unsigned ipv6_prefix, uint8_t out[17]);

/* ---- The metrics process. ---- */

struct metrics_text {
	char *p;
	size_t len, size;
	bool oom;
};

/*
 * Appends the Prometheus text exposition (format 0.0.4) of everything in
 * shm to t: the live slots and the totals of ended workers summed per
 * listener name. end_names[i] names end i (count of them: ends).
 */
void metrics_render(const struct metrics_shared *shm, struct metrics_text *t,
    const char *const *end_names, size_t ends);

/* Appends to t, growing it; on failure t->oom is set and stays. */
void metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void metrics_text_free(struct metrics_text *t);

#endif
