/*
 * test_store.c — unit tests of store/store.h against a real SQLite database
 * in a fresh temporary directory per test: every operation, its error cases,
 * revisions and the change log, TTL reaping, proxy status, migrations.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "model.h"
#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- fixture ---------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
    char path[128];
    store *db;
} fixture;

/* Calls `call` (which must use the local `err`) and asserts its status,
 * printing the store's message when it differs. */
#define assert_store(expected, call)                                                               \
    do {                                                                                           \
        memset(&err, 0, sizeof err);                                                               \
        store_status st_ = (call);                                                                 \
        if (st_ != (expected)) {                                                                   \
            print_message("%s:%d: %s returned %d, expected %d; message \"%s\" field \"%s\"\n",     \
                          __FILE__, __LINE__, #call, (int)st_, (int)(expected), err.message,       \
                          err.field);                                                              \
        }                                                                                          \
        assert_int_equal(st_, (expected));                                                         \
    } while (0)

#define assert_store_ok(call) assert_store(STORE_OK, call)

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);
    assert_non_null(copy);
    return copy;
}

static void set_str(char **slot, const char *value)
{
    free(*slot);
    *slot = value != NULL ? xstrdup(value) : NULL;
}

static void open_store(fixture *f, int target_schema_version, bool synchronous_full)
{
    store_options options = {0};
    options.path = f->path;
    options.synchronous_full = synchronous_full;
    options.target_schema_version = target_schema_version;
    store_error err;
    memset(&err, 0, sizeof err);
    store_status status = store_open(&options, &f->db, &err);
    if (status != STORE_OK) {
        fail_msg("store_open(%s) failed: %d %s", f->path, (int)status, err.message);
    }
    assert_non_null(f->db);
}

static void reopen_store(fixture *f)
{
    store_close(f->db);
    f->db = NULL;
    open_store(f, 0, false);
}

static int setup_dir(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/atrium-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/atrium.db", f->dir);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    if (setup_dir(state) != 0) {
        return -1;
    }
    fixture *f = *state;
    store_options options = {0};
    options.path = f->path;
    store_error err;
    memset(&err, 0, sizeof err);
    if (store_open(&options, &f->db, &err) != STORE_OK) {
        print_error("store_open(%s): %s\n", f->path, err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f == NULL) {
        return 0;
    }
    store_close(f->db);
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char file[160];
        snprintf(file, sizeof file, "%s%s", f->path, suffixes[i]);
        unlink(file);
    }
    if (rmdir(f->dir) != 0) {
        print_error("could not remove %s (left files behind?)\n", f->dir);
    }
    free(f);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static int64_t current_revision(store *db)
{
    store_error err;
    int64_t revision = -1;
    assert_store_ok(store_revision(db, &revision, &err));
    return revision;
}

static void make_service(model_service *service, const char *name)
{
    model_service_init(service);
    set_str(&service->name, name);
}

/* Puts a default service; returns the new revision. */
static int64_t put_service(store *db, const char *name)
{
    store_error err;
    model_service service;
    make_service(&service, name);
    int64_t revision = 0;
    assert_store_ok(store_put_service(db, &service, 0, NULL, &revision, &err));
    model_service_clear(&service);
    return revision;
}

static void make_endpoint(model_endpoint *endpoint, const char *service, const char *id,
                          const char *address, uint16_t port)
{
    model_endpoint_init(endpoint);
    set_str(&endpoint->service, service);
    set_str(&endpoint->id, id);
    set_str(&endpoint->address, address);
    endpoint->port = port;
}

static int64_t put_endpoint(store *db, const char *service, const char *id, uint32_t ttl_s,
                            int64_t now_ms)
{
    store_error err;
    model_endpoint endpoint;
    make_endpoint(&endpoint, service, id, "10.0.0.1", 8080);
    endpoint.ttl_s = ttl_s;
    int64_t revision = 0;
    assert_store_ok(store_put_endpoint(db, &endpoint, 0, now_ms, NULL, &revision, &err));
    model_endpoint_clear(&endpoint);
    return revision;
}

static void parse_routes(const char *text, const char *service, model_routes *out)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    assert_non_null(doc);
    model_error err;
    memset(&err, 0, sizeof err);
    memset(out, 0, sizeof *out);
    bool ok = model_routes_from_json(doc, out, &err);
    json_decref(doc);
    if (!ok) {
        fail_msg("routes did not parse: %s: %s", err.field, err.message);
    }
    set_str(&out->service, service);
}

static void parse_policy(const char *text, const char *service, model_policy *out)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    assert_non_null(doc);
    model_error err;
    memset(&err, 0, sizeof err);
    memset(out, 0, sizeof *out);
    bool ok = model_policy_from_json(doc, out, &err);
    json_decref(doc);
    if (!ok) {
        fail_msg("policy did not parse: %s: %s", err.field, err.message);
    }
    set_str(&out->service, service);
}

static const char *const ROUTES_JSON =
    "{\"rules\":[{\"match\":{\"path_prefix\":\"/api\",\"headers\":["
    "{\"name\":\"x-canary\",\"exact\":\"1\"},{\"name\":\"x-debug\",\"present\":true}]},"
    "\"split\":[{\"subset\":{\"version\":\"v1\"},\"weight\":90},"
    "{\"subset\":{\"version\":\"v2\"},\"weight\":10}],"
    "\"timeout_ms\":2000,"
    "\"retries\":{\"attempts\":3,\"on\":[\"5xx\",\"connect-failure\"],"
    "\"per_try_timeout_ms\":500,\"backoff_base_ms\":25,\"backoff_max_ms\":250}}]}";

static const char *const POLICY_JSON =
    "{\"default\":\"deny\",\"allow\":[{\"from\":\"web\",\"methods\":[\"GET\"],"
    "\"path_prefix\":\"/api\"}]}";

static int64_t put_routes(store *db, const char *service)
{
    store_error err;
    model_routes routes;
    parse_routes(ROUTES_JSON, service, &routes);
    int64_t revision = 0;
    assert_store_ok(store_put_routes(db, &routes, 0, NULL, &revision, &err));
    model_routes_clear(&routes);
    return revision;
}

static int64_t put_policy(store *db, const char *service)
{
    store_error err;
    model_policy policy;
    parse_policy(POLICY_JSON, service, &policy);
    int64_t revision = 0;
    assert_store_ok(store_put_policy(db, &policy, 0, NULL, &revision, &err));
    model_policy_clear(&policy);
    return revision;
}

/* Index of the change (kind, key, op) in list, or -1. */
static long find_change(const model_change_list *list, model_entity_kind kind, const char *key,
                        model_change_op op)
{
    for (size_t i = 0; i < list->count; i++) {
        const model_change *c = &list->items[i];
        if (c->kind == kind && c->op == op && c->key != NULL && strcmp(c->key, key) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static void dump_changes(const model_change_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        const model_change *c = &list->items[i];
        print_message("  change %lld %s %s %s\n", (long long)c->revision,
                      model_entity_kind_name(c->kind), c->key ? c->key : "(null)",
                      model_change_op_name(c->op));
    }
}

static void assert_has_change(const model_change_list *list, model_entity_kind kind,
                              const char *key, model_change_op op, int64_t revision)
{
    long i = find_change(list, kind, key, op);
    if (i < 0) {
        dump_changes(list);
        fail_msg("no change %s %s %s in the log", model_entity_kind_name(kind), key,
                 model_change_op_name(op));
    }
    assert_int_equal(list->items[i].revision, revision);
}

static void assert_endpoint_missing(store *db, const char *service, const char *id)
{
    store_error err;
    model_endpoint out;
    memset(&out, 0, sizeof out);
    assert_store(STORE_NOT_FOUND, store_get_endpoint(db, service, id, &out, &err));
}

/* ---- basics ----------------------------------------------------------------- */

static void test_open_empty(void **state)
{
    fixture *f = *state;
    store_error err;
    assert_int_equal(store_schema_version(f->db), STORE_SCHEMA_VERSION);
    assert_int_equal(current_revision(f->db), 0);

    bool ok = false;
    assert_store_ok(store_check_integrity(f->db, &ok, &err));
    assert_true(ok);

    model_service_list services = {0};
    assert_store_ok(store_list_services(f->db, &services, &err));
    assert_int_equal(services.count, 0);
    model_service_list_free(&services);

    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, 0, 0, &changes, &err));
    assert_int_equal(changes.count, 0);
    model_change_list_free(&changes);

    store_close(NULL); /* accepted */
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(store_status_name(STORE_NOT_FOUND), "not_found");
    const store_status all[] = {
        STORE_OK,   STORE_NOT_FOUND, STORE_CONFLICT,           STORE_INVALID,
        STORE_BUSY, STORE_IO,        STORE_PRECONDITION_FAILED};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = store_status_name(all[i]);
        assert_non_null(name);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(name, store_status_name(all[j]));
        }
    }
}

static void test_open_bad_path(void **state)
{
    (void)state;
    store_options options = {0};
    options.path = "/nonexistent-atrium-dir/sub/atrium.db";
    store *db = NULL;
    store_error err;
    memset(&err, 0, sizeof err);
    store_status status = store_open(&options, &db, &err);
    assert_int_equal(status, STORE_IO);
    assert_true(err.message[0] != '\0');
    store_close(db);
}

/* ---- services --------------------------------------------------------------- */

static void test_service_created_then_replaced(void **state)
{
    fixture *f = *state;
    store_error err;
    model_service service;
    make_service(&service, "web");

    bool created = false;
    int64_t revision = 0;
    assert_store_ok(store_put_service(f->db, &service, 0, &created, &revision, &err));
    assert_true(created);
    assert_int_equal(revision, 1);
    assert_int_equal(current_revision(f->db), 1);

    service.lb_policy = MODEL_LB_LEAST_REQUEST;
    service.connect_timeout_ms = 250;
    created = true;
    assert_store_ok(store_put_service(f->db, &service, 0, &created, &revision, &err));
    assert_false(created);
    assert_int_equal(revision, 2);
    assert_int_equal(current_revision(f->db), 2);
    model_service_clear(&service);

    model_service got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_service(f->db, "web", &got, &err));
    assert_string_equal(got.name, "web");
    assert_non_null(got.namespace_name);
    assert_string_equal(got.namespace_name, "default");
    assert_int_equal(got.protocol, MODEL_PROTOCOL_HTTP);
    assert_int_equal(got.lb_policy, MODEL_LB_LEAST_REQUEST);
    assert_int_equal(got.connect_timeout_ms, 250);
    assert_false(got.has_outlier_detection);
    assert_false(got.has_circuit_breaker);
    assert_false(got.has_dependencies);
    assert_int_equal(got.dependency_count, 0);
    assert_int_equal(got.revision, 2);
    model_service_clear(&got);

    /* Another service: +1 again; list ordered by name. */
    assert_int_equal(put_service(f->db, "api"), 3);
    model_service_list list = {0};
    assert_store_ok(store_list_services(f->db, &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].name, "api");
    assert_int_equal(list.items[0].revision, 3);
    assert_string_equal(list.items[1].name, "web");
    assert_int_equal(list.items[1].revision, 2);
    model_service_list_free(&list);
}

