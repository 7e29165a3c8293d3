/*
 * A property harness for the session state machine and the pump under
 * it: one real session on a real loop, between a client and a backend on
 * loopback that the input scripts, adversarially: floods of commands and
 * of KeyUpdates, literal chains, peers that stop reading, half-closes,
 * pauses past the deadlines, bytes in any state. After every step it
 * checks the budget (research: issue 12; pump.h): no queue holds more
 * than the high-water mark plus one step's or one read's worth, and
 * never more than PUMP_QUEUE_CAP; and on a starttls = required listener
 * the backend hears nothing before the client's handshake. At the end
 * the session is gone, every handle closed and every chunk back.
 *
 * Linked with replay.c it replays tests/fuzz/corpus/session under ctest;
 * with MAILPROXY_FUZZ=ON it is also a libFuzzer target.
 *
 * The input: byte 0 picks the listener (LISTENERS below); then ops, one
 * byte each, the op in the high nibble and its argument in the low one;
 * CDATA and BDATA take a length byte and that many bytes after it, CLINE
 * and BLINE a repeat count.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/log.h"
#include "mailproxy/pump.h"
#include "mailproxy/session.h"
#include "mailproxy/tls.h"

#include "../unit/testcert.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_session: property broken: %s\n", \
			    #cond);                                            \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What one step or one read may add past the high-water mark: a big read
 * relayed and encrypted, or the answers OpenSSL makes to it. */
#define SLACK (BUF_CHUNK_BIG + BUF_CHUNK_BIG / 8 + 4096)

enum op {
	OP_CDATA,   /* client sends the next n bytes */
	OP_CLINE,   /* client sends a canned line, repeated */
	OP_CREAD,   /* client: 0 stops reading, else reads */
	OP_CTLS,    /* client starts its TLS handshake */
	OP_CKEY,    /* client sends KeyUpdate requests */
	OP_CCLOSE,  /* client: half-close (0) or close */
	OP_BACCEPT, /* backend accepts the session's connection */
	OP_BDATA,   /* backend sends the next n bytes */
	OP_BLINE,   /* backend sends a canned line, repeated */
	OP_BREAD,   /* backend: 0 stops reading, else reads */
	OP_BCLOSE,  /* backend: half-close (0) or close */
	OP_TURN,    /* the loop turns arg + 1 times */
	OP_WAIT,    /* the loop runs for 60 ms: deadlines fall */
	OP_COUNT_
};

struct listener_kind {
	const char *name; /* a [listener] of the configuration */
	enum proto protocol;
	bool starttls;
	bool required;
};

static const struct listener_kind LISTENERS[] = {
    {"imap143", PROTO_IMAP, true, true},
    {"smtp25", PROTO_SMTP, true, false},
    {"pop3s", PROTO_POP3, false, false},
    {"imaps", PROTO_IMAP, false, false},
    {"smtps", PROTO_SMTP, false, false},
    {"pop3110", PROTO_POP3, true, true},
};
#define NLISTENERS (sizeof(LISTENERS) / sizeof(LISTENERS[0]))

/* A literal chain's link: 4096 octets, then the next literal. */
static char chain_link[4096 + 16];

static const char *const CLIENT_LINES[16] = {
    "a CAPABILITY\r\n",
    "a STARTTLS\r\n",
    "STARTTLS\r\n",
    "STLS\r\n",
    "a LOGIN alice secret\r\n",
    "a NOOP {4096+}\r\n",
    chain_link,
    "EHLO client.test\r\n",
    "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n",
    "XCLIENT ADDR=6.6.6.6\r\nXFORWARD ADDR=6.6.6.6\r\n",
    "x\r\n..x\r\n.\r\n",
    "x\n.\r\n",
    "BDAT 3 LAST\r\nabc",
    "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    "USER alice\r\nPASS secret\r\n",
    "CAPA\r\nNOOP\r\nQUIT\r\n",
};

