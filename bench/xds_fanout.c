/*
 * xds_fanout.c — xDS fan-out load generator for atriumd: N delta ADS
 * subscribers (and M state-of-the-world ones for comparison), each on its own
 * gRPC channel and TCP connection, each an atrium-proxy node of service
 * "svc-<i mod services>", the way N Envoy sidecars would connect.
 *
 * Every subscriber subscribes Cluster and Listener by wildcard, then the
 * ClusterLoadAssignments its clusters name (eds_cluster_config.service_name)
 * and the RouteConfigurations its listeners name (HCM rds.route_config_name),
 * and ACKs every response. One completion queue and one thread drive all the
 * streams.
 *
 * It measures, and prints with the targets:
 *   - time to connect all N (until each has had its first CDS, EDS, LDS and
 *     RDS response), with at most --connect-concurrency in progress at once;
 *   - atriumd's VmRSS (/proc/<pid>/status) before and after, per subscriber;
 *   - for an endpoint change made through REST (PUT, from another thread with
 *     libcurl): convergence = the time from the 2xx to each affected
 *     subscriber starting to send its ACK of the response that carries the
 *     change, p50/p99/max, for the delta and the SotW group; and the bytes
 *     (gRPC message payloads) and resources each subscriber received for it.
 *
 * Bounded: a global deadline (--deadline-s), a per-change timeout, bounded
 * retries, bounded teardown. Only 127.0.0.1. Asserts nothing: exit 0 when the
 * measurements completed (targets met or not), 2 when they could not.
 *
 *   xds_fanout --xds 127.0.0.1:P --rest 127.0.0.1:Q --token-file F --pid PID
 *              [--subscribers N] [--sotw M] [--services S] ...   (--help)
 */
#include "any.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/core.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

#include <curl/curl.h>
#include <dirent.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DELTA_METHOD                                                                               \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define SOTW_METHOD                                                                                \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define TYPE_PREFIX "type.googleapis.com/"
#define HCM_TYPE                                                                                   \
    TYPE_PREFIX "envoy.extensions.filters.network.http_connection_manager.v3."                     \
                "HttpConnectionManager"
#define MAX_ATTEMPTS 3 /* per subscriber, while connecting */
#define MAX_CHANGES  20
#define SHOWN_ERRORS 5

/* Types in atriumd's push order (make-before-break). */
enum { T_CDS, T_EDS, T_LDS, T_RDS, T_COUNT };
static const char *const type_urls[T_COUNT] = {
    TYPE_PREFIX "envoy.config.cluster.v3.Cluster",
    TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
    TYPE_PREFIX "envoy.config.listener.v3.Listener",
    TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration",
};

static int type_of(const char *url)
{
    for (int t = 0; url != NULL && t < T_COUNT; t++)
        if (strcmp(url, type_urls[t]) == 0)
            return t;
    return -1;
}

/* ---- options ---- */

static struct {
    const char *xds, *rest, *token_file;
    long pid;
    int subscribers, sotw, services, concurrency, changes;
    double deadline_s, change_timeout_s, quiet_s, pause_s;
    const char *change_service, *change_endpoint;
    const char *order;
} opt = {NULL, NULL, NULL, 0,   1000, 100,     1000, 256,
         1,    120,  30,   3.0, 0,    "svc-0", NULL, "interleaved"};

static const char usage[] =
    "Usage: xds_fanout --xds HOST:PORT --rest HOST:PORT --token-file FILE --pid PID [options]\n"
    "  --subscribers N          delta ADS subscribers (default 1000)\n"
    "  --sotw M                 state-of-the-world subscribers, the comparison group (default "
    "100)\n"
    "  --services S             subscriber i is a proxy of svc-<i mod S> (default 1000)\n"
    "  --connect-concurrency C  subscribers connecting at once (default 256)\n"
    "  --changes K              endpoint changes to measure, one after another (default 1)\n"
    "  --order ORDER            connection order: interleaved (default: the SotW subscribers\n"
    "                           spread among the delta ones), delta-first or sotw-first (each\n"
    "                           group then gets its own RSS figure). atriumd pushes its streams\n"
    "                           newest first, so the order decides who is pushed first.\n"
    "  --change-service NAME    the service whose endpoint changes (default svc-0)\n"
    "  --change-endpoint ID     its endpoint id (default <service>-a)\n"
    "  --deadline-s S           global deadline (default 120)\n"
    "  --change-timeout-s S     per change (default 30)\n"
    "  --quiet-s S              silence that counts as settled (default 3)\n"
    "  --pre-change-pause-s S   wait before the first change, e.g. to attach perf (default 0)\n"
    "Targets are 127.0.0.1 only.\n";

/* ---- time ---- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static gpr_timespec in_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ---- small sets: a subscriber knows a handful of names ---- */

typedef struct entry {
    char *name;
    char *ref;     /* CDS: the EDS name it needs; LDS: the RDS name (or NULL) */
    uint64_t hash; /* EDS: hash of the last ClusterLoadAssignment bytes */
} entry;

typedef struct name_set {
    entry *items;
    uint32_t count, capacity;
} name_set;

static entry *set_find(const name_set *set, const char *name)
{
    for (uint32_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].name, name) == 0)
            return &set->items[i];
    return NULL;
}