static void test_service_all_fields_round_trip(void **state)
{
    fixture *f = *state;
    store_error err;
    model_service service;
    make_service(&service, "checkout");
    set_str(&service.namespace_name, "shop");
    service.protocol = MODEL_PROTOCOL_GRPC;
    service.lb_policy = MODEL_LB_RING_HASH;
    service.connect_timeout_ms = 60000;
    service.has_outlier_detection = true;
    service.outlier_detection = (model_outlier_detection){.consecutive_5xx = 7,
                                                          .interval_ms = 9000,
                                                          .base_ejection_time_ms = 31000,
                                                          .max_ejection_percent = 55};
    service.has_circuit_breaker = true;
    service.circuit_breaker = (model_circuit_breaker){
        .max_connections = 100, .max_pending_requests = 0, .max_requests = 300, .max_retries = 4};
    service.has_dependencies = true;
    service.dependencies = calloc(2, sizeof *service.dependencies);
    assert_non_null(service.dependencies);
    service.dependencies[0] = xstrdup("payments");
    service.dependencies[1] = xstrdup("cart");
    service.dependency_count = 2;

    int64_t revision = 0;
    assert_store_ok(store_put_service(f->db, &service, 0, NULL, &revision, &err));
    model_service_clear(&service);

    model_service got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_service(f->db, "checkout", &got, &err));
    assert_string_equal(got.name, "checkout");
    assert_string_equal(got.namespace_name, "shop");
    assert_int_equal(got.protocol, MODEL_PROTOCOL_GRPC);
    assert_int_equal(got.lb_policy, MODEL_LB_RING_HASH);
    assert_int_equal(got.connect_timeout_ms, 60000);
    assert_true(got.has_outlier_detection);
    assert_int_equal(got.outlier_detection.consecutive_5xx, 7);
    assert_int_equal(got.outlier_detection.interval_ms, 9000);
    assert_int_equal(got.outlier_detection.base_ejection_time_ms, 31000);
    assert_int_equal(got.outlier_detection.max_ejection_percent, 55);
    assert_true(got.has_circuit_breaker);
    assert_int_equal(got.circuit_breaker.max_connections, 100);
    assert_int_equal(got.circuit_breaker.max_pending_requests, 0);
    assert_int_equal(got.circuit_breaker.max_requests, 300);
    assert_int_equal(got.circuit_breaker.max_retries, 4);
    assert_true(got.has_dependencies);
    assert_int_equal(got.dependency_count, 2);
    assert_string_equal(got.dependencies[0], "payments");
    assert_string_equal(got.dependencies[1], "cart");
    assert_int_equal(got.revision, revision);
    model_service_clear(&got);

    /* has_dependencies with an empty list ("may call nothing") is not "may call everything". */
    make_service(&service, "isolated");
    service.has_dependencies = true;
    assert_store_ok(store_put_service(f->db, &service, 0, NULL, &revision, &err));
    model_service_clear(&service);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_service(f->db, "isolated", &got, &err));
    assert_true(got.has_dependencies);
    assert_int_equal(got.dependency_count, 0);
    model_service_clear(&got);
}

static void test_service_errors(void **state)
{
    fixture *f = *state;
    store_error err;
    model_service got;
    memset(&got, 0, sizeof got);

    memset(&err, 0, sizeof err);
    store_status status = store_get_service(f->db, "nope", &got, &err);
    assert_int_equal(status, STORE_NOT_FOUND);
    assert_int_equal(err.status, STORE_NOT_FOUND);
    assert_true(err.message[0] != '\0');

    int64_t revision = 0;
    assert_store(STORE_NOT_FOUND, store_delete_service(f->db, "nope", 0, &revision, &err));

    put_service(f->db, "web");
    int64_t before = current_revision(f->db);

    model_service service;
    make_service(&service, "web");
    service.connect_timeout_ms = 0;
    memset(&err, 0, sizeof err);
    status = store_put_service(f->db, &service, 0, NULL, &revision, &err);
    assert_int_equal(status, STORE_INVALID);
    assert_int_equal(err.status, STORE_INVALID);
    assert_string_equal(err.field, "connect_timeout_ms");
    assert_true(err.message[0] != '\0');
    model_service_clear(&service);

    make_service(&service, "Bad Name");
    assert_store(STORE_INVALID, store_put_service(f->db, &service, 0, NULL, &revision, &err));
    assert_string_equal(err.field, "name");
    model_service_clear(&service);

    assert_int_equal(current_revision(f->db), before);
    /* The stored service is untouched. */
    assert_store_ok(store_get_service(f->db, "web", &got, &err));
    assert_int_equal(got.connect_timeout_ms, 1000);
    model_service_clear(&got);
}

/* ---- endpoints -------------------------------------------------------------- */

static void test_endpoint_put_get(void **state)
{
    fixture *f = *state;
    store_error err;
    model_endpoint endpoint;
    make_endpoint(&endpoint, "web", "web-1", "10.1.2.3", 8080);
    int64_t revision = 0;
    bool created = false;

    /* The service must exist. */
    assert_store(STORE_NOT_FOUND,
                 store_put_endpoint(f->db, &endpoint, 0, 1000, &created, &revision, &err));
    assert_int_equal(current_revision(f->db), 0);

    put_service(f->db, "web");
    endpoint.weight = 7;
    endpoint.proxy_port = 15006;
    endpoint.health = MODEL_HEALTH_DRAINING;
    set_str(&endpoint.zone, "us-east-1a");
    assert_true(model_labels_set(&endpoint.labels, "version", "v1"));
    assert_true(model_labels_set(&endpoint.labels, "app", "web"));
    assert_true(model_labels_set(&endpoint.labels, "track", "stable"));
    assert_store_ok(store_put_endpoint(f->db, &endpoint, 0, 1000, &created, &revision, &err));
    assert_true(created);
    assert_int_equal(revision, 2);

    model_endpoint got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "web-1", &got, &err));
    assert_string_equal(got.service, "web");
    assert_string_equal(got.id, "web-1");
    assert_string_equal(got.address, "10.1.2.3");
    assert_int_equal(got.port, 8080);
    assert_int_equal(got.weight, 7);
    assert_int_equal(got.proxy_port, 15006);
    assert_int_equal(got.health, MODEL_HEALTH_DRAINING);
    assert_string_equal(got.zone, "us-east-1a");
    assert_int_equal(got.ttl_s, 0);
    assert_int_equal(got.revision, 2);
    assert_int_equal(got.labels.count, 3);
    assert_string_equal(got.labels.items[0].key, "app");
    assert_string_equal(got.labels.items[0].value, "web");
    assert_string_equal(got.labels.items[1].key, "track");
    assert_string_equal(got.labels.items[1].value, "stable");
    assert_string_equal(got.labels.items[2].key, "version");
    assert_string_equal(got.labels.items[2].value, "v1");
    model_endpoint_clear(&got);

    /* Replace: not created, +1, new values (labels replaced, not merged). */
    set_str(&endpoint.address, "::1");
    endpoint.port = 9090;
    model_labels_clear(&endpoint.labels);
    assert_true(model_labels_set(&endpoint.labels, "version", "v2"));
    created = true;
    assert_store_ok(store_put_endpoint(f->db, &endpoint, 0, 2000, &created, &revision, &err));
    assert_false(created);
    assert_int_equal(revision, 3);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "web-1", &got, &err));
    assert_string_equal(got.address, "::1");
    assert_int_equal(got.port, 9090);
    assert_int_equal(got.labels.count, 1);
    assert_string_equal(model_labels_get(&got.labels, "version"), "v2");
    assert_int_equal(got.revision, 3);
    model_endpoint_clear(&got);
    model_endpoint_clear(&endpoint);

    /* No zone given: read back as "". */
    make_endpoint(&endpoint, "web", "web-2", "10.1.2.4", 8080);
    assert_store_ok(store_put_endpoint(f->db, &endpoint, 0, 2000, NULL, &revision, &err));
    model_endpoint_clear(&endpoint);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "web-2", &got, &err));
    assert_non_null(got.zone);
    assert_string_equal(got.zone, "");
    assert_int_equal(got.weight, 1);
    assert_int_equal(got.health, MODEL_HEALTH_HEALTHY);
    assert_int_equal(got.labels.count, 0);
    model_endpoint_clear(&got);

    assert_endpoint_missing(f->db, "web", "web-9");
    assert_endpoint_missing(f->db, "nope", "web-1");
}

static void test_endpoint_invalid(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    int64_t revision = 0;

    model_endpoint endpoint;
    make_endpoint(&endpoint, "web", "web-1", "10.0.0.1", 8080);
    endpoint.weight = 0;
    assert_store(STORE_INVALID,
                 store_put_endpoint(f->db, &endpoint, 0, 1000, NULL, &revision, &err));
    assert_string_equal(err.field, "weight");
    endpoint.weight = 1;
    set_str(&endpoint.address, "not-an-ip");
    assert_store(STORE_INVALID,
                 store_put_endpoint(f->db, &endpoint, 0, 1000, NULL, &revision, &err));
    assert_string_equal(err.field, "address");
    model_endpoint_clear(&endpoint);

    assert_int_equal(current_revision(f->db), before);
    assert_endpoint_missing(f->db, "web", "web-1");
}

static void test_endpoint_list_delete(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_service(f->db, "api");
    put_endpoint(f->db, "web", "e2", 0, 1000);
    put_endpoint(f->db, "web", "e1", 0, 1000);
    put_endpoint(f->db, "api", "e9", 0, 1000);
    put_endpoint(f->db, "api", "e1", 0, 1000);

    model_endpoint_list list = {0};
    assert_store_ok(store_list_endpoints(f->db, NULL, &list, &err));
    assert_int_equal(list.count, 4);
    assert_string_equal(list.items[0].service, "api");
    assert_string_equal(list.items[0].id, "e1");
    assert_string_equal(list.items[1].service, "api");
    assert_string_equal(list.items[1].id, "e9");
    assert_string_equal(list.items[2].service, "web");
    assert_string_equal(list.items[2].id, "e1");
    assert_string_equal(list.items[3].service, "web");
    assert_string_equal(list.items[3].id, "e2");
    model_endpoint_list_free(&list);

    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, "e1");
    assert_string_equal(list.items[1].id, "e2");
    assert_string_equal(list.items[0].service, "web");
    model_endpoint_list_free(&list);

    int64_t before = current_revision(f->db);
    int64_t revision = 0;
    assert_store_ok(store_delete_endpoint(f->db, "web", "e1", 0, &revision, &err));
    assert_int_equal(revision, before + 1);
    assert_endpoint_missing(f->db, "web", "e1");
    /* Same id in another service is untouched. */
    model_endpoint got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "api", "e1", &got, &err));
    model_endpoint_clear(&got);

    assert_store(STORE_NOT_FOUND, store_delete_endpoint(f->db, "web", "e1", 0, &revision, &err));
    assert_store(STORE_NOT_FOUND, store_delete_endpoint(f->db, "nope", "e1", 0, &revision, &err));
    assert_int_equal(current_revision(f->db), before + 1);

    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, "e2");
    model_endpoint_list_free(&list);
}

static void test_replace_endpoints(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_endpoint(f->db, "web", "e1", 0, 1000);
    put_endpoint(f->db, "web", "e2", 0, 1000);
    int64_t before = current_revision(f->db);

    model_endpoint set[2];
    make_endpoint(&set[0], NULL, "e3", "10.0.0.3", 8080);
    make_endpoint(&set[1], "web", "e4", "10.0.0.4", 8081);
    assert_true(model_labels_set(&set[1].labels, "version", "v2"));
    int64_t revision = 0;
    assert_store_ok(store_replace_endpoints(f->db, "web", set, 2, 5000, &revision, &err));
    assert_int_equal(revision, before + 1);
    assert_int_equal(current_revision(f->db), before + 1);

    model_endpoint_list list = {0};
    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, "e3");
    assert_string_equal(list.items[0].service, "web");
    assert_string_equal(list.items[1].id, "e4");
    assert_int_equal(list.items[1].port, 8081);
    assert_string_equal(model_labels_get(&list.items[1].labels, "version"), "v2");
    model_endpoint_list_free(&list);
    assert_endpoint_missing(f->db, "web", "e1");
    assert_endpoint_missing(f->db, "web", "e2");

    /* One revision in the log, with the removals and the additions. */
    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, before, 0, &changes, &err));
    for (size_t i = 0; i < changes.count; i++) {
        assert_int_equal(changes.items[i].revision, before + 1);
    }
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e1", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e2", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e3", MODEL_CHANGE_PUT, before + 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e4", MODEL_CHANGE_PUT, before + 1);
    model_change_list_free(&changes);

    /* Duplicate ids: refused, nothing changed. */
    before = current_revision(f->db);
    set_str(&set[0].id, "e5");
    set_str(&set[1].id, "e5");
    assert_store(STORE_INVALID,
                 store_replace_endpoints(f->db, "web", set, 2, 6000, &revision, &err));
    assert_true(err.field[0] != '\0');
    assert_int_equal(current_revision(f->db), before);
    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, "e3");
    assert_string_equal(list.items[1].id, "e4");
    model_endpoint_list_free(&list);

    /* An endpoint of another service: refused, nothing changed. */
    set_str(&set[0].id, "e6");
    set_str(&set[0].service, "api");
    assert_store(STORE_INVALID,
                 store_replace_endpoints(f->db, "web", set, 2, 6000, &revision, &err));
    assert_int_equal(current_revision(f->db), before);

    /* One invalid endpoint: refused, nothing changed. */
    set_str(&set[0].service, "web");
    set[1].weight = 0;
    assert_store(STORE_INVALID,
                 store_replace_endpoints(f->db, "web", set, 2, 6000, &revision, &err));
    assert_int_equal(current_revision(f->db), before);
    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].id, "e3");
    model_endpoint_list_free(&list);
    set[1].weight = 1;

    /* Missing service. */
    set_str(&set[0].service, NULL);
    assert_store(STORE_NOT_FOUND,
                 store_replace_endpoints(f->db, "nope", set, 1, 6000, &revision, &err));
    assert_int_equal(current_revision(f->db), before);

    /* The empty set removes every endpoint. */
    assert_store_ok(store_replace_endpoints(f->db, "web", NULL, 0, 7000, &revision, &err));
    assert_int_equal(revision, before + 1);
    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 0);
    model_endpoint_list_free(&list);

    model_endpoint_clear(&set[0]);
    model_endpoint_clear(&set[1]);
}

