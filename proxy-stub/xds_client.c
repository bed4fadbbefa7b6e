/*
 * xds_client.c — atrium-proxy's delta ADS client (see xds_client.h): one
 * DeltaAggregatedResources stream at a time to atriumd, on a thread of its
 * own with its own completion queue (gRPC C core).
 *
 * Threading: the client thread owns the completion queue, the stream, the
 * resource set the proxy holds and the saved-state file. Other threads only
 * set `stopping` and wake the queue (xds_client_stop: an idle channel's
 * connectivity watch, see shared/notes/grpc-core.md), or copy the status
 * under its mutex.
 *
 * Per stream at most one batch of each kind is in flight: the start (send
 * and receive initial metadata), one receive, one send (further requests wait
 * in a queue) and the status. A stream is freed once its status has arrived
 * and no batch is in flight; the next one opens after a jittered backoff.
 *
 * Each type's resources are kept sorted by name. A response is merged into a
 * copy of the held set; ClusterLoadAssignments of clusters no longer held and
 * RouteConfigurations no listener names any more are dropped with it (and
 * unsubscribed); the copy is built into a snapshot, and only when that
 * succeeds does it replace the held set.
 */
#include "xds_client.h"

#include "any.h"
#include "clock.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "error_text.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "state_file.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DELTA_METHOD                                                                               \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define WAKE_TARGET             "unix:/nonexistent/atrium-proxy-wake.sock"
#define WAKE_DEADLINE_MS        1000 /* the watch fires at once; this only bounds it */
#define BACKOFF_INITIAL_MS      500
#define BACKOFF_MAX_MS          30000
#define STATUS_INVALID_ARGUMENT 3 /* google.rpc.Code */
#define USER_AGENT              "atrium-proxy"
#define KEEPALIVE_TIME_MS       330000 /* > atriumd's 5 min minimum ping interval */
#define KEEPALIVE_TIMEOUT_MS    20000
#define WILDCARD                "*"

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_request;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_response;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
    initial_version;
typedef Envoy__Service__Discovery__V3__Resource discovery_resource;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    connection_manager;

/* What a completion is for; the tag is the kind itself. */
typedef enum event_kind {
    EVENT_START = 1, /* send and receive initial metadata */
    EVENT_RECEIVE,
    EVENT_SEND,
    EVENT_STATUS,
    EVENT_WAKE,
} event_kind;

static void *tag_of(event_kind kind)
{
    return (void *)(intptr_t)kind;
}

/* ---- sorted sets of names ---- */

/* Names, each malloc'd and owned by the set; sorted and unique after
 * name_set_finish. */
typedef struct name_set {
    char **names;
    size_t count;
} name_set;

static int compare_text(const void *left, const void *right)
{
    return strcmp(*(const char *const *)left, *(const char *const *)right);
}

static void name_set_clear(name_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        free(set->names[i]);
    free(set->names);
    set->names = NULL;
    set->count = 0;
}

/* Appends a copy of name; returns -1 when out of memory. */
static int name_set_add(name_set *set, const char *name)
{
    char **grown = realloc(set->names, (set->count + 1) * sizeof(*grown));
    if (grown == NULL)
        return -1;
    set->names = grown;
    if ((set->names[set->count] = strdup(name)) == NULL)
        return -1;
    set->count++;
    return 0;
}

/* Sorts and drops duplicates. */
static void name_set_finish(name_set *set)
{
    if (set->count < 2)
        return;
    qsort(set->names, set->count, sizeof(char *), compare_text);
    size_t kept = 1;
    for (size_t i = 1; i < set->count; i++) {
        if (strcmp(set->names[i], set->names[kept - 1]) == 0)
            free(set->names[i]);
        else
            set->names[kept++] = set->names[i];
    }
    set->count = kept;
}

static bool name_set_has(const name_set *set, const char *name)
{
    return set->count > 0 &&
           bsearch(&name, set->names, set->count, sizeof(char *), compare_text) != NULL;
}

/* ---- state ---- */

/* A request waiting for its turn to be sent. */
typedef struct outgoing {
    struct outgoing *next;
    grpc_byte_buffer *buffer;
} outgoing;

/* One DeltaAggregatedResources call and everything that lives as long. */
typedef struct stream {
    grpc_channel *channel; /* one per stream: a fresh connection on every attempt */
    grpc_call *call;
    grpc_metadata_array initial_metadata, trailing_metadata;
    grpc_status_code status_code;
    grpc_slice status_details;
    grpc_byte_buffer *received;
    int pending;      /* batches in flight */
    bool ended;       /* the status arrived */
    bool sending;     /* a SEND_MESSAGE is in flight (queue_head) */
    bool send_failed; /* the call cannot send any more */
    bool cancelled;   /* by us */
    outgoing *queue_head, *queue_tail;
    bool node_sent;                                 /* the Node goes in the first request only */
    bool requested[PROXY_RESOURCE_TYPE_COUNT];      /* the type's first request went out */
    name_set subscribed[PROXY_RESOURCE_TYPE_COUNT]; /* by name: endpoints and routes */
    uint64_t responses;
} stream;

struct xds_client {
    /* Options, copied. */
    char *target;
    char *node_id;
    char *service;        /* NULL: not sent */
    char *namespace_name; /* NULL: not sent */
    uint16_t app_port, inbound_port, outbound_port;
    char *state_path; /* <state_dir>/xds-state.pb, NULL without a state_dir */
    xds_client_apply_fn apply;
    int (*check)(const proxy_config *config, void *context, char *error, size_t error_size);
    void *context;

    bool grpc_initialized;
    grpc_completion_queue *queue;
    grpc_channel *wake_channel; /* never connected: its watch wakes the queue */
    pthread_t thread;
    bool thread_started;
    atomic_bool stopping;
    atomic_bool wake_pending;

    /* The client thread's (and xds_client_start's before the thread runs). */
    stream *stream;               /* NULL between streams */
    proxy_resource_set held;      /* what the last snapshot was built from */
    state_file_versions versions; /* system_version_info last ACKed, per type */
    uint64_t generation;          /* of the last snapshot built */
    int64_t reconnect_at_ms;      /* monotonic */
    int64_t backoff_ms;           /* the next delay, before jitter */
    uint64_t random_state;        /* xorshift64 for the jitter */

