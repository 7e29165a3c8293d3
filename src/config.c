/*
 * Configuration loading: inih does the INI syntax, this file does the
 * meaning. One option table per section (nginx's ngx_command_t, Dovecot's
 * setting_define) says what each key is, where it goes and what it allows.
 *
 * Debian 12 ships inih 55 built with its defaults: the handler gets no line
 * number, a line over 199 bytes would be split in two, section names are cut
 * at 49 bytes (STYLE.md §9). So the file goes through our own reader, which
 * counts lines, refuses over-long ones with file:line, and sees section
 * headers before inih does; long values continue on indented lines, which
 * inih passes to the handler again under the same key.
 *
 * Must not: do I/O beyond reading the file, log, or load certificates
 * (tls.c builds those, with the locations recorded here).
 */
#define _DEFAULT_SOURCE /* getline, strdup: POSIX 2008 but glibc wants this */
#include "mailproxy/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <ini.h>

#include "mailproxy/error.h"

#define NO_LOC SIZE_MAX

/* inih 55 copies section names into 50 bytes (MAX_SECTION). */
#define SECTION_MAX           49
#define LISTENER_NAME_MAX     32
#define LISTEN_MAX            64
#define SNI_CERT_MAX          1024
/* metrics.h's METRICS_LISTENERS (config.c is pure: no such include). */
#define METRICS_LISTENERS_MAX 64

enum opt_type {
	OPT_STRING,   /* char *, one value */
	OPT_LIST,     /* char *, continuation lines joined with ':' */
	OPT_BOOL,     /* bool */
	OPT_DURATION, /* uint64_t milliseconds */
	OPT_ENUM,     /* an enum, index into words */
	OPT_WORKERS,  /* unsigned, "auto" is 0 */
	OPT_PROTOCOL, /* enum proto */
	OPT_HOSTNAME, /* char *, a DNS host name */
	OPT_LISTEN,   /* the listener's address list; may repeat */
	OPT_BACKEND,  /* struct config_backend */
	OPT_CIDRS,    /* trusted_proxies: networks; may repeat */
	OPT_SNI_CERT, /* sni_certificate: chain and key files; may repeat */
	OPT_NUMBER,   /* uint64_t from min to max */
	OPT_ADDR,     /* struct config_addr, one address:port */
};

struct option {
	const char *name;
	enum opt_type type;
	size_t offset;
	size_t loc_offset;
	const char *const *words;
	uint64_t min, max;
};

static const char *const tls_mode_words[] = {"implicit", "starttls", NULL};
static const char *const starttls_words[] = {"required", "optional", NULL};
static const char *const tls_version_words[] = {"TLSv1.2", "TLSv1.3", NULL};
static const char *const log_format_words[] = {"text", "json", NULL};
static const char *const proxy_protocol_words[] = {"off", "v1", "v2", NULL};
static const char *const log_level_words[] = {"error", "warning", "info",
    "debug", NULL};

#define SEC(ms) ((uint64_t)(ms)*1000)
#define OPT(sec, key, type, field)                                             \
	{                                                                      \
		key, type, offsetof(struct sec, field), NO_LOC, NULL, 0, 0     \
	}
