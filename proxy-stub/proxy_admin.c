/*
 * proxy_admin.c — atrium-proxy's admin port: an evhttp server with its own
 * event_base and thread, as atriumd's admin listener runs (server/
 * admin_http.c): bind, learn the port, serve on a thread, and stop by asking
 * the loop to exit from the stopping thread (libevent_pthreads wakes it),
 * then join and free.
 *
 * Every answer is built on the admin thread from what the sources give at
 * that moment: one snapshot reference taken per request and given back
 * before the reply goes out, one copy of the xDS client's status. JSON is
 * built with jansson; errors are JSON {"error": {"code", "message"}} like
 * atriumd's REST API.
 */
#include "proxy_admin.h"

#include "clock.h"
#include "log.h"
#include "log_interval.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The admin port takes no bodies and small heads; anything larger is refused
 * by evhttp before a handler runs. */
#define REQUEST_BODY_MAX     4096
#define REQUEST_HEADERS_MAX  16384
#define CONNECTION_TIMEOUT_S 30
/* accept() failing (out of file descriptors): the port pauses this long
 * instead of retrying at once, and says so at most once a second. */
#define ACCEPT_PAUSE_MS        100
#define ACCEPT_LOG_INTERVAL_MS 1000

#define CONTENT_TYPE_TEXT       "text/plain; charset=utf-8"
#define CONTENT_TYPE_PROMETHEUS "text/plain; version=0.0.4"
#define CONTENT_TYPE_JSON       "application/json"

struct proxy_admin {
    proxy_admin_sources sources; /* a copy of the caller's */
    struct event_base *base;     /* owned */
    struct evhttp *http;         /* owned */
    uint16_t port;
    pthread_t thread;
    bool thread_started;
    struct evconnlistener *listener; /* evhttp's, not owned */
    struct event *resume;            /* owned: ends a pause of the listener */
    log_interval accept_failure_lines;
};

/* ---- replies ---- */

/* Sends body (may be NULL: an empty body) with status and content type;
 * libevent supplies the reason phrase. */
static void send_body(struct evhttp_request *request, int status, const char *content_type,
                      struct evbuffer *body)
{
    if (content_type != NULL)
        evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type", content_type);
    evhttp_send_reply(request, status, NULL, body);
}

/* Sends value as indented JSON and drops the reference to it. NULL value
 * means it could not be built: 500. */
static void send_json(struct evhttp_request *request, int status, json_t *value)
{
    char *text = value != NULL ? json_dumps(value, JSON_INDENT(2)) : NULL;
    json_decref(value);
    struct evbuffer *body = text != NULL ? evbuffer_new() : NULL;
    if (body == NULL || evbuffer_add(body, text, strlen(text)) != 0 ||
        evbuffer_add(body, "\n", 1) != 0) {
        free(text);
        if (body != NULL)
            evbuffer_free(body);
        evhttp_send_error(request, 500, "out of memory");
        return;
    }
    free(text);
    send_body(request, status, CONTENT_TYPE_JSON, body);
    evbuffer_free(body);
}

static void send_error(struct evhttp_request *request, int status, const char *code,
                       const char *format, ...) __attribute__((format(printf, 4, 5)));

/* {"error": {"code": code, "message": ...}} with status. */
static void send_error(struct evhttp_request *request, int status, const char *code,
                       const char *format, ...)
{
    char message[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof(message), format, arguments);
    va_end(arguments);
    send_json(request, status,
              json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message));
}

/* Sends text (a static or caller-owned string) as text/plain. */
static void send_text(struct evhttp_request *request, int status, const char *text)
{
    struct evbuffer *body = evbuffer_new();
    if (body == NULL || evbuffer_add(body, text, strlen(text)) != 0) {
        if (body != NULL)
            evbuffer_free(body);
        evhttp_send_error(request, 500, "out of memory");
        return;
    }
    send_body(request, status, CONTENT_TYPE_TEXT, body);
    evbuffer_free(body);
}

/* ---- what the sources say ---- */

