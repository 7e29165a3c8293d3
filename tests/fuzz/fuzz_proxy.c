/*
 * libFuzzer driver for the PROXY protocol decoder (proxy_protocol.h). The
 * same file, linked with replay.c, replays tests/fuzz/corpus/proxy under
 * ctest.
 *
 * The input is what a load balancer sent first on a connection. Besides
 * the sanitizers, the driver checks the decoder's contract and aborts when
 * it is broken:
 *   - OK means 0 < len <= the input and PROXY_HEADER_MAX (PROXY_V1_MAX for
 *     v1), BAD comes with a reason and nothing else does;
 *   - the decoder never waits for more than a header can hold: given
 *     PROXY_HEADER_MAX octets (PROXY_V1_MAX for a v1 start) it decides;
 *   - the octets after the header change nothing: the header alone
 *     decodes the same;
 *   - the input fed in two pieces, split anywhere, decodes as it does
 *     whole (the session offers everything received so far, so a first
 *     piece that is not NEED_MORE is the final answer);
 *   - the decoded addresses, encoded again as v1 and v2 (with TLS facts and
 *     an SNI taken from the input), decode to the same addresses, with
 *     IPv4-mapped addresses read as IPv4; and any AUTHORITY the encoder
 *     writes holds only host-name characters.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "mailproxy/proxy_protocol.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_proxy: contract broken: %s\n",   \
			    #cond);                                            \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same_header(const struct proxy_header *a, const struct proxy_header *b)
{
	return a->version == b->version && a->len == b->len &&
	    a->local == b->local && a->ssl == b->ssl &&
	    memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
	    memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/* An address as the encoder sees it: IPv4-mapped IPv6 is IPv4. */
struct endpoint {
	int family;
	uint8_t addr[16];
	uint16_t port;
};

static struct endpoint
endpoint(const struct sockaddr_storage *ss)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
	    0xff};
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct endpoint e;

	memset(&e, 0, sizeof(e));
	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof(sin));
		e.family = AF_INET;
		memcpy(e.addr, &sin.sin_addr, 4);
		e.port = sin.sin_port;
	} else if (ss->ss_family == AF_INET6) {
		memcpy(&sin6, ss, sizeof(sin6));
		e.port = sin6.sin6_port;
		if (memcmp(&sin6.sin6_addr, mapped, 12) == 0) {
			e.family = AF_INET;
			memcpy(e.addr, (const uint8_t *)&sin6.sin6_addr + 12,
			    4);
		} else {
			e.family = AF_INET6;
			memcpy(e.addr, &sin6.sin6_addr, 16);
		}
	}
	return e;
}

static bool
same_endpoint(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	struct endpoint x = endpoint(a), y = endpoint(b);

	return memcmp(&x, &y, sizeof(x)) == 0;
}

/* An oracle apart from the encoder's own rules: the characters alone. */
static bool
host_name_chars(const uint8_t *p, size_t n)
{
	size_t i;

	if (n == 0 || n > 253 || p[n - 1] == '.')
		return false;
	for (i = 0; i < n; i++) {
		if (!((p[i] >= 'a' && p[i] <= 'z') ||
		        (p[i] >= 'A' && p[i] <= 'Z') ||
		        (p[i] >= '0' && p[i] <= '9') || p[i] == '-' ||
		        p[i] == '.'))
			return false;
	}
	return true;
}

static void
check_authority(const uint8_t *h, size_t n)
{
	size_t off, vlen;

	if (h[13] != 0x11 && h[13] != 0x21)
		return;
	off = 16 + (h[13] == 0x11 ? 12 : 36);
	while (off + 3 <= n) {
		vlen = (size_t)h[off + 1] << 8 | h[off + 2];
		CHECK(off + 3 + vlen <= n);
		if (h[off] == 0x02)
			CHECK(host_name_chars(h + off + 3, vlen));
		off += 3 + vlen;
	}
	CHECK(off == n);
}

