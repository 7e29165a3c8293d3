/*
 * TLS contexts and the chunk BIO.
 *
 * One SSL_CTX per listener, built by the master before it forks the
 * workers of a generation, which inherit it. Tickets are sealed with keys
 * the master made once (or read from ticket_key_file), not OpenSSL's
 * per-context random ones, so a session resumes on any worker, after a
 * reload, and on another instance that shares the file. The server
 * session cache is off: TLS 1.2 and 1.3 both resume from stateless
 * tickets, and a cache would not be shared between worker processes.
 *
 * Must not: touch sockets or the loop, or log (callers log with context).
 */
#include "mailproxy/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "mailproxy/error.h"

static BIO_METHOD *chunk_method;
static int sni_index = -1;        /* SSL_CTX ex_data: struct sni_table */
static int tickets_index = -1;    /* SSL_CTX ex_data: struct tls_tickets */
static EVP_CIPHER *ticket_cipher; /* fetched once, not per ticket */

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

static void
tickets_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (ptr != NULL)
		OPENSSL_cleanse(ptr, sizeof(struct tls_tickets));
	free(ptr);
}

int
tls_init(void)
{
	int type = BIO_get_new_index();

	if (sni_index < 0)
		sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
		    sni_table_free);
	if (tickets_index < 0)
		tickets_index =
		    SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tickets_free);
	if (sni_index < 0 || tickets_index < 0)
		return ERROR_NOMEM;
	if (ticket_cipher == NULL)
		ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	if (ticket_cipher == NULL)
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
	EVP_CIPHER_free(ticket_cipher);
	ticket_cipher = NULL;
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
 * The session id context of a context: a digest of the listener's name
 * and of its leaf certificate. It is the same on every worker, after a
 * reload and on another instance with the same files, so their tickets
 * resume there; it differs between certificates whatever their order in
 * the file, so a ticket never resumes under another name (RFC 6066 §3),
 * and between listeners, so an IMAPS ticket is no POP3S one.
 */
static bool
set_sid_ctx(SSL_CTX *ctx, const char *name)
{
	unsigned char leaf[EVP_MAX_MD_SIZE], md[EVP_MAX_MD_SIZE];
	unsigned int leaf_len, len;
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	EVP_MD_CTX *d;
	bool ok;

	if (cert == NULL || !X509_digest(cert, EVP_sha256(), leaf, &leaf_len))
		return false;
	d = EVP_MD_CTX_new();
	ok = d != NULL && EVP_DigestInit_ex(d, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(d, name, strlen(name) + 1) &&
	    EVP_DigestUpdate(d, leaf, leaf_len) &&
	    EVP_DigestFinal_ex(d, md, &len) &&
	    SSL_CTX_set_session_id_context(ctx, md, len) == 1;
	EVP_MD_CTX_free(d);
	return ok;
}

/*
 * Seals a new ticket with the first key, opens one sealed with any key
 * (RFC 5077 §4's recommended construction, as OpenSSL's own: AES-256-CBC
 * and HMAC-SHA256). A ticket opened with an older key is renewed, so
 * clients move to the newest key before the old one goes.
 */
static int
on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int enc)
{
	const struct tls_tickets *t =
	    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tickets_index);
	const struct tls_ticket_key *k = NULL;
	OSSL_PARAM params[3];
	size_t i;

	if (t == NULL || t->count == 0)
		return enc ? -1 : 0;
	if (enc) {
		k = &t->key[0];
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher)) !=
		    1)
			return -1;
		memcpy(name, k->name, sizeof(k->name));
	} else {
		for (i = 0; i < t->count && k == NULL; i++)
			if (memcmp(name, t->key[i].name, sizeof(k->name)) == 0)
				k = &t->key[i];
		if (k == NULL)
			return 0; /* unknown key: a full handshake, new ticket
			           */
	}
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_CTX_set_params(mac, params))
		return -1;
	if (enc)
		return EVP_EncryptInit_ex(cipher, ticket_cipher, NULL, k->aes,
		           iv) == 1 ?
		    1 :
		    -1;
	if (EVP_DecryptInit_ex(cipher, ticket_cipher, NULL, k->aes, iv) != 1)
		return -1;
	return k == &t->key[0] ? 1 : 2;
}

