/*
 * model.c — the mesh's data model: enum names, validation with field paths,
 * and the JSON form of route rules and policies. See model.h.
 */
#include "model.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_RULE                                                                                  \
    "a DNS-1123 label: 1-63 characters of [a-z0-9-], starting and ending with a letter or digit"
#define ROUTE_TIMEOUT_MAX_MS   3600000u
#define RETRY_ATTEMPTS_MAX     10u
#define SPLIT_WEIGHT_MAX       10000u
#define CONNECT_TIMEOUT_MAX_MS 60000u
#define HEADER_NAME_MAX        128u
#define PATH_MAX_LENGTH        ((unsigned)MODEL_PATH_MAX)
#define LABEL_PART_MAX         ((size_t)MODEL_LABEL_PART_MAX)

/* Fills error (when not NULL) and returns false, so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static bool fail(model_error *error, const char *field,
                                                       const char *format, ...)
{
    if (error == NULL)
        return false;
    snprintf(error->field, sizeof(error->field), "%s", field);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error->message, sizeof(error->message), format, arguments);
    va_end(arguments);
    return false;
}

/* Writes a field path; a path longer than the buffer is cut, which is fine
 * for a message. (A function, not snprintf, so that cutting is not a warning.) */
__attribute__((format(printf, 3, 4))) static void format_field(char *out, size_t size,
                                                               const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(out, size, format, arguments);
    va_end(arguments);
}

/* fail() for the member `key` of the object at path `field`: "field.key",
 * or "key" at the top level. The path is only built when something failed. */
__attribute__((format(printf, 4, 5))) static bool fail_at(model_error *error, const char *field,
                                                          const char *key, const char *format, ...)
{
    if (error == NULL)
        return false;
    format_field(error->field, sizeof(error->field), "%s%s%s", field, field[0] ? "." : "", key);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error->message, sizeof(error->message), format, arguments);
    va_end(arguments);
    return false;
}

/* ---- enums ---- */

static const char *const protocol_names[] = {"http", "grpc", "tcp"};
static const char *const lb_policy_names[] = {"round_robin", "least_request", "random",
                                              "ring_hash"};
static const char *const health_names[] = {"healthy", "unhealthy", "draining"};
static const char *const retry_condition_names[] = {"5xx", "gateway-error", "connect-failure",
                                                    "reset", "retriable-status-codes"};
static const char *const entity_kind_names[] = {"service", "endpoint",   "routes",
                                                "policy",  "join_token", "certificate"};
static const char *const change_op_names[] = {"put", "delete"};
static const char *const http_methods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                           "CONNECT", "OPTIONS", "TRACE", "PATCH"};

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static int name_index(const char *const *names, size_t count, const char *name)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(names[i], name) == 0)
            return (int)i;
    }
    return -1;
}

static const char *index_name(const char *const *names, size_t count, int index)
{
    return index >= 0 && (size_t)index < count ? names[index] : "unknown";
}

const char *model_protocol_name(model_protocol protocol)
{
    return index_name(protocol_names, COUNT_OF(protocol_names), (int)protocol);
}

bool model_protocol_parse(const char *name, model_protocol *out)
{
    int index = name_index(protocol_names, COUNT_OF(protocol_names), name);
    if (index < 0)
        return false;
    *out = (model_protocol)index;
    return true;
}

const char *model_lb_policy_name(model_lb_policy policy)
{
    return index_name(lb_policy_names, COUNT_OF(lb_policy_names), (int)policy);
}

bool model_lb_policy_parse(const char *name, model_lb_policy *out)
{
    int index = name_index(lb_policy_names, COUNT_OF(lb_policy_names), name);
    if (index < 0)
        return false;
    *out = (model_lb_policy)index;
    return true;
}

const char *model_health_name(model_health health)
{
    return index_name(health_names, COUNT_OF(health_names), (int)health);
}

bool model_health_parse(const char *name, model_health *out)
{
    int index = name_index(health_names, COUNT_OF(health_names), name);
    if (index < 0)
        return false;
    *out = (model_health)index;
    return true;
}

uint32_t model_retry_condition_parse(const char *name)
{
    int index = name_index(retry_condition_names, COUNT_OF(retry_condition_names), name);
    return index < 0 ? 0 : 1u << index;
}

const char *model_entity_kind_name(model_entity_kind kind)
{
    return index_name(entity_kind_names, COUNT_OF(entity_kind_names), (int)kind);
}

const char *model_change_op_name(model_change_op op)
{
    return index_name(change_op_names, COUNT_OF(change_op_names), (int)op);
}

/* ---- names ---- */

/* A DNS-1123 label: 1-63 of [a-z0-9-], starting and ending with [a-z0-9]. */
bool model_name_is_valid(const char *name)
{
    if (name == NULL)
        return false;
    size_t length = strlen(name);
    if (length == 0 || length > MODEL_NAME_MAX || name[0] == '-' || name[length - 1] == '-')
        return false;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-')
            return false;
    }
    return true;
}

/* Label keys: 1..63 of [A-Za-z0-9._/-]; values: 0..63 of [A-Za-z0-9._-].
 * Neither may hold '|', '=' or ',', which cluster names use as separators. */
static bool label_part_is_valid(const char *text, bool is_key)
{
    size_t length = strlen(text);
    if ((is_key && length == 0) || length > LABEL_PART_MAX)
        return false;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-' && !(is_key && c == '/'))
            return false;
    }
    return true;
}

static bool labels_validate(const model_labels *labels, const char *field, model_error *error)
{
    char path[160];
    if (labels->count > MODEL_LABELS_MAX)
        return fail(error, field, "at most %d labels (got %zu)", MODEL_LABELS_MAX, labels->count);
    for (size_t i = 0; i < labels->count; i++) {
        format_field(path, sizeof(path), "%s.%s", field, labels->items[i].key);
        if (!label_part_is_valid(labels->items[i].key, true))
            return fail(error, path, "label key must be 1-63 characters of [A-Za-z0-9._/-]");
        if (!label_part_is_valid(labels->items[i].value, false))
            return fail(error, path, "label value must be 0-63 characters of [A-Za-z0-9._-]");
    }
    return true;
}

/* ---- labels ---- */

static int label_compare(const void *left, const void *right)
{
    return strcmp(((const model_label *)left)->key, ((const model_label *)right)->key);
}

bool model_labels_set(model_labels *labels, const char *key, const char *value)
{
    for (size_t i = 0; i < labels->count; i++) {
        if (strcmp(labels->items[i].key, key) == 0) {
            char *copy = strdup(value);
            if (copy == NULL)
                return false;
            free(labels->items[i].value);
            labels->items[i].value = copy;
            return true;
        }
    }
    model_label *grown = realloc(labels->items, (labels->count + 1) * sizeof(*grown));
    if (grown == NULL)
        return false;
    labels->items = grown;
    char *key_copy = strdup(key);
    char *value_copy = strdup(value);
    if (key_copy == NULL || value_copy == NULL) {
        free(key_copy);
        free(value_copy);
        return false;
    }
    labels->items[labels->count].key = key_copy;
    labels->items[labels->count].value = value_copy;
    labels->count++;
    qsort(labels->items, labels->count, sizeof(model_label), label_compare);
    return true;
}

const char *model_labels_get(const model_labels *labels, const char *key)
{
    for (size_t i = 0; i < labels->count; i++) {
        if (strcmp(labels->items[i].key, key) == 0)
            return labels->items[i].value;
    }
    return NULL;
}

