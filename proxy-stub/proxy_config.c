/*
 * proxy_config.c — builds atrium-proxy's configuration snapshot from the xDS
 * resources it holds: decodes and validates every Listener,
 * RouteConfiguration, Cluster and ClusterLoadAssignment, resolves the names
 * they refer to into pointers, indexes each route table's domains for the
 * per-request virtual host lookup, and precomputes each cluster's weighted
 * round-robin schedule.
 *
 * Ownership: a snapshot owns everything it points to. All of it except the
 * copy of the resource set lives in one arena that belongs to the snapshot and
 * is freed whole by the last release; the resource set copy is freed with
 * proxy_resource_set_clear. Decoded protobuf messages are temporary: each is
 * freed before the function that decoded it returns.
 *
 * Validation is all or nothing: the first resource that cannot be applied
 * fails the whole build with an error naming the resource ("Cluster \"x\": ...")
 * and, inside it, the field (a virtual host, a route, an endpoint) and what
 * about it is not supported. That text is what atriumd's users read as the
 * NACK's error_detail. Fields our proto subset does not declare arrive as
 * unknown fields; where ignoring one would change behaviour (a match condition,
 * a path regex, a redirect action) the build names it and fails instead.
 */
#include "proxy_config.h"

#include "any.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Config__Listener__V3__Listener listener_message;
typedef Envoy__Config__Listener__V3__FilterChain filter_chain_message;
typedef Envoy__Config__Listener__V3__Filter network_filter_message;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    connection_manager_message;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter
    http_filter_message;
typedef Envoy__Config__Route__V3__RouteConfiguration route_configuration_message;
typedef Envoy__Config__Route__V3__VirtualHost virtual_host_message;
typedef Envoy__Config__Route__V3__Route route_message;
typedef Envoy__Config__Route__V3__RouteMatch route_match_message;
typedef Envoy__Config__Route__V3__RouteAction route_action_message;
typedef Envoy__Config__Route__V3__HeaderMatcher header_matcher_message;
typedef Envoy__Config__Route__V3__RetryPolicy retry_policy_message;
typedef Envoy__Type__Matcher__V3__StringMatcher string_matcher_message;
typedef Envoy__Config__Cluster__V3__Cluster cluster_message;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment load_assignment_message;
typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints locality_endpoints_message;
typedef Envoy__Config__Endpoint__V3__LbEndpoint load_balanced_endpoint_message;
typedef Envoy__Config__Core__V3__Address address_message;
typedef Envoy__Config__Core__V3__ConfigSource config_source_message;
typedef Google__Protobuf__Duration duration_message;

#define HTTP_CONNECTION_MANAGER_NAME "envoy.filters.network.http_connection_manager"
#define ROUTER_FILTER_NAME           "envoy.filters.http.router"

/* Envoy's defaults for fields left unset. */
#define DEFAULT_ROUTE_TIMEOUT_MS   15000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_RETRY_COUNT        1

/* The longest weighted round-robin schedule; weights whose sum is larger are
 * scaled down to fit (each healthy endpoint keeps at least one slot). */
#define SCHEDULE_MAX_LENGTH 4096

/* ---- resource types ---- */

static const char *const type_urls[PROXY_RESOURCE_TYPE_COUNT] = {
    [PROXY_RESOURCE_CLUSTER] = ANY_TYPE_URL_PREFIX "envoy.config.cluster.v3.Cluster",
    [PROXY_RESOURCE_ENDPOINT] =
        ANY_TYPE_URL_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
    [PROXY_RESOURCE_LISTENER] = ANY_TYPE_URL_PREFIX "envoy.config.listener.v3.Listener",
    [PROXY_RESOURCE_ROUTE] = ANY_TYPE_URL_PREFIX "envoy.config.route.v3.RouteConfiguration",
};

/* How errors name each type. */
static const char *const type_names[PROXY_RESOURCE_TYPE_COUNT] = {
    [PROXY_RESOURCE_CLUSTER] = "Cluster",
    [PROXY_RESOURCE_ENDPOINT] = "ClusterLoadAssignment",
    [PROXY_RESOURCE_LISTENER] = "Listener",
    [PROXY_RESOURCE_ROUTE] = "RouteConfiguration",
};

const char *proxy_resource_type_url(proxy_resource_type type)
{
    return (unsigned)type < PROXY_RESOURCE_TYPE_COUNT ? type_urls[type] : "";
}

bool proxy_resource_type_from_url(const char *url, proxy_resource_type *out)
{
    for (int type = 0; url != NULL && type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        if (strcmp(url, type_urls[type]) == 0) {
            *out = (proxy_resource_type)type;
            return true;
        }
    }
    return false;
}

/* ---- resource sets ---- */

void proxy_resource_set_clear(proxy_resource_set *set)
{
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        for (size_t i = 0; i < set->counts[type]; i++) {
            free(set->items[type][i].name);
            free(set->items[type][i].version);
            free(set->items[type][i].bytes);
        }
        free(set->items[type]);
        set->items[type] = NULL;
        set->counts[type] = 0;
    }
}

/* ---- the snapshot's arena ---- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t size;
    max_align_t data[];
} arena_block;

typedef struct arena {
    arena_block *blocks; /* the first is the one being filled */
} arena;

#define ARENA_BLOCK_SIZE 16384

/* size zeroed bytes that live as long as the arena, or NULL when out of
 * memory. Never NULL for size 0. */
static void *arena_alloc(arena *memory, size_t size)
{
    const size_t unit = sizeof(max_align_t);
    if (size > SIZE_MAX / 2)
        return NULL;
    size = size == 0 ? unit : (size + unit - 1) / unit * unit;
    arena_block *block = memory->blocks;
    if (block == NULL || block->size - block->used < size) {
        size_t capacity = size > ARENA_BLOCK_SIZE ? size : ARENA_BLOCK_SIZE;
        arena_block *fresh = malloc(sizeof(arena_block) + capacity);
        if (fresh == NULL)
            return NULL;
        fresh->used = 0;
        fresh->size = capacity;
        if (block != NULL && capacity > ARENA_BLOCK_SIZE) {
            /* A large allocation gets its own block behind the current one,
             * which stays first for the small allocations that follow. */
            fresh->next = block->next;
            block->next = fresh;
        } else {
            fresh->next = block;
            memory->blocks = fresh;
        }
        block = fresh;
    }
    void *allocation = (char *)block->data + block->used;
    block->used += size;
    return memset(allocation, 0, size);
}

static void *arena_array(arena *memory, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / 2 / size)
        return NULL;
    return arena_alloc(memory, count * size);
}

#define ARENA_ARRAY(memory, count, type) ((type *)arena_array((memory), (count), sizeof(type)))

static char *arena_text_length(arena *memory, const char *text, size_t length)
{
    char *copy = arena_alloc(memory, length + 1);
    if (copy != NULL)
        memcpy(copy, text, length);
    return copy;
}

static char *arena_text(arena *memory, const char *text)
{
    return arena_text_length(memory, text, strlen(text));
}

static inline unsigned char ascii_lower(unsigned char character)
{
    return character >= 'A' && character <= 'Z' ? (unsigned char)(character + ('a' - 'A'))
                                                : character;
}

static char *arena_lower_text(arena *memory, const char *text)
{
    char *copy = arena_text(memory, text);
    for (char *at = copy; at != NULL && *at != '\0'; at++)
        *at = (char)ascii_lower((unsigned char)*at);
    return copy;
}

static void arena_free(arena *memory)
{
    while (memory->blocks != NULL) {
        arena_block *next = memory->blocks->next;
        free(memory->blocks);
        memory->blocks = next;
    }
}

/* What proxy_config_build allocates: the public snapshot first, so a
 * proxy_config pointer is also a pointer to its snapshot. */