/* The applied snapshot with a reference the caller gives back with
 * give_back_config, or NULL. */
static proxy_config *take_config(const proxy_admin *admin)
{
    if (admin->sources.current_config == NULL)
        return NULL;
    return admin->sources.current_config(admin->sources.context);
}

static void give_back_config(const proxy_admin *admin, proxy_config *config)
{
    if (config != NULL)
        admin->sources.release_config(admin->sources.context, config);
}

/* The xDS client's status, zero when there is no source; its strings are
 * terminated whatever the source wrote. */
static void read_xds_status(const proxy_admin *admin, xds_client_status *out)
{
    memset(out, 0, sizeof(*out));
    if (admin->sources.xds_status != NULL)
        admin->sources.xds_status(admin->sources.context, out);
    out->last_nack[sizeof(out->last_nack) - 1] = '\0';
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++)
        out->versions[type][sizeof(out->versions[type]) - 1] = '\0';
}

/* ---- JSON building ----
 *
 * Values are made with jansson's constructors and attached with put and
 * append, which take the new reference whatever happens (jansson's *_new
 * functions drop it on failure) and record any failure in *failed: a NULL
 * value (out of memory) or a NULL container. The caller checks *failed once
 * at the end and answers 500 instead of a partial document. */

static void put(json_t *object, const char *key, json_t *value, bool *failed)
{
    if (json_object_set_new(object, key, value) != 0)
        *failed = true;
}

static void append(json_t *array, json_t *value, bool *failed)
{
    if (json_array_append_new(array, value) != 0)
        *failed = true;
}

/* A JSON string of text, null when text is NULL, or NULL when out of memory.
 * Text that is not UTF-8 (names from xDS are bytes to the proxy) is shown
 * with every non-ASCII byte as '?' rather than not at all. */
static json_t *json_text(const char *text)
{
    if (text == NULL)
        return json_null();
    json_t *value = json_string(text);
    if (value != NULL)
        return value;
    char *ascii = strdup(text);
    if (ascii == NULL)
        return NULL;
    for (char *character = ascii; *character != '\0'; character++)
        if ((unsigned char)*character >= 0x80)
            *character = '?';
    value = json_string(ascii);
    free(ascii);
    return value;
}

/* Like json_text, but "" (the xDS status's "none") is null too. */
static json_t *json_text_or_null(const char *text)
{
    return json_text(text != NULL && text[0] != '\0' ? text : NULL);
}

static json_t *json_unsigned(uint64_t value)
{
    return json_integer((json_int_t)value);
}

/* The keys of config_dump's xds.versions, indexed by proxy_resource_type. */
static const char *const resource_type_keys[] = {
    [PROXY_RESOURCE_CLUSTER] = "cluster",
    [PROXY_RESOURCE_ENDPOINT] = "endpoint",
    [PROXY_RESOURCE_LISTENER] = "listener",
    [PROXY_RESOURCE_ROUTE] = "route",
};
_Static_assert(sizeof(resource_type_keys) / sizeof(resource_type_keys[0]) ==
                   PROXY_RESOURCE_TYPE_COUNT,
               "one versions key per resource type");

static const char *direction_name(proxy_direction direction)
{
    switch (direction) {
    case PROXY_DIRECTION_INBOUND:
        return "inbound";
    case PROXY_DIRECTION_OUTBOUND:
        return "outbound";
    case PROXY_DIRECTION_UNSPECIFIED:
        break;
    }
    return "unspecified";
}

static const char *header_match_key(proxy_header_match_kind kind)
{
    switch (kind) {
    case PROXY_HEADER_EXACT:
        return "exact";
    case PROXY_HEADER_PREFIX:
        return "prefix";
    case PROXY_HEADER_SUFFIX:
        return "suffix";
    case PROXY_HEADER_CONTAINS:
        return "contains";
    case PROXY_HEADER_PRESENT:
        break;
    }
    return "present";
}

