/*
 * xds_server.c — ADS over gRPC C core: streams, subscriptions, ACK/NACK, and
 * pushes driven by the store's change log.
 *
 * Threading: one thread owns the completion queue, the model snapshot, the
 * caches and every stream. Other threads only call xds_server_notify (which
 * wakes the queue through an idle channel's connectivity watch, see
 * shared/notes/grpc-core.md) and read the atomic metrics.
 *
 * Per stream and type it remembers what the client has: for delta, each
 * resource's version; for state of the world, the version of the last
 * response. A push compares that with the stream's current view and sends
 * only the difference.
 *
 * Outside input is bounded before it costs anything (docs/architecture.md,
 * "The xDS server"): node ids and identifying metadata must be short
 * printable ASCII, subscriptions have a size, stored texts are cut, proxy
 * rows are pruned. A stream whose client does not read gets no new responses
 * queued while one is in flight: its pending types are remembered and sent at
 * their latest version once the send completes (coalescing, as
 * go-control-plane's linear cache), and a stream behind for longer than
 * slow_consumer_ms is closed with RESOURCE_EXHAUSTED. Calls for methods this
 * server does not have are answered UNIMPLEMENTED at once. On the TLS port,
 * the client certificate's serial is checked against the revoked ones for
 * every stream, and a revocation ends the live streams of that certificate.
 */
#include "xds_server.h"

#include "any.h"
#include "ca.h"
#include "clock.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "log.h"
#include "log_interval.h"
#include "string_map.h"
#include "translator.h"
#include "xds_cache.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xxhash.h>

#define SOTW_METHOD                                                                                \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define DELTA_METHOD                                                                               \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define STATUS_FLUSH_MS 1000
#define NOT_PRESENT     "" /* delta: the client was told the name does not exist */

/* Limits on what a client controls (stated in docs/architecture.md). */
#define NODE_TEXT_MAX       256             /* node id, atrium.service, atrium.namespace: bytes */
#define NACK_MESSAGE_MAX    4096            /* error_detail.message kept, then TRUNCATED */
#define RESOURCE_NAME_MAX   1024            /* one subscribed resource name */
#define NAMES_PER_TYPE_MAX  65536           /* subscribed names per stream and type */
#define VERSION_TEXT_MAX    64              /* an initial_resource_versions value kept */
#define REQUEST_BYTES_MAX   4194304         /* one request message (gRPC's receive limit) */
#define SLOW_CONSUMER_MS    30000           /* default: behind this long → RESOURCE_EXHAUSTED */
#define PROXY_RETENTION_MS  (3600LL * 1000) /* default: disconnected rows kept */
#define PROXY_ROWS_MAX      10000           /* default: proxy rows kept */
#define PRUNE_INTERVAL_MS   10000           /* how often the proxy rows are pruned */
#define COMPLAINT_PERIOD_MS 10000           /* at most one undecodable-request log line */
#define TRUNCATED           "\xe2\x80\xa6[truncated]"

/* ---- tags ---- */

typedef enum tag_kind {
    TAG_ACCEPT,
    TAG_INITIAL,
    TAG_RECEIVE,
    TAG_SEND,
    TAG_CLOSE,
    TAG_STATUS,
    TAG_WAKE,
    TAG_SHUTDOWN,
    TAG_UNKNOWN_ACCEPT, /* a call for a method this server does not have */
    TAG_REFUSED,        /* its UNIMPLEMENTED status went out */
} tag_kind;

typedef struct tag {
    tag_kind kind;
    void *owner; /* a stream or an accept slot; NULL for server tags */
} tag;

/* ---- state ---- */

/* One atrium-proxy profile's own resources, shared by the streams with it. */
typedef struct profile {
    char *key;
    proxy_profile settings;
    char *service;
    char *namespace_name;
    xds_cache *cache;
    string_map *changed[XDS_TYPE_COUNT]; /* names changed since the last push */
    int streams;
} profile;

typedef struct type_state {
    bool subscribed; /* the client asked for this type */
    bool wildcard;
    string_map *names;    /* explicit subscriptions */
    string_map *versions; /* delta: what the client has, name → version (or NOT_PRESENT) */
    char sotw_version[17];
    char nacked_version[17];
    char nonce[24];
    /* Reported to the store. */
    char sent_version[32], acked_version[32], nacked_label[32];
    char *nack_message;
    int64_t sent_at_ms, acked_at_ms, nacked_at_ms;
} type_state;

typedef struct queued {
    struct queued *next;
    grpc_byte_buffer *buffer;
} queued;

typedef struct stream {
    struct xds_server *server;
    struct stream *previous, *next;
    grpc_call *call;
    bool delta;
    tag initial_tag, receive_tag, send_tag, close_tag, status_tag;
    int pending; /* batches in flight */
    grpc_byte_buffer *received;
    int cancelled;
    bool finished; /* the call is over (close completed) */
    bool status_sent;
    bool client_done; /* half-closed or failed receive */
    queued *queue_head, *queue_tail;
    bool sending;
    /* Behind: types whose push waits for the send in flight (sent at their
     * latest version when it completes), and since when. */
    bool deferred[XDS_TYPE_COUNT];
    bool deferred_force[XDS_TYPE_COUNT];
    int64_t behind_since_ms; /* 0: not behind */
    int64_t send_started_ms; /* of the send in flight */
    /* The node. */
    char *node_id;
    profile *profile; /* set for atrium-proxy nodes */
    char *service, *namespace_name;
    type_state types[XDS_TYPE_COUNT];
    uint64_t nonce_counter;
    int64_t connected_since_ms;
    bool status_dirty;
    /* Over the TLS port: the SPIFFE ID of the client certificate. */
    bool over_tls;
    char *peer_identity;
    char *peer_serial; /* of the client certificate, as in the store */
    /* How the server ends the stream (OK unless it refused it). */
    grpc_status_code end_code;
    grpc_slice end_details;
} stream;

typedef struct accept_slot {
    tag tag;
    bool delta;
    grpc_call *call;
    grpc_metadata_array metadata;
    gpr_timespec deadline;
} accept_slot;

/* A call for an unknown method, answered UNIMPLEMENTED. */
typedef struct unknown_slot {
    tag tag;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array metadata;
} unknown_slot;

typedef struct refusal {
    tag tag;
    grpc_call *call;
    int cancelled;
    grpc_slice details;
} refusal;

/* The model of one service as last read from the store. */
typedef struct service_state {
    model_service service;
    model_endpoint_list endpoints;
    model_routes routes;
    bool has_routes;
} service_state;

struct xds_server {
    store *db;
    xds_server_options options;
    grpc_server *grpc;
    grpc_completion_queue *queue;
    void *sotw_method, *delta_method;
    accept_slot accept_sotw, accept_delta;
    unknown_slot accept_unknown;
    int refusals; /* UNIMPLEMENTED answers in flight */
    pthread_t thread;

    grpc_channel *wake_channel;
    tag wake_tag, shutdown_tag;
    atomic_bool wake_pending;
    atomic_bool stopping;
    bool shutting_down;
    bool shutdown_done;

    string_map *services; /* name → service_state */
    xds_cache *shared;
    string_map *changed[XDS_TYPE_COUNT]; /* shared names changed since the last push */
    string_map *profiles;                /* key → profile */
    stream *streams;
    int64_t revision;   /* the store revision the caches reflect */
    int64_t push_at_ms; /* 0: no push scheduled */
    int64_t last_push_ms;
    int64_t flush_at_ms;
    int64_t change_seen_ms; /* when the oldest unpushed change was noticed */
    int tls_port;
    char trust_domain[256];
    /* Revoked certificate serials (serial → 1), current as of revocation_revision. */
    string_map *revoked;
    int64_t revocation_revision;
    int64_t prune_at_ms;
    log_interval undecodable_lines; /* undecodable requests, for their log lines */

    /* Metrics (atomics: read from the admin thread). */
    atomic_long streams_sotw, streams_delta;
    atomic_long pushes[XDS_TYPE_COUNT];
    atomic_long nacks;
    atomic_long push_latency_buckets[8];
    atomic_long push_latency_count;
    atomic_llong push_latency_sum_us;
    atomic_long refused_requests; /* streams ended for a request out of bounds */
    atomic_long slow_closed;      /* streams closed for staying behind */
    atomic_long revoked_closed;   /* streams ended by a revocation */
};

static const double latency_bounds[8] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0};

/* ---- helpers ---- */

static gpr_timespec deadline_in_ms(int64_t milliseconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(milliseconds, GPR_TIMESPAN));
}

static void free_service_state(void *value)
{
    service_state *state = value;
    if (state == NULL)
        return;
    model_service_clear(&state->service);
    model_endpoint_list_free(&state->endpoints);
    model_routes_clear(&state->routes);
    free(state);
}

static void free_profile(void *value)
{
    profile *item = value;
    if (item == NULL)
        return;
    free(item->key);
    free(item->service);
    free(item->namespace_name);
    xds_cache_free(item->cache);
    for (int type = 0; type < XDS_TYPE_COUNT; type++)
        string_map_free(item->changed[type]);
    free(item);
}

static void clear_profile_changes(const char *key, void *value, void *context);

/* Remembers a changed name in one of the per-type sets (change callbacks). */
static void note_change(string_map **changed, xds_type type, const char *name)
{
    if (changed[type] == NULL)
        changed[type] = string_map_new(NULL);
    if (changed[type] != NULL)
        string_map_set(changed[type], name, (void *)1);
}

/* Copies text into a fixed buffer, cutting it if it must. */
static void copy_text(char *destination, size_t size, const char *text)
{
    size_t length = strnlen(text, size - 1);
    memmove(destination, text, length);
    destination[length] = '\0';
}

/* Whether text is 1..NODE_TEXT_MAX bytes of printable ASCII (the shape of a
 * node id or a name a client identifies itself with). */
static bool sane_identifier(const char *text)
{
    size_t length = strnlen(text, NODE_TEXT_MAX + 1);
    if (length == 0 || length > NODE_TEXT_MAX)
        return false;
    for (size_t i = 0; i < length; i++) {
        if (text[i] < 0x20 || text[i] > 0x7e)
            return false;
    }
    return true;
}

/* The length of the valid UTF-8 sequence at text (1-4), or 0 when the bytes
 * there are not one (overlong forms and surrogates included). */
static size_t utf8_sequence(const unsigned char *text, size_t available)
{
    unsigned char lead = text[0];
    if (lead < 0x80)
        return 1;
    size_t length = lead >= 0xc2 && lead <= 0xdf   ? 2
                    : lead >= 0xe0 && lead <= 0xef ? 3
                    : lead >= 0xf0 && lead <= 0xf4 ? 4
                                                   : 0;
    if (length == 0 || length > available)
        return 0;
    unsigned char low = 0x80, high = 0xbf;
    if (lead == 0xe0)
        low = 0xa0;
    else if (lead == 0xed)
        high = 0x9f;
    else if (lead == 0xf0)
        low = 0x90;
    else if (lead == 0xf4)
        high = 0x8f;
    if (text[1] < low || text[1] > high)
        return 0;
    for (size_t i = 2; i < length; i++) {
        if (text[i] < 0x80 || text[i] > 0xbf)
            return 0;
    }
    return length;
}

