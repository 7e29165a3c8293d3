/*
 * Protocol-wide facts and the replies mailproxy writes in the backend's
 * place. The wording follows the servers operators know: Dovecot's IMAP
 * "* BYE" with RFC 5530 codes, POP3 "-ERR" with RFC 3206 codes, and SMTP
 * 421 with RFC 3463 enhanced codes, which RFC 5321 §3.8 lets a server send
 * when it must close the channel.
 *
 * Pure: no I/O, no state.
 */
#include "mailproxy/proto.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mailproxy/error.h"

static const char *const names[PROTO_COUNT_] = {
    [PROTO_IMAP] = "imap",
    [PROTO_POP3] = "pop3",
    [PROTO_SMTP] = "smtp",
};

const char *
proto_name(enum proto p)
{
	return names[p];
}

int
proto_from_name(const char *name, enum proto *out)
{
	int i;

	for (i = 0; i < PROTO_COUNT_; i++) {
		if (strcmp(name, names[i]) == 0) {
			*out = (enum proto)i;
			return 0;
		}
	}
	return ERROR_SYNTAX;
}

uint64_t
proto_default_idle_ms(enum proto p)
{
	switch (p) {
	case PROTO_IMAP:
		return 31 * 60 * 1000;
	case PROTO_POP3:
		return 10 * 60 * 1000;
	case PROTO_SMTP:
	case PROTO_COUNT_:
		break;
	}
	return 5 * 60 * 1000;
}

int
proto_notice_line(enum proto p, enum proto_notice n, const char *server_name,
    char *buf, size_t size)
{
	static const char *const imap[] = {
	    [PROTO_NOTICE_UNAVAILABLE] = "[UNAVAILABLE] Backend server not "
	                                 "available.",
	    [PROTO_NOTICE_SHUTDOWN] = "Server shutting down.",
	    [PROTO_NOTICE_BUSY] = "[UNAVAILABLE] Too many connections, try "
	                          "again later.",
	};
	static const char *const pop3[] = {
	    [PROTO_NOTICE_UNAVAILABLE] = "Backend server not available.",
	    [PROTO_NOTICE_SHUTDOWN] = "Server shutting down.",
	    [PROTO_NOTICE_BUSY] = "Too many connections, try again later.",
	};
	/* RFC 3463: X.3.0 other mail system status, X.3.2 system not
	 * accepting network messages. */
	static const char *const smtp_code[] = {
	    [PROTO_NOTICE_UNAVAILABLE] = "4.3.0",
	    [PROTO_NOTICE_SHUTDOWN] = "4.3.2",
	    [PROTO_NOTICE_BUSY] = "4.3.2",
	};
	static const char *const smtp[] = {
	    [PROTO_NOTICE_UNAVAILABLE] = "Service not available, closing "
	                                 "transmission channel",
	    [PROTO_NOTICE_SHUTDOWN] = "Service shutting down, closing "
	                              "transmission channel",
	    [PROTO_NOTICE_BUSY] = "Too many connections, try again later",
	};
	int len = -1;

	if ((size_t)n >= sizeof(imap) / sizeof(imap[0]))
		return ERROR_SYNTAX;
	switch (p) {
	case PROTO_IMAP:
		len = snprintf(buf, size, "* BYE %s\r\n", imap[n]);
		break;
	case PROTO_POP3:
		len = snprintf(buf, size, "-ERR [SYS/TEMP] %s\r\n", pop3[n]);
		break;
	case PROTO_SMTP:
	case PROTO_COUNT_:
		len = snprintf(buf, size, "421 %s %s %s\r\n", smtp_code[n],
		    server_name, smtp[n]);
		break;
	}
	/* snprintf wrote a NUL we do not count; it must still have fit. */
	if (len < 0 || (size_t)len >= size)
		return ERROR_TOO_LONG;
	return len;
}
