/*
 * bench/loadgen: the load generator of the benchmark (bench/run).
 *
 * One thread, one level-triggered epoll loop, many TLS 1.3 client
 * connections (TLS_AES_128_GCM_SHA256, X25519, no certificate check: the
 * cost of a handshake is the server's, not a CA walk). Every connection
 * speaks the dialogue of bench/backend.c: it reads the greeting, and for
 * the relay, idle and latency modes logs in with the mode as user name, so
 * every proxy carries the same bytes (mailproxy parses until the LOGIN's
 * tagged OK and relays opaquely after it).
 *
 *   handshake  connect, full handshake, greeting, close; again
 *   resume     the same, offering the ticket of the slot's previous
 *              connection; reports the fraction actually resumed
 *   download   log in as "source", read as fast as possible (MB/s)
 *   upload     log in as "sink:N", write as fast as possible; bytes count
 *              once the backend has confirmed them ("done" per N bytes)
 *   idle       open -n sessions, log each in, print "ready", then hold
 *              them until stdin reaches EOF or a signal comes; a line
 *              "N" on stdin opens N more, then "ready" again (bench/scale)
 *   latency    one session, sequential 64-byte round trips to "echo"
 *   plain      the same without TLS, straight to the backend
 *
 * A run is a warm-up (-w) then a measured window (-t), or, with -n (or -b
 * for the relay modes), a fixed amount of work. Around the window it reads
 * the CPU time of the proxy's processes (-P) and the backend's (-B) from
 * /proc/PID/stat, so the figures per proxy CPU-second cover exactly the
 * counted work. One line of key=value results goes to stdout.
 *
 * -L binds every connection to a source address first (127.0.0.2, ...:
 * all of 127/8 is loopback), so that several load generators reach one
 * proxy port with more sessions than one source address has ports.
 *
 * Must not: count work outside the window, or spend the CPU it shares with
 * the backend on anything but the protocol (no logging per connection,
 * no copies beyond OpenSSL's own).
 */
#define _GNU_SOURCE /* SOCK_NONBLOCK, getrusage under -std=c11 */

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define LINE_MAX_LEN  512
#define IO_BUF        (256 * 1024)
#define RECORD        16384 /* one full TLS record per SSL_write */
#define MAX_EVENTS    256
#define MAX_PIDS      64
#define NS            1000000000ULL
/* A closing connection waits this long for the proxy's FIN. */
#define CLOSE_WAIT_NS (5 * NS)
/* Writes per wakeup before other connections get a turn. */
#define UPLOAD_BURST  16

enum mode {
	MODE_HANDSHAKE,
	MODE_RESUME,
	MODE_DOWNLOAD,
	MODE_UPLOAD,
	MODE_IDLE,
	MODE_LATENCY,
	MODE_PLAIN,
	MODE_COUNT_,
};

static const char *const mode_names[MODE_COUNT_] = {
    [MODE_HANDSHAKE] = "handshake",
    [MODE_RESUME] = "resume",
    [MODE_DOWNLOAD] = "download",
    [MODE_UPLOAD] = "upload",
    [MODE_IDLE] = "idle",
    [MODE_LATENCY] = "latency",
    [MODE_PLAIN] = "plain",
};

enum conn_state {
	CONN_CONNECT,   /* TCP connect in progress */
	CONN_HANDSHAKE, /* SSL_connect */
	CONN_GREETING,  /* reading the server's "* OK" */
	CONN_LOGIN,     /* LOGIN sent, reading its tagged reply */
	CONN_RUN,       /* the mode's own traffic */
	CONN_CLOSING,   /* close_notify sent, waiting for the proxy to close */
};

enum step {
	STEP_NEXT, /* the state changed: run the new one */
	STEP_WAIT, /* blocked: wait for the events asked for */
	STEP_GONE, /* the connection is freed */
};

enum phase {
	PHASE_WARM,
	PHASE_MEASURE,
	PHASE_DONE,
};

struct conn {
	int fd;
	SSL *ssl; /* NULL in plain mode and once closing */
	enum conn_state state;
	uint32_t events; /* current epoll interest */
	int slot;        /* -1 once it no longer counts as concurrency */
	char line[LINE_MAX_LEN];
	size_t line_len;
	/* A short write in progress: the LOGIN line or a latency probe. */
	char out[LINE_MAX_LEN];
	size_t out_off, out_len;
	size_t echo_got; /* latency: bytes of the probe back so far */
	uint64_t sent_ns;
	uint64_t close_by;
	struct conn *prev, *next;
};

/* A unit of concurrency; in resume mode it also keeps the ticket. */
struct slot {
	struct conn *conn;
	SSL_SESSION *session;
};

struct options {
	enum mode mode;
	const char *addr;
	const char *source; /* -L: bind to this address first */
	int port;
	int conc;
	double secs, warm;
	long long count;          /* -n: connections, sessions or round trips */
	unsigned long long bytes; /* -b: relay this much, then stop */
	long warm_rounds;
	unsigned long long sink_chunk;
	size_t probe_len;
	const char *sni;
	pid_t proxy_pids[MAX_PIDS], backend_pids[MAX_PIDS];
	int nproxy, nbackend;
};

