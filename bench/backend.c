/*
 * bench/backend: the plaintext backend of the benchmark (bench/run).
 *
 * A minimal IMAP server, just enough for every proxy under test to see the
 * same byte streams: it greets, answers LOGIN, and then switches to the
 * mode named by the user name:
 *
 *   echo     every byte read is written back (latency)
 *   source   endless bytes, as fast as the peer reads (download)
 *   sink:N   reads; after every N bytes writes "done\r\n" (upload)
 *   idle     nothing; only notices the close (memory per idle session)
 *
 * Why a login at all: mailproxy parses the IMAP dialogue until the tagged
 * OK to LOGIN and relays opaquely after it, while the other proxies relay
 * from the first byte; with the login done by every client, all proxies
 * carry identical streams and mailproxy's measured relay is its real one.
 *
 * One thread, one level-triggered epoll loop; a session costs one
 * descriptor and a small struct (an echo session also a 16 KiB buffer),
 * so it holds the 9,000 idle sessions of the memory test easily.
 *
 * Must not: be the bottleneck. It shares CPU 1 with the load generator, so
 * it copies nothing it need not and never logs per connection.
 */
#define _GNU_SOURCE /* accept4() */

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

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
#include <strings.h>
#include <unistd.h>

#define GREETING     "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] bench ready\r\n"
#define LINE_MAX_LEN 512
#define ECHO_BUF     16384
#define IO_BUF       (256 * 1024)
#define MAX_EVENTS   256

enum mode {
	MODE_COMMAND, /* before LOGIN */
	MODE_ECHO,
	MODE_SOURCE,
	MODE_SINK,
	MODE_IDLE,
};

struct conn {
	int fd;
	enum mode mode;
	uint32_t events; /* current epoll interest */
	/* MODE_COMMAND: the partial command line. */
	char line[LINE_MAX_LEN];
	size_t line_len;
	/* MODE_ECHO: bytes read and not yet written back. */
	char *echo;
	size_t echo_start, echo_end;
	/* MODE_SINK: chunk size, bytes into the current chunk, and the
	 * "done" replies owed but not yet written. */
	uint64_t sink_chunk, sink_have;
	uint64_t dones_owed;
	size_t done_off; /* bytes of the first owed reply already written */
	/* Bytes of a reply (greeting, LOGIN answer) not yet written. */
	char reply[128];
	size_t reply_off, reply_len;
};

static int epfd;
/* Scratch for reads whose bytes are thrown away, and the source pattern. */
static char scratch[IO_BUF];
static char pattern[IO_BUF];

static void
usage(void)
{
	fprintf(stderr,
	    "usage: backend [-a ADDR] [-p PORT]\n"
	    "Prints \"port=N\" once listening (-p 0: any port).\n");
	exit(2);
}

static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
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
conn_free(struct conn *c)
{
	(void)close(c->fd); /* also leaves the epoll set */
	free(c->echo);
	free(c);
}

/* Queues a short reply after any unwritten one; false if it cannot fit. */
static bool
queue_reply(struct conn *c, const char *s)
{
	size_t n = strlen(s);

	if (c->reply_off == c->reply_len)
		c->reply_off = c->reply_len = 0;
	if (n > sizeof(c->reply) - c->reply_len)
		return false;
	memcpy(c->reply + c->reply_len, s, n);
	c->reply_len += n;
	return true;
}

/* Writes what is owed. Returns -1 when the connection must close, 0 when
 * something is still owed (EPOLLOUT needed), 1 when all is written. */
static int
flush_owed(struct conn *c)
{
	static const char done[] = "done\r\n";
	ssize_t n;

	while (c->reply_off < c->reply_len) {
		n = write(c->fd, c->reply + c->reply_off,
		    c->reply_len - c->reply_off);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->reply_off += (size_t)n;
	}
	while (c->dones_owed > 0) {
		n = write(c->fd, done + c->done_off,
		    sizeof(done) - 1 - c->done_off);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->done_off += (size_t)n;
		if (c->done_off == sizeof(done) - 1) {
			c->done_off = 0;
			c->dones_owed--;
		}
	}
	if (c->mode == MODE_ECHO) {
		while (c->echo_start < c->echo_end) {
			n = write(c->fd, c->echo + c->echo_start,
			    c->echo_end - c->echo_start);
			if (n < 0)
				return errno == EAGAIN ? 0 : -1;
			c->echo_start += (size_t)n;
		}
		c->echo_start = c->echo_end = 0;
	}
	return 1;
}

