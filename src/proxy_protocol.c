/*
 * The PROXY protocol, versions 1 and 2 (HAProxy doc/proxy-protocol.txt,
 * research/protocols.md §10): the encoder that writes the header mailproxy
 * sends first to a backend, and the decoder that reads one from a load
 * balancer before anything else on a client connection.
 *
 * Pure: libc only, no I/O, no allocation, no globals, no logging. The
 * decoder is given everything received so far each time and never reads
 * past the header: what follows belongs to the session. It refuses a
 * prefix as soon as it can no longer become a valid header, because the
 * spec asks receivers to "abort the connection as soon as possible" and a
 * client that speaks first must not be left waiting for a timeout.
 *
 * Where the spec leaves room, the choices are:
 *   - v1 "PROXY UNKNOWN" is followed by CRLF, or by a space and anything
 *     but CR or LF, which is ignored as the spec says; it decodes as local.
 *   - v2 LOCAL ignores the family and the whole block after the 16 octets.
 *     v2 PROXY decodes addresses for TCP over IPv4 and IPv6 only; UNSPEC,
 *     UDP and UNIX fall back to local, as the spec asks of receivers that
 *     do not implement them. Family nibbles above 3 and protocol nibbles
 *     above 2 are refused ("must be rejected as invalid").
 *   - TLVs are checked wherever the address block's size is known (PROXY
 *     with neither family nor protocol UNSPEC): each must fit,
 *     PP2_TYPE_SSL holds at least client and verify and well-formed
 *     sub-TLVs, UNIQUE_ID is at most 128 octets, CRC32C is 4 octets and
 *     must match (the spec's MUST for receivers that support it). Other
 *     types are skipped.
 *   - The encoder sends AUTHORITY only for a DNS host name (see
 *     valid_host_name), and leaves out a TLS version or cipher that is not
 *     1 to 255 printable ASCII octets, so the header always fits in
 *     PROXY_HEADER_MAX. PROXY_OFF writes nothing and returns 0; a NULL
 *     address counts as "neither IPv4 nor IPv6"; v1 ignores tls.
 */
#include "mailproxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define V2_SIG_LEN              12
#define V2_HEADER_LEN           16
#define V2_VERSION              0x20
#define V2_CMD_LOCAL            0x00
#define V2_CMD_PROXY            0x01
#define V2_FAM_UNSPEC           0x00
#define V2_FAM_TCP4             0x11
#define V2_FAM_TCP6             0x21
#define V2_ADDR_LEN_INET        12
#define V2_ADDR_LEN_INET6       36
#define V2_ADDR_LEN_UNIX        216
#define TLV_HEADER_LEN          3
#define PP2_TYPE_AUTHORITY      0x02
#define PP2_TYPE_CRC32C         0x03
#define PP2_TYPE_UNIQUE_ID      0x05
#define PP2_TYPE_SSL            0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CIPHER  0x23
#define PP2_CLIENT_SSL          0x01
#define PP2_SSL_FIXED_LEN       5 /* uint8 client, uint32 verify */
#define UNIQUE_ID_MAX           128
#define TLS_STRING_MAX          255
#define HOST_NAME_MAX_LEN       253
#define HOST_LABEL_MAX          63
/* The longest address in a v1 line: IPv6 with a dotted quad at the end. */
#define V1_ADDR_MAX             45

static const uint8_t v2_sig[V2_SIG_LEN] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";

/* An endpoint reduced to what both versions carry. */
struct endpoint {
	int family; /* AF_INET, AF_INET6 or 0 for anything else */
	uint8_t addr[16];
	uint16_t port; /* network order, as in the sockaddr */
};

