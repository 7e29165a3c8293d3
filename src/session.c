/*
 * Session lifecycle: accept, TLS handshake, backend connect, timers, the
 * one close path and the connection log line. Moving bytes is relay.c's.
 *
 * Ownership (STYLE.md §7): the session owns its handles, requests, SSL
 * object and chunks. session_close() only starts closing; every handle's
 * close callback and every request's callback calls session_release(),
 * and the last one frees the session in session_free(), which is also
 * where the single log line is written.
 *
 * Must not: free anything a pending libuv callback may still touch, or
 * send the backend a byte before the client's TLS handshake is complete.
 */
#include "mailproxy/session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "mailproxy/log.h"
#include "mailproxy/proto.h"
#include "mailproxy/proxy_protocol.h"
#include "mailproxy/relay.h"
#include "mailproxy/worker.h"

/* Time allowed for mailproxy's last words to reach the client. */
#define FLUSH_TIMEOUT_MS 5000

static const char *const state_names[SESSION_STATE_COUNT_] = {
    [SESSION_PROXY] = "proxy",
    [SESSION_PLAIN] = "plain",
    [SESSION_HANDSHAKE] = "handshake",
    [SESSION_RESOLVE] = "resolve",
    [SESSION_CONNECT] = "connect",
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

static void on_timer(uv_timer_t *t);

static uint64_t
state_timeout(const struct session *s)
{
	const struct config_listener *conf = s->listener->conf;

	switch (s->state) {
	case SESSION_PROXY:
		return conf->timeout_proxy_ms;
	case SESSION_PLAIN:
	case SESSION_HANDSHAKE:
		return conf->timeout_handshake_ms;
	case SESSION_RESOLVE:
	case SESSION_CONNECT:
		return conf->timeout_connect_ms;
	case SESSION_RELAY:
		return conf->timeout_idle_ms;
	case SESSION_FLUSH:
		return FLUSH_TIMEOUT_MS;
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
	return 0;
}

/* The one writer of s->state; each state has its own timeout. */
static void
set_state(struct session *s, enum session_state state)
{
	uint64_t ms;

	if (log_enabled(CONFIG_LOG_DEBUG))
		log_debug("session %08x-%u-%llu: %s -> %s", process_tag,
		    s->worker->index, (unsigned long long)s->seq,
		    state_names[s->state], state_names[state]);
	s->state = state;
	if (state == SESSION_CLOSING)
		return;
	ms = state_timeout(s);
	(void)uv_timer_start(&s->timer, on_timer, ms, 0);
}

void
session_set_end(struct session *s, enum session_end end, const char *error)
{
	if (end == SESSION_END_NONE || s->end != SESSION_END_NONE)
		return;
	s->end = end;
	s->error = error;
	s->end_state = s->state;
}

void
session_touch(struct session *s)
{
	s->active_ms = uv_now(&s->worker->loop);
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
	struct log_session f;
	memset(&f, 0, sizeof(f));
	(void)snprintf(id, sizeof(id), "%08x-%u-%llu", process_tag,
	    s->worker->index, (unsigned long long)s->seq);
	format_addr(&s->client_addr, client, sizeof(client));
	format_addr(&s->local_addr, local, sizeof(local));
	f.event = event;
	f.id = id;
	f.listener = s->listener->conf->name;
	f.proto = proto_name(s->listener->conf->protocol);
	f.client = client;
	f.local = local;
	if (s->proxy_addr.sa.sa_family != AF_UNSPEC) {
		format_addr(&s->proxy_addr, proxy, sizeof(proxy));
		f.proxy = proxy;
	}
	f.backend = s->listener->conf->backend.text;
	if (s->backend_addr.sa.sa_family != AF_UNSPEC) {
		format_addr(&s->backend_addr, backend_addr,
		    sizeof(backend_addr));
		f.backend_addr = backend_addr;
	}
	if (s->tls_up) {
		f.tls_version = SSL_get_version(s->ssl);
		f.cipher = SSL_get_cipher_name(s->ssl);
		f.tls_resumed = SSL_session_reused(s->ssl) == 1;
	}
	if (s->ssl != NULL)
		f.sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
	if (s->dialog != NULL)
		s->stats = *dialog_stats(s->dialog);
	f.starttls = s->stats.starttls;
	f.discarded = s->stats.discarded;
	f.refused = s->stats.refused;
	f.client_in = s->client.bytes_in;
	f.client_out = s->client.bytes_out;
	f.backend_in = s->backend.bytes_in;
	f.backend_out = s->backend.bytes_out;
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
	struct buf_pool *pool = &s->worker->pool;
	struct worker *w = s->worker;

	assert(s->pending == 0 && s->state == SESSION_CLOSING);
	if (!s->quiet)
		write_log(s, "close");
	SSL_free(s->ssl);
	s->ssl = NULL;
	dialog_free(s->dialog);
	s->dialog = NULL;
	buf_pool_put(pool, s->plain_in);
	buf_pool_put(pool, s->client.in);
	buf_pool_put(pool, s->backend.in);
	buf_queue_clear(&s->client.out, pool);
	buf_queue_clear(&s->backend.out, pool);
	uv_freeaddrinfo(s->addrs);
	relay_flush_cancel(&s->client);
	relay_flush_cancel(&s->backend);
	s->magic = 0;
	worker_session_remove(w, s);
	free(s);
}

bool
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
on_side_close(uv_handle_t *h)
{
	struct side *x = h->data;

	(void)session_release(x->session);
}

static void
on_timer_close(uv_handle_t *h)
{
	(void)session_release(h->data);
}

static void
close_side(struct side *x)
{
	if (!x->open)
		return;
	x->open = false;
	x->reading = false;
	uv_close(&x->h.handle, on_side_close);
}

void
session_close(struct session *s, enum session_end end, const char *error)
{
	assert(s->magic == SESSION_MAGIC);
	if (s->state == SESSION_CLOSING)
		return;
	session_set_end(s, end, error);
	if (s->end == SESSION_END_NONE)
		session_set_end(s, SESSION_END_CLIENT_CLOSED, NULL);
	set_state(s, SESSION_CLOSING);
	uv_close((uv_handle_t *)&s->timer, on_timer_close);
	close_side(&s->client);
	close_side(&s->backend);
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

void
session_finish(struct session *s, int notice, enum session_end end,
    const char *error)
{
	char line[512];
	int len;

	session_set_end(s, end, error);
	/* Nothing of the backend's may follow the goodbye: a connect or a
	 * lookup still running is abandoned, and its callback finds the
	 * session past RESOLVE/CONNECT. */
	relay_read_stop(&s->backend);
	s->backend.paused = false;
	s->client.paused = false;
	if (backend_pending(s)) {
		close_side(&s->backend);
		if (s->resolve_req != NULL)
			(void)uv_cancel((uv_req_t *)s->resolve_req);
	}
	if (notice >= 0 && (s->tls_up || s->ssl == NULL)) {
		len = proto_notice_line(s->listener->conf->protocol,
		    (enum proto_notice)notice, s->listener->server_name, line,
		    sizeof(line));
		/* Plaintext only where the client is still in plaintext. */
		if (len > 0)
			s->sink.to_client(s, line, (size_t)len);
	}
	if (s->tls_up) {
		ERR_clear_error();
		(void)SSL_shutdown(s->ssl);
		ERR_clear_error();
	}
	if (s->tls_io.nomem || s->nomem) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	set_state(s, SESSION_FLUSH);
	/* Keep reading (and dropping) so the close is a FIN, not a RST. */
	if (!s->client.eof)
		(void)relay_read_start(&s->client);
	s->client.want_fin = true;
	relay_flush(&s->client);
	if (s->state == SESSION_FLUSH && s->client.eof &&
	    s->client.out.bytes == 0)
		session_close(s, SESSION_END_NONE, NULL);
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
		session_finish(s, PROTO_NOTICE_SHUTDOWN, SESSION_END_SHUTDOWN,
		    NULL);
		break;
	case SESSION_RELAY:
		/* The goodbye only goes between two lines of the backend's,
		 * never into the middle of one. */
		if (s->last_to_client == '\n' && !s->backend.eof)
			session_finish(s, PROTO_NOTICE_SHUTDOWN,
			    SESSION_END_SHUTDOWN, NULL);
		else
			session_finish(s, -1, SESSION_END_SHUTDOWN, NULL);
		break;
	case SESSION_FLUSH:
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

static void connect_next(struct session *s);

/* One address failed: the next one is tried, or the client told. */
static void
connect_failed(struct session *s, int status)
{
	if (s->next_addr != NULL) {
		connect_next(s);
		return;
	}
	session_finish(s, PROTO_NOTICE_UNAVAILABLE,
	    status == UV_ECONNREFUSED ? SESSION_END_BACKEND_REFUSED :
	                                SESSION_END_BACKEND_UNREACHABLE,
	    uv_strerror(status));
}

/*
 * The PROXY header goes first on the backend connection, whole in one
 * write, before any byte of the client's: nothing was queued for the
 * backend before it connected. With late connect the client is already
 * on TLS on a STARTTLS listener, so the header can say so.
 */
static bool
send_proxy_header(struct session *s)
{
	enum config_proxy_protocol v = s->listener->conf->proxy_protocol;
	struct proxy_tls tls = {NULL, NULL, NULL};
	uint8_t header[PROXY_HEADER_MAX];
	struct side *b = &s->backend;
	size_t len;

	if (v == CONFIG_PROXY_OFF)
		return true;
	if (s->tls_up) {
		tls.version = SSL_get_version(s->ssl);
		tls.cipher = SSL_get_cipher_name(s->ssl);
		tls.sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
	}
	len = proxy_encode(v == CONFIG_PROXY_V1 ? PROXY_V1 : PROXY_V2,
	    &s->client_addr.sa, &s->local_addr.sa, &tls, header);
	if (buf_queue_append(&b->out, &s->worker->pool, (const char *)header,
	        len) != 0) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return false;
	}
	relay_flush(b);
	return s->state == SESSION_RELAY;
}

static void
on_backend_connect(uv_connect_t *req, int status)
{
	struct session *s = req->data;

	free(req);
	if (session_release(s))
		return;
	/* Cancelled: the handle was closed for the next address or for
	 * the goodbye; whoever closed it carries on. */
	if (status == UV_ECANCELED || !backend_pending(s))
		return;
	if (status < 0) {
		connect_failed(s, status);
		return;
	}
	if (s->backend.h.handle.type == UV_TCP)
		(void)uv_tcp_nodelay(&s->backend.h.tcp, 1);
	session_touch(s);
	set_state(s, SESSION_RELAY);
	if (!send_proxy_header(s))
		return;
	relay_start(s);
}

/* The backend handle was just initialised: the session owns it now. */
static void
adopt_backend_handle(struct session *s)
{
	s->backend.open = true;
	s->backend.h.handle.data = &s->backend;
	s->pending++;
}

/* A connect request is in flight and will call back. */
static void
connecting(struct session *s)
{
	s->pending++;
	set_state(s, SESSION_CONNECT);
}

/* The request lives for its flight only: an idle session holds none. */
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
start_tcp_connect(struct session *s, const struct sockaddr *sa)
{
	struct side *b = &s->backend;
	uv_connect_t *req;
	int r;

	req = connect_req_new(s);
	if (req == NULL)
		return;
	r = uv_tcp_init(&s->worker->loop, &b->h.tcp);
	if (r < 0) {
		free(req);
		session_finish(s, PROTO_NOTICE_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(r));
		return;
	}
	adopt_backend_handle(s);
	memcpy(&s->backend_addr, sa,
	    sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	                                sizeof(struct sockaddr_in));
	r = uv_tcp_connect(req, &b->h.tcp, sa, on_backend_connect);
	if (r < 0) {
		free(req);
		connect_failed(s, r);
		return;
	}
	connecting(s);
}

static void
on_retry_close(uv_handle_t *h)
{
	struct side *b = h->data;
	struct session *s = b->session;
	struct addrinfo *ai;

	if (session_release(s) || !backend_pending(s))
		return;
	ai = s->next_addr;
	s->next_addr = ai->ai_next;
	start_tcp_connect(s, ai->ai_addr);
}

/* The previous address failed: close its handle, then try the next. */
static void
connect_next(struct session *s)
{
	struct side *b = &s->backend;

	b->open = false;
	uv_close(&b->h.handle, on_retry_close);
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
		session_finish(s, PROTO_NOTICE_UNAVAILABLE,
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
	const struct config_backend *be = &s->listener->conf->backend;
	struct side *b = &s->backend;
	struct addrinfo hints;
	uv_connect_t *req;
	int r;

	/* Nothing reaches the backend before it is connected; input that
	 * came with the handshake waits in client.in. */
	relay_read_stop(&s->client);
	switch (be->kind) {
	case CONFIG_BACKEND_ADDR:
		start_tcp_connect(s, (const struct sockaddr *)&be->addr.sa);
		return;
	case CONFIG_BACKEND_UNIX:
		req = connect_req_new(s);
		if (req == NULL)
			return;
		r = uv_pipe_init(&s->worker->loop, &b->h.pipe, 0);
		if (r < 0) {
			free(req);
			connect_failed(s, r);
			return;
		}
		adopt_backend_handle(s);
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
	r = uv_getaddrinfo(&s->worker->loop, s->resolve_req,
	    on_backend_resolved, be->host, be->port, &hints);
	if (r < 0) {
		free(s->resolve_req);
		s->resolve_req = NULL;
		session_finish(s, PROTO_NOTICE_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(r));
		return;
	}
	s->pending++;
	set_state(s, SESSION_RESOLVE);
}

void
session_handshake(struct session *s)
{
	const char *why;
	int r, err;

	ERR_clear_error();
	r = SSL_do_handshake(s->ssl);
	relay_flush(&s->client);
	if (s->state != SESSION_HANDSHAKE)
		return;
	if (r == 1) {
		s->tls_up = true;
		if (s->dialog != NULL)
			dialog_tls_started(s->dialog);
		connect_backend(s);
		return;
	}
	err = SSL_get_error(s->ssl, r);
	if (err == SSL_ERROR_WANT_READ && !s->tls_io.eof)
		return;
	if (s->tls_io.nomem) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	if (s->tls_io.eof) {
		/* A port scan or a client that gave up: no error unless it
		 * sent something first. */
		session_close(s, SESSION_END_CLIENT_CLOSED,
		    s->client.bytes_in == s->proxy_len ?
		        NULL :
		        tls_error_reason("unexpected eof while reading"));
		return;
	}
	why = tls_error_reason("handshake failed");
	session_finish(s, -1, SESSION_END_TLS_ERROR,
	    s->tls_io.refused != NULL ? s->tls_io.refused : why);
}

static void
on_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	uint64_t limit, idle;

	assert(s->magic == SESSION_MAGIC);
	switch (s->state) {
	case SESSION_PLAIN:
		session_finish(s, -1, SESSION_END_TIMEOUT, NULL);
		break;
	case SESSION_PROXY:
	case SESSION_HANDSHAKE:
		session_close(s, SESSION_END_TIMEOUT, NULL);
		break;
	case SESSION_RESOLVE:
		session_finish(s, PROTO_NOTICE_UNAVAILABLE,
		    SESSION_END_BACKEND_UNREACHABLE, uv_strerror(UV_ETIMEDOUT));
		break;
	case SESSION_CONNECT:
		/* Each address gets the whole timeout_connect, as nginx's
		 * proxy_connect_timeout per upstream try. */
		connect_failed(s, UV_ETIMEDOUT);
		break;
	case SESSION_RELAY:
		/* Re-armed lazily: reads and writes only stamp active_ms. */
		limit = s->listener->conf->timeout_idle_ms;
		if ((s->client.eof || s->backend.eof) &&
		    limit > s->listener->conf->timeout_linger_ms)
			limit = s->listener->conf->timeout_linger_ms;
		idle = uv_now(&s->worker->loop) - s->active_ms;
		if (idle >= limit)
			session_close(s, SESSION_END_TIMEOUT, NULL);
		else
			(void)uv_timer_start(t, on_timer, limit - idle, 0);
		break;
	case SESSION_FLUSH:
		session_close(s, SESSION_END_TIMEOUT, NULL);
		break;
	case SESSION_CLOSING:
	case SESSION_STATE_COUNT_:
		break;
	}
}

void
session_linger(struct session *s)
{
	const struct config_listener *conf = s->listener->conf;

	if (s->state == SESSION_RELAY &&
	    conf->timeout_idle_ms > conf->timeout_linger_ms)
		(void)uv_timer_start(&s->timer, on_timer,
		    conf->timeout_linger_ms, 0);
}

static void session_begin(struct session *s);

/*
 * Past the session limit a client of a plaintext greeting gets the
 * protocol's "try again later" rather than a bare close: one write
 * attempt, nothing queued, as nothing may be held past the limit. The
 * client speaks only after the greeting, so the close that follows sends
 * FIN after the line, not RST. (Behind accept_proxy the first bytes are
 * the load balancer's header, not read yet: no line there.)
 */
static void
say_busy(struct session *s)
{
	char line[512];
	uv_buf_t b;
	int len, r;

	len = proto_notice_line(s->listener->conf->protocol, PROTO_NOTICE_BUSY,
	    s->listener->server_name, line, sizeof(line));
	if (len <= 0)
		return;
	b = uv_buf_init(line, (unsigned)len);
	r = uv_try_write(&s->client.h.stream, &b, 1);
	if (r > 0)
		s->client.bytes_out += (uint64_t)r;
}

void
session_accept(struct worker *w, struct worker_listener *l, uv_stream_t *server)
{
	struct session *s;
	int len, r;

	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		log_warnx("listener %s: out of memory for a new session",
		    l->conf->name);
		return;
	}
	s->magic = SESSION_MAGIC;
	s->worker = w;
	s->listener = l;
	s->seq = ++w->next_seq;
	s->last_to_client = '\n';
	s->state = SESSION_HANDSHAKE;
	s->end_state = SESSION_HANDSHAKE;
	relay_side_init(s, &s->client, &s->backend);
	relay_side_init(s, &s->backend, &s->client);
	s->timer.data = s;
	s->started_ms = s->active_ms = uv_now(&w->loop);
	s->started_hr = uv_hrtime();
	worker_session_add(w, s);

	/* Both inits on a valid loop cannot fail (libuv unix). */
	(void)uv_timer_init(&w->loop, &s->timer);
	s->pending++;
	(void)uv_tcp_init(&w->loop, &s->client.h.tcp);
	s->client.open = true;
	s->pending++;

	r = uv_accept(server, &s->client.h.stream);
	if (r < 0) {
		/* Nothing was accepted: no connection, nothing to log. */
		s->quiet = true;
		session_close(s, SESSION_END_CLIENT_ERROR, uv_strerror(r));
		return;
	}
	len = sizeof(s->client_addr);
	(void)uv_tcp_getpeername(&s->client.h.tcp, &s->client_addr.sa, &len);
	len = sizeof(s->local_addr);
	(void)uv_tcp_getsockname(&s->client.h.tcp, &s->local_addr.sa, &len);
	(void)uv_tcp_nodelay(&s->client.h.tcp, 1);
	if (w->process_sessions != NULL &&
	    atomic_load(w->process_sessions) > w->session_max) {
		if (l->conf->tls == CONFIG_TLS_STARTTLS &&
		    !l->conf->accept_proxy)
			say_busy(s);
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
		(void)relay_read_start(&s->client);
		return;
	}
	session_begin(s);
}

void
session_proxy_header(struct session *s)
{
	struct buf_chunk *in = s->client.in;
	struct proxy_header h;
	const char *why = NULL;
	enum proxy_status st;

	st = proxy_decode((const uint8_t *)in->data + in->start,
	    buf_chunk_len(in), &h, &why);
	if (st == PROXY_NEED_MORE)
		return;
	if (st == PROXY_BAD) {
		session_close(s, SESSION_END_PROXY_ERROR, why);
		return;
	}
	in->start += h.len;
	s->proxy_len = (uint16_t)h.len;
	if (!h.local) {
		memcpy(&s->client_addr, &h.src, sizeof(s->client_addr));
		memcpy(&s->local_addr, &h.dst, sizeof(s->local_addr));
	}
	session_begin(s);
}

/* The session proper, once the client is known. */
static void
session_begin(struct session *s)
{
	struct worker *w = s->worker;
	struct worker_listener *l = s->listener;

	if (w->cfg->log_connect)
		write_log(s, "connect");

	s->tls_io.in = &s->client.in;
	s->tls_io.out = &s->client.out;
	s->tls_io.pool = &w->pool;
	relay_sink_init(s);
	s->dialog = dialog_new(&l->dialog);
	if (s->dialog == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	if (l->conf->tls == CONFIG_TLS_STARTTLS) {
		/* Late connect: mailproxy alone until the handshake. */
		set_state(s, SESSION_PLAIN);
		dialog_start(s->dialog, &s->sink);
		relay_flush(&s->client);
		if (s->state == SESSION_PLAIN)
			(void)relay_read_start(&s->client);
		return;
	}
	s->ssl = tls_ssl_new(l->ctx, &s->tls_io);
	if (s->ssl == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	set_state(s, SESSION_HANDSHAKE);
	(void)relay_read_start(&s->client);
}

void
session_plain_activity(struct session *s)
{
	if (s->state == SESSION_PLAIN)
		set_state(s, SESSION_PLAIN);
}

void
session_starttls(struct session *s, size_t discarded, bool client_hello)
{
	dialog_stats(s->dialog)->discarded += discarded;
	if (client_hello) {
		/* Dropped with the rest, the handshake could only time out. */
		session_finish(s, -1, SESSION_END_PROTOCOL_ERROR,
		    "TLS data sent before the STARTTLS reply");
		return;
	}
	s->ssl = tls_ssl_new(s->listener->ctx, &s->tls_io);
	if (s->ssl == NULL) {
		session_close(s, SESSION_END_NO_MEMORY, NULL);
		return;
	}
	set_state(s, SESSION_HANDSHAKE);
}

void
session_connect_plain(struct session *s)
{
	connect_backend(s);
}

void
session_dialog_closed(struct session *s)
{
	static const enum session_end ends[] = {
	    [DIALOG_END_NONE] = SESSION_END_CLIENT_CLOSED,
	    [DIALOG_END_QUIT] = SESSION_END_CLIENT_CLOSED,
	    [DIALOG_END_PROTOCOL] = SESSION_END_PROTOCOL_ERROR,
	    [DIALOG_END_BACKEND] = SESSION_END_BACKEND_ERROR,
	};

	session_finish(s, -1, ends[dialog_end(s->dialog)],
	    dialog_error(s->dialog));
}