bool model_labels_match(const model_labels *labels, const model_labels *subset)
{
    for (size_t i = 0; i < subset->count; i++) {
        const char *value = model_labels_get(labels, subset->items[i].key);
        if (value == NULL || strcmp(value, subset->items[i].value) != 0)
            return false;
    }
    return true;
}

void model_labels_clear(model_labels *labels)
{
    for (size_t i = 0; i < labels->count; i++) {
        free(labels->items[i].key);
        free(labels->items[i].value);
    }
    free(labels->items);
    labels->items = NULL;
    labels->count = 0;
}

bool model_labels_copy(model_labels *out, const model_labels *from)
{
    for (size_t i = 0; i < from->count; i++) {
        if (!model_labels_set(out, from->items[i].key, from->items[i].value)) {
            model_labels_clear(out);
            return false;
        }
    }
    return true;
}

json_t *model_labels_to_json(const model_labels *labels)
{
    json_t *object = json_object();
    if (object == NULL)
        return NULL;
    for (size_t i = 0; i < labels->count; i++) {
        if (json_object_set_new(object, labels->items[i].key,
                                json_string(labels->items[i].value)) != 0) {
            json_decref(object);
            return NULL;
        }
    }
    return object;
}

bool model_labels_from_json(const json_t *object, model_labels *out, const char *field,
                            model_error *error)
{
    if (!json_is_object(object))
        return fail(error, field, "must be an object of string labels");
    /* The count first, before a byte is copied; a JSON object has unique
     * keys, so one sort makes the set (model_labels_set per key would search
     * and sort again for each: quadratic). */
    size_t count = json_object_size(object);
    if (count > MODEL_LABELS_MAX)
        return fail(error, field, "at most %d labels (got %zu)", MODEL_LABELS_MAX, count);
    model_labels_clear(out);
    if (count == 0) /* no labels: nothing to copy, sort or check */
        return true;
    /* An empty set with room for count labels, filled below. */
    *out = (model_labels){.items = calloc(count, sizeof(*out->items)), .count = 0};
    if (out->items == NULL)
        return fail(error, field, "out of memory");
    const char *key;
    json_t *value;
    char path[160];
    json_object_foreach((json_t *)object, key, value)
    {
        format_field(path, sizeof(path), "%s.%s", field, key);
        if (!json_is_string(value)) {
            model_labels_clear(out);
            return fail(error, path, "label value must be a string");
        }
        model_label *item = &out->items[out->count];
        item->key = strdup(key);
        item->value = strdup(json_string_value(value));
        out->count++;
        if (item->key == NULL || item->value == NULL) {
            model_labels_clear(out);
            return fail(error, path, "out of memory");
        }
    }
    if (out->count > 1)
        qsort(out->items, out->count, sizeof(model_label), label_compare);
    if (!labels_validate(out, field, error)) {
        model_labels_clear(out);
        return false;
    }
    return true;
}

/* ---- services ---- */

void model_service_init(model_service *service)
{
    memset(service, 0, sizeof(*service));
    service->protocol = MODEL_PROTOCOL_HTTP;
    service->lb_policy = MODEL_LB_ROUND_ROBIN;
    service->connect_timeout_ms = 1000;
}

void model_service_clear(model_service *service)
{
    free(service->name);
    free(service->namespace_name);
    for (size_t i = 0; i < service->dependency_count; i++)
        free(service->dependencies[i]);
    free(service->dependencies);
    memset(service, 0, sizeof(*service));
}

typedef struct indexed_name {
    const char *name;
    size_t index;
} indexed_name;

static int indexed_name_compare(const void *left, const void *right)
{
    const indexed_name *a = left, *b = right;
    int order = strcmp(a->name, b->name);
    return order != 0 ? order : (a->index > b->index) - (a->index < b->index);
}

/* Refuses a repeated dependency, naming its later occurrence; O(n log n). */
static bool dependencies_unique(const model_service *service, model_error *error)
{
    size_t count = service->dependency_count;
    if (count < 2)
        return true;
    indexed_name *sorted = malloc(count * sizeof(*sorted));
    if (sorted == NULL)
        return fail(error, "dependencies", "out of memory");
    for (size_t i = 0; i < count; i++)
        sorted[i] = (indexed_name){service->dependencies[i], i};
    qsort(sorted, count, sizeof(*sorted), indexed_name_compare);
    size_t duplicate = count;
    for (size_t i = 1; i < count; i++) {
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0 && sorted[i].index < duplicate)
            duplicate = sorted[i].index;
    }
    free(sorted);
    if (duplicate == count)
        return true;
    char path[64];
    format_field(path, sizeof(path), "dependencies[%zu]", duplicate);
    return fail(error, path, "duplicate dependency '%s'", service->dependencies[duplicate]);
}

bool model_service_validate(const model_service *service, model_error *error)
{
    if (!model_name_is_valid(service->name))
        return fail(error, "name", "service name must be " NAME_RULE);
    if (service->namespace_name != NULL && !model_name_is_valid(service->namespace_name))
        return fail(error, "namespace", "namespace must be " NAME_RULE);
    if ((unsigned)service->protocol > MODEL_PROTOCOL_TCP)
        return fail(error, "protocol", "protocol must be one of http, grpc, tcp");
    if ((unsigned)service->lb_policy > MODEL_LB_RING_HASH)
        return fail(error, "lb_policy",
                    "lb_policy must be one of round_robin, least_request, random, ring_hash");
    if (service->connect_timeout_ms < 1 || service->connect_timeout_ms > CONNECT_TIMEOUT_MAX_MS)
        return fail(error, "connect_timeout_ms", "connect_timeout_ms must be 1-%u",
                    CONNECT_TIMEOUT_MAX_MS);
    if (service->has_outlier_detection) {
        const model_outlier_detection *outlier = &service->outlier_detection;
        if (outlier->consecutive_5xx < 1)
            return fail(error, "outlier_detection.consecutive_5xx", "must be at least 1");
        if (outlier->interval_ms < 1)
            return fail(error, "outlier_detection.interval_ms", "must be at least 1");
        if (outlier->base_ejection_time_ms < 1)
            return fail(error, "outlier_detection.base_ejection_time_ms", "must be at least 1");
        if (outlier->max_ejection_percent < 1 || outlier->max_ejection_percent > 100)
            return fail(error, "outlier_detection.max_ejection_percent", "must be 1-100");
    }
    char path[64];
    if (service->dependency_count > MODEL_DEPENDENCIES_MAX)
        return fail(error, "dependencies", "at most %d dependencies (got %zu)",
                    MODEL_DEPENDENCIES_MAX, service->dependency_count);
    for (size_t i = 0; i < service->dependency_count; i++) {
        format_field(path, sizeof(path), "dependencies[%zu]", i);
        if (!model_name_is_valid(service->dependencies[i]))
            return fail(error, path, "must be a service name, " NAME_RULE);
    }
    return dependencies_unique(service, error);
}

/* ---- endpoints ---- */

void model_endpoint_init(model_endpoint *endpoint)
{
    memset(endpoint, 0, sizeof(*endpoint));
    endpoint->weight = 1;
    endpoint->health = MODEL_HEALTH_HEALTHY;
}

void model_endpoint_clear(model_endpoint *endpoint)
{
    free(endpoint->service);
    free(endpoint->id);
    free(endpoint->address);
    free(endpoint->zone);
    model_labels_clear(&endpoint->labels);
    memset(endpoint, 0, sizeof(*endpoint));
}

static bool address_is_valid(const char *address)
{
    unsigned char buffer[sizeof(struct in6_addr)];
    return address != NULL &&
           (inet_pton(AF_INET, address, buffer) == 1 || inet_pton(AF_INET6, address, buffer) == 1);
}

