/*
 * POP3 until PASS, APOP or AUTH succeeds (RFC 1939, RFC 2449, RFC 2595,
 * RFC 5034). Before TLS mailproxy answers alone, without an APOP
 * timestamp (the backend's would differ); after TLS each command goes to
 * the backend alone and its reply, multi-line for CAPA, is awaited.
 *
 * Pure: no I/O, no allocation. Must not: forward a client byte it has not
 * framed.
 */
#include "mailproxy/proto_pop3.h"

#include <string.h>

#include "mailproxy/proto_line.h"

/* One client line's length, or 0 (see proto_client_line). */
static size_t
client_line(const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	return proto_client_line(o, p, in, len, PROTO_POP3_LINE_MAX);
}

static void
refuse(struct proto_out *o, const struct proto_params *p, enum proto_reply r)
{
	proto_say(o, p, r, NULL, 0);
	o->refused = true;
}

/* The command word of line[0..n) and the length of its arguments. */
static size_t
verb(const char *line, size_t n, size_t *args_out)
{
	size_t end = proto_line_chomp(line, n);
	size_t cl = proto_line_word_len(line, end);

	*args_out = end - cl - proto_line_spaces(line + cl, end - cl);
	return cl;
}

static size_t
plain(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	size_t n = client_line(p, in, len, o), cl, al;

	(void)v;
	if (n == 0)
		return 0;
	cl = verb(in, n, &al);
	if (proto_line_word_is(in, cl, "CAPA")) {
		proto_say(o, p, PROTO_REPLY_CAPABILITY, NULL, 0);
	} else if (proto_line_word_is(in, cl, "STLS")) {
		if (al > 0) {
			refuse(o, p, PROTO_REPLY_STARTTLS_ARGS);
		} else {
			proto_say(o, p, PROTO_REPLY_STARTTLS, NULL, 0);
			o->event = PROTO_STARTTLS;
		}
	} else if (proto_line_word_is(in, cl, "QUIT")) {
		proto_say(o, p, PROTO_REPLY_LOGOUT, NULL, 0);
		proto_close(o, p, PROTO_END_QUIT, NULL);
	} else if (proto_line_word_is(in, cl, "USER") ||
	    proto_line_word_is(in, cl, "PASS") ||
	    proto_line_word_is(in, cl, "APOP") ||
	    proto_line_word_is(in, cl, "AUTH")) {
		refuse(o, p, PROTO_REPLY_PRIVACY);
	} else if (proto_line_word_is(in, cl, "XCLIENT") ||
	    proto_line_word_is(in, cl, "XOIP")) {
		refuse(o, p, PROTO_REPLY_UNKNOWN);
	} else {
		refuse(o, p, PROTO_REPLY_NOT_YET);
	}
	return n;
}

static void
tls(void *v)
{
	(void)v; /* Nothing was kept from before TLS. */
}

