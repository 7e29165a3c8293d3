/*
 * The session: one state machine per client connection (session.h). Its
 * phase is s->state, written only by set_state(), which also arms the
 * phase's deadline. Below it the pump (pump.c) moves the bytes and calls
 * back through pump_ops; beside it the dialogue (dialog.c) decides, a
 * line at a time, what is answered, forwarded or refused until the
 * client has authenticated. Every deadline before authentication is
 * here: the whole plaintext phase, the backend's greeting and replies,
 * the client's login.
 *
 * Ownership (STYLE.md §7): the session owns its timer, its requests and
 * its pump. session_close() only starts closing; the timer's close, each
 * request's callback and the pump's released() call session_release(),
 * and the last one frees the session in session_free(), which is also
 * where the single log line is written.
 *
 * Must not: free anything a pending libuv callback may still touch, or
 * send the backend a byte before the client's TLS handshake is complete
 * (starttls = optional: before the client chose plaintext).
 */
#include "mailproxy/session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailproxy/log.h"
#include "mailproxy/proto.h"
#include "mailproxy/proxy_protocol.h"
#include "mailproxy/tls.h"

/* No notice: a session ended with nothing said. */
#define NO_NOTICE PROTO_REPLY_COUNT_

static const char *const state_names[SESSION_STATE_COUNT_] = {
    [SESSION_PROXY] = "proxy",
    [SESSION_PLAIN] = "plain",
    [SESSION_HANDSHAKE] = "handshake",
    [SESSION_RESOLVE] = "resolve",
    [SESSION_CONNECT] = "connect",
    [SESSION_GREETING] = "greeting",
    [SESSION_DIALOG] = "dialog",
    [SESSION_RELAY] = "relay",
    [SESSION_FLUSH] = "flush",
    [SESSION_CLOSING] = "closing",
};

static const char *const end_names[] = {
#define X(name, text) text,
    SESSION_END_MAP(X)
#undef X
};

/* A process-wide random tag keeps ids unique across restarts; set once
 * before the workers start, read-only afterwards. */
static uint32_t process_tag;

void
session_init_ids(uint32_t tag)
{
	process_tag = tag;
}

const char *
session_state_name(enum session_state state)
{
	return state < SESSION_STATE_COUNT_ ? state_names[state] : "?";
}

const char *
session_end_name(enum session_end end)
{
	return end_names[end];
}

static void session_close(struct session *s, enum session_end end,
    const char *error);
static void session_finish(struct session *s, enum proto_reply notice,
    enum session_end end, const char *error);

static uint64_t
now_ms(const struct session *s)
{
	return uv_now(s->host->pump.loop);
}

static const struct config_listener *
conf_of(const struct session *s)
{
	return s->listener->conf;
}

/* starttls = optional: port 25, where clients never log in. */
static bool
optional(const struct session *s)
{
	return conf_of(s)->starttls == CONFIG_STARTTLS_OPTIONAL &&
	    conf_of(s)->tls == CONFIG_TLS_STARTTLS;
}

/* ------------------------------------------------------------------ */
/* Deadlines. */

