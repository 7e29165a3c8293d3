/*
 * SMTP until AUTH succeeds or the first MAIL (RFC 5321, RFC 3207, RFC
 * 4954, RFC 2920). Before TLS mailproxy answers alone in Postfix's words;
 * after TLS each command goes to the backend alone and its whole reply is
 * awaited, EHLO replies rewritten. starttls = optional (port 25): a client
 * that stays in plaintext gets the backend connected at its first command
 * mailproxy does not answer, with its HELO/EHLO replayed first.
 *
 * Pure: no I/O.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dialog_impl.h"

/* An EHLO reply may not grow mailproxy's memory without end. */
#define REPLY_MAX 65536

void
smtp_start(struct dialog *d, const struct dialog_sink *sink)
{
	dialog_say(sink, "220 %s ESMTP %s\r\n", d->p->server_name,
	    d->p->greeting);
}

static bool
keep_helo(struct dialog *d, const char *line, size_t n)
{
	char *copy = malloc(n);

	if (copy == NULL)
		return false;
	memcpy(copy, line, n);
	free(d->helo);
	d->helo = copy;
	d->helo_len = n;
	return true;
}

static void
pre_tls(struct dialog *d, const char *line, size_t n, const char *cmd,
    size_t cl, size_t al, const struct dialog_sink *sink, enum dialog_event *ev)
{
	bool ehlo = dialog_word_is(cmd, cl, "EHLO");

	if (ehlo || dialog_word_is(cmd, cl, "HELO")) {
		if (al == 0) {
			dialog_say(sink, "501 5.5.4 Syntax: %s hostname\r\n",
			    ehlo ? "EHLO" : "HELO");
			dialog_refused(d, sink, ev);
			return;
		}
		if (d->p->optional && !keep_helo(d, line, n)) {
			dialog_fail(d, sink, DIALOG_END_PROTOCOL,
			    "out of memory", ev);
			return;
		}
		if (ehlo)
			dialog_say(sink,
			    "250-%s\r\n250-PIPELINING\r\n"
			    "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n",
			    d->p->server_name);
		else
			dialog_say(sink, "250 %s\r\n", d->p->server_name);
	} else if (dialog_word_is(cmd, cl, "NOOP") ||
	    dialog_word_is(cmd, cl, "RSET")) {
		dialog_say(sink, "250 2.0.0 Ok\r\n");
	} else if (dialog_word_is(cmd, cl, "QUIT")) {
		dialog_say(sink, "221 2.0.0 Bye\r\n");
		dialog_fail(d, sink, DIALOG_END_QUIT, NULL, ev);
	} else if (dialog_word_is(cmd, cl, "STARTTLS")) {
		if (al > 0) {
			dialog_say(sink, "501 5.5.4 Syntax: STARTTLS\r\n");
			dialog_refused(d, sink, ev);
			return;
		}
		dialog_say(sink, "220 2.0.0 Ready to start TLS\r\n");
		d->phase = PH_HANDSHAKE;
		*ev = DIALOG_STARTTLS;
	} else if (dialog_word_is(cmd, cl, "XCLIENT") ||
	    dialog_word_is(cmd, cl, "XFORWARD")) {
		dialog_say(sink,
		    "550 5.7.0 Error: insufficient authorization\r\n");
		dialog_refused(d, sink, ev);
	} else if (d->p->optional && dialog_word_is(cmd, cl, "AUTH")) {
		dialog_say(sink,
		    "503 5.5.1 Error: authentication not enabled\r\n");
		dialog_refused(d, sink, ev);
	} else if (!d->p->optional) {
		dialog_say(sink,
		    "530 5.7.0 Must issue a STARTTLS command first\r\n");
		dialog_refused(d, sink, ev);
	} else {
		/* Plaintext it is: the command waits for the backend. */
		d->plain = true;
		d->phase = PH_GREETING;
		*ev = DIALOG_CONNECT;
	}
}