static struct options opt = {
    .mode = MODE_HANDSHAKE,
    .addr = "127.0.0.1",
    .conc = 16,
    .secs = 5,
    .warm = 1,
    .warm_rounds = 1000,
    .sink_chunk = 1 << 20,
    .probe_len = 64,
    .sni = "localhost",
};

/* Everything the loop counts. Window counters reset when it opens. */
static struct {
	enum phase phase;
	uint64_t t_start, t_window, t_end;
	uint64_t t_step; /* idle: when the last "N more" came */
	long long started, done_conns, reused, errors, lost;
	unsigned long long bytes;
	long long window_conns, window_reused;
	unsigned long long window_bytes;
	long long ready;       /* idle: sessions logged in */
	long long slow_closes; /* proxy kept a closed session open 5 s */
	long long cpu0, be0, sys0, retx0;
	double self0;
	uint64_t *rtt;
	long rounds;
	char first_error[256];
} st;

static int epfd;
static SSL_CTX *ctx;
static struct sockaddr_in target, source;
static struct slot *slots;
static struct conn *conns; /* every open connection */
static int active;         /* slots in use */
static volatile sig_atomic_t got_signal;
static char rbuf[IO_BUF];
static char wbuf[RECORD];

static uint64_t
now_ns(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static double
self_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/*
 * utime + stime of the processes, in clock ticks, from /proc/PID/stat
 * (fields 14 and 15; a process's line includes all its threads). -1 when
 * one is gone: a proxy that died must not look like a cheap one.
 */
static long long
proc_ticks(const pid_t *pids, int n)
{
	unsigned long long ut, st_;
	long long sum = 0;
	char path[64], buf[1024], *p;
	FILE *f;
	size_t len;
	int i;

	for (i = 0; i < n; i++) {
		(void)snprintf(path, sizeof(path), "/proc/%d/stat",
		    (int)pids[i]);
		f = fopen(path, "r");
		if (f == NULL)
			return -1;
		len = fread(buf, 1, sizeof(buf) - 1, f);
		(void)fclose(f);
		buf[len] = '\0';
		/* The command name may hold spaces and ')': skip to the last.
		 */
		p = strrchr(buf, ')');
		if (p == NULL ||
		    sscanf(p + 1,
		        " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		        &ut, &st_) != 2)
			return -1;
		sum += (long long)(ut + st_);
	}
	return sum;
}

/* Busy clock ticks of the whole machine (all CPUs), from /proc/stat: what
 * else ran during the window shows as the rest of it. -1 if unreadable. */
static long long
machine_ticks(void)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (f == NULL)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
	    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	(void)fclose(f);
	if (n != 8)
		return -1;
	/* user nice system idle iowait irq softirq steal: all but idle and
	 * iowait. */
	return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

/* The machine's TCP retransmissions (/proc/net/snmp). On loopback a
 * retransmission is a tail loss probe sent because a side was too slow
 * to acknowledge: both sides pay for it. -1 if unreadable. */
static long long
tcp_retransmits(void)
{
	char line[512], *p;
	long long v = -1;
	FILE *f = fopen("/proc/net/snmp", "r");
	int i, header = 1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "Tcp: ", 5) != 0)
			continue;
		if (header) {
			header = 0;
			continue;
		}
		/* RetransSegs is the 12th value of the Tcp: line. */
		p = line + 5;
		for (i = 0; i < 11 && p != NULL; i++) {
			p = strchr(p, ' ');
			if (p != NULL)
				p++;
		}
		if (p != NULL)
			v = atoll(p);
		break;
	}
	(void)fclose(f);
	return v;
}

static void
note_error(const char *what)
{
	st.errors++;
	if (st.first_error[0] == '\0')
		(void)snprintf(st.first_error, sizeof(st.first_error), "%s",
		    what);
}

static void
note_ssl_error(const char *what)
{
	char msg[256], ossl[200];
	unsigned long e = ERR_get_error();

	if (e != 0) {
		ERR_error_string_n(e, ossl, sizeof(ossl));
		(void)snprintf(msg, sizeof(msg), "%s: %s", what, ossl);
		note_error(msg);
	} else {
		note_error(what);
	}
	ERR_clear_error();
}

static void
set_events(struct conn *c, uint32_t events)
{
	struct epoll_event ev;

	if (events == c->events)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = events;
}

static void
release_slot(struct conn *c)
{
	if (c->slot < 0)
		return;
	slots[c->slot].conn = NULL;
	c->slot = -1;
	active--;
}

static void
conn_free(struct conn *c)
{
	release_slot(c);
	SSL_free(c->ssl);
	(void)close(c->fd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c);
}

static enum step
conn_fail(struct conn *c, const char *what)
{
	if (c->ssl != NULL)
		note_ssl_error(what);
	else
		note_error(what);
	if (c->state == CONN_RUN && opt.mode == MODE_IDLE)
		st.lost++;
	conn_free(c);
	return STEP_GONE;
}

#define IO_AGAIN (-1)
#define IO_FAIL  (-2)

/* Maps a failed SSL call: IO_AGAIN (with *want set), 0 for the peer's
 * close, IO_FAIL. */
