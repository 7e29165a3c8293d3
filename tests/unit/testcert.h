/*
 * Test certificates made with OpenSSL's API at run time: no key material
 * in the repository and no openssl CLI in unit tests.
 */
#ifndef MAILPROXY_TESTCERT_H
#define MAILPROXY_TESTCERT_H

#include <stddef.h>

/*
 * Writes a fresh P-256 key and a self-signed certificate for "localhost"
 * (valid one day) as PEM files dir/<stem>.crt and dir/<stem>.key.
 * Returns 0, or -1 when anything fails.
 */
int testcert_write(const char *dir, const char *stem);

/* The same, valid from not_before to not_after seconds from now. */
int testcert_write_dated(const char *dir, const char *stem, long not_before,
    long not_after);

/* Makes a private temporary directory; returns a static path or NULL. */
const char *testcert_tmpdir(void);

#endif
