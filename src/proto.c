/*
 * Protocol-wide facts, every line mailproxy writes itself, and the helpers
 * a protocol module fills its step's decision with.
 *
 * The replies are one table, so each wording exists once and
 * docs/dialogue.md can be read against it. The wording follows the
 * servers operators know: Dovecot's IMAP and POP3 lines (RFC 5530 and RFC
 * 3206 response codes) and Postfix's SMTP lines with RFC 3463 enhanced
 * codes; RFC 5321 §3.8 lets a server send 421 when it must close.
 *
 * Pure: no I/O, no state. Must not: allocate or log.
 */
#include "mailproxy/proto.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "mailproxy/error.h"
#include "mailproxy/proto_line.h"

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

/*
 * Each reply is a template: $T the IMAP tag, $N the server name, $G the
 * greeting text, $R the reason of a protocol error. NULL: the protocol
 * has no such reply.
 */
static const char *const replies[PROTO_COUNT_][PROTO_REPLY_COUNT_] = {
    [PROTO_IMAP] =
        {
            [PROTO_REPLY_GREETING] = "* OK [CAPABILITY IMAP4rev1 STARTTLS "
                                     "LOGINDISABLED] $G\r\n",
            [PROTO_REPLY_CAPABILITY] = "* CAPABILITY IMAP4rev1 STARTTLS "
                                       "LOGINDISABLED\r\n$T OK CAPABILITY "
                                       "completed.\r\n",
            [PROTO_REPLY_NOOP] = "$T OK NOOP completed.\r\n",
            [PROTO_REPLY_ID] = "* ID NIL\r\n$T OK ID completed.\r\n",
            [PROTO_REPLY_LOGOUT] = "* BYE Logging out.\r\n$T OK LOGOUT "
                                   "completed.\r\n",
            [PROTO_REPLY_STARTTLS] = "$T OK Begin TLS negotiation now.\r\n",
            [PROTO_REPLY_STARTTLS_ARGS] = "$T BAD STARTTLS takes no "
                                          "arguments.\r\n",
            [PROTO_REPLY_PRIVACY] = "$T NO [PRIVACYREQUIRED] Cleartext "
                                    "authentication disallowed on non-secure "
                                    "(SSL/TLS) connections.\r\n",
            [PROTO_REPLY_NOT_YET] = "$T BAD Command not allowed before "
                                    "STARTTLS.\r\n",
            [PROTO_REPLY_BAD_TAG] = "* BAD Invalid tag.\r\n",
            [PROTO_REPLY_LITERAL_PRE_TLS] = "$T BAD Literals are not accepted "
                                            "before STARTTLS.\r\n",
            [PROTO_REPLY_LITERAL_NONSYNC] = "$T BAD Non-synchronizing literals "
                                            "are not supported.\r\n",
            [PROTO_REPLY_LITERAL_TOOBIG] = "$T BAD [TOOBIG] Non-synchronizing "
                                           "literal larger than 4096 "
                                           "octets.\r\n",
            [PROTO_REPLY_TLS_ACTIVE] = "$T BAD TLS is already active.\r\n",
            [PROTO_REPLY_PROTOCOL_ERROR] = "* BYE Protocol error: $R.\r\n",
            [PROTO_REPLY_UNAVAILABLE] = "* BYE [UNAVAILABLE] Backend server "
                                        "not available.\r\n",
            [PROTO_REPLY_SHUTDOWN] = "* BYE Server shutting down.\r\n",
            [PROTO_REPLY_BUSY] = "* BYE [UNAVAILABLE] Too many connections, "
                                 "try again later.\r\n",
            [PROTO_REPLY_CLIENT_BUSY] = "* BYE [UNAVAILABLE] Too many "
                                        "connections from your address, "
                                        "try again later.\r\n",
            [PROTO_REPLY_TIMEOUT] = "* BYE Disconnected for inactivity.\r\n",
        },
    [PROTO_POP3] =
        {
            [PROTO_REPLY_GREETING] = "+OK $G\r\n",
            [PROTO_REPLY_CAPABILITY] = "+OK Capability list follows\r\nCAPA\r\n"
                                       "STLS\r\n.\r\n",
            [PROTO_REPLY_LOGOUT] = "+OK Logging out.\r\n",
            [PROTO_REPLY_STARTTLS] = "+OK Begin TLS negotiation now.\r\n",
            [PROTO_REPLY_STARTTLS_ARGS] = "-ERR STLS takes no arguments.\r\n",
            [PROTO_REPLY_PRIVACY] = "-ERR [AUTH] Cleartext authentication "
                                    "disallowed on non-secure (SSL/TLS) "
                                    "connections.\r\n",
            [PROTO_REPLY_NOT_YET] = "-ERR Command not allowed before STLS.\r\n",
            [PROTO_REPLY_TLS_ACTIVE] = "-ERR TLS is already active.\r\n",
            [PROTO_REPLY_UNKNOWN] = "-ERR Unknown command.\r\n",
            [PROTO_REPLY_PROTOCOL_ERROR] = "-ERR Protocol error: $R.\r\n",
            [PROTO_REPLY_UNAVAILABLE] = "-ERR [SYS/TEMP] Backend server not "
                                        "available.\r\n",
            [PROTO_REPLY_SHUTDOWN] = "-ERR [SYS/TEMP] Server shutting "
                                     "down.\r\n",
            [PROTO_REPLY_BUSY] = "-ERR [SYS/TEMP] Too many connections, try "
                                 "again later.\r\n",
            [PROTO_REPLY_CLIENT_BUSY] = "-ERR [SYS/TEMP] Too many "
                                        "connections from your address, "
                                        "try again later.\r\n",
            [PROTO_REPLY_TIMEOUT] = "-ERR Disconnected for inactivity.\r\n",
        },
    [PROTO_SMTP] =
        {
            [PROTO_REPLY_GREETING] = "220 $N ESMTP $G\r\n",
            [PROTO_REPLY_CAPABILITY] = "250-$N\r\n250-PIPELINING\r\n"
                                       "250-ENHANCEDSTATUSCODES\r\n"
                                       "250 STARTTLS\r\n",
            [PROTO_REPLY_HELO] = "250 $N\r\n",
            [PROTO_REPLY_NOOP] = "250 2.0.0 Ok\r\n",
            [PROTO_REPLY_LOGOUT] = "221 2.0.0 Bye\r\n",
            [PROTO_REPLY_STARTTLS] = "220 2.0.0 Ready to start TLS\r\n",
            [PROTO_REPLY_STARTTLS_ARGS] = "501 5.5.4 Syntax: STARTTLS\r\n",
            [PROTO_REPLY_NOT_YET] = "530 5.7.0 Must issue a STARTTLS command "
                                    "first\r\n",
            [PROTO_REPLY_TLS_ACTIVE] = "554 5.5.1 Error: TLS already "
                                       "active\r\n",
            [PROTO_REPLY_TLS_UNAVAILABLE] = "454 4.7.0 TLS not available due "
                                            "to local problem\r\n",
            [PROTO_REPLY_NO_XCLIENT] = "550 5.7.0 Error: insufficient "
                                       "authorization\r\n",
            [PROTO_REPLY_NO_AUTH] = "503 5.5.1 Error: authentication not "
                                    "enabled\r\n",
            [PROTO_REPLY_SYNTAX_EHLO] = "501 5.5.4 Syntax: EHLO hostname\r\n",
            [PROTO_REPLY_SYNTAX_HELO] = "501 5.5.4 Syntax: HELO hostname\r\n",
            [PROTO_REPLY_BAD_SYNTAX] = "500 5.5.2 Error: bad syntax\r\n",
            [PROTO_REPLY_NOT_RECOGNIZED] = "502 5.5.2 Error: command not "
                                           "recognized\r\n",
            [PROTO_REPLY_PROTOCOL_ERROR] = "421 4.7.0 $N Protocol error: "
                                           "$R\r\n",
            /* RFC 3463: X.3.0 other mail system status, X.3.2 system not
             * accepting network messages, X.4.2 bad connection. */
            [PROTO_REPLY_UNAVAILABLE] = "421 4.3.0 $N Service not available, "
                                        "closing transmission channel\r\n",
            [PROTO_REPLY_SHUTDOWN] = "421 4.3.2 $N Service shutting down, "
                                     "closing transmission channel\r\n",
            [PROTO_REPLY_BUSY] = "421 4.3.2 $N Too many connections, try "
                                 "again later\r\n",
            /* Postfix's anvil: "421 4.7.0 host Error: too many
             * connections from ADDR"; the address is left out here. */
            [PROTO_REPLY_CLIENT_BUSY] = "421 4.7.0 $N Error: too many "
                                        "connections from your address\r\n",
            [PROTO_REPLY_TIMEOUT] = "421 4.4.2 $N Error: timeout exceeded\r\n",
        },
};