static long
ssl_failed(struct conn *c, int r, uint32_t *want)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		*want |= EPOLLIN;
		return IO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want |= EPOLLOUT;
		return IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		return IO_FAIL;
	}
}

/* Reads: bytes (> 0), 0 at the peer's close, IO_AGAIN or IO_FAIL. */
static long
conn_read(struct conn *c, void *buf, size_t len, uint32_t *want)
{
	size_t n;
	ssize_t r;

	if (c->ssl == NULL) {
		r = read(c->fd, buf, len);
		if (r >= 0)
			return (long)r;
		if (errno == EAGAIN || errno == EINTR) {
			*want |= EPOLLIN;
			return IO_AGAIN;
		}
		return IO_FAIL;
	}
	ERR_clear_error();
	if (SSL_read_ex(c->ssl, buf, len, &n))
		return (long)n;
	return ssl_failed(c, 0, want);
}

/* Writes: bytes (> 0), IO_AGAIN or IO_FAIL. After IO_AGAIN on TLS the
 * same buffer and length must come again (OpenSSL's rule). */
static long
conn_write(struct conn *c, const void *buf, size_t len, uint32_t *want)
{
	size_t n;
	ssize_t r;

	if (c->ssl == NULL) {
		r = write(c->fd, buf, len);
		if (r >= 0)
			return (long)r;
		if (errno == EAGAIN || errno == EINTR) {
			*want |= EPOLLOUT;
			return IO_AGAIN;
		}
		return IO_FAIL;
	}
	ERR_clear_error();
	if (SSL_write_ex(c->ssl, buf, len, &n))
		return (long)n;
	return ssl_failed(c, 0, want);
}

/* Finishes the short write in c->out: 1 done, 0 blocked, -1 failed. */
static int
flush_out(struct conn *c, uint32_t *want)
{
	long n;

	while (c->out_off < c->out_len) {
		n = conn_write(c, c->out + c->out_off, c->out_len - c->out_off,
		    want);
		if (n == IO_AGAIN)
			return 0;
		if (n < 0)
			return -1;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 1;
}

/*
 * Reads until c->line holds a whole line. Returns its length (with CRLF),
 * 0 when blocked, -1 on failure or close. Bytes past it stay in c->line
 * for take_line() to keep.
 */
static long
read_line(struct conn *c, uint32_t *want)
{
	char *nl;
	long n;

	for (;;) {
		nl = memchr(c->line, '\n', c->line_len);
		if (nl != NULL)
			return (long)(nl - c->line) + 1;
		if (c->line_len == sizeof(c->line))
			return -1;
		n = conn_read(c, c->line + c->line_len,
		    sizeof(c->line) - c->line_len, want);
		if (n == IO_AGAIN)
			return 0;
		if (n <= 0)
			return -1;
		c->line_len += (size_t)n;
	}
}

/* Drops the first len bytes of c->line. */
static void
take_line(struct conn *c, size_t len)
{
	memmove(c->line, c->line + len, c->line_len - len);
	c->line_len -= len;
}

static bool
counting(void)
{
	return st.phase == PHASE_MEASURE;
}

/*
 * Sends close_notify and waits, reading nothing, for the proxy to close.
 * The client's FIN comes only after the proxy's: the side that closes
 * first keeps the TIME_WAIT, and thousands of them per second on the
 * client's side would make every later connect() hunt for a free port,
 * a cost that would land on whichever proxy runs next. (A plain-mode
 * connection, with no TLS close, sends its FIN first.)
 */
static enum step
start_close(struct conn *c)
{
	if (c->ssl != NULL) {
		(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	} else {
		(void)shutdown(c->fd, SHUT_WR);
	}
	ERR_clear_error();
	release_slot(c);
	c->state = CONN_CLOSING;
	c->close_by = now_ns() + CLOSE_WAIT_NS;
	return STEP_NEXT;
}

static enum step
on_connected(struct conn *c, uint32_t *want)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
	    err != 0)
		return conn_fail(c, err != 0 ? strerror(err) : "connect");
	if (opt.mode == MODE_PLAIN) {
		c->state = CONN_GREETING;
		return STEP_NEXT;
	}
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd) ||
	    !SSL_set_tlsext_host_name(c->ssl, opt.sni))
		return conn_fail(c, "SSL_new");
	if (opt.mode == MODE_RESUME && slots[c->slot].session != NULL)
		(void)SSL_set_session(c->ssl, slots[c->slot].session);
	(void)want;
	c->state = CONN_HANDSHAKE;
	return STEP_NEXT;
}

static enum step
do_handshake(struct conn *c, uint32_t *want)
{
	int r;

	ERR_clear_error();
	r = SSL_connect(c->ssl);
	if (r == 1) {
		c->state = CONN_GREETING;
		return STEP_NEXT;
	}
	if (ssl_failed(c, r, want) == IO_AGAIN)
		return STEP_WAIT;
	return conn_fail(c, "handshake");
}

static void
queue_out(struct conn *c, const char *s, size_t len)
{
	memcpy(c->out, s, len);
	c->out_off = 0;
	c->out_len = len;
}

/*
 * The greeting ends a handshake-mode connection: by then TLS 1.3's
 * tickets (sent before any application data) have been read, so the
 * session kept for the next connection of this slot is resumable.
 */