typedef struct snapshot {
    proxy_config config;
    arena memory; /* everything config points to */
} snapshot;

static void snapshot_free(snapshot *built)
{
    arena_free(&built->memory);
    free(built);
}

/* ---- building: errors ---- */

typedef struct builder {
    proxy_config *config;
    const proxy_resource_set *resources; /* what the snapshot is built from */
    arena *memory;
    char *error;
    size_t error_size;
    const char *type_name; /* of the resource being built, NULL before the first */
    const char *name;      /* its name */
    char where[256];       /* the part of it being built, "" for the resource itself */
} builder;

/* Writes "<Type> \"<name>\": [<where>: ]<detail>" into the error. Returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(builder *build, const char *format, ...)
{
    if (build->error == NULL || build->error_size == 0)
        return -1;
    int used = 0;
    if (build->type_name != NULL)
        used = snprintf(build->error, build->error_size, "%s \"%s\": %s%s", build->type_name,
                        build->name != NULL ? build->name : "", build->where,
                        build->where[0] != '\0' ? ": " : "");
    if (used < 0 || (size_t)used >= build->error_size)
        return -1;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(build->error + used, build->error_size - (size_t)used, format, arguments);
    va_end(arguments);
    return -1;
}

static int out_of_memory(builder *build)
{
    return fail(build, "out of memory");
}

/* Starts building one resource: errors name it from now on. */
static void begin_resource(builder *build, proxy_resource_type type, const char *name)
{
    build->type_name = type_names[type];
    build->name = name;
    build->where[0] = '\0';
}

__attribute__((format(printf, 2, 3))) static void set_where(builder *build, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(build->where, sizeof(build->where), format, arguments);
    va_end(arguments);
}

/* Decodes a resource's bytes as descriptor's message, or fails. */
static ProtobufCMessage *decode(builder *build, const proxy_resource *resource,
                                const ProtobufCMessageDescriptor *descriptor)
{
    ProtobufCMessage *message =
        protobuf_c_message_unpack(descriptor, NULL, resource->length, resource->bytes);
    if (message == NULL)
        fail(build, "%zu bytes do not decode as %s", resource->length, descriptor->name);
    return message;
}

/* The name a resource is known by: the one it was received under, which must
 * agree with the one in the message (field names the message's field). */
static int resource_name(builder *build, const proxy_resource *resource, const char *field,
                         const char *in_message, const char **out)
{
    bool received = resource->name != NULL && resource->name[0] != '\0';
    if (received && in_message[0] != '\0' && strcmp(resource->name, in_message) != 0)
        return fail(build, "its %s is \"%s\": it must be the resource's name", field, in_message);
    *out = received ? resource->name : in_message;
    build->name = *out;
    if ((*out)[0] == '\0')
        return fail(build, "no name");
    return 0;
}

/* ---- building: small values ---- */

/* A field of the upstream message that our proto subset does not declare, so
 * protobuf-c keeps it as an unknown field. */
typedef struct upstream_field {
    uint32_t number;
    const char *name;
} upstream_field;

/* The name of the first of fields that message carries, or NULL. */
static const char *upstream_field_present(const ProtobufCMessage *message,
                                          const upstream_field *fields, size_t count)
{
    for (unsigned i = 0; i < message->n_unknown_fields; i++) {
        for (size_t field = 0; field < count; field++) {
            if (message->unknown_fields[i].tag == fields[field].number)
                return fields[field].name;
        }
    }
    return NULL;
}

#define UPSTREAM_FIELD_PRESENT(message, fields)                                                    \
    upstream_field_present(&(message)->base, (fields), sizeof(fields) / sizeof((fields)[0]))

static bool has_unknown_field(const ProtobufCMessage *message, uint32_t number)
{
    const upstream_field field = {number, ""};
    return upstream_field_present(message, &field, 1) != NULL;
}

/* The name of an enum value ("MAGLEV"), or its number as text in buffer. */
static const char *enum_name(const ProtobufCEnumDescriptor *descriptor, int value, char *buffer,
                             size_t size)
{
    const ProtobufCEnumValue *known = protobuf_c_enum_descriptor_get_value(descriptor, value);
    if (known != NULL)
        return known->name;
    snprintf(buffer, size, "%d", value);
    return buffer;
}

/* A Duration in milliseconds, rounded up so that a positive duration never
 * becomes 0 (which means "none" where it is a timeout). */
static int duration_milliseconds(builder *build, const char *field,
                                 const duration_message *duration, uint32_t *out)
{
    if (duration->seconds < 0 || duration->nanos < 0 || duration->nanos > 999999999)
        return fail(build, "%s (%lld s %d ns) is not a valid non-negative duration", field,
                    (long long)duration->seconds, (int)duration->nanos);
    uint64_t milliseconds = UINT64_MAX;
    if (duration->seconds <= (int64_t)(UINT32_MAX / 1000))
        milliseconds =
            (uint64_t)duration->seconds * 1000 + ((uint64_t)duration->nanos + 999999) / 1000000;
    if (milliseconds > UINT32_MAX)
        return fail(build, "%s (%lld s) is too long: at most %u ms", field,
                    (long long)duration->seconds, (unsigned)UINT32_MAX);
    *out = (uint32_t)milliseconds;
    return 0;
}

/* Whether a ConfigSource fetches over the proxy's own ADS stream: `ads`, or
 * `self` (field 5, not in our subset), as gRPC's xDS client also accepts. */
static bool fetched_over_ads(const config_source_message *source)
{
    return source != NULL &&
           (source->config_source_specifier_case ==
                ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS ||
            has_unknown_field(&source->base, 5));
}

/* Fills storage from numeric address text and a port; false when text is not
 * a numeric IPv4 or IPv6 address. */
static bool numeric_socket_address(const char *text, uint16_t port,
                                   struct sockaddr_storage *storage, socklen_t *length)
{
    memset(storage, 0, sizeof(*storage));
    struct sockaddr_in *ipv4 = (struct sockaddr_in *)storage;
    if (inet_pton(AF_INET, text, &ipv4->sin_addr) == 1) {
        ipv4->sin_family = AF_INET;
        ipv4->sin_port = htons(port);
        *length = sizeof(*ipv4);
        return true;
    }
    struct sockaddr_in6 *ipv6 = (struct sockaddr_in6 *)storage;
    if (inet_pton(AF_INET6, text, &ipv6->sin6_addr) == 1) {
        ipv6->sin6_family = AF_INET6;
        ipv6->sin6_port = htons(port);
        *length = sizeof(*ipv6);
        return true;
    }
    memset(storage, 0, sizeof(*storage));
    return false;
}

/* A socket address as text (numeric, into text[64]), port and sockaddr, or a
 * failure naming field. */
