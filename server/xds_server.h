/*
 * xds_server.h — the xDS server: Aggregated Discovery Service over gRPC, both
 * state-of-the-world (StreamAggregatedResources) and incremental
 * (DeltaAggregatedResources), on one completion queue and one thread.
 *
 * It keeps an in-memory copy of the mesh model, re-translates only the
 * services the store's change log says changed, and pushes to each stream
 * only the resources whose bytes changed (delta) or the types whose set
 * changed (SotW), in make-before-break order: clusters, endpoints,
 * listeners, routes; removals last. Changes inside the debounce window
 * become one push. Each stream's ACK/NACK state is flushed to the store's
 * proxies table once a second (GET /v1/proxies shows it).
 *
 * Everything a client controls is bounded (the limits are listed in
 * docs/architecture.md, "The xDS server"): node ids and names are refused
 * when absurd, stored texts are cut, a stream that is behind gets only the
 * latest version of each type and is closed when it stays behind, unknown
 * methods are answered UNIMPLEMENTED, and on the TLS port a revoked client
 * certificate gets no stream (and loses the ones it has).
 */
#ifndef ATRIUM_SERVER_XDS_SERVER_H
#define ATRIUM_SERVER_XDS_SERVER_H

#include "store.h"

#include <grpc/grpc.h>

#include <stddef.h>
#include <stdint.h>

/* The mesh's trust bundle (roots, then CRLs), PEM, for Secret ROOTCA; a new
 * string the caller frees, or NULL. Called on the xDS thread once a second. */
typedef char *(*xds_trust_source)(void *context);

typedef struct xds_server_options {
    const char *address;      /* host:port; port 0 picks a free one */
    int debounce_ms;          /* changes within this window are one push (default 100) */
    int min_push_interval_ms; /* at most one push per interval (default 100) */
    xds_trust_source trust;   /* may be NULL: no Secret ROOTCA */
    void *trust_context;
    /* The TLS port (may be NULL): ADS there needs a client certificate, and
     * an atrium-proxy's certificate must carry the identity of the service it
     * says it fronts. attach (may be NULL) registers more methods (the CA's)
     * on the same server before it starts. */
    const char *tls_address;
    grpc_server_credentials *tls_credentials; /* taken */
    const char *trust_domain;                 /* of identities; NULL: atrium.local */
    void (*attach)(void *context, grpc_server *server);
    void *attach_context;
    /* A stream that has changes waiting behind a send its client does not
     * read for this long is closed with RESOURCE_EXHAUSTED (0: 30000). */
    int slow_consumer_ms;
    /* Proxy status rows: disconnected proxies are forgotten after
     * proxy_retention_ms (0: one hour), and at most max_proxy_rows are kept
     * (0: 10000; the least recently seen go first, disconnected ones before
     * connected ones). */
    int64_t proxy_retention_ms;
    int max_proxy_rows;
} xds_server_options;

typedef struct xds_server xds_server;

/* Loads the mesh from the store, binds, and starts the xDS thread. Returns 0
 * with *out (stopped with xds_server_stop) and the bound port, or -1 with the
 * reason in error. */
int xds_server_start(const xds_server_options *options, store *db, xds_server **out,
                     int *bound_port, char *error, size_t error_size);

/* The bound TLS port (0 without one). */
int xds_server_tls_port(const xds_server *server);

/* Tells the xDS thread that the store changed. Thread-safe and cheap: use it
 * as the store's commit listener. */
void xds_server_notify(xds_server *server);

/* Prometheus text for the xDS server's metrics (streams, pushes, NACKs, push
 * latency). Thread-safe. The caller frees the result with free(). */
char *xds_server_metrics(xds_server *server);

/* Cancels every stream, stops the thread and frees the server (NULL accepted). */
void xds_server_stop(xds_server *server);

#endif
