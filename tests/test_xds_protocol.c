/*
 * test_xds_protocol.c — the xDS server's protocol against a small ADS client
 * of our own on the gRPC C core. One atriumd per group (state of the world,
 * delta), started on a fresh data directory with free ports; the mesh is
 * changed over the admin REST API (libcurl) and the streams must see exactly
 * what the xDS protocol (envoy docs/root/api-docs/xds_protocol.rst) says:
 *
 * SotW:  wildcard CDS with version and nonce; ACK gets nothing new; NACK is
 *        reported in GET /v1/proxies and the rejected version is not resent,
 *        a real change is; a stale nonce is ignored; RDS/EDS/LDS by name.
 * Delta: wildcard CDS as Resource{name, version, resource}; EDS by name gets
 *        only what changed; unsubscribe; removals (deleted service, unknown
 *        names); reconnect with initial_resource_versions; debounce; a
 *        re-subscribe is answered; an atrium-proxy node gets its own resources
 *        and make-before-break order (CDS, EDS, LDS, RDS).
 *
 * Every wait is bounded. atriumd is stopped (SIGTERM, exit 0 asserted) by the
 * group teardown, and killed by an atexit handler (by the pid this test
 * started) when the process exits any other way.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "any.h"
#include "atriumd_fixture.h"
#include "clock.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <curl/curl.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define JSON_TYPE   "application/json"
#define RESPONSE_MS 3000 /* a response that must come */
/* "No response": nothing within a quiet window, as short as is sound. The
 * answer to a request is sent while atriumd handles it, so on loopback it
 * arrives within milliseconds: QUIET_MS leaves room for a loaded machine and
 * sanitizers. A change made over REST is pushed at most debounce (100 ms) +
 * minimum push interval (100 ms) after the call returned: QUIET_CHANGE_MS
 * adds the same margin to that. No test waits for the store to "settle": a
 * stream's first request reads the store as it is (atriumd catches up). */
#define QUIET_MS         200
#define QUIET_CHANGE_MS  350
#define COLLECT_LIMIT_MS 8000 /* a burst of responses, collected until quiet */
#define STATUS_WAIT_MS   2500 /* stream status is flushed to the store once a second */
#define STATUS_POLL_MS   50   /* how often GET /v1/proxies is asked meanwhile */
#define CALL_DEADLINE_MS 300000
#define MAX_LIVE         512
#define MAX_STREAMS      16
#define LIST_SIZE        4096

#define SOTW_METHOD                                                                                \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define DELTA_METHOD                                                                               \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define LDS "type.googleapis.com/envoy.config.listener.v3.Listener"
#define RDS "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define SDS "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

typedef Envoy__Config__Core__V3__Node node_t;
typedef Envoy__Service__Discovery__V3__DiscoveryRequest sotw_request_t;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse sotw_response_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_request_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_response_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
    initial_version_t;
typedef Envoy__Config__Cluster__V3__Cluster cluster_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment assignment_t;
typedef Envoy__Config__Listener__V3__Listener listener_t;
typedef Envoy__Config__Route__V3__RouteConfiguration route_config_t;

/* ---- time ------------------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* ---- the server ------------------------------------------------------------------ */

static struct {
    atriumd_fixture atriumd;
    CURL *curl;
} server;

/* ---- things to free when a test fails half-way ------------------------------------- */

typedef enum live_kind { LIVE_MESSAGE, LIVE_RESPONSE } live_kind;

static struct {
    void *pointer;
    live_kind kind;
} live[MAX_LIVE];

static void *keep(void *pointer, live_kind kind)
{
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (live[i].pointer == NULL) {
            live[i].pointer = pointer;
            live[i].kind = kind;
            return pointer;
        }
    }
    fail_msg("more than %d objects not freed", MAX_LIVE);
    return NULL;
}

static void forget(const void *pointer)
{
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (live[i].pointer == pointer)
            live[i].pointer = NULL;
    }
}

/* ---- HTTP ------------------------------------------------------------------------ */

typedef struct rest_response {
    long status;
    json_t *json; /* the body when it is JSON, else NULL */
    char *text;   /* the raw body, NUL-terminated */
    size_t length;
    char content_type[128];
} rest_response;

static void done(rest_response *reply)
{
    if (reply == NULL)
        return;
    forget(reply);
    json_decref(reply->json);
    free(reply->text);
    free(reply);
}

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    rest_response *reply = context;
    size_t bytes = size * count;
    char *grown = realloc(reply->text, reply->length + bytes + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + reply->length, data, bytes);
    reply->length += bytes;
    grown[reply->length] = '\0';
    reply->text = grown;
    return bytes;
}

static size_t on_header(char *data, size_t size, size_t count, void *context)
{
    rest_response *reply = context;
    size_t length = size * count;
    static const char name[] = "Content-Type:";
    if (length > strlen(name) && strncasecmp(data, name, strlen(name)) == 0) {
        const char *value = data + strlen(name);
        const char *end = data + length;
        while (value < end && *value == ' ')
            value++;
        while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        snprintf(reply->content_type, sizeof(reply->content_type), "%.*s", (int)(end - value),
                 value);
    }
    return length;
}

/* One request with the admin token; fails the test when the transfer fails. */
static rest_response *request(const char *method, const char *path, const char *body)
{
    rest_response *reply = calloc(1, sizeof(*reply));
    assert_non_null(reply);
    keep(reply, LIVE_RESPONSE);
    reply->text = calloc(1, 1);
    assert_non_null(reply->text);

    CURL *curl = server.curl;
    curl_easy_reset(curl);
    char url[1024];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.atriumd.rest_port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 15L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, reply);
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    struct curl_slist *headers = NULL, *grown;
    char line[256];
    headers = curl_slist_append(headers, "Expect:");
    snprintf(line, sizeof(line), "Authorization: Bearer %s", server.atriumd.token);
    if (headers != NULL && (grown = curl_slist_append(headers, line)) != NULL)
        headers = grown;
    if (headers != NULL && body != NULL &&
        (grown = curl_slist_append(headers, "Content-Type: " JSON_TYPE)) != NULL)
        headers = grown;
    assert_non_null(headers);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

    CURLcode code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (code != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(code));
    if (reply->length > 0 && strncmp(reply->content_type, JSON_TYPE, strlen(JSON_TYPE)) == 0) {
        json_error_t error;
        reply->json = json_loadb(reply->text, reply->length, 0, &error);
        if (reply->json == NULL)
            fail_msg("%s %s: the reply is not JSON (%s): %s", method, path, error.text,
                     reply->text);
    }
    return reply;
}

/* A write that must succeed (200 or 201); the reply is freed. */
#define WRITE(method, path, body) write_at(__LINE__, method, path, body)

static void write_at(int line, const char *method, const char *path, const char *body)
{
    rest_response *reply = request(method, path, body);
    if (reply->status != 200 && reply->status != 201) {
        print_error("line %d: %s %s answered %ld: %s\n", line, method, path, reply->status,
                    reply->text);
        fail();
    }
    done(reply);
}

#define PUT(path, body) WRITE("PUT", path, body)
#define DELETE(path)    WRITE("DELETE", path, NULL)

/* PUT /v1/services/<name> with body. */
static void put_service(const char *name, const char *body)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/services/%s", name);
    PUT(path, body);
}

/* PUT /v1/services/<service>/endpoints/<id> at address:port. */
static void put_endpoint(const char *service, const char *id, const char *address, int port)
{
    char path[256], body[256];
    snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s", service, id);
    snprintf(body, sizeof(body), "{\"address\": \"%s\", \"port\": %d}", address, port);
    PUT(path, body);
}

/* ---- lists of names ------------------------------------------------------------- */

typedef struct names {
    char **items;
    size_t count;
} names;

static void names_add(names *list, const char *name)
{
    char **grown = realloc(list->items, (list->count + 1) * sizeof(char *));
    assert_non_null(grown);
    list->items = grown;
    list->items[list->count] = strdup(name);
    assert_non_null(list->items[list->count]);
    list->count++;
}

static bool names_has(const names *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i], name) == 0)
            return true;
    }
    return false;
}

static void names_add_unique(names *list, const char *name)
{
    if (!names_has(list, name))
        names_add(list, name);
}

/* The xDS protocol: a response must not hold the same name twice. */
static void names_add_once(names *list, const char *name, const char *type_url)
{
    if (names_has(list, name))
        fail_msg("%s twice in one response for %s", name, type_url);
    names_add(list, name);
}

static void names_clear(names *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static int compare_text(const void *left, const void *right)
{
    return strcmp(*(const char *const *)left, *(const char *const *)right);
}

/* "a,b,c": the names sorted, comma-separated (duplicates kept, so that they show). */
static void join_sorted(const char *const *items, size_t count, char *out, size_t size)
{
    const char **sorted = calloc(count ? count : 1, sizeof(char *));
    assert_non_null(sorted);
    if (count > 0)
        memcpy(sorted, items, count * sizeof(char *));
    qsort(sorted, count, sizeof(char *), compare_text);
    out[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? "," : "", sorted[i]);
    }
    free(sorted);
}

static void names_join(const names *list, char *out, size_t size)
{
    join_sorted((const char *const *)list->items, list->count, out, size);
}

/* Asserts that the joined list `actual` holds exactly the names given. */
#define EXPECT_NAMES(actual, ...)                                                                  \
    expect_names_at(__LINE__, actual, (const char *const[]){__VA_ARGS__},                          \
                    sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

static void expect_names_at(int line, const char *actual, const char *const *expected, size_t count)
{
    char want[LIST_SIZE];
    join_sorted(expected, count, want, sizeof(want));
    if (strcmp(actual, want) != 0) {
        print_error("line %d: got [%s]\nexpected [%s]\n", line, actual, want);
        fail();
    }
}

#define EXPECT_EMPTY(actual) expect_empty_at(__LINE__, actual)

static void expect_empty_at(int line, const char *actual)
{
    if (actual[0] != '\0') {
        print_error("line %d: got [%s], expected nothing\n", line, actual);
        fail();
    }
}

/* Every service name (GET /v1/services) plus `extra` (the subset clusters). */
static void service_names(names *out, const char *const *extra, size_t extra_count)
{
    rest_response *reply = request("GET", "/v1/services", NULL);
    assert_int_equal(reply->status, 200);
    json_t *items = json_object_get(reply->json, "services");
    assert_true(json_is_array(items));
    for (size_t i = 0; i < json_array_size(items); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(items, i), "name"));
        assert_non_null(name);
        names_add(out, name);
    }
    done(reply);
    for (size_t i = 0; i < extra_count; i++)
        names_add(out, extra[i]);
}