static int socket_address(builder *build, const char *field, const address_message *address,
                          char text[64], uint16_t *port, struct sockaddr_storage *storage,
                          socklen_t *storage_length)
{
    static const upstream_field other_addresses[] = {{2, "pipe"}, {3, "envoy_internal_address"}};
    static const upstream_field other_ports[] = {{4, "named_port"}};
    if (address == NULL)
        return fail(build, "no %s", field);
    if (address->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS) {
        const char *kind = UPSTREAM_FIELD_PRESENT(address, other_addresses);
        if (kind != NULL)
            return fail(build, "%s is a %s: only socket_address is supported", field, kind);
        return fail(build, "%s has no socket_address", field);
    }
    const Envoy__Config__Core__V3__SocketAddress *socket = address->socket_address;
    if (socket->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return fail(build, "%s: protocol UDP is not supported (TCP only)", field);
    if (strlen(socket->address) >= 64 ||
        !numeric_socket_address(socket->address, 0, storage, storage_length))
        return fail(build,
                    "%s \"%.64s\" is not a numeric IPv4 or IPv6 address (hostnames are not "
                    "resolved)",
                    field, socket->address);
    if (socket->port_specifier_case !=
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE) {
        if (UPSTREAM_FIELD_PRESENT(socket, other_ports) != NULL)
            return fail(build, "%s %s: named_port is not supported, only port_value", field,
                        socket->address);
        return fail(build, "%s %s has no port_value", field, socket->address);
    }
    if (socket->port_value == 0 || socket->port_value > 65535)
        return fail(build, "%s %s: port %u is out of range (1-65535)", field, socket->address,
                    (unsigned)socket->port_value);
    *port = (uint16_t)socket->port_value;
    numeric_socket_address(socket->address, *port, storage, storage_length);
    memcpy(text, socket->address, strlen(socket->address) + 1); /* < 64 bytes, checked above */
    return 0;
}

/* ---- clusters ---- */

static int compare_clusters(const void *left, const void *right)
{
    return strcmp(((const proxy_cluster *)left)->name, ((const proxy_cluster *)right)->name);
}

static proxy_cluster *find_cluster(const proxy_config *config, const char *name)
{
    size_t low = 0, high = config->cluster_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        int order = strcmp(name, config->clusters[middle].name);
        if (order == 0)
            return &config->clusters[middle];
        if (order < 0)
            high = middle;
        else
            low = middle + 1;
    }
    return NULL;
}

