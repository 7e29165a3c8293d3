/*
 * The byte pump (see pump.h). Bytes move without copies where the
 * direction allows: a plaintext chunk read from one socket is handed whole
 * to the other's queue (a small read is copied); from a TLS side SSL_read
 * decrypts straight into the other side's queue, and towards one
 * SSL_write encrypts straight into its queue (through the BIO of tls.c,
 * whose writes come back here).
 *
 * Must not: know a mail protocol or a session phase, call its owner from
 * inside a function the owner called, hold a chunk while idle, read a
 * side while a queue it fills is above the high-water mark, or let a
 * queue pass PUMP_QUEUE_CAP.
 */
#include "mailproxy/pump.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#define WRITE_SPANS 8

static void process(struct pump_side *x);
static void flush(struct pump_side *x, bool wrote_before);
static void update_reading(struct pump *p);

static struct buf_pool *
pool_of(const struct pump_side *x)
{
	return &x->pump->host->pool;
}

/* ------------------------------------------------------------------ */
/* The end of a loop iteration: deferred writes and input. */

static void
on_idle(uv_idle_t *h)
{
	(void)h; /* only keeps the poll phase from blocking */
}

static void
list_add(struct pump_side *x)
{
	struct pump_host *h = x->pump->host;

	if (x->listed)
		return;
	x->listed = true;
	x->next = h->list;
	h->list = x;
}

static void on_check(uv_check_t *c);

/*
 * Writes x's queue at the end of this loop iteration, once every read
 * the poll delivered has been processed: the records of a burst then
 * leave in one writev, not one syscall per TLS record.
 */
static void
flush_later(struct pump_side *x)
{
	struct pump_host *h = x->pump->host;

	list_add(x);
	(void)uv_check_start(&h->check, on_check);
	/* Queued outside the poll phase (a write callback, a timer), the
	 * loop would otherwise block in poll with the data unsent: an active
	 * idle handle makes that poll return at once. */
	(void)uv_idle_start(&h->idle, on_idle);
}

/* Processes x's input there too (after a change of mode or of room). */
static void
kick(struct pump_side *x)
{
	x->kick = true;
	flush_later(x);
}

static void
list_remove(struct pump_side *x)
{
	struct pump_side **pp = &x->pump->host->list;

	if (!x->listed)
		return;
	while (*pp != x)
		pp = &(*pp)->next;
	*pp = x->next;
	x->next = NULL;
	x->listed = false;
	x->kick = false;
}

static void
on_check(uv_check_t *c)
{
	struct pump_host *h = c->data;
	struct pump_side *x;
	bool kicked;

	while ((x = h->list) != NULL) {
		h->list = x->next;
		x->next = NULL;
		x->listed = false;
		kicked = x->kick;
		x->kick = false;
		/* A closing pump is not freed before the closing phase,
		 * which comes after this one. */
		if (x->pump->closing)
			continue;
		if (kicked) {
			process(x);
			if (x->pump->closing)
				continue;
		}
		flush(x, false);
	}
	(void)uv_check_stop(c);
	(void)uv_idle_stop(&h->idle);
}

void
pump_host_init(struct pump_host *h, uv_loop_t *loop, size_t pool_free_max)
{
	memset(h, 0, sizeof(*h));
	h->loop = loop;
	buf_pool_init(&h->pool, pool_free_max);
	/* Both inits on a valid loop cannot fail (libuv unix). */
	(void)uv_check_init(loop, &h->check);
	h->check.data = h;
	(void)uv_idle_init(loop, &h->idle);
	h->idle.data = h;
}

static void
on_host_close(uv_handle_t *h)
{
	(void)h;
}

void
pump_host_close(struct pump_host *h)
{
	uv_close((uv_handle_t *)&h->check, on_host_close);
	uv_close((uv_handle_t *)&h->idle, on_host_close);
}

void
pump_host_destroy(struct pump_host *h)
{
	buf_pool_destroy(&h->pool);
}

/* ------------------------------------------------------------------ */
/* Queues: the budget. */

/*
 * The hard cap: no queue ever holds more than PUMP_QUEUE_CAP. Reading
 * stops long before (update_reading); this only stops what one read or
 * one call into OpenSSL can add past the mark from going further, and
 * turns it into a clean failure of this session, never of the process.
 */
