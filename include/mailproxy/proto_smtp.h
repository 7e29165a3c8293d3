/*
 * SMTP until AUTH succeeds (RFC 5321, RFC 3207, RFC 4954, RFC 3030, RFC
 * 2920): mailproxy's answers before TLS, and after TLS (or, with
 * starttls = optional, in plaintext) the lock-step filter between client
 * and backend, which follows DATA and BDAT so that it never takes message
 * octets for commands nor commands for message octets. A session that
 * never authenticates (port 25) stays filtered for its whole life. See
 * proto.h for the contract of proto_smtp_ops; its state is struct
 * proto_smtp, valid when zeroed.
 *
 * Pure module: no I/O, no allocation.
 */
#ifndef MAILPROXY_PROTO_SMTP_H
#define MAILPROXY_PROTO_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mailproxy/proto.h"

/* Longest EHLO reply line mailproxy rewrites: twice RFC 5321 §4.5.3.1.5's
 * 512 octets, CRLF included. */
#define PROTO_SMTP_REPLY_LINE_MAX 1024

enum proto_smtp_state {
	PROTO_SMTP_READY, /* the next client line is a command */
	PROTO_SMTP_WAIT,  /* a command's reply is awaited */
	PROTO_SMTP_MORE,  /* the backend asked for a SASL line */
	PROTO_SMTP_DATA,  /* message octets up to CRLF.CRLF */
	PROTO_SMTP_BDAT,  /* a BDAT chunk's octets */
};

/* What the command at the backend is, for reading its reply. */
enum proto_smtp_cmd {
	PROTO_SMTP_OTHER,
	PROTO_SMTP_EHLO,     /* EHLO/HELO: the reply is rewritten */
	PROTO_SMTP_AUTH,     /* 334 asks for more, 235 authenticates */
	PROTO_SMTP_DATA_CMD, /* 354 starts the message octets */
};

struct proto_smtp {
	enum proto_smtp_state state;
	enum proto_smtp_cmd cmd;
	bool tls;       /* the client is on TLS */
	bool plain;     /* optional: the backend was connected in plaintext */
	bool replay;    /* greeting: the client's HELO/EHLO went again */
	bool chunking;  /* the backend's last EHLO reply listed CHUNKING */
	bool data_end;  /* the reply awaited ends a message (RFC 5321 10 min) */
	bool bdat_last; /* the chunk under way is BDAT ... LAST */
	bool multiline; /* a reply's continuation line went out */
	uint64_t chunk_left; /* BDAT octets still to go */
	char prev[2];        /* the last two message octets seen */
	/* EHLO reply: the last kept line, held until it is known whether
	 * another kept line follows (then it ends in '-', else ' '). */
	char held[PROTO_SMTP_REPLY_LINE_MAX];
	size_t held_len;
	bool ehlo_first; /* the next EHLO reply line is its first */
	/* starttls = optional: the client's last HELO/EHLO before TLS,
	 * replayed to a backend connected in plaintext. */
	char helo[PROTO_SMTP_LINE_MAX];
	size_t helo_len;
};

extern const struct proto_ops proto_smtp_ops;

#endif
