/*
 * Log lines: formatting, escaping, and the one write(2) per line that keeps
 * lines whole when several workers log at once.
 *
 * The target is chosen once before the workers start; afterwards only
 * log_reopen() changes it, by dup2() onto the same descriptor, which is
 * atomic for the threads writing to it. Must not: allocate per line, or
 * print an attacker's bytes without escaping them.
 */
#define _DEFAULT_SOURCE /* vsyslog */
#include "mailproxy/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/stat.h>
#include <unistd.h>

enum target {
	TARGET_STDERR,
	TARGET_SYSLOG,
	TARGET_FILE,
};

static struct {
	enum target target;
	int fd;
	char *path;
	enum config_log_format format;
	enum config_log_level level;
} lg = {TARGET_STDERR, STDERR_FILENO, NULL, CONFIG_LOG_TEXT, CONFIG_LOG_INFO};

static const char *const level_names[] = {
    [CONFIG_LOG_ERROR] = "error",
    [CONFIG_LOG_WARNING] = "warning",
    [CONFIG_LOG_INFO] = "info",
    [CONFIG_LOG_DEBUG] = "debug",
};

static const int syslog_priorities[] = {
    [CONFIG_LOG_ERROR] = LOG_ERR,
    [CONFIG_LOG_WARNING] = LOG_WARNING,
    [CONFIG_LOG_INFO] = LOG_INFO,
    [CONFIG_LOG_DEBUG] = LOG_DEBUG,
};

/* A bounded line under construction; overflow is remembered, not fatal. */
struct writer {
	char *buf;
	size_t size; /* room for text; one byte more is kept for the NUL */
	size_t len;
	bool full;
	enum config_log_format format;
	bool first;
};

static void
put(struct writer *w, const char *p, size_t n)
{
	if (w->full || n > w->size - w->len) {
		w->full = true;
		return;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

static void
puts_(struct writer *w, const char *s)
{
	put(w, s, strlen(s));
}

static void
putc_(struct writer *w, char c)
{
	put(w, &c, 1);
}

static void
put_hex(struct writer *w, const char *prefix, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char out[8];
	size_t n = strlen(prefix);

	memcpy(out, prefix, n);
	out[n] = hex[c >> 4];
	out[n + 1] = hex[c & 15];
	put(w, out, n + 2);
}

/*
 * Text values go bare when they are plain printable ASCII; anything else is
 * quoted, with \" \\ and \xHH for control bytes and bytes above 0x7e, so a
 * hostile SNI cannot forge a line or steer a terminal.
 */
static bool
text_bare(const char *s)
{
	const unsigned char *p;

	if (*s == '\0')
		return false;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' ||
		    *p == '=')
			return false;
	return true;
}

static void
put_escaped(struct writer *w, const char *s)
{
	const unsigned char *p;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\') {
			putc_(w, '\\');
			putc_(w, (char)*p);
		} else if (w->format == CONFIG_LOG_JSON && *p == '\n') {
			puts_(w, "\\n");
		} else if (w->format == CONFIG_LOG_JSON && *p == '\r') {
			puts_(w, "\\r");
		} else if (w->format == CONFIG_LOG_JSON && *p == '\t') {
			puts_(w, "\\t");
		} else if (*p < 0x20 || *p >= 0x7f) {
			/* JSON has no \x; bytes map to U+0000-U+00FF. */
			put_hex(w,
			    w->format == CONFIG_LOG_JSON ? "\\u00" : "\\x", *p);
		} else {
			putc_(w, (char)*p);
		}
	}
}

static void
put_key(struct writer *w, const char *key)
{
	if (w->format == CONFIG_LOG_JSON) {
		puts_(w, w->first ? "{\"" : ",\"");
		puts_(w, key);
		puts_(w, "\":");
	} else {
		if (!w->first)
			putc_(w, ' ');
		puts_(w, key);
		putc_(w, '=');
	}
	w->first = false;
}