/* ---- ADS client on the gRPC C core -------------------------------------------------- */

enum { TAG_START = 1, TAG_STATUS, TAG_RECEIVE, TAG_SEND, TAG_CLOSE, TAG_COUNT };

typedef struct ads_stream {
    bool delta;
    grpc_channel *channel;
    grpc_completion_queue *queue;
    grpc_call *call;
    grpc_metadata_array initial_metadata, trailing_metadata;
    grpc_status_code status;
    grpc_slice status_details;
    grpc_byte_buffer *received;
    int pending[TAG_COUNT]; /* batches in flight, by tag */
    bool receive_ready;     /* a RECV_MESSAGE completed and was not taken yet */
    bool send_ok;
    bool ended; /* the status arrived */
    bool close_sent;
} ads_stream;

static ads_stream *open_streams[MAX_STREAMS];

static gpr_timespec deadline_in(int64_t milliseconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(milliseconds, GPR_TIMESPAN));
}

/* Handles one completion; false when the deadline passed first. */
static bool pump(ads_stream *stream, gpr_timespec deadline)
{
    grpc_event event = grpc_completion_queue_next(stream->queue, deadline, NULL);
    if (event.type != GRPC_OP_COMPLETE)
        return false;
    int tag = (int)(intptr_t)event.tag;
    stream->pending[tag]--;
    if (tag == TAG_RECEIVE)
        stream->receive_ready = true;
    else if (tag == TAG_SEND)
        stream->send_ok = event.success != 0;
    else if (tag == TAG_STATUS)
        stream->ended = true;
    return true;
}

static int pending_total(const ads_stream *stream)
{
    int total = 0;
    for (int tag = 1; tag < TAG_COUNT; tag++)
        total += stream->pending[tag];
    return total;
}

static void start_batch(ads_stream *stream, const grpc_op *ops, size_t count, int tag)
{
    grpc_call_error error =
        grpc_call_start_batch(stream->call, ops, count, (void *)(intptr_t)tag, NULL);
    if (error != GRPC_CALL_OK)
        fail_msg("grpc_call_start_batch (tag %d): error %d", tag, (int)error);
    stream->pending[tag]++;
}

/* Opens a call of method (a SotW or delta ADS stream, or a method atriumd
 * does not have) to atriumd's xDS port. */
static ads_stream *ads_open_method(bool delta, const char *method_name)
{
    size_t slot = 0;
    while (slot < MAX_STREAMS && open_streams[slot] != NULL)
        slot++;
    if (slot == MAX_STREAMS)
        fail_msg("more than %d streams open", MAX_STREAMS);
    ads_stream *stream = calloc(1, sizeof(*stream));
    assert_non_null(stream);
    open_streams[slot] = stream;
    stream->delta = delta;
    grpc_metadata_array_init(&stream->initial_metadata);
    grpc_metadata_array_init(&stream->trailing_metadata);
    stream->status_details = grpc_empty_slice();

    char target[64];
    snprintf(target, sizeof(target), "ipv4:127.0.0.1:%d", server.atriumd.xds_port);
    grpc_arg no_proxy = {
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_HTTP_PROXY, .value.integer = 0};
    grpc_channel_args args = {1, &no_proxy};
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    stream->channel = grpc_channel_create(target, credentials, &args);
    grpc_channel_credentials_release(credentials);
    stream->queue = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method = grpc_slice_from_static_string(method_name);
    stream->call =
        grpc_channel_create_call(stream->channel, NULL, GRPC_PROPAGATE_DEFAULTS, stream->queue,
                                 method, NULL, deadline_in(CALL_DEADLINE_MS), NULL);
    assert_non_null(stream->call);

    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &stream->initial_metadata;
    start_batch(stream, ops, 2, TAG_START);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &stream->trailing_metadata;
    ops[0].data.recv_status_on_client.status = &stream->status;
    ops[0].data.recv_status_on_client.status_details = &stream->status_details;
    start_batch(stream, ops, 1, TAG_STATUS);
    return stream;
}

/* Opens an ADS stream (SotW or delta) to atriumd's xDS port. */
static ads_stream *ads_open(bool delta)
{
    return ads_open_method(delta, delta ? DELTA_METHOD : SOTW_METHOD);
}

/* Waits up to timeout_ms for the server to end the call; its status, or -1
 * when it did not end in time. */
static int ads_wait_status(ads_stream *stream, int timeout_ms)
{
    gpr_timespec deadline = deadline_in(timeout_ms);
    while (!stream->ended && pump(stream, deadline))
        ;
    return stream->ended ? (int)stream->status : -1;
}

/* The status details of an ended call, as a new string (free it). */
static char *ads_status_text(const ads_stream *stream)
{
    char *text = grpc_slice_to_c_string(stream->status_details);
    char *copy = strdup(text ? text : "");
    gpr_free(text);
    assert_non_null(copy);
    return copy;
}

/* Ends the stream: half-close, wait for the server's status (cancel when it
 * does not come), wait for every batch, free. Returns the status the server
 * sent, or -1 when the call had to be cancelled. */
static int ads_close(ads_stream *stream)
{
    if (stream == NULL)
        return -1;
    for (size_t i = 0; i < MAX_STREAMS; i++) {
        if (open_streams[i] == stream)
            open_streams[i] = NULL;
    }
    gpr_timespec deadline = deadline_in(RESPONSE_MS);
    while (stream->pending[TAG_SEND] > 0 && pump(stream, deadline))
        ;
    if (!stream->ended && !stream->close_sent && stream->pending[TAG_SEND] == 0) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (grpc_call_start_batch(stream->call, &op, 1, (void *)(intptr_t)TAG_CLOSE, NULL) ==
            GRPC_CALL_OK)
            stream->pending[TAG_CLOSE]++;
        stream->close_sent = true;
    }
    while (!stream->ended && pump(stream, deadline))
        ;
    int result = stream->ended ? (int)stream->status : -1;
    if (!stream->ended)
        grpc_call_cancel(stream->call, NULL);
    deadline = deadline_in(5000);
    while (pending_total(stream) > 0 && pump(stream, deadline))
        ;
    if (stream->received != NULL)
        grpc_byte_buffer_destroy(stream->received);
    bool drained = pending_total(stream) == 0;
    if (drained)
        grpc_call_unref(stream->call);
    grpc_metadata_array_destroy(&stream->initial_metadata);
    grpc_metadata_array_destroy(&stream->trailing_metadata);
    grpc_slice_unref(stream->status_details);
    grpc_channel_destroy(stream->channel);
    if (drained) {
        grpc_completion_queue_shutdown(stream->queue);
        while (grpc_completion_queue_next(stream->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(stream->queue);
    } else {
        print_error("an ADS call did not finish after cancel; leaking it\n");
    }
    free(stream);
    return result;
}

static void ads_send_slice(ads_stream *stream, grpc_slice slice);

/* Sends one request (packed protobuf-c message) and waits until it is written. */
static void ads_send(ads_stream *stream, const ProtobufCMessage *message)
{
    size_t length = protobuf_c_message_get_packed_size(message);
    grpc_slice slice = grpc_slice_malloc(length);
    protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
    ads_send_slice(stream, slice);
}

/* Sends bytes as one message, whatever they are. */
static void ads_send_raw(ads_stream *stream, const void *bytes, size_t length)
{
    ads_send_slice(stream, grpc_slice_from_copied_buffer(bytes, length));
}

/* Sends slice (taken) as one message and waits until it is written. */
static void ads_send_slice(ads_stream *stream, grpc_slice slice)
{
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = buffer;
    grpc_call_error error =
        grpc_call_start_batch(stream->call, &op, 1, (void *)(intptr_t)TAG_SEND, NULL);
    if (error != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(buffer);
        fail_msg("cannot start a send: error %d", (int)error);
    }
    stream->pending[TAG_SEND]++;
    gpr_timespec deadline = deadline_in(RESPONSE_MS);
    while (stream->pending[TAG_SEND] > 0 && pump(stream, deadline))
        ;
    if (stream->pending[TAG_SEND] > 0) {
        grpc_call_cancel(stream->call, NULL);
        deadline = deadline_in(5000);
        while (stream->pending[TAG_SEND] > 0 && pump(stream, deadline))
            ;
    }
    if (stream->pending[TAG_SEND] == 0)
        grpc_byte_buffer_destroy(buffer);
    if (!stream->send_ok)
        fail_msg("sending a request failed (the stream is over)");
}

/* The next message within timeout_ms: 1 with its bytes in *out (unref it),
 * 0 when none came in time (the receive stays pending for the next call),
 * -1 when the stream is over. */
static int ads_receive(ads_stream *stream, int timeout_ms, grpc_slice *out)
{
    if (!stream->receive_ready && stream->pending[TAG_RECEIVE] == 0) {
        if (stream->ended)
            return -1;
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &stream->received;
        start_batch(stream, &op, 1, TAG_RECEIVE);
    }
    gpr_timespec deadline = deadline_in(timeout_ms);
    while (!stream->receive_ready && pump(stream, deadline))
        ;
    if (!stream->receive_ready)
        return 0;
    stream->receive_ready = false;
    if (stream->received == NULL)
        return -1;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, stream->received))
        fail_msg("cannot read a received message");
    *out = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(stream->received);
    stream->received = NULL;
    return 1;
}

