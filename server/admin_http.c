/*
 * admin_http.c — the admin HTTP listener: an evhttp server with its own
 * event_base and thread. It does what is HTTP about the admin API — the
 * bearer token, body size and media type, JSON syntax errors with line and
 * column, If-Match and ?dry_run, status lines, ETags, /healthz and /metrics —
 * and hands parsed calls to rest_api.
 *
 * It also bounds what a client can make it hold (see admin_http.h for the
 * numbers): header bytes and body bytes per request (evhttp refuses more
 * before buffering it; a Content-Length over the body limit is refused before
 * a byte of the body is read), open connections (the listener is paused at
 * the limit), connections that have not yet presented the token (the oldest
 * is closed to admit a new one), and accept() failures for want of file
 * descriptors (the listener pauses briefly, one log line per interval).
 */
#include "admin_http.h"

#include "address.h"
#include "admin_metrics.h"
#include "admin_token.h"
#include "clock.h"
#include "rest_api.h"

#include "log.h"
#include "log_interval.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One accepted connection, from evhttp's bevcb until its close callback.
 * Owned by the server's list; freed by connection_closed() or at stop. */
typedef struct connection {
    struct connection *prev, *next; /* server->connections, oldest first */
    admin_http *server;
    struct bufferevent *bev;         /* made by us, owned by evhttp */
    struct evhttp_connection *evcon; /* NULL until adopt_connection() ran */
    struct event *adopt;             /* one-shot, activated in the bevcb */
    bool authenticated;              /* a request on it presented the token */
} connection;

struct admin_http {
    store *db;
    char token[ADMIN_TOKEN_LENGTH + 1];
    admin_metrics *metrics;
    admin_http_metrics_source metrics_source;
    void *metrics_context;
    char trust_domain[256];
    ca_service *authority;
    struct event_base *base;
    struct evhttp *http;
    struct event *stop_event; /* activated from another thread to end the loop */
    pthread_t thread;
    struct evconnlistener *listener; /* evhttp's, for pausing and its error callback */
    struct event *resume_event;      /* ends a pause after accept() failed */
    bool accept_paused;              /* accept() failed (no fds): paused until resume_event */
    connection *oldest, *newest;     /* open connections */
    size_t open_count;
    size_t unauthenticated_count;
    admin_http *next_listening; /* listening_servers */
    log_interval accept_failure_lines;
};

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 503:
        return "Service Unavailable";
    default:
        return status >= 500 ? "Internal Server Error" : "Error";
    }
}

static const char *method_name(enum evhttp_cmd_type command)
{
    switch (command) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

static void send_reply(struct evhttp_request *request, const rest_reply *reply)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(request);
    struct evbuffer *buffer = evbuffer_new();
    if (buffer == NULL) {
        evhttp_send_error(request, 500, "out of memory");
        return;
    }
    if (reply->body != NULL) {
        char *text = json_dumps(reply->body, JSON_COMPACT);
        if (text != NULL) {
            evbuffer_add(buffer, text, strlen(text));
            evbuffer_add(buffer, "\n", 1);
            free(text);
        }
        evhttp_add_header(headers, "Content-Type", "application/json");
    }
    if (reply->text != NULL) {
        evbuffer_add(buffer, reply->text, strlen(reply->text));
        evhttp_add_header(headers, "Content-Type",
                          reply->content_type ? reply->content_type : "text/plain");
    }
    if (reply->etag > 0) {
        char etag[32];
        snprintf(etag, sizeof(etag), "\"%lld\"", (long long)reply->etag);
        evhttp_add_header(headers, "ETag", etag);
    }
    evhttp_send_reply(request, reply->status, reason_phrase(reply->status), buffer);
    evbuffer_free(buffer);
}

/* If-Match: "*" or an ETag we gave out ("12", or weak W/"12"). Returns 0 when
 * absent; -2 when malformed. */
