/*
 * model.h — the mesh's data model: services, endpoints, routes, authorization
 * policies, join tokens, issued certificates and proxies, as plain C structs.
 *
 * The store persists these, the admin API reads and writes them as JSON, and
 * the translator turns them into xDS resources. This module owns:
 *   - the enums and their wire names ("round_robin", "healthy", ...),
 *   - validation (every rule a value must satisfy, reported with the path of
 *     the offending field, e.g. "rules[0].split[1].weight"),
 *   - the JSON form of route rules and policies (jansson), which is both the
 *     REST representation and the form the store keeps them in.
 *
 * Ownership: every struct that holds pointers is released with its
 * model_*_free() function, which frees the pointers inside but not the struct
 * itself when it is embedded (model_*_clear) — see each declaration.
 */
#ifndef ATRIUM_STORE_MODEL_H
#define ATRIUM_STORE_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits shared by validation everywhere. */
#define MODEL_NAME_MAX            63 /* service names and endpoint ids: DNS-label-like */
#define MODEL_ENDPOINT_WEIGHT_MAX 128
#define MODEL_TTL_MAX_S           86400

/* Bounds on what one REST body may hold (each refused with 400 naming the
 * field). Label keys are 1-63 of [A-Za-z0-9._/-], values 0-63 of
 * [A-Za-z0-9._-]. */
#define MODEL_LABELS_MAX         64   /* labels of an endpoint, or of a split's subset */
#define MODEL_LABEL_PART_MAX     63   /* bytes of a label key or value */
#define MODEL_DEPENDENCIES_MAX   1024 /* services a service may call */
#define MODEL_RULES_MAX          128  /* route rules of a service */
#define MODEL_SPLITS_MAX         32   /* split entries of a rule */
#define MODEL_HEADER_MATCHES_MAX 16   /* header matches of a rule */
#define MODEL_HEADER_VALUE_MAX   1024 /* bytes of a header match's exact or prefix value */
#define MODEL_STATUS_CODES_MAX   16   /* retries.status_codes of a rule */
#define MODEL_RETRY_ON_MAX       5    /* retries.on entries (there are 5 conditions) */
#define MODEL_POLICY_RULES_MAX   128  /* entries of a policy's allow, and of its deny */
#define MODEL_METHODS_MAX        9    /* methods of a policy entry (there are 9) */
#define MODEL_PATH_MAX           1024 /* bytes of a route path or policy path_prefix */

/* A validation failure: what is wrong and which field. */
typedef struct model_error {
    char field[128];   /* path of the field, e.g. "rules[0].split[1].weight"; "" when global */
    char message[256]; /* human-readable, names the expected values */
} model_error;

/* ---- enums ---------------------------------------------------------------- */

typedef enum model_protocol {
    MODEL_PROTOCOL_HTTP = 0,
    MODEL_PROTOCOL_GRPC,
    MODEL_PROTOCOL_TCP,
} model_protocol;

typedef enum model_lb_policy {
    MODEL_LB_ROUND_ROBIN = 0,
    MODEL_LB_LEAST_REQUEST,
    MODEL_LB_RANDOM,
    MODEL_LB_RING_HASH,
} model_lb_policy;

typedef enum model_health {
    MODEL_HEALTH_HEALTHY = 0,
    MODEL_HEALTH_UNHEALTHY,
    MODEL_HEALTH_DRAINING,
} model_health;

typedef enum model_path_match {
    MODEL_PATH_ANY = 0, /* no path condition */
    MODEL_PATH_PREFIX,
    MODEL_PATH_EXACT,
} model_path_match;

typedef enum model_header_match_kind {
    MODEL_HEADER_EXACT = 0,
    MODEL_HEADER_PREFIX,
    MODEL_HEADER_PRESENT,
} model_header_match_kind;

/* Retry conditions, a bit set. Names as in the REST API. */
enum {
    MODEL_RETRY_ON_5XX = 1u << 0,
    MODEL_RETRY_ON_GATEWAY_ERROR = 1u << 1,
    MODEL_RETRY_ON_CONNECT_FAILURE = 1u << 2,
    MODEL_RETRY_ON_RESET = 1u << 3,
    MODEL_RETRY_ON_RETRIABLE_STATUS_CODES = 1u << 4,
};