static bool
within_cap(struct pump_side *x, size_t n)
{
	if (x->out.bytes > PUMP_QUEUE_CAP ||
	    n > PUMP_QUEUE_CAP - x->out.bytes) {
		x->over_cap = true;
		return false;
	}
	return true;
}

/* Copies n bytes to the end of x's queue: every copy into a queue comes
 * through here, OpenSSL's records included (tls_write). */
static int
enqueue(struct pump_side *x, const char *p, size_t n)
{
	if (!within_cap(x, n))
		return PUMP_ERR_LIMIT;
	if (buf_queue_append(&x->out, pool_of(x), p, n) != 0) {
		x->no_memory = true;
		return PUMP_ERR_NOMEM;
	}
	return 0;
}

/* The BIO's writes: OpenSSL's records for side ctx. */
static int
tls_write(void *ctx, const char *p, size_t n)
{
	return enqueue(ctx, p, n) == 0 ? 0 : -1;
}

/* Why a call into OpenSSL that wrote failed. */
static enum pump_error
write_error(const struct pump_side *x)
{
	if (x->over_cap)
		return PUMP_ERR_LIMIT;
	if (x->no_memory)
		return PUMP_ERR_NOMEM;
	return PUMP_ERR_TLS;
}

/* What the owner is told with a failure from write_error(). */
static const char *
error_detail(enum pump_error e)
{
	switch (e) {
	case PUMP_ERR_LIMIT:
		return "session buffer limit reached";
	case PUMP_ERR_TLS:
		return tls_error_reason("TLS error");
	case PUMP_ERR_NOMEM:
	case PUMP_ERR_SOCKET:
		break;
	}
	return NULL;
}

/* Gives an emptied input chunk back, so an idle side holds nothing. */
static void
release_input(struct pump_side *x)
{
	if (x->in != NULL && buf_chunk_len(x->in) == 0) {
		buf_pool_put(pool_of(x), x->in);
		x->in = NULL;
	}
	if (x->plain != NULL && buf_chunk_len(x->plain) == 0) {
		buf_pool_put(pool_of(x), x->plain);
		x->plain = NULL;
	}
}

static bool
has_input(const struct pump_side *x)
{
	return (x->in != NULL && buf_chunk_len(x->in) > 0) ||
	    (x->plain != NULL && buf_chunk_len(x->plain) > 0) ||
	    (x->ssl != NULL && x->tls_done && SSL_pending(x->ssl) > 0);
}

/* ------------------------------------------------------------------ */
/* Reading: the invariant. */

/* Bytes in the fullest queue that x's input can fill in its mode. */
static size_t
fed(const struct pump_side *x)
{
	size_t own = 0, other = 0;

	switch (x->mode) {
	case PUMP_HOLD:
	case PUMP_DRAIN:
		return 0;
	case PUMP_HANDSHAKE:
		return x->out.bytes;
	case PUMP_RELAY:
		other = x->peer->out.bytes;
		own = x->ssl != NULL ? x->out.bytes : 0;
		break;
	case PUMP_DELIVER:
		/* The owner may answer on x and forward to the peer. */
		other = x->peer->out.bytes;
		own = x->out.bytes;
		break;
	}
	return own > other ? own : other;
}

