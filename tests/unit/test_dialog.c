/*
 * dialog: the mail dialogue until authentication, checked against the
 * exact bytes of docs/dialogue.md and the attack cases of
 * research/protocols.md §14 (test_caseNN_* carries the case number).
 *
 * Every case is a script: client bytes, backend bytes, the end of the TLS
 * handshake. It runs three ways, each input whole, byte by byte, and
 * split in two at every offset, and must give the same bytes and events
 * each time. The driver behaves like the session: unconsumed bytes are
 * offered again with more appended, both sides are offered again after
 * any progress, the client's unconsumed bytes are discarded (and
 * counted) after PROTO_STARTTLS, and after PROTO_OPAQUE or PROTO_CLOSE
 * the module is never called again (the driver relays or drops instead).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailproxy/dialog.h"

#include "../support/bytes.h"

#define NAME     "mx.example.org"
#define GREETING "Test ready."

/* In an expected client output: any text up to the end of the line (the
 * reason in a protocol error, which docs/dialogue.md leaves open). */
#define ANY    "\001"
#define ANY_CH '\001'

/* mailproxy's own lines, docs/dialogue.md. */
#define IMAP_HELLO                                                             \
	"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Test ready.\r\n"
#define IMAP_PRIV                                                              \
	" NO [PRIVACYREQUIRED] Cleartext authentication disallowed on "        \
	"non-secure (SSL/TLS) connections.\r\n"
#define IMAP_NOTYET    " BAD Command not allowed before STARTTLS.\r\n"
#define IMAP_LITERAL   " BAD Literals are not accepted before STARTTLS.\r\n"
#define IMAP_BADTAG    "* BAD Invalid tag.\r\n"
#define IMAP_BEGIN     " OK Begin TLS negotiation now.\r\n"
#define IMAP_ACTIVE    " BAD TLS is already active.\r\n"
#define IMAP_IDNIL     "* ID NIL\r\n"
#define IMAP_PROTO_ERR "* BYE Protocol error: " ANY ".\r\n"
#define IMAP_UNAVAIL   "* BYE [UNAVAILABLE] Backend server not available.\r\n"

#define POP3_HELLO "+OK Test ready.\r\n"
#define POP3_PRIV                                                              \
	"-ERR [AUTH] Cleartext authentication disallowed on non-secure "       \
	"(SSL/TLS) connections.\r\n"
#define POP3_NOTYET    "-ERR Command not allowed before STLS.\r\n"
#define POP3_UNKNOWN   "-ERR Unknown command.\r\n"
#define POP3_BEGIN     "+OK Begin TLS negotiation now.\r\n"
#define POP3_ACTIVE    "-ERR TLS is already active.\r\n"
#define POP3_PROTO_ERR "-ERR Protocol error: " ANY ".\r\n"
#define POP3_CAPA      "+OK Capability list follows\r\nCAPA\r\nSTLS\r\n.\r\n"

#define SMTP_HELLO "220 mx.example.org ESMTP Test ready.\r\n"
#define SMTP_EHLO                                                              \
	"250-mx.example.org\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"  \
	"250 STARTTLS\r\n"
#define SMTP_OK        "250 2.0.0 Ok\r\n"
#define SMTP_NOTYET    "530 5.7.0 Must issue a STARTTLS command first\r\n"
#define SMTP_NOAUTH    "503 5.5.1 Error: authentication not enabled\r\n"
#define SMTP_NOXCLIENT "550 5.7.0 Error: insufficient authorization\r\n"
#define SMTP_BEGIN     "220 2.0.0 Ready to start TLS\r\n"
#define SMTP_ACTIVE    "554 5.5.1 Error: TLS already active\r\n"
#define SMTP_PROTO_ERR "421 4.7.0 mx.example.org Protocol error: " ANY "\r\n"

/* Backends' greetings (research/protocols.md §4.3, §5.3, §6.4). */
#define IMAP_BACKEND_HELLO                                                     \
	"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "   \
	"LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n"
#define POP3_BACKEND_HELLO "+OK Dovecot ready.\r\n"
#define SMTP_BACKEND_HELLO "220 backend.example ESMTP Postfix\r\n"

enum step_kind {
	STEP_END,
	STEP_CLIENT,  /* bytes from the client */
	STEP_BACKEND, /* bytes from the backend */
	STEP_TLS,     /* the client's handshake completed */
};

struct step {
	enum step_kind kind;
	const char *in;
	size_t len; /* of in; 0: strlen(in) */
	/* What the client gets during this step (ANY allowed), what the
	 * backend gets (exact), the events given: S STARTTLS, C CONNECT,
	 * O OPAQUE, X CLOSE. NULL: nothing. */
	const char *client;
	const char *backend;
	const char *events;
	size_t backend_len; /* of backend; 0: strlen(backend) */
	/* The client's output of this step is checked with the next step's:
	 * for replies the module may relay line by line or hold whole. */
	bool defer;
};

#define CLIENT(...)                                                            \
	{                                                                      \
		.kind = STEP_CLIENT, __VA_ARGS__                               \
	}
#define BACKEND(...)                                                           \
	{                                                                      \
		.kind = STEP_BACKEND, __VA_ARGS__                              \
	}
#define TLS_UP                                                                 \
	{                                                                      \
		.kind = STEP_TLS                                               \
	}

/* The usual way to TLS on each STARTTLS listener; the backend's greeting
 * is swallowed (the client already has mailproxy's). */
#define IMAP_TLS                                                               \
	CLIENT(.in = "s STARTTLS\r\n", .client = "s" IMAP_BEGIN,               \
	    .events = "S"),                                                    \
	    TLS_UP, BACKEND(.in = IMAP_BACKEND_HELLO)
#define POP3_TLS                                                               \
	CLIENT(.in = "STLS\r\n", .client = POP3_BEGIN, .events = "S"), TLS_UP, \
	    BACKEND(.in = POP3_BACKEND_HELLO)
#define SMTP_TLS                                                               \
	CLIENT(.in = "STARTTLS\r\n", .client = SMTP_BEGIN, .events = "S"),     \
	    TLS_UP, BACKEND(.in = SMTP_BACKEND_HELLO)

enum listener {
	L_STARTTLS, /* tls = starttls, starttls = required */
	L_OPTIONAL, /* tls = starttls, starttls = optional */
	L_IMPLICIT, /* tls = implicit */
};

#define MAX_STEPS 32

struct dcase {
	enum proto protocol;
	enum listener listener;
	struct step steps[MAX_STEPS];
	/* At the end. */
	enum proto_end end;
	unsigned refused;
	unsigned long discarded;
	const char *error; /* the reason given with PROTO_CLOSE */
};

enum trickle {
	WHOLE,    /* each step's input in one piece */
	BYTES,    /* one byte at a time */
	SPLIT_AT, /* two pieces, split at an offset */
};

enum hphase {
	H_PLAIN,     /* before TLS: dialog_plain() */
	H_HANDSHAKE, /* before the TLS step */
	H_GREETING,  /* the backend's greeting: dialog_greeting() */
	H_DIALOG,    /* dialog_client() and dialog_backend() */
	H_OPAQUE,    /* relaying untouched */
	H_CLOSED,
};

/* One run of a case: the session's part. */
struct harness {
	const struct dcase *c;
	struct proto_params params;
	char label[64];
	int step;
	struct dialog *d;
	struct proto_out out;
	struct bytes client, backend, events; /* what each got */
	struct bytes cin, bin;                /* unconsumed input */
	size_t marks[MAX_STEPS];              /* client.len, checked */
	enum hphase phase;
	bool backend_up;
	unsigned long discarded;
	enum proto_end end; /* given with PROTO_CLOSE */
	const char *error;
};

/* A failing case ends its runs and the test goes on with the next case,
 * so that one test reports every failing case; it fails at the end. */
static jmp_buf case_jmp;
static bool case_running;
static size_t case_no;
static struct harness *live_ref, *live_run; /* freed after a failure */

static void
case_fail(void)
{
	if (case_running)
		longjmp(case_jmp, 1);
	fail();
}

static void
print_bytes(const char *what, const char *p, size_t n)
{
	char *s = malloc(n * 5 + 8);
	size_t i, o = 0;

	assert_non_null(s);
	for (i = 0; i < n && o < 1500; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch == '\r')
			o += (size_t)sprintf(s + o, "\\r");
		else if (ch == '\n')
			o += (size_t)sprintf(s + o, "\\n");
		else if (ch == ANY_CH)
			o += (size_t)sprintf(s + o, "<ANY>");
		else if (ch < 0x20 || ch >= 0x7f || ch == '\\')
			o += (size_t)sprintf(s + o, "\\x%02x", ch);
		else
			s[o++] = (char)ch;
	}
	if (i < n)
		o += (size_t)sprintf(s + o, "...");
	s[o] = '\0';
	print_error("    %s: \"%s\" (%zu bytes)\n", what, s, n);
	free(s);
}

static void
hfail(const struct harness *h, const char *why)
{
	print_error("[%s] step %d: %s\n", h->label, h->step + 1, why);
	case_fail();
}

/* want is NUL-terminated and may hold ANY; got is n bytes. */
static bool
matches(const char *want, const char *got, size_t n)
{
	size_t i;

	while (*want != '\0' && *want != ANY_CH) {
		if (n == 0 || *want != *got)
			return false;
		want++;
		got++;
		n--;
	}
	if (*want == '\0')
		return n == 0;
	for (i = 0;; i++) {
		if (matches(want + 1, got + i, n - i))
			return true;
		if (i == n || got[i] == '\r' || got[i] == '\n')
			return false;
	}
}

static void
check_out(const struct harness *h, const char *what, const char *want,
    const char *got, size_t n)
{
	char why[128];

	if (want == NULL)
		want = "";
	if (matches(want, got, n))
		return;
	snprintf(why, sizeof(why), "unexpected output to the %s", what);
	print_error("[%s] step %d: %s\n", h->label, h->step + 1, why);
	print_bytes("expected", want, strlen(want));
	print_bytes("got     ", got, n);
	case_fail();
}

/* research/protocols.md §14 E45: the last plaintext byte before TLS is
 * the LF of the STARTTLS reply, even within the call that wrote it. */
static void
check_starttls_reply(const struct harness *h)
{
	static const char *const replies[] = {
	    [PROTO_IMAP] = IMAP_BEGIN,
	    [PROTO_POP3] = POP3_BEGIN,
	    [PROTO_SMTP] = SMTP_BEGIN,
	};
	const char *r = replies[h->c->protocol];
	size_t n = strlen(r);

	if (h->client.len < n ||
	    memcmp(h->client.p + h->client.len - n, r, n) != 0) {
		print_bytes("client got",
		    h->client.p +
		        (h->client.len > 200 ? h->client.len - 200 : 0),
		    h->client.len > 200 ? 200 : h->client.len);
		hfail(h,
		    "PROTO_STARTTLS but the client's last line is not "
		    "the STARTTLS reply");
	}
}

static void
event(struct harness *h, char e)
{
	bytes_add(&h->events, &e, 1);
}

/* Moves what one step wrote, as the session does. */
static void
deliver(struct harness *h, const struct proto_out *o)
{
	if (o->to_client_len > 0) {
		if (h->phase != H_PLAIN && h->phase != H_GREETING &&
		    h->phase != H_DIALOG)
			hfail(h, "wrote to the client outside a call");
		bytes_add(&h->client, o->to_client, o->to_client_len);
	}
	if (o->to_backend_len > 0) {
		if (!h->backend_up) {
			print_bytes("bytes", o->to_backend, o->to_backend_len);
			hfail(h,
			    "wrote to the backend before it was connected");
		}
		bytes_add(&h->backend, o->to_backend, o->to_backend_len);
	}
}

/* Offers one side's unconsumed bytes once. Returns whether anything
 * happened (bytes consumed or an event). */
static bool
offer(struct harness *h, bool from_client)
{
	struct bytes *in = from_client ? &h->cin : &h->bin;
	struct proto_out *o = &h->out;
	size_t n;
	bool waiting = false;

	if (in->len == 0)
		return false;
	memset(o, 0x5a, offsetof(struct proto_out, text));
	switch (h->phase) {
	case H_PLAIN:
		if (!from_client)
			return false;
		n = dialog_plain(h->d, in->p, in->len, o);
		break;
	case H_GREETING:
		/* The client's commands wait for the greeting. */
		if (from_client)
			return false;
		n = dialog_greeting(h->d, in->p, in->len, o);
		break;
	case H_DIALOG:
		if (from_client) {
			waiting = dialog_wait(h->d) != PROTO_WAIT_CLIENT;
			n = dialog_client(h->d, in->p, in->len, o);
		} else {
			n = dialog_backend(h->d, in->p, in->len, o);
		}
		break;
	case H_HANDSHAKE:
	case H_OPAQUE:
	case H_CLOSED:
	default:
		return false;
	}
	if (n > in->len)
		hfail(h, "consumed more than it was given");
	if (waiting && (n > 0 || o->to_client_len > 0 || o->to_backend_len > 0))
		hfail(h, "client input used while dialog_wait() said held");
	deliver(h, o);
	bytes_drop(in, n);
	switch (o->event) {
	case PROTO_CONTINUE:
		return n > 0;
	case PROTO_STARTTLS:
		if (h->phase != H_PLAIN)
			hfail(h, "PROTO_STARTTLS after TLS");
		check_starttls_reply(h);
		event(h, 'S');
		/* The session discards and counts what follows. */
		h->discarded += h->cin.len;
		dialog_stats(h->d)->discarded += h->cin.len;
		h->cin.len = 0;
		h->phase = H_HANDSHAKE;
		return true;
	case PROTO_CONNECT:
		if (h->phase != H_PLAIN || h->backend_up)
			hfail(h, "PROTO_CONNECT out of place");
		event(h, 'C');
		h->backend_up = true;
		h->phase = H_GREETING;
		return true;
	case PROTO_GREETED:
		if (h->phase != H_GREETING)
			hfail(h, "PROTO_GREETED outside the greeting");
		h->phase = H_DIALOG;
		return true;
	case PROTO_OPAQUE:
		if (h->phase != H_DIALOG)
			hfail(h, "PROTO_OPAQUE before the dialogue");
		event(h, 'O');
		h->phase = H_OPAQUE;
		/* The unconsumed rest of both inputs goes through untouched. */
		bytes_add(&h->backend, h->cin.p, h->cin.len);
		bytes_add(&h->client, h->bin.p, h->bin.len);
		h->cin.len = h->bin.len = 0;
		return true;
	case PROTO_CLOSE:
		event(h, 'X');
		h->phase = H_CLOSED;
		h->end = o->end;
		h->error = o->error;
		return true;
	}
	hfail(h, "no valid event set");
	return false;
}