static int build_cluster(builder *build, const proxy_resource *resource,
                         const cluster_message *message, proxy_cluster *cluster)
{
    static const upstream_field custom_type[] = {{38, "cluster_type"}};
    char number[16];
    const char *name = NULL;
    if (resource_name(build, resource, "name", message->name, &name) != 0)
        return -1;
    if (message->cluster_discovery_type_case !=
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE) {
        if (UPSTREAM_FIELD_PRESENT(message, custom_type) != NULL)
            return fail(build, "cluster_type (a custom cluster type) is not supported: only "
                               "type EDS is");
        return fail(build, "type STATIC (the default) is not supported: only EDS is");
    }
    if (message->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
        return fail(build, "type %s is not supported: only EDS is",
                    enum_name(&envoy__config__cluster__v3__cluster__discovery_type__descriptor,
                              (int)message->type, number, sizeof(number)));
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *eds = message->eds_cluster_config;
    if (eds == NULL || eds->eds_config == NULL)
        return fail(build, "an EDS cluster needs eds_cluster_config.eds_config");
    if (!fetched_over_ads(eds->eds_config))
        return fail(build, "eds_cluster_config.eds_config is not ads: endpoints are only "
                           "fetched over ADS");
    if (eds->service_name[0] != '\0' && strcmp(eds->service_name, name) != 0)
        return fail(build,
                    "eds_cluster_config.service_name \"%s\" differs from the cluster's name: "
                    "not supported",
                    eds->service_name);
    switch (message->lb_policy) {
    /* All four are served as weighted round robin for now: LEAST_REQUEST and
     * RANDOM spread load like it, and RING_HASH loses only its session
     * affinity (hash_policy is not applied yet). */
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH:
        break;
    default:
        return fail(build,
                    "lb_policy %s is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM and "
                    "RING_HASH are)",
                    enum_name(&envoy__config__cluster__v3__cluster__lb_policy__descriptor,
                              (int)message->lb_policy, number, sizeof(number)));
    }
    cluster->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (message->connect_timeout != NULL &&
        duration_milliseconds(build, "connect_timeout", message->connect_timeout,
                              &cluster->connect_timeout_ms) != 0)
        return -1;
    cluster->name = arena_text(build->memory, name);
    if (cluster->name == NULL)
        return out_of_memory(build);
    if (resource->version != NULL &&
        (cluster->version = arena_text(build->memory, resource->version)) == NULL)
        return out_of_memory(build);
    return 0;
}

static int build_clusters(builder *build)
{
    proxy_config *config = build->config;
    const proxy_resource_set *set = build->resources;
    size_t count = set->counts[PROXY_RESOURCE_CLUSTER];
    config->clusters = ARENA_ARRAY(build->memory, count, proxy_cluster);
    if (config->clusters == NULL)
        return out_of_memory(build);
    for (size_t i = 0; i < count; i++) {
        const proxy_resource *resource = &set->items[PROXY_RESOURCE_CLUSTER][i];
        begin_resource(build, PROXY_RESOURCE_CLUSTER, resource->name);
        cluster_message *message = (cluster_message *)decode(
            build, resource, &envoy__config__cluster__v3__cluster__descriptor);
        if (message == NULL)
            return -1;
        int result = build_cluster(build, resource, message, &config->clusters[i]);
        protobuf_c_message_free_unpacked(&message->base, NULL);
        if (result != 0)
            return -1;
        config->cluster_count++;
    }
    qsort(config->clusters, count, sizeof(proxy_cluster), compare_clusters);
    for (size_t i = 0; i < count; i++) {
        if (i > 0 && strcmp(config->clusters[i - 1].name, config->clusters[i].name) == 0) {
            begin_resource(build, PROXY_RESOURCE_CLUSTER, config->clusters[i].name);
            return fail(build, "received twice");
        }
        config->clusters[i].index = i;
        atomic_init(&config->clusters[i].next_pick, 0);
    }
    return 0;
}

/* ---- endpoints and their schedule ---- */

static uint64_t greatest_common_divisor(uint64_t left, uint64_t right)
{
    while (right != 0) {
        uint64_t rest = left % right;
        left = right;
        right = rest;
    }
    return left;
}

/* The smooth weighted round-robin schedule (nginx's) over the healthy
 * endpoints of the best priority that has any: each step adds every
 * endpoint's weight to its current value, picks the largest and takes the
 * weight total off it. Over a whole schedule each endpoint is picked exactly
 * its weight times, spread out rather than in runs. Weights are first divided
 * by their common divisor, then, if they still sum above SCHEDULE_MAX_LENGTH,
 * scaled down to fit (each keeping at least 1). */
static int build_schedule(builder *build, proxy_cluster *cluster, const uint32_t *priorities)
{
    cluster->schedule = NULL;
    cluster->schedule_length = 0;
    size_t members = 0;
    uint32_t best_priority = 0;
    for (size_t i = 0; i < cluster->endpoint_count; i++) {
        if (!cluster->endpoints[i].healthy)
            continue;
        if (members == 0 || priorities[i] < best_priority) {
            best_priority = priorities[i];
            members = 0;
        }
        if (priorities[i] == best_priority)
            members++;
    }
    if (members == 0)
        return 0;
    uint32_t *indexes = malloc(members * sizeof(*indexes));
    uint64_t *weights = malloc(members * sizeof(*weights));
    int64_t *current = calloc(members, sizeof(*current));
    int result = 0;
    if (indexes == NULL || weights == NULL || current == NULL) {
        result = out_of_memory(build);
        goto done;
    }
    size_t member = 0;
    uint64_t divisor = 0;
    for (size_t i = 0; i < cluster->endpoint_count; i++) {
        if (cluster->endpoints[i].healthy && priorities[i] == best_priority) {
            indexes[member] = (uint32_t)i;
            weights[member] = cluster->endpoints[i].weight;
            divisor = greatest_common_divisor(weights[member], divisor);
            member++;
        }
    }
    uint64_t total = 0;
    for (member = 0; member < members; member++) {
        weights[member] /= divisor;
        total += weights[member];
    }
    if (total > SCHEDULE_MAX_LENGTH) {
        uint64_t scaled_total = 0;
        for (member = 0; member < members; member++) {
            weights[member] = weights[member] * SCHEDULE_MAX_LENGTH / total;
            if (weights[member] == 0)
                weights[member] = 1;
            scaled_total += weights[member];
        }
        total = scaled_total;
    }
    cluster->schedule = ARENA_ARRAY(build->memory, total, uint32_t);
    if (cluster->schedule == NULL) {
        result = out_of_memory(build);
        goto done;
    }
    cluster->schedule_length = total;
    if (total == members) { /* equal weights: the plain round */
        memcpy(cluster->schedule, indexes, members * sizeof(*indexes));
        goto done;
    }
    for (size_t step = 0; step < total; step++) {
        size_t best = 0;
        for (member = 0; member < members; member++) {
            current[member] += (int64_t)weights[member];
            if (current[member] > current[best])
                best = member;
        }
        current[best] -= (int64_t)total;
        cluster->schedule[step] = indexes[best];
    }
done:
    free(indexes);
    free(weights);
    free(current);
    return result;
}

static bool is_healthy(Envoy__Config__Core__V3__HealthStatus status)
{
    return status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY ||
           status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN;
}

/* Fills cluster's endpoints from a ClusterLoadAssignment (cluster NULL: the
 * cluster was not received; the assignment is still validated). */
static int build_load_assignment(builder *build, const proxy_resource *resource,
                                 const load_assignment_message *message, proxy_cluster *cluster)
{
    static const upstream_field other_identifiers[] = {{5, "endpoint_name"}};
    size_t count = 0;
    for (size_t l = 0; l < message->n_endpoints; l++)
        count += message->endpoints[l]->n_lb_endpoints;
    if (count >= UINT32_MAX)
        return fail(build, "too many endpoints (%zu)", count);
    proxy_endpoint *endpoints = ARENA_ARRAY(build->memory, count, proxy_endpoint);
    uint32_t *priorities = malloc((count ? count : 1) * sizeof(*priorities));
    if (endpoints == NULL || priorities == NULL) {
        free(priorities);
        return out_of_memory(build);
    }
    size_t index = 0;
    for (size_t l = 0; l < message->n_endpoints; l++) {
        const locality_endpoints_message *locality = message->endpoints[l];
        for (size_t e = 0; e < locality->n_lb_endpoints; e++, index++) {
            const load_balanced_endpoint_message *source = locality->lb_endpoints[e];
            proxy_endpoint *endpoint = &endpoints[index];
            char field[96];
            snprintf(field, sizeof(field), "endpoints[%zu].lb_endpoints[%zu]", l, e);
            if (source->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                free(priorities);
                if (UPSTREAM_FIELD_PRESENT(source, other_identifiers) != NULL)
                    return fail(build, "%s: endpoint_name is not supported, only endpoint", field);
                return fail(build, "%s has no endpoint", field);
            }
            size_t used = strlen(field);
            snprintf(field + used, sizeof(field) - used, ".endpoint.address");
            if (socket_address(build, field, source->endpoint->address, endpoint->address,
                               &endpoint->port, &endpoint->socket_address,
                               &endpoint->socket_address_length) != 0) {
                free(priorities);
                return -1;
            }
            endpoint->weight = 1;
            if (source->load_balancing_weight != NULL) {
                endpoint->weight = source->load_balancing_weight->value;
                if (endpoint->weight == 0) {
                    free(priorities);
                    return fail(build,
                                "endpoints[%zu].lb_endpoints[%zu] (%s): "
                                "load_balancing_weight 0 (it must be at least 1)",
                                l, e, endpoint->address);
                }
            }
            endpoint->healthy = is_healthy(source->health_status);
            endpoint->index = index;
            priorities[index] = locality->priority;
        }
    }
    int result = 0;
    if (cluster != NULL) {
        cluster->endpoints = endpoints;
        cluster->endpoint_count = count;
        if (resource->version != NULL &&
            (cluster->endpoints_version = arena_text(build->memory, resource->version)) == NULL)
            result = out_of_memory(build);
        else
            result = build_schedule(build, cluster, priorities);
    }
    free(priorities);
    return result;
}

static int build_load_assignments(builder *build)
{
    proxy_config *config = build->config;
    const proxy_resource_set *set = build->resources;
    bool *assigned = calloc(config->cluster_count ? config->cluster_count : 1, sizeof(bool));
    if (assigned == NULL)
        return out_of_memory(build);
    int result = 0;
    for (size_t i = 0; i < set->counts[PROXY_RESOURCE_ENDPOINT] && result == 0; i++) {
        const proxy_resource *resource = &set->items[PROXY_RESOURCE_ENDPOINT][i];
        begin_resource(build, PROXY_RESOURCE_ENDPOINT, resource->name);
        load_assignment_message *message = (load_assignment_message *)decode(
            build, resource, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
        if (message == NULL) {
            result = -1;
            break;
        }
        const char *name = NULL;
        result = resource_name(build, resource, "cluster_name", message->cluster_name, &name);
        proxy_cluster *cluster = result == 0 ? find_cluster(config, name) : NULL;
        if (cluster != NULL && assigned[cluster->index])
            result = fail(build, "received twice");
        if (result == 0)
            result = build_load_assignment(build, resource, message, cluster);
        if (cluster != NULL)
            assigned[cluster->index] = true;
        protobuf_c_message_free_unpacked(&message->base, NULL);
    }
    free(assigned);
    return result;
}

/* ---- route tables ---- */

/* A route's match on one header. */
static int build_header_match(builder *build, size_t index, const header_matcher_message *message,
                              proxy_header_match *match)
{
    static const upstream_field other_header_matches[] = {
        {4, "exact_match"},   {6, "range_match"},       {9, "prefix_match"},
        {10, "suffix_match"}, {11, "safe_regex_match"}, {12, "contains_match"}};
    static const upstream_field other_string_matches[] = {{5, "safe_regex"}, {8, "custom"}};
    if (message->name[0] == '\0')
        return fail(build, "headers[%zu] has no name", index);
    match->name = arena_lower_text(build->memory, message->name);
    if (match->name == NULL)
        return out_of_memory(build);
    match->invert = message->invert_match;
    switch (message->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        /* present_match false matches when the header is absent. */
        match->kind = PROXY_HEADER_PRESENT;
        match->invert = message->invert_match != !message->present_match;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        break;
    default: {
        const char *kind = UPSTREAM_FIELD_PRESENT(message, other_header_matches);
        if (kind != NULL)
            return fail(build,
                        "header \"%s\": %s is not supported (present_match and "
                        "string_match are)",
                        message->name, kind);
        match->kind = PROXY_HEADER_PRESENT; /* Envoy: no specifier matches presence */
        return 0;
    }
    }
    const string_matcher_message *string = message->string_match;
    const char *value = NULL;
    switch (string->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        match->kind = PROXY_HEADER_EXACT;
        value = string->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        match->kind = PROXY_HEADER_PREFIX;
        value = string->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        match->kind = PROXY_HEADER_SUFFIX;
        value = string->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        match->kind = PROXY_HEADER_CONTAINS;
        value = string->contains;
        break;
    default: {
        const char *kind = UPSTREAM_FIELD_PRESENT(string, other_string_matches);
        if (kind != NULL)
            return fail(build, "header \"%s\": string_match.%s is not supported", message->name,
                        kind);
        return fail(build, "header \"%s\": string_match has no pattern", message->name);
    }
    }
    if (match->kind != PROXY_HEADER_EXACT && value[0] == '\0')
        return fail(build, "header \"%s\": an empty string_match pattern", message->name);
    match->ignore_case = string->ignore_case;
    match->value = arena_text(build->memory, value);
    return match->value == NULL ? out_of_memory(build) : 0;
}

static int build_retry_policy(builder *build, const retry_policy_message *policy,
                              proxy_route *route)
{
    route->retry_on = arena_text(build->memory, policy->retry_on);
    if (route->retry_on == NULL)
        return out_of_memory(build);
    route->retry_count =
        policy->num_retries != NULL ? policy->num_retries->value : DEFAULT_RETRY_COUNT;
    if (policy->per_try_timeout != NULL)
        return duration_milliseconds(build, "retry_policy.per_try_timeout", policy->per_try_timeout,
                                     &route->per_try_timeout_ms);
    return 0;
}

static int build_route_action(builder *build, const route_action_message *action,
                              proxy_route *route)
{
    static const upstream_field other_specifiers[] = {{2, "cluster_header"},
                                                      {37, "cluster_specifier_plugin"},
                                                      {39, "inline_cluster_specifier_plugin"}};
    static const upstream_field other_weighted[] = {{12, "cluster_header"}};
    proxy_config *config = build->config;
    switch (action->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        if (action->cluster[0] == '\0')
            return fail(build, "route.cluster is empty");
        route->clusters = ARENA_ARRAY(build->memory, 1, proxy_weighted_cluster);
        if (route->clusters == NULL ||
            (route->clusters[0].name = arena_text(build->memory, action->cluster)) == NULL)
            return out_of_memory(build);
        route->clusters[0].weight = 1;
        route->clusters[0].cluster = find_cluster(config, action->cluster);
        route->cluster_count = 1;
        route->total_weight = 1;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        break;
    default: {
        const char *kind = UPSTREAM_FIELD_PRESENT(action, other_specifiers);
        if (kind != NULL)
            return fail(build, "route.%s is not supported (cluster and weighted_clusters are)",
                        kind);
        return fail(build, "the route action names no cluster");
    }
    }
    const Envoy__Config__Route__V3__WeightedCluster *weighted = action->weighted_clusters;
    route->clusters = ARENA_ARRAY(build->memory, weighted->n_clusters, proxy_weighted_cluster);
    if (route->clusters == NULL)
        return out_of_memory(build);
    uint64_t total = 0;
    for (size_t i = 0; i < weighted->n_clusters; i++) {
        const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *source =
            weighted->clusters[i];
        if (source->name[0] == '\0') {
            if (UPSTREAM_FIELD_PRESENT(source, other_weighted) != NULL)
                return fail(build,
                            "weighted_clusters.clusters[%zu]: cluster_header is not "
                            "supported",
                            i);
            return fail(build, "weighted_clusters.clusters[%zu] has no name", i);
        }
        proxy_weighted_cluster *target = &route->clusters[i];
        target->name = arena_text(build->memory, source->name);
        if (target->name == NULL)
            return out_of_memory(build);
        target->weight = source->weight != NULL ? source->weight->value : 0;
        target->cluster = find_cluster(config, source->name);
        total += target->weight;
    }
    route->cluster_count = weighted->n_clusters;
    if (total == 0)
        return fail(build, "weighted_clusters: the total weight of %zu clusters is 0",
                    weighted->n_clusters);
    if (total > UINT32_MAX)
        return fail(build, "weighted_clusters: the total weight %llu is over %u",
                    (unsigned long long)total, (unsigned)UINT32_MAX);
    route->total_weight = (uint32_t)total;
    return 0;
}

static int build_route(builder *build, const route_message *message,
                       const retry_policy_message *host_retry_policy, proxy_route *route)
{
    static const upstream_field other_paths[] = {{10, "safe_regex"},
                                                 {12, "connect_matcher"},
                                                 {14, "path_separated_prefix"},
                                                 {15, "path_match_policy"}};
    static const upstream_field other_conditions[] = {{7, "query_parameters"},
                                                      {8, "grpc"},
                                                      {9, "runtime_fraction"},
                                                      {11, "tls_context"},
                                                      {13, "dynamic_metadata"}};
    static const upstream_field other_actions[] = {{3, "redirect"},
                                                   {7, "direct_response"},
                                                   {17, "filter_action"},
                                                   {18, "non_forwarding_action"}};
    route->name = arena_text(build->memory, message->name);
    if (route->name == NULL)
        return out_of_memory(build);
    const route_match_message *match = message->match;
    if (match == NULL)
        return fail(build, "no match");
    const char *path = NULL;
    switch (match->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        route->path_match = PROXY_PATH_PREFIX;
        path = match->prefix;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        route->path_match = PROXY_PATH_EXACT;
        path = match->path;
        break;
    default: {
        const char *kind = UPSTREAM_FIELD_PRESENT(match, other_paths);
        if (kind != NULL)
            return fail(build, "match.%s is not supported (prefix and path are)", kind);
        return fail(build, "the match has no prefix or path");
    }
    }
    const char *condition = UPSTREAM_FIELD_PRESENT(match, other_conditions);
    if (condition != NULL)
        return fail(build, "match.%s is not supported", condition);
    route->path = arena_text(build->memory, path);
    if (route->path == NULL)
        return out_of_memory(build);
    route->path_length = strlen(path);
    route->case_sensitive = match->case_sensitive == NULL || match->case_sensitive->value;
    route->headers = ARENA_ARRAY(build->memory, match->n_headers, proxy_header_match);
    if (route->headers == NULL)
        return out_of_memory(build);
    for (size_t h = 0; h < match->n_headers; h++) {
        if (build_header_match(build, h, match->headers[h], &route->headers[h]) != 0)
            return -1;
        route->header_count++;
    }
    if (message->action_case != ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE) {
        const char *kind = UPSTREAM_FIELD_PRESENT(message, other_actions);
        if (kind != NULL)
            return fail(build, "action %s is not supported (only route is)", kind);
        return fail(build, "no action");
    }
    const route_action_message *action = message->route;
    if (build_route_action(build, action, route) != 0)
        return -1;
    route->timeout_ms = DEFAULT_ROUTE_TIMEOUT_MS;
    if (action->timeout != NULL &&
        duration_milliseconds(build, "route.timeout", action->timeout, &route->timeout_ms) != 0)
        return -1;
    /* A route's retry policy replaces its virtual host's whole. */
    const retry_policy_message *retry_policy =
        action->retry_policy != NULL ? action->retry_policy : host_retry_policy;
    if (retry_policy != NULL)
        return build_retry_policy(build, retry_policy, route);
    return 0;
}

static int build_virtual_host(builder *build, const char *context,
                              const virtual_host_message *message, size_t index,
                              proxy_virtual_host *host)
{
    host->name = arena_text(build->memory, message->name);
    host->domains = ARENA_ARRAY(build->memory, message->n_domains, char *);
    host->routes = ARENA_ARRAY(build->memory, message->n_routes, proxy_route);
    if (host->name == NULL || host->domains == NULL || host->routes == NULL)
        return out_of_memory(build);
    for (size_t d = 0; d < message->n_domains; d++) {
        host->domains[d] = arena_lower_text(build->memory, message->domains[d]);
        if (host->domains[d] == NULL)
            return out_of_memory(build);
        host->domain_count++;
    }
    for (size_t r = 0; r < message->n_routes; r++) {
        if (message->name[0] != '\0')
            set_where(build, "%svirtual host \"%.64s\", routes[%zu]", context, message->name, r);
        else
            set_where(build, "%svirtual_hosts[%zu].routes[%zu]", context, index, r);
        if (build_route(build, message->routes[r], message->retry_policy, &host->routes[r]) != 0)
            return -1;
        host->route_count++;
    }
    return 0;
}

/* ---- the domain index ---- */

/* One domain (or the "name" of "name:*", the suffix of "*suffix", the prefix
 * of "prefix*") and the virtual host it selects; the first virtual host to
 * list a domain keeps it. */
typedef struct domain_entry {
    const char *key; /* lower case, in the arena; NULL: an empty slot */
    size_t length;
    uint64_t hash;
    const proxy_virtual_host *host;
    const proxy_virtual_host *any_port_host; /* exact table: the host of "key:*" */
} domain_entry;

/* An open-addressing hash table (linear probing, at most half full). */
typedef struct domain_table {
    domain_entry *slots; /* NULL when empty */
    size_t mask;         /* slot count - 1; the count is a power of two */
    size_t *lengths;     /* the distinct key lengths, longest first */
    size_t length_count;
} domain_table;

struct proxy_domain_index {
    domain_table exact;                 /* "name" and "name:*" */
    domain_table suffixes;              /* "*suffix", by suffix */
    domain_table prefixes;              /* "prefix*", by prefix */
    const proxy_virtual_host *any_host; /* "*" */
};

/* FNV-1a over the lower-cased bytes. */
static uint64_t hash_lower(const char *text, size_t length)
{
    uint64_t hash = 14695981039346656037ULL;
    for (size_t i = 0; i < length; i++) {
        hash ^= ascii_lower((unsigned char)text[i]);
        hash *= 1099511628211ULL;
    }
    return hash;
}

/* Whether text (any case) equals key (lower case). */
static bool equal_lower(const char *key, const char *text, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        if ((unsigned char)key[i] != ascii_lower((unsigned char)text[i]))
            return false;
    }
    return true;
}

static const domain_entry *table_find(const domain_table *table, const char *text, size_t length)
{
    if (table->slots == NULL)
        return NULL;
    uint64_t hash = hash_lower(text, length);
    for (size_t slot = (size_t)hash & table->mask;; slot = (slot + 1) & table->mask) {
        const domain_entry *entry = &table->slots[slot];
        if (entry->key == NULL)
            return NULL;
        if (entry->hash == hash && entry->length == length && equal_lower(entry->key, text, length))
            return entry;
    }
}

static int table_allocate(arena *memory, domain_table *table, size_t count)
{
    if (count == 0)
        return 0;
    size_t capacity = 4;
    while (capacity < count * 2)
        capacity *= 2;
    table->slots = ARENA_ARRAY(memory, capacity, domain_entry);
    table->lengths = ARENA_ARRAY(memory, count, size_t);
    table->mask = capacity - 1;
    return table->slots != NULL && table->lengths != NULL ? 0 : -1;
}

/* The entry for key (lower case, kept by reference), added when missing. */
static domain_entry *table_insert(domain_table *table, const char *key, size_t length)
{
    uint64_t hash = hash_lower(key, length);
    size_t slot = (size_t)hash & table->mask;
    for (;; slot = (slot + 1) & table->mask) {
        domain_entry *entry = &table->slots[slot];
        if (entry->key == NULL)
            break;
        if (entry->hash == hash && entry->length == length && memcmp(entry->key, key, length) == 0)
            return entry;
    }
    domain_entry *entry = &table->slots[slot];
    *entry = (domain_entry){.key = key, .length = length, .hash = hash};
    bool known_length = false;
    for (size_t i = 0; i < table->length_count && !known_length; i++)
        known_length = table->lengths[i] == length;
    if (!known_length)
        table->lengths[table->length_count++] = length;
    return entry;
}

static int compare_lengths_descending(const void *left, const void *right)
{
    size_t a = *(const size_t *)left, b = *(const size_t *)right;
    return a < b ? 1 : a > b ? -1 : 0;
}

typedef enum domain_kind {
    DOMAIN_ANY,      /* "*" */
    DOMAIN_SUFFIX,   /* "*suffix" */
    DOMAIN_ANY_PORT, /* "name:*" */
    DOMAIN_PREFIX,   /* "prefix*" */
    DOMAIN_EXACT
} domain_kind;

/* What a (lower-case) domain is, and its key: the part without the '*' (and
 * without the ":" of "name:*"). */
static domain_kind classify_domain(const char *domain, const char **key, size_t *key_length)
{
    size_t length = strlen(domain);
    *key = domain;
    *key_length = length;
    if (length == 1 && domain[0] == '*')
        return DOMAIN_ANY;
    if (length > 0 && domain[0] == '*') {
        *key = domain + 1;
        *key_length = length - 1;
        return DOMAIN_SUFFIX;
    }
    if (length > 0 && domain[length - 1] == '*') {
        if (length >= 3 && domain[length - 2] == ':' && memchr(domain, '*', length - 1) == NULL) {
            *key_length = length - 2;
            return DOMAIN_ANY_PORT;
        }
        *key_length = length - 1;
        return DOMAIN_PREFIX;
    }
    return DOMAIN_EXACT;
}

static int build_domain_index(builder *build, proxy_route_table *table)
{
    proxy_domain_index *index = ARENA_ARRAY(build->memory, 1, proxy_domain_index);
    if (index == NULL)
        return out_of_memory(build);
    size_t counts[DOMAIN_EXACT + 1] = {0};
    const char *key;
    size_t key_length;
    for (size_t v = 0; v < table->virtual_host_count; v++) {
        const proxy_virtual_host *host = &table->virtual_hosts[v];
        for (size_t d = 0; d < host->domain_count; d++)
            counts[classify_domain(host->domains[d], &key, &key_length)]++;
    }
    if (table_allocate(build->memory, &index->exact,
                       counts[DOMAIN_EXACT] + counts[DOMAIN_ANY_PORT]) != 0 ||
        table_allocate(build->memory, &index->suffixes, counts[DOMAIN_SUFFIX]) != 0 ||
        table_allocate(build->memory, &index->prefixes, counts[DOMAIN_PREFIX]) != 0)
        return out_of_memory(build);
    for (size_t v = 0; v < table->virtual_host_count; v++) {
        const proxy_virtual_host *host = &table->virtual_hosts[v];
        for (size_t d = 0; d < host->domain_count; d++) {
            domain_entry *entry = NULL;
            switch (classify_domain(host->domains[d], &key, &key_length)) {
            case DOMAIN_ANY:
                if (index->any_host == NULL)
                    index->any_host = host;
                continue;
            case DOMAIN_ANY_PORT:
                entry = table_insert(&index->exact, key, key_length);
                if (entry->any_port_host == NULL)
                    entry->any_port_host = host;
                continue;
            case DOMAIN_SUFFIX:
                entry = table_insert(&index->suffixes, key, key_length);
                break;
            case DOMAIN_PREFIX:
                entry = table_insert(&index->prefixes, key, key_length);
                break;
            case DOMAIN_EXACT:
                entry = table_insert(&index->exact, key, key_length);
                break;
            }
            if (entry->host == NULL)
                entry->host = host;
        }
    }
    if (index->suffixes.length_count > 1)
        qsort(index->suffixes.lengths, index->suffixes.length_count, sizeof(size_t),
              compare_lengths_descending);
    if (index->prefixes.length_count > 1)
        qsort(index->prefixes.lengths, index->prefixes.length_count, sizeof(size_t),
              compare_lengths_descending);
    table->domain_index = index;
    return 0;
}

/* The length of host without a trailing ":<digits>", or length when it has
 * none ("[::1]:80" → "[::1]"; a bare IPv6 address has no port). */
static size_t without_port(const char *host, size_t length)
{
    size_t colon = length;
    while (colon > 0 && host[colon - 1] >= '0' && host[colon - 1] <= '9')
        colon--;
    if (colon == length || colon == 0 || host[colon - 1] != ':')
        return length;
    size_t name_length = colon - 1;
    if (memchr(host, ':', name_length) != NULL && host[name_length - 1] != ']')
        return length;
    return name_length;
}

const proxy_virtual_host *proxy_route_table_find_host(const proxy_route_table *table,
                                                      const char *host, size_t length)
{
    if (table == NULL || table->domain_index == NULL || (host == NULL && length > 0))
        return NULL;
    const proxy_domain_index *index = table->domain_index;
    const domain_entry *entry = table_find(&index->exact, host, length);
    if (entry != NULL && entry->host != NULL)
        return entry->host;
    size_t name_length = without_port(host, length);
    if (name_length < length && (entry = table_find(&index->exact, host, name_length)) != NULL)
        return entry->any_port_host != NULL ? entry->any_port_host : entry->host;
    /* Wildcards match at least one character. */
    for (size_t i = 0; i < index->suffixes.length_count; i++) {
        size_t key_length = index->suffixes.lengths[i];
        if (key_length < length &&
            (entry = table_find(&index->suffixes, host + length - key_length, key_length)) != NULL)
            return entry->host;
    }
    for (size_t i = 0; i < index->prefixes.length_count; i++) {
        size_t key_length = index->prefixes.lengths[i];
        if (key_length < length && (entry = table_find(&index->prefixes, host, key_length)) != NULL)
            return entry->host;
    }
    return index->any_host;
}

/* A route table from a RouteConfiguration (context prefixes where errors
 * point: "" for RDS, "route_config \"x\", " for one inlined in a listener). */
static int build_route_table(builder *build, const char *context,
                             const route_configuration_message *message, const char *name,
                             proxy_route_table *table)
{
    table->name = arena_text(build->memory, name);
    table->virtual_hosts = ARENA_ARRAY(build->memory, message->n_virtual_hosts, proxy_virtual_host);
    if (table->name == NULL || table->virtual_hosts == NULL)
        return out_of_memory(build);
    for (size_t v = 0; v < message->n_virtual_hosts; v++) {
        if (build_virtual_host(build, context, message->virtual_hosts[v], v,
                               &table->virtual_hosts[v]) != 0)
            return -1;
        table->virtual_host_count++;
    }
    build->where[0] = '\0';
    return build_domain_index(build, table);
}

static int compare_route_tables(const void *left, const void *right)
{
    return strcmp(((const proxy_route_table *)left)->name,
                  ((const proxy_route_table *)right)->name);
}

static const proxy_route_table *find_route_table(const proxy_config *config, const char *name)
{
    size_t low = 0, high = config->route_table_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        int order = strcmp(name, config->route_tables[middle].name);
        if (order == 0)
            return &config->route_tables[middle];
        if (order < 0)
            high = middle;
        else
            low = middle + 1;
    }
    return NULL;
}

