/*
 * The mail dialogue until authentication, for IMAP, POP3 and SMTP: what
 * mailproxy answers alone before TLS on STARTTLS listeners, and the
 * lock-step filter between client and backend after TLS until the client
 * has authenticated (SMTP on port 25, which never authenticates: for the
 * whole session). After that the session relays bytes untouched and this
 * module is freed.
 *
 * Pure module: bytes in, decisions out (struct proto_out). It dispatches
 * to the listener's protocol through its struct proto_ops, and adds what
 * the three share: the counts and limits of refused and pre-TLS commands,
 * and the statistics for the log. No sockets, no libuv, no OpenSSL.
 *
 * The session says which phase the input belongs to by calling the
 * matching function: dialog_plain() before TLS, dialog_greeting() for the
 * backend's greeting, dialog_client() and dialog_backend() after it. Each
 * call is one step (see struct proto_ops): it consumes at most one line or
 * one run of octets and returns how many bytes; the caller moves the bytes
 * in *out, acts on out->event, and calls again with the rest.
 */
#ifndef MAILPROXY_DIALOG_H
#define MAILPROXY_DIALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "mailproxy/proto.h"

/* Refused commands before the session is closed (ALPACA: an HTTP request
 * sent to a mail port is cut short). */
#define DIALOG_REFUSED_MAX 5
/* Commands other than STARTTLS mailproxy answers before TLS; the next one
 * closes the session. A real client sends two or three (CAPABILITY,
 * EHLO, NOOP); Postfix ends a session after 100 junk commands. */
#define DIALOG_PLAIN_MAX   20

struct dialog_stats {
	unsigned refused;        /* commands answered with a refusal */
	unsigned plain;          /* commands answered before TLS */
	unsigned long discarded; /* set by the session: bytes after STARTTLS */
	bool starttls;           /* the client upgraded with STARTTLS */
};

struct dialog;

/* A new dialogue, or NULL when out of memory. params must outlive it. */
struct dialog *dialog_new(const struct proto_params *params);
void dialog_free(struct dialog *d);

/* STARTTLS listeners: mailproxy's greeting, into out. */
void dialog_greet(struct dialog *d, struct proto_out *out);

/* The client before TLS (STARTTLS listeners). */
size_t dialog_plain(struct dialog *d, const char *in, size_t len,
    struct proto_out *out);

/* The client's TLS handshake completed. */
void dialog_tls_started(struct dialog *d);

/* The backend's greeting, until PROTO_GREETED or PROTO_CLOSE. */
size_t dialog_greeting(struct dialog *d, const char *in, size_t len,
    struct proto_out *out);

/* After the greeting: client bytes and backend bytes. */
size_t dialog_client(struct dialog *d, const char *in, size_t len,
    struct proto_out *out);
size_t dialog_backend(struct dialog *d, const char *in, size_t len,
    struct proto_out *out);

/* Whose turn it is after the greeting (for the deadlines). */
enum proto_wait dialog_wait(const struct dialog *d);

/* Whether the client is in the middle of a reply from the backend, so
 * that no notice may be said now. */
bool dialog_mid_reply(const struct dialog *d);

/* The statistics; the session adds discarded bytes. */
struct dialog_stats *dialog_stats(struct dialog *d);

#endif
