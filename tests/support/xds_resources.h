/*
 * xds_resources.h — xDS resources for tests of atrium-proxy, built with
 * protobuf-c the way atriumd's translator (server/translator.c) builds them,
 * and packed into proxy_resource_sets for proxy_config_build(). Shared by the
 * snapshot unit tests (test_proxy_config.c) and the request fuzzer
 * (fuzz/fuzz_http_request.c); it needs no test framework.
 *
 * Ownership: a pool owns everything allocated from it. Every message, text
 * and array a builder below returns (and everything it points to) is
 * allocated from the pool passed in, lives until pool_free(), and is never
 * to be freed on its own; builders that change a message (add_header,
 * set_weighted, ...) allocate what they add from the pool as well.
 * add_bytes() and add_message() copy into a proxy_resource_set, which then
 * owns the copies; the caller frees them with proxy_resource_set_clear(). A
 * snapshot built from a set keeps nothing of it or of the pool, so both can
 * be freed as soon as proxy_config_build() returns.
 *
 * Running out of memory aborts: these are tests.
 */
#ifndef ATRIUM_TESTS_XDS_RESOURCES_H
#define ATRIUM_TESTS_XDS_RESOURCES_H

#include "proxy_config.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef Envoy__Config__Listener__V3__Listener listener_message;
typedef Envoy__Config__Listener__V3__Filter network_filter_message;
typedef Envoy__Config__Listener__V3__FilterChain filter_chain_message;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    connection_manager_message;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter
    http_filter_message;
typedef Envoy__Config__Route__V3__RouteConfiguration route_configuration_message;
typedef Envoy__Config__Route__V3__VirtualHost virtual_host_message;
typedef Envoy__Config__Route__V3__Route route_message;
typedef Envoy__Config__Route__V3__HeaderMatcher header_matcher_message;
typedef Envoy__Config__Cluster__V3__Cluster cluster_message;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment load_assignment_message;
typedef Envoy__Config__Core__V3__Address address_message;

#define TYPE_PREFIX "type.googleapis.com/"

#define ROUND_ROBIN   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN
#define LEAST_REQUEST ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST
#define RING_HASH     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH
#define RANDOM        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM
#define HEALTHY       ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY
#define UNKNOWN       ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN
#define DRAINING      ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING
#define UNHEALTHY     ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY
#define DEGRADED      ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DEGRADED
#define TIMEOUT       ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT

/* ---- memory for the messages a test builds (freed together) ---- */

typedef struct pool {
    void **allocations; /* each owned, and the array itself */
    size_t count;
    size_t capacity;
} pool;

/* size zeroed bytes (at least one), owned by memory. */
void *pool_alloc(pool *memory, size_t size);
/* A copy of initial's size bytes, owned by memory. */
void *pool_copy(pool *memory, const void *initial, size_t size);
/* A copy of text, owned by memory. */
char *pool_text(pool *memory, const char *text);
/* Frees everything allocated from memory; it can then be used again. */
void pool_free(pool *memory);

/* A new message of type, a copy of the compound literal initial (its __INIT). */
#define NEW(memory, type, initial) ((type *)pool_copy((memory), &(type)initial, sizeof(type)))

/* ---- resource sets ---- */

/* Adds a copy of bytes as resource name (NULL allowed) of type, version
 * version (NULL allowed). */
void add_bytes(proxy_resource_set *set, proxy_resource_type type, const char *name,
               const char *version, const uint8_t *bytes, size_t length);
/* Packs message as resource name of type (version "v-<name>"). */
void add_message(proxy_resource_set *set, proxy_resource_type type, const char *name,
                 const ProtobufCMessage *message);

/* ---- messages, as server/translator.c makes them ---- */

Google__Protobuf__Duration *duration_ms(pool *memory, uint32_t milliseconds);
Google__Protobuf__UInt32Value *uint32_value(pool *memory, uint32_t value);
Google__Protobuf__BoolValue *bool_value(pool *memory, bool value);
/* A ConfigSource for ADS, API version v3. */
Envoy__Config__Core__V3__ConfigSource *ads_source(pool *memory);
address_message *socket_address(pool *memory, const char *host, uint32_t port);

