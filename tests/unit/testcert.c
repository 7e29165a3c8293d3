/*
 * Throwaway certificates for unit tests (see testcert.h).
 */
#include "testcert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static int
write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (f == NULL)
		return -1;
	ok = cert != NULL ?
	    PEM_write_X509(f, cert) :
	    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	return fclose(f) == 0 && ok ? 0 : -1;
}

int
testcert_write(const char *dir, const char *stem)
{
	return testcert_write_dated(dir, stem, -3600, 90 * 86400);
}

int
testcert_write_dated(const char *dir, const char *stem, long not_before,
    long not_after)
{
	char path[512];
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name;
	int r = -1;

	if (key == NULL || cert == NULL)
		goto done;
	(void)X509_set_version(cert, 2);
	(void)ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	(void)X509_gmtime_adj(X509_getm_notBefore(cert), not_before);
	(void)X509_gmtime_adj(X509_getm_notAfter(cert), not_after);
	(void)X509_set_pubkey(cert, key);
	name = X509_get_subject_name(cert);
	(void)X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0);
	(void)X509_set_issuer_name(cert, name);
	if (X509_sign(cert, key, EVP_sha256()) == 0)
		goto done;
	(void)snprintf(path, sizeof(path), "%s/%s.crt", dir, stem);
	if (write_pem(path, NULL, cert) != 0)
		goto done;
	(void)snprintf(path, sizeof(path), "%s/%s.key", dir, stem);
	r = write_pem(path, key, NULL);
done:
	X509_free(cert);
	EVP_PKEY_free(key);
	return r;
}

const char *
testcert_tmpdir(void)
{
	static char dir[] = "/tmp/mailproxy-test-XXXXXX";

	if (dir[sizeof(dir) - 2] == 'X' && mkdtemp(dir) == NULL)
		return NULL;
	return dir;
}