/* A client's free text as it is stored: valid UTF-8 (a byte that is not
 * becomes '?', control characters but tab and newline too), at most limit
 * bytes, and when cut, ended with TRUNCATED. A new string the caller frees,
 * or NULL when out of memory. */
static char *bounded_text(const char *text, size_t limit)
{
    size_t length = strlen(text);
    char *out = malloc((length < limit ? length : limit) + sizeof(TRUNCATED));
    if (out == NULL)
        return NULL;
    size_t used = 0, at = 0;
    while (at < length) {
        const unsigned char *here = (const unsigned char *)text + at;
        size_t sequence = utf8_sequence(here, length - at);
        size_t produced = sequence ? sequence : 1;
        if (used + produced > limit) {
            memcpy(out + used, TRUNCATED, sizeof(TRUNCATED));
            return out;
        }
        if (sequence == 0 || (here[0] < 0x20 && here[0] != '\t' && here[0] != '\n') ||
            here[0] == 0x7f)
            out[used] = '?';
        else
            memcpy(out + used, here, sequence);
        used += produced;
        at += produced;
    }
    out[used] = '\0';
    return out;
}

static int compare_names(const void *left, const void *right)
{
    return strcmp(*(const char *const *)left, *(const char *const *)right);
}

/* ---- the model snapshot ---- */

/* Reads one service from the store into the snapshot (or drops it when the
 * store no longer has it). Returns 0, or -1 on a store failure. */
static int reload_service(xds_server *server, const char *name)
{
    service_state *state = calloc(1, sizeof(*state));
    if (state == NULL)
        return -1;
    store_error error;
    store_status status = store_get_service(server->db, name, &state->service, &error);
    if (status == STORE_NOT_FOUND) {
        free(state);
        string_map_remove(server->services, name);
        return 0;
    }
    if (status != STORE_OK ||
        store_list_endpoints(server->db, name, &state->endpoints, &error) != STORE_OK) {
        free_service_state(state);
        return -1;
    }
    status = store_get_routes(server->db, name, &state->routes, &error);
    state->has_routes = status == STORE_OK;
    if (status != STORE_OK && status != STORE_NOT_FOUND) {
        free_service_state(state);
        return -1;
    }
    if (!string_map_set(server->services, name, state)) {
        free_service_state(state);
        return -1;
    }
    return 0;
}

static void note_shared_change(xds_type type, const char *name, void *context)
{
    note_change(((struct xds_server *)context)->changed, type, name);
}

static void note_profile_change(xds_type type, const char *name, void *context)
{
    note_change(((profile *)context)->changed, type, name);
}

static translator_service as_input(const service_state *state)
{
    return (translator_service){&state->service, state->endpoints.items, state->endpoints.count,
                                state->has_routes ? &state->routes : NULL};
}

/* Re-translates one service into the shared cache. */
static void retranslate_service(xds_server *server, const char *name)
{
    xds_resource_list resources = {0};
    service_state *state = string_map_get(server->services, name);
    if (state != NULL) {
        translator_service input = as_input(state);
        translate_service(&input, &resources);
    }
    xds_cache_replace_owner(server->shared, name, &resources, note_shared_change, server);
}

typedef struct name_list {
    const char **items;
    size_t count;
} name_list;

static void collect_name(const char *key, void *value, void *context)
{
    (void)value;
    name_list *list = context;
    const char **grown = realloc(list->items, (list->count + 1) * sizeof(char *));
    if (grown != NULL) {
        list->items = grown;
        list->items[list->count++] = key;
    }
}

/* Whether a proxy of this profile may call service `name`. */
static bool profile_may_call(const xds_server *server, const profile *item, const char *name)
{
    const service_state *own = string_map_get(server->services, item->service);
    if (own == NULL || !own->service.has_dependencies)
        return true;
    for (size_t i = 0; i < own->service.dependency_count; i++) {
        if (strcmp(own->service.dependencies[i], name) == 0)
            return true;
    }
    return false;
}

/* Rebuilds a profile's own resources from the snapshot. */
static void rebuild_profile(xds_server *server, profile *item)
{
    name_list names = {0};
    string_map_each(server->services, collect_name, &names);
    qsort(names.items, names.count, sizeof(char *), compare_names);
    translator_service *callable = calloc(names.count ? names.count : 1, sizeof(*callable));
    size_t count = 0;
    for (size_t i = 0; callable != NULL && i < names.count; i++) {
        if (profile_may_call(server, item, names.items[i]))
            callable[count++] = as_input(string_map_get(server->services, names.items[i]));
    }
    xds_resource_list resources = {0};
    if (callable != NULL)
        translate_proxy(&item->settings, callable, count, &resources);
    xds_cache_replace_owner(item->cache, item->key, &resources, note_profile_change, item);
    free(callable);
    free(names.items);
}

static void rebuild_profile_entry(const char *key, void *value, void *context)
{
    (void)key;
    rebuild_profile(context, value);
}

/* Loads every service (at start, or when the change log was compacted). */
static int reload_everything(xds_server *server, int64_t revision)
{
    model_service_list list;
    store_error error;
    if (store_list_services(server->db, &list, &error) != STORE_OK)
        return -1;
    name_list previous = {0};
    string_map_each(server->services, collect_name, &previous);
    char **gone = calloc(previous.count ? previous.count : 1, sizeof(char *));
    size_t gone_count = 0;
    for (size_t i = 0; gone != NULL && i < previous.count; i++)
        gone[gone_count++] = strdup(previous.items[i]);
    free(previous.items);
    int result = 0;
    for (size_t i = 0; i < list.count; i++) {
        if (reload_service(server, list.items[i].name) != 0)
            result = -1;
        retranslate_service(server, list.items[i].name);
    }
    /* Services the snapshot had and the store no longer lists. */
    for (size_t i = 0; i < gone_count; i++) {
        bool listed = false;
        for (size_t j = 0; j < list.count && !listed; j++)
            listed = strcmp(list.items[j].name, gone[i]) == 0;
        if (!listed) {
            string_map_remove(server->services, gone[i]);
            retranslate_service(server, gone[i]);
        }
        free(gone[i]);
    }
    free(gone);
    model_service_list_free(&list);
    string_map_each(server->profiles, rebuild_profile_entry, server);
    if (result == 0)
        server->revision = revision;
    return result;
}

/* Brings the snapshot and caches up to the store's current revision, reading
 * only the services the change log names. True when it read changes (whose
 * names now wait in the changed sets for a push). */
static bool catch_up(xds_server *server)
{
    int64_t revision = 0;
    store_revision(server->db, &revision, NULL);
    if (revision == server->revision)
        return false;
    model_change_list changes;
    store_error error;
    store_status status = store_changes_since(server->db, server->revision, 0, &changes, &error);
    if (status == STORE_NOT_FOUND) { /* compacted past us: read it all */
        reload_everything(server, revision);
        return true;
    }
    if (status != STORE_OK)
        return false; /* tried again on the next wake */
    string_map *touched = string_map_new(NULL);
    int64_t reached = server->revision;
    /* Proxy profiles hold routes of the services they may call: they change
     * with services and routes, not with endpoints. */
    bool profiles_affected = false;
    for (size_t i = 0; touched != NULL && i < changes.count; i++) {
        const model_change *change = &changes.items[i];
        if (change->revision > reached)
            reached = change->revision;
        if (change->kind == MODEL_KIND_JOIN_TOKEN || change->kind == MODEL_KIND_CERTIFICATE)
            continue;
        if (change->kind == MODEL_KIND_SERVICE || change->kind == MODEL_KIND_ROUTES)
            profiles_affected = true;
        char service[MODEL_NAME_MAX + 1];
        snprintf(service, sizeof(service), "%.*s", (int)strcspn(change->key, "/"), change->key);
        string_map_set(touched, service, (void *)1);
    }
    model_change_list_free(&changes);
    name_list names = {0};
    if (touched != NULL)
        string_map_each(touched, collect_name, &names);
    bool failed = false;
    for (size_t i = 0; i < names.count; i++) {
        if (reload_service(server, names.items[i]) != 0)
            failed = true;
        retranslate_service(server, names.items[i]);
    }
    free(names.items);
    string_map_free(touched);
    if (profiles_affected)
        string_map_each(server->profiles, rebuild_profile_entry, server);
    if (!failed)
        server->revision = reached;
    return true;
}

/* ---- the view of a stream ---- */

/* Whether a shared resource is visible to the stream. */
static bool visible_shared(const stream *client, const cache_entry *entry)
{
    if (client->profile == NULL)
        return true;
    if (entry->type == XDS_LISTENER)
        return false; /* proxies get their own listeners, not API listeners */
    return profile_may_call(client->server, client->profile, entry->owner);
}

static const cache_entry *lookup(const stream *client, xds_type type, const char *name)
{
    if (client->profile != NULL) {
        const cache_entry *own = xds_cache_get(client->profile->cache, type, name);
        if (own != NULL)
            return own;
    }
    const cache_entry *entry = xds_cache_get(client->server->shared, type, name);
    return entry != NULL && visible_shared(client, entry) ? entry : NULL;
}

typedef struct entry_list {
    const cache_entry **items;
    size_t count;
    const stream *client;
} entry_list;

static void add_entry(entry_list *list, const cache_entry *entry)
{
    const cache_entry **grown = realloc(list->items, (list->count + 1) * sizeof(*grown));
    if (grown != NULL) {
        list->items = grown;
        list->items[list->count++] = entry;
    }
}

static void add_visible_shared(const cache_entry *entry, void *context)
{
    entry_list *list = context;
    if (visible_shared(list->client, entry))
        add_entry(list, entry);
}

static void add_any(const cache_entry *entry, void *context)
{
    add_entry(context, entry);
}

static int compare_entries(const void *left, const void *right)
{
    return strcmp((*(const cache_entry *const *)left)->name,
                  (*(const cache_entry *const *)right)->name);
}

/* Every resource of `type` the stream should have now, sorted by name. */
static entry_list current_view(const stream *client, xds_type type)
{
    entry_list list = {NULL, 0, client};
    const type_state *state = &client->types[type];
    if (state->wildcard) {
        if (client->profile != NULL)
            xds_cache_each(client->profile->cache, type, add_any, &list);
        xds_cache_each(client->server->shared, type, add_visible_shared, &list);
    }
    name_list names = {0};
    string_map_each(state->names, collect_name, &names);
    for (size_t i = 0; i < names.count; i++) {
        const cache_entry *entry = lookup(client, type, names.items[i]);
        bool already = false;
        for (size_t j = 0; entry != NULL && state->wildcard && j < list.count && !already; j++)
            already = list.items[j] == entry;
        if (entry != NULL && !already)
            add_entry(&list, entry);
    }
    free(names.items);
    if (list.count > 1)
        qsort(list.items, list.count, sizeof(*list.items), compare_entries);
    return list;
}

