/*
 * test_proxy_admin.c — atrium-proxy's admin port (proxy-stub/proxy_admin.c)
 * on 127.0.0.1, port 0, driven over HTTP with libcurl.
 *
 * The sources are fakes: a snapshot built by hand here (not by
 * proxy_config_build, so nothing of proxy_config.c is needed), an xDS status
 * set by each test, and a real proxy_stats registry fed a little traffic.
 * The fake current_config counts the references it hands out and the fake
 * release_config counts them back; every test's teardown checks that the
 * admin gave back each one and that the admin stops cleanly, with the test's
 * keep-alive connection still open.
 *
 * Every HTTP call has a timeout. What a test with the fixture allocates is
 * the fixture's and freed by the teardown, also when an assertion fails; the
 * start/stop tests at the end stop what they started before asserting.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "proxy_admin.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_TIMEOUT_S      10L
#define SNAPSHOT_GENERATION 7
#define BACKEND_CLUSTER     "backend"

/* ---- a snapshot built by hand ---- */

/* Every piece of one snapshot, in one block the fixture owns. */
typedef struct test_snapshot {
    proxy_config config;
    proxy_listener listeners[3];
    proxy_route_table route_tables[1];
    proxy_route_table inline_tables[1];
    proxy_cluster clusters[2];
    proxy_endpoint backend_endpoints[3];
    proxy_virtual_host backend_hosts[1];
    proxy_virtual_host inline_hosts[1];
    char *backend_domains[2];
    char *inline_domains[1];
    proxy_route backend_routes[2];
    proxy_route inline_routes[1];
    proxy_header_match canary_headers[1];
    proxy_weighted_cluster split_clusters[2];
    proxy_weighted_cluster health_clusters[1];
    proxy_weighted_cluster inline_clusters[1];
} test_snapshot;

static void set_endpoint(proxy_endpoint *endpoint, const char *address, uint16_t port,
                         uint32_t weight, bool healthy, size_t index)
{
    memset(endpoint, 0, sizeof(*endpoint));
    snprintf(endpoint->address, sizeof(endpoint->address), "%s", address);
    endpoint->port = port;
    endpoint->weight = weight;
    endpoint->healthy = healthy;
    endpoint->index = index;
}

/* Listeners "outbound" (RDS table "backend-routes", received), "inbound"
 * (RDS table "missing", not received) and "inline" (an inline table);
 * clusters "backend" (three endpoints, one unhealthy, one IPv6) and "empty"
 * (no assignment yet). The snapshot holds one reference: the test's. */
