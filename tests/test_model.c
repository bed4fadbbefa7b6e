/*
 * test_model.c — unit tests of store/model.h: enum names, names, labels,
 * validation of services and endpoints, and the JSON form of routes and
 * policies (parsing, errors with the exact field path, round trips).
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

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);
    assert_non_null(copy);
    return copy;
}

/* Replaces an owned string field (frees what was there). */
static void set_str(char **slot, const char *value)
{
    free(*slot);
    *slot = value != NULL ? xstrdup(value) : NULL;
}

static void assert_nullable_string_equal(const char *a, const char *b)
{
    if (a == NULL) {
        assert_null(b);
    } else {
        assert_non_null(b);
        assert_string_equal(a, b);
    }
}

static json_t *load_json(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (doc == NULL) {
        fail_msg("test JSON does not parse: %s (line %d col %d)", jerr.text, jerr.line,
                 jerr.column);
    }
    return doc;
}

static void assert_labels_equal(const model_labels *a, const model_labels *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_string_equal(a->items[i].key, b->items[i].key);
        assert_string_equal(a->items[i].value, b->items[i].value);
    }
}

static void assert_rule_equal(const model_route_rule *a, const model_route_rule *b)
{
    assert_int_equal(a->path_match, b->path_match);
    assert_nullable_string_equal(a->path, b->path);
    assert_int_equal(a->header_count, b->header_count);
    for (size_t i = 0; i < a->header_count; i++) {
        assert_string_equal(a->headers[i].name, b->headers[i].name);
        assert_int_equal(a->headers[i].kind, b->headers[i].kind);
        assert_nullable_string_equal(a->headers[i].value, b->headers[i].value);
    }
    assert_int_equal(a->split_count, b->split_count);
    for (size_t i = 0; i < a->split_count; i++) {
        assert_labels_equal(&a->splits[i].subset, &b->splits[i].subset);
        assert_int_equal(a->splits[i].weight, b->splits[i].weight);
    }
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->has_retries, b->has_retries);
    if (a->has_retries) {
        const model_retry_policy *ra = &a->retries, *rb = &b->retries;
        assert_int_equal(ra->attempts, rb->attempts);
        assert_int_equal(ra->on, rb->on);
        assert_int_equal(ra->status_code_count, rb->status_code_count);
        for (size_t i = 0; i < ra->status_code_count; i++) {
            assert_int_equal(ra->status_codes[i], rb->status_codes[i]);
        }
        assert_int_equal(ra->per_try_timeout_ms, rb->per_try_timeout_ms);
        assert_int_equal(ra->backoff_base_ms, rb->backoff_base_ms);
        assert_int_equal(ra->backoff_max_ms, rb->backoff_max_ms);
    }
}

static void assert_routes_equal(const model_routes *a, const model_routes *b)
{
    assert_nullable_string_equal(a->service, b->service);
    assert_int_equal(a->rule_count, b->rule_count);
    for (size_t i = 0; i < a->rule_count; i++) {
        assert_rule_equal(&a->rules[i], &b->rules[i]);
    }
}

static void assert_policy_rules_equal(const model_policy_rule *a, const model_policy_rule *b,
                                      size_t count)
{
    for (size_t i = 0; i < count; i++) {
        assert_nullable_string_equal(a[i].from, b[i].from);
        assert_int_equal(a[i].method_count, b[i].method_count);
        for (size_t m = 0; m < a[i].method_count; m++) {
            assert_string_equal(a[i].methods[m], b[i].methods[m]);
        }
        assert_nullable_string_equal(a[i].path_prefix, b[i].path_prefix);
    }
}

static void assert_policy_equal(const model_policy *a, const model_policy *b)
{
    assert_nullable_string_equal(a->service, b->service);
    assert_int_equal(a->default_allow, b->default_allow);
    assert_int_equal(a->allow_count, b->allow_count);
    assert_policy_rules_equal(a->allow, b->allow, a->allow_count);
    assert_int_equal(a->deny_count, b->deny_count);
    assert_policy_rules_equal(a->deny, b->deny, a->deny_count);
}

/* Parses text as routes; the parse must succeed. */
static void parse_routes(const char *text, model_routes *out)
{
    json_t *doc = load_json(text);
    model_error err;
    memset(&err, 0, sizeof err);
    memset(out, 0, sizeof *out);
    bool ok = model_routes_from_json(doc, out, &err);
    json_decref(doc);
    if (!ok) {
        fail_msg("routes did not parse: field \"%s\": %s", err.field, err.message);
    }
}

/* Parses text as routes; the parse must fail naming exactly `field`, leave
 * *out cleared, and leak nothing (ASan checks the last part). */
static void expect_routes_error(const char *text, const char *field)
{
    json_t *doc = load_json(text);
    model_routes routes;
    memset(&routes, 0, sizeof routes);
    model_error err;
    memset(&err, 0, sizeof err);
    bool ok = model_routes_from_json(doc, &routes, &err);
    json_decref(doc);
    if (ok) {
        model_routes_clear(&routes);
        fail_msg("routes parsed but should fail at \"%s\": %s", field, text);
    }
    if (strcmp(err.field, field) != 0) {
        print_message("error field \"%s\" (message \"%s\"), expected \"%s\"\n", err.field,
                      err.message, field);
    }
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
    assert_null(routes.rules);
    assert_int_equal(routes.rule_count, 0);
    assert_null(routes.service);
    model_routes_clear(&routes); /* clearing a cleared value is harmless */
}

static void parse_policy(const char *text, model_policy *out)
{
    json_t *doc = load_json(text);
    model_error err;
    memset(&err, 0, sizeof err);
    memset(out, 0, sizeof *out);
    bool ok = model_policy_from_json(doc, out, &err);
    json_decref(doc);
    if (!ok) {
        fail_msg("policy did not parse: field \"%s\": %s", err.field, err.message);
    }
}

static void expect_policy_error(const char *text, const char *field)
{
    json_t *doc = load_json(text);
    model_policy policy;
    memset(&policy, 0, sizeof policy);
    model_error err;
    memset(&err, 0, sizeof err);
    bool ok = model_policy_from_json(doc, &policy, &err);
    json_decref(doc);
    if (ok) {
        model_policy_clear(&policy);
        fail_msg("policy parsed but should fail at \"%s\": %s", field, text);
    }
    if (strcmp(err.field, field) != 0) {
        print_message("error field \"%s\" (message \"%s\"), expected \"%s\"\n", err.field,
                      err.message, field);
    }
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
    assert_null(policy.allow);
    assert_int_equal(policy.allow_count, 0);
    assert_null(policy.deny);
    assert_int_equal(policy.deny_count, 0);
    model_policy_clear(&policy);
}

