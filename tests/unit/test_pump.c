/*
 * pump: the byte pump on a real loop, between two loopback TCP
 * connections whose far ends the test drives itself (non-blocking, small
 * kernel buffers, reading or not), with an owner scripted by each test.
 * Every mode is checked for its bound: a peer that never reads stops the
 * pump reading its source, so the peer that floods finds its sends
 * stalled after a bounded amount, and no queue ever holds more than the
 * high-water mark plus what one step or read adds (the budget of
 * pump.h); past PUMP_QUEUE_CAP a write is refused. Relayed bytes arrive
 * exact, half-close crosses, and every chunk is back in the pool at the
 * end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/pump.h"
#include "mailproxy/tls.h"
#include "testcert.h"

/* Where a peer that floods must have stalled: kernel buffers on both
 * sides of a loopback connection and the pump's budget, with room to
 * spare. Without backpressure the floods below never stall. */
#define STALL_BOUND (4u * 1024 * 1024)
/* What a flood may send at most before the test calls it unbounded. */
#define FLOOD_MAX   (64u * 1024 * 1024)

static const char *dir;
static SSL_CTX *server_ctx;
static struct config *server_cfg;

enum owner_mode {
	OWN_IGNORE,  /* consumes nothing */
	OWN_ECHO,    /* answers every 16 bytes with 80, as long as room */
	OWN_FORWARD, /* forwards the client's bytes to the backend */
	OWN_GREEDY,  /* answers without looking at the room */
};

struct harness {
	uv_loop_t loop;
	struct pump_host host;
	struct pump p;
	int peer[2]; /* the test's ends: 0 client, 1 backend */
	enum owner_mode own;
	enum pump_mode after_handshake;
	bool handshaken;
	bool released;
	unsigned eofs[2];
	unsigned fails;
	enum pump_error fail;
	int send_error;
	size_t at_error; /* the client's queue when the send was refused */
	size_t max_out[2];
	size_t peer_sent[2];
	size_t peer_got[2];
	/* A TLS client on peer[0], over memory BIOs. */
	SSL_CTX *cctx;
	SSL *tc;
	BIO *tc_in, *tc_out;
	char pending[65536]; /* its records the socket did not take yet */
	size_t pending_len;
};

static struct pump_side *
side(struct harness *h, int i)
{
	return i == 0 ? &h->p.client : &h->p.backend;
}

static struct harness *
of(void *owner)
{
	return owner;
}

static void
on_input(void *owner, struct pump_side *x)
{
	struct harness *h = of(owner);
	struct pump_side *c = &h->p.client, *b = &h->p.backend;
	char reply[80];
	const char *in;
	size_t len, n;
	int r;

	(void)x;
	memset(reply, 'r', sizeof(reply));
	switch (h->own) {
	case OWN_IGNORE:
		break;
	case OWN_ECHO:
		while (pump_room(c) && (in = pump_input(c, &len)) != NULL &&
		    len > 0) {
			n = len < 16 ? len : 16;
			pump_consume(c, n);
			r = pump_send(c, reply, sizeof(reply));
			assert_int_equal(r, 0);
		}
		break;
	case OWN_FORWARD:
		while (pump_room(b) && (in = pump_input(c, &len)) != NULL &&
		    len > 0) {
			r = pump_send(b, in, len);
			assert_int_equal(r, 0);
			pump_consume(c, len);
		}
		break;
	case OWN_GREEDY:
		in = pump_input(c, &len);
		if (in == NULL || len == 0)
			break;
		pump_consume(c, len);
		while (h->send_error == 0)
			h->send_error = pump_send(c, reply, sizeof(reply));
		h->at_error = c->out.bytes;
		break;
	}
}

static void
on_handshake(void *owner, struct pump_side *x)
{
	struct harness *h = of(owner);

	h->handshaken = true;
	pump_set_mode(x, h->after_handshake);
	if (h->after_handshake == PUMP_RELAY)
		pump_set_mode(&h->p.backend, PUMP_RELAY);
}