bool model_endpoint_validate(const model_endpoint *endpoint, model_error *error)
{
    if (!model_name_is_valid(endpoint->service))
        return fail(error, "service", "service name must be " NAME_RULE);
    if (!model_name_is_valid(endpoint->id))
        return fail(error, "id", "endpoint id must be " NAME_RULE);
    if (!address_is_valid(endpoint->address))
        return fail(error, "address", "address must be an IPv4 or IPv6 literal");
    if (endpoint->port == 0)
        return fail(error, "port", "port must be 1-65535");
    if (endpoint->weight < 1 || endpoint->weight > MODEL_ENDPOINT_WEIGHT_MAX)
        return fail(error, "weight", "weight must be 1-%d", MODEL_ENDPOINT_WEIGHT_MAX);
    if (!labels_validate(&endpoint->labels, "labels", error))
        return false;
    if (endpoint->zone != NULL && endpoint->zone[0] != '\0' &&
        !label_part_is_valid(endpoint->zone, false))
        return fail(error, "zone", "zone must be 1-63 characters of [A-Za-z0-9._-]");
    if ((unsigned)endpoint->health > MODEL_HEALTH_DRAINING)
        return fail(error, "health", "health must be one of healthy, unhealthy, draining");
    if (endpoint->ttl_s > MODEL_TTL_MAX_S)
        return fail(error, "ttl_s", "ttl_s must be 0-%d", MODEL_TTL_MAX_S);
    return true;
}

/* ---- JSON reading helpers ---- */

/* Rejects any key of object not in allowed (NULL-terminated). */
static bool check_keys(const json_t *object, const char *field, const char *const *allowed,
                       model_error *error)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)object, key, value)
    {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(allowed[i], key) == 0;
        if (!known) {
            char path[192];
            format_field(path, sizeof(path), "%s%s%s", field, field[0] ? "." : "", key);
            return fail(error, path, "unknown field '%s'", key);
        }
    }
    return true;
}

/* Reads an optional unsigned integer in [minimum, maximum]; absent leaves *out. */
static bool read_uint(const json_t *object, const char *key, const char *field, uint32_t minimum,
                      uint32_t maximum, uint32_t *out, model_error *error)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL)
        return true;
    if (!json_is_integer(value))
        return fail_at(error, field, key, "must be an integer %u-%u", minimum, maximum);
    json_int_t number = json_integer_value(value);
    if (number < (json_int_t)minimum || number > (json_int_t)maximum)
        return fail_at(error, field, key, "must be %u-%u", minimum, maximum);
    *out = (uint32_t)number;
    return true;
}

/* Reads an optional string into a new copy (*out must be NULL). */
static bool read_string(const json_t *object, const char *key, const char *field, char **out,
                        model_error *error)
{
    json_t *value = json_object_get(object, key);
    if (value == NULL)
        return true;
    if (!json_is_string(value))
        return fail_at(error, field, key, "must be a string");
    *out = strdup(json_string_value(value));
    return *out != NULL || fail_at(error, field, key, "out of memory");
}

/* Reads an array of at most `maximum` strings into a new array. */
static bool read_string_array(const json_t *array, const char *field, size_t maximum, char ***out,
                              size_t *count, model_error *error)
{
    if (!json_is_array(array))
        return fail(error, field, "must be an array of strings");
    size_t length = json_array_size(array);
    if (length > maximum)
        return fail(error, field, "at most %zu entries (got %zu)", maximum, length);
    *out = length ? calloc(length, sizeof(char *)) : NULL;
    if (length && *out == NULL)
        return fail(error, field, "out of memory");
    *count = 0;
    char path[192];
    for (size_t i = 0; i < length; i++) {
        json_t *item = json_array_get(array, i);
        format_field(path, sizeof(path), "%s[%zu]", field, i);
        if (!json_is_string(item))
            return fail(error, path, "must be a string");
        (*out)[i] = strdup(json_string_value(item));
        if ((*out)[i] == NULL)
            return fail(error, path, "out of memory");
        (*count)++;
    }
    return true;
}

static json_t *string_array_to_json(char *const *items, size_t count)
{
    json_t *array = json_array();
    for (size_t i = 0; array != NULL && i < count; i++)
        json_array_append_new(array, json_string(items[i]));
    return array;
}

/* ---- routes ---- */

static void route_rule_clear(model_route_rule *rule)
{
    free(rule->path);
    for (size_t i = 0; i < rule->header_count; i++) {
        free(rule->headers[i].name);
        free(rule->headers[i].value);
    }
    free(rule->headers);
    for (size_t i = 0; i < rule->split_count; i++)
        model_labels_clear(&rule->splits[i].subset);
    free(rule->splits);
    free(rule->retries.status_codes);
    memset(rule, 0, sizeof(*rule));
}

void model_routes_clear(model_routes *routes)
{
    free(routes->service);
    for (size_t i = 0; i < routes->rule_count; i++)
        route_rule_clear(&routes->rules[i]);
    free(routes->rules);
    memset(routes, 0, sizeof(*routes));
}

static bool header_name_is_valid(const char *name)
{
    size_t length = name ? strlen(name) : 0;
    if (length == 0 || length > HEADER_NAME_MAX)
        return false;
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!islower(c) && !isdigit(c) && c != '-' && c != '_' && !(i == 0 && c == ':'))
            return false;
    }
    return true;
}

static bool path_is_valid(const char *path)
{
    return path != NULL && path[0] == '/' && strlen(path) <= PATH_MAX_LENGTH &&
           strpbrk(path, " \t\r\n?#") == NULL;
}

static bool retry_policy_validate(const model_retry_policy *retries, const char *field,
                                  model_error *error)
{
    char path[192];
    format_field(path, sizeof(path), "%s.attempts", field);
    if (retries->attempts < 1 || retries->attempts > RETRY_ATTEMPTS_MAX)
        return fail(error, path, "must be 1-%u", RETRY_ATTEMPTS_MAX);
    format_field(path, sizeof(path), "%s.on", field);
    if (retries->on == 0)
        return fail(error, path,
                    "must list at least one of 5xx, gateway-error, connect-failure, reset, "
                    "retriable-status-codes");
    bool wants_codes = (retries->on & MODEL_RETRY_ON_RETRIABLE_STATUS_CODES) != 0;
    format_field(path, sizeof(path), "%s.status_codes", field);
    if (retries->status_code_count > MODEL_STATUS_CODES_MAX)
        return fail(error, path, "at most %d status codes (got %zu)", MODEL_STATUS_CODES_MAX,
                    retries->status_code_count);
    if (wants_codes && retries->status_code_count == 0)
        return fail(error, path, "retriable-status-codes needs at least one status code");
    if (!wants_codes && retries->status_code_count > 0)
        return fail(error, path, "status_codes needs 'retriable-status-codes' in on");
    for (size_t i = 0; i < retries->status_code_count; i++) {
        format_field(path, sizeof(path), "%s.status_codes[%zu]", field, i);
        if (retries->status_codes[i] < 100 || retries->status_codes[i] > 599)
            return fail(error, path, "must be an HTTP status code 100-599");
    }
    format_field(path, sizeof(path), "%s.per_try_timeout_ms", field);
    if (retries->per_try_timeout_ms > ROUTE_TIMEOUT_MAX_MS)
        return fail(error, path, "must be 0-%u", ROUTE_TIMEOUT_MAX_MS);
    format_field(path, sizeof(path), "%s.backoff_max_ms", field);
    if (retries->backoff_max_ms != 0 && retries->backoff_max_ms < retries->backoff_base_ms)
        return fail(error, path, "must not be less than backoff_base_ms");
    return true;
}