/* Fails with what is known about a stream that ended. */
static void fail_ended(ads_stream *stream, const char *waiting_for)
{
    gpr_timespec deadline = deadline_in(1000);
    while (!stream->ended && pump(stream, deadline))
        ;
    char *details = grpc_slice_to_c_string(stream->status_details);
    print_error("the ADS stream ended while waiting for %s: status %d (%s)\n", waiting_for,
                stream->ended ? (int)stream->status : -1, details ? details : "");
    gpr_free(details);
    fail();
}

/* ---- SotW messages ---------------------------------------------------------------- */

/* The next SotW response within timeout_ms (kept until the test ends), or NULL. */
static sotw_response_t *sotw_poll(ads_stream *stream, int timeout_ms)
{
    assert_false(stream->delta);
    grpc_slice bytes;
    int got = ads_receive(stream, timeout_ms, &bytes);
    if (got < 0)
        fail_ended(stream, "a DiscoveryResponse");
    if (got == 0)
        return NULL;
    sotw_response_t *response = envoy__service__discovery__v3__discovery_response__unpack(
        NULL, GRPC_SLICE_LENGTH(bytes), GRPC_SLICE_START_PTR(bytes));
    grpc_slice_unref(bytes);
    if (response == NULL)
        fail_msg("a DiscoveryResponse that does not decode");
    return keep(response, LIVE_MESSAGE);
}

#define SOTW_EXPECT(stream) sotw_expect_at(__LINE__, stream)

static sotw_response_t *sotw_expect_at(int line, ads_stream *stream)
{
    sotw_response_t *response = sotw_poll(stream, RESPONSE_MS);
    if (response == NULL) {
        print_error("line %d: no DiscoveryResponse within %d ms\n", line, RESPONSE_MS);
        fail();
    }
    return response;
}

/* Nothing arrives after a request (QUIET_MS), or after a change (QUIET_CHANGE_MS). */
#define SOTW_EXPECT_NONE(stream)              sotw_expect_none_at(__LINE__, stream, QUIET_MS)
#define SOTW_EXPECT_NONE_AFTER_CHANGE(stream) sotw_expect_none_at(__LINE__, stream, QUIET_CHANGE_MS)

static void sotw_expect_none_at(int line, ads_stream *stream, int quiet_ms)
{
    sotw_response_t *response = sotw_poll(stream, quiet_ms);
    if (response != NULL) {
        print_error("line %d: expected no response within %d ms, got %s version %s nonce %s "
                    "with %zu resources\n",
                    line, quiet_ms, response->type_url, response->version_info, response->nonce,
                    response->n_resources);
        fail();
    }
}

static void release(void *message)
{
    if (message == NULL)
        return;
    forget(message);
    protobuf_c_message_free_unpacked(message, NULL);
}

static node_t plain_node(const char *id)
{
    node_t node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)id;
    return node;
}

/* One DiscoveryRequest: the whole subscription of the type (names), the
 * version the client uses and the nonce it answers; error_message makes it a
 * NACK (code 3, INVALID_ARGUMENT). */
static void sotw_send(ads_stream *stream, const node_t *node, const char *type_url,
                      const char *const *resource_names, size_t count, const char *version,
                      const char *nonce, const char *error_message)
{
    sotw_request_t request = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    request.node = (node_t *)node;
    request.type_url = (char *)type_url;
    request.n_resource_names = count;
    request.resource_names = (char **)resource_names;
    request.version_info = (char *)(version ? version : "");
    request.response_nonce = (char *)(nonce ? nonce : "");
    Google__Rpc__Status detail = GOOGLE__RPC__STATUS__INIT;
    if (error_message != NULL) {
        detail.code = 3;
        detail.message = (char *)error_message;
        request.error_detail = &detail;
    }
    ads_send(stream, &request.base);
}

/* ACK of response, keeping the subscription (names). */
static void sotw_ack(ads_stream *stream, const sotw_response_t *response,
                     const char *const *resource_names, size_t count)
{
    sotw_send(stream, NULL, response->type_url, resource_names, count, response->version_info,
              response->nonce, NULL);
}

/* ---- resources -------------------------------------------------------------------- */

static const ProtobufCMessageDescriptor *descriptor_of(const char *type_url)
{
    if (strcmp(type_url, CDS) == 0)
        return &envoy__config__cluster__v3__cluster__descriptor;
    if (strcmp(type_url, EDS) == 0)
        return &envoy__config__endpoint__v3__cluster_load_assignment__descriptor;
    if (strcmp(type_url, LDS) == 0)
        return &envoy__config__listener__v3__listener__descriptor;
    if (strcmp(type_url, RDS) == 0)
        return &envoy__config__route__v3__route_configuration__descriptor;
    if (strcmp(type_url, SDS) == 0)
        return &envoy__extensions__transport_sockets__tls__v3__secret__descriptor;
    fail_msg("unexpected type URL %s", type_url);
    return NULL;
}

/* Order of make-before-break: clusters, endpoints, listeners, routes. */
static int type_rank(const char *type_url)
{
    static const char *const order[] = {CDS, EDS, LDS, RDS};
    for (int i = 0; i < 4; i++) {
        if (strcmp(type_url, order[i]) == 0)
            return i;
    }
    fail_msg("unexpected type URL %s", type_url);
    return -1;
}

/* Unpacks an Any that must be of type_url (kept until the test ends). */
static ProtobufCMessage *unpack(const Google__Protobuf__Any *any, const char *type_url)
{
    assert_non_null(any);
    if (any->type_url == NULL || strcmp(any->type_url, type_url) != 0)
        fail_msg("a resource of type %s in a response for %s", any->type_url, type_url);
    char error[256];
    ProtobufCMessage *message = any_unpack(any, descriptor_of(type_url), error, sizeof(error));
    if (message == NULL)
        fail_msg("cannot unpack %s: %s", type_url, error);
    return keep(message, LIVE_MESSAGE);
}

/* The name inside a resource. */
static const char *resource_name(const ProtobufCMessage *message)
{
    if (message->descriptor == &envoy__config__cluster__v3__cluster__descriptor)
        return ((const cluster_t *)message)->name;
    if (message->descriptor == &envoy__config__endpoint__v3__cluster_load_assignment__descriptor)
        return ((const assignment_t *)message)->cluster_name;
    if (message->descriptor == &envoy__config__listener__v3__listener__descriptor)
        return ((const listener_t *)message)->name;
    return ((const route_config_t *)message)->name;
}

/* The names of a SotW response's resources, sorted and joined; each must
 * decode as the response's type. */
static void sotw_names(const sotw_response_t *response, char *out, size_t size)
{
    names list = {0};
    for (size_t i = 0; i < response->n_resources; i++) {
        ProtobufCMessage *message = unpack(response->resources[i], response->type_url);
        names_add_once(&list, resource_name(message), response->type_url);
        release(message);
    }
    names_join(&list, out, size);
    names_clear(&list);
}

/* The SotW resource called name, decoded (kept), or NULL. */
static ProtobufCMessage *sotw_find(const sotw_response_t *response, const char *name)
{
    for (size_t i = 0; i < response->n_resources; i++) {
        ProtobufCMessage *message = unpack(response->resources[i], response->type_url);
        if (strcmp(resource_name(message), name) == 0)
            return message;
        release(message);
    }
    return NULL;
}

/* Endpoints of a ClusterLoadAssignment as "address:port" sorted and joined. */
static void assignment_endpoints(const assignment_t *assignment, char *out, size_t size)
{
    names list = {0};
    for (size_t l = 0; l < assignment->n_endpoints; l++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *locality = assignment->endpoints[l];
        for (size_t e = 0; e < locality->n_lb_endpoints; e++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *lb = locality->lb_endpoints[e];
            assert_non_null(lb->endpoint);
            assert_non_null(lb->endpoint->address);
            const Envoy__Config__Core__V3__SocketAddress *socket =
                lb->endpoint->address->socket_address;
            assert_non_null(socket);
            char text[128];
            snprintf(text, sizeof(text), "%s:%u", socket->address, socket->port_value);
            names_add(&list, text);
        }
    }
    names_join(&list, out, size);
    names_clear(&list);
}

static size_t assignment_endpoint_count(const assignment_t *assignment)
{
    size_t count = 0;
    for (size_t l = 0; l < assignment->n_endpoints; l++)
        count += assignment->endpoints[l]->n_lb_endpoints;
    return count;
}

/* ---- delta messages ---------------------------------------------------------------- */

static delta_response_t *delta_poll(ads_stream *stream, int timeout_ms)
{
    assert_true(stream->delta);
    grpc_slice bytes;
    int got = ads_receive(stream, timeout_ms, &bytes);
    if (got < 0)
        fail_ended(stream, "a DeltaDiscoveryResponse");
    if (got == 0)
        return NULL;
    delta_response_t *response = envoy__service__discovery__v3__delta_discovery_response__unpack(
        NULL, GRPC_SLICE_LENGTH(bytes), GRPC_SLICE_START_PTR(bytes));
    grpc_slice_unref(bytes);
    if (response == NULL)
        fail_msg("a DeltaDiscoveryResponse that does not decode");
    return keep(response, LIVE_MESSAGE);
}

#define DELTA_EXPECT(stream) delta_expect_at(__LINE__, stream)

static delta_response_t *delta_expect_at(int line, ads_stream *stream)
{
    delta_response_t *response = delta_poll(stream, RESPONSE_MS);
    if (response == NULL) {
        print_error("line %d: no DeltaDiscoveryResponse within %d ms\n", line, RESPONSE_MS);
        fail();
    }
    if (response->nonce == NULL || response->nonce[0] == '\0') {
        print_error("line %d: a DeltaDiscoveryResponse without a nonce\n", line);
        fail();
    }
    return response;
}

static void delta_resource_names(const delta_response_t *response, char *out, size_t size);
static void delta_removed_names(const delta_response_t *response, char *out, size_t size);

