/*
 * Integration test helper: a TLS 1.3 client that floods a listener with
 * KeyUpdate messages that ask for an update back, and never reads. Each
 * one makes the server's TLS stack write a KeyUpdate of its own; a server
 * that keeps reading while those pile up unsent holds them all.
 *
 *   keyupdate_flood -p PORT [-t SECONDS] [-T STALL] [-b BUFSIZE]
 *       [-s LINE] [-e TEXT]
 *
 * Connects to 127.0.0.1:PORT with SO_RCVBUF and SO_SNDBUF of BUFSIZE
 * (default 4096), handshakes (TLS 1.3, no verification), sends LINE plus
 * CRLF if given, reads until the application data holds TEXT if given
 * (e.g. the tagged OK of a LOGIN: then the session is past login), and
 * from then on only sends, for at most SECONDS (default 20): batches of
 * SSL_key_update(SSL_KEY_UPDATE_REQUESTED) + SSL_do_handshake(), which
 * writes one KeyUpdate record each (checked), into a memory BIO, written
 * to the socket BATCH bytes at a time. One small segment per KeyUpdate
 * would never stall cleanly: the receiver's kernel keeps collapsing tiny
 * segments to make room, so a server that stopped reading still takes a
 * trickle. A write that makes no progress for STALL seconds (SO_SNDTIMEO,
 * default 3) means the server stopped reading.
 *
 * Prints one line, "keyupdates=N bytes=B result=R", B the bytes written
 * by the flood and R one of stalled (a write blocked for STALL seconds),
 * closed (the connection failed or the server ended the session) or
 * timeout (SECONDS passed without either); exits 0. Exits 2 on bad usage
 * and 1 when the flood could not start or a KeyUpdate was not written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* Bytes of KeyUpdate records per write. */
#define BATCH 16384

struct options {
	int port;
	double seconds;
	int stall;
	int bufsize;
	const char *line;
	const char *expect;
};

static void
usage(void)
{
	fprintf(stderr,
	    "usage: keyupdate_flood -p PORT [-t SECONDS] "
	    "[-T STALL] [-b BUFSIZE] [-s LINE] [-e TEXT]\n");
	exit(2);
}

static double
now(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
fail(const char *what)
{
	fprintf(stderr, "keyupdate_flood: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void
set_timeout(int fd, int which, int seconds)
{
	struct timeval tv;

	tv.tv_sec = seconds;
	tv.tv_usec = 0;
	if (setsockopt(fd, SOL_SOCKET, which, &tv, sizeof(tv)) < 0)
		fail("setsockopt timeout");
}

static int
connect_small(const struct options *o)
{
	struct sockaddr_in sin;
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		fail("socket");
	/* Before connect, so the window starts small too. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->bufsize,
	        sizeof(o->bufsize)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->bufsize,
	        sizeof(o->bufsize)) < 0)
		fail("setsockopt buffers");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)o->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		fail("connect");
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_timeout(fd, SO_RCVTIMEO, 30);
	set_timeout(fd, SO_SNDTIMEO, o->stall);
	return fd;
}

static int
contains(const char *hay, size_t n, const char *needle)
{
	size_t i, len = strlen(needle);

	for (i = 0; i + len <= n; i++)
		if (memcmp(hay + i, needle, len) == 0)
			return 1;
	return 0;
}

/* Reads application data until it holds text (at most 64 KiB of it). */
static void
await_text(SSL *ssl, const char *text)
{
	static char buf[65536];
	size_t have = 0;
	int r;

	while (!contains(buf, have, text)) {
		if (have == sizeof(buf))
			fail("expected text not in the first 64 KiB");
		r = SSL_read(ssl, buf + have, (int)(sizeof(buf) - have));
		if (r <= 0)
			fail("connection ended before the expected text");
		have += (size_t)r;
	}
}

static void
send_line(SSL *ssl, const char *line)
{
	size_t len = strlen(line);
	char *buf = malloc(len + 2);

	if (buf == NULL)
		fail("malloc");
	memcpy(buf, line, len);
	memcpy(buf + len, "\r\n", 2);
	if (SSL_write(ssl, buf, (int)(len + 2)) != (int)(len + 2))
		fail("SSL_write");
	free(buf);
}

/*
 * Writes all of buf; NULL when it went out, else the result: "stalled"
 * (no progress for SO_SNDTIMEO) or "closed". *sent counts what did.
 */
static const char *
write_all(int fd, const char *buf, size_t len, unsigned long *sent)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ?
			    "stalled" :
			    "closed";
		buf += n;
		len -= (size_t)n;
		*sent += (unsigned long)n;
	}
	return NULL;
}

static void
parse(int argc, char **argv, struct options *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	o->seconds = 20;
	o->stall = 3;
	o->bufsize = 4096;
	while ((c = getopt(argc, argv, "p:t:T:b:s:e:")) != -1) {
		switch (c) {
		case 'p':
			o->port = atoi(optarg);
			break;
		case 't':
			o->seconds = atof(optarg);
			break;
		case 'T':
			o->stall = atoi(optarg);
			break;
		case 'b':
			o->bufsize = atoi(optarg);
			break;
		case 's':
			o->line = optarg;
			break;
		case 'e':
			o->expect = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || o->port <= 0 || o->port > 65535 ||
	    o->seconds <= 0 || o->stall <= 0 || o->bufsize <= 0)
		usage();
}

int
main(int argc, char **argv)
{
	struct options o;
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *wbio;
	static char batch[BATCH];
	unsigned long count = 0, sent = 0;
	size_t before;
	const char *result = NULL;
	double deadline;
	int fd, len;

	parse(argc, argv, &o);
	/* A reset connection must be a result, not a death. */
	(void)signal(SIGPIPE, SIG_IGN);
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
		fail("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	fd = connect_small(&o);
	ssl = SSL_new(ctx);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    SSL_set_tlsext_host_name(ssl, "localhost") != 1)
		fail("SSL_new");
	if (SSL_connect(ssl) != 1)
		fail("handshake");
	if (o.line != NULL)
		send_line(ssl, o.line);
	if (o.expect != NULL)
		await_text(ssl, o.expect);

	/* From here on OpenSSL writes into memory, the loop to the socket;
	 * reads (none) would still come from the socket. */
	wbio = BIO_new(BIO_s_mem());
	if (wbio == NULL)
		fail("BIO_new");
	SSL_set0_wbio(ssl, wbio);
	deadline = now() + o.seconds;
	while (result == NULL && now() < deadline) {
		while (BIO_ctrl_pending(wbio) < BATCH) {
			before = BIO_ctrl_pending(wbio);
			if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) !=
			        1 ||
			    SSL_do_handshake(ssl) != 1)
				fail("KeyUpdate");
			/* OpenSSL must have written a KeyUpdate record. */
			if (BIO_ctrl_pending(wbio) <= before)
				fail("SSL_do_handshake wrote no KeyUpdate");
			count++;
		}
		len = BIO_read(wbio, batch, sizeof(batch));
		if (len <= 0)
			fail("BIO_read");
		result = write_all(fd, batch, (size_t)len, &sent);
	}
	if (result == NULL)
		result = "timeout";
	printf("keyupdates=%lu bytes=%lu result=%s\n", count, sent, result);
	(void)fflush(stdout);
	/* No close_notify: it could block, and the test ends here. */
	SSL_free(ssl);
	(void)close(fd);
	SSL_CTX_free(ctx);
	return 0;
}