static void build_snapshot(test_snapshot *snapshot)
{
    memset(snapshot, 0, sizeof(*snapshot));

    proxy_cluster *backend = &snapshot->clusters[0];
    backend->name = BACKEND_CLUSTER;
    backend->version = "c1";
    backend->endpoints_version = "e4";
    backend->connect_timeout_ms = 250;
    set_endpoint(&snapshot->backend_endpoints[0], "10.0.0.1", 8080, 3, true, 0);
    set_endpoint(&snapshot->backend_endpoints[1], "10.0.0.2", 8080, 1, false, 1);
    set_endpoint(&snapshot->backend_endpoints[2], "fd00::5", 9090, 2, true, 2);
    backend->endpoints = snapshot->backend_endpoints;
    backend->endpoint_count = 3;
    backend->index = 0;
    proxy_cluster *empty = &snapshot->clusters[1];
    empty->name = "empty";
    empty->version = "c1";
    empty->endpoints_version = NULL;
    empty->connect_timeout_ms = 1000;
    empty->index = 1;

    snapshot->canary_headers[0] = (proxy_header_match){
        .name = "x-canary", .kind = PROXY_HEADER_EXACT, .value = "yes", .ignore_case = true};
    snapshot->split_clusters[0] =
        (proxy_weighted_cluster){.name = BACKEND_CLUSTER, .weight = 80, .cluster = backend};
    snapshot->split_clusters[1] =
        (proxy_weighted_cluster){.name = "canary", .weight = 20, .cluster = NULL};
    snapshot->health_clusters[0] =
        (proxy_weighted_cluster){.name = BACKEND_CLUSTER, .weight = 1, .cluster = backend};
    snapshot->backend_routes[0] = (proxy_route){.name = "api",
                                                .path_match = PROXY_PATH_PREFIX,
                                                .path = "/api",
                                                .path_length = 4,
                                                .case_sensitive = true,
                                                .headers = snapshot->canary_headers,
                                                .header_count = 1,
                                                .clusters = snapshot->split_clusters,
                                                .cluster_count = 2,
                                                .total_weight = 100,
                                                .timeout_ms = 1500,
                                                .retry_count = 2,
                                                .per_try_timeout_ms = 500,
                                                .retry_on = "5xx,reset"};
    snapshot->backend_routes[1] = (proxy_route){.name = NULL,
                                                .path_match = PROXY_PATH_EXACT,
                                                .path = "/healthz",
                                                .path_length = 8,
                                                .case_sensitive = false,
                                                .clusters = snapshot->health_clusters,
                                                .cluster_count = 1,
                                                .total_weight = 1};
    snapshot->backend_domains[0] = "backend";
    snapshot->backend_domains[1] = "backend.default:8080";
    snapshot->backend_hosts[0] = (proxy_virtual_host){.name = "backend",
                                                      .domains = snapshot->backend_domains,
                                                      .domain_count = 2,
                                                      .routes = snapshot->backend_routes,
                                                      .route_count = 2};
    snapshot->route_tables[0] = (proxy_route_table){.name = "backend-routes",
                                                    .version = "r2",
                                                    .virtual_hosts = snapshot->backend_hosts,
                                                    .virtual_host_count = 1};

    snapshot->inline_clusters[0] =
        (proxy_weighted_cluster){.name = BACKEND_CLUSTER, .weight = 1, .cluster = backend};
    snapshot->inline_routes[0] = (proxy_route){.name = "all",
                                               .path_match = PROXY_PATH_PREFIX,
                                               .path = "/",
                                               .path_length = 1,
                                               .case_sensitive = true,
                                               .clusters = snapshot->inline_clusters,
                                               .cluster_count = 1,
                                               .total_weight = 1};
    snapshot->inline_domains[0] = "*";
    snapshot->inline_hosts[0] = (proxy_virtual_host){.name = "local",
                                                     .domains = snapshot->inline_domains,
                                                     .domain_count = 1,
                                                     .routes = snapshot->inline_routes,
                                                     .route_count = 1};
    snapshot->inline_tables[0] = (proxy_route_table){.name = "inline-routes",
                                                     .version = NULL,
                                                     .virtual_hosts = snapshot->inline_hosts,
                                                     .virtual_host_count = 1};

    proxy_listener *outbound = &snapshot->listeners[0];
    outbound->name = "outbound";
    outbound->version = "l3";
    snprintf(outbound->address, sizeof(outbound->address), "127.0.0.1");
    outbound->port = 15001;
    outbound->direction = PROXY_DIRECTION_OUTBOUND;
    outbound->route_table_name = "backend-routes";
    outbound->route_table = &snapshot->route_tables[0];
    proxy_listener *inbound = &snapshot->listeners[1];
    inbound->name = "inbound";
    inbound->version = "l3";
    snprintf(inbound->address, sizeof(inbound->address), "0.0.0.0");
    inbound->port = 15006;
    inbound->direction = PROXY_DIRECTION_INBOUND;
    inbound->route_table_name = "missing";
    inbound->route_table = NULL;
    proxy_listener *with_inline = &snapshot->listeners[2];
    with_inline->name = "inline";
    with_inline->version = "l3";
    snprintf(with_inline->address, sizeof(with_inline->address), "127.0.0.1");
    with_inline->port = 15002;
    with_inline->direction = PROXY_DIRECTION_UNSPECIFIED;
    with_inline->route_table_name = "inline-routes";
    with_inline->route_table = &snapshot->inline_tables[0];

    proxy_config *config = &snapshot->config;
    atomic_init(&config->references, 1);
    config->generation = SNAPSHOT_GENERATION;
    config->listeners = snapshot->listeners;
    config->listener_count = 3;
    config->clusters = snapshot->clusters;
    config->cluster_count = 2;
    config->route_tables = snapshot->route_tables;
    config->route_table_count = 1;
    config->inline_tables = snapshot->inline_tables;
    config->inline_table_count = 1;
}

/* ---- fake sources ---- */

typedef struct fake_sources {
    pthread_mutex_t lock;
    proxy_config *config; /* what current_config answers; NULL: nothing applied */
    xds_client_status status;
    int outstanding; /* references handed out and not given back */
    int handed_out;
} fake_sources;

static proxy_config *fake_current_config(void *context)
{
    fake_sources *sources = context;
    pthread_mutex_lock(&sources->lock);
    proxy_config *config = sources->config;
    if (config != NULL) {
        atomic_fetch_add(&config->references, 1);
        sources->outstanding++;
        sources->handed_out++;
    }
    pthread_mutex_unlock(&sources->lock);
    return config;
}

static void fake_release_config(void *context, proxy_config *config)
{
    fake_sources *sources = context;
    pthread_mutex_lock(&sources->lock);
    atomic_fetch_sub(&config->references, 1);
    sources->outstanding--;
    pthread_mutex_unlock(&sources->lock);
}

static void fake_xds_status(void *context, xds_client_status *out)
{
    fake_sources *sources = context;
    pthread_mutex_lock(&sources->lock);
    *out = sources->status;
    pthread_mutex_unlock(&sources->lock);
}

/* ---- the fixture ---- */

typedef struct http_reply {
    long status;
    char *body; /* terminated */
    size_t body_length;
    char *headers; /* the raw head, terminated */
    size_t headers_length;
    char content_type[128];
} http_reply;

typedef struct fixture {
    fake_sources sources;
    test_snapshot snapshot;
    proxy_stats *stats;
    proxy_admin *admin;
    CURL *curl;
    http_reply reply; /* the last fetch's */
    json_t *document; /* the last parsed body */
} fixture;

static void clear_reply(http_reply *reply)
{
    free(reply->body);
    free(reply->headers);
    memset(reply, 0, sizeof(*reply));
}