static void
pump(struct harness *h)
{
	unsigned guard = 0;
	bool progress = true;

	while (progress && h->phase != H_HANDSHAKE && h->phase != H_OPAQUE &&
	    h->phase != H_CLOSED) {
		progress = offer(h, false);
		if (offer(h, true))
			progress = true;
		if (++guard > 200000)
			hfail(h, "livelock: events without progress");
	}
}

static void
arrive(struct harness *h, bool from_client, const char *p, size_t n)
{
	switch (h->phase) {
	case H_PLAIN:
	case H_GREETING:
	case H_DIALOG:
		if (!from_client && !h->backend_up)
			hfail(h, "script: backend bytes, no backend connected");
		bytes_add(from_client ? &h->cin : &h->bin, p, n);
		pump(h);
		break;
	case H_HANDSHAKE:
		/* These go to the TLS engine, never to the dialogue. */
		if (!from_client)
			hfail(h, "script: backend bytes during the handshake");
		h->discarded += n;
		dialog_stats(h->d)->discarded += n;
		break;
	case H_OPAQUE:
		bytes_add(from_client ? &h->backend : &h->client, p, n);
		break;
	case H_CLOSED:
		break;
	}
}

static void
tls_up(struct harness *h)
{
	if (h->phase != H_HANDSHAKE || h->backend_up)
		hfail(h, "script: TLS step out of place");
	h->phase = H_GREETING;
	h->backend_up = true;
	dialog_tls_started(h->d);
	pump(h);
}

static size_t
step_len(const struct step *s)
{
	if (s->in == NULL)
		return 0;
	return s->len > 0 ? s->len : strlen(s->in);
}

static void
run_step(struct harness *h, const struct step *s, enum trickle how, size_t at)
{
	size_t len = step_len(s), i;
	bool from_client = s->kind == STEP_CLIENT;

	if (s->kind == STEP_TLS) {
		tls_up(h);
		return;
	}
	switch (how) {
	case WHOLE:
		arrive(h, from_client, s->in, len);
		break;
	case BYTES:
		for (i = 0; i < len; i++)
			arrive(h, from_client, s->in + i, 1);
		break;
	case SPLIT_AT:
		if (at == 0 || at >= len) {
			arrive(h, from_client, s->in, len);
			break;
		}
		arrive(h, from_client, s->in, at);
		arrive(h, from_client, s->in + at, len - at);
		break;
	}
}

static struct harness *
run_once(const struct dcase *c, enum trickle how, size_t at)
{
	static const char *const hellos[] = {
	    [PROTO_IMAP] = IMAP_HELLO,
	    [PROTO_POP3] = POP3_HELLO,
	    [PROTO_SMTP] = SMTP_HELLO,
	};
	struct harness *h = calloc(1, sizeof(*h));
	size_t cmark = 0, b0, e0, wlen;
	const struct step *s;
	const char *want;
	bool tls = false;
	char why[160];

	assert_non_null(h);
	h->c = c;
	h->params.protocol = c->protocol;
	h->params.starttls = c->listener != L_IMPLICIT;
	h->params.optional = c->listener == L_OPTIONAL;
	h->params.server_name = NAME;
	h->params.greeting = GREETING;
	live_run = h;
	if (how == WHOLE)
		snprintf(h->label, sizeof(h->label), "case %zu, whole",
		    case_no);
	else if (how == BYTES)
		snprintf(h->label, sizeof(h->label), "case %zu, byte by byte",
		    case_no);
	else
		snprintf(h->label, sizeof(h->label), "case %zu, split at %zu",
		    case_no, at);
	h->d = dialog_new(&h->params);
	assert_non_null(h->d);

	h->step = -1;
	h->phase = H_HANDSHAKE;
	if (c->listener != L_IMPLICIT) {
		dialog_greet(h->d, &h->out);
		h->phase = H_PLAIN;
		deliver(h, &h->out);
	}
	check_out(h, "client (dialog_greet)",
	    c->listener == L_IMPLICIT ? "" : hellos[c->protocol], h->client.p,
	    h->client.len);
	cmark = h->client.len;

	for (h->step = 0; h->step < MAX_STEPS; h->step++) {
		s = &c->steps[h->step];
		if (s->kind == STEP_END)
			break;
		if (s->kind == STEP_TLS)
			tls = true;
		b0 = h->backend.len;
		e0 = h->events.len;
		run_step(h, s, how, at);
		if (!s->defer) {
			check_out(h, "client", s->client, h->client.p + cmark,
			    h->client.len - cmark);
			cmark = h->client.len;
		}
		h->marks[h->step] = cmark;
		want = s->backend != NULL ? s->backend : "";
		wlen = s->backend_len > 0 ? s->backend_len : strlen(want);
		if (h->backend.len - b0 != wlen ||
		    (wlen > 0 && memcmp(h->backend.p + b0, want, wlen) != 0)) {
			print_error("[%s] step %d: unexpected output to the "
			            "backend\n",
			    h->label, h->step + 1);
			print_bytes("expected", want, wlen);
			print_bytes("got     ", h->backend.p + b0,
			    h->backend.len - b0);
			case_fail();
		}
		check_out(h, "events", s->events, h->events.p + e0,
		    h->events.len - e0);
	}

	h->step = MAX_STEPS;
	snprintf(h->label + strlen(h->label),
	    sizeof(h->label) - strlen(h->label), ", at the end");
	if (h->end != c->end) {
		snprintf(why, sizeof(why), "end %d, expected %d", (int)h->end,
		    (int)c->end);
		hfail(h, why);
	}
	if (dialog_stats(h->d)->refused != c->refused) {
		snprintf(why, sizeof(why), "refused %u, expected %u",
		    dialog_stats(h->d)->refused, c->refused);
		hfail(h, why);
	}
	if (h->discarded != c->discarded) {
		snprintf(why, sizeof(why), "discarded %lu, expected %lu",
		    h->discarded, c->discarded);
		hfail(h, why);
	}
	if (dialog_stats(h->d)->starttls != (tls && c->listener != L_IMPLICIT))
		hfail(h, "dialog_stats()->starttls wrong");
	if ((c->end == PROTO_END_PROTOCOL || c->end == PROTO_END_BACKEND) &&
	    h->error == NULL)
		hfail(h, "closed with an error but no reason");
	if (c->error != NULL &&
	    (h->error == NULL || strcmp(h->error, c->error) != 0)) {
		snprintf(why, sizeof(why), "error \"%s\", expected \"%s\"",
		    h->error ? h->error : "(null)", c->error);
		hfail(h, why);
	}
	dialog_free(h->d);
	h->d = NULL;
	bytes_free(&h->cin);
	bytes_free(&h->bin);
	return h;
}

static void
harness_free(struct harness *h)
{
	if (h == NULL)
		return;
	dialog_free(h->d);
	bytes_free(&h->cin);
	bytes_free(&h->bin);
	bytes_free(&h->client);
	bytes_free(&h->backend);
	bytes_free(&h->events);
	free(h);
}

static bool
same_bytes(const struct bytes *a, const struct bytes *b)
{
	return a->len == b->len &&
	    (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void
same_as_whole(const struct harness *ref, const struct harness *h)
{
	if (!same_bytes(&h->client, &ref->client) ||
	    !same_bytes(&h->backend, &ref->backend) ||
	    !same_bytes(&h->events, &ref->events) ||
	    memcmp(h->marks, ref->marks, sizeof(h->marks)) != 0) {
		print_error("[%s] differs from the whole run\n", h->label);
		print_bytes("whole client", ref->client.p, ref->client.len);
		print_bytes("this client ", h->client.p, h->client.len);
		print_bytes("whole backend", ref->backend.p, ref->backend.len);
		print_bytes("this backend ", h->backend.p, h->backend.len);
		print_bytes("whole events", ref->events.p, ref->events.len);
		print_bytes("this events ", h->events.p, h->events.len);
		case_fail();
	}
}

/* Long inputs are split at every offset near either end of a step and
 * at every 97th in between, to keep the runs short. */
static bool
split_worth(const struct dcase *c, size_t at)
{
	size_t i, len;
	bool any = false;

	for (i = 0; i < MAX_STEPS && c->steps[i].kind != STEP_END; i++) {
		len = step_len(&c->steps[i]);
		if (at >= len)
			continue;
		any = true;
		if (len <= 1024 || at < 256 || len - at < 256)
			return true;
	}
	return any && at % 97 == 0;
}

static void
run_case(const struct dcase *c)
{
	struct harness *ref, *h;
	size_t at, max = 0, i;

	for (i = 0; i < MAX_STEPS && c->steps[i].kind != STEP_END; i++)
		if (step_len(&c->steps[i]) > max)
			max = step_len(&c->steps[i]);
	ref = run_once(c, WHOLE, 0);
	live_ref = ref;
	h = run_once(c, BYTES, 0);
	same_as_whole(ref, h);
	harness_free(h);
	live_run = NULL;
	for (at = 1; at < max; at++) {
		if (!split_worth(c, at))
			continue;
		h = run_once(c, SPLIT_AT, at);
		same_as_whole(ref, h);
		harness_free(h);
		live_run = NULL;
	}
	harness_free(ref);
	live_ref = NULL;
}

/* Returns how many cases failed (each one reported). */
static unsigned
run_cases(const struct dcase *cases, size_t n)
{
	volatile unsigned failed = 0;
	volatile size_t i;

	for (i = 0; i < n; i++) {
		case_no = i + 1;
		case_running = true;
		if (setjmp(case_jmp) == 0) {
			run_case(&cases[i]);
		} else {
			failed++;
			if (live_run != live_ref)
				harness_free(live_run);
			harness_free(live_ref);
			live_run = live_ref = NULL;
		}
		case_running = false;
	}
	if (failed > 0)
		print_error("%u of %zu cases failed\n", failed, n);
	return failed;
}

#define COUNT(cases)     (sizeof(cases) / sizeof(cases[0]))
#define RUN_CASES(cases) assert_int_equal(run_cases(cases, COUNT(cases)), 0)

/* head, then fill up to total bytes, CRLF included. */
static char *
line_of(const char *head, size_t total, char fill)
{
	char *s = malloc(total + 1);
	size_t n = strlen(head);

	assert_non_null(s);
	assert_true(total >= n + 2);
	memcpy(s, head, n);
	memset(s + n, fill, total - n - 2);
	memcpy(s + total - 2, "\r\n", 3);
	return s;
}

/*
 * A. STARTTLS buffering and command injection.
 */

static void
test_case01_imap_starttls_injection_discarded(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a STARTTLS\r\nXKQZP NOOP\r\n",
	                    .client = "a" IMAP_BEGIN, .events = "S"),
	                TLS_UP,
	                BACKEND(.in = IMAP_BACKEND_HELLO),
	                CLIENT(.in = "c NOOP\r\n", .backend = "c NOOP\r\n"),
	                BACKEND(.in = "c OK NOOP completed.\r\n",
	                    .client = "c OK NOOP completed.\r\n"),
	            },
	        .discarded = sizeof("XKQZP NOOP\r\n") - 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case02_pop3_stls_injection_discarded(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "STLS\r\nCAPA\r\n", .client = POP3_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                /* Nothing unprompted inside TLS. */
	                BACKEND(.in = POP3_BACKEND_HELLO),
	                CLIENT(.in = "NOOP\r\n", .backend = "NOOP\r\n"),
	            },
	        .discarded = 6,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case03_smtp_starttls_injection_discarded(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "EHLO t\r\n", .client = SMTP_EHLO),
	                CLIENT(.in = "STARTTLS\r\nEHLO "
	                             "commandinjectiontester\r\n",
	                    .client = SMTP_BEGIN, .events = "S"),
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO),
	                /* No unsolicited 250: FAKE goes to the backend,
	                 * whose 5xx the client gets. */
	                CLIENT(.in = "FAKE t\r\n", .backend = "FAKE t\r\n"),
	                BACKEND(.in = "502 5.5.2 Error: command not "
	                              "recognized\r\n",
	                    .client = "502 5.5.2 Error: command not "
	                              "recognized\r\n"),
	            },
	        .discarded = sizeof("EHLO commandinjectiontester\r\n") - 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case04_starttls_split_across_reads(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a START"),
	                CLIENT(.in = "TLS\r\nb NOOP\r\n",
	                    .client = "a" IMAP_BEGIN, .events = "S"),
	                TLS_UP,
	                BACKEND(.in = IMAP_BACKEND_HELLO),
	            },
	        .discarded = 8,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "ST"),
	                CLIENT(.in = "LS\r\nCAPA\r\n", .client = POP3_BEGIN,
	                    .events = "S"),
	            },
	        .discarded = 6,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "STARTTLS\r"),
	                CLIENT(.in = "\nEHLO x\r\n", .client = SMTP_BEGIN,
	                    .events = "S"),
	            },
	        .discarded = 8,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case06_imap_credential_theft_discarded(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a STARTTLS\r\nb LOGIN attacker pw\r\n"
	                             "c APPEND INBOX {300}\r\n",
	                    .client = "a" IMAP_BEGIN, .events = "S"),
	                TLS_UP,
	                BACKEND(.in = IMAP_BACKEND_HELLO),
	                CLIENT(.in = "d CAPABILITY\r\n",
	                    .backend = "d CAPABILITY\r\n"),
	            },
	        .discarded = sizeof("b LOGIN attacker pw\r\n"
	                            "c APPEND INBOX {300}\r\n") -
	            1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case07_smtp_credential_theft_discarded(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "STARTTLS\r\nMAIL FROM:<a@x>\r\n"
	                             "RCPT TO:<attacker@x>\r\nDATA\r\n",
	                    .client = SMTP_BEGIN, .events = "S"),
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO),
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	            },
	        .discarded = sizeof("MAIL FROM:<a@x>\r\nRCPT "
	                            "TO:<attacker@x>\r\nDATA\r\n") -
	            1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case09_pipelined_group_ending_in_starttls(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "NOOP\r\nSTARTTLS\r\n",
	                    .client = SMTP_OK SMTP_BEGIN, .events = "S"),
	            },
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a CAPABILITY\r\nb STARTTLS\r\n",
	                    .client = "* CAPABILITY IMAP4rev1 STARTTLS "
	                              "LOGINDISABLED\r\n"
	                              "a OK CAPABILITY completed.\r\n"
	                              "b" IMAP_BEGIN,
	                    .events = "S"),
	            },
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "CAPA\r\nSTLS\r\n",
	                    .client = POP3_CAPA POP3_BEGIN, .events = "S"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * B. Policy before TLS, session fixation, STARTTLS twice.
 */