/* ---- sending ---- */

static void start_send(stream *client);

static void enqueue(stream *client, const ProtobufCMessage *message)
{
    size_t length = protobuf_c_message_get_packed_size(message);
    grpc_slice slice = grpc_slice_malloc(length);
    protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
    queued *item = malloc(sizeof(*item));
    if (item == NULL) {
        grpc_slice_unref(slice);
        return;
    }
    item->buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    item->next = NULL;
    if (client->queue_tail)
        client->queue_tail->next = item;
    else
        client->queue_head = item;
    client->queue_tail = item;
    start_send(client);
}

static void start_send(stream *client)
{
    if (client->sending || client->queue_head == NULL || client->finished || client->status_sent)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = client->queue_head->buffer;
    if (grpc_call_start_batch(client->call, &op, 1, &client->send_tag, NULL) == GRPC_CALL_OK) {
        client->sending = true;
        client->send_started_ms = clock_monotonic_ms();
        client->pending++;
    }
}

static void next_nonce(stream *client, type_state *state)
{
    snprintf(state->nonce, sizeof(state->nonce), "%llu",
             (unsigned long long)++client->nonce_counter);
}

static void count_push(xds_server *server, xds_type type)
{
    atomic_fetch_add(&server->pushes[type], 1);
}

/* State of the world: the whole view of the type, when it differs from what
 * was sent last (and is not the version the client rejected). */
static void push_sotw(stream *client, xds_type type, bool force)
{
    type_state *state = &client->types[type];
    entry_list view = current_view(client, type);
    XXH64_state_t *hasher = XXH64_createState();
    XXH64_reset(hasher, 0);
    for (size_t i = 0; i < view.count; i++) {
        XXH64_update(hasher, view.items[i]->name, strlen(view.items[i]->name) + 1);
        XXH64_update(hasher, view.items[i]->version, sizeof(view.items[i]->version));
    }
    char version[17];
    xds_version_text(XXH64_digest(hasher), version);
    XXH64_freeState(hasher);
    if (!force && (strcmp(version, state->sotw_version) == 0 ||
                   strcmp(version, state->nacked_version) == 0)) {
        free(view.items);
        return;
    }
    Google__Protobuf__Any *anys = calloc(view.count ? view.count : 1, sizeof(*anys));
    Google__Protobuf__Any **pointers = calloc(view.count ? view.count : 1, sizeof(*pointers));
    if (anys == NULL || pointers == NULL) {
        free(anys);
        free(pointers);
        free(view.items);
        return;
    }
    for (size_t i = 0; i < view.count; i++) {
        google__protobuf__any__init(&anys[i]);
        anys[i].type_url = (char *)xds_type_url(type);
        anys[i].value.data = view.items[i]->bytes;
        anys[i].value.len = view.items[i]->length;
        pointers[i] = &anys[i];
    }
    next_nonce(client, state);
    Envoy__Service__Discovery__V3__DiscoveryResponse response =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    response.version_info = version;
    response.type_url = (char *)xds_type_url(type);
    response.nonce = state->nonce;
    response.n_resources = view.count;
    response.resources = pointers;
    enqueue(client, &response.base);
    memcpy(state->sotw_version, version, sizeof(version));
    snprintf(state->sent_version, sizeof(state->sent_version), "%s", version);
    state->sent_at_ms = clock_wall_ms();
    client->status_dirty = true;
    count_push(client->server, type);
    free(anys);
    free(pointers);
    free(view.items);
}

typedef struct removal_walk {
    stream *client;
    xds_type type;
    const char **names;
    size_t count;
} removal_walk;

static void find_removed(const char *name, void *value, void *context)
{
    removal_walk *walk = context;
    stream *client = walk->client;
    type_state *state = &client->types[walk->type];
    if (strcmp(value, NOT_PRESENT) == 0)
        return; /* already told */
    if (lookup(client, walk->type, name) != NULL &&
        (state->wildcard || string_map_get(state->names, name) != NULL))
        return; /* still there */
    const char **grown = realloc(walk->names, (walk->count + 1) * sizeof(char *));
    if (grown != NULL) {
        walk->names = grown;
        walk->names[walk->count++] = name;
    }
}

/* Appends entry to a delta response being built: the Resource and its Any
 * point at the cached bytes (nothing is copied until the response is packed). */
static void add_resource(Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
                         Envoy__Service__Discovery__V3__Resource *resources,
                         Google__Protobuf__Any *anys, xds_type type, const cache_entry *entry)
{
    size_t index = response->n_resources;
    Envoy__Service__Discovery__V3__Resource *resource = &resources[index];
    envoy__service__discovery__v3__resource__init(resource);
    google__protobuf__any__init(&anys[index]);
    anys[index].type_url = (char *)xds_type_url(type);
    anys[index].value.data = entry->bytes;
    anys[index].value.len = entry->length;
    resource->name = entry->name;
    resource->version = (char *)entry->version;
    resource->resource = &anys[index];
    response->resources[response->n_resources++] = resource;
}

/* Delta: the resources whose version the client does not have; with
 * removals, the names it has (or asked for) that are gone. */
static void push_delta(stream *client, xds_type type, bool removals)
{
    type_state *state = &client->types[type];
    char system_version[32];
    snprintf(system_version, sizeof(system_version), "%lld", (long long)client->server->revision);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse response =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    response.system_version_info = system_version;
    response.type_url = (char *)xds_type_url(type);

    Envoy__Service__Discovery__V3__Resource *resources = NULL;
    Envoy__Service__Discovery__V3__Resource **pointers = NULL;
    Google__Protobuf__Any *anys = NULL;
    entry_list view = {0};
    removal_walk walk = {client, type, NULL, 0};
    if (!removals) {
        view = current_view(client, type);
        resources = calloc(view.count ? view.count : 1, sizeof(*resources));
        pointers = calloc(view.count ? view.count : 1, sizeof(*pointers));
        anys = calloc(view.count ? view.count : 1, sizeof(*anys));
        response.resources = pointers;
        for (size_t i = 0; resources && pointers && anys && i < view.count; i++) {
            const cache_entry *entry = view.items[i];
            const char *has = string_map_get(state->versions, entry->name);
            if (has == NULL || strcmp(has, entry->version) != 0)
                add_resource(&response, resources, anys, type, entry);
        }
    } else {
        string_map_each(state->versions, find_removed, &walk);
        /* Names asked for by name that never existed are removed once too. */
        name_list asked = {0};
        string_map_each(state->names, collect_name, &asked);
        for (size_t i = 0; i < asked.count; i++) {
            if (lookup(client, type, asked.items[i]) == NULL &&
                string_map_get(state->versions, asked.items[i]) == NULL) {
                const char **grown = realloc(walk.names, (walk.count + 1) * sizeof(char *));
                if (grown != NULL) {
                    walk.names = grown;
                    walk.names[walk.count++] = asked.items[i];
                }
            }
        }
        response.n_removed_resources = walk.count;
        response.removed_resources = (char **)walk.names;
        if (walk.count > 0) {
            /* names point into maps we are about to change: send first */
            next_nonce(client, state);
            response.nonce = state->nonce;
            enqueue(client, &response.base);
            for (size_t i = 0; i < walk.count; i++) {
                char *name = strdup(walk.names[i]);
                if (name == NULL)
                    continue;
                if (string_map_get(state->names, name) != NULL)
                    string_map_set(state->versions, name, strdup(NOT_PRESENT));
                else
                    string_map_remove(state->versions, name);
                free(name);
            }
        }
        free(asked.items);
        free(walk.names);
        if (walk.count > 0) {
            snprintf(state->sent_version, sizeof(state->sent_version), "%s", system_version);
            state->sent_at_ms = clock_wall_ms();
            client->status_dirty = true;
            count_push(client->server, type);
        }
        return;
    }
    if (response.n_resources > 0) {
        next_nonce(client, state);
        response.nonce = state->nonce;
        enqueue(client, &response.base);
        for (size_t i = 0; i < response.n_resources; i++)
            string_map_set(state->versions, pointers[i]->name, strdup(pointers[i]->version));
        snprintf(state->sent_version, sizeof(state->sent_version), "%s", system_version);
        state->sent_at_ms = clock_wall_ms();
        client->status_dirty = true;
        count_push(client->server, type);
    }
    free(resources);
    free(pointers);
    free(anys);
    free(view.items);
}

/* ---- a stream that is behind ---- */

/* Whether a response is still on its way to the client: then a push is not
 * packed and queued, only remembered (deferred) per type. */
static bool behind(const stream *client)
{
    return client->sending || client->queue_head != NULL;
}

static void defer_push(stream *client, xds_type type, bool force)
{
    client->deferred[type] = true;
    client->deferred_force[type] |= force;
    if (client->behind_since_ms == 0)
        client->behind_since_ms = clock_monotonic_ms();
}

/* After the send in flight completed: every deferred type, at its latest
 * version, in make-before-break order (delta removals last). Each type is
 * compared in full with what the client has, so whatever versions went by
 * while it was behind, it gets only the current one. */
static void flush_deferred(stream *client)
{
    if (client->behind_since_ms == 0 || client->client_done || client->finished)
        return;
    bool deferred[XDS_TYPE_COUNT], force[XDS_TYPE_COUNT];
    memcpy(deferred, client->deferred, sizeof(deferred));
    memcpy(force, client->deferred_force, sizeof(force));
    memset(client->deferred, 0, sizeof(client->deferred));
    memset(client->deferred_force, 0, sizeof(client->deferred_force));
    client->behind_since_ms = 0;
    for (int pass = 0; pass < (client->delta ? 2 : 1); pass++) {
        for (int type = 0; type < XDS_TYPE_COUNT; type++) {
            if (!deferred[type] || !client->types[type].subscribed)
                continue;
            if (client->delta)
                push_delta(client, (xds_type)type, pass == 1);
            else
                push_sotw(client, (xds_type)type, force[type]);
        }
    }
}

static void record_push_latency(xds_server *server)
{
    if (server->change_seen_ms == 0)
        return;
    double seconds = (double)(clock_monotonic_ms() - server->change_seen_ms) / 1000.0;
    for (int b = 0; b < 8; b++) {
        if (seconds <= latency_bounds[b]) {
            atomic_fetch_add(&server->push_latency_buckets[b], 1);
            break;
        }
    }
    atomic_fetch_add(&server->push_latency_count, 1);
    atomic_fetch_add(&server->push_latency_sum_us, (long long)(seconds * 1e6));
    server->change_seen_ms = 0;
}

