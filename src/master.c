/*
 * The master: configuration, certificates, listening sockets, worker
 * generations, signals, reload and supervision (see master.h).
 *
 * One listening socket per address, opened here and inherited by every
 * worker of every generation that serves the address. The kernel's accept
 * queue belongs to that socket, and the master holds it open for as long
 * as the address is configured: a worker that dies, a reload, or fewer
 * workers after one never resets a connection waiting in the queue; some
 * other worker accepts it. Only a listener removed by a reload closes its
 * socket (and what waits in its queue), as nginx does.
 *
 * The master waits with signalfd and poll rather than libuv: a libuv loop
 * keeps process-wide signal state that a forked worker, which runs its
 * own loop, would share with it (libuv's uv_loop_fork leaves that to the
 * caller). Every signal it handles stays blocked; workers unblock them.
 *
 * Must not: do TLS, read a client's bytes, or block anywhere but poll().
 */
#define _GNU_SOURCE /* setgroups, signalfd, SOCK_CLOEXEC */
#include "mailproxy/master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "mailproxy/log.h"
#include "mailproxy/metrics.h"
#include "mailproxy/metrics_server.h"
#include "mailproxy/session.h"
#include "mailproxy/tls.h"
#include "mailproxy/version.h"
#include "mailproxy/worker.h"

/* A listening socket of the master's, by address. */
struct msock {
	struct sockaddr_storage sa;
	socklen_t sa_len;
	int fd;
};

struct slot {
	pid_t pid;            /* 0: not running */
	uint64_t started_ms;  /* when forked */
	uint64_t respawn_ms;  /* when to fork again (0: not waiting) */
	unsigned fast_deaths; /* in a row, each within MASTER_STABLE_MS */
	bool ready;           /* it said it listens */
	int mslot;            /* its slot of the shared counters; -1: none */
};

struct generation {
	struct generation *older;
	unsigned id;
	struct config *cfg;
	SSL_CTX **ctxs; /* one per listener */
	int *fds;       /* per listener, per address: the master's */
	struct slot *slots;
	unsigned n;
	unsigned alive;
	bool retiring; /* replaced by a reload: draining */
	bool ending;   /* told its deadline is now (over the cap) */
	bool drop;     /* workers switch to uid/gid */
	uid_t uid;     /* looked up by the master, once */
	gid_t gid;
};

struct master {
	const char *path;
	char **argv;
	char exe[4096]; /* the binary's path, for an upgrade */
	pid_t pid;
	pid_t successor;      /* the master SIGUSR2 started, until handover */
	int successor_fd;     /* its readiness pipe; -1: none */
	uint64_t upgrade_ms;  /* give up on it then (0: no upgrade) */
	uint64_t handover_ms; /* it serves: hand over then, if it lives */
	pid_t handed_to;      /* the master that took over */
	bool handed_over;     /* a successor serves: drain and exit */
	int predecessor_fd;   /* a master before this one waits here (-1) */
	int ready[2];         /* workers say they listen: pid_t on [1] */
	struct generation *current; /* newest; ->older are retiring */
	unsigned last_id;
	struct msock *socks;
	size_t sock_count;
	int sigfd;
	unsigned stop_signals;
	struct tls_tickets tickets;
	size_t session_max; /* per worker process */
	struct metrics_shared *shm;
	/* The metrics process and its socket ([metrics] listen). */
	int metrics_fd; /* -1: none */
	struct config_addr metrics_addr;
	pid_t metrics_pid;
	pid_t metrics_old;           /* replaced by a reload, not yet reaped */
	uint64_t metrics_respawn_ms; /* fork it again then (0: not due) */
	uint64_t metrics_started_ms;
	unsigned metrics_fast_deaths;
	bool served; /* a worker has listened: /readyz may say ready */
};

#define ROOT_WARNING                                                           \
	"WARNING: the workers run as root, and they parse what clients "       \
	"send: set 'user' in [global] (the master stays root to read the "     \
	"keys), or run mailproxy as an unprivileged user with the capability " \
	"CAP_NET_BIND_SERVICE as the packaged systemd unit does"

static const int handled[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1,
    SIGUSR2, SIGCHLD};

static uint64_t
now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Calls report once per line of a multi-line text. */
static void
each_line(const char *text,
    void (*report)(const char *line, const char *prefix), const char *prefix)
{
	const char *p = text, *nl;
	char line[1024];

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		(void)snprintf(line, sizeof(line), "%.*s", (int)(nl - p), p);
		report(line, prefix);
		p = *nl == '\n' ? nl + 1 : nl;
	}
}

static void
print_line(const char *line, const char *prefix)
{
	fprintf(stderr, "mailproxy: %s%s\n", prefix, line);
}

/* In the log the level says what is a warning. */
static void
log_line(const char *line, const char *prefix)
{
	(void)prefix;
	log_warnx("%s", line);
}

static void
free_ctxs(SSL_CTX **ctxs, size_t n)
{
	size_t i;

	if (ctxs == NULL)
		return;
	for (i = 0; i < n; i++)
		SSL_CTX_free(ctxs[i]);
	free(ctxs);
}

/*
 * Everything a generation needs that may fail on bad files: the ticket
 * keys (from ticket_key_file, else a fresh random key after previous's)
 * and one context per listener. Problems go to report, each line once;
 * false when anything but a warning went wrong.
 */
static bool
build(const struct config *cfg, const struct tls_tickets *previous,
    struct tls_tickets *tickets, SSL_CTX ***ctxs_out,
    void (*report)(const char *line, const char *prefix))
{
	char *warnings = NULL, *error = NULL;
	SSL_CTX **ctxs;
	bool ok = true;
	size_t i;

	*ctxs_out = NULL;
	if (cfg->tls.ticket_key_file != NULL) {
		if (!tls_tickets_load(tickets, cfg->tls.ticket_key_file,
		        &cfg->tls.ticket_key_file_loc, &error)) {
			each_line(error != NULL ? error : "out of memory",
			    report, "");
			free(error);
			ok = false;
		}
	} else if (!tls_tickets_random(tickets, previous)) {
		report("cannot make session ticket keys", "");
		ok = false;
	}
	ctxs = calloc(cfg->listener_count, sizeof(*ctxs));
	if (ctxs == NULL) {
		report("out of memory", "");
		return false;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		ctxs[i] = tls_ctx_build(cfg, &cfg->listeners[i], tickets,
		    &warnings, &error);
		if (ctxs[i] == NULL) {
			each_line(error != NULL ? error : "out of memory",
			    report, "");
			free(error);
			ok = false;
		}
	}
	if (warnings != NULL)
		each_line(warnings, report, "warning: ");
	free(warnings);
	if (!ok) {
		free_ctxs(ctxs, cfg->listener_count);
		return false;
	}
	*ctxs_out = ctxs;
	return true;
}

static int probe_address(const struct config_addr *a);
static const char *bind_hint(const struct config_addr *a, int err);

/*
 * -t binds each address for a moment (bind only, never listen), as a
 * start would. Only a missing right to bind is an error here: a port in
 * use may be the running mailproxy's, whose next configuration -t is
 * checking, and an address this host lacks may be a configuration made
 * for another host.
 */