static void
test_case10_imap_login_before_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a LOGIN u p\r\n",
	                    .client = "a" IMAP_PRIV),
	                CLIENT(.in = "b login \"u\" \"p\"\r\n",
	                    .client = "b" IMAP_PRIV),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case11_imap_authenticate_before_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a AUTHENTICATE PLAIN dTEAdTEAcDE=\r\n",
	                    .client = "a" IMAP_PRIV),
	                /* Never a "+" continuation. */
	                CLIENT(.in = "b AUTHENTICATE PLAIN\r\n",
	                    .client = "b" IMAP_PRIV),
	                CLIENT(.in = "c NOOP\r\n",
	                    .client = "c OK NOOP completed.\r\n"),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case12_pop3_auth_commands_before_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "USER u\r\n", .client = POP3_PRIV),
	                CLIENT(.in = "PASS p\r\n", .client = POP3_PRIV),
	                CLIENT(.in = "APOP u d41d8cd98f00b204e9800998ecf8427e"
	                             "\r\n",
	                    .client = POP3_PRIV),
	                CLIENT(.in = "AUTH PLAIN\r\n", .client = POP3_PRIV),
	            },
	        .refused = 4,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case13_smtp_commands_before_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "EHLO client.example\r\n",
	                    .client = SMTP_EHLO),
	                CLIENT(.in = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .client = SMTP_NOTYET),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\n",
	                    .client = SMTP_NOTYET),
	                CLIENT(.in = "RCPT TO:<b@x>\r\n",
	                    .client = SMTP_NOTYET),
	                CLIENT(.in = "DATA\r\n", .client = SMTP_NOTYET),
	            },
	        .refused = 4,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "BDAT 10 LAST\r\n", .client = SMTP_NOTYET),
	                CLIENT(.in = "VRFY x\r\n", .client = SMTP_NOTYET),
	                CLIENT(.in = "HELP\r\n", .client = SMTP_NOTYET),
	            },
	        .refused = 3,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case14_smtp_optional_mail_connects_plaintext(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* EHLO answered by mailproxy, MAIL connects the backend,
	         * whose greeting is swallowed, the EHLO replayed and its
	         * reply swallowed, then MAIL goes; the session stays
	         * filtered (it never authenticates), so RCPT waits for
	         * MAIL's reply. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "EHLO client.example\r\n",
	                    .client = SMTP_EHLO),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n",
	                    .events = "C"),
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .backend = "EHLO client.example\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250-PIPELINING"
	                              "\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME"
	                              "\r\n",
	                    .backend = "MAIL FROM:<a@x>\r\n"),
	                BACKEND(.in = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
	                    .client = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
	                    .backend = "RCPT TO:<b@x>\r\n"),
	            },
	    },
	    {
	        /* The same with HELO, MAIL and the greeting in pieces. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "HELO client.example\r\n",
	                    .client = "250 mx.example.org\r\n"),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\n", .events = "C"),
	                BACKEND(.in = "220-backend.example ESMTP\r\n"),
	                BACKEND(.in = "220 Postfix\r\n",
	                    .backend = "HELO client.example\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .backend = "MAIL FROM:<a@x>\r\n"),
	            },
	    },
	    {
	        /* No AUTH in plaintext, before or after the backend is
	         * connected (research/protocols.md §14 B14). */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "EHLO c\r\n", .client = SMTP_EHLO),
	                CLIENT(.in = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .client = SMTP_NOAUTH),
	                CLIENT(.in = "VRFY x\r\n", .events = "C"),
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .backend = "VRFY x\r\n"),
	                BACKEND(.in = "252 2.0.0 x\r\n",
	                    .client = "252 2.0.0 x\r\n"),
	                CLIENT(.in = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .client = SMTP_NOAUTH),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\n",
	                    .backend = "MAIL FROM:<a@x>\r\n"),
	                BACKEND(.in = "250 2.1.0 Ok\r\n",
	                    .client = "250 2.1.0 Ok\r\n"),
	                CLIENT(.in = "XCLIENT ADDR=6.6.6.6\r\n",
	                    .client = SMTP_NOXCLIENT),
	            },
	        .refused = 3,
	    },
	    {
	        /* In plaintext with the backend connected: no STARTTLS (the
	         * backend link is plaintext too), no XCLIENT, and the
	         * backend's EHLO reply loses AUTH and STARTTLS. The 454 is
	         * not in docs/dialogue.md. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "RSET\r\nVRFY x\r\n", .client = SMTP_OK,
	                    .events = "C"),
	                /* No HELO/EHLO before: nothing to replay. */
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .backend = "VRFY x\r\n"),
	                BACKEND(.in = "252 2.0.0 x\r\n",
	                    .client = "252 2.0.0 x\r\n"),
	                CLIENT(.in = "STARTTLS\r\n",
	                    .client = "454 4.7.0 TLS not available due to "
	                              "local problem\r\n"),
	                CLIENT(.in = "XCLIENT ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250-AUTH PLAIN "
	                              "LOGIN\r\n250-AUTH=PLAIN\r\n250-STARTTLS"
	                              "\r\n250 8BITMIME\r\n",
	                    .client = "250-backend.example\r\n250 8BITMIME"
	                              "\r\n"),
	            },
	        .refused = 2,
	    },
	    {
	        /* A backend that does not greet with 220: relayed, closed. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "EHLO c\r\n", .client = SMTP_EHLO),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\n", .events = "C"),
	                BACKEND(.in = "554 5.3.2 backend.example busy\r\n",
	                    .client = "554 5.3.2 backend.example busy\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	    {
	        /* STARTTLS still works on an optional listener. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "EHLO c\r\n", .client = SMTP_EHLO),
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case15_imap_commands_before_tls_answered_locally(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a SELECT INBOX\r\n",
	                    .client = "a" IMAP_NOTYET),
	                CLIENT(.in = "b ENABLE UTF8=ACCEPT\r\n",
	                    .client = "b" IMAP_NOTYET),
	                CLIENT(.in = "c ID (\"x-originating-ip\" \"1.2.3.4\")"
	                             "\r\n",
	                    .client = IMAP_IDNIL "c OK ID completed.\r\n"),
	                CLIENT(.in = "d ID NIL\r\n",
	                    .client = IMAP_IDNIL "d OK ID completed.\r\n"),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case16_session_fixation_login_after_tls_only(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a LOGIN attacker pw\r\n",
	                    .client = "a" IMAP_PRIV),
	                CLIENT(.in = "b STARTTLS\r\n", .client = "b" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = IMAP_BACKEND_HELLO),
	                CLIENT(.in = "c LOGIN victim pw\r\n",
	                    .backend = "c LOGIN victim pw\r\n"),
	                BACKEND(.in = "c OK Logged in\r\n",
	                    .client = "c OK Logged in\r\n", .events = "O"),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case18_starttls_after_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a STARTTLS\r\n",
	                    .client = "a" IMAP_ACTIVE),
	                CLIENT(.in = "b NOOP\r\n", .backend = "b NOOP\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "STLS\r\n", .client = POP3_ACTIVE),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .client = "250 backend.example\r\n"),
	                CLIENT(.in = "STARTTLS\r\n", .client = SMTP_ACTIVE),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case19_starttls_on_implicit_listener_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1 STARTTLS "
	                              "AUTH=PLAIN] Dovecot ready.\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] "
	                              "Dovecot ready.\r\n"),
	                CLIENT(.in = "a STARTTLS\r\n",
	                    .client = "a" IMAP_ACTIVE),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = POP3_BACKEND_HELLO,
	                    .client = POP3_BACKEND_HELLO),
	                CLIENT(.in = "STLS\r\n", .client = POP3_ACTIVE),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .client = SMTP_BACKEND_HELLO),
	                CLIENT(.in = "STARTTLS\r\n", .client = SMTP_ACTIVE),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case20_starttls_with_arguments_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a STARTTLS x\r\n",
	                    .client = "a BAD STARTTLS takes no arguments.\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "STLS x\r\n",
	                    .client = "-ERR STLS takes no arguments.\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "STARTTLS x\r\n",
	                    .client = "501 5.5.4 Syntax: STARTTLS\r\n"),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * C. Capabilities and greetings from the backend, after TLS.
 */

static void
test_case24_imap_capability_codes_rewritten(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a NOOP\r\n", .backend = "a NOOP\r\n"),
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1 STARTTLS "
	                              "IDLE] Still here\r\n"
	                              "* CAPABILITY IMAP4rev1 XCLIENT IDLE\r\n"
	                              "a OK [CAPABILITY IMAP4rev1 STARTTLS "
	                              "AUTH=PLAIN] NOOP completed.\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev1 IDLE] Still "
	                              "here\r\n"
	                              "* CAPABILITY IMAP4rev1 IDLE\r\n"
	                              "a OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] "
	                              "NOOP completed.\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case25_imap_starttls_scram_plus_xclient_removed(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a CAPABILITY\r\n",
	                    .backend = "a CAPABILITY\r\n"),
	                BACKEND(.in = "* CAPABILITY IMAP4rev1 STARTTLS "
	                              "AUTH=SCRAM-SHA-256-PLUS "
	                              "AUTH=SCRAM-SHA-256 XCLIENT AUTH=PLAIN "
	                              "starttls\r\n"
	                              "a OK Pre-login capabilities listed.\r\n",
	                    .client =
	                        "* CAPABILITY IMAP4rev1 "
	                        "AUTH=SCRAM-SHA-256 AUTH=PLAIN\r\n"
	                        "a OK Pre-login capabilities listed.\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case26_smtp_ehlo_after_tls_rewritten(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO client.example\r\n",
	                    .backend = "EHLO client.example\r\n"),
	                BACKEND(.in = "250-backend.example\r\n"
	                              "250-PIPELINING\r\n"
	                              "250-XCLIENT NAME ADDR PROTO HELO\r\n"
	                              "250-AUTH PLAIN SCRAM-SHA-256-PLUS "
	                              "LOGIN\r\n"
	                              "250-AUTH=PLAIN LOGIN\r\n"
	                              "250-XFORWARD NAME ADDR PROTO HELO\r\n"
	                              "250-ENHANCEDSTATUSCODES\r\n"
	                              "250 STARTTLS\r\n",
	                    .client = "250-backend.example\r\n"
	                              "250-PIPELINING\r\n"
	                              "250-AUTH PLAIN LOGIN\r\n"
	                              "250-AUTH=PLAIN LOGIN\r\n"
	                              "250 ENHANCEDSTATUSCODES\r\n"),
	            },
	    },
	    {
	        /* Keywords are case-insensitive. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n"
	                              "250-StartTLS\r\n"
	                              "250-xclient ADDR\r\n"
	                              "250 SIZE 1000\r\n",
	                    .client = "250-backend.example\r\n"
	                              "250 SIZE 1000\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case27_smtp_single_line_and_bare_code_ehlo(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .client = "250 backend.example\r\n"),
	            },
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\nNOOP\r\n",
	                    .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250\r\n",
	                    .client = "250-backend.example\r\n250\r\n",
	                    .backend = "NOOP\r\n"),
	            },
	    },
	    {
	        /* Only the first line is left: it becomes the last. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250 STARTTLS\r\n",
	                    .client = "250 backend.example\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case28_smtp_ehlo_error_relayed_unchanged(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "500 5.5.2 Error: bad syntax\r\n",
	                    .client = "500 5.5.2 Error: bad syntax\r\n"),
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "554-5.7.1 no\r\n554 5.7.1 STARTTLS\r\n",
	                    .client = "554-5.7.1 no\r\n554 5.7.1 STARTTLS\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case29_pop3_capa_rewritten_dot_stuffing_kept(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "CAPA\r\n", .backend = "CAPA\r\n"),
	                BACKEND(.in = "+OK\r\nCAPA\r\nTOP\r\nSTLS\r\n"
	                              "XCLIENT ADDR\r\nUSER\r\n"
	                              "SASL PLAIN SCRAM-SHA-1-PLUS LOGIN\r\n"
	                              "..x\r\n.\r\n",
	                    .client = "+OK\r\nCAPA\r\nTOP\r\nUSER\r\n"
	                              "SASL PLAIN LOGIN\r\n..x\r\n.\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case30_pop3_greeting_without_timestamp_apop_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* The greeting is checked in every run: POP3_HELLO, no
	         * "<...>" timestamp. */
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "APOP mrose "
	                             "c4c9334bac560ecc979e58001b3e22fb\r\n",
	                    .client = POP3_PRIV),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case31_backend_preauth_and_bye_greetings_close(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "s STARTTLS\r\n", .client = "s" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = "* PREAUTH [CAPABILITY IMAP4rev1] "
	                              "Logged in as alice\r\n",
	                    .client = IMAP_UNAVAIL, .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	        .error = "backend greeting is PREAUTH",
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                CLIENT(.in = "a LOGIN u p\r\n"),
	                BACKEND(.in = "* PREAUTH Logged in as alice\r\n",
	                    .client = IMAP_UNAVAIL, .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	        .error = "backend greeting is PREAUTH",
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "s STARTTLS\r\n", .client = "s" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = "* BYE Too many connections.\r\n",
	                    .client = "* BYE Too many connections.\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "-ERR [SYS/TEMP] Too busy\r\n",
	                    .client = "-ERR [SYS/TEMP] Too busy\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "STARTTLS\r\n", .client = SMTP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = "421 4.3.2 Service not available\r\n",
	                    .client = "421 4.3.2 Service not available\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case32_imap_logindisabled_after_tls_relayed(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a CAPABILITY\r\n",
	                    .backend = "a CAPABILITY\r\n"),
	                BACKEND(.in = "* CAPABILITY IMAP4rev1 LOGINDISABLED "
	                              "AUTH=PLAIN\r\na OK done\r\n",
	                    .client = "* CAPABILITY IMAP4rev1 LOGINDISABLED "
	                              "AUTH=PLAIN\r\na OK done\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * D. Framing and parser differentials.
 */

static void
test_case33_bare_lf_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a CAPABILITY\nb LOGIN u p\r\n",
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a CAPABILITY\nb LOGIN u p\r\n",
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "\n", .client = POP3_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "CAPA\nUSER u\r\n",
	                    .client = POP3_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "EHLO x\nAUTH PLAIN x\r\n",
	                    .client = SMTP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        /* A SASL line is a client line before authentication too. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "AUTH LOGIN\r\n",
	                    .backend = "AUTH LOGIN\r\n"),
	                BACKEND(.in = "334 VXNlcm5hbWU6\r\n",
	                    .client = "334 VXNlcm5hbWU6\r\n"),
	                CLIENT(.in = "YWxp\nY2U=\r\n", .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case34_bare_cr_and_nul_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a NOOP\rb LOGIN u p\r\n",
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a NO\0OP\r\n", .len = 9,
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN u p\0\r\n", .len = 14,
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "CAPA\r\r\n", .client = POP3_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\rMAIL FROM:<a@x>\r\n",
	                    .client = SMTP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case35_starttls_case_insensitive(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a starttls\r\n", .client = "a" IMAP_BEGIN,
	                    .events = "S"),
	            },
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "A StartTLS\r\n", .client = "A" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = IMAP_BACKEND_HELLO),
	                CLIENT(.in = "b sTaRtTlS\r\n",
	                    .client = "b" IMAP_ACTIVE),
	                CLIENT(.in = "c capability\r\n",
	                    .backend = "c capability\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "stls\r\n", .client = POP3_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = POP3_BACKEND_HELLO),
	                CLIENT(.in = "Stls\r\n", .client = POP3_ACTIVE),
	                CLIENT(.in = "xclient ADDR=1.2.3.4\r\n",
	                    .client = POP3_UNKNOWN),
	            },
	        .refused = 2,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "ehlo c\r\n", .client = SMTP_EHLO),
	                CLIENT(.in = "StartTls\r\n", .client = SMTP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO),
	                CLIENT(.in = "starttls\r\n", .client = SMTP_ACTIVE),
	                CLIENT(.in = "xforward ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	            },
	        .refused = 2,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a capability\r\n",
	                    .client = "* CAPABILITY IMAP4rev1 STARTTLS "
	                              "LOGINDISABLED\r\n"
	                              "a OK CAPABILITY completed.\r\n"),
	                CLIENT(.in = "b Login u p\r\n",
	                    .client = "b" IMAP_PRIV),
	                CLIENT(.in = "c logout\r\n",
	                    .client = "* BYE Logging out.\r\n"
	                              "c OK LOGOUT completed.\r\n",
	                    .events = "X"),
	            },
	        .refused = 1,
	        .end = PROTO_END_QUIT,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case36_starttls_whitespace(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* "split on one or more spaces" */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a  STARTTLS\r\n",
	                    .client = "a" IMAP_BEGIN, .events = "S"),
	            },
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a STARTTLS \r\n",
	                    .client = "a" IMAP_BEGIN, .events = "S"),
	            },
	    },
	    {
	        /* A tab is a control character: not a tag separator. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a\tSTARTTLS\r\n", .client = IMAP_BADTAG),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "STARTTLS \r\n", .client = SMTP_BEGIN,
	                    .events = "S"),
	            },
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "STLS \r\n", .client = POP3_BEGIN,
	                    .events = "S"),
	            },
	    },
	    {
	        /* After TLS nothing that a backend could take for
	         * STARTTLS reaches it: IMAP. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a  STARTTLS\r\n",
	                    .client = "a" IMAP_ACTIVE),
	                CLIENT(.in = "b STARTTLS \r\n",
	                    .client = "b" IMAP_ACTIVE),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * research/protocols.md §14 D36: "the backend never sees anything it could
 * parse as STARTTLS", and F48 for XCLIENT. Postfix takes the verb from
 * smtpd_token() (smtpd/smtpd_token.c): leading white space skipped, any
 * ISSPACE separates (tab, VT, FF), quotes removed, backslashes unescaped.
 * So each line below is STARTTLS, XCLIENT, XFORWARD or AUTH to Postfix.
 * docs/dialogue.md ("split on one or more spaces") has no words for them:
 * any 5xx refusal passes, forwarding fails.
 */
#define SMTP_VERB_REFUSED(line)                                                \
	{                                                                      \
		.protocol = PROTO_SMTP,                                        \
		.steps = {SMTP_TLS,                                            \
		    CLIENT(.in = line, .client = "5" ANY "\r\n")},             \
		.refused = 1,                                                  \
	}

static void
test_case36_smtp_verb_as_postfix_reads_it_not_forwarded(void **state)
{
	static const struct dcase cases[] = {
	    SMTP_VERB_REFUSED("STARTTLS \r\n"),
	    SMTP_VERB_REFUSED("STARTTLS\t\r\n"),
	    SMTP_VERB_REFUSED("STARTTLS\v\r\n"),
	    SMTP_VERB_REFUSED(" STARTTLS\r\n"),
	    SMTP_VERB_REFUSED("\"STARTTLS\"\r\n"),
	    SMTP_VERB_REFUSED("\\STARTTLS\r\n"),
	    SMTP_VERB_REFUSED("START\\TLS\r\n"),
	    SMTP_VERB_REFUSED("XCLIENT\tADDR=1.2.3.4\r\n"),
	    SMTP_VERB_REFUSED(" XCLIENT ADDR=1.2.3.4\r\n"),
	    SMTP_VERB_REFUSED("\"XCLIENT\" ADDR=1.2.3.4\r\n"),
	    SMTP_VERB_REFUSED("X\\CLIENT ADDR=1.2.3.4\r\n"),
	    SMTP_VERB_REFUSED("\tXFORWARD ADDR=1.2.3.4\r\n"),
	    {
	        /* In plaintext (port 25): AUTH never reaches the backend. */
	        .protocol = PROTO_SMTP,
	        .listener = L_OPTIONAL,
	        .steps =
	            {
	                CLIENT(.in = "VRFY x\r\n", .events = "C"),
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .backend = "VRFY x\r\n"),
	                BACKEND(.in = "252 2.0.0 x\r\n",
	                    .client = "252 2.0.0 x\r\n"),
	                CLIENT(.in = " AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .client = "5" ANY "\r\n"),
	                CLIENT(.in = "\"AUTH\" PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .client = "5" ANY "\r\n"),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case37_imap_invalid_tags(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "* STARTTLS\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "+ STARTTLS\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a(b NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "\"a\" NOOP\r\n", .client = IMAP_BADTAG),
	                /* ']' is allowed in a tag. */
	                CLIENT(.in = "a]b NOOP\r\n",
	                    .client = "a]b OK NOOP completed.\r\n"),
	            },
	        .refused = 4,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a{1 NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a%b NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a\\b NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "\r\n", .client = IMAP_BADTAG),
	            },
	        .refused = 4,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a\001b NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a\177b NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a)b NOOP\r\n", .client = IMAP_BADTAG),
	            },
	        .refused = 3,
	    },
	    {
	        /* After TLS too, and never forwarded. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "* LOGIN u p\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "+ LOGIN u p\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "a]b NOOP\r\n", .backend = "a]b NOOP\r\n"),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case38_imap_sync_literal_before_tls_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                /* No "+": the next line is a command. */
	                CLIENT(.in = "a ID {5}\r\n",
	                    .client = "a" IMAP_LITERAL),
	                CLIENT(.in = "b NOOP\r\n",
	                    .client = "b OK NOOP completed.\r\n"),
	                CLIENT(.in = "c NOOP {0}\r\n",
	                    .client = "c" IMAP_LITERAL),
	                CLIENT(.in = "d SELECT {5}\r\n",
	                    .client = "d" IMAP_LITERAL),
	            },
	        .refused = 3,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case39_imap_nonsync_literal_before_tls_closes(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a ID {10+}\r\nb STARTTLS\r\n",
	                    .client = "* BYE Protocol error: literal before "
	                              "STARTTLS.\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* docs/dialogue.md: a malformed or too large literal closes, before TLS
 * ("bad literal") and after ("bad or too large literal"). */
#define IMAP_BAD_LITERAL "* BYE Protocol error: bad literal.\r\n"
#define IMAP_BAD_LITERAL_TLS                                                   \
	"* BYE Protocol error: bad or too large literal.\r\n"
#define BAD_LITERAL_PRE(line)                                                  \
	{                                                                      \
		.protocol = PROTO_IMAP,                                        \
		.steps = {CLIENT(.in = line, .client = IMAP_BAD_LITERAL,       \
		    .events = "X")},                                           \
		.end = PROTO_END_PROTOCOL,                                     \
	}
#define BAD_LITERAL_TLS(line)                                                  \
	{                                                                      \
		.protocol = PROTO_IMAP,                                        \
		.steps = {IMAP_TLS,                                            \
		    CLIENT(.in = line, .client = IMAP_BAD_LITERAL_TLS,         \
		        .events = "X")},                                       \
		.end = PROTO_END_PROTOCOL,                                     \
	}

static void
test_case40_imap_literal_length_overflow(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* The limit itself is only refused before TLS. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a LOGIN {65536}\r\n",
	                    .client = "a" IMAP_LITERAL),
	                CLIENT(.in = "b NOOP\r\n",
	                    .client = "b OK NOOP completed.\r\n"),
	            },
	        .refused = 1,
	    },
	    BAD_LITERAL_PRE("a LOGIN {65537}\r\n"),
	    BAD_LITERAL_PRE("a LOGIN {655369}\r\n"),
	    BAD_LITERAL_PRE("a LOGIN {4294967296}\r\n"),
	    BAD_LITERAL_PRE("a LOGIN {18446744073709551616}\r\n"),
	    BAD_LITERAL_PRE("a SELECT {-1}\r\n"),
	    BAD_LITERAL_PRE("a SELECT {}\r\n"),
	    BAD_LITERAL_PRE("a SELECT {99999999999}\r\n"),
	    /* A literal starts an argument: Dovecot refuses "x{5}" and would
	     * read its octets as a command. */
	    BAD_LITERAL_PRE("a LOGIN x{5}\r\n"),
	    {
	        /* Non-synchronizing and too large: either reason. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a ID {99999999999999999999+}\r\n",
	                    .client = IMAP_PROTO_ERR, .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    BAD_LITERAL_TLS("a LOGIN {65537}\r\n"),
	    BAD_LITERAL_TLS("a LOGIN {655369}\r\n"),
	    BAD_LITERAL_TLS("a LOGIN {4294967296}\r\n"),
	    /* 2^64 must not wrap to a zero-length literal. */
	    BAD_LITERAL_TLS(
	        "a LOGIN {18446744073709551616+}\r\nb STARTTLS\r\n"),
	    BAD_LITERAL_TLS("a LOGIN {99999999999999999999+}\r\n"),
	    BAD_LITERAL_TLS("a SELECT {-1}\r\n"),
	    BAD_LITERAL_TLS("a SELECT {}\r\n"),
	    BAD_LITERAL_TLS("a SELECT {+}\r\n"),
	    BAD_LITERAL_TLS("a NOOP x{42+}\r\n"),
	    BAD_LITERAL_TLS("a LOGIN \"u{5+}\r\n"),
	    {
	        /* The limit itself goes; the backend may refuse it. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN {65536}\r\n",
	                    .backend = "a LOGIN {65536}\r\n"),
	                BACKEND(.in = "a NO [TOOBIG] Too long.\r\n",
	                    .client = "a NO [TOOBIG] Too long.\r\n"),
	                CLIENT(.in = "b NOOP\r\n", .backend = "b NOOP\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case41_over_long_lines_close(void **state)
{
	char *imap_ok = line_of("a SELECT ", PROTO_IMAP_LINE_MAX, 'x');
	char *imap_long = line_of("a SELECT ", PROTO_IMAP_LINE_MAX + 1, 'x');
	char *pop3_ok = line_of("USER ", PROTO_POP3_LINE_MAX, 'x');
	char *pop3_long = line_of("USER ", PROTO_POP3_LINE_MAX + 1, 'x');
	char *smtp_ok = line_of("VRFY ", PROTO_SMTP_LINE_MAX, 'x');
	char *smtp_long = line_of("VRFY ", PROTO_SMTP_LINE_MAX + 1, 'x');
	char *ehlo_long = line_of("EHLO ", PROTO_SMTP_LINE_MAX + 1, 'x');
	char *auth_mid = line_of("AUTH PLAIN ", 5000, 'A');
	char *auth_ok = line_of("AUTH PLAIN ", PROTO_SMTP_AUTH_MAX, 'A');
	char *auth_long = line_of("AUTH PLAIN ", PROTO_SMTP_AUTH_MAX + 1, 'A');
	char *sasl_ok = line_of("", PROTO_SMTP_AUTH_MAX, 'A');
	char *sasl_long = line_of("", PROTO_SMTP_AUTH_MAX + 1, 'A');
	unsigned failed;
	const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = imap_ok, .client = "a" IMAP_NOTYET),
	                CLIENT(.in = imap_long, .client = IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 1,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = imap_ok, .backend = imap_ok),
	                BACKEND(.in = "a NO No such mailbox.\r\n",
	                    .client = "a NO No such mailbox.\r\n"),
	                CLIENT(.in = imap_long, .client = IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = pop3_ok, .client = POP3_PRIV),
	                CLIENT(.in = pop3_long, .client = POP3_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 1,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = pop3_ok, .backend = pop3_ok),
	                BACKEND(.in = "-ERR no\r\n", .client = "-ERR no\r\n"),
	                CLIENT(.in = pop3_long, .client = POP3_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = smtp_ok, .client = SMTP_NOTYET),
	                /* AUTH lines may be longer; before TLS refused. */
	                CLIENT(.in = auth_mid, .client = SMTP_NOTYET),
	                CLIENT(.in = smtp_long, .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 2,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = ehlo_long, .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = auth_ok, .backend = auth_ok),
	                BACKEND(.in = "535 5.7.8 Error: authentication "
	                              "failed\r\n",
	                    .client = "535 5.7.8 Error: authentication "
	                              "failed\r\n"),
	                CLIENT(.in = "AUTH PLAIN\r\n",
	                    .backend = "AUTH PLAIN\r\n"),
	                BACKEND(.in = "334 \r\n", .client = "334 \r\n"),
	                CLIENT(.in = sasl_ok, .backend = sasl_ok),
	                BACKEND(.in = "535 5.7.8 Error: authentication "
	                              "failed\r\n",
	                    .client = "535 5.7.8 Error: authentication "
	                              "failed\r\n"),
	                CLIENT(.in = auth_long, .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "AUTH PLAIN\r\n",
	                    .backend = "AUTH PLAIN\r\n"),
	                BACKEND(.in = "334 \r\n", .client = "334 \r\n"),
	                CLIENT(.in = sasl_long, .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	failed = run_cases(cases, COUNT(cases));
	free(imap_ok);
	free(imap_long);
	free(pop3_ok);
	free(pop3_long);
	free(smtp_ok);
	free(smtp_long);
	free(ehlo_long);
	free(auth_mid);
	free(auth_ok);
	free(auth_long);
	free(sasl_ok);
	free(sasl_long);
	assert_int_equal(failed, 0);
}

/* After PROTO_OPAQUE nothing is parsed: the driver relays and the module
 * is never called again (run_once enforces it), so these check where
 * OPAQUE comes and that the rest goes through byte for byte. */
static void
test_case42_smtp_after_opaque_nothing_parsed(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	                    .backend = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
	                BACKEND(.in = "235 2.7.0 Authentication successful\r\n",
	                    .client = "235 2.7.0 Authentication successful\r\n",
	                    .events = "O"),
	                CLIENT(.in = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA"
	                             "\r\nSTARTTLS\r\nXCLIENT ADDR=1.2.3.4\r\n"
	                             ".\nx\r\n.\r\n",
	                    .backend =
	                        "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA"
	                        "\r\nSTARTTLS\r\nXCLIENT ADDR=1.2.3.4\r\n"
	                        ".\nx\r\n.\r\n"),
	            },
	    },
	    {
	        /* MAIL is not an authentication: the transaction goes in
	         * lock-step, the message octets pass unparsed, and after
	         * the final dot commands are checked again. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA"
	                             "\r\nSTARTTLS\r\nXCLIENT ADDR=1.2.3.4\r\n"
	                             ".\r\nXCLIENT ADDR=1.2.3.4\r\n",
	                    .backend = "MAIL FROM:<a@x>\r\n"),
	                BACKEND(.in = "250 2.1.0 Ok\r\n",
	                    .client = "250 2.1.0 Ok\r\n",
	                    .backend = "RCPT TO:<b@x>\r\n"),
	                BACKEND(.in = "250 2.1.5 Ok\r\n",
	                    .client = "250 2.1.5 Ok\r\n",
	                    .backend = "DATA\r\n"),
	                BACKEND(.in = "354 End data with <CR><LF>.<CR><LF>\r\n",
	                    .client = "354 End data with <CR><LF>.<CR><LF>\r\n",
	                    .backend = "STARTTLS\r\nXCLIENT ADDR=1.2.3.4\r\n"
	                               ".\r\n"),
	                BACKEND(.in = "250 2.0.0 Ok: queued as X\r\n",
	                    .client =
	                        "250 2.0.0 Ok: queued as X\r\n" SMTP_NOXCLIENT),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case43_imap_after_opaque_nothing_parsed(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN u p\r\nb APPEND INBOX {40}\r\n",
	                    .backend = "a LOGIN u p\r\n"),
	                BACKEND(.in = "a OK Logged in\r\n+ Ready\r\n",
	                    .client = "a OK Logged in\r\n+ Ready\r\n",
	                    .backend = "b APPEND INBOX {40}\r\n",
	                    .events = "O"),
	                CLIENT(.in =
	                           "a STARTTLS\r\nb LOGOUT\r\n\n\0xxxxxxxxxxxxxx"
	                           "\r\n",
	                    .len = 40,
	                    .backend = "a STARTTLS\r\nb LOGOUT\r\n\n\0"
	                               "xxxxxxxxxxxxxx\r\n",
	                    .backend_len = 40),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * E. Nothing after the STARTTLS reply (every STARTTLS event is also
 * checked in offer()).
 */

static void
test_case44_45_nothing_after_starttls_reply(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a NOOP\r\nb STARTTLS\r\nc NOOP\r\n",
	                    .client = "a OK NOOP completed.\r\nb" IMAP_BEGIN,
	                    .events = "S"),
	                /* The handshake writes nothing either. */
	                TLS_UP,
	            },
	        .discarded = 8,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "CAPA\r\nSTLS\r\nQUIT\r\n",
	                    .client = POP3_CAPA POP3_BEGIN, .events = "S"),
	                TLS_UP,
	            },
	        .discarded = 6,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "EHLO x\r\nSTARTTLS\r\nQUIT\r\n",
	                    .client = SMTP_EHLO SMTP_BEGIN, .events = "S"),
	                TLS_UP,
	            },
	        .discarded = 6,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * F. Identity spoofing.
 */

