/*
 * The relay pump (see relay.h). Bytes move without copies where the
 * direction allows: a plaintext chunk read from one socket is handed whole
 * to the other's queue; on the TLS side SSL_read decrypts straight into
 * the backend's queue and SSL_write encrypts straight into the client's
 * (through the chunk BIO of tls.c).
 *
 * Must not: free the session (session.c's close path does), hold a chunk
 * while idle, or read a side whose peer's queue is above the high-water
 * mark.
 */
#include "mailproxy/relay.h"

#include <assert.h>
#include <limits.h>

#include <openssl/err.h>

#include "mailproxy/session.h"
#include "mailproxy/worker.h"

#define WRITE_SPANS 8

static struct buf_pool *
pool_of(struct side *x)
{
	return &x->session->worker->pool;
}

static bool
is_client(const struct side *x)
{
	return x == &x->session->client;
}

static void
side_error(struct side *x, int uv_err)
{
	session_close(x->session,
	    is_client(x) ? SESSION_END_CLIENT_ERROR : SESSION_END_BACKEND_ERROR,
	    uv_strerror(uv_err));
}

/* Gives an emptied input chunk back, so an idle side holds nothing. */
static void
release_input(struct side *x)
{
	if (x->in != NULL && buf_chunk_len(x->in) == 0) {
		buf_pool_put(pool_of(x), x->in);
		x->in = NULL;
	}
}

static void
pause_reading(struct side *x)
{
	relay_read_stop(x);
	x->paused = true;
}

static void process_input(struct side *x);

static void
resume_reading(struct side *x)
{
	x->paused = false;
	if (relay_read_start(x) < 0)
		return;
	/* Input held back while paused (and, on the TLS side, records
	 * OpenSSL has buffered) must go now: no new read may come. */
	process_input(x);
}

/*
 * Closes the session once both directions are finished, or, when
 * mailproxy is saying goodbye, once the client has its last bytes.
 */
static void
check_done(struct session *s)
{
	struct side *c = &s->client, *b = &s->backend;

	if (s->state == SESSION_FLUSH) {
		if (c->out.bytes == 0 && c->eof)
			session_close(s, SESSION_END_NONE, NULL);
		return;
	}
	if (s->state == SESSION_RELAY && c->eof && b->eof &&
	    c->out.bytes == 0 && b->out.bytes == 0)
		session_close(s, SESSION_END_NONE, NULL);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct side *x = h->data;
	struct buf_chunk *c;

	(void)suggested;
	/* Big reads only once the bytes are relayed opaquely: before, a
	 * client that leaves a partial line would pin the whole chunk. */
	if (x->in == NULL)
		x->in = x->session->state == SESSION_RELAY &&
		        x->session->dialog == NULL ?
		    buf_pool_get_big(pool_of(x)) :
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

/*
 * A failed SSL_read on the client side. Returns false for "no more for
 * now" (WANT_READ); true when the client is done or the session ended.
 */
static bool
tls_read_failed(struct session *s, int n)
{
	int err = SSL_get_error(s->ssl, n);

	if (err == SSL_ERROR_WANT_READ)
		return false;
	if (err == SSL_ERROR_ZERO_RETURN) {
		relay_client_done(s, NULL);
		return true;
	}
	if (s->tls_io.nomem) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return true;
	}
	if (s->tls_io.eof) {
		/* TCP FIN without close_notify: common among mail clients,
		 * so a close, with OpenSSL's words. */
		relay_client_done(s,
		    tls_error_reason("unexpected eof while reading"));
		return true;
	}
	session_finish(s, -1, SESSION_END_TLS_ERROR,
	    tls_error_reason("TLS error"));
	return true;
}