static void
on_eof(void *owner, struct pump_side *x, const char *error)
{
	struct harness *h = of(owner);

	(void)error;
	h->eofs[x == &h->p.client ? 0 : 1]++;
}

static void
on_drained(void *owner, struct pump_side *x)
{
	(void)owner;
	(void)x;
}

static void
on_fail(void *owner, struct pump_side *x, enum pump_error e, const char *detail)
{
	struct harness *h = of(owner);

	(void)x;
	(void)detail;
	h->fails++;
	h->fail = e;
	(void)pump_close(&h->p);
}

static void
on_side_closed(void *owner, struct pump_side *x)
{
	(void)owner;
	(void)x;
}

static void
on_released(void *owner)
{
	of(owner)->released = true;
}

static const struct pump_ops ops = {
    .input = on_input,
    .handshake = on_handshake,
    .eof = on_eof,
    .drained = on_drained,
    .fail = on_fail,
    .side_closed = on_side_closed,
    .released = on_released,
};

/* Small kernel buffers, so what sits in flight is mostly the pump's. */
static void
shrink(int fd)
{
	int size = 4096;

	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

/* A connected loopback pair: *mine for the test, *theirs for the pump. */
static void
tcp_pair(int *mine, int *theirs)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	assert_true(l >= 0);
	(void)setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	shrink(l);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	*mine = socket(AF_INET, SOCK_STREAM, 0);
	shrink(*mine);
	assert_int_equal(connect(*mine, (struct sockaddr *)&sin, sizeof(sin)),
	    0);
	*theirs = accept(l, NULL, NULL);
	assert_true(*theirs >= 0);
	(void)close(l);
	assert_int_equal(fcntl(*mine, F_SETFL, O_NONBLOCK), 0);
}

static void
harness_start(struct harness *h, enum pump_mode client, enum pump_mode backend)
{
	int fd;

	memset(h, 0, sizeof(*h));
	assert_int_equal(uv_loop_init(&h->loop), 0);
	pump_host_init(&h->host, &h->loop, 8);
	pump_init(&h->p, &h->host, &ops, h);
	tcp_pair(&h->peer[0], &fd);
	assert_int_equal(pump_side_open_tcp(&h->p.client), 0);
	assert_int_equal(uv_tcp_open(&h->p.client.h.tcp, fd), 0);
	tcp_pair(&h->peer[1], &fd);
	assert_int_equal(pump_side_open_tcp(&h->p.backend), 0);
	assert_int_equal(uv_tcp_open(&h->p.backend.h.tcp, fd), 0);
	pump_set_mode(&h->p.client, client);
	pump_set_mode(&h->p.backend, backend);
}

/* One loop iteration, then the queues are checked against the cap. */
static void
turn(struct harness *h)
{
	int i;

	(void)uv_run(&h->loop, UV_RUN_NOWAIT);
	if (h->released)
		return;
	for (i = 0; i < 2; i++) {
		size_t q = side(h, i)->out.bytes;

		assert_true(q <= PUMP_QUEUE_CAP);
		if (q > h->max_out[i])
			h->max_out[i] = q;
	}
}

static void
nap(void)
{
	const struct timespec t = {0, 1000 * 1000};

	(void)nanosleep(&t, NULL);
}

/* The test's end i sends what the socket takes of n bytes of pattern. */
static size_t
peer_send(struct harness *h, int i, size_t n)
{
	char buf[16384];
	size_t sent = 0, k;
	ssize_t r;

	while (sent < n) {
		k = n - sent < sizeof(buf) ? n - sent : sizeof(buf);
		for (size_t j = 0; j < k; j++)
			buf[j] = (char)('a' + (h->peer_sent[i] + j) % 26);
		r = send(h->peer[i], buf, k, MSG_NOSIGNAL);
		if (r <= 0)
			break;
		sent += (size_t)r;
		h->peer_sent[i] += (size_t)r;
	}
	return sent;
}

