/*
 * mailproxy's own error codes. Functions return 0 or a negative code; system
 * and libuv errors travel as libuv's negative errno values, unchanged, and
 * our codes start far below them so the two never collide. One X-macro list
 * generates the enum, the names and the messages together (libuv's
 * UV_ERRNO_MAP).
 */
#ifndef MAILPROXY_ERROR_H
#define MAILPROXY_ERROR_H

#define ERROR_MAP(X)                                                           \
	X(NOMEM, "out of memory")                                              \
	X(TOO_LONG, "too long")                                                \
	X(SYNTAX, "syntax error")                                              \
	X(RANGE, "value out of range")                                         \
	X(TLS, "TLS error")                                                    \
	X(CONFIG, "configuration error")

enum error_code {
	ERROR_BASE_ = -20000,
#define X(name, msg) ERROR_##name,
	ERROR_MAP(X)
#undef X
	ERROR_END_
};

/*
 * The short name ("TOO_LONG") of one of our codes, or NULL for any other
 * value (a libuv code, 0). The string is static.
 */
const char *error_name(int code);

/*
 * The message of one of our codes, or NULL for any other value. Static.
 */
const char *error_message(int code);

#endif
