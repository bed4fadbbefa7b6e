/*
 * xds_slow_consumer.c — issue 12, defect 8: an xDS subscriber that never
 * reads must not grow atriumd's memory without bound. Against a real atriumd
 * on 127.0.0.1: a service of 10,000 endpoints (its ClusterLoadAssignment is
 * ~300 KB; 2,500 under AddressSanitizer), four delta streams that subscribe to it and never read
 * (gRPC C core clients that never start RECV_MESSAGE, with small HTTP/2 windows), and a reading
 * stream on a small service that paces the test: each of 40 rounds changes both services and waits
 * until the reader got the push.
 *   - atriumd's RSS (/proc/<pid>/status) grows by less than 24 MiB over the
 *     40 rounds (it used to queue every version for every stream: ~48 MB);
 *   - the four streams are closed with RESOURCE_EXHAUSTED once they stayed
 *     behind for the slow-consumer limit (--xds-slow-consumer-ms 10000; the
 *     default is 30 s): /metrics counts them and
 *     atrium_xds_streams drops to the reader alone;
 *   - the reader still gets pushes afterwards.
 * Bounded: 40 rounds, every wait has a deadline; only the atriumd started
 * here is signalled.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "atriumd_fixture.h"
#include "clock.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include <curl/curl.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DELTA_METHOD                                                                               \
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
/* Under AddressSanitizer (and ThreadSanitizer) atriumd reads and translates 10,000 endpoints some
 * hundred times slower (each realloc copies): a quarter of them there, which
 * still shows a queue that grows (the plain build is the one that measures). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ENDPOINTS 2500
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ENDPOINTS 2500
#endif
#endif
#ifndef ENDPOINTS
#define ENDPOINTS 10000 /* REST_ENDPOINTS_MAX */
#endif
#define SLEEPERS         4
#define ROUNDS           40
#define RSS_GROWTH_MAX   (24L * 1024) /* KiB */
#define PUSH_WAIT_MS     5000
#define SLOW_CONSUMER_MS 10000 /* --xds-slow-consumer-ms: longer than the 40 rounds take */
#define CLOSE_WAIT_MS    (SLOW_CONSUMER_MS + 15000)
#define POLL_MS          200

static atriumd_fixture server;

/* ---- REST ---- */

static size_t collect(char *data, size_t size, size_t count, void *context)
{
    char **text = context;
    size_t old = *text ? strlen(*text) : 0, bytes = size * count;
    char *grown = realloc(*text, old + bytes + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + old, data, bytes);
    grown[old + bytes] = '\0';
    *text = grown;
    return bytes;
}

/* A REST call with the admin token that must answer 200 or 201 (GET: 200);
 * returns the body (the caller frees it). */
static char *rest(const char *method, const char *path, const char *body)
{
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[256], authorization[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.rest_port, path);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", server.token);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    char *text = NULL;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &text);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (code != CURLE_OK || (status != 200 && status != 201))
        fail_msg("%s %s: %s, status %ld: %s", method, path, curl_easy_strerror(code), status,
                 text ? text : "");
    return text ? text : strdup("");
}

static void put(const char *path, const char *body)
{
    free(rest("PUT", path, body));
}

/* A counter or gauge of /metrics (the first line starting with name), or -1. */
static long metric(const char *name)
{
    char *text = rest("GET", "/metrics", NULL);
    long value = -1;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ' ') {
            value = strtol(line + strlen(name) + 1, NULL, 10);
            break;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    free(text);
    return value;
}

/* atriumd's resident set, KiB. */
static long rss_kib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)server.pid);
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    long value = -1;
    while (fgets(line, sizeof(line), file) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            value = strtol(line + 6, NULL, 10);
    }
    fclose(file);
    assert_true(value > 0);
    return value;
}

/* ---- ADS clients ---- */

enum { TAG_SENT = 1, TAG_STATUS, TAG_RECEIVED };

typedef struct client {
    grpc_channel *channel;
    grpc_completion_queue *queue;
    grpc_call *call;
    grpc_byte_buffer *sent, *received;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    bool pending[4]; /* by tag */
    bool ended;
} client;

static client sleepers[SLEEPERS], reader;

static gpr_timespec in_ms(int64_t milliseconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(milliseconds, GPR_TIMESPAN));
}

/* Handles one completion of c; false when none came by deadline. */
static bool next(client *c, gpr_timespec deadline)
{
    grpc_event event = grpc_completion_queue_next(c->queue, deadline, NULL);
    if (event.type != GRPC_OP_COMPLETE)
        return false;
    int tag = (int)(intptr_t)event.tag;
    c->pending[tag] = false;
    if (tag == TAG_STATUS)
        c->ended = true;
    return true;
}