static void test_heartbeat_and_ttl(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_endpoint(f->db, "web", "static", 0, 1000);
    int64_t revision = 0;

    /* No TTL: heartbeat is a conflict; unknown endpoint: not found. */
    assert_store(STORE_CONFLICT,
                 store_heartbeat_endpoint(f->db, "web", "static", 2000, &revision, &err));
    assert_store(STORE_NOT_FOUND,
                 store_heartbeat_endpoint(f->db, "web", "nope", 2000, &revision, &err));

    put_endpoint(f->db, "web", "leased", 10, 1000);
    model_endpoint got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "leased", &got, &err));
    assert_int_equal(got.ttl_s, 10);
    assert_int_equal(got.expires_at_ms, 11000);
    assert_int_equal(got.health, MODEL_HEALTH_HEALTHY);
    model_endpoint_clear(&got);

    /* Not yet expired. */
    int64_t before = current_revision(f->db);
    size_t reaped = 99;
    revision = before;
    assert_store_ok(store_reap_expired_endpoints(f->db, 5000, &reaped, &revision, &err));
    assert_int_equal(reaped, 0);
    assert_int_equal(current_revision(f->db), before);

    /* Expired: unhealthy, one revision; the endpoint without TTL is untouched. */
    assert_store_ok(store_reap_expired_endpoints(f->db, 12000, &reaped, &revision, &err));
    assert_int_equal(reaped, 1);
    assert_int_equal(revision, before + 1);
    assert_int_equal(current_revision(f->db), before + 1);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "leased", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_UNHEALTHY);
    model_endpoint_clear(&got);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "static", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_HEALTHY);
    model_endpoint_clear(&got);

    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, before, 0, &changes, &err));
    assert_int_equal(changes.count, 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/leased", MODEL_CHANGE_PUT, before + 1);
    model_change_list_free(&changes);

    /* Reaping again changes nothing. */
    reaped = 99;
    revision = before + 1;
    assert_store_ok(store_reap_expired_endpoints(f->db, 12000, &reaped, &revision, &err));
    assert_int_equal(reaped, 0);
    assert_int_equal(revision, before + 1);
    assert_int_equal(current_revision(f->db), before + 1);

    /* A heartbeat brings it back. */
    assert_store_ok(store_heartbeat_endpoint(f->db, "web", "leased", 13000, &revision, &err));
    assert_int_equal(revision, before + 2);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "leased", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_HEALTHY);
    assert_int_equal(got.expires_at_ms, 23000);
    model_endpoint_clear(&got);

    /* Which holds it alive past its old deadline. */
    assert_store_ok(store_reap_expired_endpoints(f->db, 20000, &reaped, &revision, &err));
    assert_int_equal(reaped, 0);
    assert_int_equal(current_revision(f->db), before + 2);
}

static void test_reap_skips_draining(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    model_endpoint endpoint;
    make_endpoint(&endpoint, "web", "drain", "10.0.0.9", 80);
    endpoint.ttl_s = 5;
    endpoint.health = MODEL_HEALTH_DRAINING;
    int64_t revision = 0;
    assert_store_ok(store_put_endpoint(f->db, &endpoint, 0, 1000, NULL, &revision, &err));
    model_endpoint_clear(&endpoint);
    put_endpoint(f->db, "web", "a", 5, 1000);
    put_endpoint(f->db, "web", "b", 5, 1000);
    int64_t before = current_revision(f->db);

    size_t reaped = 0;
    assert_store_ok(store_reap_expired_endpoints(f->db, 60000, &reaped, &revision, &err));
    assert_int_equal(reaped, 2);
    /* Both in one transaction. */
    assert_int_equal(current_revision(f->db), before + 1);
    model_endpoint got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "drain", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_DRAINING);
    model_endpoint_clear(&got);
}

static void test_set_endpoint_health(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = put_endpoint(f->db, "web", "e1", 0, 1000);
    int64_t revision = 0;

    assert_store_ok(
        store_set_endpoint_health(f->db, "web", "e1", MODEL_HEALTH_DRAINING, 0, &revision, &err));
    assert_int_equal(revision, before + 1);
    model_endpoint got;
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_DRAINING);
    assert_int_equal(got.revision, before + 1);
    model_endpoint_clear(&got);

    assert_store_ok(
        store_set_endpoint_health(f->db, "web", "e1", MODEL_HEALTH_UNHEALTHY, 0, &revision, &err));
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &got, &err));
    assert_int_equal(got.health, MODEL_HEALTH_UNHEALTHY);
    model_endpoint_clear(&got);

    assert_store(
        STORE_NOT_FOUND,
        store_set_endpoint_health(f->db, "web", "nope", MODEL_HEALTH_HEALTHY, 0, &revision, &err));
    assert_int_equal(current_revision(f->db), before + 2);
}

/* ---- routes and policies ---------------------------------------------------- */

static void test_routes_put_get_delete(void **state)
{
    fixture *f = *state;
    store_error err;
    model_routes routes;
    parse_routes(ROUTES_JSON, "web", &routes);
    int64_t revision = 0;

    assert_store(STORE_NOT_FOUND, store_put_routes(f->db, &routes, 0, NULL, &revision, &err));
    model_routes got;
    memset(&got, 0, sizeof got);
    assert_store(STORE_NOT_FOUND, store_get_routes(f->db, "web", &got, &err));
    assert_store(STORE_NOT_FOUND, store_delete_routes(f->db, "web", 0, &revision, &err));
    assert_int_equal(current_revision(f->db), 0);

    put_service(f->db, "web");
    /* A service without routes has none to get or delete. */
    assert_store(STORE_NOT_FOUND, store_get_routes(f->db, "web", &got, &err));
    assert_store(STORE_NOT_FOUND, store_delete_routes(f->db, "web", 0, &revision, &err));

    bool created = false;
    assert_store_ok(store_put_routes(f->db, &routes, 0, &created, &revision, &err));
    assert_true(created);
    assert_int_equal(revision, 2);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_routes(f->db, "web", &got, &err));
    assert_string_equal(got.service, "web");
    assert_int_equal(got.revision, 2);
    assert_int_equal(got.rule_count, 1);
    assert_int_equal(got.rules[0].path_match, MODEL_PATH_PREFIX);
    assert_string_equal(got.rules[0].path, "/api");
    assert_int_equal(got.rules[0].split_count, 2);
    assert_int_equal(got.rules[0].splits[1].weight, 10);
    assert_int_equal(got.rules[0].retries.attempts, 3);
    json_t *a = model_routes_to_json(&routes);
    json_t *b = model_routes_to_json(&got);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    model_routes_clear(&got);
    model_routes_clear(&routes);

    /* Replace. */
    parse_routes("{\"rules\":[{\"match\":{\"path_exact\":\"/x\"}},{}]}", "web", &routes);
    assert_store_ok(store_put_routes(f->db, &routes, 0, &created, &revision, &err));
    assert_false(created);
    assert_int_equal(revision, 3);
    model_routes_clear(&routes);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_routes(f->db, "web", &got, &err));
    assert_int_equal(got.rule_count, 2);
    assert_int_equal(got.rules[0].path_match, MODEL_PATH_EXACT);
    model_routes_clear(&got);

    assert_store_ok(store_delete_routes(f->db, "web", 0, &revision, &err));
    assert_int_equal(revision, 4);
    memset(&got, 0, sizeof got);
    assert_store(STORE_NOT_FOUND, store_get_routes(f->db, "web", &got, &err));
    assert_store(STORE_NOT_FOUND, store_delete_routes(f->db, "web", 0, &revision, &err));
    assert_int_equal(current_revision(f->db), 4);
    /* The service itself stays. */
    model_service service;
    memset(&service, 0, sizeof service);
    assert_store_ok(store_get_service(f->db, "web", &service, &err));
    model_service_clear(&service);
}

static void test_policy_put_get_delete(void **state)
{
    fixture *f = *state;
    store_error err;
    model_policy policy;
    parse_policy(POLICY_JSON, "web", &policy);
    int64_t revision = 0;

    assert_store(STORE_NOT_FOUND, store_put_policy(f->db, &policy, 0, NULL, &revision, &err));
    model_policy got;
    memset(&got, 0, sizeof got);
    assert_store(STORE_NOT_FOUND, store_get_policy(f->db, "web", &got, &err));
    assert_store(STORE_NOT_FOUND, store_delete_policy(f->db, "web", 0, &revision, &err));
    assert_int_equal(current_revision(f->db), 0);

    put_service(f->db, "web");
    assert_store(STORE_NOT_FOUND, store_get_policy(f->db, "web", &got, &err));

    assert_store_ok(store_put_policy(f->db, &policy, 0, NULL, &revision, &err));
    assert_int_equal(revision, 2);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_policy(f->db, "web", &got, &err));
    assert_string_equal(got.service, "web");
    assert_int_equal(got.revision, 2);
    assert_false(got.default_allow);
    assert_int_equal(got.allow_count, 1);
    assert_string_equal(got.allow[0].from, "web");
    assert_int_equal(got.allow[0].method_count, 1);
    assert_string_equal(got.allow[0].methods[0], "GET");
    assert_string_equal(got.allow[0].path_prefix, "/api");
    assert_int_equal(got.deny_count, 0);
    json_t *a = model_policy_to_json(&policy);
    json_t *b = model_policy_to_json(&got);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    model_policy_clear(&got);
    model_policy_clear(&policy);

    parse_policy("{\"default\":\"allow\",\"deny\":[{\"from\":\"batch\"}]}", "web", &policy);
    assert_store_ok(store_put_policy(f->db, &policy, 0, NULL, &revision, &err));
    assert_int_equal(revision, 3);
    model_policy_clear(&policy);
    memset(&got, 0, sizeof got);
    assert_store_ok(store_get_policy(f->db, "web", &got, &err));
    assert_true(got.default_allow);
    assert_int_equal(got.allow_count, 0);
    assert_int_equal(got.deny_count, 1);
    model_policy_clear(&got);

    assert_store_ok(store_delete_policy(f->db, "web", 0, &revision, &err));
    assert_int_equal(revision, 4);
    memset(&got, 0, sizeof got);
    assert_store(STORE_NOT_FOUND, store_get_policy(f->db, "web", &got, &err));
    assert_store(STORE_NOT_FOUND, store_delete_policy(f->db, "web", 0, &revision, &err));
    assert_int_equal(current_revision(f->db), 4);
}

static void test_routes_policy_invalid(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    int64_t revision = 0;

    model_routes routes;
    parse_routes(ROUTES_JSON, "web", &routes);
    routes.rules[0].splits[1].weight = 0;
    assert_store(STORE_INVALID, store_put_routes(f->db, &routes, 0, NULL, &revision, &err));
    assert_string_equal(err.field, "rules[0].split[1].weight");
    model_routes_clear(&routes);

    model_policy policy;
    parse_policy(POLICY_JSON, "web", &policy);
    set_str(&policy.allow[0].from, "Not A Service");
    assert_store(STORE_INVALID, store_put_policy(f->db, &policy, 0, NULL, &revision, &err));
    assert_string_equal(err.field, "allow[0].from");
    model_policy_clear(&policy);

    assert_int_equal(current_revision(f->db), before);
    model_routes got_routes;
    memset(&got_routes, 0, sizeof got_routes);
    assert_store(STORE_NOT_FOUND, store_get_routes(f->db, "web", &got_routes, &err));
    model_policy got_policy;
    memset(&got_policy, 0, sizeof got_policy);
    assert_store(STORE_NOT_FOUND, store_get_policy(f->db, "web", &got_policy, &err));
}