/* A service that is valid: defaults plus a name. */
static void make_service(model_service *service, const char *name)
{
    model_service_init(service);
    set_str(&service->name, name);
}

/* Validates and expects failure at `field`. */
static void expect_service_invalid(const model_service *service, const char *field)
{
    model_error err;
    memset(&err, 0, sizeof err);
    bool ok = model_service_validate(service, &err);
    assert_false(ok);
    if (strcmp(err.field, field) != 0) {
        print_message("error field \"%s\" (message \"%s\"), expected \"%s\"\n", err.field,
                      err.message, field);
    }
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
}

static void expect_service_valid(const model_service *service)
{
    model_error err;
    memset(&err, 0, sizeof err);
    if (!model_service_validate(service, &err)) {
        fail_msg("service unexpectedly invalid: field \"%s\": %s", err.field, err.message);
    }
}

static void make_endpoint(model_endpoint *endpoint, const char *address)
{
    model_endpoint_init(endpoint);
    set_str(&endpoint->service, "web");
    set_str(&endpoint->id, "web-1");
    set_str(&endpoint->address, address);
    endpoint->port = 8080;
}

static void expect_endpoint_invalid(const model_endpoint *endpoint, const char *field)
{
    model_error err;
    memset(&err, 0, sizeof err);
    bool ok = model_endpoint_validate(endpoint, &err);
    assert_false(ok);
    if (strcmp(err.field, field) != 0) {
        print_message("error field \"%s\" (message \"%s\"), expected \"%s\"\n", err.field,
                      err.message, field);
    }
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
}

static void expect_endpoint_valid(const model_endpoint *endpoint)
{
    model_error err;
    memset(&err, 0, sizeof err);
    if (!model_endpoint_validate(endpoint, &err)) {
        fail_msg("endpoint unexpectedly invalid: field \"%s\": %s", err.field, err.message);
    }
}

/* ---- enums ------------------------------------------------------------------ */

static void test_protocol_names(void **state)
{
    (void)state;
    const model_protocol all[] = {MODEL_PROTOCOL_HTTP, MODEL_PROTOCOL_GRPC, MODEL_PROTOCOL_TCP};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = model_protocol_name(all[i]);
        assert_non_null(name);
        model_protocol parsed = (model_protocol)-1;
        assert_true(model_protocol_parse(name, &parsed));
        assert_int_equal(parsed, all[i]);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(name, model_protocol_name(all[j]));
        }
    }
    assert_string_equal(model_protocol_name(MODEL_PROTOCOL_HTTP), "http");
    assert_string_equal(model_protocol_name(MODEL_PROTOCOL_GRPC), "grpc");
    assert_string_equal(model_protocol_name(MODEL_PROTOCOL_TCP), "tcp");

    model_protocol untouched = MODEL_PROTOCOL_TCP;
    assert_false(model_protocol_parse("udp", &untouched));
    assert_int_equal(untouched, MODEL_PROTOCOL_TCP);
    assert_false(model_protocol_parse("", &untouched));
    assert_false(model_protocol_parse("http ", &untouched));
    assert_int_equal(untouched, MODEL_PROTOCOL_TCP);
}

static void test_lb_policy_names(void **state)
{
    (void)state;
    const model_lb_policy all[] = {MODEL_LB_ROUND_ROBIN, MODEL_LB_LEAST_REQUEST, MODEL_LB_RANDOM,
                                   MODEL_LB_RING_HASH};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = model_lb_policy_name(all[i]);
        assert_non_null(name);
        model_lb_policy parsed = (model_lb_policy)-1;
        assert_true(model_lb_policy_parse(name, &parsed));
        assert_int_equal(parsed, all[i]);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(name, model_lb_policy_name(all[j]));
        }
    }
    assert_string_equal(model_lb_policy_name(MODEL_LB_ROUND_ROBIN), "round_robin");

    model_lb_policy untouched = MODEL_LB_RING_HASH;
    assert_false(model_lb_policy_parse("fastest", &untouched));
    assert_false(model_lb_policy_parse("", &untouched));
    assert_int_equal(untouched, MODEL_LB_RING_HASH);
}

static void test_health_names(void **state)
{
    (void)state;
    const model_health all[] = {MODEL_HEALTH_HEALTHY, MODEL_HEALTH_UNHEALTHY,
                                MODEL_HEALTH_DRAINING};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = model_health_name(all[i]);
        assert_non_null(name);
        model_health parsed = (model_health)-1;
        assert_true(model_health_parse(name, &parsed));
        assert_int_equal(parsed, all[i]);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(name, model_health_name(all[j]));
        }
    }
    assert_string_equal(model_health_name(MODEL_HEALTH_HEALTHY), "healthy");
    assert_string_equal(model_health_name(MODEL_HEALTH_UNHEALTHY), "unhealthy");
    assert_string_equal(model_health_name(MODEL_HEALTH_DRAINING), "draining");

    model_health untouched = MODEL_HEALTH_DRAINING;
    assert_false(model_health_parse("sick", &untouched));
    assert_false(model_health_parse("", &untouched));
    assert_int_equal(untouched, MODEL_HEALTH_DRAINING);
}

