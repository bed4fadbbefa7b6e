/*
 * translator.c — services, endpoints and routes as xDS v3 resources.
 *
 * Each resource is assembled from protobuf-c structs allocated in an arena
 * (one per resource, freed after packing), so building never has to track
 * ownership of the dozens of small nested messages; the packed bytes are the
 * only thing kept.
 */
#include "translator.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TYPE_PREFIX "type.googleapis.com/"

static const char *const type_urls[XDS_TYPE_COUNT] = {
    [XDS_SECRET] = TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret",
    [XDS_CLUSTER] = TYPE_PREFIX "envoy.config.cluster.v3.Cluster",
    [XDS_ENDPOINT] = TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
    [XDS_LISTENER] = TYPE_PREFIX "envoy.config.listener.v3.Listener",
    [XDS_ROUTE] = TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration",
};

const char *xds_type_url(xds_type type)
{
    return (unsigned)type < XDS_TYPE_COUNT ? type_urls[type] : "";
}

bool xds_type_from_url(const char *url, xds_type *out)
{
    for (int type = 0; type < XDS_TYPE_COUNT && url != NULL; type++) {
        if (strcmp(url, type_urls[type]) == 0) {
            *out = (xds_type)type;
            return true;
        }
    }
    return false;
}

void xds_version_text(uint64_t hash, char text[17])
{
    snprintf(text, 17, "%016llx", (unsigned long long)hash);
}

void xds_resource_list_clear(xds_resource_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].name);
        free(list->items[i].bytes);
    }
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

/* ---- an arena for the structs of one resource ---- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, size;
    max_align_t data[];
} arena_block;

typedef struct arena {
    arena_block *blocks;
    bool failed; /* an allocation failed: the resource is dropped */
} arena;

static void *arena_alloc(arena *pool, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_block *block = pool->blocks;
    if (block == NULL || block->size - block->used < size) {
        size_t capacity = size > 8192 ? size : 8192;
        block = malloc(sizeof(arena_block) + capacity);
        if (block == NULL) {
            pool->failed = true;
            static max_align_t sink[64]; /* keeps callers simple; the result is discarded */
            return memset(sink, 0, sizeof(sink) < size ? sizeof(sink) : size);
        }
        block->next = pool->blocks;
        block->used = 0;
        block->size = capacity;
        pool->blocks = block;
    }
    void *memory = (char *)block->data + block->used;
    block->used += size;
    return memset(memory, 0, size);
}

static void arena_free(arena *pool)
{
    while (pool->blocks != NULL) {
        arena_block *next = pool->blocks->next;
        free(pool->blocks);
        pool->blocks = next;
    }
}

static void *arena_copy(arena *pool, const void *initial, size_t size)
{
    void *memory = arena_alloc(pool, size);
    return pool->failed ? memory : memcpy(memory, initial, size);
}

#define NEW(pool, type, initial) ((type *)arena_copy((pool), &(type)initial, sizeof(type)))

static char *arena_text(arena *pool, const char *text)
{
    size_t length = strlen(text);
    char *copy = arena_alloc(pool, length + 1);
    memcpy(copy, text, pool->failed ? 0 : length);
    return copy;
}