static bool
set_tickets(SSL_CTX *ctx, const struct tls_tickets *tickets)
{
	struct tls_tickets *copy;

	if (tickets == NULL || tickets->count == 0)
		return true; /* OpenSSL's own random keys */
	copy = malloc(sizeof(*copy));
	if (copy == NULL)
		return false;
	*copy = *tickets;
	if (!SSL_CTX_set_ex_data(ctx, tickets_index, copy)) {
		tickets_free(NULL, copy, NULL, 0, 0, NULL);
		return false;
	}
	return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) == 1;
}

bool
tls_tickets_random(struct tls_tickets *t, const struct tls_tickets *previous)
{
	struct tls_tickets next;

	memset(&next, 0, sizeof(next));
	if (RAND_bytes((unsigned char *)&next.key[0], sizeof(next.key[0])) != 1)
		return false;
	next.count = 1;
	if (previous != NULL && previous->count > 0)
		next.key[next.count++] = previous->key[0];
	*t = next;
	OPENSSL_cleanse(&next, sizeof(next));
	return true;
}

/* One key: 80 bytes in base64, laid out as nginx's 80-byte
 * ssl_session_ticket_key (name, HMAC key, AES key). HAProxy's
 * tls-ticket-keys puts the AES key before the HMAC key: not the same. */
static bool
ticket_key_parse(const char *line, size_t n, struct tls_ticket_key *k)
{
	unsigned char raw[128];
	size_t pad = 0;
	int len;

	if (n == 0 || n % 4 != 0 || n > 4 * sizeof(raw) / 3)
		return false;
	while (pad < 2 && line[n - 1 - pad] == '=')
		pad++;
	len = EVP_DecodeBlock(raw, (const unsigned char *)line, (int)n);
	if (len < 0 || (size_t)len - pad != sizeof(*k)) {
		OPENSSL_cleanse(raw, sizeof(raw));
		return false;
	}
	memcpy(k, raw, sizeof(*k));
	OPENSSL_cleanse(raw, sizeof(raw));
	return true;
}

