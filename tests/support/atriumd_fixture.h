/*
 * atriumd_fixture.h — a real atriumd for a test: started on a fresh data
 * directory with the admin REST API and xDS on free ports of 127.0.0.1, and
 * stopped again, for the tests that drive it over the network
 * (test_rest_api.c, test_xds_protocol.c).
 *
 * Every wait is bounded. Only the pid a fixture started is ever signalled: by
 * atriumd_fixture_stop(), and (SIGKILL) by an atexit handler when the test
 * process exits while an atriumd it started still runs. The child also gets
 * PR_SET_PDEATHSIG, so it dies with the test process however that dies.
 *
 * Ownership: the caller owns the atriumd_fixture struct (all its fields are
 * inline; nothing in it is to be freed). Between a successful
 * atriumd_fixture_start() and atriumd_fixture_stop() the fixture owns the
 * atriumd process and the data directory; atriumd_fixture_stop() reaps the
 * one and removes the other. A failed start leaves nothing behind.
 */
#ifndef ATRIUM_TESTS_ATRIUMD_FIXTURE_H
#define ATRIUM_TESTS_ATRIUMD_FIXTURE_H

#include <stddef.h>
#include <sys/types.h>

#define ATRIUMD_FIXTURE_TOKEN_LENGTH 64 /* ADMIN_TOKEN_LENGTH */

typedef struct atriumd_fixture {
    pid_t pid;          /* atriumd, while it runs; 0 otherwise */
    char data_dir[64];  /* its --data-dir; "" when there is none */
    char log_path[128]; /* its stderr, inside data_dir; "" when there is none */
    int rest_port;      /* the admin REST API on 127.0.0.1 */
    int xds_port;       /* xDS (ADS) on 127.0.0.1 */
    int tls_port;       /* the CA (CreateCertificate over TLS) on 127.0.0.1 */
    char token[ATRIUMD_FIXTURE_TOKEN_LENGTH + 1]; /* the admin token */
} atriumd_fixture;

/* Starts atriumd_path on a new data directory /tmp/atrium-<name>-XXXXXX and
 * waits (bounded) until it logs that it is ready, then reads both ports from
 * its log and the admin token from <data_dir>/admin.token. Returns 0 with *out
 * filled in, or -1 with a message in error (a line without "\n"); when
 * atriumd ran but did not get ready, its log has been printed to stderr. After
 * -1 nothing is left behind: no process, no directory, and *out is zeroed. */
int atriumd_fixture_start(atriumd_fixture *out, const char *atriumd_path, const char *name,
                          char *error, size_t error_size);

/* atriumd_fixture_start() with RLIMIT_NOFILE set to nofile (soft and hard)
 * in the child before it execs atriumd, so atriumd cannot raise it: for tests
 * of running out of file descriptors. nofile 0 is atriumd_fixture_start(). */
int atriumd_fixture_start_nofile(atriumd_fixture *out, const char *atriumd_path, const char *name,
                                 unsigned long nofile, char *error, size_t error_size);

/* atriumd_fixture_start() with more flags after the fixture's own
 * (extra_arguments: NULL-terminated, at most 16, e.g. {"--xds-slow-consumer-ms",
 * "3000", NULL}). */
int atriumd_fixture_start_with_arguments(atriumd_fixture *out, const char *atriumd_path,
                                         const char *name, const char *const *extra_arguments,
                                         char *error, size_t error_size);

/* Stops atriumd: SIGTERM, then waits (bounded), and SIGKILL when it does not
 * exit in time. When it did not exit with status 0, says why on stderr and
 * prints its log. Then removes the data directory and zeroes *fixture. Returns
 * atriumd's exit status (0 is a clean stop), or -1 when it was killed by a
 * signal, had to be killed, or was not running. Safe to call on a zeroed
 * fixture (returns -1, prints nothing). */
int atriumd_fixture_stop(atriumd_fixture *fixture);

/* Sleeps ms milliseconds (resumed after signals): the tests' polling pause. */
void atriumd_fixture_sleep_ms(long ms);

/* Prints atriumd's log (its stderr so far) to stderr, whole. */
void atriumd_fixture_print_log(const atriumd_fixture *fixture);

#endif
