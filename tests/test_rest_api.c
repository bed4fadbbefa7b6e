/*
 * test_rest_api.c — the admin REST API over real HTTP: one atriumd started on
 * a fresh data directory (127.0.0.1, a free port), driven with libcurl. Every
 * route and the status codes a user sees, If-Match, dry runs, body limits and
 * media types, a table of bad inputs (each must be rejected with the exact
 * error code and field and change nothing), and TTL expiry with heartbeats.
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

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define JSON_TYPE  "application/json"
#define BODY_LIMIT (1024 * 1024) /* REST_BODY_MAX */
#define MAX_LIVE   256           /* responses not yet freed */

/* ---- the server -------------------------------------------------------------- */

static struct {
    atriumd_fixture atriumd;
    bool curl_ready;
    CURL *curl;
    char *oversized; /* BODY_LIMIT + 1 bytes of JSON */
    char *at_limit;  /* BODY_LIMIT bytes of JSON */
} server;

/* ---- HTTP ---------------------------------------------------------------------- */

typedef struct response {
    long status;
    json_t *json; /* the body when it is JSON, else NULL */
    char *text;   /* the raw body, NUL-terminated */
    size_t length;
    char etag[64];
    char allow[128];
    char www_authenticate[128];
    char content_type[128];
} response;

static response *live[MAX_LIVE]; /* freed by done(), or at the latest by the teardown */

static void done(response *reply)
{
    if (reply == NULL)
        return;
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (live[i] == reply)
            live[i] = NULL;
    }
    json_decref(reply->json);
    free(reply->text);
    free(reply);
}

static void free_all_responses(void)
{
    for (size_t i = 0; i < MAX_LIVE; i++) {
        if (live[i] != NULL)
            done(live[i]);
    }
}

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    response *reply = context;
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

/* Copies the value of "Name: value\r\n" into out when line is that header. */
static void header_value(const char *line, size_t length, const char *name, char *out,
                         size_t out_size)
{
    size_t name_length = strlen(name);
    if (length <= name_length || strncasecmp(line, name, name_length) != 0 ||
        line[name_length] != ':')
        return;
    const char *value = line + name_length + 1;
    const char *end = line + length;
    while (value < end && *value == ' ')
        value++;
    while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    snprintf(out, out_size, "%.*s", (int)(end - value), value);
}

static size_t on_header(char *data, size_t size, size_t count, void *context)
{
    response *reply = context;
    size_t length = size * count;
    if (length >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        reply->etag[0] = reply->allow[0] = reply->www_authenticate[0] = '\0';
        reply->content_type[0] = '\0';
    }
    header_value(data, length, "ETag", reply->etag, sizeof(reply->etag));
    header_value(data, length, "Allow", reply->allow, sizeof(reply->allow));
    header_value(data, length, "WWW-Authenticate", reply->www_authenticate,
                 sizeof(reply->www_authenticate));
    header_value(data, length, "Content-Type", reply->content_type, sizeof(reply->content_type));
    return length;
}

/* One request on the shared handle. The admin token is sent unless
 * extra_header is an Authorization header ("Authorization:" alone sends none).
 * content_type NULL sends a body without Content-Type. Always returns a
 * response (the test fails when the transfer itself fails). */
static response *request_sized(const char *method, const char *path, const char *content_type,
                               const char *body, size_t body_length, const char *extra_header)
{
    response *reply = calloc(1, sizeof(*reply));
    assert_non_null(reply);
    size_t slot = 0;
    while (slot < MAX_LIVE && live[slot] != NULL)
        slot++;
    if (slot == MAX_LIVE) {
        free(reply);
        fail_msg("more than %d responses not freed", MAX_LIVE);
    }
    live[slot] = reply;
    reply->text = calloc(1, 1);
    assert_non_null(reply->text);

    CURL *curl = server.curl;
    curl_easy_reset(curl);
    char url[2048];
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
    bool sends_body = body != NULL || strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0;
    if (sends_body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_length : 0));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
    }

    struct curl_slist *headers = NULL, *grown;
    char line[256];
    bool own_authorization =
        extra_header != NULL && strncasecmp(extra_header, "Authorization:", 14) == 0;
    headers = curl_slist_append(headers, "Expect:");
    if (headers != NULL && !own_authorization) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", server.atriumd.token);
        grown = curl_slist_append(headers, line);
        headers = grown ? grown : headers;
    }
    if (headers != NULL && sends_body) {
        snprintf(line, sizeof(line), "Content-Type:%s%s", content_type ? " " : "",
                 content_type ? content_type : "");
        grown = curl_slist_append(headers, line);
        headers = grown ? grown : headers;
    }
    if (headers != NULL && extra_header != NULL) {
        grown = curl_slist_append(headers, extra_header);
        headers = grown ? grown : headers;
    }
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

static response *request(const char *method, const char *path, const char *content_type,
                         const char *body, const char *extra_header)
{
    return request_sized(method, path, content_type, body, body ? strlen(body) : 0, extra_header);
}

/* request() that must answer `status` (else the test fails, showing the body). */
#define EXPECT(status, method, path, content_type, body, extra_header)                             \
    expect_at(__LINE__, status, method, path, content_type, body, extra_header)

static response *expect_at(int line, long status, const char *method, const char *path,
                           const char *content_type, const char *body, const char *extra_header)
{
    response *reply = request(method, path, content_type, body, extra_header);
    if (reply->status != status) {
        print_error("line %d: %s %s answered %ld, expected %ld: %s\n", line, method, path,
                    reply->status, status, reply->text);
        fail();
    }
    return reply;
}

/* GET and PUT of JSON with the token, the common case. */
#define GET(status, path)       EXPECT(status, "GET", path, NULL, NULL, NULL)
#define PUT(status, path, body) EXPECT(status, "PUT", path, JSON_TYPE, body, NULL)
#define DELETE(status, path)    EXPECT(status, "DELETE", path, NULL, NULL, NULL)
#define POST(status, path)      EXPECT(status, "POST", path, NULL, NULL, NULL)

/* Checks {"error": {"code", "message", "field"?}}; field NULL: no "field".
 * Returns NULL when it matches, else a description of the difference. */
static const char *error_mismatch(const response *reply, long status, const char *code,
                                  const char *field, const char *message_part, char *why,
                                  size_t why_size)
{
    json_t *error = json_object_get(reply->json, "error");
    const char *got_code = json_string_value(json_object_get(error, "code"));
    const char *got_message = json_string_value(json_object_get(error, "message"));
    json_t *got_field = json_object_get(error, "field");
    if (reply->status != status)
        snprintf(why, why_size, "status %ld, expected %ld", reply->status, status);
    else if (!json_is_object(error) || got_code == NULL || got_message == NULL)
        snprintf(why, why_size, "no {\"error\": {\"code\", \"message\"}} body");
    else if (strcmp(got_code, code) != 0)
        snprintf(why, why_size, "code \"%s\", expected \"%s\"", got_code, code);
    else if (field == NULL && got_field != NULL)
        snprintf(why, why_size, "field %s, expected none",
                 json_is_string(got_field) ? json_string_value(got_field) : "(not a string)");
    else if (field != NULL &&
             (!json_is_string(got_field) || strcmp(json_string_value(got_field), field) != 0))
        snprintf(why, why_size, "field \"%s\", expected \"%s\"",
                 json_is_string(got_field) ? json_string_value(got_field) : "(none)", field);
    else if (message_part != NULL && strstr(got_message, message_part) == NULL)
        snprintf(why, why_size, "message \"%s\" does not contain \"%s\"", got_message,
                 message_part);
    else
        return NULL;
    return why;
}

#define EXPECT_ERROR(reply, status, code, field)                                                   \
    expect_error_at(__LINE__, reply, status, code, field)

static void expect_error_at(int line, const response *reply, long status, const char *code,
                            const char *field)
{
    char why[512];
    if (error_mismatch(reply, status, code, field, NULL, why, sizeof(why)) != NULL) {
        print_error("line %d: %s; body: %s\n", line, why, reply->text);
        fail();
    }
}

/* ---- JSON helpers ---------------------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t error;
    json_t *value = json_loads(text, 0, &error);
    if (value == NULL)
        fail_msg("test JSON does not parse: %s: %s", error.text, text);
    return value;
}

/* Asserts that actual equals the JSON text expected (which is released). */
#define ASSERT_JSON(actual, expected) assert_json_at(__LINE__, actual, expected)

static void assert_json_at(int line, const json_t *actual, const char *expected)
{
    json_t *want = parse(expected);
    bool equal = json_equal((json_t *)actual, want);
    json_decref(want);
    if (!equal) {
        char *got = actual ? json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        print_error("line %d: got %s\nexpected %s\n", line, got ? got : "(null)", expected);
        free(got);
        fail();
    }
}

static const char *string_of(const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    if (value == NULL)
        fail_msg("no string \"%s\"", key);
    return value;
}

static json_int_t integer_of(const json_t *object, const char *key)
{
    json_t *value = json_object_get(object, key);
    if (!json_is_integer(value))
        fail_msg("no integer \"%s\"", key);
    return json_integer_value(value);
}

static json_int_t current_revision(void)
{
    response *reply = GET(200, "/v1/revision");
    assert_int_equal(json_object_size(reply->json), 1);
    json_int_t revision = integer_of(reply->json, "revision");
    done(reply);
    return revision;
}

/* The ETag of a resource at revision: "\"<revision>\"". */
static void assert_etag(const response *reply, json_int_t revision)
{
    char want[64];
    snprintf(want, sizeof(want), "\"%lld\"", (long long)revision);
    assert_string_equal(reply->etag, want);
}

/* A body of exactly size bytes: {"name":"<name>"} padded with spaces. */
static char *padded_service(const char *name, size_t size)
{
    char head[128];
    int used = snprintf(head, sizeof(head), "{\"name\":\"%s\"", name);
    char *body = malloc(size + 1);
    assert_non_null(body);
    memcpy(body, head, (size_t)used);
    memset(body + used, ' ', size - (size_t)used - 1);
    body[size - 1] = '}';
    body[size] = '\0';
    return body;
}