    pthread_mutex_t status_lock;
    xds_client_status status;
};

static gpr_timespec deadline_in_ms(int64_t milliseconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(milliseconds, GPR_TIMESPAN));
}

/* "Cluster" for "type.googleapis.com/envoy.config.cluster.v3.Cluster". */
static const char *short_type(const char *url)
{
    const char *dot = url ? strrchr(url, '.') : NULL;
    return dot ? dot + 1 : (url ? url : "");
}

static void lock_status(xds_client *client)
{
    pthread_mutex_lock(&client->status_lock);
}

static void unlock_status(xds_client *client)
{
    pthread_mutex_unlock(&client->status_lock);
}

/* ---- the held resource set ---- */

static int compare_resources(const void *left, const void *right)
{
    return strcmp(((const proxy_resource *)left)->name, ((const proxy_resource *)right)->name);
}

/* Sorts every type by name (a copy keeps the order; this only guards it). */
static void sort_set(proxy_resource_set *set)
{
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        bool sorted = true;
        for (size_t i = 1; i < set->counts[type] && sorted; i++)
            sorted = strcmp(set->items[type][i - 1].name, set->items[type][i].name) < 0;
        if (!sorted)
            qsort(set->items[type], set->counts[type], sizeof(proxy_resource), compare_resources);
    }
}

/* The index of name in the type's items, or where it would go (*found false). */
static size_t find_resource(const proxy_resource_set *set, proxy_resource_type type,
                            const char *name, bool *found)
{
    size_t low = 0, high = set->counts[type];
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        int order = strcmp(set->items[type][middle].name, name);
        if (order == 0) {
            *found = true;
            return middle;
        }
        if (order < 0)
            low = middle + 1;
        else
            high = middle;
    }
    *found = false;
    return low;
}

static void free_resource(proxy_resource *resource)
{
    free(resource->name);
    free(resource->version);
    free(resource->bytes);
    memset(resource, 0, sizeof(*resource));
}

/* A response is merged into the held set in place; the journal keeps what
 * each step replaced, so that a response the builder refuses is undone
 * (NACK) without the held set ever having been copied whole. */
typedef struct journal_step {
    proxy_resource_type type;
    bool inserted;           /* a new resource named previous.name: undone by removing it */
    proxy_resource previous; /* a removed or replaced resource's former contents (owned) */
} journal_step;

typedef struct journal {
    journal_step *steps;
    size_t count, capacity;
} journal;

/* Makes room for one more step before the change it records is made.
 * Returns -1 when out of memory. */
static int journal_reserve(journal *log)
{
    if (log->count < log->capacity)
        return 0;
    size_t capacity = log->capacity ? log->capacity * 2 : 16;
    journal_step *steps = realloc(log->steps, capacity * sizeof(*steps));
    if (steps == NULL)
        return -1;
    log->steps = steps;
    log->capacity = capacity;
    return 0;
}

/* Forgets the steps (the merge is kept): frees what they held. */
static void journal_commit(journal *log)
{
    for (size_t i = 0; i < log->count; i++)
        free_resource(&log->steps[i].previous);
    free(log->steps);
    memset(log, 0, sizeof(*log));
}

static void remove_resource_at(proxy_resource_set *set, proxy_resource_type type, size_t index,
                               journal *log)
{
    if (log != NULL)
        log->steps[log->count++] = (journal_step){type, false, set->items[type][index]};
    else
        free_resource(&set->items[type][index]);
    memmove(&set->items[type][index], &set->items[type][index + 1],
            (set->counts[type] - index - 1) * sizeof(proxy_resource));
    set->counts[type]--;
}

/* Replaces version and bytes of *resource; -1 when out of memory (unchanged). */
static int replace_contents(proxy_resource *resource, const char *version,
                            const ProtobufCBinaryData *value)
{
    char *new_version = strdup(version);
    uint8_t *new_bytes = malloc(value->len ? value->len : 1);
    if (new_version == NULL || new_bytes == NULL) {
        free(new_version);
        free(new_bytes);
        return -1;
    }
    if (value->len > 0)
        memcpy(new_bytes, value->data, value->len);
    free(resource->version);
    free(resource->bytes);
    resource->version = new_version;
    resource->bytes = new_bytes;
    resource->length = value->len;
    return 0;
}

static int insert_resource_at(proxy_resource_set *set, proxy_resource_type type, size_t index,
                              const char *name, const char *version,
                              const ProtobufCBinaryData *value);

/* Puts the held set back as it was before the journal's steps, newest
 * first, and empties the journal. */
static void journal_undo(journal *log, proxy_resource_set *set)
{
    while (log->count > 0) {
        journal_step *step = &log->steps[--log->count];
        bool found;
        size_t index = find_resource(set, step->type, step->previous.name, &found);
        if (step->inserted) {
            if (found)
                remove_resource_at(set, step->type, index, NULL);
            free_resource(&step->previous);
        } else if (found) { /* replaced: its former version and bytes come back */
            proxy_resource *held = &set->items[step->type][index];
            free(held->version);
            free(held->bytes);
            held->version = step->previous.version;
            held->bytes = step->previous.bytes;
            held->length = step->previous.length;
            free(step->previous.name);
        } else { /* removed: back in its place (the array still has the room: no
                  * insertion follows a removal in a merge) */
            proxy_resource *items = set->items[step->type];
            memmove(&items[index + 1], &items[index],
                    (set->counts[step->type] - index) * sizeof(proxy_resource));
            items[index] = step->previous;
            set->counts[step->type]++;
        }
    }
    free(log->steps);
    memset(log, 0, sizeof(*log));
}

static int insert_resource_at(proxy_resource_set *set, proxy_resource_type type, size_t index,
                              const char *name, const char *version,
                              const ProtobufCBinaryData *value)
{
    proxy_resource *grown =
        realloc(set->items[type], (set->counts[type] + 1) * sizeof(proxy_resource));
    if (grown == NULL)
        return -1;
    set->items[type] = grown;
    proxy_resource fresh = {strdup(name), NULL, NULL, 0};
    if (fresh.name == NULL || replace_contents(&fresh, version, value) != 0) {
        free_resource(&fresh);
        return -1;
    }
    memmove(&grown[index + 1], &grown[index], (set->counts[type] - index) * sizeof(proxy_resource));
    grown[index] = fresh;
    set->counts[type]++;
    return 0;
}

