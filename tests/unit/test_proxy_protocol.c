/*
 * proxy_protocol: the encoder byte for byte against research/protocols.md
 * §10 and the HAProxy spec (doc/proxy-protocol.txt), and the decoder on
 * every example of the spec, on what the encoder writes, and on the
 * malformed headers a receiver must refuse. Every valid header is also fed
 * one octet at a time (the decoder is given all received so far, so that
 * covers every split into two pieces), and every refused one is checked to
 * be refused from the first octet that cannot start a valid header on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "mailproxy/proxy_protocol.h"

/* What a client sends after the header: must be left alone. */
#define TRAILER "EHLO client.example\r\n"

static const char worked_example[] =
    "0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A 21 11 00 4A"
    "CB 00 71 07 C6 33 64 0A C8 22 03 E1"
    "20 00 28 01 00 00 00 01"
    "21 00 07 54 4C 53 76 31 2E 33"
    "23 00 16 54 4C 53 5F 41 45 53 5F 32 35 36 5F 47 43 4D 5F 53 48 41 33"
    "38 34"
    "02 00 10 6D 61 69 6C 2E 65 78 61 6D 70 6C 65 2E 63 6F 6D";
static const char local_example[] =
    "0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A 20 00 00 00";

static const struct proxy_tls worked_tls = {
    .version = "TLSv1.3",
    .cipher = "TLS_AES_256_GCM_SHA384",
    .sni = "mail.example.com",
};

static size_t
unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;
	unsigned v;

	while (*hex != '\0') {
		if (*hex == ' ') {
			hex++;
			continue;
		}
		assert_int_equal(sscanf(hex, "%2x", &v), 1);
		out[n++] = (uint8_t)v;
		hex += 2;
	}
	return n;
}

static struct sockaddr_storage
sa(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr_un sunix;

	memset(&ss, 0, sizeof(ss));
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	memset(&sunix, 0, sizeof(sunix));
	if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		memcpy(&ss, &sin, sizeof(sin));
	} else if (inet_pton(AF_INET6, ip, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		memcpy(&ss, &sin6, sizeof(sin6));
	} else {
		/* Anything else: a UNIX socket named ip. */
		sunix.sun_family = AF_UNIX;
		snprintf(sunix.sun_path, sizeof(sunix.sun_path), "%s", ip);
		memcpy(&ss, &sunix, sizeof(sunix));
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Asserts that ss is ip:port; ip in inet_ntop's form. */
static void
assert_addr(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	char text[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof(sin));
		assert_non_null(
		    inet_ntop(AF_INET, &sin.sin_addr, text, sizeof(text)));
		assert_int_equal(ntohs(sin.sin_port), port);
	} else {
		assert_int_equal(ss->ss_family, AF_INET6);
		memcpy(&sin6, ss, sizeof(sin6));
		assert_non_null(
		    inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof(text)));
		assert_int_equal(ntohs(sin6.sin6_port), port);
	}
	assert_string_equal(text, ip);
}

