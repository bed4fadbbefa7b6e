/*
 * data_path.h — atrium-proxy's traffic: worker threads, each with its own
 * libevent loop, its downstream connections and its pool of keep-alive
 * connections to upstream endpoints. Each listener of the applied
 * configuration is one listening socket of the process (no SO_REUSEPORT: a
 * second process cannot share its port), accepted from by worker 0, which
 * hands the connections to the workers in turn.
 *
 * A request is routed on the snapshot that was current when its head
 * arrived (it holds a reference until its response ends). A new snapshot is
 * handed to every worker; each opens the listeners that appeared, stops
 * accepting on the ones that went away (their open connections finish the
 * request in flight, then close) and keeps the rest untouched, so applying a
 * configuration never drops an established connection.
 */
#ifndef ATRIUM_PROXY_DATA_PATH_H
#define ATRIUM_PROXY_DATA_PATH_H

#include "proxy_config.h"
#include "proxy_stats.h"

#include <stddef.h>
#include <stdint.h>

typedef struct data_path data_path; /* opaque */

/* Limits on what a client may hold (0: none). */
typedef struct data_path_limits {
    /* A request head must be whole this long after its first byte arrived,
     * else 408 and the connection closes (Envoy's request_headers_timeout). */
    uint32_t request_head_timeout_ms;
    /* A client connection on which (and on whose request's upstream) no
     * byte moved this long is closed (Envoy's idle_timeout). */
    uint32_t idle_timeout_ms;
} data_path_limits;

#define DATA_PATH_LIMITS_DEFAULT                                                                   \
    {                                                                                              \
        10000, 3600000                                                                             \
    }

/* Told, on the first worker's thread, why listeners of an applied snapshot
 * could not be opened ("outbound 127.0.0.1:15001: Address already in use",
 * several joined by "; "). */
typedef void (*data_path_listener_failure)(const char *reason, void *context);

/* Starts worker_count workers (no listener until a snapshot is applied)
 * with limits (NULL: DATA_PATH_LIMITS_DEFAULT), counting into stats (one
 * shard per worker; stats outlives the data path); on_failure (may be NULL)
 * hears of listeners that cannot be opened. Returns NULL with the reason in
 * error. Stop it with data_path_stop. */
data_path *data_path_start(unsigned worker_count, const data_path_limits *limits,
                           proxy_stats *stats, data_path_listener_failure on_failure, void *context,
                           char *error, size_t error_size);

/* Makes config the current snapshot and tells every worker; takes over the
 * caller's reference. Thread-safe. */
void data_path_apply(data_path *path, proxy_config *config);

/* The current snapshot with a reference for the caller, or NULL before the
 * first one. Thread-safe. */
proxy_config *data_path_current(data_path *path);

/* Whether every listener of config can be bound here: each address path
 * does not already listen on (path may be NULL) is bound once, as the
 * listeners are bound (SO_REUSEADDR, no SO_REUSEPORT, so a port another
 * process listens on is taken), and let go at once. Returns 0, or -1 with
 * the first failure in error ("listener \"outbound\": cannot bind
 * 127.0.0.1:15001: Address already in use"). Thread-safe. */
int data_path_check_listeners(data_path *path, const proxy_config *config, char *error,
                              size_t error_size);

/* Stops the workers, closes every connection and frees the data path. */
void data_path_stop(data_path *path);

#endif