static bool
test_address(const struct config_addr *a, const char *what, bool share)
{
	char line[1024];
	int err = probe_address(a);

	if (err == 0 || (err == EADDRINUSE && share))
		return true;
	(void)snprintf(line, sizeof(line), "%s:%u: %s: cannot listen on %s: %s",
	    a->loc.file, a->loc.line, what, a->text, bind_hint(a, err));
	if (err == EADDRINUSE || err == EADDRNOTAVAIL) {
		print_line(line, "warning: ");
		return true;
	}
	print_line(line, "");
	return false;
}

/*
 * At a first start (not a master started by SIGUSR2, which holds the
 * ports through its predecessor), each address must be free of any
 * other process unless reuse_port shares it on purpose. Reloads do not
 * look: the ports are this master's own then.
 */
static bool
ports_free(const struct config *cfg)
{
	size_t i, j;
	int err;

	if (cfg->reuse_port)
		return true;
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++) {
			err = probe_address(&l->listen[j]);
			if (err != 0) {
				log_warnx(
				    "%s:%u: listener %s: cannot listen on "
				    "%s: %s",
				    l->listen[j].loc.file,
				    l->listen[j].loc.line, l->name,
				    l->listen[j].text,
				    bind_hint(&l->listen[j], err));
				return false;
			}
		}
	}
	if (cfg->metrics.enabled &&
	    (err = probe_address(&cfg->metrics.listen)) != 0) {
		log_warnx("%s:%u: [metrics]: cannot listen on %s: %s",
		    cfg->metrics.listen.loc.file, cfg->metrics.listen.loc.line,
		    cfg->metrics.listen.text,
		    bind_hint(&cfg->metrics.listen, err));
		return false;
	}
	return true;
}

int
master_test(const struct config *cfg)
{
	struct tls_tickets tickets;
	SSL_CTX **ctxs;
	char what[64];
	size_t i, j;
	bool ok = true;

	if (!build(cfg, NULL, &tickets, &ctxs, print_line))
		return 1;
	free_ctxs(ctxs, cfg->listener_count);
	OPENSSL_cleanse(&tickets, sizeof(tickets));
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		(void)snprintf(what, sizeof(what), "listener %s", l->name);
		for (j = 0; j < l->listen_count; j++)
			ok &=
			    test_address(&l->listen[j], what, cfg->reuse_port);
	}
	if (cfg->metrics.enabled)
		ok &= test_address(&cfg->metrics.listen, "[metrics]",
		    cfg->reuse_port);
	/* -t cannot know how the service starts (the packaged unit runs
	 * it as mailproxy), so it says when. */
	if (cfg->user == NULL && geteuid() == 0)
		print_line("WARNING: started as root with this file (no 'user' "
		           "in [global]), the workers would run as root, and "
		           "they parse what clients send",
		    "");
	return ok ? 0 : 1;
}

/*
 * Sessions a worker takes before it turns new ones away (end=limit): two
 * descriptors each, less what the process needs besides (listening
 * sockets, log, libuv's own). Without it, libuv silently accepts and
 * closes connections once accept() fails with EMFILE, and nobody learns
 * why clients are dropped. Each worker is its own process with its own
 * descriptor table, so the limit is per worker.
 */
static size_t
session_max(rlim_t fds, size_t listen_fds)
{
	size_t reserve = 16 + listen_fds + 4;

	if (fds < reserve + 2) {
		log_warnx("open file limit %llu leaves no room for sessions "
		          "(%zu are needed besides); raise it",
		    (unsigned long long)fds, reserve);
		return 1;
	}
	return ((size_t)fds - reserve) / 2;
}

/* Raises the soft limit to the hard one; the workers inherit it. */
static size_t
raise_fd_limit(size_t listen_fds)
{
	struct rlimit rl;
	size_t most;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return session_max(1024, listen_fds);
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_warn("cannot raise the open file limit to %llu",
			    (unsigned long long)rl.rlim_max);
			rl.rlim_cur = was;
		}
	}
	most = session_max(rl.rlim_cur, listen_fds);
	log_info("open file limit %llu (was %llu, hard limit %llu): at most "
	         "%zu sessions per worker",
	    (unsigned long long)rl.rlim_cur, (unsigned long long)was,
	    (unsigned long long)rl.rlim_max, most);
	return most;
}

/*
 * One socket per address, shared by the workers. It has SO_REUSEPORT, so
 * that a reload can bind a new address on a port the old generation
 * still holds (0.0.0.0:993 becoming 192.0.2.1:993) and several instances
 * of one user can share a port (reuse_port = yes); a foreign holder is
 * found beforehand by probe_address().
 */
static int
bind_socket(const struct config_addr *a)
{
	int fd, one = 1;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
		goto fail;
	/* [::] and 0.0.0.0 are separate listen entries: keep v6 to v6. */
	if (a->sa.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0 ||
	    listen(fd, SOMAXCONN) != 0)
		goto fail;
	return fd;
fail : {
	int saved = errno;

	(void)close(fd);
	errno = saved;
}
	return -1;
}

/*
 * Whether a can be bound by a socket without SO_REUSEPORT, bound only (no
 * listen: it never joins a live port's group): fails with EADDRINUSE
 * when any process, a forgotten mailproxy of the same user included,
 * holds the port. 0 or an errno.
 */
static int
probe_address(const struct config_addr *a)
{
	int fd, one = 1, err = 0;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	if (a->sa.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0)
		err = errno;
	(void)close(fd);
	return err;
}

/* Why an address could not be bound (errno), in words an operator can
 * act on. */
static const char *
bind_hint(const struct config_addr *a, int err)
{
	unsigned port = ntohs(a->sa.ss_family == AF_INET6 ?
	        ((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_port :
	        ((const struct sockaddr_in *)(const void *)&a->sa)->sin_port);

	if (err == EADDRINUSE)
		return "another process listens there (a mailproxy still "
		       "running? `ss -ltnp` names it); set reuse_port = yes "
		       "in [global] to share the port on purpose";
	if (err == EACCES && port < 1024)
		return "ports below 1024 need root or the capability "
		       "CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities="
		       "CAP_NET_BIND_SERVICE; otherwise: setcap "
		       "cap_net_bind_service=+ep on the binary)";
	if (err == EADDRNOTAVAIL)
		return "no interface of this host has that address";
	return strerror(err);
}

static struct msock *
find_sock(struct msock *socks, size_t n, const struct config_addr *a)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (socks[i].fd >= 0 && socks[i].sa_len == a->sa_len &&
		    memcmp(&socks[i].sa, &a->sa, a->sa_len) == 0)
			return &socks[i];
	return NULL;
}

static size_t
address_count(const struct config *cfg)
{
	size_t n = 0, i;

	for (i = 0; i < cfg->listener_count; i++)
		n += cfg->listeners[i].listen_count;
	return n;
}

/*
 * The sockets cfg needs: those m already has for an address are carried
 * over, the others bound now. On success m's table becomes the new one,
 * sockets no longer configured are closed, and *fds_out lists the fd of
 * each address of cfg in order. On failure nothing changes and the
 * reason is logged.
 */
static bool
take_sockets(struct master *m, const struct config *cfg, int **fds_out)
{
	size_t total = address_count(cfg), i, j, k = 0, n = 0;
	struct msock *next = calloc(total, sizeof(*next)), *old;
	int *fds = calloc(total, sizeof(*fds));
	bool *bound = calloc(total, sizeof(*bound));

	if (next == NULL || fds == NULL || bound == NULL) {
		log_warnx("out of memory");
		goto fail;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++, k++) {
			const struct config_addr *a = &l->listen[j];
			struct msock *have = find_sock(next, n, a);

			if (have != NULL) { /* the same address twice */
				fds[k] = have->fd;
				continue;
			}
			old = find_sock(m->socks, m->sock_count, a);
			next[n].sa = a->sa;
			next[n].sa_len = a->sa_len;
			if (old != NULL) {
				next[n].fd = old->fd;
			} else {
				next[n].fd = bind_socket(a);
				if (next[n].fd < 0) {
					log_warnx("%s:%u: listener %s: cannot "
					          "listen on %s: %s",
					    a->loc.file, a->loc.line, l->name,
					    a->text, bind_hint(a, errno));
					goto fail;
				}
				bound[n] = true;
			}
			fds[k] = next[n++].fd;
		}
	}
	/* Addresses no longer configured: their queues close with them. */
	for (i = 0; i < m->sock_count; i++)
		if (find_sock(next, n,
		        &(struct config_addr){.sa = m->socks[i].sa,
		            .sa_len = m->socks[i].sa_len}) == NULL)
			(void)close(m->socks[i].fd);
	free(m->socks);
	m->socks = next;
	m->sock_count = n;
	free(bound);
	*fds_out = fds;
	return true;
fail:
	for (i = 0; bound != NULL && i < n; i++)
		if (bound[i])
			(void)close(next[i].fd);
	free(next);
	free(fds);
	free(bound);
	return false;
}

