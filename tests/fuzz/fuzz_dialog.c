/*
 * libFuzzer driver for the dialogue until authentication (dialog.h), one
 * protocol per binary: FUZZ_PROTOCOL is PROTO_IMAP, PROTO_POP3 or
 * PROTO_SMTP. The same file, linked with replay.c, replays the corpus
 * under ctest.
 *
 * The input is a script:
 *
 *   byte 0    the listener: bits 0-1 are 0 or 3 for STARTTLS required,
 *             1 for STARTTLS optional, 2 for implicit TLS
 *   records   a header byte, bit 7 the direction (0 client, 1 backend),
 *             bits 0-6 the length n, then n bytes (fewer at the end)
 *
 * The driver plays the session: after PROTO_STARTTLS the rest of the
 * record is discarded and the handshake completes before the next record
 * (at the start on implicit listeners), the backend is connected then or
 * on PROTO_CONNECT (backend bytes before are dropped), unconsumed bytes
 * are offered again with more appended, and after PROTO_OPAQUE or
 * PROTO_CLOSE the dialogue is no longer called. Each script runs twice, client
 * records whole and byte by byte, and both runs must give the same bytes
 * to each side and the same events. Backend records go in a line at a
 * time in the first run: backend lines that arrive while a client command
 * waits for the greeting or a reply are a race no lock-step filter can
 * decide (relayed as unsolicited, or taken as the reply, depending on
 * where the read ended), and the oracle must not report it. Besides the
 * sanitizers it checks the contract and aborts when it is broken: a call
 * consumes at most what it was given and always sets an event, client input is
 * not used while dialog_wait() says the backend's turn, nothing reaches the
 * backend before it is connected, the last plaintext bytes before TLS are the
 * STARTTLS reply (research/protocols.md §14 E45), CONNECT comes at most once
 * and never with a backend, and no call loops without progress.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailproxy/dialog.h"

#include "../support/bytes.h"

#ifndef FUZZ_PROTOCOL
#define FUZZ_PROTOCOL PROTO_IMAP
#endif

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_dialog: contract broken: %s\n",  \
			    #cond);                                            \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum phase {
	PLAIN,     /* before TLS: dialog_plain() */
	HANDSHAKE, /* after PROTO_STARTTLS, until the next record */
	GREETING,  /* dialog_greeting() */
	DIALOG,    /* dialog_client() and dialog_backend() */
	DONE,      /* after PROTO_OPAQUE or PROTO_CLOSE */
};

/* One run of a script: the session's part, and what came out. */
struct fuzz {
	struct proto_params params;
	struct dialog *d;
	struct proto_out out;
	struct bytes cin, bin;        /* unconsumed input */
	struct bytes client, backend; /* what each side got */
	struct bytes events;          /* S C O X, and T for the handshake */
	enum phase phase;
	bool backend_up;
	bool connected_once;
};

static void
event(struct fuzz *f, char e)
{
	bytes_add(&f->events, &e, 1);
}

/* Moves what one step wrote, as the session does. */
static void
deliver(struct fuzz *f, const struct proto_out *o)
{
	CHECK(o->to_client_len == 0 || o->to_client != NULL);
	CHECK(o->to_backend_len == 0 || o->to_backend != NULL);
	CHECK(o->text_len <= sizeof(o->text));
	bytes_add(&f->client, o->to_client, o->to_client_len);
	if (o->to_backend_len > 0) {
		CHECK(f->backend_up);
		bytes_add(&f->backend, o->to_backend, o->to_backend_len);
	}
}

static bool
client_ends_with(const struct fuzz *f, const char *s)
{
	size_t n = strlen(s);

	return f->client.len >= n &&
	    memcmp(f->client.p + f->client.len - n, s, n) == 0;
}

static void
tls_up(struct fuzz *f)
{
	event(f, 'T');
	dialog_tls_started(f->d);
	f->backend_up = true;
	f->phase = GREETING;
}

/* Offers one side's unconsumed bytes once; whether anything happened. */
static bool
offer(struct fuzz *f, bool from_client)
{
	struct bytes *in = from_client ? &f->cin : &f->bin;
	struct proto_out *o = &f->out;
	bool waiting = false;
	size_t n;

	if (in->len == 0)
		return false;
	memset(o, 0x5a, offsetof(struct proto_out, text));
	switch (f->phase) {
	case PLAIN:
		if (!from_client)
			return false;
		n = dialog_plain(f->d, in->p, in->len, o);
		break;
	case GREETING:
		if (from_client)
			return false; /* commands wait for the greeting */
		n = dialog_greeting(f->d, in->p, in->len, o);
		break;
	case DIALOG:
		if (from_client) {
			waiting = dialog_wait(f->d) != PROTO_WAIT_CLIENT;
			n = dialog_client(f->d, in->p, in->len, o);
		} else {
			n = dialog_backend(f->d, in->p, in->len, o);
		}
		break;
	case HANDSHAKE:
	case DONE:
	default:
		return false;
	}
	CHECK(n <= in->len);
	if (waiting)
		CHECK(
		    n == 0 && o->to_client_len == 0 && o->to_backend_len == 0);
	deliver(f, o);
	bytes_drop(in, n);
	switch (o->event) {
	case PROTO_CONTINUE:
		return n > 0;
	case PROTO_STARTTLS:
		CHECK(from_client && f->phase == PLAIN);
		/* research/protocols.md §14 E45: nothing after the reply. */
		CHECK(client_ends_with(f,
		    FUZZ_PROTOCOL == PROTO_IMAP ?
		        " OK Begin TLS negotiation now.\r\n" :
		        FUZZ_PROTOCOL == PROTO_POP3 ?
		        "+OK Begin TLS negotiation now.\r\n" :
		        "220 2.0.0 Ready to start TLS\r\n"));
		event(f, 'S');
		/* Discarded, as is the rest of this record; the handshake
		 * completes before the next one. */
		dialog_stats(f->d)->discarded += f->cin.len;
		f->cin.len = 0;
		f->phase = HANDSHAKE;
		return true;
	case PROTO_CONNECT:
		CHECK(from_client && f->phase == PLAIN);
		CHECK(!f->backend_up && !f->connected_once);
		event(f, 'C');
		f->connected_once = true;
		f->backend_up = true;
		f->phase = GREETING;
		return true;
	case PROTO_GREETED:
		CHECK(!from_client && f->phase == GREETING);
		f->phase = DIALOG;
		return true;
	case PROTO_OPAQUE:
		CHECK(f->phase == DIALOG);
		event(f, 'O');
		f->phase = DONE;
		return true;
	case PROTO_CLOSE:
		if (o->end == PROTO_END_PROTOCOL || o->end == PROTO_END_BACKEND)
			CHECK(o->error != NULL);
		event(f, 'X');
		f->phase = DONE;
		return true;
	}
	CHECK(!"no valid event");
	return false;
}

