/*
 * rest_api.c — the admin REST API's routes and handlers. Each handler parses
 * and validates the body with the model (errors name the field), makes one
 * store call (one transaction), and answers with the resource as stored —
 * after the commit, so a 2xx always describes committed state.
 */
#include "rest_api.h"

#include "join_tokens.h"

#include <event2/http.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*rest_handler)(store *db, const rest_call *call, rest_reply *reply);

/* What a route accepts besides its path. */
enum {
    TAKES_BODY = 1 << 0,  /* a JSON body is required */
    CONDITIONAL = 1 << 1, /* honours If-Match (the resource has an ETag) */
    DRY_RUN = 1 << 2,     /* honours ?dry_run=true */
    IDENTITY = 1 << 3,    /* honours ?identity= */
};

struct rest_route {
    const char *method;
    const char *pattern; /* literal segments and {parameters} */
    rest_handler handler;
    unsigned accepts;
};

/* ---- replies ---- */

void rest_reply_error(rest_reply *reply, int status, const char *code, const char *field,
                      const char *format, ...)
{
    char message[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof(message), format, arguments);
    va_end(arguments);
    json_t *error = json_pack("{s:s,s:s}", "code", code, "message", message);
    if (error != NULL && field != NULL && field[0] != '\0')
        json_object_set_new(error, "field", json_string(field));
    rest_reply_clear(reply);
    reply->status = status;
    reply->body = json_pack("{s:o}", "error", error);
}

void rest_reply_clear(rest_reply *reply)
{
    json_decref(reply->body);
    reply->body = NULL;
    free(reply->text);
    reply->text = NULL;
    reply->etag = 0;
}

static void reply_json(rest_reply *reply, int status, json_t *body, int64_t etag)
{
    if (body == NULL) {
        rest_reply_error(reply, 500, "internal", NULL, "out of memory");
        return;
    }
    rest_reply_clear(reply);
    reply->status = status;
    reply->body = body;
    reply->etag = etag;
}

static void reply_store_error(rest_reply *reply, const store_error *error)
{
    static const struct {
        int status;
        const char *code;
    } mapping[] = {
        [STORE_OK] = {500, "internal"},
        [STORE_NOT_FOUND] = {404, "not_found"},
        [STORE_CONFLICT] = {409, "conflict"},
        [STORE_INVALID] = {400, "invalid"},
        [STORE_BUSY] = {503, "busy"},
        [STORE_IO] = {500, "internal"},
        [STORE_PRECONDITION_FAILED] = {412, "precondition_failed"},
    };
    unsigned index =
        (unsigned)error->status <= STORE_PRECONDITION_FAILED ? error->status : STORE_IO;
    rest_reply_error(reply, mapping[index].status, mapping[index].code, error->field, "%s",
                     error->message);
}

static void reply_invalid(rest_reply *reply, const model_error *error)
{
    rest_reply_error(reply, 400, "invalid", error->field, "%s%s%s", error->field,
                     error->field[0] ? ": " : "", error->message);
}

static void reply_revision(rest_reply *reply, int64_t revision)
{
    reply_json(reply, 200, json_pack("{s:I}", "revision", (json_int_t)revision), 0);
}

/* Copies body without the keys a GET adds ("service", "revision"), after
 * checking "service" names the path's service. NULL (with the reply filled)
 * when it does not. The caller decrefs the copy. */
static json_t *document_body(const json_t *body, const char *service, rest_reply *reply)
{
    if (!json_is_object(body)) {
        rest_reply_error(reply, 400, "invalid", NULL, "body must be a JSON object");
        return NULL;
    }
    json_t *named = json_object_get(body, "service");
    if (named != NULL && (!json_is_string(named) || strcmp(json_string_value(named), service))) {
        rest_reply_error(reply, 400, "invalid", "service",
                         "service: must be \"%s\", the service in the path, or left out", service);
        return NULL;
    }
    json_t *copy = json_copy((json_t *)body);
    if (copy == NULL) {
        rest_reply_error(reply, 500, "internal", NULL, "out of memory");
        return NULL;
    }
    json_object_del(copy, "service");
    json_object_del(copy, "revision");
    return copy;
}

/* ---- services ---- */

