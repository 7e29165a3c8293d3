/*
 * The instance's shared counters (metrics.h): the master's region, the
 * workers' admissions and counters, and the Prometheus text the metrics
 * process renders from them.
 *
 * Admission (the one place that enforces the limits of the README's
 * "Limits"): a session adds itself to the instance's, its listener's and
 * its client's counts with one atomic add each, then looks at the sums;
 * over a limit it takes the adds back and is refused. Two workers
 * admitting the last place at once may both see the limit passed and both
 * refuse (never both admit), so a count never exceeds its limit. Client
 * counts live in a count-min table: each client adds to one cell of each
 * of two rows chosen by a keyed hash (SipHash, random key, so that nobody
 * can aim at another's cells) and its count is the smaller of the two.
 * Addresses that share both cells share a limit; none is forgotten.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "mailproxy/metrics.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define METRICS_MAGIC 0x6d657472u

#define RELAXED memory_order_relaxed

/* Microseconds: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 s. */
static const uint64_t hist_bounds[METRICS_HIST_BOUNDS] = {5000, 10000, 25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const hist_le[METRICS_HIST_BOUNDS] = {"0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"};
static const char *const limit_names[METRICS_LIMIT_COUNT_] = {"max_sessions",
    "max_sessions_per_client", "max_connect_rate_per_client"};

/* One writer: no lock prefix needed. */
static void
bump(metrics_counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, RELAXED) + n, RELAXED);
}

static uint64_t
get(const metrics_counter *c)
{
	return atomic_load_explicit((metrics_counter *)c, RELAXED);
}

uint64_t
metrics_now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* The master. */

struct metrics_shared *
metrics_create(void)
{
	struct metrics_shared *shm;

	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (shm == MAP_FAILED)
		return NULL;
	shm->magic = METRICS_MAGIC;
	if (RAND_bytes(shm->key, sizeof(shm->key)) != 1) {
		(void)munmap(shm, sizeof(*shm));
		return NULL;
	}
	atomic_store(&shm->heartbeat_ms, metrics_now_ms());
	return shm;
}

void
metrics_destroy(struct metrics_shared *shm)
{
	if (shm != NULL)
		(void)munmap(shm, sizeof(*shm));
}

/*
 * Workers can write the whole region, so nothing read from it may index
 * memory unchecked, in the master (root) least of all: counts and name
 * ids are clamped where they are used.
 */
static unsigned
names_of(const struct metrics_shared *shm)
{
	uint32_t n = shm->name_count;

	return n < METRICS_NAMES ? n : METRICS_NAMES;
}

static unsigned
listeners_of(const struct metrics_slot *s)
{
	return s->listener_count < METRICS_LISTENERS ? s->listener_count :
	                                               METRICS_LISTENERS;
}

int
metrics_read_only(struct metrics_shared *shm)
{
	return mprotect(shm, sizeof(*shm), PROT_READ);
}

unsigned
metrics_name(struct metrics_shared *shm, const char *name)
{
	unsigned i, n = names_of(shm);

	for (i = 0; i < n; i++)
		if (strncmp(shm->names[i], name, METRICS_NAME_MAX) == 0)
			return i;
	if (n == METRICS_NAMES)
		return METRICS_NO_NAME;
	(void)snprintf(shm->names[i], sizeof(shm->names[i]), "%s", name);
	/* The name is whole before a reader may count it. */
	atomic_thread_fence(memory_order_release);
	shm->name_count = i + 1;
	return i;
}

static void
write_begin(struct metrics_shared *shm)
{
	atomic_fetch_add(&shm->seq, 1);
}

static void
write_end(struct metrics_shared *shm)
{
	atomic_fetch_add(&shm->seq, 1);
}

int
metrics_slot_take(struct metrics_shared *shm, const struct config *cfg)
{
	struct metrics_slot *s;
	size_t i;

	for (i = 0; i < METRICS_SLOTS; i++)
		if (atomic_load(&shm->slots[i].live) == 0)
			break;
	if (i == METRICS_SLOTS)
		return -1;
	s = &shm->slots[i];
	s->listener_count = 0;
	for (i = 0; i < cfg->listener_count && i < METRICS_LISTENERS; i++) {
		s->name[i] =
		    (uint16_t)metrics_name(shm, cfg->listeners[i].name);
		s->listener_count++;
	}
	atomic_store(&s->live, 1);
	return (int)(s - shm->slots);
}

