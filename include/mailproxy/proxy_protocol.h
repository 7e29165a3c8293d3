/*
 * The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's
 * specification writes it (research/protocols.md §10): the header
 * mailproxy sends first on a backend connection, and the one it reads
 * from a load balancer before anything else on a client connection.
 *
 * Pure module: no I/O. Addresses are struct sockaddr_in / sockaddr_in6.
 */
#ifndef MAILPROXY_PROXY_PROTOCOL_H
#define MAILPROXY_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A v1 header never exceeds 107 octets, CRLF included (the spec's
 * "108-byte buffer is always enough" counts a NUL). */
#define PROXY_V1_MAX     107
/* The longest header mailproxy accepts (v2: 16 octets, then addresses
 * and TLVs), and the buffer proxy_encode always fits in. */
#define PROXY_HEADER_MAX 1024

enum proxy_version {
	PROXY_OFF,
	PROXY_V1,
	PROXY_V2,
};

/* What mailproxy tells the backend about the client's TLS. */
struct proxy_tls {
	const char *version; /* "TLSv1.3"; NULL: the client is not on TLS */
	const char *cipher;  /* "TLS_AES_256_GCM_SHA384"; may be NULL */
	const char *sni;     /* the client's SNI or NULL; sent as
	                      * PP2_TYPE_AUTHORITY only when it is a valid DNS
	                      * host name (Dovecot drops the connection
	                      * otherwise) */
};

/*
 * Writes the header for a connection from src to dst into out (at least
 * PROXY_HEADER_MAX octets). IPv4-mapped IPv6 addresses are written as IPv4;
 * when the two families still differ, both are written as IPv6 (v4 as
 * ::ffff:a.b.c.d). v2 carries PP2_TYPE_SSL (client bit, verify = 1 as no
 * client certificate is asked, SSL_VERSION and SSL_CIPHER sub-TLVs) when
 * tls->version is set, and PP2_TYPE_AUTHORITY for a valid SNI; tls may be
 * NULL. An address that is neither IPv4 nor IPv6 gives v1 "PROXY UNKNOWN"
 * and v2 LOCAL. Returns the length written.
 */
size_t proxy_encode(enum proxy_version version, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxy_tls *tls, uint8_t *out);

enum proxy_status {
	PROXY_NEED_MORE, /* a valid prefix: read more */
	PROXY_OK,        /* a whole, valid header */
	PROXY_BAD,       /* not a valid header: close the connection */
};

struct proxy_header {
	enum proxy_version version;
	size_t len; /* octets of the header, TLVs included */
	bool local; /* v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or UNIX: no addresses,
	             * the connection's own stand */
	struct sockaddr_storage src, dst; /* when !local */
	bool ssl; /* v2 PP2_TYPE_SSL with the client bit: only for the log,
	           * never trusted */
};

/*
 * Reads the header at the start of in[0..len). Strict as the spec asks: v1
 * only "PROXY TCP4|TCP6 src dst sport dport\r\n" with single spaces, valid
 * addresses of the named family, decimal ports without leading zeros up
 * to 65535, and "PROXY UNKNOWN...\r\n"; v2 only version 2, LOCAL or PROXY,
 * and a length whose address block fits its family; TLVs must be well
 * formed and are otherwise skipped. Anything that cannot start a header
 * (the first octets match neither signature) is PROXY_BAD at once, so a
 * client that speaks first is not waited for. On PROXY_BAD, *why is a
 * static reason for the log ("not a PROXY protocol header", "bad v1
 * address", ...).
 */
enum proxy_status proxy_decode(const uint8_t *in, size_t len,
    struct proxy_header *out, const char **why);

#endif