static enum step
read_greeting(struct conn *c, uint32_t *want)
{
	struct slot *s;
	char login[64];
	long n = read_line(c, want);
	int len;

	if (n == 0)
		return STEP_WAIT;
	if (n < 0 || strncmp(c->line, "* OK", 4) != 0)
		return conn_fail(c, "no greeting");
	take_line(c, (size_t)n);
	if (opt.mode == MODE_HANDSHAKE || opt.mode == MODE_RESUME) {
		st.done_conns++;
		if (counting())
			st.window_conns++;
		if (c->ssl != NULL && SSL_session_reused(c->ssl)) {
			st.reused++;
			if (counting())
				st.window_reused++;
		}
		if (opt.mode == MODE_RESUME) {
			s = &slots[c->slot];
			SSL_SESSION_free(s->session);
			s->session = SSL_get1_session(c->ssl);
		}
		return start_close(c);
	}
	switch (opt.mode) {
	case MODE_DOWNLOAD:
		len = snprintf(login, sizeof(login), "a LOGIN source x\r\n");
		break;
	case MODE_UPLOAD:
		len = snprintf(login, sizeof(login), "a LOGIN sink:%llu x\r\n",
		    opt.sink_chunk);
		break;
	case MODE_IDLE:
		len = snprintf(login, sizeof(login), "a LOGIN idle x\r\n");
		break;
	default:
		len = snprintf(login, sizeof(login), "a LOGIN echo x\r\n");
		break;
	}
	queue_out(c, login, (size_t)len);
	c->state = CONN_LOGIN;
	return STEP_NEXT;
}

static void
send_probe(struct conn *c)
{
	queue_out(c, wbuf, opt.probe_len);
	c->echo_got = 0;
	c->sent_ns = now_ns();
}

static enum step
do_login(struct conn *c, uint32_t *want)
{
	long n;
	int r;

	r = flush_out(c, want);
	if (r < 0)
		return conn_fail(c, "write LOGIN");
	if (r == 0)
		return STEP_WAIT;
	for (;;) {
		n = read_line(c, want);
		if (n == 0)
			return STEP_WAIT;
		if (n < 0)
			return conn_fail(c, "no LOGIN reply");
		if (c->line[0] != '*')
			break;
		take_line(c, (size_t)n); /* untagged: not ours */
	}
	if (strncmp(c->line, "a OK", 4) != 0)
		return conn_fail(c, "LOGIN refused");
	take_line(c, (size_t)n);
	/* The source may already have sent more in the same read. */
	if (opt.mode == MODE_DOWNLOAD) {
		st.bytes += c->line_len;
		if (counting())
			st.window_bytes += c->line_len;
	}
	c->line_len = 0;
	c->state = CONN_RUN;
	switch (opt.mode) {
	case MODE_IDLE:
		/* Held, but no longer opening: the slot opens the next. */
		st.ready++;
		release_slot(c);
		break;
	case MODE_LATENCY:
	case MODE_PLAIN:
		send_probe(c);
		break;
	default:
		break;
	}
	return STEP_NEXT;
}

static enum step
run_download(struct conn *c, uint32_t *want)
{
	long n;

	for (;;) {
		n = conn_read(c, rbuf, sizeof(rbuf), want);
		if (n == IO_AGAIN)
			return STEP_WAIT;
		if (n <= 0)
			return conn_fail(c, "download ended");
		st.bytes += (unsigned long long)n;
		if (counting())
			st.window_bytes += (unsigned long long)n;
	}
}

static enum step
run_upload(struct conn *c, uint32_t *want)
{
	unsigned long long confirmed;
	long n, i;

	/* The backend's "done\r\n" lines: one per sink_chunk bytes. A line
	 * split across reads still has one '\n'. */
	for (;;) {
		n = conn_read(c, c->line, sizeof(c->line), want);
		if (n == IO_AGAIN)
			break;
		if (n <= 0)
			return conn_fail(c, "upload ended");
		for (i = 0; i < n; i++) {
			if (c->line[i] != '\n')
				continue;
			confirmed = opt.sink_chunk;
			st.bytes += confirmed;
			if (counting())
				st.window_bytes += confirmed;
		}
	}
	for (i = 0; i < UPLOAD_BURST; i++) {
		n = conn_write(c, wbuf, sizeof(wbuf), want);
		if (n == IO_AGAIN)
			return STEP_WAIT;
		if (n < 0)
			return conn_fail(c, "upload write");
	}
	/* Not blocked: come back when the others have had their turn. */
	*want |= EPOLLOUT;
	return STEP_WAIT;
}

static enum step
run_idle(struct conn *c, uint32_t *want)
{
	long n;

	for (;;) {
		n = conn_read(c, rbuf, sizeof(rbuf), want);
		if (n == IO_AGAIN)
			return STEP_WAIT;
		if (n <= 0)
			return conn_fail(c, "idle session closed");
	}
}