static void
test_case46_imap_id_with_x_fields_answered_locally(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a ID (\"x-originating-ip\" \"1.2.3.4\" "
	                             "\"x-client-transport\" \"TLS\")\r\n",
	                    .client = IMAP_IDNIL "a OK ID completed.\r\n"),
	                CLIENT(.in = "b ID (\"name\" \"Thunderbird\" "
	                             "\"X-Originating-IP\" \"1.2.3.4\")\r\n",
	                    .client = IMAP_IDNIL "b OK ID completed.\r\n"),
	                /* Without x- fields it goes to the backend. */
	                CLIENT(.in = "d ID (\"name\" \"Thunderbird\")\r\n",
	                    .backend = "d ID (\"name\" \"Thunderbird\")\r\n"),
	                BACKEND(.in = "* ID (\"name\" \"Dovecot\")\r\nd OK ID "
	                              "completed.\r\n",
	                    .client = "* ID (\"name\" \"Dovecot\")\r\nd OK ID "
	                              "completed.\r\n"),
	                CLIENT(.in = "e ID NIL\r\n", .backend = "e ID NIL\r\n"),
	            },
	        .refused = 2,
	    },
	    {
	        /* With a literal: answered, the literal consumed. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "c ID (\"name\" {5+}\r\nhello)\r\n",
	                    .client = IMAP_IDNIL "c OK ID completed.\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        /* The literal's contents are not a command. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a ID (\"name\" {12+}\r\nb STARTTLS\r\n)"
	                             "\r\nc NOOP\r\n",
	                    .client = IMAP_IDNIL "a OK ID completed.\r\n",
	                    .backend = "c NOOP\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        /* Dovecot's quoted strings drop a backslash before any
	         * character (lib-imap/imap-parser.c and str_unescape), so
	         * to Dovecot both keys are "x-originating-ip". */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "f ID (\"\\x-originating-ip\" \"1.2.3.4\")"
	                             "\r\n",
	                    .client = IMAP_IDNIL "f OK ID completed.\r\n"),
	                CLIENT(.in = "g ID (\"x\\-originating-ip\" \"1.2.3.4\")"
	                             "\r\n",
	                    .client = IMAP_IDNIL "g OK ID completed.\r\n"),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* A command mailproxy refuses after TLS still owns its non-synchronizing
 * literal (RFC 7888 §4: the server must read it; Dovecot 2.2.1's CATENATE
 * bug shows what happens otherwise): the octets are swallowed with it,
 * never parsed, never forwarded. */