static char *arena_printf(arena *pool, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(arena *pool, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    va_list again;
    va_copy(again, arguments);
    int length = vsnprintf(NULL, 0, format, arguments);
    va_end(arguments);
    char *text = arena_alloc(pool, (size_t)length + 1);
    if (!pool->failed)
        vsnprintf(text, (size_t)length + 1, format, again);
    va_end(again);
    return text;
}

/* ---- packing ---- */

static uint8_t *pack(const ProtobufCMessage *message, size_t *length)
{
    *length = protobuf_c_message_get_packed_size(message);
    uint8_t *bytes = malloc(*length ? *length : 1);
    if (bytes != NULL)
        protobuf_c_message_pack(message, bytes);
    return bytes;
}

/* message as an Any allocated in the arena. */
static Google__Protobuf__Any *arena_any(arena *pool, const ProtobufCMessage *message)
{
    Google__Protobuf__Any *any = NEW(pool, Google__Protobuf__Any, GOOGLE__PROTOBUF__ANY__INIT);
    any->type_url = arena_printf(pool, "%s%s", TYPE_PREFIX, message->descriptor->name);
    any->value.len = protobuf_c_message_get_packed_size(message);
    any->value.data = arena_alloc(pool, any->value.len ? any->value.len : 1);
    if (!pool->failed)
        protobuf_c_message_pack(message, any->value.data);
    return any;
}

/* Packs message as resource `name` of `type`, appends it to out, frees the arena. */
static int emit(arena *pool, xds_type type, const char *name, const ProtobufCMessage *message,
                xds_resource_list *out)
{
    int result = -1;
    if (!pool->failed) {
        xds_resource *grown = realloc(out->items, (out->count + 1) * sizeof(*grown));
        if (grown != NULL) {
            out->items = grown;
            xds_resource *resource = &grown[out->count];
            resource->type = type;
            resource->name = strdup(name);
            resource->bytes = pack(message, &resource->length);
            if (resource->name != NULL && resource->bytes != NULL) {
                resource->hash = XXH64(resource->bytes, resource->length, 0);
                out->count++;
                result = 0;
            } else {
                free(resource->name);
                free(resource->bytes);
            }
        }
    }
    arena_free(pool);
    return result;
}

/* ---- small messages ---- */

static Google__Protobuf__Duration *duration_ms(arena *pool, uint32_t milliseconds)
{
    Google__Protobuf__Duration *duration =
        NEW(pool, Google__Protobuf__Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    duration->seconds = milliseconds / 1000;
    duration->nanos = (int32_t)(milliseconds % 1000) * 1000000;
    return duration;
}

static Google__Protobuf__UInt32Value *uint32_value(arena *pool, uint32_t value)
{
    Google__Protobuf__UInt32Value *wrapper =
        NEW(pool, Google__Protobuf__UInt32Value, GOOGLE__PROTOBUF__UINT32_VALUE__INIT);
    wrapper->value = value;
    return wrapper;
}

/* ConfigSource { ads {} resource_api_version: V3 } */
static Envoy__Config__Core__V3__ConfigSource *ads_source(arena *pool)
{
    Envoy__Config__Core__V3__ConfigSource *source = NEW(
        pool, Envoy__Config__Core__V3__ConfigSource, ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT);
    source->config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    source->ads = NEW(pool, Envoy__Config__Core__V3__AggregatedConfigSource,
                      ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT);
    source->resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    return source;
}

static Envoy__Config__Core__V3__Address *socket_address(arena *pool, const char *host,
                                                        uint32_t port)
{
    Envoy__Config__Core__V3__SocketAddress *socket =
        NEW(pool, Envoy__Config__Core__V3__SocketAddress,
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT);
    socket->address = arena_text(pool, host);
    socket->port_specifier_case =
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    socket->port_value = port;
    Envoy__Config__Core__V3__Address *address =
        NEW(pool, Envoy__Config__Core__V3__Address, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
    address->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    address->socket_address = socket;
    return address;
}

/* ---- listeners ---- */

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    connection_manager;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter http_filter;

/* An HttpConnectionManager ending with the router filter; routes come from
 * RDS `route_name`, or inline when route_config is not NULL. */
static connection_manager *http_manager(arena *pool, const char *stat_prefix,
                                        const char *route_name,
                                        Envoy__Config__Route__V3__RouteConfiguration *route_config)
{
    connection_manager *manager = NEW(
        pool, connection_manager,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT);
    manager->stat_prefix = arena_text(pool, stat_prefix);
    if (route_config != NULL) {
        manager->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG;
        manager->route_config = route_config;
    } else {
        Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            NEW(pool, Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds,
                ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT);
        rds->config_source = ads_source(pool);
        rds->route_config_name = arena_text(pool, route_name);
        manager->route_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
        manager->rds = rds;
    }
    Envoy__Extensions__Filters__Http__Router__V3__Router router =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    http_filter *filter =
        NEW(pool, http_filter,
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__INIT);
    filter->name = arena_text(pool, "envoy.filters.http.router");
    filter->config_type_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    filter->typed_config = arena_any(pool, &router.base);
    manager->n_http_filters = 1;
    manager->http_filters = arena_alloc(pool, sizeof(http_filter *));
    manager->http_filters[0] = filter;
    return manager;
}

/* Listener with one filter chain holding the connection manager. */
static int emit_socket_listener(arena *pool, const char *name, const char *host, uint32_t port,
                                Envoy__Config__Core__V3__TrafficDirection direction,
                                connection_manager *manager, xds_resource_list *out)
{
    Envoy__Config__Listener__V3__Filter *filter =
        NEW(pool, Envoy__Config__Listener__V3__Filter, ENVOY__CONFIG__LISTENER__V3__FILTER__INIT);
    filter->name = arena_text(pool, "envoy.filters.network.http_connection_manager");
    filter->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    filter->typed_config = arena_any(pool, &manager->base);
    Envoy__Config__Listener__V3__FilterChain *chain =
        NEW(pool, Envoy__Config__Listener__V3__FilterChain,
            ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT);
    chain->n_filters = 1;
    chain->filters = arena_alloc(pool, sizeof(filter));
    chain->filters[0] = filter;
    chain->name = arena_text(pool, name);
    Envoy__Config__Listener__V3__Listener listener = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    listener.name = arena_text(pool, name);
    listener.address = socket_address(pool, host, port);
    listener.traffic_direction = direction;
    listener.n_filter_chains = 1;
    listener.filter_chains = arena_alloc(pool, sizeof(chain));
    listener.filter_chains[0] = chain;
    return emit(pool, XDS_LISTENER, name, &listener.base, out);
}

/* ---- routes ---- */

char *translator_subset_cluster_name(const char *service, const model_labels *subset)
{
    size_t length = strlen(service) + 2;
    for (size_t i = 0; i < subset->count; i++)
        length += strlen(subset->items[i].key) + strlen(subset->items[i].value) + 2;
    char *name = malloc(length);
    if (name == NULL)
        return NULL;
    size_t used = (size_t)snprintf(name, length, "%s|", service);
    for (size_t i = 0; i < subset->count; i++)
        used += (size_t)snprintf(name + used, length - used, "%s%s=%s", i ? "," : "",
                                 subset->items[i].key, subset->items[i].value);
    return name;
}

static char *arena_subset_name(arena *pool, const char *service, const model_labels *subset)
{
    char *name = translator_subset_cluster_name(service, subset);
    if (name == NULL) {
        pool->failed = true;
        return arena_text(pool, "");
    }
    char *copy = arena_text(pool, name);
    free(name);
    return copy;
}

/* Appends name and a comma to text (used bytes of size, NUL-terminated). The
 * retry condition names all fit; one that would not is left out. */
static void retry_on_append(char *text, size_t size, size_t *used, const char *name)
{
    size_t length = strlen(name);
    if (length + 1 >= size - *used)
        return;
    memcpy(text + *used, name, length);
    *used += length;
    text[(*used)++] = ',';
    text[*used] = '\0';
}

/* retry_on for the service's protocol: gRPC clients understand gRPC status
 * names, HTTP proxies the HTTP conditions. */
static char *retry_on(arena *pool, uint32_t conditions, model_protocol protocol)
{
    char text[160] = "";
    size_t length = 0;
    if (protocol == MODEL_PROTOCOL_GRPC) {
        if (conditions & MODEL_RETRY_ON_5XX)
            retry_on_append(text, sizeof(text), &length, "internal");
        if (conditions & (MODEL_RETRY_ON_5XX | MODEL_RETRY_ON_GATEWAY_ERROR |
                          MODEL_RETRY_ON_CONNECT_FAILURE | MODEL_RETRY_ON_RESET))
            retry_on_append(text, sizeof(text), &length, "unavailable");
    } else {
        static const struct {
            uint32_t bit;
            const char *name;
        } names[] = {{MODEL_RETRY_ON_5XX, "5xx"},
                     {MODEL_RETRY_ON_GATEWAY_ERROR, "gateway-error"},
                     {MODEL_RETRY_ON_CONNECT_FAILURE, "connect-failure"},
                     {MODEL_RETRY_ON_RESET, "reset"},
                     {MODEL_RETRY_ON_RETRIABLE_STATUS_CODES, "retriable-status-codes"}};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (conditions & names[i].bit)
                retry_on_append(text, sizeof(text), &length, names[i].name);
        }
    }
    if (length > 0)
        text[length - 1] = '\0';
    return arena_text(pool, text);
}

static Envoy__Config__Route__V3__RetryPolicy *
retry_policy(arena *pool, const model_retry_policy *retries, model_protocol protocol)
{
    Envoy__Config__Route__V3__RetryPolicy *policy = NEW(
        pool, Envoy__Config__Route__V3__RetryPolicy, ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__INIT);
    policy->retry_on = retry_on(pool, retries->on, protocol);
    policy->num_retries = uint32_value(pool, retries->attempts);
    if (retries->per_try_timeout_ms)
        policy->per_try_timeout = duration_ms(pool, retries->per_try_timeout_ms);
    if (retries->status_code_count > 0 && protocol != MODEL_PROTOCOL_GRPC) {
        policy->n_retriable_status_codes = retries->status_code_count;
        policy->retriable_status_codes =
            arena_alloc(pool, retries->status_code_count * sizeof(uint32_t));
        if (!pool->failed)
            memcpy(policy->retriable_status_codes, retries->status_codes,
                   retries->status_code_count * sizeof(uint32_t));
    }
    if (retries->backoff_base_ms || retries->backoff_max_ms) {
        Envoy__Config__Route__V3__RetryPolicy__RetryBackOff *backoff =
            NEW(pool, Envoy__Config__Route__V3__RetryPolicy__RetryBackOff,
                ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_BACK_OFF__INIT);
        backoff->base_interval =
            duration_ms(pool, retries->backoff_base_ms ? retries->backoff_base_ms : 25);
        if (retries->backoff_max_ms)
            backoff->max_interval = duration_ms(pool, retries->backoff_max_ms);
        policy->retry_back_off = backoff;
    }
    return policy;
}

static Envoy__Config__Route__V3__HeaderMatcher *header_matcher(arena *pool,
                                                               const model_header_match *match)
{
    Envoy__Config__Route__V3__HeaderMatcher *matcher =
        NEW(pool, Envoy__Config__Route__V3__HeaderMatcher,
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    matcher->name = arena_text(pool, match->name);
    if (match->kind == MODEL_HEADER_PRESENT) {
        matcher->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
        matcher->present_match = true;
        return matcher;
    }
    Envoy__Type__Matcher__V3__StringMatcher *string =
        NEW(pool, Envoy__Type__Matcher__V3__StringMatcher,
            ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
    if (match->kind == MODEL_HEADER_EXACT) {
        string->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
        string->exact = arena_text(pool, match->value);
    } else {
        string->match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
        string->prefix = arena_text(pool, match->value);
    }
    matcher->header_match_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH;
    matcher->string_match = string;
    return matcher;
}

/* A route for one rule (rule NULL: the default route to the whole service). */
static Envoy__Config__Route__V3__Route *route(arena *pool, const model_service *service,
                                              const model_route_rule *rule)
{
    Envoy__Config__Route__V3__RouteMatch *match = NEW(pool, Envoy__Config__Route__V3__RouteMatch,
                                                      ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    if (rule != NULL && rule->path_match == MODEL_PATH_EXACT) {
        match->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH;
        match->path = arena_text(pool, rule->path);
    } else {
        match->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
        match->prefix = arena_text(
            pool, rule != NULL && rule->path_match == MODEL_PATH_PREFIX ? rule->path : "/");
    }
    if (rule != NULL && rule->header_count > 0) {
        match->n_headers = rule->header_count;
        match->headers = arena_alloc(pool, rule->header_count * sizeof(*match->headers));
        for (size_t h = 0; h < rule->header_count && !pool->failed; h++)
            match->headers[h] = header_matcher(pool, &rule->headers[h]);
    }
    Envoy__Config__Route__V3__RouteAction *action = NEW(
        pool, Envoy__Config__Route__V3__RouteAction, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    if (rule != NULL && rule->split_count > 0) {
        Envoy__Config__Route__V3__WeightedCluster *weighted =
            NEW(pool, Envoy__Config__Route__V3__WeightedCluster,
                ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__INIT);
        weighted->n_clusters = rule->split_count;
        weighted->clusters = arena_alloc(pool, rule->split_count * sizeof(*weighted->clusters));
        for (size_t s = 0; s < rule->split_count && !pool->failed; s++) {
            Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *weight =
                NEW(pool, Envoy__Config__Route__V3__WeightedCluster__ClusterWeight,
                    ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
            weight->name = arena_subset_name(pool, service->name, &rule->splits[s].subset);
            weight->weight = uint32_value(pool, rule->splits[s].weight);
            weighted->clusters[s] = weight;
        }
        action->cluster_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
        action->weighted_clusters = weighted;
    } else {
        action->cluster_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
        action->cluster = arena_text(pool, service->name);
    }
    if (rule != NULL && rule->timeout_ms > 0) {
        action->timeout = duration_ms(pool, rule->timeout_ms);
        /* gRPC clients take the deadline from max_stream_duration. */
        Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *limit =
            NEW(pool, Envoy__Config__Route__V3__RouteAction__MaxStreamDuration,
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__MAX_STREAM_DURATION__INIT);
        limit->max_stream_duration = duration_ms(pool, rule->timeout_ms);
        action->max_stream_duration = limit;
    }
    if (rule != NULL && rule->has_retries)
        action->retry_policy = retry_policy(pool, &rule->retries, service->protocol);
    Envoy__Config__Route__V3__Route *built =
        NEW(pool, Envoy__Config__Route__V3__Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    built->match = match;
    built->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    built->route = action;
    return built;
}

/* True when a rule sends every request of the service somewhere already. */
static bool rule_matches_everything(const model_route_rule *rule)
{
    return (rule->path_match == MODEL_PATH_ANY ||
            (rule->path_match == MODEL_PATH_PREFIX && strcmp(rule->path, "/") == 0)) &&
           rule->header_count == 0;
}

/* The virtual host of a service: its rules, then (unless a rule already
 * matches everything) a default route to the whole service. */
static Envoy__Config__Route__V3__VirtualHost *virtual_host(arena *pool,
                                                           const translator_service *input)
{
    const model_service *service = input->service;
    const char *space = service->namespace_name ? service->namespace_name : "default";
    Envoy__Config__Route__V3__VirtualHost *host = NEW(pool, Envoy__Config__Route__V3__VirtualHost,
                                                      ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    host->name = arena_text(pool, service->name);
    host->n_domains = 3;
    host->domains = arena_alloc(pool, 3 * sizeof(char *));
    host->domains[0] = arena_text(pool, service->name);
    host->domains[1] = arena_printf(pool, "%s.%s", service->name, space);
    host->domains[2] = arena_printf(pool, "%s%s", service->name, ":*");
    size_t rules = input->routes ? input->routes->rule_count : 0;
    bool needs_default = rules == 0 || !rule_matches_everything(&input->routes->rules[rules - 1]);
    host->n_routes = rules + (needs_default ? 1 : 0);
    host->routes = arena_alloc(pool, host->n_routes * sizeof(*host->routes));
    for (size_t r = 0; r < rules && !pool->failed; r++)
        host->routes[r] = route(pool, service, &input->routes->rules[r]);
    if (needs_default && !pool->failed)
        host->routes[rules] = route(pool, service, NULL);
    return host;
}

/* ---- clusters and endpoints ---- */

static Envoy__Config__Cluster__V3__Cluster__LbPolicy lb_policy(model_lb_policy policy)
{
    switch (policy) {
    case MODEL_LB_LEAST_REQUEST:
        return ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST;
    case MODEL_LB_RANDOM:
        return ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM;
    case MODEL_LB_RING_HASH:
        return ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH;
    default:
        return ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN;
    }
}

static int emit_cluster(arena *pool, const char *name, const model_service *service,
                        xds_resource_list *out)
{
    Envoy__Config__Cluster__V3__Cluster cluster = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    cluster.name = arena_text(pool, name);
    cluster.cluster_discovery_type_case =
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    cluster.type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
    Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *eds =
        NEW(pool, Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig,
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT);
    eds->eds_config = ads_source(pool);
    eds->service_name = arena_text(pool, name);
    cluster.eds_cluster_config = eds;
    cluster.connect_timeout = duration_ms(pool, service ? service->connect_timeout_ms : 1000);
    if (service == NULL) {
        return emit(pool, XDS_CLUSTER, name, &cluster.base, out);
    }
    cluster.lb_policy = lb_policy(service->lb_policy);
    if (service->lb_policy == MODEL_LB_RING_HASH) {
        Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *ring =
            NEW(pool, Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig,
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__INIT);
        ring->hash_function =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__XX_HASH;
        cluster.lb_config_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG;
        cluster.ring_hash_lb_config = ring;
    } else if (service->lb_policy == MODEL_LB_LEAST_REQUEST) {
        Envoy__Config__Cluster__V3__Cluster__LeastRequestLbConfig *least =
            NEW(pool, Envoy__Config__Cluster__V3__Cluster__LeastRequestLbConfig,
                ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LEAST_REQUEST_LB_CONFIG__INIT);
        least->choice_count = uint32_value(pool, 2);
        cluster.lb_config_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG;
        cluster.least_request_lb_config = least;
    }
    if (service->has_circuit_breaker) {
        const model_circuit_breaker *limits = &service->circuit_breaker;
        Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *thresholds =
            NEW(pool, Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds,
                ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT);
        thresholds->priority = ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT;
        if (limits->max_connections)
            thresholds->max_connections = uint32_value(pool, limits->max_connections);
        if (limits->max_pending_requests)
            thresholds->max_pending_requests = uint32_value(pool, limits->max_pending_requests);
        if (limits->max_requests)
            thresholds->max_requests = uint32_value(pool, limits->max_requests);
        if (limits->max_retries)
            thresholds->max_retries = uint32_value(pool, limits->max_retries);
        Envoy__Config__Cluster__V3__CircuitBreakers *breakers =
            NEW(pool, Envoy__Config__Cluster__V3__CircuitBreakers,
                ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT);
        breakers->n_thresholds = 1;
        breakers->thresholds = arena_alloc(pool, sizeof(thresholds));
        breakers->thresholds[0] = thresholds;
        cluster.circuit_breakers = breakers;
    }
    if (service->has_outlier_detection) {
        const model_outlier_detection *model = &service->outlier_detection;
        Envoy__Config__Cluster__V3__OutlierDetection *outlier =
            NEW(pool, Envoy__Config__Cluster__V3__OutlierDetection,
                ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT);
        outlier->consecutive_5xx = uint32_value(pool, model->consecutive_5xx);
        outlier->interval = duration_ms(pool, model->interval_ms);
        outlier->base_ejection_time = duration_ms(pool, model->base_ejection_time_ms);
        outlier->max_ejection_percent = uint32_value(pool, model->max_ejection_percent);
        cluster.outlier_detection = outlier;
    }
    return emit(pool, XDS_CLUSTER, name, &cluster.base, out);
}

/* ClusterLoadAssignment: the endpoints that match subset (NULL: all), healthy
 * or draining, grouped by zone in the order they come. */
static int emit_load_assignment(arena *pool, const char *name, const model_endpoint *endpoints,
                                size_t count, const model_labels *subset, xds_resource_list *out)
{
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment assignment =
        ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    assignment.cluster_name = arena_text(pool, name);
    assignment.endpoints = arena_alloc(pool, (count ? count : 1) * sizeof(*assignment.endpoints));
    for (size_t i = 0; i < count && !pool->failed; i++) {
        const model_endpoint *endpoint = &endpoints[i];
        if (endpoint->health == MODEL_HEALTH_UNHEALTHY ||
            (subset != NULL && !model_labels_match(&endpoint->labels, subset)))
            continue;
        const char *zone = endpoint->zone ? endpoint->zone : "";
        Envoy__Config__Endpoint__V3__LocalityLbEndpoints *locality = NULL;
        for (size_t l = 0; l < assignment.n_endpoints && locality == NULL; l++) {
            if (strcmp(assignment.endpoints[l]->locality->zone, zone) == 0)
                locality = assignment.endpoints[l];
        }
        if (locality == NULL) {
            locality = NEW(pool, Envoy__Config__Endpoint__V3__LocalityLbEndpoints,
                           ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT);
            locality->locality = NEW(pool, Envoy__Config__Core__V3__Locality,
                                     ENVOY__CONFIG__CORE__V3__LOCALITY__INIT);
            locality->locality->zone = arena_text(pool, zone);
            locality->lb_endpoints = arena_alloc(pool, count * sizeof(*locality->lb_endpoints));
            locality->load_balancing_weight = uint32_value(pool, 0);
            assignment.endpoints[assignment.n_endpoints++] = locality;
        }
        Envoy__Config__Endpoint__V3__Endpoint *host =
            NEW(pool, Envoy__Config__Endpoint__V3__Endpoint,
                ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT);
        host->address = socket_address(pool, endpoint->address, endpoint->port);
        Envoy__Config__Endpoint__V3__LbEndpoint *lb_endpoint =
            NEW(pool, Envoy__Config__Endpoint__V3__LbEndpoint,
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT);
        lb_endpoint->host_identifier_case =
            ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
        lb_endpoint->endpoint = host;
        lb_endpoint->health_status = endpoint->health == MODEL_HEALTH_DRAINING
                                         ? ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING
                                         : ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY;
        lb_endpoint->load_balancing_weight = uint32_value(pool, endpoint->weight);
        locality->lb_endpoints[locality->n_lb_endpoints++] = lb_endpoint;
        /* Clients that weigh localities (gRPC) drop a locality without weight. */
        locality->load_balancing_weight->value += endpoint->weight;
    }
    return emit(pool, XDS_ENDPOINT, name, &assignment.base, out);
}

/* ---- a service ---- */

int translate_service(const translator_service *input, xds_resource_list *out)
{
    const model_service *service = input->service;
    arena pool = {0};

    /* Clusters: the whole service, then each subset a split refers to (once). */
    if (emit_cluster(&pool, service->name, service, out) != 0)
        return -1;
    if (emit_load_assignment(&pool, service->name, input->endpoints, input->endpoint_count, NULL,
                             out) != 0)
        return -1;
    size_t rules = input->routes ? input->routes->rule_count : 0;
    for (size_t r = 0; r < rules; r++) {
        const model_route_rule *rule = &input->routes->rules[r];
        for (size_t s = 0; s < rule->split_count; s++) {
            char *name = translator_subset_cluster_name(service->name, &rule->splits[s].subset);
            if (name == NULL)
                return -1;
            bool seen = false;
            for (size_t i = 0; i < out->count && !seen; i++)
                seen = out->items[i].type == XDS_CLUSTER && strcmp(out->items[i].name, name) == 0;
            int result = 0;
            if (!seen)
                result = emit_cluster(&pool, name, service, out) == 0 &&
                                 emit_load_assignment(&pool, name, input->endpoints,
                                                      input->endpoint_count,
                                                      &rule->splits[s].subset, out) == 0
                             ? 0
                             : -1;
            free(name);
            if (result != 0)
                return -1;
        }
    }

    /* The API listener proxyless gRPC asks for as xds:///S. */
    Envoy__Config__Listener__V3__ApiListener *api =
        NEW(&pool, Envoy__Config__Listener__V3__ApiListener,
            ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT);
    api->api_listener =
        arena_any(&pool, &http_manager(&pool, service->name, service->name, NULL)->base);
    Envoy__Config__Listener__V3__Listener listener = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
    listener.name = arena_text(&pool, service->name);
    listener.api_listener = api;
    if (emit(&pool, XDS_LISTENER, service->name, &listener.base, out) != 0)
        return -1;

    Envoy__Config__Route__V3__RouteConfiguration configuration =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    configuration.name = arena_text(&pool, service->name);
    configuration.n_virtual_hosts = 1;
    configuration.virtual_hosts = arena_alloc(&pool, sizeof(*configuration.virtual_hosts));
    configuration.virtual_hosts[0] = virtual_host(&pool, input);
    return emit(&pool, XDS_ROUTE, service->name, &configuration.base, out);
}

/* ---- the mesh's trust ---- */

static Envoy__Config__Core__V3__DataSource *inline_text(arena *pool, const char *text)
{
    Envoy__Config__Core__V3__DataSource *source =
        NEW(pool, Envoy__Config__Core__V3__DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
    source->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    source->inline_string = arena_text(pool, text);
    return source;
}

int translate_root_secret(const char *roots_pem, const char *crl_pem, xds_resource_list *out)
{
    arena pool = {0};
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *validation =
        NEW(&pool, Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
    validation->trusted_ca = inline_text(&pool, roots_pem);
    if (crl_pem != NULL && crl_pem[0] != '\0')
        validation->crl = inline_text(&pool, crl_pem);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret secret =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    secret.name = arena_text(&pool, XDS_ROOT_SECRET);
    secret.type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
    secret.validation_context = validation;
    return emit(&pool, XDS_SECRET, XDS_ROOT_SECRET, &secret.base, out);
}

/* ---- a proxy ---- */

int translate_proxy(const proxy_profile *profile, const translator_service *callable,
                    size_t callable_count, xds_resource_list *out)
{
    arena pool = {0};
    char inbound_cluster[32];
    snprintf(inbound_cluster, sizeof(inbound_cluster), "inbound|%u", profile->app_port);

    /* The application's side: inbound cluster and its one endpoint. */
    if (emit_cluster(&pool, inbound_cluster, NULL, out) != 0)
        return -1;
    model_endpoint local;
    model_endpoint_init(&local);
    local.address = "127.0.0.1";
    local.port = (uint16_t)profile->app_port;
    local.zone = "";
    if (emit_load_assignment(&pool, inbound_cluster, &local, 1, NULL, out) != 0)
        return -1;

    /* outbound: what the application calls on 127.0.0.1:<outbound port>. */
    if (emit_socket_listener(&pool, "outbound", "127.0.0.1", profile->outbound_port,
                             ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND,
                             http_manager(&pool, "outbound", "outbound", NULL), out) != 0)
        return -1;

    /* inbound: what other proxies call, forwarded to the application. */
    Envoy__Config__Route__V3__Route *local_route =
        NEW(&pool, Envoy__Config__Route__V3__Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    local_route->match = NEW(&pool, Envoy__Config__Route__V3__RouteMatch,
                             ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    local_route->match->path_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    local_route->match->prefix = arena_text(&pool, "/");
    local_route->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    local_route->route = NEW(&pool, Envoy__Config__Route__V3__RouteAction,
                             ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    local_route->route->cluster_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    local_route->route->cluster = arena_text(&pool, inbound_cluster);
    Envoy__Config__Route__V3__VirtualHost *local_host = NEW(
        &pool, Envoy__Config__Route__V3__VirtualHost, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    local_host->name = arena_text(&pool, "inbound");
    local_host->n_domains = 1;
    local_host->domains = arena_alloc(&pool, sizeof(char *));
    local_host->domains[0] = arena_text(&pool, "*");
    local_host->n_routes = 1;
    local_host->routes = arena_alloc(&pool, sizeof(local_route));
    local_host->routes[0] = local_route;
    Envoy__Config__Route__V3__RouteConfiguration *inbound_routes =
        NEW(&pool, Envoy__Config__Route__V3__RouteConfiguration,
            ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
    inbound_routes->name = arena_text(&pool, "inbound");
    inbound_routes->n_virtual_hosts = 1;
    inbound_routes->virtual_hosts = arena_alloc(&pool, sizeof(local_host));
    inbound_routes->virtual_hosts[0] = local_host;
    if (emit_socket_listener(&pool, "inbound", "0.0.0.0", profile->inbound_port,
                             ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND,
                             http_manager(&pool, "inbound", NULL, inbound_routes), out) != 0)
        return -1;

    /* outbound routes: a virtual host per service the proxy may call. */
    Envoy__Config__Route__V3__RouteConfiguration configuration =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    configuration.name = arena_text(&pool, "outbound");
    configuration.n_virtual_hosts = callable_count;
    configuration.virtual_hosts = arena_alloc(&pool, (callable_count ? callable_count : 1) *
                                                         sizeof(*configuration.virtual_hosts));
    for (size_t i = 0; i < callable_count && !pool.failed; i++)
        configuration.virtual_hosts[i] = virtual_host(&pool, &callable[i]);
    return emit(&pool, XDS_ROUTE, "outbound", &configuration.base, out);
}