static const char *const BACKEND_LINES[16] = {
    "* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready\r\n",
    "+OK ready\r\n",
    "220 backend.test ESMTP\r\n",
    "a OK done\r\n",
    "+ go ahead\r\n",
    "250-backend.test\r\n250-CHUNKING\r\n250 AUTH PLAIN\r\n",
    "354 go\r\n",
    "235 2.7.0 ok\r\n",
    "250 2.0.0 ok\r\n",
    "* CAPABILITY IMAP4rev1 STARTTLS LITERAL- XCLIENT\r\n",
    "+OK\r\n",
    "334 VXNlcm5hbWU6\r\n",
    "* OK ready\r\n",
    "-ERR no\r\n",
    "* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n",
    "421 4.3.2 closing\r\n",
};

/* Set up once: the configuration, its TLS contexts, a temporary
 * directory for the certificate. */
static struct config *cfg;
static SSL_CTX *ctxs[NLISTENERS];
static int backend_fd = -1; /* listening; every backend is this one */
static char dir_path[512];

struct run {
	uv_loop_t loop;
	struct session_host host;
	struct session_listener listener;
	uv_tcp_t server;
	const struct listener_kind *kind;
	int client;  /* the test's client socket */
	int backend; /* the accepted backend connection, or -1 */
	bool client_reads, backend_reads;
	bool client_closed, backend_closed;
	bool tls_started;
	unsigned waits;
	SSL_CTX *cctx;
	SSL *tc;
	BIO *tc_in, *tc_out;
	char pending[32768]; /* client bytes its socket did not take yet */
	size_t pending_len;
};

static void
on_freed(struct session_host *h)
{
	(void)h;
}

static void
on_connection(uv_stream_t *server, int status)
{
	struct run *r = server->data;

	if (status == 0)
		session_accept(&r->host, &r->listener, server);
}

static void
shrink(int fd)
{
	int size = 8192;

	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

static int
listen_loopback(unsigned *port_out)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	shrink(fd);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		(void)close(fd);
		return -1;
	}
	*port_out = ntohs(sin.sin_port);
	return fd;
}

static void
set_up(void)
{
	char path[600], *error = NULL;
	const char *tmp;
	unsigned port;
	size_t i;
	FILE *f;

	(void)signal(SIGPIPE, SIG_IGN);
	memset(chain_link, 'x', 4096);
	memcpy(chain_link + 4096, " {4096+}\r\n", 11);
	tmp = testcert_tmpdir();
	CHECK(tmp != NULL);
	(void)snprintf(dir_path, sizeof(dir_path), "%s", tmp);
	CHECK(testcert_write(dir_path, "f") == 0);
	CHECK(tls_init() == 0);
	backend_fd = listen_loopback(&port);
	CHECK(backend_fd >= 0);
	CHECK(fcntl(backend_fd, F_SETFL, O_NONBLOCK) == 0);
	(void)snprintf(path, sizeof(path), "%s/fuzz.ini", dir_path);
	f = fopen(path, "w");
	CHECK(f != NULL);
	/* Short deadlines, so that OP_WAIT reaches them. FUZZ_SESSION_LOG
	 * names a file for the sessions' log lines (to see what a corpus
	 * reaches); else they go nowhere. */
	fprintf(f,
	    "[global]\nlog = %s\nserver_name = mx.test\n"
	    "timeout_handshake = 100ms\ntimeout_connect = 100ms\n"
	    "timeout_backend = 100ms\ntimeout_login = 1s\n"
	    "[tls]\ncertificate = %s/f.crt\nkey = %s/f.key\n",
	    getenv("FUZZ_SESSION_LOG") != NULL ? getenv("FUZZ_SESSION_LOG") :
	                                         "/dev/null",
	    dir_path, dir_path);
	for (i = 0; i < NLISTENERS; i++)
		fprintf(f,
		    "[listener %s]\nprotocol = %s\nlisten = 127.0.0.1:%zu\n"
		    "backend = 127.0.0.1:%u\ntls = %s\n%s"
		    "timeout_idle = 1s\ntimeout_linger = 100ms\n",
		    LISTENERS[i].name, proto_name(LISTENERS[i].protocol), i + 1,
		    port, LISTENERS[i].starttls ? "starttls" : "implicit",
		    LISTENERS[i].starttls && !LISTENERS[i].required ?
		        "starttls = optional\n" :
		        "");
	CHECK(fclose(f) == 0);
	cfg = config_load(path, &error);
	if (cfg == NULL)
		fprintf(stderr, "%s\n", error);
	CHECK(cfg != NULL);
	CHECK(log_init(cfg) == 0);
	for (i = 0; i < NLISTENERS; i++) {
		ctxs[i] =
		    tls_ctx_build(cfg, &cfg->listeners[i], NULL, NULL, &error);
		CHECK(ctxs[i] != NULL);
	}
}