/* CRC-32C written apart from the module's, to build test headers. */
static uint32_t
test_crc32c(const uint8_t *p, size_t len)
{
	uint32_t crc = 0xffffffff;
	size_t i;
	int k;

	for (i = 0; i < len; i++) {
		crc ^= p[i];
		for (k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78 : crc >> 1;
	}
	return ~crc;
}

static bool
same_header(const struct proxy_header *a, const struct proxy_header *b)
{
	return a->version == b->version && a->len == b->len &&
	    a->local == b->local && a->ssl == b->ssl &&
	    memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	    memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/*
 * Decodes h[0..len) whole, with a client's first bytes behind it, and one
 * octet at a time; all must agree. Returns the header.
 */
static struct proxy_header
decode_ok(const uint8_t *h, size_t len)
{
	static uint8_t buf[PROXY_HEADER_MAX + sizeof(TRAILER)];
	struct proxy_header whole, part;
	const char *why = "unset";
	size_t k;

	assert_true(len <= PROXY_HEADER_MAX);
	assert_int_equal(proxy_decode(h, len, &whole, &why), PROXY_OK);
	assert_null(why);
	assert_int_equal(whole.len, len);

	memcpy(buf, h, len);
	memcpy(buf + len, TRAILER, sizeof(TRAILER) - 1);
	assert_int_equal(proxy_decode(buf, len + sizeof(TRAILER) - 1, &part,
	                     &why),
	    PROXY_OK);
	assert_true(same_header(&whole, &part));
	assert_memory_equal(buf + len, TRAILER, sizeof(TRAILER) - 1);

	for (k = 0; k < len; k++) {
		why = "unset";
		assert_int_equal(proxy_decode(h, k, &part, &why),
		    PROXY_NEED_MORE);
		assert_null(why);
	}
	return whole;
}

/*
 * Asserts that h[0..len) is refused, and never accepted on the way; with
 * bad_at > 0, that every prefix shorter than bad_at octets is NEED_MORE
 * and every longer one BAD (refused as soon as it cannot be valid).
 */
static void
decode_bad(const char *what, const uint8_t *h, size_t len, size_t bad_at)
{
	struct proxy_header out;
	const char *why;
	enum proxy_status st;
	size_t k;
	bool bad = false;

	for (k = 0; k <= len; k++) {
		why = NULL;
		st = proxy_decode(h, k, &out, &why);
		if (st == PROXY_OK || (bad && st != PROXY_BAD) ||
		    (bad_at > 0 &&
		        st != (k < bad_at ? PROXY_NEED_MORE : PROXY_BAD)))
			print_error("%s: prefix of %zu octets gives %d, "
			            "expected BAD from %zu\n",
			    what, k, (int)st, bad_at);
		assert_int_not_equal(st, PROXY_OK);
		if (st == PROXY_BAD)
			assert_non_null(why);
		if (bad_at > 0)
			assert_int_equal(st,
			    k < bad_at ? PROXY_NEED_MORE : PROXY_BAD);
		if (bad)
			assert_int_equal(st, PROXY_BAD);
		bad = st == PROXY_BAD;
	}
	assert_true(bad);
}

static void
test_proxy_encode_v2_worked_example(void **state)
{
	struct sockaddr_storage src = sa("203.0.113.7", 51234),
	                        dst = sa("198.51.100.10", 993);
	uint8_t want[128], out[PROXY_HEADER_MAX];
	size_t n = unhex(worked_example, want);

	(void)state;
	assert_int_equal(n, 90);
	assert_int_equal(proxy_encode(PROXY_V2, SA(src), SA(dst), &worked_tls,
	                     out),
	    90);
	assert_memory_equal(out, want, 90);
}

static void
test_proxy_encode_v2_local(void **state)
{
	struct sockaddr_storage unix_src = sa("/run/mailproxy.sock", 0),
	                        v4 = sa("198.51.100.10", 993);
	uint8_t want[16], out[PROXY_HEADER_MAX];

	(void)state;
	assert_int_equal(unhex(local_example, want), 16);
	/* Either side not IP: LOCAL, without TLVs, whatever tls says. */
	assert_int_equal(proxy_encode(PROXY_V2, SA(unix_src), SA(v4),
	                     &worked_tls, out),
	    16);
	assert_memory_equal(out, want, 16);
	assert_int_equal(proxy_encode(PROXY_V2, SA(v4), SA(unix_src), NULL,
	                     out),
	    16);
	assert_memory_equal(out, want, 16);
	assert_int_equal(proxy_encode(PROXY_V2, NULL, NULL, NULL, out), 16);
	assert_memory_equal(out, want, 16);
}

static void
test_proxy_encode_off_writes_nothing(void **state)
{
	struct sockaddr_storage v4 = sa("198.51.100.10", 993);
	uint8_t out[PROXY_HEADER_MAX] = {0x5a};

	(void)state;
	assert_int_equal(proxy_encode(PROXY_OFF, SA(v4), SA(v4), NULL, out), 0);
	assert_int_equal(out[0], 0x5a);
}

static const struct v1_encode_case {
	const char *src, *dst;
	unsigned sport, dport;
	const char *line;
} v1_encode_cases[] = {
    {"203.0.113.7", "198.51.100.10", 51234, 993,
        "PROXY TCP4 203.0.113.7 198.51.100.10 51234 993\r\n"},
    {"2001:db8::7", "2001:db8::a", 51234, 993,
        "PROXY TCP6 2001:db8::7 2001:db8::a 51234 993\r\n"},
    {"0.0.0.0", "255.255.255.255", 0, 65535,
        "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535,
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"},
    /* IPv4-mapped addresses go out as IPv4. */
    {"::ffff:203.0.113.7", "::ffff:198.51.100.10", 51234, 993,
        "PROXY TCP4 203.0.113.7 198.51.100.10 51234 993\r\n"},
    {"::ffff:203.0.113.7", "198.51.100.10", 51234, 993,
        "PROXY TCP4 203.0.113.7 198.51.100.10 51234 993\r\n"},
    /* Mixed families: both as IPv6, the IPv4 one mapped. */
    {"203.0.113.7", "2001:db8::a", 51234, 993,
        "PROXY TCP6 ::ffff:203.0.113.7 2001:db8::a 51234 993\r\n"},
    {"2001:db8::7", "::ffff:198.51.100.10", 51234, 993,
        "PROXY TCP6 2001:db8::7 ::ffff:198.51.100.10 51234 993\r\n"},
    /* Not IP (a UNIX socket): UNKNOWN, short form. */
    {"/run/mailproxy.sock", "198.51.100.10", 0, 993, "PROXY UNKNOWN\r\n"},
    {"203.0.113.7", "/run/mailproxy.sock", 51234, 0, "PROXY UNKNOWN\r\n"},
};

static void
test_proxy_encode_v1_exact(void **state)
{
	const struct v1_encode_case *c;
	struct sockaddr_storage src, dst;
	uint8_t out[PROXY_HEADER_MAX];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(v1_encode_cases) / sizeof(*c); i++) {
		c = &v1_encode_cases[i];
		src = sa(c->src, c->sport);
		dst = sa(c->dst, c->dport);
		/* v1 has no room for TLS facts: tls changes nothing. */
		n = proxy_encode(PROXY_V1, SA(src), SA(dst), &worked_tls, out);
		assert_int_equal(n, strlen(c->line));
		assert_true(n <= PROXY_V1_MAX);
		assert_memory_equal(out, c->line, n);
		(void)decode_ok(out, n);
	}
}

static const struct v2_encode_case {
	const char *src, *dst;
	const char *hex; /* after the signature */
} v2_encode_cases[] = {
    {"203.0.113.7", "198.51.100.10",
        "21 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1"},
    {"::ffff:203.0.113.7", "::ffff:198.51.100.10",
        "21 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1"},
    {"2001:db8::7", "2001:db8::a",
        "21 21 00 24 20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 07"
        "20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 0A C8 22 03 E1"},
    {"203.0.113.7", "2001:db8::a",
        "21 21 00 24 00 00 00 00 00 00 00 00 00 00 FF FF CB 00 71 07"
        "20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 0A C8 22 03 E1"},
};

static void
test_proxy_encode_v2_addresses_exact(void **state)
{
	const struct v2_encode_case *c;
	struct sockaddr_storage src, dst;
	uint8_t want[128], out[PROXY_HEADER_MAX];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(v2_encode_cases) / sizeof(*c); i++) {
		c = &v2_encode_cases[i];
		src = sa(c->src, 51234);
		dst = sa(c->dst, 993);
		n = unhex("0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A", want);
		n += unhex(c->hex, want + n);
		/* No TLS facts, no SSL TLV. */
		assert_int_equal(proxy_encode(PROXY_V2, SA(src), SA(dst), NULL,
		                     out),
		    n);
		assert_memory_equal(out, want, n);
	}
}

/* Finds the TLV of the given type among the top-level TLVs of a v2
 * header; its value length in *len, or NULL. */
static const uint8_t *
find_tlv(const uint8_t *h, size_t hlen, uint8_t type, size_t *len)
{
	size_t off = 16 + (h[13] == 0x11 ? 12 : 36), vlen;

	while (off + 3 <= hlen) {
		vlen = (size_t)h[off + 1] << 8 | h[off + 2];
		if (h[off] == type) {
			*len = vlen;
			return h + off + 3;
		}
		off += 3 + vlen;
	}
	return NULL;
}

static void
test_proxy_encode_v2_ssl_only_when_tls(void **state)
{
	struct sockaddr_storage src = sa("203.0.113.7", 51234),
	                        dst = sa("198.51.100.10", 993);
	struct proxy_tls tls = {0};
	struct proxy_header h;
	uint8_t out[PROXY_HEADER_MAX];
	const uint8_t *v;
	size_t n, vlen;

	(void)state;
	/* tls NULL, or version NULL: the client is not on TLS. */
	assert_int_equal(proxy_encode(PROXY_V2, SA(src), SA(dst), NULL, out),
	    28);
	assert_int_equal(proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out),
	    28);
	tls.cipher = "TLS_AES_256_GCM_SHA384";
	assert_int_equal(proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out),
	    28);
	h = decode_ok(out, 28);
	assert_false(h.ssl);

	/* The SNI is a fact of its own: AUTHORITY without SSL. */
	tls.sni = "mail.example.com";
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_int_equal(n, 28 + 3 + 16);
	assert_null(find_tlv(out, n, 0x20, &vlen));
	v = find_tlv(out, n, 0x02, &vlen);
	assert_non_null(v);
	assert_int_equal(vlen, 16);

	/* No cipher: SSL with the version sub-TLV alone. */
	tls.version = "TLSv1.2";
	tls.cipher = NULL;
	tls.sni = NULL;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_int_equal(n, 28 + 3 + 5 + 3 + 7);
	v = find_tlv(out, n, 0x20, &vlen);
	assert_non_null(v);
	assert_int_equal(vlen, 5 + 3 + 7);
	assert_memory_equal(v, "\x01\x00\x00\x00\x01\x21\x00\x07TLSv1.2", 15);
	h = decode_ok(out, n);
	assert_true(h.ssl);
}