static int64_t parse_if_match(const char *value)
{
    if (value == NULL)
        return 0;
    while (*value == ' ')
        value++;
    if (strcmp(value, "*") == 0)
        return STORE_IF_EXISTS;
    if (strncmp(value, "W/", 2) == 0)
        value += 2;
    char *end = NULL;
    long long revision = value[0] == '"' ? strtoll(value + 1, &end, 10) : 0;
    if (end == NULL || end == value + 1 || end[0] != '"' || end[1] != '\0' || revision <= 0)
        return -2;
    return revision;
}

/* Reads the JSON body into *body (NULL when empty). Returns false with the
 * reply filled when it is too large, not JSON, or malformed. */
static bool read_body(struct evhttp_request *request, json_t **body, rest_reply *reply)
{
    *body = NULL;
    struct evbuffer *input = evhttp_request_get_input_buffer(request);
    size_t length = evbuffer_get_length(input);
    if (length == 0)
        return true;
    if (length > REST_BODY_MAX) {
        rest_reply_error(reply, 413, "payload_too_large", NULL,
                         "body of %zu bytes is over the limit of %d", length, REST_BODY_MAX);
        return false;
    }
    const char *type =
        evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type");
    if (type == NULL || strncasecmp(type, "application/json", 16) != 0 ||
        (type[16] != '\0' && type[16] != ';')) {
        rest_reply_error(reply, 415, "unsupported_media_type", NULL,
                         "bodies must be JSON with Content-Type: application/json (got %s)",
                         type ? type : "none");
        return false;
    }
    json_error_t error;
    *body = json_loadb((const char *)evbuffer_pullup(input, -1), length, JSON_REJECT_DUPLICATES,
                       &error);
    if (*body == NULL) {
        rest_reply_error(reply, 400, "invalid_json", NULL, "invalid JSON at line %d, column %d: %s",
                         error.line, error.column, error.text);
        return false;
    }
    return true;
}

/* ?dry_run=true|false is the only query parameter. */
/* ?dry_run=true|false and ?identity=<SPIFFE ID> are the query parameters;
 * rest_api refuses them on routes that do not take them. */
static bool read_query(const struct evhttp_uri *uri, rest_call *call, rest_reply *reply)
{
    bool *dry_run = &call->dry_run;
    *dry_run = false;
    const char *query = evhttp_uri_get_query(uri);
    if (query == NULL || query[0] == '\0')
        return true;
    struct evkeyvalq parameters;
    if (evhttp_parse_query_str(query, &parameters) != 0) {
        rest_reply_error(reply, 400, "invalid", NULL, "malformed query string");
        return false;
    }
    bool ok = true;
    for (struct evkeyval *item = parameters.tqh_first; item && ok; item = item->next.tqe_next) {
        if (strcmp(item->key, "identity") == 0) {
            if (strlen(item->value) >= sizeof(call->identity)) {
                rest_reply_error(reply, 400, "invalid", "identity", "identity is too long");
                ok = false;
            } else {
                memcpy(call->identity, item->value, strlen(item->value) + 1);
            }
        } else if (strcmp(item->key, "dry_run") != 0) {
            rest_reply_error(reply, 400, "invalid", item->key,
                             "unknown query parameter '%s' (dry_run or identity)", item->key);
            ok = false;
        } else if (strcmp(item->value, "true") == 0 || strcmp(item->value, "1") == 0) {
            *dry_run = true;
        } else if (strcmp(item->value, "false") != 0 && strcmp(item->value, "0") != 0) {
            rest_reply_error(reply, 400, "invalid", "dry_run", "dry_run must be true or false");
            ok = false;
        }
    }
    evhttp_clear_headers(&parameters);
    return ok;
}

static void serve_metrics(admin_http *server, struct evhttp_request *request, rest_reply *reply)
{
    int64_t revision = 0;
    store_revision(server->db, &revision, NULL);
    char *text = admin_metrics_render(server->metrics, revision);
    struct evbuffer *buffer = evbuffer_new();
    if (text == NULL || buffer == NULL) {
        free(text);
        if (buffer)
            evbuffer_free(buffer);
        rest_reply_error(reply, 500, "internal", NULL, "out of memory");
        send_reply(request, reply);
        return;
    }
    evbuffer_add(buffer, text, strlen(text));
    free(text);
    char *more = server->metrics_source ? server->metrics_source(server->metrics_context) : NULL;
    if (more != NULL)
        evbuffer_add(buffer, more, strlen(more));
    free(more);
    evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(request, 200, "OK", buffer);
    evbuffer_free(buffer);
    reply->status = 200;
}

