/*
 * The byte pump: everything that moves the bytes of one connection pair
 * (a client side and a backend side): reads, writes, queues, backpressure,
 * half-close, and the TLS records of a side that speaks TLS. It knows no
 * mail protocol and no session phase: its owner (the session) says, per
 * side, what to do with the bytes read (enum pump_mode), and hears back
 * only through the callbacks it registered (struct pump_ops).
 *
 * The budget (README "Buffers"): a side is read only while every queue
 * its input can fill is below PUMP_HIGH_WATER, and again once they are all
 * down to PUMP_LOW_WATER. Its input can fill the other side's queue (bytes
 * relayed, or the owner's forwarded commands) and its own (the owner's
 * replies, and OpenSSL's own records: alerts, KeyUpdate answers). One read
 * or one TLS record may pass the mark; nothing ever passes
 * PUMP_QUEUE_CAP: the pump fails the session (PUMP_ERR_LIMIT) instead.
 *
 * Upcalls happen only from libuv's callbacks (a read, a write, a
 * shutdown, a close, the end of a loop iteration), never from inside a
 * pump function the owner called: an owner is never re-entered, and a
 * pump function it calls never ends its session. After each upcall the
 * pump checks whether the owner closed it.
 */
#ifndef MAILPROXY_PUMP_H
#define MAILPROXY_PUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/buf.h"
#include "mailproxy/tls.h"

/* Bytes queued towards a side before the sides that fill it stop being
 * read (checked before each read, so one read more may follow). */
#define PUMP_HIGH_WATER (64 * 1024)
/* Bytes below which they are read again. */
#define PUMP_LOW_WATER  (16 * 1024)
/* What one queue may never exceed: the high-water mark, one 64 KiB read
 * encrypted or relayed past it, and room to spare. A real client never
 * comes near it; a session that would is ended (end=limit). */
#define PUMP_QUEUE_CAP  (256 * 1024)

struct pump;
struct pump_side;

/*
 * What the pumps of one loop share: the loop, the chunk pool, and the list
 * of sides whose output (or input, after a change) waits for the end of
 * this loop iteration, so that the records of a burst of reads leave in
 * one writev. Owned by the worker; lives on the loop's thread.
 */
struct pump_host {
	uv_loop_t *loop;
	struct buf_pool pool;
	uv_check_t check;
	uv_idle_t idle; /* active while the list is not empty */
	struct pump_side *list;
	uint64_t reads; /* reads and accepts, for busy_poll */
};

/* Sets up h on loop, with a pool keeping pool_free_max idle chunks. */
void pump_host_init(struct pump_host *h, uv_loop_t *loop, size_t pool_free_max);

/* Closes h's handles (the loop then runs their callbacks). */
void pump_host_close(struct pump_host *h);

/* Frees the pool; after the loop ran the closes and no pump is left. */
void pump_host_destroy(struct pump_host *h);

/* What a side does with the bytes it reads. */
enum pump_mode {
	PUMP_HOLD,      /* not read; bytes already read wait */
	PUMP_DELIVER,   /* plaintext goes to the owner (ops->input) */
	PUMP_HANDSHAKE, /* ciphertext drives the side's TLS handshake */
	PUMP_RELAY,     /* bytes go to the other side, untouched */
	/* Read and dropped, so that closing sends FIN, not RST: up to
	 * PUMP_HIGH_WATER bytes, after which the side counts as ended. */
	PUMP_DRAIN,
};

/* Never 0, which pump_send() returns for success. */
enum pump_error {
	PUMP_ERR_SOCKET = 1, /* the socket failed; detail is libuv's text */
	PUMP_ERR_TLS,        /* the TLS layer failed; detail is OpenSSL's */
	PUMP_ERR_NOMEM,      /* no memory for a chunk or a request */
	PUMP_ERR_LIMIT,      /* a queue would pass PUMP_QUEUE_CAP */
};

/*
 * The owner's callbacks. owner is what pump_init() was given. Each may
 * close the pump (pump_close); none may free it before released().
 */
struct pump_ops {
	/* Plaintext waits on x (PUMP_DELIVER), or room came back after
	 * the owner stopped for want of it. The owner reads both sides
	 * with pump_input() and consumes what it used. */
	void (*input)(void *owner, struct pump_side *x);
	/* x's TLS handshake completed; x is in PUMP_HOLD. */
	void (*handshake)(void *owner, struct pump_side *x);
	/* x sends no more: EOF, or close_notify on TLS (error NULL), or
	 * EOF without close_notify (error names it). Whatever x sent
	 * before was delivered or relayed first. */
	void (*eof)(void *owner, struct pump_side *x, const char *error);
	/* x's queue went empty, or its FIN went out. */
	void (*drained)(void *owner, struct pump_side *x);
	/* x failed; the owner must end the session. detail is static. */
	void (*fail)(void *owner, struct pump_side *x, enum pump_error e,
	    const char *detail);
	/* x's handle, closed with pump_side_close(), is gone: x may be
	 * opened again. */
	void (*side_closed)(void *owner, struct pump_side *x);
	/* After pump_close(): the last handle and request called back, so
	 * the pump holds nothing and its memory may go. */
	void (*released)(void *owner);
};