/* A string field; NULL prints "-" in text and null in JSON. */
static void
field_str(struct writer *w, const char *key, const char *value)
{
	put_key(w, key);
	if (value == NULL) {
		puts_(w, w->format == CONFIG_LOG_JSON ? "null" : "-");
	} else if (w->format == CONFIG_LOG_TEXT && text_bare(value)) {
		puts_(w, value);
	} else {
		putc_(w, '"');
		put_escaped(w, value);
		putc_(w, '"');
	}
}

static void
field_u64(struct writer *w, const char *key, uint64_t v)
{
	char num[24];

	put_key(w, key);
	(void)snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	puts_(w, num);
}

static void
field_time(struct writer *w, const struct timespec *now)
{
	struct tm tm;
	char stamp[64];

	(void)gmtime_r(&now->tv_sec, &tm);
	(void)snprintf(stamp, sizeof(stamp),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    now->tv_nsec / 1000000);
	field_str(w, "time", stamp);
}

static void
writer_init(struct writer *w, enum config_log_format format, char *buf,
    size_t size)
{
	w->buf = buf;
	w->size = size - 1;
	w->len = 0;
	w->full = false;
	w->format = format;
	w->first = true;
}

/* Closes the line: "}\n" or "\n", or a cut-off mark when it overflowed. */
static size_t
writer_finish(struct writer *w)
{
	static const char cut[] = "...\n";

	if (!w->full && w->format == CONFIG_LOG_JSON)
		putc_(w, '}');
	if (!w->full)
		putc_(w, '\n');
	if (w->full) {
		if (w->len > w->size - (sizeof(cut) - 1))
			w->len = w->size - (sizeof(cut) - 1);
		memcpy(w->buf + w->len, cut, sizeof(cut) - 1);
		w->len += sizeof(cut) - 1;
	}
	w->buf[w->len] = '\0';
	return w->len;
}

size_t
log_session_format(const struct log_session *f, enum config_log_format format,
    const struct timespec *now, char *buf, size_t size)
{
	struct writer w;
	char duration[32];

	writer_init(&w, format, buf, size);
	field_time(&w, now);
	field_str(&w, "event", f->event);
	field_str(&w, "id", f->id);
	field_str(&w, "listener", f->listener);
	field_str(&w, "proto", f->proto);
	field_str(&w, "client", f->client);
	field_str(&w, "local", f->local);
	field_str(&w, "proxy", f->proxy);
	field_str(&w, "backend", f->backend);
	field_str(&w, "backend_addr", f->backend_addr);
	field_str(&w, "tls", f->tls_version);
	field_str(&w, "cipher", f->cipher);
	field_str(&w, "sni", f->sni);
	field_str(&w, "resumed",
	    f->tls_version == NULL ? NULL : (f->tls_resumed ? "yes" : "no"));
	field_str(&w, "starttls", f->starttls ? "yes" : "no");
	field_u64(&w, "discarded", f->discarded);
	field_u64(&w, "refused", f->refused);
	field_u64(&w, "client_in", f->client_in);
	field_u64(&w, "client_out", f->client_out);
	field_u64(&w, "backend_in", f->backend_in);
	field_u64(&w, "backend_out", f->backend_out);
	(void)snprintf(duration, sizeof(duration), "%llu.%03u",
	    (unsigned long long)(f->duration_ms / 1000),
	    (unsigned)(f->duration_ms % 1000));
	put_key(&w, "duration");
	puts_(&w, duration);
	field_str(&w, "state", f->state);
	field_str(&w, "end", f->end);
	field_str(&w, "error", f->error);
	return writer_finish(&w);
}