static void
close_sockets(struct master *m)
{
	size_t i;

	for (i = 0; i < m->sock_count; i++)
		(void)close(m->socks[i].fd);
	free(m->socks);
	m->socks = NULL;
	m->sock_count = 0;
}

/* Checked in the master, so that a reload naming an unknown user fails
 * there instead of in a loop of workers that cannot start. */
static bool
lookup_user(const struct config *cfg, uid_t *uid, gid_t *gid)
{
	struct passwd *pw;
	struct group *gr;

	if (cfg->user == NULL)
		return true;
	pw = getpwnam(cfg->user);
	if (pw == NULL) {
		log_warnx("%s:%u: user %s does not exist", cfg->user_loc.file,
		    cfg->user_loc.line, cfg->user);
		return false;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	if (cfg->group != NULL) {
		gr = getgrnam(cfg->group);
		if (gr == NULL) {
			log_warnx("%s:%u: group %s does not exist",
			    cfg->group_loc.file, cfg->group_loc.line,
			    cfg->group);
			return false;
		}
		*gid = gr->gr_gid;
	}
	if (geteuid() != 0 && geteuid() != *uid) {
		log_warnx("%s:%u: cannot switch to user %s: not started as "
		          "root",
		    cfg->user_loc.file, cfg->user_loc.line, cfg->user);
		return false;
	}
	return true;
}

/*
 * In a new worker, with the ids the master looked up (a worker never
 * asks NSS again: a lookup that failed there must not leave it root).
 * Exits when it cannot.
 */
static void
drop_privileges(const struct generation *g)
{
	if (!g->drop)
		return;
	if (geteuid() != 0) {
		if (geteuid() == g->uid)
			return; /* started as that user */
		fatalx("cannot switch to user %s: not root", g->cfg->user);
	}
	if (setgroups(1, &g->gid) != 0 || setgid(g->gid) != 0 ||
	    setuid(g->uid) != 0)
		fatal("cannot switch to user %s", g->cfg->user);
	if (setuid(0) == 0)
		fatalx("could switch back to root after dropping privileges");
}

static uint32_t
random_tag(void)
{
	uint32_t tag = 0;

	if (RAND_bytes((unsigned char *)&tag, sizeof(tag)) != 1)
		tag = (uint32_t)uv_hrtime() ^ (uint32_t)getpid();
	return tag;
}

/* The instance's max_sessions for g: the configured one, else what the
 * workers' open-file limits allow together. */
static uint64_t
instance_max(const struct master *m, const struct generation *g)
{
	if (g->cfg->max_sessions != 0)
		return g->cfg->max_sessions;
	return (uint64_t)m->session_max * g->n;
}

/* The child side of a fork: becomes worker i of g and never returns. */
static void
worker_child(struct master *m, struct generation *g, unsigned i)
{
	struct worker_spec spec;

	(void)close(m->sigfd);
	if (m->predecessor_fd >= 0)
		(void)close(m->predecessor_fd);
	if (m->metrics_fd >= 0)
		(void)close(m->metrics_fd);
	drop_privileges(g);
	/* Ids stay unique across workers and generations. */
	session_init_ids(random_tag());
	memset(&spec, 0, sizeof(spec));
	spec.index = i;
	spec.workers = g->n;
	spec.generation = g->id;
	spec.master = m->pid;
	spec.cfg = g->cfg;
	spec.ctxs = g->ctxs;
	spec.fds = g->fds;
	spec.session_max = m->session_max;
	spec.ready_fd = m->ready[1];
	spec.metrics = m->shm;
	spec.metrics_slot = g->slots[i].mslot;
	spec.max_sessions = instance_max(m, g);
	(void)close(m->ready[0]);
	exit(worker_run(&spec));
}

static bool
fork_worker(struct master *m, struct generation *g, unsigned i)
{
	struct slot *s = &g->slots[i];
	pid_t pid;

	s->mslot = metrics_slot_take(m->shm, g->cfg);
	if (s->mslot < 0)
		log_warnx("generation %u worker %u: all %d counter slots are "
		          "taken (too many generations draining?): its "
		          "sessions are neither counted nor limited",
		    g->id, i, METRICS_SLOTS);
	pid = fork();
	if (pid < 0) {
		log_warn("generation %u worker %u: cannot fork", g->id, i);
		metrics_slot_release(m->shm, s->mslot);
		s->mslot = -1;
		s->respawn_ms = now_ms() + MASTER_BACKOFF_MAX_MS;
		return false;
	}
	if (pid == 0)
		worker_child(m, g, i);
	s->pid = pid;
	s->started_ms = now_ms();
	s->respawn_ms = 0;
	s->ready = false;
	g->alive++;
	return true;
}

static void
signal_generation(struct generation *g, int signum)
{
	unsigned i;

	for (i = 0; i < g->n; i++)
		if (g->slots[i].pid > 0)
			(void)kill(g->slots[i].pid, signum);
}

/* A retired generation forks no more workers: its keys need not stay
 * in the master, where every worker forked later would inherit them. */
static void
forget_keys(struct generation *g)
{
	free_ctxs(g->ctxs, g->cfg->listener_count);
	g->ctxs = NULL;
}

static void
free_generation(struct generation *g)
{
	forget_keys(g);
	config_unref(g->cfg);
	free(g->fds);
	free(g->slots);
	free(g);
}

/* A generation of cfg and ctxs (both taken), not yet numbered and
 * without its sockets. NULL when there is no memory (then both are
 * freed). */
static struct generation *
new_generation(struct config *cfg, SSL_CTX **ctxs, uid_t uid, gid_t gid)
{
	struct generation *g = calloc(1, sizeof(*g));
	unsigned n =
	    cfg->workers != 0 ? cfg->workers : uv_available_parallelism();
	unsigned i;

	if (g == NULL || (g->slots = calloc(n, sizeof(*g->slots))) == NULL) {
		free(g);
		free_ctxs(ctxs, cfg->listener_count);
		config_unref(cfg);
		return NULL;
	}
	g->cfg = cfg;
	g->ctxs = ctxs;
	g->n = n;
	for (i = 0; i < n; i++)
		g->slots[i].mslot = -1;
	g->drop = cfg->user != NULL;
	g->uid = uid;
	g->gid = gid;
	return g;
}

static void
log_listeners(const struct config *cfg)
{
	size_t i, j;

	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++)
			log_info("listener %s: %s, %s TLS, on %s, backend %s",
			    l->name, proto_name(l->protocol),
			    l->tls == CONFIG_TLS_IMPLICIT ? "implicit" :
			                                    "STARTTLS",
			    l->listen[j].text, l->backend.text);
	}
}