/* Appends to a growing terminated buffer; 0 tells curl to stop. */
static size_t append_bytes(char **buffer, size_t *length, const char *data, size_t size)
{
    char *grown = realloc(*buffer, *length + size + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + *length, data, size);
    *length += size;
    grown[*length] = '\0';
    *buffer = grown;
    return size;
}

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    http_reply *reply = context;
    return append_bytes(&reply->body, &reply->body_length, data, size * count);
}

static size_t on_header(char *data, size_t size, size_t count, void *context)
{
    http_reply *reply = context;
    return append_bytes(&reply->headers, &reply->headers_length, data, size * count);
}

/* One request on the fixture's connection; the reply is the fixture's until
 * the next fetch. */
static http_reply *fetch(fixture *state, const char *method, const char *path)
{
    http_reply *reply = &state->reply;
    clear_reply(reply);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", (unsigned)proxy_admin_port(state->admin),
             path);
    CURL *curl = state->curl;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, reply);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode code = curl_easy_perform(curl);
    if (code != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(code));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
    char *content_type = NULL;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &content_type);
    snprintf(reply->content_type, sizeof(reply->content_type), "%s",
             content_type ? content_type : "");
    if (reply->body == NULL)
        append_bytes(&reply->body, &reply->body_length, "", 0);
    return reply;
}

/* The last reply's body as JSON (owned by the fixture). */
static json_t *parse_body(fixture *state)
{
    json_decref(state->document);
    json_error_t error;
    state->document = json_loads(state->reply.body, JSON_REJECT_DUPLICATES, &error);
    if (state->document == NULL)
        fail_msg("not JSON (line %d: %s): %s", error.line, error.text, state->reply.body);
    return state->document;
}

/* GET path, expecting 200 and JSON. */
static json_t *fetch_json(fixture *state, const char *path)
{
    http_reply *reply = fetch(state, "GET", path);
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->content_type, "application/json");
    return parse_body(state);
}

static bool has_line(const char *text, const char *line)
{
    size_t length = strlen(line);
    for (const char *start = text; start != NULL && *start != '\0';) {
        const char *end = strchr(start, '\n');
        size_t line_length = end ? (size_t)(end - start) : strlen(start);
        if (line_length == length && memcmp(start, line, length) == 0)
            return true;
        start = end ? end + 1 : NULL;
    }
    return false;
}

static size_t count_lines(const char *text)
{
    size_t count = 0;
    for (const char *character = text; *character != '\0'; character++)
        if (*character == '\n')
            count++;
    return count;
}

static void assert_has_line(const char *text, const char *line)
{
    if (!has_line(text, line))
        fail_msg("no line \"%s\" in:\n%s", line, text);
}

/* A header of the last reply, as "Name: value" (case-insensitive name). */
static bool reply_has_header(const http_reply *reply, const char *name, const char *value)
{
    size_t name_length = strlen(name);
    for (const char *start = reply->headers; start != NULL && *start != '\0';) {
        const char *end = strstr(start, "\r\n");
        if (strncasecmp(start, name, name_length) == 0 && start[name_length] == ':') {
            const char *found = start + name_length + 1;
            while (*found == ' ')
                found++;
            size_t value_length = end ? (size_t)(end - found) : strlen(found);
            if (value_length == strlen(value) && memcmp(found, value, value_length) == 0)
                return true;
        }
        start = end ? end + 2 : NULL;
    }
    return false;
}

static void install_snapshot(fixture *state)
{
    pthread_mutex_lock(&state->sources.lock);
    state->sources.config = &state->snapshot.config;
    pthread_mutex_unlock(&state->sources.lock);
}

static void set_status(fixture *state, const xds_client_status *status)
{
    pthread_mutex_lock(&state->sources.lock);
    state->sources.status = *status;
    pthread_mutex_unlock(&state->sources.lock);
}

static proxy_admin_sources sources_of(fixture *state)
{
    return (proxy_admin_sources){.stats = state->stats,
                                 .current_config = fake_current_config,
                                 .release_config = fake_release_config,
                                 .xds_status = fake_xds_status,
                                 .context = &state->sources};
}

/* Traffic on "backend": 10.0.0.1:8080 three requests (one failed), two
 * connections opened and one closed; 10.0.0.2:8080 one connect failure; one
 * response counted for the cluster. */
static void record_traffic(proxy_stats *stats)
{
    proxy_stats_shard *shard = proxy_stats_shard_of(stats, 0);
    proxy_cluster_stats *cluster = proxy_stats_cluster(shard, BACKEND_CLUSTER);
    proxy_endpoint_stats *first = proxy_stats_endpoint(shard, cluster, "10.0.0.1", 8080);
    proxy_endpoint_stats *second = proxy_stats_endpoint(shard, cluster, "10.0.0.2", 8080);
    proxy_stats_endpoint_request(first, false);
    proxy_stats_endpoint_request(first, false);
    proxy_stats_endpoint_request(first, true);
    proxy_stats_endpoint_active(first, 1);
    proxy_stats_endpoint_active(first, 1);
    proxy_stats_endpoint_active(first, -1);
    proxy_stats_connect_failure(cluster, second);
    proxy_stats_response(shard, cluster, 200, 1500);
}