#define OPT_LOC(sec, key, type, field)                                         \
	{                                                                      \
		key, type, offsetof(struct sec, field),                        \
		    offsetof(struct sec, field##_loc), NULL, 0, 0              \
	}
#define OPT_WORDS(sec, key, field, w)                                          \
	{                                                                      \
		key, OPT_ENUM, offsetof(struct sec, field), NO_LOC, w, 0, 0    \
	}
#define OPT_NUM(sec, key, field, lo, hi)                                       \
	{                                                                      \
		key, OPT_NUMBER, offsetof(struct sec, field), NO_LOC, NULL,    \
		    lo, hi                                                     \
	}
#define OPT_TIME(sec, key, field, lo, hi)                                      \
	{                                                                      \
		key, OPT_DURATION, offsetof(struct sec, field), NO_LOC, NULL,  \
		    lo, hi                                                     \
	}

static const struct option global_options[] = {
    OPT(config, "workers", OPT_WORKERS, workers),
    OPT_LOC(config, "user", OPT_STRING, user),
    OPT_LOC(config, "group", OPT_STRING, group),
    OPT(config, "log", OPT_STRING, log),
    OPT_WORDS(config, "log_format", log_format, log_format_words),
    OPT_WORDS(config, "log_level", log_level, log_level_words),
    OPT(config, "log_connect", OPT_BOOL, log_connect),
    OPT(config, "server_name", OPT_HOSTNAME, server_name),
    OPT_TIME(config, "timeout_handshake", timeout_handshake_ms, 100, SEC(3600)),
    OPT_TIME(config, "timeout_connect", timeout_connect_ms, 100, SEC(3600)),
    OPT_TIME(config, "timeout_backend", timeout_backend_ms, 100, SEC(3600)),
    OPT_TIME(config, "timeout_login", timeout_login_ms, SEC(1), SEC(86400)),
    OPT_TIME(config, "drain_timeout", drain_timeout_ms, 0, SEC(86400)),
    OPT_TIME(config, "reload_drain_timeout", reload_drain_timeout_ms, 0,
        SEC(7 * 86400)),
    OPT_TIME(config, "busy_poll", busy_poll_ms, 0, SEC(1)),
    OPT(config, "reuse_port", OPT_BOOL, reuse_port),
    OPT_NUM(config, "max_sessions", max_sessions, 0, 100000000),
    OPT_NUM(config, "max_sessions_per_client", max_sessions_per_client, 0,
        1000000),
    OPT_NUM(config, "max_connect_rate_per_client", max_connect_rate_per_client,
        0, 65535),
    OPT_NUM(config, "client_ipv4_prefix", client_ipv4_prefix, 8, 32),
    OPT_NUM(config, "client_ipv6_prefix", client_ipv6_prefix, 16, 128),
    {NULL, 0, 0, 0, NULL, 0, 0},
};

static const struct option tls_options[] = {
    OPT_LOC(config_tls, "certificate", OPT_STRING, certificate),
    OPT_LOC(config_tls, "key", OPT_STRING, key),
    OPT_WORDS(config_tls, "min_version", min_version, tls_version_words),
    OPT_LOC(config_tls, "ciphers", OPT_LIST, ciphers),
    OPT_LOC(config_tls, "ciphersuites", OPT_LIST, ciphersuites),
    OPT(config_tls, "session_tickets", OPT_BOOL, session_tickets),
    OPT(config_tls, "sni_certificate", OPT_SNI_CERT, sni),
    OPT(config_tls, "sni_strict", OPT_BOOL, sni_strict),
    OPT_LOC(config_tls, "ticket_key_file", OPT_STRING, ticket_key_file),
    {NULL, 0, 0, 0, NULL, 0, 0},
};

static const struct option listener_options[] = {
    OPT(config_listener, "protocol", OPT_PROTOCOL, protocol),
    OPT(config_listener, "listen", OPT_LISTEN, listen),
    OPT_WORDS(config_listener, "tls", tls, tls_mode_words),
    OPT_WORDS(config_listener, "starttls", starttls, starttls_words),
    OPT(config_listener, "greeting", OPT_STRING, greeting),
    OPT(config_listener, "backend", OPT_BACKEND, backend),
    OPT_LOC(config_listener, "certificate", OPT_STRING, certificate),
    OPT_LOC(config_listener, "key", OPT_STRING, key),
    OPT(config_listener, "server_name", OPT_HOSTNAME, server_name),
    OPT_TIME(config_listener, "timeout_handshake", timeout_handshake_ms, 100,
        SEC(3600)),
    OPT_TIME(config_listener, "timeout_connect", timeout_connect_ms, 100,
        SEC(3600)),
    OPT_TIME(config_listener, "timeout_backend", timeout_backend_ms, 100,
        SEC(3600)),
    OPT_TIME(config_listener, "timeout_login", timeout_login_ms, SEC(1),
        SEC(86400)),
    OPT_TIME(config_listener, "timeout_idle", timeout_idle_ms, SEC(1),
        SEC(86400)),
    OPT_TIME(config_listener, "timeout_linger", timeout_linger_ms, 100,
        SEC(86400)),
    OPT_WORDS(config_listener, "proxy_protocol", proxy_protocol,
        proxy_protocol_words),
    OPT(config_listener, "accept_proxy", OPT_BOOL, accept_proxy),
    OPT(config_listener, "trusted_proxies", OPT_CIDRS, trusted_proxies),
    OPT_TIME(config_listener, "timeout_proxy", timeout_proxy_ms, 100,
        SEC(3600)),
    OPT_NUM(config_listener, "max_sessions", max_sessions, 0, 100000000),
    OPT_NUM(config_listener, "max_sessions_per_client", max_sessions_per_client,
        0, 1000000),
    OPT_NUM(config_listener, "max_connect_rate_per_client",
        max_connect_rate_per_client, 0, 65535),
    {NULL, 0, 0, 0, NULL, 0, 0},
};

static const struct option metrics_options[] = {
    OPT(config_metrics, "listen", OPT_ADDR, listen),
    OPT(config_metrics, "readyz_backends", OPT_BOOL, readyz_backends),
    {NULL, 0, 0, 0, NULL, 0, 0},
};

/* The TLS 1.2 suites of Mozilla's "intermediate" profile, without DHE (no
 * DH parameters to manage): forward secrecy and AEAD only. */
#define DEFAULT_CIPHERS                                                        \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

enum section_kind {
	SECTION_NONE,    /* before any header */
	SECTION_UNKNOWN, /* reported once; its keys are skipped */
	SECTION_GLOBAL,
	SECTION_TLS,
	SECTION_LISTENER,
	SECTION_METRICS,
};

struct errbuf {
	char *text;
	size_t len, size;
	bool oom;
};

struct loader {
	struct config *cfg;
	FILE *fp;
	const char *path; /* cfg->path */
	char *line;       /* getline's buffer */
	size_t line_size;
	unsigned lineno;
	bool have_prev_key; /* inih's prev_name is set */
	bool continuation;  /* the current line continues the previous key */
	bool line_reported; /* this line's syntax error is already reported */
	bool skip_continuation; /* the key line was refused: so are its
	                         * indented lines, without more errors */
	unsigned syntax_errors;
	enum section_kind section;
	struct config_listener *listener; /* SECTION_LISTENER */
	struct errbuf errors;
};

static void error_at(struct loader *ld, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
error_at(struct loader *ld, unsigned line, const char *fmt, ...)
{
	struct errbuf *e = &ld->errors;
	char msg[512];
	size_t need;
	char *p;
	va_list ap;
	int n;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		n = snprintf(NULL, 0, "%s:%u: %s\n", ld->path, line, msg);
	else
		n = snprintf(NULL, 0, "%s: %s\n", ld->path, msg);
	if (n < 0 || e->oom)
		return;
	need = e->len + (size_t)n + 1;
	if (need > e->size) {
		p = realloc(e->text, need * 2);
		if (p == NULL) {
			e->oom = true;
			return;
		}
		e->text = p;
		e->size = need * 2;
	}
	if (line > 0)
		(void)snprintf(e->text + e->len, e->size - e->len,
		    "%s:%u: %s\n", ld->path, line, msg);
	else
		(void)snprintf(e->text + e->len, e->size - e->len, "%s: %s\n",
		    ld->path, msg);
	e->len += (size_t)n;
}

/* Parsers of single values. */

int
config_parse_duration(const char *s, uint64_t *ms_out)
{
	uint64_t n = 0, unit;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return ERROR_SYNTAX;
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (UINT64_MAX - 9) / 10)
			return ERROR_RANGE;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (*p == '\0' || strcmp(p, "s") == 0)
		unit = 1000;
	else if (strcmp(p, "m") == 0)
		unit = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		unit = 3600 * 1000;
	else
		return ERROR_SYNTAX;
	if (n > UINT64_MAX / unit)
		return ERROR_RANGE;
	*ms_out = n * unit;
	return 0;
}

static int
parse_port(const char *s, unsigned *port_out)
{
	unsigned long v;
	char *end;

	if (!isdigit((unsigned char)*s))
		return ERROR_SYNTAX;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end != '\0')
		return ERROR_SYNTAX;
	if (errno != 0 || v == 0 || v > 65535)
		return ERROR_RANGE;
	*port_out = (unsigned)v;
	return 0;
}

/*
 * Splits "host:port" or "[v6]:port" into host and port strings in place.
 * Returns 0, or ERROR_SYNTAX; *bracketed_out tells the [v6] form.
 */
static int
split_host_port(char *s, char **host_out, char **port_out, bool *bracketed_out)
{
	char *colon;

	*bracketed_out = s[0] == '[';
	if (*bracketed_out) {
		char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return ERROR_SYNTAX;
		*close = '\0';
		*host_out = s + 1;
		*port_out = close + 2;
		return 0;
	}
	colon = strrchr(s, ':');
	if (colon == NULL || strchr(s, ':') != colon)
		return ERROR_SYNTAX;
	*colon = '\0';
	*host_out = s;
	*port_out = colon + 1;
	return 0;
}