/* Adds (or finds) name; NULL when out of memory. */
static entry *set_add(name_set *set, const char *name)
{
    entry *found = set_find(set, name);
    if (found != NULL)
        return found;
    if (set->count == set->capacity) {
        uint32_t capacity = set->capacity ? set->capacity * 2 : 4;
        entry *grown = realloc(set->items, capacity * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        set->items = grown;
        set->capacity = capacity;
    }
    entry *item = &set->items[set->count];
    item->name = strdup(name);
    item->ref = NULL;
    item->hash = 0;
    if (item->name == NULL)
        return NULL;
    set->count++;
    return item;
}

static void set_set_ref(entry *item, const char *ref)
{
    if (item == NULL)
        return;
    free(item->ref);
    item->ref = ref ? strdup(ref) : NULL;
}

static void set_remove(name_set *set, const char *name)
{
    entry *item = set_find(set, name);
    if (item == NULL)
        return;
    free(item->name);
    free(item->ref);
    *item = set->items[--set->count];
}

static void set_clear(name_set *set)
{
    for (uint32_t i = 0; i < set->count; i++) {
        free(set->items[i].name);
        free(set->items[i].ref);
    }
    free(set->items);
    memset(set, 0, sizeof(*set));
}

static uint64_t fnv64(const uint8_t *data, size_t length)
{
    uint64_t hash = 1469598103934665603ULL;
    for (size_t i = 0; i < length; i++)
        hash = (hash ^ data[i]) * 1099511628211ULL;
    return hash | 1; /* never 0: 0 means "not received" */
}

/* ---- subscribers ---- */

enum { TAG_START, TAG_STATUS, TAG_RECV, TAG_SEND };

struct sub;
typedef struct ev_tag {
    int kind;
    struct sub *owner;
} ev_tag;

typedef struct outmsg {
    struct outmsg *next;
    grpc_byte_buffer *buffer;
    bool change_ack; /* ACKs the response that carried the measured change */
} outmsg;

typedef struct sub {
    int index;
    bool delta;
    char service[48];
    grpc_channel *channel;
    grpc_call *call;
    ev_tag tags[4];
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice status_details;
    grpc_byte_buffer *received;
    outmsg *queue_head, *queue_tail;
    bool sending;
    int pending;     /* batches in flight */
    bool call_ended; /* status received */
    bool node_sent;
    bool started, synced, failed, lost;
    int attempts;
    double started_at, synced_at;
    /* what it has and asked for */
    name_set clusters, listeners; /* CDS, LDS: name → ref */
    name_set eds, rds;            /* subscribed names (EDS: with the hash of the last bytes) */
    bool got[T_COUNT];
    char *sotw_version[T_COUNT], *sotw_nonce[T_COUNT];
    /* accounting */
    uint64_t bytes, messages, resources;
    uint64_t mark_bytes, mark_messages, mark_resources;
    bool affected;
    double change_acked_at; /* 0: not yet */
} sub;

static sub *subs;
static int total_subs;
static grpc_completion_queue *cq;
static char xds_target[128];
static double last_rx_at;
static int errors_shown;
static long stat_retries, stat_failed, stat_lost, stat_unexpected_change;

/* ---- sending ---- */

static void start_send(sub *s);

static void enqueue(sub *s, const ProtobufCMessage *message, bool change_ack)
{
    size_t length = protobuf_c_message_get_packed_size(message);
    grpc_slice slice = grpc_slice_malloc(length);
    protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
    outmsg *item = calloc(1, sizeof(*item));
    if (item == NULL) {
        grpc_slice_unref(slice);
        return;
    }
    item->buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    item->change_ack = change_ack;
    if (s->queue_tail)
        s->queue_tail->next = item;
    else
        s->queue_head = item;
    s->queue_tail = item;
    start_send(s);
}

static void start_send(sub *s)
{
    if (s->sending || s->queue_head == NULL || s->call == NULL || s->call_ended)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->queue_head->buffer;
    if (s->queue_head->change_ack && s->change_acked_at == 0)
        s->change_acked_at = now_s();
    if (grpc_call_start_batch(s->call, &op, 1, &s->tags[TAG_SEND], NULL) == GRPC_CALL_OK) {
        s->sending = true;
        s->pending++;
    }
}

static void drop_queue(sub *s)
{
    while (s->queue_head != NULL) {
        outmsg *item = s->queue_head;
        s->queue_head = item->next;
        grpc_byte_buffer_destroy(item->buffer);
        free(item);
    }
    s->queue_tail = NULL;
}

/* ---- requests ---- */

/* The node, as atrium-proxy describes itself. Static storage per call. */
static Envoy__Config__Core__V3__Node *make_node(const sub *s, char *id, size_t id_size)
{
    static Envoy__Config__Core__V3__Node node;
    static Google__Protobuf__Struct metadata;
    static Google__Protobuf__Struct__FieldsEntry fields[5];
    static Google__Protobuf__Struct__FieldsEntry *field_pointers[5];
    static Google__Protobuf__Value values[5];
    static char service[48];
    static const char *const keys[5] = {"atrium.service", "atrium.namespace", "atrium.app_port",
                                        "atrium.inbound_port", "atrium.outbound_port"};
    const char *texts[5] = {service, "default", "8080", "15006", "15001"};
    snprintf(service, sizeof(service), "%s", s->service);
    snprintf(id, id_size, "bench-%s-%d~127.0.0.1", s->delta ? "delta" : "sotw", s->index);
    for (int i = 0; i < 5; i++) {
        google__protobuf__value__init(&values[i]);
        values[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        values[i].string_value = (char *)texts[i];
        google__protobuf__struct__fields_entry__init(&fields[i]);
        fields[i].key = (char *)keys[i];
        fields[i].value = &values[i];
        field_pointers[i] = &fields[i];
    }
    google__protobuf__struct__init(&metadata);
    metadata.n_fields = 5;
    metadata.fields = field_pointers;
    envoy__config__core__v3__node__init(&node);
    node.id = id;
    node.cluster = service;
    node.metadata = &metadata;
    node.user_agent_name = "atrium-xds-fanout";
    return &node;
}

static void send_delta(sub *s, int type, const char *nonce, char **subscribe, size_t n_subscribe,
                       char **unsubscribe, size_t n_unsubscribe, bool change_ack)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest request =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    char id[96];
    if (!s->node_sent) {
        request.node = make_node(s, id, sizeof(id));
        s->node_sent = true;
    }
    request.type_url = (char *)type_urls[type];
    request.response_nonce = (char *)(nonce ? nonce : "");
    request.n_resource_names_subscribe = n_subscribe;
    request.resource_names_subscribe = subscribe;
    request.n_resource_names_unsubscribe = n_unsubscribe;
    request.resource_names_unsubscribe = unsubscribe;
    enqueue(s, &request.base, change_ack);
}

/* SotW: the request carries the type's whole subscription (none: wildcard). */
static void send_sotw(sub *s, int type, bool change_ack)
{
    Envoy__Service__Discovery__V3__DiscoveryRequest request =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    char id[96];
    if (!s->node_sent) {
        request.node = make_node(s, id, sizeof(id));
        s->node_sent = true;
    }
    const name_set *names = type == T_EDS ? &s->eds : type == T_RDS ? &s->rds : NULL;
    char *list[names && names->count ? names->count : 1];
    for (uint32_t i = 0; names != NULL && i < names->count; i++)
        list[i] = names->items[i].name;
    request.type_url = (char *)type_urls[type];
    request.version_info = s->sotw_version[type] ? s->sotw_version[type] : "";
    request.response_nonce = s->sotw_nonce[type] ? s->sotw_nonce[type] : "";
    request.n_resource_names = names ? names->count : 0;
    request.resource_names = list;
    enqueue(s, &request.base, change_ack);
}

/* Brings the subscription of `dependent` (EDS or RDS) in line with the refs
 * of `source` (clusters or listeners). */
static void resubscribe(sub *s, const name_set *source, name_set *dependent, int type)
{
    char *add[source->count ? source->count : 1];
    size_t n_add = 0;
    for (uint32_t i = 0; i < source->count; i++) {
        const char *ref = source->items[i].ref;
        if (ref == NULL || set_find(dependent, ref) != NULL)
            continue;
        bool dup = false;
        for (size_t j = 0; j < n_add && !dup; j++)
            dup = strcmp(add[j], ref) == 0;
        if (!dup)
            add[n_add++] = source->items[i].ref;
    }
    char *gone[dependent->count ? dependent->count : 1];
    size_t n_gone = 0;
    for (uint32_t i = 0; i < dependent->count; i++) {
        bool wanted = false;
        for (uint32_t j = 0; j < source->count && !wanted; j++)
            wanted =
                source->items[j].ref && strcmp(source->items[j].ref, dependent->items[i].name) == 0;
        if (!wanted)
            gone[n_gone++] = strdup(dependent->items[i].name);
    }
    if (n_add == 0 && n_gone == 0)
        return;
    for (size_t i = 0; i < n_add; i++)
        set_add(dependent, add[i]);
    for (size_t i = 0; i < n_gone; i++)
        set_remove(dependent, gone[i]);
    if (s->delta)
        send_delta(s, type, NULL, add, n_add, gone, n_gone, false);
    else
        send_sotw(s, type, false);
    for (size_t i = 0; i < n_gone; i++)
        free(gone[i]);
}

/* ---- reading resources ---- */

static const char *eds_name_of(const Google__Protobuf__Any *any, const char *name, char *out,
                               size_t size)
{
    char error[128];
    Envoy__Config__Cluster__V3__Cluster *cluster =
        (Envoy__Config__Cluster__V3__Cluster *)any_unpack(
            any, &envoy__config__cluster__v3__cluster__descriptor, error, sizeof(error));
    if (cluster == NULL)
        return NULL;
    const char *result = NULL;
    if (cluster->cluster_discovery_type_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
        cluster->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS) {
        const char *service =
            cluster->eds_cluster_config ? cluster->eds_cluster_config->service_name : NULL;
        snprintf(out, size, "%s", service && service[0] ? service : name);
        result = out;
    }
    protobuf_c_message_free_unpacked(&cluster->base, NULL);
    return result;
}

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm;

static bool rds_of_hcm(const Google__Protobuf__Any *any, char *out, size_t size)
{
    if (any == NULL || any->type_url == NULL || strcmp(any->type_url, HCM_TYPE) != 0)
        return false;
    char error[128];
    hcm *manager = (hcm *)any_unpack(
        any,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
        error, sizeof(error));
    if (manager == NULL)
        return false;
    bool found = false;
    if (manager->route_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS &&
        manager->rds != NULL && manager->rds->route_config_name != NULL) {
        snprintf(out, size, "%s", manager->rds->route_config_name);
        found = true;
    }
    protobuf_c_message_free_unpacked(&manager->base, NULL);
    return found;
}

/* The RDS name a listener needs, or NULL (inline routes). */
static const char *rds_name_of(const Google__Protobuf__Any *any, char *out, size_t size)
{
    char error[128];
    Envoy__Config__Listener__V3__Listener *listener =
        (Envoy__Config__Listener__V3__Listener *)any_unpack(
            any, &envoy__config__listener__v3__listener__descriptor, error, sizeof(error));
    if (listener == NULL)
        return NULL;
    bool found =
        listener->api_listener && rds_of_hcm(listener->api_listener->api_listener, out, size);
    for (size_t c = 0; !found && c < listener->n_filter_chains; c++) {
        const Envoy__Config__Listener__V3__FilterChain *chain = listener->filter_chains[c];
        for (size_t f = 0; !found && f < chain->n_filters; f++)
            if (chain->filters[f]->config_type_case ==
                ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG)
                found = rds_of_hcm(chain->filters[f]->typed_config, out, size);
    }
    protobuf_c_message_free_unpacked(&listener->base, NULL);
    return found ? out : NULL;
}

typedef enum {
    PHASE_CONNECT,
    PHASE_SETTLE,
    PHASE_CHANGE_QUIET,
    PHASE_CHANGE_RUN,
    PHASE_CHANGE_POST,
    PHASE_CHANGE_STATUS,
    PHASE_DONE
} phase_kind;
static phase_kind phase;

/* One resource received: note it; true when it carries the measured change. */
static bool take_resource(sub *s, int type, const char *name, const Google__Protobuf__Any *any)
{
    char ref[256];
    s->resources++;
    if (type == T_CDS) {
        entry *item = set_add(&s->clusters, name);
        set_set_ref(item, any ? eds_name_of(any, name, ref, sizeof(ref)) : NULL);
    } else if (type == T_LDS) {
        entry *item = set_add(&s->listeners, name);
        set_set_ref(item, any ? rds_name_of(any, ref, sizeof(ref)) : NULL);
    } else if (type == T_EDS && any != NULL) {
        entry *item = set_find(&s->eds, name);
        if (item == NULL)
            return false;
        uint64_t hash = fnv64(any->value.data, any->value.len);
        bool changed = item->hash != 0 && item->hash != hash;
        item->hash = hash;
        if (changed && strcmp(name, opt.change_service) == 0) {
            if (phase == PHASE_CHANGE_RUN && s->affected)
                return true;
            stat_unexpected_change++;
        }
    }
    return false;
}

static void sync_check(sub *s);

static void on_delta_response(sub *s, const uint8_t *data, size_t length)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
        envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, length, data);
    if (response == NULL)
        return;
    int type = type_of(response->type_url);
    if (type < 0) {
        envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
        return;
    }
    bool carries_change = false;
    for (size_t i = 0; i < response->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *resource = response->resources[i];
        carries_change |= take_resource(s, type, resource->name, resource->resource);
    }
    for (size_t i = 0; i < response->n_removed_resources; i++) {
        const char *name = response->removed_resources[i];
        s->resources++;
        if (type == T_CDS)
            set_remove(&s->clusters, name);
        else if (type == T_LDS)
            set_remove(&s->listeners, name);
        else if (type == T_EDS) {
            entry *item = set_find(&s->eds, name);
            if (item)
                item->hash = 0;
        }
    }
    s->got[type] = true;
    /* Like Envoy: the dependent subscription first, then the ACK. */
    if (type == T_CDS)
        resubscribe(s, &s->clusters, &s->eds, T_EDS);
    else if (type == T_LDS)
        resubscribe(s, &s->listeners, &s->rds, T_RDS);
    send_delta(s, type, response->nonce, NULL, 0, NULL, 0, carries_change);
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
    sync_check(s);
}