/* Name <-> value. *_name() returns a static string; *_parse() returns false
 * for an unknown name and leaves *out untouched. */
const char *model_protocol_name(model_protocol protocol);
bool model_protocol_parse(const char *name, model_protocol *out);
const char *model_lb_policy_name(model_lb_policy policy);
bool model_lb_policy_parse(const char *name, model_lb_policy *out);
const char *model_health_name(model_health health);
bool model_health_parse(const char *name, model_health *out);
/* Parses one retry condition name into its bit; 0 when unknown. */
uint32_t model_retry_condition_parse(const char *name);

/* ---- labels --------------------------------------------------------------- */

typedef struct model_label {
    char *key;
    char *value;
} model_label;

/* A set of labels, kept sorted by key with unique keys. */
typedef struct model_labels {
    model_label *items;
    size_t count;
} model_labels;

/* Adds or replaces key=value (copies both). Returns false on allocation failure. */
bool model_labels_set(model_labels *labels, const char *key, const char *value);
/* Returns the value for key (owned by labels) or NULL. */
const char *model_labels_get(const model_labels *labels, const char *key);
/* True when every label of subset is in labels with the same value. */
bool model_labels_match(const model_labels *labels, const model_labels *subset);
/* Frees the items; labels itself is left empty and reusable. */
void model_labels_clear(model_labels *labels);
/* Deep copy into *out (which must be empty). */
bool model_labels_copy(model_labels *out, const model_labels *from);
/* JSON object {"k":"v"} <-> labels. to_json returns a new reference.
 * from_json refuses more than MODEL_LABELS_MAX labels (error on field) before
 * copying any, and runs in O(n log n): one sort, no search per key. */
json_t *model_labels_to_json(const model_labels *labels);
bool model_labels_from_json(const json_t *object, model_labels *out, const char *field,
                            model_error *error);

/* ---- services ------------------------------------------------------------- */

/* Outlier detection: eject a host after consecutive_5xx errors in a row. */
typedef struct model_outlier_detection {
    uint32_t consecutive_5xx;       /* >= 1 */
    uint32_t interval_ms;           /* >= 1 */
    uint32_t base_ejection_time_ms; /* >= 1 */
    uint32_t max_ejection_percent;  /* 1..100 */
} model_outlier_detection;

/* Circuit breaker thresholds; 0 means "not set" (the data plane's default). */
typedef struct model_circuit_breaker {
    uint32_t max_connections;
    uint32_t max_pending_requests;
    uint32_t max_requests;
    uint32_t max_retries;
} model_circuit_breaker;

typedef struct model_service {
    char *name;
    char *namespace_name; /* default "default" */
    model_protocol protocol;
    model_lb_policy lb_policy;
    uint32_t connect_timeout_ms; /* 1..60000, default 1000 */
    bool has_outlier_detection;
    model_outlier_detection outlier_detection;
    bool has_circuit_breaker;
    model_circuit_breaker circuit_breaker;
    bool has_dependencies; /* false: may call every service */
    char **dependencies;   /* service names */
    size_t dependency_count;
    int64_t revision; /* set by the store: the revision that last wrote it */
} model_service;

/* Fills defaults (namespace "default", http, round_robin, 1000 ms). Strings NULL. */
void model_service_init(model_service *service);
/* Frees the pointers inside; the struct may be reused after model_service_init. */
void model_service_clear(model_service *service);
bool model_service_validate(const model_service *service, model_error *error);
/* Parses the REST body of service `name` into *out (initialized here). Unknown
 * keys are errors; "name" may repeat the path's name; "revision" is output
 * only and ignored. On failure *out is cleared and error names the field. */
bool model_service_from_json(const json_t *document, const char *name, model_service *out,
                             model_error *error);
/* The REST form (with "revision" when set); new reference, NULL when out of memory. */
json_t *model_service_to_json(const model_service *service);

/* ---- endpoints ------------------------------------------------------------ */

typedef struct model_endpoint {
    char *service;
    char *id;
    char *address;   /* IPv4 or IPv6 literal */
    uint16_t port;   /* 1..65535 */
    uint32_t weight; /* 1..128, default 1 */
    model_labels labels;
    char *zone; /* "" when none */
    model_health health;
    uint32_t ttl_s;        /* 0: no heartbeat required */
    int64_t expires_at_ms; /* set by the store when ttl_s > 0: last heartbeat + ttl */
    uint16_t proxy_port;   /* 0: no atrium-proxy in front */
    int64_t revision;      /* set by the store */
} model_endpoint;