static void
write_line(enum config_log_level level, const char *line, size_t len)
{
	ssize_t n;

	if (lg.target == TARGET_SYSLOG) {
		syslog(syslog_priorities[level], "%.*s", (int)len - 1, line);
		return;
	}
	while (len > 0) {
		n = write(lg.fd, line, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* nowhere left to say so */
		line += n;
		len -= (size_t)n;
	}
}

void
log_session(const struct log_session *f)
{
	char line[LOG_LINE_MAX];
	struct timespec now;
	size_t len;

	(void)clock_gettime(CLOCK_REALTIME, &now);
	len = log_session_format(f, lg.format, &now, line, sizeof(line));
	write_line(CONFIG_LOG_INFO, line, len);
}

static void
vlog(enum config_log_level level, const char *errtext, const char *fmt,
    va_list ap)
{
	char msg[1024], line[LOG_LINE_MAX];
	struct timespec now;
	struct writer w;
	size_t n;

	if (level > lg.level)
		return;
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	if (errtext != NULL) {
		n = strlen(msg);
		(void)snprintf(msg + n, sizeof(msg) - n, ": %s", errtext);
	}
	(void)clock_gettime(CLOCK_REALTIME, &now);
	writer_init(&w, lg.format, line, sizeof(line));
	field_time(&w, &now);
	field_str(&w, "level", level_names[level]);
	field_str(&w, "msg", msg);
	write_line(level, line, writer_finish(&w));
}

#define LOG_FN(name, level, with_errno)                                        \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		const char *e = with_errno ? strerror(errno) : NULL;           \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		vlog(level, e, fmt, ap);                                       \
		va_end(ap);                                                    \
	}

LOG_FN(log_warn, CONFIG_LOG_WARNING, true)
LOG_FN(log_warnx, CONFIG_LOG_WARNING, false)
LOG_FN(log_info, CONFIG_LOG_INFO, false)
LOG_FN(log_debug, CONFIG_LOG_DEBUG, false)

void
fatal(const char *fmt, ...)
{
	const char *e = strerror(errno);
	va_list ap;

	va_start(ap, fmt);
	vlog(CONFIG_LOG_ERROR, e, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(CONFIG_LOG_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

bool
log_enabled(enum config_log_level level)
{
	return level <= lg.level;
}

/* No symbolic link: a worker that may write the log's directory must
 * not steer the root master to another file. */
static int
open_file(const char *path)
{
	return open(path,
	    O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
}

/* Lets go of a log file or syslog that is no longer the target. */
static void
leave(enum target was, int fd)
{
	if (was == TARGET_FILE && fd != lg.fd)
		(void)close(fd);
	if (was == TARGET_SYSLOG && lg.target != TARGET_SYSLOG)
		closelog();
}

int
log_init(const struct config *cfg)
{
	enum target was = lg.target;
	int fd, was_fd = lg.fd;
	char *path;

	lg.format = cfg->log_format;
	lg.level = cfg->log_level;
	if (strcmp(cfg->log, "stderr") == 0) {
		lg.target = TARGET_STDERR;
		lg.fd = STDERR_FILENO;
		leave(was, was_fd);
		return 0;
	}
	if (strcmp(cfg->log, "syslog") == 0) {
		if (was != TARGET_SYSLOG)
			openlog("mailproxy", LOG_PID | LOG_NDELAY, LOG_MAIL);
		lg.target = TARGET_SYSLOG;
		leave(was, was_fd);
		return 0;
	}
	if (was == TARGET_FILE && strcmp(lg.path, cfg->log) == 0)
		return 0; /* the same file: keep it */
	fd = open_file(cfg->log);
	if (fd < 0)
		return -errno;
	path = strdup(cfg->log);
	if (path == NULL) {
		(void)close(fd);
		return -ENOMEM;
	}
	free(lg.path);
	lg.path = path;
	lg.target = TARGET_FILE;
	lg.fd = fd;
	leave(was, was_fd);
	return 0;
}

int
log_chown(uid_t uid, gid_t gid)
{
	struct stat st;

	if (lg.target != TARGET_FILE || geteuid() != 0)
		return 0;
	/* Only a plain file with one name is handed over: a hard link
	 * planted by the workers' user would give away another file. */
	if (fstat(lg.fd, &st) != 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
		return -EPERM;
	if (st.st_uid == uid && st.st_gid == gid)
		return 0;
	return fchown(lg.fd, uid, gid) == 0 ? 0 : -errno;
}

int
log_reopen(void)
{
	int fd, r = 0;

	if (lg.target != TARGET_FILE)
		return 0;
	fd = open_file(lg.path);
	if (fd < 0)
		return -errno;
	/* A line written at this moment lands in the old or the new file. */
	if (dup2(fd, lg.fd) < 0)
		r = -errno;
	(void)close(fd);
	return r;
}