/* Checks a response's resources before anything of it is applied. */
static int check_response(const delta_response *response, char *error, size_t error_size)
{
    const char *kind = short_type(response->type_url);
    const char **names = calloc(response->n_resources ? response->n_resources : 1, sizeof(char *));
    if (names == NULL) {
        error_text(error, error_size, "out of memory");
        return -1;
    }
    int result = 0;
    for (size_t i = 0; i < response->n_resources && result == 0; i++) {
        const discovery_resource *resource = response->resources[i];
        const Google__Protobuf__Any *any = resource->resource;
        if (resource->name == NULL || resource->name[0] == '\0') {
            error_text(error, error_size, "a %s without a name", kind);
            result = -1;
        } else if (any == NULL) {
            error_text(error, error_size, "%s \"%s\": the Resource carries no resource", kind,
                       resource->name);
            result = -1;
        } else if (any->type_url == NULL || strcmp(any->type_url, response->type_url) != 0) {
            error_text(error, error_size, "%s \"%s\": a \"%s\" in a response for %s", kind,
                       resource->name, any->type_url ? any->type_url : "", response->type_url);
            result = -1;
        }
        names[i] = resource->name;
    }
    if (result == 0 && response->n_resources > 1) {
        qsort(names, response->n_resources, sizeof(char *), compare_text);
        for (size_t i = 1; i < response->n_resources && result == 0; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                error_text(error, error_size, "%s \"%s\" twice in one response", kind, names[i]);
                result = -1;
            }
        }
    }
    free(names);
    return result;
}

/* Merges a response of `type` into set: additions and updates, then
 * removals (after them, so that undoing a removal always finds the room the
 * resource had), each recorded in log. *changed tells whether anything differs.
 * Returns 0, or -1 with the reason in error (the caller undoes the log). */
static int merge_response(proxy_resource_set *set, proxy_resource_type type,
                          const delta_response *response, bool *changed, journal *log, char *error,
                          size_t error_size)
{
    *changed = false;
    if (check_response(response, error, error_size) != 0)
        return -1;
    for (size_t i = 0; i < response->n_resources; i++) {
        const discovery_resource *resource = response->resources[i];
        const char *version = resource->version ? resource->version : "";
        const ProtobufCBinaryData *value = &resource->resource->value;
        bool found;
        size_t index = find_resource(set, type, resource->name, &found);
        int result = journal_reserve(log);
        if (result == 0 && found) {
            proxy_resource *held = &set->items[type][index];
            bool same = strcmp(held->version ? held->version : "", version) == 0 &&
                        held->length == value->len &&
                        (value->len == 0 || memcmp(held->bytes, value->data, value->len) == 0);
            if (!same) {
                /* The former contents go to the journal; new copies replace them. */
                proxy_resource previous = {strdup(held->name), held->version, held->bytes,
                                           held->length};
                held->version = NULL;
                held->bytes = NULL;
                result = previous.name != NULL ? replace_contents(held, version, value) : -1;
                if (result != 0) { /* put the former contents back */
                    free(held->version);
                    free(held->bytes);
                    held->version = previous.version;
                    held->bytes = previous.bytes;
                    free(previous.name);
                } else {
                    log->steps[log->count++] = (journal_step){type, false, previous};
                }
                *changed = true;
            }
        } else if (result == 0) {
            char *name_copy = strdup(resource->name);
            result = name_copy != NULL
                         ? insert_resource_at(set, type, index, resource->name, version, value)
                         : -1;
            if (result == 0)
                log->steps[log->count++] =
                    (journal_step){type, true, (proxy_resource){name_copy, NULL, NULL, 0}};
            else
                free(name_copy);
            *changed = true;
        }
        if (result != 0) {
            error_text(error, error_size, "out of memory merging %s \"%s\"",
                       short_type(response->type_url), resource->name);
            return -1;
        }
    }
    for (size_t i = 0; i < response->n_removed_resources; i++) {
        bool found;
        size_t index = find_resource(set, type, response->removed_resources[i], &found);
        if (found) {
            if (journal_reserve(log) != 0) {
                error_text(error, error_size, "out of memory");
                return -1;
            }
            remove_resource_at(set, type, index, log);
            *changed = true;
        }
    }
    return 0;
}

/* Adds the RDS route table name of one filter config to out, when it is an
 * HttpConnectionManager with RDS. Returns -1 when out of memory. */
static int add_manager_route(const Google__Protobuf__Any *config, name_set *out)
{
    const ProtobufCMessageDescriptor *descriptor =
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor;
    const char *type_name = config ? any_type_name(config) : NULL;
    if (type_name == NULL || strcmp(type_name, descriptor->name) != 0)
        return 0;
    char reason[128];
    connection_manager *manager =
        (connection_manager *)any_unpack(config, descriptor, reason, sizeof(reason));
    if (manager == NULL)
        return 0; /* the build reports it */
    int result = 0;
    if (manager->route_specifier_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS &&
        manager->rds != NULL && manager->rds->route_config_name != NULL &&
        manager->rds->route_config_name[0] != '\0')
        result = name_set_add(out, manager->rds->route_config_name);
    protobuf_c_message_free_unpacked(&manager->base, NULL);
    return result;
}

/* Adds the RDS route table names of one packed Listener to out (its filter
 * chains' and an API listener's). A listener that does not decode adds
 * nothing: the build reports it. Returns -1 when out of memory. */
static int add_route_names(const proxy_resource *listener_resource, name_set *out)
{
    Envoy__Config__Listener__V3__Listener *listener = envoy__config__listener__v3__listener__unpack(
        NULL, listener_resource->length, listener_resource->bytes);
    if (listener == NULL)
        return 0;
    int result = 0;
    for (size_t c = 0; c < listener->n_filter_chains && result == 0; c++) {
        const Envoy__Config__Listener__V3__FilterChain *chain = listener->filter_chains[c];
        for (size_t f = 0; f < chain->n_filters && result == 0; f++)
            result = add_manager_route(chain->filters[f]->typed_config, out);
    }
    if (result == 0 && listener->api_listener != NULL)
        result = add_manager_route(listener->api_listener->api_listener, out);
    envoy__config__listener__v3__listener__free_unpacked(listener, NULL);
    return result;
}

