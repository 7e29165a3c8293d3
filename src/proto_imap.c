/*
 * IMAP until LOGIN or AUTHENTICATE succeeds (RFC 9051, RFC 3501, RFC 2595,
 * RFC 7888). Before TLS mailproxy answers from its templates; after TLS
 * each command goes to the backend alone and its tagged reply is awaited,
 * with literals and SASL lines passed through unparsed. Replies are
 * Dovecot's words where Dovecot has some (proto.c).
 *
 * Pure: no I/O, no allocation. Must not: forward a client byte it has not
 * framed, or let literal octets be read as commands.
 */
#include "mailproxy/proto_imap.h"

#include <string.h>
#include <strings.h>

#include "mailproxy/proto_line.h"

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
		if (line[i] < '0' || line[i] > '9' || v > PROTO_LITERAL_MAX)
			return LIT_BAD;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v > PROTO_LITERAL_MAX)
		return LIT_BAD;
	*size = v;
	return plus ? LIT_NONSYNC : LIT_SYNC;
}

/* One client line's length, or 0 (see proto_client_line). */
static size_t
client_line(const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	return proto_client_line(o, p, in, len, PROTO_IMAP_LINE_MAX);
}

/* A command line, taken apart. */
struct command {
	size_t n;   /* the line, CRLF included */
	size_t end; /* the line without its CRLF */
	enum literal lit;
	uint64_t size; /* of lit */
	const char *tag;
	size_t tl; /* 0: not a valid tag */
	const char *cmd;
	size_t cl;
	const char *args;
	size_t al;
};

static bool
read_command(const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o, struct command *c)
{
	size_t pos, tl;

	memset(c, 0, sizeof(*c));
	c->n = client_line(p, in, len, o);
	if (c->n == 0)
		return false;
	c->end = proto_line_chomp(in, c->n);
	c->lit = trailing_literal(in, c->end, &c->size);
	for (tl = 0; tl < c->end && tag_char((unsigned char)in[tl]); tl++)
		;
	if (tl == 0 || tl >= sizeof(((struct proto_imap *)0)->tag) ||
	    tl == c->end || in[tl] != ' ')
		return true;
	c->tag = in;
	c->tl = tl;
	pos = tl + proto_line_spaces(in + tl, c->end - tl);
	c->cmd = in + pos;
	c->cl = proto_line_word_len(c->cmd, c->end - pos);
	pos += c->cl;
	pos += proto_line_spaces(in + pos, c->end - pos);
	c->args = in + pos;
	c->al = c->end - pos;
	return true;
}

static bool
command_is(const struct command *c, const char *w)
{
	return proto_line_word_is(c->cmd, c->cl, w);
}

