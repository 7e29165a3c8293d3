/*
 * mailproxy: command line, start-up, signals, and the orderly stop.
 *
 * Start-up does everything that may fail before any worker runs, so that
 * fatal() is only ever called there: load and check the configuration,
 * build the TLS contexts, open the log, raise the open-file limit, bind
 * every listening socket (privileged ports too), drop to the configured
 * user, then start the workers. After that the main thread only waits for
 * signals: SIGTERM/SIGINT drain (a second one stops at once), SIGUSR1
 * reopens the log file.
 */
#define _DEFAULT_SOURCE /* SO_REUSEPORT, SOCK_CLOEXEC, setgroups */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/log.h"
#include "mailproxy/session.h"
#include "mailproxy/tls.h"
#include "mailproxy/version.h"
#include "mailproxy/worker.h"

struct app {
	struct config *cfg;
	SSL_CTX **ctxs;
	struct worker **workers;
	unsigned worker_count;
	uv_loop_t loop;
	uv_async_t worker_done;
	uv_signal_t sig_term, sig_int, sig_usr1, sig_hup;
	unsigned stop_signals;  /* SIGTERM/SIGINT received so far */
	atomic_size_t sessions; /* every worker's, for the open file limit */
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: mailproxy [-t] [-c FILE]\n"
	    "\n"
	    "TLS in front of plaintext IMAP, POP3 and SMTP servers.\n"
	    "\n"
	    "  -c, --config FILE  configuration file (default %s)\n"
	    "  -t, --test         check the configuration and the "
	    "certificates, then exit\n"
	    "                     (0: valid, 1: not)\n"
	    "  -h, --help         this text\n"
	    "  -V, --version      print the version and exit\n"
	    "\n"
	    "Runs in the foreground. SIGTERM or SIGINT: stop accepting and "
	    "let sessions\n"
	    "finish for up to drain_timeout (a second signal ends them at "
	    "once).\n"
	    "SIGUSR1: reopen the log file.\n",
	    CONFIG_DEFAULT_PATH);
}

/* Prints every line of a multi-line error text with our prefix. */
static void
print_errors(const char *text)
{
	const char *p = text, *nl;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL) {
			fprintf(stderr, "mailproxy: %s\n", p);
			break;
		}
		fprintf(stderr, "mailproxy: %.*s\n", (int)(nl - p), p);
		p = nl + 1;
	}
}

static bool
build_contexts(struct app *app)
{
	const struct config *cfg = app->cfg;
	bool ok = true;
	char *error;
	size_t i;

	app->ctxs = calloc(cfg->listener_count, sizeof(*app->ctxs));
	if (app->ctxs == NULL) {
		fprintf(stderr, "mailproxy: out of memory\n");
		return false;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		app->ctxs[i] = tls_ctx_build(cfg, &cfg->listeners[i], &error);
		if (app->ctxs[i] == NULL) {
			print_errors(error != NULL ? error : "out of memory");
			free(error);
			ok = false;
		}
	}
	return ok;
}

static void
free_contexts(struct app *app)
{
	size_t i;

	if (app->ctxs == NULL)
		return;
	for (i = 0; i < app->cfg->listener_count; i++)
		SSL_CTX_free(app->ctxs[i]);
	free(app->ctxs);
	app->ctxs = NULL;
}

/*
 * Sessions the process takes before it turns new ones away (end=limit):
 * two descriptors each, less what the process needs besides (listening
 * sockets, log, libuv's own). Without it, libuv silently accepts and
 * closes connections once accept() fails with EMFILE, and nobody learns
 * why clients are dropped. One count for all workers, because
 * SO_REUSEPORT does not spread connections evenly.
 */
static size_t
session_max(rlim_t fds, size_t workers, size_t listen_fds)
{
	size_t reserve = 16 + listen_fds + 4 * workers;

	if (fds < reserve + 2) {
		log_warnx("open file limit %llu leaves no room for sessions "
		          "(%zu are needed besides); raise it",
		    (unsigned long long)fds, reserve);
		return 1;
	}
	return ((size_t)fds - reserve) / 2;
}

/*
 * One process holds up to two descriptors per session, so the soft limit
 * is raised to the hard one.
 */
static size_t
raise_fd_limit(size_t workers, size_t listen_fds)
{
	struct rlimit rl;
	size_t most;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_warn("getrlimit(RLIMIT_NOFILE)");
		return session_max(1024, workers, listen_fds);
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
	most = session_max(rl.rlim_cur, workers, listen_fds);
	log_info("open file limit %llu (was %llu, hard limit %llu): at most "
	         "%zu sessions",
	    (unsigned long long)rl.rlim_cur, (unsigned long long)was,
	    (unsigned long long)rl.rlim_max, most);
	return most;
}