static enum step
run_latency(struct conn *c, uint32_t *want)
{
	long n;
	int r;

	for (;;) {
		r = flush_out(c, want);
		if (r < 0)
			return conn_fail(c, "probe write");
		if (r == 0)
			return STEP_WAIT;
		n = conn_read(c, rbuf, opt.probe_len - c->echo_got, want);
		if (n == IO_AGAIN)
			return STEP_WAIT;
		if (n <= 0)
			return conn_fail(c, "echo ended");
		c->echo_got += (size_t)n;
		if (c->echo_got < opt.probe_len)
			continue;
		if (st.rounds >= opt.warm_rounds)
			st.rtt[st.rounds - opt.warm_rounds] =
			    now_ns() - c->sent_ns;
		st.rounds++;
		if (st.rounds >= opt.warm_rounds + opt.count) {
			st.phase = PHASE_DONE;
			return STEP_WAIT;
		}
		send_probe(c);
	}
}

/* The proxy's FIN (and whatever came before it) ends the connection. */
static enum step
drain_close(struct conn *c, uint32_t *want)
{
	ssize_t n;

	for (;;) {
		n = read(c->fd, rbuf, sizeof(rbuf));
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			*want |= EPOLLIN;
			return STEP_WAIT;
		}
		conn_free(c);
		return STEP_GONE;
	}
}

static void
conn_step(struct conn *c, uint32_t ev)
{
	uint32_t want = 0;
	enum step r;

	if (c->state == CONN_CONNECT && ev == 0)
		return;
	do {
		want = 0;
		switch (c->state) {
		case CONN_CONNECT:
			r = on_connected(c, &want);
			break;
		case CONN_HANDSHAKE:
			r = do_handshake(c, &want);
			break;
		case CONN_GREETING:
			r = read_greeting(c, &want);
			if (r == STEP_WAIT)
				want |= EPOLLIN;
			break;
		case CONN_LOGIN:
			r = do_login(c, &want);
			break;
		case CONN_RUN:
			switch (opt.mode) {
			case MODE_DOWNLOAD:
				r = run_download(c, &want);
				break;
			case MODE_UPLOAD:
				r = run_upload(c, &want);
				break;
			case MODE_IDLE:
				r = run_idle(c, &want);
				break;
			default:
				r = run_latency(c, &want);
				break;
			}
			break;
		case CONN_CLOSING:
			r = drain_close(c, &want);
			break;
		default:
			r = conn_fail(c, "bad state");
			break;
		}
	} while (r == STEP_NEXT);
	if (r == STEP_WAIT)
		set_events(c, want != 0 ? want : EPOLLIN);
}

/* Opens a connection in the slot. False if the system refused outright. */
static bool
conn_start(int slot)
{
	struct epoll_event ev;
	struct conn *c;
	int one = 1, r;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return false;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		note_error(strerror(errno));
		free(c);
		return false;
	}
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* The port is chosen at connect(), per destination: one source
	 * address then has its ~28k ports for each proxy port. */
	if (opt.source != NULL &&
	    (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
	         sizeof(one)) != 0 ||
	        bind(c->fd, (struct sockaddr *)&source, sizeof(source)) != 0)) {
		note_error(strerror(errno));
		(void)close(c->fd);
		free(c);
		return false;
	}
	c->slot = slot;
	slots[slot].conn = c;
	active++;
	st.started++;
	c->next = conns;
	if (conns != NULL)
		conns->prev = c;
	conns = c;
	c->state = CONN_CONNECT;
	c->events = EPOLLOUT;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		(void)conn_fail(c, "epoll_ctl");
		return false;
	}
	r = connect(c->fd, (struct sockaddr *)&target, sizeof(target));
	if (r != 0 && errno != EINPROGRESS) {
		(void)conn_fail(c, strerror(errno));
		return false;
	}
	/* Connected or not, EPOLLOUT tells; on_connected reads SO_ERROR. */
	return true;
}

/* Whether the run still wants new connections. */
static bool
want_more(void)
{
	if (st.phase == PHASE_DONE)
		return false;
	switch (opt.mode) {
	case MODE_HANDSHAKE:
	case MODE_RESUME:
		return opt.count <= 0 || st.started < opt.count;
	case MODE_IDLE:
		return st.ready + active < opt.count;
	case MODE_LATENCY:
	case MODE_PLAIN:
		return st.started < 1;
	default:
		/* Relay connections live for the whole run; one lost is an
		 * error, not replaced (it would be a handshake mid-window). */
		return st.started < opt.conc;
	}
}

static void
fill_slots(void)
{
	int i;

	for (i = 0; i < opt.conc && want_more(); i++)
		if (slots[i].conn == NULL && !conn_start(i))
			break;
}

