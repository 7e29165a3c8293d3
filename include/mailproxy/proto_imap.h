/*
 * IMAP until LOGIN or AUTHENTICATE succeeds (RFC 9051, RFC 3501, RFC 2595,
 * RFC 7888): mailproxy's answers before TLS, and after TLS the lock-step
 * filter between client and backend. See proto.h for the contract of
 * proto_imap_ops; its state is struct proto_imap, valid when zeroed.
 *
 * Pure module: no I/O, no allocation.
 */
#ifndef MAILPROXY_PROTO_IMAP_H
#define MAILPROXY_PROTO_IMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mailproxy/proto.h"

/* Where the client's byte stream is, after the greeting. */
enum proto_imap_state {
	PROTO_IMAP_READY,   /* the next client line is a command */
	PROTO_IMAP_WAIT,    /* a command is at the backend */
	PROTO_IMAP_MORE,    /* the backend asked for a SASL line */
	PROTO_IMAP_LITERAL, /* client literal octets go through */
	PROTO_IMAP_REST,    /* the command line goes on after a literal */
};

struct proto_imap {
	enum proto_imap_state state;
	bool auth;     /* the command at the backend is LOGIN/AUTHENTICATE */
	char tag[256]; /* tag of the command at the backend */
	size_t tag_len;
	uint64_t literal;  /* {n}: octets sent after the backend's "+" */
	bool literal_wait; /* such a {n} waits for its "+" */
	/* That {n} was the client's {n+}: its octets are on their way
	 * already, and the "+" is not the client's to see. */
	bool converted;
	uint64_t client_left;  /* client literal octets still to go */
	uint64_t backend_left; /* backend literal octets still to go */
	bool backend_rest;     /* the backend's line goes on after them */
	/* The literal and the rest of a command mailproxy answered itself
	 * are dropped, not forwarded. */
	bool swallow;
	/* The latest capability list the backend showed (RFC 7888). */
	bool literal_plus;
	bool literal_minus;
};

extern const struct proto_ops proto_imap_ops;

#endif