static void test_service_replace_keeps_children(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_endpoint(f->db, "web", "e1", 0, 1000);
    put_routes(f->db, "web");
    put_policy(f->db, "web");

    model_service service;
    make_service(&service, "web");
    service.protocol = MODEL_PROTOCOL_GRPC;
    bool created = true;
    int64_t revision = 0;
    assert_store_ok(store_put_service(f->db, &service, 0, &created, &revision, &err));
    assert_false(created);
    model_service_clear(&service);

    model_endpoint endpoint;
    memset(&endpoint, 0, sizeof endpoint);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &endpoint, &err));
    model_endpoint_clear(&endpoint);
    model_routes routes;
    memset(&routes, 0, sizeof routes);
    assert_store_ok(store_get_routes(f->db, "web", &routes, &err));
    model_routes_clear(&routes);
    model_policy policy;
    memset(&policy, 0, sizeof policy);
    assert_store_ok(store_get_policy(f->db, "web", &policy, &err));
    model_policy_clear(&policy);
}

static void test_delete_service_cascades(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_service(f->db, "api");
    put_endpoint(f->db, "web", "e1", 0, 1000);
    put_endpoint(f->db, "web", "e2", 30, 1000);
    put_endpoint(f->db, "api", "e1", 0, 1000);
    put_routes(f->db, "web");
    put_policy(f->db, "web");
    int64_t before = current_revision(f->db);

    int64_t revision = 0;
    assert_store_ok(store_delete_service(f->db, "web", 0, &revision, &err));
    assert_int_equal(revision, before + 1);
    assert_int_equal(current_revision(f->db), before + 1);

    model_service service;
    memset(&service, 0, sizeof service);
    assert_store(STORE_NOT_FOUND, store_get_service(f->db, "web", &service, &err));
    assert_endpoint_missing(f->db, "web", "e1");
    assert_endpoint_missing(f->db, "web", "e2");
    model_routes routes;
    memset(&routes, 0, sizeof routes);
    assert_store(STORE_NOT_FOUND, store_get_routes(f->db, "web", &routes, &err));
    model_policy policy;
    memset(&policy, 0, sizeof policy);
    assert_store(STORE_NOT_FOUND, store_get_policy(f->db, "web", &policy, &err));

    /* The other service is untouched. */
    model_endpoint endpoint;
    memset(&endpoint, 0, sizeof endpoint);
    assert_store_ok(store_get_endpoint(f->db, "api", "e1", &endpoint, &err));
    model_endpoint_clear(&endpoint);
    model_endpoint_list list = {0};
    assert_store_ok(store_list_endpoints(f->db, NULL, &list, &err));
    assert_int_equal(list.count, 1);
    model_endpoint_list_free(&list);

    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, before, 0, &changes, &err));
    if (changes.count != 5) {
        dump_changes(&changes);
    }
    assert_int_equal(changes.count, 5);
    assert_has_change(&changes, MODEL_KIND_SERVICE, "web", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e1", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_ENDPOINT, "web/e2", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_ROUTES, "web", MODEL_CHANGE_DELETE, before + 1);
    assert_has_change(&changes, MODEL_KIND_POLICY, "web", MODEL_CHANGE_DELETE, before + 1);
    model_change_list_free(&changes);

    /* The TTL endpoint that went with it is not reaped later. */
    size_t reaped = 9;
    assert_store_ok(store_reap_expired_endpoints(f->db, 1000000, &reaped, &revision, &err));
    assert_int_equal(reaped, 0);

    /* The name can be used again, from scratch. */
    put_service(f->db, "web");
    assert_store_ok(store_list_endpoints(f->db, "web", &list, &err));
    assert_int_equal(list.count, 0);
    model_endpoint_list_free(&list);
}

/* ---- join tokens -------------------------------------------------------------- */

static void make_token(model_join_token *token, const char *id, uint8_t hash_byte,
                       int64_t expires_at_ms, uint32_t uses_allowed)
{
    memset(token, 0, sizeof *token);
    token->id = xstrdup(id);
    token->service = xstrdup("web");
    token->namespace_name = xstrdup("default");
    memset(token->hash, hash_byte, sizeof token->hash);
    token->hash[0] = 0x00; /* a zero byte inside: the hash is binary, not a string */
    token->created_at_ms = 1000;
    token->expires_at_ms = expires_at_ms;
    token->uses_allowed = uses_allowed;
    token->uses = 0;
}

static void test_join_tokens(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    int64_t revision = 0;

    model_join_token token;
    make_token(&token, "tok-1", 0x11, 100000, 2);
    assert_store_ok(store_create_join_token(f->db, &token, &revision, &err));
    assert_int_equal(revision, before + 1);

    /* Duplicate id (other hash), and duplicate hash (other id). */
    model_join_token dup;
    make_token(&dup, "tok-1", 0x22, 100000, 1);
    assert_store(STORE_CONFLICT, store_create_join_token(f->db, &dup, &revision, &err));
    model_join_token_clear(&dup);
    make_token(&dup, "tok-dup", 0x11, 100000, 1);
    assert_store(STORE_CONFLICT, store_create_join_token(f->db, &dup, &revision, &err));
    model_join_token_clear(&dup);
    assert_int_equal(current_revision(f->db), before + 1);

    model_join_token expiring;
    make_token(&expiring, "tok-2", 0x33, 5000, 5);
    assert_store_ok(store_create_join_token(f->db, &expiring, &revision, &err));

    model_join_token_list list = {0};
    assert_store_ok(store_list_join_tokens(f->db, &list, &err));
    assert_int_equal(list.count, 2);
    const model_join_token *listed = NULL;
    for (size_t i = 0; i < list.count; i++) {
        if (strcmp(list.items[i].id, "tok-1") == 0) {
            listed = &list.items[i];
        }
    }
    assert_non_null(listed);
    assert_string_equal(listed->service, "web");
    assert_string_equal(listed->namespace_name, "default");
    assert_memory_equal(listed->hash, token.hash, MODEL_TOKEN_HASH_SIZE);
    assert_int_equal(listed->created_at_ms, 1000);
    assert_int_equal(listed->expires_at_ms, 100000);
    assert_int_equal(listed->uses_allowed, 2);
    assert_int_equal(listed->uses, 0);
    model_join_token_list_free(&list);

    /* Consume: counted until used up. A use is state, not configuration: it
     * advances no revision and writes no change-log row. */
    int64_t before_uses = current_revision(f->db);
    model_join_token out;
    memset(&out, 0, sizeof out);
    assert_store_ok(store_consume_join_token(f->db, token.hash, 2000, &out, &err));
    assert_string_equal(out.id, "tok-1");
    assert_int_equal(out.uses, 1);
    assert_int_equal(out.uses_allowed, 2);
    model_join_token_clear(&out);
    memset(&out, 0, sizeof out);
    assert_store_ok(store_consume_join_token(f->db, token.hash, 2001, &out, &err));
    assert_int_equal(out.uses, 2);
    model_join_token_clear(&out);
    assert_store(STORE_CONFLICT, store_consume_join_token(f->db, token.hash, 2002, NULL, &err));
    assert_int_equal(current_revision(f->db), before_uses);

    assert_store_ok(store_list_join_tokens(f->db, &list, &err));
    for (size_t i = 0; i < list.count; i++) {
        if (strcmp(list.items[i].id, "tok-1") == 0) {
            assert_int_equal(list.items[i].uses, 2);
        }
    }
    model_join_token_list_free(&list);

    /* Expired (uses left, but past expires_at_ms). */
    assert_store(STORE_CONFLICT, store_consume_join_token(f->db, expiring.hash, 6000, NULL, &err));
    /* Still usable before it expires. */
    assert_store_ok(store_consume_join_token(f->db, expiring.hash, 4000, NULL, &err));

    /* Unknown hash. */
    uint8_t unknown[MODEL_TOKEN_HASH_SIZE];
    memset(unknown, 0x44, sizeof unknown);
    assert_store(STORE_NOT_FOUND, store_consume_join_token(f->db, unknown, 2000, NULL, &err));

    /* Delete. */
    int64_t at = current_revision(f->db);
    assert_store_ok(store_delete_join_token(f->db, "tok-1", &revision, &err));
    assert_int_equal(revision, at + 1);
    assert_store(STORE_NOT_FOUND, store_delete_join_token(f->db, "tok-1", &revision, &err));
    assert_store(STORE_NOT_FOUND, store_consume_join_token(f->db, token.hash, 2000, NULL, &err));
    assert_store_ok(store_list_join_tokens(f->db, &list, &err));
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, "tok-2");
    model_join_token_list_free(&list);

    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, before, 0, &changes, &err));
    assert_has_change(&changes, MODEL_KIND_JOIN_TOKEN, "tok-1", MODEL_CHANGE_PUT, before + 1);
    assert_has_change(&changes, MODEL_KIND_JOIN_TOKEN, "tok-1", MODEL_CHANGE_DELETE, at + 1);
    model_change_list_free(&changes);

    model_join_token_clear(&token);
    model_join_token_clear(&expiring);
}

/* ---- certificates ------------------------------------------------------------- */

static void record_cert(store *db, const char *serial, const char *identity, int64_t not_before,
                        int64_t not_after)
{
    store_error err;
    model_certificate cert;
    memset(&cert, 0, sizeof cert);
    cert.serial = xstrdup(serial);
    cert.identity = xstrdup(identity);
    cert.not_before_ms = not_before;
    cert.not_after_ms = not_after;
    int64_t before = current_revision(db);
    int64_t revision = 0;
    assert_store_ok(store_record_certificate(db, &cert, &revision, &err));
    assert_int_equal(revision, before);
    model_certificate_clear(&cert);
}

static bool list_has_serial(const model_certificate_list *list, const char *serial)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i].serial, serial) == 0) {
            return true;
        }
    }
    return false;
}

/* A first certificate: the token's use and the record commit together, or
 * neither does. */
static void test_certificate_with_join_token(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    model_join_token token;
    make_token(&token, "tok-once", 0x55, 100000, 1);
    int64_t revision = 0;
    assert_store_ok(store_create_join_token(f->db, &token, &revision, &err));
    model_certificate cert;
    memset(&cert, 0, sizeof cert);
    cert.serial = xstrdup("0a");
    cert.identity = xstrdup("spiffe://atrium.local/ns/default/sa/web");
    cert.not_before_ms = 1000;
    cert.not_after_ms = 2000;
    int64_t before = current_revision(f->db);

    /* Another service than the token admits: refused, nothing changes. */
    assert_store(STORE_CONFLICT,
                 store_record_certificate_with_join_token(f->db, token.hash, "default", "api", 1500,
                                                          &cert, &revision, &err));
    assert_string_equal(err.field, "token");
    assert_non_null(strstr(err.message, "admits default/web"));
    assert_int_equal(current_revision(f->db), before);

    /* A serial already recorded: refused, and the token's use is not counted. */
    record_cert(f->db, "0a", "spiffe://atrium.local/ns/default/sa/web", 1000, 2000);
    before = current_revision(f->db);
    assert_store(STORE_CONFLICT,
                 store_record_certificate_with_join_token(f->db, token.hash, "default", "web", 1500,
                                                          &cert, &revision, &err));
    assert_string_equal(err.field, "serial");
    assert_int_equal(current_revision(f->db), before);

    /* The one use: the use and the record land in one transaction (neither
     * is configuration, so the revision stays). */
    free(cert.serial);
    cert.serial = xstrdup("0b");
    assert_store_ok(store_record_certificate_with_join_token(f->db, token.hash, "default", "web",
                                                             1500, &cert, &revision, &err));
    assert_int_equal(revision, before);
    model_certificate_list list = {0};
    assert_store_ok(store_list_certificates(f->db, NULL, &list, &err));
    assert_int_equal(list.count, 2);
    model_certificate_list_free(&list);

    /* Used up now; unknown hashes are not found. */
    free(cert.serial);
    cert.serial = xstrdup("0c");
    assert_store(STORE_CONFLICT,
                 store_record_certificate_with_join_token(f->db, token.hash, "default", "web", 1500,
                                                          &cert, &revision, &err));
    assert_non_null(strstr(err.message, "used up"));
    uint8_t unknown[MODEL_TOKEN_HASH_SIZE];
    memset(unknown, 0x66, sizeof unknown);
    assert_store(STORE_NOT_FOUND,
                 store_record_certificate_with_join_token(f->db, unknown, "default", "web", 1500,
                                                          &cert, &revision, &err));
    assert_store_ok(store_list_certificates(f->db, NULL, &list, &err));
    assert_int_equal(list.count, 2);
    model_certificate_list_free(&list);

    model_certificate_clear(&cert);
    model_join_token_clear(&token);
}