/* ---- group fixture ----------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        print_error("curl_global_init failed\n");
        return -1;
    }
    server.curl_ready = true;
    server.curl = curl_easy_init();
    server.oversized = padded_service("bat", BODY_LIMIT + 1);
    server.at_limit = padded_service("big", BODY_LIMIT);
    if (server.curl == NULL) {
        print_error("curl_easy_init failed\n");
        return -1;
    }
    char error[256];
    if (atriumd_fixture_start(&server.atriumd, ATRIUMD_PATH, "rest", error, sizeof(error)) != 0) {
        print_error("%s\n", error);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free_all_responses();
    /* Says why and prints atriumd's log itself when it did not exit cleanly. */
    bool clean_exit = atriumd_fixture_stop(&server.atriumd) == 0;
    if (server.curl != NULL)
        curl_easy_cleanup(server.curl);
    server.curl = NULL;
    if (server.curl_ready)
        curl_global_cleanup();
    server.curl_ready = false;
    free(server.oversized);
    free(server.at_limit);
    server.oversized = server.at_limit = NULL;
    /* Asserted last, so that a failure still leaves nothing behind. */
    assert_true(clean_exit);
    return 0;
}

/* ---- health, metrics, authentication, routing --------------------------------- */

static void test_healthz_metrics_and_auth(void **state)
{
    (void)state;
    json_int_t revision = current_revision();

    /* /healthz needs no token. */
    response *reply = EXPECT(200, "GET", "/healthz", NULL, NULL, "Authorization:");
    assert_string_equal(string_of(reply->json, "status"), "ok");
    assert_int_equal(integer_of(reply->json, "revision"), revision);
    done(reply);
    reply = EXPECT(405, "POST", "/healthz", NULL, NULL, "Authorization:");
    assert_string_equal(reply->allow, "GET");
    EXPECT_ERROR(reply, 405, "method_not_allowed", NULL);
    done(reply);

    /* /metrics needs the token; Prometheus text. */
    reply = EXPECT(401, "GET", "/metrics", NULL, NULL, "Authorization:");
    EXPECT_ERROR(reply, 401, "unauthorized", NULL);
    assert_string_equal(reply->www_authenticate, "Bearer realm=\"atrium\"");
    done(reply);
    reply = GET(200, "/metrics");
    assert_null(reply->json);
    assert_string_equal(reply->content_type, "text/plain; version=0.0.4");
    assert_non_null(strstr(reply->text, "# TYPE atrium_rest_requests_total counter\n"));
    assert_non_null(strstr(reply->text, "# TYPE atrium_store_revision gauge\n"));
    char line[128];
    snprintf(line, sizeof(line), "\natrium_store_revision %lld\n", (long long)revision);
    assert_non_null(strstr(reply->text, line));
    assert_non_null(strstr(
        reply->text,
        "\natrium_rest_requests_total{route=\"/v1/revision\",method=\"GET\",code=\"200\"} "));
    assert_non_null(strstr(reply->text, "\natrium_rest_requests_total{route=\"/healthz\","
                                        "method=\"GET\",code=\"200\"} "));
    done(reply);

    /* 401 without a token, with a wrong one, with another scheme; each with
     * WWW-Authenticate. */
    char wrong[128];
    snprintf(wrong, sizeof(wrong), "Authorization: Bearer %s", server.atriumd.token);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
    const char *refused[] = {"Authorization:", wrong, "Authorization: Bearer short",
                             "Authorization: Basic YWRtaW46YWRtaW4="};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        reply = EXPECT(401, "GET", "/v1/services", NULL, NULL, refused[i]);
        EXPECT_ERROR(reply, 401, "unauthorized", NULL);
        assert_string_equal(reply->www_authenticate, "Bearer realm=\"atrium\"");
        done(reply);
    }
    /* The scheme is case-insensitive. */
    snprintf(line, sizeof(line), "Authorization: bearer %s", server.atriumd.token);
    done(EXPECT(200, "GET", "/v1/revision", NULL, NULL, line));

    /* 404 for unknown paths. */
    const char *unknown[] = {"/",
                             "/v1",
                             "/v1/nothing",
                             "/v2/services",
                             "/v1/services/a/b",
                             "/v1/services/a/endpoints/b/c",
                             "/v1/servicesx"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        reply = GET(404, unknown[i]);
        EXPECT_ERROR(reply, 404, "not_found", NULL);
        done(reply);
    }

    /* 405 with Allow for known paths and other methods. */
    static const struct {
        const char *method, *path, *allow;
    } wrong_method[] = {
        {"PATCH", "/v1/services/web", "GET, PUT, DELETE"},
        {"POST", "/v1/services", "GET"},
        {"DELETE", "/v1/services", "GET"},
        {"POST", "/v1/services/web/endpoints", "GET, PUT"},
        {"POST", "/v1/services/web/endpoints/a", "GET, PUT, DELETE"},
        {"GET", "/v1/services/web/endpoints/a/heartbeat", "POST"},
        {"GET", "/v1/services/web/endpoints/a/health", "PUT"},
        {"POST", "/v1/services/web/routes", "GET, PUT, DELETE"},
        {"PATCH", "/v1/services/web/policy", "GET, PUT, DELETE"},
        {"PUT", "/v1/proxies", "GET"},
        {"DELETE", "/v1/revision", "GET"},
    };
    for (size_t i = 0; i < sizeof(wrong_method) / sizeof(wrong_method[0]); i++) {
        reply = EXPECT(405, wrong_method[i].method, wrong_method[i].path, NULL, NULL, NULL);
        EXPECT_ERROR(reply, 405, "method_not_allowed", NULL);
        assert_string_equal(reply->allow, wrong_method[i].allow);
        done(reply);
    }

    /* No proxy has connected. */
    reply = GET(200, "/v1/proxies");
    ASSERT_JSON(reply->json, "{\"proxies\": []}");
    done(reply);

    /* Reads change nothing. */
    assert_int_equal(current_revision(), revision);
}

/* ---- services ------------------------------------------------------------------ */

