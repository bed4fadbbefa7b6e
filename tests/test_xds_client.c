/*
 * test_xds_client.c — atrium-proxy's delta xDS client (proxy-stub/xds_client.c)
 * and its saved-state file (proxy-stub/state_file.c), against a real atriumd.
 *
 * Group "offline" (no atriumd): a resource set written and read back (mode
 * 0600); truncated, bit-flipped, foreign and future-version files refused
 * with a clear reason; a corrupt saved state, or one whose snapshot cannot be
 * built, is moved aside by xds_client_start (which starts without it, saying
 * why), two in the same second keep both; a saved state that cannot be read
 * at all, and a target gRPC cannot use, are refused; with nothing listening,
 * attempts follow the jittered exponential backoff (each gap timed).
 *
 * Group "xds_client", one scenario in steps, each depending on the last:
 *   1. a service with two endpoints registered over REST; a client for it gets
 *      listeners "outbound" and "inbound", route table "outbound" (resolved),
 *      the service's cluster with both endpoints and "inbound|<app port>";
 *   2. an endpoint changes: a new snapshot follows;
 *   3. a snapshot the client's check refuses (as a listener that cannot be
 *      bound is; here a route whose header prefix is "refused-") is NACKed:
 *      the previous snapshot keeps serving, status.last_nack has the check's
 *      text, GET /v1/proxies shows it (what `atriumctl proxy-status` prints);
 *      a good route is then applied. (atriumd refuses at its API what the
 *      snapshot builder refuses, so only a check can refuse a route it sends.)
 *   4. atriumd stops: the client keeps its snapshot, says disconnected, keeps
 *      retrying; the state file exists with mode 0600;
 *   5. a new client, with atriumd down, applies the saved snapshot before
 *      xds_client_start returns (serving_saved_state);
 *   6. atriumd comes back and the client reconnects and follows a change.
 *
 * atriumd cannot be restarted on the same ports and data directory with the
 * test fixture (it always picks free ports and a fresh directory), so the
 * client reaches atriumd through a small TCP relay of this test: "restart" is
 * a second atriumd (same mesh registered again) behind the same relay port.
 * That atriumd sends nothing for what the client already holds, which shows
 * the initial_resource_versions sent on reconnect.
 *
 * No step sleeps for a fixed time: each waits for the event it expects,
 * polling every POLL_MS up to a bound. "Nothing else happens" is checked
 * after an event that would have come after it (a later response on the same
 * stream, atriumd's flushed proxy status). Every wait is bounded; atriumd
 * processes are stopped by the teardown, and killed by the fixture's atexit
 * handler otherwise.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "atriumd_fixture.h"
#include "clock.h"
#include "proxy_config.h"
#include "state_file.h"
#include "xds_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/grpc.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAPSHOT_WAIT_MS  8000  /* a snapshot that must come */
#define STATUS_WAIT_MS    8000  /* a status change that must come */
#define PROXIES_WAIT_MS   6000  /* atriumd flushes stream status once a second */
#define RECONNECT_WAIT_MS 50000 /* the backoff may have grown to 8 s (±50 %) or more */
#define POLL_MS           20    /* the pause between two looks at a condition */
#define STOP_LIMIT_MS     3000  /* xds_client_stop must not take longer */
#define RELAY_MAX_PAIRS   16
#define TEXT_SIZE         4096

#define SERVICE       "shop"
#define NODE_ID       "shop-proxy-1"
#define APP_PORT      8080
#define INBOUND_PORT  15006
#define OUTBOUND_PORT 15001
#define REFUSED_ROUTES                                                                             \
    "{\"rules\": [{\"match\": {\"path_prefix\": \"/x\", \"headers\": [{\"name\": \"x-user\", "     \
    "\"prefix\": \"" REFUSED_PREFIX "\"}]}}]}"
#define REFUSED_PREFIX "refused-"
#define GOOD_ROUTES                                                                                \
    "{\"rules\": [{\"match\": {\"path_prefix\": \"/x\", \"headers\": [{\"name\": \"x-user\", "     \
    "\"prefix\": \"test-\"}]}, \"timeout_ms\": 1500}]}"

/* ---- time ---- */

/* ---- a TCP relay: the client's fixed target in front of changing atriumds ---- */

typedef struct relay {
    int listen_fd;
    int port;
    atomic_int upstream_port;
    int wake[2]; /* a byte on wake[1] stops the thread */
    pthread_t thread;
    bool running;
    int downstream[RELAY_MAX_PAIRS]; /* accepted from the client; -1 when unused */
    int upstream[RELAY_MAX_PAIRS];   /* to atriumd */
} relay;

static void no_delay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        close(fd);
        return -1;
    }
    no_delay(fd);
    return fd;
}

static bool write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t written = send(fd, data, length, MSG_NOSIGNAL);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return false;
        data += written;
        length -= (size_t)written;
    }
    return true;
}

static void close_pair(relay *proxy, size_t pair)
{
    close(proxy->downstream[pair]);
    close(proxy->upstream[pair]);
    proxy->downstream[pair] = proxy->upstream[pair] = -1;
}