static void
pump(struct fuzz *f)
{
	unsigned guard = 0;
	bool progress = true;

	while (progress && f->phase != DONE && f->phase != HANDSHAKE) {
		progress = offer(f, true);
		if (offer(f, false))
			progress = true;
		CHECK(++guard < 100000);
	}
}

static void
arrive(struct fuzz *f, bool backend, const uint8_t *p, size_t n)
{
	if (f->phase == DONE || f->phase == HANDSHAKE)
		return; /* closed, relayed, or the TLS engine's */
	if (backend && !f->backend_up)
		return; /* no backend connected yet */
	bytes_add(backend ? &f->bin : &f->cin, p, n);
	pump(f);
}

/* Runs the script with each record in one piece, or byte by byte. */
static void
run(struct fuzz *f, const uint8_t *data, size_t size, bool trickle)
{
	size_t i = 1, n, k, m;
	bool backend;

	memset(f, 0, sizeof(*f));
	f->params.protocol = FUZZ_PROTOCOL;
	f->params.starttls = (data[0] & 3) != 2;
	f->params.optional = (data[0] & 3) == 1;
	f->params.server_name = "mx.example.org";
	f->params.greeting = "Server ready.";
	f->d = dialog_new(&f->params);
	CHECK(f->d != NULL);
	if (f->params.starttls) {
		dialog_greet(f->d, &f->out);
		CHECK(f->out.to_client_len > 0);
		deliver(f, &f->out);
		f->phase = PLAIN;
	} else {
		tls_up(f);
	}

	while (i < size && f->phase != DONE) {
		backend = (data[i] & 0x80) != 0;
		n = data[i] & 0x7f;
		i++;
		if (n > size - i)
			n = size - i;
		if (f->phase == HANDSHAKE)
			tls_up(f);
		if (trickle) {
			for (k = 0; k < n; k++)
				arrive(f, backend, data + i + k, 1);
		} else if (!backend) {
			arrive(f, backend, data + i, n);
		} else {
			/* A line at a time: see the comment at the top. */
			for (k = 0; k < n; k = k + m) {
				for (m = 1;
				     k + m < n && data[i + k + m - 1] != '\n';
				     m++)
					;
				arrive(f, backend, data + i + k, m);
			}
		}
		i += n;
	}
	dialog_free(f->d);
	f->d = NULL;
	free(f->cin.p);
	free(f->bin.p);
}

static void
release(struct fuzz *f)
{
	free(f->client.p);
	free(f->backend.p);
	free(f->events.p);
}

static bool
same(const struct bytes *a, const struct bytes *b)
{
	return a->len == b->len &&
	    (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void
show_bytes(const char *what, const struct bytes *b)
{
	size_t i;
	unsigned char c;

	fprintf(stderr, "  %s: \"", what);
	for (i = 0; i < b->len; i++) {
		c = (unsigned char)b->p[i];
		if (c == '\r')
			fputs("\\r", stderr);
		else if (c == '\n')
			fputs("\\n", stderr);
		else if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"')
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fprintf(stderr, "\"\n");
}

static void
show(const char *how, const struct fuzz *f)
{
	fprintf(stderr, "%s:\n", how);
	show_bytes("events ", &f->events);
	show_bytes("client ", &f->client);
	show_bytes("backend", &f->backend);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz whole, bytes;

	if (size < 1)
		return 0;
	/* Input arriving in other pieces must not change what happens
	 * (the dialogue consumes whole lines only). */
	run(&whole, data, size, false);
	run(&bytes, data, size, true);
	if (!same(&whole.events, &bytes.events) ||
	    !same(&whole.client, &bytes.client) ||
	    !same(&whole.backend, &bytes.backend)) {
		show("records whole", &whole);
		show("byte by byte", &bytes);
	}
	CHECK(same(&whole.events, &bytes.events));
	CHECK(same(&whole.client, &bytes.client));
	CHECK(same(&whole.backend, &bytes.backend));
	release(&whole);
	release(&bytes);
	return 0;
}