static int setup(void **context)
{
    fixture *state = calloc(1, sizeof(*state));
    if (state == NULL)
        return -1;
    *context = state;
    pthread_mutex_init(&state->sources.lock, NULL);
    build_snapshot(&state->snapshot);
    state->stats = proxy_stats_new(1);
    state->curl = curl_easy_init();
    if (state->stats == NULL || state->curl == NULL)
        return -1;
    record_traffic(state->stats);
    char error[256] = "";
    proxy_admin_sources sources = sources_of(state);
    state->admin = proxy_admin_start("127.0.0.1", 0, &sources, error, sizeof(error));
    if (state->admin == NULL) {
        fprintf(stderr, "proxy_admin_start: %s\n", error);
        return -1;
    }
    return 0;
}

/* Stops the admin with the test's connection still open, then checks that
 * every reference handed out came back. */
static int teardown(void **context)
{
    fixture *state = *context;
    if (state == NULL)
        return 0;
    proxy_admin_stop(state->admin);
    int outstanding = state->sources.outstanding;
    int references = atomic_load(&state->snapshot.config.references);
    if (state->curl != NULL)
        curl_easy_cleanup(state->curl);
    clear_reply(&state->reply);
    json_decref(state->document);
    proxy_stats_free(state->stats);
    pthread_mutex_destroy(&state->sources.lock);
    free(state);
    if (outstanding != 0 || references != 1) {
        fprintf(stderr, "references not given back: %d outstanding, count %d\n", outstanding,
                references);
        return -1;
    }
    return 0;
}

/* ---- tests ---- */

static void test_port_is_reported(void **context)
{
    fixture *state = *context;
    assert_int_not_equal(proxy_admin_port(state->admin), 0);
    assert_int_equal(fetch(state, "GET", "/ready")->status, 503);
}

static void test_ready_is_503_until_configured(void **context)
{
    fixture *state = *context;
    http_reply *reply = fetch(state, "GET", "/ready");
    assert_int_equal(reply->status, 503);
    assert_non_null(strstr(reply->body, "no configuration yet"));
    assert_int_equal(state->sources.handed_out, 0);

    install_snapshot(state);
    reply = fetch(state, "GET", "/ready");
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->body, "ready\n");
    assert_non_null(strstr(reply->content_type, "text/plain"));
    assert_int_equal(state->sources.handed_out, 1);

    xds_client_status status = {.serving_saved_state = true, .generation = 1};
    set_status(state, &status);
    reply = fetch(state, "GET", "/ready");
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->body, "ready (from saved state; control plane not reached)\n");
}

static void test_stats_are_prometheus_text(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    xds_client_status status = {.connected = true,
                                .generation = SNAPSHOT_GENERATION,
                                .responses = 9,
                                .acks = 8,
                                .nacks = 1,
                                .connects = 2,
                                .last_update_ms = 1764000000250};
    set_status(state, &status);
    http_reply *reply = fetch(state, "GET", "/stats");
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->content_type, "text/plain; version=0.0.4");
    const char *body = reply->body;

    /* The data path's counters come first, from proxy_stats. */
    const char *data_path = strstr(body, "atrium_proxy_requests_total");
    const char *xds = strstr(body, "atrium_proxy_xds_connected");
    assert_non_null(data_path);
    assert_non_null(xds);
    assert_true(data_path < xds);

    static const struct {
        const char *name;
        const char *type;
        const char *sample;
    } expected[] = {
        {"atrium_proxy_xds_connected", "gauge", "atrium_proxy_xds_connected 1"},
        {"atrium_proxy_xds_serving_saved_state", "gauge", "atrium_proxy_xds_serving_saved_state 0"},
        {"atrium_proxy_xds_responses_total", "counter", "atrium_proxy_xds_responses_total 9"},
        {"atrium_proxy_xds_acks_total", "counter", "atrium_proxy_xds_acks_total 8"},
        {"atrium_proxy_xds_nacks_total", "counter", "atrium_proxy_xds_nacks_total 1"},
        {"atrium_proxy_xds_connects_total", "counter", "atrium_proxy_xds_connects_total 2"},
        {"atrium_proxy_config_generation", "gauge", "atrium_proxy_config_generation 7"},
        {"atrium_proxy_config_last_update_seconds", "gauge",
         "atrium_proxy_config_last_update_seconds 1764000000.250"},
    };
    for (size_t index = 0; index < sizeof(expected) / sizeof(expected[0]); index++) {
        char line[256];
        snprintf(line, sizeof(line), "# HELP %s ", expected[index].name);
        assert_non_null(strstr(body, line));
        snprintf(line, sizeof(line), "# TYPE %s %s", expected[index].name, expected[index].type);
        assert_has_line(body, line);
        assert_has_line(body, expected[index].sample);
    }
    assert_int_equal(body[reply->body_length - 1], '\n');
}

static void test_stats_before_any_update(void **context)
{
    fixture *state = *context;
    http_reply *reply = fetch(state, "GET", "/stats");
    assert_int_equal(reply->status, 200);
    assert_has_line(reply->body, "atrium_proxy_xds_connected 0");
    assert_has_line(reply->body, "atrium_proxy_config_generation 0");
    assert_has_line(reply->body, "atrium_proxy_config_last_update_seconds 0.000");
}