bool
tls_tickets_load(struct tls_tickets *t, const char *path,
    const struct config_loc *loc, char **error_out)
{
	char line[256];
	unsigned lineno = 0;
	FILE *f;
	size_t n;
	bool ok = true;

	*error_out = NULL;
	memset(t, 0, sizeof(*t));
	if (!readable(path, loc, "ticket_key_file", error_out))
		return false;
	f = fopen(path, "r");
	if (f == NULL) {
		*error_out = build_error(loc,
		    "cannot read ticket_key_file "
		    "'%s': %s",
		    path, strerror(errno));
		return false;
	}
	while (ok && fgets(line, sizeof(line), f) != NULL) {
		char *p = line;

		lineno++;
		n = strlen(line);
		if (n == sizeof(line) - 1 && line[n - 1] != '\n' && !feof(f)) {
			*error_out = build_error(loc,
			    "ticket_key_file '%s' line %u: too long", path,
			    lineno);
			ok = false;
			break;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		n = strlen(p);
		while (n > 0 &&
		    (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' ||
		        p[n - 1] == '\t'))
			p[--n] = '\0';
		if (n == 0 || p[0] == '#')
			continue;
		if (t->count == TLS_TICKET_KEYS_MAX) {
			*error_out = build_error(loc,
			    "ticket_key_file '%s' line %u: more than %d keys",
			    path, lineno, TLS_TICKET_KEYS_MAX);
			ok = false;
		} else if (!ticket_key_parse(p, n, &t->key[t->count])) {
			*error_out = build_error(loc,
			    "ticket_key_file '%s' line %u: not 80 bytes in "
			    "base64 (make one with: openssl rand 80 | base64 "
			    "-w0)",
			    path, lineno);
			ok = false;
		} else {
			t->count++;
		}
	}
	OPENSSL_cleanse(line, sizeof(line));
	(void)fclose(f);
	if (ok && t->count == 0) {
		*error_out =
		    build_error(loc, "ticket_key_file '%s' has no key", path);
		ok = false;
	}
	if (!ok)
		OPENSSL_cleanse(t, sizeof(*t));
	return ok;
}

/* Everything but the certificate, alike for the default and SNI ones. */
static SSL_CTX *
ctx_new(const struct config *cfg, const struct config_listener *l,
    const struct tls_tickets *tickets, char **error_out)
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
	/* One TLS 1.3 ticket per full handshake, not OpenSSL's two (as
	 * Go's server): sealing the second cost 6 % of a full ECDSA
	 * handshake's instructions (2 % for RSA). A resumption brings one
	 * new ticket too (pump.c asks for it). */
	SSL_CTX_set_num_tickets(ctx, cfg->tls.session_tickets ? 1 : 0);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* RFC 9325 §3.10: no 0-RTT for protocols that do not define it. */
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (cfg->tls.session_tickets && !set_tickets(ctx, tickets))
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

/* "Dec  4 20:19:55 2026 GMT", for error texts; a static buffer. */
static const char *
asn1_time_text(const ASN1_TIME *t)
{
	static char text[64];
	BIO *b = BIO_new(BIO_s_mem());
	int n = 0;

	text[0] = '\0';
	if (b != NULL && ASN1_TIME_print(b, t) == 1)
		n = BIO_read(b, text, (int)sizeof(text) - 1);
	text[n > 0 ? n : 0] = '\0';
	BIO_free(b);
	return text;
}

static void add_line(char **out, char *line, const char *tail);

/* A certificate that has expired or is not yet valid is no certificate:
 * clients would refuse it, and an operator should hear so at -t. One that
 * runs out within TLS_EXPIRY_WARN_DAYS is a warning (renewal failed?). */
static bool
check_dates(SSL_CTX *ctx, const char *cert, const struct config_loc *loc,
    char **warnings_out, char **error_out)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	int days = 0, secs = 0;

	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
		*error_out = build_error(loc,
		    "certificate '%s' has expired (notAfter %s)", cert,
		    asn1_time_text(X509_get0_notAfter(x)));
		return false;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
		*error_out = build_error(loc,
		    "certificate '%s' is not valid yet (notBefore %s)", cert,
		    asn1_time_text(X509_get0_notBefore(x)));
		return false;
	}
	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) == 1 &&
	    days < TLS_EXPIRY_WARN_DAYS)
		add_line(warnings_out,
		    build_error(loc,
		        "certificate '%s' expires in %d day%s (notAfter %s)",
		        cert, days, days == 1 ? "" : "s",
		        asn1_time_text(X509_get0_notAfter(x))),
		    "");
	return true;
}

/* No passphrase is ever asked for: mailproxy runs unattended. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The key at path, read alone first, so that "not a key" and "not this
 * certificate's key" are told apart. */
static EVP_PKEY *
read_key(const char *path)
{
	EVP_PKEY *key;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return NULL;
	key = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	(void)fclose(f);
	return key;
}

static bool
ctx_use_pair(SSL_CTX *ctx, const char *cert, const struct config_loc *cert_loc,
    const char *key, const struct config_loc *key_loc, char **warnings_out,
    char **error_out)
{
	EVP_PKEY *pkey;
	bool ok;

	if (!readable(cert, cert_loc, "certificate", error_out))
		return false;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		*error_out = build_error(cert_loc,
		    "certificate '%s' is not a PEM certificate chain", cert);
		return false;
	}
	if (!readable(key, key_loc, "key", error_out))
		return false;
	pkey = read_key(key);
	if (pkey == NULL) {
		*error_out = build_error(key_loc,
		    "key '%s' is not a PEM private key without a passphrase",
		    key);
		return false;
	}
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), pkey) != 1) {
		EVP_PKEY_free(pkey);
		*error_out = build_error(key_loc,
		    "key '%s' does not match certificate '%s'", key, cert);
		return false;
	}
	ok = SSL_CTX_use_PrivateKey(ctx, pkey) == 1;
	EVP_PKEY_free(pkey);
	if (!ok) {
		*error_out = build_error(key_loc,
		    "key '%s' cannot be used with certificate '%s'", key, cert);
		return false;
	}
	return check_dates(ctx, cert, cert_loc, warnings_out, error_out);
}

