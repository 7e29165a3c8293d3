/*
 * SMTP until AUTH succeeds (RFC 5321, RFC 3207, RFC 4954, RFC 3030, RFC
 * 2920). Before TLS mailproxy answers alone in Postfix's words; after TLS
 * (or in plaintext on a starttls = optional listener, once the backend is
 * connected) each command goes to the backend alone and its whole reply is
 * awaited, EHLO replies rewritten. MAIL is not an authentication: until a
 * 235 to AUTH, every command line is checked, DATA and BDAT included,
 * whose octets are followed exactly so that none of them is read as a
 * command and no command passes as message octets.
 *
 * Pure: no I/O, no allocation. Must not: forward a client byte it has not
 * framed, or accept an end of DATA the backend might read differently.
 */
#include "mailproxy/proto_smtp.h"

#include <string.h>
#include <strings.h>

#include "mailproxy/proto_line.h"

/*
 * One client line's length; 0 when more is needed, or when the line is
 * broken (then o closes the dialogue). A line is at most
 * PROTO_SMTP_LINE_MAX long, except AUTH and SASL lines (sasl).
 */
static size_t
client_line(const struct proto_params *p, const char *in, size_t len, bool sasl,
    struct proto_out *o)
{
	size_t n = proto_client_line(o, p, in, len, PROTO_SMTP_AUTH_MAX);

	if (n > PROTO_SMTP_LINE_MAX && !sasl &&
	    !proto_line_word_is(in, proto_line_word_len(in, n), "AUTH")) {
		proto_close(o, p, PROTO_END_PROTOCOL, "command line too long");
		return 0;
	}
	return n;
}

/* A verb as RFC 5321 writes it: letters, digits and '-', then a space or
 * the line end. Postfix also reads quotes, backslashes, tabs and leading
 * blanks, so " STARTTLS" or "\"XCLIENT\"" would be the verb to it and
 * not to a plain comparison: before authentication such lines are
 * refused, never forwarded. */
