/*
 * IMAP until LOGIN or AUTHENTICATE succeeds (RFC 9051, RFC 3501, RFC 2595,
 * RFC 7888). Before TLS mailproxy answers from its template; after TLS
 * each command goes to the backend alone and its tagged reply is awaited,
 * with literals and SASL lines passed through unparsed. Replies are
 * Dovecot's words where Dovecot has some.
 *
 * Pure: no I/O.
 */
#include <string.h>
#include <strings.h>

#include "dialog_impl.h"

#define CAPS_PRE "IMAP4rev1 STARTTLS LOGINDISABLED"

void
imap_start(struct dialog *d, const struct dialog_sink *sink)
{
	dialog_say(sink, "* OK [CAPABILITY " CAPS_PRE "] %s\r\n",
	    d->p->greeting);
}

/* RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">. */
static bool
tag_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\+", c) == NULL;
}

enum literal {
	LIT_NONE,
	LIT_SYNC,
	LIT_NONSYNC,
	LIT_BAD
};

/* A literal announced at the end of line[0..n) ({123} or {123+}). */
static enum literal
trailing_literal(const char *line, size_t n, uint64_t *size)
{
	size_t i, open;
	bool plus = false;
	uint64_t v = 0;

	if (n == 0 || line[n - 1] != '}')
		return LIT_NONE;
	open = n - 1;
	while (open > 0 && line[open - 1] != '{' && n - open < 24)
		open--;
	if (open == 0 || line[open - 1] != '{')
		return LIT_NONE;
	/* A literal starts an argument. Dovecot refuses "x{5+}" and then
	 * reads its octets as the next command, which mailproxy would have
	 * forwarded unread. */
	if (open < 2 || (line[open - 2] != ' ' && line[open - 2] != '('))
		return LIT_BAD;
	i = open;
	if (i < n - 1 && line[n - 2] == '+')
		plus = true;
	if (i == n - 1 - plus)
		return LIT_BAD;
	for (; i < n - 1 - plus; i++) {
		if (line[i] < '0' || line[i] > '9' || v > DIALOG_LITERAL_MAX)
			return LIT_BAD;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v > DIALOG_LITERAL_MAX)
		return LIT_BAD;
	*size = v;
	return plus ? LIT_NONSYNC : LIT_SYNC;
}

/* Reads one client line; 0 with *ev untouched when more is needed. */
static long
client_line(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long n = dialog_line(in, len, DIALOG_IMAP_LINE_MAX, true);

	if (n == LINE_BARE)
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "bare CR, LF or NUL in command line", ev);
	else if (n == LINE_TOO_LONG)
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "command line too long", ev);
	return n;
}

/* Whether the string starting at p[0..n) reads "x-" once unescaped:
 * Dovecot drops a backslash before any character of a quoted string. */
static bool
starts_x(const char *p, size_t n, bool quoted)
{
	char c[2];
	size_t i = 0, k = 0;

	while (k < 2 && i < n) {
		if (quoted && p[i] == '"')
			return false;
		if (quoted && p[i] == '\\' && i + 1 < n)
			i++;
		c[k++] = p[i++];
	}
	return k == 2 && (c[0] == 'x' || c[0] == 'X') && c[1] == '-';
}

/* An ID whose fields could pose as the client's address to Dovecot
 * (x-originating-ip and friends), quoted, as an atom, or in a literal
 * mailproxy cannot see into. */
static bool
id_overrides(const char *p, size_t n)
{
	size_t i;
	bool start = true;

	for (i = 0; i < n; i++) {
		if (p[i] == '{')
			return true;
		if (p[i] == '"') {
			if (starts_x(p + i + 1, n - i - 1, true))
				return true;
			for (i++; i < n && p[i] != '"'; i++)
				if (p[i] == '\\')
					i++;
			start = false;
			continue;
		}
		if (start && starts_x(p + i, n - i, false))
			return true;
		start = p[i] == ' ' || p[i] == '(';
	}
	return false;
}