static void test_services(void **state)
{
    (void)state;
    json_int_t before = current_revision();

    /* Create: 201, the canonical resource, ETag = revision. */
    response *reply = PUT(201, "/v1/services/web", "{\"protocol\": \"http\"}");
    json_int_t revision = integer_of(reply->json, "revision");
    assert_int_equal(revision, before + 1);
    assert_int_equal(current_revision(), revision);
    assert_etag(reply, revision);
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "{\"name\": \"web\", \"namespace\": \"default\", \"protocol\": \"http\", "
             "\"lb_policy\": \"round_robin\", \"connect_timeout_ms\": 1000, \"revision\": %lld}",
             (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    /* Replace: 200, every field. */
    reply = PUT(200, "/v1/services/web",
                "{\"name\": \"web\", \"namespace\": \"shop\", \"protocol\": \"grpc\", "
                "\"lb_policy\": \"least_request\", \"connect_timeout_ms\": 2500, "
                "\"outlier_detection\": {\"consecutive_5xx\": 3}, "
                "\"circuit_breaker\": {\"max_connections\": 100, \"max_retries\": 3}, "
                "\"dependencies\": [\"api\", \"db\"]}");
    revision = integer_of(reply->json, "revision");
    assert_etag(reply, revision);
    snprintf(expected, sizeof(expected),
             "{\"name\": \"web\", \"namespace\": \"shop\", \"protocol\": \"grpc\", "
             "\"lb_policy\": \"least_request\", \"connect_timeout_ms\": 2500, "
             "\"outlier_detection\": {\"consecutive_5xx\": 3, \"interval_ms\": 10000, "
             "\"base_ejection_time_ms\": 30000, \"max_ejection_percent\": 10}, "
             "\"circuit_breaker\": {\"max_connections\": 100, \"max_retries\": 3}, "
             "\"dependencies\": [\"api\", \"db\"], \"revision\": %lld}",
             (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    /* GET single: the same, with its ETag. */
    reply = GET(200, "/v1/services/web");
    ASSERT_JSON(reply->json, expected);
    assert_etag(reply, revision);
    /* The GET body can be PUT back unchanged (it holds "name" and "revision"). */
    char *text = json_dumps(reply->json, JSON_COMPACT);
    assert_non_null(text);
    done(reply);
    reply = PUT(200, "/v1/services/web", text);
    free(text);
    assert_int_equal(integer_of(reply->json, "revision"), revision + 1);
    assert_string_equal(string_of(reply->json, "protocol"), "grpc");
    done(reply);

    /* List: every service by name, and the store's revision. */
    done(PUT(201, "/v1/services/api", "{}"));
    reply = GET(200, "/v1/services");
    json_t *services = json_object_get(reply->json, "services");
    assert_true(json_is_array(services));
    assert_int_equal(json_object_size(reply->json), 2);
    assert_int_equal(integer_of(reply->json, "revision"), current_revision());
    bool seen_web = false, seen_api = false;
    const char *previous = "";
    for (size_t i = 0; i < json_array_size(services); i++) {
        const char *name = string_of(json_array_get(services, i), "name");
        assert_true(strcmp(previous, name) < 0); /* sorted by name */
        previous = name;
        seen_web = seen_web || strcmp(name, "web") == 0;
        seen_api = seen_api || strcmp(name, "api") == 0;
    }
    assert_true(seen_web && seen_api);
    done(reply);

    /* DELETE: 200 {"revision"}, then 404 for GET and DELETE. */
    reply = DELETE(200, "/v1/services/api");
    assert_int_equal(json_object_size(reply->json), 1);
    assert_int_equal(integer_of(reply->json, "revision"), current_revision());
    done(reply);
    reply = GET(404, "/v1/services/api");
    EXPECT_ERROR(reply, 404, "not_found", "name");
    done(reply);
    reply = DELETE(404, "/v1/services/api");
    EXPECT_ERROR(reply, 404, "not_found", "name");
    done(reply);

    /* A trailing slash names the same resource. */
    done(GET(200, "/v1/services/web/"));
}

/* ---- endpoints ------------------------------------------------------------------ */

/* The ids of GET /v1/services/<service>/endpoints, comma-separated. */
static void endpoint_ids(const char *service, char *out, size_t out_size)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/services/%s/endpoints", service);
    response *reply = GET(200, path);
    assert_string_equal(string_of(reply->json, "service"), service);
    json_t *endpoints = json_object_get(reply->json, "endpoints");
    assert_true(json_is_array(endpoints));
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(endpoints); i++) {
        size_t used = strlen(out);
        snprintf(out + used, out_size - used, "%s%s", i ? "," : "",
                 string_of(json_array_get(endpoints, i), "id"));
    }
    done(reply);
}

static void test_endpoints(void **state)
{
    (void)state;
    done(PUT(201, "/v1/services/shop", "{}"));

    /* Create: 201 with the canonical endpoint. */
    response *reply = PUT(201, "/v1/services/shop/endpoints/a",
                          "{\"address\": \"10.0.0.1\", \"port\": 8080, \"weight\": 5, "
                          "\"labels\": {\"version\": \"v1\"}, \"zone\": \"z1\"}");
    json_int_t revision = integer_of(reply->json, "revision");
    assert_etag(reply, revision);
    assert_int_equal(current_revision(), revision);
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "{\"service\": \"shop\", \"id\": \"a\", \"address\": \"10.0.0.1\", \"port\": 8080, "
             "\"weight\": 5, \"labels\": {\"version\": \"v1\"}, \"zone\": \"z1\", "
             "\"health\": \"healthy\", \"ttl_s\": 0, \"revision\": %lld}",
             (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    /* Replace: 200. */
    reply =
        PUT(200, "/v1/services/shop/endpoints/a",
            "{\"service\": \"shop\", \"id\": \"a\", \"address\": \"10.0.0.1\", \"port\": 8081}");
    revision = integer_of(reply->json, "revision");
    snprintf(expected, sizeof(expected),
             "{\"service\": \"shop\", \"id\": \"a\", \"address\": \"10.0.0.1\", \"port\": 8081, "
             "\"weight\": 1, \"labels\": {}, \"zone\": \"\", \"health\": \"healthy\", "
             "\"ttl_s\": 0, \"revision\": %lld}",
             (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    /* GET single. */
    reply = GET(200, "/v1/services/shop/endpoints/a");
    ASSERT_JSON(reply->json, expected);
    assert_etag(reply, revision);
    done(reply);

    /* IPv6, proxy_port. */
    reply = PUT(201, "/v1/services/shop/endpoints/b",
                "{\"address\": \"fd00::2\", \"port\": 9000, \"proxy_port\": 15001}");
    assert_string_equal(string_of(reply->json, "address"), "fd00::2");
    assert_int_equal(integer_of(reply->json, "proxy_port"), 15001);
    done(reply);

    /* List, by id. */
    char ids[256];
    endpoint_ids("shop", ids, sizeof(ids));
    assert_string_equal(ids, "a,b");

    /* Bulk PUT replaces the whole set. */
    reply = PUT(200, "/v1/services/shop/endpoints",
                "{\"endpoints\": [{\"id\": \"b\", \"address\": \"10.0.0.2\", \"port\": 80}, "
                "{\"id\": \"c\", \"service\": \"shop\", \"address\": \"10.0.0.3\", \"port\": 80, "
                "\"weight\": 2}]}");
    snprintf(expected, sizeof(expected),
             "{\"service\": \"shop\", \"endpoints\": 2, \"revision\": %lld}",
             (long long)current_revision());
    ASSERT_JSON(reply->json, expected);
    done(reply);
    endpoint_ids("shop", ids, sizeof(ids));
    assert_string_equal(ids, "b,c");
    reply = GET(404, "/v1/services/shop/endpoints/a");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);
    reply = GET(200, "/v1/services/shop/endpoints/b");
    assert_string_equal(string_of(reply->json, "address"), "10.0.0.2");
    done(reply);

    /* ... including to nothing. */
    reply = PUT(200, "/v1/services/shop/endpoints", "{\"endpoints\": []}");
    assert_int_equal(integer_of(reply->json, "endpoints"), 0);
    done(reply);
    endpoint_ids("shop", ids, sizeof(ids));
    assert_string_equal(ids, "");
    done(PUT(200, "/v1/services/shop/endpoints",
             "{\"endpoints\": [{\"id\": \"c\", \"address\": \"10.0.0.3\", \"port\": 80}]}"));

    /* Health: set, read back. */
    reply = PUT(200, "/v1/services/shop/endpoints/c/health", "{\"health\": \"draining\"}");
    assert_string_equal(string_of(reply->json, "health"), "draining");
    assert_etag(reply, integer_of(reply->json, "revision"));
    done(reply);
    reply = GET(200, "/v1/services/shop/endpoints/c");
    assert_string_equal(string_of(reply->json, "health"), "draining");
    done(reply);
    reply = PUT(200, "/v1/services/shop/endpoints/c/health", "{\"health\": \"healthy\"}");
    assert_string_equal(string_of(reply->json, "health"), "healthy");
    done(reply);

    /* Heartbeats need a TTL (409) and an endpoint (404). */
    reply = POST(409, "/v1/services/shop/endpoints/c/heartbeat");
    EXPECT_ERROR(reply, 409, "conflict", "ttl_s");
    done(reply);
    reply = POST(404, "/v1/services/shop/endpoints/zz/heartbeat");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);

    /* DELETE: 200 {"revision"}, then 404. */
    reply = DELETE(200, "/v1/services/shop/endpoints/c");
    assert_int_equal(json_object_size(reply->json), 1);
    assert_int_equal(integer_of(reply->json, "revision"), current_revision());
    done(reply);
    reply = GET(404, "/v1/services/shop/endpoints/c");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);
    reply = DELETE(404, "/v1/services/shop/endpoints/c");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);

    /* The list of a service that does not exist is a 404. */
    reply = GET(404, "/v1/services/nowhere/endpoints");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
}

/* ---- routes and policies -------------------------------------------------------- */

#define ROUTE_RULES                                                                                \
    "[{\"match\": {\"path_prefix\": \"/api\", \"headers\": [{\"name\": \"x-canary\", "             \
    "\"exact\": \"1\"}, {\"name\": \"x-debug\", \"present\": true}, {\"name\": \"x-user\", "       \
    "\"prefix\": \"test-\"}]}, \"split\": [{\"subset\": {\"version\": \"v1\"}, \"weight\": 90}, "  \
    "{\"subset\": {\"version\": \"v2\"}, \"weight\": 10}], \"timeout_ms\": 1500, "                 \
    "\"retries\": {\"attempts\": 3, \"on\": [\"5xx\", \"reset\", \"retriable-status-codes\"], "    \
    "\"status_codes\": [503], \"per_try_timeout_ms\": 500, \"backoff_base_ms\": 25, "              \
    "\"backoff_max_ms\": 250}}, {\"match\": {\"path_exact\": \"/\"}}, {\"match\": {}}]"

#define POLICY_BODY                                                                                \
    "\"default\": \"deny\", \"allow\": [{\"from\": \"web\", \"methods\": [\"GET\", \"POST\"], "    \
    "\"path_prefix\": \"/cart\"}, {\"from\": \"admin\"}], \"deny\": [{\"methods\": [\"DELETE\"]}]"

/* PUT of a document (routes or policy) and its GET, PUT back, DELETE. */
/* canonical: the stored document's JSON up to its revision, which the server adds last. */
static void document_round_trip(const char *path, const char *body, const char *canonical)
{
    char expected[4096];
    response *reply = GET(404, path);
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);

    reply = PUT(201, path, body);
    json_int_t revision = integer_of(reply->json, "revision");
    assert_int_equal(current_revision(), revision);
    assert_etag(reply, revision);
    snprintf(expected, sizeof(expected), "%s, \"revision\": %lld}", canonical, (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    reply = GET(200, path);
    ASSERT_JSON(reply->json, expected);
    assert_etag(reply, revision);
    /* The GET body ("service" and "revision" included) goes back unchanged. */
    char *text = json_dumps(reply->json, JSON_COMPACT);
    assert_non_null(text);
    done(reply);
    reply = PUT(200, path, text);
    free(text);
    revision = integer_of(reply->json, "revision");
    snprintf(expected, sizeof(expected), "%s, \"revision\": %lld}", canonical, (long long)revision);
    ASSERT_JSON(reply->json, expected);
    done(reply);

    reply = DELETE(200, path);
    assert_int_equal(json_object_size(reply->json), 1);
    assert_int_equal(integer_of(reply->json, "revision"), current_revision());
    done(reply);
    reply = GET(404, path);
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
    reply = DELETE(404, path);
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
}

static void test_routes_and_policy(void **state)
{
    (void)state;
    done(PUT(201, "/v1/services/cart", "{}"));

    document_round_trip("/v1/services/cart/routes", "{\"rules\": " ROUTE_RULES "}",
                        "{\"service\": \"cart\", \"rules\": " ROUTE_RULES);
    document_round_trip("/v1/services/cart/policy", "{" POLICY_BODY "}",
                        "{\"service\": \"cart\", " POLICY_BODY);

    /* Defaults: no rules; default allow. */
    response *reply = PUT(201, "/v1/services/cart/routes", "{\"rules\": []}");
    assert_string_equal(string_of(reply->json, "service"), "cart");
    ASSERT_JSON(json_object_get(reply->json, "rules"), "[]");
    done(reply);
    reply = PUT(201, "/v1/services/cart/policy", "{\"service\": \"cart\"}");
    json_object_del(reply->json, "revision");
    ASSERT_JSON(reply->json,
                "{\"service\": \"cart\", \"default\": \"allow\", \"allow\": [], \"deny\": []}");
    done(reply);

    /* Routes and policies belong to a service that exists. */
    reply = PUT(404, "/v1/services/nowhere/routes", "{\"rules\": []}");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
    reply = PUT(404, "/v1/services/nowhere/policy", "{}");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
}

/* Deleting a service deletes its endpoints, routes and policy. */
static void test_cascade(void **state)
{
    (void)state;
    done(PUT(201, "/v1/services/gone", "{}"));
    done(PUT(201, "/v1/services/gone/endpoints/x", "{\"address\": \"10.1.0.1\", \"port\": 80}"));
    done(PUT(201, "/v1/services/gone/endpoints/y", "{\"address\": \"10.1.0.2\", \"port\": 80}"));
    done(PUT(201, "/v1/services/gone/routes", "{\"rules\": [{\"timeout_ms\": 100}]}"));
    done(PUT(201, "/v1/services/gone/policy", "{\"default\": \"deny\"}"));

    response *reply = DELETE(200, "/v1/services/gone");
    assert_int_equal(integer_of(reply->json, "revision"), current_revision());
    done(reply);

    reply = GET(404, "/v1/services/gone");
    EXPECT_ERROR(reply, 404, "not_found", "name");
    done(reply);
    reply = GET(404, "/v1/services/gone/endpoints");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
    reply = GET(404, "/v1/services/gone/endpoints/x");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);
    reply = GET(404, "/v1/services/gone/endpoints/y");
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);
    reply = GET(404, "/v1/services/gone/routes");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);
    reply = GET(404, "/v1/services/gone/policy");
    EXPECT_ERROR(reply, 404, "not_found", "service");
    done(reply);

    /* Created again, it starts empty. */
    done(PUT(201, "/v1/services/gone", "{}"));
    char ids[64];
    endpoint_ids("gone", ids, sizeof(ids));
    assert_string_equal(ids, "");
    done(GET(404, "/v1/services/gone/routes"));
    done(GET(404, "/v1/services/gone/policy"));
}