/* A refused command: its answer, counted. */
static void
refuse(struct proto_out *o, const struct proto_params *p, enum proto_reply r,
    const struct command *c)
{
	proto_say(o, p, r, c->tag, c->tl);
	o->refused = true;
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

/* Before TLS: every command is answered by mailproxy. */
static size_t
plain(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct command c;

	(void)v;
	if (!read_command(p, in, len, o, &c))
		return 0;
	if (c.lit == LIT_BAD) {
		proto_close(o, p, PROTO_END_PROTOCOL, "bad literal");
	} else if (c.lit == LIT_NONSYNC) {
		/* Its octets follow unasked: nothing before TLS may be
		 * read as data. */
		proto_close(o, p, PROTO_END_PROTOCOL,
		    "literal before STARTTLS");
	} else if (c.tl == 0) {
		refuse(o, p, PROTO_REPLY_BAD_TAG, &c);
	} else if (c.lit == LIT_SYNC) {
		/* No "+": the client sends nothing more for it. */
		refuse(o, p, PROTO_REPLY_LITERAL_PRE_TLS, &c);
	} else if (command_is(&c, "CAPABILITY")) {
		proto_say(o, p, PROTO_REPLY_CAPABILITY, c.tag, c.tl);
	} else if (command_is(&c, "NOOP")) {
		proto_say(o, p, PROTO_REPLY_NOOP, c.tag, c.tl);
	} else if (command_is(&c, "ID")) {
		proto_say(o, p, PROTO_REPLY_ID, c.tag, c.tl);
	} else if (command_is(&c, "LOGOUT")) {
		proto_say(o, p, PROTO_REPLY_LOGOUT, c.tag, c.tl);
		proto_close(o, p, PROTO_END_QUIT, NULL);
	} else if (command_is(&c, "STARTTLS")) {
		if (c.al > 0) {
			refuse(o, p, PROTO_REPLY_STARTTLS_ARGS, &c);
		} else {
			proto_say(o, p, PROTO_REPLY_STARTTLS, c.tag, c.tl);
			o->event = PROTO_STARTTLS;
		}
	} else if (command_is(&c, "LOGIN") || command_is(&c, "AUTHENTICATE")) {
		refuse(o, p, PROTO_REPLY_PRIVACY, &c);
	} else {
		refuse(o, p, PROTO_REPLY_NOT_YET, &c);
	}
	return c.n;
}

static void
tls(void *v)
{
	(void)v; /* Nothing was kept from before TLS. */
}

/* The span of the capability list in a backend line ("* CAPABILITY ..."
 * or a "[CAPABILITY ...]" response code); false when there is none. */
static bool
cap_list(const char *line, size_t end, size_t *start_out, size_t *stop_out)
{
	size_t start, stop;

	if (end > 13 && strncasecmp(line, "* CAPABILITY ", 13) == 0) {
		*start_out = 13;
		*stop_out = end;
		return true;
	}
	for (start = 0; start + 12 <= end; start++) {
		if (strncasecmp(line + start, "[CAPABILITY ", 12) == 0) {
			start += 12;
			for (stop = start; stop < end && line[stop] != ']';
			     stop++)
				;
			*start_out = start;
			*stop_out = stop;
			return true;
		}
	}
	return false;
}

/* Remembers what the backend's latest capability list says about
 * non-synchronising literals (IMAP4rev2 has LITERAL-, RFC 9051 §4.3). */
static void
note_caps(struct proto_imap *st, const char *caps, size_t n)
{
	st->literal_plus = proto_line_has_token(caps, n, "LITERAL+");
	st->literal_minus = proto_line_has_token(caps, n, "LITERAL-") ||
	    proto_line_has_token(caps, n, "IMAP4rev2");
}

/* Relays a backend line with STARTTLS and friends taken out of its
 * capability list, if it has one. */
static void
relay_line(struct proto_imap *st, const char *line, size_t n,
    struct proto_out *o)
{
	size_t end = proto_line_chomp(line, n), start, stop, room, w;
	char *out;

	if (!cap_list(line, end, &start, &stop)) {
		proto_relay(o, line, n);
		return;
	}
	note_caps(st, line + start, stop - start);
	out = proto_text_room(o, &room);
	memcpy(out, line, start);
	w = start +
	    proto_line_filter_caps(line + start, stop - start, out + start,
	        false);
	memcpy(out + w, line + stop, n - stop);
	proto_text_commit(o, w + n - stop);
}

static size_t
greeting(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_imap *st = v;
	long ln = proto_line_find(in, len, PROTO_BACKEND_LINE_MAX, false);
	size_t n, start, stop;

	if (ln < 0) {
		proto_unavailable(o, p, "backend line too long");
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	if (n >= 5 && strncasecmp(in, "* OK ", 5) == 0) {
		/* On a STARTTLS listener the client has mailproxy's; its
		 * capabilities still count. */
		if (!p->starttls)
			relay_line(st, in, n, o);
		else if (cap_list(in, proto_line_chomp(in, n), &start, &stop))
			note_caps(st, in + start, stop - start);
		o->event = PROTO_GREETED;
	} else if (n >= 10 && strncasecmp(in, "* PREAUTH ", 10) == 0) {
		/* Logged in without credentials: a misconfigured backend,
		 * and the NO STARTTLS downgrade. Never relayed. */
		proto_unavailable(o, p, "backend greeting is PREAUTH");
	} else if (n >= 6 && strncasecmp(in, "* BYE ", 6) == 0) {
		proto_relay(o, in, n);
		proto_close(o, p, PROTO_END_BACKEND, "backend greeting is BYE");
	} else {
		proto_unavailable(o, p, "backend greeting not IMAP");
	}
	return n;
}

/* A command mailproxy answered after TLS still owns the literal it
 * announced with {n+} (RFC 7888: the server reads it): its octets and the
 * rest of its line are dropped, never read as commands. A {n} gets no
 * "+", so the client sends nothing more for it. */
static void
swallow(struct proto_imap *st, enum literal lit, uint64_t size)
{
	if (lit != LIT_NONSYNC) {
		st->swallow = false;
		st->state = PROTO_IMAP_READY;
		return;
	}
	st->swallow = true;
	st->client_left = size;
	st->state = size > 0 ? PROTO_IMAP_LITERAL : PROTO_IMAP_REST;
}

/*
 * Forwards a line that ends in a non-synchronising literal "{n+}" as a
 * synchronising one, "{n}", and waits for the backend's "+". Only a
 * parser that got as far as the literal sends it: one that stopped at an
 * error before (Dovecot answers BAD and skips to the end of the line)
 * would take the octets, already on their way, for its next command,
 * which mailproxy would have forwarded unread (an ID that poses as the
 * client's address, say). The backend's BAD instead makes mailproxy drop
 * them, as the client meant them: the command's data.
 */
static void
forward_synchronised(struct proto_imap *st, const char *line, size_t n,
    uint64_t size, struct proto_out *o)
{
	size_t end = proto_line_chomp(line, n), room;
	char *out = proto_forward_room(o, &room);

	/* line[end - 2] is the '+' of "{n+}". */
	memcpy(out, line, end - 2);
	memcpy(out + end - 2, line + end - 1, n - end + 1);
	proto_forward_commit(o, n - 1);
	st->literal = size;
	st->literal_wait = true;
	st->converted = true;
	st->state = PROTO_IMAP_WAIT;
}

/* The command line (or what follows a literal) went to the backend: a
 * literal at its end decides what comes next. */
static void
after_line(struct proto_imap *st, enum literal lit, uint64_t size)
{
	if (lit == LIT_SYNC) {
		st->literal = size;
		st->literal_wait = true;
		st->state = PROTO_IMAP_WAIT;
	} else if (lit == LIT_NONSYNC) {
		st->client_left = size;
		st->state = size > 0 ? PROTO_IMAP_LITERAL : PROTO_IMAP_REST;
	} else {
		st->state = PROTO_IMAP_WAIT;
	}
}

/*
 * Whether a {n+} may go to the backend: only as the backend's own
 * capabilities allow (RFC 7888). Otherwise the backend would take the
 * octets for commands: the command is answered BAD and the session
 * closed.
 */
static bool
nonsync_allowed(const struct proto_imap *st, const struct proto_params *p,
    const char *tag, size_t tl, uint64_t size, struct proto_out *o)
{
	if (st->literal_plus ||
	    (st->literal_minus && size <= PROTO_LITERAL_MINUS_MAX))
		return true;
	proto_say(o, p,
	    st->literal_minus ? PROTO_REPLY_LITERAL_TOOBIG :
	                        PROTO_REPLY_LITERAL_NONSYNC,
	    tag, tl);
	proto_close(o, p, PROTO_END_PROTOCOL,
	    "non-synchronizing literal the backend does not accept");
	return false;
}

static size_t
command(struct proto_imap *st, const struct proto_params *p, const char *in,
    size_t len, struct proto_out *o)
{
	struct command c;

	if (!read_command(p, in, len, o, &c))
		return 0;
	if (c.lit == LIT_BAD) {
		proto_close(o, p, PROTO_END_PROTOCOL,
		    "bad or too large literal");
		return c.n;
	}
	if (c.tl == 0) {
		refuse(o, p, PROTO_REPLY_BAD_TAG, &c);
		swallow(st, c.lit, c.size);
		return c.n;
	}
	if (command_is(&c, "STARTTLS")) {
		refuse(o, p, PROTO_REPLY_TLS_ACTIVE, &c);
		swallow(st, c.lit, c.size);
		return c.n;
	}
	if (command_is(&c, "ID") && id_overrides(c.args, c.al)) {
		refuse(o, p, PROTO_REPLY_ID, &c);
		swallow(st, c.lit, c.size);
		return c.n;
	}
	if (c.lit == LIT_NONSYNC &&
	    !nonsync_allowed(st, p, c.tag, c.tl, c.size, o))
		return c.n;
	st->auth = command_is(&c, "LOGIN") || command_is(&c, "AUTHENTICATE");
	memcpy(st->tag, c.tag, c.tl);
	st->tag_len = c.tl;
	st->swallow = false;
	if (c.lit == LIT_NONSYNC) {
		forward_synchronised(st, in, c.n, c.size, o);
		return c.n;
	}
	proto_forward(o, in, c.n);
	after_line(st, c.lit, c.size);
	return c.n;
}

static size_t
client(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_imap *st = v;
	enum literal lit;
	uint64_t size = 0;
	size_t n;

	switch (st->state) {
	case PROTO_IMAP_READY:
		return command(st, p, in, len, o);
	case PROTO_IMAP_LITERAL:
		n = len < st->client_left ? len : (size_t)st->client_left;
		if (!st->swallow)
			proto_forward(o, in, n);
		st->client_left -= n;
		if (st->client_left == 0)
			st->state = PROTO_IMAP_REST;
		return n;
	case PROTO_IMAP_MORE:
		/* A SASL response: data, never a command. */
		n = client_line(p, in, len, o);
		if (n == 0)
			return 0;
		proto_forward(o, in, n);
		st->state = PROTO_IMAP_WAIT;
		return n;
	case PROTO_IMAP_REST:
		n = client_line(p, in, len, o);
		if (n == 0)
			return 0;
		lit = trailing_literal(in, proto_line_chomp(in, n), &size);
		if (lit == LIT_BAD) {
			proto_close(o, p, PROTO_END_PROTOCOL,
			    "bad or too large literal");
			return n;
		}
		if (st->swallow) {
			swallow(st, lit, size);
			return n;
		}
		if (lit == LIT_NONSYNC) {
			if (nonsync_allowed(st, p, st->tag, st->tag_len, size,
			        o))
				forward_synchronised(st, in, n, size, o);
			return n;
		}
		proto_forward(o, in, n);
		after_line(st, lit, size);
		return n;
	case PROTO_IMAP_WAIT:
		break;
	}
	return 0;
}

static size_t
backend(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_imap *st = v;
	uint64_t size = 0;
	size_t n, end;
	long ln;
	bool rest;

	if (st->backend_left > 0) {
		n = len < st->backend_left ? len : (size_t)st->backend_left;
		proto_relay(o, in, n);
		st->backend_left -= n;
		return n;
	}
	ln = proto_line_find(in, len, PROTO_BACKEND_LINE_MAX, false);
	if (ln < 0) {
		proto_unavailable(o, p, "backend line too long");
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	end = proto_line_chomp(in, n);
	rest = st->backend_rest;
	st->backend_rest = false;
	if (trailing_literal(in, end, &size) == LIT_SYNC) {
		/* Its octets go through as they are; the line goes on. */
		st->backend_left = size;
		st->backend_rest = true;
	}
	if (rest) {
		proto_relay(o, in, n);
		return n;
	}
	if (in[0] == '+' && st->state == PROTO_IMAP_WAIT) {
		/* A client that sent {n+} asked for no "+". */
		if (!st->converted)
			proto_relay(o, in, n);
		if (st->literal_wait) {
			st->literal_wait = false;
			st->converted = false;
			st->client_left = st->literal;
			st->state = st->literal > 0 ? PROTO_IMAP_LITERAL :
			                              PROTO_IMAP_REST;
		} else {
			/* AUTHENTICATE's challenge: one SASL line back. */
			st->state = PROTO_IMAP_MORE;
		}
		return n;
	}
	relay_line(st, in, n, o);
	if (st->state == PROTO_IMAP_WAIT && st->tag_len > 0 &&
	    end > st->tag_len && memcmp(in, st->tag, st->tag_len) == 0 &&
	    in[st->tag_len] == ' ') {
		if (st->literal_wait && st->converted) {
			/* Refused before its literal: the octets the
			 * client sent unasked, and the rest of its line,
			 * are the command's, not commands. */
			st->literal_wait = st->converted = false;
			swallow(st, LIT_NONSYNC, st->literal);
			return n;
		}
		st->literal_wait = false;
		if (st->auth && end >= st->tag_len + 3 &&
		    strncasecmp(in + st->tag_len + 1, "OK", 2) == 0 &&
		    (end == st->tag_len + 3 || in[st->tag_len + 3] == ' ')) {
			o->event = PROTO_OPAQUE;
			return n;
		}
		st->state = PROTO_IMAP_READY;
	}
	return n;
}

static enum proto_wait
wait(const void *v)
{
	const struct proto_imap *st = v;

	return st->state == PROTO_IMAP_WAIT ? PROTO_WAIT_BACKEND :
	                                      PROTO_WAIT_CLIENT;
}

static bool
mid_reply(const void *v)
{
	const struct proto_imap *st = v;

	return st->backend_left > 0 || st->backend_rest;
}

const struct proto_ops proto_imap_ops = {
    .greet = proto_greet,
    .plain = plain,
    .tls = tls,
    .greeting = greeting,
    .client = client,
    .backend = backend,
    .wait = wait,
    .mid_reply = mid_reply,
    .state_size = sizeof(struct proto_imap),
};