/* Whether a changed name concerns the stream's subscription of a type. */
static bool concerns(const stream *client, xds_type type, const char *name)
{
    const type_state *state = &client->types[type];
    return state->wildcard || string_map_get(state->names, name) != NULL ||
           string_map_get(state->versions, name) != NULL;
}

typedef struct change_walk {
    stream *client;
    xds_type type;
    bool concerned;
} change_walk;

static void check_change(const char *name, void *value, void *context)
{
    (void)value;
    change_walk *walk = context;
    if (!walk->concerned && concerns(walk->client, walk->type, name))
        walk->concerned = true;
}

/* Delta, after a change: the changed names of one type that the client
 * subscribes and does not have at their new version (removals false), or
 * that are gone (removals true). Costs what changed, not the whole view. */
static void push_delta_changes(stream *client, xds_type type, const name_list *changed,
                               bool removals)
{
    type_state *state = &client->types[type];
    char system_version[32];
    snprintf(system_version, sizeof(system_version), "%lld", (long long)client->server->revision);
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse response =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    response.system_version_info = system_version;
    response.type_url = (char *)xds_type_url(type);
    size_t capacity = changed->count ? changed->count : 1;
    Envoy__Service__Discovery__V3__Resource *resources = calloc(capacity, sizeof(*resources));
    Envoy__Service__Discovery__V3__Resource **pointers = calloc(capacity, sizeof(*pointers));
    Google__Protobuf__Any *anys = calloc(capacity, sizeof(*anys));
    char **removed = calloc(capacity, sizeof(*removed));
    response.resources = pointers;
    for (size_t i = 0; resources && pointers && anys && removed && i < changed->count; i++) {
        const char *name = changed->items[i];
        const cache_entry *entry = lookup(client, type, name);
        const char *has = string_map_get(state->versions, name);
        bool wanted = state->wildcard || string_map_get(state->names, name) != NULL;
        if (!removals && entry != NULL && wanted && (has == NULL || strcmp(has, entry->version)))
            add_resource(&response, resources, anys, type, entry);
        else if (removals && entry == NULL && has != NULL && strcmp(has, NOT_PRESENT) != 0) {
            removed[response.n_removed_resources++] = (char *)name;
        }
    }
    if (response.n_resources > 0 || response.n_removed_resources > 0) {
        response.removed_resources = removed;
        next_nonce(client, state);
        response.nonce = state->nonce;
        enqueue(client, &response.base);
        for (size_t i = 0; i < response.n_resources; i++)
            string_map_set(state->versions, pointers[i]->name, strdup(pointers[i]->version));
        for (size_t i = 0; i < response.n_removed_resources; i++) {
            if (string_map_get(state->names, removed[i]) != NULL)
                string_map_set(state->versions, removed[i], strdup(NOT_PRESENT));
            else
                string_map_remove(state->versions, removed[i]);
        }
        snprintf(state->sent_version, sizeof(state->sent_version), "%s", system_version);
        state->sent_at_ms = clock_wall_ms();
        client->status_dirty = true;
        count_push(client->server, type);
    }
    free(resources);
    free(pointers);
    free(anys);
    free(removed);
}

static bool profile_changed(const profile *item)
{
    for (int type = 0; item != NULL && type < XDS_TYPE_COUNT; type++) {
        if (item->changed[type] != NULL && string_map_count(item->changed[type]) > 0)
            return true;
    }
    return false;
}

/* After a change: brings a stream up to date looking only at the names that
 * changed, so the cost per stream follows the change, not the mesh. A stream
 * whose own profile changed (what it may call can have changed) is compared
 * in full. SotW resends a type whole when any of its names changed. */
static void push_changes(stream *client, name_list changed[XDS_TYPE_COUNT])
{
    xds_server *server = client->server;
    bool full = client->delta && profile_changed(client->profile);
    bool concerned[XDS_TYPE_COUNT] = {false};
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        if (!client->types[type].subscribed)
            continue;
        change_walk walk = {client, (xds_type)type, full};
        if (server->changed[type] != NULL)
            string_map_each(server->changed[type], check_change, &walk);
        if (client->profile != NULL && client->profile->changed[type] != NULL)
            string_map_each(client->profile->changed[type], check_change, &walk);
        concerned[type] = walk.concerned;
    }
    if (behind(client)) { /* coalesced: sent at the latest version when it catches up */
        for (int type = 0; type < XDS_TYPE_COUNT; type++) {
            if (concerned[type])
                defer_push(client, (xds_type)type, false);
        }
        return;
    }
    for (int pass = 0; pass < (client->delta ? 2 : 1); pass++) {
        for (int type = 0; type < XDS_TYPE_COUNT; type++) {
            if (!concerned[type])
                continue;
            if (!client->delta)
                push_sotw(client, (xds_type)type, false);
            else if (full)
                push_delta(client, (xds_type)type, pass == 1);
            else
                push_delta_changes(client, (xds_type)type, &changed[type], pass == 1);
        }
    }
}

static void clear_profile_changes(const char *key, void *value, void *context)
{
    (void)key;
    (void)context;
    profile *item = value;
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        string_map_free(item->changed[type]);
        item->changed[type] = NULL;
    }
}

static void add_to_set(const char *name, void *value, void *context)
{
    (void)value;
    string_map_set(context, name, (void *)1);
}

static void collect_profile_changes(const char *key, void *value, void *context)
{
    (void)key;
    profile *item = value;
    string_map **sets = context;
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        if (item->changed[type] != NULL && sets[type] != NULL)
            string_map_each(item->changed[type], add_to_set, sets[type]);
    }
}

static void push_all(xds_server *server)
{
    catch_up(server);
    /* Every changed name, shared or of a profile, by type. Names are looked up
     * per stream, so a profile's name reaches only that profile's streams. */
    string_map *sets[XDS_TYPE_COUNT];
    name_list changed[XDS_TYPE_COUNT];
    memset(changed, 0, sizeof(changed));
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        sets[type] = string_map_new(NULL);
        if (server->changed[type] != NULL && sets[type] != NULL)
            string_map_each(server->changed[type], add_to_set, sets[type]);
    }
    string_map_each(server->profiles, collect_profile_changes, sets);
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        if (sets[type] != NULL)
            string_map_each(sets[type], collect_name, &changed[type]);
    }
    for (stream *client = server->streams; client != NULL; client = client->next) {
        if (!client->finished && !client->client_done)
            push_changes(client, changed);
    }
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        free(changed[type].items);
        string_map_free(sets[type]);
    }
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        string_map_free(server->changed[type]);
        server->changed[type] = NULL;
    }
    string_map_each(server->profiles, clear_profile_changes, NULL);
    record_push_latency(server);
    server->last_push_ms = clock_monotonic_ms();
}

/* ---- requests ---- */

static void reset_type_state(type_state *state)
{
    string_map_free(state->names);
    string_map_free(state->versions);
    free(state->nack_message);
    memset(state, 0, sizeof(*state));
}

static bool ensure_maps(type_state *state)
{
    if (state->names == NULL)
        state->names = string_map_new(NULL);
    if (state->versions == NULL)
        state->versions = string_map_new(free);
    return state->names != NULL && state->versions != NULL;
}