static void notify_status(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void describe_exit(int status, char *text, size_t size);

/* Tells systemd (a no-op when not run by it), in one datagram. */
static void
notify_status(const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	(void)sd_notify(0, text);
}

/* Retired generations over the cap: the oldest end now, spread. */
static void
cap_draining(struct master *m)
{
	struct generation *g, *oldest;
	unsigned draining;

	for (;;) {
		draining = 0;
		oldest = NULL;
		for (g = m->current->older; g != NULL; g = g->older)
			if (!g->ending) {
				draining++;
				oldest = g;
			}
		if (draining <= MASTER_DRAINING_MAX)
			return;
		oldest->ending = true;
		log_info("generation %u: more than %d generations draining; "
		         "ending its sessions now",
		    oldest->id, MASTER_DRAINING_MAX);
		signal_generation(oldest, SIGUSR2);
	}
}

/* Starts every worker of g, the newest generation. */
static void
start_generation(struct master *m, struct generation *g)
{
	unsigned i;

	for (i = 0; i < g->n; i++)
		(void)fork_worker(m, g, i);
}

static void
forget_successor(struct master *m)
{
	if (m->successor_fd >= 0)
		(void)close(m->successor_fd);
	m->successor_fd = -1;
	m->successor = 0;
	m->upgrade_ms = 0;
	m->handover_ms = 0;
}

/* Frees the retired generations whose workers have all ended (also one
 * retired while its last worker waited to be replaced). */
static void
drop_finished(struct master *m)
{
	struct generation *g, **link = &m->current->older;

	while ((g = *link) != NULL) {
		if (g->alive > 0) {
			link = &g->older;
			continue;
		}
		log_info("generation %u finished", g->id);
		*link = g->older;
		free_generation(g);
	}
}

/* ------------------------------------------------------------------ */
/* What the metrics process shows. */

/*
 * Whether the instance serves: nothing is stopping or handing over, and
 * a worker of the current generation listens. Once one has, a worker
 * still starting counts too (after a reload, or one being replaced): the
 * sockets queue what comes meanwhile. With none alive (all died, waiting
 * to be replaced) it does not serve.
 */
static void
publish(struct master *m)
{
	unsigned i, ready = 0;

	for (i = 0; m->current != NULL && i < m->current->n; i++)
		if (m->current->slots[i].pid > 0 &&
		    (m->current->slots[i].ready || m->served))
			ready++;
	if (ready > 0)
		m->served = true;
	atomic_store(&m->shm->stopping,
	    m->stop_signals > 0 || m->handed_over ? 1u : 0u);
	atomic_store(&m->shm->ready,
	    ready > 0 && m->stop_signals == 0 && !m->handed_over ? 1u : 0u);
}

/* The expiry time of every certificate g's listeners serve. */
static void
publish_certs(struct master *m, const struct config *cfg, SSL_CTX **ctxs)
{
	struct metrics_cert *certs = calloc(METRICS_CERTS, sizeof(*certs));
	X509 *x[METRICS_CERTS];
	size_t i, j, k, n = 0;

	if (certs == NULL)
		return;
	for (i = 0; i < cfg->listener_count && n < METRICS_CERTS; i++) {
		unsigned name = metrics_name(m->shm, cfg->listeners[i].name);

		k = tls_ctx_certificates(ctxs[i], x, METRICS_CERTS - n);
		for (j = 0; j < k; j++) {
			struct metrics_cert *c = &certs[n];
			struct tm tm;
			BIO *bio;
			int len;

			if (name == METRICS_NO_NAME ||
			    ASN1_TIME_to_tm(X509_get0_notAfter(x[j]), &tm) != 1)
				continue;
			c->name = (uint16_t)name;
			c->not_after = (int64_t)timegm(&tm);
			bio = BIO_new(BIO_s_mem());
			if (bio != NULL &&
			    X509_NAME_print_ex(bio, X509_get_subject_name(x[j]),
			        0, XN_FLAG_RFC2253) >= 0) {
				len = BIO_read(bio, c->subject,
				    METRICS_SUBJECT_MAX);
				c->subject[len > 0 ? len : 0] = '\0';
			}
			BIO_free(bio);
			n++;
		}
	}
	metrics_set_certs(m->shm, certs, n);
	free(certs);
}

/* The socket for [metrics] listen in cfg: the one m has when the address
 * is the same, else a new one. -1 when cfg has none; -2 when it cannot be
 * bound (logged). */
static int
metrics_socket(struct master *m, const struct config *cfg)
{
	const struct config_addr *a = &cfg->metrics.listen;
	size_t i;
	int fd;

	if (!cfg->metrics.enabled)
		return -1;
	if (m->metrics_fd >= 0 && m->metrics_addr.sa_len == a->sa_len &&
	    memcmp(&m->metrics_addr.sa, &a->sa, a->sa_len) == 0)
		return m->metrics_fd;
	/* A master executed by SIGUSR2 finds it among the inherited. */
	for (i = 0; i < m->sock_count; i++)
		if (m->socks[i].sa_len == a->sa_len &&
		    memcmp(&m->socks[i].sa, &a->sa, a->sa_len) == 0) {
			fd = m->socks[i].fd;
			m->socks[i] = m->socks[--m->sock_count];
			return fd;
		}
	fd = bind_socket(a);
	if (fd < 0) {
		log_warnx("%s:%u: [metrics]: cannot listen on %s: %s",
		    a->loc.file, a->loc.line, a->text, bind_hint(a, errno));
		return -2;
	}
	return fd;
}

/* The metrics process runs on the current generation's configuration,
 * as its user. */
static void
fork_metrics(struct master *m)
{
	struct generation *g = m->current;
	struct metrics_server_spec spec;
	pid_t pid;

	m->metrics_respawn_ms = 0;
	if (m->metrics_fd < 0)
		return;
	pid = fork();
	if (pid < 0) {
		log_warn("cannot fork the metrics process");
		m->metrics_respawn_ms = now_ms() + MASTER_BACKOFF_MAX_MS;
		return;
	}
	if (pid == 0) {
		(void)close(m->sigfd);
		(void)close(m->ready[0]);
		(void)close(m->ready[1]);
		if (m->predecessor_fd >= 0)
			(void)close(m->predecessor_fd);
		close_sockets(m);
		drop_privileges(g);
		if (metrics_read_only(m->shm) != 0)
			fatal("metrics: cannot make the counters read-only");
		memset(&spec, 0, sizeof(spec));
		spec.master = m->pid;
		spec.fd = m->metrics_fd;
		spec.cfg = g->cfg;
		spec.shm = m->shm;
		/* The keys stay in the master. */
		forget_keys(g);
		OPENSSL_cleanse(&m->tickets, sizeof(m->tickets));
		exit(metrics_server_run(&spec));
	}
	m->metrics_pid = pid;
	m->metrics_started_ms = now_ms();
	log_info("metrics process (pid %ld) serves http://%s/metrics, "
	         "/healthz and /readyz",
	    (long)pid, g->cfg->metrics.listen.text);
}

static void
stop_metrics(struct master *m)
{
	if (m->metrics_pid > 0)
		(void)kill(m->metrics_pid, SIGTERM);
}

/*
 * How long to wait before replacing a process that lived this long: a
 * death within MASTER_STABLE_MS of its start counts towards a crash loop
 * (*fast_deaths in a row), which waits 100 ms doubled each time up to
 * MASTER_BACKOFF_MAX_MS; one that lived longer is replaced at once.
 */
static uint64_t
backoff_ms(unsigned *fast_deaths, uint64_t lived)
{
	uint64_t delay;

	*fast_deaths = lived < MASTER_STABLE_MS ? *fast_deaths + 1 : 0;
	if (*fast_deaths == 0)
		return 0;
	delay = MASTER_BACKOFF_MIN_MS
	    << (*fast_deaths > 8 ? 7 : *fast_deaths - 1);
	return delay > MASTER_BACKOFF_MAX_MS ? MASTER_BACKOFF_MAX_MS : delay;
}

/* The metrics process ended: replaced as a worker is, unless stopping. */
static void
metrics_reaped(struct master *m, int status)
{
	uint64_t lived = now_ms() - m->metrics_started_ms, delay;
	char how[96];

	m->metrics_pid = 0;
	describe_exit(status, how, sizeof(how));
	if (m->stop_signals > 0 || m->handed_over || m->metrics_fd < 0) {
		log_info("metrics process %s", how);
		return;
	}
	delay = backoff_ms(&m->metrics_fast_deaths, lived);
	log_warnx("metrics process %s after %llu ms; replacing it in %llu ms",
	    how, (unsigned long long)lived, (unsigned long long)delay);
	m->metrics_respawn_ms = now_ms() + delay + 1;
}

/* Milliseconds until the metrics process is due again (-1: not). */
static int
metrics_due(struct master *m)
{
	uint64_t now = now_ms();

	if (m->metrics_respawn_ms == 0 || m->metrics_pid > 0 ||
	    m->stop_signals > 0 || m->handed_over)
		return -1;
	if (m->metrics_respawn_ms <= now) {
		fork_metrics(m);
		return -1;
	}
	return (int)(m->metrics_respawn_ms - now);
}

/*
 * SIGHUP: the file is read and checked again as -t does. Anything wrong:
 * logged, and the running generation goes on untouched. Otherwise a new
 * generation starts on the sockets (carried over where the address is
 * unchanged) and the one before drains.
 */
static void
reload(struct master *m)
{
	struct config *cfg;
	struct tls_tickets tickets;
	struct generation *g;
	char *errors = NULL;
	SSL_CTX **ctxs;
	uid_t uid = 0;
	gid_t gid = 0;
	int *fds, mfd;

	(void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)now_ms() * 1000);
	log_info("SIGHUP: reloading %s", m->path);
	cfg = config_load(m->path, &errors);
	if (cfg == NULL) {
		each_line(errors != NULL ? errors : "out of memory", log_line,
		    "");
		free(errors);
		goto fail;
	}
	if (!build(cfg, &m->tickets, &tickets, &ctxs, log_line)) {
		config_unref(cfg);
		goto fail;
	}
	if (!lookup_user(cfg, &uid, &gid)) {
		free_ctxs(ctxs, cfg->listener_count);
		config_unref(cfg);
		OPENSSL_cleanse(&tickets, sizeof(tickets));
		goto fail;
	}
	/* Everything that may fail before the sockets change. */
	g = new_generation(cfg, ctxs, uid, gid);
	if (g == NULL) {
		log_warnx("reload: out of memory");
		OPENSSL_cleanse(&tickets, sizeof(tickets));
		goto fail;
	}
	mfd = metrics_socket(m, g->cfg);
	if (mfd == -2) {
		free_generation(g);
		OPENSSL_cleanse(&tickets, sizeof(tickets));
		goto fail;
	}
	if (!take_sockets(m, g->cfg, &fds)) {
		if (mfd >= 0 && mfd != m->metrics_fd)
			(void)close(mfd);
		free_generation(g);
		OPENSSL_cleanse(&tickets, sizeof(tickets));
		goto fail;
	}
	g->fds = fds;
	g->id = ++m->last_id;
	if (mfd != m->metrics_fd) {
		if (m->metrics_fd >= 0)
			(void)close(m->metrics_fd);
		m->metrics_fd = mfd;
		m->metrics_addr = g->cfg->metrics.listen;
	}
	{
		int r = log_init(cfg);

		if (r < 0) {
			errno = -r;
			log_warn("reload: cannot open log file %s; logging "
			         "goes on where it was",
			    cfg->log);
		} else if (cfg->user != NULL) {
			(void)log_chown(uid, gid);
		}
	}
	m->tickets = tickets;
	OPENSSL_cleanse(&tickets, sizeof(tickets));
	g->older = m->current;
	m->current->retiring = true;
	forget_keys(m->current);
	m->current = g;
	publish_certs(m, g->cfg, g->ctxs);
	start_generation(m, g);
	log_listeners(g->cfg);
	/* The new workers accept on the same sockets first, so no client
	 * meets a moment with nobody accepting. */
	signal_generation(g->older, SIGQUIT);
	/* The metrics process follows the configuration: a new one on the
	 * (same or new) socket; the old one's answers in flight are cut. */
	if (m->metrics_pid > 0) {
		m->metrics_old = m->metrics_pid;
		stop_metrics(m);
		m->metrics_pid = 0;
	}
	fork_metrics(m);
	(void)atomic_fetch_add(&m->shm->reloads_ok, 1);
	publish(m);
	log_info("reload: generation %u started with %u worker%s; "
	         "generation %u drains for up to %llu s",
	    g->id, g->n, g->n == 1 ? "" : "s", g->older->id,
	    (unsigned long long)(g->older->cfg->reload_drain_timeout_ms /
	        1000));
	drop_finished(m);
	cap_draining(m);
	notify_status("READY=1\nSTATUS=generation %u, %u workers (reloaded)",
	    g->id, g->n);
	return;
fail:
	(void)atomic_fetch_add(&m->shm->reloads_failed, 1);
	log_warnx("reload failed; generation %u goes on with the "
	          "configuration it has",
	    m->current->id);
	notify_status("READY=1\nSTATUS=reload failed: see the log; "
	              "generation %u goes on",
	    m->current->id);
}

