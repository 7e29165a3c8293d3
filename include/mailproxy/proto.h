/*
 * What mailproxy knows about the mail protocols as a whole: their names,
 * limits and default timeouts; every line mailproxy writes itself, in one
 * table; and the contract of a protocol module (proto_imap.h,
 * proto_pop3.h, proto_smtp.h): one step at a time, bytes in, a decision
 * out (struct proto_out), dispatched through a struct proto_ops.
 *
 * Pure module: no I/O, no clock, no allocation.
 */
#ifndef MAILPROXY_PROTO_H
#define MAILPROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum proto {
	PROTO_IMAP,
	PROTO_POP3,
	PROTO_SMTP,
	PROTO_COUNT_
};

/* Longest client command line before authentication, CRLF included. */
#define PROTO_IMAP_LINE_MAX     8192
#define PROTO_POP3_LINE_MAX     2048
#define PROTO_SMTP_LINE_MAX     1024
#define PROTO_SMTP_AUTH_MAX     12288 /* AUTH and SASL lines (RFC 4954) */
#define PROTO_BACKEND_LINE_MAX  8192  /* any line from the backend */
#define PROTO_LITERAL_MAX       65536 /* one IMAP literal before login */
/* RFC 7888 §4: LITERAL- allows non-synchronising literals up to this. */
#define PROTO_LITERAL_MINUS_MAX 4096

/* "imap", "pop3", "smtp"; static. p must be valid. */
const char *proto_name(enum proto p);

/*
 * Looks up a protocol by its name (case-sensitive, as written in the config
 * file). Returns 0 and sets *out, or ERROR_SYNTAX for an unknown name.
 */
int proto_from_name(const char *name, enum proto *out);

/*
 * Idle timeout after which mailproxy closes a relayed session, in
 * milliseconds, chosen so that it never undercuts the protocol's own
 * autologout rules: IMAP 31 min (RFC 9051 §5.4 says at least 30 and IDLE
 * clients re-issue IDLE within 29, RFC 2177), POP3 10 min (RFC 1939 §3),
 * SMTP 5 min (RFC 5321 §4.5.3.2).
 */
uint64_t proto_default_idle_ms(enum proto p);

/* A listener's part of every dialogue; immutable, outlives them. */
struct proto_params {
	enum proto protocol;
	bool starttls;           /* tls = starttls: mailproxy speaks first */
	bool optional;           /* starttls = optional (plaintext allowed) */
	const char *server_name; /* host name in SMTP replies */
	const char *greeting;    /* text of mailproxy's greeting */
};

/*
 * Every line mailproxy writes itself. Not every protocol has every one;
 * proto_reply_format() says which.
 */
enum proto_reply {
	PROTO_REPLY_GREETING,        /* STARTTLS listeners: mailproxy's */
	PROTO_REPLY_CAPABILITY,      /* IMAP CAPABILITY, POP3 CAPA, EHLO */
	PROTO_REPLY_HELO,            /* SMTP HELO */
	PROTO_REPLY_NOOP,            /* IMAP NOOP, SMTP NOOP and RSET */
	PROTO_REPLY_ID,              /* IMAP ID (answered, nothing said) */
	PROTO_REPLY_LOGOUT,          /* LOGOUT, QUIT */
	PROTO_REPLY_STARTTLS,        /* go ahead with the handshake */
	PROTO_REPLY_STARTTLS_ARGS,   /* STARTTLS with arguments */
	PROTO_REPLY_PRIVACY,         /* a login before TLS */
	PROTO_REPLY_NOT_YET,         /* anything else before TLS */
	PROTO_REPLY_BAD_TAG,         /* IMAP */
	PROTO_REPLY_LITERAL_PRE_TLS, /* IMAP {n} before TLS */
	PROTO_REPLY_LITERAL_NONSYNC, /* IMAP {n+}, backend has no LITERAL+ */
	PROTO_REPLY_LITERAL_TOOBIG,  /* IMAP {n+}, n > 4096 with LITERAL- */
	PROTO_REPLY_TLS_ACTIVE,      /* STARTTLS on TLS */
	PROTO_REPLY_TLS_UNAVAILABLE, /* SMTP STARTTLS once relayed in clear */
	PROTO_REPLY_UNKNOWN,         /* POP3 XCLIENT, XOIP */
	PROTO_REPLY_NO_XCLIENT,      /* SMTP XCLIENT, XFORWARD */
	PROTO_REPLY_NO_AUTH,         /* SMTP AUTH in plaintext */
	PROTO_REPLY_SYNTAX_EHLO,     /* SMTP EHLO without a name */
	PROTO_REPLY_SYNTAX_HELO,     /* SMTP HELO without a name */
	PROTO_REPLY_BAD_SYNTAX,      /* SMTP verb Postfix would read apart */
	PROTO_REPLY_NOT_RECOGNIZED,  /* SMTP BDAT without CHUNKING */
	PROTO_REPLY_PROTOCOL_ERROR,  /* the goodbye after a protocol error */
	/* Notices: mailproxy speaks for the backend, then closes. */
	PROTO_REPLY_UNAVAILABLE, /* backend refused, unreachable, silent */
	PROTO_REPLY_SHUTDOWN,    /* mailproxy is stopping */
	PROTO_REPLY_BUSY,        /* no room for another session */
	PROTO_REPLY_CLIENT_BUSY, /* this client has too many (or too fast) */
	PROTO_REPLY_TIMEOUT,     /* the client took too long */
	PROTO_REPLY_COUNT_
};