/* Reads what has come to the test's end i, checking the pattern. */
static size_t
peer_recv(struct harness *h, int i, bool check)
{
	char buf[16384];
	size_t got = 0;
	ssize_t r;

	while ((r = recv(h->peer[i], buf, sizeof(buf), 0)) > 0) {
		for (ssize_t j = 0; check && j < r; j++)
			assert_int_equal(buf[j],
			    (char)('a' + (h->peer_got[i] + (size_t)j) % 26));
		got += (size_t)r;
		h->peer_got[i] += (size_t)r;
	}
	return got;
}

/*
 * The test's end i floods (never reading) while the loop turns, until
 * its sends have stalled for a while; returns what it sent. Fails when
 * FLOOD_MAX went through: then nothing held the flood back.
 */
static size_t
flood_until_stalled(struct harness *h, int i)
{
	unsigned quiet = 0;

	while (quiet < 200 && h->peer_sent[i] < FLOOD_MAX && !h->released) {
		quiet = peer_send(h, i, 65536) > 0 ? 0 : quiet + 1;
		turn(h);
		if (quiet > 0)
			nap();
	}
	assert_true(h->peer_sent[i] < FLOOD_MAX);
	return h->peer_sent[i];
}

static void
harness_stop(struct harness *h)
{
	unsigned i;

	if (!pump_close(&h->p))
		for (i = 0; i < 10000 && !h->released; i++)
			turn(h);
	else
		h->released = true;
	assert_true(h->released);
	pump_free(&h->p);
	if (h->tc != NULL)
		SSL_free(h->tc);
	SSL_CTX_free(h->cctx);
	pump_host_close(&h->host);
	(void)uv_run(&h->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h->loop), 0);
	assert_int_equal(h->host.pool.in_use, 0);
	pump_host_destroy(&h->host);
	(void)close(h->peer[0]);
	(void)close(h->peer[1]);
	ERR_clear_error();
}

/* ------------------------------------------------------------------ */
/* A TLS client on the test's client end, over memory BIOs. */

static void
tls_client_new(struct harness *h)
{
	h->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(h->cctx);
	(void)SSL_CTX_set_min_proto_version(h->cctx, TLS1_3_VERSION);
	h->tc = SSL_new(h->cctx);
	h->tc_in = BIO_new(BIO_s_mem());
	h->tc_out = BIO_new(BIO_s_mem());
	SSL_set_bio(h->tc, h->tc_in, h->tc_out);
	SSL_set_connect_state(h->tc);
}

/* Sends the client's records; false when the socket refused some. */
static bool
tls_client_push(struct harness *h)
{
	ssize_t r;
	int n;

	for (;;) {
		if (h->pending_len == 0) {
			n = BIO_read(h->tc_out, h->pending, sizeof(h->pending));
			if (n <= 0)
				return true;
			h->pending_len = (size_t)n;
		}
		r = send(h->peer[0], h->pending, h->pending_len, MSG_NOSIGNAL);
		if (r <= 0)
			return false;
		h->peer_sent[0] += (size_t)r;
		memmove(h->pending, h->pending + r, h->pending_len - (size_t)r);
		h->pending_len -= (size_t)r;
	}
}

static void
tls_client_pull(struct harness *h)
{
	char buf[16384];
	ssize_t r;

	while ((r = recv(h->peer[0], buf, sizeof(buf), 0)) > 0)
		assert_int_equal(BIO_write(h->tc_in, buf, (int)r), (int)r);
}

static void
tls_handshake(struct harness *h, enum pump_mode after)
{
	unsigned i;

	h->after_handshake = after;
	tls_client_new(h);
	assert_int_equal(pump_start_tls(&h->p.client, server_ctx), 0);
	for (i = 0; i < 5000 && !(h->handshaken && SSL_is_init_finished(h->tc));
	     i++) {
		(void)SSL_do_handshake(h->tc);
		(void)tls_client_push(h);
		turn(h);
		tls_client_pull(h);
		nap();
	}
	assert_true(h->handshaken);
	assert_true(SSL_is_init_finished(h->tc));
}

