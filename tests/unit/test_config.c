/*
 * config: every error a file can contain is reported with file and line;
 * a valid file gives the values and defaults the README documents.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailproxy/config.h"
#include "mailproxy/error.h"

static char path[256];

/* A listener that is complete apart from what a case changes. */
#define TLS_OK "[tls]\ncertificate = /c.pem\nkey = /k.pem\n"
#define LISTENER_OK                                                            \
	"[listener imaps]\nprotocol = imap\nlisten = 127.0.0.1:993\n"          \
	"backend = 127.0.0.1:143\n"

static void
write_file(const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static struct config *
load(const char *text, char **errors)
{
	write_file(text, strlen(text));
	return config_load(path, errors);
}

struct error_case {
	const char *name;
	const char *text;
	int line; /* 0: the message carries no line */
	const char *message;
};

static const struct error_case error_cases[] = {
    {"unknown section", TLS_OK LISTENER_OK "[foo]\n", 8,
        "unknown section [foo]; expected [global], [tls], [metrics] or "
        "[listener NAME]"},
    {"unknown key", "[global]\nfoo = 1\n" TLS_OK LISTENER_OK, 2,
        "unknown key 'foo' in [global]"},
    {"unknown listener key", TLS_OK LISTENER_OK "prot = imap\n", 8,
        "unknown key 'prot' in [listener]"},
    {"key outside section", "workers = 2\n" TLS_OK LISTENER_OK, 1,
        "'workers' is outside any section ([global], [tls], [metrics] "
        "or [listener NAME])"},
    {"missing protocol",
        TLS_OK "[listener a]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:2\n", 4,
        "[listener a]: 'protocol' is required (imap, pop3 or smtp)"},
    {"missing listen",
        TLS_OK "[listener a]\nprotocol = imap\nbackend = 127.0.0.1:2\n", 4,
        "[listener a]: 'listen' is required"},
    {"missing backend",
        TLS_OK "[listener a]\nprotocol = imap\nlisten = 127.0.0.1:1\n", 4,
        "[listener a]: 'backend' is required"},
    {"listen without port", TLS_OK LISTENER_OK "listen = 10.0.0.1\n", 8,
        "listen: '10.0.0.1' is not an address:port (1.2.3.4:993, "
        "[2001:db8::1]:993 or *:993)"},
    {"listen port range", TLS_OK LISTENER_OK "listen = 10.0.0.1:70000\n", 8,
        "listen: '10.0.0.1:70000' is not an address:port (1.2.3.4:993, "
        "[2001:db8::1]:993 or *:993); the port must be 1-65535"},
    {"listen port zero", TLS_OK LISTENER_OK "listen = 10.0.0.1:0\n", 8,
        "listen: '10.0.0.1:0' is not an address:port (1.2.3.4:993, "
        "[2001:db8::1]:993 or *:993); the port must be 1-65535"},
    {"listen bad IPv6", TLS_OK LISTENER_OK "listen = [::1:993\n", 8,
        "listen: '[::1:993' is not an address:port"},
    {"listen host name", TLS_OK LISTENER_OK "listen = localhost:993\n", 8,
        "listen: 'localhost:993' is not an address:port"},
    {"listen IPv6 unbracketed", TLS_OK LISTENER_OK "listen = ::1:993\n", 8,
        "listen: '::1:993' is not an address:port"},
    {"backend without port",
        TLS_OK "[listener a]\nprotocol = imap\nlisten = 127.0.0.1:1\n"
               "backend = mailstore\n",
        7,
        "backend: 'mailstore' is not host:port, [IPv6]:port or a unix "
        "socket path (port 1-65535)"},
    {"backend bad host",
        TLS_OK "[listener a]\nprotocol = imap\nlisten = 127.0.0.1:1\n"
               "backend = mail_store:143\n",
        7, "backend: 'mail_store:143' is not host:port"},
    {"backend relative unix path",
        TLS_OK "[listener a]\nprotocol = imap\nlisten = 127.0.0.1:1\n"
               "backend = unix:run/imap\n",
        7,
        "backend: 'run/imap' is not an absolute unix socket path of at "
        "most 107 bytes"},
    {"bad protocol", TLS_OK LISTENER_OK "protocol = http\n", 8,
        "'protocol' is set twice in this section"},
    {"bad protocol value",
        TLS_OK "[listener a]\nprotocol = http\nlisten = 127.0.0.1:1\n"
               "backend = 127.0.0.1:2\n",
        5, "protocol: 'http' is not imap, pop3 or smtp"},
    {"bad tls mode", TLS_OK LISTENER_OK "tls = maybe\n", 8,
        "tls: 'maybe' is not one of implicit or starttls"},
    {"starttls on an implicit listener",
        TLS_OK LISTENER_OK "starttls = optional\n", 4,
        "[listener imaps]: 'starttls' and 'greeting' are for tls = "
        "starttls"},
    {"optional STARTTLS for IMAP",
        TLS_OK LISTENER_OK "tls = starttls\nstarttls = optional\n", 4,
        "[listener imaps]: starttls = optional is for SMTP (port 25) only"},
    {"greeting with a control character",
        TLS_OK LISTENER_OK "tls = starttls\ngreeting = a\tb\n", 4,
        "[listener imaps]: 'greeting' must be printable ASCII"},
    {"bad starttls word", TLS_OK LISTENER_OK "starttls = maybe\n", 8,
        "starttls: 'maybe' is not one of required or optional"},
    {"bad duration unit", TLS_OK LISTENER_OK "timeout_idle = 5x\n", 8,
        "timeout_idle: '5x' is not a duration from 1s to 86400s (a number "
        "with ms, s, m or h; plain is seconds)"},
    {"duration out of range", TLS_OK LISTENER_OK "timeout_idle = 0\n", 8,
        "timeout_idle: '0' is not a duration from 1s to 86400s"},
    {"duration overflow",
        "[global]\ndrain_timeout = 99999999999999999999h\n" TLS_OK LISTENER_OK,
        2, "drain_timeout: '99999999999999999999h' is not a duration"},
    {"busy_poll too long", "[global]\nbusy_poll = 2s\n" TLS_OK LISTENER_OK, 2,
        "busy_poll: '2s' is not a duration from 0s to 1s"},
    {"workers zero", "[global]\nworkers = 0\n" TLS_OK LISTENER_OK, 2,
        "workers: '0' is not auto or a number from 1 to 256"},
    {"workers words", "[global]\nworkers = two\n" TLS_OK LISTENER_OK, 2,
        "workers: 'two' is not auto or a number from 1 to 256"},
    {"workers too many", "[global]\nworkers = 300\n" TLS_OK LISTENER_OK, 2,
        "workers: '300' is not auto or a number from 1 to 256"},
    {"bad bool", "[global]\nlog_connect = maybe\n" TLS_OK LISTENER_OK, 2,
        "log_connect: 'maybe' is not yes or no"},
    {"bad log format", "[global]\nlog_format = xml\n" TLS_OK LISTENER_OK, 2,
        "log_format: 'xml' is not one of text or json"},
    {"bad log level", "[global]\nlog_level = loud\n" TLS_OK LISTENER_OK, 2,
        "log_level: 'loud' is not one of error, warning, info or debug"},
    {"bad min version", "[tls]\nmin_version = TLSv1.0\n" TLS_OK LISTENER_OK, 2,
        "min_version: 'TLSv1.0' is not one of TLSv1.2 or TLSv1.3"},
    {"empty value", "[global]\nlog =\n" TLS_OK LISTENER_OK, 2,
        "log: empty value"},
    {"bad server name",
        "[global]\nserver_name = mail example\n" TLS_OK LISTENER_OK, 2,
        "server_name: 'mail example' is not a host name"},
    {"duplicate key", "[global]\nworkers = 1\nworkers = 2\n" TLS_OK LISTENER_OK,
        3, "'workers' is set twice in this section"},
    {"duplicate listener", TLS_OK LISTENER_OK LISTENER_OK, 8,
        "[listener imaps] is already defined at line 4"},
    {"bad listener name", TLS_OK "[listener bad name!]\n" LISTENER_OK, 4,
        "listener name 'bad name!' must be 1-32 letters, digits, '.', '_' or "
        "'-'"},
    {"empty listener name", TLS_OK "[listener]\n" LISTENER_OK, 4,
        "listener name '' must be 1-32 letters"},
    {"section without bracket", TLS_OK LISTENER_OK "[global\n", 8,
        "section header without ']'"},
    {"text after section", TLS_OK LISTENER_OK "[global] x\n", 8,
        "text after the section header"},
    {"section name too long",
        TLS_OK LISTENER_OK
        "[listener aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n",
        8, "section name longer than 49 bytes"},
    {"no equals sign", TLS_OK LISTENER_OK "just some words\n", 8,
        "expected 'key = value' or a [section] header"},
    {"empty cipher list",
        "[tls]\ncertificate = /c.pem\nkey = /k.pem\n"
        "ciphers =\n" LISTENER_OK,
        4, "ciphers: empty value"},
    {"continuation of a single value",
        "[global]\nworkers = 1\n    2\n" TLS_OK LISTENER_OK, 3,
        "'workers' takes one value, but this indented line continues it"},
    {"listen twice in one listener",
        TLS_OK LISTENER_OK "listen = 127.0.0.1:993\n", 8,
        "[listener imaps]: 127.0.0.1:993 is listed twice"},
    {"listen shared by two listeners",
        TLS_OK LISTENER_OK
        "[listener pop3s]\nprotocol = pop3\nlisten = 127.0.0.1:993\n"
        "backend = 127.0.0.1:110\n",
        10,
        "[listener pop3s]: 127.0.0.1:993 is already used by [listener "
        "imaps] (line 6)"},
    {"star conflicts with explicit",
        TLS_OK LISTENER_OK
        "listen = *:995\n"
        "[listener pop3s]\nprotocol = pop3\nlisten = [::]:995\n"
        "backend = 127.0.0.1:110\n",
        11, "[listener pop3s]: [::]:995 is already used by [listener imaps]"},
    {"no listener", TLS_OK, 0,
        "no [listener NAME] section: nothing to listen on"},
    {"no certificate", LISTENER_OK, 1,
        "[listener imaps]: no certificate: set 'certificate' here or in "
        "[tls]"},
    {"no key", "[tls]\ncertificate = /c.pem\n" LISTENER_OK, 3,
        "[listener imaps]: no private key: set 'key' here or in [tls]"},
    {"listener cert without key",
        TLS_OK LISTENER_OK "certificate = /other.pem\n", 4,
        "[listener imaps]: 'certificate' is set without 'key'; a listener "
        "overrides both or neither"},
    {"unknown user",
        "[global]\nuser = no-such-user-mailproxy\n" TLS_OK LISTENER_OK, 0,
        "[global]: user 'no-such-user-mailproxy' does not exist"},
    {"group without user", "[global]\ngroup = root\n" TLS_OK LISTENER_OK, 0,
        "[global]: 'group' is set without 'user'"},
    {"bad proxy_protocol", TLS_OK LISTENER_OK "proxy_protocol = v3\n", 8,
        "proxy_protocol: 'v3' is not one of off, v1 or v2"},
    {"accept_proxy without trusted_proxies",
        TLS_OK LISTENER_OK "accept_proxy = yes\n", 4,
        "[listener imaps]: accept_proxy = yes needs 'trusted_proxies', the "
        "load balancers' addresses"},
    {"trusted_proxies without accept_proxy",
        TLS_OK LISTENER_OK "trusted_proxies = 10.0.0.0/8\n", 4,
        "[listener imaps]: 'trusted_proxies' and 'timeout_proxy' are for "
        "accept_proxy = yes"},
    {"timeout_proxy without accept_proxy",
        TLS_OK LISTENER_OK "timeout_proxy = 2s\n", 4,
        "[listener imaps]: 'trusted_proxies' and 'timeout_proxy' are for "
        "accept_proxy = yes"},
    {"trusted_proxies host name",
        TLS_OK LISTENER_OK "accept_proxy = yes\n"
                           "trusted_proxies = 10.0.0.0/8, lb.example\n",
        9,
        "trusted_proxies: 'lb.example' is not an address or network "
        "(10.0.0.0/8, 2001:db8::/32, 127.0.0.1)"},
    {"trusted_proxies prefix too long",
        TLS_OK LISTENER_OK "accept_proxy = yes\n"
                           "trusted_proxies = 10.0.0.0/33\n",
        9,
        "trusted_proxies: '10.0.0.0/33' is not an address or network "
        "(10.0.0.0/8, 2001:db8::/32, 127.0.0.1); the prefix is at most 32 "
        "(IPv4) or 128 (IPv6)"},
    {"trusted_proxies empty prefix",
        TLS_OK LISTENER_OK "accept_proxy = yes\n"
                           "trusted_proxies = ::1/\n",
        9, "trusted_proxies: '::1/' is not an address or network"},
    {"sni_certificate three files",
        TLS_OK "sni_certificate = /a.pem /a.key /b.pem\n" LISTENER_OK, 4,
        "sni_certificate: give the certificate chain file, then its key "
        "file (or one file holding both)"},
    {"sni_certificate empty", TLS_OK "sni_certificate =\n" LISTENER_OK, 4,
        "sni_certificate: give the certificate chain file, then its key "
        "file (or one file holding both)"},
    {"sni_strict twice",
        TLS_OK "sni_strict = yes\nsni_strict = no\n" LISTENER_OK, 5,
        "'sni_strict' is set twice in this section"},
    {"trusted_proxies empty",
        TLS_OK LISTENER_OK "accept_proxy = yes\ntrusted_proxies = ,\n", 9,
        "trusted_proxies: no network given"},
};

/* Returns whether the case passed; prints why not. */
static bool
expect_error(const struct error_case *c)
{
	char *errors = NULL, expected[1024];
	struct config *cfg = load(c->text, &errors);
	bool ok;

	if (cfg != NULL) {
		print_error("case '%s': loaded without error\n", c->name);
		config_unref(cfg);
		return false;
	}
	if (c->line > 0)
		(void)snprintf(expected, sizeof(expected), "%s:%d: %s", path,
		    c->line, c->message);
	else
		(void)snprintf(expected, sizeof(expected), "%s: %s", path,
		    c->message);
	ok = errors != NULL && strstr(errors, expected) != NULL;
	if (!ok)
		print_error("case '%s':\nexpected: %s\ngot:\n%s\n", c->name,
		    expected, errors != NULL ? errors : "(nothing)");
	free(errors);
	return ok;
}

static void
test_config_load_reports_each_error_with_line(void **state)
{
	size_t i, failed = 0;

	(void)state;
	for (i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++)
		failed += !expect_error(&error_cases[i]);
	assert_int_equal(failed, 0);
}

static void
test_config_load_long_line_refused_with_line(void **state)
{
	char text[1024], *errors = NULL, expected[512];

	(void)state;
	(void)snprintf(text, sizeof(text),
	    TLS_OK LISTENER_OK "server_name = %0*d\n", 190, 0);
	assert_null(load(text, &errors));
	(void)snprintf(expected, sizeof(expected),
	    "%s:8: line longer than 197 bytes; continue long values on "
	    "indented lines",
	    path);
	assert_non_null(strstr(errors, expected));
	free(errors);
}

/* A refused key line is one error; its indented lines go with it. */
static void
test_config_load_refused_line_takes_its_continuations(void **state)
{
	static const char *const texts[] = {
	    "[global]\nfoo = 1\n    2\n    3\n" TLS_OK LISTENER_OK,
	    "[global]\nlog = stderr\nlog = x\n    2\n" TLS_OK LISTENER_OK,
	    "[global]\nworkers = 1\nsome words\n    2\n" TLS_OK LISTENER_OK,
	};
	char long_line[1024], *errors = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		assert_null(load(texts[i], &errors));
		assert_non_null(errors);
		/* One line of errors, about line 2 or 3, none about 4. */
		assert_null(strchr(errors, '\n') == NULL ?
		        NULL :
		        strchr(strchr(errors, '\n') + 1, '\n'));
		assert_null(strstr(errors, ":4:"));
		free(errors);
		errors = NULL;
	}
	(void)snprintf(long_line, sizeof(long_line),
	    "[global]\nworkers = 1\nserver_name = %0*d\n    x\n" TLS_OK
	        LISTENER_OK,
	    190, 0);
	assert_null(load(long_line, &errors));
	assert_non_null(strstr(errors, ":3: line longer than"));
	assert_null(strstr(errors, ":4:"));
	free(errors);
}