static json_t *describe_xds_status(const xds_client_status *status, bool *failed)
{
    json_t *object = json_object();
    put(object, "connected", json_boolean(status->connected), failed);
    put(object, "serving_saved_state", json_boolean(status->serving_saved_state), failed);
    put(object, "generation", json_unsigned(status->generation), failed);
    put(object, "responses", json_unsigned(status->responses), failed);
    put(object, "acks", json_unsigned(status->acks), failed);
    put(object, "nacks", json_unsigned(status->nacks), failed);
    put(object, "connects", json_unsigned(status->connects), failed);
    put(object, "last_update_ms", json_integer(status->last_update_ms), failed);
    put(object, "last_nack", json_text_or_null(status->last_nack), failed);
    json_t *versions = json_object();
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++)
        put(versions, resource_type_keys[type], json_text_or_null(status->versions[type]), failed);
    put(object, "versions", versions, failed);
    return object;
}

static json_t *describe_listener(const proxy_listener *listener, bool *failed)
{
    json_t *object = json_object();
    put(object, "name", json_text(listener->name), failed);
    put(object, "version", json_text(listener->version), failed);
    put(object, "address", json_text(listener->address), failed);
    put(object, "port", json_integer(listener->port), failed);
    put(object, "direction", json_string(direction_name(listener->direction)), failed);
    put(object, "route_table", json_text(listener->route_table_name), failed);
    put(object, "route_table_received", json_boolean(listener->route_table != NULL), failed);
    return object;
}

static json_t *describe_header_match(const proxy_header_match *header, bool *failed)
{
    json_t *object = json_object();
    put(object, "name", json_text(header->name), failed);
    if (header->kind == PROXY_HEADER_PRESENT)
        put(object, "present", json_true(), failed);
    else
        put(object, header_match_key(header->kind), json_text(header->value), failed);
    put(object, "ignore_case", json_boolean(header->ignore_case), failed);
    put(object, "invert", json_boolean(header->invert), failed);
    return object;
}

static json_t *describe_route(const proxy_route *route, bool *failed)
{
    json_t *object = json_object();
    put(object, "name", json_text(route->name), failed);

    json_t *match = json_object();
    put(match, route->path_match == PROXY_PATH_EXACT ? "path" : "prefix", json_text(route->path),
        failed);
    put(match, "case_sensitive", json_boolean(route->case_sensitive), failed);
    json_t *headers = json_array();
    for (size_t index = 0; index < route->header_count; index++)
        append(headers, describe_header_match(&route->headers[index], failed), failed);
    put(match, "headers", headers, failed);
    put(object, "match", match, failed);

    json_t *clusters = json_array();
    for (size_t index = 0; index < route->cluster_count; index++) {
        const proxy_weighted_cluster *weighted = &route->clusters[index];
        json_t *cluster = json_object();
        put(cluster, "name", json_text(weighted->name), failed);
        put(cluster, "weight", json_integer(weighted->weight), failed);
        put(cluster, "received", json_boolean(weighted->cluster != NULL), failed);
        append(clusters, cluster, failed);
    }
    put(object, "clusters", clusters, failed);
    put(object, "timeout_ms", json_integer(route->timeout_ms), failed);

    json_t *retry = route->retry_on != NULL ? json_object() : json_null();
    if (route->retry_on != NULL) {
        put(retry, "retry_on", json_text(route->retry_on), failed);
        put(retry, "num_retries", json_integer(route->retry_count), failed);
        put(retry, "per_try_timeout_ms", json_integer(route->per_try_timeout_ms), failed);
    }
    put(object, "retry", retry, failed);
    return object;
}