/*
 * The TLS client sends KeyUpdate(update_requested) after KeyUpdate and
 * never reads: every one makes OpenSSL write an answer into the client
 * side's own queue. Returns what it sent before its sends stalled.
 */
static size_t
keyupdate_flood(struct harness *h)
{
	unsigned quiet = 0;

	while (quiet < 200 && h->peer_sent[0] < FLOOD_MAX && !h->released) {
		if (h->pending_len == 0) {
			assert_int_equal(SSL_key_update(h->tc,
			                     SSL_KEY_UPDATE_REQUESTED),
			    1);
			(void)SSL_do_handshake(h->tc);
		}
		quiet = tls_client_push(h) ? 0 : quiet + 1;
		turn(h);
		if (quiet > 0)
			nap();
	}
	assert_true(h->peer_sent[0] < FLOOD_MAX);
	return h->peer_sent[0];
}

/* ------------------------------------------------------------------ */

/* PUMP_DELIVER, the owner answering on the same side (mailproxy before
 * TLS): a client that never reads its answers is not read. */
static void
test_pump_deliver_answers_to_a_client_that_never_reads(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_DELIVER, PUMP_HOLD);
	h.own = OWN_ECHO;
	sent = flood_until_stalled(&h, 0);
	print_message("sent %zu, client queue peaked at %zu\n", sent,
	    h.max_out[0]);
	assert_true(sent < STALL_BOUND);
	/* One step past the mark at most: an 80-byte answer. */
	assert_true(h.max_out[0] <= PUMP_HIGH_WATER + 80);
	assert_true(h.max_out[0] >= PUMP_HIGH_WATER);
	assert_int_equal(h.fails, 0);
	harness_stop(&h);
}

/* PUMP_DELIVER, the owner forwarding (a literal chain before login): a
 * backend that never reads stops the client being read. */
static void
test_pump_deliver_forward_to_a_backend_that_never_reads(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_DELIVER, PUMP_DELIVER);
	h.own = OWN_FORWARD;
	sent = flood_until_stalled(&h, 0);
	print_message("sent %zu, backend queue peaked at %zu\n", sent,
	    h.max_out[1]);
	assert_true(sent < STALL_BOUND);
	/* One step past the mark at most: one input chunk. */
	assert_true(h.max_out[1] <= PUMP_HIGH_WATER + BUF_CHUNK_SIZE);
	assert_int_equal(h.fails, 0);
	/* The backend reads at last: everything arrives, in order. */
	while (h.peer_got[1] < sent) {
		(void)peer_recv(&h, 1, true);
		turn(&h);
	}
	assert_int_equal(h.peer_got[1], sent);
	harness_stop(&h);
}

/* PUMP_DELIVER with an owner that waits (a command held for the
 * backend's reply): reading stops once the input buffer is full. */
static void
test_pump_deliver_unconsumed_input_stops_reading(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_DELIVER, PUMP_HOLD);
	h.own = OWN_IGNORE;
	sent = flood_until_stalled(&h, 0);
	assert_true(sent < STALL_BOUND);
	assert_true(h.p.client.bytes_in <= BUF_CHUNK_SIZE);
	assert_int_equal(h.max_out[0], 0);
	harness_stop(&h);
}

/* PUMP_HOLD (connecting the backend): nothing is read at all. */
static void
test_pump_hold_reads_nothing(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_HOLD, PUMP_HOLD);
	sent = flood_until_stalled(&h, 0);
	assert_true(sent < STALL_BOUND);
	assert_int_equal(h.p.client.bytes_in, 0);
	harness_stop(&h);
}

/* PUMP_RELAY in plaintext both ways: bounded while the reader stalls,
 * exact once it reads, and the client's FIN reaches the backend after
 * its last byte. */
