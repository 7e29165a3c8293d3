/*
 * libFuzzer driver for the metrics port's request-head parser (http.h).
 * The same file, linked with replay.c, replays tests/fuzz/corpus/http
 * under ctest.
 *
 * The input is what a client sent first on the metrics port. Besides the
 * sanitizers, the driver checks the parser's contract and aborts when it
 * is broken:
 *   - the answer is one of the five, and never INCOMPLETE once
 *     HTTP_HEAD_MAX octets are there;
 *   - OK means 0 < head_len <= len and HTTP_HEAD_MAX, the head ends with
 *     LF and holds no NUL and no bare CR, the path starts with '/', is
 *     NUL-terminated within HTTP_PATH_MAX + 1 and holds visible ASCII
 *     without '?', the method and minor are in range and agree with the
 *     request line read apart from the parser (after any empty lines:
 *     the method up to SP, then the path), and the head alone parses the
 *     same;
 *   - every answer but INCOMPLETE is final: a prefix of the input gives
 *     INCOMPLETE or the whole input's answer (all prefixes of short
 *     inputs, a sample of long ones, whose every prefix would cost too
 *     much).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailproxy/http.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_http: contract broken: %s\n",    \
			    #cond);                                            \
			abort();                                               \
		}                                                              \
	} while (0)

/* Inputs up to this long have every prefix checked. */
#define EVERY_PREFIX_MAX 512
/* How many prefixes of a longer input are checked. */
#define PREFIX_SAMPLES   64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
same_request(const struct http_request *a, const struct http_request *b)
{
	return a->method == b->method && a->minor == b->minor &&
	    strcmp(a->path, b->path) == 0;
}

static void
check_ok(const char *in, size_t size, const struct http_request *req,
    size_t head_len)
{
	struct http_request again;
	size_t i, again_len = 0, path_len, method_len;
	const char *nul, *line, *sp, *version;

	CHECK(head_len > 0 && head_len <= size && head_len <= HTTP_HEAD_MAX);
	CHECK(in[head_len - 1] == '\n');
	for (i = 0; i < head_len; i++) {
		CHECK(in[i] != '\0');
		if (in[i] == '\r')
			CHECK(i + 1 < head_len && in[i + 1] == '\n');
	}
	nul = memchr(req->path, '\0', sizeof(req->path));
	CHECK(nul != NULL);
	path_len = (size_t)(nul - req->path);
	CHECK(path_len >= 1 && path_len <= HTTP_PATH_MAX);
	CHECK(req->path[0] == '/');
	for (i = 0; i < path_len; i++)
		CHECK(req->path[i] >= 0x21 && req->path[i] <= 0x7e &&
		    req->path[i] != '?');
	CHECK(req->method == HTTP_GET || req->method == HTTP_HEAD ||
	    req->method == HTTP_OTHER);
	CHECK(req->minor == 0 || req->minor == 1);

	/* The request line read apart from the parser. */
	line = in;
	while (line < in + head_len && (*line == '\r' || *line == '\n'))
		line++;
	sp = memchr(line, ' ', head_len - (size_t)(line - in));
	CHECK(sp != NULL);
	method_len = (size_t)(sp - line);
	if (method_len == 3 && memcmp(line, "GET", 3) == 0)
		CHECK(req->method == HTTP_GET);
	else if (method_len == 4 && memcmp(line, "HEAD", 4) == 0)
		CHECK(req->method == HTTP_HEAD);
	else
		CHECK(req->method == HTTP_OTHER);
	CHECK((size_t)(sp - in) + 1 + path_len < head_len);
	CHECK(memcmp(sp + 1, req->path, path_len) == 0);
	CHECK(sp[1 + path_len] == ' ' || sp[1 + path_len] == '?');
	version = memchr(sp + 1, ' ', head_len - (size_t)(sp + 1 - in));
	CHECK(version != NULL && (size_t)(version - in) + 9 < head_len);
	CHECK(memcmp(version, req->minor ? " HTTP/1.1" : " HTTP/1.0", 9) == 0);

	memset(&again, 0, sizeof(again));
	CHECK(http_parse_request(in, head_len, &again, &again_len) == HTTP_OK);
	CHECK(again_len == head_len);
	CHECK(same_request(&again, req));
}

static void
check_prefix(const char *in, size_t k, enum http_result whole,
    const struct http_request *req, size_t head_len)
{
	struct http_request part;
	enum http_result r;
	size_t part_len = 0;

	memset(&part, 0, sizeof(part));
	r = http_parse_request(in, k, &part, &part_len);
	if (r == HTTP_INCOMPLETE)
		return;
	if (r != whole)
		fprintf(stderr, "fuzz_http: %zu octets give %d, all give %d\n",
		    k, (int)r, (int)whole);
	CHECK(r == whole);
	if (r == HTTP_OK) {
		CHECK(part_len == head_len);
		CHECK(same_request(&part, req));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct http_request req;
	enum http_result r;
	size_t head_len = 0, k, i;

	memset(&req, 0, sizeof(req));
	r = http_parse_request(in, size, &req, &head_len);
	CHECK(r == HTTP_INCOMPLETE || r == HTTP_OK || r == HTTP_BAD ||
	    r == HTTP_TOO_LARGE || r == HTTP_VERSION);
	if (size >= HTTP_HEAD_MAX)
		CHECK(r != HTTP_INCOMPLETE);
	if (r == HTTP_OK)
		check_ok(in, size, &req, head_len);

	if (size <= EVERY_PREFIX_MAX) {
		for (k = 0; k < size; k++)
			check_prefix(in, k, r, &req, head_len);
	} else {
		for (i = 0; i < PREFIX_SAMPLES; i++)
			check_prefix(in,
			    size / PREFIX_SAMPLES * i + (size_t)data[i] % 8, r,
			    &req, head_len);
		check_prefix(in, size - 1, r, &req, head_len);
	}
	return 0;
}
