/*
 * http: the request-head parser on good requests and on every kind of
 * head it must refuse, and the answer's head byte for byte. Each input is
 * parsed from a heap copy of exactly its length (so ASan sees any read
 * past it), then as every prefix of itself: the parser is given all that
 * was received so far, so that covers every split into pieces. A prefix is
 * INCOMPLETE until the parser can decide, and from then on every longer
 * one gives the same answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailproxy/http.h"

/* What a client might send after its head: must be left alone. */
#define TRAILER "GET /other HTTP/1.1\r\n\r\n"

/* Parses a heap copy of in[0..len), so that a read past len is caught. */
static enum http_result
parse(const char *in, size_t len, struct http_request *out,
    size_t *head_len_out)
{
	char *copy = malloc(len > 0 ? len : 1);
	enum http_result r;

	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, in, len);
	r = http_parse_request(len > 0 ? copy : NULL, len, out, head_len_out);
	free(copy);
	return r;
}

static const char *
result_name(enum http_result r)
{
	switch (r) {
	case HTTP_INCOMPLETE:
		return "INCOMPLETE";
	case HTTP_OK:
		return "OK";
	case HTTP_BAD:
		return "BAD";
	case HTTP_TOO_LARGE:
		return "TOO_LARGE";
	case HTTP_VERSION:
		return "VERSION";
	}
	return "?";
}

/*
 * Asserts that in[0..len) gives want, that every prefix is INCOMPLETE
 * until one decides and every longer one gives want too, and, with at >
 * 0, that the first deciding prefix is at octets long. Returns the
 * request of the whole input.
 */
static struct http_request
check(const char *what, const char *in, size_t len, enum http_result want,
    size_t at)
{
	struct http_request req, part;
	enum http_result r;
	size_t k, head_len = 0, part_len = 0, decided = 0;

	memset(&req, 0, sizeof(req));
	r = parse(in, len, &req, &head_len);
	if (r != want)
		print_error("%s: gives %s, expected %s\n", what, result_name(r),
		    result_name(want));
	assert_int_equal(r, want);
	if (want == HTTP_OK) {
		assert_true(head_len > 0 && head_len <= len);
		assert_true(head_len <= HTTP_HEAD_MAX);
		assert_int_equal(req.path[0], '/');
	}
	for (k = 0; k < len; k++) {
		memset(&part, 0x5a, sizeof(part));
		r = parse(in, k, &part, &part_len);
		if (r == HTTP_INCOMPLETE && decided == 0)
			continue;
		if (decided == 0)
			decided = k;
		if (r != want || (at > 0 && decided != at))
			print_error("%s: prefix of %zu octets gives %s, "
			            "expected %s from %zu\n",
			    what, k, result_name(r), result_name(want), at);
		assert_int_equal(r, want);
		if (want == HTTP_OK) {
			assert_int_equal(part_len, head_len);
			assert_int_equal(part.method, req.method);
			assert_string_equal(part.path, req.path);
			assert_int_equal(part.minor, req.minor);
		}
	}
	if (decided == 0)
		decided = len;
	if (at > 0)
		assert_int_equal(decided, at);
	return req;
}