static void
open_window(void)
{
	st.phase = PHASE_MEASURE;
	st.t_window = now_ns();
	st.window_conns = st.window_reused = 0;
	st.window_bytes = 0;
	st.cpu0 = proc_ticks(opt.proxy_pids, opt.nproxy);
	st.be0 = proc_ticks(opt.backend_pids, opt.nbackend);
	st.sys0 = machine_ticks();
	st.retx0 = tcp_retransmits();
	st.self0 = self_cpu();
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct_us(const uint64_t *v, long n, int pct)
{
	long i = (long)((double)n * pct / 100.0);

	if (i >= n)
		i = n - 1;
	return n > 0 ? (double)v[i] / 1000.0 : 0;
}

/* Closes the window and prints the one result line. */
static void
report(void)
{
	double secs, cpu = -1, be = -1, self,
	             tck = (double)sysconf(_SC_CLK_TCK);
	long long cpu1, be1, sys1, retx1;
	double work, unit = 1;
	const char *what = "conns";
	long n, i;
	uint64_t sum = 0;

	st.t_end = now_ns();
	secs = (double)(st.t_end - st.t_window) / 1e9;
	cpu1 = proc_ticks(opt.proxy_pids, opt.nproxy);
	be1 = proc_ticks(opt.backend_pids, opt.nbackend);
	sys1 = machine_ticks();
	retx1 = tcp_retransmits();
	self = self_cpu() - st.self0;
	if (opt.nproxy > 0 && st.cpu0 >= 0 && cpu1 >= 0)
		cpu = (double)(cpu1 - st.cpu0) / tck;
	if (opt.nbackend > 0 && st.be0 >= 0 && be1 >= 0)
		be = (double)(be1 - st.be0) / tck;

	printf("mode=%s secs=%.3f", mode_names[opt.mode], secs);
	switch (opt.mode) {
	case MODE_LATENCY:
	case MODE_PLAIN:
		n = st.rounds - opt.warm_rounds;
		if (n < 0)
			n = 0;
		qsort(st.rtt, (size_t)n, sizeof(*st.rtt), cmp_u64);
		for (i = 0; i < n; i++)
			sum += st.rtt[i];
		printf(" rounds=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f "
		       "min_us=%.1f max_us=%.1f mean_us=%.1f",
		    n, pct_us(st.rtt, n, 50), pct_us(st.rtt, n, 90),
		    pct_us(st.rtt, n, 99), n > 0 ? (double)st.rtt[0] / 1e3 : 0,
		    n > 0 ? (double)st.rtt[n - 1] / 1e3 : 0,
		    n > 0 ? (double)sum / (double)n / 1e3 : 0);
		work = (double)n;
		what = "rounds";
		break;
	case MODE_DOWNLOAD:
	case MODE_UPLOAD:
		work = (double)st.window_bytes;
		unit = 1e6; /* MB, as openssl speed's 1000s of bytes */
		what = "mb";
		printf(" bytes=%llu conns=%d", st.window_bytes, opt.conc);
		break;
	default:
		work = (double)st.window_conns;
		printf(" conns=%lld reused=%lld reused_frac=%.4f",
		    st.window_conns, st.window_reused,
		    st.window_conns > 0 ?
		        (double)st.window_reused / (double)st.window_conns :
		        0.0);
		break;
	}
	printf(" rate=%.2f", secs > 0 ? work / unit / secs : 0);
	if (cpu >= 0)
		printf(" proxy_cpu=%.2f per_cpu=%.2f busy=%.3f", cpu,
		    cpu > 0 ? work / unit / cpu : 0, secs > 0 ? cpu / secs : 0);
	else if (opt.nproxy > 0)
		printf(" proxy_cpu=gone");
	if (be >= 0)
		printf(" backend_busy=%.3f", secs > 0 ? be / secs : 0);
	if (st.sys0 >= 0 && sys1 >= 0 && secs > 0)
		printf(" machine_busy=%.3f",
		    (double)(sys1 - st.sys0) / tck / secs);
	if (st.retx0 >= 0 && retx1 >= 0)
		printf(" retransmits=%lld", retx1 - st.retx0);
	printf(" loadgen_busy=%.3f errors=%lld slow_closes=%lld unit=%s\n",
	    secs > 0 ? self / secs : 0, st.errors, st.slow_closes, what);
	(void)fflush(stdout);
	if (st.first_error[0] != '\0')
		fprintf(stderr, "loadgen: %lld errors, first: %s\n", st.errors,
		    st.first_error);
}

/* Closing connections whose proxy never closed: counted, then dropped. */
static void
sweep_closing(uint64_t now)
{
	struct conn *c, *next;

	for (c = conns; c != NULL; c = next) {
		next = c->next;
		if (c->state == CONN_CLOSING && now > c->close_by) {
			st.slow_closes++;
			conn_free(c);
		}
	}
}

static void
on_signal(int sig)
{
	(void)sig;
	got_signal = 1;
}

static int
parse_pids(const char *s, pid_t *out)
{
	char *copy = strdup(s), *p, *save = NULL;
	int n = 0;

	if (copy == NULL)
		return 0;
	for (p = strtok_r(copy, ",", &save); p != NULL && n < MAX_PIDS;
	     p = strtok_r(NULL, ",", &save))
		out[n++] = (pid_t)atoi(p);
	free(copy);
	return n;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: loadgen -m MODE -p PORT [-a ADDR] [-c CONC] [-t SECS] "
	    "[-w SECS]\n"
	    "               [-n COUNT] [-b BYTES] [-W ROUNDS] [-S CHUNK] "
	    "[-l LEN]\n"
	    "               [-P PID,...] [-B PID,...] [-s SNI] [-L SRCADDR]\n"
	    "modes: handshake resume download upload idle latency plain\n"
	    "  -c  concurrent connections (idle: sessions opening at once)\n"
	    "  -t  measured seconds, after -w seconds of warm-up\n"
	    "  -n  handshake/resume: connections; idle: sessions; latency: "
	    "round trips\n"
	    "  -b  download/upload: stop after this many bytes (no -t)\n"
	    "  -W  latency warm-up round trips   -l  probe length (64)\n"
	    "  -S  upload: bytes per \"done\" from the backend\n"
	    "  -P  proxy pids and -B backend pids whose CPU time is read\n"
	    "  -L  bind each connection to this source address\n"
	    "idle: a line \"N\" on stdin opens N more sessions, then \"ready\" "
	    "again\n");
	exit(2);
}