/* "ciphers =" with the list on the indented lines that follow. */
static void
test_config_load_list_starts_on_next_line(void **state)
{
	struct config *cfg;
	char *errors = NULL;

	(void)state;
	cfg = load("[tls]\ncertificate = /c.pem\nkey = /k.pem\nciphers =\n"
	           "    ECDHE-ECDSA-AES128-GCM-SHA256\n"
	           "    ECDHE-RSA-AES128-GCM-SHA256\n" LISTENER_OK,
	    &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	assert_string_equal(cfg->tls.ciphers,
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
	config_unref(cfg);
	/* Errors without a place to put them are not lost memory. */
	assert_null(load("[global]\nfoo = 1\n", NULL));
}

static void
test_config_load_nul_byte_refused(void **state)
{
	static const char text[] = TLS_OK LISTENER_OK "log = a\0b\n";
	char *errors = NULL, expected[512];

	(void)state;
	write_file(text, sizeof(text) - 1);
	assert_null(config_load(path, &errors));
	(void)snprintf(expected, sizeof(expected), "%s:8: NUL byte in line",
	    path);
	assert_non_null(strstr(errors, expected));
	free(errors);
}

static void
test_config_load_missing_file(void **state)
{
	char *errors = NULL;

	(void)state;
	assert_null(config_load("/nonexistent/mailproxy.ini", &errors));
	assert_string_equal(errors,
	    "/nonexistent/mailproxy.ini: cannot open: No such file or "
	    "directory\n");
	free(errors);
}

static void
test_config_load_reports_all_errors_at_once(void **state)
{
	char *errors = NULL, *p;
	int lines = 0;

	(void)state;
	assert_null(load("[global]\nworkers = x\nlog_format = y\n"
	                 "[bogus]\n" TLS_OK LISTENER_OK "tls = z\n",
	    &errors));
	for (p = errors; *p != '\0'; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 4);
	free(errors);
}

static void
test_config_load_valid_file(void **state)
{
	char *errors = NULL;
	const struct config_listener *l;
	struct config *cfg;

	(void)state;
	cfg = load("; comment\n"
	           "# another\n"
	           "[global]\n"
	           "workers = 3\n"
	           "log_format = json ; inline comment\n"
	           "drain_timeout = 1500ms\n"
	           "timeout_connect = 2s\n"
	           "busy_poll = 1ms\n"
	           "server_name = mx.example.org\n"
	           "[tls]\n"
	           "certificate = /etc/ssl/mail.pem\n"
	           "key = /etc/ssl/mail.key\n"
	           "min_version = TLSv1.3\n"
	           "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
	           "    ECDHE-RSA-AES128-GCM-SHA256\n"
	           "\n"
	           "[listener imaps]\n"
	           "protocol = imap\n"
	           "listen = 127.0.0.1:993, [::1]:993\n"
	           "    *:1993\n"
	           "backend = [2001:db8::5]:143\n"
	           "timeout_handshake = 5s\n"
	           "[listener pop3s]\n"
	           "protocol = pop3\n"
	           "listen = 127.0.0.1:995\n"
	           "backend = mailstore.internal:110\n"
	           "certificate = /p.pem\n"
	           "key = /p.key\n"
	           "[listener smtps]\n"
	           "protocol = smtp\n"
	           "tls = implicit\n"
	           "listen = 127.0.0.1:465\n"
	           "backend = unix:/run/postfix/smtpd\n"
	           "timeout_idle = 2m\n"
	           "timeout_linger = 500ms\n"
	           "proxy_protocol = v2\n"
	           "accept_proxy = yes\n"
	           "trusted_proxies = 10.1.2.3/8\n"
	           "    ::1, 2001:db8::/32\n"
	           "timeout_proxy = 2s\n",
	    &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->log_format, CONFIG_LOG_JSON);
	assert_int_equal(cfg->log_level, CONFIG_LOG_INFO);
	assert_string_equal(cfg->log, "stderr");
	assert_int_equal(cfg->drain_timeout_ms, 1500);
	assert_int_equal(cfg->busy_poll_ms, 1);
	assert_string_equal(cfg->server_name, "mx.example.org");
	assert_int_equal(cfg->tls.min_version, CONFIG_TLS_1_3);
	assert_true(cfg->tls.session_tickets);
	assert_string_equal(cfg->tls.ciphers,
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
	assert_int_equal(cfg->tls.certificate_loc.line, 11);
	assert_int_equal(cfg->listener_count, 3);

	l = &cfg->listeners[0];
	assert_string_equal(l->name, "imaps");
	assert_int_equal(l->loc.line, 17);
	assert_int_equal(l->protocol, PROTO_IMAP);
	assert_int_equal(l->tls, CONFIG_TLS_IMPLICIT);
	assert_int_equal(l->listen_count, 4);
	assert_string_equal(l->listen[0].text, "127.0.0.1:993");
	assert_string_equal(l->listen[1].text, "[::1]:993");
	assert_string_equal(l->listen[2].text, "0.0.0.0:1993");
	assert_string_equal(l->listen[3].text, "[::]:1993");
	assert_int_equal(l->listen[3].loc.line, 20);
	assert_int_equal(l->backend.kind, CONFIG_BACKEND_ADDR);
	assert_string_equal(l->backend.text, "[2001:db8::5]:143");
	assert_int_equal(l->timeout_handshake_ms, 5000);
	assert_int_equal(l->timeout_connect_ms, 2000);
	assert_int_equal(l->timeout_idle_ms, 31 * 60 * 1000);
	assert_int_equal(l->timeout_linger_ms, 30000);
	assert_string_equal(config_listener_certificate(cfg, l, NULL),
	    "/etc/ssl/mail.pem");
	assert_string_equal(config_listener_server_name(cfg, l),
	    "mx.example.org");

	l = &cfg->listeners[1];
	assert_int_equal(l->backend.kind, CONFIG_BACKEND_HOST);
	assert_string_equal(l->backend.host, "mailstore.internal");
	assert_string_equal(l->backend.port, "110");
	assert_int_equal(l->timeout_handshake_ms, 30000);
	assert_int_equal(l->timeout_idle_ms, 10 * 60 * 1000);
	assert_string_equal(config_listener_key(cfg, l, NULL), "/p.key");

	l = &cfg->listeners[2];
	assert_int_equal(l->backend.kind, CONFIG_BACKEND_UNIX);
	assert_string_equal(l->backend.path, "/run/postfix/smtpd");
	assert_int_equal(l->timeout_idle_ms, 120000);
	assert_int_equal(l->timeout_linger_ms, 500);
	assert_int_equal(l->proxy_protocol, CONFIG_PROXY_V2);
	assert_true(l->accept_proxy);
	assert_int_equal(l->timeout_proxy_ms, 2000);
	assert_int_equal(l->trusted_proxies_count, 3);
	/* Host bits are cleared. */
	assert_int_equal(l->trusted_proxies[0].addr[1], 0);
	assert_int_equal(l->trusted_proxies[0].bits, 8);
	assert_int_equal(l->trusted_proxies[1].bits, 128);
	assert_int_equal(cfg->listeners[0].proxy_protocol, CONFIG_PROXY_OFF);
	assert_false(cfg->listeners[0].accept_proxy);
	assert_int_equal(cfg->listeners[0].timeout_proxy_ms, 5000);
	assert_null(errors);

	assert_ptr_equal(config_ref(cfg), cfg);
	config_unref(cfg);
	config_unref(cfg);
}

static void
test_config_load_sni_certificates(void **state)
{
	char *errors = NULL;
	struct config *cfg;

	(void)state;
	cfg = load(TLS_OK "sni_certificate = /a.pem\t/a.key\n"
	                  "sni_strict = yes\n"
	                  "sni_certificate = /wild.pem\n" LISTENER_OK,
	    &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	assert_int_equal(cfg->tls.sni_count, 2);
	assert_string_equal(cfg->tls.sni[0].certificate, "/a.pem");
	assert_string_equal(cfg->tls.sni[0].key, "/a.key");
	assert_int_equal(cfg->tls.sni[0].loc.line, 4);
	/* One file holds chain and key. */
	assert_string_equal(cfg->tls.sni[1].certificate, "/wild.pem");
	assert_string_equal(cfg->tls.sni[1].key, "/wild.pem");
	assert_int_equal(cfg->tls.sni[1].loc.line, 6);
	assert_true(cfg->tls.sni_strict);
	config_unref(cfg);

	cfg = load(TLS_OK LISTENER_OK, &errors);
	if (cfg == NULL)
		fail_msg("%s", errors);
	assert_int_equal(cfg->tls.sni_count, 0);
	assert_false(cfg->tls.sni_strict);
	config_unref(cfg);
}

static void
test_config_load_defaults(void **state)
{
	char *errors = NULL;
	struct config *cfg = load(TLS_OK LISTENER_OK, &errors);

	(void)state;
	assert_non_null(cfg);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->log_format, CONFIG_LOG_TEXT);
	assert_false(cfg->log_connect);
	assert_int_equal(cfg->drain_timeout_ms, 30000);
	assert_int_equal(cfg->busy_poll_ms, 0);
	assert_int_equal(cfg->tls.min_version, CONFIG_TLS_1_2);
	assert_non_null(cfg->tls.ciphers);
	assert_non_null(cfg->server_name);
	assert_int_equal(cfg->listeners[0].timeout_connect_ms, 10000);
	config_unref(cfg);
}

static void
test_config_parse_duration_cases(void **state)
{
	static const struct {
		const char *in;
		int r;
		uint64_t ms;
	} cases[] = {
	    {"90", 0, 90000},
	    {"90s", 0, 90000},
	    {"500ms", 0, 500},
	    {"5m", 0, 300000},
	    {"2h", 0, 7200000},
	    {"0", 0, 0},
	    {"", ERROR_SYNTAX, 0},
	    {"s", ERROR_SYNTAX, 0},
	    {"-1", ERROR_SYNTAX, 0},
	    {"1.5s", ERROR_SYNTAX, 0},
	    {"5 s", ERROR_SYNTAX, 0},
	    {"5d", ERROR_SYNTAX, 0},
	    {"18446744073709551615", ERROR_RANGE, 0},
	    {"99999999999999999999", ERROR_RANGE, 0},
	};
	size_t i;
	uint64_t ms;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ms = 0;
		assert_int_equal(config_parse_duration(cases[i].in, &ms),
		    cases[i].r);
		if (cases[i].r == 0)
			assert_int_equal(ms, cases[i].ms);
	}
}

static void
test_config_parse_addr_cases(void **state)
{
	static const struct {
		const char *in;
		int r;
		const char *text;
	} cases[] = {
	    {"1.2.3.4:993", 0, "1.2.3.4:993"},
	    {"[::1]:993", 0, "[::1]:993"},
	    {"[2001:DB8:0:0::1]:1", 0, "[2001:db8::1]:1"},
	    {"[::ffff:10.0.0.1]:25", 0, "[::ffff:10.0.0.1]:25"},
	    {"1.2.3.4:65535", 0, "1.2.3.4:65535"},
	    {"1.2.3.4:65536", ERROR_RANGE, NULL},
	    {"1.2.3.4:0", ERROR_RANGE, NULL},
	    {"1.2.3.4:", ERROR_SYNTAX, NULL},
	    {"1.2.3.4:x", ERROR_SYNTAX, NULL},
	    {"1.2.3.4:+5", ERROR_SYNTAX, NULL},
	    {"1.2.3:993", ERROR_SYNTAX, NULL},
	    {"[::1]993", ERROR_SYNTAX, NULL},
	    {"::1:993", ERROR_SYNTAX, NULL},
	    {"host:993", ERROR_SYNTAX, NULL},
	    {"", ERROR_SYNTAX, NULL},
	};
	struct config_addr a;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = config_parse_addr(cases[i].in, &a);

		if (r != cases[i].r)
			fail_msg("'%s': got %d, expected %d", cases[i].in, r,
			    cases[i].r);
		if (r == 0)
			assert_string_equal(a.text, cases[i].text);
	}
}

static char *
slurp(const char *file)
{
	FILE *f = fopen(file, "r");
	char *text;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	text = malloc((size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	text[len] = '\0';
	(void)fclose(f);
	return text;
}

/* A README table row names the key first, alone or in a list
 * ("| user, group |"). */
static bool
in_readme_table(const char *readme, const char *name)
{
	static const struct {
		const char *before, *after;
	} forms[] = {{"| ", " |"}, {"| ", ","}, {", ", " |"}};
	char want[128];
	size_t i;

	for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		(void)snprintf(want, sizeof(want), "%s%s%s", forms[i].before,
		    name, forms[i].after);
		if (strstr(readme, want) != NULL)
			return true;
	}
	return false;
}

/* The option tables are the source; the README's reference and the
 * example file must name every key (STYLE.md §9). */
static bool
matches(const struct config_cidr *nets, size_t n, const char *ip)
{
	struct sockaddr_in6 in6;
	struct sockaddr_in in;

	memset(&in, 0, sizeof(in));
	memset(&in6, 0, sizeof(in6));
	if (inet_pton(AF_INET, ip, &in.sin_addr) == 1) {
		in.sin_family = AF_INET;
		return config_cidr_match(nets, n, (struct sockaddr *)&in);
	}
	assert_int_equal(inet_pton(AF_INET6, ip, &in6.sin6_addr), 1);
	in6.sin6_family = AF_INET6;
	return config_cidr_match(nets, n, (struct sockaddr *)&in6);
}

static void
test_config_cidr_parse_and_match(void **state)
{
	struct config_cidr nets[4];

	(void)state;
	assert_int_equal(config_parse_cidr("10.0.0.0/8", &nets[0]), 0);
	assert_int_equal(config_parse_cidr("192.168.1.77/30", &nets[1]), 0);
	assert_int_equal(config_parse_cidr("2001:db8::/33", &nets[2]), 0);
	assert_int_equal(config_parse_cidr("::1", &nets[3]), 0);
	assert_int_equal(nets[1].addr[3], 76);
	assert_true(matches(nets, 4, "10.255.0.1"));
	assert_false(matches(nets, 4, "11.0.0.1"));
	assert_true(matches(nets, 4, "192.168.1.79"));
	assert_false(matches(nets, 4, "192.168.1.80"));
	assert_true(matches(nets, 4, "2001:db8:7fff::1"));
	assert_false(matches(nets, 4, "2001:db8:8000::1"));
	assert_true(matches(nets, 4, "::1"));
	assert_false(matches(nets, 4, "::2"));
	/* A dual-stack socket's view of an IPv4 peer. */
	assert_true(matches(nets, 4, "::ffff:10.1.2.3"));
	assert_false(matches(nets, 4, "::ffff:11.1.2.3"));
	/* An IPv4 network never matches a native IPv6 address. */
	assert_false(matches(nets, 1, "::a01:203"));
	/* An IPv4-mapped entry is the IPv4 network it names. */
	assert_int_equal(config_parse_cidr("::ffff:10.0.0.5", &nets[0]), 0);
	assert_int_equal(nets[0].family, AF_INET);
	assert_int_equal(nets[0].bits, 32);
	assert_true(matches(nets, 1, "10.0.0.5"));
	assert_true(matches(nets, 1, "::ffff:10.0.0.5"));
	assert_false(matches(nets, 1, "10.0.0.6"));
	assert_int_equal(config_parse_cidr("::ffff:10.0.0.0/104", &nets[0]), 0);
	assert_int_equal(nets[0].bits, 8);
	assert_true(matches(nets, 1, "10.200.0.1"));
	assert_int_equal(config_parse_cidr("0.0.0.0/0", &nets[0]), 0);
	assert_true(matches(nets, 1, "203.0.113.9"));
	assert_false(matches(nets, 1, "2001:db8::1"));
	assert_int_equal(config_parse_cidr("10.0.0.0/33", &nets[0]),
	    ERROR_RANGE);
	assert_int_equal(config_parse_cidr("::/129", &nets[0]), ERROR_RANGE);
	assert_int_equal(config_parse_cidr("10.0.0/8", &nets[0]), ERROR_SYNTAX);
	assert_int_equal(config_parse_cidr("10.0.0.0/-1", &nets[0]),
	    ERROR_SYNTAX);
	assert_int_equal(config_parse_cidr("10.0.0.0/8x", &nets[0]),
	    ERROR_SYNTAX);
	assert_int_equal(config_parse_cidr("", &nets[0]), ERROR_SYNTAX);
}

/* The manual page names a key as ".B key" on a line of its own, or as
 * "\fBkey\fR" in running text. */
static bool
in_manual(const char *manual, const char *name)
{
	char want[128];

	(void)snprintf(want, sizeof(want), "\n.B %s\n", name);
	if (strstr(manual, want) != NULL)
		return true;
	(void)snprintf(want, sizeof(want), "\\fB%s\\fR", name);
	return strstr(manual, want) != NULL;
}

static void
test_config_keys_are_documented(void **state)
{
	char *readme = slurp(SOURCE_DIR "/README.md");
	char *example = slurp(SOURCE_DIR "/etc/mailproxy.ini");
	char *manual = slurp(SOURCE_DIR "/docs/mailproxy.ini.5");
	char want[128];
	const char *name, *section;
	size_t i, missing = 0;

	(void)state;
	for (i = 0; (name = config_key_name(i, &section)) != NULL; i++) {
		if (!in_readme_table(readme, name)) {
			print_error("README.md: [%s] %s is not in a table\n",
			    section, name);
			missing++;
		}
		(void)snprintf(want, sizeof(want), "\n%s = ", name);
		if (strstr(example, want) == NULL) {
			(void)snprintf(want, sizeof(want), "\n;%s = ", name);
			if (strstr(example, want) == NULL) {
				print_error("etc/mailproxy.ini: [%s] %s is "
				            "missing\n",
				    section, name);
				missing++;
			}
		}
		if (!in_manual(manual, name)) {
			print_error("docs/mailproxy.ini.5: [%s] %s is not "
			            "described (.B %s)\n",
			    section, name, name);
			missing++;
		}
	}
	assert_true(i > 20);
	assert_int_equal(missing, 0);
	free(readme);
	free(example);
	free(manual);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_load_reports_each_error_with_line),
	    cmocka_unit_test(test_config_load_long_line_refused_with_line),
	    cmocka_unit_test(test_config_load_nul_byte_refused),
	    cmocka_unit_test(
	        test_config_load_refused_line_takes_its_continuations),
	    cmocka_unit_test(test_config_load_list_starts_on_next_line),
	    cmocka_unit_test(test_config_load_missing_file),
	    cmocka_unit_test(test_config_load_reports_all_errors_at_once),
	    cmocka_unit_test(test_config_load_valid_file),
	    cmocka_unit_test(test_config_load_sni_certificates),
	    cmocka_unit_test(test_config_load_defaults),
	    cmocka_unit_test(test_config_parse_duration_cases),
	    cmocka_unit_test(test_config_parse_addr_cases),
	    cmocka_unit_test(test_config_cidr_parse_and_match),
	    cmocka_unit_test(test_config_keys_are_documented),
	};
	int r;

	(void)snprintf(path, sizeof(path), "%s/test_config_%d.ini", TEST_TMPDIR,
	    (int)getpid());
	r = cmocka_run_group_tests(tests, NULL, NULL);
	(void)unlink(path);
	return r;
}
