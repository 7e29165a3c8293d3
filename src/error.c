/*
 * Names and messages of mailproxy's own error codes, generated from the one
 * list in error.h. Pure: no I/O, no state.
 */
#include "mailproxy/error.h"

#include <stddef.h>

static const char *const names[] = {
#define X(name, msg) #name,
    ERROR_MAP(X)
#undef X
};

static const char *const messages[] = {
#define X(name, msg) msg,
    ERROR_MAP(X)
#undef X
};

static int
index_of(int code)
{
	if (code <= ERROR_BASE_ || code >= ERROR_END_)
		return -1;
	return code - ERROR_BASE_ - 1;
}

const char *
error_name(int code)
{
	int i = index_of(code);

	return i < 0 ? NULL : names[i];
}

const char *
error_message(int code)
{
	int i = index_of(code);

	return i < 0 ? NULL : messages[i];
}
