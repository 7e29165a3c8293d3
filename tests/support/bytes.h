/*
 * A growable byte buffer for the dialogue's unit test and fuzz target,
 * which record what each side of a session received. Running out of
 * memory aborts: neither harness has anything better to do then.
 */
#ifndef MAILPROXY_TESTS_BYTES_H
#define MAILPROXY_TESTS_BYTES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bytes {
	char *p;
	size_t len;
	size_t size;
};

static inline void
bytes_add(struct bytes *b, const void *p, size_t n)
{
	size_t size;

	if (n == 0)
		return;
	if (b->len + n > b->size) {
		size = b->size > 0 ? b->size : 256;
		while (size < b->len + n)
			size *= 2;
		b->p = realloc(b->p, size);
		if (b->p == NULL) {
			fprintf(stderr, "bytes_add: out of memory\n");
			abort();
		}
		b->size = size;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static inline void
bytes_drop(struct bytes *b, size_t n)
{
	if (n == 0)
		return;
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

static inline void
bytes_free(struct bytes *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->size = 0;
}

#endif