static int build_route_tables(builder *build)
{
    proxy_config *config = build->config;
    const proxy_resource_set *set = build->resources;
    size_t count = set->counts[PROXY_RESOURCE_ROUTE];
    config->route_tables = ARENA_ARRAY(build->memory, count, proxy_route_table);
    if (config->route_tables == NULL)
        return out_of_memory(build);
    for (size_t i = 0; i < count; i++) {
        const proxy_resource *resource = &set->items[PROXY_RESOURCE_ROUTE][i];
        begin_resource(build, PROXY_RESOURCE_ROUTE, resource->name);
        route_configuration_message *message = (route_configuration_message *)decode(
            build, resource, &envoy__config__route__v3__route_configuration__descriptor);
        if (message == NULL)
            return -1;
        proxy_route_table *table = &config->route_tables[i];
        const char *name = NULL;
        int result = resource_name(build, resource, "name", message->name, &name);
        if (result == 0)
            result = build_route_table(build, "", message, name, table);
        if (result == 0 && resource->version != NULL &&
            (table->version = arena_text(build->memory, resource->version)) == NULL)
            result = out_of_memory(build);
        protobuf_c_message_free_unpacked(&message->base, NULL);
        if (result != 0)
            return -1;
        config->route_table_count++;
    }
    /* The tables point at their own virtual hosts only (the domain index
     * points into the arena), so sorting the table structs is safe. */
    qsort(config->route_tables, count, sizeof(proxy_route_table), compare_route_tables);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(config->route_tables[i - 1].name, config->route_tables[i].name) == 0) {
            begin_resource(build, PROXY_RESOURCE_ROUTE, config->route_tables[i].name);
            return fail(build, "received twice");
        }
    }
    return 0;
}

