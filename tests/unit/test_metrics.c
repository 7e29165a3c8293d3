/*
 * The shared counters: admission under each limit, across two worker
 * slots of one region (as two processes see it), what a dead worker gives
 * back, and the Prometheus text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailproxy/config.h"
#include "mailproxy/metrics.h"

struct fixture {
	struct metrics_shared *shm;
	struct config cfg;
	struct config_listener listeners[2];
	struct metrics_worker w[2];
	int slot[2];
};

static const char *const end_names[] = {"-", "client_closed", "backend_closed",
    "client_error", "backend_error", "tls_error", "timeout", "backend_refused",
    "backend_unreachable", "shutdown", "protocol_error", "proxy_error",
    "no_memory", "limit"};
#define END_LIMIT         13
#define END_CLIENT_CLOSED 1

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int i;

	assert_non_null(f);
	f->shm = metrics_create();
	assert_non_null(f->shm);
	f->listeners[0].name = (char *)"imaps";
	f->listeners[1].name = (char *)"smtp";
	f->cfg.listeners = f->listeners;
	f->cfg.listener_count = 2;
	for (i = 0; i < 2; i++) {
		f->slot[i] = metrics_slot_take(f->shm, &f->cfg);
		assert_true(f->slot[i] >= 0);
		assert_true(metrics_worker_init(&f->w[i], f->shm, f->slot[i]));
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	metrics_worker_free(&f->w[0]);
	metrics_worker_free(&f->w[1]);
	metrics_destroy(f->shm);
	free(f);
	return 0;
}

/* Every line of want (NULL-ended) is in the exposition. */
static void
assert_lines(const struct metrics_text *t, const char *const *want)
{
	for (; *want != NULL; want++)
		if (strstr(t->p, *want) == NULL)
			fail_msg("missing: %s", *want);
}

static struct sockaddr_in
v4(const char *text)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, text, &sin.sin_addr), 1);
	return sin;
}

static struct sockaddr_in6
v6(const char *text)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, text, &sin6.sin6_addr), 1);
	return sin6;
}

static struct metrics_limits
limits(uint64_t max, uint32_t per_client, uint32_t rate)
{
	struct metrics_limits l;

	memset(&l, 0, sizeof(l));
	l.max_sessions = max;
	l.per_client = per_client;
	l.rate_per_minute = rate;
	l.ipv4_prefix = 32;
	l.ipv6_prefix = 64;
	return l;
}

/* Per client, counted across the two workers; another client and a
 * LOCAL health check are not held back; leaving makes room again. */
static void
test_per_client(void **state)
{
	struct fixture *f = *state;
	struct metrics_limits lim = limits(0, 3, 0);
	struct sockaddr_in a = v4("192.0.2.1"), b = v4("192.0.2.2");
	struct metrics_admission adm[4], other, health;
	int i;

	for (i = 0; i < 3; i++)
		assert_int_equal(metrics_admit(&f->w[i % 2], 0,
		                     (struct sockaddr *)&a, &lim, &adm[i]),
		    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &adm[3]),
	    METRICS_LIMIT_PER_CLIENT);
	assert_false(adm[3].counted);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&b, &lim,
	                     &other),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[0], 0, NULL, &lim, &health),
	    METRICS_LIMIT_COUNT_);
	assert_false(health.client);
	/* The same client on another listener is counted apart. */
	{
		struct metrics_admission smtp;

		assert_int_equal(metrics_admit(&f->w[0], 1,
		                     (struct sockaddr *)&a, &lim, &smtp),
		    METRICS_LIMIT_COUNT_);
		metrics_leave(&f->w[0], 1, &smtp);
	}
	metrics_leave(&f->w[1], 0, &adm[1]);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &adm[1]),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(atomic_load(&f->shm->sessions), 5);
	for (i = 0; i < 3; i++)
		metrics_leave(&f->w[i % 2], 0, &adm[i]);
	metrics_leave(&f->w[1], 0, &other);
	metrics_leave(&f->w[0], 0, &health);
	assert_int_equal(atomic_load(&f->shm->sessions), 0);
	assert_int_equal(atomic_load(&f->shm->slots[f->slot[1]]
	                                  .l[0]
	                                  .refusals[METRICS_LIMIT_PER_CLIENT]),
	    1);
}

