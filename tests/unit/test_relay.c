/*
 * relay: a real worker loop on 127.0.0.1 between a blocking OpenSSL client
 * and a blocking backend thread. 64 MB go each way byte for byte while the
 * worker's chunk pool never holds more than the water marks allow, every
 * chunk is back when the session ends, and half-close crosses in both
 * directions (client close_notify -> backend FIN; backend FIN -> client
 * close_notify). Each session first logs in (greeting, LOGIN, OK), since
 * mailproxy parses the dialogue until then and relays opaquely after.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
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
#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/relay.h"
#include "mailproxy/tls.h"
#include "mailproxy/worker.h"
#include "testcert.h"

#define TOTAL       (64u * 1024 * 1024)
/* What the pump may hold at once: a full queue towards one side plus the
 * records of one big read past the mark, the input chunks of both sides,
 * and one spare for the TLS records that straddle chunks. */
#define PEAK_CHUNKS ((RELAY_HIGH_WATER + BUF_CHUNK_BIG) / BUF_CHUNK_SIZE + 4)

static const char *dir;

static unsigned char
pattern(size_t i)
{
	return (unsigned char)((i * 7 + i / 8191) & 0xff);
}

static int
listen_any(unsigned *port_out)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	assert_true(fd >= 0);
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port_out = ntohs(sin.sin_port);
	return fd;
}

/* Small kernel buffers at both outer ends, so what sits in flight is
 * mostly what mailproxy itself holds. */
static void
shrink_buffers(int fd)
{
	int size = 65536;

	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

enum backend_mode {
	BACKEND_STREAMS, /* sends TOTAL bytes, then closes */
	BACKEND_SINKS,   /* reads until EOF, then says bye and closes */
};

struct backend {
	int listen_fd;
	enum backend_mode mode;
	atomic_size_t sent;
	size_t received;
	bool received_ok;
	pthread_t thread;
};

#define GREETING "* OK ready\r\n"
#define LOGIN    "a LOGIN u p\r\n"
#define LOGGED   "a OK done\r\n"

static void
backend_login(int fd)
{
	char line[64];
	size_t n = 0;

	assert_int_equal(write(fd, GREETING, strlen(GREETING)),
	    (ssize_t)strlen(GREETING));
	while (n < strlen(LOGIN)) {
		assert_int_equal(read(fd, line + n, 1), 1);
		n++;
	}
	assert_memory_equal(line, LOGIN, n);
	assert_int_equal(write(fd, LOGGED, strlen(LOGGED)),
	    (ssize_t)strlen(LOGGED));
}

static void
client_expect(SSL *ssl, const char *text)
{
	char buf[64];
	size_t got = 0;
	int n;

	while (got < strlen(text)) {
		n = SSL_read(ssl, buf + got, (int)(strlen(text) - got));
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_memory_equal(buf, text, got);
}

static void *
backend_main(void *arg)
{
	struct backend *b = arg;
	unsigned char buf[4096];
	int fd = accept(b->listen_fd, NULL, NULL);
	size_t i, sent = 0;
	ssize_t n;

	assert_true(fd >= 0);
	shrink_buffers(fd);
	backend_login(fd);
	if (b->mode == BACKEND_STREAMS) {
		while (sent < TOTAL) {
			size_t len = TOTAL - sent < sizeof(buf) ? TOTAL - sent :
			                                          sizeof(buf);

			for (i = 0; i < len; i++)
				buf[i] = pattern(sent + i);
			n = write(fd, buf, len);
			assert_true(n > 0);
			/* A short write resends the rest: the pattern is
			 * indexed by position. */
			sent += (size_t)n;
			atomic_store(&b->sent, sent);
		}
	} else {
		b->received_ok = true;
		/* Small reads: a slow backend behind a fast client. */
		while ((n = read(fd, buf, 1024)) > 0) {
			for (i = 0; i < (size_t)n; i++)
				if (buf[i] != pattern(b->received + i))
					b->received_ok = false;
			b->received += (size_t)n;
		}
		assert_int_equal(n, 0); /* the client's half-close */
		assert_int_equal(write(fd, "bye\r\n", 5), 5);
	}
	(void)close(fd);
	return NULL;
}

struct harness {
	struct config *cfg;
	SSL_CTX *ctx;
	uv_loop_t main_loop;
	uv_async_t done;
	struct worker *w;
	size_t peak_chunks;
	size_t chunks_left;
	unsigned proxy_port;
	struct backend backend;
};

static void
on_done(uv_async_t *a)
{
	struct harness *h = a->data;

	if (!atomic_load(&h->w->finished))
		return;
	/* The worker's loop has ended (an atomic store we just loaded), so
	 * its pool may be read from this thread. */
	h->peak_chunks = h->w->pool.peak_in_use;
	h->chunks_left = h->w->pool.in_use;
	uv_close((uv_handle_t *)a, NULL);
}

static void
harness_start(struct harness *h, enum backend_mode mode)
{
	char path[600], *error = NULL;
	unsigned backend_port;
	FILE *f;
	int fd;

	memset(h, 0, sizeof(*h));
	h->backend.mode = mode;
	h->backend.listen_fd = listen_any(&backend_port);
	(void)snprintf(path, sizeof(path), "%s/relay.ini", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	    "[tls]\ncertificate = %s/r.crt\nkey = %s/r.key\n"
	    "[listener t]\nprotocol = imap\nlisten = 127.0.0.1:1\n"
	    "backend = 127.0.0.1:%u\n",
	    dir, dir, backend_port);
	assert_int_equal(fclose(f), 0);
	h->cfg = config_load(path, &error);
	if (h->cfg == NULL)
		fail_msg("%s", error);
	h->ctx = tls_ctx_build(h->cfg, &h->cfg->listeners[0], &error);
	assert_non_null(h->ctx);
	assert_int_equal(uv_loop_init(&h->main_loop), 0);
	assert_int_equal(uv_async_init(&h->main_loop, &h->done, on_done), 0);
	h->done.data = h;
	fd = listen_any(&h->proxy_port);
	h->w = worker_create(0, h->cfg, &h->ctx, &fd, &h->done);
	assert_non_null(h->w);
	assert_int_equal(worker_start(h->w), 0);
	assert_int_equal(pthread_create(&h->backend.thread, NULL, backend_main,
	                     &h->backend),
	    0);
}

static void
harness_stop(struct harness *h)
{
	assert_int_equal(pthread_join(h->backend.thread, NULL), 0);
	(void)close(h->backend.listen_fd);
	worker_stop(h->w, true);
	(void)uv_run(&h->main_loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&h->main_loop), 0);
	worker_free(h->w);
	SSL_CTX_free(h->ctx);
	config_unref(h->cfg);
	assert_int_equal(h->chunks_left, 0);
	if (h->peak_chunks > PEAK_CHUNKS)
		fail_msg("pool peaked at %zu chunks; the pump allows %d",
		    h->peak_chunks, (int)PEAK_CHUNKS);
	assert_true(h->peak_chunks > 0);
}

static SSL *
client_connect(struct harness *h, SSL_CTX **cctx_out, int *fd_out)
{
	struct sockaddr_in sin;
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	shrink_buffers(fd);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)h->proxy_port);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ssl = SSL_new(cctx);
	(void)SSL_set_fd(ssl, fd);
	assert_int_equal(SSL_connect(ssl), 1);
	client_expect(ssl, GREETING);
	assert_int_equal(SSL_write(ssl, LOGIN, (int)strlen(LOGIN)),
	    (int)strlen(LOGIN));
	client_expect(ssl, LOGGED);
	*cctx_out = cctx;
	*fd_out = fd;
	return ssl;
}