static json_t *member(json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL)
        fail_msg("no member \"%s\"", key);
    return value;
}

static json_t *element(json_t *array, size_t index)
{
    assert_true(json_is_array(array));
    json_t *value = json_array_get(array, index);
    if (value == NULL)
        fail_msg("no element %zu in an array of %zu", index, json_array_size(array));
    return value;
}

static void assert_member_text(json_t *object, const char *key, const char *expected)
{
    json_t *value = member(object, key);
    if (expected == NULL) {
        assert_true(json_is_null(value));
        return;
    }
    assert_true(json_is_string(value));
    assert_string_equal(json_string_value(value), expected);
}

static void assert_member_integer(json_t *object, const char *key, json_int_t expected)
{
    json_t *value = member(object, key);
    assert_true(json_is_integer(value));
    assert_int_equal(json_integer_value(value), expected);
}

static void assert_member_boolean(json_t *object, const char *key, bool expected)
{
    json_t *value = member(object, key);
    assert_true(json_is_boolean(value));
    assert_int_equal(json_is_true(value), expected);
}

static void test_config_dump_describes_the_snapshot(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    xds_client_status status = {.connected = true, .generation = SNAPSHOT_GENERATION, .acks = 4};
    snprintf(status.last_nack, sizeof(status.last_nack), "Cluster \"bad\": no endpoints");
    snprintf(status.versions[PROXY_RESOURCE_CLUSTER], sizeof(status.versions[0]), "c1");
    snprintf(status.versions[PROXY_RESOURCE_LISTENER], sizeof(status.versions[0]), "l3");
    snprintf(status.versions[PROXY_RESOURCE_ROUTE], sizeof(status.versions[0]), "r2");
    set_status(state, &status);
    json_t *root = fetch_json(state, "/config_dump");

    assert_member_integer(root, "generation", SNAPSHOT_GENERATION);
    json_t *xds = member(root, "xds");
    assert_member_boolean(xds, "connected", true);
    assert_member_boolean(xds, "serving_saved_state", false);
    assert_member_integer(xds, "acks", 4);
    assert_member_text(xds, "last_nack", "Cluster \"bad\": no endpoints");
    json_t *versions = member(xds, "versions");
    assert_member_text(versions, "cluster", "c1");
    assert_member_text(versions, "endpoint", NULL);
    assert_member_text(versions, "listener", "l3");
    assert_member_text(versions, "route", "r2");

    json_t *listeners = member(root, "listeners");
    assert_int_equal(json_array_size(listeners), 3);
    json_t *outbound = element(listeners, 0);
    assert_member_text(outbound, "name", "outbound");
    assert_member_text(outbound, "version", "l3");
    assert_member_text(outbound, "address", "127.0.0.1");
    assert_member_integer(outbound, "port", 15001);
    assert_member_text(outbound, "direction", "outbound");
    assert_member_text(outbound, "route_table", "backend-routes");
    assert_member_boolean(outbound, "route_table_received", true);
    json_t *inbound = element(listeners, 1);
    assert_member_text(inbound, "direction", "inbound");
    assert_member_text(inbound, "route_table", "missing");
    assert_member_boolean(inbound, "route_table_received", false);
    assert_member_text(element(listeners, 2), "direction", "unspecified");

    json_t *tables = member(root, "route_tables");
    assert_int_equal(json_array_size(tables), 2);
    json_t *table = element(tables, 0);
    assert_member_text(table, "name", "backend-routes");
    assert_member_text(table, "version", "r2");
    assert_member_boolean(table, "inline", false);
    json_t *host = element(member(table, "virtual_hosts"), 0);
    assert_member_text(host, "name", "backend");
    json_t *domains = member(host, "domains");
    assert_int_equal(json_array_size(domains), 2);
    assert_string_equal(json_string_value(element(domains, 1)), "backend.default:8080");

    json_t *routes = member(host, "routes");
    assert_int_equal(json_array_size(routes), 2);
    json_t *api = element(routes, 0);
    assert_member_text(api, "name", "api");
    json_t *match = member(api, "match");
    assert_member_text(match, "prefix", "/api");
    assert_null(json_object_get(match, "path"));
    assert_member_boolean(match, "case_sensitive", true);
    json_t *header = element(member(match, "headers"), 0);
    assert_member_text(header, "name", "x-canary");
    assert_member_text(header, "exact", "yes");
    assert_member_boolean(header, "ignore_case", true);
    assert_member_boolean(header, "invert", false);
    json_t *split = member(api, "clusters");
    assert_int_equal(json_array_size(split), 2);
    assert_member_text(element(split, 0), "name", BACKEND_CLUSTER);
    assert_member_integer(element(split, 0), "weight", 80);
    assert_member_boolean(element(split, 0), "received", true);
    assert_member_text(element(split, 1), "name", "canary");
    assert_member_integer(element(split, 1), "weight", 20);
    assert_member_boolean(element(split, 1), "received", false);
    assert_member_integer(api, "timeout_ms", 1500);
    json_t *retry = member(api, "retry");
    assert_member_text(retry, "retry_on", "5xx,reset");
    assert_member_integer(retry, "num_retries", 2);
    assert_member_integer(retry, "per_try_timeout_ms", 500);

    json_t *health = element(routes, 1);
    assert_member_text(health, "name", NULL);
    assert_member_text(member(health, "match"), "path", "/healthz");
    assert_member_boolean(member(health, "match"), "case_sensitive", false);
    assert_int_equal(json_array_size(member(member(health, "match"), "headers")), 0);
    assert_true(json_is_null(member(health, "retry")));
    assert_member_integer(health, "timeout_ms", 0);

    json_t *inline_table = element(tables, 1);
    assert_member_text(inline_table, "name", "inline-routes");
    assert_member_text(inline_table, "version", NULL);
    assert_member_boolean(inline_table, "inline", true);

    json_t *clusters = member(root, "clusters");
    assert_int_equal(json_array_size(clusters), 2);
    json_t *backend = element(clusters, 0);
    assert_member_text(backend, "name", BACKEND_CLUSTER);
    assert_member_text(backend, "version", "c1");
    assert_member_text(backend, "endpoints_version", "e4");
    assert_member_integer(backend, "connect_timeout_ms", 250);
    json_t *endpoints = member(backend, "endpoints");
    assert_int_equal(json_array_size(endpoints), 3);
    assert_member_text(element(endpoints, 0), "address", "10.0.0.1");
    assert_member_integer(element(endpoints, 0), "port", 8080);
    assert_member_integer(element(endpoints, 0), "weight", 3);
    assert_member_boolean(element(endpoints, 0), "healthy", true);
    assert_member_boolean(element(endpoints, 1), "healthy", false);
    assert_member_text(element(endpoints, 2), "address", "fd00::5");
    json_t *empty = element(clusters, 1);
    assert_member_text(empty, "name", "empty");
    assert_member_text(empty, "endpoints_version", NULL);
    assert_int_equal(json_array_size(member(empty, "endpoints")), 0);
}

