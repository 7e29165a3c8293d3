/*
 * One client connection: both sockets, the TLS object, the buffers, the
 * timer, the counters, and one close path.
 *
 * A session lives on its worker's loop and is freed in exactly one place,
 * session_free(), once every handle it opened has called back from
 * uv_close() and every request it started has called back (STYLE.md §7.1).
 * session_close() is idempotent and never frees.
 *
 * The relay pump that moves bytes between the two sides is relay.c; the
 * lifecycle (accept, handshake, backend connect, timers, close, log) is
 * session.c.
 */
#ifndef MAILPROXY_SESSION_H
#define MAILPROXY_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/buf.h"
#include "mailproxy/dialog.h"
#include "mailproxy/tls.h"

struct worker;
struct worker_listener;

#define SESSION_MAGIC 0x5e55101u

enum session_state {
	SESSION_PROXY,     /* reading a load balancer's PROXY header */
	SESSION_PLAIN,     /* STARTTLS listener: mailproxy talks, no TLS yet */
	SESSION_HANDSHAKE, /* TLS handshake with the client */
	SESSION_RESOLVE,   /* looking up the backend's host name */
	SESSION_CONNECT,   /* connecting to the backend */
	SESSION_RELAY,     /* moving bytes both ways */
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

/*
 * One connection end. The same struct serves the client and the backend,
 * so one pump moves bytes in both directions (relayd's ctl_relay_event).
 */
struct side {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h;
	struct session *session;
	struct side *peer;
	struct buf_chunk *in; /* bytes read and not yet processed */
	struct buf_queue out; /* bytes waiting to be written to this side */
	/* At most one write in flight; its request is malloc'd for its
	 * flight only, like the shutdown's, so an idle session holds none
	 * (192 + 80 bytes a side). */
	size_t writing;          /* bytes in that write; 0 when none */
	struct side *flush_next; /* in the worker's flush list */
	bool flush_queued;
	uint64_t bytes_in;  /* read from this socket */
	uint64_t bytes_out; /* written to this socket */
	bool open;          /* handle initialised and not yet closed */
	bool reading;       /* uv_read_start is in effect */
	bool paused;        /* the peer's queue is full: not reading */
	bool eof;           /* this side sent its last byte */
	bool want_fin;      /* send FIN (and close_notify) once out drains */
	bool fin_sent;      /* uv_shutdown issued */
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
	const char *error; /* static text: OpenSSL's reason, libuv's error */
	struct worker *worker;
	struct worker_listener *listener;
	struct session *prev, *next; /* the worker's list */
	uint64_t seq;                /* number within the worker */
	struct side client;
	struct side backend;
	SSL *ssl; /* client side; NULL before TLS */
	struct tls_io tls_io;
	/* Until authentication: the dialogue, the client's decrypted bytes
	 * it has not consumed yet, and its output. NULL once opaque. */
	struct dialog *dialog;
	struct buf_chunk *plain_in;
	struct dialog_sink sink;
	struct dialog_stats stats; /* kept when the dialogue is freed */
	bool held;                 /* client reading stopped by the dialogue */
	bool nomem;                /* a sink write found no memory */
	uv_timer_t timer;
	uv_getaddrinfo_t *resolve_req; /* only while resolving */
	struct addrinfo *addrs;        /* resolved backend addresses */
	struct addrinfo *next_addr;    /* the next one to try */
	unsigned pending;    /* handles open plus requests in flight */
	uint64_t started_ms; /* loop time at accept */
	uint64_t active_ms;  /* loop time of the last byte moved */
	uint64_t started_hr; /* uv_hrtime at accept, for the duration */
	enum session_state end_state; /* state when the end was recorded */
	char last_to_client; /* last plaintext byte sent to the client */
	bool tls_up;         /* the client's handshake completed */
	uint16_t proxy_len;  /* octets of the load balancer's PROXY header */
	bool quiet;          /* not a session to log (failed accept) */
	union session_addr client_addr; /* from the PROXY header if any */
	union session_addr local_addr;
	union session_addr proxy_addr; /* the load balancer; AF_UNSPEC: none */
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
 * Accepts one connection from server into a new session. Failures end in
 * a logged, closed session (or, when nothing was accepted, nothing).
 */
void session_accept(struct worker *w, struct worker_listener *l,
    uv_stream_t *server);

/*
 * Ends the session: stops reading and timers and closes every open handle.
 * Idempotent; the first end reason is the one logged (SESSION_END_NONE
 * keeps the one recorded). The session is
 * freed later, when the last close callback runs: callers must not touch
 * it after this returns unless they hold a callback of their own.
 */
void session_close(struct session *s, enum session_end end, const char *error);

/*
 * Ends the session because mailproxy is stopping: a session in the middle
 * of nothing gets the protocol's goodbye (IMAP "* BYE", POP3 "-ERR", SMTP
 * 421) inside TLS before it is closed; others are closed at once.
 */
void session_shutdown(struct session *s);

/*
 * For relay.c: sends the protocol's notice line n (a proto_notice) inside
 * TLS, then close_notify, and closes the session once the client has it.
 * end is the logged reason. May end the session.
 */
void session_finish(struct session *s, int notice, enum session_end end,
    const char *error);

/*
 * For relay.c: one side has finished sending; the other gets the shorter
 * linger timeout instead of the protocol's idle timeout from now on.
 */
void session_linger(struct session *s);

/* For relay.c: records activity (any byte moved) for the idle timer. */
void session_touch(struct session *s);

/*
 * For relay.c: records why the session is ending, unless a reason is
 * already recorded (the first cause wins), with the state it ended in.
 * SESSION_END_NONE records nothing.
 */
void session_set_end(struct session *s, enum session_end end,
    const char *error);

/* For relay.c: the dialogue's events (dialog.h) that change the session.
 * Each may end the session. */
void session_starttls(struct session *s, size_t discarded, bool client_hello);
void session_connect_plain(struct session *s);
void session_dialog_closed(struct session *s);

/* For relay.c: the pre-TLS dialogue moved; its timer starts again. */
void session_plain_activity(struct session *s);

/* For relay.c: reads the load balancer's PROXY header from the client's
 * bytes; once it is whole the session starts as without one. May end the
 * session. */
void session_proxy_header(struct session *s);

/* For relay.c: drives the TLS handshake with the client's new bytes. */
void session_handshake(struct session *s);

/*
 * For relay.c: a request of s called back. Returns true when s is closing
 * (and may now be freed): the caller must return without touching it.
 */
bool session_release(struct session *s);

#endif