static void start(client *c, const grpc_op *ops, size_t count, int tag)
{
    assert_int_equal(grpc_call_start_batch(c->call, ops, count, (void *)(intptr_t)tag, NULL),
                     GRPC_CALL_OK);
    c->pending[tag] = true;
}

/* Opens a delta ADS stream on its own connection (small HTTP/2 windows, no
 * BDP probing: a client that does not read stops the server's sends soon)
 * and subscribes node_id to the ClusterLoadAssignment `name`. */
static void open_client(client *c, const char *node_id, const char *name)
{
    memset(c, 0, sizeof(*c));
    grpc_arg args[4] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_HTTP_PROXY, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
         .value.integer = 65535},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1},
    };
    grpc_channel_args settings = {4, args};
    char target[64];
    snprintf(target, sizeof(target), "ipv4:127.0.0.1:%d", server.xds_port);
    grpc_channel_credentials *credentials = grpc_insecure_credentials_create();
    c->channel = grpc_channel_create(target, credentials, &settings);
    grpc_channel_credentials_release(credentials);
    c->queue = grpc_completion_queue_create_for_next(NULL);
    c->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->queue,
                                       grpc_slice_from_static_string(DELTA_METHOD), NULL,
                                       in_ms(300000), NULL);
    assert_non_null(c->call);
    grpc_metadata_array_init(&c->initial);
    grpc_metadata_array_init(&c->trailing);
    c->details = grpc_empty_slice();

    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = (char *)node_id;
    char *names[] = {(char *)name};
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest request =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    request.node = &node;
    request.type_url = EDS;
    request.n_resource_names_subscribe = 1;
    request.resource_names_subscribe = names;
    grpc_slice bytes = grpc_slice_malloc(protobuf_c_message_get_packed_size(&request.base));
    protobuf_c_message_pack(&request.base, GRPC_SLICE_START_PTR(bytes));
    c->sent = grpc_raw_byte_buffer_create(&bytes, 1);
    grpc_slice_unref(bytes);

    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->sent;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
    start(c, ops, 3, TAG_SENT);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &c->trailing;
    ops[0].data.recv_status_on_client.status = &c->status;
    ops[0].data.recv_status_on_client.status_details = &c->details;
    start(c, ops, 1, TAG_STATUS);
}

/* The reader: waits (bounded) for its next response; true when one came. */
static bool read_one(client *c, int timeout_ms)
{
    if (!c->pending[TAG_RECEIVED]) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->received;
        start(c, &op, 1, TAG_RECEIVED);
    }
    gpr_timespec deadline = in_ms(timeout_ms);
    while (c->pending[TAG_RECEIVED] && next(c, deadline))
        ;
    if (c->pending[TAG_RECEIVED] || c->received == NULL) {
        gpr_timespec soon = in_ms(100);
        while (!c->ended && next(c, soon))
            ;
        fprintf(stderr, "no response: %s, status %d (%.*s)\n",
                c->pending[TAG_RECEIVED] ? "none in time" : "the stream is over",
                c->ended ? (int)c->status : -1, (int)GRPC_SLICE_LENGTH(c->details),
                (const char *)GRPC_SLICE_START_PTR(c->details));
        return false;
    }
    grpc_byte_buffer_destroy(c->received);
    c->received = NULL;
    return true;
}

static void close_client(client *c)
{
    if (c->call == NULL)
        return;
    grpc_call_cancel(c->call, NULL);
    gpr_timespec deadline = in_ms(5000);
    while ((c->pending[TAG_SENT] || c->pending[TAG_STATUS] || c->pending[TAG_RECEIVED]) &&
           next(c, deadline))
        ;
    if (c->received != NULL)
        grpc_byte_buffer_destroy(c->received);
    grpc_byte_buffer_destroy(c->sent);
    grpc_metadata_array_destroy(&c->initial);
    grpc_metadata_array_destroy(&c->trailing);
    grpc_slice_unref(c->details);
    grpc_call_unref(c->call);
    grpc_channel_destroy(c->channel);
    grpc_completion_queue_shutdown(c->queue);
    while (grpc_completion_queue_next(c->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->queue);
    memset(c, 0, sizeof(*c));
}

/* One round: both services change; returns when the reader got the push
 * (every push carries everything committed before it, the big change too). */
static void change_round(int round)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"address\": \"10.200.0.1\", \"port\": %d}", 20000 + round);
    put("/v1/services/big/endpoints/e0", body);
    snprintf(body, sizeof(body), "{\"address\": \"10.201.0.1\", \"port\": %d}", 1000 + round);
    put("/v1/services/small/endpoints/a", body);
    if (!read_one(&reader, PUSH_WAIT_MS))
        fail_msg("round %d: the reader got no push within %d ms", round, PUSH_WAIT_MS);
}

