/*
 * The configuration: an INI file read with inih into an immutable,
 * reference-counted snapshot. Loading runs three of the four phases of
 * STYLE.md §9: defaults, parse, validate across keys. The fourth, building
 * TLS contexts from the certificate files, is tls.c's (tls_ctx_build), so
 * that this module stays pure (libc and inih only).
 *
 * Every error names the file and line it comes from; loading goes on after
 * an error so that one run reports them all.
 */
#ifndef MAILPROXY_CONFIG_H
#define MAILPROXY_CONFIG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mailproxy/proto.h"

/* Where a value was written, for error messages of later phases. */
struct config_loc {
	const char *file; /* the snapshot's path; lives as long as it */
	unsigned line;    /* 0: not set in the file (a default) */
};

enum config_tls_mode {
	CONFIG_TLS_IMPLICIT, /* TLS from the first byte: 993, 995, 465 */
	CONFIG_TLS_STARTTLS, /* 143, 110, 587, 25 */
};

enum config_starttls {
	CONFIG_STARTTLS_REQUIRED, /* nothing but STARTTLS before TLS */
	CONFIG_STARTTLS_OPTIONAL, /* SMTP port 25: plaintext relay allowed */
};

enum config_tls_version {
	CONFIG_TLS_1_2,
	CONFIG_TLS_1_3,
};

enum config_log_format {
	CONFIG_LOG_TEXT, /* key=value */
	CONFIG_LOG_JSON, /* one JSON object per line */
};

/* Diagnostic verbosity, most severe first. */
enum config_log_level {
	CONFIG_LOG_ERROR,
	CONFIG_LOG_WARNING,
	CONFIG_LOG_INFO,
	CONFIG_LOG_DEBUG,
};

/* "[2001:db8::1]:65535" and the like fit, NUL included. */
#define CONFIG_ADDR_TEXT 64

/* A socket address and how it prints in logs. */
struct config_addr {
	struct sockaddr_storage sa;
	socklen_t sa_len;
	char text[CONFIG_ADDR_TEXT];
	struct config_loc loc;
};

enum config_backend_kind {
	CONFIG_BACKEND_ADDR, /* numeric address: connect directly */
	CONFIG_BACKEND_HOST, /* host name: resolved for every session */
	CONFIG_BACKEND_UNIX, /* unix socket path */
};

struct config_backend {
	enum config_backend_kind kind;
	struct config_addr addr; /* ADDR */
	char *host;              /* HOST */
	char port[6];            /* HOST: decimal port */
	char *path;              /* UNIX */
	char *text;              /* as written, for logs */
};

/* One more certificate, chosen when the client's SNI names it. */
struct config_sni_cert {
	char *certificate; /* PEM chain, leaf first */
	char *key;         /* PEM key; may be the certificate's own file */
	struct config_loc loc;
};

struct config_tls {
	char *certificate; /* PEM chain, leaf first */
	struct config_loc certificate_loc;
	char *key;
	struct config_loc key_loc;
	enum config_tls_version min_version;
	char *ciphers; /* TLS 1.2 cipher list (OpenSSL syntax) */
	struct config_loc ciphers_loc;
	char *ciphersuites; /* TLS 1.3 suites (OpenSSL syntax) */
	struct config_loc ciphersuites_loc;
	bool session_tickets;
	struct config_sni_cert *sni; /* in the order written */
	size_t sni_count;
	bool sni_strict;       /* an SNI no certificate names: alert 112 */
	char *ticket_key_file; /* NULL: the master makes the keys */
	struct config_loc ticket_key_file_loc;
	uint64_t set; /* bit i: option i of the [tls] table was given */
};

/* The PROXY protocol header mailproxy sends to the backend. The order is
 * proxy_protocol.h's enum proxy_version. */
enum config_proxy_protocol {
	CONFIG_PROXY_OFF,
	CONFIG_PROXY_V1,
	CONFIG_PROXY_V2,
};

/* One network of trusted_proxies: "10.0.0.0/8", "::1". */
struct config_cidr {
	sa_family_t family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];   /* network order, host bits cleared */
	unsigned bits;
};