static void test_config_dump_before_configuration(void **context)
{
    fixture *state = *context;
    json_t *root = fetch_json(state, "/config_dump");
    assert_member_integer(root, "generation", 0);
    assert_member_boolean(member(root, "xds"), "connected", false);
    assert_member_text(member(root, "xds"), "last_nack", NULL);
    assert_int_equal(json_array_size(member(root, "listeners")), 0);
    assert_int_equal(json_array_size(member(root, "route_tables")), 0);
    assert_int_equal(json_array_size(member(root, "clusters")), 0);
}

/* The lines /clusters must print for one endpoint of "backend", with the
 * counters proxy_stats reports for it. */
static void assert_endpoint_lines(fixture *state, const char *body, const char *address,
                                  uint16_t port, const char *host, const char *health,
                                  unsigned weight)
{
    proxy_endpoint_counters counters;
    proxy_stats_endpoint_counters(state->stats, BACKEND_CLUSTER, address, port, &counters);
    char line[256];
    snprintf(line, sizeof(line), "backend::%s::cx_active::%lld", host, (long long)counters.active);
    assert_has_line(body, line);
    snprintf(line, sizeof(line), "backend::%s::cx_connect_fail::%llu", host,
             (unsigned long long)counters.connect_failures);
    assert_has_line(body, line);
    snprintf(line, sizeof(line), "backend::%s::rq_total::%llu", host,
             (unsigned long long)counters.requests);
    assert_has_line(body, line);
    snprintf(line, sizeof(line), "backend::%s::rq_error::%llu", host,
             (unsigned long long)counters.failures);
    assert_has_line(body, line);
    snprintf(line, sizeof(line), "backend::%s::health_flags::%s", host, health);
    assert_has_line(body, line);
    snprintf(line, sizeof(line), "backend::%s::weight::%u", host, weight);
    assert_has_line(body, line);
}

static void test_clusters_as_text(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    http_reply *reply = fetch(state, "GET", "/clusters");
    assert_int_equal(reply->status, 200);
    assert_non_null(strstr(reply->content_type, "text/plain"));
    const char *body = reply->body;

    /* What record_traffic did, as proxy_stats sums it. */
    proxy_endpoint_counters first;
    proxy_stats_endpoint_counters(state->stats, BACKEND_CLUSTER, "10.0.0.1", 8080, &first);
    assert_int_equal(first.requests, 3);
    assert_int_equal(first.failures, 1);
    assert_int_equal(first.active, 1);
    proxy_endpoint_counters second;
    proxy_stats_endpoint_counters(state->stats, BACKEND_CLUSTER, "10.0.0.2", 8080, &second);
    assert_int_equal(second.connect_failures, 1);

    assert_has_line(body, "backend::10.0.0.1:8080::rq_total::3");
    assert_has_line(body, "backend::10.0.0.1:8080::rq_error::1");
    assert_has_line(body, "backend::10.0.0.1:8080::cx_active::1");
    assert_has_line(body, "backend::10.0.0.2:8080::cx_connect_fail::1");
    assert_endpoint_lines(state, body, "10.0.0.1", 8080, "10.0.0.1:8080", "healthy", 3);
    assert_endpoint_lines(state, body, "10.0.0.2", 8080, "10.0.0.2:8080", "/failed_eds_health", 1);
    assert_endpoint_lines(state, body, "fd00::5", 9090, "[fd00::5]:9090", "healthy", 2);
    assert_has_line(body, "backend::added_via_api::true");
    assert_has_line(body, "empty::added_via_api::true");
    /* One line per cluster, six per endpoint, nothing else. */
    assert_int_equal(count_lines(body), 2 + 3 * 6);

    /* ?format=text is the default spelled out. */
    char *text = strdup(body);
    assert_non_null(text);
    reply = fetch(state, "GET", "/clusters?format=text");
    int same = strcmp(reply->body, text);
    free(text);
    assert_int_equal(same, 0);
}