static json_t *describe_route_table(const proxy_route_table *table, bool is_inline, bool *failed)
{
    json_t *object = json_object();
    put(object, "name", json_text(table->name), failed);
    put(object, "version", json_text(table->version), failed);
    put(object, "inline", json_boolean(is_inline), failed);
    json_t *virtual_hosts = json_array();
    for (size_t host_index = 0; host_index < table->virtual_host_count; host_index++) {
        const proxy_virtual_host *host = &table->virtual_hosts[host_index];
        json_t *host_object = json_object();
        put(host_object, "name", json_text(host->name), failed);
        json_t *domains = json_array();
        for (size_t index = 0; index < host->domain_count; index++)
            append(domains, json_text(host->domains[index]), failed);
        put(host_object, "domains", domains, failed);
        json_t *routes = json_array();
        for (size_t index = 0; index < host->route_count; index++)
            append(routes, describe_route(&host->routes[index], failed), failed);
        put(host_object, "routes", routes, failed);
        append(virtual_hosts, host_object, failed);
    }
    put(object, "virtual_hosts", virtual_hosts, failed);
    return object;
}

static json_t *describe_cluster(const proxy_cluster *cluster, bool *failed)
{
    json_t *object = json_object();
    put(object, "name", json_text(cluster->name), failed);
    put(object, "version", json_text(cluster->version), failed);
    put(object, "endpoints_version", json_text(cluster->endpoints_version), failed);
    put(object, "connect_timeout_ms", json_integer(cluster->connect_timeout_ms), failed);
    json_t *endpoints = json_array();
    for (size_t index = 0; index < cluster->endpoint_count; index++) {
        const proxy_endpoint *endpoint = &cluster->endpoints[index];
        json_t *endpoint_object = json_object();
        put(endpoint_object, "address", json_text(endpoint->address), failed);
        put(endpoint_object, "port", json_integer(endpoint->port), failed);
        put(endpoint_object, "weight", json_integer(endpoint->weight), failed);
        put(endpoint_object, "healthy", json_boolean(endpoint->healthy), failed);
        append(endpoints, endpoint_object, failed);
    }
    put(object, "endpoints", endpoints, failed);
    return object;
}

/* The whole /config_dump document; config may be NULL (nothing applied yet:
 * generation 0 and empty lists). NULL when out of memory. */
static json_t *describe_configuration(const proxy_config *config, const xds_client_status *status)
{
    bool failed = false;
    json_t *root = json_object();
    put(root, "generation", json_unsigned(config != NULL ? config->generation : 0), &failed);
    put(root, "xds", describe_xds_status(status, &failed), &failed);
    json_t *listeners = json_array();
    json_t *route_tables = json_array();
    json_t *clusters = json_array();
    if (config != NULL) {
        for (size_t index = 0; index < config->listener_count; index++)
            append(listeners, describe_listener(&config->listeners[index], &failed), &failed);
        for (size_t index = 0; index < config->route_table_count; index++)
            append(route_tables, describe_route_table(&config->route_tables[index], false, &failed),
                   &failed);
        for (size_t index = 0; index < config->inline_table_count; index++)
            append(route_tables, describe_route_table(&config->inline_tables[index], true, &failed),
                   &failed);
        for (size_t index = 0; index < config->cluster_count; index++)
            append(clusters, describe_cluster(&config->clusters[index], &failed), &failed);
    }
    put(root, "listeners", listeners, &failed);
    put(root, "route_tables", route_tables, &failed);
    put(root, "clusters", clusters, &failed);
    if (failed) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- the endpoints ---- */

static void serve_ready(proxy_admin *admin, struct evhttp_request *request)
{
    proxy_config *config = take_config(admin);
    if (config == NULL) {
        send_text(request, 503, "no configuration yet\n");
        return;
    }
    give_back_config(admin, config);
    xds_client_status status;
    read_xds_status(admin, &status);
    const char *text = "ready\n";
    if (status.serving_saved_state)
        text = status.connected ? "ready (from saved state; atriumd reached, nothing newer yet)\n"
                                : "ready (from saved state; control plane not reached)\n";
    send_text(request, 200, text);
}

/* One metric with its HELP and TYPE lines and an integer value. Returns 0, or
 * -1 when out of memory. */
static int write_metric(struct evbuffer *out, const char *name, const char *type, const char *help,
                        uint64_t value)
{
    return evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help,
                               name, type, name, value) < 0
               ? -1
               : 0;
}