static void
pre_tls(struct dialog *d, const char *tag, size_t tl, const char *cmd,
    size_t cl, size_t al, const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (dialog_word_is(cmd, cl, "CAPABILITY")) {
		dialog_say(sink,
		    "* CAPABILITY " CAPS_PRE "\r\n%.*s OK CAPABILITY "
		    "completed.\r\n",
		    (int)tl, tag);
	} else if (dialog_word_is(cmd, cl, "NOOP")) {
		dialog_say(sink, "%.*s OK NOOP completed.\r\n", (int)tl, tag);
	} else if (dialog_word_is(cmd, cl, "ID")) {
		dialog_say(sink, "* ID NIL\r\n%.*s OK ID completed.\r\n",
		    (int)tl, tag);
	} else if (dialog_word_is(cmd, cl, "LOGOUT")) {
		dialog_say(sink,
		    "* BYE Logging out.\r\n%.*s OK LOGOUT "
		    "completed.\r\n",
		    (int)tl, tag);
		dialog_fail(d, sink, DIALOG_END_QUIT, NULL, ev);
	} else if (dialog_word_is(cmd, cl, "STARTTLS")) {
		if (al > 0) {
			dialog_say(sink,
			    "%.*s BAD STARTTLS takes no arguments.\r\n",
			    (int)tl, tag);
			dialog_refused(d, sink, ev);
			return;
		}
		dialog_say(sink, "%.*s OK Begin TLS negotiation now.\r\n",
		    (int)tl, tag);
		d->phase = PH_HANDSHAKE;
		*ev = DIALOG_STARTTLS;
	} else if (dialog_word_is(cmd, cl, "LOGIN") ||
	    dialog_word_is(cmd, cl, "AUTHENTICATE")) {
		dialog_say(sink,
		    "%.*s NO [PRIVACYREQUIRED] Cleartext authentication "
		    "disallowed on non-secure (SSL/TLS) connections.\r\n",
		    (int)tl, tag);
		dialog_refused(d, sink, ev);
	} else {
		dialog_say(sink,
		    "%.*s BAD Command not allowed before STARTTLS.\r\n",
		    (int)tl, tag);
		dialog_refused(d, sink, ev);
	}
}

/* After TLS: forwards the command (true), or answers it. */
static bool
post_tls(struct dialog *d, const char *line, size_t n, const char *tag,
    size_t tl, const char *cmd, size_t cl, const char *args, size_t al,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (dialog_word_is(cmd, cl, "STARTTLS")) {
		dialog_say(sink, "%.*s BAD TLS is already active.\r\n", (int)tl,
		    tag);
		dialog_refused(d, sink, ev);
		return false;
	}
	if (dialog_word_is(cmd, cl, "ID") && id_overrides(args, al)) {
		dialog_say(sink, "* ID NIL\r\n%.*s OK ID completed.\r\n",
		    (int)tl, tag);
		dialog_refused(d, sink, ev);
		return false;
	}
	d->cmd = CMD_OTHER;
	if (dialog_word_is(cmd, cl, "LOGIN") ||
	    dialog_word_is(cmd, cl, "AUTHENTICATE"))
		d->cmd = CMD_AUTH;
	memcpy(d->tag, tag, tl);
	d->tag_len = tl;
	dialog_to_backend(sink, line, n);
	d->phase = PH_WAIT;
	return true;
}

/* A command answered by mailproxy after TLS still owns the literal it
 * announced with {n+} (RFC 7888: the server reads it): its octets and
 * the rest of its line are dropped, never read as commands. A {n} gets no
 * "+", so the client sends nothing more for it. */
static void
swallow(struct dialog *d, enum literal lit, uint64_t size)
{
	if (d->phase == PH_DONE)
		return;
	if (lit != LIT_NONSYNC) {
		d->swallow = false;
		if (d->phase == PH_REST)
			d->phase = PH_READY;
		return;
	}
	d->swallow = true;
	d->client_left = size;
	d->phase = size > 0 ? PH_LITERAL : PH_REST;
}

/* The command line (or what follows a literal) has been forwarded or
 * answered: a literal at its end decides what comes next. */
static void
after_line(struct dialog *d, enum literal lit, uint64_t size)
{
	if (lit == LIT_SYNC) {
		d->literal = size;
		d->literal_wait = true;
		d->phase = PH_WAIT;
	} else if (lit == LIT_NONSYNC) {
		d->client_left = size;
		d->phase = size > 0 ? PH_LITERAL : PH_REST;
	} else {
		d->phase = PH_WAIT;
	}
}