static const struct good_case {
	const char *what;
	const char *in;
	size_t len; /* 0: strlen(in) */
	enum http_method method;
	const char *path;
	int minor;
	size_t trailing; /* octets after the head */
} good_cases[] = {
    {.what = "GET",
        .in = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n",
        .method = HTTP_GET,
        .path = "/metrics",
        .minor = 1},
    {.what = "HEAD 1.0",
        .in = "HEAD /healthz HTTP/1.0\r\n\r\n",
        .method = HTTP_HEAD,
        .path = "/healthz",
        .minor = 0},
    {.what = "query stripped",
        .in = "GET /metrics?name[]=up&x=%20 HTTP/1.1\r\nHost: a\r\n\r\n",
        .method = HTTP_GET,
        .path = "/metrics",
        .minor = 1},
    {.what = "query only",
        .in = "GET /? HTTP/1.1\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "query with ?",
        .in = "GET /readyz?a?b HTTP/1.1\r\n\r\n",
        .method = HTTP_GET,
        .path = "/readyz",
        .minor = 1},
    {.what = "LF only",
        .in = "GET /readyz HTTP/1.1\nHost: a\nAccept: */*\n\n",
        .method = HTTP_GET,
        .path = "/readyz",
        .minor = 1},
    {.what = "LF and CRLF mixed",
        .in = "GET / HTTP/1.1\nHost: a\r\nX: y\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "four leading empty lines",
        .in = "\r\n\n\r\n\nGET / HTTP/1.1\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "path as sent",
        .in = "GET /a%2Fb/../c HTTP/1.1\r\n\r\n",
        .method = HTTP_GET,
        .path = "/a%2Fb/../c",
        .minor = 1},
    {.what = "other method",
        .in = "POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        .method = HTTP_OTHER,
        .path = "/metrics",
        .minor = 1},
    {.what = "methods are case-sensitive",
        .in = "get / HTTP/1.1\r\n\r\n",
        .method = HTTP_OTHER,
        .path = "/",
        .minor = 1},
    {.what = "HEADER is not HEAD",
        .in = "HEADER / HTTP/1.1\r\n\r\n",
        .method = HTTP_OTHER,
        .path = "/",
        .minor = 1},
    {.what = "GE is not GET",
        .in = "GE / HTTP/1.1\r\n\r\n",
        .method = HTTP_OTHER,
        .path = "/",
        .minor = 1},
    {.what = "method of 16",
        .in = "M-SEARCH_0123456 / HTTP/1.1\r\n\r\n",
        .method = HTTP_OTHER,
        .path = "/",
        .minor = 1},
    {.what = "OWS and empty values",
        .in = "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t b c \t\r\nX-B:\r\n"
              "X-C: \r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "obs-text in a value",
        .in = "GET / HTTP/1.1\r\nUser-Agent: caf\xc3\xa9\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "Content-Length 0",
        .in = "GET / HTTP/1.1\r\ncontent-LENGTH:  0 \r\n"
              "Content-Length: 000\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "names like the body's",
        .in = "GET / HTTP/1.1\r\nContent-Lengthy: 5\r\n"
              "Transfer-Encodings: x\r\nX-Content-Length: 7\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "tchar name",
        .in = "GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: x\r\n\r\n",
        .method = HTTP_GET,
        .path = "/",
        .minor = 1},
    {.what = "bytes after the head",
        .in = "GET / HTTP/1.0\r\n\r\n" TRAILER,
        .method = HTTP_GET,
        .path = "/",
        .minor = 0,
        .trailing = sizeof(TRAILER) - 1},
    {.what = "garbage after the head",
        .in = "GET / HTTP/1.0\n\n\r\x01\0 ",
        .len = 20,
        .method = HTTP_GET,
        .path = "/",
        .minor = 0,
        .trailing = 4},
};

static void
test_http_parse_request_good(void **state)
{
	const struct good_case *c;
	struct http_request req;
	size_t i, len, head_len;

	(void)state;
	for (i = 0; i < sizeof(good_cases) / sizeof(good_cases[0]); i++) {
		c = &good_cases[i];
		len = c->len > 0 ? c->len : strlen(c->in);
		req = check(c->what, c->in, len, HTTP_OK, len - c->trailing);
		assert_int_equal(req.method, c->method);
		assert_string_equal(req.path, c->path);
		assert_int_equal(req.minor, c->minor);
		assert_int_equal(http_parse_request(c->in, len, &req,
		                     &head_len),
		    HTTP_OK);
		assert_int_equal(head_len, len - c->trailing);
		/* head_len_out may be NULL. */
		assert_int_equal(http_parse_request(c->in, len, &req, NULL),
		    HTTP_OK);
	}
}