bool model_routes_validate(const model_routes *routes, model_error *error)
{
    char field[64], path[192];
    if (routes->rule_count > MODEL_RULES_MAX)
        return fail(error, "rules", "at most %d rules (got %zu)", MODEL_RULES_MAX,
                    routes->rule_count);
    for (size_t r = 0; r < routes->rule_count; r++) {
        const model_route_rule *rule = &routes->rules[r];
        format_field(field, sizeof(field), "rules[%zu]", r);
        format_field(path, sizeof(path), "%s.match.headers", field);
        if (rule->header_count > MODEL_HEADER_MATCHES_MAX)
            return fail(error, path, "at most %d header matches (got %zu)",
                        MODEL_HEADER_MATCHES_MAX, rule->header_count);
        format_field(path, sizeof(path), "%s.split", field);
        if (rule->split_count > MODEL_SPLITS_MAX)
            return fail(error, path, "at most %d split entries (got %zu)", MODEL_SPLITS_MAX,
                        rule->split_count);
        format_field(path, sizeof(path), "%s.match", field);
        if (rule->path_match != MODEL_PATH_ANY && !path_is_valid(rule->path))
            return fail(error, path,
                        "path must start with '/', be at most %u characters and hold no "
                        "spaces, '?' or '#'",
                        PATH_MAX_LENGTH);
        for (size_t h = 0; h < rule->header_count; h++) {
            const model_header_match *header = &rule->headers[h];
            format_field(path, sizeof(path), "%s.match.headers[%zu].name", field, h);
            if (!header_name_is_valid(header->name))
                return fail(error, path, "header name must be lowercase [a-z0-9-_], 1-%u long",
                            HEADER_NAME_MAX);
            format_field(path, sizeof(path), "%s.match.headers[%zu]", field, h);
            if (header->kind != MODEL_HEADER_PRESENT && header->value == NULL)
                return fail(error, path, "exact and prefix matches need a value");
            format_field(path, sizeof(path), "%s.match.headers[%zu].%s", field, h,
                         header->kind == MODEL_HEADER_EXACT ? "exact" : "prefix");
            /* An empty prefix matches every value: the proxies refuse it, so
             * the API does too ("present": true says that). */
            if (header->kind == MODEL_HEADER_PREFIX && header->value[0] == '\0')
                return fail(error, path,
                            "must not be empty (use \"present\": true to match any value)");
            if (header->kind != MODEL_HEADER_PRESENT &&
                strlen(header->value) > MODEL_HEADER_VALUE_MAX)
                return fail(error, path, "at most %d bytes", MODEL_HEADER_VALUE_MAX);
        }
        for (size_t s = 0; s < rule->split_count; s++) {
            const model_split *split = &rule->splits[s];
            format_field(path, sizeof(path), "%s.split[%zu].weight", field, s);
            if (split->weight < 1 || split->weight > SPLIT_WEIGHT_MAX)
                return fail(error, path, "weight must be 1-%u", SPLIT_WEIGHT_MAX);
            format_field(path, sizeof(path), "%s.split[%zu].subset", field, s);
            if (split->subset.count == 0)
                return fail(error, path, "subset must name at least one label");
            if (!labels_validate(&split->subset, path, error))
                return false;
        }
        format_field(path, sizeof(path), "%s.timeout_ms", field);
        if (rule->timeout_ms > ROUTE_TIMEOUT_MAX_MS)
            return fail(error, path, "must be 0-%u", ROUTE_TIMEOUT_MAX_MS);
        format_field(path, sizeof(path), "%s.retries", field);
        if (rule->has_retries && !retry_policy_validate(&rule->retries, path, error))
            return false;
    }
    return true;
}

static bool header_match_from_json(const json_t *object, const char *field, model_header_match *out,
                                   model_error *error)
{
    static const char *const keys[] = {"name", "exact", "prefix", "present", NULL};
    if (!json_is_object(object))
        return fail(error, field, "must be an object {name, exact | prefix | present}");
    if (!check_keys(object, field, keys, error) ||
        !read_string(object, "name", field, &out->name, error))
        return false;
    int kinds = (json_object_get(object, "exact") != NULL) +
                (json_object_get(object, "prefix") != NULL) +
                (json_object_get(object, "present") != NULL);
    if (kinds != 1)
        return fail(error, field, "needs exactly one of exact, prefix, present");
    if (json_object_get(object, "present") != NULL) {
        char path[192];
        format_field(path, sizeof(path), "%s.present", field);
        if (!json_is_true(json_object_get(object, "present")))
            return fail(error, path, "must be true");
        out->kind = MODEL_HEADER_PRESENT;
        return true;
    }
    out->kind = json_object_get(object, "exact") ? MODEL_HEADER_EXACT : MODEL_HEADER_PREFIX;
    return read_string(object, out->kind == MODEL_HEADER_EXACT ? "exact" : "prefix", field,
                       &out->value, error);
}

static bool retries_from_json(const json_t *object, const char *field, model_retry_policy *out,
                              model_error *error)
{
    static const char *const keys[] = {
        "attempts",       "on", "status_codes", "per_try_timeout_ms", "backoff_base_ms",
        "backoff_max_ms", NULL};
    if (!json_is_object(object))
        return fail(error, field, "must be an object");
    if (!check_keys(object, field, keys, error))
        return false;
    out->attempts = 1;
    if (!read_uint(object, "attempts", field, 1, RETRY_ATTEMPTS_MAX, &out->attempts, error) ||
        !read_uint(object, "per_try_timeout_ms", field, 0, ROUTE_TIMEOUT_MAX_MS,
                   &out->per_try_timeout_ms, error) ||
        !read_uint(object, "backoff_base_ms", field, 0, ROUTE_TIMEOUT_MAX_MS, &out->backoff_base_ms,
                   error) ||
        !read_uint(object, "backoff_max_ms", field, 0, ROUTE_TIMEOUT_MAX_MS, &out->backoff_max_ms,
                   error))
        return false;
    char path[192];
    json_t *on = json_object_get(object, "on");
    format_field(path, sizeof(path), "%s.on", field);
    if (on == NULL || !json_is_array(on))
        return fail(error, path, "must be an array of retry conditions");
    if (json_array_size(on) > MODEL_RETRY_ON_MAX)
        return fail(error, path, "at most %d retry conditions (got %zu)", MODEL_RETRY_ON_MAX,
                    json_array_size(on));
    for (size_t i = 0; i < json_array_size(on); i++) {
        json_t *item = json_array_get(on, i);
        uint32_t bit =
            json_is_string(item) ? model_retry_condition_parse(json_string_value(item)) : 0;
        format_field(path, sizeof(path), "%s.on[%zu]", field, i);
        if (bit == 0)
            return fail(error, path,
                        "unknown retry condition; use 5xx, gateway-error, connect-failure, "
                        "reset, retriable-status-codes");
        out->on |= bit;
    }
    json_t *codes = json_object_get(object, "status_codes");
    if (codes != NULL) {
        format_field(path, sizeof(path), "%s.status_codes", field);
        if (!json_is_array(codes))
            return fail(error, path, "must be an array of HTTP status codes");
        size_t count = json_array_size(codes);
        if (count > MODEL_STATUS_CODES_MAX)
            return fail(error, path, "at most %d status codes (got %zu)", MODEL_STATUS_CODES_MAX,
                        count);
        out->status_codes = count ? calloc(count, sizeof(uint32_t)) : NULL;
        if (count && out->status_codes == NULL)
            return fail(error, path, "out of memory");
        for (size_t i = 0; i < count; i++) {
            json_t *code = json_array_get(codes, i);
            format_field(path, sizeof(path), "%s.status_codes[%zu]", field, i);
            if (!json_is_integer(code) || json_integer_value(code) < 100 ||
                json_integer_value(code) > 599)
                return fail(error, path, "must be an HTTP status code 100-599");
            out->status_codes[i] = (uint32_t)json_integer_value(code);
            out->status_code_count++;
        }
    }
    return true;
}