/* IPv6 clients are their /64: two addresses of one /64 share a limit,
 * one of the next /64 does not. An IPv4-mapped address is its IPv4. */
static void
test_ipv6_prefix(void **state)
{
	struct fixture *f = *state;
	struct metrics_limits lim = limits(0, 1, 0);
	struct sockaddr_in6 a = v6("2001:db8:1:2::1"),
	                    b = v6("2001:db8:1:2::ff"),
	                    c = v6("2001:db8:1:3::1"),
	                    mapped = v6("::ffff:192.0.2.9");
	struct sockaddr_in plain = v4("192.0.2.9");
	struct metrics_admission x, y, z, m;
	uint8_t k1[17], k2[17];

	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&a, &lim,
	                     &x),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&b, &lim,
	                     &y),
	    METRICS_LIMIT_PER_CLIENT);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&c, &lim,
	                     &z),
	    METRICS_LIMIT_COUNT_);
	metrics_client_key((struct sockaddr *)&mapped, 32, 64, k1);
	metrics_client_key((struct sockaddr *)&plain, 32, 64, k2);
	assert_memory_equal(k1, k2, sizeof(k1));
	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&plain,
	                     &lim, &m),
	    METRICS_LIMIT_COUNT_);
	metrics_leave(&f->w[0], 0, &x);
	metrics_leave(&f->w[1], 0, &z);
	metrics_leave(&f->w[0], 0, &m);
	/* /24 for IPv4 when asked. */
	metrics_client_key((struct sockaddr *)&plain, 24, 64, k1);
	assert_int_equal(k1[0], 4);
	assert_int_equal(k1[1], 192);
	assert_int_equal(k1[4], 0);
}

/* max_sessions counts every session of every worker; the listener's
 * own limit only its own. */
static void
test_max_sessions(void **state)
{
	struct fixture *f = *state;
	struct metrics_limits lim = limits(2, 0, 0);
	struct sockaddr_in a = v4("198.51.100.1");
	struct metrics_admission x, y, z;

	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&a, &lim,
	                     &x),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[1], 1, (struct sockaddr *)&a, &lim,
	                     &y),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &z),
	    METRICS_LIMIT_SESSIONS);
	metrics_leave(&f->w[1], 1, &y);
	lim = limits(0, 0, 0);
	lim.listener_max_sessions = 1;
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &z),
	    METRICS_LIMIT_SESSIONS);
	assert_int_equal(metrics_admit(&f->w[1], 1, (struct sockaddr *)&a, &lim,
	                     &z),
	    METRICS_LIMIT_COUNT_);
	metrics_leave(&f->w[1], 1, &z);
	metrics_leave(&f->w[0], 0, &x);
	assert_int_equal(atomic_load(&f->shm->sessions), 0);
	assert_int_equal(atomic_load(&f->shm->listener_sessions[0]), 0);
}

/* New sessions per minute: the attempt past the rate is refused, and a
 * refused one holds nothing. */
static void
test_rate(void **state)
{
	struct fixture *f = *state;
	struct metrics_limits lim = limits(0, 0, 5);
	struct sockaddr_in a = v4("203.0.113.7"), b = v4("203.0.113.8");
	struct metrics_admission x;
	int i, admitted = 0;

	for (i = 0; i < 8; i++) {
		if (metrics_admit(&f->w[i % 2], 0, (struct sockaddr *)&a, &lim,
		        &x) == METRICS_LIMIT_COUNT_) {
			admitted++;
			metrics_leave(&f->w[i % 2], 0, &x);
		} else {
			assert_false(x.counted);
		}
	}
	/* A minute may turn during the loop: then the weighed count of the
	 * minute before lets at most as many again. */
	assert_true(admitted >= 5 && admitted <= 8);
	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&b, &lim,
	                     &x),
	    METRICS_LIMIT_COUNT_);
	metrics_leave(&f->w[0], 0, &x);
}

/* A worker that dies holding sessions gives them back when the master
 * releases its slot, and its counters stay in the totals. */
