/*
 * tls: context building reports file:line for every certificate problem;
 * the chunk BIO carries a real handshake and data both ways, holds no
 * memory when idle, and turns a peer's EOF into OpenSSL's truncation
 * error. Two SSL objects back to back over memory (STYLE.md §10).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "mailproxy/config.h"
#include "mailproxy/tls.h"
#include "testcert.h"

static const char *dir;
static char ini[512];

static struct config *load(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static struct config *
load(const char *fmt, ...)
{
	char *errors = NULL;
	struct config *cfg;
	va_list ap;
	FILE *f = fopen(ini, "w");

	assert_non_null(f);
	va_start(ap, fmt);
	(void)vfprintf(f, fmt, ap);
	va_end(ap);
	assert_int_equal(fclose(f), 0);
	cfg = config_load(ini, &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	return cfg;
}

#define LISTENER                                                               \
	"[listener imaps]\nprotocol = imap\nlisten = 127.0.0.1:993\n"          \
	"backend = 127.0.0.1:143\n"

/* Builds with [tls] certificate at line 2 and key at line 3; the
 * warnings go to *warnings (NULL: not wanted). */
static char *
build_warn(const char *cert, const char *key, const char *extra,
    char **warnings)
{
	struct config *cfg =
	    load("[tls]\ncertificate = %s\nkey = %s\n%s" LISTENER, cert, key,
	        extra);
	char *error = NULL;
	SSL_CTX *ctx =
	    tls_ctx_build(cfg, &cfg->listeners[0], NULL, warnings, &error);

	SSL_CTX_free(ctx);
	config_unref(cfg);
	if (ctx != NULL) {
		free(error);
		return NULL;
	}
	assert_non_null(error);
	return error;
}

static char *
build_error(const char *cert, const char *key, const char *extra)
{
	return build_warn(cert, key, extra, NULL);
}

static void
expect_prefix(char *error, int line, const char *message)
{
	char want[1024];

	(void)snprintf(want, sizeof(want), "%s:%d: %s", ini, line, message);
	if (error == NULL || strncmp(error, want, strlen(want)) != 0)
		fail_msg("want: %s\ngot:  %s", want, error ? error : "(ok)");
	free(error);
}

static void
expect_contains(char *error, int line, const char *message)
{
	char want[1024];

	(void)snprintf(want, sizeof(want), "%s:%d: ", ini, line);
	if (error == NULL || strncmp(error, want, strlen(want)) != 0 ||
	    strstr(error, message) == NULL)
		fail_msg("want: %s...%s\ngot:  %s", want, message,
		    error ? error : "(ok)");
	free(error);
}

static void
test_tls_ctx_build_reports_certificate_problems(void **state)
{
	char cert[600], key[600], other_key[600], garbage[600];
	FILE *f;

	(void)state;
	(void)snprintf(cert, sizeof(cert), "%s/a.crt", dir);
	(void)snprintf(key, sizeof(key), "%s/a.key", dir);
	(void)snprintf(other_key, sizeof(other_key), "%s/b.key", dir);
	(void)snprintf(garbage, sizeof(garbage), "%s/garbage.pem", dir);
	f = fopen(garbage, "w");
	assert_non_null(f);
	fputs("not a certificate\n", f);
	assert_int_equal(fclose(f), 0);

	assert_null(build_error(cert, key, ""));
	expect_prefix(build_error("/nonexistent.crt", key, ""), 2,
	    "cannot read certificate '/nonexistent.crt': No such file or "
	    "directory");
	expect_prefix(build_error(cert, "/nonexistent.key", ""), 3,
	    "cannot read key '/nonexistent.key': No such file or directory");
	expect_prefix(build_error(garbage, key, ""), 2, "certificate '");
	expect_prefix(build_error(cert, garbage, ""), 3, "key '");
	expect_prefix(build_error(cert, other_key, ""), 3, "key '");
	expect_prefix(build_error(cert, key, "ciphers = NOPE-NOTHING\n"), 4,
	    "ciphers: OpenSSL accepts none of 'NOPE-NOTHING'");
	expect_prefix(build_error(cert, key, "ciphersuites = TLS_NOPE\n"), 4,
	    "ciphersuites: OpenSSL does not accept 'TLS_NOPE'");

	/* The default certificate must be valid now. */
	(void)snprintf(garbage, sizeof(garbage), "%s/old.crt", dir);
	(void)snprintf(other_key, sizeof(other_key), "%s/old.key", dir);
	expect_contains(build_error(garbage, other_key, ""), 2,
	    "has expired (notAfter ");
	(void)snprintf(garbage, sizeof(garbage), "%s/new.crt", dir);
	(void)snprintf(other_key, sizeof(other_key), "%s/new.key", dir);
	expect_contains(build_error(garbage, other_key, ""), 2,
	    "is not valid yet (notBefore ");
}