static size_t
greeting(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	long ln = proto_line_find(in, len, PROTO_BACKEND_LINE_MAX, false);
	size_t n;

	(void)v;
	if (ln < 0) {
		proto_unavailable(o, p, "backend line too long");
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	if (n >= 3 && strncmp(in, "+OK", 3) == 0) {
		/* On a STARTTLS listener the client has mailproxy's. */
		if (!p->starttls)
			proto_relay(o, in, n);
		o->event = PROTO_GREETED;
	} else if (n >= 4 && strncmp(in, "-ERR", 4) == 0) {
		proto_relay(o, in, n);
		proto_close(o, p, PROTO_END_BACKEND,
		    "backend greeting is -ERR");
	} else {
		proto_unavailable(o, p, "backend greeting not POP3");
	}
	return n;
}

static size_t
client(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_pop3 *st = v;
	size_t n, cl, al;

	if (st->state == PROTO_POP3_WAIT)
		return 0;
	n = client_line(p, in, len, o);
	if (n == 0)
		return 0;
	if (st->state == PROTO_POP3_MORE) {
		/* A SASL response: data, never a command. */
		proto_forward(o, in, n);
		st->state = PROTO_POP3_WAIT;
		return n;
	}
	cl = verb(in, n, &al);
	if (proto_line_word_is(in, cl, "STLS")) {
		refuse(o, p, PROTO_REPLY_TLS_ACTIVE);
		return n;
	}
	if (proto_line_word_is(in, cl, "XCLIENT") ||
	    proto_line_word_is(in, cl, "XOIP")) {
		refuse(o, p, PROTO_REPLY_UNKNOWN);
		return n;
	}
	st->cmd = PROTO_POP3_OTHER;
	if (proto_line_word_is(in, cl, "CAPA"))
		st->cmd = PROTO_POP3_CAPA;
	else if (proto_line_word_is(in, cl, "PASS") ||
	    proto_line_word_is(in, cl, "APOP"))
		st->cmd = PROTO_POP3_AUTH;
	else if (proto_line_word_is(in, cl, "AUTH"))
		/* A bare AUTH lists the mechanisms (RFC 5034 §4). */
		st->cmd = al == 0 ? PROTO_POP3_MULTI : PROTO_POP3_AUTH;
	else if (((proto_line_word_is(in, cl, "LIST") ||
	              proto_line_word_is(in, cl, "UIDL")) &&
	             al == 0) ||
	    proto_line_word_is(in, cl, "RETR") ||
	    proto_line_word_is(in, cl, "TOP"))
		st->cmd = PROTO_POP3_MULTI;
	st->body = false;
	proto_forward(o, in, n);
	st->state = PROTO_POP3_WAIT;
	return n;
}

/* A CAPA line, with STLS and XCLIENT left out and SCRAM-*-PLUS taken
 * out of the SASL mechanisms. */
static void
capa_line(const char *line, size_t n, struct proto_out *o)
{
	size_t end = proto_line_chomp(line, n);
	size_t w = proto_line_word_len(line, end), room, k;
	char *out;

	if (proto_line_word_is(line, w, "STLS") ||
	    proto_line_word_is(line, w, "XCLIENT"))
		return;
	if (!proto_line_word_is(line, w, "SASL")) {
		proto_relay(o, line, n);
		return;
	}
	out = proto_text_room(o, &room);
	memcpy(out, line, w);
	k = w;
	out[k++] = ' ';
	k += proto_line_filter_caps(line + w, end - w, out + k, true);
	memcpy(out + k, "\r\n", 2);
	proto_text_commit(o, k + 2);
}

static size_t
backend(void *v, const struct proto_params *p, const char *in, size_t len,
    struct proto_out *o)
{
	struct proto_pop3 *st = v;
	long ln = proto_line_find(in, len, PROTO_BACKEND_LINE_MAX, false);
	size_t n;

	if (ln < 0) {
		proto_unavailable(o, p, "backend line too long");
		return 0;
	}
	if (ln == 0)
		return 0;
	n = (size_t)ln;
	if (st->state != PROTO_POP3_WAIT) {
		proto_relay(o, in, n);
		return n;
	}
	if (st->body) {
		if (proto_line_chomp(in, n) == 1 && in[0] == '.') {
			proto_relay(o, in, n);
			st->body = false;
			st->state = PROTO_POP3_READY;
		} else if (st->cmd == PROTO_POP3_CAPA) {
			capa_line(in, n, o);
		} else {
			proto_relay(o, in, n);
		}
		return n;
	}
	proto_relay(o, in, n);
	if (n >= 3 && strncmp(in, "+OK", 3) == 0) {
		if (st->cmd == PROTO_POP3_CAPA || st->cmd == PROTO_POP3_MULTI)
			st->body = true;
		else if (st->cmd == PROTO_POP3_AUTH)
			o->event = PROTO_OPAQUE;
		else
			st->state = PROTO_POP3_READY;
	} else if (n >= 1 && in[0] == '+' && st->cmd == PROTO_POP3_AUTH) {
		st->state = PROTO_POP3_MORE; /* a SASL challenge */
	} else {
		st->state = PROTO_POP3_READY;
	}
	return n;
}

static enum proto_wait
wait(const void *v)
{
	const struct proto_pop3 *st = v;

	return st->state == PROTO_POP3_WAIT ? PROTO_WAIT_BACKEND :
	                                      PROTO_WAIT_CLIENT;
}

static bool
mid_reply(const void *v)
{
	const struct proto_pop3 *st = v;

	return st->body;
}

const struct proto_ops proto_pop3_ops = {
    .greet = proto_greet,
    .plain = plain,
    .tls = tls,
    .greeting = greeting,
    .client = client,
    .backend = backend,
    .wait = wait,
    .mid_reply = mid_reply,
    .state_size = sizeof(struct proto_pop3),
};