static void
load_endpoint(const struct sockaddr *sa, struct endpoint *e)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
	    0xff};

	memset(e, 0, sizeof(*e));
	if (sa == NULL)
		return;
	/* memcpy, not a cast: a struct sockaddr * need not be aligned for
	 * the larger types. */
	if (sa->sa_family == AF_INET) {
		memcpy(&sin, sa, sizeof(sin));
		e->family = AF_INET;
		memcpy(e->addr, &sin.sin_addr, 4);
		e->port = sin.sin_port;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(&sin6, sa, sizeof(sin6));
		e->port = sin6.sin6_port;
		/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d;
		 * backends expect them as IPv4 (Postfix normalises them too,
		 * research/protocols.md §10.2). */
		if (memcmp(&sin6.sin6_addr, mapped, sizeof(mapped)) == 0) {
			e->family = AF_INET;
			memcpy(e->addr, (const uint8_t *)&sin6.sin6_addr + 12,
			    4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &sin6.sin6_addr, 16);
		}
	}
}

/* Writes an IPv4 endpoint as ::ffff:a.b.c.d, to pair it with an IPv6 one. */
static void
map_endpoint(struct endpoint *e)
{
	if (e->family != AF_INET)
		return;
	memmove(e->addr + 12, e->addr, 4);
	memset(e->addr, 0, 10);
	e->addr[10] = 0xff;
	e->addr[11] = 0xff;
	e->family = AF_INET6;
}

/*
 * Whether s may go out as AUTHORITY. RFC 1123 §2.1 host names: labels of
 * 1 to 63 letters, digits and hyphens, not starting or ending with a
 * hyphen, 253 octets in all. So no spaces, control characters, underscores
 * (legal in DNS records, not in host names) or raw UTF-8 (an IDN arrives
 * as its xn-- form). No trailing dot: RFC 6066 §3 sends HostName without
 * one, so a client that adds one is not speaking SNI as written. An
 * all-numeric last label is refused: RFC 6066 §3 forbids IP literals in
 * SNI and RFC 3696 §2 all-numeric top-level labels.
 */
static bool
valid_host_name(const char *s)
{
	size_t i, label = 0, len = strlen(s);
	bool digits_only = true;
	char c;

	if (len == 0 || len > HOST_NAME_MAX_LEN)
		return false;
	for (i = 0; i < len; i++) {
		c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			digits_only = true;
			continue;
		}
		if (c >= '0' && c <= '9') {
			/* stays digits_only */
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			digits_only = false;
		} else if (c == '-') {
			if (label == 0)
				return false;
			digits_only = false;
		} else {
			return false;
		}
		if (++label > HOST_LABEL_MAX)
			return false;
	}
	return label > 0 && s[len - 1] != '-' && !digits_only;
}

/* A TLS version or cipher name fit to send: 1 to 255 printable ASCII. */
static bool
valid_tls_string(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= TLS_STRING_MAX || s[i] <= ' ' || s[i] > '~')
			return false;
	}
	return i > 0;
}

static uint8_t *
put_tlv(uint8_t *p, uint8_t type, const void *value, size_t len)
{
	p[0] = type;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	if (len > 0)
		memcpy(p + TLV_HEADER_LEN, value, len);
	return p + TLV_HEADER_LEN + len;
}

static size_t
encode_v1(const struct endpoint *src, const struct endpoint *dst, char *out)
{
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	int n;

	if (src->family == 0)
		n = snprintf(out, PROXY_HEADER_MAX, "PROXY UNKNOWN\r\n");
	else if (inet_ntop(src->family, src->addr, a, sizeof(a)) == NULL ||
	    inet_ntop(dst->family, dst->addr, b, sizeof(b)) == NULL)
		n = snprintf(out, PROXY_HEADER_MAX, "PROXY UNKNOWN\r\n");
	else
		n = snprintf(out, PROXY_HEADER_MAX, "PROXY %s %s %s %u %u\r\n",
		    src->family == AF_INET ? "TCP4" : "TCP6", a, b,
		    (unsigned)ntohs(src->port), (unsigned)ntohs(dst->port));
	assert(n > 0 && n <= PROXY_V1_MAX);
	return (size_t)n;
}