/* What the proxy should subscribe to by name, given what it holds: the
 * ClusterLoadAssignments of its clusters and the route tables its listeners
 * name. Returns 0, or -1 when out of memory (both sets cleared). */
static int wanted_names(const proxy_resource_set *set, name_set *clusters, name_set *routes)
{
    int result = 0;
    for (size_t i = 0; i < set->counts[PROXY_RESOURCE_CLUSTER] && result == 0; i++)
        result = name_set_add(clusters, set->items[PROXY_RESOURCE_CLUSTER][i].name);
    for (size_t i = 0; i < set->counts[PROXY_RESOURCE_LISTENER] && result == 0; i++)
        result = add_route_names(&set->items[PROXY_RESOURCE_LISTENER][i], routes);
    if (result != 0) {
        name_set_clear(clusters);
        name_set_clear(routes);
        return -1;
    }
    name_set_finish(clusters);
    name_set_finish(routes);
    return 0;
}

/* Drops the resources of `type` whose names are not in wanted, recording
 * them in log. Returns -1 when out of memory. */
static int keep_only(proxy_resource_set *set, proxy_resource_type type, const name_set *wanted,
                     journal *log)
{
    for (size_t i = set->counts[type]; i-- > 0;) {
        if (!name_set_has(wanted, set->items[type][i].name)) {
            if (journal_reserve(log) != 0)
                return -1;
            remove_resource_at(set, type, i, log);
        }
    }
    return 0;
}

/* ---- status ---- */

static void note_nack(xds_client *client, const char *message)
{
    lock_status(client);
    client->status.nacks++;
    snprintf(client->status.last_nack, sizeof(client->status.last_nack), "%s", message);
    unlock_status(client);
}

/* ---- sending ---- */

static bool start_batch(stream *current, const grpc_op *ops, size_t count, event_kind kind)
{
    if (grpc_call_start_batch(current->call, ops, count, tag_of(kind), NULL) != GRPC_CALL_OK)
        return false;
    current->pending++;
    return true;
}

static void cancel_stream(stream *current, grpc_status_code code, const char *reason)
{
    if (current->cancelled)
        return;
    current->cancelled = true;
    grpc_call_cancel_with_status(current->call, code, reason, NULL);
}

/* Starts sending the head of the queue, when nothing is being sent. */
static void send_next(stream *current)
{
    if (current->sending || current->send_failed || current->queue_head == NULL)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = current->queue_head->buffer;
    if (start_batch(current, &op, 1, EVENT_SEND)) {
        current->sending = true;
    } else {
        current->send_failed = true;
        cancel_stream(current, GRPC_STATUS_INTERNAL, "atrium-proxy: cannot send a request");
    }
}

static void free_queue(stream *current)
{
    while (current->queue_head != NULL) {
        outgoing *item = current->queue_head;
        current->queue_head = item->next;
        grpc_byte_buffer_destroy(item->buffer);
        free(item);
    }
    current->queue_tail = NULL;
}

/* The Node of this proxy, pointing into client and parts. */
typedef struct node_parts {
    Envoy__Config__Core__V3__Node node;
    Google__Protobuf__Struct metadata;
    Google__Protobuf__Struct__FieldsEntry entries[5];
    Google__Protobuf__Struct__FieldsEntry *fields[5];
    Google__Protobuf__Value values[5];
} node_parts;

static void add_metadata(node_parts *parts, const char *key, const char *text, double number)
{
    size_t index = parts->metadata.n_fields++;
    google__protobuf__struct__fields_entry__init(&parts->entries[index]);
    google__protobuf__value__init(&parts->values[index]);
    parts->entries[index].key = (char *)key;
    parts->entries[index].value = &parts->values[index];
    if (text != NULL) {
        parts->values[index].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        parts->values[index].string_value = (char *)text;
    } else {
        parts->values[index].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        parts->values[index].number_value = number;
    }
    parts->fields[index] = &parts->entries[index];
}

static void fill_node(const xds_client *client, node_parts *parts)
{
    memset(parts, 0, sizeof(*parts));
    envoy__config__core__v3__node__init(&parts->node);
    google__protobuf__struct__init(&parts->metadata);
    parts->metadata.fields = parts->fields;
    parts->node.id = client->node_id;
    parts->node.cluster = client->service ? client->service : "";
    parts->node.user_agent_name = USER_AGENT;
    if (client->service != NULL)
        add_metadata(parts, "atrium.service", client->service, 0);
    if (client->namespace_name != NULL)
        add_metadata(parts, "atrium.namespace", client->namespace_name, 0);
    /* Numbers: atriumd's metadata_port reads numbers and numeric strings. */
    if (client->app_port != 0)
        add_metadata(parts, "atrium.app_port", NULL, client->app_port);
    if (client->inbound_port != 0)
        add_metadata(parts, "atrium.inbound_port", NULL, client->inbound_port);
    if (client->outbound_port != 0)
        add_metadata(parts, "atrium.outbound_port", NULL, client->outbound_port);
    parts->node.metadata = &parts->metadata;
}

