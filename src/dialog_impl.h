/*
 * Inside the dialogue module: the state shared by dialog.c and the three
 * protocol files, and the helpers they share. Not a public header.
 */
#ifndef MAILPROXY_DIALOG_IMPL_H
#define MAILPROXY_DIALOG_IMPL_H

#include <stdint.h>

#include "mailproxy/dialog.h"

enum dialog_phase {
	PH_PRE_TLS,   /* STARTTLS listener before TLS: mailproxy answers */
	PH_HANDSHAKE, /* waiting for dialog_tls_started */
	PH_GREETING,  /* waiting for the backend's greeting */
	PH_REPLAY,    /* SMTP plaintext: the client's EHLO went again */
	PH_READY,     /* the next client line is a command */
	PH_WAIT,      /* a command is at the backend: its reply is awaited */
	PH_MORE,      /* the backend asked for one more client line (SASL) */
	PH_LITERAL,   /* IMAP: client literal octets go through */
	PH_REST,      /* IMAP: the command line goes on after a literal */
	PH_DONE,      /* OPAQUE or CLOSE was given */
};

/* What the command at the backend is, for reading its reply. */
enum dialog_cmd {
	CMD_OTHER,
	CMD_AUTH,  /* success means authenticated */
	CMD_CAPA,  /* capabilities: rewritten (POP3: multi-line) */
	CMD_MULTI, /* POP3: multi-line reply on +OK */
	CMD_EHLO,  /* SMTP EHLO/HELO: rewritten */
};

struct dialog {
	const struct dialog_params *p;
	enum dialog_phase phase;
	bool tls;             /* the client is on TLS */
	bool plain;           /* SMTP optional: backend connected in plaintext */
	enum dialog_end end;
	const char *error;
	struct dialog_stats stats;

	enum dialog_cmd cmd;
	char tag[256]; /* IMAP: tag of the command at the backend */
	size_t tag_len;
	uint64_t literal;      /* IMAP: octets announced by {n}, sent after
	                        * the backend's "+" */
	bool literal_wait;     /* IMAP: such a {n} waits for its "+" */
	uint64_t client_left;  /* IMAP: client literal octets still to go */
	uint64_t backend_left; /* IMAP: backend literal octets still to go */
	bool backend_rest;     /* IMAP: the backend's line goes on */
	bool swallow;          /* IMAP: the literal and the rest of a
	                        * refused command are dropped */
	bool body;             /* POP3: inside a multi-line reply */

	/* SMTP: the client's last HELO/EHLO line, replayed in plaintext. */
	char *helo;
	size_t helo_len;
	/* SMTP: an EHLO reply being rewritten, held until its last line. */
	char *reply;
	size_t reply_len, reply_size;
	size_t reply_last; /* offset of the last kept line's separator */
};

/*
 * Line framing. Returns the length of the first line of in, CRLF
 * included, 0 when more input is needed, or a negative LINE_* error.
 * strict: a client line before authentication, where a bare CR, a bare LF
 * or a NUL is an error; otherwise a line ends at LF.
 */
#define LINE_TOO_LONG (-1)
#define LINE_BARE     (-2)
long dialog_line(const char *in, size_t len, size_t max, bool strict);

/* Length of the line without its CRLF (or LF). */
size_t dialog_chomp(const char *line, size_t len);

/* Case-insensitive comparison of the n bytes at p with the word w. */
bool dialog_word_is(const char *p, size_t n, const char *w);

/* Length of the word at p (up to a space, CR, LF or end). */
size_t dialog_word_len(const char *p, size_t n);

/* Skips spaces; returns how many. */
size_t dialog_spaces(const char *p, size_t n);

/* A capability or SASL mechanism mailproxy removes after TLS. */
bool dialog_cap_dropped(const char *t, size_t n, bool sasl);

/*
 * Copies the space-separated tokens of in[0..n) to out, leaving out the
 * dropped ones (dialog_cap_dropped; "AUTH=" prefixes are looked through).
 * Returns the length written (at most n).
 */
size_t dialog_filter_caps(const char *in, size_t n, char *out, bool sasl);

/* Output, and the ends. */
void dialog_say(const struct dialog_sink *sink, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void dialog_to_client(const struct dialog_sink *sink, const char *p,
    size_t n);
void dialog_to_backend(const struct dialog_sink *sink, const char *p,
    size_t n);
/* Says the protocol's goodbye with reason, then DIALOG_CLOSE. */
void dialog_fail(struct dialog *d, const struct dialog_sink *sink,
    enum dialog_end end, const char *reason, enum dialog_event *ev);
/* Counts a refusal; the last allowed one closes the session. */
void dialog_refused(struct dialog *d, const struct dialog_sink *sink,
    enum dialog_event *ev);
void dialog_opaque(struct dialog *d, enum dialog_event *ev);

/* Per protocol: one step each, consuming at most one line or one piece
 * of literal data; 0 when nothing can be consumed now. */
void imap_start(struct dialog *d, const struct dialog_sink *sink);
size_t imap_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);
size_t imap_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);
void pop3_start(struct dialog *d, const struct dialog_sink *sink);
size_t pop3_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);
size_t pop3_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);
void smtp_start(struct dialog *d, const struct dialog_sink *sink);
size_t smtp_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);
size_t smtp_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev);

#endif
