/*
 * The metrics process (metrics_server.h): an HTTP/1.x server small
 * enough to read whole. Each connection owns one fixed buffer for the
 * request head and its answer; it is freed in one place, after its
 * handles have closed. A connection past METRICS_CONNS_MAX is closed at
 * accept, one that is slow is closed at its deadline, one that sends
 * what the parser refuses gets 400 (431, 505) and is closed.
 */
#define _GNU_SOURCE /* signalfd */
#include "mailproxy/metrics_server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "mailproxy/http.h"
#include "mailproxy/log.h"
#include "mailproxy/session.h"
#include "mailproxy/version.h"

/* Lines about refused requests, at most this many a second: a flood of
 * garbage must not flood the log. */
#define LOG_PER_SECOND 10

struct server;

struct probe {
	struct conn *conn;
	union {
		uv_handle_t handle;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h;
	uv_connect_t req;
	uv_getaddrinfo_t gai;
	const struct config_listener *l;
	bool opened; /* h is initialised and must be closed */
	bool resolving;
	bool done;
	bool ok;
};

struct conn {
	struct server *server;
	struct conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t write;
	uv_shutdown_t shutdown;
	unsigned pending; /* handles and requests that will call back */
	bool closing;
	bool answered;
	bool lingering; /* answered and shut down: reading to the end */
	size_t len;
	char head[HTTP_HEAD_MAX];
	char peer[64];
	struct http_request req;
	struct metrics_text body;
	char out_head[512];
	char out_text[1024];  /* a short answer made here */
	struct probe *probes; /* /readyz with readyz_backends */
	size_t probe_count, probes_left;
};

struct server {
	const struct metrics_server_spec *spec;
	uv_loop_t loop;
	uv_tcp_t listener;
	uv_poll_t sigpoll;
	int sigfd;
	struct conn *conns;
	bool stopping;
	uint64_t log_second;
	unsigned log_count;
};

static void conn_close(struct conn *c);
static void on_deadline(uv_timer_t *t);

static void
conn_release(struct conn *c)
{
	struct server *sv = c->server;

	if (--c->pending > 0)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		sv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	metrics_text_free(&c->body);
	free(c->probes);
	free(c);
}

static void
on_handle_closed(uv_handle_t *h)
{
	conn_release(h->data);
}

static void
on_probe_closed(uv_handle_t *h)
{
	struct probe *p = h->data;

	conn_release(p->conn);
}

static void
close_probes(struct conn *c)
{
	size_t i;

	for (i = 0; i < c->probe_count; i++) {
		struct probe *p = &c->probes[i];

		if (p->resolving)
			(void)uv_cancel((uv_req_t *)&p->gai);
		if (p->opened && !uv_is_closing(&p->h.handle)) {
			c->pending++;
			uv_close(&p->h.handle, on_probe_closed);
		}
	}
}

static void
conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	close_probes(c);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static bool
may_log(struct server *sv)
{
	uint64_t second = uv_now(&sv->loop) / 1000;

	if (second != sv->log_second) {
		sv->log_second = second;
		sv->log_count = 0;
	}
	return sv->log_count++ < LOG_PER_SECOND;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;

	(void)status;
	conn_release(c);
}

/*
 * The answer is out. Closing now, with bytes of the client's unread,
 * would make the kernel send RST and drop what it had not sent yet (on a
 * real network the answer itself): send FIN instead and read what the
 * client still sends, until it closes or METRICS_LINGER_MS (nginx's
 * lingering close).
 */
static void
on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	if (status == 0 && !c->closing) {
		c->shutdown.data = c;
		if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp,
		        on_shutdown) == 0) {
			c->pending++;
			c->lingering = true;
			(void)uv_timer_start(&c->timer, on_deadline,
			    METRICS_LINGER_MS, 0);
			(void)uv_read_start((uv_stream_t *)&c->tcp, on_alloc,
			    on_read);
		} else {
			conn_close(c);
		}
	} else {
		conn_close(c);
	}
	conn_release(c); /* the write's hold */
}