static void
reencode(const struct proxy_header *h, const uint8_t *data, size_t size)
{
	const struct sockaddr *src = (const struct sockaddr *)&h->src;
	const struct sockaddr *dst = (const struct sockaddr *)&h->dst;
	struct proxy_tls tls = {
	    .version = "TLSv1.3",
	    .cipher = "TLS_AES_128_GCM_SHA256",
	};
	struct proxy_header back;
	uint8_t out[PROXY_HEADER_MAX];
	char sni[300];
	size_t n, i;

	/* The SNI: what follows the header, up to a NUL. */
	for (i = 0; i + 1 < sizeof(sni) && h->len + i < size &&
	     data[h->len + i] != '\0';
	     i++)
		sni[i] = (char)data[h->len + i];
	sni[i] = '\0';
	tls.sni = sni;

	n = proxy_encode(PROXY_V1, src, dst, &tls, out);
	CHECK(n > 0 && n <= PROXY_V1_MAX);
	CHECK(proxy_decode(out, n, &back, NULL) == PROXY_OK);
	CHECK(back.version == PROXY_V1 && back.len == n);
	CHECK(back.local == h->local && !back.ssl);
	if (!h->local) {
		CHECK(same_endpoint(&back.src, &h->src));
		CHECK(same_endpoint(&back.dst, &h->dst));
	}

	n = proxy_encode(PROXY_V2, src, dst, &tls, out);
	CHECK(n >= 16 && n <= PROXY_HEADER_MAX);
	CHECK(proxy_decode(out, n, &back, NULL) == PROXY_OK);
	CHECK(back.version == PROXY_V2 && back.len == n);
	CHECK(back.local == h->local && back.ssl == !h->local);
	if (!h->local) {
		CHECK(same_endpoint(&back.src, &h->src));
		CHECK(same_endpoint(&back.dst, &h->dst));
		check_authority(out, n);
	}

	n = proxy_encode(PROXY_V2, src, dst, NULL, out);
	CHECK(proxy_decode(out, n, &back, NULL) == PROXY_OK);
	CHECK(back.len == n && !back.ssl && back.local == h->local);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header whole, part;
	enum proxy_status st, pst;
	const char *why = "unset";
	size_t k;

	st = proxy_decode(data, size, &whole, &why);
	CHECK(st == PROXY_NEED_MORE || st == PROXY_OK || st == PROXY_BAD);
	CHECK(st == PROXY_BAD ? why != NULL : why == NULL);
	if (size >= PROXY_HEADER_MAX ||
	    (size >= PROXY_V1_MAX && data[0] == 'P'))
		CHECK(st != PROXY_NEED_MORE);
	if (st == PROXY_OK) {
		CHECK(whole.len > 0 && whole.len <= size);
		CHECK(whole.len <= PROXY_HEADER_MAX);
		CHECK(whole.version == PROXY_V1 || whole.version == PROXY_V2);
		if (whole.version == PROXY_V1)
			CHECK(whole.len <= PROXY_V1_MAX && !whole.ssl);
		if (whole.local)
			CHECK(whole.src.ss_family == 0 &&
			    whole.dst.ss_family == 0);
		else
			CHECK((whole.src.ss_family == AF_INET ||
			          whole.src.ss_family == AF_INET6) &&
			    whole.dst.ss_family == whole.src.ss_family);
		CHECK(proxy_decode(data, whole.len, &part, NULL) == PROXY_OK);
		CHECK(same_header(&whole, &part));
	}

	for (k = 0; k < size; k++) {
		pst = proxy_decode(data, k, &part, NULL);
		if (pst == PROXY_NEED_MORE)
			continue;
		if (pst != st)
			fprintf(stderr,
			    "fuzz_proxy: %zu of %zu octets give %d, "
			    "all give %d\n",
			    k, size, (int)pst, (int)st);
		CHECK(pst == st);
		if (st == PROXY_OK)
			CHECK(same_header(&whole, &part));
	}

	if (st == PROXY_OK)
		reencode(&whole, data, size);
	return 0;
}