static void on_sotw_response(sub *s, const uint8_t *data, size_t length)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *response =
        envoy__service__discovery__v3__discovery_response__unpack(NULL, length, data);
    if (response == NULL)
        return;
    int type = type_of(response->type_url);
    if (type < 0) {
        envoy__service__discovery__v3__discovery_response__free_unpacked(response, NULL);
        return;
    }
    /* LDS and CDS responses are the whole set: what is not there is gone. */
    name_set *whole = type == T_CDS ? &s->clusters : type == T_LDS ? &s->listeners : NULL;
    name_set fresh = {0};
    bool carries_change = false;
    for (size_t r = 0; r < response->n_resources; r++) {
        const Google__Protobuf__Any *any = response->resources[r];
        char name[256] = "";
        char error[128];
        if (type == T_CDS) {
            Envoy__Config__Cluster__V3__Cluster *cluster =
                (Envoy__Config__Cluster__V3__Cluster *)any_unpack(
                    any, &envoy__config__cluster__v3__cluster__descriptor, error, sizeof(error));
            if (cluster) {
                snprintf(name, sizeof(name), "%s", cluster->name);
                protobuf_c_message_free_unpacked(&cluster->base, NULL);
            }
        } else if (type == T_LDS) {
            Envoy__Config__Listener__V3__Listener *listener =
                (Envoy__Config__Listener__V3__Listener *)any_unpack(
                    any, &envoy__config__listener__v3__listener__descriptor, error, sizeof(error));
            if (listener) {
                snprintf(name, sizeof(name), "%s", listener->name);
                protobuf_c_message_free_unpacked(&listener->base, NULL);
            }
        } else if (type == T_EDS) {
            Envoy__Config__Endpoint__V3__ClusterLoadAssignment *assignment =
                (Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)any_unpack(
                    any, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, error,
                    sizeof(error));
            if (assignment) {
                snprintf(name, sizeof(name), "%s", assignment->cluster_name);
                protobuf_c_message_free_unpacked(&assignment->base, NULL);
            }
        } else {
            s->resources++;
            continue;
        }
        if (name[0] == '\0')
            continue;
        if (whole != NULL)
            set_add(&fresh, name);
        carries_change |= take_resource(s, type, name, any);
    }
    if (whole != NULL) {
        for (uint32_t i = 0; i < whole->count;) {
            if (set_find(&fresh, whole->items[i].name) == NULL)
                set_remove(whole, whole->items[i].name);
            else
                i++;
        }
    }
    set_clear(&fresh);
    free(s->sotw_version[type]);
    free(s->sotw_nonce[type]);
    s->sotw_version[type] = strdup(response->version_info ? response->version_info : "");
    s->sotw_nonce[type] = strdup(response->nonce ? response->nonce : "");
    s->got[type] = true;
    /* The ACK first: a request with the new EDS/RDS names then carries this nonce too. */
    send_sotw(s, type, carries_change);
    if (type == T_CDS)
        resubscribe(s, &s->clusters, &s->eds, T_EDS);
    else if (type == T_LDS)
        resubscribe(s, &s->listeners, &s->rds, T_RDS);
    envoy__service__discovery__v3__discovery_response__free_unpacked(response, NULL);
    sync_check(s);
}

/* ---- the call ---- */

static int connecting;      /* started, not yet synced or given up */
static int synced_count[2]; /* [delta?] */

static void start_receive(sub *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->received;
    if (grpc_call_start_batch(s->call, &op, 1, &s->tags[TAG_RECV], NULL) == GRPC_CALL_OK)
        s->pending++;
}

static double deadline_at;