static void relay_accept(relay *proxy)
{
    int accepted = accept4(proxy->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (accepted < 0)
        return;
    no_delay(accepted);
    int upstream = connect_local(atomic_load(&proxy->upstream_port));
    size_t free_pair = RELAY_MAX_PAIRS;
    for (size_t i = 0; i < RELAY_MAX_PAIRS && free_pair == RELAY_MAX_PAIRS; i++) {
        if (proxy->downstream[i] < 0)
            free_pair = i;
    }
    if (upstream < 0 || free_pair == RELAY_MAX_PAIRS) {
        close(accepted); /* atriumd is down: the client sees the connection fail */
        if (upstream >= 0)
            close(upstream);
        return;
    }
    proxy->downstream[free_pair] = accepted;
    proxy->upstream[free_pair] = upstream;
}

static void *relay_run(void *context)
{
    relay *proxy = context;
    static char buffer[65536];
    for (;;) {
        struct pollfd fds[2 + 2 * RELAY_MAX_PAIRS];
        size_t pair_of[2 + 2 * RELAY_MAX_PAIRS];
        size_t count = 0;
        fds[count++] = (struct pollfd){.fd = proxy->wake[0], .events = POLLIN};
        fds[count++] = (struct pollfd){.fd = proxy->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < RELAY_MAX_PAIRS; i++) {
            if (proxy->downstream[i] < 0)
                continue;
            pair_of[count] = i;
            fds[count++] = (struct pollfd){.fd = proxy->downstream[i], .events = POLLIN};
            pair_of[count] = i;
            fds[count++] = (struct pollfd){.fd = proxy->upstream[i], .events = POLLIN};
        }
        if (poll(fds, count, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents != 0)
            break;
        if (fds[1].revents & POLLIN)
            relay_accept(proxy);
        for (size_t k = 2; k < count; k++) {
            size_t pair = pair_of[k];
            if (fds[k].revents == 0 || proxy->downstream[pair] < 0)
                continue;
            int peer = fds[k].fd == proxy->downstream[pair] ? proxy->upstream[pair]
                                                            : proxy->downstream[pair];
            ssize_t got = recv(fds[k].fd, buffer, sizeof(buffer), 0);
            if (got <= 0 || !write_all(peer, buffer, (size_t)got))
                close_pair(proxy, pair);
        }
    }
    for (size_t i = 0; i < RELAY_MAX_PAIRS; i++) {
        if (proxy->downstream[i] >= 0)
            close_pair(proxy, i);
    }
    return NULL;
}

static int relay_start(relay *proxy, int upstream_port)
{
    memset(proxy, 0, sizeof(*proxy));
    for (size_t i = 0; i < RELAY_MAX_PAIRS; i++)
        proxy->downstream[i] = proxy->upstream[i] = -1;
    atomic_init(&proxy->upstream_port, upstream_port);
    proxy->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (proxy->listen_fd < 0 ||
        bind(proxy->listen_fd, (struct sockaddr *)&address, sizeof(address)) != 0 ||
        listen(proxy->listen_fd, 16) != 0 ||
        getsockname(proxy->listen_fd, (struct sockaddr *)&address, &length) != 0 ||
        pipe2(proxy->wake, O_CLOEXEC) != 0)
        return -1;
    proxy->port = ntohs(address.sin_port);
    if (pthread_create(&proxy->thread, NULL, relay_run, proxy) != 0)
        return -1;
    proxy->running = true;
    return 0;
}

static void relay_stop(relay *proxy)
{
    if (!proxy->running)
        return;
    ssize_t ignored = write(proxy->wake[1], "x", 1);
    (void)ignored;
    pthread_join(proxy->thread, NULL);
    close(proxy->wake[0]);
    close(proxy->wake[1]);
    close(proxy->listen_fd);
    proxy->running = false;
}

/* ---- snapshots the client applied ---- */

typedef struct watcher {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    proxy_config *latest; /* one reference, or NULL */
    uint64_t applies;
} watcher;

static void watcher_init(watcher *watch)
{
    pthread_mutex_init(&watch->lock, NULL);
    pthread_cond_init(&watch->changed, NULL);
    watch->latest = NULL;
    watch->applies = 0;
}

static void watcher_destroy(watcher *watch)
{
    proxy_config_release(watch->latest);
    watch->latest = NULL;
    pthread_cond_destroy(&watch->changed);
    pthread_mutex_destroy(&watch->lock);
}

/* xds_client_apply_fn: keeps the newest snapshot. */
static void on_apply(proxy_config *config, void *context)
{
    watcher *watch = context;
    pthread_mutex_lock(&watch->lock);
    proxy_config *previous = watch->latest;
    watch->latest = config;
    watch->applies++;
    pthread_cond_broadcast(&watch->changed);
    pthread_mutex_unlock(&watch->lock);
    proxy_config_release(previous);
}

static uint64_t applies_of(watcher *watch)
{
    pthread_mutex_lock(&watch->lock);
    uint64_t applies = watch->applies;
    pthread_mutex_unlock(&watch->lock);
    return applies;
}

/* The newest snapshot with a reference for the caller, or NULL. */
static proxy_config *latest_of(watcher *watch)
{
    pthread_mutex_lock(&watch->lock);
    proxy_config *config = watch->latest ? proxy_config_retain(watch->latest) : NULL;
    pthread_mutex_unlock(&watch->lock);
    return config;
}

/* "10.0.0.1:80,10.0.0.2:80": a cluster's endpoints, sorted; "-" without the cluster. */
static void endpoints_text(const proxy_config *config, const char *cluster_name, char *out,
                           size_t size)
{
    const proxy_cluster *cluster = proxy_config_find_cluster(config, cluster_name);
    if (cluster == NULL) {
        snprintf(out, size, "-");
        return;
    }
    char items[32][96];
    size_t count = cluster->endpoint_count < 32 ? cluster->endpoint_count : 32;
    for (size_t i = 0; i < count; i++)
        snprintf(items[i], sizeof(items[i]), "%s:%u", cluster->endpoints[i].address,
                 (unsigned)cluster->endpoints[i].port);
    for (size_t i = 1; i < count; i++) { /* insertion sort: a handful */
        for (size_t j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            char swap[96];
            memcpy(swap, items[j], sizeof(swap));
            memcpy(items[j], items[j - 1], sizeof(swap));
            memcpy(items[j - 1], swap, sizeof(swap));
        }
    }
    out[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? "," : "", items[i]);
    }
}

/* A one-line account of a snapshot, for failure messages. */
static void describe(const proxy_config *config, char *out, size_t size)
{
    if (config == NULL) {
        snprintf(out, size, "(no snapshot)");
        return;
    }
    size_t used = (size_t)snprintf(out, size, "generation %llu; listeners",
                                   (unsigned long long)config->generation);
    for (size_t i = 0; i < config->listener_count && used < size; i++) {
        const proxy_listener *listener = &config->listeners[i];
        used += (size_t)snprintf(out + used, size - used, " %s@%s:%u(routes %s%s)", listener->name,
                                 listener->address, (unsigned)listener->port,
                                 listener->route_table_name ? listener->route_table_name : "-",
                                 listener->route_table ? "" : ", not received");
    }
    for (size_t i = 0; i < config->cluster_count && used < size; i++) {
        char endpoints[512];
        endpoints_text(config, config->clusters[i].name, endpoints, sizeof(endpoints));
        used += (size_t)snprintf(out + used, size - used, "%s cluster %s[%s]", i ? ";" : ";",
                                 config->clusters[i].name, endpoints);
    }
}

/* What a complete snapshot for SERVICE must hold. */
typedef struct expectation {
    const char *endpoints; /* of cluster SERVICE, as endpoints_text gives them */
} expectation;

static bool snapshot_complete(const proxy_config *config, const expectation *expected)
{
    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    const proxy_listener *inbound = proxy_config_find_listener(config, "inbound");
    if (outbound == NULL || inbound == NULL || outbound->route_table == NULL ||
        strcmp(outbound->route_table->name, "outbound") != 0 || inbound->route_table == NULL)
        return false;
    char endpoints[512];
    endpoints_text(config, SERVICE, endpoints, sizeof(endpoints));
    if (strcmp(endpoints, expected->endpoints) != 0)
        return false;
    char local[64];
    endpoints_text(config, "inbound|8080", local, sizeof(local));
    return strcmp(local, "127.0.0.1:8080") == 0;
}

/* Waits (bounded) for a snapshot newer than generation `after` that is
 * complete as expected; returns it (one reference) or fails the test. */
#define WAIT_SNAPSHOT(watch, after, expected) wait_snapshot_at(__LINE__, watch, after, expected)

static proxy_config *wait_snapshot_at(int line, watcher *watch, uint64_t after,
                                      const expectation *expected)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SNAPSHOT_WAIT_MS / 1000;
    pthread_mutex_lock(&watch->lock);
    for (;;) {
        proxy_config *config = watch->latest;
        if (config != NULL && config->generation > after && snapshot_complete(config, expected)) {
            proxy_config_retain(config);
            pthread_mutex_unlock(&watch->lock);
            return config;
        }
        if (pthread_cond_timedwait(&watch->changed, &watch->lock, &deadline) == ETIMEDOUT)
            break;
    }
    char text[TEXT_SIZE];
    describe(watch->latest, text, sizeof(text));
    pthread_mutex_unlock(&watch->lock);
    print_error("line %d: no snapshot after generation %llu with %s endpoints [%s] within %d ms; "
                "latest: %s\n",
                line, (unsigned long long)after, SERVICE, expected->endpoints, SNAPSHOT_WAIT_MS,
                text);
    fail();
    return NULL;
}