void model_endpoint_init(model_endpoint *endpoint);
void model_endpoint_clear(model_endpoint *endpoint);
bool model_endpoint_validate(const model_endpoint *endpoint, model_error *error);
/* Parses the REST body of an endpoint of `service`. id is the path's id, or
 * NULL when the body must carry "id" (an entry of a bulk list). field prefixes
 * every error path ("endpoints[3]", or "" for a single endpoint). "service",
 * "id" may repeat the path; "expires_at_ms" and "revision" are output only. */
bool model_endpoint_from_json(const json_t *document, const char *service, const char *id,
                              const char *field, model_endpoint *out, model_error *error);
json_t *model_endpoint_to_json(const model_endpoint *endpoint);
/* Finds two endpoints with the same id in O(n log n). Returns true with their
 * indexes, *first < *second, when there are. */
bool model_endpoints_find_duplicate(const model_endpoint *endpoints, size_t count, size_t *first,
                                    size_t *second);
/* Sorts ids (strcmp order) in place, for bsearch with model_id_compare. */
void model_ids_sort(const char **ids, size_t count);
/* strcmp of two `const char *` array elements: a qsort/bsearch comparator. */
int model_id_compare(const void *left, const void *right);
/* True for a valid name (service, namespace, endpoint id): a DNS-1123 label,
 * 1..63 of [a-z0-9-], starting and ending with a letter or digit. */
bool model_name_is_valid(const char *name);

/* ---- routes --------------------------------------------------------------- */

typedef struct model_header_match {
    char *name;
    model_header_match_kind kind;
    char *value; /* NULL for PRESENT */
} model_header_match;

typedef struct model_split {
    model_labels subset; /* endpoints whose labels include all of these */
    uint32_t weight;     /* > 0 */
} model_split;

typedef struct model_retry_policy {
    uint32_t attempts; /* 1..10 */
    uint32_t on;       /* MODEL_RETRY_ON_* bits; at least one */
    uint32_t *status_codes;
    size_t status_code_count;
    uint32_t per_try_timeout_ms; /* 0: none */
    uint32_t backoff_base_ms;    /* 0: data plane default */
    uint32_t backoff_max_ms;     /* 0: data plane default; >= base when set */
} model_retry_policy;

typedef struct model_route_rule {
    model_path_match path_match;
    char *path; /* NULL when MODEL_PATH_ANY */
    model_header_match *headers;
    size_t header_count;
    model_split *splits; /* none: the whole service */
    size_t split_count;
    uint32_t timeout_ms; /* 0: none */
    bool has_retries;
    model_retry_policy retries;
} model_route_rule;

/* The ordered routing rules of one service. */
typedef struct model_routes {
    char *service;
    model_route_rule *rules;
    size_t rule_count;
    int64_t revision; /* set by the store */
} model_routes;

void model_routes_clear(model_routes *routes);
/* Checks every rule (ranges, names, paths); error->field like "rules[0].timeout_ms". */
bool model_routes_validate(const model_routes *routes, model_error *error);
/* Parses {"rules":[...]} into *out (empty on entry; service left NULL).
 * On failure returns false, *out is cleared and error names the field. */
bool model_routes_from_json(const json_t *document, model_routes *out, model_error *error);
/* {"rules":[...]}; new reference, NULL on allocation failure. */
json_t *model_routes_to_json(const model_routes *routes);

/* ---- authorization policies ---------------------------------------------- */

typedef struct model_policy_rule {
    char *from; /* calling service; NULL: any */
    char **methods;
    size_t method_count; /* 0: any method */
    char *path_prefix;   /* NULL: any path */
} model_policy_rule;

typedef struct model_policy {
    char *service;
    bool default_allow;
    model_policy_rule *allow;
    size_t allow_count;
    model_policy_rule *deny;
    size_t deny_count;
    int64_t revision; /* set by the store */
} model_policy;

