/*
 * Workers: one process, one loop, the listening sockets the master made,
 * its own chunk pool and sessions (see worker.h for the signals it
 * obeys). Stopping goes: listeners closed, sessions drained up to the
 * deadline, what is left ended (at once, or spread after a reload), then
 * the last handles close and the loop returns.
 *
 * Must not: share anything mutable with another process, or write to a
 * file descriptor the master owns besides the log.
 */
#define _GNU_SOURCE /* prctl */
#include "mailproxy/worker.h"

#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
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

static void
on_signals_closed(uv_handle_t *h)
{
	struct worker *w = h->data;

	(void)close(w->sigfd);
	w->sigfd = -1;
}

static void
close_signals(struct worker *w)
{
	uv_close((uv_handle_t *)&w->sigpoll, on_signals_closed);
}

/* Once draining and empty, close the last handles; the loop then ends. */
static void
maybe_finish(struct worker *w)
{
	if (!w->draining || w->sessions.count > 0 || w->finishing)
		return;
	w->finishing = true;
	close_signals(w);
	uv_close((uv_handle_t *)&w->drain_timer, on_quiet_close);
	session_host_close(&w->sessions);
}

/* Ends up to n sessions (all: SIZE_MAX); they leave the list later. */
static void
shutdown_sessions(struct worker *w, size_t n)
{
	struct session *s, *next;

	/* session_shutdown never frees synchronously: next stays valid, and
	 * a session already ending is passed over at no cost. */
	for (s = w->sessions.sessions; s != NULL && n > 0; s = next, n--) {
		next = s->next;
		session_shutdown(s);
	}
}

/* One step of a retired worker's spread: a batch a second, so that the
 * last session ends WORKER_SPREAD_MS after the deadline. Sessions told
 * to end stay in the list until freed; they are passed over, so every
 * tick ends a new batch. */
static void
on_spread_timer(uv_timer_t *t)
{
	struct worker *w = t->data;
	struct session *s, *next;
	size_t n = w->spread_batch;

	for (s = w->sessions.sessions; s != NULL && n > 0; s = next) {
		next = s->next;
		if (s->end != SESSION_END_NONE)
			continue;
		session_shutdown(s);
		n--;
	}
}