static int write_xds_metrics(struct evbuffer *out, const xds_client_status *status)
{
    if (write_metric(out, "atrium_proxy_xds_connected", "gauge",
                     "1 when the xDS stream is open and has had a response.",
                     status->connected) != 0 ||
        write_metric(out, "atrium_proxy_xds_serving_saved_state", "gauge",
                     "1 while the configuration comes from the saved state, none from the "
                     "control plane yet.",
                     status->serving_saved_state) != 0 ||
        write_metric(out, "atrium_proxy_xds_responses_total", "counter", "xDS responses received.",
                     status->responses) != 0 ||
        write_metric(out, "atrium_proxy_xds_acks_total", "counter", "xDS responses accepted (ACK).",
                     status->acks) != 0 ||
        write_metric(out, "atrium_proxy_xds_nacks_total", "counter",
                     "xDS responses refused (NACK).", status->nacks) != 0 ||
        write_metric(out, "atrium_proxy_xds_connects_total", "counter", "xDS streams opened.",
                     status->connects) != 0 ||
        write_metric(out, "atrium_proxy_config_generation", "gauge",
                     "Generation of the applied configuration snapshot (0 before any).",
                     status->generation) != 0)
        return -1;
    int64_t milliseconds = status->last_update_ms;
    return evbuffer_add_printf(out,
                               "# HELP atrium_proxy_config_last_update_seconds Wall-clock time "
                               "of the last applied snapshot, seconds since the epoch (0 before "
                               "any).\n"
                               "# TYPE atrium_proxy_config_last_update_seconds gauge\n"
                               "atrium_proxy_config_last_update_seconds %" PRId64 ".%03d\n",
                               milliseconds / 1000, (int)(milliseconds % 1000)) < 0
               ? -1
               : 0;
}

static void serve_stats(proxy_admin *admin, struct evhttp_request *request)
{
    xds_client_status status;
    read_xds_status(admin, &status);
    if (status.last_update_ms < 0)
        status.last_update_ms = 0;
    struct evbuffer *body = evbuffer_new();
    if (body == NULL ||
        (admin->sources.stats != NULL &&
         proxy_stats_write_prometheus(admin->sources.stats, body) != 0) ||
        write_xds_metrics(body, &status) != 0) {
        if (body != NULL)
            evbuffer_free(body);
        send_error(request, 500, "internal", "out of memory");
        return;
    }
    send_body(request, 200, CONTENT_TYPE_PROMETHEUS, body);
    evbuffer_free(body);
}

static void serve_config_dump(proxy_admin *admin, struct evhttp_request *request)
{
    xds_client_status status;
    read_xds_status(admin, &status);
    proxy_config *config = take_config(admin);
    json_t *document = describe_configuration(config, &status);
    give_back_config(admin, config);
    if (document == NULL) {
        send_error(request, 500, "internal", "out of memory");
        return;
    }
    send_json(request, 200, document);
}

/* "10.0.0.1:8080" or "[fd00::1]:8080", as /clusters names an endpoint. */
static void format_host(const proxy_endpoint *endpoint, char *out, size_t size)
{
    bool is_ipv6 = strchr(endpoint->address, ':') != NULL;
    snprintf(out, size, is_ipv6 ? "[%s]:%u" : "%s:%u", endpoint->address, (unsigned)endpoint->port);
}

static const char *health_flags(const proxy_endpoint *endpoint)
{
    return endpoint->healthy ? "healthy" : "/failed_eds_health";
}

/* The counters of an endpoint, zero without a stats registry. */
static void read_endpoint_counters(const proxy_admin *admin, const proxy_cluster *cluster,
                                   const proxy_endpoint *endpoint, proxy_endpoint_counters *out)
{
    memset(out, 0, sizeof(*out));
    if (admin->sources.stats != NULL)
        proxy_stats_endpoint_counters(admin->sources.stats, cluster->name, endpoint->address,
                                      endpoint->port, out);
}

