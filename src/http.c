/*
 * The request head of the metrics port and the head of its answers (see
 * http.h). The parser is one pass of a state machine over the octets
 * received so far, so that it can refuse a wrong head at its first wrong
 * octet and needs no state between calls: the caller offers everything
 * again after each read.
 *
 * Pure: libc only, no state, no I/O. Must not: allocate, log, read past
 * len or HTTP_HEAD_MAX, or write *out before the head is whole.
 */
#include "mailproxy/http.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum state {
	S_START,   /* before the request line: empty lines, the method */
	S_METHOD,  /* in the method */
	S_TARGET,  /* after the method's SP: the target's '/' */
	S_PATH,    /* in the path */
	S_QUERY,   /* in the query, after '?' */
	S_VERSION, /* after the target's SP: "HTTP/d.d" */
	S_LINE,    /* at the start of a header line, or the empty line */
	S_NAME,    /* in a field name */
	S_VALUE,   /* after the colon: OWS value OWS */
};

/* The fields that could announce a body (RFC 9112 §6.3). */
enum field {
	F_OTHER,
	F_CONTENT_LENGTH,
	F_TRANSFER_ENCODING,
};

enum step {
	STEP_MORE,
	STEP_DONE,
	STEP_BAD,
	STEP_VERSION,
	STEP_TOO_LARGE,
};

struct parse {
	const char *p;
	enum state state;
	size_t method_start, method_len;
	size_t path_start, path_len;
	size_t name_start;
	unsigned empty_lines, header_lines;
	unsigned version_pos;
	int major, minor;
	enum field field;
	bool value_digits;   /* Content-Length: a digit seen */
	bool value_trailing; /* Content-Length: OWS after the digits */
};

