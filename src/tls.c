/*
 * TLS contexts and the chunk BIO.
 *
 * One SSL_CTX per listener, built before the workers start and shared by
 * them read-only (OpenSSL makes SSL_new on a shared context thread-safe);
 * sharing it also shares its ticket keys, so a session resumes on any
 * worker. The server session cache is off: TLS 1.2 and 1.3 both resume
 * from stateless tickets, and the cache would be one more lock on the
 * handshake path of every worker.
 *
 * Must not: touch sockets or the loop, or log (callers log with context).
 */
#include "mailproxy/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "mailproxy/error.h"

static BIO_METHOD *chunk_method;
static int sni_index = -1; /* SSL_CTX ex_data: struct sni_table */

static int
chunk_write(BIO *b, const char *data, int len)
{
	struct tls_io *io = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (io->write(io->ctx, data, (size_t)len) != 0)
		return -1;
	return len;
}

static int
chunk_read(BIO *b, char *data, int len)
{
	struct tls_io *io = BIO_get_data(b);
	struct buf_chunk *c = io->in != NULL ? *io->in : NULL;
	size_t n;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (c == NULL || buf_chunk_len(c) == 0) {
		if (io->eof)
			return 0;
		BIO_set_retry_read(b);
		return -1;
	}
	n = buf_chunk_len(c);
	if (n > (size_t)len)
		n = (size_t)len;
	memcpy(data, c->data + c->start, n);
	c->start += n;
	return (int)n;
}

static long
chunk_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_io *io = BIO_get_data(b);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		if (io != NULL && io->in != NULL && *io->in != NULL)
			return (long)buf_chunk_len(*io->in);
		return 0;
	case BIO_CTRL_EOF:
		return io != NULL && io->eof;
	default:
		return 0;
	}
}

static int
chunk_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int
chunk_destroy(BIO *b)
{
	BIO_set_data(b, NULL);
	return 1;
}

static void sni_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp);

int
tls_init(void)
{
	int type = BIO_get_new_index();

	if (sni_index < 0)
		sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
		    sni_table_free);
	if (sni_index < 0)
		return ERROR_NOMEM;

	if (type < 0)
		return ERROR_NOMEM;
	chunk_method = BIO_meth_new(type | BIO_TYPE_SOURCE_SINK, "mailproxy");
	if (chunk_method == NULL ||
	    !BIO_meth_set_write(chunk_method, chunk_write) ||
	    !BIO_meth_set_read(chunk_method, chunk_read) ||
	    !BIO_meth_set_ctrl(chunk_method, chunk_ctrl) ||
	    !BIO_meth_set_create(chunk_method, chunk_create) ||
	    !BIO_meth_set_destroy(chunk_method, chunk_destroy)) {
		BIO_meth_free(chunk_method);
		chunk_method = NULL;
		return ERROR_NOMEM;
	}
	return 0;
}

void
tls_cleanup(void)
{
	BIO_meth_free(chunk_method);
	chunk_method = NULL;
}