/* Envoy's /clusters text: per cluster "name::added_via_api::true", then per
 * endpoint "name::host::field::value" lines. Returns 0, or -1 when out of
 * memory. */
static int write_clusters_text(const proxy_admin *admin, const proxy_config *config,
                               struct evbuffer *out)
{
    for (size_t cluster_index = 0; config != NULL && cluster_index < config->cluster_count;
         cluster_index++) {
        const proxy_cluster *cluster = &config->clusters[cluster_index];
        const char *name = cluster->name;
        if (evbuffer_add_printf(out, "%s::added_via_api::true\n", name) < 0)
            return -1;
        for (size_t index = 0; index < cluster->endpoint_count; index++) {
            const proxy_endpoint *endpoint = &cluster->endpoints[index];
            char host[96];
            format_host(endpoint, host, sizeof(host));
            proxy_endpoint_counters counters;
            read_endpoint_counters(admin, cluster, endpoint, &counters);
            if (evbuffer_add_printf(out,
                                    "%s::%s::cx_active::%" PRId64 "\n"
                                    "%s::%s::cx_connect_fail::%" PRIu64 "\n"
                                    "%s::%s::rq_error::%" PRIu64 "\n"
                                    "%s::%s::rq_total::%" PRIu64 "\n"
                                    "%s::%s::health_flags::%s\n"
                                    "%s::%s::weight::%" PRIu32 "\n",
                                    name, host, counters.active, name, host,
                                    counters.connect_failures, name, host, counters.failures, name,
                                    host, counters.requests, name, host, health_flags(endpoint),
                                    name, host, endpoint->weight) < 0)
                return -1;
        }
    }
    return 0;
}

/* The same as JSON: {"clusters": [{name, version, endpoints_version,
 * endpoints: [{address, port, weight, healthy, health_flags, rq_total,
 * rq_error, cx_connect_fail, cx_active}]}]}. NULL when out of memory. */
static json_t *describe_clusters(const proxy_admin *admin, const proxy_config *config)
{
    bool failed = false;
    json_t *clusters = json_array();
    for (size_t cluster_index = 0; config != NULL && cluster_index < config->cluster_count;
         cluster_index++) {
        const proxy_cluster *cluster = &config->clusters[cluster_index];
        json_t *cluster_object = json_object();
        put(cluster_object, "name", json_text(cluster->name), &failed);
        put(cluster_object, "version", json_text(cluster->version), &failed);
        put(cluster_object, "endpoints_version", json_text(cluster->endpoints_version), &failed);
        json_t *endpoints = json_array();
        for (size_t index = 0; index < cluster->endpoint_count; index++) {
            const proxy_endpoint *endpoint = &cluster->endpoints[index];
            proxy_endpoint_counters counters;
            read_endpoint_counters(admin, cluster, endpoint, &counters);
            json_t *endpoint_object = json_object();
            put(endpoint_object, "address", json_text(endpoint->address), &failed);
            put(endpoint_object, "port", json_integer(endpoint->port), &failed);
            put(endpoint_object, "weight", json_integer(endpoint->weight), &failed);
            put(endpoint_object, "healthy", json_boolean(endpoint->healthy), &failed);
            put(endpoint_object, "health_flags", json_string(health_flags(endpoint)), &failed);
            put(endpoint_object, "rq_total", json_unsigned(counters.requests), &failed);
            put(endpoint_object, "rq_error", json_unsigned(counters.failures), &failed);
            put(endpoint_object, "cx_connect_fail", json_unsigned(counters.connect_failures),
                &failed);
            put(endpoint_object, "cx_active", json_integer(counters.active), &failed);
            append(endpoints, endpoint_object, &failed);
        }
        put(cluster_object, "endpoints", endpoints, &failed);
        append(clusters, cluster_object, &failed);
    }
    json_t *root = json_object();
    put(root, "clusters", clusters, &failed);
    if (failed) {
        json_decref(root);
        return NULL;
    }
    return root;
}

typedef enum clusters_format { CLUSTERS_TEXT = 0, CLUSTERS_JSON } clusters_format;