/* The budget, checked after every step. */
static void
check(struct run *r)
{
	struct session *s;

	for (s = r->host.sessions; s != NULL; s = s->next) {
		CHECK(s->magic == SESSION_MAGIC);
		CHECK(s->pump.client.out.bytes <= PUMP_QUEUE_CAP);
		CHECK(s->pump.backend.out.bytes <= PUMP_QUEUE_CAP);
		CHECK(s->pump.client.out.bytes <= PUMP_HIGH_WATER + SLACK);
		CHECK(s->pump.backend.out.bytes <= PUMP_HIGH_WATER + SLACK);
	}
	/* Late connect: nothing reaches the backend before TLS. */
	if (r->kind->starttls && r->kind->required && !r->tls_started)
		CHECK(r->backend < 0);
}

static void
client_read(struct run *r)
{
	char buf[16384];
	ssize_t n;

	if (!r->client_reads || r->client_closed)
		return;
	while ((n = recv(r->client, buf, sizeof(buf), 0)) > 0)
		if (r->tc != NULL)
			(void)BIO_write(r->tc_in, buf, (int)n);
	if (r->tc != NULL) {
		(void)SSL_do_handshake(r->tc);
		while (SSL_is_init_finished(r->tc) &&
		    SSL_read(r->tc, buf, sizeof(buf)) > 0)
			;
		ERR_clear_error();
	}
}

static void
backend_read(struct run *r)
{
	char buf[16384];

	if (r->backend < 0 || !r->backend_reads || r->backend_closed)
		return;
	while (recv(r->backend, buf, sizeof(buf), 0) > 0)
		;
}

/* The TLS client's records and any plaintext owed go out as far as the
 * socket takes them. */