/* Packs request (with the Node when it is the stream's first) and queues it. */
static void send_request(xds_client *client, delta_request *request)
{
    stream *current = client->stream;
    if (current == NULL || current->send_failed || current->ended)
        return;
    node_parts parts;
    if (!current->node_sent) {
        fill_node(client, &parts);
        request->node = &parts.node;
    }
    size_t length = protobuf_c_message_get_packed_size(&request->base);
    grpc_slice slice = grpc_slice_malloc(length);
    protobuf_c_message_pack(&request->base, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    request->node = NULL;
    outgoing *item = calloc(1, sizeof(*item));
    if (item == NULL) {
        grpc_byte_buffer_destroy(buffer);
        cancel_stream(current, GRPC_STATUS_RESOURCE_EXHAUSTED, "atrium-proxy: out of memory");
        return;
    }
    current->node_sent = true;
    item->buffer = buffer;
    if (current->queue_tail != NULL)
        current->queue_tail->next = item;
    else
        current->queue_head = item;
    current->queue_tail = item;
    send_next(current);
}

/* A subscription request for `type`: names to add and to drop, and on the
 * type's first request of the stream the versions of what the proxy holds. */
static void send_subscription(xds_client *client, proxy_resource_type type,
                              const char *const *subscribe, size_t subscribe_count,
                              const char *const *unsubscribe, size_t unsubscribe_count)
{
    stream *current = client->stream;
    delta_request request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    request.type_url = (char *)proxy_resource_type_url(type);
    request.n_resource_names_subscribe = subscribe_count;
    request.resource_names_subscribe = (char **)subscribe;
    request.n_resource_names_unsubscribe = unsubscribe_count;
    request.resource_names_unsubscribe = (char **)unsubscribe;
    initial_version *entries = NULL;
    initial_version **pointers = NULL;
    if (!current->requested[type] && client->held.counts[type] > 0) {
        size_t count = client->held.counts[type];
        entries = calloc(count, sizeof(*entries));
        pointers = calloc(count, sizeof(*pointers));
        if (entries == NULL || pointers == NULL) {
            free(entries);
            free(pointers);
            cancel_stream(current, GRPC_STATUS_RESOURCE_EXHAUSTED, "atrium-proxy: out of memory");
            return;
        }
        for (size_t i = 0; i < count; i++) {
            const proxy_resource *resource = &client->held.items[type][i];
            envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(
                &entries[i]);
            entries[i].key = resource->name;
            entries[i].value = resource->version ? resource->version : "";
            pointers[i] = &entries[i];
        }
        request.n_initial_resource_versions = count;
        request.initial_resource_versions = pointers;
    }
    current->requested[type] = true;
    send_request(client, &request);
    free(entries);
    free(pointers);
}

/* ACK (error_message NULL) or NACK of the response with nonce. */
static void answer(xds_client *client, const char *type_url, const char *nonce,
                   const char *error_message)
{
    delta_request request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    request.type_url = (char *)type_url;
    request.response_nonce = (char *)nonce;
    Google__Rpc__Status detail = GOOGLE__RPC__STATUS__INIT;
    if (error_message != NULL) {
        detail.code = STATUS_INVALID_ARGUMENT;
        detail.message = (char *)error_message;
        request.error_detail = &detail;
    }
    send_request(client, &request);
}

/* Brings the by-name subscriptions (endpoints, routes) of the stream in line
 * with what the held set needs. */
static void update_subscriptions(xds_client *client)
{
    stream *current = client->stream;
    if (current == NULL)
        return;
    name_set wanted[PROXY_RESOURCE_TYPE_COUNT] = {{0}};
    if (wanted_names(&client->held, &wanted[PROXY_RESOURCE_ENDPOINT],
                     &wanted[PROXY_RESOURCE_ROUTE]) != 0) {
        cancel_stream(current, GRPC_STATUS_RESOURCE_EXHAUSTED, "atrium-proxy: out of memory");
        return;
    }
    static const proxy_resource_type by_name[] = {PROXY_RESOURCE_ENDPOINT, PROXY_RESOURCE_ROUTE};
    for (size_t t = 0; t < sizeof(by_name) / sizeof(by_name[0]); t++) {
        proxy_resource_type type = by_name[t];
        name_set *want = &wanted[type];
        name_set *have = &current->subscribed[type];
        if (!current->requested[type]) {
            /* An empty first subscribe would mean the wildcard: wait for names. */
            if (want->count > 0)
                send_subscription(client, type, (const char *const *)want->names, want->count, NULL,
                                  0);
        } else {
            const char **added = calloc(want->count + 1, sizeof(char *));
            const char **dropped = calloc(have->count + 1, sizeof(char *));
            size_t added_count = 0, dropped_count = 0;
            if (added == NULL || dropped == NULL) {
                free(added);
                free(dropped);
                cancel_stream(current, GRPC_STATUS_RESOURCE_EXHAUSTED,
                              "atrium-proxy: out of memory");
                break;
            }
            for (size_t i = 0; i < want->count; i++) {
                if (!name_set_has(have, want->names[i]))
                    added[added_count++] = want->names[i];
            }
            for (size_t i = 0; i < have->count; i++) {
                if (!name_set_has(want, have->names[i]))
                    dropped[dropped_count++] = have->names[i];
            }
            if (added_count > 0 || dropped_count > 0)
                send_subscription(client, type, added, added_count, dropped, dropped_count);
            free(added);
            free(dropped);
        }
        if (current->requested[type]) {
            name_set_clear(have);
            *have = *want;
            *want = (name_set){0};
        }
    }
    name_set_clear(&wanted[PROXY_RESOURCE_ENDPOINT]);
    name_set_clear(&wanted[PROXY_RESOURCE_ROUTE]);
}

/* ---- responses ---- */

static void save_state(xds_client *client)
{
    if (client->state_path == NULL)
        return;
    char error[256] = "";
    int result = state_file_write(client->state_path, &client->held, &client->versions, error,
                                  sizeof(error));
    lock_status(client);
    if (result != 0) {
        client->status.state_write_failures++;
        snprintf(client->status.last_state_error, sizeof(client->status.last_state_error), "%s",
                 error);
    } else {
        client->status.last_state_error[0] = '\0';
    }
    unlock_status(client);
}

/* Hands a snapshot to the proxy (which takes the reference). */
static void hand_over(xds_client *client, proxy_config *config)
{
    if (client->apply != NULL)
        client->apply(config, client->context);
    else
        proxy_config_release(config);
}

/* Merges, builds and either ACKs and applies or NACKs. */
static void handle_response(xds_client *client, const delta_response *response)
{
    const char *type_url = response->type_url ? response->type_url : "";
    const char *nonce = response->nonce ? response->nonce : "";
    char error[512] = "";
    proxy_resource_type type;
    if (!proxy_resource_type_from_url(type_url, &type)) {
        error_text(error, sizeof(error),
                   "a response of type \"%s\", which atrium-proxy does not use", type_url);
        answer(client, type_url, nonce, error);
        note_nack(client, error);
        return;
    }
    /* Merged into the held set in place and undone if refused: the set is
     * never copied whole (at 1,000 services a copy is ~750 KB). */
    proxy_resource_set *held = &client->held;
    journal log = {0};
    bool changed = false;
    sort_set(held);
    int result = merge_response(held, type, response, &changed, &log, error, sizeof(error));
    proxy_config *config = NULL;
    if (result == 0 && changed) {
        name_set clusters = {0}, routes = {0};
        if (wanted_names(held, &clusters, &routes) != 0 ||
            keep_only(held, PROXY_RESOURCE_ENDPOINT, &clusters, &log) != 0 ||
            keep_only(held, PROXY_RESOURCE_ROUTE, &routes, &log) != 0) {
            error_text(error, sizeof(error), "out of memory");
            result = -1;
        } else {
            config = proxy_config_build(held, client->generation + 1, error, sizeof(error));
            if (config == NULL) {
                if (error[0] == '\0')
                    error_text(error, sizeof(error), "the snapshot could not be built");
                result = -1;
            } else if (client->check != NULL &&
                       client->check(config, client->context, error, sizeof(error)) != 0) {
                if (error[0] == '\0')
                    error_text(error, sizeof(error), "the snapshot cannot be applied");
                proxy_config_release(config);
                config = NULL;
                result = -1;
            }
        }
        name_set_clear(&clusters);
        name_set_clear(&routes);
    }
    if (result != 0) {
        journal_undo(&log, held);
        answer(client, type_url, nonce, error);
        note_nack(client, error);
        return;
    }
    journal_commit(&log);
    if (changed)
        client->generation++;
    snprintf(client->versions.text[type], sizeof(client->versions.text[type]), "%s",
             response->system_version_info ? response->system_version_info : "");
    answer(client, type_url, nonce, NULL);
    update_subscriptions(client);
    if (changed)
        save_state(client);
    lock_status(client);
    client->status.acks++;
    memcpy(client->status.versions[type], client->versions.text[type],
           sizeof(client->status.versions[type]));
    if (config != NULL) {
        client->status.generation = client->generation;
        client->status.serving_saved_state = false;
        client->status.last_update_ms = clock_wall_ms();
    }
    unlock_status(client);
    if (config != NULL)
        hand_over(client, config);
}

/* ---- the stream ---- */

static void start_receive(stream *current)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &current->received;
    start_batch(current, &op, 1, EVENT_RECEIVE); /* fails only when the call is over */
}