static size_t
encode_v2(const struct endpoint *src, const struct endpoint *dst,
    const struct proxy_tls *tls, uint8_t *out)
{
	uint8_t *p = out + V2_HEADER_LEN, *ssl;
	size_t alen, len;
	uint8_t verify[4] = {0, 0, 0, 1};

	memcpy(out, v2_sig, V2_SIG_LEN);
	if (src->family == 0) {
		/* LOCAL: the receiver discards the block, so send none. */
		out[12] = V2_VERSION | V2_CMD_LOCAL;
		out[13] = V2_FAM_UNSPEC;
		out[14] = 0;
		out[15] = 0;
		return V2_HEADER_LEN;
	}
	out[12] = V2_VERSION | V2_CMD_PROXY;
	out[13] = src->family == AF_INET ? V2_FAM_TCP4 : V2_FAM_TCP6;
	alen = src->family == AF_INET ? 4 : 16;
	memcpy(p, src->addr, alen);
	memcpy(p + alen, dst->addr, alen);
	p += 2 * alen;
	/* Ports are in network order already. */
	memcpy(p, &src->port, 2);
	memcpy(p + 2, &dst->port, 2);
	p += 4;

	if (tls != NULL && tls->version != NULL &&
	    valid_tls_string(tls->version)) {
		/* client = PP2_CLIENT_SSL and verify = 1: no client
		 * certificate was asked for, so none was verified (nginx
		 * sends X509_V_ERR_UNSPECIFIED the same way). */
		ssl = p;
		p += TLV_HEADER_LEN;
		*p++ = PP2_CLIENT_SSL;
		memcpy(p, verify, sizeof(verify));
		p += sizeof(verify);
		p = put_tlv(p, PP2_SUBTYPE_SSL_VERSION, tls->version,
		    strlen(tls->version));
		if (tls->cipher != NULL && valid_tls_string(tls->cipher))
			p = put_tlv(p, PP2_SUBTYPE_SSL_CIPHER, tls->cipher,
			    strlen(tls->cipher));
		len = (size_t)(p - ssl) - TLV_HEADER_LEN;
		ssl[0] = PP2_TYPE_SSL;
		ssl[1] = (uint8_t)(len >> 8);
		ssl[2] = (uint8_t)len;
	}
	/* Dovecot drops the connection over an AUTHORITY that is not a DNS
	 * name (research/protocols.md §10.2). */
	if (tls != NULL && tls->sni != NULL && valid_host_name(tls->sni))
		p = put_tlv(p, PP2_TYPE_AUTHORITY, tls->sni, strlen(tls->sni));

	len = (size_t)(p - out);
	assert(len <= PROXY_HEADER_MAX);
	out[14] = (uint8_t)((len - V2_HEADER_LEN) >> 8);
	out[15] = (uint8_t)(len - V2_HEADER_LEN);
	return len;
}

size_t
proxy_encode(enum proxy_version version, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxy_tls *tls, uint8_t *out)
{
	struct endpoint s, d;

	assert(out != NULL);
	if (version == PROXY_OFF)
		return 0;
	load_endpoint(src, &s);
	load_endpoint(dst, &d);
	if (s.family == 0 || d.family == 0) {
		s.family = 0;
		d.family = 0;
	} else if (s.family != d.family) {
		map_endpoint(&s);
		map_endpoint(&d);
	}
	if (version == PROXY_V1)
		return encode_v1(&s, &d, (char *)out);
	return encode_v2(&s, &d, tls, out);
}

/* Whether the first n octets of p agree with word, as far as both go. */
static bool
agrees(const uint8_t *p, size_t n, const char *word)
{
	size_t i;

	for (i = 0; i < n && word[i] != '\0'; i++) {
		if (p[i] != (uint8_t)word[i])
			return false;
	}
	return true;
}