static void
hist_add(struct metrics_hist *to, const struct metrics_hist *from)
{
	size_t i;

	for (i = 0; i <= METRICS_HIST_BOUNDS; i++)
		bump(&to->bucket[i], get(&from->bucket[i]));
	bump(&to->sum_us, get(&from->sum_us));
	bump(&to->count, get(&from->count));
}

static void
counters_add(struct metrics_counters *to, const struct metrics_counters *from)
{
	size_t i;

	for (i = 0; i < METRICS_ENDS; i++) {
		bump(&to->ends[i], get(&from->ends[i]));
		bump(&to->handshake_failures[i],
		    get(&from->handshake_failures[i]));
	}
	bump(&to->bytes[0], get(&from->bytes[0]));
	bump(&to->bytes[1], get(&from->bytes[1]));
	for (i = 0; i < METRICS_LIMIT_COUNT_; i++)
		bump(&to->refusals[i], get(&from->refusals[i]));
	hist_add(&to->handshake, &from->handshake);
	hist_add(&to->connect, &from->connect);
}

void
metrics_slot_release(struct metrics_shared *shm, int i)
{
	struct metrics_slot *s;
	unsigned j, r;
	int32_t held;

	if (i < 0 || i >= METRICS_SLOTS)
		return;
	s = &shm->slots[i];
	write_begin(shm);
	for (j = 0; j < listeners_of(s); j++) {
		if (s->name[j] >= METRICS_NAMES)
			continue;
		counters_add(&shm->retired[s->name[j]], &s->l[j]);
		/* A worker that died gives back the sessions it held. */
		atomic_fetch_sub(&shm->listener_sessions[s->name[j]],
		    (int64_t)get(&s->l[j].active));
	}
	atomic_fetch_sub(&shm->sessions, atomic_load(&s->sessions));
	for (r = 0; r < 2; r++)
		for (j = 0; j < METRICS_CLIENT_CELLS; j++) {
			held = atomic_load_explicit(&s->clients[r][j], RELAXED);
			if (held != 0)
				atomic_fetch_sub(&shm->clients[r][j], held);
		}
	atomic_store(&s->live, 0);
	write_end(shm);
	memset(s, 0, sizeof(*s));
}

void
metrics_set_certs(struct metrics_shared *shm, const struct metrics_cert *certs,
    size_t n)
{
	if (n > METRICS_CERTS)
		n = METRICS_CERTS;
	write_begin(shm);
	memcpy(shm->certs, certs, n * sizeof(*certs));
	shm->cert_count = (uint32_t)n;
	write_end(shm);
}

/* ------------------------------------------------------------------ */
/* A worker. */

bool
metrics_worker_init(struct metrics_worker *w, struct metrics_shared *shm,
    int slot)
{
	EVP_MAC *mac;

	memset(w, 0, sizeof(*w));
	w->shm = shm;
	if (shm == NULL)
		return true;
	if (slot >= 0 && slot < METRICS_SLOTS)
		w->slot = &shm->slots[slot];
	mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_SIPHASH, NULL);
	if (mac == NULL)
		return false;
	w->mac = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);
	return w->mac != NULL;
}

void
metrics_worker_free(struct metrics_worker *w)
{
	EVP_MAC_CTX_free(w->mac);
	w->mac = NULL;
}

void
metrics_client_key(const struct sockaddr *sa, unsigned ipv4_prefix,
    unsigned ipv6_prefix, uint8_t out[17])
{
	const uint8_t *a;
	unsigned bits, i, n;

	memset(out, 0, 17);
	if (sa->sa_family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)(const void *)sa)
		        ->sin6_addr.s6_addr;
		/* An IPv4-mapped address is the IPv4 client it maps. */
		if (IN6_IS_ADDR_V4MAPPED(
		        &((const struct sockaddr_in6 *)(const void *)sa)
		             ->sin6_addr)) {
			a += 12;
			n = 4;
			bits = ipv4_prefix;
			out[0] = 4;
		} else {
			n = 16;
			bits = ipv6_prefix;
			out[0] = 6;
		}
	} else if (sa->sa_family == AF_INET) {
		a = (const uint8_t *)&(
		    (const struct sockaddr_in *)(const void *)sa)
		        ->sin_addr;
		n = 4;
		bits = ipv4_prefix;
		out[0] = 4;
	} else {
		return;
	}
	for (i = 0; i < n && bits > 0; i++) {
		out[1 + i] =
		    bits >= 8 ? a[i] : (uint8_t)(a[i] & (0xff00 >> bits));
		bits = bits >= 8 ? bits - 8 : 0;
	}
}