/* Appends p[0..n) at buf + *o if it fits in size; false if not. */
static bool
put(char *buf, size_t size, size_t *o, const char *p, size_t n)
{
	if (n > size - *o)
		return false;
	memcpy(buf + *o, p, n);
	*o += n;
	return true;
}

int
proto_reply_format(enum proto p, enum proto_reply r,
    const struct proto_reply_args *a, char *buf, size_t size)
{
	const char *t, *v;
	size_t o = 0, n;

	if ((unsigned)p >= PROTO_COUNT_ || (unsigned)r >= PROTO_REPLY_COUNT_ ||
	    replies[p][r] == NULL)
		return ERROR_SYNTAX;
	for (t = replies[p][r]; *t != '\0'; t++) {
		if (*t != '$') {
			if (!put(buf, size, &o, t, 1))
				return ERROR_TOO_LONG;
			continue;
		}
		t++;
		v = NULL;
		n = 0;
		switch (*t) {
		case 'T':
			v = a->tag;
			n = a->tag_len;
			break;
		case 'N':
			v = a->server_name;
			break;
		case 'G':
			v = a->greeting;
			break;
		case 'R':
			v = a->reason;
			break;
		default:
			assert(!"unknown template field");
			break;
		}
		if (v != NULL && *t != 'T')
			n = strlen(v);
		if (v != NULL && !put(buf, size, &o, v, n))
			return ERROR_TOO_LONG;
	}
	if (o > (size_t)INT32_MAX)
		return ERROR_TOO_LONG;
	return (int)o;
}

