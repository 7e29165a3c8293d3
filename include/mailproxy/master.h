/*
 * The master process: it reads the configuration and the certificates,
 * opens every listening socket, and forks generations of worker
 * processes that inherit them. It does no TLS and relays nothing; it
 * supervises (a worker that dies is logged and replaced), reloads on
 * SIGHUP (a new generation; the old one drains), stops on SIGTERM, and
 * keeps the session ticket keys across reloads.
 */
#ifndef MAILPROXY_MASTER_H
#define MAILPROXY_MASTER_H

#include "mailproxy/config.h"

/* Retired generations that may drain at once; one more reload ends the
 * oldest (its sessions spread over WORKER_SPREAD_MS). HAProxy's
 * mworker-max-reloads is 50; 32 lets a burst of 20 reloads (a deploy
 * renewing many certificates one by one) cut no long session. */
#define MASTER_DRAINING_MAX 32

/* A worker that dies within this of its start counts towards a crash
 * loop: its replacement waits 100 ms, doubled each time, up to
 * MASTER_BACKOFF_MAX_MS. */
#define MASTER_STABLE_MS      5000
/* SIGUSR2: how long the new master has to get its workers listening. */
#define MASTER_UPGRADE_MS     60000
#define MASTER_BACKOFF_MIN_MS 100
#define MASTER_BACKOFF_MAX_MS 10000

/*
 * What -t does: builds every TLS context of cfg and reads its ticket
 * keys; prints each problem to stderr ("mailproxy: FILE:LINE: ...", and
 * "mailproxy: warning: ..." for what only warns). Returns 0 when valid.
 */
int master_test(const struct config *cfg);

/*
 * Runs mailproxy on cfg (taken), loaded from path, which SIGHUP reads
 * again; argv is the command line, which SIGUSR2 executes again.
 * Returns the process's exit status once every worker is gone.
 */
int master_run(const char *path, struct config *cfg, char **argv);

/* What a master executed by SIGUSR2 finds in its environment: the
 * listening sockets it inherits ("3 4 5"), where to say it serves, and
 * the last generation number of the master before it. */
#define MASTER_ENV_FDS        "MAILPROXY_LISTEN_FDS"
#define MASTER_ENV_READY      "MAILPROXY_READY_FD"
#define MASTER_ENV_GENERATION "MAILPROXY_GENERATION"

#endif