struct config_listener {
	char *name;
	struct config_loc loc; /* the [listener NAME] line */
	enum proto protocol;
	enum config_tls_mode tls;
	enum config_starttls starttls;
	char *greeting; /* text of mailproxy's own greeting (STARTTLS) */
	struct config_addr *listen;
	size_t listen_count;
	struct config_backend backend;
	char *certificate; /* NULL: the [tls] one */
	struct config_loc certificate_loc;
	char *key;
	struct config_loc key_loc;
	char *server_name; /* NULL: [global] server_name */
	uint64_t timeout_handshake_ms;
	uint64_t timeout_connect_ms;
	uint64_t timeout_idle_ms;
	uint64_t timeout_linger_ms; /* idle limit once one side is done */
	uint64_t timeout_proxy_ms;  /* for a load balancer's PROXY header */
	/* Before authentication: the backend's greeting and each reply. */
	uint64_t timeout_backend_ms;
	/* From the end of the handshake to authentication (not on
	 * starttls = optional listeners). */
	uint64_t timeout_login_ms;
	enum config_proxy_protocol proxy_protocol;
	bool accept_proxy; /* a PROXY header comes first from the client */
	struct config_cidr *trusted_proxies;
	size_t trusted_proxies_count;
	/* Limits ([global]'s unless set here); 0: none. */
	uint64_t max_sessions;
	uint64_t max_sessions_per_client;
	uint64_t max_connect_rate_per_client; /* per minute */
	uint64_t set;
};

/* [metrics]: the HTTP listener for /metrics, /healthz and /readyz. */
struct config_metrics {
	bool enabled; /* listen was given */
	struct config_addr listen;
	bool readyz_backends; /* /readyz also connects to every backend */
	uint64_t set;
};

struct config {
	atomic_int refs;
	char *path;
	unsigned workers; /* 0: one per CPU */
	char *user;       /* NULL: keep the starting user */
	struct config_loc user_loc;
	char *group;
	struct config_loc group_loc;
	char *log; /* "stderr", "syslog" or a file path */
	enum config_log_format log_format;
	enum config_log_level log_level;
	bool log_connect; /* also a line when a session starts */
	char *server_name;
	uint64_t timeout_handshake_ms;
	uint64_t timeout_connect_ms;
	uint64_t timeout_backend_ms;
	uint64_t timeout_login_ms;
	uint64_t drain_timeout_ms;
	/* A generation replaced by a reload serves its sessions this long. */
	uint64_t reload_drain_timeout_ms;
	uint64_t busy_poll_ms; /* 0: workers sleep in epoll_wait as usual */
	bool reuse_port;       /* share ports with other instances */
	/* Limits, the listeners' defaults; 0: none. max_sessions 0: what
	 * the open-file limit allows. */
	uint64_t max_sessions;
	uint64_t max_sessions_per_client;
	uint64_t max_connect_rate_per_client; /* per minute */
	/* A client is its address with the host bits past these cleared. */
	uint64_t client_ipv4_prefix;
	uint64_t client_ipv6_prefix;
	uint64_t set;
	struct config_tls tls;
	struct config_metrics metrics;
	struct config_listener *listeners;
	size_t listener_count;
};

/* Where the file is looked for when -c is not given. */
#define CONFIG_DEFAULT_PATH "/etc/mailproxy/mailproxy.ini"

/*
 * Reads, parses and validates the file at path. Returns a snapshot with one
 * reference, or NULL; then *errors_out (if errors_out is not NULL) gets a
 * malloc'd text of one line per error, each "FILE:LINE: message" (or
 * "FILE: message"), which the caller frees. On success *errors_out is NULL.
 */
struct config *config_load(const char *path, char **errors_out);

/* Takes another reference; thread-safe. Returns cfg. */
struct config *config_ref(struct config *cfg);

/* Drops a reference and frees at the last one; thread-safe; NULL is fine. */
void config_unref(struct config *cfg);

/* The certificate and key a listener uses (its own or [tls]'s). */
const char *config_listener_certificate(const struct config *cfg,
    const struct config_listener *l, struct config_loc *loc_out);
const char *config_listener_key(const struct config *cfg,
    const struct config_listener *l, struct config_loc *loc_out);

/* The server name a listener announces (its own or [global]'s). */
const char *config_listener_server_name(const struct config *cfg,
    const struct config_listener *l);

/*
 * The i-th key mailproxy knows, from 0, with its section ("global", "tls"
 * or "listener") in *section_out; NULL past the last. Static strings. For
 * checks that the documentation lists every key.
 */
const char *config_key_name(size_t i, const char **section_out);

/*
 * Parsers shared with the tests. Each returns 0 or ERROR_SYNTAX /
 * ERROR_RANGE and never allocates.
 */

/* "90", "90s", "500ms", "5m", "2h" -> milliseconds. A bare number is s. */
int config_parse_duration(const char *s, uint64_t *ms_out);

/* "1.2.3.4:993" or "[::1]:993" -> address; text_out normalised. */
int config_parse_addr(const char *s, struct config_addr *out);

/* "10.0.0.0/8", "2001:db8::/32", "127.0.0.1" (a host) -> network; the
 * host bits are cleared, as nginx's set_real_ip_from does. */
int config_parse_cidr(const char *s, struct config_cidr *out);

/* Whether sa (IPv4, IPv6 or IPv4-mapped IPv6) is in one of the n
 * networks. */
bool config_cidr_match(const struct config_cidr *nets, size_t n,
    const struct sockaddr *sa);

#endif