static char *metadata_text(const Google__Protobuf__Struct *metadata, const char *key)
{
    for (size_t i = 0; metadata != NULL && i < metadata->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *field = metadata->fields[i];
        if (field->key == NULL || strcmp(field->key, key) != 0 || field->value == NULL)
            continue;
        if (field->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
            return strdup(field->value->string_value);
        if (field->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE) {
            char number[32];
            snprintf(number, sizeof(number), "%.0f", field->value->number_value);
            return strdup(number);
        }
    }
    return NULL;
}

static uint32_t metadata_port(const Google__Protobuf__Struct *metadata, const char *key,
                              uint32_t fallback)
{
    char *text = metadata_text(metadata, key);
    long port = text ? strtol(text, NULL, 10) : 0;
    free(text);
    return port > 0 && port < 65536 ? (uint32_t)port : fallback;
}

/* Finds or creates the profile of an atrium-proxy node. */
static profile *profile_for(xds_server *server, const char *service, const char *space,
                            uint32_t inbound, uint32_t app, uint32_t outbound)
{
    char key[256];
    snprintf(key, sizeof(key), "%s/%s/%u/%u/%u", service, space, inbound, app, outbound);
    profile *item = string_map_get(server->profiles, key);
    if (item != NULL)
        return item;
    item = calloc(1, sizeof(*item));
    if (item == NULL)
        return NULL;
    item->key = strdup(key);
    item->service = strdup(service);
    item->namespace_name = strdup(space);
    item->cache = xds_cache_new();
    if (item->key == NULL || item->service == NULL || item->namespace_name == NULL ||
        item->cache == NULL || !string_map_set(server->profiles, key, item)) {
        free_profile(item);
        return NULL;
    }
    item->settings = (proxy_profile){item->service, item->namespace_name, inbound, app, outbound};
    rebuild_profile(server, item);
    /* A new profile's streams get everything on subscription: nothing of it
     * is a change to push. */
    clear_profile_changes(item->key, item, NULL);
    return item;
}

static void end_stream(stream *client, grpc_status_code code, const char *message);
static void schedule_push(xds_server *server);

/* Ends the stream for a request out of bounds (counted in the metrics). */
static void refuse_request(stream *client, grpc_status_code code, const char *message)
{
    atomic_fetch_add(&client->server->refused_requests, 1);
    end_stream(client, code, message);
}

/* Copies text into a fixed buffer, cut to fit, printable ASCII only (what a
 * client sends as a version is shown by the REST API as a JSON string). */
static void copy_printable(char *destination, size_t size, const char *text)
{
    copy_text(destination, size, text);
    for (char *at = destination; *at != '\0'; at++) {
        if (*at < 0x20 || *at > 0x7e)
            *at = '?';
    }
}

/* The first request names the node; atrium-proxy says what it fronts. Over
 * the TLS port the client certificate must carry a SPIFFE ID, and an
 * atrium-proxy's must be the identity of the service it fronts: a subscriber
 * gets the configuration of its own identity only. Returns false when the
 * stream was refused. */
static bool identify_node(stream *client, const Envoy__Config__Core__V3__Node *node)
{
    if (client->client_done)
        return false;
    if (client->node_id != NULL || node == NULL)
        return true;
    /* Bounded before anything is kept or built for it. */
    const char *id = node->id && node->id[0] ? node->id : "unknown";
    char *service = metadata_text(node->metadata, "atrium.service");
    char *space = metadata_text(node->metadata, "atrium.namespace");
    const char *bad = !sane_identifier(id)                           ? "node.id"
                      : service != NULL && !sane_identifier(service) ? "metadata atrium.service"
                      : space != NULL && !sane_identifier(space)     ? "metadata atrium.namespace"
                                                                     : NULL;
    if (bad != NULL) {
        free(service);
        free(space);
        char message[160];
        snprintf(message, sizeof(message), "%s must be 1-%d bytes of printable ASCII", bad,
                 NODE_TEXT_MAX);
        refuse_request(client, GRPC_STATUS_INVALID_ARGUMENT, message);
        return false;
    }
    if (client->over_tls && client->peer_identity == NULL) {
        end_stream(client, GRPC_STATUS_UNAUTHENTICATED,
                   "xDS on the TLS port needs a client certificate with this mesh's SPIFFE ID");
        free(service);
        free(space);
        return false;
    }
    if (client->peer_identity != NULL) {
        char expected[768];
        snprintf(expected, sizeof(expected), "spiffe://%s/ns/%s/sa/%s",
                 client->server->trust_domain, space ? space : "default", service ? service : "");
        bool matches = service == NULL || strcmp(expected, client->peer_identity) == 0;
        if (!matches) {
            free(service);
            free(space);
            char message[1024];
            snprintf(message, sizeof(message),
                     "the client certificate is %s; the node says it fronts %s",
                     client->peer_identity, expected);
            end_stream(client, GRPC_STATUS_PERMISSION_DENIED, message);
            return false;
        }
    }
    client->node_id = strdup(id);
    /* A new subscriber starts from the store as it is now, not as it was at
     * the last push (a change may be waiting out the debounce window); the
     * other streams get what was read at the next push. */
    if (catch_up(client->server))
        schedule_push(client->server);
    uint32_t app = metadata_port(node->metadata, "atrium.app_port", 0);
    client->service = service ? service : strdup("");
    client->namespace_name = space ? space : strdup("");
    if (service != NULL && app != 0) {
        client->profile =
            profile_for(client->server, service, space ? space : "default",
                        metadata_port(node->metadata, "atrium.inbound_port", 15006), app,
                        metadata_port(node->metadata, "atrium.outbound_port", 15001));
        if (client->profile != NULL)
            client->profile->streams++;
    }
    client->status_dirty = true;
    return true;
}

static void record_nack(stream *client, type_state *state, const Google__Rpc__Status *detail,
                        const char *rejected)
{
    free(state->nack_message);
    state->nack_message = bounded_text(detail->message ? detail->message : "", NACK_MESSAGE_MAX);
    copy_text(state->nacked_label, sizeof(state->nacked_label), rejected);
    state->nacked_at_ms = clock_wall_ms();
    client->status_dirty = true;
    atomic_fetch_add(&client->server->nacks, 1);
}

/* Whether count names (added to `already` names of the type) are within the
 * limits; if not, the stream is refused and false returned. */
static bool names_within_bounds(stream *client, const char *const *names, size_t count,
                                size_t already)
{
    if (count > NAMES_PER_TYPE_MAX || already + count > NAMES_PER_TYPE_MAX) {
        char message[128];
        snprintf(message, sizeof(message), "more than %d resource names of one type on a stream",
                 NAMES_PER_TYPE_MAX);
        refuse_request(client, GRPC_STATUS_RESOURCE_EXHAUSTED, message);
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        if (names[i] == NULL || strnlen(names[i], RESOURCE_NAME_MAX + 1) > RESOURCE_NAME_MAX) {
            char message[128];
            snprintf(message, sizeof(message), "a resource name longer than %d bytes",
                     RESOURCE_NAME_MAX);
            refuse_request(client, GRPC_STATUS_INVALID_ARGUMENT, message);
            return false;
        }
    }
    return true;
}

static void handle_sotw(stream *client,
                        const Envoy__Service__Discovery__V3__DiscoveryRequest *request)
{
    if (!identify_node(client, request->node))
        return;
    xds_type type;
    if (!xds_type_from_url(request->type_url, &type))
        return; /* a type Atrium does not serve (e.g. secrets before the CA): nothing to send */
    type_state *state = &client->types[type];
    if (!ensure_maps(state))
        return;
    const char *nonce = request->response_nonce ? request->response_nonce : "";
    if (nonce[0] != '\0' && strcmp(nonce, state->nonce) != 0)
        return; /* stale: answers a response the client has not seen the latest of */
    if (nonce[0] != '\0') {
        if (request->error_detail != NULL) {
            record_nack(client, state, request->error_detail, state->sotw_version);
            memcpy(state->nacked_version, state->sotw_version, sizeof(state->nacked_version));
        } else {
            copy_printable(state->acked_version, sizeof(state->acked_version),
                           request->version_info ? request->version_info : "");
            state->acked_at_ms = clock_wall_ms();
            free(state->nack_message);
            state->nack_message = NULL;
            state->nacked_label[0] = '\0';
            client->status_dirty = true;
        }
    }
    /* The request carries the whole subscription for the type. */
    if (!names_within_bounds(client, (const char *const *)request->resource_names,
                             request->n_resource_names, 0))
        return;
    bool wildcard = request->n_resource_names == 0 && (type == XDS_LISTENER || type == XDS_CLUSTER);
    string_map *names = string_map_new(NULL);
    for (size_t i = 0; names != NULL && i < request->n_resource_names; i++) {
        if (strcmp(request->resource_names[i], "*") == 0)
            wildcard = true;
        else
            string_map_set(names, request->resource_names[i], (void *)1);
    }
    bool changed = !state->subscribed || wildcard != state->wildcard ||
                   string_map_count(names) != string_map_count(state->names);
    for (size_t i = 0; !changed && i < request->n_resource_names; i++)
        changed = string_map_get(state->names, request->resource_names[i]) == NULL &&
                  strcmp(request->resource_names[i], "*") != 0;
    if (names != NULL) {
        string_map_free(state->names);
        state->names = names;
    }
    bool first = !state->subscribed;
    state->subscribed = true;
    state->wildcard = wildcard;
    if (changed && behind(client))
        defer_push(client, type, first);
    else if (changed)
        push_sotw(client, type, first);
}

static void handle_delta(stream *client,
                         const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request)
{
    if (!identify_node(client, request->node))
        return;
    xds_type type;
    if (!xds_type_from_url(request->type_url, &type))
        return;
    type_state *state = &client->types[type];
    if (!ensure_maps(state))
        return;
    bool first = !state->subscribed;
    if (!names_within_bounds(client, (const char *const *)request->resource_names_subscribe,
                             request->n_resource_names_subscribe, string_map_count(state->names)) ||
        !names_within_bounds(client, (const char *const *)request->resource_names_unsubscribe,
                             request->n_resource_names_unsubscribe, 0))
        return;
    if (first && request->n_initial_resource_versions > NAMES_PER_TYPE_MAX) {
        refuse_request(client, GRPC_STATUS_RESOURCE_EXHAUSTED,
                       "more initial_resource_versions than a stream may have per type");
        return;
    }
    const char *nonce = request->response_nonce ? request->response_nonce : "";
    if (nonce[0] != '\0' && strcmp(nonce, state->nonce) == 0) {
        if (request->error_detail != NULL) {
            record_nack(client, state, request->error_detail, state->sent_version);
        } else {
            copy_text(state->acked_version, sizeof(state->acked_version), state->sent_version);
            state->acked_at_ms = clock_wall_ms();
            free(state->nack_message);
            state->nack_message = NULL;
            state->nacked_label[0] = '\0';
            client->status_dirty = true;
        }
    }
    /* A stale nonce still carries subscription changes, which are honoured. */
    if (first) {
        for (size_t i = 0; i < request->n_initial_resource_versions; i++) {
            const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
                *entry = request->initial_resource_versions[i];
            /* An odd one is not kept: the client gets that resource again. */
            if (entry->key != NULL && entry->value != NULL &&
                strnlen(entry->key, RESOURCE_NAME_MAX + 1) <= RESOURCE_NAME_MAX &&
                strnlen(entry->value, VERSION_TEXT_MAX + 1) <= VERSION_TEXT_MAX)
                string_map_set(state->versions, entry->key, strdup(entry->value));
        }
        /* An empty first subscribe means the wildcard, for every type. */
        if (request->n_resource_names_subscribe == 0)
            state->wildcard = true;
    }
    bool changed = first;
    for (size_t i = 0; i < request->n_resource_names_subscribe; i++) {
        const char *name = request->resource_names_subscribe[i];
        if (strcmp(name, "*") == 0) {
            changed |= !state->wildcard;
            state->wildcard = true;
        } else {
            string_map_set(state->names, name, (void *)1);
            /* A subscription to a name the client already has must still be
             * answered with it (xds_protocol.rst); on the first request the
             * initial versions say what it has, and those are not resent. */
            if (!first)
                string_map_remove(state->versions, name);
            changed = true;
        }
    }
    for (size_t i = 0; i < request->n_resource_names_unsubscribe; i++) {
        const char *name = request->resource_names_unsubscribe[i];
        if (strcmp(name, "*") == 0) {
            state->wildcard = false;
        } else {
            string_map_remove(state->names, name);
            string_map_remove(state->versions, name); /* no removal is sent for it */
        }
        changed = true;
    }
    state->subscribed = true;
    if (changed && behind(client)) {
        defer_push(client, type, false);
    } else if (changed) {
        push_delta(client, type, false);
        push_delta(client, type, true);
    }
}

/* ---- stream lifecycle ---- */

static void start_receive(stream *client)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &client->received;
    if (grpc_call_start_batch(client->call, &op, 1, &client->receive_tag, NULL) == GRPC_CALL_OK)
        client->pending++;
}

/* Ends the call with OK once everything queued has been sent. */
static void maybe_send_status(stream *client)
{
    if (!client->client_done || client->status_sent || client->finished || client->sending ||
        client->queue_head != NULL)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = client->end_code;
    op.data.send_status_from_server.status_details = &client->end_details;
    if (grpc_call_start_batch(client->call, &op, 1, &client->status_tag, NULL) == GRPC_CALL_OK) {
        client->status_sent = true;
        client->pending++;
    }
}

/* Refuses the stream: it ends with code and message once queued sends drain. */
static void end_stream(stream *client, grpc_status_code code, const char *message)
{
    if (client->client_done)
        return;
    client->end_code = code;
    grpc_slice_unref(client->end_details);
    client->end_details = grpc_slice_from_copied_string(message);
    client->client_done = true;
    maybe_send_status(client);
}

/* Ends the stream now, whatever is queued or in flight: the call is cancelled
 * with code and message, which the client receives as the status. */
static void close_now(stream *client, grpc_status_code code, const char *message)
{
    if (client->finished || client->status_sent)
        return;
    client->client_done = true;
    client->status_sent = true; /* the cancel carries the status */
    grpc_call_cancel_with_status(client->call, code, message, NULL);
}

static void flush_status(xds_server *server, bool everything);

