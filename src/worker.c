/*
 * Workers: one thread, one loop, its own listening sockets, its own chunk
 * pool and sessions. Stopping goes: listeners closed, sessions drained up
 * to drain_timeout (or ended at once on a second signal), then the last
 * handles close and the loop returns.
 *
 * Must not: share anything mutable with other workers, or touch the loop
 * from another thread (only worker_stop() is called from main, and it
 * only stores the command and wakes the loop).
 */
#include "mailproxy/worker.h"

#include <assert.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include "mailproxy/log.h"
#include "mailproxy/session.h"

/* Idle chunks a worker keeps for reuse: 64 x 16 KiB and 16 x 64 KiB. */
#define POOL_FREE_MAX 64

/* Fewer sessions than this never make the heap worth trimming. */
#define TRIM_MIN_PEAK 1024

/* Counts the peak on every accept: cheap, and only accepts raise it. */
static void
note_peak(struct worker *w)
{
	if (w->sessions.count > w->session_peak)
		w->session_peak = w->sessions.count;
}

static void
on_connection(uv_stream_t *server, int status)
{
	struct worker_listener *l = server->data;
	struct worker *w = l->worker;

	assert(w->magic == WORKER_MAGIC);
	w->sessions.pump.reads++;
	if (status < 0) {
		log_warnx("listener %s: accept failed: %s",
		    l->session.conf->name, uv_strerror(status));
		return;
	}
	session_accept(&w->sessions, &l->session, server);
	note_peak(w);
}

static void
on_listener_close(uv_handle_t *h)
{
	(void)h;
}

static void
on_quiet_close(uv_handle_t *h)
{
	(void)h;
}

/* Once draining and empty, close the last handles; the loop then ends. */
static void
maybe_finish(struct worker *w)
{
	if (!w->draining || w->sessions.count > 0 || w->finishing)
		return;
	w->finishing = true;
	uv_mutex_lock(&w->wakeup_lock);
	w->wakeup_closed = true;
	uv_close((uv_handle_t *)&w->wakeup, on_quiet_close);
	uv_mutex_unlock(&w->wakeup_lock);
	uv_close((uv_handle_t *)&w->drain_timer, on_quiet_close);
	session_host_close(&w->sessions);
}

static void
shutdown_sessions(struct worker *w)
{
	struct session *s, *next;

	/* session_shutdown never frees synchronously: next stays valid. */
	for (s = w->sessions.sessions; s != NULL; s = next) {
		next = s->next;
		session_shutdown(s);
	}
}

static void
on_drain_timer(uv_timer_t *t)
{
	struct worker *w = t->data;

	if (w->sessions.count > 0)
		log_info("worker %u: drain timeout, ending %zu sessions",
		    w->index, w->sessions.count);
	shutdown_sessions(w);
}

static void
close_listeners(struct worker *w)
{
	size_t i, j;

	for (i = 0; i < w->listener_count; i++)
		for (j = 0; j < w->listeners[i].socket_count; j++)
			uv_close((uv_handle_t *)&w->listeners[i].sockets[j],
			    on_listener_close);
}

static void
on_wakeup(uv_async_t *a)
{
	struct worker *w = a->data;
	int cmd = atomic_load(&w->command);

	if (cmd == WORKER_RUN || w->finishing)
		return;
	if (!w->draining) {
		w->draining = true;
		close_listeners(w);
		if (cmd == WORKER_DRAIN && w->cfg->drain_timeout_ms > 0)
			(void)uv_timer_start(&w->drain_timer, on_drain_timer,
			    w->cfg->drain_timeout_ms, 0);
	}
	if (cmd == WORKER_STOP || w->cfg->drain_timeout_ms == 0) {
		(void)uv_timer_stop(&w->drain_timer);
		shutdown_sessions(w);
	}
	maybe_finish(w);
}

/* A session of w's was freed. */
static void
on_session_freed(struct session_host *h)
{
	struct worker *w =
	    (struct worker *)((char *)h - offsetof(struct worker, sessions));

	assert(w->magic == WORKER_MAGIC);
	/* glibc keeps the pages of freed sessions in the worker's arena:
	 * after 9,500 idle sessions closed, RSS stayed at 215 MB with 1 MB in
	 * use. Once the sessions have halved since the peak, give the free
	 * pages back; rare, and cheap next to that many closes. */
	if (w->session_peak >= TRIM_MIN_PEAK &&
	    h->count <= w->session_peak / 2) {
		(void)malloc_trim(0);
		w->session_peak = h->count;
	}
	maybe_finish(w);
}

static int
open_listeners(struct worker *w, SSL_CTX *const *ctxs, const int *fds,
    size_t *used_out)
{
	const struct config *cfg = w->cfg;
	size_t i, j, k = 0;
	int r;

	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *conf = &cfg->listeners[i];
		struct worker_listener *l = &w->listeners[i];

		l->worker = w;
		l->session.conf = conf;
		l->session.ctx = ctxs[i];
		l->session.server_name = config_listener_server_name(cfg, conf);
		l->session.params.protocol = conf->protocol;
		l->session.params.starttls = conf->tls == CONFIG_TLS_STARTTLS;
		l->session.params.optional =
		    conf->starttls == CONFIG_STARTTLS_OPTIONAL;
		l->session.params.server_name = l->session.server_name;
		l->session.params.greeting = conf->greeting;
		l->sockets = calloc(conf->listen_count, sizeof(*l->sockets));
		if (l->sockets == NULL)
			return UV_ENOMEM;
		for (j = 0; j < conf->listen_count; j++, k++) {
			uv_tcp_t *t = &l->sockets[j];

			(void)uv_tcp_init(&w->loop, t);
			l->socket_count++;
			t->data = l;
			r = uv_tcp_open(t, fds[k]);
			if (r == 0) {
				*used_out = k + 1; /* the handle owns it now */
				r = uv_listen((uv_stream_t *)t, SOMAXCONN,
				    on_connection);
			}
			if (r < 0) {
				log_warnx("listener %s: %s: %s", conf->name,
				    conf->listen[j].text, uv_strerror(r));
				return r;
			}
		}
	}
	return 0;
}