/* Records from many threads at once are committed in groups; each one is
 * still all-or-nothing on its own: a token admits exactly its uses however the
 * records are grouped, and a record refused for a duplicate serial undoes its
 * token use without touching the others in its group. */
#define RECORDING_THREADS  8
#define RECORDS_PER_THREAD 40
#define TOKEN_USES_SHARED  150

typedef struct recording_thread {
    store *db;
    const uint8_t *hash;
    int index;
    int recorded, used_up, duplicates, other;
} recording_thread;

static void *record_many(void *context)
{
    recording_thread *self = context;
    for (int i = 0; i < RECORDS_PER_THREAD; i++) {
        char serial[32];
        /* Every fifth record repeats a serial this thread recorded already. */
        int number = (i % 5 == 4 && i > 0) ? i - 4 : i;
        snprintf(serial, sizeof serial, "%02x%04x", self->index, number);
        model_certificate cert = {.serial = serial,
                                  .identity = "spiffe://atrium.local/ns/default/sa/web",
                                  .not_before_ms = 1000,
                                  .not_after_ms = 2000};
        store_error err;
        store_status status = store_record_certificate_with_join_token(
            self->db, self->hash, "default", "web", 1500, &cert, NULL, &err);
        if (status == STORE_OK)
            self->recorded++;
        else if (status == STORE_CONFLICT && strcmp(err.field, "token") == 0)
            self->used_up++;
        else if (status == STORE_CONFLICT && strcmp(err.field, "serial") == 0)
            self->duplicates++;
        else
            self->other++;
    }
    return NULL;
}

static void test_certificates_recorded_concurrently(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    model_join_token token;
    make_token(&token, "tok-shared", 0x66, 100000, TOKEN_USES_SHARED);
    assert_store_ok(store_create_join_token(f->db, &token, NULL, &err));

    recording_thread threads[RECORDING_THREADS];
    pthread_t ids[RECORDING_THREADS];
    for (int t = 0; t < RECORDING_THREADS; t++) {
        threads[t] = (recording_thread){.db = f->db, .hash = token.hash, .index = t};
        assert_int_equal(pthread_create(&ids[t], NULL, record_many, &threads[t]), 0);
    }
    int recorded = 0, used_up = 0, duplicates = 0, other = 0;
    for (int t = 0; t < RECORDING_THREADS; t++) {
        pthread_join(ids[t], NULL);
        recorded += threads[t].recorded;
        used_up += threads[t].used_up;
        duplicates += threads[t].duplicates;
        other += threads[t].other;
    }
    assert_int_equal(other, 0);
    assert_int_equal(recorded, TOKEN_USES_SHARED);
    assert_int_equal(recorded + used_up + duplicates, RECORDING_THREADS * RECORDS_PER_THREAD);
    assert_true(duplicates > 0);

    /* The store agrees: as many records as uses counted, all of them. */
    model_certificate_list list = {0};
    assert_store_ok(store_list_certificates(f->db, NULL, &list, &err));
    assert_int_equal(list.count, TOKEN_USES_SHARED);
    model_certificate_list_free(&list);
    model_join_token_list tokens = {0};
    assert_store_ok(store_list_join_tokens(f->db, &tokens, &err));
    assert_int_equal(tokens.count, 1);
    assert_int_equal(tokens.items[0].uses, TOKEN_USES_SHARED);
    model_join_token_list_free(&tokens);
    model_join_token_clear(&token);
}

/* The WAL is copied into the database file by the store's checkpointer
 * thread, while the store is open and without a commit doing it: the file
 * grows once the WAL passes 1,000 pages. */
static void test_checkpoints_in_background(void **state)
{
    fixture *f = *state;
    struct stat before;
    assert_int_equal(stat(f->path, &before), 0);
    char identity[200];
    snprintf(identity, sizeof identity, "spiffe://atrium.local/ns/default/sa/%0120d", 7);
    for (int i = 0; i < 3000; i++) {
        char serial[32];
        snprintf(serial, sizeof serial, "%08x", i);
        model_certificate cert = {
            .serial = serial, .identity = identity, .not_before_ms = 1000, .not_after_ms = 2000};
        store_error err;
        assert_store_ok(store_record_certificate(f->db, &cert, NULL, &err));
    }
    struct stat after = before;
    for (int i = 0; i < 500 && after.st_size <= before.st_size; i++) {
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
        assert_int_equal(stat(f->path, &after), 0);
    }
    assert_true(after.st_size > before.st_size + 100 * 1024);

    /* Under steady writes the background checkpoints never reach the WAL's
     * end, so the WAL would never start over; a commit far past 1,000
     * frames checkpoints itself and keeps it bounded (about 4,000 frames of
     * 4 KiB; unbounded, these records would take it past 100 MiB). */
    for (int i = 3000; i < 15000; i++) {
        char serial[32];
        snprintf(serial, sizeof serial, "%08x", i);
        model_certificate cert = {
            .serial = serial, .identity = identity, .not_before_ms = 1000, .not_after_ms = 2000};
        store_error err;
        assert_store_ok(store_record_certificate(f->db, &cert, NULL, &err));
    }
    char wal[sizeof f->path + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat wal_status;
    assert_int_equal(stat(wal, &wal_status), 0);
    assert_true(wal_status.st_size < 24 * 1024 * 1024);
}

static void test_certificates(void **state)
{
    fixture *f = *state;
    store_error err;
    const char *web = "spiffe://atrium.local/ns/default/sa/web";
    const char *api = "spiffe://atrium.local/ns/default/sa/api";
    /* Recorded out of not_before order. Issuing is not configuration: no
     * revision, no change-log row. */
    int64_t before_records = current_revision(f->db);
    record_cert(f->db, "0b", web, 3000, 200000);
    record_cert(f->db, "0a1f", web, 1000, 100000);
    record_cert(f->db, "0c", api, 2000, 20000);
    assert_int_equal(current_revision(f->db), before_records);

    model_certificate_list list = {0};
    assert_store_ok(store_list_certificates(f->db, web, &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].serial, "0a1f");
    assert_string_equal(list.items[0].identity, web);
    assert_int_equal(list.items[0].not_before_ms, 1000);
    assert_int_equal(list.items[0].not_after_ms, 100000);
    assert_false(list.items[0].revoked);
    assert_int_equal(list.items[0].revoked_at_ms, 0);
    assert_string_equal(list.items[1].serial, "0b");
    model_certificate_list_free(&list);

    assert_store_ok(store_list_certificates(f->db, NULL, &list, &err));
    assert_int_equal(list.count, 3);
    assert_string_equal(list.items[0].serial, "0a1f");
    assert_string_equal(list.items[1].serial, "0c");
    assert_string_equal(list.items[2].serial, "0b");
    model_certificate_list_free(&list);

    assert_store_ok(store_list_certificates(f->db, "spiffe://atrium.local/ns/x/sa/y", &list, &err));
    assert_int_equal(list.count, 0);
    model_certificate_list_free(&list);

    /* Revoke. */
    int64_t before = current_revision(f->db);
    int64_t revision = 0;
    assert_store_ok(store_revoke_certificate(f->db, "0a1f", 5000, &revision, &err));
    assert_int_equal(revision, before + 1);
    assert_store(STORE_CONFLICT, store_revoke_certificate(f->db, "0a1f", 6000, &revision, &err));
    assert_store(STORE_NOT_FOUND, store_revoke_certificate(f->db, "ffff", 6000, &revision, &err));
    assert_int_equal(current_revision(f->db), before + 1);

    assert_store_ok(store_list_certificates(f->db, web, &list, &err));
    assert_true(list.items[0].revoked);
    assert_int_equal(list.items[0].revoked_at_ms, 5000);
    assert_false(list.items[1].revoked);
    model_certificate_list_free(&list);

    /* The CRL: revoked and not yet expired. */
    assert_store_ok(store_revoke_certificate(f->db, "0c", 7000, &revision, &err));
    assert_store_ok(store_list_revoked_certificates(f->db, 10000, &list, &err));
    assert_int_equal(list.count, 2);
    assert_true(list_has_serial(&list, "0a1f"));
    assert_true(list_has_serial(&list, "0c"));
    model_certificate_list_free(&list);

    assert_store_ok(store_list_revoked_certificates(f->db, 50000, &list, &err));
    assert_int_equal(list.count, 1); /* 0c expired at 20000 */
    assert_string_equal(list.items[0].serial, "0a1f");
    assert_true(list.items[0].revoked);
    model_certificate_list_free(&list);

    assert_store_ok(store_list_revoked_certificates(f->db, 150000, &list, &err));
    assert_int_equal(list.count, 0);
    model_certificate_list_free(&list);

    /* Only the revocations are in the log (they change the CRL). */
    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, 0, 0, &changes, &err));
    assert_int_equal(changes.count, 2);
    assert_has_change(&changes, MODEL_KIND_CERTIFICATE, "0a1f", MODEL_CHANGE_PUT, before + 1);
    assert_has_change(&changes, MODEL_KIND_CERTIFICATE, "0c", MODEL_CHANGE_PUT, before + 2);
    model_change_list_free(&changes);
}

/* ---- proxies ------------------------------------------------------------------ */

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define EDS "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

static const model_proxy_type_status *find_type(const model_proxy *proxy, const char *type_url)
{
    for (size_t i = 0; i < proxy->type_count; i++) {
        if (strcmp(proxy->types[i].type_url, type_url) == 0) {
            return &proxy->types[i];
        }
    }
    return NULL;
}

static void test_proxies(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    const char *identity = "spiffe://atrium.local/ns/default/sa/web";

    assert_store_ok(store_proxy_connected(f->db, "node-b", identity, "web", "default", 1000, &err));
    assert_store_ok(store_proxy_acked(f->db, "node-b", CDS, "1", 1100, &err));
    assert_store_ok(
        store_proxy_nacked(f->db, "node-b", CDS, "2", "cluster web: bad lb_policy", 1200, &err));
    assert_store_ok(store_proxy_acked(f->db, "node-b", EDS, "7", 1250, &err));

    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 1);
    const model_proxy *proxy = &list.items[0];
    assert_string_equal(proxy->node_id, "node-b");
    assert_string_equal(proxy->identity, identity);
    assert_string_equal(proxy->service, "web");
    assert_string_equal(proxy->namespace_name, "default");
    assert_string_equal(proxy->protocol, ""); /* not known to store_proxy_connected */
    assert_true(proxy->connected);
    assert_int_equal(proxy->connected_since_ms, 1000);
    assert_int_equal(proxy->type_count, 2);
    const model_proxy_type_status *cds = find_type(proxy, CDS);
    assert_non_null(cds);
    assert_null(cds->sent_version);
    assert_int_equal(cds->sent_at_ms, 0);
    assert_string_equal(cds->acked_version, "1");
    assert_int_equal(cds->acked_at_ms, 1100);
    assert_non_null(cds->nacked_version);
    assert_string_equal(cds->nacked_version, "2");
    assert_string_equal(cds->nack_message, "cluster web: bad lb_policy");
    assert_int_equal(cds->nacked_at_ms, 1200);
    const model_proxy_type_status *eds = find_type(proxy, EDS);
    assert_non_null(eds);
    assert_string_equal(eds->acked_version, "7");
    assert_null(eds->nacked_version);
    model_proxy_list_free(&list);

    /* An ACK clears the NACK. */
    assert_store_ok(store_proxy_acked(f->db, "node-b", CDS, "3", 1300, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    cds = find_type(&list.items[0], CDS);
    assert_non_null(cds);
    assert_string_equal(cds->acked_version, "3");
    assert_int_equal(cds->acked_at_ms, 1300);
    assert_null(cds->nacked_version);
    assert_null(cds->nack_message);
    model_proxy_list_free(&list);

    /* A NACK without a prior ACK on a new type. */
    assert_store_ok(store_proxy_connected(f->db, "node-a", "", "api", "default", 2000, &err));
    assert_store_ok(store_proxy_nacked(f->db, "node-a", CDS, "9", "nope", 2100, &err));

    /* Disconnect, then list: ordered by node id. */
    assert_store_ok(store_proxy_disconnected(f->db, "node-b", 3000, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].node_id, "node-a");
    assert_true(list.items[0].connected);
    assert_string_equal(list.items[0].identity, "");
    cds = find_type(&list.items[0], CDS);
    assert_non_null(cds);
    assert_null(cds->acked_version);
    assert_string_equal(cds->nacked_version, "9");
    assert_string_equal(cds->nack_message, "nope");
    assert_string_equal(list.items[1].node_id, "node-b");
    assert_false(list.items[1].connected);
    assert_true(list.items[1].last_seen_ms >= 1300);
    model_proxy_list_free(&list);

    /* seen_since filters. */
    assert_store_ok(store_list_proxies(f->db, 1000000, &list, &err));
    assert_int_equal(list.count, 0);
    model_proxy_list_free(&list);

    /* Reconnecting keeps the type status. */
    assert_store_ok(store_proxy_connected(f->db, "node-b", identity, "web", "default", 4000, &err));
    assert_store_ok(store_list_proxies(f->db, 3500, &list, &err));
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].node_id, "node-b");
    assert_true(list.items[0].connected);
    assert_int_equal(list.items[0].connected_since_ms, 4000);
    assert_int_equal(list.items[0].last_seen_ms, 4000);
    cds = find_type(&list.items[0], CDS);
    assert_non_null(cds);
    assert_string_equal(cds->acked_version, "3");
    model_proxy_list_free(&list);

    /* None of this is configuration: no revision, no change rows. */
    assert_int_equal(current_revision(f->db), before);
    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, before, 0, &changes, &err));
    assert_int_equal(changes.count, 0);
    model_change_list_free(&changes);
}