static void free_stream(stream *client)
{
    xds_server *server = client->server;
    if (client->previous)
        client->previous->next = client->next;
    else
        server->streams = client->next;
    if (client->next)
        client->next->previous = client->previous;
    atomic_fetch_sub(client->delta ? &server->streams_delta : &server->streams_sotw, 1);
    while (client->queue_head != NULL) {
        queued *item = client->queue_head;
        client->queue_head = item->next;
        grpc_byte_buffer_destroy(item->buffer);
        free(item);
    }
    if (client->received)
        grpc_byte_buffer_destroy(client->received);
    /* A profile lives while streams use it: node metadata cannot pile them up. */
    if (client->profile != NULL && --client->profile->streams == 0) {
        char key[256];
        copy_text(key, sizeof(key), client->profile->key);
        string_map_remove(server->profiles, key);
    }
    for (int type = 0; type < XDS_TYPE_COUNT; type++)
        reset_type_state(&client->types[type]);
    free(client->node_id);
    free(client->peer_identity);
    free(client->peer_serial);
    grpc_slice_unref(client->end_details);
    free(client->service);
    free(client->namespace_name);
    grpc_call_unref(client->call);
    free(client);
}

static void report_disconnect(xds_server *server, stream *client);

static void settle(stream *client)
{
    client->pending--;
    maybe_send_status(client);
    if (client->finished && client->pending == 0) {
        report_disconnect(client->server, client);
        free_stream(client);
    }
}

/* A request that does not decode ends its stream with INVALID_ARGUMENT and
 * is logged, at most one line per COMPLAINT_PERIOD_MS (a flood of them must
 * not flood the log). */
static void refuse_undecodable(stream *client, size_t length)
{
    xds_server *server = client->server;
    uint64_t count = 0;
    if (log_interval_due(&server->undecodable_lines, clock_monotonic_ms(), COMPLAINT_PERIOD_MS,
                         &count)) {
        char *peer = grpc_call_get_peer(client->call);
        log_warn("xDS: a %zu-byte %s request from %s does not decode; the stream was ended with "
                 "INVALID_ARGUMENT (%llu more since the last such line)",
                 length, client->delta ? "DeltaDiscoveryRequest" : "DiscoveryRequest",
                 peer ? peer : "?", (unsigned long long)(count - 1));
        gpr_free(peer);
    }
    refuse_request(client, GRPC_STATUS_INVALID_ARGUMENT,
                   client->delta ? "the request is not a DeltaDiscoveryRequest"
                                 : "the request is not a DiscoveryRequest");
}

static void on_receive(stream *client, bool success)
{
    grpc_byte_buffer *buffer = client->received;
    client->received = NULL;
    if (!success || buffer == NULL) {
        client->client_done = true; /* half-close or a broken call */
        if (buffer)
            grpc_byte_buffer_destroy(buffer);
        settle(client);
        return;
    }
    grpc_byte_buffer_reader reader;
    grpc_byte_buffer_reader_init(&reader, buffer);
    grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(buffer);
    const uint8_t *data = GRPC_SLICE_START_PTR(slice);
    size_t length = GRPC_SLICE_LENGTH(slice);
    if (client->delta) {
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request =
            envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, length, data);
        if (request != NULL) {
            handle_delta(client, request);
            envoy__service__discovery__v3__delta_discovery_request__free_unpacked(request, NULL);
        } else {
            refuse_undecodable(client, length);
        }
    } else {
        Envoy__Service__Discovery__V3__DiscoveryRequest *request =
            envoy__service__discovery__v3__discovery_request__unpack(NULL, length, data);
        if (request != NULL) {
            handle_sotw(client, request);
            envoy__service__discovery__v3__discovery_request__free_unpacked(request, NULL);
        } else {
            refuse_undecodable(client, length);
        }
    }
    grpc_slice_unref(slice);
    if (!client->finished)
        start_receive(client);
    settle(client);
}

static void on_send(stream *client, bool success)
{
    client->sending = false;
    queued *item = client->queue_head;
    if (item != NULL) {
        client->queue_head = item->next;
        if (client->queue_head == NULL)
            client->queue_tail = NULL;
        grpc_byte_buffer_destroy(item->buffer);
        free(item);
    }
    if (success) {
        start_send(client);
        if (!behind(client))
            flush_deferred(client);
    }
    settle(client);
}

/* Over TLS, the SPIFFE ID of the client certificate (verified by the handshake). */
static void read_peer(stream *client)
{
    grpc_auth_context *context = grpc_call_auth_context(client->call);
    if (context == NULL)
        return;
    grpc_auth_property_iterator properties =
        grpc_auth_context_find_properties_by_name(context, "transport_security_type");
    const grpc_auth_property *property = grpc_auth_property_iterator_next(&properties);
    client->over_tls =
        property != NULL && property->value_length == 3 && memcmp(property->value, "ssl", 3) == 0;
    properties = grpc_auth_context_find_properties_by_name(context, "peer_spiffe_id");
    property = grpc_auth_property_iterator_next(&properties);
    if (client->over_tls && property != NULL)
        client->peer_identity = strndup(property->value, property->value_length);
    properties = grpc_auth_context_find_properties_by_name(context, "x509_pem_cert");
    property = grpc_auth_property_iterator_next(&properties);
    if (client->over_tls && property != NULL) {
        char *pem = strndup(property->value, property->value_length);
        char why[256];
        if (pem != NULL && ca_certificate_serial(pem, &client->peer_serial, why, sizeof(why)) != 0)
            client->peer_serial = NULL;
        free(pem);
    }
    grpc_auth_context_release(context);
}

/* ---- revoked client certificates ---- */

/* The serials of the revoked, unexpired certificates as a set, or NULL when
 * the store cannot say. */
static string_map *load_revoked(xds_server *server)
{
    model_certificate_list list;
    store_error error;
    if (store_list_revoked_certificates(server->db, clock_wall_ms(), &list, &error) != STORE_OK)
        return NULL;
    string_map *set = string_map_new(NULL);
    for (size_t i = 0; set != NULL && i < list.count; i++) {
        if (!string_map_set(set, list.items[i].serial, (void *)1)) {
            string_map_free(set);
            set = NULL;
        }
    }
    model_certificate_list_free(&list);
    return set;
}

static bool is_revoked(const xds_server *server, const char *serial)
{
    return serial != NULL && server->revoked != NULL && string_map_get(server->revoked, serial);
}

/* Follows the change log for certificates: when one changed (a revocation
 * names its serial), reads the revoked set again and ends every live stream
 * authenticated by a certificate now in it with PERMISSION_DENIED. Cheap when
 * the revision did not move. */
static void refresh_revocations(xds_server *server)
{
    int64_t revision = 0;
    if (store_revision(server->db, &revision, NULL) != STORE_OK ||
        revision == server->revocation_revision)
        return;
    model_change_list changes;
    store_error error;
    bool reload = false;
    int64_t reached = revision;
    store_status status =
        store_changes_since(server->db, server->revocation_revision, 0, &changes, &error);
    if (status == STORE_NOT_FOUND) {
        reload = true;
    } else if (status != STORE_OK) {
        return; /* again at the next wake */
    } else {
        for (size_t i = 0; i < changes.count; i++) {
            reload |= changes.items[i].kind == MODEL_KIND_CERTIFICATE;
            if (changes.items[i].revision > reached)
                reached = changes.items[i].revision;
        }
        model_change_list_free(&changes);
    }
    if (reload) {
        string_map *set = load_revoked(server);
        if (set == NULL)
            return;
        string_map_free(server->revoked);
        server->revoked = set;
        for (stream *client = server->streams; client != NULL; client = client->next) {
            if (client->over_tls && is_revoked(server, client->peer_serial) && !client->finished &&
                !client->status_sent) {
                close_now(client, GRPC_STATUS_PERMISSION_DENIED,
                          "the client certificate was revoked");
                atomic_fetch_add(&server->revoked_closed, 1);
            }
        }
    }
    server->revocation_revision = reached;
}

static void start_stream(xds_server *server, accept_slot *slot)
{
    stream *client = calloc(1, sizeof(*client));
    if (client == NULL) {
        grpc_call_cancel(slot->call, NULL);
        grpc_call_unref(slot->call);
        return;
    }
    client->server = server;
    client->call = slot->call;
    client->delta = slot->delta;
    client->connected_since_ms = clock_wall_ms();
    client->end_code = GRPC_STATUS_OK;
    client->end_details = grpc_empty_slice();
    read_peer(client);
    client->initial_tag = (tag){TAG_INITIAL, client};
    client->receive_tag = (tag){TAG_RECEIVE, client};
    client->send_tag = (tag){TAG_SEND, client};
    client->close_tag = (tag){TAG_CLOSE, client};
    client->status_tag = (tag){TAG_STATUS, client};
    client->next = server->streams;
    if (server->streams)
        server->streams->previous = client;
    server->streams = client;
    atomic_fetch_add(client->delta ? &server->streams_delta : &server->streams_sotw, 1);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    if (grpc_call_start_batch(client->call, &op, 1, &client->initial_tag, NULL) == GRPC_CALL_OK)
        client->pending++;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &client->cancelled;
    if (grpc_call_start_batch(client->call, &op, 1, &client->close_tag, NULL) == GRPC_CALL_OK)
        client->pending++;
    start_receive(client);
    /* On the TLS port, against the store as it is now: a certificate revoked
     * a moment ago gets no stream. */
    if (client->over_tls && client->peer_identity != NULL) {
        refresh_revocations(server);
        if (client->peer_serial == NULL)
            end_stream(client, GRPC_STATUS_PERMISSION_DENIED,
                       "cannot read the serial of the client certificate");
        else if (is_revoked(server, client->peer_serial))
            end_stream(client, GRPC_STATUS_PERMISSION_DENIED, "the client certificate is revoked");
    }
}

static void request_call(xds_server *server, accept_slot *slot)
{
    if (server->shutting_down)
        return;
    grpc_metadata_array_init(&slot->metadata);
    slot->call = NULL;
    grpc_server_request_registered_call(
        server->grpc, slot->delta ? server->delta_method : server->sotw_method, &slot->call,
        &slot->deadline, &slot->metadata, NULL, server->queue, server->queue, &slot->tag);
}

static void on_accept(xds_server *server, accept_slot *slot, bool success)
{
    grpc_metadata_array_destroy(&slot->metadata);
    if (success && slot->call != NULL && !server->shutting_down)
        start_stream(server, slot);
    else if (slot->call != NULL)
        grpc_call_unref(slot->call);
    request_call(server, slot);
}

/* ---- calls for methods this server does not have ---- */

static void request_unknown(xds_server *server)
{
    unknown_slot *slot = &server->accept_unknown;
    if (server->shutting_down)
        return;
    slot->call = NULL;
    grpc_call_details_init(&slot->details);
    grpc_metadata_array_init(&slot->metadata);
    if (grpc_server_request_call(server->grpc, &slot->call, &slot->details, &slot->metadata,
                                 server->queue, server->queue, &slot->tag) != GRPC_CALL_OK) {
        grpc_call_details_destroy(&slot->details);
        grpc_metadata_array_destroy(&slot->metadata);
    }
}