static void
stop(struct master *m, int signum)
{
	struct generation *g;

	m->stop_signals++;
	if (m->stop_signals == 1) {
		log_info(
		    "SIG%s: stopping; sessions may finish for up to %llu ms "
		    "(signal again to end them now)",
		    sigabbrev_np(signum),
		    (unsigned long long)m->current->cfg->drain_timeout_ms);
		(void)sd_notify(0, "STOPPING=1");
		publish(m);
		/* New connections are refused once the workers close theirs. */
		close_sockets(m);
		/* An upgrade under way is called off: a new master must not
		 * go on serving alone once this one has stopped. */
		if (m->successor > 0) {
			log_info("upgrade called off: stopping the new master "
			         "(pid %ld)",
			    (long)m->successor);
			(void)kill(m->successor, SIGTERM);
		}
	} else {
		log_info("SIG%s: ending all sessions now",
		    sigabbrev_np(signum));
	}
	for (g = m->current; g != NULL; g = g->older)
		signal_generation(g, m->stop_signals == 1 ? SIGTERM : SIGINT);
}

static void
describe_exit(int status, char *text, size_t size)
{
	if (WIFEXITED(status))
		(void)snprintf(text, size, "exited with status %d",
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		(void)snprintf(text, size, "was killed by signal %d (SIG%s)%s",
		    WTERMSIG(status), sigabbrev_np(WTERMSIG(status)),
		    WCOREDUMP(status) ? ", core dumped" : "");
	else
		(void)snprintf(text, size, "ended (status %#x)", status);
}

/* One worker has ended: replace it, or let its generation go. */
static void
reap(struct master *m, pid_t pid, int status)
{
	struct generation *g, **link;
	struct slot *s = NULL;
	uint64_t lived, delay;
	unsigned i = 0;
	char how[96];

	if (pid == m->metrics_pid && pid > 0) {
		metrics_reaped(m, status);
		return;
	}
	if (pid == m->metrics_old && pid > 0) {
		m->metrics_old = 0;
		return;
	}
	for (link = &m->current; (g = *link) != NULL; link = &g->older) {
		for (i = 0; i < g->n; i++)
			if (g->slots[i].pid == pid) {
				s = &g->slots[i];
				break;
			}
		if (s != NULL)
			break;
	}
	if (s == NULL) {
		describe_exit(status, how, sizeof(how));
		if (pid == m->successor) {
			log_warnx("upgrade failed: the new master (pid %ld) %s "
			          "before it took over; this one goes on",
			    (long)pid, how);
			forget_successor(m);
		} else if (pid == m->handed_to) {
			log_warnx("the new master (pid %ld) %s after it took "
			          "over: nothing accepts on the listeners now; "
			          "start mailproxy again",
			    (long)pid, how);
			m->handed_to = 0;
		}
		return; /* not ours: a worker's stray child cannot be */
	}
	s->pid = 0;
	s->ready = false;
	g->alive--;
	metrics_slot_release(m->shm, s->mslot);
	s->mslot = -1;
	describe_exit(status, how, sizeof(how));
	lived = now_ms() - s->started_ms;
	if (g == m->current && m->stop_signals == 0 && !m->handed_over) {
		delay = backoff_ms(&s->fast_deaths, lived);
		log_warnx("worker %u (pid %ld) %s after %llu ms; replacing it "
		          "in %llu ms",
		    i, (long)pid, how, (unsigned long long)lived,
		    (unsigned long long)delay);
		s->respawn_ms = now_ms() + delay;
		if (s->respawn_ms == 0)
			s->respawn_ms = 1;
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_info("generation %u worker %u (pid %ld) finished", g->id, i,
		    (long)pid);
	else
		log_warnx("generation %u worker %u (pid %ld) %s", g->id, i,
		    (long)pid, how);
	drop_finished(m);
}

static void
reap_all(struct master *m)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		reap(m, pid, status);
	publish(m);
}

/* Workers of the current generation whose back-off has passed. */
static int
respawn_due(struct master *m)
{
	struct generation *g = m->current;
	uint64_t now = now_ms(), wait, next = UINT64_MAX;
	unsigned i;

	if (m->stop_signals > 0 || m->handed_over)
		return -1;
	for (i = 0; i < g->n; i++) {
		struct slot *s = &g->slots[i];

		if (s->respawn_ms == 0 || s->pid > 0)
			continue;
		if (s->respawn_ms <= now) {
			if (fork_worker(m, g, i))
				log_info("worker %u replaced (pid %ld)", i,
				    (long)s->pid);
			continue;
		}
		wait = s->respawn_ms - now;
		if (wait < next)
			next = wait;
	}
	return next == UINT64_MAX ? -1 : next > 60000 ? 60000 : (int)next;
}

static bool
any_alive(const struct master *m)
{
	const struct generation *g;

	for (g = m->current; g != NULL; g = g->older)
		if (g->alive > 0)
			return true;
	return false;
}

/*
 * SIGUSR2, as nginx's binary upgrade: the binary at the path this one was
 * started from is executed with the same command line and this master's
 * listening sockets. Once all its first workers listen it says so (the
 * pipe); MASTER_STABLE_MS later, if it still lives, this master hands
 * over: its generations drain as after a reload, and it exits when they
 * are done. If the new one fails first, or says nothing within
 * MASTER_UPGRADE_MS, nothing changes here.
 */
static void
upgrade(struct master *m)
{
	char *fds, num[16];
	size_t i, used = 0;
	int p[2];
	pid_t pid;

	if (m->successor > 0) {
		log_warnx("SIGUSR2: an upgrade is already under way (pid %ld)",
		    (long)m->successor);
		return;
	}
	if (m->exe[0] == '\0') {
		log_warnx("SIGUSR2: the path of the binary is not known");
		return;
	}
	fds = malloc((m->sock_count + 1) * 12 + 1);
	if (fds == NULL || pipe2(p, O_CLOEXEC) != 0) {
		log_warn("SIGUSR2: cannot upgrade");
		free(fds);
		return;
	}
	fds[0] = '\0';
	for (i = 0; i < m->sock_count; i++)
		used += (size_t)sprintf(fds + used, "%s%d", i > 0 ? " " : "",
		    m->socks[i].fd);
	if (m->metrics_fd >= 0)
		used += (size_t)sprintf(fds + used, "%s%d", used > 0 ? " " : "",
		    m->metrics_fd);
	log_info("SIGUSR2: starting %s on the listening sockets", m->exe);
	pid = fork();
	if (pid < 0) {
		log_warn("SIGUSR2: cannot fork");
		(void)close(p[0]);
		(void)close(p[1]);
		free(fds);
		return;
	}
	if (pid == 0) {
		sigset_t none;

		for (i = 0; i < m->sock_count; i++)
			(void)fcntl(m->socks[i].fd, F_SETFD, 0);
		if (m->metrics_fd >= 0)
			(void)fcntl(m->metrics_fd, F_SETFD, 0);
		(void)fcntl(p[1], F_SETFD, 0);
		(void)snprintf(num, sizeof(num), "%d", p[1]);
		(void)setenv(MASTER_ENV_FDS, fds, 1);
		(void)setenv(MASTER_ENV_READY, num, 1);
		/* Its generations number on from ours: one log, no two
		 * generation 1s. */
		(void)snprintf(num, sizeof(num), "%u", m->last_id);
		(void)setenv(MASTER_ENV_GENERATION, num, 1);
		(void)sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		execv(m->exe, m->argv);
		log_warn("SIGUSR2: cannot execute %s", m->exe);
		_exit(127);
	}
	free(fds);
	(void)close(p[1]);
	m->successor = pid;
	m->successor_fd = p[0];
	m->upgrade_ms = now_ms() + MASTER_UPGRADE_MS;
	m->handover_ms = 0;
}

/* The successor's pipe is readable: its workers listen, or it is gone
 * (then reap() says how). */
static void
successor_heard(struct master *m)
{
	char c = 0;
	ssize_t n = read(m->successor_fd, &c, 1);

	if (n < 0 && errno == EAGAIN)
		return;
	(void)close(m->successor_fd);
	m->successor_fd = -1;
	if (n != 1 || c != 'R' || m->successor <= 0)
		return;
	if (m->stop_signals > 0) {
		(void)kill(m->successor, SIGTERM);
		return;
	}
	log_info("upgrade: the new master (pid %ld) listens; handing over in "
	         "%d ms if it stays up",
	    (long)m->successor, MASTER_STABLE_MS);
	m->handover_ms = now_ms() + MASTER_STABLE_MS;
}

/* Deadlines of an upgrade under way; the ms to wait for the next. */
static int
upgrade_due(struct master *m)
{
	struct generation *g;
	uint64_t now = now_ms(), due;

	if (m->successor <= 0)
		return -1;
	if (m->handover_ms == 0 && now >= m->upgrade_ms) {
		log_warnx("upgrade failed: the new master (pid %ld) did not "
		          "listen within %d s; stopping it, this one goes on",
		    (long)m->successor, MASTER_UPGRADE_MS / 1000);
		(void)kill(m->successor, SIGTERM);
		forget_successor(m);
		return -1;
	}
	if (m->handover_ms == 0 || now < m->handover_ms) {
		due = m->handover_ms != 0 ? m->handover_ms : m->upgrade_ms;
		return (int)(due - now);
	}
	log_info("upgrade: the new master (pid %ld) serves; the sessions "
	         "here drain for up to %llu s, then this master exits",
	    (long)m->successor,
	    (unsigned long long)(m->current->cfg->reload_drain_timeout_ms /
	        1000));
	(void)sd_notifyf(0,
	    "MAINPID=%ld\nREADY=1\nSTATUS=upgraded: master %ld serves",
	    (long)m->successor, (long)m->successor);
	m->handed_over = true;
	m->handed_to = m->successor;
	forget_successor(m);
	close_sockets(m);
	/* The new master's metrics process answers from now on. */
	stop_metrics(m);
	if (m->metrics_fd >= 0)
		(void)close(m->metrics_fd);
	m->metrics_fd = -1;
	publish(m);
	for (g = m->current; g != NULL; g = g->older) {
		if (!g->retiring)
			signal_generation(g, SIGQUIT);
		g->retiring = true;
		forget_keys(g);
	}
	return -1;
}

/* Sockets a master executed by SIGUSR2 inherited: carried over by
 * take_sockets() like a reload's. */
static void
adopt_sockets(struct master *m)
{
	const char *list = getenv(MASTER_ENV_FDS);
	char *end;
	long fd;

	while (list != NULL && *list != '\0') {
		struct msock *grown;
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);

		fd = strtol(list, &end, 10);
		if (end == list)
			break;
		list = end;
		if (fd < 3 || fd > 65535 ||
		    getsockname((int)fd, (struct sockaddr *)&sa, &len) != 0)
			continue;
		grown = realloc(m->socks, (m->sock_count + 1) * sizeof(*grown));
		if (grown == NULL) {
			(void)close((int)fd);
			continue;
		}
		m->socks = grown;
		(void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		memset(&grown[m->sock_count], 0, sizeof(grown[0]));
		memcpy(&grown[m->sock_count].sa, &sa, len);
		grown[m->sock_count].sa_len = len;
		grown[m->sock_count++].fd = (int)fd;
	}
	(void)unsetenv(MASTER_ENV_FDS);
	list = getenv(MASTER_ENV_GENERATION);
	if (list != NULL) {
		fd = strtol(list, &end, 10);
		if (*end == '\0' && fd > 0 && fd < 1000000)
			m->last_id = (unsigned)fd;
		(void)unsetenv(MASTER_ENV_GENERATION);
	}
}

/* A master that executed this one waits for its first workers to
 * listen: keeps the pipe (out of the workers' reach) until then. */
static void
adopt_predecessor(struct master *m)
{
	const char *v = getenv(MASTER_ENV_READY);

	m->predecessor_fd = v != NULL ? atoi(v) : -1;
	if (m->predecessor_fd <= 2)
		m->predecessor_fd = -1;
	else
		(void)fcntl(m->predecessor_fd, F_SETFD, FD_CLOEXEC);
	(void)unsetenv(MASTER_ENV_READY);
}

/* A worker says it listens (its pid on the pipe). Once every worker of
 * the first generation has, a master that executed this one hears it. */
static void
worker_ready(struct master *m)
{
	struct generation *g = m->current;
	pid_t pid;
	unsigned i, ready = 0;

	while (read(m->ready[0], &pid, sizeof(pid)) == (ssize_t)sizeof(pid))
		for (i = 0; i < g->n; i++)
			if (g->slots[i].pid == pid)
				g->slots[i].ready = true;
	for (i = 0; i < g->n; i++)
		ready += g->slots[i].ready;
	publish(m);
	if (m->predecessor_fd < 0 || ready < g->n)
		return;
	if (write(m->predecessor_fd, "R", 1) != 1)
		log_warn("cannot tell the master before this one");
	(void)close(m->predecessor_fd);
	m->predecessor_fd = -1;
}

static void
own_log(const struct config *cfg)
{
	uid_t uid = 0;
	gid_t gid = 0;

	int r;

	if (cfg->user == NULL || !lookup_user(cfg, &uid, &gid))
		return;
	r = log_chown(uid, gid);
	if (r < 0) {
		errno = -r;
		log_warn("cannot give the log file %s to user %s (it must be "
		         "a plain file with one name)",
		    cfg->log, cfg->user);
	}
}

static void
on_signal(struct master *m, int signum)
{
	struct generation *g;

	switch (signum) {
	case SIGCHLD:
		reap_all(m);
		break;
	case SIGHUP:
		if (m->successor > 0)
			log_warnx("SIGHUP: an upgrade is under way (pid %ld); "
			          "reload ignored",
			    (long)m->successor);
		else if (m->stop_signals == 0 && !m->handed_over)
			reload(m);
		break;
	case SIGUSR2:
		if (m->stop_signals == 0 && !m->handed_over)
			upgrade(m);
		break;
	case SIGTERM:
	case SIGINT:
	case SIGQUIT:
		stop(m, signum);
		break;
	case SIGUSR1:
		if (log_reopen() < 0) {
			log_warn("SIGUSR1: cannot reopen %s",
			    m->current->cfg->log);
			break;
		}
		own_log(m->current->cfg);
		log_info("SIGUSR1: log file reopened");
		for (g = m->current; g != NULL; g = g->older)
			signal_generation(g, SIGUSR1);
		break;
	default:
		break;
	}
}

static int
open_signals(void)
{
	sigset_t set;
	size_t i;

	(void)sigemptyset(&set);
	for (i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
		(void)sigaddset(&set, handled[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static int
earliest(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/*
 * The path SIGUSR2 executes: argv[0] made absolute as the shell found
 * it, symbolic links kept, so that an install that moves a link to a
 * new version (alternatives, /opt/mailproxy/current) runs the new one.
 */
static void
binary_path(const char *argv0, char *out, size_t size)
{
	const char *path = getenv("PATH"), *p, *end;
	char cwd[2048];
	int n = 0;

	out[0] = '\0';
	if (argv0 == NULL)
		return;
	if (argv0[0] == '/') {
		n = snprintf(out, size, "%s", argv0);
	} else if (strchr(argv0, '/') != NULL) {
		if (getcwd(cwd, sizeof(cwd)) != NULL)
			n = snprintf(out, size, "%s/%s", cwd, argv0);
	} else {
		for (p = path; p != NULL && *p != '\0'; p = end + 1) {
			end = strchr(p, ':');
			if (end == NULL)
				end = p + strlen(p);
			n = snprintf(out, size, "%.*s/%s", (int)(end - p), p,
			    argv0);
			if (n > 0 && (size_t)n < size && out[0] == '/' &&
			    access(out, X_OK) == 0)
				return;
			out[0] = '\0';
			if (*end == '\0')
				break;
		}
		return;
	}
	if (n < 0 || (size_t)n >= size)
		out[0] = '\0';
}

int
master_run(const char *path, struct config *cfg, char **argv)
{
	struct signalfd_siginfo si;
	struct master m;
	struct generation *g;
	struct pollfd pfd[3];
	SSL_CTX **ctxs;
	uid_t uid = 0;
	gid_t gid = 0;
	int *fds, timeout;
	ssize_t r;

	memset(&m, 0, sizeof(m));
	m.path = path;
	m.argv = argv;
	m.pid = getpid();
	m.successor_fd = -1;
	m.metrics_fd = -1;
	binary_path(argv[0], m.exe, sizeof(m.exe));
	adopt_predecessor(&m);
	if (pipe2(m.ready, O_CLOEXEC) != 0 ||
	    fcntl(m.ready[0], F_SETFL, O_NONBLOCK) != 0)
		fatal("cannot make a pipe");
	if (log_init(cfg) < 0)
		fatal("cannot open log file %s", cfg->log);
	(void)signal(SIGPIPE, SIG_IGN);
	m.sigfd = open_signals();
	if (m.sigfd < 0)
		fatal("cannot handle signals");
	if (!lookup_user(cfg, &uid, &gid))
		fatalx("cannot start");
	own_log(cfg);
	if (!build(cfg, NULL, &m.tickets, &ctxs, log_line))
		fatalx("cannot start");
	m.session_max = raise_fd_limit(address_count(cfg));
	if (getenv(MASTER_ENV_FDS) == NULL && !ports_free(cfg))
		fatalx("cannot start");
	adopt_sockets(&m);
	/* Before any fork: every process maps the same counters. */
	m.shm = metrics_create();
	if (m.shm == NULL)
		fatal("cannot map the shared counters");
	m.metrics_fd = metrics_socket(&m, cfg);
	if (m.metrics_fd == -2)
		fatalx("cannot start");
	m.metrics_addr = cfg->metrics.listen;
	if (!take_sockets(&m, cfg, &fds))
		fatalx("cannot start");
	g = new_generation(cfg, ctxs, uid, gid);
	if (g == NULL)
		fatalx("out of memory");
	g->fds = fds;
	g->id = ++m.last_id;
	m.current = g;
	publish_certs(&m, cfg, g->ctxs);
	log_info("max_sessions %llu%s; max_sessions_per_client %llu, "
	         "max_connect_rate_per_client %llu a minute (0: no limit)",
	    (unsigned long long)instance_max(&m, g),
	    cfg->max_sessions != 0 ? "" : " (the open file limit, all workers)",
	    (unsigned long long)cfg->max_sessions_per_client,
	    (unsigned long long)cfg->max_connect_rate_per_client);
	if (cfg->user != NULL)
		log_info("workers run as user %s (uid %u, gid %u)", cfg->user,
		    (unsigned)uid, (unsigned)gid);
	else if (geteuid() == 0)
		log_warnx("%s", ROOT_WARNING);
	start_generation(&m, g);
	fork_metrics(&m);
	log_listeners(cfg);
	if (cfg->busy_poll_ms > 0)
		log_info("mailproxy %s started with %u worker%s, busy_poll "
		         "%llums",
		    MAILPROXY_VERSION, g->n, g->n == 1 ? "" : "s",
		    (unsigned long long)cfg->busy_poll_ms);
	else
		log_info("mailproxy %s started with %u worker%s",
		    MAILPROXY_VERSION, g->n, g->n == 1 ? "" : "s");
	notify_status("READY=1\nSTATUS=generation %u, %u workers", g->id, g->n);

	pfd[0].fd = m.sigfd;
	pfd[0].events = POLLIN;
	pfd[1].fd = m.ready[0];
	pfd[1].events = POLLIN;
	pfd[2].events = POLLIN;
	while ((m.stop_signals == 0 && !m.handed_over) || any_alive(&m)) {
		/* /healthz says the master is alive while it beats. */
		atomic_store(&m.shm->heartbeat_ms, metrics_now_ms());
		timeout = earliest(respawn_due(&m), upgrade_due(&m));
		timeout = earliest(timeout, metrics_due(&m));
		if (m.metrics_fd >= 0)
			timeout = earliest(timeout, METRICS_HEARTBEAT_MS);
		pfd[2].fd = m.successor_fd;
		pfd[2].revents = 0;
		if (poll(pfd, m.successor_fd >= 0 ? 3 : 2, timeout) < 0 &&
		    errno != EINTR)
			fatal("poll");
		while ((r = read(m.sigfd, &si, sizeof(si))) == sizeof(si))
			on_signal(&m, (int)si.ssi_signo);
		/* A SIGCHLD merged with another may carry several exits. */
		reap_all(&m);
		if (pfd[1].revents != 0)
			worker_ready(&m);
		if (m.successor_fd >= 0 && pfd[2].revents != 0)
			successor_heard(&m);
	}
	forget_successor(&m);
	/* /readyz said 503 while the sessions drained; now it goes. */
	stop_metrics(&m);
	while (m.metrics_pid > 0 || m.metrics_old > 0) {
		pid_t pid = waitpid(-1, NULL, 0);

		if (pid < 0)
			break;
		if (pid == m.metrics_pid)
			m.metrics_pid = 0;
		if (pid == m.metrics_old)
			m.metrics_old = 0;
	}
	if (m.metrics_fd >= 0)
		(void)close(m.metrics_fd);
	if (m.predecessor_fd >= 0)
		(void)close(m.predecessor_fd);
	(void)close(m.ready[0]);
	(void)close(m.ready[1]);
	while (m.current != NULL) {
		g = m.current;
		m.current = g->older;
		free_generation(g);
	}
	close_sockets(&m);
	(void)close(m.sigfd);
	OPENSSL_cleanse(&m.tickets, sizeof(m.tickets));
	metrics_destroy(m.shm);
	if (m.handed_over)
		log_info("mailproxy stopped: its sessions are done, the new "
		         "master serves");
	else
		log_info("mailproxy stopped");
	return 0;
}