/* An Any of type_name (without TYPE_PREFIX) holding length bytes. */
Google__Protobuf__Any *raw_any(pool *memory, const char *type_name, const uint8_t *bytes,
                               size_t length);
/* An Any holding message, packed. */
Google__Protobuf__Any *pool_any(pool *memory, const ProtobufCMessage *message);

/* An HTTP filter; config NULL: none. */
http_filter_message *http_filter(pool *memory, const char *name, Google__Protobuf__Any *config);
http_filter_message *router_filter(pool *memory);
/* Sets manager's HTTP filters to a copy of filters[0, count). */
void set_http_filters(pool *memory, connection_manager_message *manager,
                      http_filter_message *const *filters, size_t count);
/* translator.c's http_manager: routes from RDS route_name (route_config
 * NULL), or inline; the router filter only. */
connection_manager_message *http_manager(pool *memory, const char *stat_prefix,
                                         const char *route_name,
                                         route_configuration_message *route_config);
network_filter_message *network_filter(pool *memory, const char *name,
                                       Google__Protobuf__Any *config);
/* translator.c's emit_socket_listener: one filter chain, one HCM filter. */
listener_message *socket_listener(pool *memory, const char *name, const char *host, uint32_t port,
                                  Envoy__Config__Core__V3__TrafficDirection direction,
                                  connection_manager_message *manager);
/* The outbound listener (127.0.0.1:15001) with an RDS table of that name. */
listener_message *outbound_listener(pool *memory, const char *route_name);

/* translator.c's emit_cluster: EDS over ADS. */
cluster_message *eds_cluster(pool *memory, const char *name,
                             Envoy__Config__Cluster__V3__Cluster__LbPolicy policy,
                             uint32_t connect_timeout_ms);

typedef struct test_endpoint {
    const char *address;
    uint32_t port;
    uint32_t weight; /* 0: leave load_balancing_weight unset */
    Envoy__Config__Core__V3__HealthStatus health;
    const char *zone;
    uint32_t priority;
} test_endpoint;

/* translator.c's emit_load_assignment: endpoints grouped by zone (and here
 * also by priority), locality weight the sum of its endpoints'. */
load_assignment_message *load_assignment(pool *memory, const char *name,
                                         const test_endpoint *endpoints, size_t count);

/* A route to one cluster: prefix when exact is false, else exact path. */
route_message *route_to(pool *memory, const char *path, bool exact, const char *cluster);
/* Adds a header condition to route. */
void add_header(pool *memory, route_message *route, header_matcher_message *header);

typedef enum string_kind { EXACT, PREFIX, SUFFIX, CONTAINS } string_kind;

/* A string_match header condition (case-sensitive, not inverted). */
header_matcher_message *header_string(pool *memory, const char *name, string_kind kind,
                                      const char *value);
/* A present_match header condition. */
header_matcher_message *header_present(pool *memory, const char *name, bool present);
/* Makes route split between clusters (translator.c: a rule's splits). */
void set_weighted(pool *memory, route_message *route, const char *const *names,
                  const uint32_t *weights, size_t count);

virtual_host_message *virtual_host(pool *memory, const char *name, const char *const *domains,
                                   size_t domain_count, route_message *const *routes,
                                   size_t route_count);
/* translator.c's virtual_host: domains S, S.<namespace>, S:*; routes given,
 * or just the default route to cluster S. */
virtual_host_message *service_host(pool *memory, const char *service, route_message *const *routes,
                                   size_t route_count);
route_configuration_message *route_configuration(pool *memory, const char *name,
                                                 virtual_host_message *const *hosts, size_t count);
/* translate_proxy's inbound listener: 0.0.0.0:port, inline table "inbound"
 * with one "*" virtual host routing / to cluster. */
listener_message *inbound_listener(pool *memory, uint32_t port, const char *cluster);

#endif