static void
test_dialog_refused_command_swallows_nonsync_literal(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a STARTTLS {13+}\r\nb LOGIN u p\r\n\r\n",
	                    .client = "a" IMAP_ACTIVE),
	                CLIENT(.in = "c NOOP\r\n", .backend = "c NOOP\r\n"),
	            },
	        .refused = 1,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "* NOOP {13+}\r\nb LOGIN u p\r\n\r\n",
	                    .client = IMAP_BADTAG),
	                CLIENT(.in = "c NOOP\r\n", .backend = "c NOOP\r\n"),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* A backend line over PROTO_BACKEND_LINE_MAX: docs/dialogue.md says
 * nothing; the expected goodbye is proto_notice_line()'s UNAVAILABLE. */
static void
test_dialog_backend_line_too_long_closes(void **state)
{
	char *imap_ok = line_of("* OK ", PROTO_BACKEND_LINE_MAX, 'x');
	char *imap_long = line_of("* OK ", PROTO_BACKEND_LINE_MAX + 1, 'x');
	char *pop3_long = line_of("+OK ", PROTO_BACKEND_LINE_MAX + 1, 'x');
	char *smtp_ok = line_of("250-", PROTO_BACKEND_LINE_MAX, 'x');
	char *smtp_long = line_of("250 ", PROTO_BACKEND_LINE_MAX + 1, 'x');
	unsigned failed;
	const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a NOOP\r\n", .backend = "a NOOP\r\n"),
	                BACKEND(.in = imap_ok, .client = imap_ok),
	                BACKEND(.in = imap_long, .client = IMAP_UNAVAIL,
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = pop3_long,
	                    .client = "-ERR [SYS/TEMP] Backend server not "
	                              "available.\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "HELP\r\n", .backend = "HELP\r\n"),
	                BACKEND(.in = smtp_ok, .client = smtp_ok),
	                BACKEND(.in = smtp_long,
	                    .client = "421 4.3.0 mx.example.org Service not "
	                              "available, closing transmission "
	                              "channel\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	    },
	};

	(void)state;
	failed = run_cases(cases, COUNT(cases));
	free(imap_ok);
	free(imap_long);
	free(pop3_long);
	free(smtp_ok);
	free(smtp_long);
	assert_int_equal(failed, 0);
}

static void
test_case47_pop3_xclient_xoip_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "XCLIENT ADDR=1.2.3.4\r\n",
	                    .client = POP3_UNKNOWN),
	                CLIENT(.in = "XOIP 1.2.3.4\r\n",
	                    .client = POP3_UNKNOWN),
	                POP3_TLS,
	                CLIENT(.in = "XCLIENT ADDR=1.2.3.4\r\n",
	                    .client = POP3_UNKNOWN),
	                CLIENT(.in = "XOIP 1.2.3.4\r\n",
	                    .client = POP3_UNKNOWN),
	            },
	        .refused = 4,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_case48_smtp_xclient_xforward_refused(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "XCLIENT ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	                CLIENT(.in = "XFORWARD ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	                SMTP_TLS,
	                CLIENT(.in = "XCLIENT ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	                CLIENT(.in = "XFORWARD ADDR=1.2.3.4\r\n",
	                    .client = SMTP_NOXCLIENT),
	            },
	        .refused = 4,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * What mailproxy answers alone before TLS (docs/dialogue.md tables).
 */

