/*
 * admin_http.c — the admin HTTP listener: an evhttp server with its own
 * event_base and thread. Every answer is JSON; errors use the shape
 * {"error": {"code", "message"}} of the REST API.
 */
#include "admin_http.h"

#include "address.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct admin_http {
    store *db;
    struct event_base *base;
    struct evhttp *http;
    struct event *stop_event; /* activated from another thread to end the loop */
    pthread_t thread;
};

/* Sends a JSON body (takes the reference) with the given status. */
static void send_json(struct evhttp_request *request, int code, const char *reason, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct evbuffer *buffer = evbuffer_new();
    if (buffer == NULL || text == NULL) {
        free(text);
        if (buffer)
            evbuffer_free(buffer);
        evhttp_send_error(request, HTTP_INTERNAL, "out of memory");
        return;
    }
    evbuffer_add_printf(buffer, "%s\n", text);
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type",
                      "application/json");
    evhttp_send_reply(request, code, reason, buffer);
    evbuffer_free(buffer);
}

static void send_error(struct evhttp_request *request, int code, const char *reason,
                       const char *error_code, const char *message)
{
    send_json(request, code, reason,
              json_pack("{s:{s:s,s:s}}", "error", "code", error_code, "message", message));
}

static void handle_healthz(struct evhttp_request *request, void *context)
{
    admin_http *server = context;
    if (evhttp_request_get_command(request) != EVHTTP_REQ_GET) {
        send_error(request, 405, "Method Not Allowed", "method_not_allowed",
                   "/healthz answers GET only");
        return;
    }
    int64_t revision = 0;
    store_revision(server->db, &revision, NULL);
    send_json(request, HTTP_OK, "OK",
              json_pack("{s:s,s:I}", "status", "ok", "revision", (json_int_t)revision));
}

static void handle_unknown(struct evhttp_request *request, void *context)
{
    (void)context;
    char message[512];
    snprintf(message, sizeof(message), "no such resource: %s", evhttp_request_get_uri(request));
    send_error(request, HTTP_NOTFOUND, "Not Found", "not_found", message);
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

int admin_http_start(const char *address, store *db, admin_http **out, uint16_t *bound_port,
                     char *error, size_t error_size)
{
    *out = NULL;
    char host[256];
    uint16_t port;
    if (address_split(address, host, sizeof(host), &port, error, error_size) != 0)
        return -1;
    admin_http *server = calloc(1, sizeof(*server));
    if (server == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    server->db = db;
    evthread_use_pthreads();
    server->base = event_base_new();
    server->http = server->base ? evhttp_new(server->base) : NULL;
    server->stop_event =
        server->http ? event_new(server->base, -1, 0, stop_loop, server->base) : NULL;
    if (server->stop_event == NULL) {
        snprintf(error, error_size, "cannot create the HTTP server");
        admin_http_stop(server);
        return -1;
    }
    evhttp_set_cb(server->http, "/healthz", handle_healthz, server);
    evhttp_set_gencb(server->http, handle_unknown, server);
    evhttp_set_max_body_size(server->http, 4 * 1024 * 1024);
    struct evhttp_bound_socket *socket = evhttp_bind_socket_with_handle(server->http, host, port);
    if (socket == NULL) {
        snprintf(error, error_size, "cannot listen on %s: %s", address,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        admin_http_stop(server);
        return -1;
    }
    struct sockaddr_storage bound;
    ev_socklen_t length = sizeof(bound);
    getsockname(evhttp_bound_socket_get_fd(socket), (struct sockaddr *)&bound, &length);
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
    if (server->http)
        evhttp_free(server->http);
    if (server->base)
        event_base_free(server->base);
    free(server);
}