/* ---- If-Match ---------------------------------------------------------------------- */

static void test_if_match(void **state)
{
    (void)state;
    char header[96], stale[96];
    response *reply = PUT(201, "/v1/services/cond", "{}");
    snprintf(stale, sizeof(stale), "If-Match: %s", reply->etag);
    done(reply);

    /* The current ETag: 200 and a new ETag. */
    reply = EXPECT(200, "PUT", "/v1/services/cond", JSON_TYPE, "{\"protocol\": \"grpc\"}", stale);
    snprintf(header, sizeof(header), "If-Match: %s", reply->etag);
    assert_string_not_equal(header, stale);
    done(reply);

    /* A stale one: 412, nothing written. */
    json_int_t revision = current_revision();
    reply = EXPECT(412, "PUT", "/v1/services/cond", JSON_TYPE, "{\"protocol\": \"tcp\"}", stale);
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    reply = EXPECT(412, "DELETE", "/v1/services/cond", NULL, NULL, stale);
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    assert_int_equal(current_revision(), revision);
    reply = GET(200, "/v1/services/cond");
    assert_string_equal(string_of(reply->json, "protocol"), "grpc");
    /* The ETag of a GET works, and so does its weak form. */
    snprintf(header, sizeof(header), "If-Match: W/%s", reply->etag);
    done(reply);
    reply = EXPECT(200, "PUT", "/v1/services/cond", JSON_TYPE, "{\"protocol\": \"tcp\"}", header);
    assert_string_equal(string_of(reply->json, "protocol"), "tcp");
    done(reply);

    /* If-Match: * needs the resource. */
    reply = EXPECT(412, "PUT", "/v1/services/nosuch", JSON_TYPE, "{}", "If-Match: *");
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    done(GET(404, "/v1/services/nosuch"));
    reply = EXPECT(412, "DELETE", "/v1/services/nosuch", NULL, NULL, "If-Match: *");
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    done(EXPECT(200, "PUT", "/v1/services/cond", JSON_TYPE, "{}", "If-Match: *"));

    /* Malformed If-Match: 412. */
    const char *malformed[] = {"If-Match: 12", "If-Match: \"abc\"", "If-Match: \"0\"",
                               "If-Match: \"-3\""};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        reply = EXPECT(412, "PUT", "/v1/services/cond", JSON_TYPE, "{}", malformed[i]);
        EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
        done(reply);
    }

    /* Endpoints. */
    reply = EXPECT(412, "PUT", "/v1/services/cond/endpoints/e", JSON_TYPE,
                   "{\"address\": \"10.2.0.1\", \"port\": 80}", "If-Match: *");
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    done(GET(404, "/v1/services/cond/endpoints/e"));
    reply = PUT(201, "/v1/services/cond/endpoints/e", "{\"address\": \"10.2.0.1\", \"port\": 80}");
    snprintf(stale, sizeof(stale), "If-Match: %s", reply->etag);
    done(reply);
    reply = EXPECT(200, "PUT", "/v1/services/cond/endpoints/e", JSON_TYPE,
                   "{\"address\": \"10.2.0.1\", \"port\": 81}", stale);
    snprintf(header, sizeof(header), "If-Match: %s", reply->etag);
    done(reply);
    reply = EXPECT(412, "DELETE", "/v1/services/cond/endpoints/e", NULL, NULL, stale);
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    done(EXPECT(200, "DELETE", "/v1/services/cond/endpoints/e", NULL, NULL, header));

    /* Routes and policies. */
    reply =
        EXPECT(412, "PUT", "/v1/services/cond/routes", JSON_TYPE, "{\"rules\": []}", "If-Match: *");
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    reply = PUT(201, "/v1/services/cond/routes", "{\"rules\": []}");
    snprintf(stale, sizeof(stale), "If-Match: %s", reply->etag);
    done(reply);
    reply = EXPECT(200, "PUT", "/v1/services/cond/routes", JSON_TYPE, "{\"rules\": []}", stale);
    snprintf(header, sizeof(header), "If-Match: %s", reply->etag);
    done(reply);
    reply = EXPECT(412, "DELETE", "/v1/services/cond/routes", NULL, NULL, stale);
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    done(EXPECT(200, "DELETE", "/v1/services/cond/routes", NULL, NULL, header));
    reply = EXPECT(412, "PUT", "/v1/services/cond/policy", JSON_TYPE, "{}", "If-Match: *");
    EXPECT_ERROR(reply, 412, "precondition_failed", NULL);
    done(reply);
    reply = PUT(201, "/v1/services/cond/policy", "{}");
    snprintf(header, sizeof(header), "If-Match: %s", reply->etag);
    done(reply);
    done(EXPECT(200, "DELETE", "/v1/services/cond/policy", NULL, NULL, header));

    /* DELETE of the service with its current ETag. */
    reply = GET(200, "/v1/services/cond");
    snprintf(header, sizeof(header), "If-Match: %s", reply->etag);
    done(reply);
    done(EXPECT(200, "DELETE", "/v1/services/cond", NULL, NULL, header));
    done(GET(404, "/v1/services/cond"));
}

/* ---- bodies: size and media type ------------------------------------------------ */

static void test_body_limits_and_media_types(void **state)
{
    (void)state;
    /* Exactly 1 MiB is accepted. */
    response *reply =
        request_sized("PUT", "/v1/services/big", JSON_TYPE, server.at_limit, BODY_LIMIT, NULL);
    assert_int_equal(reply->status, 201);
    assert_string_equal(string_of(reply->json, "name"), "big");
    done(reply);

    /* One byte more is a 413, and writes nothing. evhttp answers it from the
     * Content-Length, before reading the body (so in its own words, not JSON),
     * and closes the connection. */
    json_int_t revision = current_revision();
    reply =
        request_sized("PUT", "/v1/services/bat", JSON_TYPE, server.oversized, BODY_LIMIT + 1, NULL);
    assert_int_equal(reply->status, 413);
    done(reply);
    assert_int_equal(current_revision(), revision);
    done(GET(404, "/v1/services/bat"));

    /* Bodies must say they are JSON. */
    const char *refused[] = {"text/plain", NULL, "application/jsonx",
                             "application/x-www-form-urlencoded", "text/json"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        reply = EXPECT(415, "PUT", "/v1/services/typed", refused[i], "{}", NULL);
        EXPECT_ERROR(reply, 415, "unsupported_media_type", NULL);
        done(reply);
    }
    assert_int_equal(current_revision(), revision);
    done(GET(404, "/v1/services/typed"));
    /* Parameters and case are fine. */
    done(EXPECT(201, "PUT", "/v1/services/typed", "application/json; charset=utf-8", "{}", NULL));
    done(EXPECT(200, "PUT", "/v1/services/typed", "Application/JSON", "{}", NULL));
}

/* ---- dry runs -------------------------------------------------------------------- */

static void test_dry_run(void **state)
{
    (void)state;
    json_int_t revision = current_revision();

    /* A service: the canonical form, no revision, no ETag, nothing written. */
    response *reply = PUT(200, "/v1/services/dry?dry_run=true", "{\"protocol\": \"grpc\"}");
    ASSERT_JSON(reply->json, "{\"name\": \"dry\", \"namespace\": \"default\", \"protocol\": "
                             "\"grpc\", \"lb_policy\": \"round_robin\", \"connect_timeout_ms\": "
                             "1000}");
    assert_string_equal(reply->etag, "");
    done(reply);
    done(PUT(200, "/v1/services/dry?dry_run=1", "{}"));
    assert_int_equal(current_revision(), revision);
    done(GET(404, "/v1/services/dry"));
    /* Validation still applies. */
    reply = PUT(400, "/v1/services/dry?dry_run=true", "{\"protocol\": \"udp\"}");
    EXPECT_ERROR(reply, 400, "invalid", "protocol");
    done(reply);

    /* dry_run=false writes. */
    done(PUT(201, "/v1/services/dry?dry_run=false", "{}"));
    revision = current_revision();

    /* An endpoint: its configuration (health only when given). */
    reply = PUT(200, "/v1/services/dry/endpoints/e?dry_run=true",
                "{\"address\": \"10.3.0.1\", \"port\": 80, \"ttl_s\": 30}");
    ASSERT_JSON(reply->json, "{\"service\": \"dry\", \"id\": \"e\", \"address\": \"10.3.0.1\", "
                             "\"port\": 80, \"weight\": 1, \"labels\": {}, \"zone\": \"\", "
                             "\"ttl_s\": 30}");
    assert_string_equal(reply->etag, "");
    done(reply);
    reply = PUT(200, "/v1/services/dry/endpoints/e?dry_run=true",
                "{\"address\": \"10.3.0.1\", \"port\": 80, \"health\": \"draining\"}");
    assert_string_equal(string_of(reply->json, "health"), "draining");
    done(reply);
    done(GET(404, "/v1/services/dry/endpoints/e"));

    /* The bulk form. */
    reply = PUT(200, "/v1/services/dry/endpoints?dry_run=true",
                "{\"endpoints\": [{\"id\": \"f\", \"address\": \"10.3.0.2\", \"port\": 81}]}");
    ASSERT_JSON(reply->json,
                "{\"service\": \"dry\", \"endpoints\": [{\"service\": \"dry\", \"id\": \"f\", "
                "\"address\": \"10.3.0.2\", \"port\": 81, \"weight\": 1, \"labels\": {}, "
                "\"zone\": \"\", \"ttl_s\": 0}]}");
    done(reply);
    char ids[64];
    endpoint_ids("dry", ids, sizeof(ids));
    assert_string_equal(ids, "");

    /* Routes and policy. */
    reply =
        PUT(200, "/v1/services/dry/routes?dry_run=true", "{\"rules\": [{\"timeout_ms\": 200}]}");
    ASSERT_JSON(reply->json,
                "{\"service\": \"dry\", \"rules\": [{\"match\": {}, \"timeout_ms\": 200}]}");
    assert_string_equal(reply->etag, "");
    done(reply);
    done(GET(404, "/v1/services/dry/routes"));
    reply = PUT(200, "/v1/services/dry/policy?dry_run=true", "{\"default\": \"deny\"}");
    ASSERT_JSON(reply->json,
                "{\"service\": \"dry\", \"default\": \"deny\", \"allow\": [], \"deny\": []}");
    done(reply);
    done(GET(404, "/v1/services/dry/policy"));
    assert_int_equal(current_revision(), revision);

    /* Only dry_run is a query parameter. */
    reply = GET(400, "/v1/services?verbose=1");
    EXPECT_ERROR(reply, 400, "invalid", "verbose");
    done(reply);
}