static void
test_pump_relay_bounded_exact_and_half_close(void **state)
{
	struct harness h;
	size_t sent;
	char c;

	(void)state;
	harness_start(&h, PUMP_RELAY, PUMP_RELAY);
	sent = flood_until_stalled(&h, 0);
	print_message("sent %zu, backend queue peaked at %zu\n", sent,
	    h.max_out[1]);
	assert_true(sent < STALL_BOUND);
	/* A big read may land when the queue is just under the mark. */
	assert_true(h.max_out[1] <= PUMP_HIGH_WATER + BUF_CHUNK_BIG);
	assert_int_equal(shutdown(h.peer[0], SHUT_WR), 0);
	while (h.eofs[0] == 0 || h.peer_got[1] < sent) {
		(void)peer_recv(&h, 1, true);
		turn(&h);
	}
	assert_int_equal(h.peer_got[1], sent);
	/* Then the FIN. */
	while (recv(h.peer[1], &c, 1, 0) < 0 && errno == EAGAIN)
		turn(&h);
	assert_int_equal(recv(h.peer[1], &c, 1, 0), 0);
	assert_int_equal(h.eofs[1], 0);
	harness_stop(&h);
}

/* PUMP_HANDSHAKE, then PUMP_DELIVER on TLS: a client that floods
 * KeyUpdate requests and never reads is not read once its own queue of
 * answers is full. */
static void
test_pump_tls_deliver_keyupdate_flood_is_bounded(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_HOLD, PUMP_HOLD);
	tls_handshake(&h, PUMP_DELIVER);
	sent = keyupdate_flood(&h);
	print_message("sent %zu, client queue peaked at %zu\n", sent,
	    h.max_out[0]);
	assert_true(sent < STALL_BOUND);
	assert_true(h.max_out[0] <= PUMP_HIGH_WATER + 2 * BUF_CHUNK_SIZE);
	assert_int_equal(h.fails, 0);
	harness_stop(&h);
}

/* The same in the relay (after login), the backend reading. */
static void
test_pump_tls_relay_keyupdate_flood_is_bounded(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_HOLD, PUMP_HOLD);
	tls_handshake(&h, PUMP_RELAY);
	sent = keyupdate_flood(&h);
	print_message("sent %zu, client queue peaked at %zu\n", sent,
	    h.max_out[0]);
	assert_true(sent < STALL_BOUND);
	/* One big read of ciphertext answered past the mark at most. */
	assert_true(h.max_out[0] <= PUMP_HIGH_WATER + 2 * BUF_CHUNK_BIG);
	assert_int_equal(h.fails, 0);
	harness_stop(&h);
}

/* TLS relay: the backend's bytes reach a slow TLS client exact, the
 * client's queue bounded; its close_notify reaches the backend as FIN. */
static void
test_pump_tls_relay_to_a_slow_client_is_bounded(void **state)
{
	struct harness h;
	char buf[16384];
	size_t got = 0, sent;
	int n;

	(void)state;
	harness_start(&h, PUMP_HOLD, PUMP_HOLD);
	tls_handshake(&h, PUMP_RELAY);
	sent = flood_until_stalled(&h, 1);
	print_message("backend sent %zu, client queue peaked at %zu\n", sent,
	    h.max_out[0]);
	assert_true(sent < STALL_BOUND);
	assert_true(h.max_out[0] <= PUMP_HIGH_WATER + BUF_CHUNK_BIG + 1024);
	while (got < sent) {
		tls_client_pull(&h);
		while ((n = SSL_read(h.tc, buf, sizeof(buf))) > 0) {
			for (int j = 0; j < n; j++)
				assert_int_equal(buf[j],
				    (char)('a' + (got + (size_t)j) % 26));
			got += (size_t)n;
		}
		(void)tls_client_push(&h);
		turn(&h);
	}
	assert_int_equal(got, sent);
	assert_int_equal(SSL_shutdown(h.tc), 0);
	(void)tls_client_push(&h);
	while (h.eofs[0] == 0)
		turn(&h);
	harness_stop(&h);
}