static void
sink_client(void *ctx, const char *p, size_t n)
{
	struct session *s = ctx;
	struct side *c = &s->client;

	if (n == 0 || s->nomem)
		return;
	s->last_to_client = p[n - 1];
	if (s->tls_up) {
		ERR_clear_error();
		if (SSL_write(s->ssl, p, (int)n) <= 0)
			s->nomem = true; /* the chunk BIO fails only so */
		ERR_clear_error();
		return;
	}
	/* Between the STARTTLS reply and the handshake: not a byte. */
	if (s->ssl != NULL)
		return;
	if (buf_queue_append(&c->out, pool_of(c), p, n) < 0)
		s->nomem = true;
}

static void
sink_backend(void *ctx, const char *p, size_t n)
{
	struct session *s = ctx;
	struct side *b = &s->backend;

	if (!s->nomem && buf_queue_append(&b->out, pool_of(b), p, n) < 0)
		s->nomem = true;
}

void
relay_sink_init(struct session *s)
{
	s->sink.ctx = s;
	s->sink.to_client = sink_client;
	s->sink.to_backend = sink_backend;
}

/* Authenticated: the dialogue goes, and what it had not consumed of the
 * client's plaintext is relayed first. */
static void
dialog_done(struct session *s)
{
	struct side *b = &s->backend;

	s->stats = *dialog_stats(s->dialog);
	dialog_free(s->dialog);
	s->dialog = NULL;
	if (s->plain_in != NULL) {
		if (buf_chunk_len(s->plain_in) > 0)
			buf_queue_push_chunk(&b->out, pool_of(b), s->plain_in);
		else
			buf_pool_put(pool_of(b), s->plain_in);
		s->plain_in = NULL;
	}
	if (s->held) {
		s->held = false;
		(void)relay_read_start(&s->client);
	}
}

/* Decrypts what fits into plain_in: bytes added, or -1 when the session
 * ended or the client is done. */
static int
decrypt(struct session *s)
{
	struct buf_chunk *p = s->plain_in;
	int n;

	if (p == NULL) {
		p = s->plain_in = buf_pool_get(pool_of(&s->client));
		if (p == NULL) {
			session_close(s, SESSION_END_NO_MEMORY, NULL);
			return -1;
		}
	}
	if (p->start == p->end)
		p->start = p->end = 0;
	else if (p->end == p->size)
		buf_chunk_compact(p);
	if (p->end == p->size)
		return 0;
	ERR_clear_error();
	n = SSL_read(s->ssl, p->data + p->end, (int)(p->size - p->end));
	if (n > 0) {
		p->end += (size_t)n;
		return n;
	}
	return tls_read_failed(s, n) ? -1 : 0;
}

/* After the dialogue wrote: both queues go out. False: session ended. */
static bool
dialog_flush(struct session *s)
{
	if (s->nomem) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return false;
	}
	relay_flush(&s->backend);
	if (s->state == SESSION_CLOSING)
		return false;
	relay_flush(&s->client);
	return s->state != SESSION_CLOSING;
}

/*
 * The client's plaintext through the dialogue. Returns true when the
 * dialogue has ended and the rest is relayed as usual.
 */
static bool
dialog_from_client(struct session *s)
{
	struct side *c = &s->client;
	struct buf_chunk *in;
	enum dialog_event ev;
	size_t n, len;
	int got = 0;
	bool hello;

	for (;;) {
		if (s->tls_up && (got = decrypt(s)) < 0)
			return false;
		in = s->ssl != NULL ? s->plain_in : c->in;
		len = in != NULL ? buf_chunk_len(in) : 0;
		if (len == 0) {
			/* SSL_read may have answered alone: a refused
			 * renegotiation's alert, a KeyUpdate. */
			if (s->tls_up && s->state != SESSION_CLOSING)
				relay_flush(c);
			return false;
		}
		n = dialog_client(s->dialog, in->data + in->start, len,
		    &s->sink, &ev);
		in->start += n;
		if (n > 0)
			session_plain_activity(s);
		if (!dialog_flush(s))
			return false;
		switch (ev) {
		case DIALOG_CONTINUE:
			if (n > 0 || got > 0)
				continue;
			/* The dialogue waits for the backend with a full
			 * buffer: read nothing more until it has answered. */
			if (in->start == 0 && in->end == in->size) {
				relay_read_stop(c);
				s->held = true;
			}
			return false;
		case DIALOG_STARTTLS:
			/* Never parsed: the CVE-2011-0411 class. */
			len = buf_chunk_len(in);
			hello = len >= 2 &&
			    (unsigned char)in->data[in->start] == 0x16 &&
			    in->data[in->start + 1] == 0x03;
			in->start = in->end;
			session_starttls(s, len, hello);
			return false;
		case DIALOG_CONNECT:
			session_connect_plain(s);
			return false;
		case DIALOG_OPAQUE:
			dialog_done(s);
			return true;
		case DIALOG_CLOSE:
			session_dialog_closed(s);
			return false;
		}
	}
}