/* Counts sink bytes; every full chunk owes one "done". */
static void
sink_count(struct conn *c, size_t n)
{
	c->sink_have += n;
	while (c->sink_have >= c->sink_chunk) {
		c->sink_have -= c->sink_chunk;
		c->dones_owed++;
	}
}

/* Takes the next word of a command line: an atom or a quoted string
 * (without escapes; the bench's names need none). */
static char *
next_word(char **p)
{
	char *s = *p, *w;

	while (*s == ' ')
		s++;
	if (*s == '\0')
		return NULL;
	if (*s == '"') {
		w = ++s;
		while (*s != '\0' && *s != '"')
			s++;
	} else {
		w = s;
		while (*s != '\0' && *s != ' ')
			s++;
	}
	if (*s != '\0')
		*s++ = '\0';
	*p = s;
	return w;
}

/* Handles one command line (CRLF stripped). Returns false to close. */
static bool
command(struct conn *c, char *line)
{
	char reply[LINE_MAX_LEN + 64];
	char *p = line, *tag, *cmd, *user, *end;
	unsigned long long n;
	int one = 1;

	tag = next_word(&p);
	cmd = next_word(&p);
	if (tag == NULL)
		return queue_reply(c, "* BAD empty line\r\n");
	if (strlen(tag) > 64)
		return false;
	if (cmd != NULL && strcasecmp(cmd, "LOGOUT") == 0) {
		(void)snprintf(reply, sizeof(reply), "* BYE\r\n%s OK\r\n", tag);
		(void)queue_reply(c, reply);
		return false;
	}
	if (cmd == NULL || strcasecmp(cmd, "LOGIN") != 0 ||
	    (user = next_word(&p)) == NULL || next_word(&p) == NULL) {
		(void)snprintf(reply, sizeof(reply), "%s BAD\r\n", tag);
		return queue_reply(c, reply);
	}
	if (strcmp(user, "echo") == 0) {
		c->echo = malloc(ECHO_BUF);
		if (c->echo == NULL)
			return false;
		c->mode = MODE_ECHO;
	} else if (strcmp(user, "source") == 0) {
		c->mode = MODE_SOURCE;
	} else if (strcmp(user, "idle") == 0) {
		c->mode = MODE_IDLE;
	} else if (strncmp(user, "sink:", 5) == 0) {
		errno = 0;
		n = strtoull(user + 5, &end, 10);
		if (errno != 0 || *end != '\0' || n == 0) {
			(void)snprintf(reply, sizeof(reply),
			    "%s NO bad size\r\n", tag);
			return queue_reply(c, reply);
		}
		c->sink_chunk = n;
		c->mode = MODE_SINK;
	} else {
		(void)snprintf(reply, sizeof(reply), "%s NO unknown mode\r\n",
		    tag);
		return queue_reply(c, reply);
	}
	/* Small replies that must not wait for an ACK (Nagle): the echo and
	 * the "done" lines. Not set on accept, where it would cost every
	 * handshake-only connection a system call. */
	if (c->mode == MODE_ECHO || c->mode == MODE_SINK)
		(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	(void)snprintf(reply, sizeof(reply), "%s OK LOGIN completed\r\n", tag);
	return queue_reply(c, reply);
}

/*
 * Feeds bytes read in command mode. Bytes after the LOGIN line belong to
 * the new mode (a client may pipeline them). Returns false to close.
 */
static bool
command_input(struct conn *c, const char *data, size_t len)
{
	size_t room, take, i;
	char *nl;

	while (len > 0 && c->mode == MODE_COMMAND) {
		room = sizeof(c->line) - 1 - c->line_len;
		take = len < room ? len : room;
		memcpy(c->line + c->line_len, data, take);
		c->line_len += take;
		c->line[c->line_len] = '\0';
		nl = memchr(c->line, '\n', c->line_len);
		if (nl == NULL) {
			if (c->line_len == sizeof(c->line) - 1)
				return false; /* a line too long */
			return true;
		}
		/* Put back what followed the line, then run it. */
		i = (size_t)(nl - c->line) + 1;
		data += take;
		len -= take;
		data -= c->line_len - i;
		len += c->line_len - i;
		*nl = '\0';
		if (nl > c->line && nl[-1] == '\r')
			nl[-1] = '\0';
		c->line_len = 0;
		if (!command(c, c->line))
			return false;
	}
	if (len == 0)
		return true;
	/* Pipelined bytes after LOGIN. */
	switch (c->mode) {
	case MODE_ECHO:
		if (len > ECHO_BUF)
			return false;
		memcpy(c->echo, data, len);
		c->echo_start = 0;
		c->echo_end = len;
		break;
	case MODE_SINK:
		sink_count(c, len);
		break;
	default:
		break;
	}
	return true;
}

/* One readiness event. Returns false when the connection must close. */
static bool
conn_event(struct conn *c, uint32_t ev)
{
	ssize_t n;
	int r;

	if ((ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN))
		return false;
	if ((ev & EPOLLOUT) || c->reply_off < c->reply_len ||
	    c->dones_owed > 0) {
		r = flush_owed(c);
		if (r < 0)
			return false;
	}
	if ((ev & EPOLLOUT) && c->mode == MODE_SOURCE &&
	    c->reply_off == c->reply_len) {
		/* Until the socket is full; the peer's reading paces us. */
		for (;;) {
			n = write(c->fd, pattern, sizeof(pattern));
			if (n < 0) {
				if (errno == EAGAIN)
					break;
				return false;
			}
		}
	}
	if (ev & EPOLLIN) {
		switch (c->mode) {
		case MODE_COMMAND:
			n = read(c->fd, scratch, sizeof(scratch));
			if (n <= 0)
				break;
			if (!command_input(c, scratch, (size_t)n))
				return false;
			break;
		case MODE_ECHO:
			/* Read only while nothing waits to be echoed: the
			 * client's reading paces its writing. */
			if (c->echo_end > 0) {
				n = 1;
				break;
			}
			n = read(c->fd, c->echo, ECHO_BUF);
			if (n > 0) {
				c->echo_start = 0;
				c->echo_end = (size_t)n;
			}
			break;
		case MODE_SINK:
			n = read(c->fd, scratch, sizeof(scratch));
			if (n > 0)
				sink_count(c, (size_t)n);
			break;
		default:
			n = read(c->fd, scratch, sizeof(scratch));
			break;
		}
		if (n == 0)
			return false;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return false;
	}
	r = flush_owed(c);
	if (r < 0)
		return false;
	if (r == 0)
		set_events(c,
		    c->mode == MODE_ECHO ? EPOLLOUT : EPOLLIN | EPOLLOUT);
	else if (c->mode == MODE_SOURCE)
		set_events(c, EPOLLIN | EPOLLOUT);
	else
		set_events(c, EPOLLIN);
	return true;
}

static void
accept_all(int lfd)
{
	struct epoll_event ev;
	struct conn *c;
	int fd;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				perror("backend: accept");
			return;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			(void)close(fd);
			continue;
		}
		c->fd = fd;
		c->mode = MODE_COMMAND;
		(void)queue_reply(c, GREETING);
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			conn_free(c);
			continue;
		}
		c->events = EPOLLIN;
		/* The greeting goes at once; EPOLLOUT only if it did not. */
		if (!conn_event(c, 0))
			conn_free(c);
	}
}

int
main(int argc, char **argv)
{
	struct epoll_event ev, evs[MAX_EVENTS];
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	const char *addr = "127.0.0.1";
	int lfd, one = 1, opt, port = 0, i, n;

	while ((opt = getopt(argc, argv, "a:p:")) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	raise_fd_limit();
	(void)signal(SIGPIPE, SIG_IGN);
	memset(pattern, 'x', sizeof(pattern));

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1)
		usage();
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(lfd, 4096) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &slen) != 0) {
		perror("backend: listen");
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0) {
		perror("backend: epoll_create1");
		return 1;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = NULL; /* the listener */
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) != 0) {
		perror("backend: epoll_ctl");
		return 1;
	}
	printf("port=%u\n", (unsigned)ntohs(sin.sin_port));
	(void)fflush(stdout);

	for (;;) {
		n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("backend: epoll_wait");
			return 1;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL)
				accept_all(lfd);
			else if (!conn_event(evs[i].data.ptr, evs[i].events))
				conn_free(evs[i].data.ptr);
		}
	}
}
