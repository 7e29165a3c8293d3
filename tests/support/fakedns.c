/*
 * LD_PRELOAD helper for integration tests: getaddrinfo() answers for one
 * made-up host name with a given list of addresses, in the given order,
 * so a test can give a backend name an unreachable or silent first address
 * without touching /etc/hosts. Everything else goes to the real resolver.
 *
 *   FAKEDNS_NAME=backend.test FAKEDNS_ADDRS=::1,127.0.0.1
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

typedef int getaddrinfo_fn(const char *, const char *, const struct addrinfo *,
    struct addrinfo **);

int getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res);

int
getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
    struct addrinfo **res)
{
	getaddrinfo_fn *real;
	const char *name = getenv("FAKEDNS_NAME");
	const char *list = getenv("FAKEDNS_ADDRS");
	struct addrinfo h, *head = NULL, **tail = &head, *one;
	char addr[64];
	const char *p, *comma;
	size_t len;
	int r;

	*(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
	if (name == NULL || list == NULL || node == NULL ||
	    strcmp(node, name) != 0)
		return real(node, service, hints, res);
	memset(&h, 0, sizeof(h));
	if (hints != NULL)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	h.ai_family = AF_UNSPEC;
	/* glibc's freeaddrinfo frees node by node, so answers chain. */
	for (p = list; *p != '\0'; p = *comma != '\0' ? comma + 1 : comma) {
		comma = strchr(p, ',');
		if (comma == NULL)
			comma = p + strlen(p);
		len = (size_t)(comma - p);
		if (len >= sizeof(addr))
			continue;
		memcpy(addr, p, len);
		addr[len] = '\0';
		r = real(addr, service, &h, &one);
		if (r != 0)
			continue;
		*tail = one;
		while (*tail != NULL)
			tail = &(*tail)->ai_next;
	}
	if (head == NULL)
		return EAI_NONAME;
	*res = head;
	return 0;
}