/* Answers UNIMPLEMENTED at once (no message of it is read), so an unknown
 * method holds nothing until the client gives up. */
static void refuse_call(xds_server *server, grpc_call *call, const grpc_slice *method)
{
    refusal *item = calloc(1, sizeof(*item));
    if (item == NULL) {
        grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
        grpc_call_unref(call);
        return;
    }
    item->tag = (tag){TAG_REFUSED, item};
    item->call = call;
    char message[200];
    size_t length = GRPC_SLICE_LENGTH(*method);
    snprintf(message, sizeof(message), "unknown method %.*s%s", (int)(length < 128 ? length : 128),
             (const char *)GRPC_SLICE_START_PTR(*method), length > 128 ? "..." : "");
    item->details = grpc_slice_from_copied_string(message);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &item->cancelled;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[2].data.send_status_from_server.status_details = &item->details;
    if (grpc_call_start_batch(call, ops, 3, &item->tag, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
        grpc_call_unref(call);
        grpc_slice_unref(item->details);
        free(item);
        return;
    }
    server->refusals++;
}

static void on_unknown(xds_server *server, bool success)
{
    unknown_slot *slot = &server->accept_unknown;
    if (success && slot->call != NULL && !server->shutting_down)
        refuse_call(server, slot->call, &slot->details.method);
    else if (slot->call != NULL)
        grpc_call_unref(slot->call);
    grpc_call_details_destroy(&slot->details);
    grpc_metadata_array_destroy(&slot->metadata);
    request_unknown(server);
}

static void on_refused(xds_server *server, refusal *item)
{
    grpc_call_unref(item->call);
    grpc_slice_unref(item->details);
    free(item);
    server->refusals--;
}

/* ---- status to the store ---- */

static void fill_proxy(const stream *client, model_proxy *proxy, model_proxy_type_status *types,
                       bool connected)
{
    memset(proxy, 0, sizeof(*proxy));
    proxy->node_id = client->node_id;
    proxy->identity = client->peer_identity ? client->peer_identity : "";
    proxy->service = client->service ? client->service : "";
    proxy->namespace_name = client->namespace_name ? client->namespace_name : "";
    proxy->protocol = client->delta ? "delta" : "sotw";
    proxy->connected = connected;
    proxy->connected_since_ms = client->connected_since_ms;
    proxy->last_seen_ms = clock_wall_ms();
    proxy->types = types;
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        const type_state *state = &client->types[type];
        if (!state->subscribed)
            continue;
        model_proxy_type_status *status = &types[proxy->type_count++];
        memset(status, 0, sizeof(*status));
        status->type_url = (char *)xds_type_url((xds_type)type);
        status->sent_version = state->sent_version[0] ? (char *)state->sent_version : NULL;
        status->sent_at_ms = state->sent_at_ms;
        status->acked_version = state->acked_version[0] ? (char *)state->acked_version : NULL;
        status->acked_at_ms = state->acked_at_ms;
        status->nacked_version = state->nack_message ? (char *)state->nacked_label : NULL;
        status->nack_message = state->nack_message;
        status->nacked_at_ms = state->nacked_at_ms;
    }
}

/* Writes the status of streams that changed (or all of them) in one transaction. */
static void flush_status(xds_server *server, bool everything)
{
    size_t count = 0;
    for (stream *client = server->streams; client != NULL; client = client->next)
        count += client->node_id != NULL && (everything || client->status_dirty);
    if (count == 0)
        return;
    model_proxy *proxies = calloc(count, sizeof(*proxies));
    model_proxy_type_status *types = calloc(count * XDS_TYPE_COUNT, sizeof(*types));
    if (proxies != NULL && types != NULL) {
        size_t index = 0;
        for (stream *client = server->streams; client != NULL; client = client->next) {
            if (client->node_id == NULL || !(everything || client->status_dirty))
                continue;
            fill_proxy(client, &proxies[index], &types[index * XDS_TYPE_COUNT], true);
            client->status_dirty = false;
            index++;
        }
        store_error error;
        store_save_proxies(server->db, proxies, index, &error);
    }
    free(proxies);
    free(types);
}

static void report_disconnect(xds_server *server, stream *client)
{
    if (client->node_id == NULL)
        return;
    model_proxy proxy;
    model_proxy_type_status types[XDS_TYPE_COUNT];
    fill_proxy(client, &proxy, types, false);
    store_error error;
    store_save_proxies(server->db, &proxy, 1, &error);
}

/* ---- the thread ---- */

static void schedule_push(xds_server *server)
{
    int64_t now = clock_monotonic_ms();
    if (server->change_seen_ms == 0)
        server->change_seen_ms = now;
    if (server->push_at_ms != 0)
        return; /* already scheduled: this change joins that push */
    int64_t at = now + server->options.debounce_ms;
    int64_t earliest = server->last_push_ms + server->options.min_push_interval_ms;
    server->push_at_ms = at > earliest ? at : earliest;
}

/* Secret ROOTCA follows the CA: rotations, revocations and a retiring old
 * root change the bundle; identical bytes change nothing. */
static void refresh_trust(xds_server *server)
{
    if (server->options.trust == NULL)
        return;
    char *bundle = server->options.trust(server->options.trust_context);
    if (bundle == NULL)
        return;
    char *crl = strstr(bundle, "-----BEGIN X509 CRL-----");
    char *roots = crl ? strndup(bundle, (size_t)(crl - bundle)) : strdup(bundle);
    xds_resource_list resources = {0};
    if (roots != NULL && translate_root_secret(roots, crl ? crl : "", &resources) == 0) {
        xds_cache_replace_owner(server->shared, "atrium-ca", &resources, note_shared_change,
                                server);
        if (server->changed[XDS_SECRET] != NULL && string_map_count(server->changed[XDS_SECRET]))
            schedule_push(server);
    }
    xds_resource_list_clear(&resources);
    free(roots);
    free(bundle);
}

/* Forgets proxies disconnected for longer than the retention, and the least
 * recently seen beyond the row limit: what clients write cannot fill the disk. */
static void prune_proxies(xds_server *server)
{
    size_t removed = 0;
    store_error error;
    store_prune_proxies(server->db, clock_wall_ms() - server->options.proxy_retention_ms,
                        (size_t)server->options.max_proxy_rows, &removed, &error);
}

/* Closes the streams that stayed behind too long: with changes waiting
 * behind a send the client does not read, or with their final status
 * waiting behind one. */
static void close_slow_streams(xds_server *server)
{
    int64_t now = clock_monotonic_ms();
    int64_t limit = server->options.slow_consumer_ms;
    for (stream *client = server->streams; client != NULL; client = client->next) {
        if (client->finished || client->status_sent)
            continue;
        bool late = client->behind_since_ms != 0 && now - client->behind_since_ms > limit;
        late |= client->client_done && client->sending && now - client->send_started_ms > limit;
        if (late) {
            char message[160];
            snprintf(message, sizeof(message),
                     "the client read no response for %lld ms while newer ones waited",
                     (long long)limit);
            close_now(client, GRPC_STATUS_RESOURCE_EXHAUSTED, message);
            atomic_fetch_add(&server->slow_closed, 1);
        }
    }
}

static void run_timers(xds_server *server)
{
    int64_t now = clock_monotonic_ms();
    if (server->push_at_ms != 0 && now >= server->push_at_ms) {
        server->push_at_ms = 0;
        push_all(server);
    }
    if (now >= server->flush_at_ms) {
        refresh_trust(server);
        flush_status(server, false);
        if (now >= server->prune_at_ms) {
            prune_proxies(server);
            server->prune_at_ms = now + PRUNE_INTERVAL_MS;
        }
        close_slow_streams(server);
        server->flush_at_ms = now + STATUS_FLUSH_MS;
    }
}

static void begin_shutdown(xds_server *server)
{
    if (server->shutting_down)
        return;
    server->shutting_down = true;
    flush_status(server, true);
    grpc_server_shutdown_and_notify(server->grpc, server->queue, &server->shutdown_tag);
    grpc_server_cancel_all_calls(server->grpc);
}

static void on_wake(xds_server *server)
{
    atomic_store(&server->wake_pending, false);
    if (atomic_load(&server->stopping)) {
        begin_shutdown(server);
        return;
    }
    refresh_revocations(server);
    int64_t revision = 0;
    store_revision(server->db, &revision, NULL);
    if (revision != server->revision)
        schedule_push(server);
}

static void handle_event(xds_server *server, tag *event_tag, bool success)
{
    switch (event_tag->kind) {
    case TAG_ACCEPT:
        on_accept(server, (accept_slot *)event_tag->owner, success);
        break;
    case TAG_INITIAL:
    case TAG_STATUS:
        settle(event_tag->owner);
        break;
    case TAG_RECEIVE:
        on_receive(event_tag->owner, success);
        break;
    case TAG_SEND:
        on_send(event_tag->owner, success);
        break;
    case TAG_CLOSE: {
        stream *client = event_tag->owner;
        client->finished = true;
        client->client_done = true;
        settle(client);
        break;
    }
    case TAG_WAKE:
        on_wake(server);
        break;
    case TAG_SHUTDOWN:
        server->shutdown_done = true;
        break;
    case TAG_UNKNOWN_ACCEPT:
        on_unknown(server, success);
        break;
    case TAG_REFUSED:
        on_refused(server, event_tag->owner);
        break;
    }
}

static void *serve(void *context)
{
    xds_server *server = context;
    while (!(server->shutdown_done && server->streams == NULL && server->refusals == 0)) {
        int64_t now = clock_monotonic_ms();
        int64_t next = server->flush_at_ms;
        if (server->push_at_ms != 0 && server->push_at_ms < next)
            next = server->push_at_ms;
        int64_t wait = next > now ? next - now : 0;
        grpc_event event = grpc_completion_queue_next(server->queue, deadline_in_ms(wait), NULL);
        if (event.type == GRPC_OP_COMPLETE)
            handle_event(server, event.tag, event.success != 0);
        else if (event.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (!server->shutting_down)
            run_timers(server);
    }
    return NULL;
}

/* Why binding address failed, in error: gRPC does not say, so a plain
 * socket tries the same bind (SO_REUSEADDR, as gRPC; no SO_REUSEPORT). */
static void explain_listen_failure(const char *address, char *error, size_t error_size)
{
    const char *colon = strrchr(address, ':');
    int reason = 0;
    if (colon != NULL) {
        const char *host = address;
        size_t host_length = (size_t)(colon - address);
        if (host_length >= 2 && host[0] == '[' && colon[-1] == ']') {
            host++;
            host_length -= 2;
        }
        char host_text[256];
        snprintf(host_text, sizeof(host_text), "%.*s", (int)host_length, host);
        struct addrinfo hints, *found = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        if (getaddrinfo(host_text[0] ? host_text : NULL, colon + 1, &hints, &found) == 0) {
            for (struct addrinfo *at = found; at != NULL && reason == 0; at = at->ai_next) {
                int fd = socket(at->ai_family, at->ai_socktype | SOCK_CLOEXEC, at->ai_protocol);
                if (fd < 0)
                    continue;
                int one = 1;
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(fd, at->ai_addr, at->ai_addrlen) != 0)
                    reason = errno;
                close(fd);
            }
            freeaddrinfo(found);
        }
    }
    if (reason == EADDRINUSE)
        snprintf(error, error_size,
                 "cannot listen on %s: address in use (another process listens there; "
                 "atriumd does not share its ports)",
                 address);
    else if (reason != 0)
        snprintf(error, error_size, "cannot listen on %s: %s", address, strerror(reason));
    else
        snprintf(error, error_size, "cannot listen on %s", address);
}