static int
bind_socket(const struct config_addr *a)
{
	int fd, one = 1;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return -1;
	/* SO_REUSEPORT: every worker binds the same address and the
	 * kernel spreads connections over them; copies of mailproxy run by
	 * the same user may share the port the same way. */
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
fail:
	(void)close(fd);
	return -1;
}

/* All sockets of one worker, listener by listener. */
static int *
bind_worker_sockets(const struct config *cfg, size_t total)
{
	int *fds = calloc(total, sizeof(*fds));
	size_t i, j, k = 0;

	if (fds == NULL)
		fatalx("out of memory");
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++, k++) {
			fds[k] = bind_socket(&l->listen[j]);
			if (fds[k] < 0)
				fatal("listener %s: cannot listen on %s",
				    l->name, l->listen[j].text);
		}
	}
	return fds;
}

static void
drop_privileges(const struct config *cfg)
{
	struct passwd *pw;
	struct group *gr;
	gid_t gid;

	if (cfg->user == NULL)
		return;
	pw = getpwnam(cfg->user);
	if (pw == NULL)
		fatalx("user %s does not exist", cfg->user);
	gid = pw->pw_gid;
	if (cfg->group != NULL) {
		gr = getgrnam(cfg->group);
		if (gr == NULL)
			fatalx("group %s does not exist", cfg->group);
		gid = gr->gr_gid;
	}
	if (geteuid() != 0) {
		if (geteuid() == pw->pw_uid)
			return;
		fatalx("cannot switch to user %s: not started as root",
		    cfg->user);
	}
	if (setgroups(1, &gid) != 0 || setgid(gid) != 0 ||
	    setuid(pw->pw_uid) != 0)
		fatal("cannot switch to user %s", cfg->user);
	if (setuid(0) == 0)
		fatalx("could switch back to root after dropping privileges");
	log_info("running as user %s (uid %u, gid %u)", cfg->user,
	    (unsigned)pw->pw_uid, (unsigned)gid);
}

static void
on_handle_close(uv_handle_t *h)
{
	(void)h;
}

static void
on_worker_done(uv_async_t *a)
{
	struct app *app = a->data;
	unsigned i;

	for (i = 0; i < app->worker_count; i++)
		if (!atomic_load(&app->workers[i]->finished))
			return;
	uv_close((uv_handle_t *)&app->worker_done, on_handle_close);
	uv_close((uv_handle_t *)&app->sig_term, on_handle_close);
	uv_close((uv_handle_t *)&app->sig_int, on_handle_close);
	uv_close((uv_handle_t *)&app->sig_usr1, on_handle_close);
	uv_close((uv_handle_t *)&app->sig_hup, on_handle_close);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct app *app = h->data;
	unsigned i;

	switch (signum) {
	case SIGTERM:
	case SIGINT:
		app->stop_signals++;
		if (app->stop_signals == 1)
			log_info("%s: stopping; sessions may finish for up "
			         "to %llu ms (signal again to end them now)",
			    signum == SIGTERM ? "SIGTERM" : "SIGINT",
			    (unsigned long long)app->cfg->drain_timeout_ms);
		else
			log_info("%s: ending all sessions now",
			    signum == SIGTERM ? "SIGTERM" : "SIGINT");
		for (i = 0; i < app->worker_count; i++)
			worker_stop(app->workers[i], app->stop_signals > 1);
		break;
	case SIGUSR1:
		if (log_reopen() < 0)
			log_warn("SIGUSR1: cannot reopen %s", app->cfg->log);
		else
			log_info("SIGUSR1: log file reopened");
		break;
	case SIGHUP:
		log_warnx("SIGHUP: configuration reload is not supported by "
		          "this version; ignored (restart to apply changes)");
		break;
	default:
		break;
	}
}

static void
start_signal(struct app *app, uv_signal_t *h, int signum)
{
	(void)uv_signal_init(&app->loop, h);
	h->data = app;
	if (uv_signal_start(h, on_signal, signum) != 0)
		fatalx("cannot handle signal %d", signum);
}

static uint32_t
random_tag(void)
{
	uint32_t tag = 0;

	if (RAND_bytes((unsigned char *)&tag, sizeof(tag)) != 1)
		tag = (uint32_t)uv_hrtime() ^ (uint32_t)getpid();
	return tag;
}

