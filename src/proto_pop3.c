/*
 * POP3 until PASS, APOP or AUTH succeeds (RFC 1939, RFC 2449, RFC 2595,
 * RFC 5034). Before TLS mailproxy answers alone, without an APOP
 * timestamp (the backend's would differ); after TLS each command goes to
 * the backend alone and its reply, multi-line for CAPA, is awaited.
 *
 * Pure: no I/O.
 */
#include <string.h>

#include "dialog_impl.h"

void
pop3_start(struct dialog *d, const struct dialog_sink *sink)
{
	dialog_say(sink, "+OK %s\r\n", d->p->greeting);
}

static void
pre_tls(struct dialog *d, const char *cmd, size_t cl, size_t al,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (dialog_word_is(cmd, cl, "CAPA")) {
		dialog_say(sink,
		    "+OK Capability list follows\r\nCAPA\r\nSTLS\r\n.\r\n");
	} else if (dialog_word_is(cmd, cl, "STLS")) {
		if (al > 0) {
			dialog_say(sink, "-ERR STLS takes no arguments.\r\n");
			dialog_refused(d, sink, ev);
			return;
		}
		dialog_say(sink, "+OK Begin TLS negotiation now.\r\n");
		d->phase = PH_HANDSHAKE;
		*ev = DIALOG_STARTTLS;
	} else if (dialog_word_is(cmd, cl, "QUIT")) {
		dialog_say(sink, "+OK Logging out.\r\n");
		dialog_fail(d, sink, DIALOG_END_QUIT, NULL, ev);
	} else if (dialog_word_is(cmd, cl, "USER") ||
	    dialog_word_is(cmd, cl, "PASS") ||
	    dialog_word_is(cmd, cl, "APOP") ||
	    dialog_word_is(cmd, cl, "AUTH")) {
		dialog_say(sink,
		    "-ERR [AUTH] Cleartext authentication disallowed on "
		    "non-secure (SSL/TLS) connections.\r\n");
		dialog_refused(d, sink, ev);
	} else if (dialog_word_is(cmd, cl, "XCLIENT") ||
	    dialog_word_is(cmd, cl, "XOIP")) {
		dialog_say(sink, "-ERR Unknown command.\r\n");
		dialog_refused(d, sink, ev);
	} else {
		dialog_say(sink, "-ERR Command not allowed before STLS.\r\n");
		dialog_refused(d, sink, ev);
	}
}

static void
post_tls(struct dialog *d, const char *line, size_t n, const char *cmd,
    size_t cl, size_t al, const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (dialog_word_is(cmd, cl, "STLS")) {
		dialog_say(sink, "-ERR TLS is already active.\r\n");
		dialog_refused(d, sink, ev);
		return;
	}
	if (dialog_word_is(cmd, cl, "XCLIENT") ||
	    dialog_word_is(cmd, cl, "XOIP")) {
		dialog_say(sink, "-ERR Unknown command.\r\n");
		dialog_refused(d, sink, ev);
		return;
	}
	d->cmd = CMD_OTHER;
	if (dialog_word_is(cmd, cl, "CAPA"))
		d->cmd = CMD_CAPA;
	else if (dialog_word_is(cmd, cl, "PASS") ||
	    dialog_word_is(cmd, cl, "APOP"))
		d->cmd = CMD_AUTH;
	else if (dialog_word_is(cmd, cl, "AUTH"))
		/* A bare AUTH lists the mechanisms (RFC 5034 §4). */
		d->cmd = al == 0 ? CMD_MULTI : CMD_AUTH;
	else if (((dialog_word_is(cmd, cl, "LIST") ||
	              dialog_word_is(cmd, cl, "UIDL")) &&
	             al == 0) ||
	    dialog_word_is(cmd, cl, "RETR") || dialog_word_is(cmd, cl, "TOP"))
		d->cmd = CMD_MULTI;
	d->body = false;
	dialog_to_backend(sink, line, n);
	d->phase = PH_WAIT;
}