/* One broken or expired sni_certificate among many is left out with a
 * warning at its own line; the context is built. */
static void
test_tls_ctx_build_skips_bad_sni_certificates(void **state)
{
	char extra[4000], *warnings = NULL;
	const char *want[] = {
	    "certificate '",
	    "key '",
	    "cannot read certificate '/nonexistent.pem': No such file or "
	    "directory",
	    "has expired (notAfter ",
	};
	size_t i;

	(void)state;
	(void)snprintf(extra, sizeof(extra),
	    "sni_certificate = %s/a.crt %s/a.key\n"     /* 4: fine */
	    "sni_certificate = %s/garbage.pem\n"        /* 5 */
	    "sni_certificate = %s/a.crt %s/b.key\n"     /* 6 */
	    "sni_certificate = /nonexistent.pem\n"      /* 7 */
	    "sni_certificate = %s/old.crt %s/old.key\n" /* 8 */
	    "sni_strict = yes\n",
	    dir, dir, dir, dir, dir, dir, dir);
	{
		char cert[600], key[600];

		(void)snprintf(cert, sizeof(cert), "%s/a.crt", dir);
		(void)snprintf(key, sizeof(key), "%s/a.key", dir);
		assert_null(build_warn(cert, key, extra, &warnings));
	}
	assert_non_null(warnings);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char prefix[700], *line;

		(void)snprintf(prefix, sizeof(prefix), "%s:%zu: ", ini, i + 5);
		line = strstr(warnings, prefix);
		if (line == NULL || strstr(line, want[i]) == NULL ||
		    (strchr(line, '\n') != NULL &&
		        strstr(line, want[i]) > strchr(line, '\n')))
			fail_msg("line %zu: want %s\ngot: %s", i + 5, want[i],
			    warnings);
	}
	assert_null(strstr(warnings, ":4: "));
	assert_non_null(strstr(warnings,
	    "; sni_certificate skipped: its "
	    "names get the default certificate"));
	free(warnings);
}

static char *
tickets_error(const char *text)
{
	struct config_loc loc = {ini, 7};
	struct tls_tickets t;
	char path[600], *error = NULL;
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/tickets.key", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	if (tls_tickets_load(&t, path, &loc, &error)) {
		assert_null(error);
		return NULL;
	}
	assert_non_null(error);
	return error;
}

/* ticket_key_file: base64 lines of 80 bytes, first seals; every
 * malformed line is named. */
