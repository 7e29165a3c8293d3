/*
 * One client connection: the one state machine of a session over the
 * byte pump (pump.h) that moves its bytes. The phase lives in one enum
 * with one writer; each phase has its deadline; the dialogue (dialog.h)
 * decides what is said and forwarded until authentication, the session
 * does it; and there is one close path and one log line.
 *
 * A session lives on its loop and is freed in exactly one place,
 * session_free() in session.c, once its timer, its requests and its pump
 * have all called back (STYLE.md §7.1). Closing is idempotent and never
 * frees.
 */
#ifndef MAILPROXY_SESSION_H
#define MAILPROXY_SESSION_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/dialog.h"
#include "mailproxy/metrics.h"
#include "mailproxy/pump.h"

#define SESSION_MAGIC 0x5e55101u

/* Time allowed for mailproxy's last words to reach the client. */
#define SESSION_FLUSH_MS      5000
/* RFC 5321 §4.5.3.2: what SMTP on a starttls = optional listener (port
 * 25) is never given less of, for a reply and for the reply to the end
 * of a message. */
#define SESSION_SMTP_REPLY_MS (5 * 60 * 1000)
#define SESSION_SMTP_DATA_MS  (10 * 60 * 1000)

enum session_state {
	SESSION_PROXY,     /* reading a load balancer's PROXY header */
	SESSION_PLAIN,     /* STARTTLS listener: mailproxy talks, no TLS yet */
	SESSION_HANDSHAKE, /* TLS handshake with the client */
	SESSION_RESOLVE,   /* looking up the backend's host name */
	SESSION_CONNECT,   /* connecting to the backend */
	SESSION_GREETING,  /* the backend's greeting is awaited */
	SESSION_DIALOG,    /* until authentication: every line is checked */
	SESSION_RELAY,     /* bytes both ways, untouched */
	SESSION_FLUSH,     /* writing mailproxy's last words, then close */
	SESSION_CLOSING,   /* handles closing; freed when all called back */
	SESSION_STATE_COUNT_
};

/* Why a session ended: the first cause wins. Names go to the log. */
#define SESSION_END_MAP(X)                                                     \
	X(NONE, "-")                                                           \
	X(CLIENT_CLOSED, "client_closed")                                      \
	X(BACKEND_CLOSED, "backend_closed")                                    \
	X(CLIENT_ERROR, "client_error")                                        \
	X(BACKEND_ERROR, "backend_error")                                      \
	X(TLS_ERROR, "tls_error")                                              \
	X(TIMEOUT, "timeout")                                                  \
	X(BACKEND_REFUSED, "backend_refused")                                  \
	X(BACKEND_UNREACHABLE, "backend_unreachable")                          \
	X(SHUTDOWN, "shutdown")                                                \
	X(PROTOCOL_ERROR, "protocol_error")                                    \
	X(PROXY_ERROR, "proxy_error")                                          \
	X(NO_MEMORY, "no_memory")                                              \
	X(LIMIT, "limit")

enum session_end {
#define X(name, text) SESSION_END_##name,
	SESSION_END_MAP(X)
#undef X
};

/* What a session needs of its listener; the worker owns it. */
struct session_listener {
	const struct config_listener *conf;
	SSL_CTX *ctx;            /* shared, read-only */
	const char *server_name; /* for SMTP replies */
	struct proto_params params;
	unsigned index;               /* in the configuration, for metrics */
	struct metrics_limits limits; /* checked when a session starts */
};

/* What the sessions of one loop share; the worker owns it. */
struct session_host {
	struct pump_host pump;
	const struct config *cfg;
	unsigned index;           /* the worker's, in session ids */
	struct session *sessions; /* every live session, for shutdown */
	size_t count;
	uint64_t next_seq;
	/* The process's sessions, all workers', counted on accept and free
	 * only (never on the data path); past max a new one is closed at
	 * once: end=limit. NULL: no limit. */
	atomic_size_t *process_sessions;
	size_t max;
	/* The instance's limits and this worker's counters. */
	struct metrics_worker *metrics;
	/* Called after a session was freed (the worker may be done). */
	void (*freed)(struct session_host *h);
};

union session_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

struct session {
	uint32_t magic;
	enum session_state state;
	enum session_end end;
	enum session_state end_state; /* the state when the end was recorded */
	const char *error; /* static text: OpenSSL's reason, libuv's error */
	struct session_host *host;
	const struct session_listener *listener;
	struct session *prev, *next; /* the host's list */
	uint64_t seq;                /* number within the worker */
	struct pump pump;
	/* Until authentication; NULL once relaying (stats are kept). */
	struct dialog *dialog;
	struct dialog_stats stats;
	uv_timer_t timer;
	uv_getaddrinfo_t *resolve_req; /* only while resolving */
	struct addrinfo *addrs;        /* resolved backend addresses */
	struct addrinfo *next_addr;    /* the next one to try */
	unsigned pending;              /* timer, requests in flight, the pump */
	uint64_t state_ms;             /* loop time the state was entered */
	uint64_t deadline_ms;          /* end of the handshake (whole plaintext
	                                * phase on starttls = required) */
	uint64_t tls_ms;               /* loop time the handshake completed */
	uint64_t wait_ms;              /* loop time the backend's turn began */
	uint64_t started_hr;  /* uv_hrtime at accept, for the duration */
	enum proto_wait wait; /* whose turn it is in the dialogue */
	uint16_t proxy_len;   /* octets of the load balancer's header */
	bool quiet;           /* not a session to log (failed accept) */
	bool health_check;    /* a PROXY v2 LOCAL: the balancer's own */
	uint64_t phase_hr;    /* uv_hrtime when the handshake or the
	                       * backend connect began, for metrics */
	struct metrics_admission admission; /* what the limits counted */
	union session_addr client_addr;     /* from the PROXY header if any */
	union session_addr local_addr;
	union session_addr proxy_addr;   /* the balancer; AF_UNSPEC: none */
	union session_addr backend_addr; /* last TCP address tried */
};

/*
 * Sets the random tag that starts every session id ("9f3ac2e1-0-17"), so
 * ids stay unique across restarts and instances. Call once, before the
 * workers start.
 */
void session_init_ids(uint32_t tag);

/* Names of states and ends, for logs. */
const char *session_state_name(enum session_state state);
const char *session_end_name(enum session_end end);

/*
 * Sets up h for the sessions of loop (cfg borrowed, index for their ids,
 * pool_free_max idle chunks kept); freed is called after each session is
 * freed. session_host_close() closes its handles once no session is
 * left; session_host_destroy() frees it after the loop has run them.
 */
void session_host_init(struct session_host *h, uv_loop_t *loop,
    const struct config *cfg, unsigned index, size_t pool_free_max,
    void (*freed)(struct session_host *h));
void session_host_close(struct session_host *h);
void session_host_destroy(struct session_host *h);

/*
 * Accepts one connection from server into a new session of listener l.
 * Failures end in a logged, closed session (or, when nothing was
 * accepted, nothing).
 */
void session_accept(struct session_host *h, const struct session_listener *l,
    uv_stream_t *server);

/*
 * Ends the session because mailproxy is stopping: a session between two
 * lines gets the protocol's goodbye (IMAP "* BYE", POP3 "-ERR", SMTP
 * 421) before it is closed; others are closed at once. Never frees at
 * once: the caller may go on walking the host's list.
 */
void session_shutdown(struct session *s);

#endif
