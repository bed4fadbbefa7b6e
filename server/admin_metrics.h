/*
 * admin_metrics.h — the admin API's own metrics in Prometheus text format:
 * requests by route, method and status code, and a latency histogram per
 * route and method. Used from the admin thread only (not thread-safe).
 */
#ifndef ATRIUM_SERVER_ADMIN_METRICS_H
#define ATRIUM_SERVER_ADMIN_METRICS_H

#include <stdint.h>

typedef struct admin_metrics admin_metrics;

/* NULL when out of memory. Free with admin_metrics_free (NULL accepted). */
admin_metrics *admin_metrics_new(void);
void admin_metrics_free(admin_metrics *metrics);

/* Counts one request. route and method must be static strings (kept by
 * pointer), e.g. the route's pattern "/v1/services/{name}". */
void admin_metrics_record(admin_metrics *metrics, const char *route, const char *method, int status,
                          double seconds);

/* The exposition text, with the store revision as a gauge. The caller frees
 * the result with free(); NULL when out of memory. */
char *admin_metrics_render(const admin_metrics *metrics, int64_t store_revision);

#endif