/* The two cells of (listener name, client). false: no hash. */
static bool
client_cells(struct metrics_worker *w, unsigned name, const struct sockaddr *sa,
    const struct metrics_limits *lim, uint16_t cell[2])
{
	uint8_t in[19], out[16];
	size_t outl = 0;

	metrics_client_key(sa, lim->ipv4_prefix, lim->ipv6_prefix, in + 2);
	in[0] = (uint8_t)(name >> 8);
	in[1] = (uint8_t)name;
	if (w->mac == NULL ||
	    !EVP_MAC_init(w->mac, w->shm->key, sizeof(w->shm->key), NULL) ||
	    !EVP_MAC_update(w->mac, in, sizeof(in)) ||
	    !EVP_MAC_final(w->mac, out, &outl, sizeof(out)) || outl < 8)
		return false;
	cell[0] =
	    (uint16_t)(((uint32_t)out[0] << 8 | out[1]) % METRICS_CLIENT_CELLS);
	cell[1] =
	    (uint16_t)(((uint32_t)out[4] << 8 | out[5]) % METRICS_CLIENT_CELLS);
	return true;
}

/* This minute's count of a rate cell, weighed with the minute before
 * as a sliding window (nginx's limit_req and Cloudflare's estimate). */
static uint32_t
rate_add(_Atomic uint64_t *cell, uint64_t now_ms)
{
	uint64_t minute = now_ms / 60000, old, next, was, cur, prev;
	uint64_t into = now_ms % 60000;

	old = atomic_load(cell);
	do {
		was = old >> 32;
		cur = (old >> 16) & 0xffff;
		prev = old & 0xffff;
		if (was != (minute & 0xffffffffu)) {
			prev = was + 1 == (minute & 0xffffffffu) ? cur : 0;
			cur = 0;
		}
		if (cur < 0xffff)
			cur++;
		next = (minute & 0xffffffffu) << 32 | cur << 16 | prev;
	} while (!atomic_compare_exchange_weak(cell, &old, next));
	return (uint32_t)(cur + prev * (60000 - into) / 60000);
}

static int32_t
min32(int32_t a, int32_t b)
{
	return a < b ? a : b;
}

enum metrics_limit
metrics_admit(struct metrics_worker *w, unsigned listener,
    const struct sockaddr *client, const struct metrics_limits *lim,
    struct metrics_admission *a)
{
	struct metrics_shared *shm = w != NULL ? w->shm : NULL;
	struct metrics_slot *s = w != NULL ? w->slot : NULL;
	enum metrics_limit refused = METRICS_LIMIT_COUNT_;
	unsigned name;
	int64_t total, mine = 0;
	int32_t c0, c1;
	bool cells;

	memset(a, 0, sizeof(*a));
	if (shm == NULL || s == NULL || listener >= listeners_of(s))
		return METRICS_LIMIT_COUNT_;
	name = s->name[listener];
	if (name >= METRICS_NAMES)
		name = METRICS_NO_NAME;
	/* Without a hash (no memory), no client is told from another:
	 * nothing is limited per client rather than all together. */
	cells = client != NULL &&
	    (lim->rate_per_minute > 0 || lim->per_client > 0) &&
	    client_cells(w, name, client, lim, a->cell);
	if (cells && lim->rate_per_minute > 0) {
		uint64_t now = metrics_now_ms();
		uint32_t r0 = rate_add(&shm->rate[0][a->cell[0]], now);
		uint32_t r1 = rate_add(&shm->rate[1][a->cell[1]], now);

		if ((r0 < r1 ? r0 : r1) > lim->rate_per_minute) {
			refused = METRICS_LIMIT_RATE;
			goto refuse;
		}
	}
	total = atomic_fetch_add(&shm->sessions, 1) + 1;
	if (name != METRICS_NO_NAME)
		mine = atomic_fetch_add(&shm->listener_sessions[name], 1) + 1;
	a->counted = true;
	(void)atomic_fetch_add_explicit(&s->sessions, 1, RELAXED);
	bump(&s->l[listener].active, 1);
	if ((lim->max_sessions > 0 && (uint64_t)total > lim->max_sessions) ||
	    (lim->listener_max_sessions > 0 &&
	        (uint64_t)mine > lim->listener_max_sessions)) {
		refused = METRICS_LIMIT_SESSIONS;
		goto undo;
	}
	if (!cells || lim->per_client == 0)
		return METRICS_LIMIT_COUNT_;
	a->client = true;
	atomic_fetch_add_explicit(&s->clients[0][a->cell[0]], 1, RELAXED);
	atomic_fetch_add_explicit(&s->clients[1][a->cell[1]], 1, RELAXED);
	c0 = atomic_fetch_add(&shm->clients[0][a->cell[0]], 1) + 1;
	c1 = atomic_fetch_add(&shm->clients[1][a->cell[1]], 1) + 1;
	if ((uint32_t)min32(c0, c1) > lim->per_client) {
		refused = METRICS_LIMIT_PER_CLIENT;
		goto undo;
	}
	return METRICS_LIMIT_COUNT_;
undo:
	metrics_leave(w, listener, a);
refuse:
	bump(&s->l[listener].refusals[refused], 1);
	return refused;
}