/* ---- listeners ---- */

/* Checks the HTTP filters: ones we know (the router, last; RBAC) must decode,
 * an unknown one is an error unless it is optional (then it is skipped, as
 * Envoy does). RBAC is accepted only without rules (then it allows every
 * request, as in Envoy): atrium-proxy does not enforce rules yet, and serving
 * an authorization policy unenforced would open what it closes. */
static int check_http_filters(builder *build, const connection_manager_message *manager)
{
    static const upstream_field discovered_config[] = {{5, "config_discovery"}};
    const ProtobufCMessageDescriptor *router =
        &envoy__extensions__filters__http__router__v3__router__descriptor;
    const ProtobufCMessageDescriptor *rbac =
        &envoy__extensions__filters__http__rbac__v3__rbac__descriptor;
    bool router_seen = false;
    for (size_t i = 0; i < manager->n_http_filters; i++) {
        const http_filter_message *filter = manager->http_filters[i];
        const Google__Protobuf__Any *config =
            filter->config_type_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG
                ? filter->typed_config
                : NULL;
        const char *type = config != NULL ? any_type_name(config) : NULL;
        const ProtobufCMessageDescriptor *descriptor = NULL;
        if (type != NULL && strcmp(type, router->name) == 0)
            descriptor = router;
        else if (type != NULL && strcmp(type, rbac->name) == 0)
            descriptor = rbac;
        else if (config == NULL && strcmp(filter->name, ROUTER_FILTER_NAME) == 0 &&
                 UPSTREAM_FIELD_PRESENT(filter, discovered_config) == NULL)
            descriptor = router; /* the router by name, without a config */
        if (descriptor == NULL) {
            if (filter->is_optional)
                continue;
            if (type == NULL)
                return fail(build, "HTTP filter \"%s\" has no typed_config", filter->name);
            return fail(build, "unknown HTTP filter \"%s\" (type %s), not optional", filter->name,
                        type);
        }
        if (router_seen)
            return fail(build,
                        "HTTP filter \"%s\" comes after the router filter, which must be "
                        "last",
                        filter->name);
        if (config != NULL) {
            char detail[192];
            ProtobufCMessage *decoded = any_unpack(config, descriptor, detail, sizeof(detail));
            if (decoded == NULL)
                return fail(build, "HTTP filter \"%s\": %s", filter->name, detail);
            static const upstream_field enforcing[] = {{4, "matcher"}};
            const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *policy =
                descriptor == rbac
                    ? (const Envoy__Extensions__Filters__Http__Rbac__V3__RBAC *)decoded
                    : NULL;
            bool enforces = policy != NULL && (policy->rules != NULL ||
                                               UPSTREAM_FIELD_PRESENT(policy, enforcing) != NULL);
            protobuf_c_message_free_unpacked(decoded, NULL);
            if (enforces)
                return fail(build,
                            "HTTP filter \"%s\": RBAC rules are not enforced by atrium-proxy "
                            "yet: refused rather than served unenforced",
                            filter->name);
        }
        router_seen = descriptor == router;
    }
    if (!router_seen)
        return fail(build, "no router filter: the last HTTP filter must be %s", ROUTER_FILTER_NAME);
    return 0;
}

