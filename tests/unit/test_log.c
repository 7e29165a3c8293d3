/*
 * log: the exact connection log line in text and JSON, escaping of
 * attacker-controlled strings (research/protocols.md §14 case 71), and
 * truncation of lines that do not fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mailproxy/log.h"

/* 2026-11-22T05:23:01.123Z */
static const struct timespec when = {1795324981, 123456789};

static struct log_session
sample(void)
{
	struct log_session f;

	memset(&f, 0, sizeof(f));
	f.event = "close";
	f.id = "9f3ac2e1-0-17";
	f.listener = "imaps";
	f.proto = "imap";
	f.client = "[2001:db8::7]:50123";
	f.local = "127.0.0.1:993";
	f.proxy = "10.0.0.5:40001";
	f.backend = "mailstore:143";
	f.backend_addr = "127.0.0.1:143";
	f.tls_version = "TLSv1.3";
	f.cipher = "TLS_AES_128_GCM_SHA256";
	f.sni = "mail.example.org";
	f.starttls = true;
	f.discarded = 12;
	f.refused = 2;
	f.client_in = 1234;
	f.client_out = 5678901;
	f.backend_in = 5678000;
	f.backend_out = 1000;
	f.duration_ms = 12345;
	f.state = "relay";
	f.end = "client_closed";
	return f;
}

static void
test_log_session_format_text_exact(void **state)
{
	struct log_session f = sample();
	char buf[LOG_LINE_MAX];
	size_t n;

	(void)state;
	n = log_session_format(&f, CONFIG_LOG_TEXT, &when, buf, sizeof(buf));
	assert_string_equal(buf,
	    "time=2026-11-22T05:23:01.123Z event=close id=9f3ac2e1-0-17 "
	    "listener=imaps proto=imap client=[2001:db8::7]:50123 "
	    "local=127.0.0.1:993 proxy=10.0.0.5:40001 backend=mailstore:143 "
	    "backend_addr=127.0.0.1:143 tls=TLSv1.3 "
	    "cipher=TLS_AES_128_GCM_SHA256 sni=mail.example.org resumed=no "
	    "starttls=yes discarded=12 refused=2 client_in=1234 client_out=5678901 backend_in=5678000 "
	    "backend_out=1000 duration=12.345 state=relay end=client_closed "
	    "error=-\n");
	assert_int_equal(n, strlen(buf));
}

static void
test_log_session_format_json_exact(void **state)
{
	struct log_session f = sample();
	char buf[LOG_LINE_MAX];

	(void)state;
	f.tls_version = NULL;
	f.cipher = NULL;
	f.sni = NULL;
	f.backend_addr = NULL;
	f.proxy = NULL;
	f.starttls = false;
	f.discarded = 0;
	f.refused = 0;
	f.end = "tls_error";
	f.state = "handshake";
	f.error = "wrong version number";
	(void)log_session_format(&f, CONFIG_LOG_JSON, &when, buf, sizeof(buf));
	assert_string_equal(buf,
	    "{\"time\":\"2026-11-22T05:23:01.123Z\",\"event\":\"close\","
	    "\"id\":\"9f3ac2e1-0-17\",\"listener\":\"imaps\",\"proto\":\"imap\","
	    "\"client\":\"[2001:db8::7]:50123\",\"local\":\"127.0.0.1:993\","
	    "\"proxy\":null,\"backend\":\"mailstore:143\",\"backend_addr\":null,"
	    "\"tls\":null,\"cipher\":null,"
	    "\"sni\":null,\"resumed\":null,\"starttls\":\"no\","
	    "\"discarded\":0,\"refused\":0,\"client_in\":1234,"
	    "\"client_out\":5678901,\"backend_in\":5678000,"
	    "\"backend_out\":1000,\"duration\":12.345,\"state\":\"handshake\","
	    "\"end\":\"tls_error\",\"error\":\"wrong version number\"}\n");
}

struct escape_case {
	const char *sni;
	const char *text;
	const char *json;
};

static const struct escape_case escape_cases[] = {
    {"a b", "sni=\"a b\"", "\"sni\":\"a b\""},
    {"x\r\nevent=forged", "sni=\"x\\x0d\\x0aevent=forged\"",
        "\"sni\":\"x\\r\\nevent=forged\""},
    {"\x1b[31mred", "sni=\"\\x1b[31mred\"", "\"sni\":\"\\u001b[31mred\""},
    {"q\"uote\\", "sni=\"q\\\"uote\\\\\"", "\"sni\":\"q\\\"uote\\\\\""},
    {"caf\xc3\xa9", "sni=\"caf\\xc3\\xa9\"", "\"sni\":\"caf\\u00c3\\u00a9\""},
    {"tab\there", "sni=\"tab\\x09here\"", "\"sni\":\"tab\\there\""},
    {"k=v", "sni=\"k=v\"", "\"sni\":\"k=v\""},
    {"", "sni=\"\"", "\"sni\":\"\""},
    {"\x7f", "sni=\"\\x7f\"", "\"sni\":\"\\u007f\""},
};

static void
test_log_session_format_escapes_hostile_strings(void **state)
{
	struct log_session f = sample();
	char buf[LOG_LINE_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(escape_cases) / sizeof(escape_cases[0]); i++) {
		f.sni = escape_cases[i].sni;
		(void)log_session_format(&f, CONFIG_LOG_TEXT, &when, buf,
		    sizeof(buf));
		if (strstr(buf, escape_cases[i].text) == NULL)
			fail_msg("text case %zu: %s", i, buf);
		/* One line, whatever the input. */
		assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1);
		(void)log_session_format(&f, CONFIG_LOG_JSON, &when, buf,
		    sizeof(buf));
		if (strstr(buf, escape_cases[i].json) == NULL)
			fail_msg("json case %zu: %s", i, buf);
		assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1);
	}
}

static void
test_log_session_format_cuts_long_lines(void **state)
{
	struct log_session f = sample();
	char buf[120], big[600];
	size_t n;

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	f.sni = big;
	n = log_session_format(&f, CONFIG_LOG_TEXT, &when, buf, sizeof(buf));
	assert_int_equal(n, sizeof(buf) - 1);
	assert_int_equal(strlen(buf), n);
	assert_memory_equal(buf + n - 4, "...\n", 4);
	n = log_session_format(&f, CONFIG_LOG_JSON, &when, buf, sizeof(buf));
	assert_memory_equal(buf + n - 4, "...\n", 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_session_format_text_exact),
	    cmocka_unit_test(test_log_session_format_json_exact),
	    cmocka_unit_test(test_log_session_format_escapes_hostile_strings),
	    cmocka_unit_test(test_log_session_format_cuts_long_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