/* ---- requests that must not write ---------------------------------------------- */

/* Sets up service "still" (two endpoints, one with a TTL an hour off, routes,
 * a policy), sends the request, and checks that it answered `status` (0: any)
 * and that no resource of the service nor the revision changed. Prints what
 * went wrong and returns false otherwise. */
static bool writes_nothing(const char *method, const char *path, const char *body,
                           const char *header, long status)
{
    static const char *const state_paths[] = {"/v1/services/still", "/v1/services/still/endpoints",
                                              "/v1/services/still/routes",
                                              "/v1/services/still/policy", "/v1/revision"};
    enum { PATH_COUNT = sizeof(state_paths) / sizeof(state_paths[0]) };
    response *reply = request("PUT", "/v1/services/still", JSON_TYPE, "{}", NULL);
    assert_true(reply->status == 200 || reply->status == 201);
    done(reply);
    done(PUT(200, "/v1/services/still", "{}")); /* every resource now past revision 1 */
    done(PUT(200, "/v1/services/still/endpoints",
             "{\"endpoints\": [{\"id\": \"g\", \"address\": \"10.3.1.1\", \"port\": 80}, "
             "{\"id\": \"t\", \"address\": \"10.3.1.2\", \"port\": 80, \"ttl_s\": 3600}]}"));
    /* Created (201) by the first caller, replaced (200) by the next. */
    reply = request("PUT", "/v1/services/still/routes", JSON_TYPE, "{\"rules\": []}", NULL);
    assert_true(reply->status == 200 || reply->status == 201);
    done(reply);
    reply = request("PUT", "/v1/services/still/policy", JSON_TYPE, "{}", NULL);
    assert_true(reply->status == 200 || reply->status == 201);
    done(reply);
    atriumd_fixture_sleep_ms(5); /* so that a heartbeat which writes moves expires_at_ms */

    json_t *before[PATH_COUNT];
    for (size_t p = 0; p < PATH_COUNT; p++) {
        reply = GET(200, state_paths[p]);
        before[p] = json_incref(reply->json);
        done(reply);
    }
    reply = request(method, path, body ? JSON_TYPE : NULL, body, header);
    long answered = reply->status;
    done(reply);
    const char *changed = NULL;
    for (size_t p = 0; p < PATH_COUNT; p++) {
        reply = request("GET", state_paths[p], NULL, NULL, NULL);
        if (changed == NULL && (reply->status != 200 || !json_equal(before[p], reply->json)))
            changed = state_paths[p];
        done(reply);
        json_decref(before[p]);
    }
    bool ok = changed == NULL && (status == 0 || answered == status);
    if (!ok)
        print_error("%s %s%s%s%s answered %ld%s%s\n", method, path, header ? " [" : "",
                    header ? header : "", header ? "]" : "", answered,
                    changed ? " and wrote: GET changed for " : "", changed ? changed : "");
    return ok;
}

/* Every route accepts ?dry_run=true, so none may write with it: DELETEs,
 * health and heartbeats included. All failures are reported together. */
static void test_dry_run_never_writes(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *body;
    } writes[] = {
        {"PUT", "/v1/services/still/endpoints/g/health?dry_run=true", "{\"health\": \"draining\"}"},
        {"POST", "/v1/services/still/endpoints/t/heartbeat?dry_run=true", NULL},
        {"DELETE", "/v1/services/still/endpoints/g?dry_run=true", NULL},
        {"DELETE", "/v1/services/still/routes?dry_run=true", NULL},
        {"DELETE", "/v1/services/still/policy?dry_run=true", NULL},
        {"DELETE", "/v1/services/still?dry_run=true", NULL},
        /* The routes that honour it, for comparison. */
        {"PUT", "/v1/services/still?dry_run=true", "{\"protocol\": \"tcp\"}"},
        {"PUT", "/v1/services/still/endpoints/g?dry_run=true",
         "{\"address\": \"10.3.1.9\", \"port\": 80}"},
        {"PUT", "/v1/services/still/endpoints?dry_run=true", "{\"endpoints\": []}"},
        {"PUT", "/v1/services/still/routes?dry_run=true", "{\"rules\": [{\"timeout_ms\": 5}]}"},
        {"PUT", "/v1/services/still/policy?dry_run=true", "{\"default\": \"deny\"}"},
    };
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        if (!writes_nothing(writes[i].method, writes[i].path, writes[i].body, NULL, 0))
            failures++;
    }
    done(request("DELETE", "/v1/services/still", NULL, NULL, NULL)); /* no TTL left behind */
    assert_int_equal(failures, 0);
}

/* A stale If-Match writes nothing on every route that writes: a 412 where the
 * resource has an ETag, a 400 where the route does not take If-Match at all
 * (the heartbeat, and the bulk replace of a set that has no single ETag). */
static void test_stale_if_match_never_writes(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *body;
        long status;
    } writes[] = {
        {"PUT", "/v1/services/still", "{\"protocol\": \"tcp\"}", 412},
        {"DELETE", "/v1/services/still", NULL, 412},
        {"PUT", "/v1/services/still/endpoints/g", "{\"address\": \"10.3.1.9\", \"port\": 80}", 412},
        {"DELETE", "/v1/services/still/endpoints/g", NULL, 412},
        {"PUT", "/v1/services/still/routes", "{\"rules\": [{\"timeout_ms\": 5}]}", 412},
        {"DELETE", "/v1/services/still/routes", NULL, 412},
        {"PUT", "/v1/services/still/policy", "{\"default\": \"deny\"}", 412},
        {"DELETE", "/v1/services/still/policy", NULL, 412},
        {"PUT", "/v1/services/still/endpoints/g/health", "{\"health\": \"draining\"}", 412},
        {"POST", "/v1/services/still/endpoints/t/heartbeat", NULL, 400},
        {"PUT", "/v1/services/still/endpoints", "{\"endpoints\": []}", 400},
    };
    size_t failures = 0;
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        /* Every resource of "still" is past revision 1 (see writes_nothing). */
        if (!writes_nothing(writes[i].method, writes[i].path, writes[i].body, "If-Match: \"1\"",
                            writes[i].status))
            failures++;
    }
    done(request("DELETE", "/v1/services/still", NULL, NULL, NULL)); /* no TTL left behind */
    assert_int_equal(failures, 0);
}

/* ---- the bad-input battery ------------------------------------------------------ */

typedef struct bad_case {
    const char *method;
    const char *path;
    const char *content_type;
    const char *body;
    long status;
    const char *code;
    const char *field;   /* NULL: the error has no "field" */
    const char *header;  /* an extra request header, or NULL */
    const char *message; /* a part of the message, or NULL */
} bad_case;

#define OVERSIZED "<oversized>" /* replaced by BODY_LIMIT + 1 bytes of JSON */
#define BAT       "/v1/services/bat"
#define BAT_EP    "/v1/services/bat/endpoints/e2"
#define BAT_BULK  "/v1/services/bat/endpoints"
#define BAT_RT    "/v1/services/bat/routes"
#define BAT_PO    "/v1/services/bat/policy"
#define NAME_64   "a123456789b123456789c123456789d123456789e123456789f123456789abcd"

#define CASE(method, path, type, body, status, code, field)                                        \
    {                                                                                              \
        method, path, type, body, status, code, field, NULL, NULL                                  \
    }
#define CASE_HEADER(method, path, type, body, status, code, field, header)                         \
    {                                                                                              \
        method, path, type, body, status, code, field, header, NULL                                \
    }
#define CASE_MESSAGE(method, path, type, body, status, code, field, message)                       \
    {                                                                                              \
        method, path, type, body, status, code, field, NULL, message                               \
    }
/* A PUT of a JSON body. */
#define BAD(path, body, status, code, field) CASE("PUT", path, JSON_TYPE, body, status, code, field)