static void start_call(sub *s)
{
    grpc_slice method = grpc_slice_from_static_string(s->delta ? DELTA_METHOD : SOTW_METHOD);
    gpr_timespec call_deadline = in_ms((int64_t)((deadline_at - now_s() + 60) * 1000));
    s->call = grpc_channel_create_call(s->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                       call_deadline, NULL);
    s->attempts++;
    s->call_ended = false;
    s->node_sent = false;
    s->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    if (grpc_call_start_batch(s->call, ops, 2, &s->tags[TAG_START], NULL) == GRPC_CALL_OK)
        s->pending++;
    grpc_op status;
    memset(&status, 0, sizeof(status));
    status.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    status.data.recv_status_on_client.status = &s->status;
    status.data.recv_status_on_client.status_details = &s->status_details;
    if (grpc_call_start_batch(s->call, &status, 1, &s->tags[TAG_STATUS], NULL) == GRPC_CALL_OK)
        s->pending++;
    start_receive(s);
    /* Wildcard CDS and LDS; EDS and RDS follow from what they name. */
    if (s->delta) {
        send_delta(s, T_CDS, NULL, NULL, 0, NULL, 0, false);
        send_delta(s, T_LDS, NULL, NULL, 0, NULL, 0, false);
    } else {
        send_sotw(s, T_CDS, false);
        send_sotw(s, T_LDS, false);
    }
}

static void reset_xds_state(sub *s)
{
    set_clear(&s->clusters);
    set_clear(&s->listeners);
    set_clear(&s->eds);
    set_clear(&s->rds);
    for (int t = 0; t < T_COUNT; t++) {
        free(s->sotw_version[t]);
        free(s->sotw_nonce[t]);
        s->sotw_version[t] = s->sotw_nonce[t] = NULL;
        s->got[t] = false;
    }
}

static void start_sub(sub *s)
{
    static grpc_channel_credentials *credentials;
    if (credentials == NULL)
        credentials = grpc_insecure_credentials_create();
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL; /* own subchannel: own TCP connection */
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ENABLE_RETRIES; /* no retry buffering in the client */
    args[1].value.integer = 0;
    grpc_channel_args channel_args = {2, args};
    s->channel = grpc_channel_create(xds_target, credentials, &channel_args);
    s->started = true;
    s->started_at = now_s();
    connecting++;
    start_call(s);
}

static void sync_check(sub *s)
{
    if (s->synced || !(s->got[T_CDS] && s->got[T_EDS] && s->got[T_LDS] && s->got[T_RDS]))
        return;
    s->synced = true;
    s->synced_at = now_s();
    connecting--;
    synced_count[s->delta]++;
}

/* The call is over and every batch came back: free it, and retry while connecting. */
static void finish_call(sub *s)
{
    if (errors_shown < SHOWN_ERRORS && phase != PHASE_DONE) {
        char *details = grpc_slice_to_c_string(s->status_details);
        fprintf(stderr, "xds_fanout: %s subscriber %d: stream ended, status %d (%s)%s\n",
                s->delta ? "delta" : "sotw", s->index, (int)s->status, details,
                s->synced ? "" : ", while connecting");
        gpr_free(details);
        errors_shown++;
    }
    drop_queue(s);
    s->sending = false;
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->status_details);
    grpc_call_unref(s->call);
    s->call = NULL;
    if (phase == PHASE_DONE)
        return;
    if (s->synced) {
        s->lost = true;
        stat_lost++;
        return;
    }
    reset_xds_state(s);
    if (s->attempts < MAX_ATTEMPTS && now_s() < deadline_at) {
        stat_retries++;
        start_call(s);
    } else {
        s->failed = true;
        stat_failed++;
        connecting--;
    }
}

static void settle_batch(sub *s)
{
    s->pending--;
    if (s->call_ended && s->pending == 0)
        finish_call(s);
}

static void on_event(ev_tag *tag, bool success)
{
    sub *s = tag->owner;
    switch (tag->kind) {
    case TAG_START:
        break;
    case TAG_STATUS:
        s->call_ended = true;
        break;
    case TAG_RECV: {
        grpc_byte_buffer *buffer = s->received;
        s->received = NULL;
        if (!success || buffer == NULL) {
            if (buffer)
                grpc_byte_buffer_destroy(buffer);
            break; /* the server ended the stream; the status follows */
        }
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, buffer);
        grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        grpc_byte_buffer_destroy(buffer);
        size_t length = GRPC_SLICE_LENGTH(slice);
        s->bytes += length;
        s->messages++;
        last_rx_at = now_s();
        if (s->delta)
            on_delta_response(s, GRPC_SLICE_START_PTR(slice), length);
        else
            on_sotw_response(s, GRPC_SLICE_START_PTR(slice), length);
        grpc_slice_unref(slice);
        if (!s->call_ended)
            start_receive(s);
        break;
    }
    case TAG_SEND: {
        s->sending = false;
        outmsg *item = s->queue_head;
        if (item != NULL) {
            s->queue_head = item->next;
            if (s->queue_head == NULL)
                s->queue_tail = NULL;
            grpc_byte_buffer_destroy(item->buffer);
            free(item);
        }
        if (success)
            start_send(s);
        break;
    }
    }
    settle_batch(s);
}

/* ---- /proc ---- */

static double own_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long proc_status_kb(long pid, const char *key)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *file = fopen(path, "r");
    long value = -1;
    size_t key_length = strlen(key);
    while (file != NULL && fgets(line, sizeof(line), file) != NULL) {
        if (strncmp(line, key, key_length) == 0 && line[key_length] == ':') {
            value = strtol(line + key_length + 1, NULL, 10);
            break;
        }
    }
    if (file)
        fclose(file);
    return value;
}

/* Open descriptors of a process (sockets included). */
static long proc_fd_count(long pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
    DIR *directory = opendir(path);
    long count = 0;
    for (struct dirent *item; directory != NULL && (item = readdir(directory)) != NULL;)
        count += item->d_name[0] != '.';
    if (directory)
        closedir(directory);
    return directory ? count : -1;
}

/* utime + stime of a process, in seconds. */
static double proc_cpu_s(long pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *file = fopen(path, "r");
    size_t got = file ? fread(text, 1, sizeof(text) - 1, file) : 0;
    if (file)
        fclose(file);
    text[got] = '\0';
    char *p = strrchr(text, ')');
    if (p == NULL)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* after ") ": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the REST change, on its own thread ---- */

typedef struct rest_job {
    char url[256];
    char body[160]; /* PUT when not empty, GET otherwise */
    char auth[320];
    double started_at, done_at;
    int64_t done_wall_ms; /* CLOCK_REALTIME, to compare with atriumd's proxy status */
    long status;
    char *response; /* GET: the body (free) */
    size_t response_length;
    char error[CURL_ERROR_SIZE];
    atomic_bool done;
} rest_job;

static size_t collect_body(char *data, size_t size, size_t count, void *context)
{
    rest_job *job = context;
    size_t length = size * count;
    if (job->body[0] != '\0')
        return length; /* PUT: the reply is not needed */
    char *grown = realloc(job->response, job->response_length + length + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + job->response_length, data, length);
    job->response = grown;
    job->response_length += length;
    grown[job->response_length] = '\0';
    return length;
}

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *run_rest(void *context)
{
    rest_job *job = context;
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, job->auth);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    job->error[0] = '\0';
    if (curl != NULL) {
        curl_easy_setopt(curl, CURLOPT_URL, job->url);
        if (job->body[0] != '\0') {
            curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, job->body);
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, job);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, job->error);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        job->started_at = now_s();
        CURLcode code = curl_easy_perform(curl);
        job->done_at = now_s();
        job->done_wall_ms = wall_ms();
        if (code == CURLE_OK)
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &job->status);
        else if (job->error[0] == '\0')
            snprintf(job->error, sizeof(job->error), "%s", curl_easy_strerror(code));
        curl_easy_cleanup(curl);
    } else {
        snprintf(job->error, sizeof(job->error), "curl_easy_init failed");
    }
    curl_slist_free_all(headers);
    atomic_store(&job->done, true);
    return NULL;
}

/* ---- statistics ---- */

