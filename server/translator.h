/*
 * translator.h — the mesh model (services, endpoints, routes) as xDS v3
 * resources: each resource is built with protobuf-c and packed once; its
 * version is the xxHash64 of its bytes, so a resource whose bytes did not
 * change is never pushed again.
 *
 * Shared resources (every subscriber sees the same bytes), per service S:
 *   Listener S              an API listener, as proxyless gRPC asks for xds:///S:
 *                           HttpConnectionManager with RDS "S" over ADS, router filter;
 *   RouteConfiguration S    one virtual host (domains S, S.<namespace>, S:*) with
 *                           the service's rules, then a default route to cluster S;
 *   Cluster S, S|k=v,...    EDS over ADS; one per label subset a split refers to;
 *   ClusterLoadAssignment   per cluster: healthy and draining endpoints, by zone.
 * The mesh's trust, for every subscriber that asks for it:
 *   Secret ROOTCA           validation context: the roots and the CRLs.
 * Per proxy profile (an atrium-proxy's service, namespace and ports):
 *   Listener "outbound"     127.0.0.1:<outbound port>, HCM with RDS "outbound";
 *   RouteConfiguration "outbound"  a virtual host per service the proxy may call;
 *   Listener "inbound"      0.0.0.0:<inbound port> → cluster inbound|<app port>;
 *   Cluster and ClusterLoadAssignment "inbound|<app port>" → 127.0.0.1:<app port>.
 */
#ifndef ATRIUM_SERVER_TRANSLATOR_H
#define ATRIUM_SERVER_TRANSLATOR_H

#include "model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Resource types, in make-before-break push order (secrets before the
 * clusters and listeners that refer to them). */
typedef enum xds_type {
    XDS_SECRET = 0,
    XDS_CLUSTER,
    XDS_ENDPOINT,
    XDS_LISTENER,
    XDS_ROUTE,
    XDS_TYPE_COUNT
} xds_type;

/* "type.googleapis.com/envoy.config.cluster.v3.Cluster" and so on (static). */
const char *xds_type_url(xds_type type);
/* False for a type URL Atrium does not serve. */
bool xds_type_from_url(const char *url, xds_type *out);

/* One packed resource. */
typedef struct xds_resource {
    xds_type type;
    char *name;
    uint8_t *bytes; /* the resource message (not wrapped in Any) */
    size_t length;
    uint64_t hash; /* xxHash64 of bytes: the resource's version */
} xds_resource;

typedef struct xds_resource_list {
    xds_resource *items;
    size_t count;
} xds_resource_list;

/* Frees every resource in the list and empties it. */
void xds_resource_list_clear(xds_resource_list *list);
/* The version string of a hash: 16 lower-case hex digits, into text[17]. */
void xds_version_text(uint64_t hash, char text[17]);

/* One service as the translator needs it. routes may have no rules. */
typedef struct translator_service {
    const model_service *service;
    const model_endpoint *endpoints;
    size_t endpoint_count;
    const model_routes *routes; /* NULL: no rules */
} translator_service;

/* Appends the shared resources of one service to out. Returns 0, or -1 when
 * out of memory. */
int translate_service(const translator_service *service, xds_resource_list *out);

/* What identifies an atrium-proxy's own resources. */
typedef struct proxy_profile {
    const char *service;
    const char *namespace_name;
    uint32_t inbound_port;
    uint32_t app_port;
    uint32_t outbound_port;
} proxy_profile;

/* Appends the per-proxy resources of a profile; callable lists the services
 * the proxy may call (their virtual hosts make up RouteConfiguration
 * "outbound"). Returns 0, or -1 when out of memory. */
int translate_proxy(const proxy_profile *profile, const translator_service *callable,
                    size_t callable_count, xds_resource_list *out);

#define XDS_ROOT_SECRET "ROOTCA"

/* Appends Secret ROOTCA: a validation context trusting roots_pem, with the
 * CRLs of crl_pem (may be empty). Returns 0, or -1 when out of memory. */
int translate_root_secret(const char *roots_pem, const char *crl_pem, xds_resource_list *out);

/* The name of the cluster of a label subset: "S|k=v" or "S|k1=v1,k2=v2".
 * Returns a new string (free()). */
char *translator_subset_cluster_name(const char *service, const model_labels *subset);

#endif