/* ---- status ---- */

typedef bool (*status_check)(const xds_client_status *status, const void *argument);

static void print_status(const xds_client_status *status)
{
    print_error("status: connected %d saved %d generation %llu responses %llu acks %llu nacks %llu "
                "connects %llu last_nack \"%s\" last_stream_error \"%s\" versions %s/%s/%s/%s "
                "state_write_failures %llu \"%s\"\n",
                status->connected, status->serving_saved_state,
                (unsigned long long)status->generation, (unsigned long long)status->responses,
                (unsigned long long)status->acks, (unsigned long long)status->nacks,
                (unsigned long long)status->connects, status->last_nack, status->last_stream_error,
                status->versions[0], status->versions[1], status->versions[2], status->versions[3],
                (unsigned long long)status->state_write_failures, status->last_state_error);
}

#define WAIT_STATUS(client, check, argument, limit_ms, what)                                       \
    wait_status_at(__LINE__, client, check, argument, limit_ms, what)

static void wait_status_at(int line, xds_client *client, status_check check, const void *argument,
                           int limit_ms, const char *what)
{
    xds_client_status status;
    int64_t deadline = clock_monotonic_ms() + limit_ms;
    for (;;) {
        xds_client_get_status(client, &status);
        if (check(&status, argument))
            return;
        if (clock_monotonic_ms() > deadline)
            break;
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    print_error("line %d: not %s within %d ms\n", line, what, limit_ms);
    print_status(&status);
    fail();
}

static bool is_connected(const xds_client_status *status, const void *argument)
{
    (void)argument;
    return status->connected;
}

static bool is_disconnected(const xds_client_status *status, const void *argument)
{
    (void)argument;
    return !status->connected;
}

static bool nacks_above(const xds_client_status *status, const void *argument)
{
    return status->nacks > *(const uint64_t *)argument;
}

static bool connects_above(const xds_client_status *status, const void *argument)
{
    return status->connects > *(const uint64_t *)argument;
}

/* An attempt to reach atriumd has ended (refused, or the relay closed it). */
static bool attempt_failed(const xds_client_status *status, const void *argument)
{
    (void)argument;
    return !status->connected && status->last_stream_error[0] != '\0';
}

/* ---- the admin REST API ---- */

static struct {
    atriumd_fixture atriumd;
    relay relay;
    CURL *curl;
    char state_dir[64];
    char state_path[128];
    xds_client *client;
    watcher watch;
    bool watch_ready;
    uint64_t generation; /* of the last snapshot a step checked */
} scenario;

typedef struct reply {
    long status;
    char *text;
    size_t length;
} reply;

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    reply *answer = context;
    size_t bytes = size * count;
    char *grown = realloc(answer->text, answer->length + bytes + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + answer->length, data, bytes);
    answer->length += bytes;
    grown[answer->length] = '\0';
    answer->text = grown;
    return bytes;
}

/* One request with the admin token; the caller frees reply.text. */
static reply http(const char *method, const char *path, const char *body)
{
    reply answer = {0, calloc(1, 1), 0};
    assert_non_null(answer.text);
    CURL *curl = scenario.curl;
    curl_easy_reset(curl);
    char url[512], authorization[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", scenario.atriumd.rest_port, path);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s",
             scenario.atriumd.token);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    assert_non_null(headers);
    struct curl_slist *more = curl_slist_append(headers, "Content-Type: application/json");
    assert_non_null(more);
    headers = more;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 15L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    CURLcode code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (code != CURLE_OK) {
        free(answer.text);
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(code));
    }
    return answer;
}

#define WRITE(method, path, body) write_at(__LINE__, method, path, body)

static void write_at(int line, const char *method, const char *path, const char *body)
{
    reply answer = http(method, path, body);
    if (answer.status != 200 && answer.status != 201) {
        print_error("line %d: %s %s answered %ld: %s\n", line, method, path, answer.status,
                    answer.text);
        free(answer.text);
        fail();
    }
    free(answer.text);
}

static void put_endpoint(const char *id, const char *address, int port)
{
    char path[256], body[256];
    snprintf(path, sizeof(path), "/v1/services/%s/endpoints/%s", SERVICE, id);
    snprintf(body, sizeof(body), "{\"address\": \"%s\", \"port\": %d}", address, port);
    WRITE("PUT", path, body);
}

/* The proxy's entry in GET /v1/proxies (a new reference: json_decref it), or NULL. */
static json_t *find_proxy(const char *node_id)
{
    reply answer = http("GET", "/v1/proxies", NULL);
    assert_int_equal(answer.status, 200);
    json_error_t error;
    json_t *document = json_loads(answer.text, 0, &error);
    free(answer.text);
    assert_non_null(document);
    json_t *proxies = json_object_get(document, "proxies");
    json_t *found = NULL;
    for (size_t i = 0; i < json_array_size(proxies) && found == NULL; i++) {
        json_t *proxy = json_array_get(proxies, i);
        const char *id = json_string_value(json_object_get(proxy, "node_id"));
        if (id != NULL && strcmp(id, node_id) == 0)
            found = json_incref(proxy);
    }
    json_decref(document);
    return found;
}