/*
 * True when x's queue has room for more. A full queue is written at once
 * rather than at the end of the iteration: only a socket that refuses it
 * makes the source wait. Each pause and resume costs libuv two or three
 * epoll_ctl calls, and a fast reader would otherwise see one per 64 KiB.
 * False also when the write ended the session.
 */
static bool
make_room(struct side *x)
{
	if (x->out.bytes < RELAY_HIGH_WATER)
		return true;
	relay_flush(x);
	return x->session->state != SESSION_CLOSING &&
	    x->out.bytes < RELAY_HIGH_WATER;
}

/* Client to backend. */
static void
from_client(struct session *s)
{
	struct side *c = &s->client, *b = &s->backend;
	size_t room;
	char *p;
	int n;

	if (s->dialog != NULL && !dialog_from_client(s))
		return;
	if (s->ssl == NULL) {
		if (c->in != NULL) {
			buf_queue_push_chunk(&b->out, pool_of(b), c->in);
			c->in = NULL;
		}
		if (!make_room(b)) {
			if (s->state == SESSION_CLOSING)
				return;
			pause_reading(c);
		}
		relay_flush(b);
		return;
	}
	for (;;) {
		if (!make_room(b)) {
			if (s->state == SESSION_CLOSING)
				return;
			pause_reading(c);
			break;
		}
		p = buf_queue_reserve(&b->out, pool_of(b), &room);
		if (p == NULL) {
			session_close(s, SESSION_END_NO_MEMORY, NULL);
			return;
		}
		ERR_clear_error();
		n = SSL_read(s->ssl, p, room > INT_MAX ? INT_MAX : (int)room);
		if (n > 0) {
			buf_queue_commit(&b->out, (size_t)n);
			continue;
		}
		buf_queue_drop_empty_tail(&b->out, pool_of(b));
		if (tls_read_failed(s, n)) {
			if (s->state == SESSION_CLOSING ||
			    s->state == SESSION_FLUSH)
				return;
		}
		break;
	}
	relay_flush_later(b);
	if (s->state == SESSION_RELAY)
		relay_flush(c); /* alerts, KeyUpdate answers */
}

/* The backend's bytes through the dialogue. True when it has ended and
 * the rest is relayed as usual. */
static bool
dialog_from_backend(struct session *s)
{
	struct side *c = &s->client, *b = &s->backend;
	struct buf_chunk *in = b->in;
	size_t len = in != NULL ? buf_chunk_len(in) : 0, n;
	enum dialog_event ev;

	if (len == 0)
		return false;
	n = dialog_backend(s->dialog, in->data + in->start, len, &s->sink, &ev);
	in->start += n;
	if (!dialog_flush(s))
		return false;
	if (ev == DIALOG_CLOSE) {
		session_dialog_closed(s);
		return false;
	}
	if (ev == DIALOG_OPAQUE) {
		dialog_done(s);
		from_client(s);
		return s->state == SESSION_RELAY;
	}
	if (c->out.bytes >= RELAY_HIGH_WATER)
		pause_reading(b);
	/* The backend answered: the client's next command may go. */
	if (s->held) {
		s->held = false;
		(void)relay_read_start(c);
	}
	if (s->state == SESSION_RELAY)
		from_client(s);
	return false;
}