static void
test_tls_tickets_load(void **state)
{
	/* 80 bytes: 0x00..0x4f, and the same +1. */
	static const char k1[] =
	    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIS"
	    "IjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQk"
	    "NERUZHSElKS0xNTk8=";
	static const char k2[] =
	    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIi"
	    "MkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0"
	    "RFRkdISUpLTE1OT1A=";
	struct config_loc loc = {ini, 7};
	struct tls_tickets t, r1, r2;
	char text[600], path[600], *error = NULL;
	char *e;

	(void)state;
	(void)snprintf(text, sizeof(text), "# rotated daily\n%s\n\n%s\n", k1,
	    k2);
	assert_null(tickets_error(text));
	(void)snprintf(path, sizeof(path), "%s/tickets.key", dir);
	assert_true(tls_tickets_load(&t, path, &loc, &error));
	assert_int_equal(t.count, 2);
	assert_int_equal(t.key[0].name[1], 1);
	assert_int_equal(t.key[1].name[1], 2);
	assert_int_equal(t.key[1].aes[31], 0x50);

	e = tickets_error("AAEC\n");
	assert_non_null(strstr(e, ":7: ticket_key_file '"));
	assert_non_null(strstr(e, "line 1: not 80 bytes in base64"));
	free(e);
	(void)snprintf(text, sizeof(text), "%s\n%.100s!!!!!!!!\n", k1, k2);
	e = tickets_error(text);
	assert_non_null(strstr(e, "line 2: not 80 bytes in base64"));
	free(e);
	memset(text, 'A', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	e = tickets_error(text);
	assert_non_null(strstr(e, "line 1: too long"));
	free(e);
	e = tickets_error("# nothing\n");
	assert_non_null(strstr(e, "has no key"));
	free(e);

	/* A reload's random keys: new first, the last first one second. */
	assert_true(tls_tickets_random(&r1, NULL));
	assert_int_equal(r1.count, 1);
	assert_true(tls_tickets_random(&r2, &r1));
	assert_int_equal(r2.count, 2);
	assert_memory_equal(&r2.key[1], &r1.key[0], sizeof(r1.key[0]));
	assert_memory_not_equal(&r2.key[0], &r1.key[0], sizeof(r1.key[0]));
}

static void
test_tls_ctx_build_key_mismatch_names_both_files(void **state)
{
	char cert[600], other_key[600], *error;

	(void)state;
	(void)snprintf(cert, sizeof(cert), "%s/a.crt", dir);
	(void)snprintf(other_key, sizeof(other_key), "%s/b.key", dir);
	error = build_error(cert, other_key, "");
	assert_non_null(error);
	assert_non_null(strstr(error, other_key));
	assert_non_null(strstr(error, cert));
	assert_non_null(strstr(error, "key values mismatch"));
	free(error);
}

/* A server SSL on the chunk BIO and a client SSL on memory BIOs. */
struct pair {
	struct config *cfg;
	SSL_CTX *sctx, *cctx;
	SSL *server, *client;
	BIO *c_in, *c_out; /* client's read and write BIOs */
	struct buf_pool pool;
	struct buf_chunk *in;
	struct buf_queue out;
	struct tls_io io;
};

/* The BIO's writes: appended to the pair's queue, as the pump does. */
static int
pair_write(void *ctx, const char *data, size_t n)
{
	struct pair *p = ctx;

	return buf_queue_append(&p->out, &p->pool, data, n);
}

static void
pair_open(struct pair *p, int client_max_version)
{
	char *error = NULL;

	memset(p, 0, sizeof(*p));
	p->cfg =
	    load("[tls]\ncertificate = %s/a.crt\nkey = %s/a.key\n" LISTENER,
	        dir, dir);
	p->sctx =
	    tls_ctx_build(p->cfg, &p->cfg->listeners[0], NULL, NULL, &error);
	assert_non_null(p->sctx);
	buf_pool_init(&p->pool, 8);
	p->io.in = &p->in;
	p->io.write = pair_write;
	p->io.ctx = p;
	p->server = tls_ssl_new(p->sctx, &p->io);
	assert_non_null(p->server);
	p->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(p->cctx);
	if (client_max_version != 0) {
		SSL_CTX_set_security_level(p->cctx, 0);
		(void)SSL_CTX_set_min_proto_version(p->cctx, TLS1_VERSION);
		(void)SSL_CTX_set_max_proto_version(p->cctx,
		    client_max_version);
	}
	p->client = SSL_new(p->cctx);
	p->c_in = BIO_new(BIO_s_mem());
	p->c_out = BIO_new(BIO_s_mem());
	SSL_set_bio(p->client, p->c_in, p->c_out);
	SSL_set_connect_state(p->client);
}

static void
pair_close(struct pair *p)
{
	SSL_free(p->server);
	SSL_free(p->client);
	SSL_CTX_free(p->sctx);
	SSL_CTX_free(p->cctx);
	buf_pool_put(&p->pool, p->in);
	buf_queue_clear(&p->out, &p->pool);
	assert_int_equal(p->pool.in_use, 0);
	buf_pool_destroy(&p->pool);
	config_unref(p->cfg);
	ERR_clear_error();
}

/* Moves the client's output into the server's input chunk, and the
 * server's queued output into the client's read BIO. */
static void
pair_shuttle(struct pair *p)
{
	char tmp[4096];
	struct buf_span span;
	size_t total;
	int n;

	while ((n = BIO_read(p->c_out, tmp, sizeof(tmp))) > 0) {
		if (p->in == NULL)
			p->in = buf_pool_get(&p->pool);
		buf_chunk_compact(p->in);
		assert_true((size_t)n <= p->in->size - p->in->end);
		memcpy(p->in->data + p->in->end, tmp, (size_t)n);
		p->in->end += (size_t)n;
	}
	while (buf_queue_peek(&p->out, &span, 1, &total) == 1) {
		assert_int_equal(BIO_write(p->c_in, span.base, (int)span.len),
		    (int)span.len);
		buf_queue_consume(&p->out, &p->pool, span.len);
	}
}

/* Runs both handshakes; returns the server's SSL_get_error at the end. */
static int
pair_handshake(struct pair *p)
{
	int i, rs = 0, rc = 0;

	for (i = 0; i < 20; i++) {
		rc = SSL_do_handshake(p->client);
		pair_shuttle(p);
		rs = SSL_do_handshake(p->server);
		pair_shuttle(p);
		if (rs == 1 && rc == 1)
			return SSL_ERROR_NONE;
		if (rs <= 0 &&
		    SSL_get_error(p->server, rs) != SSL_ERROR_WANT_READ)
			return SSL_get_error(p->server, rs);
	}
	return SSL_ERROR_WANT_READ;
}

static void
test_tls_chunk_bio_handshake_and_data(void **state)
{
	struct pair p;
	char buf[64];
	int n;

	(void)state;
	pair_open(&p, 0);
	assert_int_equal(pair_handshake(&p), SSL_ERROR_NONE);
	assert_string_equal(SSL_get_version(p.server), "TLSv1.3");

	/* Client to server. */
	assert_int_equal(SSL_write(p.client, "a LOGIN\r\n", 9), 9);
	pair_shuttle(&p);
	n = SSL_read(p.server, buf, sizeof(buf));
	assert_int_equal(n, 9);
	assert_memory_equal(buf, "a LOGIN\r\n", 9);
	/* Nothing more: WANT_READ, and the input chunk is fully used. */
	assert_int_equal(SSL_read(p.server, buf, sizeof(buf)), -1);
	assert_int_equal(SSL_get_error(p.server, -1), SSL_ERROR_WANT_READ);
	assert_int_equal(buf_chunk_len(p.in), 0);

	/* Server to client. */
	assert_int_equal(SSL_write(p.server, "* OK hi\r\n", 9), 9);
	assert_true(p.out.bytes > 9);
	pair_shuttle(&p);
	assert_int_equal(SSL_read(p.client, buf, sizeof(buf)), 9);
	assert_memory_equal(buf, "* OK hi\r\n", 9);

	/* Idle: the queue is drained, the input chunk can go back. */
	assert_int_equal(p.out.bytes, 0);
	buf_pool_put(&p.pool, p.in);
	p.in = NULL;
	assert_int_equal(p.pool.in_use, 0);

	/* close_notify reads as a clean end. */
	assert_int_equal(SSL_shutdown(p.client), 0);
	pair_shuttle(&p);
	assert_int_equal(SSL_read(p.server, buf, sizeof(buf)), 0);
	assert_int_equal(SSL_get_error(p.server, 0), SSL_ERROR_ZERO_RETURN);
	pair_close(&p);
}

static void
test_tls_chunk_bio_eof_is_truncation(void **state)
{
	struct pair p;
	char buf[16];
	int n;

	(void)state;
	pair_open(&p, 0);
	assert_int_equal(pair_handshake(&p), SSL_ERROR_NONE);
	p.io.eof = true;
	ERR_clear_error();
	n = SSL_read(p.server, buf, sizeof(buf));
	assert_true(n <= 0);
	assert_int_equal(SSL_get_error(p.server, n), SSL_ERROR_SSL);
	assert_string_equal(tls_error_reason("none"),
	    "unexpected eof while reading");
	pair_close(&p);
}

static void
test_tls_refuses_tls_1_1(void **state)
{
	struct pair p;

	(void)state;
	pair_open(&p, TLS1_1_VERSION);
	assert_int_equal(pair_handshake(&p), SSL_ERROR_SSL);
	assert_string_equal(tls_error_reason("none"), "unsupported protocol");
	pair_close(&p);
}

static void
test_tls_error_reason_fallback(void **state)
{
	(void)state;
	ERR_clear_error();
	assert_string_equal(tls_error_reason("fallback"), "fallback");
}

/* Within 14 days of its end a certificate still serves, with a warning
 * that gives the date; with 90 days left there is none. */
static void
test_tls_expiring_certificate_warns(void **state)
{
	char cert[600], key[600], *warnings = NULL;

	(void)state;
	(void)snprintf(cert, sizeof(cert), "%s/soon.crt", dir);
	(void)snprintf(key, sizeof(key), "%s/soon.key", dir);
	assert_null(build_warn(cert, key, "", &warnings));
	assert_non_null(warnings);
	assert_non_null(strstr(warnings, ":2: certificate '"));
	/* 2 or 3 days, by when in the second the certificate was made. */
	if (strstr(warnings, "soon.crt' expires in 2 days (notAfter ") ==
	        NULL &&
	    strstr(warnings, "soon.crt' expires in 3 days (notAfter ") == NULL)
		fail_msg("got: %s", warnings);
	free(warnings);
	warnings = NULL;
	(void)snprintf(cert, sizeof(cert), "%s/a.crt", dir);
	(void)snprintf(key, sizeof(key), "%s/a.key", dir);
	assert_null(build_warn(cert, key, "", &warnings));
	assert_null(warnings);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tls_ctx_build_reports_certificate_problems),
	    cmocka_unit_test(test_tls_ctx_build_skips_bad_sni_certificates),
	    cmocka_unit_test(test_tls_tickets_load),
	    cmocka_unit_test(test_tls_ctx_build_key_mismatch_names_both_files),
	    cmocka_unit_test(test_tls_chunk_bio_handshake_and_data),
	    cmocka_unit_test(test_tls_chunk_bio_eof_is_truncation),
	    cmocka_unit_test(test_tls_refuses_tls_1_1),
	    cmocka_unit_test(test_tls_error_reason_fallback),
	    cmocka_unit_test(test_tls_expiring_certificate_warns),
	};
	char path[600];
	int r;

	dir = testcert_tmpdir();
	if (dir == NULL || testcert_write(dir, "a") != 0 ||
	    testcert_write(dir, "b") != 0 ||
	    testcert_write_dated(dir, "old", -7200, -3600) != 0 ||
	    testcert_write_dated(dir, "new", 3600, 7200) != 0 ||
	    testcert_write_dated(dir, "soon", -3600, 3 * 86400) != 0 ||
	    tls_init() != 0) {
		fprintf(stderr, "cannot set up test certificates\n");
		return 1;
	}
	(void)snprintf(ini, sizeof(ini), "%s/test.ini", dir);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	tls_cleanup();
	(void)snprintf(path, sizeof(path), "rm -rf -- '%s'",
	    dir); /* our own mkdtemp directory */
	if (system(path) != 0)
		r = 1;
	return r;
}
