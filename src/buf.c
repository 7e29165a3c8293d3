/*
 * Chunk pool and chunk queues. This is the only custom allocator mailproxy
 * has (STYLE.md §12): fixed-size chunks recycled per worker thread, so the
 * relay does no malloc per read and an idle session holds nothing.
 *
 * Must not: lock (a pool belongs to one thread), or move bytes that are
 * already queued (a write in flight may point at them).
 */
#include "mailproxy/buf.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "mailproxy/error.h"

void
buf_pool_init(struct buf_pool *pool, size_t free_max)
{
	memset(pool, 0, sizeof(*pool));
	pool->free_max[0] = free_max;
	pool->free_max[1] = free_max / 4;
}

void
buf_pool_destroy(struct buf_pool *pool)
{
	struct buf_chunk *c, *next;
	size_t k;

	for (k = 0; k < 2; k++) {
		for (c = pool->free[k]; c != NULL; c = next) {
			next = c->next;
			free(c);
		}
		pool->free[k] = NULL;
		pool->free_count[k] = 0;
	}
}

static struct buf_chunk *
pool_get(struct buf_pool *pool, size_t k, size_t size)
{
	struct buf_chunk *c = pool->free[k];

	if (c != NULL) {
		pool->free[k] = c->next;
		pool->free_count[k]--;
	} else {
		/* Not calloc: the payload is always written before read. */
		c = malloc(sizeof(*c) + size);
		if (c == NULL)
			return NULL;
		c->size = size;
	}
	c->next = NULL;
	c->start = 0;
	c->end = 0;
	pool->in_use++;
	if (pool->in_use > pool->peak_in_use)
		pool->peak_in_use = pool->in_use;
	return c;
}

struct buf_chunk *
buf_pool_get(struct buf_pool *pool)
{
	return pool_get(pool, 0, BUF_CHUNK_SIZE);
}

struct buf_chunk *
buf_pool_get_big(struct buf_pool *pool)
{
	return pool_get(pool, 1, BUF_CHUNK_BIG);
}

void
buf_pool_put(struct buf_pool *pool, struct buf_chunk *c)
{
	size_t k;

	if (c == NULL)
		return;
	k = c->size == BUF_CHUNK_BIG;
	assert(pool->in_use > 0);
	pool->in_use--;
	if (pool->free_count[k] >= pool->free_max[k]) {
		free(c);
		return;
	}
	c->next = pool->free[k];
	pool->free[k] = c;
	pool->free_count[k]++;
}

void
buf_chunk_compact(struct buf_chunk *c)
{
	size_t len = buf_chunk_len(c);

	if (c->start == 0)
		return;
	memmove(c->data, c->data + c->start, len);
	c->start = 0;
	c->end = len;
}

char *
buf_queue_reserve(struct buf_queue *q, struct buf_pool *pool, size_t *size_out)
{
	struct buf_chunk *c = q->tail;

	if (c == NULL || c->end == c->size) {
		c = buf_pool_get(pool);
		if (c == NULL)
			return NULL;
		if (q->tail != NULL)
			q->tail->next = c;
		else
			q->head = c;
		q->tail = c;
	}
	*size_out = c->size - c->end;
	return c->data + c->end;
}

void
buf_queue_commit(struct buf_queue *q, size_t n)
{
	assert(q->tail != NULL && n <= q->tail->size - q->tail->end);
	q->tail->end += n;
	q->bytes += n;
}

void
buf_queue_drop_empty_tail(struct buf_queue *q, struct buf_pool *pool)
{
	struct buf_chunk *c = q->tail, *prev = NULL, *p;

	if (c == NULL || c->end != 0)
		return;
	for (p = q->head; p != c; p = p->next)
		prev = p;
	if (prev != NULL)
		prev->next = NULL;
	else
		q->head = NULL;
	q->tail = prev;
	buf_pool_put(pool, c);
}

int
buf_queue_append(struct buf_queue *q, struct buf_pool *pool, const char *p,
    size_t len)
{
	size_t room, n;
	char *dst;

	while (len > 0) {
		dst = buf_queue_reserve(q, pool, &room);
		if (dst == NULL)
			return ERROR_NOMEM;
		n = len < room ? len : room;
		memcpy(dst, p, n);
		buf_queue_commit(q, n);
		p += n;
		len -= n;
	}
	return 0;
}

void
buf_queue_push_chunk(struct buf_queue *q, struct buf_pool *pool,
    struct buf_chunk *c)
{
	if (buf_chunk_len(c) == 0) {
		buf_pool_put(pool, c);
		return;
	}
	c->next = NULL;
	if (q->tail != NULL)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	q->bytes += buf_chunk_len(c);
}

void
buf_queue_consume(struct buf_queue *q, struct buf_pool *pool, size_t n)
{
	struct buf_chunk *c;
	size_t len;

	assert(n <= q->bytes);
	q->bytes -= n;
	while ((c = q->head) != NULL) {
		len = buf_chunk_len(c);
		if (n < len) {
			c->start += n;
			return;
		}
		n -= len;
		q->head = c->next;
		if (q->head == NULL)
			q->tail = NULL;
		buf_pool_put(pool, c);
	}
	assert(n == 0);
}

size_t
buf_queue_peek(const struct buf_queue *q, struct buf_span *spans, size_t max,
    size_t *bytes_out)
{
	const struct buf_chunk *c;
	size_t i = 0, total = 0;

	for (c = q->head; c != NULL && i < max; c = c->next) {
		if (buf_chunk_len(c) == 0)
			continue;
		spans[i].base = c->data + c->start;
		spans[i].len = buf_chunk_len(c);
		total += spans[i].len;
		i++;
	}
	*bytes_out = total;
	return i;
}

void
buf_queue_clear(struct buf_queue *q, struct buf_pool *pool)
{
	buf_queue_consume(q, pool, q->bytes);
	assert(q->head == NULL && q->tail == NULL);
}