/* ?format=text|json (default text); other parameters are ignored. Returns
 * false after answering 400. */
static bool read_clusters_format(struct evhttp_request *request, clusters_format *out)
{
    *out = CLUSTERS_TEXT;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(request));
    if (query == NULL || query[0] == '\0')
        return true;
    struct evkeyvalq parameters;
    if (evhttp_parse_query_str(query, &parameters) != 0) {
        evhttp_clear_headers(&parameters);
        send_error(request, 400, "invalid", "malformed query string");
        return false;
    }
    const char *format = evhttp_find_header(&parameters, "format");
    bool valid = true;
    if (format != NULL && strcmp(format, "json") == 0)
        *out = CLUSTERS_JSON;
    else if (format != NULL && strcmp(format, "text") != 0)
        valid = false;
    if (!valid)
        send_error(request, 400, "invalid", "format must be text or json (got '%.64s')", format);
    evhttp_clear_headers(&parameters);
    return valid;
}

static void serve_clusters(proxy_admin *admin, struct evhttp_request *request)
{
    clusters_format format;
    if (!read_clusters_format(request, &format))
        return;
    proxy_config *config = take_config(admin);
    if (format == CLUSTERS_JSON) {
        json_t *document = describe_clusters(admin, config);
        give_back_config(admin, config);
        if (document == NULL)
            send_error(request, 500, "internal", "out of memory");
        else
            send_json(request, 200, document);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    bool written = body != NULL && write_clusters_text(admin, config, body) == 0;
    give_back_config(admin, config);
    if (!written) {
        if (body != NULL)
            evbuffer_free(body);
        send_error(request, 500, "internal", "out of memory");
        return;
    }
    send_body(request, 200, CONTENT_TYPE_TEXT, body);
    evbuffer_free(body);
}

typedef void (*endpoint_handler)(proxy_admin *admin, struct evhttp_request *request);

static const struct {
    const char *path;
    endpoint_handler serve;
} admin_endpoints[] = {
    {"/ready", serve_ready},
    {"/stats", serve_stats},
    {"/config_dump", serve_config_dump},
    {"/clusters", serve_clusters},
};

/* Every request: 404 for a path not served, 405 for anything but GET. */
static void handle_request(struct evhttp_request *request, void *context)
{
    proxy_admin *admin = context;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(request));
    if (path == NULL || path[0] == '\0')
        path = "/";
    endpoint_handler serve = NULL;
    for (size_t index = 0; index < sizeof(admin_endpoints) / sizeof(admin_endpoints[0]); index++)
        if (strcmp(path, admin_endpoints[index].path) == 0)
            serve = admin_endpoints[index].serve;
    if (serve == NULL) {
        send_error(request, 404, "not_found",
                   "no such path: %.200s (the admin port serves /ready, /stats, /config_dump "
                   "and /clusters)",
                   path);
        return;
    }
    if (evhttp_request_get_command(request) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET");
        send_error(request, 405, "method_not_allowed", "%.200s answers GET only", path);
        return;
    }
    serve(admin, request);
}

/* ---- the thread ---- */

static pthread_once_t threading_once = PTHREAD_ONCE_INIT;
static int threading_result = -1;

/* libevent's locking and cross-thread wake-ups, for every base made after. */
static void enable_threading(void)
{
    threading_result = evthread_use_pthreads();
}

static void *serve_loop(void *context)
{
    proxy_admin *admin = context;
    event_base_dispatch(admin->base);
    return NULL;
}

/* The port socket is bound to. */
static uint16_t bound_port(evutil_socket_t socket)
{
    struct sockaddr_storage address = {0};
    ev_socklen_t length = sizeof(address);
    if (getsockname(socket, (struct sockaddr *)&address, &length) != 0)
        return 0;
    if (address.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
    if (address.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&address)->sin_port);
    return 0;
}

static void resume_accepting(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    proxy_admin *admin = context;
    evconnlistener_enable(admin->listener);
}