/* ---- proxies: batched status (store_save_proxies) ------------------------------ */

#define LDS "type.googleapis.com/envoy.config.listener.v3.Listener"
#define RDS "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

/* Fills *proxy (owned; release with model_proxy_clear). NULL strings stay NULL. */
static void make_proxy(model_proxy *proxy, const char *node_id, const char *identity,
                       const char *service, const char *namespace_name, const char *protocol,
                       bool connected, int64_t connected_since_ms, int64_t last_seen_ms)
{
    memset(proxy, 0, sizeof *proxy);
    set_str(&proxy->node_id, node_id);
    set_str(&proxy->identity, identity);
    set_str(&proxy->service, service);
    set_str(&proxy->namespace_name, namespace_name);
    set_str(&proxy->protocol, protocol);
    proxy->connected = connected;
    proxy->connected_since_ms = connected_since_ms;
    proxy->last_seen_ms = last_seen_ms;
}

static void add_type(model_proxy *proxy, const char *type_url, const char *sent_version,
                     int64_t sent_at_ms, const char *acked_version, int64_t acked_at_ms,
                     const char *nacked_version, const char *nack_message, int64_t nacked_at_ms)
{
    model_proxy_type_status *grown =
        realloc(proxy->types, (proxy->type_count + 1) * sizeof(*proxy->types));
    assert_non_null(grown);
    proxy->types = grown;
    model_proxy_type_status *type = &proxy->types[proxy->type_count++];
    memset(type, 0, sizeof *type);
    set_str(&type->type_url, type_url);
    set_str(&type->sent_version, sent_version);
    type->sent_at_ms = sent_at_ms;
    set_str(&type->acked_version, acked_version);
    type->acked_at_ms = acked_at_ms;
    set_str(&type->nacked_version, nacked_version);
    set_str(&type->nack_message, nack_message);
    type->nacked_at_ms = nacked_at_ms;
}

static const model_proxy *find_proxy(const model_proxy_list *list, const char *node_id)
{
    for (size_t i = 0; i < list->count; i++) {
        if (strcmp(list->items[i].node_id, node_id) == 0) {
            return &list->items[i];
        }
    }
    return NULL;
}

/* A string field that may be NULL: equal, NULL on both sides included. */
static void assert_optional_string(const char *actual, const char *expected)
{
    if (expected == NULL) {
        assert_null(actual);
    } else {
        assert_non_null(actual);
        assert_string_equal(actual, expected);
    }
}

static void assert_type_equal(const model_proxy_type_status *actual,
                              const model_proxy_type_status *expected)
{
    assert_non_null(actual);
    assert_string_equal(actual->type_url, expected->type_url);
    assert_optional_string(actual->sent_version, expected->sent_version);
    assert_int_equal(actual->sent_at_ms, expected->sent_at_ms);
    assert_optional_string(actual->acked_version, expected->acked_version);
    assert_int_equal(actual->acked_at_ms, expected->acked_at_ms);
    assert_optional_string(actual->nacked_version, expected->nacked_version);
    assert_optional_string(actual->nack_message, expected->nack_message);
    assert_int_equal(actual->nacked_at_ms, expected->nacked_at_ms);
}

/* Every field of expected as stored; NULL proxy strings read back as "". */
static void assert_proxy_equal(const model_proxy *actual, const model_proxy *expected)
{
    assert_non_null(actual);
    assert_string_equal(actual->node_id, expected->node_id);
    assert_string_equal(actual->identity, expected->identity ? expected->identity : "");
    assert_string_equal(actual->service, expected->service ? expected->service : "");
    assert_string_equal(actual->namespace_name,
                        expected->namespace_name ? expected->namespace_name : "");
    assert_string_equal(actual->protocol, expected->protocol ? expected->protocol : "");
    assert_int_equal(actual->connected, expected->connected);
    assert_int_equal(actual->connected_since_ms, expected->connected_since_ms);
    assert_int_equal(actual->last_seen_ms, expected->last_seen_ms);
    assert_int_equal(actual->type_count, expected->type_count);
    for (size_t i = 0; i < expected->type_count; i++) {
        assert_type_equal(find_type(actual, expected->types[i].type_url), &expected->types[i]);
    }
}

static void assert_no_changes_since(store *db, int64_t revision)
{
    store_error err;
    assert_int_equal(current_revision(db), revision);
    model_change_list changes = {0};
    assert_store_ok(store_changes_since(db, revision, 0, &changes, &err));
    assert_int_equal(changes.count, 0);
    model_change_list_free(&changes);
}

