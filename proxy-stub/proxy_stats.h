/*
 * proxy_stats.h — atrium-proxy's counters: what the data path did, per
 * worker, read by the admin port as Prometheus text and as /clusters.
 *
 * Each worker writes only its own shard, so the hot path uses relaxed atomic
 * loads and stores (plain moves on x86), never a lock or a shared cache line.
 * A shard's tables grow only on the first request to a cluster or endpoint;
 * that insert takes the shard's lock, which the admin thread also takes while
 * it reads, so readers see a table that is never half-built.
 */
#ifndef ATRIUM_PROXY_STATS_H
#define ATRIUM_PROXY_STATS_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

/* Why the proxy answered a request itself. */
typedef enum proxy_local_reply {
    PROXY_REPLY_BAD_REQUEST = 0,   /* 400 malformed request */
    PROXY_REPLY_SMUGGLING,         /* 400 ambiguous framing (CL+TE, differing CLs) */
    PROXY_REPLY_HEADERS_TOO_LARGE, /* 431 */
    PROXY_REPLY_NOT_IMPLEMENTED,   /* 501 (upgrade, unknown coding) */
    PROXY_REPLY_UNKNOWN_HOST,      /* 404 no virtual host */
    PROXY_REPLY_NO_ROUTE,          /* 404 a host without a matching route */
    PROXY_REPLY_NO_CLUSTER,        /* 503 the route's cluster is not known */
    PROXY_REPLY_NO_HEALTHY,        /* 503 no healthy endpoint */
    PROXY_REPLY_CONNECT_FAILURE,   /* 503 upstream connect failure */
    PROXY_REPLY_UPSTREAM_TIMEOUT,  /* 504 route timeout */
    PROXY_REPLY_UPSTREAM_RESET,    /* 502 upstream closed or sent garbage before a response */
    PROXY_REPLY_NOT_READY,         /* 503 no configuration yet */
    PROXY_REPLY_REQUEST_TIMEOUT,   /* 408 the request head did not arrive in time */
    PROXY_REPLY_IDLE_TIMEOUT,      /* 408/504 a request in flight idle for the idle timeout */
    PROXY_REPLY_KIND_COUNT
} proxy_local_reply;

/* Static text: "unknown_host", ... (the Prometheus label). */
const char *proxy_local_reply_name(proxy_local_reply reply);

typedef struct proxy_stats_shard proxy_stats_shard;
typedef struct proxy_cluster_stats proxy_cluster_stats;
typedef struct proxy_endpoint_stats proxy_endpoint_stats;

/* The registry of every shard. Not thread-safe to create or free. */
typedef struct proxy_stats proxy_stats;

/* A registry with shard_count shards (one per worker). NULL when out of
 * memory; free with proxy_stats_free. */
proxy_stats *proxy_stats_new(unsigned shard_count);
void proxy_stats_free(proxy_stats *stats);
/* Shard i, for worker i. */
proxy_stats_shard *proxy_stats_shard_of(proxy_stats *stats, unsigned index);

/* ---- written by a worker, on its own shard ---- */

/* The entry of a cluster (created on first use; lives as long as the
 * registry). NULL only when out of memory; the counting functions accept
 * NULL and do nothing. */
proxy_cluster_stats *proxy_stats_cluster(proxy_stats_shard *shard, const char *cluster_name);
/* The entry of an endpoint of that cluster, by "address:port". */
proxy_endpoint_stats *proxy_stats_endpoint(proxy_stats_shard *shard, proxy_cluster_stats *cluster,
                                           const char *address, uint16_t port);

/* A response sent downstream: its status, the cluster (NULL for a local reply
 * without one) and the time from the request's first byte to the response's
 * last, in microseconds. */
void proxy_stats_response(proxy_stats_shard *shard, proxy_cluster_stats *cluster, int status,
                          uint64_t duration_us);
void proxy_stats_local_reply(proxy_stats_shard *shard, proxy_local_reply reply);
void proxy_stats_endpoint_request(proxy_endpoint_stats *endpoint, bool failed);
void proxy_stats_connect_failure(proxy_cluster_stats *cluster, proxy_endpoint_stats *endpoint);
void proxy_stats_upstream_timeout(proxy_cluster_stats *cluster);
/* Connections: delta +1 when opened, -1 when closed. */
void proxy_stats_downstream_connections(proxy_stats_shard *shard, int delta);
void proxy_stats_upstream_connections(proxy_stats_shard *shard, int delta);
void proxy_stats_endpoint_active(proxy_endpoint_stats *endpoint, int delta);
/* A downstream connection closed by the request-head timeout or the idle
 * timeout (the proxy's own limits, not a route's). */
void proxy_stats_request_head_timeout(proxy_stats_shard *shard);
void proxy_stats_idle_timeout(proxy_stats_shard *shard);
/* accept() failed for want of file descriptors (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM): the listener pauses, see data_path.c. */
void proxy_stats_accept_fd_exhausted(proxy_stats_shard *shard);

/* ---- read by the admin thread ---- */

/* Appends the Prometheus text of every shard, summed, to out:
 *   atrium_proxy_requests_total{cluster,code}
 *   atrium_proxy_local_replies_total{reason}
 *   atrium_proxy_upstream_connect_failures_total{cluster}
 *   atrium_proxy_upstream_timeouts_total{cluster}
 *   atrium_proxy_request_duration_seconds (histogram)
 *   atrium_proxy_downstream_connections_active, ..._total
 *   atrium_proxy_upstream_connections_active, ..._total
 *   atrium_proxy_downstream_request_head_timeouts_total
 *   atrium_proxy_downstream_idle_timeouts_total
 *   atrium_proxy_downstream_accept_fd_exhausted_total
 * Returns 0, or -1 when out of memory. */
int proxy_stats_write_prometheus(proxy_stats *stats, struct evbuffer *out);

/* Summed counters of one endpoint (zero when it never saw traffic). */
typedef struct proxy_endpoint_counters {
    uint64_t requests;
    uint64_t failures;
    uint64_t connect_failures;
    int64_t active;
} proxy_endpoint_counters;
void proxy_stats_endpoint_counters(proxy_stats *stats, const char *cluster_name,
                                   const char *address, uint16_t port,
                                   proxy_endpoint_counters *out);

#endif
