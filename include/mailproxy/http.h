/*
 * The smallest HTTP/1.x server side mailproxy needs: the request head of
 * the metrics port (GET /metrics, /healthz, /readyz) and the head of the
 * answer. One request per connection, no bodies, no keep-alive: the
 * server answers and closes.
 *
 * Pure module: libc only, no state, no I/O, no allocation.
 */
#ifndef MAILPROXY_HTTP_H
#define MAILPROXY_HTTP_H

#include <stddef.h>

#define HTTP_HEAD_MAX    8192 /* a request head longer than this: 431 */
#define HTTP_PATH_MAX    256  /* path without the query string */
#define HTTP_HEADERS_MAX 64   /* more header lines: 431 */
#define HTTP_METHOD_MAX  16   /* a longer method: 400 */
#define HTTP_EMPTY_MAX   4    /* empty lines skipped before the request */

enum http_method {
	HTTP_GET,
	HTTP_HEAD,
	HTTP_OTHER,
};

enum http_result {
	HTTP_INCOMPLETE, /* no end of head yet, and len < HTTP_HEAD_MAX */
	HTTP_OK,        /* *out is filled; *head_len_out = octets of the head */
	HTTP_BAD,       /* answer 400 and close */
	HTTP_TOO_LARGE, /* answer 431 and close */
	HTTP_VERSION,   /* not HTTP/1.0 or HTTP/1.1: answer 505 */
};

struct http_request {
	enum http_method method;
	char path[HTTP_PATH_MAX + 1]; /* origin-form path, query removed,
	                               * NUL-terminated */
	int minor;                    /* HTTP/1.minor: 0 or 1 */
};

/*
 * Reads the request head at the start of buf[0..len), everything received
 * on the connection so far; buf need not be NUL-terminated and may be
 * NULL when len is 0. Strict, as RFC 9112 allows a server facing the
 * network to be:
 *   - "METHOD SP /origin-form SP HTTP/1.x" and header lines
 *     "name: value", each ended by CRLF or a bare LF (§2.2); a CR not
 *     followed by LF, NUL and every control but HT are refused;
 *   - the method is a token of at most HTTP_METHOD_MAX octets, GET and
 *     HEAD (case-sensitive) are told apart, any other is HTTP_OTHER;
 *   - the target is visible ASCII starting with '/'; the path (up to any
 *     '?') is copied as sent, not percent-decoded;
 *   - no obsolete line folding (§5.2), no whitespace before a colon
 *     (§5.1), no Transfer-Encoding and no Content-Length but 0: no request
 *     has a body, so none can smuggle another (§6.3, §11.2);
 *   - up to HTTP_EMPTY_MAX empty lines before the request line are
 *     skipped (§2.2) and counted in the head.
 * The head ends at its first empty line; what follows is not looked at.
 *
 * Every answer but HTTP_INCOMPLETE is final: more octets behind the same
 * ones never change it. A head that is already wrong is HTTP_BAD at once,
 * not when it ends; a request line with a version other than 1.0 or 1.1
 * is HTTP_VERSION as soon as it ends; a 65th header line is
 * HTTP_TOO_LARGE at its first octet, and so is a head without its end in
 * the first HTTP_HEAD_MAX octets (only those are read).
 *
 * out and head_len_out are written only on HTTP_OK: the request and the
 * length of the head, at most min(len, HTTP_HEAD_MAX). head_len_out may be
 * NULL.
 */
enum http_result http_parse_request(const char *buf, size_t len,
    struct http_request *out, size_t *head_len_out);

/*
 * Writes the status line and headers of a response that closes the
 * connection into buf[0..size):
 *   "HTTP/1.1 <status> <reason>\r\nContent-Type: <type>\r\n"
 *   "Content-Length: <n>\r\nConnection: close\r\n"
 *   "Cache-Control: no-store\r\n\r\n"
 * and a NUL after it. status is 100 to 999 and content_type a static
 * string without CR or LF (the caller's, never the client's). Returns the
 * length without the NUL, or -1 when the head and its NUL do not fit in
 * size.
 */
int http_format_head(char *buf, size_t size, int status,
    const char *content_type, size_t content_length);

/*
 * The reason phrase for the statuses mailproxy answers with ("OK", "Bad
 * Request", "Not Found", "Method Not Allowed", "Request Timeout",
 * "Request Header Fields Too Large", "Internal Server Error", "Service
 * Unavailable", "HTTP Version Not Supported"), "Unknown" for any other.
 * A static string.
 */
const char *http_reason(int status);

#endif