static void
test_proxy_encode_v2_tls_strings_bounded(void **state)
{
	struct sockaddr_storage src = sa("ffff:ffff:ffff:ffff::1", 65535),
	                        dst = sa("ffff:ffff:ffff:ffff::2", 65535);
	char longest[256], too_long[257], host[254];
	struct proxy_tls tls = {0};
	uint8_t out[PROXY_HEADER_MAX];
	size_t n, vlen, i;

	(void)state;
	memset(longest, 'A', 255);
	longest[255] = '\0';
	memset(too_long, 'A', 256);
	too_long[256] = '\0';
	/* 253 octets: labels of 63 and a last one of 61. */
	for (i = 0; i < 253; i++)
		host[i] = (i + 1) % 64 == 0 ? '.' : 'a';
	host[253] = '\0';

	/* The largest header the encoder can write fits. */
	tls.version = longest;
	tls.cipher = longest;
	tls.sni = host;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_int_equal(n, 52 + 3 + 5 + 2 * (3 + 255) + 3 + 253);
	assert_true(n <= PROXY_HEADER_MAX);
	(void)decode_ok(out, n);

	/* A cipher name too long for us is left out... */
	tls.cipher = too_long;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_non_null(find_tlv(out, n, 0x20, &vlen));
	assert_int_equal(vlen, 5 + 3 + 255);
	/* ...a version too long or not printable, the whole SSL TLV (the
	 * backend then treats the client as plaintext: the safe side). */
	tls.version = too_long;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_null(find_tlv(out, n, 0x20, &vlen));
	tls.version = "TLS v1.3";
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_null(find_tlv(out, n, 0x20, &vlen));
	tls.version = "";
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_null(find_tlv(out, n, 0x20, &vlen));
}