static void test_clusters_as_json(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    json_t *root = fetch_json(state, "/clusters?format=json");
    json_t *clusters = member(root, "clusters");
    assert_int_equal(json_array_size(clusters), 2);
    json_t *backend = element(clusters, 0);
    assert_member_text(backend, "name", BACKEND_CLUSTER);
    assert_member_text(backend, "version", "c1");
    assert_member_text(backend, "endpoints_version", "e4");
    json_t *endpoints = member(backend, "endpoints");
    assert_int_equal(json_array_size(endpoints), 3);

    json_t *first = element(endpoints, 0);
    assert_member_text(first, "address", "10.0.0.1");
    assert_member_integer(first, "port", 8080);
    assert_member_integer(first, "weight", 3);
    assert_member_boolean(first, "healthy", true);
    assert_member_text(first, "health_flags", "healthy");
    assert_member_integer(first, "rq_total", 3);
    assert_member_integer(first, "rq_error", 1);
    assert_member_integer(first, "cx_active", 1);
    proxy_endpoint_counters counters;
    proxy_stats_endpoint_counters(state->stats, BACKEND_CLUSTER, "10.0.0.1", 8080, &counters);
    assert_member_integer(first, "cx_connect_fail", (json_int_t)counters.connect_failures);

    json_t *second = element(endpoints, 1);
    assert_member_boolean(second, "healthy", false);
    assert_member_text(second, "health_flags", "/failed_eds_health");
    assert_member_integer(second, "cx_connect_fail", 1);
    json_t *third = element(endpoints, 2);
    assert_member_text(third, "address", "fd00::5");
    assert_member_integer(third, "rq_total", 0);

    json_t *empty = element(clusters, 1);
    assert_member_text(empty, "name", "empty");
    assert_member_text(empty, "endpoints_version", NULL);
    assert_int_equal(json_array_size(member(empty, "endpoints")), 0);
}

static void test_clusters_before_configuration(void **context)
{
    fixture *state = *context;
    http_reply *reply = fetch(state, "GET", "/clusters");
    assert_int_equal(reply->status, 200);
    assert_int_equal(reply->body_length, 0);
    json_t *root = fetch_json(state, "/clusters?format=json");
    assert_int_equal(json_array_size(member(root, "clusters")), 0);
}

static void assert_json_error(fixture *state, long status, const char *code)
{
    http_reply *reply = &state->reply;
    assert_int_equal(reply->status, status);
    assert_string_equal(reply->content_type, "application/json");
    json_t *error = member(parse_body(state), "error");
    assert_member_text(error, "code", code);
    assert_true(json_is_string(member(error, "message")));
}

static void test_clusters_refuses_an_unknown_format(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    fetch(state, "GET", "/clusters?format=yaml");
    assert_json_error(state, 400, "invalid");
}

static void test_unknown_path_is_404(void **context)
{
    fixture *state = *context;
    static const char *const paths[] = {"/", "/readyz", "/ready/", "/stats/x", "/config_dump2"};
    for (size_t index = 0; index < sizeof(paths) / sizeof(paths[0]); index++) {
        fetch(state, "GET", paths[index]);
        assert_json_error(state, 404, "not_found");
    }
    fetch(state, "POST", "/nothing");
    assert_json_error(state, 404, "not_found");
}

static void test_methods_other_than_get_are_405(void **context)
{
    fixture *state = *context;
    install_snapshot(state);
    static const struct {
        const char *method;
        const char *path;
    } calls[] = {
        {"POST", "/ready"},     {"PUT", "/stats"},     {"DELETE", "/config_dump"},
        {"PATCH", "/clusters"}, {"OPTIONS", "/ready"},
    };
    for (size_t index = 0; index < sizeof(calls) / sizeof(calls[0]); index++) {
        fetch(state, calls[index].method, calls[index].path);
        assert_json_error(state, 405, "method_not_allowed");
        assert_true(reply_has_header(&state->reply, "Allow", "GET"));
    }
    http_reply *reply = fetch(state, "HEAD", "/ready");
    assert_int_equal(reply->status, 405);
    assert_true(reply_has_header(reply, "Allow", "GET"));
}

/* Several clients at once, each with its own connection, while the snapshot
 * comes and goes; every reference handed out comes back (teardown). */
typedef struct client_run {
    uint16_t port;
    int failures;
} client_run;