/* Nothing arrives after a request (QUIET_MS), or after a change (QUIET_CHANGE_MS). */
#define DELTA_EXPECT_NONE(stream) delta_expect_none_at(__LINE__, stream, QUIET_MS)
#define DELTA_EXPECT_NONE_AFTER_CHANGE(stream)                                                     \
    delta_expect_none_at(__LINE__, stream, QUIET_CHANGE_MS)

static void delta_expect_none_at(int line, ads_stream *stream, int quiet_ms)
{
    delta_response_t *response = delta_poll(stream, quiet_ms);
    if (response != NULL) {
        char resources[LIST_SIZE], removed[LIST_SIZE];
        delta_resource_names(response, resources, sizeof(resources));
        delta_removed_names(response, removed, sizeof(removed));
        print_error("line %d: expected no response within %d ms, got %s resources [%s] "
                    "removed [%s]\n",
                    line, quiet_ms, response->type_url, resources, removed);
        fail();
    }
}

typedef struct delta_args {
    const node_t *node;
    const char *type_url;
    const char *const *subscribe;
    size_t subscribe_count;
    const char *const *unsubscribe;
    size_t unsubscribe_count;
    const names *initial_names; /* with initial_versions: initial_resource_versions */
    const names *initial_versions;
    const char *nonce;
    const char *error_message;
} delta_args;

static void delta_send(ads_stream *stream, const delta_args *args)
{
    delta_request_t request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    request.node = (node_t *)args->node;
    request.type_url = (char *)args->type_url;
    request.n_resource_names_subscribe = args->subscribe_count;
    request.resource_names_subscribe = (char **)args->subscribe;
    request.n_resource_names_unsubscribe = args->unsubscribe_count;
    request.resource_names_unsubscribe = (char **)args->unsubscribe;
    request.response_nonce = (char *)(args->nonce ? args->nonce : "");
    Google__Rpc__Status detail = GOOGLE__RPC__STATUS__INIT;
    if (args->error_message != NULL) {
        detail.code = 3;
        detail.message = (char *)args->error_message;
        request.error_detail = &detail;
    }
    size_t initial = args->initial_names ? args->initial_names->count : 0;
    initial_version_t *entries = calloc(initial ? initial : 1, sizeof(*entries));
    initial_version_t **pointers = calloc(initial ? initial : 1, sizeof(*pointers));
    assert_true(entries != NULL && pointers != NULL);
    for (size_t i = 0; i < initial; i++) {
        initial_version_t entry =
            ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
        entry.key = args->initial_names->items[i];
        entry.value = args->initial_versions->items[i];
        entries[i] = entry;
        pointers[i] = &entries[i];
    }
    request.n_initial_resource_versions = initial;
    request.initial_resource_versions = pointers;
    ads_send(stream, &request.base);
    free(entries);
    free(pointers);
}

/* Array and count for delta_args: NAMES("a", "b"). */
#define NAMES(...)                                                                                 \
    (const char *const[]){__VA_ARGS__},                                                            \
        sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)

static void delta_ack(ads_stream *stream, const delta_response_t *response)
{
    delta_send(stream, &(delta_args){.type_url = response->type_url, .nonce = response->nonce});
}

/* Checks each Resource (name, version, an Any of the response's type whose
 * message has that name) and joins the names. */
static void delta_resource_names(const delta_response_t *response, char *out, size_t size)
{
    names list = {0};
    for (size_t i = 0; i < response->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *resource = response->resources[i];
        if (resource->name == NULL || resource->name[0] == '\0')
            fail_msg("a Resource without a name in %s", response->type_url);
        if (resource->version == NULL || resource->version[0] == '\0')
            fail_msg("Resource %s without a version", resource->name);
        ProtobufCMessage *message = unpack(resource->resource, response->type_url);
        if (strcmp(resource_name(message), resource->name) != 0)
            fail_msg("Resource %s holds a resource called %s", resource->name,
                     resource_name(message));
        release(message);
        names_add_once(&list, resource->name, response->type_url);
    }
    names_join(&list, out, size);
    names_clear(&list);
}

static void delta_removed_names(const delta_response_t *response, char *out, size_t size)
{
    join_sorted((const char *const *)response->removed_resources, response->n_removed_resources,
                out, size);
}

/* The Resource called name in a delta response, or NULL. */
static const Envoy__Service__Discovery__V3__Resource *delta_find(const delta_response_t *response,
                                                                 const char *name)
{
    for (size_t i = 0; i < response->n_resources; i++) {
        if (strcmp(response->resources[i]->name, name) == 0)
            return response->resources[i];
    }
    return NULL;
}

/* Responses collected until the stream is quiet, each ACKed on arrival. */
typedef struct delta_log {
    delta_response_t *responses[64];
    size_t count;
    names resources[4]; /* by type rank */
    names removed[4];
} delta_log;

static void delta_collect(ads_stream *stream, delta_log *log)
{
    int64_t limit = clock_monotonic_ms() + COLLECT_LIMIT_MS;
    delta_response_t *response;
    /* Collecting follows a change: until quiet for as long as one takes. */
    while ((response = delta_poll(stream, QUIET_CHANGE_MS)) != NULL) {
        if (log->count == sizeof(log->responses) / sizeof(log->responses[0]))
            fail_msg("more than %zu responses", log->count);
        log->responses[log->count++] = response;
        int rank = type_rank(response->type_url);
        char check[LIST_SIZE];
        delta_resource_names(response, check, sizeof(check));
        for (size_t i = 0; i < response->n_resources; i++)
            names_add_unique(&log->resources[rank], response->resources[i]->name);
        for (size_t i = 0; i < response->n_removed_resources; i++)
            names_add_unique(&log->removed[rank], response->removed_resources[i]);
        delta_ack(stream, response);
        if (clock_monotonic_ms() > limit)
            fail_msg("responses kept coming for %d ms", COLLECT_LIMIT_MS);
    }
}

static void delta_log_clear(delta_log *log)
{
    for (size_t i = 0; i < log->count; i++)
        release(log->responses[i]);
    for (int t = 0; t < 4; t++) {
        names_clear(&log->resources[t]);
        names_clear(&log->removed[t]);
    }
    memset(log, 0, sizeof(*log));
}

/* The last Resource called name of type_url in the log, decoded (kept), or NULL. */
static ProtobufCMessage *delta_log_find(const delta_log *log, const char *type_url,
                                        const char *name)
{
    for (size_t i = log->count; i-- > 0;) {
        if (strcmp(log->responses[i]->type_url, type_url) != 0)
            continue;
        const Envoy__Service__Discovery__V3__Resource *resource =
            delta_find(log->responses[i], name);
        if (resource != NULL)
            return unpack(resource->resource, type_url);
    }
    return NULL;
}

/* ---- /v1/proxies ------------------------------------------------------------------ */

/* The status of type_url for node_id in GET /v1/proxies (a new reference), or NULL. */
static json_t *proxy_type_status(const char *node_id, const char *type_url)
{
    rest_response *reply = request("GET", "/v1/proxies", NULL);
    assert_int_equal(reply->status, 200);
    json_t *found = NULL;
    json_t *proxies = json_object_get(reply->json, "proxies");
    for (size_t i = 0; found == NULL && i < json_array_size(proxies); i++) {
        json_t *proxy = json_array_get(proxies, i);
        const char *id = json_string_value(json_object_get(proxy, "node_id"));
        if (id == NULL || strcmp(id, node_id) != 0)
            continue;
        json_t *types = json_object_get(proxy, "types");
        for (size_t t = 0; found == NULL && t < json_array_size(types); t++) {
            json_t *type = json_array_get(types, t);
            const char *url = json_string_value(json_object_get(type, "type_url"));
            if (url != NULL && strcmp(url, type_url) == 0)
                found = json_incref(type);
        }
    }
    done(reply);
    return found;
}

static bool string_field_is(const json_t *object, const char *key, const char *expected)
{
    json_t *value = json_object_get(object, key);
    if (expected == NULL)
        return json_is_null(value);
    return json_is_string(value) && strcmp(json_string_value(value), expected) == 0;
}

/* Waits (bounded) until node_id's type_url status has nack_message and the
 * given acked and nacked versions (NULL: null); fails showing the last one. */
#define EXPECT_PROXY_STATUS(node, type, acked, nacked, message)                                    \
    expect_proxy_status_at(__LINE__, node, type, acked, nacked, message)

