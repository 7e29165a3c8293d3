/*
 * buf: chunk pool accounting and queue behaviour. The relay's promise that
 * an idle session holds no memory rests on these counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailproxy/buf.h"

static int
setup(void **state)
{
	static struct buf_pool pool;

	buf_pool_init(&pool, 4);
	*state = &pool;
	return 0;
}

static int
teardown(void **state)
{
	struct buf_pool *pool = *state;

	assert_int_equal(pool->in_use, 0);
	buf_pool_destroy(pool);
	return 0;
}

static void
fill(char *p, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (char)((i * 31 + seed) & 0xff);
}

static void
test_buf_pool_get_put_recycles_and_caps(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_chunk *c[6];
	size_t i;

	for (i = 0; i < 6; i++) {
		c[i] = buf_pool_get(pool);
		assert_non_null(c[i]);
		assert_int_equal(c[i]->start, 0);
		assert_int_equal(c[i]->end, 0);
	}
	assert_int_equal(pool->in_use, 6);
	assert_int_equal(pool->peak_in_use, 6);
	for (i = 0; i < 6; i++)
		buf_pool_put(pool, c[i]);
	assert_int_equal(pool->in_use, 0);
	/* Only free_max chunks stay cached; the rest went back to malloc. */
	assert_int_equal(pool->free_count[0], 4);
	buf_pool_put(pool, NULL);
	assert_int_equal(pool->free_count[0], 4);
}

static void
test_buf_pool_keeps_big_and_small_apart(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	struct buf_chunk *big[3], *small;
	size_t i;

	for (i = 0; i < 3; i++) {
		big[i] = buf_pool_get_big(pool);
		assert_non_null(big[i]);
		assert_int_equal(big[i]->size, BUF_CHUNK_BIG);
		fill(big[i]->data, BUF_CHUNK_BIG, (unsigned)i);
	}
	assert_int_equal(pool->in_use, 3);
	buf_pool_put(pool, big[0]);
	buf_pool_put(pool, big[1]);
	/* free_max / 4 big ones are kept: as many bytes as the small ones. */
	assert_int_equal(pool->free_count[1], 1);
	assert_int_equal(pool->free_count[0], 0);
	/* A small one is never a recycled big one, nor the other way. */
	small = buf_pool_get(pool);
	assert_int_equal(small->size, BUF_CHUNK_SIZE);
	assert_int_equal(pool->free_count[1], 1);
	buf_pool_put(pool, small);
	big[0] = buf_pool_get_big(pool);
	assert_int_equal(big[0]->size, BUF_CHUNK_BIG);
	assert_int_equal(pool->free_count[0], 1);
	buf_pool_put(pool, big[0]);
	/* A big chunk pushed whole into a queue goes back to its own list
	 * when drained, and the queue then continues in small chunks. */
	big[2]->end = BUF_CHUNK_BIG - 10;
	buf_queue_push_chunk(&q, pool, big[2]);
	assert_int_equal(buf_queue_append(&q, pool, "0123456789abcdef", 16), 0);
	assert_int_equal(q.bytes, BUF_CHUNK_BIG + 6);
	assert_int_equal(q.tail->size, BUF_CHUNK_SIZE);
	buf_queue_consume(&q, pool, q.bytes);
	assert_int_equal(pool->in_use, 0);
	assert_int_equal(pool->free_count[1], 1);
	assert_int_equal(pool->free_count[0], 1);
}

static void
test_buf_queue_append_spans_chunks(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	static char src[3 * BUF_CHUNK_SIZE + 100], dst[sizeof(src)];
	struct buf_span spans[8];
	size_t n, total, off = 0, i;

	fill(src, sizeof(src), 7);
	assert_int_equal(buf_queue_append(&q, pool, src, sizeof(src)), 0);
	assert_int_equal(q.bytes, sizeof(src));
	assert_int_equal(pool->in_use, 4);
	n = buf_queue_peek(&q, spans, 8, &total);
	assert_int_equal(n, 4);
	assert_int_equal(total, sizeof(src));
	for (i = 0; i < n; i++) {
		memcpy(dst + off, spans[i].base, spans[i].len);
		off += spans[i].len;
	}
	assert_memory_equal(src, dst, sizeof(src));
	/* peek is limited by max, and counts only what it returns. */
	n = buf_queue_peek(&q, spans, 2, &total);
	assert_int_equal(n, 2);
	assert_int_equal(total, 2 * BUF_CHUNK_SIZE);
	buf_queue_clear(&q, pool);
	assert_int_equal(q.bytes, 0);
	assert_null(q.head);
	assert_null(q.tail);
	assert_int_equal(pool->in_use, 0);
}

