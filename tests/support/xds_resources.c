/*
 * xds_resources.c — xDS resources for atrium-proxy's tests, built with
 * protobuf-c as atriumd's translator builds them (see xds_resources.h: what
 * each builder makes, and who owns what).
 */
#include "xds_resources.h"

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* allocation, or the end of the test when there is no memory left. */
static void *require_memory(void *allocation)
{
    if (allocation == NULL) {
        fputs("xds_resources: out of memory\n", stderr);
        abort();
    }
    return allocation;
}

/* ---- memory for the messages a test builds (freed together) ---- */

void *pool_alloc(pool *memory, size_t size)
{
    void *allocation = require_memory(calloc(1, size ? size : 1));
    if (memory->count == memory->capacity) {
        memory->capacity = memory->capacity ? memory->capacity * 2 : 64;
        memory->allocations =
            require_memory(realloc(memory->allocations, memory->capacity * sizeof(void *)));
    }
    memory->allocations[memory->count++] = allocation;
    return allocation;
}

void *pool_copy(pool *memory, const void *initial, size_t size)
{
    return memcpy(pool_alloc(memory, size), initial, size);
}

char *pool_text(pool *memory, const char *text)
{
    return strcpy(pool_alloc(memory, strlen(text) + 1), text);
}

void pool_free(pool *memory)
{
    for (size_t i = 0; i < memory->count; i++)
        free(memory->allocations[i]);
    free(memory->allocations);
    *memory = (pool){0};
}

/* ---- resource sets ---- */

void add_bytes(proxy_resource_set *set, proxy_resource_type type, const char *name,
               const char *version, const uint8_t *bytes, size_t length)
{
    size_t count = set->counts[type];
    if ((count & (count - 1)) == 0) { /* 0, 1, 2, 4, ...: the array is full */
        set->items[type] = require_memory(
            realloc(set->items[type], (count ? count * 2 : 1) * sizeof(proxy_resource)));
    }
    proxy_resource *resource = &set->items[type][set->counts[type]++];
    resource->name = name != NULL ? require_memory(strdup(name)) : NULL;
    resource->version = version != NULL ? require_memory(strdup(version)) : NULL;
    resource->bytes = require_memory(malloc(length ? length : 1));
    memcpy(resource->bytes, bytes, length);
    resource->length = length;
}

void add_message(proxy_resource_set *set, proxy_resource_type type, const char *name,
                 const ProtobufCMessage *message)
{
    size_t length = protobuf_c_message_get_packed_size(message);
    uint8_t *bytes = require_memory(malloc(length ? length : 1));
    protobuf_c_message_pack(message, bytes);
    char version[160];
    snprintf(version, sizeof(version), "v-%s", name);
    add_bytes(set, type, name, version, bytes, length);
    free(bytes);
}

/* ---- messages, as server/translator.c makes them ---- */