static bool
is_addr_char(uint8_t c, int family)
{
	if (c >= '0' && c <= '9')
		return true;
	if (c == '.')
		return true; /* IPv6 may end in a dotted quad */
	if (family == AF_INET)
		return false;
	return c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool
parse_v1_addr(const uint8_t *p, size_t n, int family, uint16_t port,
    struct sockaddr_storage *out)
{
	char text[V1_ADDR_MAX + 1];
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	if (n == 0 || n > V1_ADDR_MAX)
		return false;
	memcpy(text, p, n);
	text[n] = '\0';
	/* glibc's inet_pton refuses leading zeros in IPv4 parts and more
	 * than four hex digits in an IPv6 group, as the spec asks. */
	if (family == AF_INET) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		if (inet_pton(AF_INET, text, &sin.sin_addr) != 1)
			return false;
		memcpy(out, &sin, sizeof(sin));
	} else {
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		if (inet_pton(AF_INET6, text, &sin6.sin6_addr) != 1)
			return false;
		memcpy(out, &sin6, sizeof(sin6));
	}
	return true;
}

/* A decimal port, 0 to 65535, without leading zeros. */
static bool
parse_v1_port(const uint8_t *p, size_t n, uint16_t *out)
{
	unsigned long v = 0;
	size_t i;

	if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/*
 * "TCP4 " or "TCP6 " is behind; p[0..n) is the rest of the line so far,
 * whole when complete. Each octet is checked as it arrives: an address
 * character of the wrong family, a second space or a fifth field ends it
 * at once.
 */
static enum proxy_status
decode_v1_tcp(const uint8_t *p, size_t n, bool complete, int family,
    struct proxy_header *out, const char **why)
{
	size_t start[4] = {0}, end[4] = {0}, i, field = 0, flen = 0;
	uint16_t sport, dport;

	for (i = 0; i < n; i++) {
		if (p[i] == ' ') {
			if (flen == 0 || field == 3) {
				*why = "bad v1 field separator";
				return PROXY_BAD;
			}
			end[field] = i;
			start[++field] = i + 1;
			flen = 0;
			continue;
		}
		flen++;
		if (field < 2 &&
		    (!is_addr_char(p[i], family) || flen > V1_ADDR_MAX)) {
			*why = "bad v1 address";
			return PROXY_BAD;
		}
		/* Ports: digits, at most 5, no leading zero. */
		if (field >= 2 &&
		    (p[i] < '0' || p[i] > '9' || flen > 5 ||
		        (flen == 2 && p[i - 1] == '0'))) {
			*why = "bad v1 port";
			return PROXY_BAD;
		}
	}
	if (!complete)
		return PROXY_NEED_MORE;
	if (field != 3 || flen == 0) {
		*why = "bad v1 field separator";
		return PROXY_BAD;
	}
	end[3] = n;
	if (!parse_v1_port(p + start[2], end[2] - start[2], &sport) ||
	    !parse_v1_port(p + start[3], end[3] - start[3], &dport)) {
		*why = "bad v1 port";
		return PROXY_BAD;
	}
	if (!parse_v1_addr(p, end[0], family, sport, &out->src) ||
	    !parse_v1_addr(p + start[1], end[1] - start[1], family, dport,
	        &out->dst)) {
		*why = "bad v1 address";
		return PROXY_BAD;
	}
	return PROXY_OK;
}

static enum proxy_status
decode_v1(const uint8_t *in, size_t len, struct proxy_header *out,
    const char **why)
{
	size_t n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX, i, end = 0, m;
	const uint8_t *p;
	enum proxy_status st;
	bool complete;

	/* "The receiver must not tolerate a single CR or LF character to
	 * end the line", and the CRLF is within the first 107 octets. */
	for (i = 0; i < n; i++) {
		if (in[i] == '\n') {
			if (i == 0 || in[i - 1] != '\r') {
				*why = "bare LF in v1 header";
				return PROXY_BAD;
			}
			end = i + 1;
			break;
		}
		if (i > 0 && in[i - 1] == '\r') {
			*why = "bare CR in v1 header";
			return PROXY_BAD;
		}
	}
	if (end == 0 && len >= PROXY_V1_MAX) {
		*why = "no CRLF in the first 107 octets of a v1 header";
		return PROXY_BAD;
	}
	complete = end > 0;
	/* The line without its CRLF (or without a CR that may be one). */
	m = complete ? end - 2 : len;
	if (!complete && in[len - 1] == '\r')
		m--;

	if (!agrees(in, m, v1_sig)) {
		*why = "not a PROXY protocol header";
		return PROXY_BAD;
	}
	if (m < sizeof(v1_sig) - 1) {
		if (!complete)
			return PROXY_NEED_MORE;
		*why = "truncated v1 header";
		return PROXY_BAD;
	}
	p = in + sizeof(v1_sig) - 1;
	m -= sizeof(v1_sig) - 1;

	if (agrees(p, m, "UNKNOWN")) {
		/* The spec: "the receiver must ignore anything presented
		 * before the CRLF", after a space. */
		if (m > 7 && p[7] != ' ') {
			*why = "bad v1 protocol";
			return PROXY_BAD;
		}
		if (m < 7 || !complete) {
			if (!complete)
				return PROXY_NEED_MORE;
			*why = "bad v1 protocol";
			return PROXY_BAD;
		}
		st = PROXY_OK;
		out->local = true;
	} else if (agrees(p, m, "TCP4 ") || agrees(p, m, "TCP6 ")) {
		if (m < 5) {
			if (!complete)
				return PROXY_NEED_MORE;
			*why = "bad v1 protocol";
			return PROXY_BAD;
		}
		st = decode_v1_tcp(p + 5, m - 5, complete,
		    p[3] == '4' ? AF_INET : AF_INET6, out, why);
	} else {
		*why = "bad v1 protocol";
		return PROXY_BAD;
	}
	if (st == PROXY_OK) {
		out->version = PROXY_V1;
		out->len = end;
	}
	return st;
}

/* CRC-32C (Castagnoli, RFC 4960 appendix B), the value of the CRC32C TLV
 * at offset at taken as zero. Bitwise: headers are short and rare. */
static uint32_t
crc32c(const uint8_t *p, size_t len, size_t at)
{
	uint32_t crc = 0xffffffff;
	size_t i;
	int k;

	for (i = 0; i < len; i++) {
		crc ^= i >= at && i < at + 4 ? 0 : p[i];
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78 & (0U - (crc & 1)));
	}
	return ~crc;
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Whether p[0..len) is a sequence of whole TLVs. */
static bool
tlvs_fit(const uint8_t *p, size_t len)
{
	size_t off = 0, vlen;

	while (off < len) {
		if (len - off < TLV_HEADER_LEN)
			return false;
		vlen = (size_t)p[off + 1] << 8 | p[off + 2];
		if (vlen > len - off - TLV_HEADER_LEN)
			return false;
		off += TLV_HEADER_LEN + vlen;
	}
	return true;
}

/* Checks the TLVs in hdr[off..len) (hdr is the whole header). */
static bool
check_tlvs(const uint8_t *hdr, size_t len, size_t off, bool *ssl)
{
	const uint8_t *v;
	size_t vlen;

	if (!tlvs_fit(hdr + off, len - off))
		return false;
	while (off < len) {
		v = hdr + off + TLV_HEADER_LEN;
		vlen = (size_t)hdr[off + 1] << 8 | hdr[off + 2];
		switch (hdr[off]) {
		case PP2_TYPE_SSL:
			if (vlen < PP2_SSL_FIXED_LEN ||
			    !tlvs_fit(v + PP2_SSL_FIXED_LEN,
			        vlen - PP2_SSL_FIXED_LEN))
				return false;
			if (v[0] & PP2_CLIENT_SSL)
				*ssl = true;
			break;
		case PP2_TYPE_CRC32C:
			if (vlen != 4 ||
			    crc32c(hdr, len, (size_t)(v - hdr)) != get32(v))
				return false;
			break;
		case PP2_TYPE_UNIQUE_ID:
			if (vlen > UNIQUE_ID_MAX)
				return false;
			break;
		default:
			break;
		}
		off += TLV_HEADER_LEN + vlen;
	}
	return true;
}

static void
v2_addresses(const uint8_t *p, bool inet6, struct proxy_header *out)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	size_t alen = inet6 ? 16 : 4;
	int i;

	for (i = 0; i < 2; i++) {
		if (inet6) {
			memset(&sin6, 0, sizeof(sin6));
			sin6.sin6_family = AF_INET6;
			memcpy(&sin6.sin6_addr, p + i * alen, alen);
			memcpy(&sin6.sin6_port, p + 2 * alen + i * 2, 2);
			memcpy(i == 0 ? &out->src : &out->dst, &sin6,
			    sizeof(sin6));
		} else {
			memset(&sin, 0, sizeof(sin));
			sin.sin_family = AF_INET;
			memcpy(&sin.sin_addr, p + i * alen, alen);
			memcpy(&sin.sin_port, p + 2 * alen + i * 2, 2);
			memcpy(i == 0 ? &out->src : &out->dst, &sin,
			    sizeof(sin));
		}
	}
}