static bool route_rule_from_json(const json_t *object, const char *field, model_route_rule *out,
                                 model_error *error)
{
    static const char *const keys[] = {"match", "split", "timeout_ms", "retries", NULL};
    static const char *const match_keys[] = {"path_prefix", "path_exact", "headers", NULL};
    if (!json_is_object(object))
        return fail(error, field, "must be an object");
    if (!check_keys(object, field, keys, error))
        return false;
    char path[192];
    json_t *match = json_object_get(object, "match");
    if (match != NULL) {
        format_field(path, sizeof(path), "%s.match", field);
        if (!json_is_object(match))
            return fail(error, path, "must be an object");
        if (!check_keys(match, path, match_keys, error))
            return false;
        json_t *prefix = json_object_get(match, "path_prefix");
        json_t *exact = json_object_get(match, "path_exact");
        if (prefix != NULL && exact != NULL)
            return fail(error, path, "path_prefix and path_exact exclude each other");
        if (prefix != NULL || exact != NULL) {
            out->path_match = prefix ? MODEL_PATH_PREFIX : MODEL_PATH_EXACT;
            if (!read_string(match, prefix ? "path_prefix" : "path_exact", path, &out->path, error))
                return false;
        }
        json_t *headers = json_object_get(match, "headers");
        if (headers != NULL) {
            format_field(path, sizeof(path), "%s.match.headers", field);
            if (!json_is_array(headers))
                return fail(error, path, "must be an array");
            size_t count = json_array_size(headers);
            if (count > MODEL_HEADER_MATCHES_MAX)
                return fail(error, path, "at most %d header matches (got %zu)",
                            MODEL_HEADER_MATCHES_MAX, count);
            out->headers = count ? calloc(count, sizeof(model_header_match)) : NULL;
            if (count && out->headers == NULL)
                return fail(error, path, "out of memory");
            for (size_t i = 0; i < count; i++) {
                out->header_count++;
                format_field(path, sizeof(path), "%s.match.headers[%zu]", field, i);
                if (!header_match_from_json(json_array_get(headers, i), path, &out->headers[i],
                                            error))
                    return false;
            }
        }
    }
    json_t *split = json_object_get(object, "split");
    if (split != NULL) {
        format_field(path, sizeof(path), "%s.split", field);
        if (!json_is_array(split))
            return fail(error, path, "must be an array of {subset, weight}");
        size_t count = json_array_size(split);
        /* Absent means the whole service; an empty list would mean nowhere. */
        if (count == 0)
            return fail(error, path,
                        "must hold at least one {subset, weight}; leave split out to send to "
                        "the whole service");
        if (count > MODEL_SPLITS_MAX)
            return fail(error, path, "at most %d split entries (got %zu)", MODEL_SPLITS_MAX, count);
        out->splits = count ? calloc(count, sizeof(model_split)) : NULL;
        if (count && out->splits == NULL)
            return fail(error, path, "out of memory");
        static const char *const split_keys[] = {"subset", "weight", NULL};
        for (size_t i = 0; i < count; i++) {
            json_t *entry = json_array_get(split, i);
            out->split_count++;
            format_field(path, sizeof(path), "%s.split[%zu]", field, i);
            if (!json_is_object(entry))
                return fail(error, path, "must be an object {subset, weight}");
            if (!check_keys(entry, path, split_keys, error))
                return false;
            char subset_path[224];
            format_field(subset_path, sizeof(subset_path), "%s.subset", path);
            json_t *subset = json_object_get(entry, "subset");
            if (subset == NULL)
                return fail(error, subset_path, "is required");
            if (!model_labels_from_json(subset, &out->splits[i].subset, subset_path, error))
                return false;
            format_field(subset_path, sizeof(subset_path), "%s.weight", path);
            json_t *weight = json_object_get(entry, "weight");
            if (!json_is_integer(weight) || json_integer_value(weight) < 1 ||
                json_integer_value(weight) > SPLIT_WEIGHT_MAX)
                return fail(error, subset_path, "weight must be an integer 1-%u", SPLIT_WEIGHT_MAX);
            out->splits[i].weight = (uint32_t)json_integer_value(weight);
        }
    }
    if (!read_uint(object, "timeout_ms", field, 0, ROUTE_TIMEOUT_MAX_MS, &out->timeout_ms, error))
        return false;
    json_t *retries = json_object_get(object, "retries");
    if (retries != NULL) {
        out->has_retries = true;
        format_field(path, sizeof(path), "%s.retries", field);
        if (!retries_from_json(retries, path, &out->retries, error))
            return false;
    }
    return true;
}

bool model_routes_from_json(const json_t *document, model_routes *out, model_error *error)
{
    static const char *const keys[] = {"rules", NULL};
    memset(out, 0, sizeof(*out));
    if (!json_is_object(document))
        return fail(error, "", "body must be a JSON object {\"rules\": [...]}");
    if (!check_keys(document, "", keys, error))
        return false;
    json_t *rules = json_object_get(document, "rules");
    if (!json_is_array(rules))
        return fail(error, "rules", "must be an array of rules");
    size_t count = json_array_size(rules);
    if (count > MODEL_RULES_MAX)
        return fail(error, "rules", "at most %d rules (got %zu)", MODEL_RULES_MAX, count);
    if (count == 0) /* no rules: nothing to read or check */
        return true;
    out->rules = calloc(count, sizeof(model_route_rule));
    if (out->rules == NULL)
        return fail(error, "rules", "out of memory");
    char field[64];
    for (size_t i = 0; i < count; i++) {
        out->rule_count++;
        format_field(field, sizeof(field), "rules[%zu]", i);
        if (!route_rule_from_json(json_array_get(rules, i), field, &out->rules[i], error)) {
            model_routes_clear(out);
            return false;
        }
    }
    if (!model_routes_validate(out, error)) {
        model_routes_clear(out);
        return false;
    }
    return true;
}

