/*
 * Bounded byte chunks, a per-worker pool of them, and FIFO queues of chunks.
 *
 * A session keeps its in-flight bytes in chunks taken from its worker's pool
 * and gives each chunk back as soon as it is drained, so an idle session
 * holds no buffer at all (DESIGN.md §2, "memory per idle session"). A pool
 * belongs to one thread; nothing here locks.
 *
 * Pure module: libc only, no I/O.
 */
#ifndef MAILPROXY_BUF_H
#define MAILPROXY_BUF_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of payload in a chunk: one TLS record of plaintext. */
#define BUF_CHUNK_SIZE 16384

/*
 * A big chunk, for the reads of a session that relays opaquely: four TLS
 * records' worth. On loopback a 16 KiB read cost as much kernel time again
 * in the ACK it sends; 64 KiB reads relay 21-27 % more per CPU-second.
 * Everything else (handshakes, dialogues, queues) uses the small ones, so
 * a client that leaves a partial line pins 16 KiB, not 64.
 */
#define BUF_CHUNK_BIG 65536

struct buf_chunk {
	struct buf_chunk *next;
	size_t start; /* first byte not yet consumed */
	size_t end;   /* one past the last byte stored */
	size_t size;  /* bytes data holds: BUF_CHUNK_SIZE or BUF_CHUNK_BIG */
	char data[];
};

/* Two size classes, small and big, each with its own free list. */
struct buf_pool {
	struct buf_chunk *free[2];
	size_t free_count[2];
	size_t free_max[2]; /* chunks kept for reuse; the rest go to free() */
	size_t in_use;      /* chunks of either size handed out */
	size_t peak_in_use; /* the most in_use has been */
};

/* A FIFO of chunks; zeroed means empty. */
struct buf_queue {
	struct buf_chunk *head;
	struct buf_chunk *tail;
	size_t bytes; /* stored and not yet consumed, over all chunks */
};

/* One contiguous run of queued bytes, for building a vectored write. */
struct buf_span {
	const char *base;
	size_t len;
};

/*
 * Sets up an empty pool that keeps at most free_max idle small chunks and
 * free_max / 4 big ones (as many bytes).
 */
void buf_pool_init(struct buf_pool *pool, size_t free_max);

/*
 * Frees the pool's idle chunks. Chunks still in use are the caller's bug;
 * the pool does not track them.
 */
void buf_pool_destroy(struct buf_pool *pool);

/*
 * An empty chunk (start == end == 0, next == NULL), or NULL when memory is
 * exhausted. The caller owns it until buf_pool_put().
 */
struct buf_chunk *buf_pool_get(struct buf_pool *pool);

/* The same, a big chunk (BUF_CHUNK_BIG). */
struct buf_chunk *buf_pool_get_big(struct buf_pool *pool);

/*
 * Returns a chunk of either size to the pool; c may be NULL. The caller
 * must forget c.
 */
void buf_pool_put(struct buf_pool *pool, struct buf_chunk *c);

/* Bytes stored in c and not yet consumed. */
static inline size_t
buf_chunk_len(const struct buf_chunk *c)
{
	return c->end - c->start;
}

/*
 * Moves c's unconsumed bytes to the start of its buffer so the free tail
 * is as long as it can be. Only for a chunk no write points into.
 */
void buf_chunk_compact(struct buf_chunk *c);

/*
 * Copies len bytes to the end of q, taking chunks from pool as needed.
 * Bytes already queued never move, so a write in flight that points into
 * the queue stays valid. Returns 0, or ERROR_NOMEM with q unchanged in
 * content (chunks already filled stay queued and counted).
 */
int buf_queue_append(struct buf_queue *q, struct buf_pool *pool, const char *p,
    size_t len);

/*
 * Room for writing directly at the end of q: a pointer and, in *size_out,
 * how many bytes fit (at least 1). A new chunk is taken from pool when the
 * tail is full. Returns NULL when memory is exhausted. Bytes written there
 * count only after buf_queue_commit(). The pointer stays valid until the
 * next call that changes q.
 */
char *buf_queue_reserve(struct buf_queue *q, struct buf_pool *pool,
    size_t *size_out);

/* Counts n bytes written at the pointer buf_queue_reserve() returned. */
void buf_queue_commit(struct buf_queue *q, size_t n);

/*
 * Returns the tail chunk to pool when buf_queue_reserve() added it and
 * nothing was committed, so a reservation that found no data costs no
 * memory afterwards.
 */
void buf_queue_drop_empty_tail(struct buf_queue *q, struct buf_pool *pool);

/*
 * Appends a whole chunk to q without copying; q owns it afterwards. An
 * empty chunk is returned to pool instead.
 */
void buf_queue_push_chunk(struct buf_queue *q, struct buf_pool *pool,
    struct buf_chunk *c);

/*
 * Drops n bytes (n <= q->bytes) from the head of q and returns emptied
 * chunks to pool, the tail chunk included: an empty queue holds no chunk.
 */
void buf_queue_consume(struct buf_queue *q, struct buf_pool *pool, size_t n);

/*
 * Fills up to max spans with the queued bytes from the head, and returns
 * the number of spans used; *bytes_out gets their total length. The spans
 * stay valid until buf_queue_consume() drops them or buf_queue_clear().
 */
size_t buf_queue_peek(const struct buf_queue *q, struct buf_span *spans,
    size_t max, size_t *bytes_out);

/* Drops everything in q and returns all its chunks to pool. */
void buf_queue_clear(struct buf_queue *q, struct buf_pool *pool);

#endif