/* What a reply may name. Any pointer may be NULL when the reply does not
 * use it. */
struct proto_reply_args {
	const char *server_name; /* SMTP: a plain host name */
	const char *greeting;    /* printable ASCII */
	const char *tag;         /* IMAP: the command's tag */
	size_t tag_len;
	const char *reason; /* PROTOCOL_ERROR: static text */
};

/*
 * Writes reply r of protocol p into buf (at most size bytes, CRLF
 * included, no NUL). Returns the length, ERROR_TOO_LONG when size is too
 * small, or ERROR_SYNTAX for a reply p does not have.
 */
int proto_reply_format(enum proto p, enum proto_reply r,
    const struct proto_reply_args *a, char *buf, size_t size);

/* What a step decided, besides the bytes to move. */
enum proto_event {
	PROTO_CONTINUE, /* move the bytes; call again with the rest */
	/* The STARTTLS reply is in to_client. Discard (and count) every
	 * client byte not consumed, then start the TLS handshake. */
	PROTO_STARTTLS,
	/* starttls = optional: the client goes on in plaintext. Connect the
	 * backend; the client's command stays unconsumed until the backend
	 * has greeted (and, for SMTP, heard the client's HELO/EHLO again). */
	PROTO_CONNECT,
	/* The backend's greeting is through: the dialogue proper starts. */
	PROTO_GREETED,
	/* Authenticated: relay everything else, the unconsumed rest of both
	 * inputs included, untouched. */
	PROTO_OPAQUE,
	/* Close once to_client reached the client; end and error say why. */
	PROTO_CLOSE,
};

enum proto_end {
	PROTO_END_NONE,
	PROTO_END_QUIT,     /* the client said LOGOUT or QUIT */
	PROTO_END_PROTOCOL, /* the client broke the protocol or a limit */
	PROTO_END_BACKEND,  /* the backend's greeting or reply refused us */
};

/* Whose turn it is in the dialogue, for the deadlines. */
enum proto_wait {
	PROTO_WAIT_CLIENT,  /* a command, a SASL line, literal or DATA */
	PROTO_WAIT_BACKEND, /* the greeting or a reply */
	/* SMTP: the reply to the final dot of DATA or to BDAT LAST, which
	 * RFC 5321 §4.5.3.2.6 gives 10 minutes. */
	PROTO_WAIT_BACKEND_DATA,
};

/* Room for the longest text one step writes: a rewritten capability line
 * and, for SMTP, the line held before it (proto_smtp.c). */
#define PROTO_TEXT_MAX (2 * PROTO_BACKEND_LINE_MAX + 1024)

/*
 * One step's decision. Bytes for the client and for the backend point
 * into the input, into the module's state or into text; they stay valid
 * until the next call with this out or that state.
 */
struct proto_out {
	enum proto_event event;
	const char *to_client;
	size_t to_client_len;
	const char *to_backend;
	size_t to_backend_len;
	enum proto_end end; /* with PROTO_CLOSE */
	const char *error;  /* static text for the log, or NULL */
	bool refused;       /* a command was refused (counted) */
	size_t text_len;
	char text[PROTO_TEXT_MAX];
};