/* Sends status with body (text, may be NULL) and closes. */
static void
answer(struct conn *c, int status, const char *type, const char *text,
    size_t len)
{
	uv_buf_t bufs[2];
	int n;

	if (c->answered || c->closing)
		return;
	c->answered = true;
	if (status >= 400 && status != 503 && may_log(c->server))
		log_info("metrics: %s: %d %s", c->peer, status,
		    http_reason(status));
	n = http_format_head(c->out_head, sizeof(c->out_head), status, type,
	    len);
	if (n < 0) {
		conn_close(c);
		return;
	}
	bufs[0] = uv_buf_init(c->out_head, (unsigned)n);
	bufs[1] = uv_buf_init((char *)text, (unsigned)len);
	if (c->req.method == HTTP_HEAD || text == NULL)
		bufs[1].len = 0;
	c->write.data = c;
	/* A client that does not read the answer has this long. */
	(void)uv_timer_start(&c->timer, on_deadline, METRICS_ANSWER_MS, 0);
	if (uv_write(&c->write, (uv_stream_t *)&c->tcp, bufs,
	        bufs[1].len > 0 ? 2 : 1, on_written) != 0) {
		conn_close(c);
		return;
	}
	c->pending++;
	(void)uv_read_stop((uv_stream_t *)&c->tcp);
}

static void
answer_text(struct conn *c, int status, const char *text)
{
	answer(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

static void
serve_metrics(struct conn *c)
{
	struct server *sv = c->server;
	unsigned v = OPENSSL_version_major(), mi = OPENSSL_version_minor(),
	         pa = OPENSSL_version_patch();
	const char *names[METRICS_ENDS];
	size_t i;

	for (i = 0; i < METRICS_ENDS && i <= SESSION_END_LIMIT; i++)
		names[i] = session_end_name((enum session_end)i);
	metrics_render(sv->spec->shm, &c->body, names, i);
	metrics_text_printf(&c->body,
	    "# HELP mailproxy_build_info The running version.\n"
	    "# TYPE mailproxy_build_info gauge\n"
	    "mailproxy_build_info{version=\"%s\",openssl=\"%u.%u.%u\","
	    "libuv=\"%s\"} 1\n",
	    MAILPROXY_VERSION, v, mi, pa, uv_version_string());
	if (c->body.oom) {
		answer_text(c, 500, "out of memory\n");
		return;
	}
	answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", c->body.p,
	    c->body.len);
}

static bool
master_alive(const struct server *sv)
{
	uint64_t beat = atomic_load(&sv->spec->shm->heartbeat_ms);

	return metrics_now_ms() - beat < METRICS_HEARTBEAT_MAX_MS &&
	    getppid() == sv->spec->master;
}

/* ---- /readyz with readyz_backends: one connect per backend. ---- */

static void
probe_finish(struct probe *p, bool ok)
{
	struct conn *c = p->conn;
	char *text = c->out_text;
	size_t i, o = 0;
	bool all = true;

	if (p->done)
		return;
	p->done = true;
	p->ok = ok;
	if (p->opened && !uv_is_closing(&p->h.handle)) {
		c->pending++;
		uv_close(&p->h.handle, on_probe_closed);
	}
	if (--c->probes_left > 0 || c->closing)
		return;
	text[0] = '\0';
	for (i = 0; i < c->probe_count; i++) {
		if (c->probes[i].ok)
			continue;
		all = false;
		if (o < sizeof(c->out_text) - 1) {
			int n = snprintf(text + o, sizeof(c->out_text) - o,
			    "backend %s of listener %s does not answer\n",
			    c->probes[i].l->backend.text, c->probes[i].l->name);

			if (n > 0)
				o += (size_t)n;
		}
	}
	if (all)
		answer_text(c, 200, "ready\n");
	else
		answer(c, 503, "text/plain; charset=utf-8", text,
		    o < sizeof(c->out_text) ? o : sizeof(c->out_text) - 1);
}

static void
on_probe_connect(uv_connect_t *req, int status)
{
	struct probe *p = req->data;
	struct conn *c = p->conn;

	probe_finish(p, status == 0);
	conn_release(c); /* the request's hold, last: c may go */
}

static void
probe_connect(struct probe *p, const struct sockaddr *sa)
{
	struct conn *c = p->conn;
	uv_loop_t *loop = &c->server->loop;

	p->req.data = p;
	p->h.handle.data = p;
	if (uv_tcp_init(loop, &p->h.tcp) != 0) {
		probe_finish(p, false);
		return;
	}
	p->opened = true;
	if (uv_tcp_connect(&p->req, &p->h.tcp, sa, on_probe_connect) != 0) {
		probe_finish(p, false);
		return;
	}
	c->pending++;
}

static void
on_probe_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct probe *p = req->data;
	struct conn *c = p->conn;

	p->resolving = false;
	if (status != 0 || res == NULL || c->closing)
		probe_finish(p, false);
	else
		probe_connect(p, res->ai_addr);
	uv_freeaddrinfo(res);
	conn_release(c); /* the lookup's hold, last: c may go */
}