/* Undoes grpc_server_create before the server started: a server with a
 * listener must be shut down before it is destroyed (gRPC asserts it). */
static void abandon_grpc(xds_server *server)
{
    grpc_server_shutdown_and_notify(server->grpc, server->queue, &server->shutdown_tag);
    grpc_server_cancel_all_calls(server->grpc);
    for (;;) {
        grpc_event event = grpc_completion_queue_next(server->queue, deadline_in_ms(10000), NULL);
        if (event.type != GRPC_OP_COMPLETE || event.tag == &server->shutdown_tag)
            break;
    }
    grpc_server_destroy(server->grpc);
    server->grpc = NULL;
    grpc_completion_queue_shutdown(server->queue);
    while (
        grpc_completion_queue_next(server->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
        GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(server->queue);
    server->queue = NULL;
    grpc_shutdown();
}

/* ---- public ---- */

void xds_server_notify(xds_server *server)
{
    if (server == NULL || atomic_exchange(&server->wake_pending, true))
        return;
    /* The idle channel is not SHUTDOWN, so the watch completes at once. */
    grpc_channel_watch_connectivity_state(server->wake_channel, GRPC_CHANNEL_SHUTDOWN,
                                          deadline_in_ms(60000), server->queue, &server->wake_tag);
}

int xds_server_start(const xds_server_options *options, store *db, xds_server **out,
                     int *bound_port, char *error, size_t error_size)
{
    *out = NULL;
    xds_server *server = calloc(1, sizeof(*server));
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    server->db = db;
    server->options = *options;
    snprintf(server->trust_domain, sizeof(server->trust_domain), "%s",
             options->trust_domain ? options->trust_domain : "atrium.local");
    if (server->options.debounce_ms <= 0)
        server->options.debounce_ms = 100;
    if (server->options.min_push_interval_ms < 0)
        server->options.min_push_interval_ms = 0;
    if (server->options.slow_consumer_ms <= 0)
        server->options.slow_consumer_ms = SLOW_CONSUMER_MS;
    if (server->options.proxy_retention_ms <= 0)
        server->options.proxy_retention_ms = PROXY_RETENTION_MS;
    if (server->options.max_proxy_rows <= 0)
        server->options.max_proxy_rows = PROXY_ROWS_MAX;
    server->wake_tag = (tag){TAG_WAKE, NULL};
    server->shutdown_tag = (tag){TAG_SHUTDOWN, NULL};
    server->accept_sotw = (accept_slot){.tag = {TAG_ACCEPT, &server->accept_sotw}, .delta = false};
    server->accept_delta = (accept_slot){.tag = {TAG_ACCEPT, &server->accept_delta}, .delta = true};
    server->accept_unknown.tag = (tag){TAG_UNKNOWN_ACCEPT, &server->accept_unknown};
    server->services = string_map_new(free_service_state);
    server->profiles = string_map_new(free_profile);
    server->shared = xds_cache_new();
    if (server->services == NULL || server->profiles == NULL || server->shared == NULL) {
        snprintf(error, error_size, "out of memory");
        xds_server_stop(server);
        return -1;
    }
    int64_t revision = 0;
    store_revision(db, &revision, NULL);
    if (reload_everything(server, revision) != 0) {
        snprintf(error, error_size, "cannot read the mesh from the store");
        xds_server_stop(server);
        return -1;
    }
    server->revocation_revision = revision;
    server->revoked = load_revoked(server);
    if (server->revoked == NULL) {
        snprintf(error, error_size, "cannot read the revoked certificates from the store");
        xds_server_stop(server);
        return -1;
    }
    refresh_trust(server);
    for (int type = 0; type < XDS_TYPE_COUNT; type++) { /* no stream yet: nothing to push */
        string_map_free(server->changed[type]);
        server->changed[type] = NULL;
    }

    grpc_init();
    server->queue = grpc_completion_queue_create_for_next(NULL);
    /* No SO_REUSEPORT (gRPC's default): a second atriumd on the same ports
     * must fail to bind, not silently get half of the connections. */
    grpc_arg server_args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = REQUEST_BYTES_MAX},
    };
    grpc_channel_args server_settings = {2, server_args};
    server->grpc = grpc_server_create(&server_settings, NULL);
    grpc_server_register_completion_queue(server->grpc, server->queue, NULL);
    server->sotw_method =
        grpc_server_register_method(server->grpc, SOTW_METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    server->delta_method =
        grpc_server_register_method(server->grpc, DELTA_METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    grpc_server_credentials *credentials = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server->grpc, options->address, credentials);
    grpc_server_credentials_release(credentials);
    if (port == 0) {
        explain_listen_failure(options->address, error, error_size);
        if (options->tls_credentials != NULL)
            grpc_server_credentials_release(options->tls_credentials);
        abandon_grpc(server);
        xds_server_stop(server);
        return -1;
    }
    if (options->tls_address != NULL) {
        server->tls_port = grpc_server_add_http2_port(server->grpc, options->tls_address,
                                                      options->tls_credentials);
        if (server->tls_port == 0) {
            explain_listen_failure(options->tls_address, error, error_size);
            grpc_server_credentials_release(options->tls_credentials);
            abandon_grpc(server);
            xds_server_stop(server);
            return -1;
        }
    }
    if (options->tls_credentials != NULL)
        grpc_server_credentials_release(options->tls_credentials);
    if (options->attach != NULL)
        options->attach(options->attach_context, server->grpc);
    grpc_channel_credentials *insecure = grpc_insecure_credentials_create();
    server->wake_channel =
        grpc_channel_create("unix:/nonexistent/atrium-xds-wake.sock", insecure, NULL);
    grpc_channel_credentials_release(insecure);
    grpc_server_start(server->grpc);
    request_call(server, &server->accept_sotw);
    request_call(server, &server->accept_delta);
    request_unknown(server);
    server->flush_at_ms = clock_monotonic_ms() + STATUS_FLUSH_MS;
    if (pthread_create(&server->thread, NULL, serve, server) != 0) {
        snprintf(error, error_size, "cannot start the xDS thread");
        atomic_store(&server->stopping, true);
        xds_server_stop(server);
        return -1;
    }
    *bound_port = port;
    *out = server;
    return 0;
}

int xds_server_tls_port(const xds_server *server)
{
    return server->tls_port;
}

char *xds_server_metrics(xds_server *server)
{
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (out == NULL)
        return NULL;
    fprintf(out,
            "# HELP atrium_xds_streams Connected ADS streams by protocol.\n"
            "# TYPE atrium_xds_streams gauge\n"
            "atrium_xds_streams{protocol=\"sotw\"} %ld\n"
            "atrium_xds_streams{protocol=\"delta\"} %ld\n"
            "# HELP atrium_xds_pushes_total Responses sent, by resource type.\n"
            "# TYPE atrium_xds_pushes_total counter\n",
            atomic_load(&server->streams_sotw), atomic_load(&server->streams_delta));
    for (int type = 0; type < XDS_TYPE_COUNT; type++) {
        const char *url = xds_type_url((xds_type)type);
        fprintf(out, "atrium_xds_pushes_total{type=\"%s\"} %ld\n", strrchr(url, '.') + 1,
                atomic_load(&server->pushes[type]));
    }
    fprintf(out,
            "# HELP atrium_xds_nacks_total Responses subscribers rejected.\n"
            "# TYPE atrium_xds_nacks_total counter\n"
            "atrium_xds_nacks_total %ld\n"
            "# HELP atrium_xds_push_latency_seconds From noticing a store change to pushing it.\n"
            "# TYPE atrium_xds_push_latency_seconds histogram\n",
            atomic_load(&server->nacks));
    long cumulative = 0;
    for (int b = 0; b < 8; b++) {
        cumulative += atomic_load(&server->push_latency_buckets[b]);
        fprintf(out, "atrium_xds_push_latency_seconds_bucket{le=\"%g\"} %ld\n", latency_bounds[b],
                cumulative);
    }
    fprintf(out,
            "atrium_xds_push_latency_seconds_bucket{le=\"+Inf\"} %ld\n"
            "atrium_xds_push_latency_seconds_sum %.6f\n"
            "atrium_xds_push_latency_seconds_count %ld\n",
            atomic_load(&server->push_latency_count),
            (double)atomic_load(&server->push_latency_sum_us) / 1e6,
            atomic_load(&server->push_latency_count));
    fprintf(out,
            "# HELP atrium_xds_streams_closed_total Streams the server ended, by reason.\n"
            "# TYPE atrium_xds_streams_closed_total counter\n"
            "atrium_xds_streams_closed_total{reason=\"invalid_request\"} %ld\n"
            "atrium_xds_streams_closed_total{reason=\"slow_consumer\"} %ld\n"
            "atrium_xds_streams_closed_total{reason=\"revoked_certificate\"} %ld\n",
            atomic_load(&server->refused_requests), atomic_load(&server->slow_closed),
            atomic_load(&server->revoked_closed));
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

void xds_server_stop(xds_server *server)
{
    if (server == NULL)
        return;
    if (server->thread) {
        atomic_store(&server->stopping, true);
        atomic_store(&server->wake_pending, false);
        xds_server_notify(server);
        pthread_join(server->thread, NULL);
    }
    if (server->wake_channel)
        grpc_channel_destroy(server->wake_channel);
    if (server->grpc)
        grpc_server_destroy(server->grpc);
    if (server->queue) {
        grpc_completion_queue_shutdown(server->queue);
        while (grpc_completion_queue_next(server->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(server->queue);
        grpc_shutdown();
    }
    xds_cache_free(server->shared);
    for (int type = 0; type < XDS_TYPE_COUNT; type++)
        string_map_free(server->changed[type]);
    string_map_free(server->profiles);
    string_map_free(server->services);
    string_map_free(server->revoked);
    free(server);
}