static uint64_t
min_ms(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* The login deadline: from the end of the handshake, never on port 25
 * (RFC 5321 gives no such limit) nor before TLS. */
static uint64_t
login_due(const struct session *s)
{
	if (optional(s) || s->tls_ms == 0)
		return UINT64_MAX;
	return s->tls_ms + conf_of(s)->timeout_login_ms;
}

/* How long the backend may take for what is awaited of it. */
static uint64_t
backend_ms(const struct session *s)
{
	uint64_t t = conf_of(s)->timeout_backend_ms;

	if (s->wait == PROTO_WAIT_BACKEND_DATA)
		return t > SESSION_SMTP_DATA_MS ? t : SESSION_SMTP_DATA_MS;
	if (optional(s) && t < SESSION_SMTP_REPLY_MS)
		return SESSION_SMTP_REPLY_MS;
	return t;
}

/* When the current state's deadline falls, in loop time. */
static uint64_t
due_ms(const struct session *s)
{
	const struct config_listener *conf = conf_of(s);
	uint64_t idle = conf->timeout_idle_ms;

	switch (s->state) {
	case SESSION_PROXY:
		return s->state_ms + conf->timeout_proxy_ms;
	case SESSION_PLAIN:
		/* Port 25 may stay in plaintext: a client's time per
		 * command. Otherwise the whole phase has one deadline. */
		if (optional(s))
			return s->pump.active_ms + idle;
		return s->deadline_ms;
	case SESSION_HANDSHAKE:
		return s->deadline_ms;
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
		/* Each address gets the whole timeout_connect, as nginx's
		 * proxy_connect_timeout per upstream try. */
		return s->state_ms + conf->timeout_connect_ms;
	case SESSION_GREETING:
	case SESSION_DIALOG:
		if (s->wait != PROTO_WAIT_CLIENT)
			return min_ms(s->wait_ms + backend_ms(s), login_due(s));
		/* A client gone after its last command: the backend has what
		 * is left of timeout_linger to end it. */
		if (s->pump.client.ended && idle > conf->timeout_linger_ms)
			idle = conf->timeout_linger_ms;
		return min_ms(s->pump.active_ms + idle, login_due(s));
	case SESSION_RELAY:
		/* One side done: the other gets the shorter linger. */
		if ((s->pump.client.ended || s->pump.backend.ended) &&
		    idle > conf->timeout_linger_ms)
			idle = conf->timeout_linger_ms;
		return s->pump.active_ms + idle;
	case SESSION_FLUSH:
		return s->state_ms + SESSION_FLUSH_MS;
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
	return UINT64_MAX;
}

static void on_timer(uv_timer_t *t);

static void
arm_timer(struct session *s)
{
	uint64_t due = due_ms(s), now = now_ms(s);

	(void)uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
}

/* The one writer of s->state; each state has its own deadline. */
static void
set_state(struct session *s, enum session_state state)
{
	if (log_enabled(CONFIG_LOG_DEBUG))
		log_debug("session %08x-%u-%llu: %s -> %s", process_tag,
		    s->host->index, (unsigned long long)s->seq,
		    state_names[s->state], state_names[state]);
	s->state = state;
	s->state_ms = now_ms(s);
	if (state == SESSION_CLOSING)
		return;
	if (state == SESSION_HANDSHAKE || state == SESSION_CONNECT)
		s->phase_hr = uv_hrtime();
	if (state == SESSION_GREETING) {
		s->wait = PROTO_WAIT_BACKEND;
		s->wait_ms = s->state_ms;
	}
	arm_timer(s);
}

/* ------------------------------------------------------------------ */
/* Ends. */

static void
set_end(struct session *s, enum session_end end, const char *error)
{
	if (end == SESSION_END_NONE || s->end != SESSION_END_NONE)
		return;
	s->end = end;
	s->error = error;
	s->end_state = s->state;
}

static void
format_addr(const union session_addr *a, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	switch (a->sa.sa_family) {
	case AF_INET:
		(void)inet_ntop(AF_INET, &a->in.sin_addr, host, sizeof(host));
		(void)snprintf(buf, size, "%s:%u", host, ntohs(a->in.sin_port));
		break;
	case AF_INET6:
		(void)inet_ntop(AF_INET6, &a->in6.sin6_addr, host,
		    sizeof(host));
		(void)snprintf(buf, size, "[%s]:%u", host,
		    ntohs(a->in6.sin6_port));
		break;
	default:
		(void)snprintf(buf, size, "unknown");
		break;
	}
}

static void
write_log(struct session *s, const char *event)
{
	char id[48], client[CONFIG_ADDR_TEXT], local[CONFIG_ADDR_TEXT];
	char backend_addr[CONFIG_ADDR_TEXT], proxy[CONFIG_ADDR_TEXT];
	const struct pump_side *c = &s->pump.client, *b = &s->pump.backend;
	struct log_session f;

	memset(&f, 0, sizeof(f));
	(void)snprintf(id, sizeof(id), "%08x-%u-%llu", process_tag,
	    s->host->index, (unsigned long long)s->seq);
	format_addr(&s->client_addr, client, sizeof(client));
	format_addr(&s->local_addr, local, sizeof(local));
	f.event = event;
	f.id = id;
	f.listener = conf_of(s)->name;
	f.proto = proto_name(conf_of(s)->protocol);
	f.client = client;
	f.local = local;
	if (s->proxy_addr.sa.sa_family != AF_UNSPEC) {
		format_addr(&s->proxy_addr, proxy, sizeof(proxy));
		f.proxy = proxy;
	}
	f.backend = conf_of(s)->backend.text;
	if (s->backend_addr.sa.sa_family != AF_UNSPEC) {
		format_addr(&s->backend_addr, backend_addr,
		    sizeof(backend_addr));
		f.backend_addr = backend_addr;
	}
	if (c->tls_done) {
		f.tls_version = SSL_get_version(c->ssl);
		f.cipher = SSL_get_cipher_name(c->ssl);
		f.tls_resumed = SSL_session_reused(c->ssl) == 1;
	}
	if (c->ssl != NULL)
		f.sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
	if (s->dialog != NULL)
		s->stats = *dialog_stats(s->dialog);
	f.starttls = s->stats.starttls;
	f.discarded = s->stats.discarded;
	f.refused = s->stats.refused;
	f.client_in = c->bytes_in;
	f.client_out = c->bytes_out;
	f.backend_in = b->bytes_in;
	f.backend_out = b->bytes_out;
	f.duration_ms = (uv_hrtime() - s->started_hr) / 1000000;
	if (strcmp(event, "close") == 0) {
		f.state = session_state_name(s->end_state);
		f.end = session_end_name(s->end);
		f.error = s->error;
	}
	log_session(&f);
}

static void
session_free(struct session *s)
{
	struct session_host *h = s->host;

	assert(s->pending == 0 && s->state == SESSION_CLOSING);
	if (!s->quiet) {
		write_log(s, "close");
		/* A handshake failed only if one began: a client refused at
		 * accept is in SESSION_HANDSHAKE without TLS. */
		metrics_session_end(h->metrics, s->listener->index,
		    (unsigned)s->end,
		    s->end_state == SESSION_HANDSHAKE &&
		        s->pump.client.ssl != NULL,
		    s->pump.client.bytes_in, s->pump.client.bytes_out);
	}
	metrics_leave(h->metrics, s->listener->index, &s->admission);
	pump_free(&s->pump);
	dialog_free(s->dialog);
	s->dialog = NULL;
	uv_freeaddrinfo(s->addrs);
	s->addrs = NULL;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		h->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	h->count--;
	if (h->process_sessions != NULL)
		atomic_fetch_sub(h->process_sessions, 1);
	s->magic = 0;
	free(s);
	h->freed(h);
}

/* One thing the session waited for called back. Returns true when the
 * session is closing (and may now be gone): the caller stops there. */
static bool
session_release(struct session *s)
{
	assert(s->magic == SESSION_MAGIC && s->pending > 0);
	s->pending--;
	if (s->state != SESSION_CLOSING)
		return false;
	if (s->pending == 0)
		session_free(s);
	return true;
}

static void
on_timer_close(uv_handle_t *h)
{
	(void)session_release(h->data);
}

/* The one close path: idempotent; the first end recorded is logged. */
static void
session_close(struct session *s, enum session_end end, const char *error)
{
	assert(s->magic == SESSION_MAGIC);
	if (s->state == SESSION_CLOSING)
		return;
	set_end(s, end, error);
	if (s->end == SESSION_END_NONE)
		set_end(s, SESSION_END_CLIENT_CLOSED, NULL);
	set_state(s, SESSION_CLOSING);
	uv_close((uv_handle_t *)&s->timer, on_timer_close);
	if (pump_close(&s->pump))
		s->pending--; /* nothing was open: no released() comes */
	/* A lookup already running cannot be stopped; its callback frees
	 * the request and releases the session either way. */
	if (s->resolve_req != NULL)
		(void)uv_cancel((uv_req_t *)s->resolve_req);
}

/* A backend lookup or connect is running and may still call back. */
static bool
backend_pending(const struct session *s)
{
	return s->state == SESSION_RESOLVE || s->state == SESSION_CONNECT;
}

/* Ends the session for a failed write into the pump. */
static void
send_failed(struct session *s, int r)
{
	if (r == PUMP_ERR_LIMIT)
		session_close(s, SESSION_END_LIMIT,
		    "session buffer limit reached");
	else if (r == PUMP_ERR_NOMEM)
		session_close(s, SESSION_END_NO_MEMORY, NULL);
	else
		session_close(s, SESSION_END_TLS_ERROR,
		    tls_error_reason("TLS write failed"));
}

/* Sends n bytes to side x; false when that ended the session. */
static bool
send_to(struct session *s, struct pump_side *x, const char *p, size_t n)
{
	int r = pump_send(x, p, n);

	if (r != 0)
		send_failed(s, r);
	return r == 0;
}

/* Whether the client may hear a notice now: in plaintext, or on TLS once
 * the handshake is done, and never inside a line or a reply. */
static bool
may_notice(const struct session *s)
{
	const struct pump_side *c = &s->pump.client;

	if (c->ssl != NULL && !c->tls_done)
		return false;
	if (c->last_out != '\n')
		return false;
	return s->dialog == NULL || !dialog_mid_reply(s->dialog);
}

/*
 * Says notice (unless NO_NOTICE or the client cannot hear it now), then
 * close_notify and FIN, and closes once the client has them and has
 * closed its side too (or at SESSION_FLUSH_MS). end is the logged reason.
 */
static void
session_finish(struct session *s, enum proto_reply notice, enum session_end end,
    const char *error)
{
	struct pump_side *c = &s->pump.client, *b = &s->pump.backend;
	struct proto_reply_args a = {s->listener->server_name, NULL, NULL, 0,
	    NULL};
	char line[512];
	int len;

	if (s->state == SESSION_CLOSING || s->state == SESSION_FLUSH)
		return;
	set_end(s, end, error);
	/* Nothing of the backend's may follow the goodbye: a connect or a
	 * lookup still running is abandoned, and its callback finds the
	 * session past RESOLVE/CONNECT. */
	pump_set_mode(b, PUMP_HOLD);
	if (backend_pending(s)) {
		pump_side_close(b);
		if (s->resolve_req != NULL)
			(void)uv_cancel((uv_req_t *)s->resolve_req);
	}
	if (notice != NO_NOTICE && may_notice(s)) {
		len = proto_reply_format(conf_of(s)->protocol, notice, &a, line,
		    sizeof(line));
		if (len > 0 && !send_to(s, c, line, (size_t)len))
			return;
	}
	pump_finish(c);
	set_state(s, SESSION_FLUSH);
	/* Keep reading (and dropping) so the close is a FIN, not a RST. */
	pump_set_mode(c, PUMP_DRAIN);
}

void
session_shutdown(struct session *s)
{
	switch (s->state) {
	case SESSION_PROXY:
	case SESSION_HANDSHAKE:
		session_close(s, SESSION_END_SHUTDOWN, NULL);
		break;
	case SESSION_PLAIN:
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
	case SESSION_GREETING:
	case SESSION_DIALOG:
		session_finish(s, PROTO_REPLY_SHUTDOWN, SESSION_END_SHUTDOWN,
		    NULL);
		break;
	case SESSION_RELAY:
		/* The goodbye only goes between two lines of the backend's,
		 * never into the middle of one. */
		session_finish(s,
		    s->pump.backend.ended ? NO_NOTICE : PROTO_REPLY_SHUTDOWN,
		    SESSION_END_SHUTDOWN, NULL);
		break;
	case SESSION_FLUSH:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

/* Relayed both ways and finished both ways, or the goodbye delivered. */
static void
check_done(struct session *s)
{
	if (s->state == SESSION_FLUSH && pump_side_done(&s->pump.client))
		session_close(s, SESSION_END_NONE, NULL);
	else if (s->state == SESSION_RELAY && pump_side_done(&s->pump.client) &&
	    pump_side_done(&s->pump.backend))
		session_close(s, SESSION_END_NONE, NULL);
}

/* ------------------------------------------------------------------ */
/* The dialogue. */

static void
dialog_closed(struct session *s, const struct proto_out *out)
{
	static const enum session_end ends[] = {
	    [PROTO_END_NONE] = SESSION_END_CLIENT_CLOSED,
	    [PROTO_END_QUIT] = SESSION_END_CLIENT_CLOSED,
	    [PROTO_END_PROTOCOL] = SESSION_END_PROTOCOL_ERROR,
	    [PROTO_END_BACKEND] = SESSION_END_BACKEND_ERROR,
	};

	session_finish(s, NO_NOTICE, ends[out->end], out->error);
}

/* Moves a step's bytes: n consumed from x, the rest to both sides.
 * False when that ended the session. */
static bool
apply(struct session *s, struct pump_side *x, size_t n,
    const struct proto_out *out)
{
	pump_consume(x, n);
	if (!send_to(s, &s->pump.client, out->to_client, out->to_client_len))
		return false;
	return send_to(s, &s->pump.backend, out->to_backend,
	    out->to_backend_len);
}

/* Authenticated: the dialogue goes and the pump relays untouched, the
 * unconsumed rest of both inputs first. */
static void
relay_start(struct session *s)
{
	s->stats = *dialog_stats(s->dialog);
	dialog_free(s->dialog);
	s->dialog = NULL;
	set_state(s, SESSION_RELAY);
	pump_set_mode(&s->pump.client, PUMP_RELAY);
	pump_set_mode(&s->pump.backend, PUMP_RELAY);
	/* A client that half-closed before its login was answered: the
	 * backend gets the FIN after the rest. */
	if (s->pump.client.ended)
		pump_finish(&s->pump.backend);
}

static void connect_backend(struct session *s);

/* STARTTLS answered: every byte after its line is dropped unread (the
 * CVE-2011-0411 class), then the handshake. */
static void
starttls(struct session *s)
{
	struct pump_side *c = &s->pump.client;
	const char *in;
	size_t len;
	bool hello;

	in = pump_input(c, &len);
	hello = len >= 2 && (unsigned char)in[0] == 0x16 && in[1] == 0x03;
	dialog_stats(s->dialog)->discarded += pump_discard(c);
	if (hello) {
		/* Dropped with the rest, the handshake could only time out. */
		session_finish(s, NO_NOTICE, SESSION_END_PROTOCOL_ERROR,
		    "TLS data sent before the STARTTLS reply");
		return;
	}
	if (pump_start_tls(c, s->listener->ctx) != 0) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	if (s->deadline_ms == 0)
		s->deadline_ms = now_ms(s) + conf_of(s)->timeout_handshake_ms;
	set_state(s, SESSION_HANDSHAKE);
}

/* Before TLS: the client's commands, answered by mailproxy alone. */
static void
plain_input(struct session *s)
{
	struct pump_side *c = &s->pump.client;
	struct proto_out out;
	const char *in;
	size_t len, n;

	for (;;) {
		/* A client that does not read its answers is not read:
		 * the pump calls again once it has. */
		if (!pump_room(c))
			return;
		in = pump_input(c, &len);
		if (len == 0)
			return;
		n = dialog_plain(s->dialog, in, len, &out);
		if (n == 0 && out.event == PROTO_CONTINUE)
			return;
		if (!apply(s, c, n, &out))
			return;
		switch (out.event) {
		case PROTO_CONTINUE:
			if (optional(s))
				arm_timer(s);
			break;
		case PROTO_STARTTLS:
			starttls(s);
			return;
		case PROTO_CONNECT:
			/* The command waits for the backend's greeting. */
			pump_set_mode(c, PUMP_HOLD);
			connect_backend(s);
			return;
		case PROTO_CLOSE:
			dialog_closed(s, &out);
			return;
		case PROTO_GREETED:
		case PROTO_OPAQUE:
			assert(!"event out of place before TLS");
			return;
		}
	}
}

/* One step of the dialogue on side x; false when it must stop (the
 * session changed state or ended). */
static bool
dialog_step(struct session *s, struct pump_side *x, bool *progress,
    bool *forwarded)
{
	struct pump_side *c = &s->pump.client;
	struct proto_out out;
	const char *in;
	size_t len, n;

	in = pump_input(x, &len);
	if (len == 0)
		return true;
	if (x == c)
		n = dialog_client(s->dialog, in, len, &out);
	else if (s->state == SESSION_GREETING)
		n = dialog_greeting(s->dialog, in, len, &out);
	else
		n = dialog_backend(s->dialog, in, len, &out);
	if (!apply(s, x, n, &out))
		return false;
	if (n > 0)
		*progress = true;
	if (x == c && out.to_backend_len > 0)
		*forwarded = true;
	switch (out.event) {
	case PROTO_CONTINUE:
		return true;
	case PROTO_GREETED:
		set_state(s, SESSION_DIALOG);
		*progress = true;
		return true;
	case PROTO_OPAQUE:
		relay_start(s);
		return false;
	case PROTO_CLOSE:
		dialog_closed(s, &out);
		return false;
	case PROTO_STARTTLS:
	case PROTO_CONNECT:
		break;
	}
	assert(!"event out of place after TLS");
	return false;
}

/*
 * After TLS, until authentication: both sides through the dialogue, the
 * backend first (its reply lets the client's next command go), a step at
 * a time while both queues have room. A stop for room is resumed by the
 * pump once the queue has drained.
 */
static void
dialog_input(struct session *s)
{
	struct pump_side *c = &s->pump.client, *b = &s->pump.backend;
	bool progress = true, forwarded = false;
	enum proto_wait w;
	size_t left;

	while (progress) {
		progress = false;
		if (!pump_room(c) || !pump_room(b))
			break;
		if (!dialog_step(s, b, &progress, &forwarded))
			return;
		if (s->state == SESSION_DIALOG &&
		    !dialog_step(s, c, &progress, &forwarded))
			return;
	}
	if (s->state != SESSION_DIALOG)
		return;
	/* A half-closed client: once its last command is forwarded, the
	 * backend gets the FIN too, after it (as the relay does). */
	if (c->ended && !b->want_fin && (pump_input(c, &left), left == 0))
		pump_finish(b);
	/* Each reply's deadline counts from its command, pipelined or not. */
	w = dialog_wait(s->dialog);
	if (w != s->wait || forwarded) {
		s->wait = w;
		s->wait_ms = now_ms(s);
		arm_timer(s);
	}
}

/* ------------------------------------------------------------------ */
/* The backend. */

static void connect_next(struct session *s);

/* One address failed: the next one is tried, or the client told. */
static void
connect_failed(struct session *s, int status)
{
	if (s->next_addr != NULL) {
		connect_next(s);
		return;
	}
	session_finish(s, PROTO_REPLY_UNAVAILABLE,
	    status == UV_ECONNREFUSED ? SESSION_END_BACKEND_REFUSED :
	                                SESSION_END_BACKEND_UNREACHABLE,
	    uv_strerror(status));
}

/*
 * The PROXY header goes first on the backend connection, whole, before
 * any byte of the client's: nothing was queued for the backend before it
 * connected. With late connect the client is already on TLS on a
 * STARTTLS listener, so the header can say so.
 */
static bool
send_proxy_header(struct session *s)
{
	enum config_proxy_protocol v = conf_of(s)->proxy_protocol;
	struct proxy_tls tls = {NULL, NULL, NULL};
	uint8_t header[PROXY_HEADER_MAX];
	SSL *ssl = s->pump.client.ssl;
	size_t len;

	if (v == CONFIG_PROXY_OFF)
		return true;
	if (s->pump.client.tls_done) {
		tls.version = SSL_get_version(ssl);
		tls.cipher = SSL_get_cipher_name(ssl);
		tls.sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	}
	len = proxy_encode(v == CONFIG_PROXY_V1 ? PROXY_V1 : PROXY_V2,
	    &s->client_addr.sa, &s->local_addr.sa, &tls, header);
	return send_to(s, &s->pump.backend, (const char *)header, len);
}

static void
on_backend_connect(uv_connect_t *req, int status)
{
	struct session *s = req->data;
	struct pump_side *b = &s->pump.backend;

	free(req);
	if (session_release(s))
		return;
	/* Cancelled: the handle was closed for the next address or for
	 * the goodbye; whoever closed it carries on. */
	if (status == UV_ECANCELED || s->state != SESSION_CONNECT)
		return;
	if (status < 0) {
		connect_failed(s, status);
		return;
	}
	if (b->h.handle.type == UV_TCP)
		(void)uv_tcp_nodelay(&b->h.tcp, 1);
	metrics_observe(s->host->metrics, s->listener->index, METRICS_CONNECT,
	    (uv_hrtime() - s->phase_hr) / 1000);
	set_state(s, SESSION_GREETING);
	if (!send_proxy_header(s))
		return;
	pump_set_mode(b, PUMP_DELIVER);
	pump_set_mode(&s->pump.client, PUMP_DELIVER);
}

/* A connect request is in flight and will call back. */
static uv_connect_t *
connect_req_new(struct session *s)
{
	uv_connect_t *req = malloc(sizeof(*req));

	if (req == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return NULL;
	}
	req->data = s;
	return req;
}

static void
connecting(struct session *s)
{
	s->pending++;
	set_state(s, SESSION_CONNECT);
}

static void
start_tcp_connect(struct session *s, const struct sockaddr *sa)
{
	struct pump_side *b = &s->pump.backend;
	uv_connect_t *req;
	int r;

	req = connect_req_new(s);
	if (req == NULL)
		return;
	r = pump_side_open_tcp(b);
	if (r < 0) {
		free(req);
		session_finish(s, PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(r));
		return;
	}
	memcpy(&s->backend_addr, sa,
	    sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	                                sizeof(struct sockaddr_in));
	r = uv_tcp_connect(req, &b->h.tcp, sa, on_backend_connect);
	if (r < 0) {
		free(req);
		/* The handle is open: a next address waits for its close. */
		connect_failed(s, r);
		return;
	}
	connecting(s);
}

/* The previous address failed: close its handle, then try the next one
 * (on_side_closed). */
static void
connect_next(struct session *s)
{
	pump_side_close(&s->pump.backend);
}

static void
on_backend_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct session *s = req->data;
	struct addrinfo *ai;

	free(req);
	s->resolve_req = NULL;
	s->addrs = res;
	if (session_release(s) || s->state != SESSION_RESOLVE)
		return;
	if (status < 0) {
		session_finish(s, PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(status));
		return;
	}
	ai = res;
	s->next_addr = ai->ai_next;
	start_tcp_connect(s, ai->ai_addr);
}

static void
connect_backend(struct session *s)
{
	const struct config_backend *be = &conf_of(s)->backend;
	struct pump_side *b = &s->pump.backend;
	struct addrinfo hints;
	uv_connect_t *req;
	int r;

	switch (be->kind) {
	case CONFIG_BACKEND_ADDR:
		start_tcp_connect(s, (const struct sockaddr *)&be->addr.sa);
		return;
	case CONFIG_BACKEND_UNIX:
		req = connect_req_new(s);
		if (req == NULL)
			return;
		r = pump_side_open_pipe(b);
		if (r < 0) {
			free(req);
			connect_failed(s, r);
			return;
		}
		uv_pipe_connect(req, &b->h.pipe, be->path, on_backend_connect);
		connecting(s);
		return;
	case CONFIG_BACKEND_HOST:
		break;
	}
	/* A name is looked up for every session, so a backend that moves
	 * (a container restarted elsewhere) is followed. */
	s->resolve_req = malloc(sizeof(*s->resolve_req));
	if (s->resolve_req == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	s->resolve_req->data = s;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	r = uv_getaddrinfo(s->host->pump.loop, s->resolve_req,
	    on_backend_resolved, be->host, be->port, &hints);
	if (r < 0) {
		free(s->resolve_req);
		s->resolve_req = NULL;
		session_finish(s, PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(r));
		return;
	}
	s->pending++;
	set_state(s, SESSION_RESOLVE);
}

/* ------------------------------------------------------------------ */
/* The pump's callbacks. */

static struct session *
session_of(void *owner)
{
	struct session *s = owner;

	assert(s->magic == SESSION_MAGIC);
	return s;
}

static void session_begin(struct session *s);
static bool admit(struct session *s);

/* The load balancer's PROXY header; once whole, the session starts as
 * without one, with what followed it as the client's first bytes. */
static void
proxy_input(struct session *s)
{
	struct pump_side *c = &s->pump.client;
	struct proxy_header h;
	const char *why = NULL, *in;
	enum proxy_status st;
	size_t len;

	in = pump_input(c, &len);
	st = proxy_decode((const uint8_t *)in, len, &h, &why);
	if (st == PROXY_NEED_MORE)
		return;
	if (st == PROXY_BAD) {
		session_close(s, SESSION_END_PROXY_ERROR, why);
		return;
	}
	pump_consume(c, h.len);
	s->proxy_len = (uint16_t)h.len;
	if (!h.local) {
		memcpy(&s->client_addr, &h.src, sizeof(s->client_addr));
		memcpy(&s->local_addr, &h.dst, sizeof(s->local_addr));
	} else {
		s->health_check = true;
	}
	session_begin(s);
}

static void
on_pump_input(void *owner, struct pump_side *x)
{
	struct session *s = session_of(owner);

	(void)x;
	switch (s->state) {
	case SESSION_PROXY:
		proxy_input(s);
		break;
	case SESSION_PLAIN:
		plain_input(s);
		break;
	case SESSION_GREETING:
	case SESSION_DIALOG:
		dialog_input(s);
		break;
	case SESSION_HANDSHAKE:
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
	case SESSION_RELAY:
	case SESSION_FLUSH:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

static void
on_pump_handshake(void *owner, struct pump_side *x)
{
	struct session *s = session_of(owner);

	(void)x;
	if (s->state != SESSION_HANDSHAKE)
		return;
	s->tls_ms = now_ms(s);
	metrics_observe(s->host->metrics, s->listener->index, METRICS_HANDSHAKE,
	    (uv_hrtime() - s->phase_hr) / 1000);
	dialog_tls_started(s->dialog);
	/* Late connect: only now does the backend hear of the client. */
	connect_backend(s);
}

static void
client_eof(struct session *s, const char *error)
{
	switch (s->state) {
	case SESSION_PROXY:
		if (s->pump.client.bytes_in > 0)
			session_close(s, SESSION_END_PROXY_ERROR,
			    "truncated PROXY protocol header");
		else
			session_close(s, SESSION_END_CLIENT_CLOSED, NULL);
		break;
	case SESSION_HANDSHAKE:
		/* A port scan or a client that gave up: no error unless it
		 * sent something first. */
		session_close(s, SESSION_END_CLIENT_CLOSED,
		    s->pump.client.bytes_in == s->proxy_len ? NULL : error);
		break;
	case SESSION_RELAY:
		set_end(s, SESSION_END_CLIENT_CLOSED, error);
		arm_timer(s); /* the backend now has timeout_linger */
		check_done(s);
		break;
	case SESSION_FLUSH:
		check_done(s);
		break;
	case SESSION_PLAIN:
		/* Its last commands' answers still go out. */
		session_finish(s, NO_NOTICE, SESSION_END_CLIENT_CLOSED, error);
		break;
	case SESSION_GREETING:
	case SESSION_DIALOG:
		/* A half-close, as in the relay: what the client sent before
		 * still goes through the dialogue, and the backend answers
		 * it (dialog_input sends it the FIN after the last command). */
		set_end(s, SESSION_END_CLIENT_CLOSED, error);
		dialog_input(s);
		if (s->state == SESSION_GREETING || s->state == SESSION_DIALOG)
			arm_timer(s);
		break;
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		session_close(s, SESSION_END_CLIENT_CLOSED, error);
		break;
	}
}

static void
backend_eof(struct session *s)
{
	switch (s->state) {
	case SESSION_RELAY:
		set_end(s, SESSION_END_BACKEND_CLOSED, NULL);
		arm_timer(s); /* the client now has timeout_linger */
		check_done(s);
		break;
	case SESSION_GREETING:
		session_finish(s, PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_CLOSED,
		    "backend closed before greeting");
		break;
	case SESSION_DIALOG:
		/* A command that will never be answered: say so. */
		session_finish(s,
		    s->wait == PROTO_WAIT_CLIENT ? NO_NOTICE :
		                                   PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_CLOSED, NULL);
		break;
	case SESSION_PROXY:
	case SESSION_PLAIN:
	case SESSION_HANDSHAKE:
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
	case SESSION_FLUSH:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

static void
on_pump_eof(void *owner, struct pump_side *x, const char *error)
{
	struct session *s = session_of(owner);

	if (x == &s->pump.client)
		client_eof(s, error);
	else
		backend_eof(s);
}

static void
on_pump_drained(void *owner, struct pump_side *x)
{
	(void)x;
	check_done(session_of(owner));
}

static void
on_pump_fail(void *owner, struct pump_side *x, enum pump_error e,
    const char *detail)
{
	struct session *s = session_of(owner);
	bool client = x == &s->pump.client;

	switch (e) {
	case PUMP_ERR_LIMIT:
		session_close(s, SESSION_END_LIMIT, detail);
		break;
	case PUMP_ERR_NOMEM:
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		break;
	case PUMP_ERR_TLS:
		/* The alert OpenSSL queued still goes out. */
		session_finish(s, NO_NOTICE, SESSION_END_TLS_ERROR, detail);
		break;
	case PUMP_ERR_SOCKET:
		session_close(s,
		    client ? SESSION_END_CLIENT_ERROR :
		             SESSION_END_BACKEND_ERROR,
		    detail);
		break;
	}
}

static void
on_pump_side_closed(void *owner, struct pump_side *x)
{
	struct session *s = session_of(owner);
	struct addrinfo *ai;

	(void)x;
	/* The next address, unless the session moved on meanwhile. */
	if (!backend_pending(s) || s->next_addr == NULL)
		return;
	ai = s->next_addr;
	s->next_addr = ai->ai_next;
	start_tcp_connect(s, ai->ai_addr);
}

static void
on_pump_released(void *owner)
{
	(void)session_release(session_of(owner));
}

static const struct pump_ops pump_ops = {
    .input = on_pump_input,
    .handshake = on_pump_handshake,
    .eof = on_pump_eof,
    .drained = on_pump_drained,
    .fail = on_pump_fail,
    .side_closed = on_pump_side_closed,
    .released = on_pump_released,
};

/* ------------------------------------------------------------------ */
/* Deadlines, when they fall. */

static void
on_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	uint64_t now = now_ms(s), due;

	assert(s->magic == SESSION_MAGIC);
	due = due_ms(s);
	if (now < due) {
		/* Activity moved it: re-armed lazily, as reads and writes
		 * only stamp active_ms. */
		arm_timer(s);
		return;
	}
	switch (s->state) {
	case SESSION_PLAIN:
		session_finish(s, PROTO_REPLY_TIMEOUT, SESSION_END_TIMEOUT,
		    optional(s) ? "client idle" :
		                  "no TLS within "
		                  "timeout_handshake");
		break;
	case SESSION_PROXY:
	case SESSION_HANDSHAKE:
	case SESSION_RELAY:
	case SESSION_FLUSH:
		session_close(s, SESSION_END_TIMEOUT, NULL);
		break;
	case SESSION_RESOLVE:
		session_finish(s, PROTO_REPLY_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(UV_ETIMEDOUT));
		break;
	case SESSION_CONNECT:
		connect_failed(s, UV_ETIMEDOUT);
		break;
	case SESSION_GREETING:
	case SESSION_DIALOG:
		if (now >= login_due(s))
			session_finish(s, PROTO_REPLY_TIMEOUT,
			    SESSION_END_TIMEOUT,
			    "no login within timeout_login");
		else if (s->wait == PROTO_WAIT_CLIENT)
			session_finish(s, PROTO_REPLY_TIMEOUT,
			    SESSION_END_TIMEOUT, "client idle");
		else
			session_finish(s, PROTO_REPLY_UNAVAILABLE,
			    SESSION_END_TIMEOUT,
			    s->state == SESSION_GREETING ?
			        "no greeting from the backend" :
			        "no reply from the backend");
		break;
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* Accepting. */

/*
 * Past the session limit a client of a plaintext greeting gets the
 * protocol's "try again later" rather than a bare close: one write
 * attempt, nothing queued, as nothing may be held past the limit. The
 * client speaks only after the greeting, so the close that follows sends
 * FIN after the line, not RST. (Behind accept_proxy the first bytes are
 * the load balancer's header, not read yet: no line there.)
 */
static void
say_busy(struct session *s, enum proto_reply reply)
{
	struct proto_reply_args a = {s->listener->server_name, NULL, NULL, 0,
	    NULL};
	struct pump_side *c = &s->pump.client;
	char line[512];
	uv_buf_t b;
	int len, r;

	len = proto_reply_format(conf_of(s)->protocol, reply, &a, line,
	    sizeof(line));
	if (len <= 0)
		return;
	b = uv_buf_init(line, (unsigned)len);
	r = uv_try_write(&c->h.stream, &b, 1);
	if (r > 0)
		c->bytes_out += (uint64_t)r;
}

void
session_accept(struct session_host *h, const struct session_listener *l,
    uv_stream_t *server)
{
	struct pump_side *c;
	struct session *s;
	int len, r;

	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		log_warnx("listener %s: out of memory for a new session",
		    l->conf->name);
		return;
	}
	s->magic = SESSION_MAGIC;
	s->host = h;
	s->listener = l;
	s->seq = ++h->next_seq;
	s->state = s->end_state = SESSION_HANDSHAKE;
	s->state_ms = uv_now(h->pump.loop);
	s->started_hr = uv_hrtime();
	s->next = h->sessions;
	if (h->sessions != NULL)
		h->sessions->prev = s;
	h->sessions = s;
	h->count++;
	if (h->process_sessions != NULL)
		atomic_fetch_add(h->process_sessions, 1);
	pump_init(&s->pump, &h->pump, &pump_ops, s);
	c = &s->pump.client;
	s->pending++; /* the pump, until it has released */
	/* Both inits on a valid loop cannot fail (libuv unix). */
	(void)uv_timer_init(h->pump.loop, &s->timer);
	s->timer.data = s;
	s->pending++;
	(void)pump_side_open_tcp(c);

	r = uv_accept(server, &c->h.stream);
	if (r < 0) {
		/* Nothing was accepted: no connection, nothing to log. */
		s->quiet = true;
		session_close(s, SESSION_END_CLIENT_ERROR, uv_strerror(r));
		return;
	}
	len = sizeof(s->client_addr);
	(void)uv_tcp_getpeername(&c->h.tcp, &s->client_addr.sa, &len);
	len = sizeof(s->local_addr);
	(void)uv_tcp_getsockname(&c->h.tcp, &s->local_addr.sa, &len);
	(void)uv_tcp_nodelay(&c->h.tcp, 1);
	if (h->process_sessions != NULL &&
	    atomic_load(h->process_sessions) > h->max) {
		if (l->conf->tls == CONFIG_TLS_STARTTLS &&
		    !l->conf->accept_proxy)
			say_busy(s, PROTO_REPLY_BUSY);
		session_close(s, SESSION_END_LIMIT,
		    "too many sessions for the open file limit");
		return;
	}
	if (l->conf->accept_proxy) {
		/* The peer is the load balancer; who the client is, its
		 * header says, once it has been read. */
		s->proxy_addr = s->client_addr;
		set_state(s, SESSION_PROXY);
		if (!config_cidr_match(l->conf->trusted_proxies,
		        l->conf->trusted_proxies_count, &s->client_addr.sa)) {
			session_close(s, SESSION_END_PROXY_ERROR,
			    "address not in trusted_proxies");
			return;
		}
		pump_set_mode(c, PUMP_DELIVER);
		return;
	}
	session_begin(s);
}

/*
 * The instance's limits, once the client is known (after a load
 * balancer's header). A refused client of a plaintext greeting hears its
 * protocol's "too many connections"; on implicit TLS it is closed before
 * the handshake, which would cost more than the refusal saves.
 */
static bool
admit(struct session *s)
{
	static const char *const why[METRICS_LIMIT_COUNT_] = {
	    [METRICS_LIMIT_SESSIONS] = "max_sessions reached",
	    [METRICS_LIMIT_PER_CLIENT] = "max_sessions_per_client reached",
	    [METRICS_LIMIT_RATE] = "max_connect_rate_per_client reached",
	};
	const struct session_listener *l = s->listener;
	enum metrics_limit refused;

	refused = metrics_admit(s->host->metrics, l->index,
	    s->health_check ? NULL : &s->client_addr.sa, &l->limits,
	    &s->admission);
	if (refused == METRICS_LIMIT_COUNT_)
		return true;
	if (l->conf->tls == CONFIG_TLS_STARTTLS)
		say_busy(s,
		    refused == METRICS_LIMIT_SESSIONS ?
		        PROTO_REPLY_BUSY :
		        PROTO_REPLY_CLIENT_BUSY);
	session_close(s, SESSION_END_LIMIT, why[refused]);
	return false;
}

/* The session proper, once the client is known. */
static void
session_begin(struct session *s)
{
	const struct session_listener *l = s->listener;
	struct pump_side *c = &s->pump.client;
	struct proto_out out;

	if (!admit(s))
		return;
	if (s->host->cfg->log_connect)
		write_log(s, "connect");
	s->dialog = dialog_new(&l->params);
	if (s->dialog == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	if (l->conf->tls == CONFIG_TLS_STARTTLS) {
		/* Late connect: mailproxy alone until the handshake, which
		 * on starttls = required must end by this deadline. */
		if (!optional(s))
			s->deadline_ms =
			    now_ms(s) + l->conf->timeout_handshake_ms;
		set_state(s, SESSION_PLAIN);
		dialog_greet(s->dialog, &out);
		if (!send_to(s, c, out.to_client, out.to_client_len))
			return;
		pump_set_mode(c, PUMP_DELIVER);
		return;
	}
	if (pump_start_tls(c, l->ctx) != 0) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	s->deadline_ms = now_ms(s) + l->conf->timeout_handshake_ms;
	set_state(s, SESSION_HANDSHAKE);
}

/* ------------------------------------------------------------------ */
/* The host. */

void
session_host_init(struct session_host *h, uv_loop_t *loop,
    const struct config *cfg, unsigned index, size_t pool_free_max,
    void (*freed)(struct session_host *h))
{
	memset(h, 0, sizeof(*h));
	pump_host_init(&h->pump, loop, pool_free_max);
	h->cfg = cfg;
	h->index = index;
	h->freed = freed;
}

void
session_host_close(struct session_host *h)
{
	assert(h->count == 0);
	pump_host_close(&h->pump);
}

void
session_host_destroy(struct session_host *h)
{
	pump_host_destroy(&h->pump);
}