static const struct sni_case {
	const char *sni;
	bool sent;
} sni_cases[] = {
    {"mail.example.com", true},
    {"MAIL.Example.COM", true},
    {"localhost", true},
    {"a", true},
    {"xn--bcher-kva.example", true},
    {"a-b.example", true},
    {"a--b.example", true},
    {"0mail.example", true},
    {"mail.123example", true},
    {"123.example.com", true},
    {"", false},
    {"mail example.com", false},
    {"mail\x01.example.com", false},
    {"mail.example.com\x7f", false},
    {"mail\t.example.com", false},
    {"mail_1.example.com", false}, /* underscore: DNS yes, host name no */
    {"_dmarc.example.com", false},
    {"-mail.example.com", false},
    {"mail-.example.com", false},
    {"mail.example-", false},
    {"mail..example.com", false},
    {".example.com", false},
    {".", false},
    /* RFC 6066 §3: HostName has no trailing dot. */
    {"mail.example.com.", false},
    /* RFC 6066 §3: no IP literals; RFC 3696 §2: no all-digit TLD. */
    {"192.0.2.1", false},
    {"mail.example.123", false},
    {"[2001:db8::1]", false},
    {"2001:db8::1", false},
    {"b\xc3\xbc"
     "cher.example",
        false}, /* raw UTF-8: an IDN goes as xn-- */
    {"mail.example.com:993", false},
    {"mail/example", false},
};

static void
test_proxy_encode_v2_authority_only_for_host_names(void **state)
{
	struct sockaddr_storage src = sa("203.0.113.7", 51234),
	                        dst = sa("198.51.100.10", 993);
	struct proxy_tls tls = worked_tls;
	char label63[80], label64[80], long_name[300];
	uint8_t out[PROXY_HEADER_MAX];
	const struct sni_case *c;
	const uint8_t *v;
	size_t i, n, vlen, base;

	(void)state;
	tls.sni = NULL;
	base = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_int_equal(base, 90 - 19);
	for (i = 0; i < sizeof(sni_cases) / sizeof(*c); i++) {
		c = &sni_cases[i];
		tls.sni = c->sni;
		n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
		v = find_tlv(out, n, 0x02, &vlen);
		if (c->sent != (v != NULL))
			print_error("SNI \"%s\": expected %s\n", c->sni,
			    c->sent ? "sent" : "not sent");
		assert_int_equal(c->sent, v != NULL);
		assert_int_equal(n, base + (c->sent ? 3 + strlen(c->sni) : 0));
		if (c->sent)
			assert_memory_equal(v, c->sni, vlen);
		/* The SSL TLV goes either way. */
		assert_non_null(find_tlv(out, n, 0x20, &vlen));
		(void)decode_ok(out, n);
	}

	/* Labels up to 63 octets, names up to 253. */
	memset(label63, 'a', 63);
	strcpy(label63 + 63, ".example");
	memset(label64, 'a', 64);
	strcpy(label64 + 64, ".example");
	tls.sni = label63;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_non_null(find_tlv(out, n, 0x02, &vlen));
	tls.sni = label64;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_null(find_tlv(out, n, 0x02, &vlen));
	for (i = 0; i < 254; i++)
		long_name[i] = (i + 1) % 10 == 0 ? '.' : 'a';
	long_name[253] = '\0';
	tls.sni = long_name;
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_non_null(find_tlv(out, n, 0x02, &vlen));
	assert_int_equal(vlen, 253);
	long_name[253] = 'a';
	long_name[254] = '\0';
	n = proxy_encode(PROXY_V2, SA(src), SA(dst), &tls, out);
	assert_null(find_tlv(out, n, 0x02, &vlen));
}

