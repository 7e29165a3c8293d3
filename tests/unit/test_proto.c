/*
 * proto: names, default timeouts and the exact bytes of the lines
 * mailproxy sends in the backend's place.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailproxy/error.h"
#include "mailproxy/proto.h"

static void
test_proto_from_name_round_trips(void **state)
{
	enum proto p;
	int i;

	(void)state;
	for (i = 0; i < PROTO_COUNT_; i++) {
		assert_int_equal(proto_from_name(proto_name((enum proto)i), &p),
		    0);
		assert_int_equal(p, i);
	}
	assert_int_equal(proto_from_name("IMAP", &p), ERROR_SYNTAX);
	assert_int_equal(proto_from_name("lmtp", &p), ERROR_SYNTAX);
}

static void
test_proto_default_idle_ms_respects_rfcs(void **state)
{
	(void)state;
	/* RFC 9051 §5.4 at least 30 min; RFC 2177 IDLE every 29 min. */
	assert_true(proto_default_idle_ms(PROTO_IMAP) > 30 * 60 * 1000);
	/* RFC 1939 §3: at least 10 minutes. */
	assert_true(proto_default_idle_ms(PROTO_POP3) >= 10 * 60 * 1000);
	/* RFC 5321 §4.5.3.2: at least 5 minutes. */
	assert_true(proto_default_idle_ms(PROTO_SMTP) >= 5 * 60 * 1000);
}

static void
test_proto_reply_format_notices_exact_bytes(void **state)
{
	static const struct {
		enum proto p;
		enum proto_reply r;
		const char *line;
	} cases[] = {
	    {PROTO_IMAP, PROTO_REPLY_UNAVAILABLE,
	        "* BYE [UNAVAILABLE] Backend server not available.\r\n"},
	    {PROTO_IMAP, PROTO_REPLY_SHUTDOWN,
	        "* BYE Server shutting down.\r\n"},
	    {PROTO_POP3, PROTO_REPLY_UNAVAILABLE,
	        "-ERR [SYS/TEMP] Backend server not available.\r\n"},
	    {PROTO_POP3, PROTO_REPLY_SHUTDOWN,
	        "-ERR [SYS/TEMP] Server shutting down.\r\n"},
	    {PROTO_SMTP, PROTO_REPLY_UNAVAILABLE,
	        "421 4.3.0 mx.example.org Service not available, closing "
	        "transmission channel\r\n"},
	    {PROTO_SMTP, PROTO_REPLY_SHUTDOWN,
	        "421 4.3.2 mx.example.org Service shutting down, closing "
	        "transmission channel\r\n"},
	    {PROTO_IMAP, PROTO_REPLY_BUSY,
	        "* BYE [UNAVAILABLE] Too many connections, try again later."
	        "\r\n"},
	    {PROTO_POP3, PROTO_REPLY_BUSY,
	        "-ERR [SYS/TEMP] Too many connections, try again later.\r\n"},
	    {PROTO_SMTP, PROTO_REPLY_BUSY,
	        "421 4.3.2 mx.example.org Too many connections, try again "
	        "later\r\n"},
	    {PROTO_IMAP, PROTO_REPLY_CLIENT_BUSY,
	        "* BYE [UNAVAILABLE] Too many connections from your address, "
	        "try again later.\r\n"},
	    {PROTO_POP3, PROTO_REPLY_CLIENT_BUSY,
	        "-ERR [SYS/TEMP] Too many connections from your address, try "
	        "again later.\r\n"},
	    {PROTO_SMTP, PROTO_REPLY_CLIENT_BUSY,
	        "421 4.7.0 mx.example.org Error: too many connections from "
	        "your address\r\n"},
	    {PROTO_IMAP, PROTO_REPLY_TIMEOUT,
	        "* BYE Disconnected for inactivity.\r\n"},
	    {PROTO_POP3, PROTO_REPLY_TIMEOUT,
	        "-ERR Disconnected for inactivity.\r\n"},
	    {PROTO_SMTP, PROTO_REPLY_TIMEOUT,
	        "421 4.4.2 mx.example.org Error: timeout exceeded\r\n"},
	};
	struct proto_reply_args a = {"mx.example.org", NULL, NULL, 0, NULL};
	char buf[256];
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = proto_reply_format(cases[i].p, cases[i].r, &a, buf,
		    sizeof(buf));
		assert_int_equal(n, strlen(cases[i].line));
		assert_memory_equal(buf, cases[i].line, (size_t)n);
	}
}

/* Every template field, and the replies a protocol does not have. */
static void
test_proto_reply_format_fields_and_gaps(void **state)
{
	struct proto_reply_args a = {"mx.example.org", "Hi there.", "tag1xyz",
	    4, "bad thing"};
	char buf[256];
	int n;

	(void)state;
	n = proto_reply_format(PROTO_IMAP, PROTO_REPLY_NOOP, &a, buf,
	    sizeof(buf));
	assert_int_equal(n, strlen("tag1 OK NOOP completed.\r\n"));
	assert_memory_equal(buf, "tag1 OK NOOP completed.\r\n", (size_t)n);
	n = proto_reply_format(PROTO_SMTP, PROTO_REPLY_GREETING, &a, buf,
	    sizeof(buf));
	assert_memory_equal(buf, "220 mx.example.org ESMTP Hi there.\r\n",
	    (size_t)n);
	n = proto_reply_format(PROTO_POP3, PROTO_REPLY_PROTOCOL_ERROR, &a, buf,
	    sizeof(buf));
	assert_memory_equal(buf, "-ERR Protocol error: bad thing.\r\n",
	    (size_t)n);
	assert_int_equal(proto_reply_format(PROTO_POP3, PROTO_REPLY_HELO, &a,
	                     buf, sizeof(buf)),
	    ERROR_SYNTAX);
	assert_int_equal(proto_reply_format(PROTO_IMAP, PROTO_REPLY_COUNT_, &a,
	                     buf, sizeof(buf)),
	    ERROR_SYNTAX);
}

static void
test_proto_reply_format_too_small(void **state)
{
	static const char line[] = "* BYE Server shutting down.\r\n";
	struct proto_reply_args a = {"x", NULL, NULL, 0, NULL};
	char buf[64];

	(void)state;
	assert_int_equal(proto_reply_format(PROTO_IMAP, PROTO_REPLY_SHUTDOWN,
	                     &a, buf, sizeof(line) - 2),
	    ERROR_TOO_LONG);
	assert_int_equal(proto_reply_format(PROTO_IMAP, PROTO_REPLY_SHUTDOWN,
	                     &a, buf, sizeof(line) - 1),
	    (int)sizeof(line) - 1);
	assert_int_equal(proto_reply_format(PROTO_IMAP, PROTO_REPLY_SHUTDOWN,
	                     &a, buf, 0),
	    ERROR_TOO_LONG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proto_from_name_round_trips),
	    cmocka_unit_test(test_proto_default_idle_ms_respects_rfcs),
	    cmocka_unit_test(test_proto_reply_format_notices_exact_bytes),
	    cmocka_unit_test(test_proto_reply_format_fields_and_gaps),
	    cmocka_unit_test(test_proto_reply_format_too_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