static size_t
command(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln = client_line(d, in, len, sink, ev);
	size_t n, end, tl, cl, pos, al;
	enum literal lit;
	uint64_t size = 0;
	const char *cmd, *args;

	if (ln <= 0)
		return 0;
	n = (size_t)ln;
	end = dialog_chomp(in, n);
	lit = trailing_literal(in, end, &size);
	if (lit == LIT_BAD) {
		if (d->phase == PH_PRE_TLS)
			dialog_fail(d, sink, DIALOG_END_PROTOCOL, "bad literal",
			    ev);
		else
			dialog_fail(d, sink, DIALOG_END_PROTOCOL,
			    "bad or too large literal", ev);
		return n;
	}
	if (d->phase == PH_PRE_TLS && lit == LIT_NONSYNC) {
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "literal before STARTTLS", ev);
		return n;
	}
	for (tl = 0; tl < end && tag_char((unsigned char)in[tl]); tl++)
		;
	if (tl == 0 || tl >= sizeof(d->tag) || tl == end || in[tl] != ' ') {
		dialog_say(sink, "* BAD Invalid tag.\r\n");
		dialog_refused(d, sink, ev);
		swallow(d, lit, size);
		return n;
	}
	pos = tl + dialog_spaces(in + tl, end - tl);
	cmd = in + pos;
	cl = dialog_word_len(cmd, end - pos);
	pos += cl;
	pos += dialog_spaces(in + pos, end - pos);
	args = in + pos;
	al = end - pos;
	if (d->phase == PH_PRE_TLS) {
		if (lit == LIT_SYNC) {
			dialog_say(sink,
			    "%.*s BAD Literals are not accepted before "
			    "STARTTLS.\r\n",
			    (int)tl, in);
			dialog_refused(d, sink, ev);
		} else {
			pre_tls(d, in, tl, cmd, cl, al, sink, ev);
		}
		return n;
	}
	if (post_tls(d, in, n, in, tl, cmd, cl, args, al, sink, ev))
		after_line(d, lit, size);
	else
		swallow(d, lit, size);
	return n;
}

size_t
imap_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	size_t n;
	long ln;
	enum literal lit;
	uint64_t size = 0;

	switch (d->phase) {
	case PH_PRE_TLS:
	case PH_READY:
		return command(d, in, len, sink, ev);
	case PH_LITERAL:
		n = len < d->client_left ? len : (size_t)d->client_left;
		if (!d->swallow)
			dialog_to_backend(sink, in, n);
		d->client_left -= n;
		if (d->client_left == 0)
			d->phase = PH_REST;
		return n;
	case PH_REST:
	case PH_MORE:
		ln = client_line(d, in, len, sink, ev);
		if (ln <= 0)
			return 0;
		n = (size_t)ln;
		if (!d->swallow)
			dialog_to_backend(sink, in, n);
		if (d->phase == PH_MORE) {
			/* A SASL response: data, never a command. */
			d->phase = PH_WAIT;
			return n;
		}
		lit = trailing_literal(in, dialog_chomp(in, n), &size);
		if (lit == LIT_BAD) {
			dialog_fail(d, sink, DIALOG_END_PROTOCOL,
			    "bad or too large literal", ev);
			return n;
		}
		if (d->swallow)
			swallow(d, lit, size);
		else
			after_line(d, lit, size);
		return n;
	case PH_HANDSHAKE:
	case PH_GREETING:
	case PH_REPLAY:
	case PH_WAIT:
	case PH_DONE:
		break;
	}
	return 0;
}

/* Relays a backend line with STARTTLS and friends taken out of its
 * capability list ("* CAPABILITY ..." or a "[CAPABILITY ...]" code). */