/* Every v1 example of the spec and of protocols.md §10.1, and more. */
static const struct v1_case {
	const char *line;
	bool local;
	const char *src, *dst;
	unsigned sport, dport;
} v1_cases[] = {
    {"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", false, "192.168.0.1",
        "192.168.0.11", 56324, 443},
    {"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", false,
        "255.255.255.255", "255.255.255.255", 65535, 65535},
    {"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        false, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535},
    {"PROXY UNKNOWN\r\n", true, NULL, NULL, 0, 0},
    /* The spec's worst case, 107 octets: the rest is ignored. */
    {"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        true, NULL, NULL, 0, 0},
    {"PROXY UNKNOWN anything at all, even  two spaces\r\n", true, NULL, NULL, 0,
        0},
    {"PROXY TCP4 203.0.113.7 198.51.100.10 51234 993\r\n", false, "203.0.113.7",
        "198.51.100.10", 51234, 993},
    {"PROXY TCP6 2001:db8::7 2001:db8::a 51234 993\r\n", false, "2001:db8::7",
        "2001:db8::a", 51234, 993},
    {"PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n", false, "0.0.0.0", "10.0.0.1", 0, 1},
    /* Upper-case hex, the compressed forms, an embedded IPv4. */
    {"PROXY TCP6 2001:DB8::7 ::1 10 20\r\n", false, "2001:db8::7", "::1", 10,
        20},
    {"PROXY TCP6 :: ::ffff:192.0.2.1 1 2\r\n", false, "::", "::ffff:192.0.2.1",
        1, 2},
};

static void
test_proxy_decode_v1_examples(void **state)
{
	const struct v1_case *c;
	struct proxy_header h;
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof(v1_cases) / sizeof(*c); i++) {
		c = &v1_cases[i];
		len = strlen(c->line);
		assert_true(len <= PROXY_V1_MAX);
		h = decode_ok((const uint8_t *)c->line, len);
		assert_int_equal(h.version, PROXY_V1);
		assert_int_equal(h.local, c->local);
		assert_false(h.ssl);
		if (c->local) {
			assert_int_equal(h.src.ss_family, 0);
			assert_int_equal(h.dst.ss_family, 0);
			continue;
		}
		assert_addr(&h.src, c->src, c->sport);
		assert_addr(&h.dst, c->dst, c->dport);
	}
}

static const struct v2_case {
	const char *hex; /* after the signature */
	bool local, ssl;
	const char *src, *dst;
	unsigned sport, dport;
} v2_cases[] = {
    /* HAProxy's own output, as captured in the wild. */
    {"21 11 00 0C AC 13 00 01 AC 13 00 03 A6 52 00 50", false, false,
        "172.19.0.1", "172.19.0.3", 42578, 80},
    {"21 21 00 24 20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 07"
     "20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 0A C8 22 03 E1",
        false, false, "2001:db8::7", "2001:db8::a", 51234, 993},
    /* LOCAL: the family and block are ignored, whatever they hold. */
    {"20 00 00 00", true, false, NULL, NULL, 0, 0},
    {"20 11 00 0C AC 13 00 01 AC 13 00 03 A6 52 00 50", true, false, NULL, NULL,
        0, 0},
    {"20 FF 00 05 01 02 03 04 05", true, false, NULL, NULL, 0, 0},
    /* PROXY over UNSPEC: the block is opaque. */
    {"21 00 00 00", true, false, NULL, NULL, 0, 0},
    {"21 00 00 03 FF FF FF", true, false, NULL, NULL, 0, 0},
    {"21 10 00 01 FF", true, false, NULL, NULL, 0, 0},
    /* UDP: not ours, so local; TLVs after the block still checked. */
    {"21 12 00 0C AC 13 00 01 AC 13 00 03 A6 52 00 50", true, false, NULL, NULL,
        0, 0},
    {"21 12 00 14 AC 13 00 01 AC 13 00 03 A6 52 00 50 20 00 05 01 00 00 00"
     "01",
        true, true, NULL, NULL, 0, 0},
    /* TLVs skipped: NOOP (empty), custom, future, ALPN, AUTHORITY. */
    {"21 11 00 26 CB 00 71 07 C6 33 64 0A C8 22 03 E1 04 00 00 E0 00 02 AB"
     "CD FF 00 01 00 01 00 04 69 6D 61 70 02 00 04 6D 61 69 6C",
        false, false, "203.0.113.7", "198.51.100.10", 51234, 993},
    /* SSL without the client bit, then with it and unknown sub-TLVs. */
    {"21 11 00 14 CB 00 71 07 C6 33 64 0A C8 22 03 E1 20 00 05 00 00 00 00"
     "00",
        false, false, "203.0.113.7", "198.51.100.10", 51234, 993},
    {"21 11 00 1F CB 00 71 07 C6 33 64 0A C8 22 03 E1 20 00 10 07 00 00 00"
     "00 22 00 01 58 25 00 00 99 00 01 5A",
        false, true, "203.0.113.7", "198.51.100.10", 51234, 993},
};

static void
check_v2_case(const uint8_t *h, size_t len, bool local, bool ssl,
    const char *src, const char *dst, unsigned sport, unsigned dport)
{
	struct proxy_header out = decode_ok(h, len);

	assert_int_equal(out.version, PROXY_V2);
	assert_int_equal(out.local, local);
	assert_int_equal(out.ssl, ssl);
	if (local) {
		assert_int_equal(out.src.ss_family, 0);
		assert_int_equal(out.dst.ss_family, 0);
		return;
	}
	assert_addr(&out.src, src, sport);
	assert_addr(&out.dst, dst, dport);
}

static void
test_proxy_decode_v2_examples(void **state)
{
	const struct v2_case *c;
	uint8_t h[PROXY_HEADER_MAX];
	size_t i, n;

	(void)state;
	n = unhex(worked_example, h);
	check_v2_case(h, n, false, true, "203.0.113.7", "198.51.100.10", 51234,
	    993);
	n = unhex(local_example, h);
	check_v2_case(h, n, true, false, NULL, NULL, 0, 0);
	for (i = 0; i < sizeof(v2_cases) / sizeof(*c); i++) {
		c = &v2_cases[i];
		n = unhex("0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A", h);
		n += unhex(c->hex, h + n);
		check_v2_case(h, n, c->local, c->ssl, c->src, c->dst, c->sport,
		    c->dport);
	}
}

/* A v2 TCP4 header with the given TLVs after the addresses. */
static size_t
v2_with_tlvs(uint8_t *h, const uint8_t *tlvs, size_t n)
{
	size_t len = unhex("0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A 21 11 00 00"
	                   "CB 00 71 07 C6 33 64 0A C8 22 03 E1",
	    h);

	memcpy(h + len, tlvs, n);
	len += n;
	h[14] = (uint8_t)((len - 16) >> 8);
	h[15] = (uint8_t)(len - 16);
	return len;
}

static void
test_proxy_decode_v2_crc32c(void **state)
{
	uint8_t h[PROXY_HEADER_MAX];
	uint8_t tlvs[] = {0x03, 0x00, 0x04, 0, 0, 0, 0, 0x04, 0x00, 0x01, 0x42};
	size_t n;
	uint32_t crc;

	(void)state;
	/* RFC 3720 B.4's check value, so the test's CRC is the right one. */
	assert_int_equal(test_crc32c((const uint8_t *)"123456789", 9),
	    0xe3069283);

	n = v2_with_tlvs(h, tlvs, sizeof(tlvs));
	crc = test_crc32c(h, n);
	h[31] = (uint8_t)(crc >> 24);
	h[32] = (uint8_t)(crc >> 16);
	h[33] = (uint8_t)(crc >> 8);
	h[34] = (uint8_t)crc;
	check_v2_case(h, n, false, false, "203.0.113.7", "198.51.100.10", 51234,
	    993);
	/* One bit off, in the checksum or in what it covers. */
	h[34] ^= 1;
	decode_bad("CRC32C", h, n, n);
	h[34] ^= 1;
	h[n - 1] ^= 0x80;
	decode_bad("CRC32C", h, n, n);
	h[n - 1] ^= 0x80;
	h[16] ^= 0x01;
	decode_bad("CRC32C", h, n, n);
}

static void
test_proxy_decode_v2_longest(void **state)
{
	uint8_t h[PROXY_HEADER_MAX + 1], tlvs[PROXY_HEADER_MAX];
	size_t n, pad = PROXY_HEADER_MAX - 28 - 3;

	(void)state;
	/* A NOOP filling the header to PROXY_HEADER_MAX is fine... */
	memset(tlvs, 0xee, sizeof(tlvs));
	tlvs[0] = 0x04;
	tlvs[1] = (uint8_t)(pad >> 8);
	tlvs[2] = (uint8_t)pad;
	n = v2_with_tlvs(h, tlvs, 3 + pad);
	assert_int_equal(n, PROXY_HEADER_MAX);
	check_v2_case(h, n, false, false, "203.0.113.7", "198.51.100.10", 51234,
	    993);
	/* ...one octet more is refused on its length alone. */
	pad++;
	tlvs[1] = (uint8_t)(pad >> 8);
	tlvs[2] = (uint8_t)pad;
	n = v2_with_tlvs(h, tlvs, 3 + pad);
	assert_int_equal(n, PROXY_HEADER_MAX + 1);
	decode_bad("1025 octets", h, n, 16);
}

/* A literal and its length, NULs included. */
#define TEXT(s) s, sizeof(s) - 1

static const struct bad_case {
	const char *what;
	const char *text; /* octets as they are, or NULL */
	size_t text_len;
	const char *hex; /* v2 after the signature, or NULL */
	size_t bad_at;   /* 0: the whole input; else the first refused
	                  * prefix length (v2: counting the signature) */
} bad_cases[] = {
    /* Not a PROXY header at all: refused on its first octet. */
    {"HTTP", TEXT("GET / HTTP/1.1\r\n"), NULL, 1},
    {"SMTP", TEXT("EHLO client.example\r\n"), NULL, 1},
    {"TLS", TEXT("\x16\x03\x01\x02\x00"), NULL, 1},
    {"lower case", TEXT("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 1},
    {"PROXZ", TEXT("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 5},
    {"tab", TEXT("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 6},
    {"v1 CRLF early", TEXT("PROXY\r\n"), NULL, 7},
    {"v1 empty protocol", TEXT("PROXY \r\n"), NULL, 8},
    {"v1 protocol", TEXT("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 10},
    {"v1 protocol case", TEXT("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 7},
    {"v1 UNKNOWNX", TEXT("PROXY UNKNOWNX\r\n"), NULL, 14},
    {"v1 UNKNOW", TEXT("PROXY UNKNOW\r\n"), NULL, 14},
    {"v1 TCP4 alone", TEXT("PROXY TCP4\r\n"), NULL, 12},
    {"v1 TCP4 space", TEXT("PROXY TCP4 \r\n"), NULL, 13},
    /* Line ends. */
    {"v1 bare LF", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), NULL, 31},
    {"v1 bare CR", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), NULL, 32},
    {"v1 bare CR inside", TEXT("PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n"), NULL,
        20},
    {"v1 CR CR LF", TEXT("PROXY UNKNOWN\r\r\n"), NULL, 15},
    {"v1 LF CR", TEXT("PROXY UNKNOWN\n\r"), NULL, 14},
    {"v1 no CRLF in 107",
        TEXT(
            "PROXY UNKNOWN "
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaaaa"),
        NULL, 107},
    {"v1 108 octets",
        TEXT(
            "PROXY UNKNOWN "
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaaa\r\n"),
        NULL, 107},
    /* Spaces and fields. */
    {"v1 two spaces after PROXY", TEXT("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        NULL, 7},
    {"v1 two spaces before src", TEXT("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
        NULL, 12},
    {"v1 two spaces before dst", TEXT("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
        NULL, 20},
    {"v1 two spaces before dport", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"),
        NULL, 30},
    {"v1 trailing space", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), NULL,
        31},
    {"v1 five fields", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), NULL, 31},
    {"v1 three fields", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), NULL, 30},
    {"v1 NUL", TEXT("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), NULL, 19},
    /* Ports. */
    {"v1 leading zero sport", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), NULL,
        29},
    {"v1 leading zero dport", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 0443\r\n"),
        NULL, 31},
    {"v1 port 00", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n"), NULL, 29},
    {"v1 port 65536", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), NULL, 0},
    {"v1 port 99999", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"), NULL, 0},
    {"v1 port six digits", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n"),
        NULL, 33},
    {"v1 port sign", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), NULL, 28},
    {"v1 port hex", TEXT("PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n"), NULL, 29},
    /* Addresses. */
    {"v1 IPv6 in TCP4", TEXT("PROXY TCP4 ::1 ::1 1 2\r\n"), NULL, 12},
    {"v1 IPv6 in TCP4 late", TEXT("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"),
        NULL, 16},
    {"v1 IPv4 in TCP6", TEXT("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), NULL, 0},
    {"v1 IPv4 leading zero", TEXT("PROXY TCP4 192.168.000.1 1.2.3.4 1 2\r\n"),
        NULL, 0},
    {"v1 IPv4 three parts", TEXT("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), NULL, 0},
    {"v1 IPv4 five parts", TEXT("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), NULL,
        0},
    {"v1 IPv4 256", TEXT("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), NULL, 0},
    {"v1 IPv6 two ::", TEXT("PROXY TCP6 2001::db8::1 ::1 1 2\r\n"), NULL, 0},
    {"v1 IPv6 five digits", TEXT("PROXY TCP6 12345::1 ::1 1 2\r\n"), NULL, 0},
    {"v1 IPv6 scope", TEXT("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), NULL, 19},
    {"v1 IPv6 short", TEXT("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), NULL, 0},
    {"v1 host name", TEXT("PROXY TCP4 localhost 5.6.7.8 1 2\r\n"), NULL, 12},
    /* v2: version, command, family. */
    {"v2 version 1", NULL, 0, "11 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1",
        13},
    {"v2 version 3", NULL, 0, "31 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1",
        13},
    {"v2 version 0", NULL, 0, "01 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1",
        13},
    {"v2 command 2", NULL, 0, "22 11 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1",
        13},
    {"v2 command 15", NULL, 0, "2F 00 00 00", 13},
    {"v2 family 4", NULL, 0, "21 41 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1",
        14},
    {"v2 protocol 3", NULL, 0,
        "21 13 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1", 14},
    /* v2 lengths. */
    {"v2 TCP4 len 11", NULL, 0, "21 11 00 0B CB 00 71 07 C6 33 64 0A C8 22 03",
        16},
    {"v2 TCP4 len 0", NULL, 0, "21 11 00 00", 16},
    {"v2 TCP6 len 35", NULL, 0,
        "21 21 00 23 20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 07"
        "20 01 0D B8 00 00 00 00 00 00 00 00 00 00 00 0A C8 22 03",
        16},
    {"v2 TCP6 len 12", NULL, 0,
        "21 21 00 0C CB 00 71 07 C6 33 64 0A C8 22 03 E1", 16},
    {"v2 UDP4 len 0", NULL, 0, "21 12 00 00", 16},
    {"v2 UNIX len 215", NULL, 0, "21 31 00 D7", 16},
    {"v2 len 1009", NULL, 0, "21 11 03 F1", 16},
    {"v2 LOCAL len 65535", NULL, 0, "20 00 FF FF", 16},
    /* v2 TLVs. */
    {"v2 TLV past the end", NULL, 0,
        "21 11 00 11 CB 00 71 07 C6 33 64 0A C8 22 03 E1 04 00 05 AA BB", 33},
    {"v2 TLV header cut (1)", NULL, 0,
        "21 11 00 0D CB 00 71 07 C6 33 64 0A C8 22 03 E1 04", 29},
    {"v2 TLV header cut (2)", NULL, 0,
        "21 11 00 0E CB 00 71 07 C6 33 64 0A C8 22 03 E1 04 00", 30},
    {"v2 TLV after a good one", NULL, 0,
        "21 11 00 14 CB 00 71 07 C6 33 64 0A C8 22 03 E1 04 00 01 AA 05 01 00"
        "BB",
        36},
    {"v2 SSL too short", NULL, 0,
        "21 11 00 13 CB 00 71 07 C6 33 64 0A C8 22 03 E1 20 00 04 01 00 00 00",
        35},
    {"v2 SSL sub-TLV past the end", NULL, 0,
        "21 11 00 17 CB 00 71 07 C6 33 64 0A C8 22 03 E1 20 00 08 01 00 00 00"
        "01 21 00 05",
        39},
    {"v2 SSL sub-TLV header cut", NULL, 0,
        "21 11 00 16 CB 00 71 07 C6 33 64 0A C8 22 03 E1 20 00 07 01 00 00 00"
        "01 21 00",
        38},
    {"v2 CRC32C of 3", NULL, 0,
        "21 11 00 12 CB 00 71 07 C6 33 64 0A C8 22 03 E1 03 00 03 00 00 00",
        34},
    {"v2 CRC32C wrong", NULL, 0,
        "21 11 00 13 CB 00 71 07 C6 33 64 0A C8 22 03 E1 03 00 04 00 00 00 00",
        35},
    {"v2 TLV in UDP past the end", NULL, 0,
        "21 12 00 0E CB 00 71 07 C6 33 64 0A C8 22 03 E1 04 00", 30},
    /* v2 signature, and v1 meeting it. */
    {"v2 signature cut by v1", TEXT("\r\nPROXY TCP4"), NULL, 3},
    {"v2 signature end", TEXT("\r\n\r\n\0\r\nQUIT\r"), NULL, 12},
};

static void
test_proxy_decode_refuses_bad_headers(void **state)
{
	const struct bad_case *c;
	uint8_t h[PROXY_HEADER_MAX + 64];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(*c); i++) {
		c = &bad_cases[i];
		if (c->text != NULL) {
			n = c->text_len;
			memcpy(h, c->text, n);
		} else {
			n = unhex("0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A", h);
			n += unhex(c->hex, h + n);
		}
		decode_bad(c->what, h, n, c->bad_at);
	}
}

static void
test_proxy_decode_unique_id_limit(void **state)
{
	uint8_t h[PROXY_HEADER_MAX], tlvs[3 + 129];

	(void)state;
	memset(tlvs, 0x42, sizeof(tlvs));
	tlvs[0] = 0x05;
	tlvs[1] = 0;
	tlvs[2] = 128;
	check_v2_case(h, v2_with_tlvs(h, tlvs, 3 + 128), false, false,
	    "203.0.113.7", "198.51.100.10", 51234, 993);
	tlvs[2] = 129;
	decode_bad("UNIQUE_ID of 129", h, v2_with_tlvs(h, tlvs, 3 + 129),
	    28 + 3 + 129);
}

/* Any octet of either signature, changed, is refused right there. */
static void
test_proxy_decode_signature_first_difference(void **state)
{
	uint8_t h[64];
	const char *v1 = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
	size_t i, n;

	(void)state;
	for (i = 0; i < 12; i++) {
		n = unhex(local_example, h);
		h[i] ^= 0x20;
		decode_bad("signature", h, n, i + 1);
	}
	for (i = 0; i < 6; i++) {
		n = strlen(v1);
		memcpy(h, v1, n);
		h[i] = i == 0 ? 'Q' : (uint8_t)(h[i] ^ 0x20);
		decode_bad("signature", h, n, i + 1);
	}
}

/* Whatever the encoder writes, the decoder reads back. */
static void
test_proxy_round_trip(void **state)
{
	static const char *const addrs[][2] = {
	    {"203.0.113.7", "198.51.100.10"},
	    {"2001:db8::7", "2001:db8::a"},
	    {"::ffff:203.0.113.7", "::ffff:198.51.100.10"},
	    {"203.0.113.7", "2001:db8::a"},
	    {"0.0.0.0", "255.255.255.255"},
	    {"::", "::1"},
	};
	static const char *const want[][2] = {
	    {"203.0.113.7", "198.51.100.10"},
	    {"2001:db8::7", "2001:db8::a"},
	    {"203.0.113.7", "198.51.100.10"},
	    {"::ffff:203.0.113.7", "2001:db8::a"},
	    {"0.0.0.0", "255.255.255.255"},
	    {"::", "::1"},
	};
	const struct proxy_tls *tlss[] = {NULL, &worked_tls};
	struct sockaddr_storage src, dst;
	struct proxy_header h;
	uint8_t out[PROXY_HEADER_MAX];
	size_t i, t, n;

	(void)state;
	for (i = 0; i < sizeof(addrs) / sizeof(*addrs); i++) {
		for (t = 0; t < 2; t++) {
			src = sa(addrs[i][0], 51234 + (unsigned)t);
			dst = sa(addrs[i][1], 993);
			n = proxy_encode(PROXY_V1, SA(src), SA(dst), tlss[t],
			    out);
			h = decode_ok(out, n);
			assert_int_equal(h.version, PROXY_V1);
			assert_false(h.local);
			assert_false(h.ssl);
			assert_addr(&h.src, want[i][0], 51234 + (unsigned)t);
			assert_addr(&h.dst, want[i][1], 993);

			n = proxy_encode(PROXY_V2, SA(src), SA(dst), tlss[t],
			    out);
			h = decode_ok(out, n);
			assert_int_equal(h.version, PROXY_V2);
			assert_false(h.local);
			assert_int_equal(h.ssl, tlss[t] != NULL);
			assert_addr(&h.src, want[i][0], 51234 + (unsigned)t);
			assert_addr(&h.dst, want[i][1], 993);
		}
	}
	/* Not IP: local both ways. */
	src = sa("/run/mailproxy.sock", 0);
	n = proxy_encode(PROXY_V1, SA(src), SA(src), NULL, out);
	h = decode_ok(out, n);
	assert_true(h.local);
	assert_int_equal(h.version, PROXY_V1);
	n = proxy_encode(PROXY_V2, SA(src), SA(src), &worked_tls, out);
	h = decode_ok(out, n);
	assert_true(h.local);
	assert_false(h.ssl);
	assert_int_equal(h.version, PROXY_V2);
}

static void
test_proxy_decode_why_is_optional(void **state)
{
	struct proxy_header h;
	const char *why = "unset";

	(void)state;
	assert_int_equal(proxy_decode(NULL, 0, &h, &why), PROXY_NEED_MORE);
	assert_null(why);
	assert_int_equal(proxy_decode((const uint8_t *)"X", 1, &h, NULL),
	    PROXY_BAD);
	assert_int_equal(proxy_decode((const uint8_t *)"X", 1, &h, &why),
	    PROXY_BAD);
	assert_string_equal(why, "not a PROXY protocol header");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proxy_encode_v2_worked_example),
	    cmocka_unit_test(test_proxy_encode_v2_local),
	    cmocka_unit_test(test_proxy_encode_off_writes_nothing),
	    cmocka_unit_test(test_proxy_encode_v1_exact),
	    cmocka_unit_test(test_proxy_encode_v2_addresses_exact),
	    cmocka_unit_test(test_proxy_encode_v2_ssl_only_when_tls),
	    cmocka_unit_test(test_proxy_encode_v2_tls_strings_bounded),
	    cmocka_unit_test(
	        test_proxy_encode_v2_authority_only_for_host_names),
	    cmocka_unit_test(test_proxy_decode_v1_examples),
	    cmocka_unit_test(test_proxy_decode_v2_examples),
	    cmocka_unit_test(test_proxy_decode_v2_crc32c),
	    cmocka_unit_test(test_proxy_decode_v2_longest),
	    cmocka_unit_test(test_proxy_decode_refuses_bad_headers),
	    cmocka_unit_test(test_proxy_decode_unique_id_limit),
	    cmocka_unit_test(test_proxy_decode_signature_first_difference),
	    cmocka_unit_test(test_proxy_round_trip),
	    cmocka_unit_test(test_proxy_decode_why_is_optional),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
