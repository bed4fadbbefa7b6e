/*
 * proxy_config.h — the configuration atrium-proxy serves from: an immutable,
 * refcounted snapshot built from the xDS resources it last accepted.
 *
 * A snapshot is built whole from a resource set (every Listener,
 * RouteConfiguration, Cluster and ClusterLoadAssignment the proxy holds, as
 * their packed protobuf bytes). Building either succeeds, or fails with a
 * reason naming the resource and what in it cannot be applied; the caller
 * then NACKs and keeps serving the previous snapshot. Once built a snapshot
 * never changes, except the load balancer's round-robin counters, which are
 * atomics. Workers take a reference for each request they start, so a request
 * finishes on the snapshot it began with; the last release frees it.
 *
 * Cross references (a listener's RDS route table, a route's clusters, a
 * cluster's endpoints) are resolved at build time into pointers; one that
 * names something not (yet) received resolves to NULL, which the data path
 * answers with 404 (route table) or 503 (cluster), as Envoy does.
 */
#ifndef ATRIUM_PROXY_CONFIG_H
#define ATRIUM_PROXY_CONFIG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The four resource types a proxy subscribes to, in the order they are
 * applied (make-before-break). */
typedef enum proxy_resource_type {
    PROXY_RESOURCE_CLUSTER = 0,
    PROXY_RESOURCE_ENDPOINT,
    PROXY_RESOURCE_LISTENER,
    PROXY_RESOURCE_ROUTE,
    PROXY_RESOURCE_TYPE_COUNT
} proxy_resource_type;

/* "type.googleapis.com/envoy.config.cluster.v3.Cluster" and so on (static). */
const char *proxy_resource_type_url(proxy_resource_type type);
/* False when url is not one of the four. */
bool proxy_resource_type_from_url(const char *url, proxy_resource_type *out);

/* One resource as received: its name, version and packed message bytes (the
 * message itself, not the Any around it). */
typedef struct proxy_resource {
    char *name;
    char *version;
    uint8_t *bytes;
    size_t length;
} proxy_resource;

/* Every resource of every type the proxy holds. */
typedef struct proxy_resource_set {
    proxy_resource *items[PROXY_RESOURCE_TYPE_COUNT];
    size_t counts[PROXY_RESOURCE_TYPE_COUNT];
} proxy_resource_set;

typedef struct proxy_endpoint {
    char address[64]; /* numeric IPv4 or IPv6 text */
    uint16_t port;
    uint32_t weight; /* >= 1 */
    bool healthy;    /* HEALTHY or UNKNOWN; DRAINING/UNHEALTHY/... are not */
    struct sockaddr_storage socket_address;
    socklen_t socket_address_length;
    size_t index; /* position in its cluster's endpoints */
} proxy_endpoint;

typedef struct proxy_cluster {
    char *name;
    char *version;           /* the Cluster resource's version */
    char *endpoints_version; /* its ClusterLoadAssignment's, NULL before one arrived */
    uint32_t connect_timeout_ms;
    proxy_endpoint *endpoints;
    size_t endpoint_count;
    /* Weighted round robin over the healthy endpoints: a precomputed smooth
     * schedule of endpoint indexes (empty when none is healthy), walked by an
     * atomic counter shared by the workers. */
    uint32_t *schedule;
    size_t schedule_length;
    atomic_uint_fast64_t next_pick;
    size_t index; /* position in the snapshot's clusters: per-worker state */
} proxy_cluster;

typedef enum proxy_path_match { PROXY_PATH_PREFIX = 0, PROXY_PATH_EXACT } proxy_path_match;

typedef enum proxy_header_match_kind {
    PROXY_HEADER_PRESENT = 0,
    PROXY_HEADER_EXACT,
    PROXY_HEADER_PREFIX,
    PROXY_HEADER_SUFFIX,
    PROXY_HEADER_CONTAINS
} proxy_header_match_kind;

typedef struct proxy_header_match {
    char *name; /* lower case */
    proxy_header_match_kind kind;
    char *value; /* NULL for PRESENT */
    bool ignore_case;
    bool invert;
} proxy_header_match;