static void test_save_proxies(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    const char *identity = "spiffe://atrium.local/ns/prod/sa/api";

    /* node-b already known through the per-event path. */
    assert_store_ok(store_proxy_connected(f->db, "node-b", "old", "old", "old", 10, &err));
    assert_store_ok(store_proxy_acked(f->db, "node-b", RDS, "r1", 20, &err));

    model_proxy proxies[3];
    make_proxy(&proxies[0], "node-a", identity, "api", "prod", "delta", true, 1000, 5000);
    add_type(&proxies[0], CDS, "5", 4900, "4", 4000, "5", "cluster api: bad lb_policy", 4950);
    add_type(&proxies[0], EDS, "3", 4800, "3", 4810, NULL, NULL, 0);
    /* NULL strings everywhere they are allowed. */
    make_proxy(&proxies[1], "node-b", NULL, NULL, NULL, NULL, false, 2000, 6000);
    add_type(&proxies[1], LDS, "1", 100, NULL, 0, NULL, NULL, 0);
    add_type(&proxies[1], CDS, NULL, 0, NULL, 0, NULL, NULL, 0);
    add_type(&proxies[1], RDS, NULL, 0, NULL, 0, "r2", "route: unknown cluster", 300);
    /* A proxy with no types. */
    make_proxy(&proxies[2], "node-c", "", "web", "default", "sotw", true, 3000, 3000);

    assert_store_ok(store_save_proxies(f->db, proxies, 3, &err));
    assert_no_changes_since(f->db, before);

    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 3);
    assert_string_equal(list.items[0].node_id, "node-a");
    assert_string_equal(list.items[1].node_id, "node-b");
    assert_string_equal(list.items[2].node_id, "node-c");
    for (size_t i = 0; i < 3; i++) {
        assert_proxy_equal(&list.items[i], &proxies[i]);
    }
    model_proxy_list_free(&list);

    /* Durable. */
    reopen_store(f);
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_proxy_equal(find_proxy(&list, proxies[i].node_id), &proxies[i]);
    }
    model_proxy_list_free(&list);

    /* Update in place: every given field replaced, NULL replaces a value, a
     * type left out keeps its row, a new type is added. */
    model_proxy update;
    make_proxy(&update, "node-a", identity, "api", "prod", "sotw", false, 1000, 7000);
    add_type(&update, CDS, "6", 6900, "5", 6000, NULL, NULL, 0); /* the NACK is gone */
    add_type(&update, LDS, "2", 6950, NULL, 0, NULL, NULL, 0);
    assert_store_ok(store_save_proxies(f->db, &update, 1, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 3);
    const model_proxy *node_a = find_proxy(&list, "node-a");
    assert_non_null(node_a);
    assert_string_equal(node_a->protocol, "sotw");
    assert_false(node_a->connected);
    assert_int_equal(node_a->last_seen_ms, 7000);
    assert_int_equal(node_a->type_count, 3);
    assert_type_equal(find_type(node_a, CDS), &update.types[0]);
    assert_type_equal(find_type(node_a, LDS), &update.types[1]);
    assert_type_equal(find_type(node_a, EDS), &proxies[0].types[1]); /* untouched */
    assert_proxy_equal(find_proxy(&list, "node-b"), &proxies[1]);
    assert_proxy_equal(find_proxy(&list, "node-c"), &proxies[2]);
    model_proxy_list_free(&list);

    /* The per-event functions keep working on saved rows: reconnecting keeps
     * the protocol and the type status. */
    assert_store_ok(store_proxy_connected(f->db, "node-a", identity, "api", "prod", 8000, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    node_a = find_proxy(&list, "node-a");
    assert_non_null(node_a);
    assert_string_equal(node_a->protocol, "sotw");
    assert_true(node_a->connected);
    assert_int_equal(node_a->connected_since_ms, 8000);
    assert_type_equal(find_type(node_a, CDS), &update.types[0]);
    model_proxy_list_free(&list);

    /* Repeats in one batch: the last one wins. */
    model_proxy twice[2];
    make_proxy(&twice[0], "node-c", "", "web", "default", "sotw", true, 3000, 9000);
    add_type(&twice[0], CDS, "7", 9000, NULL, 0, NULL, NULL, 0);
    add_type(&twice[0], CDS, "8", 9001, NULL, 0, NULL, NULL, 0);
    make_proxy(&twice[1], "node-c", "", "web", "default", "delta", true, 3000, 9002);
    assert_store_ok(store_save_proxies(f->db, twice, 2, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    const model_proxy *node_c = find_proxy(&list, "node-c");
    assert_non_null(node_c);
    assert_string_equal(node_c->protocol, "delta");
    assert_int_equal(node_c->last_seen_ms, 9002);
    assert_int_equal(node_c->type_count, 1);
    assert_type_equal(&node_c->types[0], &twice[0].types[1]);
    model_proxy_list_free(&list);
    model_proxy_clear(&twice[0]);
    model_proxy_clear(&twice[1]);

    /* Nothing to save. */
    assert_store_ok(store_save_proxies(f->db, NULL, 0, &err));
    assert_no_changes_since(f->db, before);

    /* And still no configuration change: the next write is the next revision. */
    assert_int_equal(put_service(f->db, "api"), before + 1);

    model_proxy_clear(&update);
    for (size_t i = 0; i < 3; i++) {
        model_proxy_clear(&proxies[i]);
    }
}

/* A bad entry anywhere in the batch: STORE_INVALID naming it, nothing written. */
static void test_save_proxies_invalid(void **state)
{
    fixture *f = *state;
    store_error err;
    int64_t before = current_revision(f->db);
    model_proxy existing;
    make_proxy(&existing, "node-a", "", "web", "default", "sotw", true, 1000, 1000);
    add_type(&existing, CDS, "1", 1000, "1", 1001, NULL, NULL, 0);
    assert_store_ok(store_save_proxies(f->db, &existing, 1, &err));

    model_proxy batch[3];
    make_proxy(&batch[0], "node-a", "", "web", "default", "delta", false, 1000, 2000);
    add_type(&batch[0], CDS, "2", 2000, "2", 2001, NULL, NULL, 0);
    make_proxy(&batch[1], "node-new", "", "web", "default", "sotw", true, 2000, 2000);
    add_type(&batch[1], CDS, "2", 2000, NULL, 0, NULL, NULL, 0);
    make_proxy(&batch[2], "node-z", "", "web", "default", "sotw", true, 2000, 2000);

    /* An empty node id, last in the batch. */
    set_str(&batch[2].node_id, "");
    assert_store(STORE_INVALID, store_save_proxies(f->db, batch, 3, &err));
    assert_string_equal(err.field, "proxies[2].node_id");
    /* No node id at all. */
    set_str(&batch[2].node_id, NULL);
    assert_store(STORE_INVALID, store_save_proxies(f->db, batch, 3, &err));
    assert_string_equal(err.field, "proxies[2].node_id");
    set_str(&batch[2].node_id, "node-z");

    /* An empty or missing type URL. */
    add_type(&batch[1], "", "2", 2000, NULL, 0, NULL, NULL, 0);
    assert_store(STORE_INVALID, store_save_proxies(f->db, batch, 3, &err));
    assert_string_equal(err.field, "proxies[1].types[1].type_url");
    set_str(&batch[1].types[1].type_url, NULL);
    assert_store(STORE_INVALID, store_save_proxies(f->db, batch, 3, &err));
    assert_string_equal(err.field, "proxies[1].types[1].type_url");

    /* Nothing of any of those batches was written. */
    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 1);
    assert_proxy_equal(&list.items[0], &existing);
    model_proxy_list_free(&list);
    assert_no_changes_since(f->db, before);

    /* Fixed, the same batch goes through. */
    set_str(&batch[1].types[1].type_url, LDS);
    assert_store_ok(store_save_proxies(f->db, batch, 3, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_proxy_equal(find_proxy(&list, batch[i].node_id), &batch[i]);
    }
    model_proxy_list_free(&list);
    assert_no_changes_since(f->db, before);

    model_proxy_clear(&existing);
    for (size_t i = 0; i < 3; i++) {
        model_proxy_clear(&batch[i]);
    }
}

static void test_mark_all_proxies_disconnected(void **state)
{
    fixture *f = *state;
    store_error err;
    /* Nothing to mark. */
    assert_store_ok(store_mark_all_proxies_disconnected(f->db, 500, &err));

    put_service(f->db, "web");
    int64_t before = current_revision(f->db);
    assert_store_ok(store_proxy_connected(f->db, "node-a", "", "web", "default", 1000, &err));
    assert_store_ok(store_proxy_acked(f->db, "node-a", CDS, "1", 1100, &err));
    assert_store_ok(store_proxy_connected(f->db, "node-b", "", "web", "default", 1000, &err));
    assert_store_ok(store_proxy_disconnected(f->db, "node-b", 1500, &err));
    model_proxy saved;
    make_proxy(&saved, "node-c", "", "web", "default", "delta", true, 1800, 2000);
    add_type(&saved, EDS, "4", 1900, "4", 1950, NULL, NULL, 0);
    assert_store_ok(store_save_proxies(f->db, &saved, 1, &err));

    assert_store_ok(store_mark_all_proxies_disconnected(f->db, 9000, &err));
    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 3);
    for (size_t i = 0; i < list.count; i++) {
        assert_false(list.items[i].connected);
    }
    const model_proxy *node_a = find_proxy(&list, "node-a");
    assert_non_null(node_a);
    assert_int_equal(node_a->last_seen_ms, 9000);
    assert_int_equal(node_a->connected_since_ms, 1000);
    assert_non_null(find_type(node_a, CDS));
    assert_string_equal(find_type(node_a, CDS)->acked_version, "1");
    /* Already disconnected: left as it was. */
    const model_proxy *node_b = find_proxy(&list, "node-b");
    assert_non_null(node_b);
    assert_int_equal(node_b->last_seen_ms, 1500);
    /* Only connected and last_seen change. */
    saved.connected = false;
    saved.last_seen_ms = 9000;
    assert_proxy_equal(find_proxy(&list, "node-c"), &saved);
    model_proxy_list_free(&list);

    /* Idempotent. */
    assert_store_ok(store_mark_all_proxies_disconnected(f->db, 9500, &err));
    assert_store_ok(store_list_proxies(f->db, 9500, &list, &err));
    assert_int_equal(list.count, 0);
    model_proxy_list_free(&list);

    assert_no_changes_since(f->db, before);
    model_proxy_clear(&saved);
}

/* ---- change log --------------------------------------------------------------- */

static void test_change_log(void **state)
{
    fixture *f = *state;
    store_error err;
    assert_int_equal(put_service(f->db, "web"), 1);
    assert_int_equal(put_endpoint(f->db, "web", "e1", 0, 1000), 2);
    assert_int_equal(put_routes(f->db, "web"), 3);
    assert_int_equal(put_policy(f->db, "web"), 4);
    int64_t revision = 0;
    assert_store_ok(store_delete_endpoint(f->db, "web", "e1", 0, &revision, &err));
    assert_int_equal(revision, 5);

    model_change_list changes = {0};
    assert_store_ok(store_changes_since(f->db, 0, 0, &changes, &err));
    if (changes.count != 5) {
        dump_changes(&changes);
    }
    assert_int_equal(changes.count, 5);
    const struct {
        model_entity_kind kind;
        const char *key;
        model_change_op op;
    } expected[] = {
        {MODEL_KIND_SERVICE, "web", MODEL_CHANGE_PUT},
        {MODEL_KIND_ENDPOINT, "web/e1", MODEL_CHANGE_PUT},
        {MODEL_KIND_ROUTES, "web", MODEL_CHANGE_PUT},
        {MODEL_KIND_POLICY, "web", MODEL_CHANGE_PUT},
        {MODEL_KIND_ENDPOINT, "web/e1", MODEL_CHANGE_DELETE},
    };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(changes.items[i].revision, (int64_t)i + 1);
        assert_int_equal(changes.items[i].kind, expected[i].kind);
        assert_string_equal(changes.items[i].key, expected[i].key);
        assert_int_equal(changes.items[i].op, expected[i].op);
    }
    model_change_list_free(&changes);

    /* Only later rows. */
    assert_store_ok(store_changes_since(f->db, 2, 0, &changes, &err));
    assert_int_equal(changes.count, 3);
    assert_int_equal(changes.items[0].revision, 3);
    assert_int_equal(changes.items[2].revision, 5);
    model_change_list_free(&changes);

    /* Limit. */
    assert_store_ok(store_changes_since(f->db, 0, 2, &changes, &err));
    assert_int_equal(changes.count, 2);
    assert_int_equal(changes.items[0].revision, 1);
    assert_int_equal(changes.items[1].revision, 2);
    model_change_list_free(&changes);
    assert_store_ok(store_changes_since(f->db, 3, 1, &changes, &err));
    assert_int_equal(changes.count, 1);
    assert_int_equal(changes.items[0].revision, 4);
    model_change_list_free(&changes);

    /* Up to date: nothing. */
    assert_store_ok(store_changes_since(f->db, 5, 0, &changes, &err));
    assert_int_equal(changes.count, 0);
    model_change_list_free(&changes);

    /* Compact: older positions are gone, later ones still served. */
    assert_store_ok(store_compact_changes(f->db, 3, &err));
    assert_store(STORE_NOT_FOUND, store_changes_since(f->db, 0, 0, &changes, &err));
    assert_store(STORE_NOT_FOUND, store_changes_since(f->db, 2, 0, &changes, &err));
    assert_store_ok(store_changes_since(f->db, 3, 0, &changes, &err));
    assert_int_equal(changes.count, 2);
    assert_int_equal(changes.items[0].revision, 4);
    assert_int_equal(changes.items[1].revision, 5);
    model_change_list_free(&changes);

    /* Compacting up to the current revision keeps the current revision. Whether
     * its own row is kept is the store's choice; what it must not do is answer
     * OK with rows missing. */
    assert_store_ok(store_compact_changes(f->db, 5, &err));
    assert_int_equal(current_revision(f->db), 5);
    memset(&err, 0, sizeof err);
    store_status status = store_changes_since(f->db, 4, 0, &changes, &err);
    if (status == STORE_OK) {
        assert_int_equal(changes.count, 1);
        assert_int_equal(changes.items[0].revision, 5);
        model_change_list_free(&changes);
    } else {
        assert_int_equal(status, STORE_NOT_FOUND);
    }
    assert_store_ok(store_changes_since(f->db, 5, 0, &changes, &err));
    assert_int_equal(changes.count, 0);
    model_change_list_free(&changes);

    /* Across a reopen too, and the next mutation continues the sequence. */
    reopen_store(f);
    assert_int_equal(current_revision(f->db), 5);
    assert_int_equal(put_service(f->db, "api"), 6);
    assert_store_ok(store_changes_since(f->db, 5, 0, &changes, &err));
    assert_int_equal(changes.count, 1);
    assert_has_change(&changes, MODEL_KIND_SERVICE, "api", MODEL_CHANGE_PUT, 6);
    model_change_list_free(&changes);
}

/* ---- durability, migrations, options ------------------------------------------ */

static void test_reopen_keeps_data(void **state)
{
    fixture *f = *state;
    store_error err;
    put_service(f->db, "web");
    put_endpoint(f->db, "web", "e1", 30, 1000);
    put_routes(f->db, "web");
    put_policy(f->db, "web");
    int64_t revision = current_revision(f->db);

    reopen_store(f);
    assert_int_equal(store_schema_version(f->db), STORE_SCHEMA_VERSION);
    assert_int_equal(current_revision(f->db), revision);
    model_service service;
    memset(&service, 0, sizeof service);
    assert_store_ok(store_get_service(f->db, "web", &service, &err));
    model_service_clear(&service);
    model_endpoint endpoint;
    memset(&endpoint, 0, sizeof endpoint);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &endpoint, &err));
    assert_int_equal(endpoint.expires_at_ms, 31000);
    model_endpoint_clear(&endpoint);
    model_routes routes;
    memset(&routes, 0, sizeof routes);
    assert_store_ok(store_get_routes(f->db, "web", &routes, &err));
    assert_int_equal(routes.rule_count, 1);
    model_routes_clear(&routes);
    model_policy policy;
    memset(&policy, 0, sizeof policy);
    assert_store_ok(store_get_policy(f->db, "web", &policy, &err));
    model_policy_clear(&policy);

    bool ok = false;
    assert_store_ok(store_check_integrity(f->db, &ok, &err));
    assert_true(ok);
}

static void test_migration_from_v1(void **state)
{
    fixture *f = *state;
    store_error err;
    open_store(f, 1, false);
    assert_int_equal(store_schema_version(f->db), 1);
    put_service(f->db, "web");
    model_endpoint endpoint;
    make_endpoint(&endpoint, "web", "e1", "10.9.8.7", 8443);
    assert_true(model_labels_set(&endpoint.labels, "version", "v1"));
    int64_t revision = 0;
    assert_store_ok(store_put_endpoint(f->db, &endpoint, 0, 1000, NULL, &revision, &err));
    model_endpoint_clear(&endpoint);
    store_close(f->db);
    f->db = NULL;

    open_store(f, 0, false);
    assert_int_equal(store_schema_version(f->db), STORE_SCHEMA_VERSION);
    assert_int_equal(current_revision(f->db), revision);
    model_service service;
    memset(&service, 0, sizeof service);
    assert_store_ok(store_get_service(f->db, "web", &service, &err));
    assert_string_equal(service.name, "web");
    model_service_clear(&service);
    memset(&endpoint, 0, sizeof endpoint);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &endpoint, &err));
    assert_string_equal(endpoint.address, "10.9.8.7");
    assert_int_equal(endpoint.port, 8443);
    assert_string_equal(model_labels_get(&endpoint.labels, "version"), "v1");
    model_endpoint_clear(&endpoint);

    /* Fully usable after the upgrade. */
    assert_int_equal(put_endpoint(f->db, "web", "e2", 10, 2000), revision + 1);
    assert_int_equal(put_routes(f->db, "web"), revision + 2);
    bool ok = false;
    assert_store_ok(store_check_integrity(f->db, &ok, &err));
    assert_true(ok);

    /* Reopening an up-to-date database changes nothing. */
    reopen_store(f);
    assert_int_equal(store_schema_version(f->db), STORE_SCHEMA_VERSION);
    assert_int_equal(current_revision(f->db), revision + 2);
}

