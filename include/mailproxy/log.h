/*
 * Logging: diagnostic lines in OpenBSD's style (log_warn appends the errno
 * text, log_warnx does not, fatal exits) and the connection log, one line
 * per session, in text (key=value) or JSON.
 *
 * Targets are stderr, syslog or a file; each line goes out in one write(2),
 * so lines from several worker threads never interleave within a line.
 * Every attacker-controlled string is escaped (research/protocols.md §13).
 */
#ifndef MAILPROXY_LOG_H
#define MAILPROXY_LOG_H

#include <stdbool.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailproxy/config.h"

/* Longest line the log writes; longer ones are cut and end in "...". */
#define LOG_LINE_MAX 4096

/* What one connection log line says. NULL strings are printed as absent. */
struct log_session {
	const char *event; /* "close", or "connect" for the optional start */
	const char *id;
	const char *listener;
	const char *proto;
	const char *client; /* ip:port */
	const char *local;  /* the listening address it came in on */
	const char *proxy;  /* the load balancer that sent a PROXY header */
	const char *backend;
	const char *backend_addr; /* the address connected (or last tried) */
	const char *tls_version;
	const char *cipher;
	const char *sni;
	bool tls_resumed;
	bool starttls;           /* the client upgraded with STARTTLS */
	unsigned long discarded; /* plaintext bytes after STARTTLS, dropped */
	unsigned refused;        /* commands mailproxy refused */
	uint64_t client_in;      /* bytes read from the client (on the wire) */
	uint64_t client_out;
	uint64_t backend_in;
	uint64_t backend_out;
	uint64_t duration_ms;
	const char *state; /* the session's state when it ended */
	const char *end;   /* why it ended */
	const char *error; /* detail: OpenSSL's reason, libuv's error */
};

/*
 * Sets where lines go and how they look, from cfg's [global] log keys;
 * again on reload (the file already open is kept when its path is the
 * same). Returns 0, or a negative errno when the log file cannot be
 * opened (the target stays what it was).
 */
int log_init(const struct config *cfg);

/*
 * Gives the log file to the user the workers run as, so that after a
 * rotation they can open the new one the master made. Only as root and
 * for a file; 0 or -errno.
 */
int log_chown(uid_t uid, gid_t gid);

/* Reopens the log file (after rotation, on SIGUSR1). 0 or -errno. */
int log_reopen(void);

/* Whether a diagnostic at this level is written; for costly messages. */
bool log_enabled(enum config_log_level level);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs at error level and exits with status 1. Only before workers run. */
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Formats one connection log line, newline included, into buf (size bytes,
 * NUL-terminated). now is the wall-clock time printed. Returns the length
 * without the NUL; a line that does not fit is cut and ends in "...\n".
 * size must be at least 16.
 */
size_t log_session_format(const struct log_session *f,
    enum config_log_format format, const struct timespec *now, char *buf,
    size_t size);

/* Formats and writes one connection log line. */
void log_session(const struct log_session *f);

#endif