static enum proxy_status
decode_v2(const uint8_t *in, size_t len, struct proxy_header *out,
    const char **why)
{
	size_t total, need = 0;
	uint8_t cmd, fam;

	if (memcmp(in, v2_sig, len < V2_SIG_LEN ? len : V2_SIG_LEN) != 0) {
		*why = "not a PROXY protocol header";
		return PROXY_BAD;
	}
	if (len <= V2_SIG_LEN)
		return PROXY_NEED_MORE;
	if ((in[12] & 0xf0) != V2_VERSION) {
		*why = "bad v2 version";
		return PROXY_BAD;
	}
	cmd = in[12] & 0x0f;
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY) {
		*why = "bad v2 command";
		return PROXY_BAD;
	}
	if (len < 14)
		return PROXY_NEED_MORE;
	fam = in[13];
	if (cmd == V2_CMD_PROXY) {
		if ((fam >> 4) > 3 || (fam & 0x0f) > 2) {
			*why = "bad v2 address family";
			return PROXY_BAD;
		}
		/* The address block's size, known for every family but
		 * UNSPEC (protocol UNSPEC leaves it unknown too). */
		if ((fam & 0x0f) != 0) {
			switch (fam >> 4) {
			case 1:
				need = V2_ADDR_LEN_INET;
				break;
			case 2:
				need = V2_ADDR_LEN_INET6;
				break;
			case 3:
				need = V2_ADDR_LEN_UNIX;
				break;
			default:
				break;
			}
		}
	}
	if (len < V2_HEADER_LEN)
		return PROXY_NEED_MORE;
	total = V2_HEADER_LEN + ((size_t)in[14] << 8 | in[15]);
	if (total > PROXY_HEADER_MAX) {
		*why = "v2 header too long";
		return PROXY_BAD;
	}
	if (total - V2_HEADER_LEN < need) {
		*why = "v2 length too short for its address family";
		return PROXY_BAD;
	}
	if (len < total)
		return PROXY_NEED_MORE;

	if (need > 0 &&
	    !check_tlvs(in, total, V2_HEADER_LEN + need, &out->ssl)) {
		*why = "bad v2 TLV";
		return PROXY_BAD;
	}
	if (cmd == V2_CMD_PROXY && (fam == V2_FAM_TCP4 || fam == V2_FAM_TCP6))
		v2_addresses(in + V2_HEADER_LEN, fam == V2_FAM_TCP6, out);
	else
		out->local = true;
	out->version = PROXY_V2;
	out->len = total;
	return PROXY_OK;
}

enum proxy_status
proxy_decode(const uint8_t *in, size_t len, struct proxy_header *out,
    const char **why)
{
	const char *reason = NULL;
	enum proxy_status st;

	assert(out != NULL);
	assert(in != NULL || len == 0);
	memset(out, 0, sizeof(*out));
	if (len == 0)
		st = PROXY_NEED_MORE;
	else if (in[0] == (uint8_t)v1_sig[0])
		st = decode_v1(in, len, out, &reason);
	else if (in[0] == v2_sig[0])
		st = decode_v2(in, len, out, &reason);
	else {
		reason = "not a PROXY protocol header";
		st = PROXY_BAD;
	}
	if (st != PROXY_OK)
		memset(out, 0, sizeof(*out));
	if (why != NULL)
		*why = st == PROXY_BAD ? reason : NULL;
	return st;
}