/* Everything between authentication and the handler; fills reply. Returns
 * the route pattern for the metrics label. */
static const char *serve_api(admin_http *server, struct evhttp_request *request, const char *method,
                             const char *path, rest_reply *reply)
{
    rest_call call;
    memset(&call, 0, sizeof(call));
    call.method = method;
    const rest_route *route = NULL;
    char allowed[64];
    switch (rest_api_find(method, path, &route, &call, allowed, sizeof(allowed))) {
    case REST_BAD_PARAMETER:
        rest_reply_error(reply, 400, "invalid", allowed,
                         "%s: the path parameter must be %s, and nothing else (no encoded '/' or "
                         "NUL)",
                         allowed,
                         strcmp(allowed, "name") == 0 || strcmp(allowed, "id") == 0
                             ? "a name as the model takes it (a DNS-1123 label for services and "
                               "endpoints, 1-64 lower-case hex digits for token ids)"
                             : "1-64 lower-case hex digits");
        return "unmatched";
    case REST_NO_ROUTE:
        rest_reply_error(reply, 404, "not_found", NULL, "no such resource: %s", path);
        return "unmatched";
    case REST_WRONG_METHOD:
        evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", allowed);
        rest_reply_error(reply, 405, "method_not_allowed", NULL,
                         "%s does not answer %s (allowed: %s)", path, method, allowed);
        return "unmatched";
    case REST_MATCHED:
        break;
    }
    const char *pattern = rest_route_pattern(route);
    json_t *body = NULL;
    call.trust_domain = server->trust_domain;
    call.authority = server->authority;
    if (!read_query(evhttp_request_get_evhttp_uri(request), &call, reply) ||
        !read_body(request, &body, reply))
        return pattern;
    call.if_revision =
        parse_if_match(evhttp_find_header(evhttp_request_get_input_headers(request), "If-Match"));
    if (call.if_revision == -2) {
        rest_reply_error(reply, 412, "precondition_failed", NULL,
                         "If-Match must be * or an ETag this API gave out, like \"42\"");
        json_decref(body);
        return pattern;
    }
    call.body = body;
    call.now_ms = clock_wall_ms();
    rest_api_handle(route, server->db, &call, reply);
    json_decref(body);
    return pattern;
}

/* ---- connections ---- */

/* The servers whose listener has our error callback. libevent passes that
 * callback the listener's accept argument, which evhttp owns (the evhttp), so
 * accept_failed finds its server here by listener. */
static pthread_mutex_t listening_lock = PTHREAD_MUTEX_INITIALIZER;
static admin_http *listening_servers;

static void listening_add(admin_http *server)
{
    pthread_mutex_lock(&listening_lock);
    server->next_listening = listening_servers;
    listening_servers = server;
    pthread_mutex_unlock(&listening_lock);
}

static void listening_remove(admin_http *server)
{
    pthread_mutex_lock(&listening_lock);
    for (admin_http **at = &listening_servers; *at != NULL; at = &(*at)->next_listening) {
        if (*at == server) {
            *at = server->next_listening;
            break;
        }
    }
    pthread_mutex_unlock(&listening_lock);
}

static admin_http *listening_find(const struct evconnlistener *listener)
{
    pthread_mutex_lock(&listening_lock);
    admin_http *server = listening_servers;
    while (server != NULL && server->listener != listener)
        server = server->next_listening;
    pthread_mutex_unlock(&listening_lock);
    return server;
}