static int compare_doubles(const void *left, const void *right)
{
    double a = *(const double *)left, b = *(const double *)right;
    return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, size_t count, double p)
{
    if (count == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return sorted[rank - 1];
}

typedef struct change_result {
    bool measured; /* the PUT succeeded and the window was observed */
    long http_status;
    double put_ms; /* PUT sent → 2xx */
    int affected[2], acked[2];
    double p50[2], p99[2], max[2]; /* seconds from the 2xx */
    double bytes_mean[2], bytes_max[2], res_mean[2], msgs_mean[2];
    uint64_t unaffected_bytes[2];
    int unaffected_receivers[2];
    int exact_one[2]; /* affected subscribers that received exactly one resource */
    double cpu_s;     /* atriumd CPU during the window */
    double own_cpu_s; /* the generator's, which shares the machine */
    /* atriumd's own record (GET /v1/proxies), ms after the 2xx, wall clock */
    int server_count;
    double server_sent[3], server_acked[3]; /* p50, p99, max */
} change_result;

static change_result changes[MAX_CHANGES];
static double all_samples_max;

static void collect_change(change_result *result, double done_at)
{
    for (int group = 0; group < 2; group++) {
        bool delta = group == 1;
        double *samples = calloc((size_t)total_subs + 1, sizeof(double));
        size_t n = 0;
        double bytes_sum = 0, res_sum = 0, msgs_sum = 0;
        for (int i = 0; samples && i < total_subs; i++) {
            sub *s = &subs[i];
            if (s->delta != delta || !s->synced)
                continue;
            uint64_t bytes = s->bytes - s->mark_bytes;
            uint64_t resources = s->resources - s->mark_resources;
            if (!s->affected) {
                result->unaffected_bytes[group] += bytes;
                result->unaffected_receivers[group] += bytes > 0;
                continue;
            }
            result->affected[group]++;
            bytes_sum += (double)bytes;
            res_sum += (double)resources;
            msgs_sum += (double)(s->messages - s->mark_messages);
            if ((double)bytes > result->bytes_max[group])
                result->bytes_max[group] = (double)bytes;
            result->exact_one[group] += resources == 1;
            if (s->change_acked_at > 0) {
                result->acked[group]++;
                samples[n++] = s->change_acked_at - done_at;
            }
        }
        if (n > 0) {
            qsort(samples, n, sizeof(double), compare_doubles);
            result->p50[group] = percentile(samples, n, 50);
            result->p99[group] = percentile(samples, n, 99);
            result->max[group] = samples[n - 1];
            if (samples[n - 1] > all_samples_max)
                all_samples_max = samples[n - 1];
        }
        int affected = result->affected[group];
        if (affected > 0) {
            result->bytes_mean[group] = bytes_sum / affected;
            result->res_mean[group] = res_sum / affected;
            result->msgs_mean[group] = msgs_sum / affected;
        }
        free(samples);
    }
}

/* atriumd's view of a change: each bench proxy's ClusterLoadAssignment
 * sent_at_ms / acked_at_ms from GET /v1/proxies, relative to the 2xx. */
static void collect_server_view(change_result *result, const char *body, int64_t done_wall_ms,
                                int64_t put_wall_ms)
{
    json_error_t error;
    json_t *root = json_loads(body ? body : "", 0, &error);
    json_t *proxies = json_object_get(root, "proxies");
    size_t count = json_array_size(proxies);
    double *sent = calloc(count + 1, sizeof(double)), *acked = calloc(count + 1, sizeof(double));
    size_t n = 0;
    for (size_t i = 0; sent && acked && i < count; i++) {
        json_t *proxy = json_array_get(proxies, i);
        const char *node = json_string_value(json_object_get(proxy, "node_id"));
        if (node == NULL || strncmp(node, "bench-", 6) != 0)
            continue;
        json_t *types = json_object_get(proxy, "types");
        for (size_t t = 0; t < json_array_size(types); t++) {
            json_t *type = json_array_get(types, t);
            const char *url = json_string_value(json_object_get(type, "type_url"));
            if (url == NULL || strcmp(url, type_urls[T_EDS]) != 0)
                continue;
            json_int_t sent_at = json_integer_value(json_object_get(type, "sent_at_ms"));
            json_int_t acked_at = json_integer_value(json_object_get(type, "acked_at_ms"));
            if (sent_at < put_wall_ms || acked_at < sent_at)
                continue; /* not pushed for this change (unaffected), or not ACKed */
            sent[n] = (double)(sent_at - done_wall_ms) / 1000.0;
            acked[n] = (double)(acked_at - done_wall_ms) / 1000.0;
            n++;
        }
    }
    if (n > 0) {
        qsort(sent, n, sizeof(double), compare_doubles);
        qsort(acked, n, sizeof(double), compare_doubles);
        result->server_sent[0] = percentile(sent, n, 50);
        result->server_sent[1] = percentile(sent, n, 99);
        result->server_sent[2] = sent[n - 1];
        result->server_acked[0] = percentile(acked, n, 50);
        result->server_acked[1] = percentile(acked, n, 99);
        result->server_acked[2] = acked[n - 1];
    }
    result->server_count = (int)n;
    free(sent);
    free(acked);
    json_decref(root);
}

/* ---- main ---- */

static int parse_options(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(flag, "--help") == 0) {
            fputs(usage, stdout);
            exit(0);
        }
        if (value == NULL) {
            fprintf(stderr, "xds_fanout: %s needs a value\n%s", flag, usage);
            return -1;
        }
        i++;
        if (strcmp(flag, "--xds") == 0)
            opt.xds = value;
        else if (strcmp(flag, "--rest") == 0)
            opt.rest = value;
        else if (strcmp(flag, "--token-file") == 0)
            opt.token_file = value;
        else if (strcmp(flag, "--pid") == 0)
            opt.pid = strtol(value, NULL, 10);
        else if (strcmp(flag, "--subscribers") == 0)
            opt.subscribers = atoi(value);
        else if (strcmp(flag, "--sotw") == 0)
            opt.sotw = atoi(value);
        else if (strcmp(flag, "--services") == 0)
            opt.services = atoi(value);
        else if (strcmp(flag, "--connect-concurrency") == 0)
            opt.concurrency = atoi(value);
        else if (strcmp(flag, "--changes") == 0)
            opt.changes = atoi(value);
        else if (strcmp(flag, "--order") == 0)
            opt.order = value;
        else if (strcmp(flag, "--change-service") == 0)
            opt.change_service = value;
        else if (strcmp(flag, "--change-endpoint") == 0)
            opt.change_endpoint = value;
        else if (strcmp(flag, "--deadline-s") == 0)
            opt.deadline_s = atof(value);
        else if (strcmp(flag, "--change-timeout-s") == 0)
            opt.change_timeout_s = atof(value);
        else if (strcmp(flag, "--quiet-s") == 0)
            opt.quiet_s = atof(value);
        else if (strcmp(flag, "--pre-change-pause-s") == 0)
            opt.pause_s = atof(value);
        else {
            fprintf(stderr, "xds_fanout: unknown option %s\n%s", flag, usage);
            return -1;
        }
    }
    if (opt.xds == NULL || opt.rest == NULL || opt.token_file == NULL || opt.pid <= 0) {
        fprintf(stderr, "xds_fanout: --xds, --rest, --token-file and --pid are required\n%s",
                usage);
        return -1;
    }
    if (strncmp(opt.xds, "127.0.0.1:", 10) != 0 || strncmp(opt.rest, "127.0.0.1:", 10) != 0) {
        fprintf(stderr, "xds_fanout: only 127.0.0.1 targets\n");
        return -1;
    }
    if (opt.subscribers < 0 || opt.sotw < 0 || opt.subscribers + opt.sotw < 1 ||
        opt.subscribers + opt.sotw > 200000 || opt.services < 1 || opt.concurrency < 1 ||
        opt.changes < 0 || opt.changes > MAX_CHANGES || opt.deadline_s <= 0 ||
        opt.change_timeout_s <= 0 || opt.quiet_s < 0 || opt.pause_s < 0 ||
        (strcmp(opt.order, "interleaved") != 0 && strcmp(opt.order, "delta-first") != 0 &&
         strcmp(opt.order, "sotw-first") != 0)) {
        fprintf(stderr, "xds_fanout: an option is out of range\n");
        return -1;
    }
    return 0;
}

