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
 * The driver plays the session: after DIALOG_STARTTLS the rest of the
 * record is discarded and the handshake completes before the next record
 * (at the start on implicit listeners), the backend is connected then or
 * on DIALOG_CONNECT (backend bytes before are dropped), unconsumed bytes
 * are offered again with more appended, and after DIALOG_OPAQUE or
 * DIALOG_CLOSE the dialogue is freed. Each script runs twice, client
 * records whole and byte by byte, and both runs must give the same bytes
 * to each side and the same events. Backend records go in a line at a
 * time in the first run: backend lines that arrive while a client command
 * waits for the greeting or a reply are a race no lock-step filter can
 * decide (relayed as unsolicited, or taken as the reply, depending on
 * where the read ended), and the oracle must not report it. Besides the
 * sanitizers it checks the contract and aborts when it is broken: a call
 * consumes at most what it was given and always sets an event, client input is
 * not used while dialog_waiting(), nothing reaches the backend before it is
 * connected, the last plaintext bytes before TLS are the STARTTLS reply
 * (research/protocols.md §14 E45), CONNECT comes at most once and never
 * with a backend, and no call loops without progress.
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

/* One run of a script: the session's part, and what came out. */
struct fuzz {
	struct dialog_params params;
	struct dialog *d;
	struct dialog_sink sink;
	struct bytes cin, bin;        /* unconsumed input */
	struct bytes client, backend; /* what each side got */
	struct bytes events;          /* S C O X, and T for the handshake */
	bool backend_up;
	bool connected_once;
	bool handshake; /* after DIALOG_STARTTLS, until the next record */
	bool done;
};

static void
event(struct fuzz *f, char e)
{
	bytes_add(&f->events, &e, 1);
}

static void
on_to_client(void *ctx, const char *p, size_t n)
{
	struct fuzz *f = ctx;

	CHECK(!f->done && !f->handshake);
	bytes_add(&f->client, p, n);
}

static void
on_to_backend(void *ctx, const char *p, size_t n)
{
	struct fuzz *f = ctx;

	CHECK(!f->done && !f->handshake);
	CHECK(f->backend_up);
	bytes_add(&f->backend, p, n);
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
	f->handshake = false;
	dialog_tls_started(f->d);
	f->backend_up = true;
}

static void
finish(struct fuzz *f)
{
	enum dialog_end end = dialog_end(f->d);

	if (end == DIALOG_END_PROTOCOL || end == DIALOG_END_BACKEND)
		CHECK(dialog_error(f->d) != NULL);
	dialog_free(f->d);
	f->d = NULL;
	f->done = true;
}

/* Offers one side's unconsumed bytes once; whether anything happened. */
static bool
offer(struct fuzz *f, bool from_client)
{
	struct bytes *in = from_client ? &f->cin : &f->bin;
	enum dialog_event ev = (enum dialog_event)0x5a5a;
	size_t c0 = f->client.len, b0 = f->backend.len, n;
	bool waiting;

	if (in->len == 0 || (!from_client && !f->backend_up))
		return false;
	waiting = dialog_waiting(f->d);
	if (from_client)
		n = dialog_client(f->d, in->p, in->len, &f->sink, &ev);
	else
		n = dialog_backend(f->d, in->p, in->len, &f->sink, &ev);
	CHECK(n <= in->len);
	if (from_client && waiting)
		CHECK(n == 0 && f->client.len == c0 && f->backend.len == b0);
	bytes_drop(in, n);
	switch (ev) {
	case DIALOG_CONTINUE:
		return n > 0;
	case DIALOG_STARTTLS:
		CHECK(from_client);
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
		f->handshake = true;
		return true;
	case DIALOG_CONNECT:
		CHECK(from_client);
		CHECK(!f->backend_up && !f->connected_once);
		event(f, 'C');
		f->connected_once = true;
		f->backend_up = true;
		return true;
	case DIALOG_OPAQUE:
		event(f, 'O');
		finish(f);
		return true;
	case DIALOG_CLOSE:
		event(f, 'X');
		finish(f);
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

	while (progress && !f->done && !f->handshake) {
		progress = offer(f, true);
		if (!f->done && !f->handshake && offer(f, false))
			progress = true;
		CHECK(++guard < 100000);
	}
}

static void
arrive(struct fuzz *f, bool backend, const uint8_t *p, size_t n)
{
	if (f->done || f->handshake)
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
	f->sink.ctx = f;
	f->sink.to_client = on_to_client;
	f->sink.to_backend = on_to_backend;
	f->d = dialog_new(&f->params);
	CHECK(f->d != NULL);
	dialog_start(f->d, &f->sink);
	CHECK(f->params.starttls ? f->client.len > 0 : f->client.len == 0);
	if (!f->params.starttls)
		tls_up(f);

	while (i < size && !f->done) {
		backend = (data[i] & 0x80) != 0;
		n = data[i] & 0x7f;
		i++;
		if (n > size - i)
			n = size - i;
		if (f->handshake)
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
	if (!f->done) {
		(void)dialog_stats(f->d);
		dialog_free(f->d);
		f->d = NULL;
	}
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