/* Backend to client. */
static void
from_backend(struct session *s)
{
	struct side *c = &s->client, *b = &s->backend;
	struct buf_chunk *in = b->in;
	size_t len = in != NULL ? buf_chunk_len(in) : 0;
	int n;

	if (s->dialog != NULL) {
		if (!dialog_from_backend(s))
			return;
		in = b->in;
		len = in != NULL ? buf_chunk_len(in) : 0;
	}
	if (len == 0)
		return;
	s->last_to_client = in->data[in->end - 1];
	if (s->ssl == NULL) {
		buf_queue_push_chunk(&c->out, pool_of(c), in);
		b->in = NULL;
	} else {
		ERR_clear_error();
		n = SSL_write(s->ssl, in->data + in->start, (int)len);
		if (n <= 0) {
			if (s->tls_io.nomem)
				session_close(s, SESSION_END_NO_MEMORY, NULL);
			else
				session_close(s, SESSION_END_TLS_ERROR,
				    tls_error_reason("TLS write failed"));
			return;
		}
		/* The chunk BIO takes every byte, so nothing is partial. */
		assert((size_t)n == len);
		in->start = in->end;
	}
	if (!make_room(c)) {
		if (s->state == SESSION_CLOSING)
			return;
		pause_reading(b);
	}
	relay_flush_later(c);
}

static void
process_input(struct side *x)
{
	struct session *s = x->session;

	switch (s->state) {
	case SESSION_PROXY:
		if (!is_client(x))
			break;
		session_proxy_header(s);
		/* What came with the header is the client's first bytes. */
		if (s->state != SESSION_PROXY && s->state != SESSION_CLOSING &&
		    x->in != NULL && buf_chunk_len(x->in) > 0) {
			process_input(x);
			return;
		}
		break;
	case SESSION_PLAIN:
		if (is_client(x))
			from_client(s);
		break;
	case SESSION_HANDSHAKE:
		if (is_client(x))
			session_handshake(s);
		break;
	case SESSION_RELAY:
		if (is_client(x))
			from_client(s);
		else
			from_backend(s);
		break;
	case SESSION_FLUSH:
		/* Read and dropped, so that closing sends FIN, not RST. */
		if (x->in != NULL)
			x->in->start = x->in->end;
		break;
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
	if (s->state != SESSION_CLOSING)
		release_input(x);
}

static void
backend_done(struct session *s)
{
	struct side *c = &s->client, *b = &s->backend;

	b->eof = true;
	relay_read_stop(b);
	session_set_end(s, SESSION_END_BACKEND_CLOSED, NULL);
	if (s->state != SESSION_RELAY) {
		check_done(s);
		return;
	}
	/* Everything the backend said is already encrypted in c->out, so
	 * close_notify lands after it. */
	if (s->ssl != NULL &&
	    (SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN) == 0) {
		ERR_clear_error();
		(void)SSL_shutdown(s->ssl);
		ERR_clear_error();
	}
	c->want_fin = true;
	session_linger(s);
	relay_flush(c);
	if (s->state != SESSION_CLOSING)
		check_done(s);
}

void
relay_client_done(struct session *s, const char *error)
{
	struct side *c = &s->client, *b = &s->backend;

	c->eof = true;
	relay_read_stop(c);
	session_set_end(s, SESSION_END_CLIENT_CLOSED, error);
	if (s->state != SESSION_RELAY) {
		if (s->state == SESSION_FLUSH)
			check_done(s);
		else
			session_close(s, SESSION_END_CLIENT_CLOSED, error);
		return;
	}
	b->want_fin = true;
	session_linger(s);
	relay_flush(b);
	if (s->state != SESSION_CLOSING)
		check_done(s);
}

static void
on_eof(struct side *x)
{
	struct session *s = x->session;

	if (!is_client(x)) {
		backend_done(s);
		return;
	}
	if (s->state == SESSION_PROXY && x->bytes_in > 0) {
		session_close(s, SESSION_END_PROXY_ERROR,
		    "truncated PROXY protocol header");
		return;
	}
	if (s->ssl == NULL) {
		relay_client_done(s, NULL);
		return;
	}
	/* Let OpenSSL see the end: it tells close_notify from truncation
	 * and finishes records still buffered. */
	s->tls_io.eof = true;
	x->eof = true;
	relay_read_stop(x);
	switch (s->state) {
	case SESSION_HANDSHAKE:
	case SESSION_RELAY:
		process_input(x);
		/* OpenSSL always reports the end; this is the safety net
		 * should it ever not, so the backend still gets its FIN. */
		if (s->state == SESSION_RELAY && !s->backend.want_fin)
			relay_client_done(s, NULL);
		break;
	case SESSION_FLUSH:
		check_done(s);
		break;
	default:
		session_close(s, SESSION_END_CLIENT_CLOSED, NULL);
		break;
	}
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct side *x = stream->data;
	struct session *s = x->session;

	(void)buf;
	assert(s->magic == SESSION_MAGIC);
	s->worker->io_events++;
	if (s->state == SESSION_CLOSING)
		return;
	if (nread > 0) {
		x->in->end += (size_t)nread;
		x->bytes_in += (uint64_t)nread;
		session_touch(s);
		process_input(x);
	} else if (nread == UV_EOF) {
		release_input(x);
		on_eof(x);
	} else if (nread == UV_ENOBUFS) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
	} else if (nread < 0) {
		side_error(x, (int)nread);
	} else {
		release_input(x);
	}
}