int
config_parse_addr(const char *s, struct config_addr *out)
{
	char buf[CONFIG_ADDR_TEXT], host_text[INET6_ADDRSTRLEN], *host, *port_s;
	unsigned port;
	bool v6;
	int r;

	if (strlen(s) >= sizeof(buf))
		return ERROR_SYNTAX;
	strcpy(buf, s);
	r = split_host_port(buf, &host, &port_s, &v6);
	if (r == 0)
		r = parse_port(port_s, &port);
	if (r != 0)
		return r;
	memset(&out->sa, 0, sizeof(out->sa));
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return ERROR_SYNTAX;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->sa_len = sizeof(*sin6);
		(void)inet_ntop(AF_INET6, &sin6->sin6_addr, host_text,
		    sizeof(host_text));
		(void)snprintf(out->text, sizeof(out->text), "[%s]:%u",
		    host_text, port);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return ERROR_SYNTAX;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		out->sa_len = sizeof(*sin);
		(void)inet_ntop(AF_INET, &sin->sin_addr, host_text,
		    sizeof(host_text));
		(void)snprintf(out->text, sizeof(out->text), "%s:%u", host_text,
		    port);
	}
	return 0;
}

/* RFC 1123 host name: LDH labels of 1-63, dot-separated, at most 253. */
/* Text mailproxy puts in its own replies: one line, printable. */
static bool
valid_text(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (s[i] < 0x20 || s[i] > 0x7e || i >= 200)
			return false;
	return true;
}