SSL *
tls_ssl_new(SSL_CTX *ctx, struct tls_io *io)
{
	SSL *ssl = SSL_new(ctx);
	BIO *bio;

	if (ssl == NULL)
		return NULL;
	bio = BIO_new(chunk_method);
	if (bio == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	BIO_set_data(bio, io);
	/* One BIO both ways: SSL_set_bio takes the single reference. */
	SSL_set_bio(ssl, bio, bio);
	SSL_set_accept_state(ssl);
	return ssl;
}

const char *
tls_error_reason(const char *fallback)
{
	unsigned long e = ERR_get_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return reason != NULL ? reason : fallback;
}

static char *build_error(const struct config_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *
build_error(const struct config_loc *loc, const char *fmt, ...)
{
	const char *ossl = tls_error_reason("");
	char msg[512];
	char *out = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (loc->line > 0)
		n = snprintf(NULL, 0, "%s:%u: %s%s%s", loc->file, loc->line,
		    msg, ossl[0] != '\0' ? ": " : "", ossl);
	else
		n = snprintf(NULL, 0, "%s: %s%s%s", loc->file, msg,
		    ossl[0] != '\0' ? ": " : "", ossl);
	if (n >= 0 && (out = malloc((size_t)n + 1)) != NULL) {
		if (loc->line > 0)
			(void)snprintf(out, (size_t)n + 1, "%s:%u: %s%s%s",
			    loc->file, loc->line, msg,
			    ossl[0] != '\0' ? ": " : "", ossl);
		else
			(void)snprintf(out, (size_t)n + 1, "%s: %s%s%s",
			    loc->file, msg, ossl[0] != '\0' ? ": " : "", ossl);
	}
	return out;
}

/* Opening the file ourselves first gives "No such file" instead of an
 * OpenSSL "system lib" code. */
static bool
readable(const char *path, const struct config_loc *loc, const char *what,
    char **error_out)
{
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		ERR_clear_error();
		*error_out = build_error(loc, "cannot read %s '%s': %s", what,
		    path, strerror(errno));
		return false;
	}
	(void)fclose(f);
	return true;
}

/*
 * ALPN ids mailproxy answers to, per protocol: IANA's imap and pop3; smtp
 * as nginx uses it and submission as Dovecot does (IANA has none for
 * SMTP). research/protocols.md §8.
 */
static const char *const alpn_ids[PROTO_COUNT_][3] = {
    [PROTO_IMAP] = {"imap", NULL, NULL},
    [PROTO_POP3] = {"pop3", NULL, NULL},
    [PROTO_SMTP] = {"smtp", "submission", NULL},
};

/*
 * Strict ALPN against ALPACA (RFC 9325 §3.8, RFC 7301 §3.2): a client
 * that offers ALPN without our protocol is refused with
 * no_application_protocol. Runs only when the client sent ALPN; a client
 * without ALPN goes on. Hand-written rather than SSL_select_next_proto,
 * whose no-overlap case is a trap (CVE-2024-5535).
 */
static int
on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned inlen, void *arg)
{
	const char *const *ids = arg;
	size_t i, j, n;

	(void)ssl;
	for (j = 0; ids[j] != NULL; j++) {
		n = strlen(ids[j]);
		for (i = 0; i < inlen; i += 1 + (size_t)in[i]) {
			if (i + 1 + in[i] > inlen)
				break;
			if (in[i] == n && memcmp(in + i + 1, ids[j], n) == 0) {
				*out = in + i + 1;
				*outlen = in[i];
				return SSL_TLSEXT_ERR_OK;
			}
		}
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/*
 * The certificates a listener has beyond its default, for the SNI
 * callback. It hangs off the default context as ex_data, so the one
 * SSL_CTX_free the callers already do frees it and its contexts too.
 */
struct sni_table {
	bool strict;
	SSL_CTX *def; /* the context the table hangs off; not owned */
	size_t count;
	SSL_CTX *ctx[];
};

static void
sni_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	struct sni_table *t = ptr;
	size_t i;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (t == NULL)
		return;
	for (i = 0; i < t->count; i++)
		SSL_CTX_free(t->ctx[i]);
	free(t);
}

/*
 * The first context whose certificate names host: exact names first over
 * the default and then the SNI certificates in the order configured, then
 * wildcards ("*.example.org" covers one label, as RFC 6125 §6.4.3 and
 * every browser read it). X509_check_host looks at the DNS names of the
 * subjectAltName, or the CN when there are none.
 */
static SSL_CTX *
sni_pick(const struct sni_table *t, SSL_CTX *def, const char *host)
{
	static const unsigned passes[2] = {X509_CHECK_FLAG_NO_WILDCARDS,
	    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS};
	SSL_CTX *c;
	size_t p, i;

	for (p = 0; p < 2; p++) {
		for (i = 0; i <= t->count; i++) {
			c = i == 0 ? def : t->ctx[i - 1];
			if (X509_check_host(SSL_CTX_get0_certificate(c), host,
			        0, passes[p], NULL) == 1)
				return c;
		}
	}
	return NULL;
}

/*
 * The host name of the ClientHello's server_name extension (RFC 6066 §3),
 * or false when there is none. Only the shape is checked here: OpenSSL
 * parses the extension strictly right after, and refuses what is wrong.
 */
static bool
client_hello_sni(SSL *ssl, char *host, size_t size)
{
	const unsigned char *p;
	size_t len, list, n;

	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p,
	        &len) ||
	    len < 2)
		return false;
	list = (size_t)p[0] << 8 | p[1];
	p += 2;
	len -= 2;
	if (list != len || len < 3 || p[0] != TLSEXT_NAMETYPE_host_name)
		return false;
	n = (size_t)p[1] << 8 | p[2];
	if (n == 0 || n + 3 > len || n >= size || memchr(p + 3, 0, n) != NULL)
		return false;
	memcpy(host, p + 3, n);
	host[n] = '\0';
	return true;
}