static void
worker_destroy(struct worker *w)
{
	size_t i;

	for (i = 0; i < w->listener_count; i++)
		free(w->listeners[i].sockets);
	free(w->listeners);
	session_host_destroy(&w->sessions);
	uv_mutex_destroy(&w->wakeup_lock);
	config_unref(w->cfg);
	w->magic = 0;
	free(w);
}

/* Closes every handle of a worker that never ran, and runs the loop
 * until they are gone. */
static void
abandon(struct worker *w)
{
	w->draining = true;
	close_listeners(w);
	maybe_finish(w);
	(void)uv_run(&w->loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(&w->loop);
	worker_destroy(w);
}

struct worker *
worker_create(unsigned index, struct config *cfg, SSL_CTX *const *ctxs,
    const int *fds, uv_async_t *done)
{
	size_t total = 0, used = 0, i;
	struct worker *w;

	for (i = 0; i < cfg->listener_count; i++)
		total += cfg->listeners[i].listen_count;
	w = calloc(1, sizeof(*w));
	if (w == NULL || uv_loop_init(&w->loop) != 0) {
		free(w);
		goto fail_fds;
	}
	w->magic = WORKER_MAGIC;
	w->index = index;
	w->cfg = config_ref(cfg);
	w->done = done;
	atomic_init(&w->command, WORKER_RUN);
	atomic_init(&w->finished, false);
	session_host_init(&w->sessions, &w->loop, cfg, index, POOL_FREE_MAX,
	    on_session_freed);
	(void)uv_mutex_init(&w->wakeup_lock);
	w->loop.data = w;
	(void)uv_async_init(&w->loop, &w->wakeup, on_wakeup);
	w->wakeup.data = w;
	(void)uv_timer_init(&w->loop, &w->drain_timer);
	w->drain_timer.data = w;
	w->listeners = calloc(cfg->listener_count, sizeof(*w->listeners));
	if (w->listeners == NULL) {
		abandon(w);
		goto fail_fds;
	}
	w->listener_count = cfg->listener_count;
	if (open_listeners(w, ctxs, fds, &used) < 0) {
		abandon(w);
		for (i = used; i < total; i++)
			(void)close(fds[i]);
		return NULL;
	}
	return w;

fail_fds:
	log_warnx("worker %u: out of memory", index);
	for (i = 0; i < total; i++)
		(void)close(fds[i]);
	return NULL;
}

/*
 * busy_poll: for that long after its last read or accept, the worker
 * polls without a timeout instead of sleeping in epoll_wait, as HAProxy's
 * busy-polling does. On a VM a sleeping vCPU wakes slowly; a relay's
 * round trip has two such wake-ups (client's data, backend's answer).
 * The worker sleeps again once its sessions have been quiet that long,
 * so an idle proxy does not hold a core.
 */
static void
run_loop(struct worker *w)
{
	uint64_t budget = w->cfg->busy_poll_ms * 1000000, last, now, seen;

	if (budget == 0) {
		(void)uv_run(&w->loop, UV_RUN_DEFAULT);
		return;
	}
	last = uv_hrtime();
	for (;;) {
		seen = w->sessions.pump.reads;
		if (uv_run(&w->loop, UV_RUN_NOWAIT) == 0)
			return;
		now = uv_hrtime();
		if (w->sessions.pump.reads != seen)
			last = now;
		else if (now - last >= budget) {
			/* Only I/O starts a new spell: a timer or a wakeup
			 * that ends the sleep lets it go straight back. */
			seen = w->sessions.pump.reads;
			if (uv_run(&w->loop, UV_RUN_ONCE) == 0)
				return;
			if (w->sessions.pump.reads != seen)
				last = uv_hrtime();
		}
	}
}

static void
worker_main(void *arg)
{
	struct worker *w = arg;

	run_loop(w);
	if (uv_loop_close(&w->loop) != 0)
		log_warnx("worker %u: handles left open at exit", w->index);
	atomic_store(&w->finished, true);
	uv_async_send(w->done);
}

int
worker_start(struct worker *w)
{
	int r = uv_thread_create(&w->thread, worker_main, w);

	w->started = r == 0;
	return r;
}

void
worker_stop(struct worker *w, bool now)
{
	atomic_store(&w->command, now ? WORKER_STOP : WORKER_DRAIN);
	uv_mutex_lock(&w->wakeup_lock);
	if (!w->wakeup_closed)
		(void)uv_async_send(&w->wakeup);
	uv_mutex_unlock(&w->wakeup_lock);
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (!w->started) {
		abandon(w);
		return;
	}
	(void)uv_thread_join(&w->thread);
	worker_destroy(w);
}