/* The nack_message atriumd shows for type_url of the proxy, or NULL (static copy). */
static const char *proxy_nack_message(json_t *proxy, const char *type_url)
{
    static char copy[1024];
    json_t *types = json_object_get(proxy, "types");
    for (size_t i = 0; i < json_array_size(types); i++) {
        json_t *type = json_array_get(types, i);
        const char *url = json_string_value(json_object_get(type, "type_url"));
        const char *message = json_string_value(json_object_get(type, "nack_message"));
        if (url != NULL && strcmp(url, type_url) == 0 && message != NULL) {
            snprintf(copy, sizeof(copy), "%s", message);
            return copy;
        }
    }
    return NULL;
}

/* ---- the client ---- */

/* The client's check (what atrium-proxy asks the data path: can the listeners
 * be bound?): refuses a snapshot with a route whose header prefix is
 * REFUSED_PREFIX, so that step 3 has a snapshot atriumd sends and the client
 * NACKs. */
static int refuse_marked_routes(const proxy_config *config, void *context, char *error,
                                size_t error_size)
{
    (void)context;
    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    const proxy_route_table *table = outbound ? outbound->route_table : NULL;
    for (size_t v = 0; table != NULL && v < table->virtual_host_count; v++) {
        const proxy_virtual_host *host = &table->virtual_hosts[v];
        for (size_t r = 0; r < host->route_count; r++)
            for (size_t h = 0; h < host->routes[r].header_count; h++)
                if (host->routes[r].headers[h].value != NULL &&
                    strcmp(host->routes[r].headers[h].value, REFUSED_PREFIX) == 0) {
                    snprintf(error, error_size,
                             "test check: virtual host \"%s\" has a route matching header "
                             "prefix \"" REFUSED_PREFIX "\"",
                             host->name);
                    return -1;
                }
    }
    return 0;
}

static xds_client_options client_options(void)
{
    static char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", scenario.relay.port);
    return (xds_client_options){.target = target,
                                .node_id = NODE_ID,
                                .service = SERVICE,
                                .namespace_name = "default",
                                .app_port = APP_PORT,
                                .inbound_port = INBOUND_PORT,
                                .outbound_port = OUTBOUND_PORT,
                                .state_dir = scenario.state_dir,
                                .check = refuse_marked_routes};
}

/* Stops the scenario's client (bounded) and forgets its snapshots. */
static void stop_client(void)
{
    int64_t started = clock_monotonic_ms();
    xds_client_stop(scenario.client);
    scenario.client = NULL;
    int64_t took = clock_monotonic_ms() - started;
    if (scenario.watch_ready) {
        watcher_destroy(&scenario.watch);
        scenario.watch_ready = false;
    }
    if (took > STOP_LIMIT_MS)
        fail_msg("xds_client_stop took %lld ms", (long long)took);
}

static void start_client(void)
{
    watcher_init(&scenario.watch);
    scenario.watch_ready = true;
    xds_client_options options = client_options();
    char error[512] = "";
    scenario.client = xds_client_start(&options, on_apply, &scenario.watch, error, sizeof(error));
    if (scenario.client == NULL)
        fail_msg("xds_client_start: %s", error);
}

/* ---- group "xds_client" ---- */

static int remove_state_dir(void)
{
    if (scenario.state_dir[0] == '\0')
        return 0;
    char temporary[160];
    snprintf(temporary, sizeof(temporary), "%s.tmp", scenario.state_path);
    unlink(scenario.state_path);
    unlink(temporary);
    int result = rmdir(scenario.state_dir);
    scenario.state_dir[0] = '\0';
    return result;
}

static void register_mesh(const char *second_endpoint, int second_port, bool good_routes)
{
    WRITE("PUT", "/v1/services/" SERVICE, "{}");
    put_endpoint("a", "10.1.0.1", 8080);
    put_endpoint("b", second_endpoint, second_port);
    if (good_routes)
        WRITE("PUT", "/v1/services/" SERVICE "/routes", GOOD_ROUTES);
}

static int group_setup(void **state)
{
    (void)state;
    memset(&scenario, 0, sizeof(scenario));
    scenario.curl = curl_easy_init();
    char error[512];
    if (scenario.curl == NULL || atriumd_fixture_start(&scenario.atriumd, ATRIUMD_PATH, "xdsclient",
                                                       error, sizeof(error)) != 0) {
        fprintf(stderr, "setup: %s\n", scenario.curl ? error : "curl_easy_init failed");
        return -1;
    }
    if (relay_start(&scenario.relay, scenario.atriumd.xds_port) != 0) {
        fprintf(stderr, "setup: cannot start the relay: %s\n", strerror(errno));
        return -1;
    }
    snprintf(scenario.state_dir, sizeof(scenario.state_dir), "/tmp/atrium-proxy-state-XXXXXX");
    if (mkdtemp(scenario.state_dir) == NULL) {
        scenario.state_dir[0] = '\0';
        return -1;
    }
    snprintf(scenario.state_path, sizeof(scenario.state_path), "%s/%s", scenario.state_dir,
             STATE_FILE_NAME);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    xds_client_stop(scenario.client);
    scenario.client = NULL;
    if (scenario.watch_ready)
        watcher_destroy(&scenario.watch);
    relay_stop(&scenario.relay);
    bool running = scenario.atriumd.pid > 0;
    int stopped = atriumd_fixture_stop(&scenario.atriumd);
    if (scenario.curl != NULL)
        curl_easy_cleanup(scenario.curl);
    remove_state_dir();
    return running && stopped != 0 ? -1 : 0;
}

/* 1. The first snapshot: both listeners, the route table, the service's
 *    cluster with both endpoints. */
static void test_first_snapshot(void **state)
{
    (void)state;
    register_mesh("10.1.0.2", 8080, false);
    start_client();
    expectation expected = {"10.1.0.1:8080,10.1.0.2:8080"};
    proxy_config *config = WAIT_SNAPSHOT(&scenario.watch, 0, &expected);

    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    assert_string_equal(outbound->address, "127.0.0.1");
    assert_int_equal(outbound->port, OUTBOUND_PORT);
    assert_int_equal(outbound->direction, PROXY_DIRECTION_OUTBOUND);
    const proxy_listener *inbound = proxy_config_find_listener(config, "inbound");
    assert_string_equal(inbound->address, "0.0.0.0");
    assert_int_equal(inbound->port, INBOUND_PORT);
    assert_int_equal(inbound->direction, PROXY_DIRECTION_INBOUND);
    /* Route table "outbound" has the service's virtual host. */
    assert_non_null(proxy_route_table_find_host(outbound->route_table, SERVICE, strlen(SERVICE)));
    const proxy_cluster *cluster = proxy_config_find_cluster(config, SERVICE);
    assert_non_null(cluster->endpoints_version);
    assert_int_equal(cluster->endpoint_count, 2);

    xds_client_status status;
    xds_client_get_status(scenario.client, &status);
    if (!status.connected || status.serving_saved_state || status.nacks != 0 || status.acks < 4 ||
        status.generation < config->generation || status.connects != 1 ||
        status.last_update_ms == 0) {
        print_status(&status);
        fail_msg("unexpected status after the first snapshot");
    }
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        if (status.versions[type][0] == '\0') {
            print_status(&status);
            fail_msg("no ACKed version for %s", proxy_resource_type_url((proxy_resource_type)type));
        }
    }
    scenario.generation = config->generation;
    proxy_config_release(config);
}