static void
test_release_dead_worker(void **state)
{
	struct fixture *f = *state;
	struct metrics_limits lim = limits(0, 2, 0);
	struct sockaddr_in a = v4("192.0.2.50");
	struct metrics_admission x, y, z;
	struct metrics_text t = {0};

	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &x),
	    METRICS_LIMIT_COUNT_);
	assert_int_equal(metrics_admit(&f->w[1], 0, (struct sockaddr *)&a, &lim,
	                     &y),
	    METRICS_LIMIT_COUNT_);
	metrics_session_end(&f->w[1], 0, END_CLIENT_CLOSED, false, 100, 2000);
	metrics_session_end(&f->w[1], 0, END_LIMIT, true, 5, 0);
	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&a, &lim,
	                     &z),
	    METRICS_LIMIT_PER_CLIENT);
	/* Worker 1 is killed: the master releases its slot. */
	metrics_worker_free(&f->w[1]);
	metrics_slot_release(f->shm, f->slot[1]);
	assert_int_equal(atomic_load(&f->shm->sessions), 0);
	assert_int_equal(metrics_admit(&f->w[0], 0, (struct sockaddr *)&a, &lim,
	                     &z),
	    METRICS_LIMIT_COUNT_);
	metrics_render(f->shm, &t, end_names, 14);
	assert_false(t.oom);
	{
		static const char *const want[] =
		    {"mailproxy_sessions_active{listener="
		     "\"imaps\"} 1\n",
		        "mailproxy_sessions_total{listener="
		        "\"imaps\",end=\"client_closed\"} 1\n",
		        "mailproxy_handshake_failures_total{"
		        "listener=\"imaps\",reason=\"limit\"} 1\n",
		        "mailproxy_bytes_total{listener="
		        "\"imaps\",direction=\"out\"} 2000\n",
		        "mailproxy_limit_refusals_total{listener="
		        "\"imaps\",limit=\"max_sessions_per_client\"}"
		        " 1\n",
		        "mailproxy_workers 1\n", NULL};

		assert_lines(&t, want);
	}
	metrics_text_free(&t);
	metrics_leave(&f->w[0], 0, &z);
	/* The slot is free for the next worker. */
	f->slot[1] = metrics_slot_take(f->shm, &f->cfg);
	assert_true(f->slot[1] >= 0);
	assert_true(metrics_worker_init(&f->w[1], f->shm, f->slot[1]));
}

/* Histograms are cumulative with +Inf = count; label values escaped. */
static void
test_render_histogram(void **state)
{
	struct fixture *f = *state;
	struct metrics_text t = {0};
	struct metrics_cert cert;

	metrics_observe(&f->w[0], 0, METRICS_HANDSHAKE, 3000);     /* 3 ms */
	metrics_observe(&f->w[1], 0, METRICS_HANDSHAKE, 300000);   /* 0.3 s */
	metrics_observe(&f->w[1], 0, METRICS_HANDSHAKE, 60000000); /* 60 s */
	memset(&cert, 0, sizeof(cert));
	cert.name = 0;
	cert.not_after = 1900000000;
	(void)snprintf(cert.subject, sizeof(cert.subject), "CN=a\"b\\c");
	metrics_set_certs(f->shm, &cert, 1);
	metrics_render(f->shm, &t, end_names, 14);
	assert_false(t.oom);
	{
		static const char *const want[] = {
		    "mailproxy_handshake_seconds_bucket{"
		    "listener=\"imaps\",le=\"0.005\"} 1\n",
		    "mailproxy_handshake_seconds_bucket{"
		    "listener=\"imaps\",le=\"0.25\"} 1\n",
		    "mailproxy_handshake_seconds_bucket{"
		    "listener=\"imaps\",le=\"0.5\"} 2\n",
		    "mailproxy_handshake_seconds_bucket{"
		    "listener=\"imaps\",le=\"+Inf\"} 3\n",
		    "mailproxy_handshake_seconds_sum{"
		    "listener=\"imaps\"} 60.303000\n",
		    "mailproxy_handshake_seconds_count{"
		    "listener=\"imaps\"} 3\n",
		    "mailproxy_certificate_expiry_timestamp_seconds{listener=\"imaps\","
		    "subject=\"CN=a\\\"b\\\\c\"} 1900000000\n",
		    NULL};

		assert_lines(&t, want);
	}
	metrics_text_free(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_per_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ipv6_prefix, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_sessions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_release_dead_worker, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_render_histogram, setup,
	        teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