int
relay_read_start(struct side *x)
{
	int r;

	if (x->reading || x->paused || x->eof || !x->open)
		return 0;
	r = uv_read_start(&x->h.stream, on_alloc, on_read);
	if (r < 0) {
		side_error(x, r);
		return r;
	}
	x->reading = true;
	return 0;
}

void
relay_read_stop(struct side *x)
{
	if (x->reading)
		(void)uv_read_stop(&x->h.stream);
	x->reading = false;
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct side *x = req->data;
	struct session *s = x->session;

	free(req);
	/* ENOTCONN and friends: the peer is gone, which the reads report. */
	(void)status;
	if (session_release(s))
		return;
	check_done(s);
}

static void
on_write(uv_write_t *req, int status)
{
	struct side *x = req->data;
	struct session *s = x->session;
	size_t written = x->writing;

	free(req);
	x->writing = 0;
	if (session_release(s))
		return;
	if (status < 0) {
		side_error(x, status);
		return;
	}
	x->bytes_out += written;
	buf_queue_consume(&x->out, pool_of(x), written);
	session_touch(s);
	if (x->peer->paused && x->out.bytes <= RELAY_LOW_WATER &&
	    s->state == SESSION_RELAY) {
		resume_reading(x->peer);
		if (s->state == SESSION_CLOSING)
			return;
	}
	relay_flush(x);
	if (s->state != SESSION_CLOSING)
		check_done(s);
}

/*
 * Writes what it can at once. A write that completes here costs no
 * request, no callback and, with libuv 1.44, no epoll_ctl: a finished
 * uv_write re-arms its watcher at the next poll even when nothing
 * changed. Returns how many bytes went, or a libuv error; UV_EAGAIN
 * when the socket is full.
 */
static int
write_now(struct side *x, uv_buf_t *bufs, unsigned n)
{
	int r;

	/* Backpressure: the peer's resume re-enters the relay; leave it to
	 * on_write, outside this call. */
	if (x->peer->paused)
		return UV_EAGAIN;
	r = uv_try_write(&x->h.stream, bufs, n);
	if (r <= 0)
		return r == 0 ? UV_EAGAIN : r;
	x->bytes_out += (size_t)r;
	buf_queue_consume(&x->out, pool_of(x), (size_t)r);
	session_touch(x->session);
	return r;
}