static const struct bad_case {
	const char *what;
	const char *in;
	size_t len; /* 0: strlen(in) */
	enum http_result want;
	size_t at; /* the shortest prefix that decides; 0: not checked */
} bad_cases[] = {
    /* The first octet cannot start a request: answered at once. */
    {"leading space", " GET / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 1},
    {"NUL first", "\0GET / HTTP/1.1\r\n\r\n", 20, HTTP_BAD, 1},
    {"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11,
        HTTP_BAD, 1},
    {"colon first", ":GET / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 1},
    {"five empty lines", "\r\n\n\r\n\n\r\nGET / HTTP/1.1\r\n\r\n", 0, HTTP_BAD,
        7},
    /* Bare CR and control characters. */
    {"bare CR first", "\rGET / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 2},
    {"bare CR ends the request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 0,
        HTTP_BAD, 16},
    {"bare CR in a value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 0, HTTP_BAD,
        22},
    {"bare CR ends the head", "GET / HTTP/1.1\r\nX: a\r\n\r\r\n", 0, HTTP_BAD,
        24},
    {"CR in a method", "GE\rT / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 3},
    {"CR in a name", "GET / HTTP/1.1\r\nHost\r\n\r\n", 0, HTTP_BAD, 21},
    {"NUL in a value", "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 26, HTTP_BAD, 21},
    {"SOH in a value", "GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", 0, HTTP_BAD, 21},
    {"DEL in a value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 0, HTTP_BAD, 21},
    {"ESC in a value", "GET / HTTP/1.1\r\nX: \x1b[0m\r\n\r\n", 0, HTTP_BAD, 20},
    /* The request line. */
    {"method of 17", "M-SEARCH_01234567 / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 17},
    {"non-token method", "GE(T / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 3},
    {"two SP after the method", "GET  / HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 5},
    {"two SP after the target", "GET /  HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 7},
    {"HT for SP", "GET\t/ HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 4},
    {"SP after the version", "GET / HTTP/1.1 \r\n\r\n", 0, HTTP_BAD, 15},
    {"no target", "GET HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 5},
    {"no version (HTTP/0.9)", "GET /\r\n\r\n", 0, HTTP_BAD, 6},
    {"absolute-form", "GET http://a/ HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 5},
    {"asterisk-form", "OPTIONS * HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 9},
    {"authority-form", "CONNECT a:443 HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 9},
    {"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 9},
    {"DEL in the target", "GET /\x7f HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 6},
    {"HT in the query", "GET /?a\tb HTTP/1.1\r\n\r\n", 0, HTTP_BAD, 8},
    /* The version. */
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, HTTP_VERSION, 16},
    {"HTTP/1.2", "GET / HTTP/1.2\n\n", 0, HTTP_VERSION, 15},
    {"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 0, HTTP_VERSION, 16},
    {"HTTP/9.9 then bad headers", "GET / HTTP/9.9\r\n Host\r\n\r\n", 0,
        HTTP_VERSION, 16},
    {"HTTP/1.10", "GET / HTTP/1.10\r\n\r\n", 0, HTTP_BAD, 15},
    {"HTTP/1", "GET / HTTP/1\r\n\r\n", 0, HTTP_BAD, 13},
    {"HTTP/11", "GET / HTTP/11\r\n\r\n", 0, HTTP_BAD, 13},
    {"lowercase http", "GET / http/1.1\r\n\r\n", 0, HTTP_BAD, 7},
    {"HTTPS/1.1", "GET / HTTPS/1.1\r\n\r\n", 0, HTTP_BAD, 11},
    {"HTTP/a.b", "GET / HTTP/a.b\r\n\r\n", 0, HTTP_BAD, 12},
    {"HTTP/2", "GET / HTTP/2\r\n\r\n", 0, HTTP_BAD, 13},
    /* Header lines. */
    {"SP before the colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, HTTP_BAD,
        21},
    {"HT before the colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 0, HTTP_BAD,
        21},
    {"folding with SP", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 0, HTTP_BAD,
        23},
    {"folding with HT", "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 0, HTTP_BAD,
        23},
    {"folding first", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 0, HTTP_BAD, 17},
    {"empty name", "GET / HTTP/1.1\r\n: a\r\n\r\n", 0, HTTP_BAD, 17},
    {"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 0, HTTP_BAD, 21},
    {"no colon, LF", "GET / HTTP/1.1\nHost\n\n", 0, HTTP_BAD, 20},
    {"non-token name", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 0, HTTP_BAD, 19},
    {"non-ASCII name", "GET / HTTP/1.1\r\nH\xc3\xb6st: a\r\n\r\n", 0, HTTP_BAD,
        18},
    /* Bodies: none, so no smuggling (RFC 9112 §6.3, §11.2). */
    {"Transfer-Encoding",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        "\r\n",
        0, HTTP_BAD, 34},
    {"transfer-encoding, any value",
        "GET / HTTP/1.1\r\ntransfer-ENCODING:\r\n\r\n", 0, HTTP_BAD, 34},
    {"Content-Length 5", "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 0,
        HTTP_BAD, 33},
    {"Content-Length 10", "GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", 0,
        HTTP_BAD, 33},
    {"Content-Length 0, 0", "GET / HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n", 0,
        HTTP_BAD, 34},
    {"Content-Length 0 0", "GET / HTTP/1.1\r\nContent-Length: 0 0\r\n\r\n", 0,
        HTTP_BAD, 35},
    {"Content-Length -0", "GET / HTTP/1.1\r\nContent-Length: -0\r\n\r\n", 0,
        HTTP_BAD, 33},
    {"Content-Length empty", "GET / HTTP/1.1\r\nContent-Length: \r\n\r\n", 0,
        HTTP_BAD, 33},
    {"Content-Length after 0",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\n"
        "Content-Length: 1\r\n\r\n",
        0, HTTP_BAD, 52},
};

static void
test_http_parse_request_bad(void **state)
{
	const struct bad_case *c;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		c = &bad_cases[i];
		check(c->what, c->in, c->len > 0 ? c->len : strlen(c->in),
		    c->want, c->at);
	}
}

/* Appends "X-Header-<n>: v\r\n" lines to a request line in buf. */
static size_t
headers(char *buf, size_t size, unsigned count)
{
	size_t len;
	unsigned i;
	int n;

	len = (size_t)snprintf(buf, size, "GET /metrics HTTP/1.1\r\n");
	for (i = 0; i < count; i++) {
		n = snprintf(buf + len, size - len, "X-Header-%u: v\r\n", i);
		assert_true(n > 0 && (size_t)n < size - len);
		len += (size_t)n;
	}
	assert_true(len + 2 < size);
	memcpy(buf + len, "\r\n", 3);
	return len + 2;
}

static void
test_http_parse_request_header_count(void **state)
{
	static char buf[4096];
	struct http_request req;
	size_t len, line65;

	(void)state;
	len = headers(buf, sizeof(buf), HTTP_HEADERS_MAX);
	req = check("64 headers", buf, len, HTTP_OK, len);
	assert_string_equal(req.path, "/metrics");

	/* Refused at the first octet of the 65th line. */
	len = headers(buf, sizeof(buf), HTTP_HEADERS_MAX + 1);
	line65 = (size_t)(strstr(buf, "X-Header-64:") - buf);
	check("65 headers", buf, len, HTTP_TOO_LARGE, line65 + 1);
}

static void
test_http_parse_request_path_limit(void **state)
{
	static char buf[1024];
	struct http_request req;
	size_t len;

	(void)state;
	/* "/" and 255 more: the longest path. */
	len = (size_t)snprintf(buf, sizeof(buf), "GET /%0*d HTTP/1.1\r\n\r\n",
	    HTTP_PATH_MAX - 1, 0);
	req = check("path of 256", buf, len, HTTP_OK, len);
	assert_int_equal(strlen(req.path), HTTP_PATH_MAX);

	/* A long query does not count. */
	len = (size_t)snprintf(buf, sizeof(buf),
	    "GET /%0*d?%0*d HTTP/1.1\r\n\r\n", HTTP_PATH_MAX - 1, 0, 600, 0);
	req = check("path of 256, query of 600", buf, len, HTTP_OK, len);
	assert_int_equal(strlen(req.path), HTTP_PATH_MAX);

	/* One more: refused at its 257th octet. */
	len = (size_t)snprintf(buf, sizeof(buf), "GET /%0*d HTTP/1.1\r\n\r\n",
	    HTTP_PATH_MAX, 0);
	check("path of 257", buf, len, HTTP_BAD, 4 + HTTP_PATH_MAX + 1);
}

/* A head of exactly size octets: one header padded to fit. */
static size_t
head_of(char *buf, size_t size, const char *end)
{
	static const char start[] = "GET / HTTP/1.1\r\nX: ";
	size_t fill = size - (sizeof(start) - 1) - strlen(end);

	memcpy(buf, start, sizeof(start) - 1);
	memset(buf + sizeof(start) - 1, 'a', fill);
	memcpy(buf + sizeof(start) - 1 + fill, end, strlen(end));
	return size;
}

static void
test_http_parse_request_head_limit(void **state)
{
	static char buf[2 * HTTP_HEAD_MAX];
	struct http_request req;
	size_t len, head_len;

	(void)state;
	/* The longest head, alone and with more behind it. */
	len = head_of(buf, HTTP_HEAD_MAX, "\r\n\r\n");
	check("head of 8192", buf, len, HTTP_OK, len);
	memset(buf + len, 'z', sizeof(buf) - len);
	assert_int_equal(parse(buf, sizeof(buf), &req, &head_len), HTTP_OK);
	assert_int_equal(head_len, HTTP_HEAD_MAX);

	/* One octet more: its last LF is past the limit. */
	len = head_of(buf, HTTP_HEAD_MAX + 1, "\r\n\r\n");
	check("head of 8193", buf, len, HTTP_TOO_LARGE, HTTP_HEAD_MAX);
	len = head_of(buf, HTTP_HEAD_MAX + 1, "\n\n");
	check("head of 8193, LF", buf, len, HTTP_TOO_LARGE, HTTP_HEAD_MAX);

	/* The value's CR as the 8192nd octet: its LF would be the 8193rd. */
	len = head_of(buf, HTTP_HEAD_MAX + 3, "\r\n\r\n");
	assert_int_equal(buf[HTTP_HEAD_MAX - 1], '\r');
	check("CR at the limit", buf, len, HTTP_TOO_LARGE, HTTP_HEAD_MAX);

	/* A head that never ends, and a line that never ends. */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "GET /", 5);
	check("endless target", buf, sizeof(buf), HTTP_BAD,
	    4 + HTTP_PATH_MAX + 1);
	len = head_of(buf, sizeof(buf), "");
	check("endless value", buf, len, HTTP_TOO_LARGE, HTTP_HEAD_MAX);
	assert_int_equal(parse(buf, HTTP_HEAD_MAX - 1, &req, NULL),
	    HTTP_INCOMPLETE);
}

static void
test_http_parse_request_empty(void **state)
{
	struct http_request req;

	(void)state;
	assert_int_equal(http_parse_request(NULL, 0, &req, NULL),
	    HTTP_INCOMPLETE);
	assert_int_equal(http_parse_request("\r", 1, &req, NULL),
	    HTTP_INCOMPLETE);
	assert_int_equal(http_parse_request("\r\n\r\n\r\n\r\n\r", 9, &req,
	                     NULL),
	    HTTP_BAD);
}

/* The receive buffer of a connection, filled in two reads of any size. */
static void
test_http_parse_request_split_anywhere(void **state)
{
	static const char req_text[] =
	    "GET /metrics?x=1 HTTP/1.1\r\nHost: mail.example:9100\r\n"
	    "User-Agent: Prometheus/2.45.0\r\nAccept: text/plain\r\n\r\n";
	struct http_request req;
	char *recv_buf;
	size_t len = sizeof(req_text) - 1, k, head_len;

	(void)state;
	recv_buf = malloc(HTTP_HEAD_MAX);
	assert_non_null(recv_buf);
	for (k = 0; k < len; k++) {
		memset(recv_buf, 0, HTTP_HEAD_MAX);
		memcpy(recv_buf, req_text, k);
		assert_int_equal(http_parse_request(recv_buf, k, &req,
		                     &head_len),
		    HTTP_INCOMPLETE);
		memcpy(recv_buf + k, req_text + k, len - k);
		assert_int_equal(http_parse_request(recv_buf, len, &req,
		                     &head_len),
		    HTTP_OK);
		assert_int_equal(head_len, len);
		assert_int_equal(req.method, HTTP_GET);
		assert_string_equal(req.path, "/metrics");
		assert_int_equal(req.minor, 1);
	}
	free(recv_buf);
}

static void
test_http_format_head_exact(void **state)
{
	static const char want[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
	    "Content-Length: 1234\r\n"
	    "Connection: close\r\n"
	    "Cache-Control: no-store\r\n"
	    "\r\n";
	static const char want_431[] =
	    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Length: 0\r\n"
	    "Connection: close\r\n"
	    "Cache-Control: no-store\r\n"
	    "\r\n";
	char buf[512];

	(void)state;
	assert_int_equal(http_format_head(buf, sizeof(buf), 200,
	                     "text/plain; version=0.0.4; charset=utf-8", 1234),
	    sizeof(want) - 1);
	assert_string_equal(buf, want);
	assert_int_equal(http_format_head(buf, sizeof(buf), 431, "text/plain",
	                     0),
	    sizeof(want_431) - 1);
	assert_string_equal(buf, want_431);
}

static void
test_http_format_head_does_not_fit(void **state)
{
	static const char want[] = "HTTP/1.1 503 Service Unavailable\r\n"
	                           "Content-Type: text/plain\r\n"
	                           "Content-Length: 18446744073709551615\r\n"
	                           "Connection: close\r\n"
	                           "Cache-Control: no-store\r\n"
	                           "\r\n";
	char buf[sizeof(want) + 8];
	size_t n = sizeof(want) - 1;

	(void)state;
	/* Room for the head and its NUL: fits. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(http_format_head(buf, n + 1, 503, "text/plain",
	                     SIZE_MAX),
	    n);
	assert_memory_equal(buf, want, n + 1);
	assert_int_equal(buf[n + 1], 'x');
	/* One short, or none: -1, and nothing past size written. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(http_format_head(buf, n, 503, "text/plain", SIZE_MAX),
	    -1);
	assert_int_equal(buf[n], 'x');
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(http_format_head(buf, 1, 503, "text/plain", 0), -1);
	assert_int_equal(buf[1], 'x');
	assert_int_equal(http_format_head(buf, 0, 503, "text/plain", 0), -1);
}

static void
test_http_reason_all(void **state)
{
	static const struct {
		int status;
		const char *reason;
	} reasons[] = {
	    {200, "OK"},
	    {400, "Bad Request"},
	    {404, "Not Found"},
	    {405, "Method Not Allowed"},
	    {408, "Request Timeout"},
	    {431, "Request Header Fields Too Large"},
	    {500, "Internal Server Error"},
	    {503, "Service Unavailable"},
	    {505, "HTTP Version Not Supported"},
	    {0, "Unknown"},
	    {201, "Unknown"},
	    {418, "Unknown"},
	    {-1, "Unknown"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		assert_string_equal(http_reason(reasons[i].status),
		    reasons[i].reason);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_http_parse_request_good),
	    cmocka_unit_test(test_http_parse_request_bad),
	    cmocka_unit_test(test_http_parse_request_header_count),
	    cmocka_unit_test(test_http_parse_request_path_limit),
	    cmocka_unit_test(test_http_parse_request_head_limit),
	    cmocka_unit_test(test_http_parse_request_empty),
	    cmocka_unit_test(test_http_parse_request_split_anywhere),
	    cmocka_unit_test(test_http_format_head_exact),
	    cmocka_unit_test(test_http_format_head_does_not_fit),
	    cmocka_unit_test(test_http_reason_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