/*
 * Picks the certificate before OpenSSL looks at the client's ticket or
 * session id: switching the context also switches the session id
 * context, and each context of a listener has its own (set_sid_ctx), so
 * a session resumes only under the certificate it was made with. RFC
 * 6066 §3: a ticket issued under one name must not resume under another.
 * Tickets stay sealed with the default context's keys, which OpenSSL
 * keeps as the session context. An unknown name is refused later, by
 * on_servername, once OpenSSL has parsed it for the log line.
 */
static int
on_client_hello(SSL *ssl, int *alert, void *arg)
{
	const struct sni_table *t = arg;
	char host[TLSEXT_MAXLEN_host_name + 1];
	SSL_CTX *c;

	if (!client_hello_sni(ssl, host, sizeof(host)))
		return SSL_CLIENT_HELLO_SUCCESS;
	c = sni_pick(t, t->def, host);
	if (c != NULL && c != SSL_get_SSL_CTX(ssl) &&
	    SSL_set_SSL_CTX(ssl, c) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * Runs once OpenSSL has parsed the server name, only when there is one.
 * With sni_strict a name no certificate names is refused. It looks again
 * rather than trusting the context in place: after a HelloRetryRequest
 * only the first ClientHello went through on_client_hello, and a client
 * may (against RFC 8446 §4.1.2) name another host in the second.
 */
static int
on_servername(SSL *ssl, int *alert, void *arg)
{
	const struct sni_table *t = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (!t->strict || host == NULL || sni_pick(t, t->def, host) != NULL)
		return SSL_TLSEXT_ERR_OK;
	/* OpenSSL's own reason would be "callback failed". */
	((struct tls_io *)BIO_get_data(SSL_get_rbio(ssl)))->refused =
	    "unknown SNI name";
	*alert = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/*
 * The session id context of a listener's context: its name for the
 * default certificate, a digest of the name and the place for the n-th
 * sni_certificate (a name may already take all 32 bytes).
 */
static bool
set_sid_ctx(SSL_CTX *ctx, const char *name, size_t n)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len;
	char text[64];
	int r;

	if (n == 0)
		return SSL_CTX_set_session_id_context(ctx,
		           (const unsigned char *)name,
		           (unsigned)strlen(name)) == 1;
	r = snprintf(text, sizeof(text), "%s/sni/%zu", name, n);
	if (r < 0 || (size_t)r >= sizeof(text) ||
	    !EVP_Digest(text, (size_t)r, md, &len, EVP_sha256(), NULL))
		return false;
	return SSL_CTX_set_session_id_context(ctx, md, len) == 1;
}

/* Everything but the certificate, alike for the default and SNI ones. */
static SSL_CTX *
ctx_new(const struct config *cfg, const struct config_listener *l, size_t n,
    char **error_out)
{
	struct config_loc glob = {cfg->path, 0};
	uint64_t options;
	SSL_CTX *ctx;

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		*error_out = build_error(&glob, "cannot create a TLS context");
		return NULL;
	}
	/* RFC 8997 and RFC 9325 §3.1.1: nothing below TLS 1.2. */
	if (!SSL_CTX_set_min_proto_version(ctx,
	        cfg->tls.min_version == CONFIG_TLS_1_3 ? TLS1_3_VERSION :
	                                                 TLS1_2_VERSION))
		goto fail_glob;
	options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE;
	if (!cfg->tls.session_tickets)
		options |= SSL_OP_NO_TICKET;
	SSL_CTX_set_options(ctx, options);
	if (!cfg->tls.session_tickets)
		SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* RFC 9325 §3.10: no 0-RTT for protocols that do not define it. */
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (!set_sid_ctx(ctx, l->name, n))
		goto fail_glob;
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn,
	    (void *)(uintptr_t)alpn_ids[l->protocol]);

	if (cfg->tls.ciphers != NULL &&
	    !SSL_CTX_set_cipher_list(ctx, cfg->tls.ciphers)) {
		*error_out = build_error(&cfg->tls.ciphers_loc,
		    "ciphers: OpenSSL accepts none of '%s'", cfg->tls.ciphers);
		goto fail;
	}
	if (cfg->tls.ciphersuites != NULL &&
	    !SSL_CTX_set_ciphersuites(ctx, cfg->tls.ciphersuites)) {
		*error_out = build_error(&cfg->tls.ciphersuites_loc,
		    "ciphersuites: OpenSSL does not accept '%s'",
		    cfg->tls.ciphersuites);
		goto fail;
	}
	return ctx;

fail_glob:
	*error_out =
	    build_error(&glob, "cannot set up TLS for [listener %s]", l->name);
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static bool
ctx_use_pair(SSL_CTX *ctx, const char *cert, const struct config_loc *cert_loc,
    const char *key, const struct config_loc *key_loc, char **error_out)
{
	if (!readable(cert, cert_loc, "certificate", error_out))
		return false;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		*error_out = build_error(cert_loc,
		    "certificate '%s' is not a PEM certificate chain", cert);
		return false;
	}
	if (!readable(key, key_loc, "key", error_out))
		return false;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		*error_out = build_error(key_loc,
		    "key '%s' is not a PEM private key (or does not match "
		    "certificate '%s')",
		    key, cert);
		return false;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_out = build_error(key_loc,
		    "key '%s' does not match certificate '%s'", key, cert);
		return false;
	}
	return true;
}