static json_t *route_rule_to_json(const model_route_rule *rule)
{
    json_t *object = json_object();
    json_t *match = json_object();
    if (rule->path_match != MODEL_PATH_ANY)
        json_object_set_new(match,
                            rule->path_match == MODEL_PATH_PREFIX ? "path_prefix" : "path_exact",
                            json_string(rule->path));
    if (rule->header_count > 0) {
        json_t *headers = json_array();
        for (size_t i = 0; i < rule->header_count; i++) {
            const model_header_match *header = &rule->headers[i];
            json_t *entry = json_pack("{s:s}", "name", header->name);
            if (header->kind == MODEL_HEADER_PRESENT)
                json_object_set_new(entry, "present", json_true());
            else
                json_object_set_new(entry, header->kind == MODEL_HEADER_EXACT ? "exact" : "prefix",
                                    json_string(header->value));
            json_array_append_new(headers, entry);
        }
        json_object_set_new(match, "headers", headers);
    }
    json_object_set_new(object, "match", match);
    if (rule->split_count > 0) {
        json_t *splits = json_array();
        for (size_t i = 0; i < rule->split_count; i++)
            json_array_append_new(splits, json_pack("{s:o,s:I}", "subset",
                                                    model_labels_to_json(&rule->splits[i].subset),
                                                    "weight", (json_int_t)rule->splits[i].weight));
        json_object_set_new(object, "split", splits);
    }
    if (rule->timeout_ms > 0)
        json_object_set_new(object, "timeout_ms", json_integer(rule->timeout_ms));
    if (rule->has_retries) {
        const model_retry_policy *retries = &rule->retries;
        json_t *on = json_array();
        for (size_t bit = 0; bit < COUNT_OF(retry_condition_names); bit++) {
            if (retries->on & (1u << bit))
                json_array_append_new(on, json_string(retry_condition_names[bit]));
        }
        json_t *object_retries =
            json_pack("{s:I,s:o}", "attempts", (json_int_t)retries->attempts, "on", on);
        if (retries->status_code_count > 0) {
            json_t *codes = json_array();
            for (size_t i = 0; i < retries->status_code_count; i++)
                json_array_append_new(codes, json_integer(retries->status_codes[i]));
            json_object_set_new(object_retries, "status_codes", codes);
        }
        if (retries->per_try_timeout_ms > 0)
            json_object_set_new(object_retries, "per_try_timeout_ms",
                                json_integer(retries->per_try_timeout_ms));
        if (retries->backoff_base_ms > 0)
            json_object_set_new(object_retries, "backoff_base_ms",
                                json_integer(retries->backoff_base_ms));
        if (retries->backoff_max_ms > 0)
            json_object_set_new(object_retries, "backoff_max_ms",
                                json_integer(retries->backoff_max_ms));
        json_object_set_new(object, "retries", object_retries);
    }
    return object;
}

json_t *model_routes_to_json(const model_routes *routes)
{
    json_t *rules = json_array();
    for (size_t i = 0; rules != NULL && i < routes->rule_count; i++)
        json_array_append_new(rules, route_rule_to_json(&routes->rules[i]));
    return json_pack("{s:o}", "rules", rules);
}

/* ---- policies ---- */

static void policy_rules_free(model_policy_rule *rules, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(rules[i].from);
        for (size_t m = 0; m < rules[i].method_count; m++)
            free(rules[i].methods[m]);
        free(rules[i].methods);
        free(rules[i].path_prefix);
    }
    free(rules);
}

void model_policy_clear(model_policy *policy)
{
    free(policy->service);
    policy_rules_free(policy->allow, policy->allow_count);
    policy_rules_free(policy->deny, policy->deny_count);
    memset(policy, 0, sizeof(*policy));
}

static bool policy_rules_validate(const model_policy_rule *rules, size_t count, const char *name,
                                  model_error *error)
{
    char path[192];
    if (count > MODEL_POLICY_RULES_MAX)
        return fail(error, name, "at most %d entries (got %zu)", MODEL_POLICY_RULES_MAX, count);
    for (size_t i = 0; i < count; i++) {
        format_field(path, sizeof(path), "%s[%zu].methods", name, i);
        if (rules[i].method_count > MODEL_METHODS_MAX)
            return fail(error, path, "at most %d methods (got %zu)", MODEL_METHODS_MAX,
                        rules[i].method_count);
        format_field(path, sizeof(path), "%s[%zu].from", name, i);
        if (rules[i].from != NULL && !model_name_is_valid(rules[i].from))
            return fail(error, path, "must be a service name, " NAME_RULE);
        for (size_t m = 0; m < rules[i].method_count; m++) {
            format_field(path, sizeof(path), "%s[%zu].methods[%zu]", name, i, m);
            if (name_index(http_methods, COUNT_OF(http_methods), rules[i].methods[m]) < 0)
                return fail(error, path,
                            "unknown HTTP method; use GET, HEAD, POST, PUT, DELETE, CONNECT, "
                            "OPTIONS, TRACE, PATCH");
        }
        format_field(path, sizeof(path), "%s[%zu].path_prefix", name, i);
        if (rules[i].path_prefix != NULL && !path_is_valid(rules[i].path_prefix))
            return fail(error, path, "must start with '/' and hold no spaces, '?' or '#'");
    }
    return true;
}

bool model_policy_validate(const model_policy *policy, model_error *error)
{
    return policy_rules_validate(policy->allow, policy->allow_count, "allow", error) &&
           policy_rules_validate(policy->deny, policy->deny_count, "deny", error);
}

static bool policy_rules_from_json(const json_t *array, const char *name, model_policy_rule **out,
                                   size_t *count, model_error *error)
{
    static const char *const keys[] = {"from", "methods", "path_prefix", NULL};
    if (array == NULL)
        return true;
    if (!json_is_array(array))
        return fail(error, name, "must be an array of {from, methods, path_prefix}");
    size_t length = json_array_size(array);
    if (length > MODEL_POLICY_RULES_MAX)
        return fail(error, name, "at most %d entries (got %zu)", MODEL_POLICY_RULES_MAX, length);
    *out = length ? calloc(length, sizeof(model_policy_rule)) : NULL;
    if (length && *out == NULL)
        return fail(error, name, "out of memory");
    char path[192];
    for (size_t i = 0; i < length; i++) {
        json_t *entry = json_array_get(array, i);
        model_policy_rule *rule = &(*out)[i];
        (*count)++;
        format_field(path, sizeof(path), "%s[%zu]", name, i);
        if (!json_is_object(entry))
            return fail(error, path, "must be an object {from, methods, path_prefix}");
        if (!check_keys(entry, path, keys, error) ||
            !read_string(entry, "from", path, &rule->from, error) ||
            !read_string(entry, "path_prefix", path, &rule->path_prefix, error))
            return false;
        json_t *methods = json_object_get(entry, "methods");
        if (methods != NULL) {
            char methods_path[224];
            format_field(methods_path, sizeof(methods_path), "%s.methods", path);
            if (!read_string_array(methods, methods_path, MODEL_METHODS_MAX, &rule->methods,
                                   &rule->method_count, error))
                return false;
        }
    }
    return true;
}

bool model_policy_from_json(const json_t *document, model_policy *out, model_error *error)
{
    static const char *const keys[] = {"default", "allow", "deny", NULL};
    memset(out, 0, sizeof(*out));
    if (!json_is_object(document))
        return fail(error, "", "body must be a JSON object {\"default\", \"allow\", \"deny\"}");
    if (!check_keys(document, "", keys, error))
        return false;
    json_t *default_action = json_object_get(document, "default");
    if (default_action == NULL) {
        out->default_allow = true;
    } else if (json_is_string(default_action) &&
               strcmp(json_string_value(default_action), "allow") == 0) {
        out->default_allow = true;
    } else if (json_is_string(default_action) &&
               strcmp(json_string_value(default_action), "deny") == 0) {
        out->default_allow = false;
    } else {
        return fail(error, "default", "must be \"allow\" or \"deny\"");
    }
    if (!policy_rules_from_json(json_object_get(document, "allow"), "allow", &out->allow,
                                &out->allow_count, error) ||
        !policy_rules_from_json(json_object_get(document, "deny"), "deny", &out->deny,
                                &out->deny_count, error) ||
        !model_policy_validate(out, error)) {
        model_policy_clear(out);
        return false;
    }
    return true;
}

