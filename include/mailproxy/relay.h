/*
 * The relay pump: reads from one side, moves the bytes (decrypting or
 * encrypting on the client side) into the other side's queue, writes
 * queues out, and keeps each direction bounded (STYLE.md §7.5): above the
 * high-water mark the source stops being read, and below the low-water mark
 * it starts again. Half-close travels across: EOF or close_notify from one
 * side becomes FIN (and close_notify) to the other once its queue drains.
 *
 * Every function here may end the session (via session_close or
 * session_finish); callers check s->state before touching it further.
 */
#ifndef MAILPROXY_RELAY_H
#define MAILPROXY_RELAY_H

#include "mailproxy/session.h"

/* Bytes queued towards one side before its source stops being read
 * (checked before each read is queued, so one read more may follow). */
#define RELAY_HIGH_WATER (64 * 1024)
/* Bytes below which a stopped source is read again. */
#define RELAY_LOW_WATER  (16 * 1024)

/*
 * Binds side x of s to its peer and session; call before the handle is
 * initialised.
 */
void relay_side_init(struct session *s, struct side *x, struct side *peer);

/* Starts reading x unless it is paused or finished. 0 or a libuv code. */
int relay_read_start(struct side *x);

/* Stops reading x (not a pause: nothing restarts it by itself). */
void relay_read_stop(struct side *x);

/*
 * Writes what x's queue holds, unless a write is already in flight; with
 * an empty queue and want_fin set, sends FIN instead. May end the session.
 */
void relay_flush(struct side *x);

/*
 * Flushes x at the end of this loop iteration (libuv's check phase), once
 * every read the poll delivered has been processed: the records of a
 * burst then leave in one writev, not one syscall and one loopback or
 * network segment per TLS record.
 */
void relay_flush_later(struct side *x);

/* Takes x off the flush list; for a session being freed. */
void relay_flush_cancel(struct side *x);

/*
 * Enters the relay: reads both sides and processes client bytes that
 * arrived with the end of the handshake. May end the session.
 */
void relay_start(struct session *s);

/* Points s->sink (the dialogue's output) at the two queues. */
void relay_sink_init(struct session *s);

/* The client side got EOF or close_notify; error is the detail or NULL. */
void relay_client_done(struct session *s, const char *error);

#endif