static void
on_drain_timer(uv_timer_t *t)
{
	struct worker *w = t->data;
	size_t ticks = WORKER_SPREAD_MS / 1000;

	if (!w->retiring || w->sessions.count <= 1) {
		if (w->sessions.count > 0)
			log_info("worker %u: drain timeout, ending %zu "
			         "sessions",
			    w->spec->index, w->sessions.count);
		shutdown_sessions(w, SIZE_MAX);
		return;
	}
	w->spreading = true;
	w->spread_batch = (w->sessions.count + ticks - 1) / ticks;
	log_info("generation %u worker %u: reload_drain_timeout, ending %zu "
	         "sessions over %u s",
	    w->spec->generation, w->spec->index, w->sessions.count,
	    (unsigned)(WORKER_SPREAD_MS / 1000));
	on_spread_timer(t);
	(void)uv_timer_start(t, on_spread_timer, 1000, 1000);
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

/*
 * Stops accepting (once) and sets the deadline for what is left: the
 * earlier of the one in place and timeout_ms from now. A stop (retire
 * false) overrides a retirement, whose spread it does not keep; a
 * retirement never overrides a stop.
 */
static void
drain(struct worker *w, uint64_t timeout_ms, bool retire)
{
	uint64_t due = timeout_ms;

	if (!w->draining) {
		w->draining = true;
		close_listeners(w);
	} else {
		if (retire && !w->retiring)
			return;
		due = w->spreading ? 0 : uv_timer_get_due_in(&w->drain_timer);
		if (timeout_ms < due)
			due = timeout_ms;
	}
	w->retiring = retire;
	w->spreading = false;
	(void)uv_timer_stop(&w->drain_timer);
	if (due == 0)
		on_drain_timer(&w->drain_timer);
	else
		(void)uv_timer_start(&w->drain_timer, on_drain_timer, due, 0);
	maybe_finish(w);
}

static void
on_signal(struct worker *w, int signum)
{
	int r;

	if (w->finishing)
		return;
	switch (signum) {
	case SIGTERM:
		drain(w, w->cfg->drain_timeout_ms, false);
		break;
	case SIGINT:
		drain(w, 0, false);
		break;
	case SIGQUIT:
		drain(w, w->cfg->reload_drain_timeout_ms, true);
		break;
	case SIGUSR2:
		drain(w, 0, true);
		break;
	case SIGUSR1:
		r = log_reopen();
		if (r < 0) {
			errno = -r;
			log_warn("worker %u: SIGUSR1: cannot reopen %s",
			    w->spec->index, w->cfg->log);
		}
		break;
	default:
		break;
	}
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
open_listeners(struct worker *w, SSL_CTX *const *ctxs, const int *fds)
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
		l->session.index = (unsigned)i;
		l->session.limits.max_sessions = w->spec->max_sessions;
		l->session.limits.listener_max_sessions = conf->max_sessions;
		l->session.limits.per_client =
		    (uint32_t)conf->max_sessions_per_client;
		l->session.limits.rate_per_minute =
		    (uint32_t)conf->max_connect_rate_per_client;
		l->session.limits.ipv4_prefix =
		    (unsigned)cfg->client_ipv4_prefix;
		l->session.limits.ipv6_prefix =
		    (unsigned)cfg->client_ipv6_prefix;
		l->sockets = calloc(conf->listen_count, sizeof(*l->sockets));
		if (l->sockets == NULL)
			return UV_ENOMEM;
		for (j = 0; j < conf->listen_count; j++, k++) {
			uv_tcp_t *t = &l->sockets[j];

			(void)uv_tcp_init(&w->loop, t);
			l->socket_count++;
			t->data = l;
			/* Listening already: the master called listen(). */
			r = uv_tcp_open(t, fds[k]);
			if (r == 0)
				r = uv_listen((uv_stream_t *)t, SOMAXCONN,
				    on_connection);
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
	metrics_worker_free(&w->metrics);
	w->magic = 0;
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
on_signalfd(uv_poll_t *h, int status, int events)
{
	struct worker *w = h->data;
	struct signalfd_siginfo si;

	(void)status;
	(void)events;
	while (w->sigfd >= 0 && !w->finishing &&
	    read(w->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		on_signal(w, (int)si.ssi_signo);
}

/*
 * The signals the master sends stay blocked, as the master left them,
 * and are read from a signalfd in the loop: no handler runs in the
 * middle of the worker's code (and a sanitizer that defers handlers
 * cannot leave one waiting while the loop sleeps). The others are
 * unblocked. Then the worker asks the kernel to tell it of the master's
 * death: its sessions drain as on SIGTERM.
 */
static int
settle_process(const struct worker_spec *spec)
{
	static const int signums[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR2,
	    SIGUSR1};
	sigset_t set;
	size_t i;
	int fd;

	(void)signal(SIGPIPE, SIG_IGN);
	(void)signal(SIGHUP, SIG_IGN); /* the master's to act on */
	(void)sigemptyset(&set);
	for (i = 0; i < sizeof(signums) / sizeof(signums[0]); i++)
		(void)sigaddset(&set, signums[i]);
	if (sigprocmask(SIG_SETMASK, &set, NULL) != 0)
		return -1;
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -1;
	/* Nothing a worker runs may gain privileges (setuid binaries, file
	 * capabilities): it parses what clients send. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 ||
	    getppid() != spec->master) {
		(void)close(fd);
		return -1;
	}
	return fd;
}

int
worker_run(const struct worker_spec *spec)
{
	struct config *cfg = spec->cfg;
	struct worker w;
	int r;

	memset(&w, 0, sizeof(w));
	w.sigfd = settle_process(spec);
	if (w.sigfd < 0) {
		log_warnx("worker %u: master %ld is gone", spec->index,
		    (long)spec->master);
		return 1;
	}
	if (uv_loop_init(&w.loop) != 0) {
		log_warnx("worker %u: cannot create its loop", spec->index);
		return 1;
	}
	w.magic = WORKER_MAGIC;
	w.spec = spec;
	w.cfg = cfg;
	atomic_init(&w.process_sessions, 0);
	session_host_init(&w.sessions, &w.loop, cfg, spec->index, POOL_FREE_MAX,
	    on_session_freed);
	w.sessions.max = spec->session_max;
	w.sessions.process_sessions = &w.process_sessions;
	if (!metrics_worker_init(&w.metrics, spec->metrics, spec->metrics_slot))
		log_warnx("worker %u: no memory for the client table: "
		          "per-client limits are off in this worker",
		    spec->index);
	w.sessions.metrics = &w.metrics;
	w.loop.data = &w;
	(void)uv_poll_init(&w.loop, &w.sigpoll, w.sigfd);
	w.sigpoll.data = &w;
	(void)uv_poll_start(&w.sigpoll, UV_READABLE, on_signalfd);
	(void)uv_timer_init(&w.loop, &w.drain_timer);
	w.drain_timer.data = &w;
	/* Workers share each listening socket. libuv accepts until the
	 * queue is empty, so a burst went to one worker (bench/scale: one
	 * of two workers idle in 7 of 12 download runs). Its single-accept
	 * mode yields the CPU after each accept, so that the other workers,
	 * woken by the same connection, take their share; libuv reads the
	 * switch from the environment at the first listen. */
	if (spec->workers > 1)
		(void)setenv("UV_TCP_SINGLE_ACCEPT", "1", 1);
	w.listeners = calloc(cfg->listener_count, sizeof(*w.listeners));
	w.listener_count = w.listeners != NULL ? cfg->listener_count : 0;
	r = w.listeners != NULL ? open_listeners(&w, spec->ctxs, spec->fds) :
	                          UV_ENOMEM;
	if (r == 0) {
		pid_t pid = getpid();

		/* Listening: the master may count on this worker. */
		if (write(spec->ready_fd, &pid, sizeof(pid)) !=
		    (ssize_t)sizeof(pid))
			log_warn("worker %u: cannot tell the master it "
			         "listens",
			    spec->index);
	}
	(void)close(spec->ready_fd);
	if (r < 0) {
		log_warnx("worker %u: cannot start: %s", spec->index,
		    uv_strerror(r));
		w.draining = true;
		close_listeners(&w);
		maybe_finish(&w);
	}
	run_loop(&w);
	if (uv_loop_close(&w.loop) != 0)
		log_warnx("worker %u: handles left open at exit", spec->index);
	worker_destroy(&w);
	return r < 0 ? 1 : 0;
}
