/*
 * The mail dialogue until authentication, for IMAP, POP3 and SMTP: what
 * mailproxy answers alone before TLS on STARTTLS listeners, and the
 * lock-step filter between client and backend after TLS until the client
 * has authenticated (SMTP: or sent its first MAIL), on every listener.
 * After that the session relays bytes untouched and this module is freed.
 *
 * Pure module: bytes in, decisions out. No sockets, no libuv, no OpenSSL.
 * Output goes through a dialog_sink; events tell the session what to do.
 *
 * Input is given as whatever bytes are buffered; each call consumes whole
 * lines (and literal data) only, and returns how many bytes it consumed.
 * Unconsumed bytes must be offered again, with more appended, on the next
 * call. A call stops at the first event: the session acts on it, then
 * calls again with the rest (never after DIALOG_CLOSE or DIALOG_OPAQUE).
 * Lines are CRLF-terminated; before authentication a bare CR, a bare LF or
 * a NUL in a client line, or a line longer than the protocol's limit,
 * ends the session with a protocol error.
 */
#ifndef MAILPROXY_DIALOG_H
#define MAILPROXY_DIALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "mailproxy/proto.h"

/* Longest client command line before authentication, CRLF included. */
#define DIALOG_IMAP_LINE_MAX    8192
#define DIALOG_POP3_LINE_MAX    2048
#define DIALOG_SMTP_LINE_MAX    1024
#define DIALOG_SMTP_AUTH_MAX    12288 /* AUTH and SASL lines (RFC 4954) */
#define DIALOG_BACKEND_LINE_MAX 8192  /* any line from the backend */
#define DIALOG_LITERAL_MAX      65536 /* IMAP literal before login */
/* Refused commands before the session is closed (ALPACA: an HTTP request
 * sent to a mail port is cut short). */
#define DIALOG_REFUSED_MAX      5

enum dialog_event {
	DIALOG_CONTINUE, /* nothing to do: wait for more input */
	/* The STARTTLS reply is written. Discard (and count) every client
	 * byte not consumed, then start the TLS handshake. */
	DIALOG_STARTTLS,
	/* starttls = optional: the client goes on in plaintext. Connect the
	 * backend now; the client's command stays unconsumed until the
	 * backend has greeted and the client's HELO/EHLO has been replayed. */
	DIALOG_CONNECT,
	/* Authenticated (or SMTP MAIL forwarded): relay everything else,
	 * the unconsumed rest of both inputs included, untouched. */
	DIALOG_OPAQUE,
	/* Close once what was written reached the client. dialog_end and
	 * dialog_error say why. */
	DIALOG_CLOSE,
};

enum dialog_end {
	DIALOG_END_NONE,
	DIALOG_END_QUIT,     /* the client said LOGOUT or QUIT */
	DIALOG_END_PROTOCOL, /* the client broke the protocol or the limits */
	DIALOG_END_BACKEND,  /* the backend's greeting or reply refused us */
};

struct dialog_sink {
	void *ctx;
	/* Plaintext for the client (the session encrypts it after TLS). */
	void (*to_client)(void *ctx, const char *p, size_t n);
	void (*to_backend)(void *ctx, const char *p, size_t n);
};

struct dialog_params {
	enum proto protocol;
	bool starttls; /* tls = starttls: mailproxy speaks first */
	bool optional; /* starttls = optional (plaintext allowed) */
	const char
	    *server_name;     /* host name in SMTP replies; kept, not copied */
	const char *greeting; /* text of mailproxy's greeting; kept */
};

struct dialog_stats {
	unsigned refused;        /* commands answered with a refusal */
	unsigned long discarded; /* set by the session: bytes after STARTTLS */
	bool starttls;           /* the client upgraded with STARTTLS */
};

struct dialog;

/* A new dialogue, or NULL when out of memory. params must outlive it. */
struct dialog *dialog_new(const struct dialog_params *params);
void dialog_free(struct dialog *d);

/*
 * STARTTLS listeners: writes mailproxy's greeting to the client. Implicit
 * listeners write nothing (the backend's greeting is relayed later).
 */
void dialog_start(struct dialog *d, const struct dialog_sink *sink);

/*
 * The client's TLS handshake completed: from now on the backend is being
 * connected and its greeting is awaited; client lines wait until then.
 */
void dialog_tls_started(struct dialog *d);

/* Client bytes (plaintext). Returns bytes consumed; *ev the event. */
size_t dialog_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);

/* Backend bytes. Returns bytes consumed; *ev the event. */
size_t dialog_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);

/* Whether the dialogue waits for the backend (client input is held). */
bool dialog_waiting(const struct dialog *d);

enum dialog_end dialog_end(const struct dialog *d);
/* Why it closed, static text for the log ("bare LF in command line"),
 * or NULL. */
const char *dialog_error(const struct dialog *d);
struct dialog_stats *dialog_stats(struct dialog *d);

#endif