static void raise_fd_limit(int needed)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return;
    rlim_t want = (rlim_t)needed;
    if (limit.rlim_cur >= want)
        return;
    if (limit.rlim_max < want && limit.rlim_max != RLIM_INFINITY) {
        struct rlimit raised = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            return;
        want = limit.rlim_max;
        fprintf(stderr, "xds_fanout: warning: fd hard limit %lu < %d needed\n",
                (unsigned long)limit.rlim_max, needed);
    }
    limit.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &limit);
}

static const char *verdict(bool met)
{
    return met ? "met" : "NOT met";
}

/* The start order: two waves; each ends with a settle and an RSS reading. */
static int *order;
static int wave_end[2];
static const char *wave_label[2];

static void build_order(void)
{
    int n = opt.subscribers, m = opt.sotw, k = 0;
    if (strcmp(opt.order, "interleaved") == 0) {
        /* sotw j goes after about (j + 0.5) * (n + m) / m of the order */
        int delta_next = 0, sotw_next = 0;
        for (int position = 0; position < total_subs; position++) {
            bool take_sotw =
                sotw_next < m &&
                (delta_next >= n || (double)position + 0.5 >= (sotw_next + 0.5) * total_subs / m);
            order[k++] = take_sotw ? n + sotw_next++ : delta_next++;
        }
        wave_end[0] = wave_end[1] = total_subs;
        wave_label[0] = "delta+sotw";
    } else {
        bool sotw_first = strcmp(opt.order, "sotw-first") == 0;
        for (int pass = 0; pass < 2; pass++) {
            bool sotw = (pass == 0) == sotw_first;
            for (int i = 0; i < (sotw ? m : n); i++)
                order[k++] = sotw ? n + i : i;
            wave_end[pass] = k;
            wave_label[pass] = sotw ? "sotw" : "delta";
        }
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_options(argc, argv) != 0)
        return 2;
    char default_endpoint[96];
    if (opt.change_endpoint == NULL) {
        snprintf(default_endpoint, sizeof(default_endpoint), "%s-a", opt.change_service);
        opt.change_endpoint = default_endpoint;
    }
    char token[256] = "";
    FILE *token_file = fopen(opt.token_file, "r");
    if (token_file == NULL || fgets(token, sizeof(token), token_file) == NULL) {
        fprintf(stderr, "xds_fanout: cannot read the token from %s\n", opt.token_file);
        return 2;
    }
    fclose(token_file);
    token[strcspn(token, "\r\n")] = '\0';

    total_subs = opt.subscribers + opt.sotw;
    raise_fd_limit(total_subs + 256);
    subs = calloc((size_t)total_subs, sizeof(*subs));
    order = calloc((size_t)total_subs, sizeof(*order));
    if (subs == NULL || order == NULL)
        return 2;
    for (int i = 0; i < total_subs; i++) {
        sub *s = &subs[i];
        s->delta = i < opt.subscribers;
        s->index = s->delta ? i : i - opt.subscribers;
        snprintf(s->service, sizeof(s->service), "svc-%d", s->index % opt.services);
        for (int k = 0; k < 4; k++)
            s->tags[k] = (ev_tag){k, s};
    }
    build_order();
    snprintf(xds_target, sizeof(xds_target), "ipv4:%s", opt.xds);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);

    double start = now_s();
    deadline_at = start + opt.deadline_s;
    long rss_before = proc_status_kb(opt.pid, "VmRSS");
    long rss_wave[2] = {-1, -1}, rss_after_changes = -1, threads_after = -1, fds_after = -1;
    long fds_before = proc_fd_count(opt.pid);
    double wave_started[2] = {0, 0}, wave_synced[2] = {0, 0};
    double cpu_start = proc_cpu_s(opt.pid), cpu_wave[2] = {-1, -1};
    int synced_wave[2] = {0, 0};
    int wave = 0, position = 0, change_index = 0;
    double phase_started = start;
    rest_job job;
    memset(&job, 0, sizeof(job));
    int64_t put_wall_ms = 0, put_done_wall_ms = 0;
    pthread_t rest_thread;
    bool rest_running = false, timed_out = false;
    const char *stopped_in = NULL;
    last_rx_at = start;
    phase = PHASE_CONNECT;
    printf("xds_fanout: atriumd pid %ld, xDS %s, REST %s; %d delta + %d sotw subscribers over %d "
           "services, order %s; connect concurrency %d; change %s/endpoints/%s x%d\n",
           opt.pid, opt.xds, opt.rest, opt.subscribers, opt.sotw, opt.services, opt.order,
           opt.concurrency, opt.change_service, opt.change_endpoint, opt.changes);
    double last_progress = start;

    while (phase != PHASE_DONE) {
        grpc_event event = grpc_completion_queue_next(cq, in_ms(20), NULL);
        if (event.type == GRPC_OP_COMPLETE)
            on_event(event.tag, event.success != 0);
        else if (event.type == GRPC_QUEUE_SHUTDOWN)
            break;
        /* Drain whatever else is ready before looking at the phase. */
        for (int burst = 0; burst < 256 && event.type == GRPC_OP_COMPLETE; burst++) {
            event = grpc_completion_queue_next(cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
            if (event.type == GRPC_OP_COMPLETE)
                on_event(event.tag, event.success != 0);
        }
        double now = now_s();
        if (now >= deadline_at) {
            static const char *const names[] = {"connecting",
                                                "settling",
                                                "waiting for quiet",
                                                "measuring a change",
                                                "after a change",
                                                "reading status",
                                                "done"};
            timed_out = true;
            stopped_in = names[phase];
            phase = PHASE_DONE;
            break;
        }
        if (now - last_progress >= 5.0) {
            last_progress = now;
            fprintf(stderr,
                    "xds_fanout: %.0f s: synced delta %d/%d sotw %d/%d, connecting %d, failed %ld, "
                    "atriumd RSS %ld kB\n",
                    now - start, synced_count[1], opt.subscribers, synced_count[0], opt.sotw,
                    connecting, stat_failed, proc_status_kb(opt.pid, "VmRSS"));
        }
        bool quiet = now - last_rx_at >= opt.quiet_s;
        switch (phase) {
        case PHASE_CONNECT:
            while (position < wave_end[wave] && connecting < opt.concurrency)
                start_sub(&subs[order[position++]]);
            if (position == wave_end[wave] && connecting == 0) {
                phase = PHASE_SETTLE;
                phase_started = now;
            }
            break;
        case PHASE_SETTLE:
            if ((quiet && now - phase_started >= 1.0) || now - phase_started >= 15.0) {
                rss_wave[wave] = proc_status_kb(opt.pid, "VmRSS");
                cpu_wave[wave] = proc_cpu_s(opt.pid);
                threads_after = proc_status_kb(opt.pid, "Threads");
                fds_after = proc_fd_count(opt.pid);
                for (int p = wave ? wave_end[0] : 0; p < wave_end[wave]; p++) {
                    const sub *s = &subs[order[p]];
                    synced_wave[wave] += s->synced;
                    if (s->started &&
                        (wave_started[wave] == 0 || s->started_at < wave_started[wave]))
                        wave_started[wave] = s->started_at;
                    if (s->synced && s->synced_at > wave_synced[wave])
                        wave_synced[wave] = s->synced_at;
                }
                fprintf(stderr, "xds_fanout: %s connected: %d synced\n", wave_label[wave],
                        synced_wave[wave]);
                phase_started = now;
                if (wave == 0 && wave_end[1] > wave_end[0]) {
                    wave = 1;
                    phase = PHASE_CONNECT;
                } else {
                    phase = PHASE_CHANGE_QUIET;
                    fprintf(stderr, "xds_fanout: all connected; changes start in %.1f s\n",
                            opt.pause_s);
                }
            }
            break;
        case PHASE_CHANGE_QUIET:
            if (change_index >= opt.changes) {
                phase = PHASE_DONE;
                break;
            }
            if (change_index == 0 && now - phase_started < opt.pause_s)
                break;
            if (quiet || now - phase_started >= 15.0 + (change_index ? 0 : opt.pause_s)) {
                for (int i = 0; i < total_subs; i++) {
                    sub *s = &subs[i];
                    entry *watched = set_find(&s->eds, opt.change_service);
                    s->affected = s->synced && !s->lost && watched != NULL && watched->hash != 0;
                    s->change_acked_at = 0;
                    s->mark_bytes = s->bytes;
                    s->mark_messages = s->messages;
                    s->mark_resources = s->resources;
                }
                memset(&job, 0, sizeof(job));
                snprintf(job.url, sizeof(job.url), "http://%s/v1/services/%s/endpoints/%s",
                         opt.rest, opt.change_service, opt.change_endpoint);
                snprintf(job.body, sizeof(job.body), "{\"address\":\"10.255.%d.%d\",\"port\":%d}",
                         change_index / 250, change_index % 250 + 1, 9000 + change_index);
                snprintf(job.auth, sizeof(job.auth), "Authorization: Bearer %s", token);
                atomic_store(&job.done, false);
                put_wall_ms = wall_ms();
                changes[change_index].cpu_s = proc_cpu_s(opt.pid);
                changes[change_index].own_cpu_s = own_cpu_s();
                phase = PHASE_CHANGE_RUN; /* before the PUT: a fast push must count */
                phase_started = now;
                if (pthread_create(&rest_thread, NULL, run_rest, &job) != 0) {
                    fprintf(stderr, "xds_fanout: cannot start the REST thread\n");
                    stopped_in = "the REST change";
                    phase = PHASE_DONE;
                    break;
                }
                rest_running = true;
            }
            break;
        case PHASE_CHANGE_RUN: {
            if (!atomic_load(&job.done))
                break; /* curl gives up after 10 s */
            change_result *result = &changes[change_index];
            if (rest_running) {
                pthread_join(rest_thread, NULL);
                rest_running = false;
                result->http_status = job.status;
                result->put_ms = (job.done_at - job.started_at) * 1000;
                put_done_wall_ms = job.done_wall_ms;
                if (job.status < 200 || job.status > 299) {
                    fprintf(stderr, "xds_fanout: PUT %s failed: HTTP %ld %s\n", job.url, job.status,
                            job.error);
                    stopped_in = "the REST change";
                    phase = PHASE_DONE;
                    break;
                }
            }
            bool all = true;
            for (int i = 0; i < total_subs && all; i++)
                all = !subs[i].affected || subs[i].change_acked_at > 0 || subs[i].lost;
            if (all || now - job.done_at >= opt.change_timeout_s) {
                phase = PHASE_CHANGE_POST;
                phase_started = now;
            }
            break;
        }
        case PHASE_CHANGE_POST:
            /* Wait for silence, to count every byte the change caused. */
            if ((quiet && now - phase_started >= 0.2) || now - phase_started >= 10.0) {
                change_result *result = &changes[change_index];
                result->cpu_s = proc_cpu_s(opt.pid) - result->cpu_s;
                result->own_cpu_s = own_cpu_s() - result->own_cpu_s;
                collect_change(result, job.done_at);
                result->measured = true;
                rss_after_changes = proc_status_kb(opt.pid, "VmRSS");
                phase = PHASE_CHANGE_STATUS;
                phase_started = now;
            }
            break;
        case PHASE_CHANGE_STATUS:
            /* atriumd writes proxy status every second: give it 1.5 s, then read it. */
            if (!rest_running && now - phase_started >= 1.5) {
                double change_done_at = job.done_at;
                memset(&job, 0, sizeof(job));
                job.done_at = change_done_at;
                snprintf(job.url, sizeof(job.url), "http://%s/v1/proxies", opt.rest);
                snprintf(job.auth, sizeof(job.auth), "Authorization: Bearer %s", token);
                atomic_store(&job.done, false);
                if (pthread_create(&rest_thread, NULL, run_rest, &job) != 0) {
                    phase = PHASE_CHANGE_QUIET;
                    change_index++;
                    break;
                }
                rest_running = true;
            } else if (rest_running && atomic_load(&job.done)) {
                pthread_join(rest_thread, NULL);
                rest_running = false;
                if (job.status == 200)
                    collect_server_view(&changes[change_index], job.response, put_done_wall_ms,
                                        put_wall_ms);
                free(job.response);
                job.response = NULL;
                change_index++;
                phase = PHASE_CHANGE_QUIET;
                phase_started = now;
            }
            break;
        case PHASE_DONE:
            break;
        }
    }
    double end = now_s();
    if (rest_running)
        pthread_join(rest_thread, NULL);
    free(job.response);

    /* ---- results ---- */
    int synced_delta = synced_count[1], synced_sotw = synced_count[0];
    double *connect_times = calloc((size_t)total_subs + 1, sizeof(double));
    printf("\n== xDS fan-out: %d services, %d delta + %d sotw subscribers (1 connection each), "
           "order %s, %ld cores ==\n",
           opt.services, opt.subscribers, opt.sotw, opt.order, sysconf(_SC_NPROCESSORS_ONLN));
    for (int w = 0; w < 2; w++) {
        if (w == 1 && wave_end[1] == wave_end[0])
            break;
        int wanted = wave_end[w] - (w ? wave_end[0] : 0);
        double took = wave_synced[w] - wave_started[w];
        printf("connect %-10s %6d/%-6d synced", wave_label[w], synced_wave[w], wanted);
        if (synced_wave[w] == wanted && took > 0)
            printf(" in %.2f s (%.0f/s, at most %d connecting at once)\n", took,
                   synced_wave[w] / took, opt.concurrency);
        else
            printf(" (incomplete)\n");
    }
    for (int group = 1; group >= 0; group--) {
        int wanted = group ? opt.subscribers : opt.sotw;
        if (wanted == 0)
            continue;
        size_t n = 0;
        for (int i = group ? 0 : opt.subscribers; i < (group ? opt.subscribers : total_subs); i++)
            if (subs[i].synced && connect_times)
                connect_times[n++] = subs[i].synced_at - subs[i].started_at;
        if (connect_times)
            qsort(connect_times, n, sizeof(double), compare_doubles);
        printf("  %-5s per subscriber, start to first CDS+EDS+LDS+RDS: p50 %.0f ms p99 %.0f ms "
               "max %.0f ms\n",
               group ? "delta" : "sotw",
               connect_times ? percentile(connect_times, n, 50) * 1000 : 0,
               connect_times ? percentile(connect_times, n, 99) * 1000 : 0,
               n && connect_times ? connect_times[n - 1] * 1000 : 0);
    }
    free(connect_times);
    printf(
        "connect issues: %ld retried, %ld failed after %d attempts, %ld streams lost after sync\n",
        stat_retries, stat_failed, MAX_ATTEMPTS, stat_lost);

    /* RSS per subscriber: of the first wave (which holds the delta group unless sotw-first). */
    double per_kb[2] = {-1, -1};
    printf("atriumd RSS: before %.1f MiB", rss_before / 1024.0);
    for (int w = 0; w < 2; w++) {
        if (rss_wave[w] < 0 || (w == 1 && wave_end[1] == wave_end[0]))
            continue;
        long base = w == 0 ? rss_before : rss_wave[0];
        if (synced_wave[w] > 0)
            per_kb[w] = (double)(rss_wave[w] - base) * 1.024 / synced_wave[w];
        printf(", %s%d %s %.1f MiB (%.1f KB/subscriber)", w ? "+" : "with ", synced_wave[w],
               wave_label[w], rss_wave[w] / 1024.0, per_kb[w]);
    }
    if (rss_after_changes >= 0)
        printf(", after the changes %.1f MiB", rss_after_changes / 1024.0);
    printf("; KB = 1000 B\natriumd threads %ld, open fds %ld before / %ld connected\n",
           threads_after, fds_before, fds_after);
    printf("atriumd CPU: connecting %.2f s", cpu_wave[0] >= 0 ? cpu_wave[0] - cpu_start : -1);
    if (wave_end[1] > wave_end[0] && cpu_wave[1] >= 0)
        printf(" + %.2f s", cpu_wave[1] - cpu_wave[0]);
    printf(", whole run %.2f s; generator RSS %.1f MiB\n", proc_cpu_s(opt.pid) - cpu_start,
           proc_status_kb(0, "VmRSS") / 1024.0);
    /* The figure held against the target: the wave with the delta subscribers. */
    int delta_wave = strcmp(opt.order, "sotw-first") == 0 ? 1 : 0;
    double target_kb = per_kb[delta_wave];

    double worst_p99[2] = {0, 0}, bytes_delta = 0, bytes_sotw = 0;
    bool delta_exact = true, all_converged[2] = {true, true};
    int measured = 0;
    for (int c = 0; c < opt.changes; c++) {
        change_result *r = &changes[c];
        if (!r->measured)
            continue;
        measured++;
        printf("change %d: PUT %s/endpoints/%s -> HTTP %ld in %.1f ms; CPU in the window: atriumd "
               "%.2f s (%.0f us per stream), generator %.2f s\n",
               c + 1, opt.change_service, opt.change_endpoint, r->http_status, r->put_ms, r->cpu_s,
               r->cpu_s * 1e6 / (synced_delta + synced_sotw > 0 ? synced_delta + synced_sotw : 1),
               r->own_cpu_s);
        for (int group = 1; group >= 0; group--) {
            if ((group ? opt.subscribers : opt.sotw) == 0)
                continue;
            printf("  %-5s %d/%d affected acked; 2xx -> ACK p50 %.0f ms p99 %.0f ms max %.0f ms; "
                   "per affected subscriber %.0f B (max %.0f B), %.2f resources, %.2f messages; "
                   "unaffected: %d received %" PRIu64 " B\n",
                   group ? "delta" : "sotw", r->acked[group], r->affected[group],
                   r->p50[group] * 1000, r->p99[group] * 1000, r->max[group] * 1000,
                   r->bytes_mean[group], r->bytes_max[group], r->res_mean[group],
                   r->msgs_mean[group], r->unaffected_receivers[group], r->unaffected_bytes[group]);
            if (r->p99[group] > worst_p99[group])
                worst_p99[group] = r->p99[group];
            if (group == 0 && r->server_count > 0)
                printf("  atriumd's own record (proxy status, ms clock, %d streams): push queued "
                       "p50 %.0f p99 %.0f max %.0f ms, ACK handled p50 %.0f p99 %.0f max %.0f ms "
                       "after the 2xx\n",
                       r->server_count, r->server_sent[0] * 1000, r->server_sent[1] * 1000,
                       r->server_sent[2] * 1000, r->server_acked[0] * 1000,
                       r->server_acked[1] * 1000, r->server_acked[2] * 1000);
            if (r->acked[group] < r->affected[group] || r->affected[group] == 0)
                all_converged[group] = false;
        }
        bytes_delta = r->bytes_mean[1];
        bytes_sotw = r->bytes_mean[0];
        delta_exact &= r->exact_one[1] == r->affected[1] && r->unaffected_bytes[1] == 0;
    }
    if (stat_unexpected_change > 0)
        printf("note: %ld responses changed %s outside a measured window\n", stat_unexpected_change,
               opt.change_service);
    bool complete = !timed_out && stopped_in == NULL && measured == opt.changes &&
                    synced_delta == opt.subscribers && synced_sotw == opt.sotw;
    if (!complete)
        printf("INCOMPLETE: %s%s after %.1f s (deadline %.0f s)\n",
               timed_out ? "deadline reached while " : "stopped in ",
               stopped_in ? stopped_in : "connecting", end - start, opt.deadline_s);

    printf("targets:\n");
    printf("  %-56s %s (ran N=%d, %d synced)\n", "N = 10000 delta subscribers connected",
           verdict(opt.subscribers >= 10000 && synced_delta >= 10000), opt.subscribers,
           synced_delta);
    if (target_kb >= 0)
        printf("  %-56s %s (%.1f KB, %s)\n", "<= 50 KB atriumd RSS per subscriber",
               verdict(target_kb <= 50.0), target_kb, wave_label[delta_wave]);
    else
        printf("  %-56s NOT measured\n", "<= 50 KB atriumd RSS per subscriber");
    if (measured > 0) {
        printf("  %-56s %s (delta p99 %.0f ms%s; sotw p99 %.0f ms%s)\n", "convergence p99 <= 1 s",
               verdict(all_converged[1] && worst_p99[1] <= 1.0), worst_p99[1] * 1000,
               all_converged[1] ? "" : ", some never ACKed", worst_p99[0] * 1000,
               opt.sotw == 0 || all_converged[0] ? "" : ", some never ACKed");
        printf("  %-56s %s (delta: %.0f B = %s; sotw: %.0f B, its whole EDS subscription)\n",
               "bytes/subscriber for one change independent of #services", verdict(delta_exact),
               bytes_delta,
               delta_exact ? "exactly the changed resource, nothing to the unaffected"
                           : "more than the changed resource",
               bytes_sotw);
    } else {
        printf("  %-56s NOT measured\n", "convergence p99 <= 1 s");
    }
    printf("RESULT subscribers=%d sotw=%d services=%d order=%s synced_delta=%d synced_sotw=%d "
           "rss_before_kb=%ld kb_per_subscriber=%.1f p99_delta_ms=%.0f p99_sotw_ms=%.0f "
           "max_ms=%.0f bytes_delta=%.0f bytes_sotw=%.0f complete=%d\n",
           opt.subscribers, opt.sotw, opt.services, opt.order, synced_delta, synced_sotw,
           rss_before, target_kb, worst_p99[1] * 1000, worst_p99[0] * 1000, all_samples_max * 1000,
           bytes_delta, bytes_sotw, complete);

    /* ---- teardown, bounded ---- */
    phase = PHASE_DONE;
    for (int i = 0; i < total_subs; i++)
        if (subs[i].call != NULL)
            grpc_call_cancel(subs[i].call, NULL);
    double teardown_until = now_s() + 10;
    bool drained = true;
    for (;;) {
        bool busy = false;
        for (int i = 0; i < total_subs && !busy; i++)
            busy = subs[i].call != NULL;
        if (!busy)
            break;
        if (now_s() > teardown_until) {
            drained = false;
            break;
        }
        grpc_event event = grpc_completion_queue_next(cq, in_ms(100), NULL);
        if (event.type == GRPC_OP_COMPLETE)
            on_event(event.tag, event.success != 0);
    }
    if (drained) {
        for (int i = 0; i < total_subs; i++) {
            if (subs[i].channel)
                grpc_channel_destroy(subs[i].channel);
            reset_xds_state(&subs[i]);
        }
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_next(cq, in_ms(1000), NULL).type == GRPC_OP_COMPLETE)
            ;
        grpc_completion_queue_destroy(cq);
        grpc_shutdown();
        free(subs);
        free(order);
    } else {
        fprintf(stderr, "xds_fanout: teardown did not drain within 10 s; exiting anyway\n");
    }
    curl_global_cleanup();
    return complete ? 0 : 2;
}