static void
test_dialog_client_before_tls_answers(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "t NOOP\r\n",
	                    .client = "t OK NOOP completed.\r\n"),
	                CLIENT(.in = "t ID (\"name\" \"x\")\r\n",
	                    .client = IMAP_IDNIL "t OK ID completed.\r\n"),
	                CLIENT(.in = "t FETCH 1 BODY[]\r\n",
	                    .client = "t" IMAP_NOTYET),
	                CLIENT(.in = "t LOGOUT\r\nu NOOP\r\n",
	                    .client = "* BYE Logging out.\r\n"
	                              "t OK LOGOUT completed.\r\n",
	                    .events = "X"),
	            },
	        .refused = 1,
	        .end = PROTO_END_QUIT,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "CAPA\r\n", .client = POP3_CAPA),
	                CLIENT(.in = "NOOP\r\n", .client = POP3_NOTYET),
	                CLIENT(.in = "STAT\r\n", .client = POP3_NOTYET),
	                CLIENT(.in = "QUIT\r\nCAPA\r\n",
	                    .client = "+OK Logging out.\r\n", .events = "X"),
	            },
	        .refused = 2,
	        .end = PROTO_END_QUIT,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "EHLO\r\n",
	                    .client = "501 5.5.4 Syntax: EHLO hostname\r\n"),
	                CLIENT(.in = "HELO\r\n",
	                    .client = "501 5.5.4 Syntax: HELO hostname\r\n"),
	                CLIENT(.in = "HELO c\r\n",
	                    .client = "250 mx.example.org\r\n"),
	                CLIENT(.in = "NOOP\r\nRSET\r\n",
	                    .client = SMTP_OK SMTP_OK),
	                CLIENT(.in = "QUIT\r\nNOOP\r\n",
	                    .client = "221 2.0.0 Bye\r\n", .events = "X"),
	            },
	        .refused = 2,
	        .end = PROTO_END_QUIT,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* The 5th refused command closes (DIALOG_REFUSED_MAX); it is answered
 * first, then the goodbye. Refusals before and after TLS add up. */
static void
test_dialog_refused_fifth_closes(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a SELECT INBOX\r\nb SELECT INBOX\r\n"
	                             "c SELECT INBOX\r\nd SELECT INBOX\r\n",
	                    .client = "a" IMAP_NOTYET "b" IMAP_NOTYET
	                              "c" IMAP_NOTYET "d" IMAP_NOTYET),
	                CLIENT(.in = "e SELECT INBOX\r\nf NOOP\r\n",
	                    .client = "e" IMAP_NOTYET IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 5,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                CLIENT(.in = "USER a\r\nPASS b\r\nSTAT\r\nLIST\r\n"
	                             "RETR 1\r\nCAPA\r\n",
	                    .client = POP3_PRIV POP3_PRIV POP3_NOTYET
	                        POP3_NOTYET POP3_NOTYET POP3_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 5,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                CLIENT(.in = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n"
	                             "DATA\r\nXCLIENT ADDR=1.2.3.4\r\n"
	                             "STARTTLS x\r\nNOOP\r\n",
	                    .client = SMTP_NOTYET SMTP_NOTYET SMTP_NOTYET
	                        SMTP_NOXCLIENT
	                    "501 5.5.4 Syntax: STARTTLS\r\n" SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 5,
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "a LOGIN u p\r\n",
	                    .client = "a" IMAP_PRIV),
	                CLIENT(.in = "* NOOP\r\n", .client = IMAP_BADTAG),
	                CLIENT(.in = "b ID {3}\r\n",
	                    .client = "b" IMAP_LITERAL),
	                IMAP_TLS,
	                CLIENT(.in = "c STARTTLS\r\n",
	                    .client = "c" IMAP_ACTIVE),
	                CLIENT(.in = "d STARTTLS\r\n",
	                    .client = "d" IMAP_ACTIVE IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .refused = 5,
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * Lock-step after TLS: one command at the backend at a time.
 */

static void
test_dialog_lockstep_waits_for_greeting(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "s STARTTLS\r\n", .client = "s" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                CLIENT(.in = "a CAPABILITY\r\n"),
	                BACKEND(.in = IMAP_BACKEND_HELLO,
	                    .backend = "a CAPABILITY\r\n"),
	            },
	    },
	    {
	        /* SMTP: a multi-line greeting counts when complete. */
	        .protocol = PROTO_SMTP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                CLIENT(.in = "EHLO c\r\n"),
	                BACKEND(.in = "220-backend.example ESMTP\r\n",
	                    .defer = true),
	                BACKEND(.in = "220 Postfix\r\n",
	                    .client = "220-backend.example ESMTP\r\n"
	                              "220 Postfix\r\n",
	                    .backend = "EHLO c\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_lockstep_imap_tagged_reply(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a CAPABILITY\r\nb LOGIN u p\r\n",
	                    .backend = "a CAPABILITY\r\n"),
	                BACKEND(.in = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
	                    .client = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
	                /* Another tag does not end a's reply. */
	                BACKEND(.in = "b OK not yours\r\n",
	                    .client = "b OK not yours\r\n"),
	                BACKEND(.in = "a OK CAPABILITY completed.\r\n",
	                    .client = "a OK CAPABILITY completed.\r\n",
	                    .backend = "b LOGIN u p\r\n"),
	            },
	    },
	    {
	        /* A literal in the backend's reply is not a line. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a ID NIL\r\nb NOOP\r\n",
	                    .backend = "a ID NIL\r\n"),
	                BACKEND(.in =
	                            "* ID (\"name\" {11}\r\na OK Done\r\n)\r\n",
	                    .client =
	                        "* ID (\"name\" {11}\r\na OK Done\r\n)\r\n"),
	                BACKEND(.in = "a OK ID completed.\r\n",
	                    .client = "a OK ID completed.\r\n",
	                    .backend = "b NOOP\r\n"),
	            },
	    },
	    {
	        /* Tags longer than most buffers still match their reply. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "T0123456789012345678901234567890123456789"
	                             "0123456789012345678901234567890123456789 "
	                             "NOOP\r\nb NOOP\r\n",
	                    .backend =
	                        "T0123456789012345678901234567890123456789"
	                        "0123456789012345678901234567890123456789 "
	                        "NOOP\r\n"),
	                BACKEND(.in =
	                            "T0123456789012345678901234567890123456789"
	                            "0123456789012345678901234567890123456789 "
	                            "OK NOOP completed.\r\n",
	                    .client =
	                        "T0123456789012345678901234567890123456789"
	                        "0123456789012345678901234567890123456789 "
	                        "OK NOOP completed.\r\n",
	                    .backend = "b NOOP\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_lockstep_smtp_multiline_reply(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\nNOOP\r\n",
	                    .backend = "EHLO c\r\n"),
	                BACKEND(.in =
	                            "250-backend.example\r\n250-PIPELINING\r\n",
	                    .defer = true),
	                BACKEND(.in = "250 8BITMIME\r\n",
	                    .client =
	                        "250-backend.example\r\n250-PIPELINING\r\n"
	                        "250 8BITMIME\r\n",
	                    .backend = "NOOP\r\n"),
	                BACKEND(.in = "250 2.0.0 Ok\r\n", .client = SMTP_OK),
	            },
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "HELP\r\nRSET\r\n", .backend = "HELP\r\n"),
	                BACKEND(.in = "214-2.0.0 Commands:\r\n", .defer = true),
	                BACKEND(.in = "214 2.0.0 EHLO MAIL\r\n",
	                    .client = "214-2.0.0 Commands:\r\n"
	                              "214 2.0.0 EHLO MAIL\r\n",
	                    .backend = "RSET\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_lockstep_pop3_capa_multiline(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "CAPA\r\nUSER bob\r\n",
	                    .backend = "CAPA\r\n"),
	                /* "..\r\n" is a stuffed ".", not the end. */
	                BACKEND(.in = "+OK\r\nTOP\r\n..dotted\r\n..\r\n",
	                    .defer = true),
	                BACKEND(.in = "USER\r\n.\r\n",
	                    .client = "+OK\r\nTOP\r\n..dotted\r\n..\r\nUSER\r\n"
	                              ".\r\n",
	                    .backend = "USER bob\r\n"),
	                BACKEND(.in = "+OK\r\n", .client = "+OK\r\n"),
	            },
	    },
	    {
	        /* -ERR to CAPA has no body. */
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "CAPA\r\nUSER bob\r\n",
	                    .backend = "CAPA\r\n"),
	                BACKEND(.in = "-ERR no\r\n", .client = "-ERR no\r\n",
	                    .backend = "USER bob\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/*
 * Authentication ends the filtering, per protocol.
 */

static void
test_dialog_auth_imap_login(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN u bad\r\n",
	                    .backend = "a LOGIN u bad\r\n"),
	                BACKEND(.in = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n",
	                    .client = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n"),
	                CLIENT(.in = "b LOGIN u p\r\nc SELECT INBOX\r\n",
	                    .backend = "b LOGIN u p\r\n"),
	                BACKEND(.in = "b OK [CAPABILITY IMAP4rev1 IDLE] Logged "
	                              "in\r\n* 1 EXISTS\r\n",
	                    .client = "b OK [CAPABILITY IMAP4rev1 IDLE] Logged "
	                              "in\r\n* 1 EXISTS\r\n",
	                    .backend = "c SELECT INBOX\r\n", .events = "O"),
	            },
	    },
	    {
	        /* Literals after TLS: synchronizing after the "+", data
	         * with CR and LF inside forwarded as it is. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN {5}\r\n",
	                    .backend = "a LOGIN {5}\r\n"),
	                BACKEND(.in = "+ Ready for literal data\r\n",
	                    .client = "+ Ready for literal data\r\n"),
	                CLIENT(.in = "alice {7}\r\n",
	                    .backend = "alice {7}\r\n"),
	                BACKEND(.in = "+ Ready\r\n", .client = "+ Ready\r\n"),
	                CLIENT(.in = "p\nw\r\nd!\r\n",
	                    .backend = "p\nw\r\nd!\r\n"),
	                BACKEND(.in = "a OK Logged in\r\n",
	                    .client = "a OK Logged in\r\n", .events = "O"),
	            },
	    },
	    {
	        /* Data sent before the "+" waits for it. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN {5}\r\nalice pw\r\n",
	                    .backend = "a LOGIN {5}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .client = "+ OK\r\n",
	                    .backend = "alice pw\r\n"),
	                BACKEND(.in = "a OK Logged in\r\n",
	                    .client = "a OK Logged in\r\n", .events = "O"),
	            },
	    },
	    {
	        /* Non-synchronizing literals go as synchronizing ones: each
	         * waits for the backend's "+", which the client, having
	         * sent its octets unasked, does not see. What they hold is
	         * never a command. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN {5+}\r\nalice {12+}\r\nb STARTTLS"
	                             "\r\n\r\n",
	                    .backend = "a LOGIN {5}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "alice {12}\r\n"),
	                BACKEND(.in = "+ OK\r\n",
	                    .backend = "b STARTTLS\r\n\r\n"),
	                BACKEND(.in = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n",
	                    .client = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n"),
	                CLIENT(.in = "c NOOP\r\n", .backend = "c NOOP\r\n"),
	            },
	    },
	    {
	        /* The bypass a {n+} would allow: the backend refuses the
	         * line before its literal (Dovecot: BAD, then it reads on
	         * after the line). Forwarded as {n}, the literal waits for a
	         * "+" that never comes; after the BAD its octets, and the
	         * rest of the line, are dropped: the ID never reaches the
	         * backend as a command. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a LOGIN ) {37+}\r\nb ID (\"x-originating-"
	                             "ip\" \"6.6.6.6\")\r\n",
	                    .backend = "a LOGIN ) {37}\r\n"),
	                BACKEND(.in = "a BAD Error in IMAP command LOGIN\r\n",
	                    .client = "a BAD Error in IMAP command LOGIN\r\n"),
	                CLIENT(.in = "\r\nc NOOP\r\n", .backend = "c NOOP\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_auth_imap_authenticate(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a AUTHENTICATE PLAIN\r\n",
	                    .backend = "a AUTHENTICATE PLAIN\r\n"),
	                BACKEND(.in = "+ \r\n", .client = "+ \r\n"),
	                /* A SASL line is never a command. */
	                CLIENT(.in = "b STARTTLS\r\n",
	                    .backend = "b STARTTLS\r\n"),
	                BACKEND(.in = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n",
	                    .client = "a NO [AUTHENTICATIONFAILED] "
	                              "Authentication failed.\r\n"),
	                CLIENT(.in = "c AUTHENTICATE PLAIN\r\n",
	                    .backend = "c AUTHENTICATE PLAIN\r\n"),
	                BACKEND(.in = "+ \r\n", .client = "+ \r\n"),
	                CLIENT(.in = "AGFsaWNlAHNlY3JldA==\r\n",
	                    .backend = "AGFsaWNlAHNlY3JldA==\r\n"),
	                BACKEND(.in = "c OK [CAPABILITY IMAP4rev1 IDLE] Logged "
	                              "in\r\n",
	                    .client = "c OK [CAPABILITY IMAP4rev1 IDLE] Logged "
	                              "in\r\n",
	                    .events = "O"),
	            },
	    },
	    {
	        /* SASL-IR, answered at once. */
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK Dovecot ready.\r\n",
	                    .client = "* OK Dovecot ready.\r\n"),
	                CLIENT(.in = "a authenticate plain AGFsaWNlAHNlY3JldA=="
	                             "\r\n",
	                    .backend = "a authenticate plain "
	                               "AGFsaWNlAHNlY3JldA==\r\n"),
	                BACKEND(.in = "a OK Logged in\r\n",
	                    .client = "a OK Logged in\r\n", .events = "O"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_auth_pop3(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "USER alice\r\nPASS bad\r\n",
	                    .backend = "USER alice\r\n"),
	                BACKEND(.in = "+OK\r\n", .client = "+OK\r\n",
	                    .backend = "PASS bad\r\n"),
	                BACKEND(.in = "-ERR [AUTH] Authentication failed.\r\n",
	                    .client = "-ERR [AUTH] Authentication failed.\r\n"),
	                CLIENT(.in = "USER alice\r\n",
	                    .backend = "USER alice\r\n"),
	                BACKEND(.in = "+OK\r\n", .client = "+OK\r\n"),
	                CLIENT(.in = "PASS secret\r\nSTAT\r\n",
	                    .backend = "PASS secret\r\n"),
	                BACKEND(.in = "+OK Logged in.\r\n",
	                    .client = "+OK Logged in.\r\n",
	                    .backend = "STAT\r\n", .events = "O"),
	            },
	    },
	    {
	        /* AUTH without a mechanism lists them (multi-line), then
	         * a SASL exchange. */
	        .protocol = PROTO_POP3,
	        .steps =
	            {
	                POP3_TLS,
	                CLIENT(.in = "AUTH\r\nAUTH PLAIN\r\n",
	                    .backend = "AUTH\r\n"),
	                BACKEND(.in = "+OK\r\nPLAIN\r\n", .defer = true),
	                BACKEND(.in = "LOGIN\r\n.\r\n",
	                    .client = "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n",
	                    .backend = "AUTH PLAIN\r\n"),
	                BACKEND(.in = "+ \r\n", .client = "+ \r\n"),
	                CLIENT(.in = "STLS\r\n", .backend = "STLS\r\n"),
	                BACKEND(.in = "-ERR [AUTH] Authentication failed.\r\n",
	                    .client = "-ERR [AUTH] Authentication failed.\r\n"),
	                CLIENT(.in = "AUTH PLAIN\r\n",
	                    .backend = "AUTH PLAIN\r\n"),
	                BACKEND(.in = "+ \r\n", .client = "+ \r\n"),
	                CLIENT(.in = "AGFsaWNlAHNlY3JldA==\r\n",
	                    .backend = "AGFsaWNlAHNlY3JldA==\r\n"),
	                BACKEND(.in = "+OK Logged in.\r\n",
	                    .client = "+OK Logged in.\r\n", .events = "O"),
	            },
	    },
	    {
	        .protocol = PROTO_POP3,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "+OK ready <1896.697170952@dbc.mtview.ca."
	                              "us>\r\n",
	                    .client = "+OK ready <1896.697170952@dbc.mtview.ca."
	                              "us>\r\n"),
	                CLIENT(.in =
	                           "APOP mrose c4c9334bac560ecc979e58001b3e22fb"
	                           "\r\n",
	                    .backend = "APOP mrose "
	                               "c4c9334bac560ecc979e58001b3e22fb\r\n"),
	                BACKEND(.in = "+OK maildrop has 1 message\r\n",
	                    .client = "+OK maildrop has 1 message\r\n",
	                    .events = "O"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

static void
test_dialog_auth_smtp(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250 AUTH PLAIN "
	                              "LOGIN\r\n",
	                    .client = "250-backend.example\r\n250 AUTH PLAIN "
	                              "LOGIN\r\n"),
	                CLIENT(.in = "AUTH LOGIN\r\n",
	                    .backend = "AUTH LOGIN\r\n"),
	                BACKEND(.in = "334 VXNlcm5hbWU6\r\n",
	                    .client = "334 VXNlcm5hbWU6\r\n"),
	                /* A SASL line is never a command. */
	                CLIENT(.in = "STARTTLS\r\n", .backend = "STARTTLS\r\n"),
	                BACKEND(.in = "334 UGFzc3dvcmQ6\r\n",
	                    .client = "334 UGFzc3dvcmQ6\r\n"),
	                CLIENT(.in = "c2VjcmV0\r\n", .backend = "c2VjcmV0\r\n"),
	                BACKEND(.in = "535 5.7.8 Error: authentication "
	                              "failed\r\n",
	                    .client = "535 5.7.8 Error: authentication "
	                              "failed\r\n"),
	                CLIENT(.in = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL "
	                             "FROM:<a@x>\r\n",
	                    .backend = "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
	                BACKEND(.in = "235 2.7.0 Authentication successful\r\n",
	                    .client = "235 2.7.0 Authentication successful\r\n",
	                    .backend = "MAIL FROM:<a@x>\r\n", .events = "O"),
	            },
	    },
	    {
	        /* MAIL without AUTH: forwarded, and the filter holds on
	         * (MAIL, RSET, then XCLIENT is refused, never forwarded). */
	        .protocol = PROTO_SMTP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .client = SMTP_BACKEND_HELLO),
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .client = "250 backend.example\r\n"),
	                CLIENT(.in = "mail from:<a@x>\r\n",
	                    .backend = "mail from:<a@x>\r\n"),
	                BACKEND(.in = "250 2.1.0 Ok\r\n",
	                    .client = "250 2.1.0 Ok\r\n"),
	                CLIENT(.in = "RSET\r\nXCLIENT ADDR=6.6.6.6 NAME=spoof."
	                             "test\r\nXFORWARD ADDR=6.6.6.6\r\n",
	                    .backend = "RSET\r\n"),
	                BACKEND(.in = "250 2.0.0 Ok\r\n",
	                    .client = "250 2.0.0 Ok\r\n" SMTP_NOXCLIENT
	                        SMTP_NOXCLIENT),
	            },
	        .refused = 2,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* Issue 12, rule 4: before authentication a {n+} goes to the backend only
 * as its own capabilities allow (RFC 7888), else the backend would read
 * the octets as commands: the command is answered BAD and the session
 * closed, and the backend gets nothing of it. */