/*
 * Appends line (taken) and then tail to the malloc'd text *out, one line
 * each; a line already there (the same sni_certificate seen by the next
 * listener) is not repeated.
 */
static void
add_line(char **out, char *line, const char *tail)
{
	size_t had, n;
	char *grown;

	if (line == NULL || out == NULL) {
		free(line);
		return;
	}
	had = *out != NULL ? strlen(*out) : 0;
	n = strlen(line);
	if (had > 0 && strstr(*out, line) != NULL) {
		free(line);
		return;
	}
	grown = realloc(*out, had + n + strlen(tail) + 2);
	if (grown != NULL) {
		if (had > 0)
			grown[had++] = '\n';
		memcpy(grown + had, line, n);
		strcpy(grown + had + n, tail);
		*out = grown;
	}
	free(line);
}

/*
 * One broken or expired sni_certificate among many must not stop a start
 * or a reload: it is left out with a warning, and the names it had fall
 * to the default certificate (or to unrecognized_name with sni_strict).
 */
static bool
ctx_add_sni(SSL_CTX *ctx, const struct config *cfg,
    const struct config_listener *l, const struct tls_tickets *tickets,
    char **warnings_out, char **error_out)
{
	char *why;
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
		c = ctx_new(cfg, l, tickets, error_out);
		if (c == NULL)
			return false;
		if (!ctx_use_pair(c, t->sni[i].certificate, &t->sni[i].loc,
		        t->sni[i].key, &t->sni[i].loc, warnings_out, &why)) {
			SSL_CTX_free(c);
			add_line(warnings_out, why,
			    "; sni_certificate skipped: its names get the "
			    "default certificate");
			continue;
		}
		if (!set_sid_ctx(c, l->name)) {
			SSL_CTX_free(c);
			*error_out = build_error(&glob,
			    "cannot set up TLS for [listener %s]", l->name);
			return false;
		}
		table->ctx[table->count++] = c;
	}
	SSL_CTX_set_client_hello_cb(ctx, on_client_hello, table);
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, table);
	return true;
}

SSL_CTX *
tls_ctx_build(const struct config *cfg, const struct config_listener *l,
    const struct tls_tickets *tickets, char **warnings_out, char **error_out)
{
	struct config_loc glob = {cfg->path, 0};
	struct config_loc cert_loc, key_loc;
	const char *cert = config_listener_certificate(cfg, l, &cert_loc);
	const char *key = config_listener_key(cfg, l, &key_loc);
	SSL_CTX *ctx;

	*error_out = NULL;
	ERR_clear_error();
	ctx = ctx_new(cfg, l, tickets, error_out);
	if (ctx == NULL)
		return NULL;
	if (!ctx_use_pair(ctx, cert, &cert_loc, key, &key_loc, warnings_out,
	        error_out))
		goto fail;
	if (!set_sid_ctx(ctx, l->name)) {
		*error_out = build_error(&glob,
		    "cannot set up TLS for [listener %s]", l->name);
		goto fail;
	}
	if (!ctx_add_sni(ctx, cfg, l, tickets, warnings_out, error_out))
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

size_t
tls_ctx_certificates(SSL_CTX *ctx, X509 **out, size_t max)
{
	const struct sni_table *table;
	size_t n = 0, i;
	X509 *x;

	if (max == 0)
		return 0;
	if ((x = SSL_CTX_get0_certificate(ctx)) != NULL)
		out[n++] = x;
	table = sni_index >= 0 ? SSL_CTX_get_ex_data(ctx, sni_index) : NULL;
	for (i = 0; table != NULL && i < table->count && n < max; i++)
		if ((x = SSL_CTX_get0_certificate(table->ctx[i])) != NULL)
			out[n++] = x;
	return n;
}
