/*
 * The dialogue until authentication: what the three protocols share (line
 * framing, capability filtering, the ends) and the dispatch to
 * proto_imap.c, proto_pop3.c and proto_smtp.c. research/protocols.md §0
 * has the rules; docs/dialogue.md the exact words.
 *
 * Pure: no I/O. Output goes through the caller's sink.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dialog_impl.h"

long
dialog_line(const char *in, size_t len, size_t max, bool strict)
{
	size_t i;

	for (i = 0; i < len && i < max; i++) {
		if (in[i] == '\n') {
			if (!strict)
				return (long)i + 1;
			/* Only CRLF ends a line: a bare LF is how a second
			 * command hides inside the first (protocols.md §3). */
			if (i == 0 || in[i - 1] != '\r')
				return LINE_BARE;
			return (long)i + 1;
		}
		if (!strict)
			continue;
		if (in[i] == '\0')
			return LINE_BARE;
		if (in[i] == '\r' && i + 1 < len && in[i + 1] != '\n')
			return LINE_BARE;
	}
	return i >= max ? LINE_TOO_LONG : 0;
}

size_t
dialog_chomp(const char *line, size_t len)
{
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	return len;
}

bool
dialog_word_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(p, w, n) == 0;
}

size_t
dialog_word_len(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

size_t
dialog_spaces(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] == ' ')
		i++;
	return i;
}

static bool
prefix_is(const char *p, size_t n, const char *w)
{
	size_t wl = strlen(w);

	return n >= wl && strncasecmp(p, w, wl) == 0;
}

bool
dialog_cap_dropped(const char *t, size_t n, bool sasl)
{
	/* Channel binding names mailproxy's TLS, not the client's: a
	 * SCRAM-*-PLUS exchange through a terminator always fails. */
	if (prefix_is(t, n, "SCRAM-") && n >= 5 &&
	    strncasecmp(t + n - 5, "-PLUS", 5) == 0)
		return true;
	if (sasl)
		return false;
	if (prefix_is(t, n, "AUTH="))
		return dialog_cap_dropped(t + 5, n - 5, true);
	return dialog_word_is(t, n, "STARTTLS") ||
	    dialog_word_is(t, n, "STLS") || dialog_word_is(t, n, "XCLIENT") ||
	    dialog_word_is(t, n, "XFORWARD");
}

size_t
dialog_filter_caps(const char *in, size_t n, char *out, bool sasl)
{
	size_t i = 0, o = 0, w;

	while (i < n) {
		if (in[i] == ' ') {
			i++;
			continue;
		}
		w = 0;
		while (i + w < n && in[i + w] != ' ')
			w++;
		if (!dialog_cap_dropped(in + i, w, sasl)) {
			if (o > 0)
				out[o++] = ' ';
			memcpy(out + o, in + i, w);
			o += w;
		}
		i += w;
	}
	return o;
}

void
dialog_to_client(const struct dialog_sink *sink, const char *p, size_t n)
{
	if (n > 0)
		sink->to_client(sink->ctx, p, n);
}

void
dialog_to_backend(const struct dialog_sink *sink, const char *p, size_t n)
{
	if (n > 0)
		sink->to_backend(sink->ctx, p, n);
}

void
dialog_say(const struct dialog_sink *sink, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	dialog_to_client(sink, line, (size_t)n);
}

void
dialog_fail(struct dialog *d, const struct dialog_sink *sink,
    enum dialog_end end, const char *reason, enum dialog_event *ev)
{
	if (end == DIALOG_END_PROTOCOL) {
		switch (d->p->protocol) {
		case PROTO_IMAP:
			dialog_say(sink, "* BYE Protocol error: %s.\r\n",
			    reason);
			break;
		case PROTO_POP3:
			dialog_say(sink, "-ERR Protocol error: %s.\r\n",
			    reason);
			break;
		case PROTO_SMTP:
		case PROTO_COUNT_:
			dialog_say(sink, "421 4.7.0 %s Protocol error: %s\r\n",
			    d->p->server_name, reason);
			break;
		}
	}
	d->end = end;
	d->error = reason;
	d->phase = PH_DONE;
	*ev = DIALOG_CLOSE;
}

void
dialog_refused(struct dialog *d, const struct dialog_sink *sink,
    enum dialog_event *ev)
{
	if (++d->stats.refused >= DIALOG_REFUSED_MAX)
		dialog_fail(d, sink, DIALOG_END_PROTOCOL,
		    "too many refused commands", ev);
}

void
dialog_opaque(struct dialog *d, enum dialog_event *ev)
{
	d->phase = PH_DONE;
	*ev = DIALOG_OPAQUE;
}

struct dialog *
dialog_new(const struct dialog_params *params)
{
	struct dialog *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->p = params;
	d->phase = params->starttls ? PH_PRE_TLS : PH_HANDSHAKE;
	return d;
}

void
dialog_free(struct dialog *d)
{
	if (d == NULL)
		return;
	free(d->helo);
	free(d->reply);
	free(d);
}

void
dialog_start(struct dialog *d, const struct dialog_sink *sink)
{
	if (d->phase != PH_PRE_TLS)
		return;
	switch (d->p->protocol) {
	case PROTO_IMAP:
		imap_start(d, sink);
		break;
	case PROTO_POP3:
		pop3_start(d, sink);
		break;
	case PROTO_SMTP:
	case PROTO_COUNT_:
		smtp_start(d, sink);
		break;
	}
}

void
dialog_tls_started(struct dialog *d)
{
	if (d->phase != PH_PRE_TLS && d->phase != PH_HANDSHAKE)
		return;
	d->stats.starttls = d->p->starttls;
	d->tls = true;
	d->phase = PH_GREETING;
}

typedef size_t step_fn(struct dialog *, const char *, size_t,
    const struct dialog_sink *, enum dialog_event *);

static size_t
run(struct dialog *d, step_fn *step, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	size_t used = 0, n;

	*ev = DIALOG_CONTINUE;
	while (used < len && d->phase != PH_DONE && *ev == DIALOG_CONTINUE) {
		n = step(d, in + used, len - used, sink, ev);
		if (n == 0)
			break;
		used += n;
	}
	return used;
}

size_t
dialog_client(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	static step_fn *const steps[PROTO_COUNT_] = {
	    [PROTO_IMAP] = imap_client,
	    [PROTO_POP3] = pop3_client,
	    [PROTO_SMTP] = smtp_client,
	};

	return run(d, steps[d->p->protocol], in, len, sink, ev);
}

size_t
dialog_backend(struct dialog *d, const char *in, size_t len,
    const struct dialog_sink *sink, enum dialog_event *ev)
{
	static step_fn *const steps[PROTO_COUNT_] = {
	    [PROTO_IMAP] = imap_backend,
	    [PROTO_POP3] = pop3_backend,
	    [PROTO_SMTP] = smtp_backend,
	};

	return run(d, steps[d->p->protocol], in, len, sink, ev);
}

bool
dialog_waiting(const struct dialog *d)
{
	return d->phase == PH_GREETING || d->phase == PH_WAIT ||
	    d->phase == PH_REPLAY;
}

enum dialog_end
dialog_end(const struct dialog *d)
{
	return d->end;
}

const char *
dialog_error(const struct dialog *d)
{
	return d->error;
}

struct dialog_stats *
dialog_stats(struct dialog *d)
{
	return &d->stats;
}