static json_t *policy_rules_to_json(const model_policy_rule *rules, size_t count)
{
    json_t *array = json_array();
    for (size_t i = 0; array != NULL && i < count; i++) {
        json_t *entry = json_object();
        if (rules[i].from != NULL)
            json_object_set_new(entry, "from", json_string(rules[i].from));
        if (rules[i].method_count > 0)
            json_object_set_new(entry, "methods",
                                string_array_to_json(rules[i].methods, rules[i].method_count));
        if (rules[i].path_prefix != NULL)
            json_object_set_new(entry, "path_prefix", json_string(rules[i].path_prefix));
        json_array_append_new(array, entry);
    }
    return array;
}

json_t *model_policy_to_json(const model_policy *policy)
{
    return json_pack("{s:s,s:o,s:o}", "default", policy->default_allow ? "allow" : "deny", "allow",
                     policy_rules_to_json(policy->allow, policy->allow_count), "deny",
                     policy_rules_to_json(policy->deny, policy->deny_count));
}

/* ---- tokens, certificates, proxies, lists ---- */

void model_join_token_clear(model_join_token *token)
{
    free(token->id);
    free(token->service);
    free(token->namespace_name);
    memset(token, 0, sizeof(*token));
}

void model_certificate_clear(model_certificate *certificate)
{
    free(certificate->serial);
    free(certificate->identity);
    memset(certificate, 0, sizeof(*certificate));
}

void model_proxy_clear(model_proxy *proxy)
{
    free(proxy->node_id);
    free(proxy->identity);
    free(proxy->service);
    free(proxy->namespace_name);
    free(proxy->protocol);
    for (size_t i = 0; i < proxy->type_count; i++) {
        free(proxy->types[i].type_url);
        free(proxy->types[i].sent_version);
        free(proxy->types[i].acked_version);
        free(proxy->types[i].nacked_version);
        free(proxy->types[i].nack_message);
    }
    free(proxy->types);
    memset(proxy, 0, sizeof(*proxy));
}

#define DEFINE_LIST_FREE(list_type, clear)                                                         \
    void list_type##_free(list_type *list)                                                         \
    {                                                                                              \
        for (size_t i = 0; i < list->count; i++)                                                   \
            clear(&list->items[i]);                                                                \
        free(list->items);                                                                         \
        list->items = NULL;                                                                        \
        list->count = 0;                                                                           \
    }

static void model_change_clear(model_change *change)
{
    free(change->key);
    change->key = NULL;
}

DEFINE_LIST_FREE(model_service_list, model_service_clear)
DEFINE_LIST_FREE(model_endpoint_list, model_endpoint_clear)
DEFINE_LIST_FREE(model_join_token_list, model_join_token_clear)
DEFINE_LIST_FREE(model_certificate_list, model_certificate_clear)
DEFINE_LIST_FREE(model_proxy_list, model_proxy_clear)
DEFINE_LIST_FREE(model_change_list, model_change_clear)

/* ---- services and endpoints as JSON ---- */

bool model_service_from_json(const json_t *document, const char *name, model_service *out,
                             model_error *error)
{
    static const char *const keys[] = {"name",
                                       "namespace",
                                       "protocol",
                                       "lb_policy",
                                       "connect_timeout_ms",
                                       "outlier_detection",
                                       "circuit_breaker",
                                       "dependencies",
                                       "revision",
                                       NULL};
    static const char *const outlier_keys[] = {
        "consecutive_5xx", "interval_ms", "base_ejection_time_ms", "max_ejection_percent", NULL};
    static const char *const breaker_keys[] = {"max_connections", "max_pending_requests",
                                               "max_requests", "max_retries", NULL};
    model_service_init(out);
    if (!json_is_object(document))
        return fail(error, "", "body must be a JSON object describing the service");
    if (!check_keys(document, "", keys, error))
        goto failed;
    json_t *body_name = json_object_get(document, "name");
    if (body_name != NULL &&
        (!json_is_string(body_name) || strcmp(json_string_value(body_name), name) != 0)) {
        fail(error, "name", "must be \"%s\", the name in the path, or left out", name);
        goto failed;
    }
    if ((out->name = strdup(name)) == NULL ||
        !read_string(document, "namespace", "", &out->namespace_name, error))
        goto failed;
    json_t *protocol = json_object_get(document, "protocol");
    if (protocol != NULL &&
        !model_protocol_parse(json_is_string(protocol) ? json_string_value(protocol) : NULL,
                              &out->protocol)) {
        fail(error, "protocol", "must be one of http, grpc, tcp");
        goto failed;
    }
    json_t *policy = json_object_get(document, "lb_policy");
    if (policy != NULL &&
        !model_lb_policy_parse(json_is_string(policy) ? json_string_value(policy) : NULL,
                               &out->lb_policy)) {
        fail(error, "lb_policy", "must be one of round_robin, least_request, random, ring_hash");
        goto failed;
    }
    if (!read_uint(document, "connect_timeout_ms", "", 1, CONNECT_TIMEOUT_MAX_MS,
                   &out->connect_timeout_ms, error))
        goto failed;
    json_t *outlier = json_object_get(document, "outlier_detection");
    if (outlier != NULL) {
        model_outlier_detection *detection = &out->outlier_detection;
        out->has_outlier_detection = true;
        *detection = (model_outlier_detection){5, 10000, 30000, 10};
        if (!json_is_object(outlier)) {
            fail(error, "outlier_detection", "must be an object");
            goto failed;
        }
        if (!check_keys(outlier, "outlier_detection", outlier_keys, error) ||
            !read_uint(outlier, "consecutive_5xx", "outlier_detection", 1, 1000,
                       &detection->consecutive_5xx, error) ||
            !read_uint(outlier, "interval_ms", "outlier_detection", 1, ROUTE_TIMEOUT_MAX_MS,
                       &detection->interval_ms, error) ||
            !read_uint(outlier, "base_ejection_time_ms", "outlier_detection", 1,
                       ROUTE_TIMEOUT_MAX_MS, &detection->base_ejection_time_ms, error) ||
            !read_uint(outlier, "max_ejection_percent", "outlier_detection", 1, 100,
                       &detection->max_ejection_percent, error))
            goto failed;
    }
    json_t *breaker = json_object_get(document, "circuit_breaker");
    if (breaker != NULL) {
        model_circuit_breaker *limits = &out->circuit_breaker;
        out->has_circuit_breaker = true;
        if (!json_is_object(breaker)) {
            fail(error, "circuit_breaker", "must be an object");
            goto failed;
        }
        if (!check_keys(breaker, "circuit_breaker", breaker_keys, error) ||
            !read_uint(breaker, "max_connections", "circuit_breaker", 1, UINT32_MAX,
                       &limits->max_connections, error) ||
            !read_uint(breaker, "max_pending_requests", "circuit_breaker", 1, UINT32_MAX,
                       &limits->max_pending_requests, error) ||
            !read_uint(breaker, "max_requests", "circuit_breaker", 1, UINT32_MAX,
                       &limits->max_requests, error) ||
            !read_uint(breaker, "max_retries", "circuit_breaker", 1, UINT32_MAX,
                       &limits->max_retries, error))
            goto failed;
    }
    json_t *dependencies = json_object_get(document, "dependencies");
    if (dependencies != NULL) {
        out->has_dependencies = true;
        if (!read_string_array(dependencies, "dependencies", MODEL_DEPENDENCIES_MAX,
                               &out->dependencies, &out->dependency_count, error))
            goto failed;
    }
    if (!model_service_validate(out, error))
        goto failed;
    return true;
failed:
    model_service_clear(out);
    return false;
}

