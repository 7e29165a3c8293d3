/*
 * mailproxy: the command line. -t checks the configuration and the
 * certificates; otherwise the master (master.c) takes over.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "mailproxy/config.h"
#include "mailproxy/master.h"
#include "mailproxy/tls.h"
#include "mailproxy/version.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: mailproxy [-t] [-c FILE]\n"
	    "\n"
	    "TLS in front of plaintext IMAP, POP3 and SMTP servers.\n"
	    "\n"
	    "  -c, --config FILE  configuration file (default %s)\n"
	    "  -t, --test         check the configuration and the "
	    "certificates, then exit\n"
	    "                     (0: valid, 1: not)\n"
	    "  -h, --help         this text\n"
	    "  -V, --version      print the version and exit\n"
	    "\n"
	    "Runs in the foreground: a master process and its workers.\n"
	    "SIGHUP: reload the configuration and the certificates; sessions "
	    "open\n"
	    "before go on with the old ones for up to reload_drain_timeout.\n"
	    "SIGTERM or SIGINT: stop accepting and let sessions finish for up "
	    "to\n"
	    "drain_timeout (a second signal ends them at once).\n"
	    "SIGUSR1: reopen the log file.\n"
	    "SIGUSR2: start the binary found at the same path again (an "
	    "upgrade) on the\n"
	    "same listening sockets; this master's sessions drain as on "
	    "SIGHUP.\n",
	    CONFIG_DEFAULT_PATH);
}

/* Prints every line of a multi-line error text with our prefix. */
static void
print_errors(const char *text)
{
	const char *p = text, *nl;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL) {
			fprintf(stderr, "mailproxy: %s\n", p);
			break;
		}
		fprintf(stderr, "mailproxy: %.*s\n", (int)(nl - p), p);
		p = nl + 1;
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"test", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = CONFIG_DEFAULT_PATH;
	struct config *cfg;
	bool test = false;
	char *errors = NULL;
	int c, status;

	while ((c = getopt_long(argc, argv, "c:thV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("mailproxy %s (commit %s, %s build, %s)\n"
			       "%s (built with %s), libuv %s\n",
			    MAILPROXY_VERSION, MAILPROXY_COMMIT,
			    MAILPROXY_BUILD_TYPE, MAILPROXY_COMPILER,
			    OpenSSL_version(OPENSSL_VERSION),
			    OPENSSL_VERSION_TEXT, uv_version_string());
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}

	cfg = config_load(path, &errors);
	if (cfg == NULL) {
		print_errors(errors != NULL ? errors : "out of memory");
		free(errors);
		if (test)
			fprintf(stderr,
			    "mailproxy: configuration file %s test failed\n",
			    path);
		return 1;
	}
	if (tls_init() != 0) {
		fprintf(stderr, "mailproxy: cannot initialise TLS\n");
		config_unref(cfg);
		return 1;
	}
	if (test) {
		status = master_test(cfg);
		if (status == 0)
			printf("mailproxy: configuration file %s test is "
			       "successful\n",
			    path);
		else
			fprintf(stderr,
			    "mailproxy: configuration file %s test failed\n",
			    path);
		config_unref(cfg);
	} else {
		status = master_run(path, cfg, argv);
	}
	tls_cleanup();
	return status;
}