static void expect_proxy_status_at(int line, const char *node_id, const char *type_url,
                                   const char *acked, const char *nacked, const char *message)
{
    int64_t limit = clock_monotonic_ms() + STATUS_WAIT_MS;
    char *last = NULL;
    for (;;) {
        json_t *status = proxy_type_status(node_id, type_url);
        bool match = status != NULL && string_field_is(status, "acked_version", acked) &&
                     string_field_is(status, "nacked_version", nacked) &&
                     string_field_is(status, "nack_message", message);
        free(last);
        last = status ? json_dumps(status, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(status);
        if (match) {
            free(last);
            return;
        }
        if (clock_monotonic_ms() > limit)
            break;
        atriumd_fixture_sleep_ms(STATUS_POLL_MS);
    }
    print_error("line %d: GET /v1/proxies did not show node %s %s with acked_version %s, "
                "nacked_version %s, nack_message %s within %d ms; last: %s\n",
                line, node_id, type_url, acked ? acked : "null", nacked ? nacked : "null",
                message ? message : "null", STATUS_WAIT_MS, last ? last : "(no such entry)");
    free(last);
    fail();
}

/* ---- fixtures --------------------------------------------------------------------- */

/* What a test collects, here so that the teardown frees it when the test fails. */
static delta_log collected;
static names scratch[2];

static void close_everything(void)
{
    delta_log_clear(&collected);
    for (size_t i = 0; i < sizeof(scratch) / sizeof(scratch[0]); i++)
        names_clear(&scratch[i]);
    for (size_t i = 0; i < MAX_STREAMS; i++) {
        if (open_streams[i] != NULL)
            ads_close(open_streams[i]);
    }
    for (size_t i = 0; i < MAX_LIVE; i++) {
        void *pointer = live[i].pointer;
        if (pointer == NULL)
            continue;
        live[i].pointer = NULL;
        if (live[i].kind == LIVE_RESPONSE) {
            rest_response *reply = pointer;
            json_decref(reply->json);
            free(reply->text);
            free(reply);
        } else {
            protobuf_c_message_free_unpacked(pointer, NULL);
        }
    }
}

/* After each test, whether it passed or not: no stream stays open. */
static int test_teardown(void **state)
{
    (void)state;
    close_everything();
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    server.curl = curl_easy_init();
    if (server.curl == NULL) {
        print_error("curl_easy_init failed\n");
        return -1;
    }
    char error[256];
    if (atriumd_fixture_start(&server.atriumd, ATRIUMD_PATH, "xds", error, sizeof(error)) != 0) {
        print_error("%s\n", error);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    close_everything();
    /* Says why and prints atriumd's log itself when it did not exit cleanly. */
    bool clean_exit = atriumd_fixture_stop(&server.atriumd) == 0;
    if (server.curl != NULL)
        curl_easy_cleanup(server.curl);
    server.curl = NULL;
    /* Asserted last, so that a failure still leaves nothing behind. */
    assert_true(clean_exit);
    return 0;
}

#define SPLIT_ROUTES                                                                               \
    "{\"rules\": [{\"match\": {\"path_prefix\": \"/\"}, \"split\": [{\"subset\": {\"version\": "   \
    "\"v1\"}, \"weight\": 90}, {\"subset\": {\"version\": \"v2\"}, \"weight\": 10}]}]}"

/* A service whose routes split into the subsets version=v1 and version=v2
 * (clusters S, S|version=v1, S|version=v2), with an endpoint in each. */
static void put_split_service(const char *name, int octet)
{
    char path[256], body[256];
    put_service(name, "{}");
    snprintf(path, sizeof(path), "/v1/services/%s/routes", name);
    PUT(path, SPLIT_ROUTES);
    for (int v = 1; v <= 2; v++) {
        snprintf(path, sizeof(path), "/v1/services/%s/endpoints/v%d", name, v);
        snprintf(body, sizeof(body),
                 "{\"address\": \"10.%d.0.%d\", \"port\": 8080, \"labels\": {\"version\": "
                 "\"v%d\"}}",
                 octet, v, v);
        PUT(path, body);
    }
}

/* ---- state of the world ------------------------------------------------------------- */

/* (1) CDS wildcard: every cluster, with version_info and nonce; the ACK gets
 * nothing new, and the store shows it. */
static void test_sotw_cds_wildcard_and_ack(void **state)
{
    (void)state;
    put_split_service("alpha", 1);
    put_service("beta", "{}");
    put_endpoint("beta", "b1", "10.1.1.1", 9000);
    names *expected = &scratch[0];
    service_names(expected, NAMES("alpha|version=v1", "alpha|version=v2"));
    char want[LIST_SIZE], got[LIST_SIZE];
    names_join(expected, want, sizeof(want));
    names_clear(expected);

    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-cds");
    sotw_send(stream, &node, CDS, NULL, 0, NULL, NULL, NULL);
    sotw_response_t *response = SOTW_EXPECT(stream);
    assert_string_equal(response->type_url, CDS);
    assert_true(response->version_info != NULL && response->version_info[0] != '\0');
    assert_true(response->nonce != NULL && response->nonce[0] != '\0');
    sotw_names(response, got, sizeof(got));
    assert_string_equal(got, want);
    /* The clusters are EDS clusters (endpoints over ADS). */
    cluster_t *alpha = (cluster_t *)sotw_find(response, "alpha");
    assert_non_null(alpha);
    assert_non_null(alpha->eds_cluster_config);
    release(alpha);

    sotw_ack(stream, response, NULL, 0);
    SOTW_EXPECT_NONE(stream);
    EXPECT_PROXY_STATUS("sotw-cds", CDS, response->version_info, NULL, NULL);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (2) NACK: reported in GET /v1/proxies, the rejected version is not resent,
 * a real change is. */
static void test_sotw_nack(void **state)
{
    (void)state;
    put_service("nacked", "{}");
    put_endpoint("nacked", "n1", "10.2.0.1", 80);

    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-nack");
    sotw_send(stream, &node, CDS, NULL, 0, NULL, NULL, NULL);
    sotw_response_t *first = SOTW_EXPECT(stream);
    assert_string_equal(first->type_url, CDS);
    char got[LIST_SIZE];
    sotw_names(first, got, sizeof(got));
    assert_non_null(strstr(got, "nacked"));

    /* NACK: the previous version (none), the nonce, error_detail. */
    sotw_send(stream, NULL, CDS, NULL, 0, "", first->nonce, "bad cluster");
    SOTW_EXPECT_NONE(stream);
    EXPECT_PROXY_STATUS("sotw-nack", CDS, NULL, first->version_info, "bad cluster");
    /* Still not resent, a while later. */
    SOTW_EXPECT_NONE(stream);

    /* A change of the clusters is sent: a new version. */
    put_service("nacked", "{\"connect_timeout_ms\": 2500}");
    sotw_response_t *second = SOTW_EXPECT(stream);
    assert_string_equal(second->type_url, CDS);
    assert_string_not_equal(second->version_info, first->version_info);
    assert_string_not_equal(second->nonce, first->nonce);
    cluster_t *cluster = (cluster_t *)sotw_find(second, "nacked");
    assert_non_null(cluster);
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 2);
    assert_int_equal(cluster->connect_timeout->nanos, 500000000);
    release(cluster);

    /* Its ACK clears the NACK. */
    sotw_ack(stream, second, NULL, 0);
    SOTW_EXPECT_NONE(stream);
    EXPECT_PROXY_STATUS("sotw-nack", CDS, second->version_info, NULL, NULL);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (3) A request with a stale nonce is ignored. */
static void test_sotw_stale_nonce(void **state)
{
    (void)state;
    put_service("stale-a", "{}");
    put_endpoint("stale-a", "e1", "10.3.0.1", 80);
    put_service("stale-b", "{}");
    put_endpoint("stale-b", "e1", "10.3.0.2", 80);

    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-stale");
    sotw_send(stream, &node, EDS, NAMES("stale-a"), NULL, NULL, NULL);
    sotw_response_t *first = SOTW_EXPECT(stream);
    char got[LIST_SIZE];
    sotw_names(first, got, sizeof(got));
    EXPECT_NAMES(got, "stale-a");
    sotw_ack(stream, first, NAMES("stale-a"));
    SOTW_EXPECT_NONE(stream);

    /* A change: a second response, a newer nonce. */
    put_endpoint("stale-a", "e2", "10.3.0.3", 80);
    sotw_response_t *second = SOTW_EXPECT(stream);
    sotw_names(second, got, sizeof(got));
    EXPECT_NAMES(got, "stale-a");
    assert_string_not_equal(second->nonce, first->nonce);

    /* Answers the first response although the second was sent: stale. It also
     * asks for stale-b, which a current request would get. */
    sotw_send(stream, NULL, EDS, NAMES("stale-a", "stale-b"), first->version_info, first->nonce,
              NULL);
    SOTW_EXPECT_NONE(stream);

    /* The same request with the current nonce is answered. */
    sotw_send(stream, NULL, EDS, NAMES("stale-a", "stale-b"), second->version_info, second->nonce,
              NULL);
    sotw_response_t *third = SOTW_EXPECT(stream);
    sotw_names(third, got, sizeof(got));
    EXPECT_NAMES(got, "stale-a", "stale-b");
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* Secret ROOTCA: the CA's roots and CRL as a validation context; the bytes
 * are stable, so an ACKed secret is not sent again. */
static void test_sotw_root_secret(void **state)
{
    (void)state;
    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-secret");
    sotw_send(stream, &node, SDS, NAMES("ROOTCA"), NULL, NULL, NULL);
    sotw_response_t *response = SOTW_EXPECT(stream);
    assert_string_equal(response->type_url, SDS);
    assert_int_equal(response->n_resources, 1);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *secret =
        (Envoy__Extensions__TransportSockets__Tls__V3__Secret *)sotw_find(response, "ROOTCA");
    assert_non_null(secret);
    assert_int_equal(
        secret->type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    assert_non_null(secret->validation_context->trusted_ca);
    assert_non_null(strstr(secret->validation_context->trusted_ca->inline_string,
                           "-----BEGIN CERTIFICATE-----"));
    assert_null(strstr(secret->validation_context->trusted_ca->inline_string, "X509 CRL"));
    assert_non_null(secret->validation_context->crl);
    assert_non_null(
        strstr(secret->validation_context->crl->inline_string, "-----BEGIN X509 CRL-----"));
    sotw_ack(stream, response, NAMES("ROOTCA"));
    /* The secret is refreshed once a second, just before the stream status
     * is flushed: once the ACK shows in /v1/proxies, a refresh ran after it,
     * and what it would push comes within a change's quiet window. */
    EXPECT_PROXY_STATUS("sotw-secret", SDS, response->version_info, NULL, NULL);
    SOTW_EXPECT_NONE_AFTER_CHANGE(stream);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (4) RDS, EDS (and LDS) by name: only the names asked for. */
static void test_sotw_by_name(void **state)
{
    (void)state;
    put_service("by-a", "{}");
    put_endpoint("by-a", "e1", "10.4.0.1", 8001);
    put_service("by-b", "{}");
    put_endpoint("by-b", "e1", "10.4.0.2", 8002);
    put_service("by-c", "{}");
    put_endpoint("by-c", "e1", "10.4.0.3", 8003);

    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-by-name");
    char got[LIST_SIZE];

    sotw_send(stream, &node, RDS, NAMES("by-a", "by-c"), NULL, NULL, NULL);
    sotw_response_t *routes = SOTW_EXPECT(stream);
    assert_string_equal(routes->type_url, RDS);
    sotw_names(routes, got, sizeof(got));
    EXPECT_NAMES(got, "by-a", "by-c");
    sotw_ack(stream, routes, NAMES("by-a", "by-c"));

    sotw_send(stream, NULL, EDS, NAMES("by-b"), NULL, NULL, NULL);
    sotw_response_t *endpoints = SOTW_EXPECT(stream);
    assert_string_equal(endpoints->type_url, EDS);
    sotw_names(endpoints, got, sizeof(got));
    EXPECT_NAMES(got, "by-b");
    assignment_t *assignment = (assignment_t *)sotw_find(endpoints, "by-b");
    assert_non_null(assignment);
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.4.0.2:8002");
    release(assignment);
    sotw_ack(stream, endpoints, NAMES("by-b"));

    sotw_send(stream, NULL, LDS, NAMES("by-c"), NULL, NULL, NULL);
    sotw_response_t *listeners = SOTW_EXPECT(stream);
    assert_string_equal(listeners->type_url, LDS);
    sotw_names(listeners, got, sizeof(got));
    EXPECT_NAMES(got, "by-c");
    listener_t *listener = (listener_t *)sotw_find(listeners, "by-c");
    assert_non_null(listener);
    assert_non_null(listener->api_listener);
    release(listener);
    sotw_ack(stream, listeners, NAMES("by-c"));
    SOTW_EXPECT_NONE(stream);

    /* A change to endpoints nobody asked for is not sent; a change to by-b is,
     * with by-b only. */
    put_endpoint("by-c", "e2", "10.4.0.4", 8003);
    SOTW_EXPECT_NONE_AFTER_CHANGE(stream);
    put_endpoint("by-b", "e2", "10.4.0.5", 8002);
    sotw_response_t *update = SOTW_EXPECT(stream);
    assert_string_equal(update->type_url, EDS);
    sotw_names(update, got, sizeof(got));
    EXPECT_NAMES(got, "by-b");
    assignment = (assignment_t *)sotw_find(update, "by-b");
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.4.0.2:8002,10.4.0.5:8002");
    release(assignment);
    sotw_ack(stream, update, NAMES("by-b"));
    SOTW_EXPECT_NONE(stream);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* ---- requests out of bounds (issue 12, defects 3 and 13) --------------------------- */

#define NODE_TEXT_MAX    256  /* atriumd's limit on node ids */
#define NACK_MESSAGE_MAX 4096 /* atriumd keeps this much of error_detail.message */
#define TRUNCATED        "\xe2\x80\xa6[truncated]"

/* A node id of 1 MiB, or with a control byte, ends the stream with
 * INVALID_ARGUMENT before anything of it is stored. */
static void test_absurd_node_id_is_refused(void **state)
{
    (void)state;
    size_t size = 1024 * 1024;
    char *huge = malloc(size + 1);
    assert_non_null(huge);
    memset(huge, 'n', size);
    huge[size] = '\0';
    ads_stream *stream = ads_open(false);
    node_t node = plain_node(huge);
    sotw_send(stream, &node, CDS, NULL, 0, NULL, NULL, NULL);
    free(huge);
    int status = ads_wait_status(stream, RESPONSE_MS);
    char *details = ads_status_text(stream);
    ads_close(stream);
    if (status != GRPC_STATUS_INVALID_ARGUMENT)
        fail_msg("a 1 MiB node id: status %d (%s), expected INVALID_ARGUMENT", status, details);
    assert_non_null(strstr(details, "node.id"));
    free(details);

    stream = ads_open(true);
    node = plain_node("bad\x01node");
    delta_send(stream, &(delta_args){.node = &node, .type_url = CDS});
    assert_int_equal(ads_wait_status(stream, RESPONSE_MS), GRPC_STATUS_INVALID_ARGUMENT);
    ads_close(stream);

    /* Nothing of them was stored: once a later node's status is flushed,
     * the proxies are only well-formed ones. */
    stream = ads_open(false);
    node = plain_node("after-refusals");
    sotw_send(stream, &node, CDS, NULL, 0, NULL, NULL, NULL);
    sotw_response_t *response = SOTW_EXPECT(stream);
    sotw_ack(stream, response, NULL, 0);
    EXPECT_PROXY_STATUS("after-refusals", CDS, response->version_info, NULL, NULL);
    rest_response *reply = request("GET", "/v1/proxies", NULL);
    assert_int_equal(reply->status, 200);
    assert_true(reply->length < 64 * 1024);
    json_t *proxies = json_object_get(reply->json, "proxies");
    for (size_t i = 0; i < json_array_size(proxies); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(proxies, i), "node_id"));
        assert_non_null(id);
        assert_true(strlen(id) <= NODE_TEXT_MAX);
        assert_null(strstr(id, "bad"));
    }
    done(reply);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* A NACK's error_detail.message is kept to 4 KiB, marked as cut, and as
 * valid UTF-8 (a byte that is not becomes '?'). */
static void test_long_nack_message_is_truncated(void **state)
{
    (void)state;
    ads_stream *stream = ads_open(false);
    node_t node = plain_node("sotw-long-nack");
    sotw_send(stream, &node, CDS, NULL, 0, NULL, NULL, NULL);
    sotw_response_t *first = SOTW_EXPECT(stream);
    size_t size = 10 * 1024;
    char *message = malloc(size + 1);
    assert_non_null(message);
    memset(message, 'y', size);
    message[0] = '\xff';
    message[size] = '\0';
    sotw_send(stream, NULL, CDS, NULL, 0, "", first->nonce, message);
    free(message);

    int64_t limit = clock_monotonic_ms() + STATUS_WAIT_MS;
    json_t *status = NULL;
    const char *stored = NULL;
    while (stored == NULL) {
        json_decref(status);
        status = proxy_type_status("sotw-long-nack", CDS);
        stored = json_string_value(json_object_get(status, "nack_message"));
        if (stored == NULL && clock_monotonic_ms() > limit)
            fail_msg("no nack_message for sotw-long-nack within %d ms", STATUS_WAIT_MS);
        if (stored == NULL)
            atriumd_fixture_sleep_ms(STATUS_POLL_MS);
    }
    size_t length = strlen(stored);
    if (length > NACK_MESSAGE_MAX + strlen(TRUNCATED))
        fail_msg("the NACK message was stored with %zu bytes", length);
    assert_true(length >= NACK_MESSAGE_MAX - 4);
    assert_string_equal(stored + length - strlen(TRUNCATED), TRUNCATED);
    assert_true(stored[0] == '?' && stored[1] == 'y');
    json_decref(status);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* A request that is not a DiscoveryRequest ends the stream with
 * INVALID_ARGUMENT (it used to be ignored silently). */
static void test_undecodable_request_is_refused(void **state)
{
    (void)state;
    static const unsigned char garbage[] = {0x0a, 0x7f, 0x01}; /* field 1, 127 bytes: 1 follows */
    for (int delta = 0; delta <= 1; delta++) {
        ads_stream *stream = ads_open(delta);
        ads_send_raw(stream, garbage, sizeof(garbage));
        int status = ads_wait_status(stream, RESPONSE_MS);
        ads_close(stream);
        if (status != GRPC_STATUS_INVALID_ARGUMENT)
            fail_msg("%s: an undecodable request got status %d, expected INVALID_ARGUMENT",
                     delta ? "delta" : "SotW", status);
    }
}

/* A method atriumd does not have is answered UNIMPLEMENTED at once (it used
 * to be left unanswered until the client's deadline). */
static void test_unknown_method_is_unimplemented(void **state)
{
    (void)state;
    ads_stream *stream = ads_open_method(
        false, "/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod");
    int status = ads_wait_status(stream, RESPONSE_MS);
    ads_close(stream);
    assert_int_equal(status, GRPC_STATUS_UNIMPLEMENTED);
    stream = ads_open_method(true, "/no.such.Service/Method");
    status = ads_wait_status(stream, RESPONSE_MS);
    ads_close(stream);
    assert_int_equal(status, GRPC_STATUS_UNIMPLEMENTED);
}

/* ---- delta ------------------------------------------------------------------------ */

/* (5) Wildcard CDS: every cluster as Resource{name, version, resource}; "*"
 * on another stream gets the same resources at the same versions. */
static void test_delta_wildcard_clusters(void **state)
{
    (void)state;
    put_split_service("d-one", 5);
    put_service("d-two", "{}");
    put_endpoint("d-two", "e1", "10.5.1.1", 80);
    names *expected = &scratch[0];
    service_names(expected, NAMES("d-one|version=v1", "d-one|version=v2"));
    char want[LIST_SIZE], got[LIST_SIZE];
    names_join(expected, want, sizeof(want));
    names_clear(expected);

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-wildcard");
    delta_send(stream, &(delta_args){.node = &node, .type_url = CDS});
    delta_response_t *response = DELTA_EXPECT(stream);
    assert_string_equal(response->type_url, CDS);
    delta_resource_names(response, got, sizeof(got));
    assert_string_equal(got, want);
    delta_removed_names(response, got, sizeof(got));
    EXPECT_EMPTY(got);
    delta_ack(stream, response);
    DELTA_EXPECT_NONE(stream);

    ads_stream *star = ads_open(true);
    node_t other = plain_node("delta-wildcard-star");
    delta_send(star, &(delta_args){.node = &other, .type_url = CDS, .subscribe = NAMES("*")});
    delta_response_t *same = DELTA_EXPECT(star);
    delta_resource_names(same, got, sizeof(got));
    assert_string_equal(got, want);
    for (size_t i = 0; i < response->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *mine = response->resources[i];
        const Envoy__Service__Discovery__V3__Resource *theirs = delta_find(same, mine->name);
        assert_non_null(theirs);
        assert_string_equal(theirs->version, mine->version);
    }
    delta_ack(star, same);
    DELTA_EXPECT_NONE(star);
    assert_int_equal(ads_close(star), GRPC_STATUS_OK);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (6) EDS by name: a change of one endpoint sends exactly that
 * ClusterLoadAssignment, nothing for the service that did not change. */
static void test_delta_eds_only_what_changed(void **state)
{
    (void)state;
    put_service("e-one", "{}");
    put_endpoint("e-one", "a", "10.6.0.1", 80);
    put_service("e-two", "{}");
    put_endpoint("e-two", "a", "10.6.0.2", 80);

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-eds");
    delta_send(stream,
               &(delta_args){.node = &node, .type_url = EDS, .subscribe = NAMES("e-one", "e-two")});
    delta_response_t *first = DELTA_EXPECT(stream);
    assert_string_equal(first->type_url, EDS);
    char got[LIST_SIZE];
    delta_resource_names(first, got, sizeof(got));
    EXPECT_NAMES(got, "e-one", "e-two");
    delta_ack(stream, first);
    DELTA_EXPECT_NONE(stream);

    put_endpoint("e-one", "a", "10.6.0.1", 81);
    delta_response_t *update = DELTA_EXPECT(stream);
    assert_string_equal(update->type_url, EDS);
    delta_resource_names(update, got, sizeof(got));
    EXPECT_NAMES(got, "e-one");
    delta_removed_names(update, got, sizeof(got));
    EXPECT_EMPTY(got);
    assert_string_not_equal(delta_find(update, "e-one")->version,
                            delta_find(first, "e-one")->version);
    assignment_t *assignment = (assignment_t *)unpack(delta_find(update, "e-one")->resource, EDS);
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.6.0.1:81");
    release(assignment);
    delta_ack(stream, update);
    DELTA_EXPECT_NONE(stream);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (7) Unsubscribe: no more updates for the name; others continue; a
 * subscribe again gets it. */
static void test_delta_unsubscribe(void **state)
{
    (void)state;
    put_service("u-one", "{}");
    put_endpoint("u-one", "a", "10.7.0.1", 80);
    put_service("u-two", "{}");
    put_endpoint("u-two", "a", "10.7.0.2", 80);

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-unsubscribe");
    delta_send(stream,
               &(delta_args){.node = &node, .type_url = EDS, .subscribe = NAMES("u-one", "u-two")});
    delta_response_t *first = DELTA_EXPECT(stream);
    char got[LIST_SIZE];
    delta_resource_names(first, got, sizeof(got));
    EXPECT_NAMES(got, "u-one", "u-two");
    delta_ack(stream, first);

    /* With a phantom name the server must ignore; no response is needed. */
    delta_send(stream,
               &(delta_args){.type_url = EDS, .unsubscribe = NAMES("u-one", "never-subscribed")});
    DELTA_EXPECT_NONE(stream);
    put_endpoint("u-one", "a", "10.7.0.1", 81);
    DELTA_EXPECT_NONE_AFTER_CHANGE(stream);

    put_endpoint("u-two", "a", "10.7.0.2", 81);
    delta_response_t *update = DELTA_EXPECT(stream);
    delta_resource_names(update, got, sizeof(got));
    EXPECT_NAMES(got, "u-two");
    delta_removed_names(update, got, sizeof(got));
    EXPECT_EMPTY(got);
    delta_ack(stream, update);
    DELTA_EXPECT_NONE(stream);

    /* Subscribing again sends the current version. */
    delta_send(stream, &(delta_args){.type_url = EDS, .subscribe = NAMES("u-one")});
    delta_response_t *again = DELTA_EXPECT(stream);
    delta_resource_names(again, got, sizeof(got));
    EXPECT_NAMES(got, "u-one");
    assignment_t *assignment = (assignment_t *)unpack(delta_find(again, "u-one")->resource, EDS);
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.7.0.1:81");
    release(assignment);
    delta_ack(stream, again);
    DELTA_EXPECT_NONE(stream);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* xds_protocol.rst, "Subscribing to Resources": a resource_names_subscribe
 * may name resources the server believes the client already has at the
 * latest version; "the server *must* still provide those resources". */
static void test_delta_resubscribe_is_answered(void **state)
{
    (void)state;
    put_service("re-one", "{}");
    put_endpoint("re-one", "a", "10.12.0.1", 80);

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-resubscribe");
    delta_send(stream, &(delta_args){.node = &node, .type_url = EDS, .subscribe = NAMES("re-one")});
    delta_response_t *first = DELTA_EXPECT(stream);
    char got[LIST_SIZE];
    delta_resource_names(first, got, sizeof(got));
    EXPECT_NAMES(got, "re-one");
    delta_ack(stream, first);
    DELTA_EXPECT_NONE(stream);

    delta_send(stream, &(delta_args){.type_url = EDS, .subscribe = NAMES("re-one")});
    delta_response_t *again = delta_poll(stream, RESPONSE_MS);
    if (again == NULL)
        fail_msg("subscribing again to re-one, which the client has at the latest version, "
                 "got no response within %d ms; xds_protocol.rst says the server must "
                 "still provide it",
                 RESPONSE_MS);
    delta_resource_names(again, got, sizeof(got));
    EXPECT_NAMES(got, "re-one");
    assert_string_equal(delta_find(again, "re-one")->version, delta_find(first, "re-one")->version);
    delta_ack(stream, again);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (8) Removals: a deleted service's clusters (and the endpoints asked for by
 * name) in removed_resources; an unknown name is removed at once, and sent
 * when it comes into existence. */
static void test_delta_removals(void **state)
{
    (void)state;
    put_split_service("r-gone", 8);

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-removals");
    delta_send(stream, &(delta_args){.node = &node, .type_url = CDS});
    delta_response_t *clusters = DELTA_EXPECT(stream);
    char got[LIST_SIZE];
    delta_resource_names(clusters, got, sizeof(got));
    assert_non_null(delta_find(clusters, "r-gone"));
    assert_non_null(delta_find(clusters, "r-gone|version=v1"));
    assert_non_null(delta_find(clusters, "r-gone|version=v2"));
    delta_ack(stream, clusters);
    delta_send(stream,
               &(delta_args){.type_url = EDS, .subscribe = NAMES("r-gone", "r-gone|version=v1")});
    delta_response_t *endpoints = DELTA_EXPECT(stream);
    delta_resource_names(endpoints, got, sizeof(got));
    EXPECT_NAMES(got, "r-gone", "r-gone|version=v1");
    delta_ack(stream, endpoints);
    DELTA_EXPECT_NONE(stream);

    DELETE("/v1/services/r-gone");
    delta_log *log = &collected;
    delta_collect(stream, log);
    names_join(&log->removed[0], got, sizeof(got));
    EXPECT_NAMES(got, "r-gone", "r-gone|version=v1", "r-gone|version=v2");
    names_join(&log->resources[0], got, sizeof(got));
    EXPECT_EMPTY(got);
    names_join(&log->removed[1], got, sizeof(got));
    EXPECT_NAMES(got, "r-gone", "r-gone|version=v1");
    names_join(&log->resources[1], got, sizeof(got));
    EXPECT_EMPTY(got);
    delta_log_clear(log);

    /* Unknown names: removed at once. */
    delta_send(stream, &(delta_args){.type_url = CDS, .subscribe = NAMES("no-such-cluster")});
    delta_response_t *unknown = DELTA_EXPECT(stream);
    assert_string_equal(unknown->type_url, CDS);
    delta_resource_names(unknown, got, sizeof(got));
    EXPECT_EMPTY(got);
    delta_removed_names(unknown, got, sizeof(got));
    EXPECT_NAMES(got, "no-such-cluster");
    delta_ack(stream, unknown);
    delta_send(stream, &(delta_args){.type_url = EDS, .subscribe = NAMES("later")});
    unknown = DELTA_EXPECT(stream);
    assert_string_equal(unknown->type_url, EDS);
    delta_resource_names(unknown, got, sizeof(got));
    EXPECT_EMPTY(got);
    delta_removed_names(unknown, got, sizeof(got));
    EXPECT_NAMES(got, "later");
    delta_ack(stream, unknown);
    DELTA_EXPECT_NONE(stream);

    /* ... and sent once it exists. */
    put_service("later", "{}");
    put_endpoint("later", "a", "10.8.9.9", 80);
    delta_collect(stream, log);
    names_join(&log->resources[1], got, sizeof(got));
    EXPECT_NAMES(got, "later");
    names_join(&log->removed[1], got, sizeof(got));
    EXPECT_EMPTY(got);
    assignment_t *assignment = (assignment_t *)delta_log_find(log, EDS, "later");
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.8.9.9:80");
    release(assignment);
    assert_true(names_has(&log->resources[0], "later"));
    delta_log_clear(log);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (9) Reconnect with initial_resource_versions: only what differs is sent. */
static void test_delta_reconnect(void **state)
{
    (void)state;
    put_service("k-same", "{}");
    put_service("k-change", "{}");
    put_service("k-gone", "{}");

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-reconnect");
    delta_send(stream, &(delta_args){.node = &node, .type_url = CDS});
    delta_response_t *first = DELTA_EXPECT(stream);
    names *known = &scratch[0], *versions = &scratch[1];
    for (size_t i = 0; i < first->n_resources; i++) {
        names_add(known, first->resources[i]->name);
        names_add(versions, first->resources[i]->version);
    }
    assert_true(names_has(known, "k-same") && names_has(known, "k-change") &&
                names_has(known, "k-gone"));
    char old_change_version[64];
    snprintf(old_change_version, sizeof(old_change_version), "%s",
             delta_find(first, "k-change")->version);
    delta_ack(stream, first);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);

    put_service("k-change", "{\"connect_timeout_ms\": 3000}");
    DELETE("/v1/services/k-gone");
    put_service("k-new", "{}");

    stream = ads_open(true);
    delta_send(stream, &(delta_args){.node = &node,
                                     .type_url = CDS,
                                     .initial_names = known,
                                     .initial_versions = versions});
    names_clear(known);
    names_clear(versions);
    delta_log *log = &collected;
    delta_collect(stream, log);
    char got[LIST_SIZE];
    names_join(&log->resources[0], got, sizeof(got));
    EXPECT_NAMES(got, "k-change", "k-new");
    names_join(&log->removed[0], got, sizeof(got));
    EXPECT_NAMES(got, "k-gone");
    cluster_t *changed = (cluster_t *)delta_log_find(log, CDS, "k-change");
    assert_int_equal(changed->connect_timeout->seconds, 3);
    release(changed);
    for (size_t i = 0; i < log->count; i++) {
        const Envoy__Service__Discovery__V3__Resource *resource =
            delta_find(log->responses[i], "k-change");
        if (resource != NULL)
            assert_string_not_equal(resource->version, old_change_version);
    }
    delta_log_clear(log);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (10) 100 REST changes inside the debounce window: at most 2 responses. */
static void test_delta_debounce(void **state)
{
    (void)state;
    put_service("burst", "{}");

    ads_stream *stream = ads_open(true);
    node_t node = plain_node("delta-burst");
    delta_send(stream, &(delta_args){.node = &node, .type_url = EDS, .subscribe = NAMES("burst")});
    delta_response_t *first = DELTA_EXPECT(stream);
    char got[LIST_SIZE];
    delta_resource_names(first, got, sizeof(got));
    EXPECT_NAMES(got, "burst");
    delta_ack(stream, first);
    DELTA_EXPECT_NONE(stream);

    double started = now_seconds();
    for (int i = 0; i < 100; i++) {
        char id[16], address[32];
        snprintf(id, sizeof(id), "e%d", i);
        snprintf(address, sizeof(address), "10.10.%d.%d", i / 200, i % 200 + 1);
        put_endpoint("burst", id, address, 8080);
    }
    double elapsed_ms = (now_seconds() - started) * 1000.0;

    delta_log *log = &collected;
    delta_collect(stream, log);
    print_message("100 PUTs took %.1f ms; %zu response(s) for EDS\n", elapsed_ms, log->count);
    assert_true(log->count >= 1);
    assert_true(log->count <= 2);
    for (size_t i = 0; i < log->count; i++)
        assert_string_equal(log->responses[i]->type_url, EDS);
    assignment_t *assignment = (assignment_t *)delta_log_find(log, EDS, "burst");
    assert_non_null(assignment);
    assert_int_equal(assignment_endpoint_count(assignment), 100);
    release(assignment);
    delta_log_clear(log);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

/* (11) An atrium-proxy node: its own resources, and make-before-break order
 * when a service it may call appears. */
static void test_delta_proxy_order(void **state)
{
    (void)state;
    put_service("front", "{\"dependencies\": [\"ord-new\"]}");
    put_endpoint("front", "a", "10.11.0.1", 8080);

    /* Metadata as atrium-proxy sends it: strings or numbers. */
    static const char *const keys[] = {"atrium.service", "atrium.namespace", "atrium.app_port",
                                       "atrium.inbound_port", "atrium.outbound_port"};
    Google__Protobuf__Value values[5];
    Google__Protobuf__Struct__FieldsEntry entries[5];
    Google__Protobuf__Struct__FieldsEntry *fields[5];
    for (int i = 0; i < 5; i++) {
        google__protobuf__value__init(&values[i]);
        google__protobuf__struct__fields_entry__init(&entries[i]);
        entries[i].key = (char *)keys[i];
        entries[i].value = &values[i];
        fields[i] = &entries[i];
    }
    values[0].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    values[0].string_value = "front";
    values[1].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    values[1].string_value = "default";
    values[2].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    values[2].number_value = 8080;
    values[3].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    values[3].string_value = "15006";
    values[4].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    values[4].number_value = 15001;
    Google__Protobuf__Struct metadata = GOOGLE__PROTOBUF__STRUCT__INIT;
    metadata.n_fields = 5;
    metadata.fields = fields;
    node_t node = plain_node("proxy-front-1");
    node.metadata = &metadata;

    ads_stream *stream = ads_open(true);
    delta_send(stream, &(delta_args){.node = &node, .type_url = LDS});
    delta_send(stream, &(delta_args){.type_url = CDS});
    delta_send(stream, &(delta_args){.type_url = RDS, .subscribe = NAMES("outbound")});
    delta_send(stream,
               &(delta_args){.type_url = EDS, .subscribe = NAMES("inbound|8080", "ord-new")});
    delta_log *log = &collected;
    delta_collect(stream, log);
    char got[LIST_SIZE];
    names_join(&log->resources[2], got, sizeof(got));
    EXPECT_NAMES(got, "inbound", "outbound");
    names_join(&log->resources[0], got, sizeof(got));
    EXPECT_NAMES(got, "inbound|8080");
    names_join(&log->resources[3], got, sizeof(got));
    EXPECT_NAMES(got, "outbound");
    names_join(&log->resources[1], got, sizeof(got));
    EXPECT_NAMES(got, "inbound|8080");
    names_join(&log->removed[1], got, sizeof(got));
    EXPECT_NAMES(got, "ord-new");

    listener_t *outbound = (listener_t *)delta_log_find(log, LDS, "outbound");
    assert_non_null(outbound->address);
    assert_non_null(outbound->address->socket_address);
    assert_string_equal(outbound->address->socket_address->address, "127.0.0.1");
    assert_int_equal(outbound->address->socket_address->port_value, 15001);
    release(outbound);
    listener_t *inbound = (listener_t *)delta_log_find(log, LDS, "inbound");
    assert_non_null(inbound->address);
    assert_non_null(inbound->address->socket_address);
    assert_string_equal(inbound->address->socket_address->address, "0.0.0.0");
    assert_int_equal(inbound->address->socket_address->port_value, 15006);
    release(inbound);
    assignment_t *local = (assignment_t *)delta_log_find(log, EDS, "inbound|8080");
    assignment_endpoints(local, got, sizeof(got));
    assert_string_equal(got, "127.0.0.1:8080");
    release(local);
    delta_log_clear(log);

    /* A service the proxy may call appears, with endpoints. */
    put_service("ord-new", "{}");
    PUT("/v1/services/ord-new/endpoints",
        "{\"endpoints\": [{\"id\": \"a\", \"address\": \"10.11.1.1\", \"port\": 80}, "
        "{\"id\": \"b\", \"address\": \"10.11.1.2\", \"port\": 80}]}");
    delta_collect(stream, log);
    char order[256] = "";
    int first_of[4] = {-1, -1, -1, -1};
    int previous = -1;
    bool ordered = true;
    for (size_t i = 0; i < log->count; i++) {
        int rank = type_rank(log->responses[i]->type_url);
        size_t used = strlen(order);
        snprintf(order + used, sizeof(order) - used, "%s%s", i ? " " : "",
                 strrchr(log->responses[i]->type_url, '.') + 1);
        if (first_of[rank] < 0)
            first_of[rank] = (int)i;
        if (rank < previous)
            ordered = false;
        previous = rank;
    }
    print_message("responses after the change: %s\n", order);
    names_join(&log->resources[0], got, sizeof(got));
    EXPECT_NAMES(got, "ord-new");
    names_join(&log->resources[1], got, sizeof(got));
    EXPECT_NAMES(got, "ord-new");
    names_join(&log->resources[3], got, sizeof(got));
    EXPECT_NAMES(got, "outbound");
    assert_true(first_of[0] >= 0 && first_of[1] > first_of[0] && first_of[3] > first_of[1]);
    if (first_of[2] >= 0)
        assert_true(first_of[2] > first_of[1] && first_of[2] < first_of[3]);
    if (!ordered)
        fail_msg("responses not in the order clusters, endpoints, listeners, routes: %s", order);

    assignment_t *assignment = (assignment_t *)delta_log_find(log, EDS, "ord-new");
    assignment_endpoints(assignment, got, sizeof(got));
    assert_string_equal(got, "10.11.1.1:80,10.11.1.2:80");
    release(assignment);
    route_config_t *routes = (route_config_t *)delta_log_find(log, RDS, "outbound");
    bool has_host = false;
    for (size_t i = 0; i < routes->n_virtual_hosts; i++) {
        for (size_t d = 0; d < routes->virtual_hosts[i]->n_domains; d++)
            has_host |= strcmp(routes->virtual_hosts[i]->domains[d], "ord-new") == 0;
    }
    assert_true(has_host);
    release(routes);
    delta_log_clear(log);
    assert_int_equal(ads_close(stream), GRPC_STATUS_OK);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    grpc_init();
    const struct CMUnitTest sotw[] = {
        cmocka_unit_test_teardown(test_sotw_cds_wildcard_and_ack, test_teardown),
        cmocka_unit_test_teardown(test_sotw_nack, test_teardown),
        cmocka_unit_test_teardown(test_sotw_stale_nonce, test_teardown),
        cmocka_unit_test_teardown(test_sotw_by_name, test_teardown),
        cmocka_unit_test_teardown(test_sotw_root_secret, test_teardown),
        cmocka_unit_test_teardown(test_absurd_node_id_is_refused, test_teardown),
        cmocka_unit_test_teardown(test_long_nack_message_is_truncated, test_teardown),
        cmocka_unit_test_teardown(test_undecodable_request_is_refused, test_teardown),
        cmocka_unit_test_teardown(test_unknown_method_is_unimplemented, test_teardown),
    };
    const struct CMUnitTest delta[] = {
        cmocka_unit_test_teardown(test_delta_wildcard_clusters, test_teardown),
        cmocka_unit_test_teardown(test_delta_eds_only_what_changed, test_teardown),
        cmocka_unit_test_teardown(test_delta_unsubscribe, test_teardown),
        cmocka_unit_test_teardown(test_delta_resubscribe_is_answered, test_teardown),
        cmocka_unit_test_teardown(test_delta_removals, test_teardown),
        cmocka_unit_test_teardown(test_delta_reconnect, test_teardown),
        cmocka_unit_test_teardown(test_delta_debounce, test_teardown),
        cmocka_unit_test_teardown(test_delta_proxy_order, test_teardown),
    };
    int failed = cmocka_run_group_tests_name("xds_sotw", sotw, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("xds_delta", delta, group_setup, group_teardown);
    grpc_shutdown();
    curl_global_cleanup();
    return failed;
}