/* The listener's routes: the RDS table it names, or the table it inlines
 * (built into inline_table, *inlined set). */
static int build_listener_routes(builder *build, const connection_manager_message *manager,
                                 proxy_listener *listener, proxy_route_table *inline_table,
                                 bool *inlined)
{
    static const upstream_field other_specifiers[] = {{31, "scoped_routes"}};
    switch (manager->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS: {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds =
            manager->rds;
        if (rds->route_config_name[0] == '\0')
            return fail(build, "rds.route_config_name is empty");
        if (!fetched_over_ads(rds->config_source))
            return fail(build, "rds.config_source is not ads: routes are only fetched over ADS");
        listener->route_table_name = arena_text(build->memory, rds->route_config_name);
        if (listener->route_table_name == NULL)
            return out_of_memory(build);
        listener->route_table = find_route_table(build->config, rds->route_config_name);
        return 0;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG: {
        const route_configuration_message *routes = manager->route_config;
        char context[96];
        snprintf(context, sizeof(context), "route_config \"%.64s\", ", routes->name);
        if (build_route_table(build, context, routes, routes->name, inline_table) != 0)
            return -1;
        listener->route_table_name = inline_table->name;
        listener->route_table = inline_table;
        *inlined = true;
        return 0;
    }
    default:
        if (UPSTREAM_FIELD_PRESENT(manager, other_specifiers) != NULL)
            return fail(build, "scoped_routes is not supported (rds and route_config are)");
        return fail(build, "the http_connection_manager has neither rds nor route_config");
    }
}

static int build_listener(builder *build, const proxy_resource *resource,
                          const listener_message *message, proxy_listener *listener,
                          proxy_route_table *inline_table, bool *inlined)
{
    const char *name = NULL;
    if (resource_name(build, resource, "name", message->name, &name) != 0)
        return -1;
    struct sockaddr_storage unused;
    socklen_t unused_length;
    if (socket_address(build, "address", message->address, listener->address, &listener->port,
                       &unused, &unused_length) != 0)
        return -1;
    if (message->n_filter_chains == 0)
        return fail(build, "no filter chains");
    if (message->n_filter_chains > 1)
        return fail(build, "%zu filter chains: only one is supported", message->n_filter_chains);
    const filter_chain_message *chain = message->filter_chains[0];
    if (chain->n_filters == 0)
        return fail(build, "the filter chain has no network filter");
    for (size_t i = 0; i < chain->n_filters; i++) {
        const network_filter_message *filter = chain->filters[i];
        const char *type = filter->config_type_case ==
                                   ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG
                               ? any_type_name(filter->typed_config)
                               : NULL;
        if (type == NULL)
            return fail(build, "network filter \"%s\" has no typed_config", filter->name);
        if (strcmp(
                type,
                envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor
                    .name) != 0)
            return fail(build, "unknown network filter \"%s\" (type %s): only %s is supported",
                        filter->name, type, HTTP_CONNECTION_MANAGER_NAME);
    }
    if (chain->n_filters > 1)
        return fail(build, "%zu network filters: only one %s is supported", chain->n_filters,
                    HTTP_CONNECTION_MANAGER_NAME);
    const network_filter_message *filter = chain->filters[0];
    char detail[192];
    connection_manager_message *manager = (connection_manager_message *)any_unpack(
        filter->typed_config,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
        detail, sizeof(detail));
    if (manager == NULL)
        return fail(build, "network filter \"%s\": %s", filter->name, detail);
    int result = check_http_filters(build, manager);
    if (result == 0)
        result = build_listener_routes(build, manager, listener, inline_table, inlined);
    listener->generate_request_id =
        manager->generate_request_id == NULL || manager->generate_request_id->value;
    protobuf_c_message_free_unpacked(&manager->base, NULL);
    if (result != 0)
        return -1;
    switch (message->traffic_direction) {
    case ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND:
        listener->direction = PROXY_DIRECTION_INBOUND;
        break;
    case ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND:
        listener->direction = PROXY_DIRECTION_OUTBOUND;
        break;
    default:
        listener->direction = PROXY_DIRECTION_UNSPECIFIED;
        break;
    }
    listener->name = arena_text(build->memory, name);
    if (listener->name == NULL)
        return out_of_memory(build);
    if (resource->version != NULL &&
        (listener->version = arena_text(build->memory, resource->version)) == NULL)
        return out_of_memory(build);
    for (size_t i = 0; i < build->config->listener_count; i++) {
        if (strcmp(build->config->listeners[i].name, listener->name) == 0)
            return fail(build, "received twice");
    }
    return 0;
}

static int build_listeners(builder *build)
{
    proxy_config *config = build->config;
    const proxy_resource_set *set = build->resources;
    size_t count = set->counts[PROXY_RESOURCE_LISTENER];
    config->listeners = ARENA_ARRAY(build->memory, count, proxy_listener);
    config->inline_tables = ARENA_ARRAY(build->memory, count, proxy_route_table);
    if (config->listeners == NULL || config->inline_tables == NULL)
        return out_of_memory(build);
    for (size_t i = 0; i < count; i++) {
        const proxy_resource *resource = &set->items[PROXY_RESOURCE_LISTENER][i];
        begin_resource(build, PROXY_RESOURCE_LISTENER, resource->name);
        listener_message *message = (listener_message *)decode(
            build, resource, &envoy__config__listener__v3__listener__descriptor);
        if (message == NULL)
            return -1;
        int result = 0;
        /* API listeners are for proxyless gRPC clients: not ours to serve. */
        if (message->api_listener == NULL) {
            bool inlined = false;
            result =
                build_listener(build, resource, message, &config->listeners[config->listener_count],
                               &config->inline_tables[config->inline_table_count], &inlined);
            if (result == 0) {
                config->listener_count++;
                config->inline_table_count += inlined ? 1 : 0;
            }
        }
        protobuf_c_message_free_unpacked(&message->base, NULL);
        if (result != 0)
            return -1;
    }
    return 0;
}

/* ---- snapshots ---- */

proxy_config *proxy_config_build(const proxy_resource_set *resources, uint64_t generation,
                                 char *error, size_t error_size)
{
    if (error != NULL && error_size > 0)
        error[0] = '\0';
    snapshot *built = calloc(1, sizeof(*built));
    if (built == NULL) {
        if (error != NULL && error_size > 0)
            snprintf(error, error_size, "out of memory");
        return NULL;
    }
    proxy_config *config = &built->config;
    atomic_init(&config->references, 1);
    config->generation = generation;
    static const proxy_resource_set empty;
    builder build = {.config = config,
                     .resources = resources != NULL ? resources : &empty,
                     .memory = &built->memory,
                     .error = error,
                     .error_size = error_size};
    int result = 0;
    /* Clusters first, so that assignments and routes can point at them; route
     * tables before the listeners that name them. */
    if (result == 0)
        result = build_clusters(&build);
    if (result == 0)
        result = build_load_assignments(&build);
    if (result == 0)
        result = build_route_tables(&build);
    if (result == 0)
        result = build_listeners(&build);
    if (result != 0) {
        snapshot_free(built);
        return NULL;
    }
    return config;
}

proxy_config *proxy_config_retain(proxy_config *config)
{
    atomic_fetch_add_explicit(&config->references, 1, memory_order_relaxed);
    return config;
}

void proxy_config_release(proxy_config *config)
{
    if (config == NULL)
        return;
    if (atomic_fetch_sub_explicit(&config->references, 1, memory_order_acq_rel) == 1)
        snapshot_free((snapshot *)config);
}

const proxy_cluster *proxy_config_find_cluster(const proxy_config *config, const char *name)
{
    return config != NULL && name != NULL ? find_cluster(config, name) : NULL;
}

const proxy_listener *proxy_config_find_listener(const proxy_config *config, const char *name)
{
    for (size_t i = 0; config != NULL && name != NULL && i < config->listener_count; i++) {
        if (strcmp(config->listeners[i].name, name) == 0)
            return &config->listeners[i];
    }
    return NULL;
}

const proxy_endpoint *proxy_cluster_pick(proxy_cluster *cluster)
{
    if (cluster == NULL || cluster->schedule_length == 0)
        return NULL;
    uint_fast64_t pick = atomic_fetch_add_explicit(&cluster->next_pick, 1, memory_order_relaxed);
    return &cluster->endpoints[cluster->schedule[pick % cluster->schedule_length]];
}