static bool
valid_hostname(const char *s)
{
	size_t label = 0, total = 0;
	const char *p;

	for (p = s; *p != '\0'; p++, total++) {
		if (*p == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-')
			return false;
		if (++label > 63)
			return false;
	}
	return total > 0 && total <= 253 && label > 0;
}

static bool
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static char *
words_list(const char *const *words, char *buf, size_t size)
{
	size_t len = 0;
	int i;

	buf[0] = '\0';
	for (i = 0; words[i] != NULL; i++) {
		int n = snprintf(buf + len, size - len, "%s%s",
		    i == 0 ? "" : (words[i + 1] == NULL ? " or " : ", "),
		    words[i]);

		if (n < 0 || (size_t)n >= size - len)
			break;
		len += (size_t)n;
	}
	return buf;
}

static void
format_ms(uint64_t ms, char *buf, size_t size)
{
	if (ms % 1000 != 0)
		(void)snprintf(buf, size, "%llums", (unsigned long long)ms);
	else
		(void)snprintf(buf, size, "%llus",
		    (unsigned long long)(ms / 1000));
}

static int
set_string(struct loader *ld, char **field, const char *value)
{
	char *copy = strdup(value);

	if (copy == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return ERROR_NOMEM;
	}
	free(*field);
	*field = copy;
	return 0;
}

/* Appends continuation text of a list value: "a:b" + "c" -> "a:b:c". */
static int
append_list(struct loader *ld, char **field, const char *value)
{
	size_t old = *field != NULL ? strlen(*field) : 0;
	char *p = realloc(*field, old + 1 + strlen(value) + 1);

	if (p == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return ERROR_NOMEM;
	}
	if (old == 0)
		strcpy(p, value);
	else
		(void)sprintf(p + old, ":%s", value);
	*field = p;
	return 0;
}

static void
listen_add(struct loader *ld, struct config_listener *l, const char *item)
{
	struct config_addr addrs[2];
	size_t i, n = 0;
	int r;

	if (strncmp(item, "*:", 2) == 0) {
		/* Every IPv4 and IPv6 address: two sockets, v6 one v6-only. */
		char buf[CONFIG_ADDR_TEXT];

		(void)snprintf(buf, sizeof(buf), "0.0.0.0:%s", item + 2);
		r = config_parse_addr(buf, &addrs[n++]);
		if (r == 0) {
			(void)snprintf(buf, sizeof(buf), "[::]:%s", item + 2);
			r = config_parse_addr(buf, &addrs[n++]);
		}
	} else {
		r = config_parse_addr(item, &addrs[n++]);
	}
	if (r != 0) {
		error_at(ld, ld->lineno,
		    "listen: '%s' is not an address:port (1.2.3.4:993, "
		    "[2001:db8::1]:993 or *:993)%s",
		    item, r == ERROR_RANGE ? "; the port must be 1-65535" : "");
		return;
	}
	for (i = 0; i < n; i++) {
		struct config_addr *grown;

		if (l->listen_count >= LISTEN_MAX) {
			error_at(ld, ld->lineno,
			    "listen: more than %d addresses", LISTEN_MAX);
			return;
		}
		grown = realloc(l->listen,
		    (l->listen_count + 1) * sizeof(*l->listen));
		if (grown == NULL) {
			error_at(ld, ld->lineno, "out of memory");
			return;
		}
		l->listen = grown;
		addrs[i].loc.file = ld->path;
		addrs[i].loc.line = ld->lineno;
		l->listen[l->listen_count++] = addrs[i];
	}
}

static void
parse_listen(struct loader *ld, struct config_listener *l, const char *value)
{
	char *copy = strdup(value), *item, *save = NULL;
	bool any = false;

	if (copy == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return;
	}
	for (item = strtok_r(copy, ", \t", &save); item != NULL;
	     item = strtok_r(NULL, ", \t", &save)) {
		listen_add(ld, l, item);
		any = true;
	}
	if (!any)
		error_at(ld, ld->lineno, "listen: no address given");
	free(copy);
}

int
config_parse_cidr(const char *s, struct config_cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	unsigned long bits;
	unsigned i, max;

	if (strlen(s) >= sizeof(buf))
		return ERROR_SYNTAX;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash++ = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return ERROR_SYNTAX;
	}
	bits = max;
	if (slash != NULL) {
		errno = 0;
		bits = strtoul(slash, &end, 10);
		if (!isdigit((unsigned char)slash[0]) || *end != '\0' ||
		    errno != 0)
			return ERROR_SYNTAX;
		if (bits > max)
			return ERROR_RANGE;
	}
	out->bits = (unsigned)bits;
	/* "::ffff:10.0.0.5" is how a dual-stack socket shows an IPv4 peer:
	 * kept as the IPv4 network it means. */
	if (out->family == AF_INET6 && out->bits >= 96 &&
	    memcmp(out->addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
		memmove(out->addr, out->addr + 12, 4);
		memset(out->addr + 4, 0, 12);
		out->family = AF_INET;
		out->bits -= 96;
		max = 32;
	}
	for (i = out->bits; i < max; i++)
		out->addr[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
	return 0;
}

static bool
cidr_contains(const struct config_cidr *net, const uint8_t *addr)
{
	unsigned full = net->bits / 8, rest = net->bits % 8;
	uint8_t mask;

	if (memcmp(net->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (uint8_t)(0xff00u >> rest);
	return (addr[full] & mask) == net->addr[full];
}

bool
config_cidr_match(const struct config_cidr *nets, size_t n,
    const struct sockaddr *sa)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
	    0xff};
	const uint8_t *a4 = NULL, *a6 = NULL;
	size_t i;

	if (sa->sa_family == AF_INET) {
		a4 = (const uint8_t *)&(
		    (const struct sockaddr_in *)(const void *)sa)
		         ->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		a6 = (const uint8_t *)&(
		    (const struct sockaddr_in6 *)(const void *)sa)
		         ->sin6_addr;
		/* A dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d. */
		if (memcmp(a6, mapped, sizeof(mapped)) == 0)
			a4 = a6 + 12;
	}
	for (i = 0; i < n; i++) {
		if (nets[i].family == AF_INET && a4 != NULL &&
		    cidr_contains(&nets[i], a4))
			return true;
		if (nets[i].family == AF_INET6 && a6 != NULL &&
		    cidr_contains(&nets[i], a6))
			return true;
	}
	return false;
}

static void
parse_cidrs(struct loader *ld, struct config_listener *l, const char *value)
{
	char *copy = strdup(value), *item, *save = NULL;
	struct config_cidr net, *grown;
	bool any = false;
	int r;

	if (copy == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return;
	}
	for (item = strtok_r(copy, ", \t", &save); item != NULL;
	     item = strtok_r(NULL, ", \t", &save)) {
		any = true;
		r = config_parse_cidr(item, &net);
		if (r != 0) {
			error_at(ld, ld->lineno,
			    "trusted_proxies: '%s' is not an address or "
			    "network (10.0.0.0/8, 2001:db8::/32, 127.0.0.1)%s",
			    item,
			    r == ERROR_RANGE ? "; the prefix is at most 32 "
			                       "(IPv4) or 128 (IPv6)" :
			                       "");
			continue;
		}
		grown = realloc(l->trusted_proxies,
		    (l->trusted_proxies_count + 1) * sizeof(*grown));
		if (grown == NULL) {
			error_at(ld, ld->lineno, "out of memory");
			break;
		}
		l->trusted_proxies = grown;
		l->trusted_proxies[l->trusted_proxies_count++] = net;
	}
	if (!any)
		error_at(ld, ld->lineno, "trusted_proxies: no network given");
	free(copy);
}

/*
 * "CHAIN KEY", or "FILE" holding both (HAProxy's and hitch's combined
 * PEM). The names come from the certificate itself, as HAProxy and hitch
 * take them, so a renewed certificate with a new name needs no config
 * change.
 */
static void
parse_sni_cert(struct loader *ld, struct config_tls *t, const char *value)
{
	char *copy = strdup(value), *chain, *key, *extra, *save = NULL;
	struct config_sni_cert *grown;

	if (copy == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return;
	}
	chain = strtok_r(copy, " \t", &save);
	key = strtok_r(NULL, " \t", &save);
	extra = strtok_r(NULL, " \t", &save);
	if (chain == NULL || extra != NULL) {
		error_at(ld, ld->lineno,
		    "sni_certificate: give the certificate chain file, then "
		    "its key file (or one file holding both)");
		goto out;
	}
	if (t->sni_count >= SNI_CERT_MAX) {
		error_at(ld, ld->lineno, "sni_certificate: more than %d",
		    SNI_CERT_MAX);
		goto out;
	}
	grown = realloc(t->sni, (t->sni_count + 1) * sizeof(*grown));
	if (grown == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		goto out;
	}
	t->sni = grown;
	memset(&t->sni[t->sni_count], 0, sizeof(t->sni[0]));
	t->sni[t->sni_count].loc.file = ld->path;
	t->sni[t->sni_count].loc.line = ld->lineno;
	if (set_string(ld, &t->sni[t->sni_count].certificate, chain) != 0 ||
	    set_string(ld, &t->sni[t->sni_count].key,
	        key != NULL ? key : chain) != 0) {
		free(t->sni[t->sni_count].certificate);
		goto out;
	}
	t->sni_count++;
out:
	free(copy);
}

static void
parse_backend(struct loader *ld, struct config_backend *b, const char *value)
{
	char buf[300], *host, *port_s;
	unsigned port;
	bool v6;
	int r;

	if (strncmp(value, "unix:", 5) == 0 || value[0] == '/') {
		const char *path = value[0] == '/' ? value : value + 5;

		if (path[0] != '/' ||
		    strlen(path) >=
		        sizeof(((struct sockaddr_un *)0)->sun_path)) {
			error_at(ld, ld->lineno,
			    "backend: '%s' is not an absolute unix socket path "
			    "of at most %zu bytes",
			    path,
			    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return;
		}
		b->kind = CONFIG_BACKEND_UNIX;
		if (set_string(ld, &b->path, path) == 0)
			(void)set_string(ld, &b->text, value);
		return;
	}
	if (strlen(value) >= sizeof(buf))
		goto bad;
	strcpy(buf, value);
	if (split_host_port(buf, &host, &port_s, &v6) != 0)
		goto bad;
	r = parse_port(port_s, &port);
	if (r != 0)
		goto bad;
	if (config_parse_addr(value, &b->addr) == 0) {
		b->kind = CONFIG_BACKEND_ADDR;
		b->addr.loc.file = ld->path;
		b->addr.loc.line = ld->lineno;
		(void)set_string(ld, &b->text, b->addr.text);
		return;
	}
	if (v6 || !valid_hostname(host))
		goto bad;
	b->kind = CONFIG_BACKEND_HOST;
	(void)snprintf(b->port, sizeof(b->port), "%u", port);
	if (set_string(ld, &b->host, host) == 0)
		(void)set_string(ld, &b->text, value);
	return;
bad:
	error_at(ld, ld->lineno,
	    "backend: '%s' is not host:port, [IPv6]:port or a unix socket "
	    "path (port 1-65535)",
	    value);
}

/* Applies one key = value to the section struct base. */
static void
apply_option(struct loader *ld, const struct option *opt, void *base,
    const char *value)
{
	char *field = (char *)base + opt->offset;
	char words[128], lo[32], hi[32];
	uint64_t ms;
	int i, r;

	if (opt->loc_offset != NO_LOC) {
		struct config_loc *loc =
		    (struct config_loc *)((char *)base + opt->loc_offset);

		loc->file = ld->path;
		loc->line = ld->lineno;
	}
	switch (opt->type) {
	case OPT_LIST:
		/* "ciphers =" may be followed by the items, one per indented
		 * line; validate() refuses a list that stays empty. */
		(void)set_string(ld, (char **)field, value);
		return;
	case OPT_STRING:
		if (value[0] == '\0') {
			error_at(ld, ld->lineno, "%s: empty value", opt->name);
			return;
		}
		(void)set_string(ld, (char **)field, value);
		return;
	case OPT_HOSTNAME:
		if (!valid_hostname(value)) {
			error_at(ld, ld->lineno,
			    "%s: '%s' is not a host name (letters, digits, "
			    "'-' and '.', at most 253)",
			    opt->name, value);
			return;
		}
		(void)set_string(ld, (char **)field, value);
		return;
	case OPT_BOOL:
		if (!parse_bool(value, (bool *)field))
			error_at(ld, ld->lineno, "%s: '%s' is not yes or no",
			    opt->name, value);
		return;
	case OPT_DURATION:
		r = config_parse_duration(value, &ms);
		if (r == 0 && (ms < opt->min || ms > opt->max))
			r = ERROR_RANGE;
		if (r != 0) {
			format_ms(opt->min, lo, sizeof(lo));
			format_ms(opt->max, hi, sizeof(hi));
			error_at(ld, ld->lineno,
			    "%s: '%s' is not a duration from %s to %s "
			    "(a number with ms, s, m or h; plain is seconds)",
			    opt->name, value, lo, hi);
			return;
		}
		*(uint64_t *)field = ms;
		return;
	case OPT_ENUM:
		for (i = 0; opt->words[i] != NULL; i++) {
			if (strcmp(value, opt->words[i]) == 0) {
				*(int *)field = i;
				return;
			}
		}
		error_at(ld, ld->lineno, "%s: '%s' is not one of %s", opt->name,
		    value, words_list(opt->words, words, sizeof(words)));
		return;
	case OPT_WORKERS: {
		char *end;
		unsigned long n;

		if (strcmp(value, "auto") == 0) {
			*(unsigned *)field = 0;
			return;
		}
		errno = 0;
		n = strtoul(value, &end, 10);
		if (!isdigit((unsigned char)value[0]) || *end != '\0' ||
		    errno != 0 || n < 1 || n > 256) {
			error_at(ld, ld->lineno,
			    "workers: '%s' is not auto or a number from 1 to "
			    "256",
			    value);
			return;
		}
		*(unsigned *)field = (unsigned)n;
		return;
	}
	case OPT_PROTOCOL:
		if (proto_from_name(value, (enum proto *)field) != 0)
			error_at(ld, ld->lineno,
			    "protocol: '%s' is not imap, pop3 or smtp", value);
		return;
	case OPT_LISTEN:
		parse_listen(ld, (struct config_listener *)base, value);
		return;
	case OPT_BACKEND:
		parse_backend(ld, (struct config_backend *)field, value);
		return;
	case OPT_CIDRS:
		parse_cidrs(ld, (struct config_listener *)base, value);
		return;
	case OPT_SNI_CERT:
		parse_sni_cert(ld, (struct config_tls *)base, value);
		return;
	case OPT_NUMBER: {
		char *end;
		unsigned long long n;

		errno = 0;
		n = strtoull(value, &end, 10);
		if (!isdigit((unsigned char)value[0]) || *end != '\0' ||
		    errno != 0 || n < opt->min || n > opt->max) {
			error_at(ld, ld->lineno,
			    "%s: '%s' is not a number from %llu to %llu",
			    opt->name, value, (unsigned long long)opt->min,
			    (unsigned long long)opt->max);
			return;
		}
		*(uint64_t *)field = n;
		return;
	}
	case OPT_ADDR: {
		struct config_addr *a = (struct config_addr *)(void *)field;

		if (config_parse_addr(value, a) != 0) {
			error_at(ld, ld->lineno,
			    "%s: '%s' is not an address:port (IPv6 in "
			    "brackets)",
			    opt->name, value);
			return;
		}
		a->loc.file = ld->path;
		a->loc.line = ld->lineno;
		if (base == &ld->cfg->metrics)
			ld->cfg->metrics.enabled = true;
		return;
	}
	}
}

static const struct option *
find_option(const struct option *table, const char *name, size_t *index_out)
{
	size_t i;

	for (i = 0; table[i].name != NULL; i++) {
		if (strcmp(table[i].name, name) == 0) {
			*index_out = i;
			return &table[i];
		}
	}
	return NULL;
}

static int
on_ini_value(void *user, const char *section, const char *name,
    const char *value)
{
	struct loader *ld = user;
	const struct option *table, *opt;
	const char *where;
	uint64_t *set;
	void *base;
	size_t index;

	(void)section; /* the reader tracked it, with the line number */
	if (ld->continuation && ld->skip_continuation)
		return 1;
	switch (ld->section) {
	case SECTION_NONE:
		error_at(ld, ld->lineno,
		    "'%s' is outside any section ([global], [tls], "
		    "[metrics] or [listener NAME])",
		    name);
		ld->skip_continuation = true;
		return 1;
	case SECTION_UNKNOWN:
		return 1;
	case SECTION_GLOBAL:
		table = global_options;
		base = ld->cfg;
		set = &ld->cfg->set;
		where = "[global]";
		break;
	case SECTION_TLS:
		table = tls_options;
		base = &ld->cfg->tls;
		set = &ld->cfg->tls.set;
		where = "[tls]";
		break;
	case SECTION_METRICS:
		table = metrics_options;
		base = &ld->cfg->metrics;
		set = &ld->cfg->metrics.set;
		where = "[metrics]";
		break;
	case SECTION_LISTENER:
	default:
		table = listener_options;
		base = ld->listener;
		set = &ld->listener->set;
		where = "[listener]";
		break;
	}
	opt = find_option(table, name, &index);
	if (opt == NULL) {
		error_at(ld, ld->lineno, "unknown key '%s' in %s", name, where);
		ld->skip_continuation = true;
		return 1;
	}
	if (ld->continuation) {
		if (opt->type == OPT_LIST)
			(void)append_list(ld,
			    (char **)((char *)base + opt->offset), value);
		else if (opt->type == OPT_LISTEN || opt->type == OPT_CIDRS)
			apply_option(ld, opt, base, value);
		else
			error_at(ld, ld->lineno,
			    "'%s' takes one value, but this indented line "
			    "continues it",
			    name);
		return 1;
	}
	if ((*set & (UINT64_C(1) << index)) != 0 && opt->type != OPT_LISTEN &&
	    opt->type != OPT_CIDRS && opt->type != OPT_SNI_CERT) {
		error_at(ld, ld->lineno, "'%s' is set twice in this section",
		    name);
		ld->skip_continuation = true;
		return 1;
	}
	*set |= UINT64_C(1) << index;
	apply_option(ld, opt, base, value);
	return 1;
}

static void
listener_defaults(struct config_listener *l)
{
	memset(l, 0, sizeof(*l));
	l->tls = CONFIG_TLS_IMPLICIT;
}

static bool
valid_listener_name(const char *s)
{
	const char *p;

	if (*s == '\0' || strlen(s) > LISTENER_NAME_MAX)
		return false;
	for (p = s; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr("._-", *p) == NULL)
			return false;
	return true;
}

/* A "[...]" line: names the section the following keys belong to. */
static void
enter_section(struct loader *ld, char *start)
{
	struct config *cfg = ld->cfg;
	struct config_listener *grown;
	char *close = strchr(start, ']'), *name, *rest;
	size_t i;

	ld->section = SECTION_UNKNOWN;
	if (close == NULL) {
		error_at(ld, ld->lineno, "section header without ']'");
		ld->line_reported = true;
		return;
	}
	rest = close + 1;
	while (isspace((unsigned char)*rest))
		rest++;
	if (*rest != '\0' && *rest != ';' && *rest != '#') {
		error_at(ld, ld->lineno, "text after the section header");
		return;
	}
	*close = '\0';
	name = start + 1;
	if (strlen(name) > SECTION_MAX) {
		error_at(ld, ld->lineno, "section name longer than %d bytes",
		    SECTION_MAX);
		return;
	}
	if (strcmp(name, "global") == 0) {
		ld->section = SECTION_GLOBAL;
		return;
	}
	if (strcmp(name, "tls") == 0) {
		ld->section = SECTION_TLS;
		return;
	}
	if (strcmp(name, "metrics") == 0) {
		ld->section = SECTION_METRICS;
		return;
	}
	if (strncmp(name, "listener", 8) != 0 ||
	    (name[8] != ' ' && name[8] != '\t' && name[8] != '\0')) {
		error_at(ld, ld->lineno,
		    "unknown section [%s]; expected [global], [tls], "
		    "[metrics] or [listener NAME]",
		    name);
		return;
	}
	name += 8;
	while (isspace((unsigned char)*name))
		name++;
	if (!valid_listener_name(name)) {
		error_at(ld, ld->lineno,
		    "listener name '%s' must be 1-%d letters, digits, '.', "
		    "'_' or '-'",
		    name, LISTENER_NAME_MAX);
		return;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		if (strcmp(cfg->listeners[i].name, name) == 0) {
			error_at(ld, ld->lineno,
			    "[listener %s] is already defined at line %u", name,
			    cfg->listeners[i].loc.line);
			return;
		}
	}
	grown = realloc(cfg->listeners,
	    (cfg->listener_count + 1) * sizeof(*cfg->listeners));
	if (grown == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return;
	}
	cfg->listeners = grown;
	ld->listener = &cfg->listeners[cfg->listener_count];
	listener_defaults(ld->listener);
	ld->listener->name = strdup(name);
	if (ld->listener->name == NULL) {
		error_at(ld, ld->lineno, "out of memory");
		return;
	}
	ld->listener->loc.file = ld->path;
	ld->listener->loc.line = ld->lineno;
	cfg->listener_count++;
	ld->section = SECTION_LISTENER;
}

/*
 * inih's reader: hands inih one line at a time and, before inih sees it,
 * classifies it the way inih 55's ini_parse_stream will, so that sections,
 * continuations and syntax errors are known with their line numbers.
 */
static char *
read_line(char *str, int num, void *stream)
{
	struct loader *ld = stream;
	ssize_t n;
	size_t len;
	char *start;

	n = getline(&ld->line, &ld->line_size, ld->fp);
	if (n < 0)
		return NULL;
	ld->lineno++;
	ld->continuation = false;
	ld->line_reported = false;
	len = (size_t)n;
	while (
	    len > 0 && (ld->line[len - 1] == '\n' || ld->line[len - 1] == '\r'))
		len--;
	ld->line[len] = '\0';
	if (strlen(ld->line) != len) {
		error_at(ld, ld->lineno, "NUL byte in line");
		ld->syntax_errors++;
		ld->skip_continuation = true;
		str[0] = '\0';
		return str;
	}
	/* inih needs room for CR, LF and NUL (INI_MAX_LINE's comment). */
	if (num < 3 || len > (size_t)num - 3) {
		error_at(ld, ld->lineno,
		    "line longer than %d bytes; continue long values on "
		    "indented lines",
		    num - 3);
		ld->syntax_errors++;
		ld->skip_continuation = true;
		str[0] = '\0';
		return str;
	}
	memcpy(str, ld->line, len);
	str[len] = '\n';
	str[len + 1] = '\0';

	start = ld->line;
	if (ld->lineno == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0)
		start += 3;
	while (isspace((unsigned char)*start))
		start++;
	if (*start == '\0' || *start == ';' || *start == '#')
		return str;
	if (ld->have_prev_key && start > ld->line) {
		ld->continuation = true;
		return str;
	}
	if (*start == '[') {
		ld->have_prev_key = false;
		ld->skip_continuation = false;
		enter_section(ld, start);
		if (ld->line_reported)
			ld->syntax_errors++;
		return str;
	}
	if (strpbrk(start, "=:") == NULL) {
		error_at(ld, ld->lineno,
		    "expected 'key = value' or a [section] header");
		ld->syntax_errors++;
		ld->skip_continuation = true;
		return str;
	}
	ld->have_prev_key = true;
	ld->skip_continuation = false;
	return str;
}

/* Whether the key called name of table was given in the section. */
static bool
is_set(const struct option *table, uint64_t set, const char *name)
{
	size_t index;

	if (find_option(table, name, &index) == NULL)
		abort(); /* a typo in this file, not in the config */
	return (set & (UINT64_C(1) << index)) != 0;
}

static bool
addr_equal(const struct config_addr *a, const struct config_addr *b)
{
	return a->sa_len == b->sa_len && memcmp(&a->sa, &b->sa, a->sa_len) == 0;
}

static void
validate_listener(struct loader *ld, struct config_listener *l, size_t index)
{
	struct config *cfg = ld->cfg;
	const struct option *t = listener_options;
	size_t i, j, k;
	const char *key;

	if (!is_set(t, l->set, "protocol"))
		error_at(ld, l->loc.line,
		    "[listener %s]: 'protocol' is required (imap, pop3 or "
		    "smtp)",
		    l->name);
	if (l->listen_count == 0)
		error_at(ld, l->loc.line, "[listener %s]: 'listen' is required",
		    l->name);
	if (!is_set(t, l->set, "backend"))
		error_at(ld, l->loc.line,
		    "[listener %s]: 'backend' is required", l->name);
	if (l->tls == CONFIG_TLS_IMPLICIT &&
	    (is_set(t, l->set, "starttls") || is_set(t, l->set, "greeting")))
		error_at(ld, l->loc.line,
		    "[listener %s]: 'starttls' and 'greeting' are for tls = "
		    "starttls (with implicit TLS the backend greets)",
		    l->name);
	if (l->starttls == CONFIG_STARTTLS_OPTIONAL &&
	    l->protocol != PROTO_SMTP)
		error_at(ld, l->loc.line,
		    "[listener %s]: starttls = optional is for SMTP (port 25) "
		    "only: IMAP and POP3 log in with passwords",
		    l->name);
	if (l->greeting != NULL && !valid_text(l->greeting))
		error_at(ld, l->loc.line,
		    "[listener %s]: 'greeting' must be printable ASCII, at "
		    "most 200 characters",
		    l->name);
	if (l->greeting == NULL)
		(void)set_string(ld, &l->greeting, "Server ready.");
	if (config_listener_certificate(cfg, l, NULL) == NULL)
		error_at(ld, l->loc.line,
		    "[listener %s]: no certificate: set 'certificate' here "
		    "or in [tls]",
		    l->name);
	if (config_listener_key(cfg, l, NULL) == NULL)
		error_at(ld, l->loc.line,
		    "[listener %s]: no private key: set 'key' here or in "
		    "[tls]",
		    l->name);
	if ((l->certificate == NULL) != (l->key == NULL)) {
		key = l->certificate == NULL ? "key" : "certificate";
		error_at(ld, l->loc.line,
		    "[listener %s]: '%s' is set without '%s'; a listener "
		    "overrides both or neither",
		    l->name, key,
		    l->certificate == NULL ? "certificate" : "key");
	}
	if (!is_set(t, l->set, "timeout_handshake"))
		l->timeout_handshake_ms = cfg->timeout_handshake_ms;
	if (!is_set(t, l->set, "timeout_connect"))
		l->timeout_connect_ms = cfg->timeout_connect_ms;
	if (!is_set(t, l->set, "timeout_backend"))
		l->timeout_backend_ms = cfg->timeout_backend_ms;
	if (!is_set(t, l->set, "timeout_login"))
		l->timeout_login_ms = cfg->timeout_login_ms;
	if (!is_set(t, l->set, "timeout_idle"))
		l->timeout_idle_ms = proto_default_idle_ms(l->protocol);
	if (!is_set(t, l->set, "timeout_linger"))
		l->timeout_linger_ms = SEC(30);
	if (!is_set(t, l->set, "max_sessions"))
		l->max_sessions = cfg->max_sessions;
	if (!is_set(t, l->set, "max_sessions_per_client"))
		l->max_sessions_per_client = cfg->max_sessions_per_client;
	if (!is_set(t, l->set, "max_connect_rate_per_client"))
		l->max_connect_rate_per_client =
		    cfg->max_connect_rate_per_client;
	/* Postfix's smtpd_upstream_proxy_timeout. */
	if (!is_set(t, l->set, "timeout_proxy"))
		l->timeout_proxy_ms = SEC(5);
	if (l->accept_proxy && l->trusted_proxies_count == 0)
		error_at(ld, l->loc.line,
		    "[listener %s]: accept_proxy = yes needs "
		    "'trusted_proxies', the load balancers' addresses",
		    l->name);
	if (!l->accept_proxy &&
	    (is_set(t, l->set, "trusted_proxies") ||
	        is_set(t, l->set, "timeout_proxy")))
		error_at(ld, l->loc.line,
		    "[listener %s]: 'trusted_proxies' and 'timeout_proxy' "
		    "are for accept_proxy = yes",
		    l->name);

	/* Two sockets on one address would split its connections. */
	for (j = 0; j < l->listen_count; j++) {
		for (k = 0; k < j; k++)
			if (addr_equal(&l->listen[j], &l->listen[k]))
				error_at(ld, l->listen[j].loc.line,
				    "[listener %s]: %s is listed twice",
				    l->name, l->listen[j].text);
		for (i = 0; i < index; i++) {
			const struct config_listener *o = &cfg->listeners[i];

			for (k = 0; k < o->listen_count; k++)
				if (addr_equal(&l->listen[j], &o->listen[k]))
					error_at(ld, l->listen[j].loc.line,
					    "[listener %s]: %s is already "
					    "used by [listener %s] (line %u)",
					    l->name, l->listen[j].text, o->name,
					    o->listen[k].loc.line);
		}
	}
}

static void
validate_metrics(struct loader *ld)
{
	const struct config *cfg = ld->cfg;
	const struct config_metrics *m = &cfg->metrics;
	size_t i, j;

	if (!m->enabled) {
		if (m->set != 0)
			error_at(ld, 0,
			    "[metrics]: 'listen' is required (the address "
			    "of /metrics, /healthz and /readyz)");
		return;
	}
	for (i = 0; i < cfg->listener_count; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		for (j = 0; j < l->listen_count; j++)
			if (addr_equal(&m->listen, &l->listen[j]))
				error_at(ld, m->listen.loc.line,
				    "[metrics]: %s is already used by "
				    "[listener %s] (line %u)",
				    m->listen.text, l->name,
				    l->listen[j].loc.line);
	}
}

static void
validate(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	char host[256];
	size_t i;

	if (cfg->listener_count == 0)
		error_at(ld, 0,
		    "no [listener NAME] section: nothing to listen on");
	if (cfg->tls.ciphers != NULL && cfg->tls.ciphers[0] == '\0')
		error_at(ld, cfg->tls.ciphers_loc.line, "ciphers: empty value");
	if (cfg->tls.ciphersuites != NULL && cfg->tls.ciphersuites[0] == '\0')
		error_at(ld, cfg->tls.ciphersuites_loc.line,
		    "ciphersuites: empty value");
	if (cfg->group != NULL && cfg->user == NULL)
		error_at(ld, 0, "[global]: 'group' is set without 'user'");
	if (cfg->user != NULL && getpwnam(cfg->user) == NULL)
		error_at(ld, 0, "[global]: user '%s' does not exist",
		    cfg->user);
	if (cfg->group != NULL && getgrnam(cfg->group) == NULL)
		error_at(ld, 0, "[global]: group '%s' does not exist",
		    cfg->group);
	if (cfg->server_name == NULL) {
		if (gethostname(host, sizeof(host)) != 0 ||
		    !valid_hostname(host))
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		cfg->server_name = strdup(host);
		if (cfg->server_name == NULL)
			error_at(ld, 0, "out of memory");
	}
	for (i = 0; i < cfg->listener_count; i++)
		validate_listener(ld, &cfg->listeners[i], i);
	/* Each worker counts its sessions per listener in a fixed slot. */
	if (cfg->listener_count > METRICS_LISTENERS_MAX)
		error_at(ld, cfg->listeners[METRICS_LISTENERS_MAX].loc.line,
		    "more than %d [listener] sections", METRICS_LISTENERS_MAX);
	validate_metrics(ld);
}

static void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	atomic_init(&cfg->refs, 1);
	cfg->workers = 0;
	cfg->log_format = CONFIG_LOG_TEXT;
	cfg->log_level = CONFIG_LOG_INFO;
	cfg->timeout_handshake_ms = SEC(30);
	cfg->timeout_connect_ms = SEC(10);
	/* nginx mail's "timeout"; Dovecot ends a login that takes longer
	 * than 3 minutes. */
	cfg->timeout_backend_ms = SEC(60);
	cfg->timeout_login_ms = SEC(180);
	cfg->drain_timeout_ms = SEC(30);
	cfg->reload_drain_timeout_ms = SEC(3600);
	/* Postfix's smtpd_client_connection_count_limit: an office behind
	 * one NAT address, each mail client holding several IMAP sessions
	 * (one per watched folder), stays under it. */
	cfg->max_sessions_per_client = 50;
	cfg->client_ipv4_prefix = 32;
	/* One IPv6 subscriber is usually a /64 of addresses. */
	cfg->client_ipv6_prefix = 64;
	cfg->tls.min_version = CONFIG_TLS_1_2;
	cfg->tls.session_tickets = true;
}

static void
free_backend(struct config_backend *b)
{
	free(b->host);
	free(b->path);
	free(b->text);
}

static void
config_free(struct config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->listener_count; i++) {
		struct config_listener *l = &cfg->listeners[i];

		free(l->name);
		free(l->listen);
		free_backend(&l->backend);
		free(l->certificate);
		free(l->key);
		free(l->server_name);
		free(l->greeting);
		free(l->trusted_proxies);
	}
	free(cfg->listeners);
	free(cfg->tls.certificate);
	free(cfg->tls.key);
	free(cfg->tls.ciphers);
	free(cfg->tls.ticket_key_file);
	free(cfg->tls.ciphersuites);
	for (i = 0; i < cfg->tls.sni_count; i++) {
		free(cfg->tls.sni[i].certificate);
		free(cfg->tls.sni[i].key);
	}
	free(cfg->tls.sni);
	free(cfg->user);
	free(cfg->group);
	free(cfg->log);
	free(cfg->server_name);
	free(cfg->path);
	free(cfg);
}

struct config *
config_load(const char *path, char **errors_out)
{
	struct loader ld;
	struct config *cfg;
	int r;

	if (errors_out != NULL)
		*errors_out = NULL;
	memset(&ld, 0, sizeof(ld));
	cfg = malloc(sizeof(*cfg));
	if (cfg == NULL)
		return NULL;
	config_defaults(cfg);
	cfg->path = strdup(path);
	if (cfg->path == NULL) {
		free(cfg);
		return NULL;
	}
	ld.cfg = cfg;
	ld.path = cfg->path;
	ld.fp = fopen(path, "r");
	if (ld.fp == NULL) {
		error_at(&ld, 0, "cannot open: %s", strerror(errno));
	} else {
		r = ini_parse_stream(read_line, &ld, on_ini_value, &ld);
		if (ferror(ld.fp))
			error_at(&ld, 0, "read error: %s", strerror(errno));
		else if (r > 0 && ld.syntax_errors == 0)
			error_at(&ld, (unsigned)r, "syntax error");
		else if (r < 0)
			error_at(&ld, 0, "cannot parse (inih error %d)", r);
		(void)fclose(ld.fp);
		free(ld.line);
		if (cfg->log == NULL)
			(void)set_string(&ld, &cfg->log, "stderr");
		if (cfg->tls.ciphers == NULL)
			(void)set_string(&ld, &cfg->tls.ciphers,
			    DEFAULT_CIPHERS);
		validate(&ld);
	}
	if (ld.errors.len > 0 || ld.errors.oom) {
		/* Out of memory, the text is incomplete: none is given. */
		if (errors_out != NULL && !ld.errors.oom)
			*errors_out = ld.errors.text;
		else
			free(ld.errors.text);
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

const char *
config_key_name(size_t i, const char **section_out)
{
	static const struct {
		const char *name;
		const struct option *table;
	} sections[] = {
	    {"global", global_options},
	    {"tls", tls_options},
	    {"listener", listener_options},
	    {"metrics", metrics_options},
	};
	size_t s, n;

	for (s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
		for (n = 0; sections[s].table[n].name != NULL; n++)
			;
		if (i < n) {
			*section_out = sections[s].name;
			return sections[s].table[i].name;
		}
		i -= n;
	}
	return NULL;
}

struct config *
config_ref(struct config *cfg)
{
	atomic_fetch_add(&cfg->refs, 1);
	return cfg;
}

void
config_unref(struct config *cfg)
{
	if (cfg != NULL && atomic_fetch_sub(&cfg->refs, 1) == 1)
		config_free(cfg);
}

/* A listener's own value when it has one, else the [tls] default. */
static const char *
pick(const char *own, const struct config_loc *own_loc, const char *dflt,
    const struct config_loc *dflt_loc, struct config_loc *loc_out)
{
	if (loc_out != NULL)
		*loc_out = own != NULL ? *own_loc : *dflt_loc;
	return own != NULL ? own : dflt;
}

const char *
config_listener_certificate(const struct config *cfg,
    const struct config_listener *l, struct config_loc *loc_out)
{
	return pick(l->certificate, &l->certificate_loc, cfg->tls.certificate,
	    &cfg->tls.certificate_loc, loc_out);
}

const char *
config_listener_key(const struct config *cfg, const struct config_listener *l,
    struct config_loc *loc_out)
{
	return pick(l->key, &l->key_loc, cfg->tls.key, &cfg->tls.key_loc,
	    loc_out);
}

const char *
config_listener_server_name(const struct config *cfg,
    const struct config_listener *l)
{
	return l->server_name != NULL ? l->server_name : cfg->server_name;
}
