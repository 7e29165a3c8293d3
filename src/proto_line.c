/*
 * Line framing and words for the three mail protocols (see proto_line.h).
 *
 * Pure: libc only, no state. Must not: allocate, log, or know which
 * protocol it serves.
 */
#include "mailproxy/proto_line.h"

#include <string.h>
#include <strings.h>

long
proto_line_find(const char *in, size_t len, size_t max, bool strict)
{
	size_t i;

	for (i = 0; i < len && i < max; i++) {
		if (in[i] == '\n') {
			if (strict && (i == 0 || in[i - 1] != '\r'))
				return PROTO_LINE_BARE;
			return (long)i + 1;
		}
		if (!strict)
			continue;
		if (in[i] == '\0')
			return PROTO_LINE_BARE;
		if (in[i] == '\r' && i + 1 < len && in[i + 1] != '\n')
			return PROTO_LINE_BARE;
	}
	return i >= max ? PROTO_LINE_TOO_LONG : 0;
}

size_t
proto_line_chomp(const char *line, size_t len)
{
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	return len;
}

bool
proto_line_word_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(p, w, n) == 0;
}

bool
proto_line_prefix_is(const char *p, size_t n, const char *w)
{
	size_t wl = strlen(w);

	return n >= wl && strncasecmp(p, w, wl) == 0;
}

size_t
proto_line_word_len(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

size_t
proto_line_spaces(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] == ' ')
		i++;
	return i;
}

bool
proto_line_cap_dropped(const char *t, size_t n, bool sasl)
{
	if (proto_line_prefix_is(t, n, "SCRAM-") && n >= 5 &&
	    strncasecmp(t + n - 5, "-PLUS", 5) == 0)
		return true;
	if (sasl)
		return false;
	if (proto_line_prefix_is(t, n, "AUTH="))
		return proto_line_cap_dropped(t + 5, n - 5, true);
	return proto_line_word_is(t, n, "STARTTLS") ||
	    proto_line_word_is(t, n, "STLS") ||
	    proto_line_word_is(t, n, "XCLIENT") ||
	    proto_line_word_is(t, n, "XFORWARD");
}

size_t
proto_line_filter_caps(const char *in, size_t n, char *out, bool sasl)
{
	size_t i = 0, o = 0, w;

	while (i < n) {
		if (in[i] == ' ') {
			i++;
			continue;
		}
		w = 0;
		while (i + w < n && in[i + w] != ' ')
			w++;
		if (!proto_line_cap_dropped(in + i, w, sasl)) {
			if (o > 0)
				out[o++] = ' ';
			memcpy(out + o, in + i, w);
			o += w;
		}
		i += w;
	}
	return o;
}

bool
proto_line_has_token(const char *in, size_t n, const char *w)
{
	size_t i = 0, len;

	while (i < n) {
		i += proto_line_spaces(in + i, n - i);
		len = 0;
		while (i + len < n && in[i + len] != ' ')
			len++;
		if (len > 0 && proto_line_word_is(in + i, len, w))
			return true;
		i += len;
	}
	return false;
}
