/*
 * xds_client.h — atrium-proxy's delta xDS client: one
 * DeltaAggregatedResources stream to atriumd on its own thread (gRPC C core).
 *
 * It subscribes to Listeners (wildcard) and Clusters (wildcard), then to the
 * RouteConfigurations the listeners name and the ClusterLoadAssignments of
 * the clusters; every response is applied whole or not at all: the resource
 * set it would give is built into a proxy_config snapshot, and either the
 * snapshot is handed to the proxy (ACK) or the build error is sent back as
 * error_detail (NACK) and the previous snapshot keeps serving.
 *
 * Every accepted resource set is written to <state_dir>/xds-state.pb
 * (write to a temporary file, fsync, rename). At start, when that file exists,
 * its snapshot is applied before connecting (static stability). A saved state
 * that is corrupt (bad magic, checksum, truncated, undecodable) or whose
 * snapshot cannot be built is moved aside to
 * <state_dir>/xds-state.pb.corrupt-<unix time> and the client starts as if
 * there were none: it waits for atriumd, as a proxy without saved state does.
 * status.saved_state_refused says why, for the caller to log.
 *
 * A stream that breaks is reopened with jittered exponential backoff (0.5 s
 * doubling to 30 s, ±50 %), sending initial_resource_versions of what the
 * proxy holds.
 */
#ifndef ATRIUM_PROXY_XDS_CLIENT_H
#define ATRIUM_PROXY_XDS_CLIENT_H

#include "proxy_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct xds_client_options {
    const char *target;         /* "127.0.0.1:15010" */
    const char *node_id;        /* Node.id */
    const char *service;        /* Node metadata atrium.service */
    const char *namespace_name; /* atrium.namespace */
    uint16_t app_port;          /* atrium.app_port */
    uint16_t inbound_port;      /* atrium.inbound_port */
    uint16_t outbound_port;     /* atrium.outbound_port */
    const char *state_dir;      /* NULL: no saved state */
    /* Asked on the client's thread, with the context given to
     * xds_client_start, whether a snapshot built from a response can be
     * applied (say, whether its listeners can be bound): 0 when it can, else
     * -1 with the reason in error, and the response is NACKed with it. NULL:
     * every snapshot that builds is applied. */
    int (*check)(const proxy_config *config, void *context, char *error, size_t error_size);
} xds_client_options;

/* Called on the client's thread with each new snapshot; the callee receives
 * one reference and releases it. */
typedef void (*xds_client_apply_fn)(proxy_config *config, void *context);

typedef struct xds_client xds_client; /* opaque */

typedef struct xds_client_status {
    bool connected;           /* a stream is open and atriumd answered it (its headers) */
    bool serving_saved_state; /* the snapshot came from state_dir, none from atriumd yet */
    uint64_t generation;      /* of the last snapshot applied, 0 before any */
    uint64_t responses;       /* responses received */
    uint64_t acks;
    uint64_t nacks;
    uint64_t connects;      /* streams opened */
    int64_t last_update_ms; /* wall clock of the last applied snapshot, 0 before any */
    char last_nack[512];    /* "" when none */
    char versions[PROXY_RESOURCE_TYPE_COUNT][64]; /* system_version_info per type, last ACKed */
    char last_stream_error[256];   /* how the last stream that failed ended; "" when none did */
    uint64_t state_write_failures; /* saves of <state_dir>/xds-state.pb that failed */
    char last_state_error[256];    /* why the last save failed; "" when it succeeded */
    /* Why the saved state found at start was not used, naming the file, and
     * where it was moved; "" when it was used or there was none. */
    char saved_state_refused[1024];
} xds_client_status;

/* Copies options (strings included), loads saved state if any (applying its
 * snapshot through apply before returning; moving an unusable one aside, see
 * above), and starts the client thread. Returns the client, or NULL with the
 * reason in error (bad target, a state_dir that cannot be created, a saved
 * state that cannot be read at all or cannot be moved aside — a missing or
 * corrupt one is fine). The caller stops and frees it with xds_client_stop. */
xds_client *xds_client_start(const xds_client_options *options, xds_client_apply_fn apply,
                             void *context, char *error, size_t error_size);

/* Cancels the stream, joins the thread and frees the client. NULL accepted. */
void xds_client_stop(xds_client *client);

/* A consistent copy of the client's state, from any thread. */
void xds_client_get_status(xds_client *client, xds_client_status *out);

#endif