static void
test_dialog_imap_nonsync_literal_needs_backend_support(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* No LITERAL+ in the greeting: refused. */
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1] hi\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev1] hi\r\n"),
	                CLIENT(.in = "a NOOP {10+}\r\n0123456789\r\n",
	                    .client = "a BAD Non-synchronizing literals are "
	                              "not supported.\r\n" IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	        .error = "non-synchronizing literal the backend does not "
	                 "accept",
	    },
	    {
	        /* LITERAL+ (Dovecot's greeting): a chain of literals in one
	         * command goes through, each as soon as the backend asks. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                IMAP_TLS,
	                CLIENT(.in = "a NOOP {3+}\r\nabc {2+}\r\nde\r\n",
	                    .backend = "a NOOP {3}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "abc {2}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "de\r\n"),
	                BACKEND(.in = "a OK NOOP completed.\r\n",
	                    .client = "a OK NOOP completed.\r\n"),
	            },
	    },
	    {
	        /* LITERAL-: up to 4096 octets, then [TOOBIG]; the first
	         * part of the command already went. */
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1 LITERAL-] "
	                              "hi\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev1 LITERAL-] "
	                              "hi\r\n"),
	                CLIENT(.in = "a LOGIN {4+}\r\nabcd",
	                    .backend = "a LOGIN {4}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "abcd"),
	                CLIENT(.in = " {4097+}\r\n",
	                    .client =
	                        "a BAD [TOOBIG] Non-synchronizing literal "
	                        "larger than 4096 octets.\r\n" IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        /* IMAP4rev2 has LITERAL- built in (RFC 9051 §4.3). */
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev2] hi\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev2] hi\r\n"),
	                CLIENT(.in = "a NOOP {1+}\r\nx\r\n",
	                    .backend = "a NOOP {1}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "x\r\n"),
	            },
	    },
	    {
	        /* The latest list counts: a CAPABILITY reply that adds
	         * LITERAL+ allows it, a synchronising {n} always goes. */
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK hi\r\n", .client = "* OK hi\r\n"),
	                CLIENT(.in = "a EXAMINE {2}\r\n",
	                    .backend = "a EXAMINE {2}\r\n"),
	                BACKEND(.in = "+ go\r\n", .client = "+ go\r\n"),
	                CLIENT(.in = "xy\r\n", .backend = "xy\r\n"),
	                BACKEND(.in = "a NO\r\n", .client = "a NO\r\n"),
	                CLIENT(.in = "b CAPABILITY\r\n",
	                    .backend = "b CAPABILITY\r\n"),
	                BACKEND(.in = "* CAPABILITY IMAP4rev1 LITERAL+ "
	                              "STARTTLS\r\nb OK\r\n",
	                    .client = "* CAPABILITY IMAP4rev1 LITERAL+\r\n"
	                              "b OK\r\n"),
	                CLIENT(.in = "c NOOP {1+}\r\nx\r\n",
	                    .backend = "c NOOP {1}\r\n"),
	                BACKEND(.in = "+ OK\r\n", .backend = "x\r\n"),
	            },
	    },
	    {
	        /* On a STARTTLS listener the backend's greeting is
	         * swallowed, but what it says about literals counts. */
	        .protocol = PROTO_IMAP,
	        .steps =
	            {
	                CLIENT(.in = "s STARTTLS\r\n", .client = "s" IMAP_BEGIN,
	                    .events = "S"),
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1] x\r\n"),
	                CLIENT(.in = "a NOOP {0+}\r\n\r\n",
	                    .client = "a BAD Non-synchronizing literals are "
	                              "not supported.\r\n" IMAP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

#define SMTP_FILTERED_TLS                                                      \
	SMTP_TLS, CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),         \
	    BACKEND(.in = "250-backend.example\r\n250-CHUNKING\r\n250 "        \
	                  "8BITMIME\r\n",                                      \
	        .client = "250-backend.example\r\n250-CHUNKING\r\n250 "        \
	                  "8BITMIME\r\n")

/* Issue 12, rule 4: the SMTP filter follows DATA and BDAT exactly until
 * AUTH succeeds; message octets are never commands, and no dot-line is
 * accepted as the end of data that a backend could read differently
 * (SMTP smuggling, SEC Consult 2023). */
static void
test_dialog_smtp_data_and_bdat_framing(void **state)
{
	static const struct dcase cases[] = {
	    {
	        /* The final dot split across reads, dot-stuffed lines, a
	         * dot inside a line: all message; the next XCLIENT is a
	         * command again. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\n", .backend = "DATA\r\n"),
	                BACKEND(.in = "354 go\r\n", .client = "354 go\r\n"),
	                CLIENT(.in = "..XCLIENT ADDR=6.6.6.6\r\na.b\r\n.",
	                    .backend = "..XCLIENT ADDR=6.6.6.6\r\na.b\r\n"),
	                CLIENT(.in = "\r", .backend = ""),
	                CLIENT(.in = "\nXCLIENT ADDR=6.6.6.6\r\n",
	                    .backend = ".\r\n"),
	                BACKEND(.in = "250 2.0.0 Ok\r\n",
	                    .client = "250 2.0.0 Ok\r\n" SMTP_NOXCLIENT),
	            },
	        .refused = 1,
	    },
	    {
	        /* LF "." CRLF: Postfix 3.7 ends the data there, a strict
	         * reader does not. Closed; the dot-line never goes. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\n", .backend = "DATA\r\n"),
	                BACKEND(.in = "354 go\r\n", .client = "354 go\r\n"),
	                CLIENT(.in = "x\n.\r\nXCLIENT ADDR=6.6.6.6\r\n",
	                    .client = SMTP_PROTO_ERR, .backend = "x\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	        .error = "bare CR or LF at the end of data",
	    },
	    {
	        /* CRLF "." LF */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\n", .backend = "DATA\r\n"),
	                BACKEND(.in = "354 go\r\n", .client = "354 go\r\n"),
	                CLIENT(.in = "x\r\n.\nQUIT\r\n",
	                    .client = SMTP_PROTO_ERR, .backend = "x\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        /* CR "." CRLF */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\n", .backend = "DATA\r\n"),
	                BACKEND(.in = "354 go\r\n", .client = "354 go\r\n"),
	                CLIENT(.in = "x\r.\r\n", .client = SMTP_PROTO_ERR,
	                    .backend = "x\r", .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	    },
	    {
	        /* DATA refused by the backend: what the client sent on is
	         * read as commands, as the backend reads it. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\nXCLIENT ADDR=6.6.6.6\r\n",
	                    .backend = "DATA\r\n"),
	                BACKEND(.in =
	                            "554 5.5.1 Error: no valid recipients\r\n",
	                    .client = "554 5.5.1 Error: no valid "
	                              "recipients\r\n" SMTP_NOXCLIENT),
	            },
	        .refused = 1,
	    },
	    {
	        /* An empty message: the first line is the dot. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "DATA\r\n", .backend = "DATA\r\n"),
	                BACKEND(.in = "354 go\r\n", .client = "354 go\r\n"),
	                CLIENT(.in = ".\r\nNOOP\r\n", .backend = ".\r\n"),
	                BACKEND(.in = "250 Ok\r\n", .client = "250 Ok\r\n",
	                    .backend = "NOOP\r\n"),
	            },
	    },
	    {
	        /* BDAT: the chunk's octets go unread, whatever they say;
	         * before MAIL too (the backend answers after the chunk). */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "BDAT 3\r\nabc",
	                    .backend = "BDAT 3\r\nabc"),
	                BACKEND(.in = "503 5.5.1 Error: need MAIL command\r\n",
	                    .client = "503 5.5.1 Error: need MAIL "
	                              "command\r\n"),
	                CLIENT(.in =
	                           "BDAT 24 LAST\r\nXCLIENT ADDR=6.6.6.6\r\n\r\n",
	                    .backend = "BDAT 24 LAST\r\nXCLIENT ADDR=6.6.6.6"
	                               "\r\n\r\n"),
	                CLIENT(.in = "XFORWARD ADDR=6.6.6.6\r\n"),
	                BACKEND(.in = "250 2.0.0 Ok: queued\r\n",
	                    .client =
	                        "250 2.0.0 Ok: queued\r\n" SMTP_NOXCLIENT),
	            },
	        .refused = 1,
	    },
	    {
	        /* No CHUNKING from the backend: it would read the octets as
	         * commands, and so does mailproxy. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250 backend.example\r\n",
	                    .client = "250 backend.example\r\n"),
	                CLIENT(.in = "BDAT 22\r\nXCLIENT ADDR=6.6.6.6\r\n",
	                    .client = "502 5.5.2 Error: command not "
	                              "recognized\r\n" SMTP_NOXCLIENT),
	            },
	        .refused = 2,
	    },
	    {
	        /* A BDAT whose size cannot be read is never forwarded. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "BDAT 3x\r\n", .client = SMTP_PROTO_ERR,
	                    .events = "X"),
	            },
	        .end = PROTO_END_PROTOCOL,
	        .error = "malformed BDAT command",
	    },
	    {
	        /* STARTTLS after MAIL and RSET on TLS: still refused. */
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_FILTERED_TLS,
	                CLIENT(.in = "MAIL FROM:<x@a.test>\r\n",
	                    .backend = "MAIL FROM:<x@a.test>\r\n"),
	                BACKEND(.in = "250 Ok\r\n", .client = "250 Ok\r\n"),
	                CLIENT(.in = "RSET\r\n", .backend = "RSET\r\n"),
	                BACKEND(.in = "250 Ok\r\n", .client = "250 Ok\r\n"),
	                CLIENT(.in = "STARTTLS\r\n", .client = SMTP_ACTIVE),
	            },
	        .refused = 1,
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

/* An EHLO reply line over PROTO_SMTP_REPLY_LINE_MAX (twice RFC 5321's
 * 512) is not rewritten but refused as a broken backend. */
static void
test_dialog_smtp_long_ehlo_line_closes(void **state)
{
	char *line = line_of("250-", 1025, 'x');
	unsigned failed;
	const struct dcase cases[] = {
	    {
	        .protocol = PROTO_SMTP,
	        .steps =
	            {
	                SMTP_TLS,
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n"),
	                BACKEND(.in = line,
	                    .client = "421 4.3.0 mx.example.org Service not "
	                              "available, closing transmission "
	                              "channel\r\n",
	                    .events = "X"),
	            },
	        .end = PROTO_END_BACKEND,
	        .error = "backend EHLO reply line too long",
	    },
	};

	(void)state;
	failed = run_cases(cases, COUNT(cases));
	free(line);
	assert_int_equal(failed, 0);
}

/* Issue 12, rule 3: before TLS at most DIALOG_PLAIN_MAX commands other
 * than STARTTLS are answered; the next one closes. */
static void
test_dialog_plain_commands_capped(void **state)
{
	static const struct {
		enum proto protocol;
		const char *command;
	} each[] = {
	    {PROTO_IMAP, "a NOOP\r\n"},
	    {PROTO_POP3, "CAPA\r\n"},
	    {PROTO_SMTP, "EHLO x\r\n"},
	};
	static const char *const goodbye[] = {
	    [PROTO_IMAP] = "* BYE Protocol error: too many commands before "
	                   "STARTTLS.\r\n",
	    [PROTO_POP3] = "-ERR Protocol error: too many commands before "
	                   "STARTTLS.\r\n",
	    [PROTO_SMTP] = "421 4.7.0 mx.example.org Protocol error: too many "
	                   "commands before STARTTLS\r\n",
	};
	struct proto_params params = {0};
	struct proto_out out;
	struct dialog *d;
	size_t i, k, len, n;

	(void)state;
	for (i = 0; i < sizeof(each) / sizeof(each[0]); i++) {
		params.protocol = each[i].protocol;
		params.starttls = true;
		params.server_name = NAME;
		params.greeting = GREETING;
		d = dialog_new(&params);
		assert_non_null(d);
		len = strlen(each[i].command);
		for (k = 0; k < DIALOG_PLAIN_MAX; k++) {
			n = dialog_plain(d, each[i].command, len, &out);
			assert_int_equal(n, len);
			assert_int_equal(out.event, PROTO_CONTINUE);
			assert_true(out.to_client_len > 0);
		}
		n = dialog_plain(d, each[i].command, len, &out);
		assert_int_equal(n, len);
		assert_int_equal(out.event, PROTO_CLOSE);
		assert_int_equal(out.end, PROTO_END_PROTOCOL);
		assert_int_equal(out.to_client_len,
		    strlen(goodbye[each[i].protocol]));
		assert_memory_equal(out.to_client, goodbye[each[i].protocol],
		    out.to_client_len);
		assert_int_equal(dialog_stats(d)->refused, 0);
		dialog_free(d);
	}
}

/* Whose turn it is decides the deadline: the backend's after a command,
 * RFC 5321's longer one after the end of a message. */
static void
test_dialog_wait_follows_the_turn(void **state)
{
	struct proto_params params = {PROTO_SMTP, false, false, NAME, GREETING};
	struct proto_out out;
	struct dialog *d = dialog_new(&params);
	static const char hello[] = "220 b ESMTP\r\n", ehlo[] = "EHLO c\r\n",
	                  caps[] = "250-b\r\n250 CHUNKING\r\n",
	                  data[] = "DATA\r\n", go[] = "354 go\r\n",
	                  body[] = "x\r\n.\r\n", bdat[] = "BDAT 1 LAST\r\n";

	(void)state;
	assert_non_null(d);
	dialog_tls_started(d);
	assert_int_equal(dialog_greeting(d, hello, strlen(hello), &out),
	    strlen(hello));
	assert_int_equal(out.event, PROTO_GREETED);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_CLIENT);
	(void)dialog_client(d, ehlo, strlen(ehlo), &out);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_BACKEND);
	(void)dialog_backend(d, caps, 7, &out);
	assert_true(dialog_mid_reply(d));
	(void)dialog_backend(d, caps + 7, strlen(caps) - 7, &out);
	assert_false(dialog_mid_reply(d));
	assert_int_equal(dialog_wait(d), PROTO_WAIT_CLIENT);
	(void)dialog_client(d, data, strlen(data), &out);
	(void)dialog_backend(d, go, strlen(go), &out);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_CLIENT);
	assert_int_equal(dialog_client(d, body, strlen(body), &out), 3);
	assert_int_equal(dialog_client(d, body + 3, 3, &out), 3);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_BACKEND_DATA);
	(void)dialog_backend(d, "250 Ok\r\n", 8, &out);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_CLIENT);
	(void)dialog_client(d, bdat, strlen(bdat), &out);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_CLIENT);
	assert_int_equal(dialog_client(d, "x", 1, &out), 1);
	assert_int_equal(dialog_wait(d), PROTO_WAIT_BACKEND_DATA);
	dialog_free(d);
}