static const bad_case bad_cases[] = {
    /* Malformed JSON: 400 invalid_json, with the line and column. */
    CASE_MESSAGE("PUT", BAT, JSON_TYPE, "{\"protocol\": \"http\",", 400, "invalid_json", NULL,
                 "invalid JSON at line 1, column 20"),
    CASE_MESSAGE("PUT", BAT, JSON_TYPE,
                 "{\n  \"protocol\": \"http\"\n  \"lb_policy\": \"random\"\n}", 400, "invalid_json",
                 NULL, "invalid JSON at line 3, column 13"),
    CASE_MESSAGE("PUT", BAT_RT, JSON_TYPE, "{\"rules\": [}", 400, "invalid_json", NULL,
                 "invalid JSON at line 1, column 12"),
    CASE_MESSAGE("PUT", BAT, JSON_TYPE, "42", 400, "invalid_json", NULL, "line 1, column"),
    CASE_MESSAGE("PUT", BAT, JSON_TYPE, "{\"protocol\": \"http\", \"protocol\": \"grpc\"}", 400,
                 "invalid_json", NULL, "duplicate"),
    CASE("PUT", BAT_EP, JSON_TYPE, "{\"address\": \"10.0.0.1\", \"port\": 80, \"port\": 81}", 400,
         "invalid_json", NULL),
    /* JSON that is not an object. */
    BAD(BAT, "[1, 2]", 400, "invalid", NULL),
    BAD(BAT_EP, "[]", 400, "invalid", NULL),
    BAD(BAT_BULK, "[]", 400, "invalid", NULL),
    BAD(BAT_RT, "[{\"rules\": []}]", 400, "invalid", NULL),
    BAD(BAT_PO, "[]", 400, "invalid", NULL),
    /* Services: unknown fields, wrong values. */
    BAD(BAT, "{\"bogus\": 1}", 400, "invalid", "bogus"),
    BAD(BAT, "{\"outlier_detection\": {\"consecutive_5xx\": 3, \"bogus\": 1}}", 400, "invalid",
        "outlier_detection.bogus"),
    BAD(BAT, "{\"outlier_detection\": 5}", 400, "invalid", "outlier_detection"),
    BAD(BAT, "{\"outlier_detection\": {\"max_ejection_percent\": 101}}", 400, "invalid",
        "outlier_detection.max_ejection_percent"),
    BAD(BAT, "{\"circuit_breaker\": {\"max_conns\": 10}}", 400, "invalid",
        "circuit_breaker.max_conns"),
    BAD(BAT, "{\"circuit_breaker\": {\"max_connections\": 0}}", 400, "invalid",
        "circuit_breaker.max_connections"),
    BAD(BAT, "{\"protocol\": \"udp\"}", 400, "invalid", "protocol"),
    BAD(BAT, "{\"protocol\": 1}", 400, "invalid", "protocol"),
    BAD(BAT, "{\"lb_policy\": \"fastest\"}", 400, "invalid", "lb_policy"),
    BAD(BAT, "{\"connect_timeout_ms\": -1}", 400, "invalid", "connect_timeout_ms"),
    BAD(BAT, "{\"connect_timeout_ms\": 0}", 400, "invalid", "connect_timeout_ms"),
    BAD(BAT, "{\"connect_timeout_ms\": 60001}", 400, "invalid", "connect_timeout_ms"),
    BAD(BAT, "{\"connect_timeout_ms\": \"1000\"}", 400, "invalid", "connect_timeout_ms"),
    BAD(BAT, "{\"namespace\": \"Prod\"}", 400, "invalid", "namespace"),
    BAD(BAT, "{\"dependencies\": [\"web\", \"Bad_Name\"]}", 400, "invalid", "dependencies[1]"),
    BAD(BAT, "{\"dependencies\": [\"web\", \"web\"]}", 400, "invalid", "dependencies[1]"),
    BAD(BAT, "{\"dependencies\": \"web\"}", 400, "invalid", "dependencies"),
    BAD(BAT, "{\"dependencies\": [7]}", 400, "invalid", "dependencies[0]"),
    /* Names. */
    BAD(BAT, "{\"name\": \"other\"}", 400, "invalid", "name"),
    BAD(BAT, "{\"name\": 5}", 400, "invalid", "name"),
    BAD("/v1/services/Web", "{}", 400, "invalid", "name"),
    BAD("/v1/services/my_svc", "{}", 400, "invalid", "name"),
    BAD("/v1/services/" NAME_64, "{}", 400, "invalid", "name"),
    BAD("/v1/services/-web", "{}", 400, "invalid", "name"),
    BAD("/v1/services/web-", "{}", 400, "invalid", "name"),
    BAD("/v1/services/web.shop", "{}", 400, "invalid", "name"),
    /* Endpoints. */
    BAD(BAT_EP, "{\"port\": 80}", 400, "invalid", "address"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\"}", 400, "invalid", "port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": \"80\"}", 400, "invalid", "port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 0}", 400, "invalid", "port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 65536}", 400, "invalid", "port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": -80}", 400, "invalid", "port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"weight\": 1.5}", 400, "invalid",
        "weight"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"weight\": 0}", 400, "invalid",
        "weight"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"weight\": 129}", 400, "invalid",
        "weight"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"labels\": [\"v1\"]}", 400, "invalid",
        "labels"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"labels\": {\"version\": 1}}", 400,
        "invalid", "labels.version"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"labels\": {\"a=b\": \"x\"}}", 400,
        "invalid", "labels.a=b"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.256\", \"port\": 80}", 400, "invalid", "address"),
    BAD(BAT_EP, "{\"address\": \"web.example\", \"port\": 80}", 400, "invalid", "address"),
    BAD(BAT_EP, "{\"address\": 167772161, \"port\": 80}", 400, "invalid", "address"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"health\": \"sick\"}", 400, "invalid",
        "health"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"zone\": \"eu west\"}", 400, "invalid",
        "zone"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"ttl_s\": -1}", 400, "invalid",
        "ttl_s"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"ttl_s\": 86401}", 400, "invalid",
        "ttl_s"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"proxy_port\": 65536}", 400, "invalid",
        "proxy_port"),
    BAD(BAT_EP, "{\"address\": \"10.0.0.1\", \"port\": 80, \"hostname\": \"x\"}", 400, "invalid",
        "hostname"),
    BAD(BAT_EP, "{\"id\": \"e3\", \"address\": \"10.0.0.1\", \"port\": 80}", 400, "invalid", "id"),
    BAD(BAT_EP, "{\"service\": \"other\", \"address\": \"10.0.0.1\", \"port\": 80}", 400, "invalid",
        "service"),
    BAD("/v1/services/bat/endpoints/E2", "{\"address\": \"10.0.0.1\", \"port\": 80}", 400,
        "invalid", "id"),
    BAD("/v1/services/bat/endpoints/e_2", "{\"address\": \"10.0.0.1\", \"port\": 80}", 400,
        "invalid", "id"),
    BAD("/v1/services/ghost/endpoints/e1", "{\"address\": \"10.0.0.1\", \"port\": 80}", 404,
        "not_found", "service"),
    /* Bulk endpoints. */
    BAD(BAT_BULK, "{\"endpoints\": [{\"address\": \"10.0.0.1\", \"port\": 80}]}", 400, "invalid",
        "endpoints[0].id"),
    BAD(BAT_BULK,
        "{\"endpoints\": [{\"id\": \"d1\", \"address\": \"10.0.0.1\", \"port\": 80}, "
        "{\"id\": \"d1\", \"address\": \"10.0.0.2\", \"port\": 80}]}",
        400, "invalid", "endpoints[1].id"),
    BAD(BAT_BULK,
        "{\"endpoints\": [{\"id\": \"d1\", \"address\": \"10.0.0.1\", \"port\": 80}, "
        "{\"id\": \"d2\", \"address\": \"10.0.0.2\", \"port\": 0}]}",
        400, "invalid", "endpoints[1].port"),
    BAD(BAT_BULK, "{\"endpoints\": [{\"id\": \"d1\", \"address\": \"::g\", \"port\": 80}]}", 400,
        "invalid", "endpoints[0].address"),
    BAD(BAT_BULK,
        "{\"endpoints\": [{\"id\": \"d1\", \"address\": \"10.0.0.1\", \"port\": 80, "
        "\"bogus\": 1}]}",
        400, "invalid", "endpoints[0].bogus"),
    BAD(BAT_BULK, "{\"endpoints\": [1]}", 400, "invalid", "endpoints[0]"),
    BAD(BAT_BULK, "{\"endpoints\": [], \"extra\": 1}", 400, "invalid", "extra"),
    BAD(BAT_BULK, "{\"endpoints\": {}}", 400, "invalid", "endpoints"),
    BAD(BAT_BULK, "{}", 400, "invalid", "endpoints"),
    BAD("/v1/services/ghost/endpoints", "{\"endpoints\": []}", 404, "not_found", "service"),
    /* Routes. */
    BAD(BAT_RT, "{}", 400, "invalid", "rules"),
    BAD(BAT_RT, "{\"rules\": {}}", 400, "invalid", "rules"),
    BAD(BAT_RT, "{\"rules\": [], \"extra\": true}", 400, "invalid", "extra"),
    BAD(BAT_RT, "{\"rules\": [{\"timeout\": 5}]}", 400, "invalid", "rules[0].timeout"),
    BAD(BAT_RT, "{\"rules\": [{}, {\"match\": {\"path\": \"/\"}}]}", 400, "invalid",
        "rules[1].match.path"),
    BAD(BAT_RT, "{\"rules\": [{\"timeout_ms\": -1}]}", 400, "invalid", "rules[0].timeout_ms"),
    BAD(BAT_RT, "{\"rules\": [{\"timeout_ms\": 3600001}]}", 400, "invalid", "rules[0].timeout_ms"),
    BAD(BAT_RT, "{\"rules\": [{\"split\": [{\"subset\": {}, \"weight\": 1}]}]}", 400, "invalid",
        "rules[0].split[0].subset"),
    BAD(BAT_RT,
        "{\"rules\": [{\"split\": [{\"subset\": {\"v\": \"1\"}, \"weight\": 50}, "
        "{\"subset\": {\"v\": \"2\"}, \"weight\": 0}]}]}",
        400, "invalid", "rules[0].split[1].weight"),
    BAD(BAT_RT, "{\"rules\": [{\"split\": [{\"weight\": 1}]}]}", 400, "invalid",
        "rules[0].split[0].subset"),
    BAD(BAT_RT,
        "{\"rules\": [{\"split\": [{\"subset\": {\"v\": \"1\"}, \"weight\": 1, "
        "\"share\": 2}]}]}",
        400, "invalid", "rules[0].split[0].share"),
    BAD(BAT_RT, "{\"rules\": [{\"match\": {\"path_prefix\": \"/a\", \"path_exact\": \"/b\"}}]}",
        400, "invalid", "rules[0].match"),
    BAD(BAT_RT, "{\"rules\": [{\"match\": {\"path_prefix\": \"api\"}}]}", 400, "invalid",
        "rules[0].match"),
    BAD(BAT_RT, "{\"rules\": [{\"retries\": {\"attempts\": 2, \"on\": [\"5xx\", \"sometimes\"]}}]}",
        400, "invalid", "rules[0].retries.on[1]"),
    BAD(BAT_RT, "{\"rules\": [{\"retries\": {\"attempts\": 2}}]}", 400, "invalid",
        "rules[0].retries.on"),
    BAD(BAT_RT, "{\"rules\": [{\"retries\": {\"attempts\": 11, \"on\": [\"5xx\"]}}]}", 400,
        "invalid", "rules[0].retries.attempts"),
    BAD(BAT_RT, "{\"rules\": [{\"retries\": {\"on\": [\"5xx\"], \"status_codes\": [503]}}]}", 400,
        "invalid", "rules[0].retries.status_codes"),
    BAD(BAT_RT,
        "{\"rules\": [{\"retries\": {\"on\": [\"5xx\"], \"backoff_base_ms\": 100, "
        "\"backoff_max_ms\": 50}}]}",
        400, "invalid", "rules[0].retries.backoff_max_ms"),
    BAD(BAT_RT, "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"x-a\"}]}}]}", 400, "invalid",
        "rules[0].match.headers[0]"),
    BAD(BAT_RT,
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"x-a\", \"exact\": \"1\", "
        "\"prefix\": \"2\"}]}}]}",
        400, "invalid", "rules[0].match.headers[0]"),
    BAD(BAT_RT,
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"X-A\", \"exact\": \"1\"}]}}]}", 400,
        "invalid", "rules[0].match.headers[0].name"),
    BAD(BAT_RT,
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"x-a\", \"present\": false}]}}]}", 400,
        "invalid", "rules[0].match.headers[0].present"),
    BAD(BAT_RT, "{\"service\": \"other\", \"rules\": []}", 400, "invalid", "service"),
    BAD("/v1/services/ghost/routes", "{\"rules\": []}", 404, "not_found", "service"),
    /* Policies. */
    BAD(BAT_PO, "{\"default\": \"maybe\"}", 400, "invalid", "default"),
    BAD(BAT_PO, "{\"default\": true}", 400, "invalid", "default"),
    BAD(BAT_PO, "{\"allow\": [{\"methods\": [\"GET\", \"FETCH\"]}]}", 400, "invalid",
        "allow[0].methods[1]"),
    BAD(BAT_PO, "{\"deny\": [{\"methods\": \"GET\"}]}", 400, "invalid", "deny[0].methods"),
    BAD(BAT_PO, "{\"deny\": [{}, {\"to\": \"web\"}]}", 400, "invalid", "deny[1].to"),
    BAD(BAT_PO, "{\"allow\": [{\"from\": \"Bad_Name\"}]}", 400, "invalid", "allow[0].from"),
    BAD(BAT_PO, "{\"deny\": [{\"path_prefix\": \"cart\"}]}", 400, "invalid", "deny[0].path_prefix"),
    BAD(BAT_PO, "{\"allow\": {}}", 400, "invalid", "allow"),
    BAD(BAT_PO, "{\"default\": \"deny\", \"audit\": true}", 400, "invalid", "audit"),
    BAD(BAT_PO, "{\"service\": \"other\"}", 400, "invalid", "service"),
    /* Health and heartbeats. */
    BAD("/v1/services/bat/endpoints/e1/health", "{\"health\": \"sick\"}", 400, "invalid", "health"),
    BAD("/v1/services/bat/endpoints/e1/health", "{\"health\": \"healthy\", \"why\": \"x\"}", 400,
        "invalid", "health"),
    BAD("/v1/services/bat/endpoints/e1/health", "{}", 400, "invalid", "health"),
    BAD("/v1/services/bat/endpoints/e1/health", "[\"healthy\"]", 400, "invalid", "health"),
    BAD("/v1/services/bat/endpoints/nope/health", "{\"health\": \"draining\"}", 404, "not_found",
        "id"),
    CASE("POST", "/v1/services/bat/endpoints/e1/heartbeat", NULL, NULL, 409, "conflict", "ttl_s"),
    CASE("POST", "/v1/services/bat/endpoints/nope/heartbeat", NULL, NULL, 404, "not_found", "id"),
    /* Missing, too large, or not JSON. */
    CASE("PUT", BAT, NULL, NULL, 400, "invalid", NULL),
    CASE("PUT", BAT_EP, JSON_TYPE, NULL, 400, "invalid", NULL),
    CASE("PUT", BAT, "text/plain", "{}", 415, "unsupported_media_type", NULL),
    CASE("PUT", BAT_RT, NULL, "{\"rules\": []}", 415, "unsupported_media_type", NULL),
    /* Authentication. */
    CASE_HEADER("PUT", BAT, JSON_TYPE, "{}", 401, "unauthorized", NULL, "Authorization:"),
    CASE_HEADER("DELETE", BAT, NULL, NULL, 401, "unauthorized", NULL,
                "Authorization: Bearer 0000000000000000000000000000000000000000000000000000000000"
                "000000"),
    CASE_HEADER("GET", BAT, NULL, NULL, 401, "unauthorized", NULL, "Authorization: Bearer"),
    /* Routing. */
    CASE("PATCH", BAT, JSON_TYPE, "{}", 405, "method_not_allowed", NULL),
    CASE("POST", "/v1/services", JSON_TYPE, "{}", 405, "method_not_allowed", NULL),
    CASE("DELETE", BAT_BULK, NULL, NULL, 405, "method_not_allowed", NULL),
    CASE("PUT", "/v1/service/bat", JSON_TYPE, "{}", 404, "not_found", NULL),
    CASE("GET", "/v1/services/ghost", NULL, NULL, 404, "not_found", "name"),
    CASE("DELETE", "/v1/services/ghost", NULL, NULL, 404, "not_found", "name"),
    CASE("DELETE", "/v1/services/bat/endpoints/nope", NULL, NULL, 404, "not_found", "id"),
    CASE("DELETE", "/v1/services/ghost/routes", NULL, NULL, 404, "not_found", "service"),
    CASE("GET", "/v1/services/ghost/policy", NULL, NULL, 404, "not_found", "service"),
    /* Preconditions. */
    CASE_HEADER("PUT", BAT, JSON_TYPE, "{}", 412, "precondition_failed", NULL, "If-Match: \"1\""),
    CASE_HEADER("DELETE", BAT, NULL, NULL, 412, "precondition_failed", NULL, "If-Match: \"1\""),
    CASE_HEADER("PUT", "/v1/services/ghost", JSON_TYPE, "{}", 412, "precondition_failed", NULL,
                "If-Match: *"),
    CASE_HEADER("PUT", BAT_RT, JSON_TYPE, "{\"rules\": []}", 412, "precondition_failed", NULL,
                "If-Match: \"1\""),
    CASE_HEADER("PUT", BAT, JSON_TYPE, "{}", 412, "precondition_failed", NULL, "If-Match: soon"),
    /* Path parameters are decoded segment by segment and checked first (issue 12,
     * defect 4): a decoded NUL or '/' never names another resource. Before, the first
     * two wrote and deleted bat, the third deleted bat's endpoint e1. */
    CASE("PUT", BAT "%00zzz", JSON_TYPE, "{\"lb_policy\": \"ring_hash\"}", 400, "invalid", "name"),
    CASE("DELETE", BAT "%00anything", NULL, NULL, 400, "invalid", "name"),
    CASE("DELETE", BAT "%2Fendpoints%2Fe1", NULL, NULL, 400, "invalid", "name"),
    CASE("DELETE", BAT "%2froutes", NULL, NULL, 400, "invalid", "name"),
    CASE("PUT", BAT_EP "%00x", JSON_TYPE, "{\"address\": \"10.9.0.9\", \"port\": 81}", 400,
         "invalid", "id"),
    CASE("DELETE", BAT "/endpoints/e1%00", NULL, NULL, 400, "invalid", "id"),
    CASE("PUT", BAT "/endpoints/e1%2F/health", JSON_TYPE, "{\"health\": \"draining\"}", 400,
         "invalid", "id"),
    CASE("PUT", "/v1/services/b%41t", JSON_TYPE, "{}", 400, "invalid", "name"),
    CASE("GET", BAT "%20", NULL, NULL, 400, "invalid", "name"),
    CASE("GET", "/v1/services/" NAME_64, NULL, NULL, 400, "invalid", "name"),
    CASE("DELETE", "/v1/tokens/ab%00cd", NULL, NULL, 400, "invalid", "id"),
    CASE("POST", "/v1/certs/00ff%2F/revoke", NULL, NULL, 400, "invalid", "serial"),
    /* What atriumd accepted and the proxies refused (defect 14). */
    BAD(BAT_RT, "{\"rules\": [{\"split\": []}]}", 400, "invalid", "rules[0].split"),
    BAD(BAT_RT,
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"x-v\", \"prefix\": \"\"}]}}]}", 400,
        "invalid", "rules[0].match.headers[0].prefix"),
    /* Query parameters. */
    CASE("PUT", BAT "?verbose=true", JSON_TYPE, "{}", 400, "invalid", "verbose"),
    CASE("PUT", BAT "?dry_run=maybe", JSON_TYPE, "{}", 400, "invalid", "dry_run"),
    CASE("DELETE", BAT "?force=1", NULL, NULL, 400, "invalid", "force"),
};