size_t
pop3_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln;
	size_t n, end, cl, pos;
	const char *cmd;

	if (d->phase != PH_PRE_TLS && d->phase != PH_READY &&
	    d->phase != PH_MORE)
		return 0;
	ln = dialog_line(in, len, DIALOG_POP3_LINE_MAX, true);
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
	if (d->phase == PH_PRE_TLS)
		pre_tls(d, cmd, cl, end - pos, sink, ev);
	else
		post_tls(d, in, n, cmd, cl, end - pos, sink, ev);
	return n;
}

/* A CAPA line, with STLS and XCLIENT left out and SCRAM-*-PLUS taken
 * out of the SASL mechanisms. */
static void
capa_line(const char *line, size_t n, const struct dialog_sink *sink)
{
	char out[DIALOG_BACKEND_LINE_MAX];
	size_t end = dialog_chomp(line, n), w = dialog_word_len(line, end), o;

	if (dialog_word_is(line, w, "STLS") ||
	    dialog_word_is(line, w, "XCLIENT"))
		return;
	if (!dialog_word_is(line, w, "SASL")) {
		dialog_to_client(sink, line, n);
		return;
	}
	memcpy(out, line, w);
	o = w;
	out[o++] = ' ';
	o += dialog_filter_caps(line + w, end - w, out + o, true);
	memcpy(out + o, "\r\n", 2);
	dialog_to_client(sink, out, o + 2);
}

static size_t
greeting(struct dialog *d, const char *line, size_t n,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	if (n >= 3 && strncmp(line, "+OK", 3) == 0) {
		if (!d->p->starttls)
			dialog_to_client(sink, line, n);
		d->phase = PH_READY;
		return n;
	}
	if (n >= 4 && strncmp(line, "-ERR", 4) == 0) {
		dialog_to_client(sink, line, n);
		dialog_fail(d, sink, DIALOG_END_BACKEND,
		    "backend greeting is -ERR", ev);
		return n;
	}
	dialog_say(sink, "-ERR [SYS/TEMP] Backend server not available.\r\n");
	dialog_fail(d, sink, DIALOG_END_BACKEND, "backend greeting not POP3",
	    ev);
	return n;
}

size_t
pop3_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	long ln;
	size_t n;

	if (d->phase == PH_PRE_TLS || d->phase == PH_HANDSHAKE)
		return 0;
	ln = dialog_line(in, len, DIALOG_BACKEND_LINE_MAX, false);
	if (ln < 0) {
		dialog_say(sink,
		    "-ERR [SYS/TEMP] Backend server not available.\r\n");
		dialog_fail(d, sink, DIALOG_END_BACKEND,
		    "backend line too long", ev);
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	if (d->phase == PH_GREETING)
		return greeting(d, in, n, sink, ev);
	if (d->phase != PH_WAIT) {
		dialog_to_client(sink, in, n);
		return n;
	}
	if (d->body) {
		if (dialog_chomp(in, n) == 1 && in[0] == '.') {
			dialog_to_client(sink, in, n);
			d->body = false;
			d->phase = PH_READY;
		} else if (d->cmd == CMD_CAPA) {
			capa_line(in, n, sink);
		} else {
			dialog_to_client(sink, in, n);
		}
		return n;
	}
	dialog_to_client(sink, in, n);
	if (n >= 3 && strncmp(in, "+OK", 3) == 0) {
		if (d->cmd == CMD_CAPA || d->cmd == CMD_MULTI)
			d->body = true;
		else if (d->cmd == CMD_AUTH)
			dialog_opaque(d, ev);
		else
			d->phase = PH_READY;
	} else if (n >= 1 && in[0] == '+' && d->cmd == CMD_AUTH) {
		d->phase = PH_MORE; /* a SASL challenge */
	} else {
		d->phase = PH_READY;
	}
	return n;
}
