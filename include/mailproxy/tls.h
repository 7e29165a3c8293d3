/*
 * TLS: building an SSL_CTX per listener from the configuration, and the
 * BIO that connects an SSL object to its owner's buffers instead of a
 * socket (STYLE.md §7.7: TLS never touches a socket; libuv owns it).
 *
 * Ciphertext the owner read sits in a chunk the BIO reads from;
 * everything OpenSSL writes goes to the owner's write callback (the pump
 * queues it, within its budget). Nothing is buffered inside the BIO, so
 * with SSL_MODE_RELEASE_BUFFERS an idle session holds no TLS buffer.
 */
#ifndef MAILPROXY_TLS_H
#define MAILPROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "mailproxy/buf.h"
#include "mailproxy/config.h"

/* Where one SSL object reads and writes ciphertext; owned by its user. */
struct tls_io {
	struct buf_chunk **in; /* ciphertext to feed OpenSSL; may be NULL */
	/* Takes n bytes of ciphertext OpenSSL wrote; 0, or negative when
	 * they cannot be kept (then OpenSSL's call fails). */
	int (*write)(void *ctx, const char *p, size_t n);
	void *ctx;
	bool eof;            /* the peer closed: reads end, not retry */
	const char *refused; /* why a callback failed the handshake */
};

/* A session ticket key: 80 bytes, in the order of nginx's 80-byte
 * ssl_session_ticket_key files. */
struct tls_ticket_key {
	unsigned char name[16]; /* sent in the ticket: picks the key */
	unsigned char hmac[32]; /* HMAC-SHA256 */
	unsigned char aes[32];  /* AES-256-CBC */
};

#define TLS_TICKET_KEYS_MAX 8

/* The first key seals new tickets; every key opens them. */
struct tls_tickets {
	size_t count;
	struct tls_ticket_key key[TLS_TICKET_KEYS_MAX];
};

/*
 * *t becomes a fresh random key followed by previous's first key (if
 * any), which then only opens tickets: a reload rotates the key and the
 * tickets of the last generation still resume. false: no randomness.
 */
bool tls_tickets_random(struct tls_tickets *t,
    const struct tls_tickets *previous);

/*
 * Reads ticket_key_file: one key per line, 80 bytes in base64, the first
 * sealing; blank lines and lines starting with # are skipped. false and
 * a "FILE:LINE: message" (loc is the option's line) in *error_out.
 */
bool tls_tickets_load(struct tls_tickets *t, const char *path,
    const struct config_loc *loc, char **error_out);

/* Once per process, before any other call. Returns 0 or ERROR_NOMEM. */
int tls_init(void);

/* Frees what tls_init() made; after every SSL object is gone. */
void tls_cleanup(void);

/* A certificate that runs out within this many days is a warning. */
#define TLS_EXPIRY_WARN_DAYS 14

/*
 * Builds the server context for listener l: certificate chain and key
 * (checked against each other and against the clock), TLS 1.2 minimum or
 * as configured, no renegotiation, no compression, no 0-RTT, session
 * tickets as configured, sealed with tickets (copied; NULL: OpenSSL's own
 * random keys), and [tls] sni_certificate entries chosen by the client's
 * SNI (with sni_strict, an SNI none of them names fails with
 * unrecognized_name). An sni_certificate that cannot be used is left out
 * and a line saying so is appended to the malloc'd text *warnings_out
 * (start it at NULL; caller frees; warnings_out NULL: not wanted). Returns a
 * context with one reference, or NULL and a malloc'd message "FILE:LINE: what
 * is wrong" in *error_out (caller frees).
 */
SSL_CTX *tls_ctx_build(const struct config *cfg,
    const struct config_listener *l, const struct tls_tickets *tickets,
    char **warnings_out, char **error_out);

/*
 * The leaf certificates ctx serves, its default first, then the SNI
 * ones it kept; at most max into out (borrowed from ctx). Returns how many.
 */
size_t tls_ctx_certificates(SSL_CTX *ctx, X509 **out, size_t max);

/*
 * A server SSL object from ctx whose ciphertext goes through io, which
 * must outlive it. Returns NULL when memory is exhausted.
 */
SSL *tls_ssl_new(SSL_CTX *ctx, struct tls_io *io);

/*
 * OpenSSL's reason for the first error on this thread's error queue, e.g.
 * "wrong version number", then clears the queue. Returns a static string
 * (safe to keep for the session's life), or fallback when the queue is
 * empty or the reason unknown.
 */
const char *tls_error_reason(const char *fallback);

#endif