void model_policy_clear(model_policy *policy);
bool model_policy_validate(const model_policy *policy, model_error *error);
/* Parses {"default":"allow|deny","allow":[...],"deny":[...]}; as routes. */
bool model_policy_from_json(const json_t *document, model_policy *out, model_error *error);
json_t *model_policy_to_json(const model_policy *policy);

/* ---- join tokens, certificates, proxies, changes ---------------------------- */

#define MODEL_TOKEN_HASH_SIZE 32 /* SHA-256 */

typedef struct model_join_token {
    char *id; /* public identifier (not the secret) */
    char *service;
    char *namespace_name;
    uint8_t hash[MODEL_TOKEN_HASH_SIZE]; /* SHA-256 of the secret; the secret is never stored */
    int64_t created_at_ms;
    int64_t expires_at_ms;
    uint32_t uses_allowed; /* >= 1 */
    uint32_t uses;
} model_join_token;

void model_join_token_clear(model_join_token *token);

typedef struct model_certificate {
    char *serial;   /* lower-case hex */
    char *identity; /* SPIFFE ID */
    int64_t not_before_ms;
    int64_t not_after_ms;
    bool revoked;
    int64_t revoked_at_ms; /* 0 unless revoked */
} model_certificate;

void model_certificate_clear(model_certificate *certificate);

/* Acceptance state of one resource type on one proxy. */
typedef struct model_proxy_type_status {
    char *type_url;
    char *sent_version;  /* the version last sent to the proxy; NULL: nothing sent yet */
    int64_t sent_at_ms;  /* 0 unless something was sent */
    char *acked_version; /* NULL: nothing ACKed yet */
    int64_t acked_at_ms;
    char *nacked_version; /* NULL: no NACK since the last ACK */
    char *nack_message;
    int64_t nacked_at_ms;
} model_proxy_type_status;

typedef struct model_proxy {
    char *node_id;
    char *identity; /* SPIFFE ID or "" on plaintext loopback */
    char *service;
    char *namespace_name;
    /* The xDS variant of its stream, "sotw" or "delta"; "" when not known
     * (recorded by store_proxy_connected, or before schema 3). */
    char *protocol;
    bool connected;
    int64_t connected_since_ms;
    int64_t last_seen_ms;
    model_proxy_type_status *types;
    size_t type_count;
} model_proxy;

void model_proxy_clear(model_proxy *proxy);

/* Kinds of entity in the change log. */
typedef enum model_entity_kind {
    MODEL_KIND_SERVICE = 0,
    MODEL_KIND_ENDPOINT,
    MODEL_KIND_ROUTES,
    MODEL_KIND_POLICY,
    MODEL_KIND_JOIN_TOKEN,
    MODEL_KIND_CERTIFICATE,
} model_entity_kind;

typedef enum model_change_op {
    MODEL_CHANGE_PUT = 0,
    MODEL_CHANGE_DELETE,
} model_change_op;

const char *model_entity_kind_name(model_entity_kind kind);
const char *model_change_op_name(model_change_op op);

/* One row of the change log. key is "<service>" for services, routes and
 * policies, "<service>/<endpoint id>" for endpoints, the id for tokens and the
 * serial for certificates. */
typedef struct model_change {
    int64_t revision;
    model_entity_kind kind;
    char *key;
    model_change_op op;
} model_change;

/* ---- lists ------------------------------------------------------------------ */

/* Growable arrays the store fills. Free with the matching *_list_free(), which
 * clears every element and the array; the list struct itself is the caller's. */
typedef struct model_service_list {
    model_service *items;
    size_t count;
} model_service_list;
typedef struct model_endpoint_list {
    model_endpoint *items;
    size_t count;
} model_endpoint_list;
typedef struct model_join_token_list {
    model_join_token *items;
    size_t count;
} model_join_token_list;
typedef struct model_certificate_list {
    model_certificate *items;
    size_t count;
} model_certificate_list;
typedef struct model_proxy_list {
    model_proxy *items;
    size_t count;
} model_proxy_list;
typedef struct model_change_list {
    model_change *items;
    size_t count;
} model_change_list;

void model_service_list_free(model_service_list *list);
void model_endpoint_list_free(model_endpoint_list *list);
void model_join_token_list_free(model_join_token_list *list);
void model_certificate_list_free(model_certificate_list *list);
void model_proxy_list_free(model_proxy_list *list);
void model_change_list_free(model_change_list *list);

#endif