static void on_receive(xds_client *client, bool success)
{
    stream *current = client->stream;
    grpc_byte_buffer *buffer = current->received;
    current->received = NULL;
    if (!success || buffer == NULL) {
        if (buffer != NULL)
            grpc_byte_buffer_destroy(buffer);
        return; /* the stream is over: its status follows */
    }
    grpc_byte_buffer_reader reader;
    grpc_slice slice = grpc_empty_slice();
    if (grpc_byte_buffer_reader_init(&reader, buffer)) {
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    grpc_byte_buffer_destroy(buffer);
    current->responses++;
    lock_status(client);
    client->status.responses++;
    unlock_status(client);
    delta_response *response = envoy__service__discovery__v3__delta_discovery_response__unpack(
        NULL, GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    if (response == NULL) {
        /* Without its type and nonce it cannot even be NACKed: start over. */
        cancel_stream(current, GRPC_STATUS_INTERNAL,
                      "atrium-proxy: a DeltaDiscoveryResponse that does not decode");
        return;
    }
    handle_response(client, response);
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(response, NULL);
    if (!atomic_load(&client->stopping))
        start_receive(current);
}

static void on_send(stream *current, bool success)
{
    current->sending = false;
    outgoing *item = current->queue_head;
    if (item != NULL) {
        current->queue_head = item->next;
        if (current->queue_head == NULL)
            current->queue_tail = NULL;
        grpc_byte_buffer_destroy(item->buffer);
        free(item);
    }
    if (!success) {
        current->send_failed = true; /* the call is over: its status follows */
        free_queue(current);
        return;
    }
    send_next(current);
}

static void free_stream(stream *current)
{
    if (current->call != NULL)
        grpc_call_unref(current->call);
    if (current->received != NULL)
        grpc_byte_buffer_destroy(current->received);
    free_queue(current);
    grpc_metadata_array_destroy(&current->initial_metadata);
    grpc_metadata_array_destroy(&current->trailing_metadata);
    grpc_slice_unref(current->status_details);
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++)
        name_set_clear(&current->subscribed[type]);
    if (current->channel != NULL)
        grpc_channel_destroy(current->channel);
    free(current);
}

/* xorshift64: enough for jitter. */
static uint64_t next_random(xds_client *client)
{
    uint64_t x = client->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    client->random_state = x;
    return x;
}

/* Sets the time of the next attempt: the backoff ±50 %, then doubles the
 * backoff (to its maximum); a stream that delivered a response starts the
 * backoff over. */
static void schedule_reconnect(xds_client *client, bool delivered)
{
    if (delivered)
        client->backoff_ms = BACKOFF_INITIAL_MS;
    int64_t base = client->backoff_ms;
    int64_t delay = base / 2 + (int64_t)(next_random(client) % (uint64_t)(base + 1));
    client->reconnect_at_ms = clock_monotonic_ms() + delay;
    client->backoff_ms = base * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : base * 2;
}

/* Frees the stream once it is over and nothing of it is in flight. */
static void settle_stream(xds_client *client)
{
    stream *current = client->stream;
    if (current == NULL || !current->ended || current->pending > 0)
        return;
    bool delivered = current->responses > 0;
    lock_status(client);
    client->status.connected = false;
    if (current->status_code != GRPC_STATUS_OK) {
        char *details = grpc_slice_to_c_string(current->status_details);
        snprintf(client->status.last_stream_error, sizeof(client->status.last_stream_error),
                 "status %d: %s", (int)current->status_code, details ? details : "");
        gpr_free(details);
    }
    unlock_status(client);
    client->stream = NULL;
    free_stream(current);
    schedule_reconnect(client, delivered);
}

static void open_stream(xds_client *client)
{
    stream *current = calloc(1, sizeof(*current));
    if (current == NULL) {
        schedule_reconnect(client, false);
        return;
    }
    grpc_metadata_array_init(&current->initial_metadata);
    grpc_metadata_array_init(&current->trailing_metadata);
    current->status_details = grpc_empty_slice();
    /* A local subchannel pool: every attempt connects afresh, on our backoff
     * rather than on a shared subchannel's. Keepalive finds an atriumd that
     * vanished without closing the connection; atriumd (gRPC's defaults)
     * accepts a ping every 5 minutes, so it pings a little less often. */
    grpc_arg arguments[] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_HTTP_PROXY, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
         .value.integer = KEEPALIVE_TIME_MS},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
         .value.integer = KEEPALIVE_TIMEOUT_MS},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
         .value.integer = 0},
    };
    grpc_channel_args channel_arguments = {sizeof(arguments) / sizeof(arguments[0]), arguments};
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    current->channel = grpc_channel_create(client->target, credentials, &channel_arguments);
    grpc_channel_credentials_release(credentials);
    if (current->channel != NULL)
        current->call =
            grpc_channel_create_call(current->channel, NULL, GRPC_PROPAGATE_DEFAULTS, client->queue,
                                     grpc_slice_from_static_string(DELTA_METHOD), NULL,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (current->call == NULL) {
        free_stream(current);
        schedule_reconnect(client, false);
        return;
    }
    client->stream = current;
    lock_status(client);
    client->status.connects++;
    unlock_status(client);

    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &current->initial_metadata;
    bool started = start_batch(current, ops, 2, EVENT_START);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &current->trailing_metadata;
    ops[0].data.recv_status_on_client.status = &current->status_code;
    ops[0].data.recv_status_on_client.status_details = &current->status_details;
    if (!start_batch(current, ops, 1, EVENT_STATUS)) {
        /* No status will come to end it: end it here. */
        current->ended = true;
        current->status_code = GRPC_STATUS_INTERNAL;
        cancel_stream(current, GRPC_STATUS_INTERNAL, "atrium-proxy: cannot start the call");
        settle_stream(client); /* now, if the start batch did not start either */
        return;
    }
    if (!started) {
        cancel_stream(current, GRPC_STATUS_INTERNAL, "atrium-proxy: cannot start the call");
        return; /* the status completes and settles it */
    }
    start_receive(current);
    /* Clusters and listeners by wildcard, with the versions held (a saved
     * state or the previous stream's), then what those name. */
    static const char *const wildcard[] = {WILDCARD};
    send_subscription(client, PROXY_RESOURCE_CLUSTER, wildcard, 1, NULL, 0);
    send_subscription(client, PROXY_RESOURCE_LISTENER, wildcard, 1, NULL, 0);
    update_subscriptions(client);
}

