/*
 * test_openapi.c — docs/api/openapi.yaml against the server's route table:
 * every route atriumd serves (rest_api's table, /healthz and /metrics) is
 * documented under its exact pattern and method, every documented operation
 * is one the server serves, and every operation documents a 2xx response and
 * (all but /healthz) a 401.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "admin_http.h"
#include "rest_api.h"
#include "yaml_json.h"

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The HTTP methods OpenAPI allows as keys of a path item. */
static const char *const operation_keys[] = {"get",     "put",  "post",  "delete",
                                             "options", "head", "patch", "trace"};
/* The other keys a path item may hold. */
static const char *const path_item_keys[] = {"$ref", "summary", "description", "servers",
                                             "parameters"};

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static bool is_one_of(const char *key, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(key, names[i]) == 0)
            return true;
    }
    return false;
}

static int load_document(void **state)
{
    FILE *file = fopen(OPENAPI_PATH, "r");
    if (file == NULL) {
        print_error("cannot open %s\n", OPENAPI_PATH);
        return -1;
    }
    char error[256] = "";
    json_t *document = yaml_json_load(file, error, sizeof(error));
    fclose(file);
    if (document == NULL) {
        print_error("%s: %s\n", OPENAPI_PATH, error);
        return -1;
    }
    *state = document;
    return 0;
}

static int free_document(void **state)
{
    json_decref(*state);
    *state = NULL;
    return 0;
}

static json_t *paths_of(void **state)
{
    json_t *paths = json_object_get(*state, "paths");
    assert_true(json_is_object(paths));
    return paths;
}

/* The operation object at paths[pattern][method], method in any case; NULL
 * when absent. */
static json_t *operation_at(json_t *paths, const char *pattern, const char *method)
{
    char lower[16];
    size_t length = strlen(method);
    assert_true(length < sizeof(lower));
    for (size_t i = 0; i <= length; i++)
        lower[i] = (char)tolower((unsigned char)method[i]);
    return json_object_get(json_object_get(paths, pattern), lower);
}

/* Whether atriumd answers method (lower case) on pattern. */
static bool server_serves(const char *pattern, const char *method)
{
    if (strcmp(pattern, ADMIN_HTTP_HEALTH_PATH) == 0 ||
        strcmp(pattern, ADMIN_HTTP_METRICS_PATH) == 0)
        return strcmp(method, "get") == 0;
    for (size_t i = 0; i < rest_api_route_count(); i++) {
        const rest_route *route = rest_api_route_at(i);
        if (strcmp(rest_route_pattern(route), pattern) == 0 &&
            strcasecmp(rest_route_method(route), method) == 0)
            return true;
    }
    return false;
}

static void test_document_is_openapi_3(void **state)
{
    json_t *version = json_object_get(*state, "openapi");
    assert_true(json_is_string(version));
    assert_string_equal(json_string_value(version), "3.0.3");
    assert_true(json_is_object(json_object_get(*state, "info")));
    assert_true(json_object_size(paths_of(state)) > 0);
}

static void test_every_route_is_documented(void **state)
{
    json_t *paths = paths_of(state);
    size_t missing = 0;
    assert_true(rest_api_route_count() > 0);
    for (size_t i = 0; i < rest_api_route_count(); i++) {
        const rest_route *route = rest_api_route_at(i);
        assert_non_null(route);
        if (!json_is_object(
                operation_at(paths, rest_route_pattern(route), rest_route_method(route)))) {
            print_error("not documented: %s %s (paths[\"%s\"] has no operation for it)\n",
                        rest_route_method(route), rest_route_pattern(route),
                        rest_route_pattern(route));
            missing++;
        }
    }
    const char *outside_table[] = {ADMIN_HTTP_HEALTH_PATH, ADMIN_HTTP_METRICS_PATH};
    for (size_t i = 0; i < COUNT_OF(outside_table); i++) {
        if (!json_is_object(operation_at(paths, outside_table[i], "GET"))) {
            print_error("not documented: GET %s\n", outside_table[i]);
            missing++;
        }
    }
    assert_int_equal(missing, 0);
}

static void test_every_documented_operation_is_served(void **state)
{
    json_t *paths = paths_of(state);
    const char *pattern;
    json_t *item;
    size_t unknown = 0;
    json_object_foreach(paths, pattern, item)
    {
        if (!json_is_object(item)) {
            print_error("paths[\"%s\"] is not an object\n", pattern);
            unknown++;
            continue;
        }
        const char *key;
        json_t *operation;
        json_object_foreach(item, key, operation)
        {
            if (is_one_of(key, path_item_keys, COUNT_OF(path_item_keys)))
                continue;
            if (!is_one_of(key, operation_keys, COUNT_OF(operation_keys))) {
                print_error("paths[\"%s\"] has \"%s\", which is not a lower-case method\n", pattern,
                            key);
                unknown++;
            } else if (!server_serves(pattern, key)) {
                print_error("documented but not served: %s %s\n", key, pattern);
                unknown++;
            }
        }
    }
    assert_int_equal(unknown, 0);
}

static void test_every_operation_documents_success_and_401(void **state)
{
    json_t *paths = paths_of(state);
    const char *pattern;
    json_t *item;
    size_t faults = 0, operations = 0;
    json_object_foreach(paths, pattern, item)
    {
        const char *method;
        json_t *operation;
        json_object_foreach(item, method, operation)
        {
            if (!is_one_of(method, operation_keys, COUNT_OF(operation_keys)))
                continue;
            operations++;
            json_t *responses = json_object_get(operation, "responses");
            if (!json_is_object(responses)) {
                print_error("%s %s has no responses\n", method, pattern);
                faults++;
                continue;
            }
            bool success = false;
            const char *status;
            json_t *response;
            json_object_foreach(responses, status, response)
            {
                (void)response;
                if (status[0] == '2' && strlen(status) == 3)
                    success = true;
            }
            if (!success) {
                print_error("%s %s documents no 2xx response\n", method, pattern);
                faults++;
            }
            bool needs_token = strcmp(pattern, ADMIN_HTTP_HEALTH_PATH) != 0;
            if (needs_token && json_object_get(responses, "401") == NULL) {
                print_error("%s %s documents no 401 response\n", method, pattern);
                faults++;
            }
        }
    }
    assert_true(operations > 0);
    assert_int_equal(faults, 0);
}

/* The bearer token applies everywhere but /healthz. */
static void test_security(void **state)
{
    json_t *global = json_object_get(*state, "security");
    assert_true(json_is_array(global));
    assert_true(json_array_size(global) > 0);
    assert_non_null(json_object_get(json_array_get(global, 0), "bearerAuth"));
    json_t *schemes = json_object_get(json_object_get(*state, "components"), "securitySchemes");
    json_t *bearer = json_object_get(schemes, "bearerAuth");
    assert_string_equal(json_string_value(json_object_get(bearer, "type")), "http");
    assert_string_equal(json_string_value(json_object_get(bearer, "scheme")), "bearer");
    json_t *health = operation_at(paths_of(state), ADMIN_HTTP_HEALTH_PATH, "GET");
    json_t *health_security = json_object_get(health, "security");
    assert_true(json_is_array(health_security));
    assert_int_equal(json_array_size(health_security), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_is_openapi_3),
        cmocka_unit_test(test_every_route_is_documented),
        cmocka_unit_test(test_every_documented_operation_is_served),
        cmocka_unit_test(test_every_operation_documents_success_and_401),
        cmocka_unit_test(test_security),
    };
    return cmocka_run_group_tests(tests, load_document, free_document);
}