static int
run(struct app *app)
{
	struct config *cfg = app->cfg;
	size_t total = 0, i, j;
	unsigned n, started = 0;
	size_t most;
	int r, **fds;

	if (log_init(cfg) < 0)
		fatal("cannot open log file %s", cfg->log);
	(void)signal(SIGPIPE, SIG_IGN);
	n = cfg->workers != 0 ? cfg->workers : uv_available_parallelism();
	for (i = 0; i < cfg->listener_count; i++)
		total += cfg->listeners[i].listen_count;
	/* Before binding: the limit decides how many sockets may be open. */
	most = raise_fd_limit(n, n * total);
	fds = calloc(n, sizeof(*fds));
	app->workers = calloc(n, sizeof(*app->workers));
	if (fds == NULL || app->workers == NULL)
		fatalx("out of memory");
	for (i = 0; i < n; i++)
		fds[i] = bind_worker_sockets(cfg, total);
	drop_privileges(cfg);
	session_init_ids(random_tag());

	if (uv_loop_init(&app->loop) != 0)
		fatalx("cannot create the main event loop");
	(void)uv_async_init(&app->loop, &app->worker_done, on_worker_done);
	app->worker_done.data = app;
	start_signal(app, &app->sig_term, SIGTERM);
	start_signal(app, &app->sig_int, SIGINT);
	start_signal(app, &app->sig_usr1, SIGUSR1);
	start_signal(app, &app->sig_hup, SIGHUP);

	for (i = 0; i < n; i++) {
		app->workers[i] = worker_create((unsigned)i, cfg, app->ctxs,
		    fds[i], &app->worker_done);
		free(fds[i]);
		if (app->workers[i] == NULL)
			fatalx("cannot create worker %zu", i);
		app->workers[i]->sessions.max = most;
		app->workers[i]->sessions.process_sessions = &app->sessions;
	}
	free(fds);
	app->worker_count = n;
	for (i = 0; i < n; i++) {
		r = worker_start(app->workers[i]);
		if (r < 0) {
			/* Threads already running must not see exit(). */
			log_warnx("cannot start worker %zu: %s", i,
			    uv_strerror(r));
			for (j = 0; j < i; j++)
				worker_stop(app->workers[j], true);
			for (j = 0; j < n; j++)
				worker_free(app->workers[j]);
			exit(1);
		}
		started++;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++)
			log_info("listener %s: %s, %s TLS, on %s, backend %s",
			    l->name, proto_name(l->protocol),
			    l->tls == CONFIG_TLS_IMPLICIT ? "implicit" :
			                                    "STARTTLS",
			    l->listen[j].text, l->backend.text);
	}
	if (app->cfg->busy_poll_ms > 0)
		log_info("mailproxy %s started with %u worker%s, busy_poll "
		         "%llums",
		    MAILPROXY_VERSION, started, started == 1 ? "" : "s",
		    (unsigned long long)app->cfg->busy_poll_ms);
	else
		log_info("mailproxy %s started with %u worker%s",
		    MAILPROXY_VERSION, started, started == 1 ? "" : "s");

	(void)uv_run(&app->loop, UV_RUN_DEFAULT);
	for (i = 0; i < n; i++)
		worker_free(app->workers[i]);
	free(app->workers);
	if (uv_loop_close(&app->loop) != 0)
		log_warnx("main loop: handles left open at exit");
	log_info("mailproxy stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"test", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = CONFIG_DEFAULT_PATH;
	struct app app;
	bool test = false;
	char *errors = NULL;
	int c, status;

	while ((c = getopt_long(argc, argv, "c:thV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("mailproxy %s (%s, libuv %s)\n",
			    MAILPROXY_VERSION, OpenSSL_version(OPENSSL_VERSION),
			    uv_version_string());
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}

	memset(&app, 0, sizeof(app));
	atomic_init(&app.sessions, 0);
	app.cfg = config_load(path, &errors);
	if (app.cfg == NULL) {
		print_errors(errors != NULL ? errors : "out of memory");
		free(errors);
		if (test)
			fprintf(stderr,
			    "mailproxy: configuration file %s test failed\n",
			    path);
		return 1;
	}
	if (tls_init() != 0) {
		fprintf(stderr, "mailproxy: cannot initialise TLS\n");
		config_unref(app.cfg);
		return 1;
	}
	if (!build_contexts(&app)) {
		if (test)
			fprintf(stderr,
			    "mailproxy: configuration file %s test failed\n",
			    path);
		status = 1;
	} else if (test) {
		printf("mailproxy: configuration file %s test is successful\n",
		    path);
		status = 0;
	} else {
		status = run(&app);
	}
	free_contexts(&app);
	config_unref(app.cfg);
	tls_cleanup();
	return status;
}