/* RFC 9110 §5.6.2 tchar. */
static bool
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Whether p[0..n) is the lowercase name w, ignoring ASCII case. */
static bool
name_is(const char *p, size_t n, const char *w)
{
	size_t i;
	unsigned char c;

	if (strlen(w) != n)
		return false;
	for (i = 0; i < n; i++) {
		c = (unsigned char)p[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (c != (unsigned char)w[i])
			return false;
	}
	return true;
}

/*
 * Takes the octet c at offset i; a CRLF comes as one '\n'. Returns what it
 * decided.
 */
static enum step
step(struct parse *ps, unsigned char c, size_t i)
{
	static const unsigned char http_name[] = "HTTP/";
	const char *name;

	switch (ps->state) {
	case S_START:
		if (c == '\n') {
			/* RFC 9112 §2.2: a few, not a stream of them. */
			if (++ps->empty_lines > HTTP_EMPTY_MAX)
				return STEP_BAD;
			return STEP_MORE;
		}
		if (!is_tchar(c))
			return STEP_BAD;
		ps->method_start = i;
		ps->state = S_METHOD;
		return STEP_MORE;
	case S_METHOD:
		if (c == ' ') {
			ps->method_len = i - ps->method_start;
			ps->state = S_TARGET;
			return STEP_MORE;
		}
		if (!is_tchar(c) || i - ps->method_start >= HTTP_METHOD_MAX)
			return STEP_BAD;
		return STEP_MORE;
	case S_TARGET:
		/* Origin-form only (RFC 9112 §3.2.1): absolute-form is
		 * for proxies, authority-form for CONNECT, '*' for
		 * OPTIONS; none is ours. */
		if (c != '/')
			return STEP_BAD;
		ps->path_start = i;
		ps->state = S_PATH;
		return STEP_MORE;
	case S_PATH:
	case S_QUERY:
		if (c == ' ') {
			if (ps->state == S_PATH)
				ps->path_len = i - ps->path_start;
			ps->version_pos = 0;
			ps->state = S_VERSION;
			return STEP_MORE;
		}
		if (c < 0x21 || c > 0x7e)
			return STEP_BAD;
		if (ps->state == S_QUERY)
			return STEP_MORE;
		if (c == '?') {
			ps->path_len = i - ps->path_start;
			ps->state = S_QUERY;
			return STEP_MORE;
		}
		if (i - ps->path_start >= HTTP_PATH_MAX)
			return STEP_BAD;
		return STEP_MORE;
	case S_VERSION:
		/* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive
		 * (RFC 9112 §2.3). */
		switch (ps->version_pos++) {
		case 0:
		case 1:
		case 2:
		case 3:
		case 4:
			if (c != http_name[ps->version_pos - 1])
				return STEP_BAD;
			return STEP_MORE;
		case 5:
			ps->major = c - '0';
			return is_digit(c) ? STEP_MORE : STEP_BAD;
		case 6:
			return c == '.' ? STEP_MORE : STEP_BAD;
		case 7:
			ps->minor = c - '0';
			return is_digit(c) ? STEP_MORE : STEP_BAD;
		default:
			if (c != '\n')
				return STEP_BAD;
			if (ps->major != 1 || ps->minor > 1)
				return STEP_VERSION;
			ps->state = S_LINE;
			return STEP_MORE;
		}
	case S_LINE:
		if (c == '\n')
			return STEP_DONE;
		/* A line starting with SP or HT is obsolete folding,
		 * refused (RFC 9112 §5.2); so is an empty name. */
		if (!is_tchar(c))
			return STEP_BAD;
		if (++ps->header_lines > HTTP_HEADERS_MAX)
			return STEP_TOO_LARGE;
		ps->name_start = i;
		ps->state = S_NAME;
		return STEP_MORE;
	case S_NAME:
		if (is_tchar(c))
			return STEP_MORE;
		/* No whitespace between name and colon (RFC 9112 §5.1):
		 * one of the ways to smuggle a header past a proxy. */
		if (c != ':')
			return STEP_BAD;
		ps->field = F_OTHER;
		name = ps->p + ps->name_start;
		if (name_is(name, i - ps->name_start, "content-length"))
			ps->field = F_CONTENT_LENGTH;
		else if (name_is(name, i - ps->name_start, "transfer-encoding"))
			return STEP_BAD;
		ps->value_digits = false;
		ps->value_trailing = false;
		ps->state = S_VALUE;
		return STEP_MORE;
	case S_VALUE:
		if (c == '\n') {
			if (ps->field == F_CONTENT_LENGTH && !ps->value_digits)
				return STEP_BAD;
			ps->state = S_LINE;
			return STEP_MORE;
		}
		if (c == ' ' || c == '\t') {
			if (ps->value_digits)
				ps->value_trailing = true;
			return STEP_MORE;
		}
		/* field-vchar: VCHAR and obs-text (RFC 9110 §5.5). */
		if (c < 0x21 || c == 0x7f)
			return STEP_BAD;
		/* We never read a body: only a Content-Length of 0 (in
		 * any number of zeros, as 1*DIGIT allows) is let in. */
		if (ps->field == F_CONTENT_LENGTH) {
			if (c != '0' || ps->value_trailing)
				return STEP_BAD;
			ps->value_digits = true;
		}
		return STEP_MORE;
	}
	return STEP_BAD;
}

/* Copies what a whole head says into out. */
static void
fill(const struct parse *ps, struct http_request *out)
{
	const char *method = ps->p + ps->method_start;

	out->method = HTTP_OTHER;
	if (ps->method_len == 3 && memcmp(method, "GET", 3) == 0)
		out->method = HTTP_GET;
	else if (ps->method_len == 4 && memcmp(method, "HEAD", 4) == 0)
		out->method = HTTP_HEAD;
	assert(ps->path_len > 0 && ps->path_len <= HTTP_PATH_MAX);
	memcpy(out->path, ps->p + ps->path_start, ps->path_len);
	out->path[ps->path_len] = '\0';
	out->minor = ps->minor;
}

enum http_result
http_parse_request(const char *buf, size_t len, struct http_request *out,
    size_t *head_len_out)
{
	struct parse ps;
	size_t i, n = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;
	unsigned char c;

	memset(&ps, 0, sizeof(ps));
	ps.p = buf;
	ps.state = S_START;
	for (i = 0; i < n; i++) {
		c = (unsigned char)buf[i];
		if (c == '\r') {
			/* A bare CR is refused anywhere (RFC 9112 §2.2
			 * lets us choose). A CR as the last octet we
			 * have: if an LF after it would already be wrong,
			 * no octet that follows can make it right. */
			if (i + 1 == n) {
				if (step(&ps, '\n', i) == STEP_BAD)
					return HTTP_BAD;
				break;
			}
			if (buf[i + 1] != '\n')
				return HTTP_BAD;
			c = '\n';
			i++;
		}
		switch (step(&ps, c, i)) {
		case STEP_MORE:
			continue;
		case STEP_BAD:
			return HTTP_BAD;
		case STEP_VERSION:
			return HTTP_VERSION;
		case STEP_TOO_LARGE:
			return HTTP_TOO_LARGE;
		case STEP_DONE:
			fill(&ps, out);
			if (head_len_out != NULL)
				*head_len_out = i + 1;
			return HTTP_OK;
		}
	}
	return n < HTTP_HEAD_MAX ? HTTP_INCOMPLETE : HTTP_TOO_LARGE;
}

int
http_format_head(char *buf, size_t size, int status, const char *content_type,
    size_t content_length)
{
	int n;

	assert(status >= 100 && status <= 999);
	assert(content_type != NULL && strpbrk(content_type, "\r\n") == NULL);
	n = snprintf(buf, size,
	    "HTTP/1.1 %d %s\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\n"
	    "Connection: close\r\n"
	    "Cache-Control: no-store\r\n"
	    "\r\n",
	    status, http_reason(status), content_type, content_length);
	if (n < 0 || (size_t)n >= size)
		return -1;
	return n;
}

const char *
http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}