void
metrics_leave(struct metrics_worker *w, unsigned listener,
    struct metrics_admission *a)
{
	struct metrics_shared *shm;
	struct metrics_slot *s;
	unsigned name;

	if (w == NULL || !a->counted || w->slot == NULL)
		return;
	shm = w->shm;
	s = w->slot;
	name = s->name[listener];
	if (name >= METRICS_NAMES)
		name = METRICS_NO_NAME;
	if (a->client) {
		(void)atomic_fetch_sub(&shm->clients[0][a->cell[0]], 1);
		(void)atomic_fetch_sub(&shm->clients[1][a->cell[1]], 1);
		(void)atomic_fetch_sub_explicit(&s->clients[0][a->cell[0]], 1,
		    RELAXED);
		(void)atomic_fetch_sub_explicit(&s->clients[1][a->cell[1]], 1,
		    RELAXED);
	}
	if (name != METRICS_NO_NAME)
		(void)atomic_fetch_sub(&shm->listener_sessions[name], 1);
	(void)atomic_fetch_sub(&shm->sessions, 1);
	(void)atomic_fetch_sub_explicit(&s->sessions, 1, RELAXED);
	atomic_store_explicit(&s->l[listener].active,
	    get(&s->l[listener].active) - 1, RELAXED);
	memset(a, 0, sizeof(*a));
}

static struct metrics_counters *
counters(struct metrics_worker *w, unsigned listener)
{
	if (w == NULL || w->slot == NULL || listener >= listeners_of(w->slot))
		return NULL;
	return &w->slot->l[listener];
}

void
metrics_session_end(struct metrics_worker *w, unsigned listener, unsigned end,
    bool in_handshake, uint64_t bytes_in, uint64_t bytes_out)
{
	struct metrics_counters *c = counters(w, listener);

	if (c == NULL || end >= METRICS_ENDS)
		return;
	bump(&c->ends[end], 1);
	if (in_handshake)
		bump(&c->handshake_failures[end], 1);
	bump(&c->bytes[0], bytes_in);
	bump(&c->bytes[1], bytes_out);
}

static void
observe(struct metrics_hist *h, uint64_t us)
{
	size_t i;

	for (i = 0; i < METRICS_HIST_BOUNDS && us > hist_bounds[i]; i++)
		;
	bump(&h->bucket[i], 1);
	bump(&h->sum_us, us);
	bump(&h->count, 1);
}

void
metrics_observe(struct metrics_worker *w, unsigned listener,
    enum metrics_timing which, uint64_t us)
{
	struct metrics_counters *c = counters(w, listener);

	if (c != NULL)
		observe(which == METRICS_HANDSHAKE ? &c->handshake :
		                                     &c->connect,
		    us);
}

/* ------------------------------------------------------------------ */
/* The Prometheus text. */