/* 2. An endpoint changes: a new snapshot with it. */
static void test_endpoint_change(void **state)
{
    (void)state;
    put_endpoint("b", "10.1.0.3", 8081);
    expectation expected = {"10.1.0.1:8080,10.1.0.3:8081"};
    proxy_config *config = WAIT_SNAPSHOT(&scenario.watch, scenario.generation, &expected);
    scenario.generation = config->generation;
    proxy_config_release(config);
    xds_client_status status;
    xds_client_get_status(scenario.client, &status);
    assert_int_equal(status.generation, scenario.generation);
    assert_int_equal(status.state_write_failures, 0);
}

/* 3. A snapshot the check refuses is NACKed; the previous snapshot stays;
 *    atriumd shows the NACK; a good route is applied afterwards. */
static void test_nack(void **state)
{
    (void)state;
    xds_client_status before;
    xds_client_get_status(scenario.client, &before);
    uint64_t applies = applies_of(&scenario.watch);

    WRITE("PUT", "/v1/services/" SERVICE "/routes", REFUSED_ROUTES);
    WAIT_STATUS(scenario.client, nacks_above, &before.nacks, STATUS_WAIT_MS, "NACKed");
    xds_client_status after;
    xds_client_get_status(scenario.client, &after);
    print_message("NACK sent: %s\n", after.last_nack);
    if (strstr(after.last_nack, "test check: virtual host \"" SERVICE "\"") == NULL ||
        strstr(after.last_nack, REFUSED_PREFIX) == NULL) {
        print_status(&after);
        fail_msg("last_nack does not carry the check's reason");
    }
    /* Nothing applied: the previous snapshot keeps serving. (A response is
     * applied before its ACK is counted and never after a NACK: checked now,
     * and again once atriumd has shown the NACK, below.) */
    assert_int_equal(applies_of(&scenario.watch), applies);
    xds_client_get_status(scenario.client, &after);
    assert_int_equal(after.generation, before.generation);
    assert_true(after.connected);
    proxy_config *config = latest_of(&scenario.watch);
    assert_int_equal(config->generation, scenario.generation);
    proxy_config_release(config);

    /* GET /v1/proxies (atriumctl proxy-status) shows it. */
    const char *rds = proxy_resource_type_url(PROXY_RESOURCE_ROUTE);
    char shown[1024] = "";
    int64_t deadline = clock_monotonic_ms() + PROXIES_WAIT_MS;
    while (shown[0] == '\0' && clock_monotonic_ms() < deadline) {
        json_t *proxy = find_proxy(NODE_ID);
        const char *message = proxy ? proxy_nack_message(proxy, rds) : NULL;
        if (message != NULL)
            snprintf(shown, sizeof(shown), "%s", message);
        if (proxy != NULL) {
            assert_string_equal(json_string_value(json_object_get(proxy, "protocol")), "delta");
            assert_string_equal(json_string_value(json_object_get(proxy, "service")), SERVICE);
        }
        json_decref(proxy);
        if (shown[0] == '\0')
            atriumd_fixture_sleep_ms(POLL_MS);
    }
    if (strcmp(shown, after.last_nack) != 0)
        fail_msg("GET /v1/proxies shows nack_message \"%s\" for %s, the client sent \"%s\"", shown,
                 rds, after.last_nack);
    /* Still nothing applied, now that atriumd has handled the NACK. */
    assert_int_equal(applies_of(&scenario.watch), applies);
    xds_client_get_status(scenario.client, &after);
    assert_int_equal(after.generation, before.generation);

    /* A good route: applied. */
    WRITE("PUT", "/v1/services/" SERVICE "/routes", GOOD_ROUTES);
    expectation expected = {"10.1.0.1:8080,10.1.0.3:8081"};
    config = WAIT_SNAPSHOT(&scenario.watch, scenario.generation, &expected);
    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    const proxy_virtual_host *host =
        proxy_route_table_find_host(outbound->route_table, SERVICE, strlen(SERVICE));
    assert_non_null(host);
    bool has_rule = false;
    for (size_t i = 0; i < host->route_count; i++)
        has_rule |= host->routes[i].header_count == 1 && host->routes[i].headers[0].value &&
                    strcmp(host->routes[i].headers[0].value, "test-") == 0;
    assert_true(has_rule);
    scenario.generation = config->generation;
    proxy_config_release(config);
}

/* 4. atriumd stops: the snapshot stays, the status says disconnected, the
 *    client keeps trying; the state file is there, 0600. */
static void test_atriumd_down(void **state)
{
    (void)state;
    uint64_t applies = applies_of(&scenario.watch);
    assert_int_equal(atriumd_fixture_stop(&scenario.atriumd), 0);
    WAIT_STATUS(scenario.client, is_disconnected, NULL, STATUS_WAIT_MS, "disconnected");
    xds_client_status status;
    xds_client_get_status(scenario.client, &status);
    assert_true(status.last_stream_error[0] != '\0');
    uint64_t connects = status.connects;
    WAIT_STATUS(scenario.client, connects_above, &connects, STATUS_WAIT_MS, "retrying");

    assert_int_equal(applies_of(&scenario.watch), applies);
    proxy_config *config = latest_of(&scenario.watch);
    assert_int_equal(config->generation, scenario.generation);
    expectation expected = {"10.1.0.1:8080,10.1.0.3:8081"};
    assert_true(snapshot_complete(config, &expected));
    proxy_config_release(config);

    struct stat info;
    assert_int_equal(stat(scenario.state_path, &info), 0);
    assert_true(S_ISREG(info.st_mode));
    assert_int_equal(info.st_mode & 07777, 0600);
    proxy_resource_set saved;
    state_file_versions versions;
    char error[512];
    assert_int_equal(state_file_read(scenario.state_path, &saved, &versions, error, sizeof(error)),
                     1);
    assert_int_equal(saved.counts[PROXY_RESOURCE_LISTENER], 2);
    assert_int_equal(saved.counts[PROXY_RESOURCE_CLUSTER], 2);
    assert_int_equal(saved.counts[PROXY_RESOURCE_ENDPOINT], 2);
    assert_int_equal(saved.counts[PROXY_RESOURCE_ROUTE], 1); /* "outbound" (inbound's is inline) */
    proxy_resource_set_clear(&saved);

    stop_client(); /* while it waits out a backoff */
}