json_t *model_service_to_json(const model_service *service)
{
    json_t *object = json_pack("{s:s,s:s,s:s,s:s,s:I}", "name", service->name, "namespace",
                               service->namespace_name ? service->namespace_name : "default",
                               "protocol", model_protocol_name(service->protocol), "lb_policy",
                               model_lb_policy_name(service->lb_policy), "connect_timeout_ms",
                               (json_int_t)service->connect_timeout_ms);
    if (object == NULL)
        return NULL;
    if (service->has_outlier_detection) {
        const model_outlier_detection *outlier = &service->outlier_detection;
        json_object_set_new(
            object, "outlier_detection",
            json_pack("{s:I,s:I,s:I,s:I}", "consecutive_5xx", (json_int_t)outlier->consecutive_5xx,
                      "interval_ms", (json_int_t)outlier->interval_ms, "base_ejection_time_ms",
                      (json_int_t)outlier->base_ejection_time_ms, "max_ejection_percent",
                      (json_int_t)outlier->max_ejection_percent));
    }
    if (service->has_circuit_breaker) {
        const model_circuit_breaker *breaker = &service->circuit_breaker;
        json_t *limits = json_object();
        const char *names[] = {"max_connections", "max_pending_requests", "max_requests",
                               "max_retries"};
        uint32_t values[] = {breaker->max_connections, breaker->max_pending_requests,
                             breaker->max_requests, breaker->max_retries};
        for (size_t i = 0; i < COUNT_OF(names); i++) {
            if (values[i] != 0)
                json_object_set_new(limits, names[i], json_integer(values[i]));
        }
        json_object_set_new(object, "circuit_breaker", limits);
    }
    if (service->has_dependencies)
        json_object_set_new(object, "dependencies",
                            string_array_to_json(service->dependencies, service->dependency_count));
    if (service->revision != 0)
        json_object_set_new(object, "revision", json_integer(service->revision));
    return object;
}

bool model_endpoint_from_json(const json_t *document, const char *service, const char *id,
                              const char *field, model_endpoint *out, model_error *error)
{
    static const char *const keys[] = {
        "service", "id",    "address",    "port",          "weight",   "labels", "zone",
        "health",  "ttl_s", "proxy_port", "expires_at_ms", "revision", NULL};
    model_endpoint_init(out);
    if (!json_is_object(document))
        return fail(error, field, "must be a JSON object describing the endpoint");
    if (!check_keys(document, field, keys, error))
        goto failed;
    json_t *body_service = json_object_get(document, "service");
    if (body_service != NULL &&
        (!json_is_string(body_service) || strcmp(json_string_value(body_service), service) != 0)) {
        fail_at(error, field, "service", "must be \"%s\", the service in the path, or left out",
                service);
        goto failed;
    }
    json_t *body_id = json_object_get(document, "id");
    if (id != NULL && body_id != NULL &&
        (!json_is_string(body_id) || strcmp(json_string_value(body_id), id) != 0)) {
        fail_at(error, field, "id", "must be \"%s\", the id in the path, or left out", id);
        goto failed;
    }
    if (id == NULL && !json_is_string(body_id)) {
        fail_at(error, field, "id", "is required: a string naming the endpoint");
        goto failed;
    }
    out->service = strdup(service);
    out->id = strdup(id ? id : json_string_value(body_id));
    if (out->service == NULL || out->id == NULL)
        goto failed;
    if (json_object_get(document, "address") == NULL) {
        fail_at(error, field, "address", "is required: an IPv4 or IPv6 literal");
        goto failed;
    }
    uint32_t port = 0, proxy_port = 0;
    if (json_object_get(document, "port") == NULL) {
        fail_at(error, field, "port", "is required: 1-65535");
        goto failed;
    }
    if (!read_string(document, "address", field, &out->address, error) ||
        !read_uint(document, "port", field, 1, 65535, &port, error) ||
        !read_uint(document, "weight", field, 1, MODEL_ENDPOINT_WEIGHT_MAX, &out->weight, error) ||
        !read_string(document, "zone", field, &out->zone, error) ||
        !read_uint(document, "ttl_s", field, 0, MODEL_TTL_MAX_S, &out->ttl_s, error) ||
        !read_uint(document, "proxy_port", field, 0, 65535, &proxy_port, error))
        goto failed;
    out->port = (uint16_t)port;
    out->proxy_port = (uint16_t)proxy_port;
    json_t *labels = json_object_get(document, "labels");
    if (labels != NULL) {
        char path[192];
        format_field(path, sizeof(path), "%s%slabels", field, field[0] ? "." : "");
        if (!model_labels_from_json(labels, &out->labels, path, error))
            goto failed;
    }
    json_t *health = json_object_get(document, "health");
    if (health != NULL &&
        !model_health_parse(json_is_string(health) ? json_string_value(health) : NULL,
                            &out->health)) {
        fail_at(error, field, "health", "must be one of healthy, unhealthy, draining");
        goto failed;
    }
    model_error invalid;
    if (!model_endpoint_validate(out, &invalid)) {
        fail_at(error, field, invalid.field, "%s", invalid.message);
        goto failed;
    }
    return true;
failed:
    model_endpoint_clear(out);
    return false;
}

json_t *model_endpoint_to_json(const model_endpoint *endpoint)
{
    json_t *object =
        json_pack("{s:s,s:s,s:s,s:i,s:I,s:o,s:s,s:s,s:I}", "service", endpoint->service, "id",
                  endpoint->id, "address", endpoint->address, "port", (int)endpoint->port, "weight",
                  (json_int_t)endpoint->weight, "labels", model_labels_to_json(&endpoint->labels),
                  "zone", endpoint->zone ? endpoint->zone : "", "health",
                  model_health_name(endpoint->health), "ttl_s", (json_int_t)endpoint->ttl_s);
    if (object == NULL)
        return NULL;
    if (endpoint->proxy_port != 0)
        json_object_set_new(object, "proxy_port", json_integer(endpoint->proxy_port));
    if (endpoint->ttl_s != 0 && endpoint->expires_at_ms != 0)
        json_object_set_new(object, "expires_at_ms", json_integer(endpoint->expires_at_ms));
    if (endpoint->revision != 0)
        json_object_set_new(object, "revision", json_integer(endpoint->revision));
    return object;
}

int model_id_compare(const void *left, const void *right)
{
    return strcmp(*(const char *const *)left, *(const char *const *)right);
}

void model_ids_sort(const char **ids, size_t count)
{
    if (count > 1)
        qsort(ids, count, sizeof(*ids), model_id_compare);
}

typedef struct indexed_id {
    const char *id;
    size_t index;
} indexed_id;

static int indexed_id_compare(const void *left, const void *right)
{
    const indexed_id *a = left, *b = right;
    int order = strcmp(a->id, b->id);
    return order != 0 ? order : (a->index > b->index) - (a->index < b->index);
}

bool model_endpoints_find_duplicate(const model_endpoint *endpoints, size_t count, size_t *first,
                                    size_t *second)
{
    indexed_id *sorted = count > 1 ? malloc(count * sizeof(*sorted)) : NULL;
    if (sorted == NULL)
        return false;
    for (size_t i = 0; i < count; i++)
        sorted[i] = (indexed_id){endpoints[i].id, i};
    qsort(sorted, count, sizeof(*sorted), indexed_id_compare);
    bool found = false;
    for (size_t i = 1; i < count && !found; i++) {
        if (strcmp(sorted[i - 1].id, sorted[i].id) == 0) {
            *first = sorted[i - 1].index;
            *second = sorted[i].index;
            found = true;
        }
    }
    free(sorted);
    return found;
}