/* Listens unless accept() is paused or the connection limit is reached. */
static void update_listener(admin_http *server)
{
    if (server->listener == NULL)
        return;
    if (server->accept_paused || server->open_count >= ADMIN_HTTP_MAX_CONNECTIONS)
        evconnlistener_disable(server->listener);
    else
        evconnlistener_enable(server->listener);
}

static void report_connections(admin_http *server)
{
    admin_metrics_set_connections(server->metrics, server->open_count,
                                  server->unauthenticated_count);
}

static void connection_unlink(admin_http *server, connection *item)
{
    if (item == server->oldest)
        server->oldest = item->next;
    else
        item->prev->next = item->next;
    if (item == server->newest)
        server->newest = item->prev;
    else
        item->next->prev = item->prev;
    server->open_count--;
    if (!item->authenticated)
        server->unauthenticated_count--;
    event_free(item->adopt);
    free(item);
}

/* evhttp's close callback: the connection is being freed. */
static void connection_closed(struct evhttp_connection *evcon, void *context)
{
    (void)evcon;
    connection *item = context;
    admin_http *server = item->server;
    connection_unlink(server, item);
    report_connections(server);
    update_listener(server);
}

/* Runs right after evhttp made the connection for our bufferevent, before
 * any byte of it is read (an activated event runs in the same loop pass as
 * the accept; the socket's first read comes from a later poll). Learns the
 * evhttp_connection (the bufferevent's callback argument), asks to hear of
 * its end, and keeps the unauthenticated connections within their limit by
 * closing the oldest of the others. */
static void adopt_connection(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    connection *item = context;
    admin_http *server = item->server;
    void *argument = NULL;
    bufferevent_getcb(item->bev, NULL, NULL, NULL, &argument);
    item->evcon = argument;
    if (item->evcon == NULL) /* evhttp could not take it; it freed nothing of ours */
        return;
    evhttp_connection_set_closecb(item->evcon, connection_closed, item);
    if (server->unauthenticated_count > ADMIN_HTTP_MAX_UNAUTHENTICATED) {
        for (connection *victim = server->oldest; victim != NULL; victim = victim->next) {
            if (!victim->authenticated && victim != item && victim->evcon != NULL) {
                admin_metrics_count_connection_closed_for_limit(server->metrics);
                evhttp_connection_free(victim->evcon); /* calls connection_closed */
                break;
            }
        }
    }
    report_connections(server);
}

/* evhttp's bevcb: one call per accepted connection, before evhttp makes its
 * connection object. Returns the bufferevent evhttp will use (NULL lets
 * evhttp make its own, uncounted, when we are out of memory). */
static struct bufferevent *connection_accepted(struct event_base *base, void *context)
{
    admin_http *server = context;
    connection *item = calloc(1, sizeof(*item));
    if (item == NULL)
        return NULL;
    item->server = server;
    item->bev = bufferevent_socket_new(base, -1, 0);
    item->adopt = item->bev ? event_new(base, -1, 0, adopt_connection, item) : NULL;
    if (item->adopt == NULL) {
        if (item->bev)
            bufferevent_free(item->bev);
        free(item);
        return NULL;
    }
    item->prev = server->newest;
    if (server->newest)
        server->newest->next = item;
    else
        server->oldest = item;
    server->newest = item;
    server->open_count++;
    server->unauthenticated_count++;
    event_active(item->adopt, EV_TIMEOUT, 1);
    update_listener(server);
    return item->bev;
}

/* A request on evcon presented the token: its connection stops counting
 * against ADMIN_HTTP_MAX_UNAUTHENTICATED. */
static void connection_authenticated(admin_http *server, struct evhttp_connection *evcon)
{
    for (connection *item = server->newest; item != NULL; item = item->prev) {
        if (item->evcon == evcon) {
            if (!item->authenticated) {
                item->authenticated = true;
                server->unauthenticated_count--;
                report_connections(server);
            }
            return;
        }
    }
}

static void resume_accepting(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    admin_http *server = context;
    server->accept_paused = false;
    update_listener(server);
}