/* The buffer a read would land in is full and nobody consumes it. */
static bool
input_full(const struct pump_side *x)
{
	return x->in != NULL && x->in->start == 0 && x->in->end == x->in->size;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void
stop_reading(struct pump_side *x)
{
	if (x->reading)
		(void)uv_read_stop(&x->h.stream);
	x->reading = false;
}

/*
 * The one place that decides whether a side is read, and so the bound on
 * what a session holds, in every mode and whoever wrote the queued bytes
 * (the other side, the owner's replies, OpenSSL's records):
 *
 *   a side is read only while every queue its input can fill is below
 *   PUMP_HIGH_WATER; once one reached it, the side is not read again
 *   before they are all down to PUMP_LOW_WATER; and never while the
 *   buffer its bytes land in is full with bytes nobody consumes.
 *
 * A read takes at most one chunk, so a queue passes the mark by at most
 * one read's worth (or the records OpenSSL makes of it) before reading
 * stops; within_cap() turns anything beyond PUMP_QUEUE_CAP into a failed
 * session. A side that unblocks is kicked, so input it already held is
 * processed even though no new read will come.
 */
static void
update_side(struct pump_side *x)
{
	size_t q = fed(x);
	bool want;
	int r;

	if (q >= PUMP_HIGH_WATER) {
		x->blocked = true;
	} else if (x->blocked && q <= PUMP_LOW_WATER) {
		x->blocked = false;
		if (has_input(x) || (x->ended && !x->eof_told))
			kick(x);
	}
	want = x->open && !x->eof && !x->ended && !x->tls_io.eof &&
	    x->mode != PUMP_HOLD && (x->mode == PUMP_DRAIN || !x->blocked) &&
	    !input_full(x);
	if (want && !x->reading) {
		r = uv_read_start(&x->h.stream, on_alloc, on_read);
		/* A connected stream cannot refuse; should it, the side is
		 * left unread and the session's timer ends it. */
		x->reading = r == 0;
	} else if (!want && x->reading) {
		stop_reading(x);
	}
}

static void
update_reading(struct pump *p)
{
	if (p->closing)
		return;
	update_side(&p->client);
	update_side(&p->backend);
}

/* ------------------------------------------------------------------ */
/* Upcalls. */

static void
fail(struct pump_side *x, enum pump_error e, const char *detail)
{
	struct pump *p = x->pump;

	stop_reading(x);
	p->ops->fail(p->owner, x, e, detail);
}

/* x's stream ended: the owner hears it once, after everything x sent
 * before; in the relay the half-close travels to the other side, after
 * what is queued for it (close_notify first when it speaks TLS). */
static void
tell_eof(struct pump_side *x)
{
	struct pump *p = x->pump;
	struct pump_side *y = x->peer;

	if (x->eof_told)
		return;
	x->eof_told = true;
	stop_reading(x);
	if (x->mode == PUMP_RELAY) {
		y->want_fin = true;
		if (y->ssl != NULL && y->tls_done &&
		    (SSL_get_shutdown(y->ssl) & SSL_SENT_SHUTDOWN) == 0) {
			ERR_clear_error();
			(void)SSL_shutdown(y->ssl);
			ERR_clear_error();
		}
		flush_later(y);
	}
	p->ops->eof(p->owner, x, x->end_error);
}

/*
 * After a failed SSL_read on x: 0 for "no more for now", 1 when x's
 * stream ended (x->ended set), -1 when x failed (the owner was told).
 */
static int
read_failed(struct pump_side *x, int n)
{
	int err = SSL_get_error(x->ssl, n);

	if (err == SSL_ERROR_WANT_READ && !x->tls_io.eof)
		return 0;
	if (err == SSL_ERROR_ZERO_RETURN) {
		x->ended = true;
		return 1;
	}
	if (x->over_cap || x->no_memory) {
		fail(x, write_error(x), error_detail(write_error(x)));
		return -1;
	}
	if (x->tls_io.eof) {
		/* TCP FIN without close_notify: common among mail clients,
		 * so an end, with OpenSSL's words. */
		x->ended = true;
		x->end_error = tls_error_reason("unexpected eof while reading");
		return 1;
	}
	fail(x, PUMP_ERR_TLS, tls_error_reason("TLS error"));
	return -1;
}

/* ------------------------------------------------------------------ */
/* Writing. */

/* n bytes of x's queue went out. */
static void
wrote(struct pump_side *x, size_t n)
{
	x->bytes_out += n;
	buf_queue_consume(&x->out, pool_of(x), n);
	x->pump->active_ms = uv_now(x->pump->host->loop);
}

static bool
release(struct pump *p)
{
	assert(p->pending > 0);
	p->pending--;
	if (!p->closing)
		return false;
	if (p->pending == 0)
		p->ops->released(p->owner);
	return true;
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct pump_side *x = req->data;
	struct pump *p = x->pump;

	free(req);
	/* ENOTCONN and friends: the peer is gone, which reads report. */
	(void)status;
	if (release(p))
		return;
	p->ops->drained(p->owner, x);
}

static void
send_fin(struct pump_side *x)
{
	uv_shutdown_t *req;

	x->fin_sent = true;
	/* Without memory the FIN is not sent; the close that follows the
	 * linger sends it. */
	req = malloc(sizeof(*req));
	if (req == NULL)
		return;
	req->data = x;
	if (uv_shutdown(req, &x->h.stream, on_shutdown) == 0)
		x->pump->pending++;
	else
		free(req);
}

static void on_write(uv_write_t *req, int status);

/*
 * Writes what x's queue holds: at once what the socket takes
 * (uv_try_write: no request, no callback and, with libuv 1.44, no
 * epoll_ctl), the rest with one uv_write. With the queue empty, sends
 * FIN when asked. wrote: bytes of x's went out just before (on_write).
 * May call the owner (drained, fail).
 */
static void
flush(struct pump_side *x, bool wrote_before)
{
	struct pump *p = x->pump;
	struct buf_span spans[WRITE_SPANS];
	uv_buf_t bufs[WRITE_SPANS];
	size_t i, n, total, before = x->out.bytes;
	uv_write_t *req;
	int r;

	if (!x->open || x->writing > 0)
		return;
	while (x->out.bytes > 0) {
		n = buf_queue_peek(&x->out, spans, WRITE_SPANS, &total);
		for (i = 0; i < n; i++)
			bufs[i] = uv_buf_init((char *)spans[i].base,
			    (unsigned)spans[i].len);
		r = uv_try_write(&x->h.stream, bufs, (unsigned)n);
		if (r == UV_EAGAIN || r == 0)
			break;
		if (r < 0) {
			fail(x, PUMP_ERR_SOCKET, uv_strerror(r));
			return;
		}
		wrote(x, (size_t)r);
		if ((size_t)r < total)
			break;
	}
	if (x->out.bytes < before)
		update_reading(p);
	if (x->out.bytes == 0) {
		if (x->want_fin && !x->fin_sent)
			send_fin(x);
		if (before > 0 || wrote_before)
			p->ops->drained(p->owner, x);
		return;
	}
	req = malloc(sizeof(*req));
	if (req == NULL) {
		fail(x, PUMP_ERR_NOMEM, NULL);
		return;
	}
	req->data = x;
	n = buf_queue_peek(&x->out, spans, WRITE_SPANS, &total);
	for (i = 0; i < n; i++)
		bufs[i] =
		    uv_buf_init((char *)spans[i].base, (unsigned)spans[i].len);
	r = uv_write(req, &x->h.stream, bufs, (unsigned)n, on_write);
	if (r < 0) {
		free(req);
		fail(x, PUMP_ERR_SOCKET, uv_strerror(r));
		return;
	}
	x->writing = total;
	p->pending++;
}

static void
on_write(uv_write_t *req, int status)
{
	struct pump_side *x = req->data;
	struct pump *p = x->pump;
	size_t written = x->writing;

	free(req);
	x->writing = 0;
	if (release(p))
		return;
	if (status < 0) {
		fail(x, PUMP_ERR_SOCKET, uv_strerror(status));
		return;
	}
	wrote(x, written);
	update_reading(p);
	flush(x, true);
}

/*
 * True when x's queue has room for more. A full queue is written at once
 * rather than at the end of the iteration: only a socket that refuses it
 * makes the source wait. Each pause and resume costs libuv two or three
 * epoll_ctl calls, and a fast reader would otherwise see one per 64 KiB.
 * False also when the write failed the session.
 */
static bool
make_room(struct pump_side *x)
{
	if (x->out.bytes < PUMP_HIGH_WATER)
		return true;
	flush(x, false);
	return !x->pump->closing && x->open && x->out.bytes < PUMP_HIGH_WATER;
}

/* ------------------------------------------------------------------ */
/* Processing what was read, by mode. */

/* Decrypts what fits into x->plain (PUMP_DELIVER on a TLS side). */
static void
refill(struct pump_side *x)
{
	struct buf_chunk *c;
	int n;

	if (x->mode != PUMP_DELIVER || x->ssl == NULL || !x->tls_done ||
	    x->ended)
		return;
	for (;;) {
		/* SSL_read may answer alone (alerts, KeyUpdate): x's own
		 * queue is fed too. */
		if (x->out.bytes >= PUMP_HIGH_WATER)
			break;
		if (x->plain == NULL) {
			x->plain = buf_pool_get(pool_of(x));
			if (x->plain == NULL) {
				fail(x, PUMP_ERR_NOMEM, NULL);
				return;
			}
		}
		c = x->plain;
		if (c->start == c->end)
			c->start = c->end = 0;
		else if (c->end == c->size)
			buf_chunk_compact(c);
		if (c->end == c->size)
			break;
		ERR_clear_error();
		n = SSL_read(x->ssl, c->data + c->end, (int)(c->size - c->end));
		if (n > 0) {
			c->end += (size_t)n;
			continue;
		}
		if (read_failed(x, n) < 0)
			return;
		break;
	}
	if (x->out.bytes > 0)
		flush_later(x);
}

/* The chunk pump_input() shows: plaintext as read, or as decrypted. */
static struct buf_chunk *
plain_chunk(const struct pump_side *x)
{
	return x->ssl != NULL ? x->plain : x->in;
}

static bool
has_plain(const struct pump_side *x)
{
	const struct buf_chunk *c = plain_chunk(x);

	return x->mode == PUMP_DELIVER && c != NULL && buf_chunk_len(c) > 0;
}

/*
 * PUMP_DELIVER: the owner gets the plaintext of both sides, as long as it
 * uses some: each round refills the TLS sides' plaintext first.
 */
static void
deliver(struct pump_side *x)
{
	struct pump *p = x->pump;

	for (;;) {
		refill(&p->client);
		if (p->closing || x->mode != PUMP_DELIVER)
			return;
		refill(&p->backend);
		if (p->closing || x->mode != PUMP_DELIVER)
			return;
		if (!has_plain(&p->client) && !has_plain(&p->backend))
			break;
		p->consumed = false;
		p->ops->input(p->owner, x);
		if (p->closing)
			return;
		if (!p->consumed || x->mode != PUMP_DELIVER)
			break;
	}
	if (p->client.mode == PUMP_DELIVER && p->client.ended)
		tell_eof(&p->client);
	if (!p->closing && p->backend.mode == PUMP_DELIVER && p->backend.ended)
		tell_eof(&p->backend);
}

static void
handshake(struct pump_side *x)
{
	struct pump *p = x->pump;
	int r, err;

	if (x->in == NULL && !x->tls_io.eof)
		return;
	ERR_clear_error();
	r = SSL_do_handshake(x->ssl);
	/* With one ticket per handshake (tls.c), OpenSSL sends none after
	 * a resumption: ask for one, so that a client that uses each
	 * ticket once (RFC 8446 C.4) always has the next. */
	if (r == 1 && SSL_session_reused(x->ssl) &&
	    SSL_get_num_tickets(x->ssl) > 0 &&
	    SSL_version(x->ssl) == TLS1_3_VERSION &&
	    SSL_new_session_ticket(x->ssl) == 1)
		r = SSL_do_handshake(x->ssl);
	if (x->out.bytes > 0)
		flush_later(x);
	if (r == 1) {
		x->tls_done = true;
		x->mode = PUMP_HOLD;
		stop_reading(x);
		p->ops->handshake(p->owner, x);
		return;
	}
	if (x->over_cap || x->no_memory) {
		fail(x, write_error(x), error_detail(write_error(x)));
		return;
	}
	err = SSL_get_error(x->ssl, r);
	if (err == SSL_ERROR_WANT_READ && !x->tls_io.eof)
		return;
	if (x->tls_io.eof) {
		/* A port scan, or a client that gave up. */
		x->ended = true;
		x->end_error = tls_error_reason("unexpected eof while reading");
		tell_eof(x);
		return;
	}
	fail(x, PUMP_ERR_TLS,
	    x->tls_io.refused != NULL ? x->tls_io.refused :
	                                tls_error_reason("handshake failed"));
}

/* TLS side x to plaintext side y: SSL_read straight into y's queue. */
static void
relay_decrypt(struct pump_side *x, struct pump_side *y)
{
	size_t room;
	char *at;
	int n, r;

	for (;;) {
		if (!make_room(y) || !make_room(x)) {
			if (!x->pump->closing)
				x->blocked = true;
			return;
		}
		if (!within_cap(y, BUF_CHUNK_SIZE)) {
			fail(y, PUMP_ERR_LIMIT, error_detail(PUMP_ERR_LIMIT));
			return;
		}
		at = buf_queue_reserve(&y->out, pool_of(y), &room);
		if (at == NULL) {
			fail(x, PUMP_ERR_NOMEM, NULL);
			return;
		}
		ERR_clear_error();
		n = SSL_read(x->ssl, at, room > INT_MAX ? INT_MAX : (int)room);
		if (n > 0) {
			buf_queue_commit(&y->out, (size_t)n);
			flush_later(y);
			continue;
		}
		buf_queue_drop_empty_tail(&y->out, pool_of(y));
		r = read_failed(x, n);
		if (r < 0)
			return;
		if (r > 0)
			tell_eof(x);
		break;
	}
	if (x->out.bytes > 0 && !x->pump->closing)
		flush_later(x); /* alerts, KeyUpdate answers */
}

/* Plaintext side x to TLS side y: SSL_write from x's chunk into y's
 * queue; the BIO takes every byte, so nothing is partial. */
static void
relay_encrypt(struct pump_side *x, struct pump_side *y)
{
	struct buf_chunk *in = x->in;
	size_t len = in != NULL ? buf_chunk_len(in) : 0;
	int n;

	if (len > 0) {
		y->last_out = in->data[in->end - 1];
		ERR_clear_error();
		n = SSL_write(y->ssl, in->data + in->start, (int)len);
		if (n <= 0) {
			fail(y, write_error(y), error_detail(write_error(y)));
			return;
		}
		assert((size_t)n == len);
		in->start = in->end;
		flush_later(y);
	}
	if (!make_room(y)) {
		if (!x->pump->closing)
			x->blocked = true;
		return;
	}
	if (x->ended)
		tell_eof(x);
}

/* Plaintext to plaintext: a full chunk changes hands; a small read is
 * copied, or a peer trickling bytes would pin a whole chunk per byte
 * that the queue's count does not see. */
static void
relay_plain(struct pump_side *x, struct pump_side *y)
{
	size_t len = x->in != NULL ? buf_chunk_len(x->in) : 0;
	int r;

	if (len > 0) {
		y->last_out = x->in->data[x->in->end - 1];
		if (len < x->in->size / 4) {
			r = enqueue(y, x->in->data + x->in->start, len);
			if (r != 0) {
				fail(y, (enum pump_error)r, error_detail(r));
				return;
			}
			x->in->start = x->in->end;
		} else {
			if (!within_cap(y, len)) {
				fail(y, PUMP_ERR_LIMIT,
				    error_detail(PUMP_ERR_LIMIT));
				return;
			}
			buf_queue_push_chunk(&y->out, pool_of(y), x->in);
			x->in = NULL;
		}
		flush_later(y);
	}
	if (!make_room(y)) {
		if (!x->pump->closing)
			x->blocked = true;
		return;
	}
	if (x->ended)
		tell_eof(x);
}

static void
relay(struct pump_side *x)
{
	struct pump_side *y = x->peer;

	/* mailproxy never puts TLS on both sides of one pump. */
	assert(x->ssl == NULL || y->ssl == NULL);
	if (x->ssl != NULL)
		relay_decrypt(x, y);
	else if (y->ssl != NULL)
		relay_encrypt(x, y);
	else
		relay_plain(x, y);
}

static void
process(struct pump_side *x)
{
	struct pump *p = x->pump;
	size_t n;

	switch (x->mode) {
	case PUMP_HOLD:
		break;
	case PUMP_DELIVER:
		deliver(x);
		break;
	case PUMP_HANDSHAKE:
		handshake(x);
		break;
	case PUMP_RELAY:
		relay(x);
		break;
	case PUMP_DRAIN:
		if (x->in != NULL) {
			n = buf_chunk_len(x->in);
			x->in->start = x->in->end;
			/* A client that floods its goodbye is not read
			 * for long: past the budget it counts as gone. */
			x->drain_left -= n < x->drain_left ? n : x->drain_left;
			if (x->drain_left == 0)
				x->eof = true;
		}
		if (x->eof) {
			x->ended = true;
			tell_eof(x);
		}
		break;
	}
	if (p->closing)
		return;
	release_input(x);
	update_reading(p);
}

/* ------------------------------------------------------------------ */
/* libuv's read callbacks. */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct pump_side *x = h->data;
	struct buf_chunk *c;

	(void)suggested;
	/* Big reads only for bytes relayed untouched: before, a client
	 * that leaves a partial line would pin the whole chunk. */
	if (x->in == NULL)
		x->in = x->mode == PUMP_RELAY ? buf_pool_get_big(pool_of(x)) :
		                                buf_pool_get(pool_of(x));
	c = x->in;
	if (c == NULL) {
		/* libuv turns an empty buffer into UV_ENOBUFS for on_read. */
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	if (c->start == c->end)
		c->start = c->end = 0;
	else if (c->end == c->size)
		buf_chunk_compact(c);
	*buf = uv_buf_init(c->data + c->end, (unsigned)(c->size - c->end));
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct pump_side *x = stream->data;
	struct pump *p = x->pump;

	(void)buf;
	p->host->reads++;
	if (p->closing)
		return;
	if (nread > 0) {
		x->in->end += (size_t)nread;
		x->bytes_in += (uint64_t)nread;
		p->active_ms = uv_now(p->host->loop);
		process(x);
		return;
	}
	if (nread == 0) {
		release_input(x);
		return;
	}
	if (nread == UV_EOF) {
		x->eof = true;
		stop_reading(x);
		/* On TLS, OpenSSL tells close_notify from truncation, after
		 * the records still buffered. */
		if (x->ssl != NULL && x->mode != PUMP_DRAIN)
			x->tls_io.eof = true;
		else
			x->ended = true;
		process(x);
		return;
	}
	release_input(x);
	if (nread == UV_ENOBUFS && x->in != NULL) {
		/* Its buffer is full: not a failure, a pause. */
		update_reading(p);
		return;
	}
	fail(x, nread == UV_ENOBUFS ? PUMP_ERR_NOMEM : PUMP_ERR_SOCKET,
	    nread == UV_ENOBUFS ? NULL : uv_strerror((int)nread));
}

/* ------------------------------------------------------------------ */
/* The owner's calls: none of them calls the owner back. */

static void
side_init(struct pump *p, struct pump_side *x, struct pump_side *peer)
{
	memset(x, 0, sizeof(*x));
	x->pump = p;
	x->peer = peer;
	x->h.handle.data = x;
	x->mode = PUMP_HOLD;
	x->last_out = '\n';
}

void
pump_init(struct pump *p, struct pump_host *host, const struct pump_ops *ops,
    void *owner)
{
	memset(p, 0, sizeof(*p));
	p->host = host;
	p->ops = ops;
	p->owner = owner;
	p->active_ms = uv_now(host->loop);
	side_init(p, &p->client, &p->backend);
	side_init(p, &p->backend, &p->client);
}

/* A side (re)opened: what the last connection left is forgotten. */
static void
side_opened(struct pump_side *x)
{
	x->h.handle.data = x;
	x->open = true;
	x->reading = x->blocked = x->eof = x->ended = x->eof_told = false;
	x->want_fin = x->fin_sent = false;
	x->end_error = NULL;
	x->pump->pending++;
}

int
pump_side_open_tcp(struct pump_side *x)
{
	int r = uv_tcp_init(x->pump->host->loop, &x->h.tcp);

	if (r == 0)
		side_opened(x);
	return r;
}

int
pump_side_open_pipe(struct pump_side *x)
{
	int r = uv_pipe_init(x->pump->host->loop, &x->h.pipe, 0);

	if (r == 0)
		side_opened(x);
	return r;
}

void
pump_set_mode(struct pump_side *x, enum pump_mode mode)
{
	struct pump_side *y = x->peer;
	struct buf_chunk *c = x->plain;

	if (x->mode == mode)
		return;
	if (mode == PUMP_RELAY && c != NULL) {
		/* Decrypted before the change: it goes first. The chunk
		 * holds at most BUF_CHUNK_SIZE, below any cap. */
		x->plain = NULL;
		if (buf_chunk_len(c) > 0) {
			y->last_out = c->data[c->end - 1];
			buf_queue_push_chunk(&y->out, pool_of(y), c);
			flush_later(y);
		} else {
			buf_pool_put(pool_of(x), c);
		}
	}
	x->mode = mode;
	if (mode == PUMP_HOLD)
		stop_reading(x);
	if (mode == PUMP_DRAIN)
		x->drain_left = PUMP_HIGH_WATER;
	kick(x);
}

int
pump_start_tls(struct pump_side *x, SSL_CTX *ctx)
{
	x->tls_io.in = &x->in;
	x->tls_io.write = tls_write;
	x->tls_io.ctx = x;
	x->ssl = tls_ssl_new(ctx, &x->tls_io);
	if (x->ssl == NULL)
		return PUMP_ERR_NOMEM;
	pump_set_mode(x, PUMP_HANDSHAKE);
	return 0;
}

const char *
pump_input(struct pump_side *x, size_t *len_out)
{
	struct buf_chunk *c = plain_chunk(x);

	*len_out = c != NULL ? buf_chunk_len(c) : 0;
	return c != NULL ? c->data + c->start : NULL;
}

void
pump_consume(struct pump_side *x, size_t n)
{
	struct buf_chunk *c = plain_chunk(x);

	if (n == 0)
		return;
	assert(c != NULL && n <= buf_chunk_len(c));
	c->start += n;
	x->pump->consumed = true;
}

size_t
pump_discard(struct pump_side *x)
{
	size_t n = 0;

	if (x->in != NULL) {
		n += buf_chunk_len(x->in);
		x->in->start = x->in->end;
	}
	if (x->plain != NULL) {
		n += buf_chunk_len(x->plain);
		x->plain->start = x->plain->end;
	}
	release_input(x);
	return n;
}

bool
pump_room(const struct pump_side *x)
{
	return x->out.bytes < PUMP_HIGH_WATER;
}

int
pump_send(struct pump_side *x, const char *p, size_t n)
{
	int r;

	if (n == 0)
		return 0;
	x->last_out = p[n - 1];
	if (x->ssl != NULL) {
		assert(x->tls_done);
		ERR_clear_error();
		r = SSL_write(x->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
		ERR_clear_error();
		if (r <= 0)
			return write_error(x);
	} else {
		r = enqueue(x, p, n);
		if (r != 0)
			return r;
	}
	flush_later(x);
	return 0;
}

void
pump_finish(struct pump_side *x)
{
	if (x->ssl != NULL && x->tls_done &&
	    (SSL_get_shutdown(x->ssl) & SSL_SENT_SHUTDOWN) == 0) {
		ERR_clear_error();
		(void)SSL_shutdown(x->ssl);
		ERR_clear_error();
	}
	x->want_fin = true;
	flush_later(x);
}

bool
pump_side_done(const struct pump_side *x)
{
	return x->ended && x->out.bytes == 0 && x->writing == 0 &&
	    (!x->want_fin || x->fin_sent);
}

static void
on_close(uv_handle_t *h)
{
	struct pump_side *x = h->data;
	struct pump *p = x->pump;

	if (release(p))
		return;
	p->ops->side_closed(p->owner, x);
}

static void
close_side(struct pump_side *x)
{
	list_remove(x);
	if (!x->open)
		return;
	x->open = false;
	x->reading = false;
	uv_close(&x->h.handle, on_close);
}

void
pump_side_close(struct pump_side *x)
{
	close_side(x);
}

bool
pump_close(struct pump *p)
{
	if (p->closing)
		return false;
	p->closing = true;
	close_side(&p->client);
	close_side(&p->backend);
	return p->pending == 0;
}

static void
side_free(struct pump_side *x)
{
	struct buf_pool *pool = pool_of(x);

	SSL_free(x->ssl);
	x->ssl = NULL;
	buf_pool_put(pool, x->in);
	x->in = NULL;
	buf_pool_put(pool, x->plain);
	x->plain = NULL;
	buf_queue_clear(&x->out, pool);
}

void
pump_free(struct pump *p)
{
	assert(p->pending == 0);
	side_free(&p->client);
	side_free(&p->backend);
}