static void list_services(store *db, const rest_call *call, rest_reply *reply)
{
    (void)call;
    model_service_list list;
    store_error error;
    int64_t revision = 0;
    store_revision(db, &revision, NULL);
    if (store_list_services(db, &list, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.count; i++)
        json_array_append_new(items, model_service_to_json(&list.items[i]));
    model_service_list_free(&list);
    reply_json(reply, 200,
               json_pack("{s:o,s:I}", "services", items, "revision", (json_int_t)revision), 0);
}

static void get_service(store *db, const rest_call *call, rest_reply *reply)
{
    model_service service;
    store_error error;
    if (store_get_service(db, call->params[0], &service, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    reply_json(reply, 200, model_service_to_json(&service), service.revision);
    model_service_clear(&service);
}

static void put_service(store *db, const rest_call *call, rest_reply *reply)
{
    model_service service;
    model_error invalid;
    if (!model_service_from_json(call->body, call->params[0], &service, &invalid)) {
        reply_invalid(reply, &invalid);
        return;
    }
    if (call->dry_run) {
        reply_json(reply, 200, model_service_to_json(&service), 0);
        model_service_clear(&service);
        return;
    }
    bool created = false;
    store_error error;
    if (store_put_service(db, &service, call->if_revision, &created, NULL, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else /* the service as stored: the store set its revision */
        reply_json(reply, created ? 201 : 200, model_service_to_json(&service), service.revision);
    model_service_clear(&service);
}

static void delete_service(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_delete_service(db, call->params[0], call->if_revision, &revision, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_revision(reply, revision);
}

/* 404 unless the path's service exists; true when it does. */
static bool require_service(store *db, const char *name, rest_reply *reply)
{
    model_service service;
    store_error error;
    if (store_get_service(db, name, &service, &error) != STORE_OK) {
        snprintf(error.field, sizeof(error.field), "service");
        reply_store_error(reply, &error);
        return false;
    }
    model_service_clear(&service);
    return true;
}

/* ---- endpoints ---- */

static void list_endpoints(store *db, const rest_call *call, rest_reply *reply)
{
    if (!require_service(db, call->params[0], reply))
        return;
    model_endpoint_list list;
    store_error error;
    if (store_list_endpoints(db, call->params[0], &list, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.count; i++)
        json_array_append_new(items, model_endpoint_to_json(&list.items[i]));
    model_endpoint_list_free(&list);
    reply_json(reply, 200, json_pack("{s:s,s:o}", "service", call->params[0], "endpoints", items),
               0);
}

static void get_endpoint(store *db, const rest_call *call, rest_reply *reply)
{
    model_endpoint endpoint;
    store_error error;
    if (store_get_endpoint(db, call->params[0], call->params[1], &endpoint, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    reply_json(reply, 200, model_endpoint_to_json(&endpoint), endpoint.revision);
    model_endpoint_clear(&endpoint);
}

/* The configuration of an endpoint, as a dry run shows it: no health unless
 * asked for, no expiry or revision (those are state, not configuration). */
static json_t *endpoint_configuration(const model_endpoint *endpoint, const json_t *body)
{
    json_t *object = model_endpoint_to_json(endpoint);
    if (object != NULL && json_object_get(body, "health") == NULL)
        json_object_del(object, "health");
    return object;
}

static void put_endpoint(store *db, const rest_call *call, rest_reply *reply)
{
    model_endpoint endpoint;
    model_error invalid;
    if (!model_endpoint_from_json(call->body, call->params[0], call->params[1], "", &endpoint,
                                  &invalid)) {
        reply_invalid(reply, &invalid);
        return;
    }
    if (call->dry_run) {
        reply_json(reply, 200, endpoint_configuration(&endpoint, call->body), 0);
        model_endpoint_clear(&endpoint);
        return;
    }
    bool created = false;
    store_error error;
    if (store_put_endpoint(db, &endpoint, call->if_revision, call->now_ms, &created, NULL,
                           &error) != STORE_OK)
        reply_store_error(reply, &error);
    else /* the endpoint as stored: the store set its revision and expiry */
        reply_json(reply, created ? 201 : 200, model_endpoint_to_json(&endpoint),
                   endpoint.revision);
    model_endpoint_clear(&endpoint);
}

static void replace_endpoints(store *db, const rest_call *call, rest_reply *reply)
{
    const json_t *body = call->body;
    const char *key;
    json_t *value;
    if (!json_is_object(body)) {
        rest_reply_error(reply, 400, "invalid", NULL,
                         "body must be {\"endpoints\": [...]}, the whole set of endpoints");
        return;
    }
    json_object_foreach((json_t *)body, key, value)
    {
        /* "service" may repeat the path, so a GET of the list can be PUT back. */
        bool same_service = strcmp(key, "service") == 0 && json_is_string(value) &&
                            strcmp(json_string_value(value), call->params[0]) == 0;
        if (strcmp(key, "endpoints") != 0 && !same_service) {
            rest_reply_error(reply, 400, "invalid", key,
                             strcmp(key, "service") == 0
                                 ? "%s: must be the service in the path, or left out"
                                 : "%s: unknown field",
                             key);
            return;
        }
    }
    json_t *items = json_object_get(body, "endpoints");
    if (!json_is_array(items)) {
        rest_reply_error(reply, 400, "invalid", "endpoints",
                         "endpoints: must be an array, the whole set of endpoints");
        return;
    }
    size_t count = json_array_size(items);
    if (count > REST_ENDPOINTS_MAX) {
        rest_reply_error(reply, 400, "invalid", "endpoints",
                         "endpoints: at most %d endpoints in one set (got %zu)", REST_ENDPOINTS_MAX,
                         count);
        return;
    }
    model_endpoint *endpoints = count ? calloc(count, sizeof(*endpoints)) : NULL;
    if (count && endpoints == NULL) {
        rest_reply_error(reply, 500, "internal", NULL, "out of memory");
        return;
    }
    size_t parsed = 0;
    model_error invalid;
    char field[64];
    for (; parsed < count; parsed++) {
        snprintf(field, sizeof(field), "endpoints[%zu]", parsed);
        if (!model_endpoint_from_json(json_array_get(items, parsed), call->params[0], NULL, field,
                                      &endpoints[parsed], &invalid))
            break;
    }
    if (parsed < count)
        goto failed;
    size_t first, second;
    if (count > 1 && model_endpoints_find_duplicate(endpoints, count, &first, &second)) {
        snprintf(invalid.field, sizeof(invalid.field), "endpoints[%zu].id", second);
        snprintf(invalid.message, sizeof(invalid.message),
                 "duplicate id \"%s\" (also endpoints[%zu])", endpoints[second].id, first);
        goto failed;
    }
    if (call->dry_run) {
        json_t *shown = json_array();
        for (size_t i = 0; shown != NULL && i < count; i++)
            json_array_append_new(shown,
                                  endpoint_configuration(&endpoints[i], json_array_get(items, i)));
        reply_json(reply, 200,
                   json_pack("{s:s,s:o}", "service", call->params[0], "endpoints", shown), 0);
    } else {
        int64_t revision = 0;
        store_error error;
        if (store_replace_endpoints(db, call->params[0], endpoints, count, call->now_ms, &revision,
                                    &error) != STORE_OK)
            reply_store_error(reply, &error);
        else
            reply_json(reply, 200,
                       json_pack("{s:s,s:I,s:I}", "service", call->params[0], "endpoints",
                                 (json_int_t)count, "revision", (json_int_t)revision),
                       0);
    }
    for (size_t i = 0; i < count; i++)
        model_endpoint_clear(&endpoints[i]);
    free(endpoints);
    return;
failed:
    for (size_t i = 0; i < parsed; i++)
        model_endpoint_clear(&endpoints[i]);
    free(endpoints);
    reply_invalid(reply, &invalid);
}

static void delete_endpoint(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_delete_endpoint(db, call->params[0], call->params[1], call->if_revision, &revision,
                              &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_revision(reply, revision);
}

static void heartbeat_endpoint(store *db, const rest_call *call, rest_reply *reply)
{
    store_error error;
    if (store_heartbeat_endpoint(db, call->params[0], call->params[1], call->now_ms, NULL,
                                 &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    get_endpoint(db, call, reply);
}

static void set_endpoint_health(store *db, const rest_call *call, rest_reply *reply)
{
    json_t *health = json_object_get(call->body, "health");
    model_health value;
    if (!json_is_object(call->body) || json_object_size(call->body) != 1 || health == NULL ||
        !model_health_parse(json_is_string(health) ? json_string_value(health) : NULL, &value)) {
        rest_reply_error(reply, 400, "invalid", "health",
                         "body must be {\"health\": \"healthy\" | \"unhealthy\" | \"draining\"}");
        return;
    }
    store_error error;
    if (store_set_endpoint_health(db, call->params[0], call->params[1], value, call->if_revision,
                                  NULL, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    get_endpoint(db, call, reply);
}

/* ---- routes and policies ---- */

/* {"service": S, ...document..., "revision": R} */
static json_t *with_owner(json_t *document, const char *service, int64_t revision)
{
    if (document == NULL)
        return NULL;
    json_object_set_new(document, "service", json_string(service));
    if (revision != 0)
        json_object_set_new(document, "revision", json_integer(revision));
    return document;
}

static void get_routes(store *db, const rest_call *call, rest_reply *reply)
{
    model_routes routes;
    store_error error;
    if (store_get_routes(db, call->params[0], &routes, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    reply_json(reply, 200,
               with_owner(model_routes_to_json(&routes), routes.service, routes.revision),
               routes.revision);
    model_routes_clear(&routes);
}

/* Fills error for a failed allocation before a store call; returns STORE_IO. */
static store_status set_out_of_memory(store_error *error)
{
    memset(error, 0, sizeof(*error));
    error->status = STORE_IO;
    snprintf(error->message, sizeof(error->message), "out of memory");
    return STORE_IO;
}

/* The reply to a routes or policy PUT: the store's error, or the document as
 * written (document: a new reference, consumed) at the revision of this write,
 * 201 when it created the service's document, 200 when it replaced it. */
static void reply_document_put(rest_reply *reply, store_status status, const store_error *error,
                               json_t *document, const char *service, bool created,
                               int64_t revision)
{
    if (status != STORE_OK) {
        json_decref(document);
        reply_store_error(reply, error);
        return;
    }
    reply_json(reply, created ? 201 : 200, with_owner(document, service, revision), revision);
}

static void put_routes(store *db, const rest_call *call, rest_reply *reply)
{
    json_t *document = document_body(call->body, call->params[0], reply);
    if (document == NULL)
        return;
    model_routes routes;
    model_error invalid;
    bool parsed = model_routes_from_json(document, &routes, &invalid);
    json_decref(document);
    if (!parsed) {
        reply_invalid(reply, &invalid);
        return;
    }
    if (call->dry_run) {
        reply_json(reply, 200, with_owner(model_routes_to_json(&routes), call->params[0], 0), 0);
        model_routes_clear(&routes);
        return;
    }
    routes.service = strdup(call->params[0]);
    store_error error;
    bool created = false;
    int64_t revision = 0;
    store_status status = routes.service ? store_put_routes(db, &routes, call->if_revision,
                                                            &created, &revision, &error)
                                         : set_out_of_memory(&error);
    reply_document_put(reply, status, &error, model_routes_to_json(&routes), routes.service,
                       created, revision);
    model_routes_clear(&routes);
}

static void delete_routes(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_delete_routes(db, call->params[0], call->if_revision, &revision, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_revision(reply, revision);
}

static void get_policy(store *db, const rest_call *call, rest_reply *reply)
{
    model_policy policy;
    store_error error;
    if (store_get_policy(db, call->params[0], &policy, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    reply_json(reply, 200,
               with_owner(model_policy_to_json(&policy), policy.service, policy.revision),
               policy.revision);
    model_policy_clear(&policy);
}

static void put_policy(store *db, const rest_call *call, rest_reply *reply)
{
    json_t *document = document_body(call->body, call->params[0], reply);
    if (document == NULL)
        return;
    model_policy policy;
    model_error invalid;
    bool parsed = model_policy_from_json(document, &policy, &invalid);
    json_decref(document);
    if (!parsed) {
        reply_invalid(reply, &invalid);
        return;
    }
    if (call->dry_run) {
        reply_json(reply, 200, with_owner(model_policy_to_json(&policy), call->params[0], 0), 0);
        model_policy_clear(&policy);
        return;
    }
    policy.service = strdup(call->params[0]);
    store_error error;
    bool created = false;
    int64_t revision = 0;
    store_status status = policy.service ? store_put_policy(db, &policy, call->if_revision,
                                                            &created, &revision, &error)
                                         : set_out_of_memory(&error);
    reply_document_put(reply, status, &error, model_policy_to_json(&policy), policy.service,
                       created, revision);
    model_policy_clear(&policy);
}

static void delete_policy(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_delete_policy(db, call->params[0], call->if_revision, &revision, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_revision(reply, revision);
}

/* ---- proxies and revision ---- */

static json_t *optional_string(const char *text)
{
    return text ? json_string(text) : json_null();
}

static json_t *proxy_to_json(const model_proxy *proxy)
{
    json_t *types = json_array();
    for (size_t i = 0; types != NULL && i < proxy->type_count; i++) {
        const model_proxy_type_status *type = &proxy->types[i];
        /* sent_at_ms is null, like sent_version, until something was sent. */
        json_t *sent_at = type->sent_at_ms != 0 ? json_integer(type->sent_at_ms) : json_null();
        json_array_append_new(
            types, json_pack("{s:s,s:o,s:o,s:o,s:I,s:o,s:o,s:I}", "type_url", type->type_url,
                             "sent_version", optional_string(type->sent_version), "sent_at_ms",
                             sent_at, "acked_version", optional_string(type->acked_version),
                             "acked_at_ms", (json_int_t)type->acked_at_ms, "nacked_version",
                             optional_string(type->nacked_version), "nack_message",
                             optional_string(type->nack_message), "nacked_at_ms",
                             (json_int_t)type->nacked_at_ms));
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:b,s:I,s:I,s:o}", "node_id", proxy->node_id, "identity",
                     proxy->identity, "service", proxy->service, "namespace", proxy->namespace_name,
                     "protocol", proxy->protocol ? proxy->protocol : "", "connected",
                     proxy->connected, "connected_since_ms", (json_int_t)proxy->connected_since_ms,
                     "last_seen_ms", (json_int_t)proxy->last_seen_ms, "types", types);
}

static void list_proxies(store *db, const rest_call *call, rest_reply *reply)
{
    (void)call;
    model_proxy_list list;
    store_error error;
    if (store_list_proxies(db, 0, &list, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.count; i++)
        json_array_append_new(items, proxy_to_json(&list.items[i]));
    model_proxy_list_free(&list);
    reply_json(reply, 200, json_pack("{s:o}", "proxies", items), 0);
}

static void get_revision(store *db, const rest_call *call, rest_reply *reply)
{
    (void)call;
    int64_t revision = 0;
    store_revision(db, &revision, NULL);
    reply_revision(reply, revision);
}

/* ---- join tokens and certificates ---- */

static json_t *token_to_json(const model_join_token *token, const char *trust_domain)
{
    char identity[512];
    snprintf(identity, sizeof(identity), "spiffe://%s/ns/%s/sa/%s", trust_domain,
             token->namespace_name, token->service);
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I}", "id", token->id, "service",
                     token->service, "namespace", token->namespace_name, "identity", identity,
                     "created_at_ms", (json_int_t)token->created_at_ms, "expires_at_ms",
                     (json_int_t)token->expires_at_ms, "uses_allowed",
                     (json_int_t)token->uses_allowed, "uses", (json_int_t)token->uses);
}

static void create_token(store *db, const rest_call *call, rest_reply *reply)
{
    static const char *const keys[] = {"service", "namespace", "ttl_s", "uses"};
    const json_t *body = call->body;
    const char *key;
    json_t *value;
    if (!json_is_object(body)) {
        rest_reply_error(reply, 400, "invalid", NULL,
                         "body must be {service, namespace, ttl_s, uses}");
        return;
    }
    json_object_foreach((json_t *)body, key, value)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !known; i++)
            known = strcmp(keys[i], key) == 0;
        if (!known) {
            rest_reply_error(reply, 400, "invalid", key, "%s: unknown field", key);
            return;
        }
    }
    const char *service = json_string_value(json_object_get(body, "service"));
    json_t *space = json_object_get(body, "namespace");
    const char *namespace_name = space ? json_string_value(space) : "default";
    json_t *ttl = json_object_get(body, "ttl_s");
    json_t *uses = json_object_get(body, "uses");
    if (!model_name_is_valid(service)) {
        rest_reply_error(reply, 400, "invalid", "service",
                         "service: required, a DNS-1123 label (the identity the token admits)");
        return;
    }
    if (!model_name_is_valid(namespace_name)) {
        rest_reply_error(reply, 400, "invalid", "namespace", "namespace: must be a DNS-1123 label");
        return;
    }
    if (ttl != NULL && (!json_is_integer(ttl) || json_integer_value(ttl) < JOIN_TOKEN_TTL_MIN_S ||
                        json_integer_value(ttl) > JOIN_TOKEN_TTL_MAX_S)) {
        rest_reply_error(reply, 400, "invalid", "ttl_s", "ttl_s: must be %d-%d seconds",
                         JOIN_TOKEN_TTL_MIN_S, JOIN_TOKEN_TTL_MAX_S);
        return;
    }
    if (uses != NULL && (!json_is_integer(uses) || json_integer_value(uses) < 1 ||
                         json_integer_value(uses) > JOIN_TOKEN_USES_MAX)) {
        rest_reply_error(reply, 400, "invalid", "uses", "uses: must be 1-%d", JOIN_TOKEN_USES_MAX);
        return;
    }
    model_join_token token;
    char secret[JOIN_TOKEN_SECRET_LENGTH + 1];
    store_error error;
    if (join_token_mint(db, service, namespace_name, ttl ? (uint32_t)json_integer_value(ttl) : 3600,
                        uses ? (uint32_t)json_integer_value(uses) : 1, call->now_ms, &token, secret,
                        NULL, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *shown = token_to_json(&token, call->trust_domain);
    if (shown != NULL) /* the secret, this once; only its hash is kept */
        json_object_set_new(shown, "token", json_string(secret));
    memset(secret, 0, sizeof(secret));
    model_join_token_clear(&token);
    reply_json(reply, 201, shown, 0);
}

static void list_tokens(store *db, const rest_call *call, rest_reply *reply)
{
    model_join_token_list list;
    store_error error;
    if (store_list_join_tokens(db, &list, &error) != STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.count; i++)
        json_array_append_new(items, token_to_json(&list.items[i], call->trust_domain));
    model_join_token_list_free(&list);
    reply_json(reply, 200, json_pack("{s:o}", "tokens", items), 0);
}

static void delete_token(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_delete_join_token(db, call->params[0], &revision, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_revision(reply, revision);
}

static json_t *certificate_to_json(const model_certificate *certificate)
{
    json_t *object = json_pack(
        "{s:s,s:s,s:I,s:I,s:b}", "serial", certificate->serial, "identity", certificate->identity,
        "not_before_ms", (json_int_t)certificate->not_before_ms, "not_after_ms",
        (json_int_t)certificate->not_after_ms, "revoked", certificate->revoked);
    if (object != NULL && certificate->revoked)
        json_object_set_new(object, "revoked_at_ms", json_integer(certificate->revoked_at_ms));
    return object;
}

static void list_certificates(store *db, const rest_call *call, rest_reply *reply)
{
    model_certificate_list list;
    store_error error;
    if (store_list_certificates(db, call->identity[0] ? call->identity : NULL, &list, &error) !=
        STORE_OK) {
        reply_store_error(reply, &error);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.count; i++)
        json_array_append_new(items, certificate_to_json(&list.items[i]));
    model_certificate_list_free(&list);
    reply_json(reply, 200, json_pack("{s:o}", "certificates", items), 0);
}

static void revoke_certificate(store *db, const rest_call *call, rest_reply *reply)
{
    int64_t revision = 0;
    store_error error;
    if (store_revoke_certificate(db, call->params[0], call->now_ms, &revision, &error) != STORE_OK)
        reply_store_error(reply, &error);
    else
        reply_json(reply, 200,
                   json_pack("{s:s,s:I,s:I}", "serial", call->params[0], "revoked_at_ms",
                             (json_int_t)call->now_ms, "revision", (json_int_t)revision),
                   0);
}

/* ---- the certificate authority ---- */

static bool require_authority(const rest_call *call, rest_reply *reply)
{
    if (call->authority != NULL)
        return true;
    rest_reply_error(reply, 503, "unavailable", NULL, "the certificate authority is not running");
    return false;
}

static void get_bundle(store *db, const rest_call *call, rest_reply *reply)
{
    (void)db;
    if (!require_authority(call, reply))
        return;
    char error[512];
    char *bundle = ca_service_bundle_pem(call->authority, error, sizeof(error));
    if (bundle == NULL) {
        rest_reply_error(reply, 500, "internal", NULL, "trust bundle: %s", error);
        return;
    }
    rest_reply_clear(reply);
    reply->status = 200;
    reply->text = bundle;
    reply->content_type = "application/x-pem-file";
}

static void rotate_authority(store *db, const rest_call *call, rest_reply *reply)
{
    (void)db;
    if (!require_authority(call, reply))
        return;
    const json_t *body = call->body;
    json_t *root = json_object_get(body, "root");
    if (body != NULL && (!json_is_object(body) || json_object_size(body) > (root ? 1u : 0u) ||
                         (root != NULL && !json_is_boolean(root)))) {
        rest_reply_error(reply, 400, "invalid", root ? "root" : NULL,
                         "body must be empty or {\"root\": true|false}");
        return;
    }
    char error[512];
    if (ca_service_rotate(call->authority, json_is_true(root), error, sizeof(error)) != 0) {
        rest_reply_error(reply, 500, "internal", NULL, "rotation failed: %s", error);
        return;
    }
    reply_json(reply, 200,
               json_pack("{s:s,s:I}", "rotated", json_is_true(root) ? "root" : "issuer",
                         "issuer_not_after_ms",
                         (json_int_t)ca_service_issuer_not_after_ms(call->authority)),
               0);
}

/* ---- routing ---- */

static const rest_route routes[] = {
    {"GET", "/v1/services", list_services, 0},
    {"GET", "/v1/services/{name}", get_service, 0},
    {"PUT", "/v1/services/{name}", put_service, TAKES_BODY | CONDITIONAL | DRY_RUN},
    {"DELETE", "/v1/services/{name}", delete_service, CONDITIONAL},
    {"GET", "/v1/services/{name}/endpoints", list_endpoints, 0},
    {"PUT", "/v1/services/{name}/endpoints", replace_endpoints, TAKES_BODY | DRY_RUN},
    {"GET", "/v1/services/{name}/endpoints/{id}", get_endpoint, 0},
    {"PUT", "/v1/services/{name}/endpoints/{id}", put_endpoint, TAKES_BODY | CONDITIONAL | DRY_RUN},
    {"DELETE", "/v1/services/{name}/endpoints/{id}", delete_endpoint, CONDITIONAL},
    {"POST", "/v1/services/{name}/endpoints/{id}/heartbeat", heartbeat_endpoint, 0},
    {"PUT", "/v1/services/{name}/endpoints/{id}/health", set_endpoint_health,
     TAKES_BODY | CONDITIONAL},
    {"GET", "/v1/services/{name}/routes", get_routes, 0},
    {"PUT", "/v1/services/{name}/routes", put_routes, TAKES_BODY | CONDITIONAL | DRY_RUN},
    {"DELETE", "/v1/services/{name}/routes", delete_routes, CONDITIONAL},
    {"GET", "/v1/services/{name}/policy", get_policy, 0},
    {"PUT", "/v1/services/{name}/policy", put_policy, TAKES_BODY | CONDITIONAL | DRY_RUN},
    {"DELETE", "/v1/services/{name}/policy", delete_policy, CONDITIONAL},
    {"GET", "/v1/proxies", list_proxies, 0},
    {"POST", "/v1/tokens", create_token, TAKES_BODY},
    {"GET", "/v1/tokens", list_tokens, 0},
    {"DELETE", "/v1/tokens/{id}", delete_token, 0},
    {"GET", "/v1/certs", list_certificates, IDENTITY},
    {"POST", "/v1/certs/{serial}/revoke", revoke_certificate, 0},
    {"GET", "/v1/ca/bundle", get_bundle, 0},
    {"POST", "/v1/ca/rotate", rotate_authority, 0},
    {"GET", "/v1/revision", get_revision, 0},
};
#define ROUTE_COUNT (sizeof(routes) / sizeof(routes[0]))

/* Whether a decoded path parameter is valid for the route: the grammar the
 * model uses for that name. {name} and an endpoint's {id} are DNS-1123 labels
 * (model_name_is_valid); a token's {id} and a certificate's {serial} are
 * 1-64 lower-case hex digits. text is decoded and NUL-terminated; a decoded
 * NUL byte was refused before this. */
static bool parameter_is_valid(const char *pattern, const char *parameter, const char *text)
{
    if (strcmp(parameter, "name") == 0 ||
        (strcmp(parameter, "id") == 0 && strncmp(pattern, "/v1/services/", 13) == 0))
        return model_name_is_valid(text);
    size_t length = strlen(text);
    return length >= 1 && length <= REST_HEX_PARAM_MAX &&
           strspn(text, "0123456789abcdef") == length;
}

/* The outcome of matching one route's pattern against a raw path. */
typedef enum path_result {
    PATH_NO_MATCH,
    PATH_MATCH,
    PATH_BAD_PARAMETER, /* the shape matches, a parameter does not: parameter names it */
} path_result;

/* Matches the raw (still percent-encoded) path against pattern segment by
 * segment. Each segment is decoded on its own, so "%2F" never splits a
 * segment, and a parameter is refused when its decoded bytes hold a NUL, are
 * longer than REST_PARAM_SIZE - 1, or break the parameter's grammar. Valid
 * parameters are copied into params. */
static path_result path_matches(const char *pattern, const char *path,
                                char params[REST_PARAM_COUNT][REST_PARAM_SIZE], char *parameter,
                                size_t parameter_size)
{
    const char *route_pattern = pattern;
    size_t param = 0;
    path_result result = PATH_MATCH;
    while (*pattern != '\0' && *path != '\0') {
        if (*pattern != '/' || *path != '/')
            return PATH_NO_MATCH;
        pattern++;
        path++;
        size_t pattern_length = strcspn(pattern, "/");
        size_t path_length = strcspn(path, "/");
        if (pattern[0] == '{') {
            /* Encoded segments are at most three bytes per decoded byte. */
            if (path_length == 0 || param >= REST_PARAM_COUNT)
                return PATH_NO_MATCH;
            snprintf(parameter, parameter_size, "%.*s", (int)(pattern_length - 2), pattern + 1);
            char raw[3 * REST_PARAM_SIZE];
            size_t decoded_length = 0;
            char *decoded = NULL;
            if (path_length < sizeof(raw)) {
                memcpy(raw, path, path_length);
                raw[path_length] = '\0';
                decoded = evhttp_uridecode(raw, 0, &decoded_length);
            }
            bool valid = decoded != NULL && decoded_length < REST_PARAM_SIZE &&
                         strlen(decoded) == decoded_length &&
                         parameter_is_valid(route_pattern, parameter, decoded);
            if (valid)
                memcpy(params[param], decoded, decoded_length + 1);
            else if (result == PATH_MATCH)
                result = PATH_BAD_PARAMETER; /* unless a literal segment differs later */
            free(decoded);
            param++;
        } else if (pattern_length != path_length || strncmp(pattern, path, path_length) != 0) {
            return PATH_NO_MATCH;
        }
        pattern += pattern_length;
        path += path_length;
    }
    if (*pattern != '\0' || (*path != '\0' && strcmp(path, "/") != 0))
        return PATH_NO_MATCH;
    return result;
}

rest_match rest_api_find(const char *method, const char *path, const rest_route **route,
                         rest_call *call, char *detail, size_t detail_size)
{
    bool path_known = false;
    detail[0] = '\0';
    char allowed[64] = "";
    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        char params[REST_PARAM_COUNT][REST_PARAM_SIZE];
        char parameter[32];
        path_result result =
            path_matches(routes[i].pattern, path, params, parameter, sizeof(parameter));
        if (result == PATH_NO_MATCH)
            continue;
        if (result == PATH_BAD_PARAMETER) {
            /* Refused before anything else: the method, the body, the store. */
            snprintf(detail, detail_size, "%s", parameter);
            return REST_BAD_PARAMETER;
        }
        if (strcmp(routes[i].method, method) == 0) {
            *route = &routes[i];
            memcpy(call->params, params, sizeof(params));
            return REST_MATCHED;
        }
        size_t used = strlen(allowed);
        snprintf(allowed + used, sizeof(allowed) - used, "%s%s", path_known ? ", " : "",
                 routes[i].method);
        path_known = true;
    }
    snprintf(detail, detail_size, "%s", allowed);
    return path_known ? REST_WRONG_METHOD : REST_NO_ROUTE;
}

void rest_api_handle(const rest_route *route, store *db, const rest_call *call, rest_reply *reply)
{
    memset(reply, 0, sizeof(*reply));
    if ((route->accepts & TAKES_BODY) && call->body == NULL) {
        rest_reply_error(reply, 400, "invalid", NULL,
                         "%s %s needs a JSON body (Content-Type: application/json)", route->method,
                         route->pattern);
        return;
    }
    /* An option the route would ignore is refused: a client that asked for a
     * dry run or a precondition must never get an unconditional write. */
    if (call->dry_run && !(route->accepts & DRY_RUN)) {
        rest_reply_error(reply, 400, "invalid", "dry_run", "%s %s does not support dry_run",
                         route->method, route->pattern);
        return;
    }
    if (call->identity[0] != '\0' && !(route->accepts & IDENTITY)) {
        rest_reply_error(reply, 400, "invalid", "identity", "%s %s does not support identity",
                         route->method, route->pattern);
        return;
    }
    if (call->if_revision != 0 && !(route->accepts & CONDITIONAL)) {
        rest_reply_error(reply, 400, "invalid", "If-Match", "%s %s does not support If-Match",
                         route->method, route->pattern);
        return;
    }
    route->handler(db, call, reply);
}

bool rest_route_takes_body(const rest_route *route)
{
    return (route->accepts & TAKES_BODY) != 0;
}

const char *rest_route_method(const rest_route *route)
{
    return route->method;
}

const char *rest_route_pattern(const rest_route *route)
{
    return route->pattern;
}

size_t rest_api_route_count(void)
{
    return ROUTE_COUNT;
}

const rest_route *rest_api_route_at(size_t index)
{
    return index < ROUTE_COUNT ? &routes[index] : NULL;
}