/* One end: its socket, buffers, TLS object and counters. */
struct pump_side {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h;
	struct pump *pump;
	struct pump_side *peer;
	struct buf_chunk *in;    /* read, not processed (ciphertext on TLS) */
	struct buf_chunk *plain; /* TLS, PUMP_DELIVER: decrypted, unread */
	struct buf_queue out;    /* waiting to be written to this side */
	SSL *ssl;                /* NULL until pump_start_tls() */
	struct tls_io tls_io;
	size_t writing;         /* bytes in the write in flight; 0: none */
	size_t drain_left;      /* PUMP_DRAIN: bytes still to drop */
	struct pump_side *next; /* in the host's list */
	uint64_t bytes_in;      /* read from this socket */
	uint64_t bytes_out;     /* written to this socket */
	enum pump_mode mode;
	char last_out;         /* the last plaintext byte queued to this side */
	bool listed;           /* on the host's list */
	bool kick;             /* its input waits to be processed there */
	bool open;             /* the handle is initialised and not closing */
	bool reading;          /* uv_read_start is in effect */
	bool blocked;          /* a queue it fills is full: not read */
	bool eof;              /* its socket said EOF: nothing more is read */
	bool ended;            /* its byte stream ended (EOF, close_notify) */
	bool eof_told;         /* ops->eof was called */
	bool want_fin;         /* send FIN (and close_notify) once out drains */
	bool fin_sent;         /* uv_shutdown issued */
	bool tls_done;         /* its TLS handshake completed */
	bool over_cap;         /* a write was refused: PUMP_QUEUE_CAP */
	bool no_memory;        /* a write was refused: no chunk */
	const char *end_error; /* how it ended, if not cleanly */
};

struct pump {
	struct pump_side client;
	struct pump_side backend;
	struct pump_host *host;
	const struct pump_ops *ops;
	void *owner;
	uint64_t active_ms; /* loop time of the last byte moved */
	unsigned pending;   /* handles open plus requests in flight */
	bool closing;
	bool consumed; /* the owner consumed input in this upcall */
};

/* Sets up p with both sides closed and in PUMP_HOLD. */
void pump_init(struct pump *p, struct pump_host *host,
    const struct pump_ops *ops, void *owner);

/*
 * Initialises x's handle as a TCP socket or a pipe; the pump owns it from
 * now on (pump_close or pump_side_close closes it). The owner may accept
 * or connect on x->h itself. 0 or a libuv code.
 */
int pump_side_open_tcp(struct pump_side *x);
int pump_side_open_pipe(struct pump_side *x);

/*
 * Sets what x does with its bytes. Bytes x already holds are processed
 * in the new mode at the end of this loop iteration. Entering
 * PUMP_RELAY, plaintext x decrypted and the owner did not consume goes to
 * the other side first.
 */
void pump_set_mode(struct pump_side *x, enum pump_mode mode);

/*
 * Starts TLS as the server on x with a new SSL object from ctx, and puts
 * x in PUMP_HANDSHAKE. Returns 0, or PUMP_ERR_NOMEM.
 */
int pump_start_tls(struct pump_side *x, SSL_CTX *ctx);

/*
 * The plaintext x holds that the owner has not consumed: a pointer (NULL
 * when none) and its length in *len_out. Valid until the next pump call
 * on x or the end of the upcall.
 */
const char *pump_input(struct pump_side *x, size_t *len_out);

/* Consumes n bytes (at most what pump_input() showed). */
void pump_consume(struct pump_side *x, size_t n);

/* Drops every byte x holds unprocessed, plaintext and not; returns how
 * many. */
size_t pump_discard(struct pump_side *x);

/* Whether x's queue is below the high-water mark: the owner writes to x
 * only then, and otherwise waits for ops->input. */
bool pump_room(const struct pump_side *x);

/*
 * Queues n bytes of plaintext for x (encrypted when x speaks TLS, which
 * must then have finished its handshake); they go out at the end of this
 * loop iteration. Returns 0, PUMP_ERR_NOMEM or PUMP_ERR_LIMIT (then
 * nothing more may be sent).
 */
int pump_send(struct pump_side *x, const char *p, size_t n);

/* After what is queued: close_notify when x speaks TLS, then FIN. */
void pump_finish(struct pump_side *x);

/* Whether x is finished both ways: it sent its last byte, and everything
 * for it (its FIN included) went out. */
bool pump_side_done(const struct pump_side *x);

/* Closes x's handle alone; ops->side_closed() follows. */
void pump_side_close(struct pump_side *x);

/*
 * Closes both handles and forgets pending work; idempotent. The owner's
 * callbacks stop, except released(), which follows once every handle and
 * request has called back. Returns true when nothing was pending: then
 * released() does not come.
 */
bool pump_close(struct pump *p);

/* Frees what the pump still holds (chunks, TLS); from released() on. */
void pump_free(struct pump *p);

#endif