static void
client_push(struct run *r)
{
	ssize_t n;
	int k;

	if (r->client_closed)
		return;
	for (;;) {
		if (r->pending_len == 0 && r->tc != NULL) {
			k = BIO_read(r->tc_out, r->pending, sizeof(r->pending));
			if (k > 0)
				r->pending_len = (size_t)k;
		}
		if (r->pending_len == 0)
			return;
		n = send(r->client, r->pending, r->pending_len, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		memmove(r->pending, r->pending + n, r->pending_len - (size_t)n);
		r->pending_len -= (size_t)n;
	}
}

static void
turn(struct run *r, unsigned times)
{
	unsigned i;

	for (i = 0; i < times; i++) {
		(void)uv_run(&r->loop, UV_RUN_NOWAIT);
		check(r);
		client_push(r);
		client_read(r);
		backend_read(r);
	}
}

/* The client sends p[0..n): through TLS once it is up, else raw. A flood
 * that the socket does not take is dropped, as a real one would wait. */
static void
client_send(struct run *r, const char *p, size_t n)
{
	size_t room;

	if (r->client_closed || n == 0)
		return;
	if (r->tc != NULL && SSL_is_init_finished(r->tc)) {
		if (BIO_ctrl_pending(r->tc_out) < sizeof(r->pending))
			(void)SSL_write(r->tc, p, (int)n);
		ERR_clear_error();
	} else if (r->tc == NULL) {
		room = sizeof(r->pending) - r->pending_len;
		if (n > room)
			n = room;
		memcpy(r->pending + r->pending_len, p, n);
		r->pending_len += n;
	}
	client_push(r);
}

static void
backend_send(struct run *r, const char *p, size_t n)
{
	if (r->backend < 0 || r->backend_closed)
		return;
	(void)send(r->backend, p, n, MSG_NOSIGNAL);
}

static void
client_tls(struct run *r)
{
	if (r->tc != NULL || r->client_closed)
		return;
	r->tls_started = true;
	r->cctx = SSL_CTX_new(TLS_client_method());
	CHECK(r->cctx != NULL);
	r->tc = SSL_new(r->cctx);
	r->tc_in = BIO_new(BIO_s_mem());
	r->tc_out = BIO_new(BIO_s_mem());
	SSL_set_bio(r->tc, r->tc_in, r->tc_out);
	SSL_set_connect_state(r->tc);
	(void)SSL_do_handshake(r->tc);
	client_push(r);
}

static void
client_keyupdates(struct run *r, unsigned n)
{
	unsigned i;

	if (r->tc == NULL || !SSL_is_init_finished(r->tc) || r->client_closed)
		return;
	for (i = 0; i < n; i++) {
		if (BIO_ctrl_pending(r->tc_out) > sizeof(r->pending))
			break;
		if (SSL_key_update(r->tc, SSL_KEY_UPDATE_REQUESTED) != 1)
			break;
		(void)SSL_do_handshake(r->tc);
	}
	ERR_clear_error();
	client_push(r);
}

static void
peer_close(int fd, bool *closed, unsigned how)
{
	if (fd < 0 || *closed)
		return;
	if (how == 0) {
		(void)shutdown(fd, SHUT_WR);
	} else {
		(void)shutdown(fd, SHUT_RDWR);
		*closed = true;
	}
}

static void
start(struct run *r, const struct listener_kind *kind, size_t index)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);

	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->backend = -1;
	r->client_reads = r->backend_reads = true;
	CHECK(uv_loop_init(&r->loop) == 0);
	session_host_init(&r->host, &r->loop, cfg, 0, 4, on_freed);
	r->listener.conf = &cfg->listeners[index];
	r->listener.ctx = ctxs[index];
	r->listener.server_name = "mx.test";
	r->listener.params.protocol = kind->protocol;
	r->listener.params.starttls = kind->starttls;
	r->listener.params.optional = kind->starttls && !kind->required;
	r->listener.params.server_name = "mx.test";
	r->listener.params.greeting = "Fuzz ready.";
	CHECK(uv_tcp_init(&r->loop, &r->server) == 0);
	r->server.data = r;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(uv_tcp_bind(&r->server, (struct sockaddr *)&sin, 0) == 0);
	CHECK(uv_listen((uv_stream_t *)&r->server, 8, on_connection) == 0);
	CHECK(
	    uv_tcp_getsockname(&r->server, (struct sockaddr *)&sin, &len) == 0);
	r->client = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(r->client >= 0);
	shrink(r->client);
	CHECK(connect(r->client, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	CHECK(fcntl(r->client, F_SETFL, O_NONBLOCK) == 0);
	/* Until the session exists. */
	while (r->host.count == 0)
		(void)uv_run(&r->loop, UV_RUN_ONCE);
	if (!kind->starttls)
		client_tls(r);
	turn(r, 2);
}

static void
on_server_close(uv_handle_t *h)
{
	(void)h;
}

static void
finish(struct run *r)
{
	unsigned i;
	int fd;

	if (r->backend >= 0)
		(void)close(r->backend);
	(void)close(r->client);
	/* A session the backend never accepted is still in the queue. */
	while ((fd = accept(backend_fd, NULL, NULL)) >= 0)
		(void)close(fd);
	for (i = 0; i < 20000 && r->host.count > 0; i++) {
		while ((fd = accept(backend_fd, NULL, NULL)) >= 0)
			(void)close(fd);
		(void)uv_run(&r->loop, UV_RUN_NOWAIT);
		check(r);
		if (i > 100) {
			const struct timespec t = {0, 1000 * 1000};

			(void)nanosleep(&t, NULL);
		}
	}
	/* Every session ends by itself: by its peers' close or a deadline. */
	CHECK(r->host.count == 0);
	uv_close((uv_handle_t *)&r->server, on_server_close);
	session_host_close(&r->host);
	(void)uv_run(&r->loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&r->loop) == 0);
	CHECK(r->host.pump.pool.in_use == 0);
	session_host_destroy(&r->host);
	SSL_free(r->tc);
	SSL_CTX_free(r->cctx);
	ERR_clear_error();
}

