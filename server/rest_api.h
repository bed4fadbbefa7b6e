/*
 * rest_api.h — the admin REST API (v1) without the HTTP: the route table, and
 * one handler per route that turns a parsed call into store operations and a
 * JSON reply. admin_http does the HTTP (auth, bodies, headers, metrics); this
 * module can be driven directly, which is how the fuzz target uses it.
 */
#ifndef ATRIUM_SERVER_REST_API_H
#define ATRIUM_SERVER_REST_API_H

#include "ca_service.h"
#include "store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REST_PARAM_COUNT 2   /* at most {name} and {id} */
#define REST_PARAM_SIZE  256 /* a longer decoded path parameter is refused (400) */
#define REST_BODY_MAX    (1024 * 1024)
/* A token {id} or a certificate {serial}: 1-64 lower-case hex digits. */
#define REST_HEX_PARAM_MAX 64
/* Endpoints in one PUT /v1/services/{name}/endpoints (the whole set). */
#define REST_ENDPOINTS_MAX 10000

/* One request, as the handlers see it. */
typedef struct rest_call {
    const char *method;                             /* "GET", "PUT", "POST", "DELETE" */
    char params[REST_PARAM_COUNT][REST_PARAM_SIZE]; /* path parameters, in order */
    const json_t *body;                             /* NULL when the request had none */
    int64_t if_revision;                            /* If-Match: 0, STORE_IF_EXISTS or a revision */
    bool dry_run;                   /* ?dry_run=true: validate and show, write nothing */
    int64_t now_ms;                 /* wall clock of the request */
    char identity[REST_PARAM_SIZE]; /* ?identity=... (GET /v1/certs); "" when absent */
    const char *trust_domain;       /* of the mesh's SPIFFE IDs */
    ca_service *authority;          /* the CA (bundle, rotation); may be NULL */
} rest_call;

/* What to answer. */
typedef struct rest_reply {
    int status;
    json_t *body; /* owned by the reply (json_decref); NULL: no body */
    char *text;   /* a non-JSON body (free()), sent with content_type; NULL: none */
    const char *content_type;
    int64_t etag; /* > 0: send ETag: "<etag>" (the resource's revision) */
} rest_reply;

typedef struct rest_route rest_route;

typedef enum rest_match {
    REST_MATCHED,
    REST_WRONG_METHOD, /* the path exists, not with this method */
    REST_NO_ROUTE,
    REST_BAD_PARAMETER, /* a path parameter is not valid: 400, nothing else is looked at */
} rest_match;

/* Finds the route of method + path and copies its parameters into
 * call->params. path is the raw path of the request line, still
 * percent-encoded: it is split on '/' first and each segment decoded on its
 * own, so "%2F" never adds a segment. Every decoded parameter is checked
 * (length, no NUL byte, the grammar of that parameter: {name} and an
 * endpoint {id} are DNS-1123 labels, a token {id} and a {serial} lower-case
 * hex) before anything else. On REST_WRONG_METHOD, detail receives the
 * methods the path accepts ("GET, PUT, DELETE"); on REST_BAD_PARAMETER, the
 * name of the parameter ("name", "id", "serial"). */
rest_match rest_api_find(const char *method, const char *path, const rest_route **route,
                         rest_call *call, char *detail, size_t detail_size);

/* Runs the route's handler. reply is filled; the caller sends and clears it. */
void rest_api_handle(const rest_route *route, store *db, const rest_call *call, rest_reply *reply);

/* Whether the route reads a request body (PUT of a resource). */
bool rest_route_takes_body(const rest_route *route);
/* The route's method and pattern ("/v1/services/{name}"); static strings. */
const char *rest_route_method(const rest_route *route);
const char *rest_route_pattern(const rest_route *route);

/* Every route, for documentation checks: index 0 .. count-1. */
size_t rest_api_route_count(void);
const rest_route *rest_api_route_at(size_t index);

/* Fills reply with {"error": {"code", "message", "field"}}. field may be NULL. */
void rest_reply_error(rest_reply *reply, int status, const char *code, const char *field,
                      const char *format, ...) __attribute__((format(printf, 5, 6)));

/* Releases the reply's body. */
void rest_reply_clear(rest_reply *reply);

#endif