/* After TLS, or in plaintext with the backend connected. */
static void
forward(struct dialog *d, const char *line, size_t n, const char *cmd,
    size_t cl, const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (dialog_word_is(cmd, cl, "STARTTLS")) {
		if (d->tls)
			dialog_say(sink,
			    "554 5.5.1 Error: TLS already active\r\n");
		else
			dialog_say(sink,
			    "454 4.7.0 TLS not available due to "
			    "local problem\r\n");
		dialog_refused(d, sink, ev);
		return;
	}
	if (dialog_word_is(cmd, cl, "XCLIENT") ||
	    dialog_word_is(cmd, cl, "XFORWARD")) {
		dialog_say(sink,
		    "550 5.7.0 Error: insufficient authorization\r\n");
		dialog_refused(d, sink, ev);
		return;
	}
	if (!d->tls && dialog_word_is(cmd, cl, "AUTH")) {
		dialog_say(sink,
		    "503 5.5.1 Error: authentication not enabled\r\n");
		dialog_refused(d, sink, ev);
		return;
	}
	dialog_to_backend(sink, line, n);
	if (dialog_word_is(cmd, cl, "MAIL")) {
		/* A mail transaction: from here the bytes are the
		 * client's business (and DATA is never parsed). */
		dialog_opaque(d, ev);
		return;
	}
	d->cmd = CMD_OTHER;
	if (dialog_word_is(cmd, cl, "EHLO") || dialog_word_is(cmd, cl, "HELO"))
		d->cmd = CMD_EHLO;
	else if (dialog_word_is(cmd, cl, "AUTH"))
		d->cmd = CMD_AUTH;
	d->reply_len = 0;
	d->phase = PH_WAIT;
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

size_t
smtp_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln;
	size_t n, end, cl, pos;
	const char *cmd;

	if (d->phase != PH_PRE_TLS && d->phase != PH_READY &&
	    d->phase != PH_MORE)
		return 0;
	ln = dialog_line(in, len, DIALOG_SMTP_AUTH_MAX, true);
	if (ln > 0 && d->phase != PH_MORE &&
	    (size_t)ln > DIALOG_SMTP_LINE_MAX &&
	    !dialog_word_is(in, dialog_word_len(in, (size_t)ln), "AUTH"))
		ln = LINE_TOO_LONG;
	if (ln == LINE_BARE)
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "bare CR, LF or NUL in command line", ev);
	else if (ln == LINE_TOO_LONG)
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "command line too long", ev);
	if (ln <= 0)
		return 0;
	n = (size_t)ln;
	if (d->phase == PH_MORE) {
		/* A SASL response: data, never a command. */
		dialog_to_backend(sink, in, n);
		d->phase = PH_WAIT;
		return n;
	}
	end = dialog_chomp(in, n);
	cmd = in;
	cl = dialog_word_len(cmd, end);
	pos = cl + dialog_spaces(in + cl, end - cl);
	if (!verb_ok(cmd, cl)) {
		dialog_say(sink, "500 5.5.2 Error: bad syntax\r\n");
		dialog_refused(d, sink, ev);
		return n;
	}
	if (d->phase == PH_READY) {
		forward(d, in, n, cmd, cl, sink, ev);
		return n;
	}
	pre_tls(d, in, n, cmd, cl, end - pos, sink, ev);
	if (*ev == DIALOG_CONNECT)
		return 0;
	return n;
}

/* Appends one rewritten EHLO line; sep is '-' or ' '. */
static bool
reply_add(struct dialog *d, const char *code, const char *text, size_t n,
    char sep)
{
	/* A last line with the code alone ("250") stays as it came. */
	size_t sl = n > 0 || sep == '-' ? 1 : 0;
	size_t need = d->reply_len + 3 + sl + n + 2;
	char *p;

	if (need > REPLY_MAX)
		return false;
	if (need > d->reply_size) {
		p = realloc(d->reply, need < 1024 ? 1024 : need);
		if (p == NULL)
			return false;
		d->reply = p;
		d->reply_size = need < 1024 ? 1024 : need;
	}
	p = d->reply + d->reply_len;
	memcpy(p, code, 3);
	p[3] = sep;
	memcpy(p + 3 + sl, text, n);
	memcpy(p + 3 + sl + n, "\r\n", 2);
	d->reply_last = d->reply_len + 3;
	d->reply_len = need;
	return true;
}