/* 5. A new client with atriumd down serves the saved snapshot at once. */
static void test_saved_state(void **state)
{
    (void)state;
    start_client();
    /* Applied before xds_client_start returned. */
    assert_int_equal(applies_of(&scenario.watch), 1);
    proxy_config *config = latest_of(&scenario.watch);
    assert_non_null(config);
    expectation expected = {"10.1.0.1:8080,10.1.0.3:8081"};
    if (!snapshot_complete(config, &expected)) {
        char text[TEXT_SIZE];
        describe(config, text, sizeof(text));
        fail_msg("the saved snapshot is not what was served: %s", text);
    }
    assert_int_equal(config->generation, 1);
    proxy_config_release(config);
    xds_client_status status;
    xds_client_get_status(scenario.client, &status);
    assert_true(status.serving_saved_state);
    assert_false(status.connected);
    assert_int_equal(status.generation, 1);
    assert_true(status.versions[PROXY_RESOURCE_CLUSTER][0] != '\0');
    assert_string_equal(status.saved_state_refused, "");
    /* It tried atriumd (down) and kept the saved snapshot. */
    WAIT_STATUS(scenario.client, attempt_failed, NULL, STATUS_WAIT_MS, "a failed attempt");
    xds_client_get_status(scenario.client, &status);
    assert_int_equal(applies_of(&scenario.watch), 1);
    assert_true(status.serving_saved_state);
    assert_false(status.connected);
    assert_int_equal(status.acks, 0);
    scenario.generation = 1;
}

/* 6. atriumd is back (a new one behind the same relay port, with the same
 *    mesh): the client reconnects and follows a change. */
static void test_reconnect(void **state)
{
    (void)state;
    char error[512];
    if (atriumd_fixture_start(&scenario.atriumd, ATRIUMD_PATH, "xdsclient", error, sizeof(error)) !=
        0)
        fail_msg("restarting atriumd: %s", error);
    register_mesh("10.1.0.3", 8081, true);
    atomic_store(&scenario.relay.upstream_port, scenario.atriumd.xds_port);
    WAIT_STATUS(scenario.client, is_connected, NULL, RECONNECT_WAIT_MS, "reconnected");

    /* It sent the versions it holds: atriumd has nothing newer to send. Any
     * resend would answer the subscriptions sent on connecting, so it would
     * come on the stream before the response to a change made afterwards:
     * when the change has arrived, it must have been the only response. */
    xds_client_status status;
    xds_client_get_status(scenario.client, &status);
    if (status.responses != 0 || !status.serving_saved_state) {
        print_status(&status);
        fail_msg("atriumd resent what the client already held");
    }

    put_endpoint("c", "10.1.0.4", 8080);
    expectation expected = {"10.1.0.1:8080,10.1.0.3:8081,10.1.0.4:8080"};
    proxy_config *config = WAIT_SNAPSHOT(&scenario.watch, scenario.generation, &expected);
    assert_int_equal(config->generation, scenario.generation + 1);
    proxy_config_release(config);
    xds_client_get_status(scenario.client, &status);
    if (!status.connected || status.serving_saved_state || status.nacks != 0 || status.acks < 1 ||
        status.responses != 1) {
        print_status(&status);
        fail_msg("unexpected status after following a change (the change's response alone)");
    }
    json_t *proxy = NULL;
    int64_t deadline = clock_monotonic_ms() + PROXIES_WAIT_MS;
    while ((proxy = find_proxy(NODE_ID)) == NULL && clock_monotonic_ms() < deadline)
        atriumd_fixture_sleep_ms(POLL_MS);
    assert_non_null(proxy);
    assert_true(json_is_true(json_object_get(proxy, "connected")));
    json_decref(proxy);
    xds_client_get_status(scenario.client, &status);
    if (status.responses != 1) {
        print_status(&status);
        fail_msg("atriumd resent what the client already held");
    }
    stop_client();
}

/* ---- group "state_file" ---- */

static char scratch_dir[64];

static int scratch_setup(void **state)
{
    (void)state;
    snprintf(scratch_dir, sizeof(scratch_dir), "/tmp/atrium-state-test-XXXXXX");
    return mkdtemp(scratch_dir) != NULL ? 0 : -1;
}

/* Removes every file in scratch_dir (the state file, its temporary file,
 * the files moved aside); returns how many there were. */
static int empty_scratch_dir(void)
{
    DIR *directory = opendir(scratch_dir);
    if (directory == NULL)
        return -1;
    int removed = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", scratch_dir, entry->d_name);
        if (unlink(path) != 0)
            rmdir(path);
        removed++;
    }
    closedir(directory);
    return removed;
}

static int scratch_teardown(void **state)
{
    (void)state;
    empty_scratch_dir();
    return rmdir(scratch_dir);
}

static void add_item(proxy_resource_set *set, proxy_resource_type type, const char *name,
                     const char *version, const char *bytes)
{
    proxy_resource *grown = realloc(set->items[type], (set->counts[type] + 1) * sizeof(*grown));
    assert_non_null(grown);
    set->items[type] = grown;
    proxy_resource *item = &grown[set->counts[type]++];
    item->name = strdup(name);
    item->version = strdup(version);
    item->length = strlen(bytes);
    item->bytes = malloc(item->length + 1);
    assert_non_null(item->name);
    assert_non_null(item->version);
    assert_non_null(item->bytes);
    memcpy(item->bytes, bytes, item->length + 1);
}

static void write_bytes(const char *path, const uint8_t *data, size_t length)
{
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(data, 1, length, file), length);
    assert_int_equal(fclose(file), 0);
}

#define EXPECT_REFUSED(path, fragment) expect_refused_at(__LINE__, path, fragment)

static void expect_refused_at(int line, const char *path, const char *fragment)
{
    proxy_resource_set set;
    char error[512] = "";
    int result = state_file_read(path, &set, NULL, error, sizeof(error));
    if (result != STATE_FILE_CORRUPT || strstr(error, fragment) == NULL ||
        strstr(error, path) == NULL) {
        if (result == STATE_FILE_READ)
            proxy_resource_set_clear(&set);
        fail_msg("line %d: read gave %d \"%s\", expected %d with \"%s\" and the path", line, result,
                 error, STATE_FILE_CORRUPT, fragment);
    }
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++)
        assert_int_equal(set.counts[type], 0);
}