/* accept() failed with something other than EAGAIN/EINTR/ECONNABORTED —
 * in practice EMFILE/ENFILE (out of file descriptors) or ENOBUFS/ENOMEM. The
 * pending connection stays in the backlog, so retrying at once would spin:
 * pause the listener for ADMIN_HTTP_ACCEPT_PAUSE_MS, count the failure, and
 * log at most one line per ADMIN_HTTP_ACCEPT_LOG_INTERVAL_MS. */
static void accept_failed(struct evconnlistener *listener, void *context)
{
    (void)context; /* the evhttp: see listening_servers */
    int error = EVUTIL_SOCKET_ERROR();
    admin_http *server = listening_find(listener);
    if (server == NULL) {
        evconnlistener_disable(listener); /* cannot happen; never spin */
        return;
    }
    admin_metrics_count_accept_failure(server->metrics);
    uint64_t failures = 0;
    if (log_interval_due(&server->accept_failure_lines, clock_monotonic_ms(),
                         ADMIN_HTTP_ACCEPT_LOG_INTERVAL_MS, &failures))
        log_warn("admin REST API: accept() failed %llu time%s since the last report (%s); "
                 "pausing accepts for %d ms each time",
                 (unsigned long long)failures, failures == 1 ? "" : "s",
                 evutil_socket_error_to_string(error), ADMIN_HTTP_ACCEPT_PAUSE_MS);
    server->accept_paused = true;
    update_listener(server);
    struct timeval pause = {0, ADMIN_HTTP_ACCEPT_PAUSE_MS * 1000};
    evtimer_add(server->resume_event, &pause);
}

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void handle_request(struct evhttp_request *request, void *context)
{
    admin_http *server = context;
    double start = seconds_now();
    const char *method = method_name(evhttp_request_get_command(request));
    /* The raw path: rest_api decodes it segment by segment, so that "%2F"
     * and "%00" cannot change which resource a call names. */
    const char *raw_path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(request));
    const char *path = raw_path && raw_path[0] ? raw_path : "/";
    const char *route = "unmatched";
    rest_reply reply = {0};
    bool authorized = admin_token_authorizes(
        server->token,
        evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization"));
    if (authorized)
        connection_authenticated(server, evhttp_request_get_connection(request));
    if (strcmp(path, ADMIN_HTTP_HEALTH_PATH) == 0) {
        route = ADMIN_HTTP_HEALTH_PATH;
        int64_t revision = 0;
        store_revision(server->db, &revision, NULL);
        if (strcmp(method, "GET") != 0) {
            evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET");
            rest_reply_error(&reply, 405, "method_not_allowed", NULL, "/healthz answers GET only");
        } else {
            reply.status = 200;
            reply.body = json_pack("{s:s,s:I}", "status", "ok", "revision", (json_int_t)revision);
        }
    } else if (!authorized) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "WWW-Authenticate",
                          "Bearer realm=\"atrium\"");
        rest_reply_error(&reply, 401, "unauthorized", NULL,
                         "missing or wrong bearer token (Authorization: Bearer <token from "
                         "<data-dir>/admin.token>)");
    } else if (strcmp(path, ADMIN_HTTP_METRICS_PATH) == 0 && strcmp(method, "GET") == 0) {
        route = ADMIN_HTTP_METRICS_PATH;
        serve_metrics(server, request, &reply);
        admin_metrics_record(server->metrics, route, method, reply.status, seconds_now() - start);
        return;
    } else {
        route = serve_api(server, request, method, path, &reply);
    }
    send_reply(request, &reply);
    admin_metrics_record(server->metrics, route, method, reply.status, seconds_now() - start);
    rest_reply_clear(&reply);
}

static void stop_loop(evutil_socket_t fd, short events, void *context)
{
    (void)fd;
    (void)events;
    event_base_loopbreak(context);
}

static void *serve(void *context)
{
    admin_http *server = context;
    event_base_dispatch(server->base);
    return NULL;
}