/* One line of a 250 EHLO reply: kept, rewritten or left out. Returns
 * false when out of room. */
static bool
ehlo_line(struct dialog *d, const char *line, size_t end, bool last)
{
	char out[DIALOG_BACKEND_LINE_MAX];
	const char *text = line + (end > 3 ? 4 : 3);
	size_t tn = end > 3 ? end - 4 : 0, w = dialog_word_len(text, tn), o;
	bool first = d->reply_len == 0, keep = true;

	if (!first) {
		if (!d->tls &&
		    (dialog_word_is(text, w, "AUTH") ||
		        (w > 5 && strncasecmp(text, "AUTH=", 5) == 0)))
			keep = false; /* never AUTH in plaintext */
		else if (dialog_cap_dropped(text, w, false))
			keep = false;
		else if (dialog_word_is(text, w, "AUTH")) {
			memcpy(out, text, w);
			o = w;
			out[o++] = ' ';
			o +=
			    dialog_filter_caps(text + w, tn - w, out + o, true);
			if (o == w + 1)
				keep = false;
			else {
				text = out;
				tn = o;
			}
		}
	}
	if (keep)
		return reply_add(d, line, text, tn, last ? ' ' : '-');
	if (last && d->reply_len > 0)
		d->reply[d->reply_last] = ' ';
	return true;
}

static void
reply_flush(struct dialog *d, const struct dialog_sink *sink)
{
	dialog_to_client(sink, d->reply, d->reply_len);
	d->reply_len = 0;
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

static void
unavailable(struct dialog *d, const struct dialog_sink *sink,
    const char *reason, enum dialog_event *ev)
{
	dialog_say(sink,
	    "421 4.3.0 %s Service not available, closing transmission "
	    "channel\r\n",
	    d->p->server_name);
	dialog_fail(d, sink, DIALOG_END_BACKEND, reason, ev);
}

static void
greeting(struct dialog *d, const char *in, size_t n, int code, bool last,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (code != 220) {
		dialog_to_client(sink, in, n);
		if (last)
			dialog_fail(d, sink, DIALOG_END_BACKEND,
			    "backend greeting not 220", ev);
		return;
	}
	/* The client heard mailproxy's greeting, unless implicit TLS. */
	if (!d->p->starttls)
		dialog_to_client(sink, in, n);
	if (!last)
		return;
	if (d->plain && d->helo != NULL) {
		dialog_to_backend(sink, d->helo, d->helo_len);
		d->phase = PH_REPLAY;
		return;
	}
	d->phase = PH_READY;
}

size_t
smtp_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln;
	size_t n, end;
	int code;
	bool last;

	if (d->phase == PH_PRE_TLS || d->phase == PH_HANDSHAKE)
		return 0;
	ln = dialog_line(in, len, DIALOG_BACKEND_LINE_MAX, false);
	if (ln < 0) {
		unavailable(d, sink, "backend line too long", ev);
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	end = dialog_chomp(in, n);
	if (!reply_line(in, end, &code, &last)) {
		unavailable(d, sink, "backend reply not SMTP", ev);
		return n;
	}
	switch (d->phase) {
	case PH_GREETING:
		greeting(d, in, n, code, last, sink, ev);
		return n;
	case PH_REPLAY:
		if (last) {
			if (code / 100 == 2)
				d->phase = PH_READY;
			else
				unavailable(d, sink,
				    "backend refused the client's EHLO", ev);
		}
		return n;
	case PH_WAIT:
		break;
	default:
		dialog_to_client(sink, in, n);
		return n;
	}
	if (d->cmd == CMD_EHLO && code == 250) {
		if (!ehlo_line(d, in, end, last)) {
			unavailable(d, sink, "backend EHLO reply too long", ev);
			return n;
		}
		if (last)
			reply_flush(d, sink);
	} else {
		dialog_to_client(sink, in, n);
	}
	if (!last)
		return n;
	if (d->cmd == CMD_AUTH && code == 334)
		d->phase = PH_MORE;
	else if (d->cmd == CMD_AUTH && code == 235)
		dialog_opaque(d, ev);
	else
		d->phase = PH_READY;
	return n;
}