void
relay_flush(struct side *x)
{
	struct session *s = x->session;
	struct buf_span spans[WRITE_SPANS];
	uv_buf_t bufs[WRITE_SPANS];
	uv_shutdown_t *sreq;
	uv_write_t *wreq;
	size_t i, n, total;
	bool wrote = false;
	int r;

	if (!x->open || x->writing > 0)
		return;
	for (;;) {
		if (x->out.bytes == 0)
			break;
		n = buf_queue_peek(&x->out, spans, WRITE_SPANS, &total);
		for (i = 0; i < n; i++)
			bufs[i] = uv_buf_init((char *)spans[i].base,
			    (unsigned)spans[i].len);
		r = write_now(x, bufs, (unsigned)n);
		if (r == UV_EAGAIN)
			break;
		if (r < 0) {
			side_error(x, r);
			return;
		}
		wrote = true;
		if ((size_t)r < total)
			break;
	}
	if (x->out.bytes == 0) {
		if (x->want_fin && !x->fin_sent) {
			x->fin_sent = true;
			/* Without memory the FIN is not sent; the close
			 * that follows the linger sends it. */
			sreq = malloc(sizeof(*sreq));
			if (sreq != NULL) {
				sreq->data = x;
				r = uv_shutdown(sreq, &x->h.stream,
				    on_shutdown);
				if (r == 0)
					s->pending++;
				else
					free(sreq);
			}
		}
		/* What on_write would have checked: those were the last
		 * bytes of the session. */
		if (wrote)
			check_done(s);
		return;
	}
	wreq = malloc(sizeof(*wreq));
	if (wreq == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	wreq->data = x;
	n = buf_queue_peek(&x->out, spans, WRITE_SPANS, &total);
	for (i = 0; i < n; i++)
		bufs[i] =
		    uv_buf_init((char *)spans[i].base, (unsigned)spans[i].len);
	r = uv_write(wreq, &x->h.stream, bufs, (unsigned)n, on_write);
	if (r < 0) {
		free(wreq);
		side_error(x, r);
		return;
	}
	x->writing = total;
	s->pending++;
}

static void
on_flush_check(uv_check_t *h)
{
	struct worker *w = h->data;
	struct side *x;

	while ((x = w->flush_head) != NULL) {
		w->flush_head = x->flush_next;
		x->flush_next = NULL;
		x->flush_queued = false;
		/* Closing sessions are not freed before the closing phase,
		 * which comes after this one; relay_flush skips them. */
		relay_flush(x);
	}
	uv_check_stop(h);
	uv_idle_stop(&w->flush_idle);
}

/* Only keeps the poll phase from blocking; on_flush_check does the work. */
static void
on_flush_idle(uv_idle_t *h)
{
	(void)h;
}

void
relay_flush_later(struct side *x)
{
	struct worker *w = x->session->worker;

	if (x->flush_queued)
		return;
	x->flush_queued = true;
	x->flush_next = w->flush_head;
	w->flush_head = x;
	(void)uv_check_start(&w->flush_check, on_flush_check);
	/* Queued outside the poll phase (a write callback, a timer), the
	 * loop would otherwise block in poll with the data unsent: an active
	 * idle handle makes that poll return at once. */
	(void)uv_idle_start(&w->flush_idle, on_flush_idle);
}

void
relay_flush_cancel(struct side *x)
{
	struct side **pp = &x->session->worker->flush_head;

	if (!x->flush_queued)
		return;
	while (*pp != x)
		pp = &(*pp)->flush_next;
	*pp = x->flush_next;
	x->flush_queued = false;
}

void
relay_side_init(struct session *s, struct side *x, struct side *peer)
{
	x->session = s;
	x->peer = peer;
	x->h.handle.data = x;
}

void
relay_start(struct session *s)
{
	if (relay_read_start(&s->backend) < 0)
		return;
	if (relay_read_start(&s->client) < 0)
		return;
	/* Application data that came in with the client's Finished. */
	process_input(&s->client);
}