static void test_state_file_round_trip(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", scratch_dir, STATE_FILE_NAME);
    proxy_resource_set set;
    memset(&set, 0, sizeof(set));
    add_item(&set, PROXY_RESOURCE_CLUSTER, "zeta", "v2", "cluster zeta");
    add_item(&set, PROXY_RESOURCE_CLUSTER, "alpha", "v1", "cluster alpha");
    add_item(&set, PROXY_RESOURCE_LISTENER, "outbound", "v9", "");
    state_file_versions versions;
    memset(&versions, 0, sizeof(versions));
    snprintf(versions.text[PROXY_RESOURCE_CLUSTER], sizeof(versions.text[0]), "17");
    snprintf(versions.text[PROXY_RESOURCE_ROUTE], sizeof(versions.text[0]), "12");
    char error[512] = "";
    umask(022);
    if (state_file_write(path, &set, &versions, error, sizeof(error)) != 0)
        fail_msg("write: %s", error);
    proxy_resource_set_clear(&set);
    struct stat info;
    assert_int_equal(stat(path, &info), 0);
    assert_int_equal(info.st_mode & 07777, 0600);

    state_file_versions read_versions;
    assert_int_equal(state_file_read(path, &set, &read_versions, error, sizeof(error)),
                     STATE_FILE_READ);
    assert_int_equal(set.counts[PROXY_RESOURCE_CLUSTER], 2);
    assert_string_equal(set.items[PROXY_RESOURCE_CLUSTER][0].name, "alpha"); /* sorted */
    assert_string_equal(set.items[PROXY_RESOURCE_CLUSTER][0].version, "v1");
    assert_int_equal(set.items[PROXY_RESOURCE_CLUSTER][0].length, strlen("cluster alpha"));
    assert_memory_equal(set.items[PROXY_RESOURCE_CLUSTER][0].bytes, "cluster alpha",
                        strlen("cluster alpha"));
    assert_string_equal(set.items[PROXY_RESOURCE_CLUSTER][1].name, "zeta");
    assert_int_equal(set.counts[PROXY_RESOURCE_LISTENER], 1);
    assert_int_equal(set.items[PROXY_RESOURCE_LISTENER][0].length, 0);
    assert_int_equal(set.counts[PROXY_RESOURCE_ENDPOINT], 0);
    assert_int_equal(set.counts[PROXY_RESOURCE_ROUTE], 0);
    assert_string_equal(read_versions.text[PROXY_RESOURCE_CLUSTER], "17");
    assert_string_equal(read_versions.text[PROXY_RESOURCE_ROUTE], "12");
    assert_string_equal(read_versions.text[PROXY_RESOURCE_ENDPOINT], "");
    proxy_resource_set_clear(&set);

    /* No file: nothing to read, not an error. */
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/none.pb", scratch_dir);
    assert_int_equal(state_file_read(missing, &set, NULL, error, sizeof(error)),
                     STATE_FILE_MISSING);
}