/* PUMP_DRAIN (the goodbye said): bytes are dropped up to the budget,
 * then the side counts as ended. */
static void
test_pump_drain_is_bounded(void **state)
{
	struct harness h;
	size_t sent;

	(void)state;
	harness_start(&h, PUMP_DRAIN, PUMP_HOLD);
	sent = flood_until_stalled(&h, 0);
	assert_true(sent < STALL_BOUND);
	assert_int_equal(h.eofs[0], 1);
	assert_true(h.p.client.bytes_in >= PUMP_HIGH_WATER);
	assert_true(h.p.client.bytes_in <= PUMP_HIGH_WATER + BUF_CHUNK_SIZE);
	harness_stop(&h);
}

/* An owner that ignores pump_room() meets the hard cap: its write is
 * refused, and the queue never passes PUMP_QUEUE_CAP. */
static void
test_pump_send_refused_at_the_cap(void **state)
{
	struct harness h;
	unsigned i;

	(void)state;
	harness_start(&h, PUMP_DELIVER, PUMP_HOLD);
	h.own = OWN_GREEDY;
	(void)peer_send(&h, 0, 16);
	for (i = 0; i < 1000 && h.send_error == 0; i++)
		turn(&h);
	assert_int_equal(h.send_error, PUMP_ERR_LIMIT);
	assert_true(h.at_error <= PUMP_QUEUE_CAP);
	assert_true(h.at_error > PUMP_QUEUE_CAP - 80);
	harness_stop(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
	        test_pump_deliver_answers_to_a_client_that_never_reads),
	    cmocka_unit_test(
	        test_pump_deliver_forward_to_a_backend_that_never_reads),
	    cmocka_unit_test(test_pump_deliver_unconsumed_input_stops_reading),
	    cmocka_unit_test(test_pump_hold_reads_nothing),
	    cmocka_unit_test(test_pump_relay_bounded_exact_and_half_close),
	    cmocka_unit_test(test_pump_tls_deliver_keyupdate_flood_is_bounded),
	    cmocka_unit_test(test_pump_tls_relay_keyupdate_flood_is_bounded),
	    cmocka_unit_test(test_pump_tls_relay_to_a_slow_client_is_bounded),
	    cmocka_unit_test(test_pump_drain_is_bounded),
	    cmocka_unit_test(test_pump_send_refused_at_the_cap),
	};
	char path[600], cmd[600], *error = NULL;
	FILE *f;
	int r;

	(void)signal(SIGPIPE, SIG_IGN);
	dir = testcert_tmpdir();
	if (dir == NULL || testcert_write(dir, "p") != 0 || tls_init() != 0) {
		fprintf(stderr, "cannot set up test certificates\n");
		return 1;
	}
	(void)snprintf(path, sizeof(path), "%s/pump.ini", dir);
	f = fopen(path, "w");
	if (f == NULL)
		return 1;
	fprintf(f,
	    "[tls]\ncertificate = %s/p.crt\nkey = %s/p.key\n"
	    "[listener t]\nprotocol = imap\nlisten = 127.0.0.1:1\n"
	    "backend = 127.0.0.1:1\n",
	    dir, dir);
	(void)fclose(f);
	server_cfg = config_load(path, &error);
	if (server_cfg == NULL) {
		fprintf(stderr, "%s\n", error);
		return 1;
	}
	server_ctx = tls_ctx_build(server_cfg, &server_cfg->listeners[0], NULL,
	    NULL, &error);
	if (server_ctx == NULL) {
		fprintf(stderr, "%s\n", error);
		return 1;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	SSL_CTX_free(server_ctx);
	config_unref(server_cfg);
	tls_cleanup();
	(void)snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	if (system(cmd) != 0)
		r = 1;
	return r;
}