static void test_retry_condition_names(void **state)
{
    (void)state;
    assert_int_equal(model_retry_condition_parse("5xx"), MODEL_RETRY_ON_5XX);
    assert_int_equal(model_retry_condition_parse("gateway-error"), MODEL_RETRY_ON_GATEWAY_ERROR);
    assert_int_equal(model_retry_condition_parse("connect-failure"),
                     MODEL_RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(model_retry_condition_parse("reset"), MODEL_RETRY_ON_RESET);
    assert_int_equal(model_retry_condition_parse("retriable-status-codes"),
                     MODEL_RETRY_ON_RETRIABLE_STATUS_CODES);
    assert_int_equal(model_retry_condition_parse("4xx"), 0);
    assert_int_equal(model_retry_condition_parse(""), 0);
    assert_int_equal(model_retry_condition_parse("5XX"), 0);
}

static void test_kind_and_op_names(void **state)
{
    (void)state;
    const model_entity_kind kinds[] = {MODEL_KIND_SERVICE,    MODEL_KIND_ENDPOINT,
                                       MODEL_KIND_ROUTES,     MODEL_KIND_POLICY,
                                       MODEL_KIND_JOIN_TOKEN, MODEL_KIND_CERTIFICATE};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *name = model_entity_kind_name(kinds[i]);
        assert_non_null(name);
        assert_true(name[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(name, model_entity_kind_name(kinds[j]));
        }
    }
    const char *put = model_change_op_name(MODEL_CHANGE_PUT);
    const char *del = model_change_op_name(MODEL_CHANGE_DELETE);
    assert_non_null(put);
    assert_non_null(del);
    assert_string_not_equal(put, del);
}

/* ---- names ------------------------------------------------------------------ */

static void test_name_is_valid(void **state)
{
    (void)state;
    char name[80];

    assert_true(model_name_is_valid("web"));
    assert_true(model_name_is_valid("a"));
    assert_true(model_name_is_valid("0"));
    assert_true(model_name_is_valid("web-1-v2"));
    assert_false(model_name_is_valid("web-1.v2_x")); /* DNS-1123: no dots or underscores */
    assert_false(model_name_is_valid("web-"));       /* must end with a letter or digit */
    assert_true(model_name_is_valid("9lives"));

    memset(name, 'a', 63);
    name[63] = '\0';
    assert_true(model_name_is_valid(name)); /* exactly MODEL_NAME_MAX */
    memset(name, 'a', 64);
    name[64] = '\0';
    assert_false(model_name_is_valid(name)); /* one too long */

    assert_false(model_name_is_valid(""));
    assert_false(model_name_is_valid("Web"));
    assert_false(model_name_is_valid("WEB"));
    assert_false(model_name_is_valid("web!"));
    assert_false(model_name_is_valid("web service"));
    assert_false(model_name_is_valid("web/1"));
    assert_false(model_name_is_valid("caf\xc3\xa9"));
    assert_false(model_name_is_valid("-web"));
    assert_false(model_name_is_valid(".web"));
    assert_false(model_name_is_valid("_web"));
}

/* ---- labels ----------------------------------------------------------------- */

static void test_labels_set_get_sorted_replace(void **state)
{
    (void)state;
    model_labels labels = {0};

    assert_null(model_labels_get(&labels, "app"));
    assert_true(model_labels_set(&labels, "zone", "a"));
    assert_true(model_labels_set(&labels, "app", "web"));
    assert_true(model_labels_set(&labels, "version", "v1"));
    assert_true(model_labels_set(&labels, "b", "x"));
    assert_int_equal(labels.count, 4);
    assert_string_equal(labels.items[0].key, "app");
    assert_string_equal(labels.items[1].key, "b");
    assert_string_equal(labels.items[2].key, "version");
    assert_string_equal(labels.items[3].key, "zone");

    assert_string_equal(model_labels_get(&labels, "app"), "web");
    assert_string_equal(model_labels_get(&labels, "zone"), "a");
    assert_null(model_labels_get(&labels, "missing"));
    assert_null(model_labels_get(&labels, "ap"));

    /* Replace keeps keys unique and sorted. */
    assert_true(model_labels_set(&labels, "app", "api"));
    assert_int_equal(labels.count, 4);
    assert_string_equal(model_labels_get(&labels, "app"), "api");
    assert_string_equal(labels.items[0].key, "app");
    assert_string_equal(labels.items[0].value, "api");

    /* set copies its arguments. */
    char key[] = "tier";
    char value[] = "gold";
    assert_true(model_labels_set(&labels, key, value));
    key[0] = 'X';
    value[0] = 'X';
    assert_string_equal(model_labels_get(&labels, "tier"), "gold");
    assert_string_equal(labels.items[2].key, "tier");

    model_labels_clear(&labels);
    assert_int_equal(labels.count, 0);
    assert_null(model_labels_get(&labels, "app"));
    /* Reusable after clear. */
    assert_true(model_labels_set(&labels, "k", "v"));
    assert_int_equal(labels.count, 1);
    assert_string_equal(model_labels_get(&labels, "k"), "v");
    model_labels_clear(&labels);
}

static void test_labels_match(void **state)
{
    (void)state;
    model_labels labels = {0}, subset = {0}, empty = {0};
    assert_true(model_labels_set(&labels, "app", "web"));
    assert_true(model_labels_set(&labels, "version", "v1"));

    assert_true(model_labels_match(&labels, &empty));
    assert_true(model_labels_match(&empty, &empty));

    assert_true(model_labels_set(&subset, "app", "web"));
    assert_true(model_labels_match(&labels, &subset));
    assert_false(model_labels_match(&empty, &subset));

    assert_true(model_labels_set(&subset, "version", "v1"));
    assert_true(model_labels_match(&labels, &subset));

    assert_true(model_labels_set(&subset, "version", "v2"));
    assert_false(model_labels_match(&labels, &subset));

    model_labels_clear(&subset);
    assert_true(model_labels_set(&subset, "tier", "gold"));
    assert_false(model_labels_match(&labels, &subset));

    model_labels_clear(&subset);
    assert_true(model_labels_set(&subset, "app", "we"));
    assert_false(model_labels_match(&labels, &subset));

    model_labels_clear(&subset);
    model_labels_clear(&labels);
}

static void test_labels_copy(void **state)
{
    (void)state;
    model_labels labels = {0}, copy = {0};
    assert_true(model_labels_set(&labels, "version", "v1"));
    assert_true(model_labels_set(&labels, "app", "web"));

    assert_true(model_labels_copy(&copy, &labels));
    assert_labels_equal(&copy, &labels);
    assert_ptr_not_equal(copy.items, labels.items);
    assert_ptr_not_equal(copy.items[0].key, labels.items[0].key);
    assert_ptr_not_equal(copy.items[0].value, labels.items[0].value);

    /* Independent of the original. */
    assert_true(model_labels_set(&labels, "app", "api"));
    model_labels_clear(&labels);
    assert_int_equal(copy.count, 2);
    assert_string_equal(model_labels_get(&copy, "app"), "web");
    assert_string_equal(model_labels_get(&copy, "version"), "v1");

    /* Copy of an empty set. */
    model_labels empty = {0}, empty_copy = {0};
    assert_true(model_labels_copy(&empty_copy, &empty));
    assert_int_equal(empty_copy.count, 0);
    model_labels_clear(&empty_copy);
    model_labels_clear(&copy);
}

static void test_labels_json(void **state)
{
    (void)state;
    json_t *doc = load_json("{\"zone\":\"a\",\"app\":\"web\"}");
    model_labels labels = {0};
    model_error err;
    memset(&err, 0, sizeof err);
    assert_true(model_labels_from_json(doc, &labels, "labels", &err));
    assert_int_equal(labels.count, 2);
    assert_string_equal(labels.items[0].key, "app");
    assert_string_equal(labels.items[1].key, "zone");

    json_t *back = model_labels_to_json(&labels);
    assert_non_null(back);
    assert_true(json_equal(doc, back));
    json_decref(back);
    json_decref(doc);
    model_labels_clear(&labels);

    /* A value that is not a string is rejected, naming the labels field. */
    doc = load_json("{\"app\":\"web\",\"replicas\":3}");
    memset(&err, 0, sizeof err);
    assert_false(model_labels_from_json(doc, &labels, "labels", &err));
    assert_true(strncmp(err.field, "labels", 6) == 0);
    assert_true(err.message[0] != '\0');
    json_decref(doc);
    model_labels_clear(&labels);

    /* Not an object. */
    doc = load_json("[\"app\"]");
    memset(&err, 0, sizeof err);
    assert_false(model_labels_from_json(doc, &labels, "labels", &err));
    assert_string_equal(err.field, "labels");
    json_decref(doc);
    model_labels_clear(&labels);
}

/* ---- bounds on what one body may hold (issue 12, defects 9 and 14) ----------- */

#define NAME_64_CHARS "a123456789b123456789c123456789d123456789e123456789f123456789abcd"

static void expect_routes_validate(const model_routes *routes, const char *field);

/* {"k0":"v", ..., "k<count-1>":"v"} as text; the caller frees it. */
static char *labels_text(size_t count)
{
    json_t *object = json_object();
    assert_non_null(object);
    for (size_t i = 0; i < count; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%zu", i);
        json_object_set_new(object, key, json_string("v"));
    }
    char *text = json_dumps(object, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(object);
    assert_non_null(text);
    return text;
}

/* prefix + count copies of item joined by ',' + suffix; the caller frees it. */
static char *repeated(const char *prefix, const char *item, size_t count, const char *suffix)
{
    size_t size = strlen(prefix) + count * (strlen(item) + 1) + strlen(suffix) + 1;
    char *text = malloc(size);
    assert_non_null(text);
    size_t used = (size_t)snprintf(text, size, "%s", prefix);
    for (size_t i = 0; i < count; i++)
        used += (size_t)snprintf(text + used, size - used, "%s%s", i ? "," : "", item);
    snprintf(text + used, size - used, "%s", suffix);
    return text;
}

static void test_labels_bounded(void **state)
{
    (void)state;
    model_labels labels = {0};
    model_error err;
    /* 64 labels: accepted, sorted by key. */
    char *text = labels_text(MODEL_LABELS_MAX);
    json_t *doc = load_json(text);
    free(text);
    assert_true(model_labels_from_json(doc, &labels, "labels", &err));
    assert_int_equal(labels.count, MODEL_LABELS_MAX);
    for (size_t i = 1; i < labels.count; i++)
        assert_true(strcmp(labels.items[i - 1].key, labels.items[i].key) < 0);
    json_decref(doc);
    model_labels_clear(&labels);
    /* 65, and 20,000 (before: accepted, quadratic): refused naming the field. */
    size_t counts[] = {MODEL_LABELS_MAX + 1, 20000};
    for (size_t c = 0; c < 2; c++) {
        text = labels_text(counts[c]);
        doc = load_json(text);
        free(text);
        memset(&err, 0, sizeof err);
        assert_false(model_labels_from_json(doc, &labels, "labels", &err));
        assert_string_equal(err.field, "labels");
        assert_int_equal(labels.count, 0);
        assert_null(labels.items);
        json_decref(doc);
    }
    /* The same bound in an endpoint and in a split's subset. */
    text = labels_text(MODEL_LABELS_MAX + 1);
    char body[4096];
    snprintf(body, sizeof(body), "{\"address\":\"10.0.0.1\",\"port\":80,\"labels\":%s}", text);
    doc = load_json(body);
    model_endpoint endpoint;
    memset(&err, 0, sizeof err);
    assert_false(model_endpoint_from_json(doc, "web", "e1", "", &endpoint, &err));
    assert_string_equal(err.field, "labels");
    json_decref(doc);
    snprintf(body, sizeof(body), "{\"rules\":[{\"split\":[{\"subset\":%s,\"weight\":1}]}]}", text);
    free(text);
    expect_routes_error(body, "rules[0].split[0].subset");
    /* Long keys and values are refused too (63 bytes each). */
    expect_routes_error("{\"rules\":[{\"split\":[{\"subset\":{\"k\":\"" NAME_64_CHARS
                        "\"},\"weight\":1}]}]}",
                        "rules[0].split[0].subset.k");
}

static void test_route_arrays_bounded(void **state)
{
    (void)state;
    char *text = repeated("{\"rules\":[", "{}", MODEL_RULES_MAX + 1, "]}");
    expect_routes_error(text, "rules");
    free(text);
    text = repeated("{\"rules\":[", "{}", MODEL_RULES_MAX, "]}");
    model_routes routes;
    parse_routes(text, &routes);
    model_routes_clear(&routes);
    free(text);
    text = repeated("{\"rules\":[{\"split\":[", "{\"subset\":{\"v\":\"a\"},\"weight\":1}",
                    MODEL_SPLITS_MAX + 1, "]}]}");
    expect_routes_error(text, "rules[0].split");
    free(text);
    text = repeated("{\"rules\":[{\"match\":{\"headers\":[", "{\"name\":\"a\",\"present\":true}",
                    MODEL_HEADER_MATCHES_MAX + 1, "]}}]}");
    expect_routes_error(text, "rules[0].match.headers");
    free(text);
    text = repeated("{\"rules\":[{\"retries\":{\"on\":[\"retriable-status-codes\"],"
                    "\"status_codes\":[",
                    "503", MODEL_STATUS_CODES_MAX + 1, "]}}]}");
    expect_routes_error(text, "rules[0].retries.status_codes");
    free(text);
    text =
        repeated("{\"rules\":[{\"retries\":{\"on\":[", "\"5xx\"", MODEL_RETRY_ON_MAX + 1, "]}}]}");
    expect_routes_error(text, "rules[0].retries.on");
    free(text);
    /* A header value of more than 1024 bytes. */
    char *value = malloc(MODEL_HEADER_VALUE_MAX + 2);
    assert_non_null(value);
    memset(value, 'x', MODEL_HEADER_VALUE_MAX + 1);
    value[MODEL_HEADER_VALUE_MAX + 1] = '\0';
    text = repeated("{\"rules\":[{\"match\":{\"headers\":[{\"name\":\"a\",\"exact\":\"", value, 1,
                    "\"}]}}]}");
    expect_routes_error(text, "rules[0].match.headers[0].exact");
    free(text);
    free(value);
}

static void test_empty_split_and_prefix_refused(void **state)
{
    (void)state;
    /* Absent split: the whole service. An empty one meant nowhere, and was accepted. */
    expect_routes_error("{\"rules\":[{\"split\":[]}]}", "rules[0].split");
    model_routes routes;
    parse_routes("{\"rules\":[{\"timeout_ms\":5}]}", &routes);
    assert_int_equal(routes.rules[0].split_count, 0);
    model_routes_clear(&routes);
    /* An empty prefix matches every value; the proxies refuse it, so does the model. */
    expect_routes_error(
        "{\"rules\":[{\"match\":{\"headers\":[{\"name\":\"x-v\",\"prefix\":\"\"}]}}]}",
        "rules[0].match.headers[0].prefix");
    parse_routes("{\"rules\":[{\"match\":{\"headers\":[{\"name\":\"x-v\",\"prefix\":\"v\"}]}}]}",
                 &routes);
    /* ... and model_routes_validate says the same of a struct built in code. */
    free(routes.rules[0].headers[0].value);
    routes.rules[0].headers[0].value = strdup("");
    expect_routes_validate(&routes, "rules[0].match.headers[0].prefix");
    model_routes_clear(&routes);
}

static void test_service_and_policy_arrays_bounded(void **state)
{
    (void)state;
    model_service service;
    model_error err;
    char *text = repeated("{\"dependencies\":[", "\"a\"", MODEL_DEPENDENCIES_MAX + 1, "]}");
    json_t *doc = load_json(text);
    free(text);
    memset(&err, 0, sizeof err);
    assert_false(model_service_from_json(doc, "web", &service, &err));
    assert_string_equal(err.field, "dependencies");
    json_decref(doc);
    /* 1,024 distinct dependencies pass; a repeat is named at its second place. */
    json_t *names = json_array();
    for (size_t i = 0; i < MODEL_DEPENDENCIES_MAX; i++) {
        char name[32];
        snprintf(name, sizeof(name), "svc-%zu", i);
        json_array_append_new(names, json_string(name));
    }
    doc = json_pack("{s:o}", "dependencies", names);
    assert_true(model_service_from_json(doc, "web", &service, &err));
    model_service_clear(&service);
    json_array_set_new(names, 700, json_string("svc-3"));
    memset(&err, 0, sizeof err);
    assert_false(model_service_from_json(doc, "web", &service, &err));
    assert_string_equal(err.field, "dependencies[700]");
    json_decref(doc);

    model_policy policy;
    text = repeated("{\"allow\":[", "{\"from\":\"a\"}", MODEL_POLICY_RULES_MAX + 1, "]}");
    doc = load_json(text);
    free(text);
    memset(&err, 0, sizeof err);
    assert_false(model_policy_from_json(doc, &policy, &err));
    assert_string_equal(err.field, "allow");
    json_decref(doc);
    text = repeated("{\"deny\":[{\"methods\":[", "\"GET\"", MODEL_METHODS_MAX + 1, "]}]}");
    doc = load_json(text);
    free(text);
    memset(&err, 0, sizeof err);
    assert_false(model_policy_from_json(doc, &policy, &err));
    assert_string_equal(err.field, "deny[0].methods");
    json_decref(doc);
}

/* ---- services --------------------------------------------------------------- */

static void test_service_init_defaults(void **state)
{
    (void)state;
    model_service service;
    memset(&service, 0xAB, sizeof service); /* init must not rely on zeroed memory */
    model_service_init(&service);
    assert_null(service.name);
    if (service.namespace_name != NULL) {
        assert_string_equal(service.namespace_name, "default");
    }
    assert_int_equal(service.protocol, MODEL_PROTOCOL_HTTP);
    assert_int_equal(service.lb_policy, MODEL_LB_ROUND_ROBIN);
    assert_int_equal(service.connect_timeout_ms, 1000);
    assert_false(service.has_outlier_detection);
    assert_false(service.has_circuit_breaker);
    assert_false(service.has_dependencies);
    assert_null(service.dependencies);
    assert_int_equal(service.dependency_count, 0);
    model_service_clear(&service);

    /* Reusable after clear + init. */
    model_service_init(&service);
    set_str(&service.name, "web");
    expect_service_valid(&service);
    model_service_clear(&service);
}

static void test_service_validate(void **state)
{
    (void)state;
    model_service service;

    make_service(&service, "web");
    expect_service_valid(&service);

    /* Name. */
    set_str(&service.name, "Web");
    expect_service_invalid(&service, "name");
    set_str(&service.name, "web!");
    expect_service_invalid(&service, "name");
    set_str(&service.name, "");
    expect_service_invalid(&service, "name");
    set_str(&service.name, NULL);
    expect_service_invalid(&service, "name");
    set_str(&service.name, "web");

    /* Connect timeout: 1..60000. */
    service.connect_timeout_ms = 0;
    expect_service_invalid(&service, "connect_timeout_ms");
    service.connect_timeout_ms = 60001;
    expect_service_invalid(&service, "connect_timeout_ms");
    service.connect_timeout_ms = 60000;
    expect_service_valid(&service);
    service.connect_timeout_ms = 1;
    expect_service_valid(&service);
    service.connect_timeout_ms = 1000;

    /* Outlier detection, only checked when present. */
    service.outlier_detection = (model_outlier_detection){0};
    expect_service_valid(&service);
    service.has_outlier_detection = true;
    service.outlier_detection = (model_outlier_detection){.consecutive_5xx = 5,
                                                          .interval_ms = 10000,
                                                          .base_ejection_time_ms = 30000,
                                                          .max_ejection_percent = 10};
    expect_service_valid(&service);
    service.outlier_detection.max_ejection_percent = 0;
    expect_service_invalid(&service, "outlier_detection.max_ejection_percent");
    service.outlier_detection.max_ejection_percent = 101;
    expect_service_invalid(&service, "outlier_detection.max_ejection_percent");
    service.outlier_detection.max_ejection_percent = 100;
    expect_service_valid(&service);
    service.outlier_detection.max_ejection_percent = 1;
    expect_service_valid(&service);
    service.outlier_detection.consecutive_5xx = 0;
    expect_service_invalid(&service, "outlier_detection.consecutive_5xx");
    service.outlier_detection.consecutive_5xx = 5;

    /* Circuit breaker: zeros mean "not set" and are valid. */
    service.has_circuit_breaker = true;
    service.circuit_breaker = (model_circuit_breaker){0};
    expect_service_valid(&service);
    service.circuit_breaker.max_connections = 1024;
    expect_service_valid(&service);

    /* Dependencies: each must be a valid service name. */
    service.has_dependencies = true;
    service.dependencies = calloc(3, sizeof *service.dependencies);
    assert_non_null(service.dependencies);
    service.dependencies[0] = xstrdup("api");
    service.dependencies[1] = xstrdup("db");
    service.dependency_count = 2;
    expect_service_valid(&service);
    set_str(&service.dependencies[1], "Bad Name!");
    expect_service_invalid(&service, "dependencies[1]");
    set_str(&service.dependencies[1], "db");
    service.dependencies[2] = xstrdup("-cache");
    service.dependency_count = 3;
    expect_service_invalid(&service, "dependencies[2]");

    model_service_clear(&service);
}

/* ---- endpoints -------------------------------------------------------------- */

static void test_endpoint_init_defaults(void **state)
{
    (void)state;
    model_endpoint endpoint;
    memset(&endpoint, 0xAB, sizeof endpoint);
    model_endpoint_init(&endpoint);
    assert_null(endpoint.service);
    assert_null(endpoint.id);
    assert_null(endpoint.address);
    assert_int_equal(endpoint.weight, 1);
    assert_int_equal(endpoint.labels.count, 0);
    assert_int_equal(endpoint.health, MODEL_HEALTH_HEALTHY);
    assert_int_equal(endpoint.ttl_s, 0);
    assert_int_equal(endpoint.proxy_port, 0);
    model_endpoint_clear(&endpoint);
}

static void test_endpoint_validate(void **state)
{
    (void)state;
    model_endpoint endpoint;
    make_endpoint(&endpoint, "10.0.0.1");
    expect_endpoint_valid(&endpoint);

    /* Weight 1..128. */
    endpoint.weight = 0;
    expect_endpoint_invalid(&endpoint, "weight");
    endpoint.weight = 129;
    expect_endpoint_invalid(&endpoint, "weight");
    endpoint.weight = MODEL_ENDPOINT_WEIGHT_MAX;
    expect_endpoint_valid(&endpoint);
    endpoint.weight = 1;

    /* Port 1..65535. */
    endpoint.port = 0;
    expect_endpoint_invalid(&endpoint, "port");
    endpoint.port = 65535;
    expect_endpoint_valid(&endpoint);
    endpoint.port = 8080;

    /* Address: an IP literal. */
    set_str(&endpoint.address, "not-an-ip");
    expect_endpoint_invalid(&endpoint, "address");
    set_str(&endpoint.address, "10.0.0.256");
    expect_endpoint_invalid(&endpoint, "address");
    set_str(&endpoint.address, "");
    expect_endpoint_invalid(&endpoint, "address");
    set_str(&endpoint.address, "::1");
    expect_endpoint_valid(&endpoint);
    set_str(&endpoint.address, "fd00::1:2");
    expect_endpoint_valid(&endpoint);
    set_str(&endpoint.address, "127.0.0.1");
    expect_endpoint_valid(&endpoint);

    /* TTL 0..MODEL_TTL_MAX_S. */
    endpoint.ttl_s = MODEL_TTL_MAX_S + 1;
    expect_endpoint_invalid(&endpoint, "ttl_s");
    endpoint.ttl_s = MODEL_TTL_MAX_S;
    expect_endpoint_valid(&endpoint);
    endpoint.ttl_s = 10;
    expect_endpoint_valid(&endpoint);

    /* Id. */
    set_str(&endpoint.id, "Web 1");
    expect_endpoint_invalid(&endpoint, "id");
    set_str(&endpoint.id, "web-1");

    /* Labels are free-form but kept. */
    assert_true(model_labels_set(&endpoint.labels, "version", "v1"));
    expect_endpoint_valid(&endpoint);

    model_endpoint_clear(&endpoint);
}

/* ---- routes ----------------------------------------------------------------- */

static const char *const FULL_ROUTES =
    "{\"rules\":[{\"match\":{\"path_prefix\":\"/api\",\"headers\":["
    "{\"name\":\"x-canary\",\"exact\":\"1\"},{\"name\":\"x-debug\",\"present\":true}]},"
    "\"split\":[{\"subset\":{\"version\":\"v1\"},\"weight\":90},"
    "{\"subset\":{\"version\":\"v2\"},\"weight\":10}],"
    "\"timeout_ms\":2000,"
    "\"retries\":{\"attempts\":3,\"on\":[\"5xx\",\"connect-failure\"],"
    "\"per_try_timeout_ms\":500,\"backoff_base_ms\":25,\"backoff_max_ms\":250}}]}";

static void test_routes_full_document(void **state)
{
    (void)state;
    model_routes routes;
    parse_routes(FULL_ROUTES, &routes);

    assert_null(routes.service);
    assert_int_equal(routes.rule_count, 1);
    const model_route_rule *rule = &routes.rules[0];
    assert_int_equal(rule->path_match, MODEL_PATH_PREFIX);
    assert_string_equal(rule->path, "/api");

    assert_int_equal(rule->header_count, 2);
    assert_string_equal(rule->headers[0].name, "x-canary");
    assert_int_equal(rule->headers[0].kind, MODEL_HEADER_EXACT);
    assert_string_equal(rule->headers[0].value, "1");
    assert_string_equal(rule->headers[1].name, "x-debug");
    assert_int_equal(rule->headers[1].kind, MODEL_HEADER_PRESENT);
    assert_null(rule->headers[1].value);

    assert_int_equal(rule->split_count, 2);
    assert_int_equal(rule->splits[0].subset.count, 1);
    assert_string_equal(model_labels_get(&rule->splits[0].subset, "version"), "v1");
    assert_int_equal(rule->splits[0].weight, 90);
    assert_int_equal(rule->splits[1].subset.count, 1);
    assert_string_equal(model_labels_get(&rule->splits[1].subset, "version"), "v2");
    assert_int_equal(rule->splits[1].weight, 10);

    assert_int_equal(rule->timeout_ms, 2000);
    assert_true(rule->has_retries);
    assert_int_equal(rule->retries.attempts, 3);
    assert_int_equal(rule->retries.on, MODEL_RETRY_ON_5XX | MODEL_RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(rule->retries.status_code_count, 0);
    assert_int_equal(rule->retries.per_try_timeout_ms, 500);
    assert_int_equal(rule->retries.backoff_base_ms, 25);
    assert_int_equal(rule->retries.backoff_max_ms, 250);

    model_routes_clear(&routes);
}

/* Parses text, serializes, parses again: both parses must be equal. */
static void check_routes_round_trip(const char *text)
{
    model_routes first, second;
    parse_routes(text, &first);

    json_t *json = model_routes_to_json(&first);
    assert_non_null(json);
    assert_true(json_is_object(json));
    assert_true(json_is_array(json_object_get(json, "rules")));

    model_error err;
    memset(&err, 0, sizeof err);
    memset(&second, 0, sizeof second);
    if (!model_routes_from_json(json, &second, &err)) {
        char *dump = json_dumps(json, JSON_COMPACT);
        print_message("to_json output does not parse back: %s\n", dump ? dump : "?");
        free(dump);
        json_decref(json);
        fail_msg("field \"%s\": %s", err.field, err.message);
    }
    assert_routes_equal(&first, &second);

    /* And serializing the second gives the same JSON. */
    json_t *again = model_routes_to_json(&second);
    assert_non_null(again);
    assert_true(json_equal(json, again));
    json_decref(again);
    json_decref(json);
    model_routes_clear(&first);
    model_routes_clear(&second);
}

static void test_routes_round_trip(void **state)
{
    (void)state;
    check_routes_round_trip(FULL_ROUTES);
    /* Several rules, exact path, prefix header, no split, no retries. */
    check_routes_round_trip(
        "{\"rules\":["
        "{\"match\":{\"path_exact\":\"/healthz\"},\"timeout_ms\":100},"
        "{\"match\":{\"headers\":[{\"name\":\"x-user\",\"prefix\":\"beta-\"}]},"
        "\"split\":[{\"subset\":{\"version\":\"v2\",\"zone\":\"a\"},"
        "\"weight\":1}]},"
        "{\"retries\":{\"attempts\":1,\"on\":[\"reset\",\"gateway-error\"]}}]}");
    /* No rules at all. */
    check_routes_round_trip("{\"rules\":[]}");
}

static void test_routes_parse_variants(void **state)
{
    (void)state;
    model_routes routes;
    parse_routes("{\"rules\":[{\"match\":{\"path_exact\":\"/x\",\"headers\":["
                 "{\"name\":\"x-user\",\"prefix\":\"beta-\"}]}},{}]}",
                 &routes);
    assert_int_equal(routes.rule_count, 2);
    assert_int_equal(routes.rules[0].path_match, MODEL_PATH_EXACT);
    assert_string_equal(routes.rules[0].path, "/x");
    assert_int_equal(routes.rules[0].header_count, 1);
    assert_int_equal(routes.rules[0].headers[0].kind, MODEL_HEADER_PREFIX);
    assert_string_equal(routes.rules[0].headers[0].value, "beta-");
    assert_int_equal(routes.rules[0].split_count, 0);
    assert_false(routes.rules[0].has_retries);
    assert_int_equal(routes.rules[0].timeout_ms, 0);
    /* An empty rule matches everything. */
    assert_int_equal(routes.rules[1].path_match, MODEL_PATH_ANY);
    assert_null(routes.rules[1].path);
    assert_int_equal(routes.rules[1].header_count, 0);
    model_routes_clear(&routes);
}

static void test_routes_errors(void **state)
{
    (void)state;
    /* Split weight must be > 0. */
    expect_routes_error("{\"rules\":[{\"match\":{\"path_prefix\":\"/api\"},\"split\":["
                        "{\"subset\":{\"version\":\"v1\"},\"weight\":90},"
                        "{\"subset\":{\"version\":\"v2\"},\"weight\":0}]}]}",
                        "rules[0].split[1].weight");
    /* The index of the rule is the failing rule's. */
    expect_routes_error("{\"rules\":[{\"match\":{\"path_prefix\":\"/a\"}},"
                        "{\"split\":[{\"subset\":{\"version\":\"v1\"},\"weight\":-5}]}]}",
                        "rules[1].split[0].weight");
    /* Both path conditions. */
    expect_routes_error(
        "{\"rules\":[{\"match\":{\"path_prefix\":\"/api\",\"path_exact\":\"/api/x\"}}]}",
        "rules[0].match");
    /* Unknown retry condition. */
    expect_routes_error("{\"rules\":[{\"match\":{\"path_prefix\":\"/api\"},"
                        "\"retries\":{\"attempts\":3,\"on\":[\"5xx\",\"teapot\"]}}]}",
                        "rules[0].retries.on[1]");
    /* Retry attempts 1..10. */
    expect_routes_error("{\"rules\":[{\"retries\":{\"attempts\":0,\"on\":[\"5xx\"]}}]}",
                        "rules[0].retries.attempts");
    expect_routes_error("{\"rules\":[{\"retries\":{\"attempts\":11,\"on\":[\"5xx\"]}}]}",
                        "rules[0].retries.attempts");
    /* backoff_max_ms >= backoff_base_ms when set. */
    expect_routes_error("{\"rules\":[{\"retries\":{\"attempts\":2,\"on\":[\"5xx\"],"
                        "\"backoff_base_ms\":100,\"backoff_max_ms\":50}}]}",
                        "rules[0].retries.backoff_max_ms");
    /* "rules" of the wrong type. */
    expect_routes_error("{\"rules\":{\"match\":{\"path_prefix\":\"/api\"}}}", "rules");
    expect_routes_error("{\"rules\":\"all\"}", "rules");
    /* Unknown keys are rejected, not ignored. */
    expect_routes_error("{\"rules\":[{\"match\":{\"path_prefix\":\"/api\"},\"timeout\":2000}]}",
                        "rules[0].timeout");
    /* A path that is not a string. */
    expect_routes_error("{\"rules\":[{\"match\":{\"path_prefix\":5}}]}",
                        "rules[0].match.path_prefix");
    /* A failure after earlier rules were fully built (nothing may leak). */
    expect_routes_error(
        "{\"rules\":[{\"match\":{\"path_prefix\":\"/api\",\"headers\":["
        "{\"name\":\"x-canary\",\"exact\":\"1\"}]},"
        "\"split\":[{\"subset\":{\"version\":\"v1\",\"zone\":\"a\"},\"weight\":90}],"
        "\"retries\":{\"attempts\":3,\"on\":[\"5xx\"]}},"
        "{\"match\":{\"path_prefix\":\"/b\"},\"split\":[{\"subset\":{\"version\":\"v1\"},"
        "\"weight\":1}],\"retries\":{\"attempts\":3,\"on\":[\"5xx\",\"connect-failure\","
        "\"nope\"]}}]}",
        "rules[1].retries.on[2]");
}

/* Validation of routes built in C (not through JSON), as the store does. */
static void expect_routes_validate(const model_routes *routes, const char *field)
{
    model_error err;
    memset(&err, 0, sizeof err);
    bool ok = model_routes_validate(routes, &err);
    if (field == NULL) {
        if (!ok) {
            fail_msg("routes unexpectedly invalid: field \"%s\": %s", err.field, err.message);
        }
        return;
    }
    assert_false(ok);
    if (strcmp(err.field, field) != 0) {
        print_message("error field \"%s\" (message \"%s\"), expected \"%s\"\n", err.field,
                      err.message, field);
    }
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
}

static void test_routes_validate(void **state)
{
    (void)state;
    model_routes routes;
    parse_routes(FULL_ROUTES, &routes);
    model_route_rule *rule = &routes.rules[0];
    expect_routes_validate(&routes, NULL);

    rule->splits[1].weight = 0;
    expect_routes_validate(&routes, "rules[0].split[1].weight");
    rule->splits[1].weight = 10;

    rule->retries.attempts = 11;
    expect_routes_validate(&routes, "rules[0].retries.attempts");
    rule->retries.attempts = 0;
    expect_routes_validate(&routes, "rules[0].retries.attempts");
    rule->retries.attempts = 10;
    expect_routes_validate(&routes, NULL);

    rule->retries.on = 0;
    expect_routes_validate(&routes, "rules[0].retries.on");
    rule->retries.on = MODEL_RETRY_ON_RESET;

    rule->retries.backoff_max_ms = 10; /* < base 25 */
    expect_routes_validate(&routes, "rules[0].retries.backoff_max_ms");
    rule->retries.backoff_max_ms = 0; /* unset is fine */
    expect_routes_validate(&routes, NULL);

    /* Retries are only checked when present. */
    rule->has_retries = false;
    rule->retries.attempts = 0;
    expect_routes_validate(&routes, NULL);

    model_routes_clear(&routes);
}

static void test_policy_validate(void **state)
{
    (void)state;
    model_policy policy;
    parse_policy("{\"default\":\"deny\",\"allow\":[{\"from\":\"web\",\"methods\":[\"GET\"],"
                 "\"path_prefix\":\"/api\"}],\"deny\":[{\"from\":\"batch\"}]}",
                 &policy);
    model_error err;
    memset(&err, 0, sizeof err);
    assert_true(model_policy_validate(&policy, &err));

    set_str(&policy.deny[0].from, "Not A Service");
    memset(&err, 0, sizeof err);
    assert_false(model_policy_validate(&policy, &err));
    assert_string_equal(err.field, "deny[0].from");
    set_str(&policy.deny[0].from, NULL); /* any caller */
    memset(&err, 0, sizeof err);
    assert_true(model_policy_validate(&policy, &err));
    model_policy_clear(&policy);
}

static void test_routes_not_an_object(void **state)
{
    (void)state;
    json_t *doc = load_json("[1,2]");
    model_routes routes;
    memset(&routes, 0, sizeof routes);
    model_error err;
    memset(&err, 0, sizeof err);
    assert_false(model_routes_from_json(doc, &routes, &err));
    assert_true(err.message[0] != '\0');
    assert_null(routes.rules);
    json_decref(doc);
    model_routes_clear(&routes);
}

/* ---- policies --------------------------------------------------------------- */

static void check_policy_round_trip(const char *text)
{
    model_policy first, second;
    parse_policy(text, &first);
    json_t *json = model_policy_to_json(&first);
    assert_non_null(json);
    model_error err;
    memset(&err, 0, sizeof err);
    memset(&second, 0, sizeof second);
    if (!model_policy_from_json(json, &second, &err)) {
        json_decref(json);
        fail_msg("policy to_json output does not parse back: field \"%s\": %s", err.field,
                 err.message);
    }
    assert_policy_equal(&first, &second);
    json_t *again = model_policy_to_json(&second);
    assert_non_null(again);
    assert_true(json_equal(json, again));
    json_decref(again);
    json_decref(json);
    model_policy_clear(&first);
    model_policy_clear(&second);
}

static void test_policy_parse(void **state)
{
    (void)state;
    const char *text = "{\"default\":\"deny\",\"allow\":[{\"from\":\"web\",\"methods\":[\"GET\"],"
                       "\"path_prefix\":\"/api\"}]}";
    model_policy policy;
    parse_policy(text, &policy);
    assert_null(policy.service);
    assert_false(policy.default_allow);
    assert_int_equal(policy.allow_count, 1);
    assert_string_equal(policy.allow[0].from, "web");
    assert_int_equal(policy.allow[0].method_count, 1);
    assert_string_equal(policy.allow[0].methods[0], "GET");
    assert_string_equal(policy.allow[0].path_prefix, "/api");
    assert_int_equal(policy.deny_count, 0);
    model_policy_clear(&policy);

    check_policy_round_trip(text);

    parse_policy("{\"default\":\"allow\",\"deny\":[{\"methods\":[\"POST\",\"DELETE\"]},"
                 "{\"from\":\"batch\"}]}",
                 &policy);
    assert_true(policy.default_allow);
    assert_int_equal(policy.allow_count, 0);
    assert_int_equal(policy.deny_count, 2);
    assert_null(policy.deny[0].from);
    assert_int_equal(policy.deny[0].method_count, 2);
    assert_string_equal(policy.deny[0].methods[0], "POST");
    assert_string_equal(policy.deny[0].methods[1], "DELETE");
    assert_null(policy.deny[0].path_prefix);
    assert_string_equal(policy.deny[1].from, "batch");
    assert_int_equal(policy.deny[1].method_count, 0);
    model_policy_clear(&policy);

    check_policy_round_trip("{\"default\":\"allow\",\"allow\":[{\"from\":\"web\"}],"
                            "\"deny\":[{\"methods\":[\"POST\",\"DELETE\"],"
                            "\"path_prefix\":\"/admin\"},{\"from\":\"batch\"}]}");
}

static void test_policy_errors(void **state)
{
    (void)state;
    expect_policy_error("{\"default\":\"maybe\",\"allow\":[{\"from\":\"web\"}]}", "default");
    expect_policy_error("{\"default\":true}", "default");
    expect_policy_error("{\"default\":\"deny\",\"allow\":{\"from\":\"web\"}}", "allow");
    expect_policy_error("{\"default\":\"deny\",\"allow\":[{\"from\":\"web\",\"methods\":[7]}]}",
                        "allow[0].methods[0]");
    expect_policy_error("{\"default\":\"deny\",\"allow\":[{\"from\":\"web\"}],"
                        "\"deny\":[{\"from\":\"a\"},{\"form\":\"web\"}]}",
                        "deny[1].form");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol_names),
        cmocka_unit_test(test_lb_policy_names),
        cmocka_unit_test(test_health_names),
        cmocka_unit_test(test_retry_condition_names),
        cmocka_unit_test(test_kind_and_op_names),
        cmocka_unit_test(test_name_is_valid),
        cmocka_unit_test(test_labels_set_get_sorted_replace),
        cmocka_unit_test(test_labels_match),
        cmocka_unit_test(test_labels_copy),
        cmocka_unit_test(test_labels_json),
        cmocka_unit_test(test_service_init_defaults),
        cmocka_unit_test(test_service_validate),
        cmocka_unit_test(test_endpoint_init_defaults),
        cmocka_unit_test(test_endpoint_validate),
        cmocka_unit_test(test_routes_full_document),
        cmocka_unit_test(test_routes_round_trip),
        cmocka_unit_test(test_routes_parse_variants),
        cmocka_unit_test(test_routes_errors),
        cmocka_unit_test(test_routes_validate),
        cmocka_unit_test(test_routes_not_an_object),
        cmocka_unit_test(test_policy_parse),
        cmocka_unit_test(test_policy_errors),
        cmocka_unit_test(test_policy_validate),
        cmocka_unit_test(test_labels_bounded),
        cmocka_unit_test(test_route_arrays_bounded),
        cmocka_unit_test(test_empty_split_and_prefix_refused),
        cmocka_unit_test(test_service_and_policy_arrays_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