/* Everything about bat, to check that the battery left it as it was. */
static json_t *snapshot(void)
{
    static const char *const paths[] = {"/v1/services", BAT_BULK, BAT_RT, BAT_PO, "/v1/revision"};
    json_t *all = json_array();
    assert_non_null(all);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        response *reply = GET(200, paths[i]);
        json_array_append(all, reply->json);
        done(reply);
    }
    return all;
}

static void test_bad_input_battery(void **state)
{
    (void)state;
    size_t count = sizeof(bad_cases) / sizeof(bad_cases[0]);
    assert_true(count >= 40);

    /* bat at a revision past 1, with an endpoint without TTL, routes and a policy. */
    done(PUT(201, BAT, "{}"));
    done(PUT(200, BAT, "{\"lb_policy\": \"random\"}"));
    done(PUT(201, "/v1/services/bat/endpoints/e1", "{\"address\": \"10.9.0.1\", \"port\": 80}"));
    done(PUT(201, BAT_RT, "{\"rules\": [{\"timeout_ms\": 250}]}"));
    done(PUT(201, BAT_PO, "{\"default\": \"allow\"}"));
    json_t *before = snapshot();

    size_t failures = 0;
    for (size_t i = 0; i < count; i++) {
        const bad_case *test = &bad_cases[i];
        json_int_t revision = current_revision();
        bool oversized = test->body != NULL && strcmp(test->body, OVERSIZED) == 0;
        const char *body = oversized ? server.oversized : test->body;
        response *reply = request_sized(test->method, test->path, test->content_type, body,
                                        body ? strlen(body) : 0, test->header);
        char why[512];
        const char *mismatch = error_mismatch(reply, test->status, test->code, test->field,
                                              test->message, why, sizeof(why));
        json_int_t after = current_revision();
        if (mismatch == NULL && after != revision) {
            snprintf(why, sizeof(why), "the revision moved from %lld to %lld", (long long)revision,
                     (long long)after);
            mismatch = why;
        }
        if (mismatch != NULL) {
            print_error("bad case %zu: %s %s %s%s%s: %s\n  body sent: %.200s\n  reply: %s\n", i,
                        test->method, test->path, test->header ? "[" : "",
                        test->header ? test->header : "", test->header ? "]" : "", mismatch,
                        body ? body : "(none)", reply->text);
            failures++;
        }
        done(reply);
    }

    json_t *after = snapshot();
    bool unchanged = json_equal(before, after);
    json_decref(before);
    json_decref(after);
    assert_true(unchanged);
    assert_int_equal(failures, 0);
}