static void
probe_start(struct probe *p)
{
	struct conn *c = p->conn;
	const struct config_backend *b = &p->l->backend;
	struct addrinfo hints;

	switch (b->kind) {
	case CONFIG_BACKEND_ADDR:
		probe_connect(p, (const struct sockaddr *)&b->addr.sa);
		return;
	case CONFIG_BACKEND_UNIX:
		p->req.data = p;
		p->h.handle.data = p;
		if (uv_pipe_init(&c->server->loop, &p->h.pipe, 0) != 0) {
			probe_finish(p, false);
			return;
		}
		p->opened = true;
		uv_pipe_connect(&p->req, &p->h.pipe, b->path, on_probe_connect);
		c->pending++;
		return;
	case CONFIG_BACKEND_HOST:
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		p->gai.data = p;
		if (uv_getaddrinfo(&c->server->loop, &p->gai, on_probe_resolved,
		        b->host, b->port, &hints) != 0) {
			probe_finish(p, false);
			return;
		}
		p->resolving = true;
		c->pending++;
		return;
	}
}

static void
serve_readyz(struct conn *c)
{
	const struct metrics_server_spec *spec = c->server->spec;
	size_t i;

	if (atomic_load(&spec->shm->stopping) != 0) {
		answer_text(c, 503, "stopping\n");
		return;
	}
	if (atomic_load(&spec->shm->ready) == 0) {
		answer_text(c, 503, "no worker listens yet\n");
		return;
	}
	if (!spec->cfg->metrics.readyz_backends) {
		answer_text(c, 200, "ready\n");
		return;
	}
	c->probes = calloc(spec->cfg->listener_count, sizeof(*c->probes));
	if (c->probes == NULL) {
		answer_text(c, 500, "out of memory\n");
		return;
	}
	c->probe_count = c->probes_left = spec->cfg->listener_count;
	for (i = 0; i < c->probe_count; i++) {
		c->probes[i].conn = c;
		c->probes[i].l = &spec->cfg->listeners[i];
	}
	/* The deadline now bounds the probes. */
	(void)uv_timer_start(&c->timer, on_deadline, METRICS_PROBE_MS, 0);
	for (i = 0; i < c->probe_count && !c->answered && !c->closing; i++)
		probe_start(&c->probes[i]);
}

static void
serve(struct conn *c)
{
	const char *path = c->req.path;

	if (c->req.method == HTTP_OTHER) {
		answer_text(c, 405, "only GET and HEAD\n");
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		serve_metrics(c);
	} else if (strcmp(path, "/healthz") == 0) {
		if (master_alive(c->server))
			answer_text(c, 200, "ok\n");
		else
			answer_text(c, 503, "the master does not answer\n");
	} else if (strcmp(path, "/readyz") == 0) {
		serve_readyz(c);
	} else {
		answer_text(c, 404,
		    "not found: try /metrics, /healthz or "
		    "/readyz\n");
	}
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;

	(void)suggested;
	if (c->lingering)
		c->len = 0; /* the head is answered: its buffer is scratch */
	if (c->len >= sizeof(c->head)) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf =
	    uv_buf_init(c->head + c->len, (unsigned)(sizeof(c->head) - c->len));
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;
	size_t head_len;

	(void)buf;
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
		return; /* what follows the request is read and dropped */
	}
	if (nread == 0 || c->answered)
		return;
	if (nread < 0) {
		/* Gone before a whole request: nothing to answer. */
		conn_close(c);
		return;
	}
	c->len += (size_t)nread;
	switch (http_parse_request(c->head, c->len, &c->req, &head_len)) {
	case HTTP_INCOMPLETE:
		return;
	case HTTP_OK:
		(void)uv_read_stop(stream);
		serve(c);
		return;
	case HTTP_BAD:
		answer_text(c, 400, "bad request\n");
		return;
	case HTTP_TOO_LARGE:
		answer_text(c, 431, "request head too large\n");
		return;
	case HTTP_VERSION:
		answer_text(c, 505, "HTTP/1.0 or HTTP/1.1 only\n");
		return;
	}
}

static void
on_deadline(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->probes != NULL && !c->answered) {
		size_t i;

		for (i = 0; i < c->probe_count; i++)
			if (!c->probes[i].done)
				probe_finish(&c->probes[i], false);
		return;
	}
	if (!c->answered && c->len > 0)
		answer_text(c, 408, "request timeout\n");
	else
		conn_close(c);
}

/* Connections not closing yet (those closing are freed within this turn
 * of the loop). */
static size_t
open_count(const struct server *sv)
{
	const struct conn *c;
	size_t n = 0;

	for (c = sv->conns; c != NULL; c = c->next)
		n += !c->closing;
	return n;
}