static void
parse_args(int argc, char **argv)
{
	bool timed = false;
	int o, m;

	while (
	    (o = getopt(argc, argv, "m:a:p:c:t:w:n:b:W:S:l:P:B:s:L:")) != -1) {
		switch (o) {
		case 'm':
			for (m = 0; m < MODE_COUNT_; m++)
				if (strcmp(optarg, mode_names[m]) == 0)
					break;
			if (m == MODE_COUNT_)
				usage();
			opt.mode = (enum mode)m;
			break;
		case 'a':
			opt.addr = optarg;
			break;
		case 'p':
			opt.port = atoi(optarg);
			break;
		case 'c':
			opt.conc = atoi(optarg);
			break;
		case 't':
			opt.secs = atof(optarg);
			timed = true;
			break;
		case 'w':
			opt.warm = atof(optarg);
			break;
		case 'n':
			opt.count = atoll(optarg);
			break;
		case 'b':
			opt.bytes = strtoull(optarg, NULL, 10);
			break;
		case 'W':
			opt.warm_rounds = atol(optarg);
			break;
		case 'S':
			opt.sink_chunk = strtoull(optarg, NULL, 10);
			break;
		case 'l':
			opt.probe_len = (size_t)atol(optarg);
			break;
		case 'P':
			opt.nproxy = parse_pids(optarg, opt.proxy_pids);
			break;
		case 'B':
			opt.nbackend = parse_pids(optarg, opt.backend_pids);
			break;
		case 's':
			opt.sni = optarg;
			break;
		case 'L':
			opt.source = optarg;
			break;
		default:
			usage();
		}
	}
	if (opt.port <= 0 || opt.port > 65535 || opt.conc < 1 ||
	    opt.sink_chunk == 0 || opt.probe_len == 0 ||
	    opt.probe_len > sizeof(wbuf))
		usage();
	/* A fixed amount of work replaces the clock. */
	if ((opt.count > 0 || opt.bytes > 0) && !timed)
		opt.secs = 0;
	switch (opt.mode) {
	case MODE_IDLE:
		if (opt.count <= 0)
			usage();
		opt.secs = 0;
		opt.warm = 0;
		break;
	case MODE_LATENCY:
	case MODE_PLAIN:
		if (opt.count <= 0)
			opt.count = 20000;
		opt.conc = 1;
		opt.secs = 0;
		opt.warm = 0;
		break;
	default:
		if (opt.secs <= 0 && opt.count <= 0 && opt.bytes == 0)
			usage();
		if (opt.secs <= 0)
			opt.warm = 0;
		break;
	}
}

static SSL_CTX *
client_ctx(void)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());

	if (c == NULL || !SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256") ||
	    !SSL_CTX_set1_groups_list(c, "X25519"))
		return NULL;
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	/* A proxy's FIN without close_notify is a plain close here. */
	SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Sessions are kept by hand, per slot (resume mode). */
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	if (opt.mode == MODE_DOWNLOAD || opt.mode == MODE_UPLOAD) {
		/* Several records per read(): fewer system calls on the
		 * core this shares with the backend. */
		SSL_CTX_set_read_ahead(c, 1);
		SSL_CTX_set_default_read_buffer_len(c, 4 * RECORD + 512);
	}
	if (opt.mode == MODE_IDLE)
		SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
	return c;
}

static bool
finished(void)
{
	if (st.phase == PHASE_DONE)
		return true;
	switch (opt.mode) {
	case MODE_HANDSHAKE:
	case MODE_RESUME:
		return opt.count > 0 && st.done_conns + st.errors >= opt.count;
	case MODE_DOWNLOAD:
	case MODE_UPLOAD:
		if (opt.bytes > 0 && st.bytes >= opt.bytes)
			return true;
		/* Every relay connection lost: nothing more can come. */
		return st.started >= opt.conc && active == 0;
	case MODE_LATENCY:
	case MODE_PLAIN:
		/* The one session was lost. */
		return st.started >= 1 && active == 0;
	default:
		return false;
	}
}

/*
 * Idle mode after "ready": hold until stdin's EOF or a signal (returns 0),
 * or until a line "N" on stdin asks for N more sessions (returns N). Lines
 * past that one wait in the buffer for the next call.
 */
