/*
 * admin_http.h — atriumd's admin HTTP listener (libevent evhttp) on its own
 * thread: the REST API of rest_api.h behind a bearer token, plus /healthz
 * (no token) and /metrics (Prometheus text).
 */
#ifndef ATRIUM_SERVER_ADMIN_HTTP_H
#define ATRIUM_SERVER_ADMIN_HTTP_H

#include "ca_service.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

/* Paths served outside rest_api's route table. */
#define ADMIN_HTTP_HEALTH_PATH  "/healthz"
#define ADMIN_HTTP_METRICS_PATH "/metrics"

/* Limits on what one client can make the admin listener hold. */
#define ADMIN_HTTP_HEADERS_MAX     (64 * 1024) /* request line + headers; over it: 400 (evhttp's) */
#define ADMIN_HTTP_MAX_CONNECTIONS 128         /* open; at the limit the listener pauses */
/* Open connections none of whose requests presented the token yet; past it
 * the oldest of them is closed to admit the new one. */
#define ADMIN_HTTP_MAX_UNAUTHENTICATED    32
#define ADMIN_HTTP_TIMEOUT_S              30   /* reading a request or writing a reply */
#define ADMIN_HTTP_ACCEPT_PAUSE_MS        100  /* after accept() fails (EMFILE, ENFILE, ...) */
#define ADMIN_HTTP_ACCEPT_LOG_INTERVAL_MS 1000 /* at most one log line about it per interval */

typedef struct admin_http admin_http;

/* Binds the address and starts serving on a new thread; every call but
 * /healthz must present the token. *out is released with admin_http_stop;
 * *bound_port receives the port actually bound. Returns 0, or -1 with the
 * reason in error. */
/* More Prometheus text for /metrics (the xDS server's); returns a string the
 * caller frees, or NULL. Called on the admin thread. */
typedef char *(*admin_http_metrics_source)(void *context);

typedef struct admin_http_options {
    const char *address;                      /* host:port; port 0 picks a free one */
    const char *token;                        /* the bearer token (copied) */
    const char *trust_domain;                 /* of SPIFFE IDs shown by the API (copied) */
    admin_http_metrics_source metrics_source; /* may be NULL: adds text to /metrics */
    void *metrics_context;
    ca_service *authority; /* the CA, for /v1/ca/...; may be NULL */
} admin_http_options;

int admin_http_start(const admin_http_options *options, store *db, admin_http **out,
                     uint16_t *bound_port, char *error, size_t error_size);

/* Stops the thread, closes the listener and frees the server. NULL is accepted. */
void admin_http_stop(admin_http *server);

#endif