static void
wait_ms(struct run *r, unsigned ms)
{
	uint64_t end = uv_now(&r->loop) + ms;
	const struct timespec t = {0, 2 * 1000 * 1000};

	while (uv_now(&r->loop) < end) {
		(void)nanosleep(&t, NULL);
		uv_update_time(&r->loop);
		turn(r, 1);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct run *r;
	size_t i = 1, n, index, k;
	unsigned op, arg, times;
	const char *line;

	if (size < 1)
		return 0;
	if (!ready) {
		set_up();
		ready = true;
	}
	r = malloc(sizeof(*r));
	CHECK(r != NULL);
	index = data[0] % NLISTENERS;
	start(r, &LISTENERS[index], index);
	while (i < size) {
		op = (data[i] >> 4) % OP_COUNT_;
		arg = data[i] & 15;
		i++;
		switch ((enum op)op) {
		case OP_CDATA:
		case OP_BDATA:
			n = i < size ? data[i++] : 0;
			if (n > size - i)
				n = size - i;
			if (op == OP_CDATA)
				client_send(r, (const char *)data + i, n);
			else
				backend_send(r, (const char *)data + i, n);
			i += n;
			break;
		case OP_CLINE:
		case OP_BLINE:
			times = i < size ? data[i++] : 1;
			line = op == OP_CLINE ? CLIENT_LINES[arg] :
			                        BACKEND_LINES[arg];
			for (k = 0; k < times; k++) {
				if (op == OP_CLINE)
					client_send(r, line, strlen(line));
				else
					backend_send(r, line, strlen(line));
				turn(r, 1);
			}
			break;
		case OP_CREAD:
			r->client_reads = arg != 0;
			break;
		case OP_BREAD:
			r->backend_reads = arg != 0;
			break;
		case OP_CTLS:
			client_tls(r);
			break;
		case OP_CKEY:
			client_keyupdates(r, 16 * (arg + 1));
			break;
		case OP_CCLOSE:
			peer_close(r->client, &r->client_closed, arg & 1);
			break;
		case OP_BACCEPT:
			if (r->backend < 0) {
				turn(r, 2);
				r->backend = accept(backend_fd, NULL, NULL);
				if (r->backend >= 0) {
					shrink(r->backend);
					CHECK(fcntl(r->backend, F_SETFL,
					          O_NONBLOCK) == 0);
				}
			}
			break;
		case OP_BCLOSE:
			peer_close(r->backend, &r->backend_closed, arg & 1);
			break;
		case OP_TURN:
			turn(r, arg + 1);
			break;
		case OP_WAIT:
			if (r->waits++ < 4)
				wait_ms(r, 60);
			break;
		case OP_COUNT_:
			break;
		}
		turn(r, 1);
	}
	finish(r);
	free(r);
	return 0;
}