static long long
hold_idle(void)
{
	static char in[64];
	static size_t in_len;
	struct epoll_event ev, evs[MAX_EVENTS];
	struct stat sb;
	long long more;
	char b[256], *nl;
	ssize_t r;
	int i, n;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	/* Only a pipe, socket or terminal can be waited on; any other stdin
	 * (a file, /dev/null, which epoll may accept and never report) is
	 * read to its end at once. */
	if (fstat(STDIN_FILENO, &sb) != 0 ||
	    (!S_ISFIFO(sb.st_mode) && !S_ISSOCK(sb.st_mode) &&
	        !isatty(STDIN_FILENO)) ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &ev) != 0) {
		while (read(STDIN_FILENO, b, sizeof(b)) > 0)
			;
		return 0;
	}
	for (;;) {
		/* A line already read: a positive number asks for more. */
		if ((nl = memchr(in, '\n', in_len)) != NULL) {
			*nl = '\0';
			more = atoll(in);
			in_len -= (size_t)(nl + 1 - in);
			memmove(in, nl + 1, in_len);
			if (more > 0)
				break;
			continue;
		}
		more = 0;
		if (got_signal)
			break;
		n = epoll_wait(epfd, evs, MAX_EVENTS, 1000);
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr != NULL) {
				conn_step(evs[i].data.ptr, evs[i].events);
				continue;
			}
			if (in_len == sizeof(in))
				in_len = 0; /* not a number: drop it */
			r = read(STDIN_FILENO, in + in_len,
			    sizeof(in) - in_len);
			if (r <= 0)
				goto eof;
			in_len += (size_t)r;
		}
	}
	/* The loop that opens the next sessions must not see stdin. */
	(void)epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
	return more;
eof:
	(void)epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
	return 0;
}

/* Ends every session with close_notify and FIN, as a client would. */
static void
close_all(void)
{
	while (conns != NULL) {
		if (conns->ssl != NULL)
			(void)SSL_shutdown(conns->ssl);
		conn_free(conns);
	}
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[MAX_EVENTS];
	struct rlimit rl;
	uint64_t now, last_sweep = 0;
	long long more;
	int i, n, timeout;

	parse_args(argc, argv);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	(void)signal(SIGPIPE, SIG_IGN);
	(void)signal(SIGTERM, on_signal);
	(void)signal(SIGINT, on_signal);
	memset(wbuf, 'y', sizeof(wbuf));
	memset(&target, 0, sizeof(target));
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)opt.port);
	if (inet_pton(AF_INET, opt.addr, &target.sin_addr) != 1)
		usage();
	memset(&source, 0, sizeof(source));
	source.sin_family = AF_INET;
	if (opt.source != NULL &&
	    inet_pton(AF_INET, opt.source, &source.sin_addr) != 1)
		usage();
	if (opt.mode != MODE_PLAIN && (ctx = client_ctx()) == NULL) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	slots = calloc((size_t)opt.conc, sizeof(*slots));
	if (opt.mode == MODE_LATENCY || opt.mode == MODE_PLAIN)
		st.rtt = calloc((size_t)opt.count, sizeof(*st.rtt));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (slots == NULL || epfd < 0 ||
	    ((opt.mode == MODE_LATENCY || opt.mode == MODE_PLAIN) &&
	        st.rtt == NULL)) {
		perror("loadgen");
		return 1;
	}

	st.t_start = st.t_step = now_ns();
	if (opt.warm > 0)
		st.phase = PHASE_WARM;
	else
		open_window();
	fill_slots();
	while (!got_signal) {
		timeout = 50;
		n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR) {
			perror("loadgen: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++)
			conn_step(evs[i].data.ptr, evs[i].events);
		now = now_ns();
		if (st.phase == PHASE_WARM &&
		    now >= st.t_start + (uint64_t)(opt.warm * 1e9))
			open_window();
		if (st.phase == PHASE_MEASURE && opt.secs > 0 &&
		    now >= st.t_window + (uint64_t)(opt.secs * 1e9))
			st.phase = PHASE_DONE;
		if (finished())
			break;
		if (opt.mode == MODE_IDLE && st.ready >= opt.count) {
			printf("ready mode=idle sessions=%lld errors=%lld "
			       "secs=%.3f step_secs=%.3f lost=%lld\n",
			    st.ready, st.errors,
			    (double)(now - st.t_start) / 1e9,
			    (double)(now - st.t_step) / 1e9, st.lost);
			(void)fflush(stdout);
			if (st.first_error[0] != '\0')
				fprintf(stderr,
				    "loadgen: %lld errors, first: %s\n",
				    st.errors, st.first_error);
			more = hold_idle();
			if (more > 0) {
				opt.count += more;
				st.t_step = now_ns();
				fill_slots();
				continue;
			}
			close_all();
			printf(
			    "mode=idle sessions=%lld lost=%lld errors=%lld\n",
			    st.ready, st.lost, st.errors);
			return 0;
		}
		/* A proxy that refuses everything must not spin us forever. */
		if (st.errors >= 1000 &&
		    st.errors > 10 * (st.done_conns + st.ready + 1)) {
			fprintf(stderr, "loadgen: giving up: %s\n",
			    st.first_error);
			return 1;
		}
		if (now - last_sweep > NS / 10) {
			sweep_closing(now);
			last_sweep = now;
		}
		fill_slots();
	}
	report();
	close_all();
	return st.errors > 0 && st.done_conns + st.bytes + st.rounds == 0;
}