/*
 * At capacity, the oldest connection still sending its request head
 * makes room: idle connections held open cannot keep a probe of /healthz
 * out. false when every connection is past its head (being answered).
 */
static bool
evict(struct server *sv)
{
	struct conn *c, *oldest = NULL;

	/* New connections go first in the list: the last match is oldest. */
	for (c = sv->conns; c != NULL; c = c->next)
		if (!c->closing && !c->answered && c->probes == NULL &&
		    c != sv->conns)
			oldest = c;
	if (oldest == NULL)
		return false;
	if (may_log(sv))
		log_info("metrics: %s: more than %d connections; closing the "
		         "oldest without a request, from %s",
		    sv->conns->peer, METRICS_CONNS_MAX, oldest->peer);
	conn_close(oldest);
	return true;
}

static void
on_connection(uv_stream_t *listener, int status)
{
	struct server *sv = listener->data;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	struct conn *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->server = sv;
	(void)uv_tcp_init(&sv->loop, &c->tcp);
	(void)uv_timer_init(&sv->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->pending = 2;
	c->next = sv->conns;
	if (sv->conns != NULL)
		sv->conns->prev = c;
	sv->conns = c;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	(void)snprintf(c->peer, sizeof(c->peer), "?");
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		char host[48];

		if (ss.ss_family == AF_INET)
			(void)uv_ip4_name((struct sockaddr_in *)&ss, host,
			    sizeof(host));
		else
			(void)uv_ip6_name((struct sockaddr_in6 *)&ss, host,
			    sizeof(host));
		(void)snprintf(c->peer, sizeof(c->peer), "%s", host);
	}
	if (open_count(sv) > METRICS_CONNS_MAX && !evict(sv)) {
		if (may_log(sv))
			log_info("metrics: %s: more than %d connections; "
			         "closed",
			    c->peer, METRICS_CONNS_MAX);
		conn_close(c);
		return;
	}
	(void)uv_timer_start(&c->timer, on_deadline, METRICS_REQUEST_MS, 0);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		conn_close(c);
}

static void
stop(struct server *sv)
{
	struct conn *c, *next;

	if (sv->stopping)
		return;
	sv->stopping = true;
	uv_close((uv_handle_t *)&sv->listener, NULL);
	uv_close((uv_handle_t *)&sv->sigpoll, NULL);
	/* Requests already accepted are answered (their deadlines bound
	 * it); only connections that have sent nothing yet are closed. */
	for (c = sv->conns; c != NULL; c = next) {
		next = c->next;
		if (c->len == 0 && !c->answered)
			conn_close(c);
	}
}

static void
on_signalfd(uv_poll_t *p, int status, int events)
{
	struct server *sv = p->data;
	struct signalfd_siginfo si;

	(void)status;
	(void)events;
	while (read(sv->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1)
			(void)log_reopen();
		else
			stop(sv);
	}
}

int
metrics_server_run(const struct metrics_server_spec *spec)
{
	static const int signums[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
	struct server sv;
	sigset_t set;
	size_t i;
	int r;

	memset(&sv, 0, sizeof(sv));
	sv.spec = spec;
	(void)signal(SIGPIPE, SIG_IGN);
	(void)signal(SIGHUP, SIG_IGN);
	(void)sigemptyset(&set);
	for (i = 0; i < sizeof(signums) / sizeof(signums[0]); i++)
		(void)sigaddset(&set, signums[i]);
	if (sigprocmask(SIG_SETMASK, &set, NULL) != 0 ||
	    (sv.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 ||
	    getppid() != spec->master) {
		log_warnx("metrics: the master is gone");
		return 1;
	}
	if (uv_loop_init(&sv.loop) != 0) {
		log_warnx("metrics: cannot create its loop");
		return 1;
	}
	(void)uv_poll_init(&sv.loop, &sv.sigpoll, sv.sigfd);
	sv.sigpoll.data = &sv;
	(void)uv_poll_start(&sv.sigpoll, UV_READABLE, on_signalfd);
	(void)uv_tcp_init(&sv.loop, &sv.listener);
	sv.listener.data = &sv;
	r = uv_tcp_open(&sv.listener, spec->fd);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&sv.listener, 128, on_connection);
	if (r != 0) {
		log_warnx("metrics: cannot listen on %s: %s",
		    spec->cfg->metrics.listen.text, uv_strerror(r));
		stop(&sv);
	}
	(void)uv_run(&sv.loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(&sv.loop);
	(void)close(sv.sigfd);
	return r != 0 ? 1 : 0;
}