static void test_state_file_corruption(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", scratch_dir, STATE_FILE_NAME);
    proxy_resource_set set;
    memset(&set, 0, sizeof(set));
    add_item(&set, PROXY_RESOURCE_CLUSTER, "alpha", "v1", "cluster alpha");
    uint8_t *good = NULL;
    size_t length = 0;
    char error[512] = "";
    assert_int_equal(state_file_encode(&set, NULL, &good, &length, error, sizeof(error)), 0);
    proxy_resource_set_clear(&set);
    uint8_t *bad = malloc(length);
    assert_non_null(bad);

    memcpy(bad, good, length);
    bad[length / 2] ^= 0x40; /* a flipped bit in a resource */
    write_bytes(path, bad, length);
    EXPECT_REFUSED(path, "checksum");

    write_bytes(path, good, length - 7); /* cut short */
    EXPECT_REFUSED(path, "corrupt");

    write_bytes(path, good, 10);
    EXPECT_REFUSED(path, "truncated");

    write_bytes(path, (const uint8_t *)"{\"json\": true}\n", 15);
    EXPECT_REFUSED(path, "not an atrium-proxy state file");

    write_bytes(path, good, 0);
    EXPECT_REFUSED(path, "empty");

    memcpy(bad, good, length);
    bad[11] = 2; /* format version 2 */
    write_bytes(path, bad, length);
    EXPECT_REFUSED(path, "format version 2");

    /* The client starts without it: moved aside unchanged, the reason in
     * the status (naming the file and where it went), nothing applied. */
    xds_client_options options = {
        .target = "127.0.0.1:9", .node_id = "n", .state_dir = scratch_dir};
    watcher watch;
    watcher_init(&watch);
    long long before = (long long)(clock_wall_ms() / 1000);
    xds_client *client = xds_client_start(&options, on_apply, &watch, error, sizeof(error));
    if (client == NULL)
        fail_msg("xds_client_start refused a corrupt saved state: %s", error);
    xds_client_status status;
    xds_client_get_status(client, &status);
    xds_client_stop(client);
    print_message("set aside: %s\n", status.saved_state_refused);
    assert_int_equal(applies_of(&watch), 0);
    assert_false(status.serving_saved_state);
    assert_int_equal(status.generation, 0);
    assert_non_null(strstr(status.saved_state_refused, path));
    assert_non_null(strstr(status.saved_state_refused, "format version 2"));
    assert_int_equal(access(path, F_OK), -1);
    char moved[256];
    const char *to = strstr(status.saved_state_refused, "; moved to ");
    assert_non_null(to);
    snprintf(moved, sizeof(moved), "%s", to + strlen("; moved to "));
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%s.corrupt-", path);
    assert_int_equal(strncmp(moved, prefix, strlen(prefix)), 0);
    char *end = NULL;
    long long stamp = strtoll(moved + strlen(prefix), &end, 10);
    assert_true(end != NULL && *end == '\0'); /* <path>.corrupt-<unix time>, nothing more */
    assert_true(stamp >= before && stamp <= (long long)(clock_wall_ms() / 1000));
    uint8_t kept[4096];
    FILE *file = fopen(moved, "rb");
    assert_non_null(file);
    assert_int_equal(fread(kept, 1, sizeof(kept), file), length);
    fclose(file);
    assert_memory_equal(kept, bad, length);
    assert_int_equal(empty_scratch_dir(), 1);

    /* Saved bytes that are not resources the builder can apply: the same. */
    write_bytes(path, good, length);
    client = xds_client_start(&options, on_apply, &watch, error, sizeof(error));
    if (client == NULL)
        fail_msg("xds_client_start refused a saved state it cannot apply: %s", error);
    xds_client_get_status(client, &status);
    xds_client_stop(client);
    print_message("set aside: %s\n", status.saved_state_refused);
    assert_int_equal(applies_of(&watch), 0);
    assert_non_null(strstr(status.saved_state_refused, "cannot be applied"));
    assert_non_null(strstr(status.saved_state_refused, "Cluster \"alpha\""));
    assert_non_null(strstr(status.saved_state_refused, ".corrupt-"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(empty_scratch_dir(), 1);
    watcher_destroy(&watch);

    /* Two moved aside within the same second: neither replaces the other. */
    char first[256], second[256];
    write_bytes(path, good, length);
    assert_int_equal(
        state_file_set_aside(path, 1700000000, first, sizeof(first), error, sizeof(error)), 0);
    write_bytes(path, bad, length);
    assert_int_equal(
        state_file_set_aside(path, 1700000000, second, sizeof(second), error, sizeof(error)), 0);
    char expected_name[256];
    snprintf(expected_name, sizeof(expected_name), "%s.corrupt-1700000000", path);
    assert_string_equal(first, expected_name);
    snprintf(expected_name, sizeof(expected_name), "%s.corrupt-1700000000.2", path);
    assert_string_equal(second, expected_name);
    file = fopen(first, "rb");
    assert_non_null(file);
    assert_int_equal(fread(kept, 1, sizeof(kept), file), length);
    fclose(file);
    assert_memory_equal(kept, good, length);
    assert_int_equal(empty_scratch_dir(), 2);
    /* Nothing to move: the reason, naming the file. */
    assert_int_equal(state_file_set_aside(path, 1, NULL, 0, error, sizeof(error)), -1);
    assert_non_null(strstr(error, path));

    /* A saved state that cannot be read at all (a directory in its place,
     * which no save could replace either): refused, naming it. */
    assert_int_equal(mkdir(path, 0700), 0);
    client = xds_client_start(&options, NULL, NULL, error, sizeof(error));
    assert_null(client);
    print_message("refused: %s\n", error);
    assert_non_null(strstr(error, path));
    assert_non_null(strstr(error, "not a regular file"));
    assert_int_equal(rmdir(path), 0);

    /* A target gRPC cannot use. */
    options.target = "ipv4:300.1.1.1:5";
    options.state_dir = NULL;
    client = xds_client_start(&options, NULL, NULL, error, sizeof(error));
    assert_null(client);
    assert_non_null(strstr(error, "ipv4:300.1.1.1:5"));
    free(good);
    free(bad);
}

/* Nothing listens on the target: attempts follow the backoff (0.5 s doubling,
 * ±50 %). Attempt k+1 starts 0.5 x 500 x 2^k to 1.5 x 500 x 2^k ms after
 * attempt k failed (a refused connection fails within milliseconds). The
 * test watches the first BACKOFF_ATTEMPTS attempts start, timing each gap
 * (polling every POLL_MS), instead of counting attempts over a fixed 7 s:
 * without a backoff the gaps would be ~0 and there would be hundreds of
 * attempts; with a backoff that did not grow, the last gap would be too
 * short. A gap may look up to GAP_SLACK_MS longer than the delay (the failed
 * attempt, the poll, a loaded machine), never shorter than the delay less
 * one poll. */
#define BACKOFF_ATTEMPTS 4    /* attempts 0-3: gaps 250-750, 500-1500, 1000-3000 ms */
#define BACKOFF_WAIT_MS  8000 /* attempt 3 starts by 5.25 s at the latest */
#define GAP_SLACK_MS     1000

static void test_backoff(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    close(fd); /* a port nothing listens on */
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", ntohs(address.sin_port));
    xds_client_options options = {.target = target, .node_id = "backoff", .service = SERVICE};
    char error[512] = "";
    int64_t began = clock_monotonic_ms();
    xds_client *client = xds_client_start(&options, NULL, NULL, error, sizeof(error));
    if (client == NULL)
        fail_msg("xds_client_start: %s", error);
    /* seen[k]: when attempt k was first seen started (status.connects > k). */
    int64_t seen[BACKOFF_ATTEMPTS + 1] = {0};
    xds_client_status status;
    uint64_t observed = 0;
    int64_t deadline = began + BACKOFF_WAIT_MS;
    for (;;) {
        xds_client_get_status(client, &status);
        int64_t now = clock_monotonic_ms();
        while (observed < status.connects && observed <= BACKOFF_ATTEMPTS)
            seen[observed++] = now;
        if (observed >= BACKOFF_ATTEMPTS || now > deadline)
            break;
        atriumd_fixture_sleep_ms(POLL_MS);
    }
    int64_t started = clock_monotonic_ms();
    xds_client_stop(client); /* while it waits out a backoff */
    int64_t took = clock_monotonic_ms() - started;
    print_message("%llu attempts in %lld ms; the last ended with %s\n",
                  (unsigned long long)status.connects, (long long)(seen[observed - 1] - began),
                  status.last_stream_error);
    if (observed < BACKOFF_ATTEMPTS || status.connects > BACKOFF_ATTEMPTS || status.connected ||
        status.responses != 0 || status.last_stream_error[0] == '\0') {
        print_status(&status);
        fail_msg("attempts do not follow the backoff: %llu within %d ms, expected %d",
                 (unsigned long long)status.connects, BACKOFF_WAIT_MS, BACKOFF_ATTEMPTS);
    }
    for (int k = 1; k < BACKOFF_ATTEMPTS; k++) {
        int64_t gap = seen[k] - seen[k - 1];
        int64_t delay = 500LL << (k - 1); /* before jitter */
        print_message("gap %d: %lld ms (backoff %lld ms, ±50 %%)\n", k, (long long)gap,
                      (long long)delay);
        if (gap < delay / 2 - POLL_MS || gap > delay * 3 / 2 + GAP_SLACK_MS)
            fail_msg("attempt %d started %lld ms after attempt %d; the backoff allows %lld-%lld ms",
                     k, (long long)gap, k - 1, (long long)(delay / 2), (long long)(delay * 3 / 2));
    }
    if (took > STOP_LIMIT_MS)
        fail_msg("xds_client_stop took %lld ms", (long long)took);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    grpc_init();
    const struct CMUnitTest files[] = {
        cmocka_unit_test(test_state_file_round_trip),
        cmocka_unit_test(test_state_file_corruption),
        cmocka_unit_test(test_backoff),
    };
    const struct CMUnitTest scenario_steps[] = {
        cmocka_unit_test(test_first_snapshot), cmocka_unit_test(test_endpoint_change),
        cmocka_unit_test(test_nack),           cmocka_unit_test(test_atriumd_down),
        cmocka_unit_test(test_saved_state),    cmocka_unit_test(test_reconnect),
    };
    int failed = cmocka_run_group_tests_name("offline", files, scratch_setup, scratch_teardown);
    failed +=
        cmocka_run_group_tests_name("xds_client", scenario_steps, group_setup, group_teardown);
    grpc_shutdown();
    curl_global_cleanup();
    return failed;
}