void
metrics_text_printf(struct metrics_text *t, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *p;

	for (;;) {
		if (t->oom)
			return;
		va_start(ap, fmt);
		n = vsnprintf(t->p != NULL ? t->p + t->len : NULL,
		    t->size - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if ((size_t)n < t->size - t->len) {
			t->len += (size_t)n;
			return;
		}
		p = realloc(t->p, t->size * 2 + (size_t)n + 4096);
		if (p == NULL) {
			t->oom = true;
			return;
		}
		t->p = p;
		t->size = t->size * 2 + (size_t)n + 4096;
	}
}

void
metrics_text_free(struct metrics_text *t)
{
	free(t->p);
	memset(t, 0, sizeof(*t));
}

/* A label value: backslash, double quote and newline escaped. */
static void
escaped(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (; *in != '\0' && o + 3 < size; in++) {
		if (*in == '\\' || *in == '"') {
			out[o++] = '\\';
			out[o++] = *in;
		} else if (*in == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

/* The sum over the totals and the live slots, per listener name. */
struct snapshot {
	uint32_t names;
	char name[METRICS_NAMES][METRICS_NAME_MAX + 1];
	struct metrics_counters c[METRICS_NAMES];
	int64_t active[METRICS_NAMES];
	uint32_t certs;
	struct metrics_cert cert[METRICS_CERTS];
};

static void
take_snapshot(const struct metrics_shared *shm, struct snapshot *snap)
{
	const struct metrics_slot *s;
	uint32_t seq, tries;
	size_t i, j;

	for (tries = 0;; tries++) {
		memset(snap, 0, sizeof(*snap));
		seq = atomic_load((_Atomic uint32_t *)&shm->seq);
		if ((seq & 1) != 0 && tries < 1000)
			continue;
		snap->names = names_of(shm);
		atomic_thread_fence(memory_order_acquire);
		memcpy(snap->name, shm->names, sizeof(snap->name));
		for (i = 0; i < snap->names; i++)
			counters_add(&snap->c[i], &shm->retired[i]);
		for (i = 0; i < METRICS_SLOTS; i++) {
			s = &shm->slots[i];
			if (atomic_load((_Atomic uint32_t *)&s->live) == 0)
				continue;
			for (j = 0; j < listeners_of(s); j++) {
				if (s->name[j] >= snap->names)
					continue;
				counters_add(&snap->c[s->name[j]], &s->l[j]);
				snap->active[s->name[j]] +=
				    (int64_t)get(&s->l[j].active);
			}
		}
		snap->certs = shm->cert_count < METRICS_CERTS ?
		    shm->cert_count :
		    METRICS_CERTS;
		memcpy(snap->cert, shm->certs,
		    snap->certs * sizeof(snap->cert[0]));
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load((_Atomic uint32_t *)&shm->seq) == seq ||
		    tries >= 1000)
			return;
	}
}

static void
render_hist(struct metrics_text *t, const char *metric, const char *name,
    const struct metrics_hist *h)
{
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < METRICS_HIST_BOUNDS; i++) {
		cum += get(&h->bucket[i]);
		metrics_text_printf(t,
		    "%s_bucket{listener=\"%s\",le=\"%s\"} %" PRIu64 "\n",
		    metric, name, hist_le[i], cum);
	}
	cum += get(&h->bucket[METRICS_HIST_BOUNDS]);
	metrics_text_printf(t,
	    "%s_bucket{listener=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", metric,
	    name, cum);
	metrics_text_printf(t,
	    "%s_sum{listener=\"%s\"} %" PRIu64 ".%06" PRIu64 "\n", metric, name,
	    get(&h->sum_us) / 1000000, get(&h->sum_us) % 1000000);
	metrics_text_printf(t, "%s_count{listener=\"%s\"} %" PRIu64 "\n",
	    metric, name, get(&h->count));
}

static void
header(struct metrics_text *t, const char *metric, const char *type,
    const char *help)
{
	metrics_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", metric, help,
	    metric, type);
}

/* metric{listener,label} for each listener and each of values[from..n),
 * read from the array of counters at offset in struct metrics_counters. */
static void
render_labelled(struct metrics_text *t, const struct snapshot *snap,
    const char *metric, const char *label, const char *const *values,
    size_t from, size_t n, size_t offset)
{
	char name[METRICS_NAME_MAX * 2 + 1];
	const metrics_counter *c;
	size_t i, v;

	for (i = 0; i < snap->names; i++) {
		escaped(snap->name[i], name, sizeof(name));
		c = (const metrics_counter *)(const void
		        *)((const char *)&snap->c[i] + offset);
		for (v = from; v < n; v++)
			metrics_text_printf(t,
			    "%s{listener=\"%s\",%s=\"%s\"} %" PRIu64 "\n",
			    metric, name, label, values[v], get(&c[v]));
	}
}

static void
render_hists(struct metrics_text *t, const struct snapshot *snap,
    const char *metric, size_t offset)
{
	char name[METRICS_NAME_MAX * 2 + 1];
	size_t i;

	for (i = 0; i < snap->names; i++) {
		escaped(snap->name[i], name, sizeof(name));
		render_hist(t, metric, name,
		    (const struct metrics_hist *)(const void
		            *)((const char *)&snap->c[i] + offset));
	}
}

void
metrics_render(const struct metrics_shared *shm, struct metrics_text *t,
    const char *const *end_names, size_t ends)
{
	static const char *const directions[] = {"in", "out"};
	struct snapshot *snap = calloc(1, sizeof(*snap));
	char name[METRICS_NAME_MAX * 2 + 1],
	    subject[METRICS_SUBJECT_MAX * 2 + 1];
	size_t i, workers = 0;

	if (snap == NULL) {
		t->oom = true;
		return;
	}
	if (ends > METRICS_ENDS)
		ends = METRICS_ENDS;
	take_snapshot(shm, snap);
	for (i = 0; i < METRICS_SLOTS; i++)
		workers +=
		    atomic_load((_Atomic uint32_t *)&shm->slots[i].live) != 0;

	header(t, "mailproxy_sessions_active", "gauge",
	    "Sessions admitted and not yet ended.");
	for (i = 0; i < snap->names; i++) {
		escaped(snap->name[i], name, sizeof(name));
		metrics_text_printf(t,
		    "mailproxy_sessions_active{listener=\"%s\"} %lld\n", name,
		    (long long)(snap->active[i] < 0 ? 0 : snap->active[i]));
	}
	/* From 1: end 0 is "-", a session not ended. */
	header(t, "mailproxy_sessions_total", "counter",
	    "Sessions ended, by how they ended (the log's end=).");
	render_labelled(t, snap, "mailproxy_sessions_total", "end", end_names,
	    1, ends, offsetof(struct metrics_counters, ends));
	header(t, "mailproxy_handshake_failures_total", "counter",
	    "Sessions that ended in the TLS handshake, by how they ended.");
	render_labelled(t, snap, "mailproxy_handshake_failures_total", "reason",
	    end_names, 1, ends,
	    offsetof(struct metrics_counters, handshake_failures));
	header(t, "mailproxy_bytes_total", "counter",
	    "Client-side bytes of ended sessions (the log's client_in, "
	    "client_out).");
	render_labelled(t, snap, "mailproxy_bytes_total", "direction",
	    directions, 0, 2, offsetof(struct metrics_counters, bytes));
	header(t, "mailproxy_limit_refusals_total", "counter",
	    "Sessions refused by a limit.");
	render_labelled(t, snap, "mailproxy_limit_refusals_total", "limit",
	    limit_names, 0, METRICS_LIMIT_COUNT_,
	    offsetof(struct metrics_counters, refusals));
	header(t, "mailproxy_handshake_seconds", "histogram",
	    "Time the TLS handshake took.");
	render_hists(t, snap, "mailproxy_handshake_seconds",
	    offsetof(struct metrics_counters, handshake));
	header(t, "mailproxy_backend_connect_seconds", "histogram",
	    "Time to connect to the backend.");
	render_hists(t, snap, "mailproxy_backend_connect_seconds",
	    offsetof(struct metrics_counters, connect));
	header(t, "mailproxy_reloads_total", "counter",
	    "Reloads (SIGHUP), by result.");
	metrics_text_printf(t,
	    "mailproxy_reloads_total{result=\"success\"} %" PRIu64 "\n"
	    "mailproxy_reloads_total{result=\"failure\"} %" PRIu64 "\n",
	    get(&shm->reloads_ok), get(&shm->reloads_failed));
	header(t, "mailproxy_workers", "gauge",
	    "Worker processes running, of every generation.");
	metrics_text_printf(t, "mailproxy_workers %zu\n", workers);
	header(t, "mailproxy_certificate_expiry_timestamp_seconds", "gauge",
	    "When each certificate a listener serves expires (notAfter).");
	for (i = 0; i < snap->certs; i++) {
		if (snap->cert[i].name >= snap->names)
			continue;
		escaped(snap->name[snap->cert[i].name], name, sizeof(name));
		snap->cert[i].subject[METRICS_SUBJECT_MAX] = '\0';
		escaped(snap->cert[i].subject, subject, sizeof(subject));
		metrics_text_printf(t,
		    "mailproxy_certificate_expiry_timestamp_seconds{"
		    "listener=\"%s\",subject=\"%s\"} %lld\n",
		    name, subject, (long long)snap->cert[i].not_after);
	}
	free(snap);
}