/* ---- the test ---- */

static void test_slow_consumers_are_bounded_and_closed(void **state)
{
    (void)state;
    /* A service of ENDPOINTS endpoints, and a small one. */
    put("/v1/services/big", "{}");
    size_t size = (size_t)ENDPOINTS * 64 + 64;
    char *body = malloc(size);
    assert_non_null(body);
    size_t used = (size_t)snprintf(body, size, "{\"endpoints\": [");
    for (int i = 0; i < ENDPOINTS; i++)
        used +=
            (size_t)snprintf(body + used, size - used,
                             "%s{\"id\": \"e%d\", \"address\": \"10.%d.%d.%d\", \"port\": 8080}",
                             i ? ", " : "", i, 1 + i / 65536, (i / 256) % 256, i % 256);
    snprintf(body + used, size - used, "]}");
    put("/v1/services/big/endpoints", body);
    free(body);
    put("/v1/services/small", "{}");
    put("/v1/services/small/endpoints/a", "{\"address\": \"10.201.0.1\", \"port\": 999}");

    open_client(&reader, "reader", "small");
    assert_true(read_one(&reader, PUSH_WAIT_MS));
    for (int i = 0; i < SLEEPERS; i++) {
        char node_id[32];
        snprintf(node_id, sizeof(node_id), "sleeper-%d", i);
        open_client(&sleepers[i], node_id, "big");
    }
    /* Warm up (the sleepers' first responses are stuck in flight), then measure. */
    for (int round = 0; round < 3; round++)
        change_round(round);
    long before = rss_kib();
    int64_t started = clock_monotonic_ms();
    for (int round = 3; round < 3 + ROUNDS; round++)
        change_round(round);
    long after = rss_kib();
    print_message("%d rounds in %lld ms; atriumd RSS %ld KiB -> %ld KiB (+%ld KiB)\n", ROUNDS,
                  (long long)(clock_monotonic_ms() - started), before, after, after - before);
    if (after - before > RSS_GROWTH_MAX)
        fail_msg("atriumd's RSS grew by %ld KiB over %d rounds with %d streams not reading "
                 "(limit %ld KiB)",
                 after - before, ROUNDS, SLEEPERS, RSS_GROWTH_MAX);

    /* The streams that stay behind are closed. */
    const char *closed = "atrium_xds_streams_closed_total{reason=\"slow_consumer\"}";
    int64_t limit = clock_monotonic_ms() + CLOSE_WAIT_MS;
    long count = 0;
    while ((count = metric(closed)) < SLEEPERS && clock_monotonic_ms() < limit)
        atriumd_fixture_sleep_ms(POLL_MS);
    if (count != SLEEPERS)
        fail_msg("%ld of %d streams not reading were closed within %d ms", count, SLEEPERS,
                 CLOSE_WAIT_MS);
    /* Gone from atriumd (a client that does not read does not see the status:
     * gRPC delivers it after the messages before it). */
    const char *streams = "atrium_xds_streams{protocol=\"delta\"}";
    limit = clock_monotonic_ms() + PUSH_WAIT_MS;
    while ((count = metric(streams)) != 1 && clock_monotonic_ms() < limit)
        atriumd_fixture_sleep_ms(POLL_MS);
    assert_int_equal(count, 1); /* the reader */
    /* The reader was not disturbed. */
    change_round(3 + ROUNDS);
}

static int setup(void **state)
{
    (void)state;
    /* Under ASan, freed memory waits in a quarantine (256 MiB by default)
     * and counts in RSS: keep it small in the atriumd started here. */
    const char *asan = getenv("ASAN_OPTIONS");
    char options[1024];
    snprintf(options, sizeof(options), "%s%squarantine_size_mb=8", asan ? asan : "",
             asan && asan[0] ? ":" : "");
    setenv("ASAN_OPTIONS", options, 1);
    grpc_init();
    char error[256];
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", SLOW_CONSUMER_MS);
    const char *arguments[] = {"--xds-slow-consumer-ms", limit, NULL};
    if (atriumd_fixture_start_with_arguments(&server, ATRIUMD_PATH, "xdsslow", arguments, error,
                                             sizeof(error)) != 0) {
        fprintf(stderr, "%s\n", error);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < SLEEPERS; i++)
        close_client(&sleepers[i]);
    close_client(&reader);
    int status = atriumd_fixture_stop(&server);
    grpc_shutdown();
    return status == 0 ? 0 : -1;
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_consumers_are_bounded_and_closed),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