static void
relay_line(const char *line, size_t n, const struct dialog_sink *sink)
{
	char out[DIALOG_BACKEND_LINE_MAX];
	size_t end = dialog_chomp(line, n), start, stop, o;
	const char *p;

	if (end > 13 && strncasecmp(line, "* CAPABILITY ", 13) == 0) {
		start = 13;
		stop = end;
	} else {
		p = NULL;
		for (start = 0; start + 12 <= end; start++) {
			if (strncasecmp(line + start, "[CAPABILITY ", 12) ==
			    0) {
				p = line + start;
				break;
			}
		}
		if (p == NULL) {
			dialog_to_client(sink, line, n);
			return;
		}
		start += 12;
		for (stop = start; stop < end && line[stop] != ']'; stop++)
			;
	}
	memcpy(out, line, start);
	o = start +
	    dialog_filter_caps(line + start, stop - start, out + start, false);
	memcpy(out + o, line + stop, n - stop);
	dialog_to_client(sink, out, o + n - stop);
}

static size_t
greeting(struct dialog *d, const char *line, size_t n,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (n >= 5 && strncasecmp(line, "* OK ", 5) == 0) {
		/* On a STARTTLS listener the client has mailproxy's. */
		if (!d->p->starttls)
			relay_line(line, n, sink);
		d->phase = PH_READY;
		return n;
	}
	if (n >= 10 && strncasecmp(line, "* PREAUTH ", 10) == 0) {
		/* Logged in without credentials: a misconfigured backend,
		 * and the NO STARTTLS downgrade. Never relayed. */
		dialog_say(sink,
		    "* BYE [UNAVAILABLE] Backend server not available.\r\n");
		dialog_fail(d, sink, DIALOG_END_BACKEND,
		    "backend greeting is PREAUTH", ev);
		return n;
	}
	if (n >= 6 && strncasecmp(line, "* BYE ", 6) == 0) {
		dialog_to_client(sink, line, n);
		dialog_fail(d, sink, DIALOG_END_BACKEND,
		    "backend greeting is BYE", ev);
		return n;
	}
	dialog_say(sink,
	    "* BYE [UNAVAILABLE] Backend server not available.\r\n");
	dialog_fail(d, sink, DIALOG_END_BACKEND, "backend greeting not IMAP",
	    ev);
	return n;
}

size_t
imap_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln;
	size_t n, end;
	uint64_t size = 0;
	bool rest;

	if (d->backend_left > 0) {
		n = len < d->backend_left ? len : (size_t)d->backend_left;
		dialog_to_client(sink, in, n);
		d->backend_left -= n;
		return n;
	}
	if (d->phase == PH_PRE_TLS || d->phase == PH_HANDSHAKE)
		return 0;
	ln = dialog_line(in, len, DIALOG_BACKEND_LINE_MAX, false);
	if (ln < 0) {
		dialog_say(sink,
		    "* BYE [UNAVAILABLE] Backend server not available.\r\n");
		dialog_fail(d, sink, DIALOG_END_BACKEND,
		    "backend line too long", ev);
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	if (d->phase == PH_GREETING)
		return greeting(d, in, n, sink, ev);
	end = dialog_chomp(in, n);
	rest = d->backend_rest;
	d->backend_rest = false;
	if (trailing_literal(in, end, &size) == LIT_SYNC) {
		/* Its octets go through as they are; the line goes on. */
		d->backend_left = size;
		d->backend_rest = true;
	}
	if (rest) {
		dialog_to_client(sink, in, n);
		return n;
	}
	if (n >= 1 && in[0] == '+' && d->phase == PH_WAIT) {
		dialog_to_client(sink, in, n);
		if (d->literal_wait) {
			d->literal_wait = false;
			d->client_left = d->literal;
			d->phase = d->literal > 0 ? PH_LITERAL : PH_REST;
		} else {
			/* AUTHENTICATE's challenge: one SASL line back. */
			d->phase = PH_MORE;
		}
		return n;
	}
	relay_line(in, n, sink);
	if (d->phase == PH_WAIT && d->tag_len > 0 && end > d->tag_len &&
	    memcmp(in, d->tag, d->tag_len) == 0 && in[d->tag_len] == ' ') {
		d->literal_wait = false;
		if (d->cmd == CMD_AUTH && end >= d->tag_len + 3 &&
		    strncasecmp(in + d->tag_len + 1, "OK", 2) == 0 &&
		    (end == d->tag_len + 3 || in[d->tag_len + 3] == ' ')) {
			dialog_opaque(d, ev);
			return n;
		}
		d->phase = PH_READY;
	}
	return n;
}