/* Implicit listeners: dialog_greet says nothing (checked in run_once),
 * the backend's greeting is relayed with the rewrite. */
static void
test_dialog_implicit_greeting_relayed(void **state)
{
	static const struct dcase cases[] = {
	    {
	        .protocol = PROTO_IMAP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = "* OK [CAPABILITY IMAP4rev1 SASL-IR "
	                              "STARTTLS AUTH=SCRAM-SHA-1-PLUS "
	                              "AUTH=PLAIN XCLIENT] Dovecot ready.\r\n",
	                    .client = "* OK [CAPABILITY IMAP4rev1 SASL-IR "
	                              "AUTH=PLAIN] Dovecot ready.\r\n"),
	                CLIENT(.in = "a NOOP\r\n", .backend = "a NOOP\r\n"),
	            },
	    },
	    {
	        .protocol = PROTO_SMTP,
	        .listener = L_IMPLICIT,
	        .steps =
	            {
	                TLS_UP,
	                BACKEND(.in = SMTP_BACKEND_HELLO,
	                    .client = SMTP_BACKEND_HELLO),
	                CLIENT(.in = "EHLO c\r\n", .backend = "EHLO c\r\n"),
	                BACKEND(.in = "250-backend.example\r\n250-STARTTLS\r\n"
	                              "250 AUTH PLAIN\r\n",
	                    .client =
	                        "250-backend.example\r\n250 AUTH PLAIN\r\n"),
	            },
	    },
	};

	(void)state;
	RUN_CASES(cases);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_case01_imap_starttls_injection_discarded),
	    cmocka_unit_test(test_case02_pop3_stls_injection_discarded),
	    cmocka_unit_test(test_case03_smtp_starttls_injection_discarded),
	    cmocka_unit_test(test_case04_starttls_split_across_reads),
	    cmocka_unit_test(test_case06_imap_credential_theft_discarded),
	    cmocka_unit_test(test_case07_smtp_credential_theft_discarded),
	    cmocka_unit_test(test_case09_pipelined_group_ending_in_starttls),
	    cmocka_unit_test(test_case10_imap_login_before_tls_refused),
	    cmocka_unit_test(test_case11_imap_authenticate_before_tls_refused),
	    cmocka_unit_test(test_case12_pop3_auth_commands_before_tls_refused),
	    cmocka_unit_test(test_case13_smtp_commands_before_tls_refused),
	    cmocka_unit_test(test_case14_smtp_optional_mail_connects_plaintext),
	    cmocka_unit_test(
	        test_case15_imap_commands_before_tls_answered_locally),
	    cmocka_unit_test(test_case16_session_fixation_login_after_tls_only),
	    cmocka_unit_test(test_case18_starttls_after_tls_refused),
	    cmocka_unit_test(test_case19_starttls_on_implicit_listener_refused),
	    cmocka_unit_test(test_case20_starttls_with_arguments_refused),
	    cmocka_unit_test(test_case24_imap_capability_codes_rewritten),
	    cmocka_unit_test(
	        test_case25_imap_starttls_scram_plus_xclient_removed),
	    cmocka_unit_test(test_case26_smtp_ehlo_after_tls_rewritten),
	    cmocka_unit_test(test_case27_smtp_single_line_and_bare_code_ehlo),
	    cmocka_unit_test(test_case28_smtp_ehlo_error_relayed_unchanged),
	    cmocka_unit_test(test_case29_pop3_capa_rewritten_dot_stuffing_kept),
	    cmocka_unit_test(
	        test_case30_pop3_greeting_without_timestamp_apop_refused),
	    cmocka_unit_test(
	        test_case31_backend_preauth_and_bye_greetings_close),
	    cmocka_unit_test(test_case32_imap_logindisabled_after_tls_relayed),
	    cmocka_unit_test(test_case33_bare_lf_refused),
	    cmocka_unit_test(test_case34_bare_cr_and_nul_refused),
	    cmocka_unit_test(test_case35_starttls_case_insensitive),
	    cmocka_unit_test(test_case36_starttls_whitespace),
	    cmocka_unit_test(
	        test_case36_smtp_verb_as_postfix_reads_it_not_forwarded),
	    cmocka_unit_test(test_case37_imap_invalid_tags),
	    cmocka_unit_test(test_case38_imap_sync_literal_before_tls_refused),
	    cmocka_unit_test(
	        test_case39_imap_nonsync_literal_before_tls_closes),
	    cmocka_unit_test(test_case40_imap_literal_length_overflow),
	    cmocka_unit_test(test_case41_over_long_lines_close),
	    cmocka_unit_test(test_case42_smtp_after_opaque_nothing_parsed),
	    cmocka_unit_test(test_case43_imap_after_opaque_nothing_parsed),
	    cmocka_unit_test(test_case44_45_nothing_after_starttls_reply),
	    cmocka_unit_test(
	        test_case46_imap_id_with_x_fields_answered_locally),
	    cmocka_unit_test(
	        test_dialog_refused_command_swallows_nonsync_literal),
	    cmocka_unit_test(test_dialog_backend_line_too_long_closes),
	    cmocka_unit_test(test_case47_pop3_xclient_xoip_refused),
	    cmocka_unit_test(test_case48_smtp_xclient_xforward_refused),
	    cmocka_unit_test(test_dialog_client_before_tls_answers),
	    cmocka_unit_test(test_dialog_refused_fifth_closes),
	    cmocka_unit_test(test_dialog_lockstep_waits_for_greeting),
	    cmocka_unit_test(test_dialog_lockstep_imap_tagged_reply),
	    cmocka_unit_test(test_dialog_lockstep_smtp_multiline_reply),
	    cmocka_unit_test(test_dialog_lockstep_pop3_capa_multiline),
	    cmocka_unit_test(test_dialog_auth_imap_login),
	    cmocka_unit_test(test_dialog_auth_imap_authenticate),
	    cmocka_unit_test(test_dialog_auth_pop3),
	    cmocka_unit_test(test_dialog_auth_smtp),
	    cmocka_unit_test(test_dialog_implicit_greeting_relayed),
	    cmocka_unit_test(
	        test_dialog_imap_nonsync_literal_needs_backend_support),
	    cmocka_unit_test(test_dialog_smtp_data_and_bdat_framing),
	    cmocka_unit_test(test_dialog_smtp_long_ehlo_line_closes),
	    cmocka_unit_test(test_dialog_plain_commands_capped),
	    cmocka_unit_test(test_dialog_wait_follows_the_turn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