/* ---- path parameters and bounded bodies (issue 12) ------------------------------- */

/* {"address", "port", "labels": {k0: "v", ...}} with count labels; the caller frees it. */
static char *endpoint_with_labels(size_t count)
{
    json_t *labels = json_object();
    assert_non_null(labels);
    for (size_t i = 0; i < count; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%zu", i);
        json_object_set_new(labels, key, json_string("v"));
    }
    json_t *body = json_pack("{s:s,s:i,s:o}", "address", "10.1.0.1", "port", 80, "labels", labels);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(text);
    return text;
}

/* {key: [item, item, ...]} with count items (item is JSON text); the caller frees it. */
static char *array_body(const char *key, const char *item, size_t count)
{
    json_t *array = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(array, json_loads(item, JSON_DECODE_ANY, NULL));
    json_t *body = json_pack("{s:o}", key, array);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(text);
    return text;
}

/* PUT body to path must be refused with 400 naming field, and write nothing. */
static void expect_refused(const char *path, const char *body, const char *field)
{
    json_int_t revision = current_revision();
    response *reply = request("PUT", path, JSON_TYPE, body, NULL);
    EXPECT_ERROR(reply, 400, "invalid", field);
    done(reply);
    assert_int_equal(current_revision(), revision);
}

static void test_path_parameters_and_limits(void **state)
{
    (void)state;
    /* A NUL in the path never reaches svc1 (before: PUT modified it, DELETE deleted it). */
    done(PUT(201, "/v1/services/svc1", "{}"));
    expect_refused("/v1/services/svc1%00zzz", "{\"lb_policy\": \"random\"}", "name");
    json_int_t revision = current_revision();
    response *reply = request("DELETE", "/v1/services/svc1%00anything", NULL, NULL, NULL);
    EXPECT_ERROR(reply, 400, "invalid", "name");
    done(reply);
    assert_int_equal(current_revision(), revision);
    reply = GET(200, "/v1/services/svc1");
    assert_string_equal(string_of(reply->json, "lb_policy"), "round_robin");
    done(reply);

    /* Labels: 64 per endpoint, refused past that before any is copied (before: 20,000
     * labels took 12 s per PUT, quadratic, and blocked /healthz). */
    char *body = endpoint_with_labels(64);
    done(PUT(201, "/v1/services/svc1/endpoints/e1", body));
    free(body);
    body = endpoint_with_labels(65);
    expect_refused("/v1/services/svc1/endpoints/e2", body, "labels");
    free(body);
    body = endpoint_with_labels(20000);
    expect_refused("/v1/services/svc1/endpoints/e2", body, "labels");
    free(body);
    done(GET(404, "/v1/services/svc1/endpoints/e2"));

    /* Arrays of every body are bounded, naming the field. */
    body = array_body("dependencies", "\"a\"", 1025);
    expect_refused("/v1/services/svc1", body, "dependencies");
    free(body);
    body = array_body("rules", "{}", 129);
    expect_refused("/v1/services/svc1/routes", body, "rules");
    free(body);
    body = array_body("allow", "{\"from\": \"a\"}", 129);
    expect_refused("/v1/services/svc1/policy", body, "allow");
    free(body);
    expect_refused(
        "/v1/services/svc1/routes",
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}, "
        "{\"name\": \"a\", \"present\": true}, {\"name\": \"a\", \"present\": true}]}}]}",
        "rules[0].match.headers");
    /* An empty split and an empty header prefix (issue 12, defect 14). */
    expect_refused("/v1/services/svc1/routes", "{\"rules\": [{\"split\": []}]}", "rules[0].split");
    expect_refused(
        "/v1/services/svc1/routes",
        "{\"rules\": [{\"match\": {\"headers\": [{\"name\": \"x-v\", \"prefix\": \"\"}]}}]}",
        "rules[0].match.headers[0].prefix");
    /* Absent split still means the whole service. */
    done(PUT(201, "/v1/services/svc1/routes", "{\"rules\": [{\"timeout_ms\": 100}]}"));
    done(DELETE(200, "/v1/services/svc1"));
}

/* ---- TTL ------------------------------------------------------------------------- */

static void test_ttl(void **state)
{
    (void)state;
    done(PUT(201, "/v1/services/ttl", "{}"));
    response *reply = PUT(201, "/v1/services/ttl/endpoints/beat",
                          "{\"address\": \"10.4.0.1\", \"port\": 80, \"ttl_s\": 1}");
    assert_string_equal(string_of(reply->json, "health"), "healthy");
    assert_int_equal(integer_of(reply->json, "ttl_s"), 1);
    json_int_t expires = integer_of(reply->json, "expires_at_ms");
    assert_true(expires > 0);
    done(reply);

    /* No heartbeat: unhealthy within 4 s (the reaper runs every second). */
    bool unhealthy = false;
    for (int waited = 0; waited <= 4000 && !unhealthy; waited += 200) {
        reply = GET(200, "/v1/services/ttl/endpoints/beat");
        unhealthy = strcmp(string_of(reply->json, "health"), "unhealthy") == 0;
        done(reply);
        if (!unhealthy)
            atriumd_fixture_sleep_ms(200);
    }
    assert_true(unhealthy);

    /* A heartbeat makes it healthy again, with a later expiry. */
    reply = POST(200, "/v1/services/ttl/endpoints/beat/heartbeat");
    assert_string_equal(string_of(reply->json, "health"), "healthy");
    assert_true(integer_of(reply->json, "expires_at_ms") > expires);
    assert_etag(reply, integer_of(reply->json, "revision"));
    done(reply);
    reply = GET(200, "/v1/services/ttl/endpoints/beat");
    assert_string_equal(string_of(reply->json, "health"), "healthy");
    done(reply);

    /* Heartbeats on an endpoint without a TTL: 409. */
    done(PUT(201, "/v1/services/ttl/endpoints/still", "{\"address\": \"10.4.0.2\", \"port\": 80}"));
    reply = POST(409, "/v1/services/ttl/endpoints/still/heartbeat");
    EXPECT_ERROR(reply, 409, "conflict", "ttl_s");
    done(reply);

    /* Stop the reaper from changing the store behind later checks. */
    done(DELETE(200, "/v1/services/ttl"));
}

/* Join tokens: the secret once, only its hash kept; listing without secrets;
 * revocation; bad input named. Certificates: listing and revoking. */
static void test_tokens_and_certificates(void **state)
{
    (void)state;
    response *reply = EXPECT(201, "POST", "/v1/tokens", JSON_TYPE,
                             "{\"service\": \"reviews\", \"ttl_s\": 600, \"uses\": 2}", NULL);
    const char *secret = json_string_value(json_object_get(reply->json, "token"));
    assert_non_null(secret);
    assert_int_equal(strlen(secret), 64);
    char id[64];
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(reply->json, "id")));
    assert_string_equal(json_string_value(json_object_get(reply->json, "identity")),
                        "spiffe://atrium.local/ns/default/sa/reviews");
    assert_int_equal(json_integer_value(json_object_get(reply->json, "uses_allowed")), 2);
    assert_int_equal(json_integer_value(json_object_get(reply->json, "expires_at_ms")) -
                         json_integer_value(json_object_get(reply->json, "created_at_ms")),
                     600000);
    char secret_copy[80];
    snprintf(secret_copy, sizeof(secret_copy), "%s", secret);
    done(reply);

    reply = GET(200, "/v1/tokens");
    assert_int_equal(json_array_size(json_object_get(reply->json, "tokens")), 1);
    assert_null(strstr(reply->text, secret_copy)); /* never the secret again */
    assert_null(
        json_object_get(json_array_get(json_object_get(reply->json, "tokens"), 0), "token"));
    done(reply);

    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{}", "service"},
        {"{\"service\": \"Reviews\"}", "service"},
        {"{\"service\": \"a\", \"namespace\": \"x_y\"}", "namespace"},
        {"{\"service\": \"a\", \"ttl_s\": 59}", "ttl_s"},
        {"{\"service\": \"a\", \"ttl_s\": 2592001}", "ttl_s"},
        {"{\"service\": \"a\", \"uses\": 0}", "uses"},
        {"{\"service\": \"a\", \"secret\": \"mine\"}", "secret"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reply = EXPECT(400, "POST", "/v1/tokens", JSON_TYPE, bad[i].body, NULL);
        EXPECT_ERROR(reply, 400, "invalid", bad[i].field);
        done(reply);
    }
    reply = GET(200, "/v1/tokens");
    assert_int_equal(json_array_size(json_object_get(reply->json, "tokens")), 1);
    done(reply);

    char path[128];
    snprintf(path, sizeof(path), "/v1/tokens/%s", id);
    done(DELETE(200, path));
    reply = DELETE(404, path);
    EXPECT_ERROR(reply, 404, "not_found", "id");
    done(reply);

    reply = GET(200, "/v1/certs?identity=spiffe://atrium.local/ns/default/sa/reviews");
    assert_int_equal(json_array_size(json_object_get(reply->json, "certificates")), 0);
    done(reply);
    reply = POST(404, "/v1/certs/00ff/revoke");
    EXPECT_ERROR(reply, 404, "not_found", "serial");
    done(reply);
    reply = GET(400, "/v1/tokens?identity=x");
    EXPECT_ERROR(reply, 400, "invalid", "identity");
    done(reply);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_metrics_and_auth),
        cmocka_unit_test(test_tokens_and_certificates),
        cmocka_unit_test(test_services),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_routes_and_policy),
        cmocka_unit_test(test_cascade),
        cmocka_unit_test(test_if_match),
        cmocka_unit_test(test_body_limits_and_media_types),
        cmocka_unit_test(test_dry_run),
        cmocka_unit_test(test_dry_run_never_writes),
        cmocka_unit_test(test_stale_if_match_never_writes),
        cmocka_unit_test(test_bad_input_battery),
        cmocka_unit_test(test_path_parameters_and_limits),
        cmocka_unit_test(test_ttl),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