/* Resets o for the next step. */
void proto_out_reset(struct proto_out *o);

/*
 * Appends reply r to o->text and points to_client at the text. tag is the
 * IMAP tag of the command answered (tag_len 0: none).
 */
void proto_say(struct proto_out *o, const struct proto_params *p,
    enum proto_reply r, const char *tag, size_t tag_len);

/* Bytes for the client that point into the input or the state. o must
 * hold no text. */
void proto_relay(struct proto_out *o, const char *p, size_t n);

/* Bytes for the backend (at most one run per step). */
void proto_forward(struct proto_out *o, const char *p, size_t n);

/*
 * Room in o->text for a line rewritten for the backend (a step that says
 * nothing to the client); proto_forward_commit() points to_backend at it.
 */
char *proto_forward_room(struct proto_out *o, size_t *room_out);
void proto_forward_commit(struct proto_out *o, size_t n);

/*
 * Room at the end of o->text for a line being rewritten: returns where to
 * write; *room_out says how much fits. proto_text_commit() counts what
 * was written and points to_client at the text.
 */
char *proto_text_room(struct proto_out *o, size_t *room_out);
void proto_text_commit(struct proto_out *o, size_t n);

/*
 * Ends the dialogue: PROTO_CLOSE with end and reason. A protocol error
 * is said to the client first (PROTO_REPLY_PROTOCOL_ERROR).
 */
void proto_close(struct proto_out *o, const struct proto_params *p,
    enum proto_end end, const char *reason);

/* A backend that answers wrong or not at all: the UNAVAILABLE notice,
 * then PROTO_CLOSE with PROTO_END_BACKEND and reason. */
void proto_unavailable(struct proto_out *o, const struct proto_params *p,
    const char *reason);

/*
 * The length of the client's first line in in[0..len), CRLF included,
 * framed strictly (proto_line_find) within max bytes; 0 when more is
 * needed, or when the line is broken: then o closes the dialogue with
 * the protocol error that says why.
 */
size_t proto_client_line(struct proto_out *o, const struct proto_params *p,
    const char *in, size_t len, size_t max);

/* struct proto_ops' greet for every protocol: PROTO_REPLY_GREETING. */
void proto_greet(void *st, const struct proto_params *p, struct proto_out *o);

/*
 * A protocol module: its functions take its own state (zeroed is a valid
 * start, see each module's header) as void *. Each step consumes at most
 * one line, or one run of literal, DATA or BDAT octets, and returns how
 * many bytes; 0 when nothing can be consumed now (more input is needed,
 * or it is not the turn of that side). Unconsumed bytes must be offered
 * again, with more appended. A step never runs after PROTO_OPAQUE or
 * PROTO_CLOSE.
 */
struct proto_ops {
	/* STARTTLS listeners: mailproxy's greeting. */
	void (*greet)(void *st, const struct proto_params *p,
	    struct proto_out *o);
	/* The client before TLS (STARTTLS listeners): mailproxy answers. */
	size_t (*plain)(void *st, const struct proto_params *p, const char *in,
	    size_t len, struct proto_out *o);
	/* The client's handshake completed; what was said before is
	 * forgotten (RFC 3207 §4.2). */
	void (*tls)(void *st);
	/* The backend's greeting (and SMTP's replayed HELO/EHLO), until
	 * PROTO_GREETED or PROTO_CLOSE. */
	size_t (*greeting)(void *st, const struct proto_params *p,
	    const char *in, size_t len, struct proto_out *o);
	/* After the greeting: client commands and backend replies. */
	size_t (*client)(void *st, const struct proto_params *p, const char *in,
	    size_t len, struct proto_out *o);
	size_t (*backend)(void *st, const struct proto_params *p,
	    const char *in, size_t len, struct proto_out *o);
	/* Whose turn it is after the greeting. */
	enum proto_wait (*wait)(const void *st);
	/* Whether the client is in the middle of a reply from the backend
	 * (a notice now would land inside it). */
	bool (*mid_reply)(const void *st);
	/* Bytes of the state, which the caller allocates zeroed. */
	size_t state_size;
};

#endif
