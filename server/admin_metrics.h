/*
 * admin_metrics.h — the admin API's own metrics in Prometheus text format:
 * requests by route, method and status code, and a latency histogram per
 * route and method; and the listener's own state: open connections, those
 * closed to keep within the unauthenticated limit, and accept() failures.
 * Used from the admin thread only (not thread-safe).
 */
#ifndef ATRIUM_SERVER_ADMIN_METRICS_H
#define ATRIUM_SERVER_ADMIN_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct admin_metrics admin_metrics;

/* NULL when out of memory. Free with admin_metrics_free (NULL accepted). */
admin_metrics *admin_metrics_new(void);
void admin_metrics_free(admin_metrics *metrics);

/* Counts one request. route and method must be static strings (kept by
 * pointer), e.g. the route's pattern "/v1/services/{name}". */
void admin_metrics_record(admin_metrics *metrics, const char *route, const char *method, int status,
                          double seconds);

/* The listener's connections now: all open, and those without the token yet. */
void admin_metrics_set_connections(admin_metrics *metrics, size_t open, size_t unauthenticated);
/* One connection closed to keep within ADMIN_HTTP_MAX_UNAUTHENTICATED. */
void admin_metrics_count_connection_closed_for_limit(admin_metrics *metrics);
/* One accept() failure (EMFILE, ENFILE, ...) that paused the listener. */
void admin_metrics_count_accept_failure(admin_metrics *metrics);

/* The exposition text, with the store revision as a gauge. The caller frees
 * the result with free(); NULL when out of memory. */
char *admin_metrics_render(const admin_metrics *metrics, int64_t store_revision);

#endif
