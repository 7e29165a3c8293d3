/*
 * POP3 until PASS, APOP or AUTH succeeds (RFC 1939, RFC 2449, RFC 2595,
 * RFC 5034): mailproxy's answers before TLS, and after TLS the lock-step
 * filter between client and backend. See proto.h for the contract of
 * proto_pop3_ops; its state is struct proto_pop3, valid when zeroed.
 *
 * Pure module: no I/O, no allocation.
 */
#ifndef MAILPROXY_PROTO_POP3_H
#define MAILPROXY_PROTO_POP3_H

#include <stdbool.h>

#include "mailproxy/proto.h"

enum proto_pop3_state {
	PROTO_POP3_READY, /* the next client line is a command */
	PROTO_POP3_WAIT,  /* a command is at the backend */
	PROTO_POP3_MORE,  /* the backend asked for a SASL line */
};

/* What the command at the backend is, for reading its reply. */
enum proto_pop3_cmd {
	PROTO_POP3_OTHER,
	PROTO_POP3_AUTH,  /* success means authenticated */
	PROTO_POP3_CAPA,  /* multi-line, rewritten */
	PROTO_POP3_MULTI, /* multi-line on +OK */
};

struct proto_pop3 {
	enum proto_pop3_state state;
	enum proto_pop3_cmd cmd;
	bool body; /* inside a multi-line reply */
};

extern const struct proto_ops proto_pop3_ops;

#endif