/* accept() failed for a reason libevent does not retry (EMFILE, ENFILE,
 * ENOBUFS...). Without this callback libevent logs a warning and the
 * listener, still readable, fails again at once: a busy loop. */
static void accept_failed(struct evconnlistener *listener, void *context)
{
    proxy_admin *admin = context;
    int error = errno;
    evconnlistener_disable(listener);
    struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};
    event_add(admin->resume, &pause);
    uint64_t failures = 0;
    if (log_interval_due(&admin->accept_failure_lines, clock_monotonic_ms(), ACCEPT_LOG_INTERVAL_MS,
                         &failures))
        log_warn("admin port: accept: %s (%llu time%s since the last report): paused for %d ms "
                 "at a time",
                 strerror(error), (unsigned long long)failures, failures == 1 ? "" : "s",
                 ACCEPT_PAUSE_MS);
}

proxy_admin *proxy_admin_start(const char *host, uint16_t port, const proxy_admin_sources *sources,
                               char *error, size_t error_size)
{
    if (host == NULL || sources == NULL) {
        snprintf(error, error_size, "the admin port needs a host and sources");
        return NULL;
    }
    if (sources->current_config != NULL && sources->release_config == NULL) {
        snprintf(error, error_size,
                 "the admin port's sources need release_config with "
                 "current_config");
        return NULL;
    }
    pthread_once(&threading_once, enable_threading);
    if (threading_result != 0) {
        snprintf(error, error_size, "cannot enable libevent's thread support");
        return NULL;
    }
    proxy_admin *admin = calloc(1, sizeof(*admin));
    if (admin == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    admin->sources = *sources;
    admin->base = event_base_new();
    admin->http = admin->base != NULL ? evhttp_new(admin->base) : NULL;
    if (admin->http == NULL) {
        snprintf(error, error_size, "cannot create the admin HTTP server");
        proxy_admin_stop(admin);
        return NULL;
    }
    evhttp_set_gencb(admin->http, handle_request, admin);
    /* Every method reaches handle_request, which answers 405 in JSON. */
    evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                                EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(admin->http, REQUEST_BODY_MAX);
    evhttp_set_max_headers_size(admin->http, REQUEST_HEADERS_MAX);
    evhttp_set_timeout(admin->http, CONNECTION_TIMEOUT_S);
    struct evhttp_bound_socket *socket = evhttp_bind_socket_with_handle(admin->http, host, port);
    if (socket == NULL) {
        snprintf(error, error_size, "cannot listen on %s port %u: %s", host, (unsigned)port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        proxy_admin_stop(admin);
        return NULL;
    }
    admin->port = bound_port(evhttp_bound_socket_get_fd(socket));
    admin->listener = evhttp_bound_socket_get_listener(socket);
    admin->resume = evtimer_new(admin->base, resume_accepting, admin);
    if (admin->resume == NULL) {
        snprintf(error, error_size, "out of memory");
        proxy_admin_stop(admin);
        return NULL;
    }
    evconnlistener_set_error_cb(admin->listener, accept_failed);
    if (pthread_create(&admin->thread, NULL, serve_loop, admin) != 0) {
        snprintf(error, error_size, "cannot start the admin thread");
        proxy_admin_stop(admin);
        return NULL;
    }
    admin->thread_started = true;
    return admin;
}

uint16_t proxy_admin_port(const proxy_admin *admin)
{
    return admin->port;
}

void proxy_admin_stop(proxy_admin *admin)
{
    if (admin == NULL)
        return;
    if (admin->thread_started) {
        /* Thread-safe with libevent_pthreads: it wakes the loop, and an exit
         * asked for before the loop started is seen when it starts. */
        event_base_loopexit(admin->base, NULL);
        pthread_join(admin->thread, NULL);
    }
    if (admin->resume != NULL)
        event_free(admin->resume);
    if (admin->http != NULL)
        evhttp_free(admin->http);
    if (admin->base != NULL)
        event_base_free(admin->base);
    free(admin);
}