int admin_http_start(const admin_http_options *options, store *db, admin_http **out,
                     uint16_t *bound_port, char *error, size_t error_size)
{
    const char *address = options->address;
    const char *token = options->token;
    *out = NULL;
    char host[256];
    uint16_t port;
    if (address_split(address, host, sizeof(host), &port, error, error_size) != 0)
        return -1;
    if (strlen(token) != ADMIN_TOKEN_LENGTH) {
        snprintf(error, error_size, "the admin token must be %d characters", ADMIN_TOKEN_LENGTH);
        return -1;
    }
    admin_http *server = calloc(1, sizeof(*server));
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    server->db = db;
    server->metrics_source = options->metrics_source;
    server->metrics_context = options->metrics_context;
    server->authority = options->authority;
    snprintf(server->trust_domain, sizeof(server->trust_domain), "%s",
             options->trust_domain ? options->trust_domain : "atrium.local");
    memcpy(server->token, token, ADMIN_TOKEN_LENGTH + 1);
    evthread_use_pthreads();
    server->metrics = admin_metrics_new();
    server->base = server->metrics ? event_base_new() : NULL;
    server->http = server->base ? evhttp_new(server->base) : NULL;
    server->stop_event =
        server->http ? event_new(server->base, -1, 0, stop_loop, server->base) : NULL;
    server->resume_event =
        server->stop_event ? evtimer_new(server->base, resume_accepting, server) : NULL;
    if (server->resume_event == NULL) {
        snprintf(error, error_size, "cannot create the HTTP server");
        admin_http_stop(server);
        return -1;
    }
    evhttp_set_gencb(server->http, handle_request, server);
    evhttp_set_bevcb(server->http, connection_accepted, server);
    /* evhttp answers a request whose headers pass this with its own 400 and
     * closes; libevent 2.1 offers no hook to answer 431 instead. */
    evhttp_set_max_headers_size(server->http, ADMIN_HTTP_HEADERS_MAX);
    /* A Content-Length over this is answered 413 (and the connection closed)
     * before a byte of the body is read; chunked bodies as soon as their
     * chunk sizes add up to more. */
    evhttp_set_max_body_size(server->http, REST_BODY_MAX);
    evhttp_set_allowed_methods(server->http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_POST |
                                                 EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
                                                 EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_timeout(server->http, ADMIN_HTTP_TIMEOUT_S);
    struct evhttp_bound_socket *socket = evhttp_bind_socket_with_handle(server->http, host, port);
    if (socket == NULL) {
        snprintf(error, error_size, "cannot listen on %s: %s", address,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        admin_http_stop(server);
        return -1;
    }
    server->listener = evhttp_bound_socket_get_listener(socket);
    listening_add(server);
    evconnlistener_set_error_cb(server->listener, accept_failed);
    struct sockaddr_storage bound;
    memset(&bound, 0, sizeof(bound));
    ev_socklen_t length = sizeof(bound);
    if (getsockname(evhttp_bound_socket_get_fd(socket), (struct sockaddr *)&bound, &length) != 0) {
        snprintf(error, error_size, "cannot read the address of %s: %s", address,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        admin_http_stop(server);
        return -1;
    }
    *bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    if (pthread_create(&server->thread, NULL, serve, server) != 0) {
        snprintf(error, error_size, "cannot start the HTTP thread");
        admin_http_stop(server);
        return -1;
    }
    *out = server;
    return 0;
}

void admin_http_stop(admin_http *server)
{
    if (server == NULL)
        return;
    if (server->thread) {
        /* An activated event is seen even if the loop has not started yet. */
        event_active(server->stop_event, EV_READ, 0);
        pthread_join(server->thread, NULL);
    }
    if (server->stop_event)
        event_free(server->stop_event);
    if (server->resume_event)
        event_free(server->resume_event);
    listening_remove(server);
    server->listener = NULL; /* evhttp_free frees it before the connections */
    if (server->http)
        evhttp_free(server->http); /* closes every connection: connection_closed frees each */
    while (server->oldest != NULL) /* those whose adopt event never ran */
        connection_unlink(server, server->oldest);
    if (server->base)
        event_base_free(server->base);
    admin_metrics_free(server->metrics);
    free(server);
}