typedef struct proxy_weighted_cluster {
    char *name;
    uint32_t weight;
    proxy_cluster *cluster; /* NULL: not received (its pick counter is mutable) */
} proxy_weighted_cluster;

typedef struct proxy_route {
    char *name;
    proxy_path_match path_match;
    char *path; /* prefix or exact path */
    size_t path_length;
    bool case_sensitive;
    proxy_header_match *headers; /* all must match */
    size_t header_count;
    proxy_weighted_cluster *clusters; /* one entry for a plain cluster */
    size_t cluster_count;
    uint32_t total_weight;
    uint32_t timeout_ms; /* 0: none; Envoy's default when unset is 15 s */
    /* Retries (the traffic-management issue uses them). */
    uint32_t retry_count;
    uint32_t per_try_timeout_ms;
    char *retry_on; /* NULL: no retry policy */
} proxy_route;

typedef struct proxy_virtual_host {
    char *name;
    char **domains;
    size_t domain_count;
    proxy_route *routes;
    size_t route_count;
} proxy_virtual_host;

typedef struct proxy_domain_index proxy_domain_index; /* opaque hash of domains */

typedef struct proxy_route_table {
    char *name;
    char *version; /* NULL for a table inlined in its listener */
    proxy_virtual_host *virtual_hosts;
    size_t virtual_host_count;
    proxy_domain_index *domain_index;
} proxy_route_table;

typedef enum proxy_direction {
    PROXY_DIRECTION_UNSPECIFIED = 0,
    PROXY_DIRECTION_INBOUND,
    PROXY_DIRECTION_OUTBOUND
} proxy_direction;

typedef struct proxy_listener {
    char *name;
    char *version;
    char address[64]; /* numeric */
    uint16_t port;
    proxy_direction direction;
    char *route_table_name;               /* RDS name, or the inline table's name */
    const proxy_route_table *route_table; /* NULL: RDS table not received */
    bool generate_request_id;             /* default true */
} proxy_listener;

typedef struct proxy_config {
    atomic_int references;
    uint64_t generation; /* 1, 2, ... in the order snapshots were built */
    proxy_listener *listeners;
    size_t listener_count;
    proxy_cluster *clusters; /* sorted by name */
    size_t cluster_count;
    proxy_route_table *route_tables; /* RDS tables, sorted by name */
    size_t route_table_count;
    proxy_route_table *inline_tables; /* one per listener with an inline table */
    size_t inline_table_count;
} proxy_config;

/* Builds a snapshot from resources (which it does not keep: every text it
 * needs is copied; the caller keeps the bytes, e.g. for the state file). Returns it with one
 * reference, or NULL with the reason in error ("Cluster \"x\": ...": the resource's type and name,
 * then what cannot be applied: an unknown filter, a bad address, an unsupported field value). */
proxy_config *proxy_config_build(const proxy_resource_set *resources, uint64_t generation,
                                 char *error, size_t error_size);

/* Takes one more reference (returns config). */
proxy_config *proxy_config_retain(proxy_config *config);
/* Drops one reference; the last one frees the snapshot. NULL accepted. */
void proxy_config_release(proxy_config *config);

/* The cluster named name, or NULL. */
const proxy_cluster *proxy_config_find_cluster(const proxy_config *config, const char *name);
/* The listener named name, or NULL. */
const proxy_listener *proxy_config_find_listener(const proxy_config *config, const char *name);

/* The virtual host for a Host header value (length bytes, not terminated),
 * as Envoy picks it: an exact domain (case-insensitive), then with any
 * ":port" stripped or matched by "name:*", then the longest "*suffix", then
 * the longest "prefix*", then "*". NULL when none matches. */
const proxy_virtual_host *proxy_route_table_find_host(const proxy_route_table *table,
                                                      const char *host, size_t length);

/* Picks the next healthy endpoint by weighted round robin, or NULL when the
 * cluster has none. Safe from several threads. */
const proxy_endpoint *proxy_cluster_pick(proxy_cluster *cluster);

/* Frees every resource of a set (names, versions, bytes, the arrays) and
 * empties it; an empty set is fine. */
void proxy_resource_set_clear(proxy_resource_set *set);

#endif