Google__Protobuf__Duration *duration_ms(pool *memory, uint32_t milliseconds)
{
    Google__Protobuf__Duration *duration =
        NEW(memory, Google__Protobuf__Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    duration->seconds = milliseconds / 1000;
    duration->nanos = (int32_t)(milliseconds % 1000) * 1000000;
    return duration;
}

Google__Protobuf__UInt32Value *uint32_value(pool *memory, uint32_t value)
{
    Google__Protobuf__UInt32Value *wrapper =
        NEW(memory, Google__Protobuf__UInt32Value, GOOGLE__PROTOBUF__UINT32_VALUE__INIT);
    wrapper->value = value;
    return wrapper;
}

Google__Protobuf__BoolValue *bool_value(pool *memory, bool value)
{
    Google__Protobuf__BoolValue *wrapper =
        NEW(memory, Google__Protobuf__BoolValue, GOOGLE__PROTOBUF__BOOL_VALUE__INIT);
    wrapper->value = value;
    return wrapper;
}

Envoy__Config__Core__V3__ConfigSource *ads_source(pool *memory)
{
    Envoy__Config__Core__V3__ConfigSource *source =
        NEW(memory, Envoy__Config__Core__V3__ConfigSource,
            ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT);
    source->config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    source->ads = NEW(memory, Envoy__Config__Core__V3__AggregatedConfigSource,
                      ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT);
    source->resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    return source;
}

address_message *socket_address(pool *memory, const char *host, uint32_t port)
{
    Envoy__Config__Core__V3__SocketAddress *socket =
        NEW(memory, Envoy__Config__Core__V3__SocketAddress,
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT);
    socket->address = pool_text(memory, host);
    socket->port_specifier_case =
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    socket->port_value = port;
    address_message *address = NEW(memory, address_message, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
    address->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    address->socket_address = socket;
    return address;
}

Google__Protobuf__Any *raw_any(pool *memory, const char *type_name, const uint8_t *bytes,
                               size_t length)
{
    Google__Protobuf__Any *any = NEW(memory, Google__Protobuf__Any, GOOGLE__PROTOBUF__ANY__INIT);
    any->type_url = pool_alloc(memory, strlen(TYPE_PREFIX) + strlen(type_name) + 1);
    sprintf(any->type_url, "%s%s", TYPE_PREFIX, type_name);
    any->value.len = length;
    any->value.data = pool_alloc(memory, length);
    if (length > 0)
        memcpy(any->value.data, bytes, length);
    return any;
}

Google__Protobuf__Any *pool_any(pool *memory, const ProtobufCMessage *message)
{
    size_t length = protobuf_c_message_get_packed_size(message);
    uint8_t *bytes = pool_alloc(memory, length);
    protobuf_c_message_pack(message, bytes);
    return raw_any(memory, message->descriptor->name, bytes, length);
}

http_filter_message *http_filter(pool *memory, const char *name, Google__Protobuf__Any *config)
{
    http_filter_message *filter =
        NEW(memory, http_filter_message,
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__INIT);
    filter->name = pool_text(memory, name);
    if (config != NULL) {
        filter->config_type_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
        filter->typed_config = config;
    }
    return filter;
}

http_filter_message *router_filter(pool *memory)
{
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    return http_filter(memory, "envoy.filters.http.router", pool_any(memory, &router.base));
}

void set_http_filters(pool *memory, connection_manager_message *manager,
                      http_filter_message *const *filters, size_t count)
{
    manager->n_http_filters = count;
    manager->http_filters = pool_alloc(memory, count * sizeof(*filters));
    if (count > 0)
        memcpy(manager->http_filters, filters, count * sizeof(*filters));
}

connection_manager_message *http_manager(pool *memory, const char *stat_prefix,
                                         const char *route_name,
                                         route_configuration_message *route_config)
{
    connection_manager_message *manager = NEW(
        memory, connection_manager_message,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT);
    manager->stat_prefix = pool_text(memory, stat_prefix);
    if (route_config != NULL) {
        manager->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG;
        manager->route_config = route_config;
    } else {
        Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            NEW(memory, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds,
                ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT);
        rds->config_source = ads_source(memory);
        rds->route_config_name = pool_text(memory, route_name);
        manager->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
        manager->rds = rds;
    }
    http_filter_message *router = router_filter(memory);
    set_http_filters(memory, manager, &router, 1);
    return manager;
}

network_filter_message *network_filter(pool *memory, const char *name,
                                       Google__Protobuf__Any *config)
{
    network_filter_message *filter =
        NEW(memory, network_filter_message, ENVOY__CONFIG__LISTENER__V3__FILTER__INIT);
    filter->name = pool_text(memory, name);
    filter->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    filter->typed_config = config;
    return filter;
}

listener_message *socket_listener(pool *memory, const char *name, const char *host, uint32_t port,
                                  Envoy__Config__Core__V3__TrafficDirection direction,
                                  connection_manager_message *manager)
{
    filter_chain_message *chain =
        NEW(memory, filter_chain_message, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT);
    chain->n_filters = 1;
    chain->filters = pool_alloc(memory, sizeof(*chain->filters));
    chain->filters[0] = network_filter(memory, "envoy.filters.network.http_connection_manager",
                                       pool_any(memory, &manager->base));
    chain->name = pool_text(memory, name);
    listener_message *listener =
        NEW(memory, listener_message, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    listener->name = pool_text(memory, name);
    listener->address = socket_address(memory, host, port);
    listener->traffic_direction = direction;
    listener->n_filter_chains = 1;
    listener->filter_chains = pool_alloc(memory, sizeof(chain));
    listener->filter_chains[0] = chain;
    return listener;
}

listener_message *outbound_listener(pool *memory, const char *route_name)
{
    return socket_listener(memory, "outbound", "127.0.0.1", 15001,
                           ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND,
                           http_manager(memory, "outbound", route_name, NULL));
}

cluster_message *eds_cluster(pool *memory, const char *name,
                             Envoy__Config__Cluster__V3__Cluster__LbPolicy policy,
                             uint32_t connect_timeout_ms)
{
    cluster_message *cluster =
        NEW(memory, cluster_message, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
    cluster->name = pool_text(memory, name);
    cluster->cluster_discovery_type_case =
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    cluster->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
    Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *eds =
        NEW(memory, Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig,
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT);
    eds->eds_config = ads_source(memory);
    eds->service_name = pool_text(memory, name);
    cluster->eds_cluster_config = eds;
    cluster->connect_timeout = duration_ms(memory, connect_timeout_ms);
    cluster->lb_policy = policy;
    if (policy == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH) {
        Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *ring =
            NEW(memory, Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig,
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__INIT);
        cluster->lb_config_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG;
        cluster->ring_hash_lb_config = ring;
    } else if (policy == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST) {
        Envoy__Config__Cluster__V3__Cluster__LeastRequestLbConfig *least =
            NEW(memory, Envoy__Config__Cluster__V3__Cluster__LeastRequestLbConfig,
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LEAST_REQUEST_LB_CONFIG__INIT);
        least->choice_count = uint32_value(memory, 2);
        cluster->lb_config_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG;
        cluster->least_request_lb_config = least;
    }
    return cluster;
}

load_assignment_message *load_assignment(pool *memory, const char *name,
                                         const test_endpoint *endpoints, size_t count)
{
    load_assignment_message *assignment =
        NEW(memory, load_assignment_message,
            ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT);
    assignment->cluster_name = pool_text(memory, name);
    assignment->endpoints = pool_alloc(memory, count * sizeof(*assignment->endpoints));
    for (size_t i = 0; i < count; i++) {
        const test_endpoint *endpoint = &endpoints[i];
        const char *zone = endpoint->zone ? endpoint->zone : "";
        Envoy__Config__Endpoint__V3__LocalityLbEndpoints *locality = NULL;
        for (size_t l = 0; l < assignment->n_endpoints && locality == NULL; l++) {
            if (strcmp(assignment->endpoints[l]->locality->zone, zone) == 0 &&
                assignment->endpoints[l]->priority == endpoint->priority)
                locality = assignment->endpoints[l];
        }
        if (locality == NULL) {
            locality = NEW(memory, Envoy__Config__Endpoint__V3__LocalityLbEndpoints,
                           ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT);
            locality->locality = NEW(memory, Envoy__Config__Core__V3__Locality,
                                     ENVOY__CONFIG__CORE__V3__LOCALITY__INIT);
            locality->locality->zone = pool_text(memory, zone);
            locality->lb_endpoints = pool_alloc(memory, count * sizeof(*locality->lb_endpoints));
            locality->load_balancing_weight = uint32_value(memory, 0);
            locality->priority = endpoint->priority;
            assignment->endpoints[assignment->n_endpoints++] = locality;
        }
        Envoy__Config__Endpoint__V3__Endpoint *host =
            NEW(memory, Envoy__Config__Endpoint__V3__Endpoint,
                ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT);
        host->address = socket_address(memory, endpoint->address, endpoint->port);
        Envoy__Config__Endpoint__V3__LbEndpoint *lb_endpoint =
            NEW(memory, Envoy__Config__Endpoint__V3__LbEndpoint,
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT);
        lb_endpoint->host_identifier_case =
            ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
        lb_endpoint->endpoint = host;
        lb_endpoint->health_status = endpoint->health;
        if (endpoint->weight > 0)
            lb_endpoint->load_balancing_weight = uint32_value(memory, endpoint->weight);
        locality->lb_endpoints[locality->n_lb_endpoints++] = lb_endpoint;
        locality->load_balancing_weight->value += endpoint->weight;
    }
    return assignment;
}

route_message *route_to(pool *memory, const char *path, bool exact, const char *cluster)
{
    Envoy__Config__Route__V3__RouteMatch *match = NEW(memory, Envoy__Config__Route__V3__RouteMatch,
                                                      ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    if (exact) {
        match->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH;
        match->path = pool_text(memory, path);
    } else {
        match->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
        match->prefix = pool_text(memory, path);
    }
    Envoy__Config__Route__V3__RouteAction *action =
        NEW(memory, Envoy__Config__Route__V3__RouteAction,
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    action->cluster_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    action->cluster = pool_text(memory, cluster);
    route_message *route = NEW(memory, route_message, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    route->match = match;
    route->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    route->route = action;
    return route;
}

void add_header(pool *memory, route_message *route, header_matcher_message *header)
{
    Envoy__Config__Route__V3__RouteMatch *match = route->match;
    header_matcher_message **headers =
        pool_alloc(memory, (match->n_headers + 1) * sizeof(*headers));
    if (match->n_headers > 0)
        memcpy(headers, match->headers, match->n_headers * sizeof(*headers));
    headers[match->n_headers++] = header;
    match->headers = headers;
}

header_matcher_message *header_string(pool *memory, const char *name, string_kind kind,
                                      const char *value)
{
    header_matcher_message *matcher =
        NEW(memory, header_matcher_message, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    matcher->name = pool_text(memory, name);
    Envoy__Type__Matcher__V3__StringMatcher *string =
        NEW(memory, Envoy__Type__Matcher__V3__StringMatcher,
            ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    switch (kind) {
    case EXACT:
        string->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
        string->exact = pool_text(memory, value);
        break;
    case PREFIX:
        string->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
        string->prefix = pool_text(memory, value);
        break;
    case SUFFIX:
        string->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX;
        string->suffix = pool_text(memory, value);
        break;
    case CONTAINS:
        string->match_pattern_case =
            ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS;
        string->contains = pool_text(memory, value);
        break;
    }
    matcher->header_match_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH;
    matcher->string_match = string;
    return matcher;
}

header_matcher_message *header_present(pool *memory, const char *name, bool present)
{
    header_matcher_message *matcher =
        NEW(memory, header_matcher_message, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    matcher->name = pool_text(memory, name);
    matcher->header_match_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
    matcher->present_match = present;
    return matcher;
}

void set_weighted(pool *memory, route_message *route, const char *const *names,
                  const uint32_t *weights, size_t count)
{
    Envoy__Config__Route__V3__WeightedCluster *weighted =
        NEW(memory, Envoy__Config__Route__V3__WeightedCluster,
            ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__INIT);
    weighted->n_clusters = count;
    weighted->clusters = pool_alloc(memory, count * sizeof(*weighted->clusters));
    for (size_t i = 0; i < count; i++) {
        Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *weight =
            NEW(memory, Envoy__Config__Route__V3__WeightedCluster__ClusterWeight,
                ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
        weight->name = pool_text(memory, names[i]);
        weight->weight = uint32_value(memory, weights[i]);
        weighted->clusters[i] = weight;
    }
    route->route->cluster_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
    route->route->weighted_clusters = weighted;
}

virtual_host_message *virtual_host(pool *memory, const char *name, const char *const *domains,
                                   size_t domain_count, route_message *const *routes,
                                   size_t route_count)
{
    virtual_host_message *host =
        NEW(memory, virtual_host_message, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    host->name = pool_text(memory, name);
    host->n_domains = domain_count;
    host->domains = pool_alloc(memory, domain_count * sizeof(char *));
    for (size_t i = 0; i < domain_count; i++)
        host->domains[i] = pool_text(memory, domains[i]);
    host->n_routes = route_count;
    host->routes = pool_alloc(memory, route_count * sizeof(*host->routes));
    if (route_count > 0)
        memcpy(host->routes, routes, route_count * sizeof(*routes));
    return host;
}

virtual_host_message *service_host(pool *memory, const char *service, route_message *const *routes,
                                   size_t route_count)
{
    char qualified[128], any_port[128];
    snprintf(qualified, sizeof(qualified), "%s.default", service);
    snprintf(any_port, sizeof(any_port), "%s:*", service);
    const char *domains[] = {service, qualified, any_port};
    route_message *default_route = NULL;
    if (route_count == 0) {
        default_route = route_to(memory, "/", false, service);
        routes = &default_route;
        route_count = 1;
    }
    return virtual_host(memory, service, domains, 3, routes, route_count);
}

route_configuration_message *route_configuration(pool *memory, const char *name,
                                                 virtual_host_message *const *hosts, size_t count)
{
    route_configuration_message *configuration = NEW(
        memory, route_configuration_message, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
    configuration->name = pool_text(memory, name);
    configuration->n_virtual_hosts = count;
    configuration->virtual_hosts = pool_alloc(memory, count * sizeof(*hosts));
    if (count > 0)
        memcpy(configuration->virtual_hosts, hosts, count * sizeof(*hosts));
    return configuration;
}

listener_message *inbound_listener(pool *memory, uint32_t port, const char *cluster)
{
    route_message *local = route_to(memory, "/", false, cluster);
    const char *any[] = {"*"};
    virtual_host_message *host = virtual_host(memory, "inbound", any, 1, &local, 1);
    return socket_listener(
        memory, "inbound", "0.0.0.0", port, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND,
        http_manager(memory, "inbound", NULL, route_configuration(memory, "inbound", &host, 1)));
}