static void *run_client(void *context)
{
    client_run *run = context;
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        run->failures++;
        return NULL;
    }
    static const char *const paths[] = {"/config_dump", "/clusters", "/clusters?format=json",
                                        "/stats", "/ready"};
    for (int round = 0; round < 20; round++) {
        for (size_t index = 0; index < sizeof(paths) / sizeof(paths[0]); index++) {
            char url[128];
            snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", (unsigned)run->port, paths[index]);
            http_reply reply = {0};
            curl_easy_setopt(curl, CURLOPT_URL, url);
            curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
            curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(curl, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
            curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
            long status = 0;
            if (curl_easy_perform(curl) != CURLE_OK ||
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
                (status != 200 && !(status == 503 && strcmp(paths[index], "/ready") == 0)))
                run->failures++;
            clear_reply(&reply);
        }
    }
    curl_easy_cleanup(curl);
    return NULL;
}

static void test_concurrent_clients(void **context)
{
    fixture *state = *context;
    enum { CLIENT_COUNT = 4 };
    client_run runs[CLIENT_COUNT];
    pthread_t threads[CLIENT_COUNT];
    for (int index = 0; index < CLIENT_COUNT; index++) {
        runs[index] = (client_run){.port = proxy_admin_port(state->admin)};
        assert_int_equal(pthread_create(&threads[index], NULL, run_client, &runs[index]), 0);
    }
    for (int swap = 0; swap < 200; swap++) {
        pthread_mutex_lock(&state->sources.lock);
        state->sources.config = swap % 2 == 0 ? &state->snapshot.config : NULL;
        pthread_mutex_unlock(&state->sources.lock);
    }
    install_snapshot(state);
    for (int index = 0; index < CLIENT_COUNT; index++) {
        pthread_join(threads[index], NULL);
        assert_int_equal(runs[index].failures, 0);
    }
}

/* ---- start and stop, without the fixture ---- */

static void test_start_refuses_bad_arguments(void **context)
{
    (void)context;
    char error[256] = "";
    proxy_admin_sources sources = {.current_config = fake_current_config};
    assert_null(proxy_admin_start("127.0.0.1", 0, &sources, error, sizeof(error)));
    assert_non_null(strstr(error, "release_config"));

    error[0] = '\0';
    proxy_admin_sources none = {0};
    /* A documentation address: numeric, never this host's. */
    assert_null(proxy_admin_start("192.0.2.1", 0, &none, error, sizeof(error)));
    assert_non_null(strstr(error, "cannot listen on 192.0.2.1"));

    error[0] = '\0';
    assert_null(proxy_admin_start(NULL, 0, &none, error, sizeof(error)));
    assert_true(error[0] != '\0');

    proxy_admin_stop(NULL);
}

static void test_start_refuses_a_busy_port(void **context)
{
    (void)context;
    char error[256] = "";
    proxy_admin_sources none = {0};
    proxy_admin *first = proxy_admin_start("127.0.0.1", 0, &none, error, sizeof(error));
    assert_non_null(first);
    proxy_admin *second =
        proxy_admin_start("127.0.0.1", proxy_admin_port(first), &none, error, sizeof(error));
    uint16_t port = proxy_admin_port(first);
    proxy_admin_stop(second);
    proxy_admin_stop(first);
    assert_null(second);
    char expected[64];
    snprintf(expected, sizeof(expected), "cannot listen on 127.0.0.1 port %u", (unsigned)port);
    assert_non_null(strstr(error, expected));
}

/* Stopping right after starting (the loop may not be running yet) and
 * starting again on the freed port; sources without a snapshot or status
 * still answer. */
static void test_start_and_stop_at_once(void **context)
{
    (void)context;
    proxy_admin_sources none = {0};
    char error[256] = "";
    for (int round = 0; round < 50; round++) {
        proxy_admin *admin = proxy_admin_start("127.0.0.1", 0, &none, error, sizeof(error));
        assert_non_null(admin);
        proxy_admin_stop(admin);
    }
    proxy_admin *admin = proxy_admin_start("127.0.0.1", 0, &none, error, sizeof(error));
    assert_non_null(admin);
    fixture bare = {.admin = admin, .curl = curl_easy_init()};
    assert_non_null(bare.curl);
    long ready = fetch(&bare, "GET", "/ready")->status;
    long stats = fetch(&bare, "GET", "/stats")->status;
    bool connected_zero = has_line(bare.reply.body, "atrium_proxy_xds_connected 0");
    proxy_admin_stop(admin);
    curl_easy_cleanup(bare.curl);
    clear_reply(&bare.reply);
    assert_int_equal(ready, 503);
    assert_int_equal(stats, 200);
    assert_true(connected_zero);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "cannot initialise libcurl\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_port_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_is_503_until_configured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_are_prometheus_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_before_any_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_dump_describes_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_dump_before_configuration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clusters_as_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clusters_as_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clusters_before_configuration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clusters_refuses_an_unknown_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_path_is_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods_other_than_get_are_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
        cmocka_unit_test(test_start_refuses_bad_arguments),
        cmocka_unit_test(test_start_refuses_a_busy_port),
        cmocka_unit_test(test_start_and_stop_at_once),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
