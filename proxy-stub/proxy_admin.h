/*
 * proxy_admin.h — atrium-proxy's admin port (HTTP/1.1 on libevent's evhttp,
 * its own thread), for operators and tests:
 *
 *   GET /ready        200 "ready" once a configuration is applied, else 503
 *                     (says whether it came from the saved state);
 *   GET /stats        Prometheus text: the data path's counters
 *                     (proxy_stats) and the xDS client's state;
 *   GET /config_dump  JSON of the applied snapshot: listeners, route tables,
 *                     clusters and endpoints, each with its version, and the
 *                     xDS state;
 *   GET /clusters     every cluster's endpoints with health, weight and
 *                     counters (text, one line per field as Envoy prints
 *                     it; ?format=json for JSON).
 */
#ifndef ATRIUM_PROXY_ADMIN_H
#define ATRIUM_PROXY_ADMIN_H

#include "proxy_config.h"
#include "proxy_stats.h"
#include "xds_client.h"

#include <stddef.h>
#include <stdint.h>

/* Where the admin port reads what it shows. Called on the admin thread. */
typedef struct proxy_admin_sources {
    proxy_stats *stats; /* NULL: no data-path counters */
    /* The applied snapshot with one reference for the caller, or NULL. */
    proxy_config *(*current_config)(void *context);
    /* Gives back a snapshot current_config returned (proxy_config_release
     * in the proxy; tests count them). Required when current_config is set. */
    void (*release_config)(void *context, proxy_config *config);
    /* The xDS client's state; NULL: shown as never connected. */
    void (*xds_status)(void *context, xds_client_status *out);
    void *context;
} proxy_admin_sources;

typedef struct proxy_admin proxy_admin; /* opaque */

/* Binds host:port (port 0: any free port) and starts the admin thread.
 * sources is copied. Returns the admin, or NULL with the reason in error.
 * The caller stops it with proxy_admin_stop. */
proxy_admin *proxy_admin_start(const char *host, uint16_t port, const proxy_admin_sources *sources,
                               char *error, size_t error_size);
/* The port it listens on. */
uint16_t proxy_admin_port(const proxy_admin *admin);
/* Stops the thread, closes the port and frees the admin. NULL accepted. */
void proxy_admin_stop(proxy_admin *admin);

#endif
