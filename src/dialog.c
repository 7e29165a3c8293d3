/*
 * The dialogue until authentication (see dialog.h): the dispatch to the
 * listener's protocol module through its ops table, and what the three
 * protocols share: every step's output starts empty, refusals and
 * commands before TLS are counted and limited, and the statistics kept
 * for the log. research/protocols.md §0 has the rules; docs/dialogue.md
 * the exact words.
 *
 * Pure: no I/O. Must not: know any protocol's words (proto_*.c and the
 * reply table of proto.c have them).
 */
#include "mailproxy/dialog.h"

#include <stdlib.h>

#include "mailproxy/proto_imap.h"
#include "mailproxy/proto_pop3.h"
#include "mailproxy/proto_smtp.h"

struct dialog {
	const struct proto_params *p;
	const struct proto_ops *ops;
	struct dialog_stats stats;
	void *state; /* the protocol module's, ops->state_size bytes */
};

static const struct proto_ops *const protocols[PROTO_COUNT_] = {
    [PROTO_IMAP] = &proto_imap_ops,
    [PROTO_POP3] = &proto_pop3_ops,
    [PROTO_SMTP] = &proto_smtp_ops,
};

struct dialog *
dialog_new(const struct proto_params *params)
{
	struct dialog *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->p = params;
	d->ops = protocols[params->protocol];
	d->state = calloc(1, d->ops->state_size);
	if (d->state == NULL) {
		free(d);
		return NULL;
	}
	return d;
}

void
dialog_free(struct dialog *d)
{
	if (d == NULL)
		return;
	free(d->state);
	free(d);
}

/* Counts a refusal; the last one allowed closes the session. */
static void
count_refusal(struct dialog *d, struct proto_out *out)
{
	if (!out->refused || out->event == PROTO_CLOSE)
		return;
	if (++d->stats.refused >= DIALOG_REFUSED_MAX)
		proto_close(out, d->p, PROTO_END_PROTOCOL,
		    "too many refused commands");
}

void
dialog_greet(struct dialog *d, struct proto_out *out)
{
	proto_out_reset(out);
	d->ops->greet(d->state, d->p, out);
}

size_t
dialog_plain(struct dialog *d, const char *in, size_t len,
    struct proto_out *out)
{
	size_t n;

	proto_out_reset(out);
	n = d->ops->plain(d->state, d->p, in, len, out);
	if (n == 0 || out->event != PROTO_CONTINUE)
		return n;
	if (++d->stats.plain > DIALOG_PLAIN_MAX) {
		/* Answered enough: this one gets the goodbye instead. */
		proto_out_reset(out);
		proto_close(out, d->p, PROTO_END_PROTOCOL,
		    "too many commands before STARTTLS");
		return n;
	}
	count_refusal(d, out);
	return n;
}

void
dialog_tls_started(struct dialog *d)
{
	d->stats.starttls = d->p->starttls;
	d->ops->tls(d->state);
}

size_t
dialog_greeting(struct dialog *d, const char *in, size_t len,
    struct proto_out *out)
{
	proto_out_reset(out);
	return d->ops->greeting(d->state, d->p, in, len, out);
}

size_t
dialog_client(struct dialog *d, const char *in, size_t len,
    struct proto_out *out)
{
	size_t n;

	proto_out_reset(out);
	n = d->ops->client(d->state, d->p, in, len, out);
	count_refusal(d, out);
	return n;
}

size_t
dialog_backend(struct dialog *d, const char *in, size_t len,
    struct proto_out *out)
{
	proto_out_reset(out);
	return d->ops->backend(d->state, d->p, in, len, out);
}

enum proto_wait
dialog_wait(const struct dialog *d)
{
	return d->ops->wait(d->state);
}

bool
dialog_mid_reply(const struct dialog *d)
{
	return d->ops->mid_reply(d->state);
}

struct dialog_stats *
dialog_stats(struct dialog *d)
{
	return &d->stats;
}
