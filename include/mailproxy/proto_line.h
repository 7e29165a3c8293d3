/*
 * What the three mail protocols share about text: CRLF line framing with a
 * length limit, words, and the capabilities mailproxy takes out of a
 * backend's lists. Used by proto_imap.c, proto_pop3.c and proto_smtp.c.
 *
 * Pure module: libc only, no state, no I/O.
 */
#ifndef MAILPROXY_PROTO_LINE_H
#define MAILPROXY_PROTO_LINE_H

#include <stdbool.h>
#include <stddef.h>

/* What proto_line_find() returns for a line it refuses. */
#define PROTO_LINE_TOO_LONG (-1) /* no LF within max bytes */
#define PROTO_LINE_BARE     (-2) /* strict: a bare CR, bare LF or NUL */

/*
 * The length of the first line of in[0..len), its line end included; 0
 * when no line end has come yet (and fewer than max bytes are there); or
 * PROTO_LINE_TOO_LONG / PROTO_LINE_BARE. strict: a client's line before
 * authentication, which only CRLF ends and in which a bare CR, a bare LF
 * or a NUL is an error (research/protocols.md §3: a bare LF is how a
 * second command hides in the first); otherwise any LF ends a line.
 */
long proto_line_find(const char *in, size_t len, size_t max, bool strict);

/* Length of line[0..len) without its CRLF (or LF). */
size_t proto_line_chomp(const char *line, size_t len);

/* Whether the n bytes at p are the word w, ignoring ASCII case. */
bool proto_line_word_is(const char *p, size_t n, const char *w);

/* Whether p[0..n) starts with w, ignoring ASCII case. */
bool proto_line_prefix_is(const char *p, size_t n, const char *w);

/* Length of the word at p: up to a space, CR, LF or n. */
size_t proto_line_word_len(const char *p, size_t n);

/* How many spaces p starts with (at most n). */
size_t proto_line_spaces(const char *p, size_t n);

/*
 * Whether mailproxy removes the capability (or, with sasl, the SASL
 * mechanism) t[0..n) from a backend's list after TLS: STARTTLS, STLS,
 * XCLIENT, XFORWARD, and SCRAM-*-PLUS, whose channel binding names
 * mailproxy's TLS and so always fails through a terminator.
 */
bool proto_line_cap_dropped(const char *t, size_t n, bool sasl);

/*
 * Copies the space-separated tokens of in[0..n) to out, single-spaced,
 * leaving out the dropped ones (an "AUTH=" prefix is looked through).
 * out has room for n bytes. Returns the length written.
 */
size_t proto_line_filter_caps(const char *in, size_t n, char *out, bool sasl);

/*
 * Whether the space-separated list in[0..n) holds the token w, ignoring
 * case.
 */
bool proto_line_has_token(const char *in, size_t n, const char *w);

#endif