static void
test_buf_queue_consume_partial_keeps_order(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	static char src[BUF_CHUNK_SIZE + 10];
	struct buf_span span;
	size_t total;

	fill(src, sizeof(src), 3);
	assert_int_equal(buf_queue_append(&q, pool, src, sizeof(src)), 0);
	buf_queue_consume(&q, pool, 5);
	assert_int_equal(q.bytes, sizeof(src) - 5);
	assert_int_equal(buf_queue_peek(&q, &span, 1, &total), 1);
	assert_ptr_equal(span.base[0], src[5]);
	assert_memory_equal(span.base, src + 5, BUF_CHUNK_SIZE - 5);
	/* Consuming exactly the first chunk gives it back at once. */
	buf_queue_consume(&q, pool, BUF_CHUNK_SIZE - 5);
	assert_int_equal(pool->in_use, 1);
	assert_int_equal(buf_queue_peek(&q, &span, 1, &total), 1);
	assert_int_equal(total, 10);
	assert_memory_equal(span.base, src + BUF_CHUNK_SIZE, 10);
	/* The last bytes: an empty queue holds no chunk. */
	buf_queue_consume(&q, pool, 10);
	assert_int_equal(pool->in_use, 0);
	assert_null(q.head);
}

static void
test_buf_queue_append_does_not_move_queued_bytes(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	char a[100], b[BUF_CHUNK_SIZE];
	struct buf_span span;
	const char *before;
	size_t total;

	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	assert_int_equal(buf_queue_append(&q, pool, a, sizeof(a)), 0);
	(void)buf_queue_peek(&q, &span, 1, &total);
	before = span.base;
	/* A write in flight points at `before`; appending must not move
	 * it (STYLE.md §7.4). */
	assert_int_equal(buf_queue_append(&q, pool, b, sizeof(b)), 0);
	(void)buf_queue_peek(&q, &span, 1, &total);
	assert_ptr_equal(span.base, before);
	assert_memory_equal(before, a, sizeof(a));
	buf_queue_clear(&q, pool);
}

static void
test_buf_queue_reserve_commit_and_drop_empty_tail(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	size_t room;
	char *p;

	p = buf_queue_reserve(&q, pool, &room);
	assert_non_null(p);
	assert_int_equal(room, BUF_CHUNK_SIZE);
	assert_int_equal(pool->in_use, 1);
	/* Nothing committed: dropping the tail leaves nothing behind. */
	buf_queue_drop_empty_tail(&q, pool);
	assert_int_equal(pool->in_use, 0);
	assert_null(q.head);

	p = buf_queue_reserve(&q, pool, &room);
	memcpy(p, "hello", 5);
	buf_queue_commit(&q, 5);
	p = buf_queue_reserve(&q, pool, &room);
	assert_int_equal(room, BUF_CHUNK_SIZE - 5);
	buf_queue_drop_empty_tail(&q, pool); /* tail has data: kept */
	assert_int_equal(q.bytes, 5);
	assert_int_equal(pool->in_use, 1);

	/* A full tail makes reserve take a new chunk. */
	buf_queue_commit(&q, 0);
	p = buf_queue_reserve(&q, pool, &room);
	buf_queue_commit(&q, room);
	p = buf_queue_reserve(&q, pool, &room);
	assert_int_equal(room, BUF_CHUNK_SIZE);
	assert_int_equal(pool->in_use, 2);
	buf_queue_drop_empty_tail(&q, pool);
	assert_int_equal(pool->in_use, 1);
	buf_queue_clear(&q, pool);
}

static void
test_buf_queue_push_chunk_moves_without_copy(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_queue q = {0};
	struct buf_chunk *c = buf_pool_get(pool), *empty = buf_pool_get(pool);
	struct buf_span span;
	size_t total;

	memcpy(c->data, "abcdef", 6);
	c->start = 2;
	c->end = 6;
	buf_queue_push_chunk(&q, pool, c);
	assert_int_equal(q.bytes, 4);
	(void)buf_queue_peek(&q, &span, 1, &total);
	assert_ptr_equal(span.base, c->data + 2);
	/* An empty chunk is not queued: it goes back to the pool. */
	buf_queue_push_chunk(&q, pool, empty);
	assert_int_equal(pool->in_use, 1);
	assert_ptr_equal(q.tail, c);
	buf_queue_clear(&q, pool);
}

static void
test_buf_chunk_compact_moves_unconsumed_to_front(void **state)
{
	struct buf_pool *pool = *state;
	struct buf_chunk *c = buf_pool_get(pool);

	memcpy(c->data, "0123456789", 10);
	c->start = 7;
	c->end = 10;
	buf_chunk_compact(c);
	assert_int_equal(c->start, 0);
	assert_int_equal(c->end, 3);
	assert_memory_equal(c->data, "789", 3);
	buf_pool_put(pool, c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
	        test_buf_pool_get_put_recycles_and_caps, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_pool_keeps_big_and_small_apart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_buf_queue_append_spans_chunks,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_queue_consume_partial_keeps_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_queue_append_does_not_move_queued_bytes, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_queue_reserve_commit_and_drop_empty_tail, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_queue_push_chunk_moves_without_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_buf_chunk_compact_moves_unconsumed_to_front, setup,
	        teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