void
proto_out_reset(struct proto_out *o)
{
	o->event = PROTO_CONTINUE;
	o->to_client = NULL;
	o->to_client_len = 0;
	o->to_backend = NULL;
	o->to_backend_len = 0;
	o->end = PROTO_END_NONE;
	o->error = NULL;
	o->refused = false;
	o->text_len = 0;
}

char *
proto_text_room(struct proto_out *o, size_t *room_out)
{
	/* Text and a relayed slice never go together in one step. */
	assert(o->to_client == NULL || o->to_client == o->text);
	*room_out = sizeof(o->text) - o->text_len;
	return o->text + o->text_len;
}

void
proto_text_commit(struct proto_out *o, size_t n)
{
	assert(n <= sizeof(o->text) - o->text_len);
	o->text_len += n;
	o->to_client = o->text;
	o->to_client_len = o->text_len;
}

void
proto_say(struct proto_out *o, const struct proto_params *p, enum proto_reply r,
    const char *tag, size_t tag_len)
{
	struct proto_reply_args a = {p->server_name, p->greeting, tag, tag_len,
	    o->error};
	size_t room;
	char *at = proto_text_room(o, &room);
	int n = proto_reply_format(p->protocol, r, &a, at, room);

	/* The table is fixed and text is sized for it: a miss is a bug. */
	assert(n > 0);
	if (n > 0)
		proto_text_commit(o, (size_t)n);
}

void
proto_relay(struct proto_out *o, const char *p, size_t n)
{
	assert(o->to_client == NULL);
	if (n == 0)
		return;
	o->to_client = p;
	o->to_client_len = n;
}

void
proto_forward(struct proto_out *o, const char *p, size_t n)
{
	assert(o->to_backend == NULL);
	if (n == 0)
		return;
	o->to_backend = p;
	o->to_backend_len = n;
}

char *
proto_forward_room(struct proto_out *o, size_t *room_out)
{
	/* The text is the backend's alone in such a step. */
	assert(
	    o->to_client == NULL && o->text_len == 0 && o->to_backend == NULL);
	*room_out = sizeof(o->text);
	return o->text;
}

void
proto_forward_commit(struct proto_out *o, size_t n)
{
	assert(n <= sizeof(o->text));
	o->text_len = n;
	o->to_backend = o->text;
	o->to_backend_len = n;
}

void
proto_close(struct proto_out *o, const struct proto_params *p,
    enum proto_end end, const char *reason)
{
	o->error = reason;
	if (end == PROTO_END_PROTOCOL)
		proto_say(o, p, PROTO_REPLY_PROTOCOL_ERROR, NULL, 0);
	o->end = end;
	o->event = PROTO_CLOSE;
}

void
proto_unavailable(struct proto_out *o, const struct proto_params *p,
    const char *reason)
{
	proto_say(o, p, PROTO_REPLY_UNAVAILABLE, NULL, 0);
	o->end = PROTO_END_BACKEND;
	o->error = reason;
	o->event = PROTO_CLOSE;
}

size_t
proto_client_line(struct proto_out *o, const struct proto_params *p,
    const char *in, size_t len, size_t max)
{
	long n = proto_line_find(in, len, max, true);

	if (n == PROTO_LINE_BARE)
		proto_close(o, p, PROTO_END_PROTOCOL,
		    "bare CR, LF or NUL in command line");
	else if (n == PROTO_LINE_TOO_LONG)
		proto_close(o, p, PROTO_END_PROTOCOL, "command line too long");
	return n > 0 ? (size_t)n : 0;
}

void
proto_greet(void *st, const struct proto_params *p, struct proto_out *o)
{
	(void)st;
	proto_say(o, p, PROTO_REPLY_GREETING, NULL, 0);
}