static void handle_event(xds_client *client, event_kind kind, bool success)
{
    if (kind == EVENT_WAKE) {
        atomic_store(&client->wake_pending, false);
        return;
    }
    stream *current = client->stream;
    if (current == NULL)
        return; /* cannot happen: every batch belongs to the current stream */
    current->pending--;
    switch (kind) {
    case EVENT_START:
        if (success) { /* atriumd answered the call */
            lock_status(client);
            client->status.connected = true;
            unlock_status(client);
        }
        break;
    case EVENT_RECEIVE:
        on_receive(client, success);
        break;
    case EVENT_SEND:
        on_send(current, success);
        break;
    case EVENT_STATUS:
        current->ended = true;
        lock_status(client);
        client->status.connected = false;
        unlock_status(client);
        break;
    default:
        break;
    }
    settle_stream(client);
}

static void *run(void *argument)
{
    xds_client *client = argument;
    for (;;) {
        if (atomic_load(&client->stopping)) {
            if (client->stream == NULL)
                break;
            cancel_stream(client->stream, GRPC_STATUS_CANCELLED, "atrium-proxy: stopping");
        } else if (client->stream == NULL && clock_monotonic_ms() >= client->reconnect_at_ms) {
            open_stream(client);
            continue;
        }
        gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
        if (client->stream == NULL) {
            int64_t wait = client->reconnect_at_ms - clock_monotonic_ms();
            deadline = deadline_in_ms(wait > 0 ? wait : 0);
        }
        grpc_event event = grpc_completion_queue_next(client->queue, deadline, NULL);
        if (event.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (event.type == GRPC_OP_COMPLETE)
            handle_event(client, (event_kind)(intptr_t)event.tag, event.success != 0);
    }
    return NULL;
}

/* ---- start and stop ---- */

/* Everything but the thread, which must have ended (or never started). */
static void destroy_client(xds_client *client)
{
    if (client->stream != NULL) { /* only when the thread never ran */
        free_stream(client->stream);
        client->stream = NULL;
    }
    if (client->wake_channel != NULL)
        grpc_channel_destroy(client->wake_channel);
    if (client->queue != NULL) {
        grpc_completion_queue_shutdown(client->queue);
        while (grpc_completion_queue_next(client->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(client->queue);
    }
    proxy_resource_set_clear(&client->held);
    free(client->target);
    free(client->node_id);
    free(client->service);
    free(client->namespace_name);
    free(client->state_path);
    pthread_mutex_destroy(&client->status_lock);
    bool initialized = client->grpc_initialized;
    free(client);
    if (initialized)
        grpc_shutdown();
}

static int copy_text(char **out, const char *text)
{
    if (text == NULL)
        return 0;
    *out = strdup(text);
    return *out != NULL ? 0 : -1;
}

/* Whether gRPC can make a channel to target: one it cannot parse is "lame",
 * in TRANSIENT_FAILURE from the start (never IDLE). */
static bool target_is_usable(const char *target)
{
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    grpc_channel *channel = grpc_channel_create(target, credentials, NULL);
    grpc_channel_credentials_release(credentials);
    if (channel == NULL)
        return false;
    grpc_connectivity_state state = grpc_channel_check_connectivity_state(channel, 0);
    grpc_channel_destroy(channel);
    return state != GRPC_CHANNEL_TRANSIENT_FAILURE && state != GRPC_CHANNEL_SHUTDOWN;
}

/* Creates state_dir (0700) when it does not exist. */
static int ensure_directory(const char *path, char *error, size_t error_size)
{
    struct stat info;
    if (stat(path, &info) == 0) {
        if (S_ISDIR(info.st_mode))
            return 0;
        error_text(error, error_size, "state_dir %s is not a directory", path);
        return -1;
    }
    if (errno != ENOENT || mkdir(path, 0700) != 0) {
        error_text(error, error_size, "cannot create state_dir %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Moves an unusable saved state aside (kept as evidence) and records why in
 * the status, for the caller to log. Returns 0, or -1 with the reason in
 * error when it cannot be moved (then the proxy must not start: it could
 * neither keep the evidence nor save a new state in its place). */
static int set_aside_saved_state(xds_client *client, const char *reason, char *error,
                                 size_t error_size)
{
    char moved_to[4096 + 32] = "";
    char failure[512] = "";
    if (state_file_set_aside(client->state_path, (long long)(clock_wall_ms() / 1000), moved_to,
                             sizeof(moved_to), failure, sizeof(failure)) != 0) {
        error_text(error, error_size, "%s; and it cannot be moved aside: %s", reason, failure);
        return -1;
    }
    snprintf(client->status.saved_state_refused, sizeof(client->status.saved_state_refused),
             "%s; moved to %s", reason, moved_to);
    return 0;
}

/* Loads, builds and applies the saved state, if there is one. A file that is
 * corrupt, or whose snapshot cannot be built, is moved aside and the client
 * starts as if there were none (atriumd will send everything). Returns 0, or
 * -1 with the reason in error when the file cannot be read at all
 * (permissions, I/O) or cannot be moved aside. */
static int load_saved_state(xds_client *client, char *error, size_t error_size)
{
    proxy_resource_set saved;
    state_file_versions versions;
    char reason[1024] = "";
    int got = state_file_read(client->state_path, &saved, &versions, reason, sizeof(reason));
    if (got == STATE_FILE_MISSING)
        return 0;
    if (got == STATE_FILE_UNREADABLE) {
        error_text(error, error_size, "%s", reason);
        return -1;
    }
    if (got == STATE_FILE_CORRUPT)
        return set_aside_saved_state(client, reason, error, error_size);
    char build_error[512] = "";
    proxy_config *config = proxy_config_build(&saved, 1, build_error, sizeof(build_error));
    if (config == NULL) {
        proxy_resource_set_clear(&saved);
        error_text(reason, sizeof(reason), "saved state %s cannot be applied: %s",
                   client->state_path,
                   build_error[0] ? build_error : "the snapshot could not be built");
        return set_aside_saved_state(client, reason, error, error_size);
    }
    sort_set(&saved);
    client->held = saved;
    client->versions = versions;
    client->generation = 1;
    client->status.serving_saved_state = true;
    client->status.generation = 1;
    client->status.last_update_ms = clock_wall_ms();
    memcpy(client->status.versions, versions.text, sizeof(client->status.versions));
    hand_over(client, config);
    return 0;
}

xds_client *xds_client_start(const xds_client_options *options, xds_client_apply_fn apply,
                             void *context, char *error, size_t error_size)
{
    if (options == NULL || options->target == NULL || options->target[0] == '\0' ||
        options->node_id == NULL || options->node_id[0] == '\0') {
        error_text(error, error_size, "the xDS client needs a target and a node id");
        return NULL;
    }
    xds_client *client = calloc(1, sizeof(*client));
    if (client == NULL) {
        error_text(error, error_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&client->status_lock, NULL);
    atomic_init(&client->stopping, false);
    atomic_init(&client->wake_pending, false);
    client->apply = apply;
    client->check = options->check;
    client->context = context;
    client->app_port = options->app_port;
    client->inbound_port = options->inbound_port;
    client->outbound_port = options->outbound_port;
    client->backoff_ms = BACKOFF_INITIAL_MS;
    client->random_state = (uint64_t)clock_monotonic_ms() * 0x9E3779B97F4A7C15ull ^
                           (uint64_t)(uintptr_t)client ^ (uint64_t)getpid() << 32;
    if (client->random_state == 0)
        client->random_state = 0x2545F4914F6CDD1Dull;
    if (copy_text(&client->target, options->target) != 0 ||
        copy_text(&client->node_id, options->node_id) != 0 ||
        copy_text(&client->service, options->service) != 0 ||
        copy_text(&client->namespace_name, options->namespace_name) != 0) {
        error_text(error, error_size, "out of memory");
        goto failed;
    }
    /* NULL when no state is kept: then state_path stays NULL too. */
    const char *state_dir =
        options->state_dir != NULL && options->state_dir[0] != '\0' ? options->state_dir : NULL;
    if (state_dir != NULL) {
        size_t length = strlen(state_dir) + sizeof("/" STATE_FILE_NAME);
        if ((client->state_path = malloc(length)) == NULL) {
            error_text(error, error_size, "out of memory");
            goto failed;
        }
        snprintf(client->state_path, length, "%s/%s", state_dir, STATE_FILE_NAME);
    }
    grpc_init();
    client->grpc_initialized = true;
    if (!target_is_usable(client->target)) {
        error_text(error, error_size, "xDS target \"%s\" is not an address gRPC can use",
                   client->target);
        goto failed;
    }
    client->queue = grpc_completion_queue_create_for_next(NULL);
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    client->wake_channel = grpc_channel_create(WAKE_TARGET, credentials, NULL);
    grpc_channel_credentials_release(credentials);
    if (client->queue == NULL || client->wake_channel == NULL) {
        error_text(error, error_size, "cannot create the gRPC completion queue or wake channel");
        goto failed;
    }
    if (state_dir != NULL && (ensure_directory(state_dir, error, error_size) != 0 ||
                              load_saved_state(client, error, error_size) != 0))
        goto failed;
    client->reconnect_at_ms = clock_monotonic_ms(); /* connect at once */
    int failure = pthread_create(&client->thread, NULL, run, client);
    if (failure != 0) {
        error_text(error, error_size, "cannot start the xDS client thread: %s", strerror(failure));
        goto failed;
    }
    client->thread_started = true;
    return client;

failed:
    destroy_client(client);
    return NULL;
}

void xds_client_stop(xds_client *client)
{
    if (client == NULL)
        return;
    atomic_store(&client->stopping, true);
    if (client->thread_started) {
        if (!atomic_exchange(&client->wake_pending, true))
            grpc_channel_watch_connectivity_state(client->wake_channel, GRPC_CHANNEL_SHUTDOWN,
                                                  deadline_in_ms(WAKE_DEADLINE_MS), client->queue,
                                                  tag_of(EVENT_WAKE));
        pthread_join(client->thread, NULL);
    }
    destroy_client(client);
}

void xds_client_get_status(xds_client *client, xds_client_status *out)
{
    lock_status(client);
    *out = client->status;
    unlock_status(client);
}