static bool
verb_ok(const char *cmd, size_t cl)
{
	size_t i;

	if (cl == 0)
		return false;
	for (i = 0; i < cl; i++) {
		unsigned char c = (unsigned char)cmd[i];

		if (!(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') &&
		    !(c >= '0' && c <= '9') && c != '-')
			return false;
	}
	return true;
}

/* A command line, taken apart. */
struct command {
	size_t n; /* the line, CRLF included */
	const char *args;
	size_t cl, al; /* verb and arguments; the verb starts the line */
};

static bool
is(const char *in, const struct command *c, const char *w)
{
	return proto_line_word_is(in, c->cl, w);
}

static void
refuse(struct proto_out *o, const struct proto_params *p, enum proto_reply r)
{
	proto_say(o, p, r, NULL, 0);
	o->refused = true;
}

/* Reads a command line; false when there is none yet (or it is broken,
 * or its verb is refused: then o says so and c->n is what to consume). */
static bool
read_command(const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o, struct command *c)
{
	size_t end, pos;

	memset(c, 0, sizeof(*c));
	c->n = client_line(p, in, len, false, o);
	if (c->n == 0)
		return false;
	end = proto_line_chomp(in, c->n);
	c->cl = proto_line_word_len(in, end);
	pos = c->cl + proto_line_spaces(in + c->cl, end - c->cl);
	c->args = in + pos;
	c->al = end - pos;
	if (!verb_ok(in, c->cl)) {
		refuse(o, p, PROTO_REPLY_BAD_SYNTAX);
		return false;
	}
	return true;
}

static size_t
plain(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_smtp *st = v;
	struct command c;
	bool ehlo;

	if (!read_command(p, in, len, o, &c))
		return c.n;
	ehlo = is(in, &c, "EHLO");
	if (ehlo || is(in, &c, "HELO")) {
		if (c.al == 0) {
			refuse(o, p,
			    ehlo ? PROTO_REPLY_SYNTAX_EHLO :
			           PROTO_REPLY_SYNTAX_HELO);
			return c.n;
		}
		/* Kept for a plaintext backend, which must hear it too. A
		 * command line is at most PROTO_SMTP_LINE_MAX. */
		if (p->optional) {
			memcpy(st->helo, in, c.n);
			st->helo_len = c.n;
		}
		proto_say(o, p,
		    ehlo ? PROTO_REPLY_CAPABILITY : PROTO_REPLY_HELO, NULL, 0);
	} else if (is(in, &c, "NOOP") || is(in, &c, "RSET")) {
		proto_say(o, p, PROTO_REPLY_NOOP, NULL, 0);
	} else if (is(in, &c, "QUIT")) {
		proto_say(o, p, PROTO_REPLY_LOGOUT, NULL, 0);
		proto_close(o, p, PROTO_END_QUIT, NULL);
	} else if (is(in, &c, "STARTTLS")) {
		if (c.al > 0) {
			refuse(o, p, PROTO_REPLY_STARTTLS_ARGS);
		} else {
			proto_say(o, p, PROTO_REPLY_STARTTLS, NULL, 0);
			o->event = PROTO_STARTTLS;
		}
	} else if (is(in, &c, "XCLIENT") || is(in, &c, "XFORWARD")) {
		refuse(o, p, PROTO_REPLY_NO_XCLIENT);
	} else if (p->optional && is(in, &c, "AUTH")) {
		refuse(o, p, PROTO_REPLY_NO_AUTH);
	} else if (!p->optional) {
		refuse(o, p, PROTO_REPLY_NOT_YET);
	} else {
		/* Plaintext it is: the command waits for the backend. */
		st->plain = true;
		o->event = PROTO_CONNECT;
		return 0;
	}
	return c.n;
}

static void
tls(void *v)
{
	struct proto_smtp *st = v;

	/* RFC 3207 §4.2: nothing said before TLS counts after it. */
	st->tls = true;
	st->helo_len = 0;
}

/* A reply line: 3 digits, then '-' (more follow), ' ' or the end. */
static bool
reply_line(const char *in, size_t end, int *code, bool *last)
{
	if (end < 3 || in[0] < '2' || in[0] > '5' || in[1] < '0' ||
	    in[1] > '9' || in[2] < '0' || in[2] > '9')
		return false;
	if (end > 3 && in[3] != ' ' && in[3] != '-')
		return false;
	*code = (in[0] - '0') * 100 + (in[1] - '0') * 10 + (in[2] - '0');
	*last = end == 3 || in[3] == ' ';
	return true;
}

/* One backend reply line: its length, code and whether it is the last;
 * 0 when more is needed, or when the line is not SMTP (o closes). */
static size_t
backend_line(const struct proto_params *p, const char *in, size_t len,
    int *code, bool *last, struct proto_out *o)
{
	long ln = proto_line_find(in, len, PROTO_BACKEND_LINE_MAX, false);

	if (ln < 0) {
		proto_unavailable(o, p, "backend line too long");
		return 0;
	}
	if (ln == 0)
		return 0;
	if (!reply_line(in, proto_line_chomp(in, (size_t)ln), code, last)) {
		proto_unavailable(o, p, "backend reply not SMTP");
		return 0;
	}
	return (size_t)ln;
}

/* Whether an EHLO reply line (its text after the code) names CHUNKING. */
static void
note_chunking(struct proto_smtp *st, const char *line, size_t end)
{
	const char *text = line + (end > 3 ? 4 : 3);
	size_t tn = end > 3 ? end - 4 : 0;

	if (proto_line_word_is(text, proto_line_word_len(text, tn), "CHUNKING"))
		st->chunking = true;
}

static size_t
greeting(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_smtp *st = v;
	size_t n;
	bool last;
	int code;

	n = backend_line(p, in, len, &code, &last, o);
	if (n == 0)
		return 0;
	if (st->replay) {
		/* The reply to the replayed HELO/EHLO: the client had
		 * mailproxy's. What the backend can do still counts. */
		if (st->ehlo_first)
			st->chunking = false;
		st->ehlo_first = false;
		note_chunking(st, in, proto_line_chomp(in, n));
		if (!last)
			return n;
		if (code / 100 == 2)
			o->event = PROTO_GREETED;
		else
			proto_unavailable(o, p,
			    "backend refused the client's EHLO");
		return n;
	}
	if (code != 220) {
		proto_relay(o, in, n);
		if (last)
			proto_close(o, p, PROTO_END_BACKEND,
			    "backend greeting not 220");
		return n;
	}
	/* The client heard mailproxy's greeting, unless implicit TLS. */
	if (!p->starttls)
		proto_relay(o, in, n);
	st->multiline = !last;
	if (!last)
		return n;
	if (st->plain && st->helo_len > 0) {
		proto_forward(o, st->helo, st->helo_len);
		st->replay = true;
		st->ehlo_first = true;
		return n;
	}
	o->event = PROTO_GREETED;
	return n;
}

/*
 * BDAT (RFC 3030): "BDAT" SP chunk-size [SP "LAST"]. The chunk's octets
 * follow at once, unasked, so they go through uncounted as commands;
 * only a backend that offered CHUNKING reads them as a chunk, any other
 * would read them as commands, so BDAT is refused there (and mailproxy
 * reads them as commands too).
 */
static size_t
bdat(struct proto_smtp *st, const struct proto_params *p, const char *in,
    const struct command *c, struct proto_out *o)
{
	uint64_t size = 0;
	size_t i = 0, digits;
	bool last = false;

	if (!st->chunking) {
		refuse(o, p, PROTO_REPLY_NOT_RECOGNIZED);
		return c->n;
	}
	while (i < c->al && c->args[i] >= '0' && c->args[i] <= '9' && i < 19)
		size = size * 10 + (uint64_t)(c->args[i++] - '0');
	digits = i;
	i += proto_line_spaces(c->args + i, c->al - i);
	if (i < c->al && proto_line_word_is(c->args + i, c->al - i, "LAST")) {
		last = true;
		i = c->al;
	}
	if (digits == 0 || i != c->al ||
	    (digits < c->al && c->args[digits] != ' ')) {
		/* Whatever the backend would make of it, its octets could
		 * be read two ways: never forwarded. */
		proto_close(o, p, PROTO_END_PROTOCOL, "malformed BDAT command");
		return c->n;
	}
	proto_forward(o, in, c->n);
	st->cmd = PROTO_SMTP_OTHER;
	st->chunk_left = size;
	st->bdat_last = last;
	st->data_end = last;
	st->state = size > 0 ? PROTO_SMTP_BDAT : PROTO_SMTP_WAIT;
	return c->n;
}

/* After the greeting: a command, checked and forwarded, or refused. */
static size_t
command(struct proto_smtp *st, const struct proto_params *p, const char *in,
    size_t len, struct proto_out *o)
{
	struct command c;

	if (!read_command(p, in, len, o, &c))
		return c.n;
	if (is(in, &c, "STARTTLS")) {
		refuse(o, p,
		    st->tls ? PROTO_REPLY_TLS_ACTIVE :
		              PROTO_REPLY_TLS_UNAVAILABLE);
		return c.n;
	}
	if (is(in, &c, "XCLIENT") || is(in, &c, "XFORWARD")) {
		refuse(o, p, PROTO_REPLY_NO_XCLIENT);
		return c.n;
	}
	if (!st->tls && is(in, &c, "AUTH")) {
		refuse(o, p, PROTO_REPLY_NO_AUTH);
		return c.n;
	}
	if (is(in, &c, "BDAT"))
		return bdat(st, p, in, &c, o);
	st->cmd = PROTO_SMTP_OTHER;
	if (is(in, &c, "EHLO") || is(in, &c, "HELO")) {
		st->cmd = PROTO_SMTP_EHLO;
		st->ehlo_first = true;
	} else if (is(in, &c, "AUTH")) {
		st->cmd = PROTO_SMTP_AUTH;
	} else if (is(in, &c, "DATA")) {
		st->cmd = PROTO_SMTP_DATA_CMD;
	}
	proto_forward(o, in, c.n);
	st->data_end = false;
	st->state = PROTO_SMTP_WAIT;
	return c.n;
}

/* Records the last two message octets of in[0..n) that went out. */
static void
note_prev(struct proto_smtp *st, const char *in, size_t n)
{
	if (n >= 2) {
		st->prev[0] = in[n - 2];
		st->prev[1] = in[n - 1];
	} else if (n == 1) {
		st->prev[0] = st->prev[1];
		st->prev[1] = in[0];
	}
}

/*
 * Message octets after a 354, up to the end of data. The end is CRLF "."
 * CRLF and nothing else. A dot-line that a liberal backend could take
 * for the end while a strict one does not (LF "." CRLF, CR "." CR LF,
 * "." LF: SMTP smuggling) would make the two ends read the rest apart,
 * so the session is closed there and the dot-line never forwarded.
 */
static size_t
data(struct proto_smtp *st, const struct proto_params *p, const char *in,
    size_t len, struct proto_out *o)
{
	const char *dot;
	size_t i = 0, k;
	char before;

	while (i < len) {
		dot = memchr(in + i, '.', len - i);
		if (dot == NULL) {
			i = len;
			break;
		}
		k = (size_t)(dot - in);
		before = k > 0 ? in[k - 1] : st->prev[1];
		if (before != '\r' && before != '\n') {
			i = k + 1;
			continue;
		}
		if (k > 0) {
			/* What comes before a line's dot goes first. */
			i = k;
			break;
		}
		if (len < 2)
			return 0;
		if (in[1] != '\r' && in[1] != '\n') {
			i = 1; /* a line that starts with a dot */
			continue;
		}
		if (in[1] == '\r' && len < 3)
			return 0;
		if (in[1] == '\r' && in[2] == '\n' && st->prev[0] == '\r' &&
		    st->prev[1] == '\n') {
			proto_forward(o, in, 3);
			note_prev(st, in, 3);
			st->state = PROTO_SMTP_WAIT;
			st->data_end = true;
			return 3;
		}
		proto_close(o, p, PROTO_END_PROTOCOL,
		    "bare CR or LF at the end of data");
		return 0;
	}
	proto_forward(o, in, i);
	note_prev(st, in, i);
	return i;
}

static size_t
client(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_smtp *st = v;
	size_t n;

	switch (st->state) {
	case PROTO_SMTP_READY:
		return command(st, p, in, len, o);
	case PROTO_SMTP_MORE:
		/* A SASL response: data, never a command. */
		n = client_line(p, in, len, true, o);
		if (n == 0)
			return 0;
		proto_forward(o, in, n);
		st->state = PROTO_SMTP_WAIT;
		return n;
	case PROTO_SMTP_DATA:
		return data(st, p, in, len, o);
	case PROTO_SMTP_BDAT:
		n = len < st->chunk_left ? len : (size_t)st->chunk_left;
		proto_forward(o, in, n);
		st->chunk_left -= n;
		if (st->chunk_left == 0)
			st->state = PROTO_SMTP_WAIT;
		return n;
	case PROTO_SMTP_WAIT:
		break;
	}
	return 0;
}

/* Writes one EHLO line, code + sep + text + CRLF, at out. A last line
 * with the code alone ("250") stays as it came. */
static size_t
ehlo_put(char *out, const char *code, const char *text, size_t tn, char sep)
{
	size_t sl = tn > 0 || sep == '-' ? 1 : 0;

	memcpy(out, code, 3);
	out[3] = sep;
	memcpy(out + 3 + sl, text, tn);
	memcpy(out + 3 + sl + tn, "\r\n", 2);
	return 3 + sl + tn + 2;
}

/*
 * One line of a 250 reply to EHLO: kept, rewritten or left out. A kept
 * line that is not the last is held until the next kept line (then it
 * goes out with '-') or the end (then with ' ', the dropped lines after
 * it notwithstanding).
 */
static void
ehlo_line(struct proto_smtp *st, const struct proto_params *p, const char *line,
    size_t n, bool last, struct proto_out *o)
{
	char rewritten[PROTO_SMTP_REPLY_LINE_MAX];
	size_t end = proto_line_chomp(line, n), room, k = 0, w, tn;
	const char *text = line + (end > 3 ? 4 : 3);
	bool keep = true;
	char *out;

	tn = end > 3 ? end - 4 : 0;
	w = proto_line_word_len(text, tn);
	if (n > PROTO_SMTP_REPLY_LINE_MAX) {
		proto_unavailable(o, p, "backend EHLO reply line too long");
		return;
	}
	if (st->ehlo_first) {
		st->ehlo_first = false;
		st->chunking = false;
	} else if (!st->tls &&
	    (proto_line_word_is(text, w, "AUTH") ||
	        proto_line_prefix_is(text, w, "AUTH="))) {
		keep = false; /* never AUTH in plaintext */
	} else if (proto_line_cap_dropped(text, w, false)) {
		keep = false;
	} else if (proto_line_word_is(text, w, "AUTH")) {
		memcpy(rewritten, text, w);
		k = w;
		rewritten[k++] = ' ';
		k += proto_line_filter_caps(text + w, tn - w, rewritten + k,
		    true);
		if (k == w + 1) {
			keep = false;
		} else {
			text = rewritten;
			tn = k;
		}
	} else {
		note_chunking(st, line, end);
	}
	out = proto_text_room(o, &room);
	k = 0;
	if (keep && st->held_len > 0) {
		st->held[3] = '-';
		memcpy(out, st->held, st->held_len);
		k = st->held_len;
		st->held_len = 0;
	} else if (!keep && last && st->held_len > 0) {
		st->held[3] = ' ';
		memcpy(out, st->held, st->held_len);
		k = st->held_len;
		st->held_len = 0;
	}
	if (keep && last)
		k += ehlo_put(out + k, line, text, tn, ' ');
	else if (keep)
		st->held_len = ehlo_put(st->held, line, text, tn, '-');
	if (k > 0)
		proto_text_commit(o, k);
}

static size_t
backend(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_smtp *st = v;
	size_t n;
	bool last;
	int code;

	n = backend_line(p, in, len, &code, &last, o);
	if (n == 0)
		return 0;
	if (st->state != PROTO_SMTP_WAIT) {
		/* Unasked (a 421 before the backend closes, say). */
		proto_relay(o, in, n);
		st->multiline = !last;
		return n;
	}
	if (st->cmd == PROTO_SMTP_EHLO && code == 250)
		ehlo_line(st, p, in, n, last, o);
	else
		proto_relay(o, in, n);
	st->multiline = !last;
	if (!last || o->event == PROTO_CLOSE)
		return n;
	st->data_end = false;
	if (st->cmd == PROTO_SMTP_AUTH && code == 334) {
		st->state = PROTO_SMTP_MORE;
	} else if (st->cmd == PROTO_SMTP_AUTH && code == 235) {
		o->event = PROTO_OPAQUE;
	} else if (st->cmd == PROTO_SMTP_DATA_CMD && code == 354) {
		/* The message starts a line: as if after CRLF. */
		st->prev[0] = '\r';
		st->prev[1] = '\n';
		st->state = PROTO_SMTP_DATA;
	} else {
		st->state = PROTO_SMTP_READY;
	}
	return n;
}

static enum proto_wait
wait(const void *v)
{
	const struct proto_smtp *st = v;

	if (st->state != PROTO_SMTP_WAIT)
		return PROTO_WAIT_CLIENT;
	return st->data_end ? PROTO_WAIT_BACKEND_DATA : PROTO_WAIT_BACKEND;
}

static bool
mid_reply(const void *v)
{
	const struct proto_smtp *st = v;

	return st->multiline || st->held_len > 0;
}

const struct proto_ops proto_smtp_ops = {
    .greet = proto_greet,
    .plain = plain,
    .tls = tls,
    .greeting = greeting,
    .client = client,
    .backend = backend,
    .wait = wait,
    .mid_reply = mid_reply,
    .state_size = sizeof(struct proto_smtp),
};
