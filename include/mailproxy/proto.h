/*
 * What mailproxy knows about each mail protocol as a whole: names, default
 * timeouts, and the fixed replies it sends itself when the backend cannot
 * answer (unavailable, shutting down).
 *
 * Pure module: no I/O.
 */
#ifndef MAILPROXY_PROTO_H
#define MAILPROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum proto {
	PROTO_IMAP,
	PROTO_POP3,
	PROTO_SMTP,
	PROTO_COUNT_
};

/* Why mailproxy speaks for the backend. */
enum proto_notice {
	PROTO_NOTICE_UNAVAILABLE, /* backend refused or unreachable */
	PROTO_NOTICE_SHUTDOWN,    /* mailproxy is stopping */
	PROTO_NOTICE_BUSY,        /* no room for another session */
};

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

/*
 * Writes the protocol's own line for a notice into buf (at most size
 * bytes, CRLF included, no NUL), e.g. "* BYE [UNAVAILABLE] ...\r\n" or
 * "421 4.3.0 <server_name> ...\r\n". server_name is used by SMTP only and
 * must be a plain host name (the caller validates it). Returns the length,
 * ERROR_TOO_LONG when size is too small, or ERROR_SYNTAX for a notice
 * that does not exist.
 */
int proto_notice_line(enum proto p, enum proto_notice n,
    const char *server_name, char *buf, size_t size);

#endif