/*
 * The client stops reading. With backpressure the backend soon blocks,
 * far short of TOTAL: kernel buffers plus mailproxy's bounded queue.
 * Without it mailproxy would keep reading and the backend would finish.
 * Returns what the backend had sent when its progress stopped.
 */
static size_t
stall_until_backend_blocks(struct backend *b)
{
	const struct timespec tick = {0, 10 * 1000 * 1000};
	size_t last = 0, now;
	int quiet = 0, ticks;

	for (ticks = 0; ticks < 1000 && quiet < 20; ticks++) {
		(void)nanosleep(&tick, NULL);
		now = atomic_load(&b->sent);
		quiet = now == last ? quiet + 1 : 0;
		last = now;
	}
	return last;
}

static void
test_relay_backend_to_slow_client_is_bounded(void **state)
{
	struct harness h;
	unsigned char buf[1000];
	size_t got = 0, i;
	SSL_CTX *cctx;
	SSL *ssl;
	int fd, n;
	bool same = true;

	(void)state;
	harness_start(&h, BACKEND_STREAMS);
	ssl = client_connect(&h, &cctx, &fd);
	while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0) {
		for (i = 0; i < (size_t)n; i++)
			same &= buf[i] == pattern(got + i);
		got += (size_t)n;
		if (got >= 1024 * 1024 && got - (size_t)n < 1024 * 1024)
			assert_true(
			    stall_until_backend_blocks(&h.backend) < TOTAL / 2);
	}
	/* The backend's FIN arrives as close_notify, after every byte. */
	assert_int_equal(SSL_get_error(ssl, n), SSL_ERROR_ZERO_RETURN);
	assert_int_equal(got, TOTAL);
	assert_true(same);
	(void)SSL_shutdown(ssl);
	SSL_free(ssl);
	(void)close(fd);
	SSL_CTX_free(cctx);
	harness_stop(&h);
}

static void
test_relay_client_to_slow_backend_and_half_close(void **state)
{
	struct harness h;
	unsigned char buf[16384];
	size_t sent = 0, i, len;
	char reply[16];
	SSL_CTX *cctx;
	SSL *ssl;
	int fd, n;

	(void)state;
	harness_start(&h, BACKEND_SINKS);
	ssl = client_connect(&h, &cctx, &fd);
	while (sent < TOTAL) {
		len = TOTAL - sent < sizeof(buf) ? TOTAL - sent : sizeof(buf);
		for (i = 0; i < len; i++)
			buf[i] = pattern(sent + i);
		assert_int_equal(SSL_write(ssl, buf, (int)len), (int)len);
		sent += len;
	}
	/* close_notify, then keep reading: the backend still answers. */
	assert_int_equal(SSL_shutdown(ssl), 0);
	n = SSL_read(ssl, reply, sizeof(reply));
	assert_int_equal(n, 5);
	assert_memory_equal(reply, "bye\r\n", 5);
	n = SSL_read(ssl, reply, sizeof(reply));
	assert_int_equal(SSL_get_error(ssl, n), SSL_ERROR_ZERO_RETURN);
	SSL_free(ssl);
	(void)close(fd);
	SSL_CTX_free(cctx);
	harness_stop(&h);
	assert_int_equal(h.backend.received, TOTAL);
	assert_true(h.backend.received_ok);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_relay_backend_to_slow_client_is_bounded),
	    cmocka_unit_test(test_relay_client_to_slow_backend_and_half_close),
	};
	char cmd[600];
	int r;

	(void)signal(SIGPIPE, SIG_IGN);
	dir = testcert_tmpdir();
	if (dir == NULL || testcert_write(dir, "r") != 0 || tls_init() != 0) {
		fprintf(stderr, "cannot set up test certificates\n");
		return 1;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	tls_cleanup();
	(void)snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	if (system(cmd) != 0)
		r = 1;
	return r;
}