static void test_migration_from_v2(void **state)
{
    fixture *f = *state;
    store_error err;
    open_store(f, 2, false);
    assert_int_equal(store_schema_version(f->db), 2);
    put_service(f->db, "web");
    int64_t revision = current_revision(f->db);
    assert_store_ok(store_proxy_connected(f->db, "node-a", "", "web", "default", 1000, &err));
    assert_store_ok(store_proxy_acked(f->db, "node-a", CDS, "1", 1100, &err));
    assert_store_ok(store_proxy_nacked(f->db, "node-a", EDS, "2", "bad", 1200, &err));
    assert_store_ok(store_proxy_connected(f->db, "node-b", "", "web", "default", 1300, &err));
    store_close(f->db);
    f->db = NULL;

    open_store(f, 0, false);
    assert_int_equal(store_schema_version(f->db), 3);
    assert_int_equal(store_schema_version(f->db), STORE_SCHEMA_VERSION);
    assert_int_equal(current_revision(f->db), revision);
    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_int_equal(list.count, 2);
    const model_proxy *node_a = &list.items[0];
    assert_string_equal(node_a->node_id, "node-a");
    assert_string_equal(node_a->protocol, "");
    assert_true(node_a->connected);
    assert_int_equal(node_a->connected_since_ms, 1000);
    assert_int_equal(node_a->type_count, 2);
    model_proxy_type_status cds = {.type_url = CDS, .acked_version = "1", .acked_at_ms = 1100};
    assert_type_equal(find_type(node_a, CDS), &cds);
    model_proxy_type_status eds = {
        .type_url = EDS, .nacked_version = "2", .nack_message = "bad", .nacked_at_ms = 1200};
    assert_type_equal(find_type(node_a, EDS), &eds);
    assert_string_equal(list.items[1].node_id, "node-b");
    assert_string_equal(list.items[1].protocol, "");
    assert_int_equal(list.items[1].type_count, 0);
    model_proxy_list_free(&list);

    /* The new columns are writable after the upgrade. */
    model_proxy proxy;
    make_proxy(&proxy, "node-a", "", "web", "default", "delta", true, 1000, 2000);
    add_type(&proxy, CDS, "2", 1900, "1", 1100, NULL, NULL, 0);
    assert_store_ok(store_save_proxies(f->db, &proxy, 1, &err));
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    assert_string_equal(list.items[0].protocol, "delta");
    assert_type_equal(find_type(&list.items[0], CDS), &proxy.types[0]);
    assert_type_equal(find_type(&list.items[0], EDS), &eds);
    model_proxy_list_free(&list);
    model_proxy_clear(&proxy);

    bool ok = false;
    assert_store_ok(store_check_integrity(f->db, &ok, &err));
    assert_true(ok);
    assert_int_equal(current_revision(f->db), revision);
}

static void test_newer_schema_refused(void **state)
{
    fixture *f = *state;
    open_store(f, 0, false);
    put_service(f->db, "web");
    store_close(f->db);
    f->db = NULL;

    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION + 1);
    char *message = NULL;
    int rc = sqlite3_exec(raw, sql, NULL, NULL, &message);
    if (rc != SQLITE_OK) {
        fail_msg("%s: %s", sql, message ? message : "?");
    }
    sqlite3_free(message);
    assert_int_equal(sqlite3_close(raw), SQLITE_OK);

    store_options options = {0};
    options.path = f->path;
    store *db = NULL;
    store_error err;
    memset(&err, 0, sizeof err);
    store_status status = store_open(&options, &db, &err);
    if (status == STORE_OK) {
        store_close(db);
        fail_msg("a database with schema version %d was opened", STORE_SCHEMA_VERSION + 1);
    }
    assert_true(status == STORE_INVALID || status == STORE_IO);
    char number[16];
    snprintf(number, sizeof number, "%d", STORE_SCHEMA_VERSION + 1);
    print_message("refused with: %s\n", err.message);
    assert_true(strstr(err.message, "version") != NULL || strstr(err.message, number) != NULL);
    store_close(db);

    /* Nothing was changed by the refusal. */
    assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(stmt, 0), STORE_SCHEMA_VERSION + 1);
    sqlite3_finalize(stmt);
    sqlite3_close(raw);
}

static void test_synchronous_full(void **state)
{
    fixture *f = *state;
    store_error err;
    open_store(f, 0, true);
    put_service(f->db, "web");
    put_endpoint(f->db, "web", "e1", 0, 1000);
    bool ok = false;
    assert_store_ok(store_check_integrity(f->db, &ok, &err));
    assert_true(ok);
    reopen_store(f);
    model_endpoint endpoint;
    memset(&endpoint, 0, sizeof endpoint);
    assert_store_ok(store_get_endpoint(f->db, "web", "e1", &endpoint, &err));
    model_endpoint_clear(&endpoint);
}

/* If-Match semantics: a stale or missing revision changes nothing. */
static void test_conditional_writes(void **state)
{
    fixture *f = *state;
    store_error err;
    int64_t first = put_service(f->db, "web");
    model_service service;
    make_service(&service, "web");
    service.connect_timeout_ms = 250;
    int64_t revision = 0;

    /* A stale revision: refused, nothing written, revision unchanged. */
    assert_store(STORE_PRECONDITION_FAILED,
                 store_put_service(f->db, &service, first + 7, NULL, &revision, &err));
    assert_non_null(strstr(err.message, "not"));
    assert_int_equal(current_revision(f->db), first);
    /* The right revision: written. */
    assert_store_ok(store_put_service(f->db, &service, first, NULL, &revision, &err));
    assert_int_equal(revision, first + 1);
    /* "Must exist" on an absent entity. */
    set_str(&service.name, "api");
    assert_store(STORE_PRECONDITION_FAILED,
                 store_put_service(f->db, &service, STORE_IF_EXISTS, NULL, &revision, &err));
    assert_store(STORE_NOT_FOUND, store_get_service(f->db, "api", &service, &err));
    model_service_clear(&service);

    int64_t endpoint_revision = put_endpoint(f->db, "web", "e1", 0, 1000);
    assert_store(STORE_PRECONDITION_FAILED,
                 store_delete_endpoint(f->db, "web", "e1", endpoint_revision - 1, &revision, &err));
    assert_store_ok(store_delete_endpoint(f->db, "web", "e1", endpoint_revision, &revision, &err));

    int64_t routes_revision = put_routes(f->db, "web");
    assert_store(STORE_PRECONDITION_FAILED,
                 store_delete_routes(f->db, "web", routes_revision + 1, &revision, &err));
    assert_store_ok(store_delete_routes(f->db, "web", STORE_IF_EXISTS, &revision, &err));
    assert_store(STORE_PRECONDITION_FAILED,
                 store_delete_policy(f->db, "web", STORE_IF_EXISTS, &revision, &err));
    int64_t before = current_revision(f->db);
    assert_store(STORE_PRECONDITION_FAILED,
                 store_delete_service(f->db, "web", first, &revision, &err));
    assert_int_equal(current_revision(f->db), before);
    assert_store_ok(store_delete_service(f->db, "web", first + 1, &revision, &err));
}

/* ---- proxies: pruning (store_prune_proxies) ------------------------------------ */

/* Saves one proxy with one type row; connected or not, last seen at last_seen_ms. */
static void save_one_proxy(store *db, const char *node_id, bool connected, int64_t last_seen_ms)
{
    model_proxy proxy;
    make_proxy(&proxy, node_id, "", "svc", "default", "delta", connected, 1, last_seen_ms);
    add_type(&proxy, CDS, "1", 1, "1", 1, NULL, NULL, 0);
    store_error err;
    assert_store_ok(store_save_proxies(db, &proxy, 1, &err));
    model_proxy_clear(&proxy);
}

/* The node ids listed, comma-separated in list order, into out. */
static void listed_node_ids(store *db, char *out, size_t size)
{
    model_proxy_list list = {0};
    store_error err;
    assert_store_ok(store_list_proxies(db, 0, &list, &err));
    out[0] = '\0';
    for (size_t i = 0; i < list.count; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? "," : "", list.items[i].node_id);
    }
    model_proxy_list_free(&list);
}

/* Disconnected proxies last seen before the cut go (with their type rows);
 * connected ones stay however old, and nothing advances the revision. */
static void test_prune_proxies_by_age(void **state)
{
    fixture *f = *state;
    store_error err;
    save_one_proxy(f->db, "old-gone", false, 1000);
    save_one_proxy(f->db, "old-connected", true, 1000);
    save_one_proxy(f->db, "recent-gone", false, 5000);
    int64_t before = current_revision(f->db);

    size_t removed = 99;
    assert_store_ok(store_prune_proxies(f->db, 2000, 100, &removed, &err));
    assert_int_equal(removed, 1);
    char ids[256];
    listed_node_ids(f->db, ids, sizeof(ids));
    assert_string_equal(ids, "old-connected,recent-gone");
    assert_no_changes_since(f->db, before);

    /* Its type rows went with it: the same node id saved again has none. */
    model_proxy again;
    make_proxy(&again, "old-gone", "", "svc", "default", "delta", false, 1, 6000);
    assert_store_ok(store_save_proxies(f->db, &again, 1, &err));
    model_proxy_clear(&again);
    model_proxy_list list = {0};
    assert_store_ok(store_list_proxies(f->db, 0, &list, &err));
    const model_proxy *found = find_proxy(&list, "old-gone");
    assert_non_null(found);
    assert_int_equal(found->type_count, 0);
    model_proxy_list_free(&list);

    /* Nothing older than the cut: nothing removed; NULL removed is allowed. */
    assert_store_ok(store_prune_proxies(f->db, 2000, 100, NULL, &err));
    listed_node_ids(f->db, ids, sizeof(ids));
    assert_string_equal(ids, "old-connected,old-gone,recent-gone");
}

/* Beyond keep_at_most rows, the least recently seen go, disconnected ones
 * before connected ones. */
static void test_prune_proxies_by_count(void **state)
{
    fixture *f = *state;
    store_error err;
    save_one_proxy(f->db, "p1", true, 10); /* the oldest, but connected */
    save_one_proxy(f->db, "p2", false, 20);
    save_one_proxy(f->db, "p3", false, 30);
    save_one_proxy(f->db, "p4", false, 40);
    save_one_proxy(f->db, "p5", false, 50);

    size_t removed = 0;
    assert_store_ok(store_prune_proxies(f->db, 0, SIZE_MAX, &removed, &err));
    assert_int_equal(removed, 0);
    assert_store_ok(store_prune_proxies(f->db, 0, 3, &removed, &err));
    assert_int_equal(removed, 2);
    char ids[256];
    listed_node_ids(f->db, ids, sizeof(ids));
    assert_string_equal(ids, "p1,p4,p5");

    /* Age and count together, in one call. */
    save_one_proxy(f->db, "p6", false, 60);
    assert_store_ok(store_prune_proxies(f->db, 45, 2, &removed, &err));
    assert_int_equal(removed, 2); /* p4 by age, then p5 by count */
    listed_node_ids(f->db, ids, sizeof(ids));
    assert_string_equal(ids, "p1,p6");

    assert_store_ok(store_prune_proxies(f->db, 0, 0, &removed, &err));
    assert_int_equal(removed, 2);
    listed_node_ids(f->db, ids, sizeof(ids));
    assert_string_equal(ids, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conditional_writes, setup, teardown),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_open_bad_path),
        cmocka_unit_test_setup_teardown(test_service_created_then_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_all_fields_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_list_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_and_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_skips_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_endpoint_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_policy_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_replace_keeps_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_service_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_certificate_with_join_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_certificates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_in_background, setup, teardown),
        cmocka_unit_test_setup_teardown(test_certificates_recorded_concurrently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_proxies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_proxies_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_all_proxies_disconnected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_v1, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_migration_from_v2, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_synchronous_full, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_prune_proxies_by_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_proxies_by_count, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