static bool
ctx_add_sni(SSL_CTX *ctx, const struct config *cfg,
    const struct config_listener *l, char **error_out)
{
	const struct config_tls *t = &cfg->tls;
	struct config_loc glob = {cfg->path, 0};
	struct sni_table *table;
	SSL_CTX *c;
	size_t i;

	if (t->sni_count == 0 && !t->sni_strict)
		return true;
	if (sni_index < 0) {
		*error_out = build_error(&glob, "tls_init() was not called");
		return false;
	}
	table = calloc(1, sizeof(*table) + t->sni_count * sizeof(SSL_CTX *));
	if (table == NULL || !SSL_CTX_set_ex_data(ctx, sni_index, table)) {
		free(table);
		*error_out = build_error(&glob, "out of memory");
		return false;
	}
	/* From here SSL_CTX_free(ctx) frees the table and what it holds. */
	table->strict = t->sni_strict;
	table->def = ctx;
	for (i = 0; i < t->sni_count; i++) {
		c = ctx_new(cfg, l, i + 1, error_out);
		if (c == NULL)
			return false;
		table->ctx[table->count++] = c;
		if (!ctx_use_pair(c, t->sni[i].certificate, &t->sni[i].loc,
		        t->sni[i].key, &t->sni[i].loc, error_out))
			return false;
	}
	SSL_CTX_set_client_hello_cb(ctx, on_client_hello, table);
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, table);
	return true;
}

SSL_CTX *
tls_ctx_build(const struct config *cfg, const struct config_listener *l,
    char **error_out)
{
	struct config_loc cert_loc, key_loc;
	const char *cert = config_listener_certificate(cfg, l, &cert_loc);
	const char *key = config_listener_key(cfg, l, &key_loc);
	SSL_CTX *ctx;

	*error_out = NULL;
	ERR_clear_error();
	ctx = ctx_new(cfg, l, 0, error_out);
	if (ctx == NULL)
		return NULL;
	if (!ctx_use_pair(ctx, cert, &cert_loc, key, &key_loc, error_out) ||
	    !ctx_add_sni(ctx, cfg, l, error_out)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
