/*
 * fuzz_http_request.c — libFuzzer target for atrium-proxy's request path, from
 * the bytes a client sends up to the choice of an upstream endpoint:
 * proxy-stub/http_codec.c frames the requests; then, as data_path.c does for
 * each request head, router.c routes it on a configuration snapshot and
 * proxy_cluster_pick() picks an endpoint of the cluster it went to.
 *
 * The first input byte chooses where the rest is split in two, and seeds the
 * random numbers of the weighted cluster picks; the rest is fed to a request
 * codec whole, then in the two pieces, looping over events as the proxy does
 * (on past MESSAGE_END for pipelining, stopping at ERROR). Checked at every
 * step: consumed ≤ length, progress, head fields in bounds.
 *
 * Each head is then routed on the table of every listener of one snapshot,
 * built once (on the first input) by proxy_config_build() from xDS resources
 * like those atriumd sends (support/xds_resources.c): an RDS table whose
 * virtual hosts have domains "S", "S.ns", "S:*", "*.suffix", "prefix*" and
 * "*", the same without "*", a listener's inline table, and an RDS table not
 * received. Their routes have prefix and exact paths, case-insensitive ones,
 * header conditions of every kind (inverted too), weighted clusters (one of
 * weight 0), a cluster without endpoints, one without a healthy endpoint and
 * one not received. Checked: the outcome is in range and agrees with the host
 * lookup; a routed result points into the snapshot, at the first route of
 * the host that matches and at one of its clusters, the one the random
 * number falls on by weight; the endpoint picked belongs to that cluster and
 * is healthy, and there is one unless the cluster has no healthy endpoint.
 *
 * Both runs must give the same heads, the same routing, the same body bytes
 * and the same events. Build with -DATRIUM_FUZZ=ON and clang.
 */
#include "http_codec.h"
#include "proxy_config.h"
#include "router.h"
#include "xds_resources.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(condition)                                                                           \
    do {                                                                                           \
        if (!(condition))                                                                          \
            abort();                                                                               \
    } while (0)

/* What a run saw, to compare runs: heads, routing and body bytes, in order. */
typedef struct transcript {
    unsigned char *bytes; /* owned */
    size_t length;
    size_t capacity;
} transcript;

static void record_bytes(transcript *out, const void *bytes, size_t length)
{
    if (length == 0)
        return;
    if (out->length + length > out->capacity) {
        size_t capacity = out->capacity == 0 ? 1024 : out->capacity;
        while (out->length + length > capacity)
            capacity *= 2;
        unsigned char *grown = realloc(out->bytes, capacity);
        CHECK(grown != NULL);
        out->bytes = grown;
        out->capacity = capacity;
    }
    memcpy(out->bytes + out->length, bytes, length);
    out->length += length;
}

static void record_number(transcript *out, uint64_t number)
{
    record_bytes(out, &number, sizeof(number));
}

static void record_text(transcript *out, http_text text)
{
    record_number(out, text.length);
    record_bytes(out, text.data, text.length);
}

static bool text_within(http_text inner, http_text outer)
{
    return inner.data >= outer.data && inner.data + inner.length <= outer.data + outer.length;
}

/* Checks a head's fields and records them. raw_bytes: what the head consumed. */
static void check_head(transcript *out, const http_head *head, size_t raw_bytes)
{
    CHECK(head != NULL);
    CHECK(raw_bytes > 0 && raw_bytes <= HTTP_CODEC_MAX_HEAD);
    CHECK(head->header_count <= HTTP_CODEC_MAX_HEADERS);
    CHECK(head->header_count == 0 || head->headers != NULL);
    CHECK(head->version_major == 1);
    CHECK(head->method.length > 0 && head->target.length > 0);
    CHECK(head->status == 0 && head->reason.length == 0);
    CHECK(head->content_length >= -1);
    CHECK(!head->chunked || head->content_length == -1);
    CHECK(head->has_body == (head->chunked || head->content_length > 0));
    CHECK(!head->expect_continue || head->version_minor >= 1);

    /* Copied text is never longer than the raw head; reading every byte lets
     * AddressSanitizer check the pointers. */
    size_t text_bytes = head->target.length;
    record_text(out, head->method);
    record_text(out, head->target);
    record_text(out, head->host);
    record_text(out, head->path);
    /* The origin form to forward is part of the target. */
    CHECK(head->path.length == 0 || text_within(head->path, head->target));
    CHECK(head->host_from_target ==
          (head->host.length > 0 && text_within(head->host, head->target)));
    for (size_t i = 0; i < head->header_count; i++) {
        const http_header *header = &head->headers[i];
        CHECK(header->name.length > 0);
        text_bytes += header->name.length + header->value.length;
        record_text(out, header->name);
        record_text(out, header->value);
    }
    CHECK(text_bytes <= raw_bytes);
    /* host is a header value or part of the target. */
    bool host_found = head->host.length == 0 || text_within(head->host, head->target);
    for (size_t i = 0; i < head->header_count && !host_found; i++)
        host_found = text_within(head->host, head->headers[i].value);
    CHECK(host_found);
    if (head->host.length > 0 && !text_within(head->host, head->target))
        CHECK(http_head_find(head, "host") != NULL);

    record_number(out, raw_bytes);
    record_number(out, (uint64_t)head->content_length);
    record_number(out, head->version_minor);
    record_number(out, (uint64_t)head->chunked << 0 | (uint64_t)head->has_body << 1 |
                           (uint64_t)head->keep_alive << 2 | (uint64_t)head->upgrade << 3 |
                           (uint64_t)head->expect_continue << 4 |
                           (uint64_t)head->is_head_method << 5);
}

/* ---- the snapshot requests are routed on ---- */

/* The listeners whose tables each head is routed on, and what each has. */
static const struct {
    const char *name;
    bool has_table;
} fuzz_listeners[] = {
    {"outbound", true}, /* RDS "outbound": every virtual host, "*" too */
    {"strict", true},   /* RDS "strict": the same hosts without "*" */
    {"inbound", true},  /* an inline table: "*" to the application */
    {"egress", false},  /* RDS "egress", never received */
};
#define FUZZ_LISTENER_COUNT (sizeof(fuzz_listeners) / sizeof(fuzz_listeners[0]))

/* A string_match header condition with its flags. */
static header_matcher_message *header_condition(pool *memory, const char *name, string_kind kind,
                                                const char *value, bool ignore_case, bool invert)
{
    header_matcher_message *header = header_string(memory, name, kind, value);
    header->string_match->ignore_case = ignore_case;
    header->invert_match = invert;
    return header;
}

static route_message *case_insensitive(pool *memory, route_message *route)
{
    route->match->case_sensitive = bool_value(memory, false);
    return route;
}

/*
 * What atriumd would send the atrium-proxy of a service "web" (app port 8080)
 * that calls greeter, billing and catalog, with a few additions so that every
 * kind of domain, path and header condition is there:
 *   clusters: inbound|8080; greeter (one endpoint draining); billing (IPv6 and
 *     UNKNOWN health); billing|version=v1; billing|version=v2 (no endpoints:
 *     its CLA has not arrived); catalog (the healthy endpoint only in priority
 *     1); drained (no healthy endpoint); "ghost" is routed to, never received;
 *   hosts: greeter ("greeter", "greeter.default", "greeter:*") → greeter;
 *     billing (the same forms): exact /v1/charge with x-user: alice and
 *       x-debug present → 80/20/0 over v1, v2 and billing; /v2/ with x-canary
 *       prefix "yes" → 90/10 over v2 and ghost; /ADMIN/ case-insensitive →
 *       drained; exact /healthz case-insensitive → v1; / → billing;
 *     catalog ("catalog", "catalog.shop", "catalog:*"): /items with x-region
 *       suffix "-west" (any case) and x-trace containing "abc" → catalog;
 *       /items with x-beta not "1" and no x-internal → greeter; exact /search
 *       with x-session (a condition without a match: presence) → catalog;
 *       /legacy → ghost; no default route;
 *     mesh ("*.mesh.internal", "*.internal") → greeter;
 *     api ("api.*", "api.v2.*") → billing, unless x-canary is exactly "always";
 *     any ("*", in "outbound" only): exact /ghost → ghost; / with x-canary
 *       present → greeter; nothing else.
 */
static void build_fuzz_resources(pool *memory, proxy_resource_set *set)
{
    static const struct {
        const char *name;
        Envoy__Config__Cluster__V3__Cluster__LbPolicy policy;
        test_endpoint endpoints[3];
        size_t endpoint_count; /* 0: no ClusterLoadAssignment */
    } clusters[] = {
        {"inbound|8080", ROUND_ROBIN, {{"127.0.0.1", 8080, 1, HEALTHY, "", 0}}, 1},
        {"greeter",
         LEAST_REQUEST,
         {{"10.0.0.1", 8080, 1, HEALTHY, "zone-a", 0},
          {"10.0.0.2", 8080, 3, HEALTHY, "zone-b", 0},
          {"10.0.0.3", 8080, 2, DRAINING, "zone-a", 0}},
         3},
        {"billing",
         RING_HASH,
         {{"fd00::1", 9090, 2, HEALTHY, "zone-a", 0}, {"10.1.0.1", 9090, 0, UNKNOWN, "zone-b", 0}},
         2},
        {"billing|version=v1", RING_HASH, {{"10.1.0.1", 9090, 0, UNKNOWN, "zone-b", 0}}, 1},
        {"billing|version=v2", RING_HASH, {{NULL, 0, 0, HEALTHY, NULL, 0}}, 0},
        {"catalog",
         RANDOM,
         {{"10.2.0.1", 80, 1, UNHEALTHY, "a", 0},
          {"10.2.0.2", 80, 4, HEALTHY, "b", 1},
          {"10.2.0.3", 80, 1, DEGRADED, "a", 0}},
         3},
        {"drained",
         ROUND_ROBIN,
         {{"10.3.0.1", 80, 1, DRAINING, "", 0}, {"10.3.0.2", 80, 1, TIMEOUT, "", 0}},
         2},
    };
    for (size_t i = 0; i < sizeof(clusters) / sizeof(clusters[0]); i++) {
        add_message(set, PROXY_RESOURCE_CLUSTER, clusters[i].name,
                    &eds_cluster(memory, clusters[i].name, clusters[i].policy, 1000)->base);
        if (clusters[i].endpoint_count > 0)
            add_message(set, PROXY_RESOURCE_ENDPOINT, clusters[i].name,
                        &load_assignment(memory, clusters[i].name, clusters[i].endpoints,
                                         clusters[i].endpoint_count)
                             ->base);
    }

    add_message(set, PROXY_RESOURCE_LISTENER, "outbound",
                &outbound_listener(memory, "outbound")->base);
    static const struct {
        const char *name;
        uint32_t port;
    } more_listeners[] = {{"strict", 15002}, {"egress", 15003}};
    for (size_t i = 0; i < 2; i++) {
        const char *name = more_listeners[i].name;
        add_message(set, PROXY_RESOURCE_LISTENER, name,
                    &socket_listener(memory, name, "127.0.0.1", more_listeners[i].port,
                                     ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND,
                                     http_manager(memory, name, name, NULL))
                         ->base);
    }
    add_message(set, PROXY_RESOURCE_LISTENER, "inbound",
                &inbound_listener(memory, 15006, "inbound|8080")->base);

    route_message *charge = route_to(memory, "/v1/charge", true, "billing");
    add_header(memory, charge, header_string(memory, "X-User", EXACT, "alice"));
    add_header(memory, charge, header_present(memory, "x-debug", true));
    set_weighted(memory, charge,
                 (const char *const[]){"billing|version=v1", "billing|version=v2", "billing"},
                 (const uint32_t[]){80, 20, 0}, 3);
    route_message *canary = route_to(memory, "/v2/", false, "billing");
    add_header(memory, canary, header_string(memory, "x-canary", PREFIX, "yes"));
    set_weighted(memory, canary, (const char *const[]){"billing|version=v2", "ghost"},
                 (const uint32_t[]){90, 10}, 2);
    route_message *billing_routes[] = {
        charge, canary, case_insensitive(memory, route_to(memory, "/ADMIN/", false, "drained")),
        case_insensitive(memory, route_to(memory, "/healthz", true, "billing|version=v1")),
        route_to(memory, "/", false, "billing")};

    route_message *regional = route_to(memory, "/items", false, "catalog");
    add_header(memory, regional,
               header_condition(memory, "x-region", SUFFIX, "-west", true, false));
    add_header(memory, regional, header_string(memory, "x-trace", CONTAINS, "abc"));
    route_message *stable = route_to(memory, "/items", false, "greeter");
    add_header(memory, stable, header_condition(memory, "x-beta", EXACT, "1", false, true));
    add_header(memory, stable, header_present(memory, "x-internal", false));
    route_message *search = route_to(memory, "/search", true, "catalog");
    header_matcher_message *session =
        NEW(memory, header_matcher_message, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    session->name = pool_text(memory, "x-session");
    add_header(memory, search, session);
    route_message *catalog_routes[] = {regional, stable, search,
                                       route_to(memory, "/legacy", false, "ghost")};

    route_message *api_canary = route_to(memory, "/", false, "billing");
    add_header(memory, api_canary,
               header_condition(memory, "x-canary", EXACT, "always", false, true));
    route_message *any_ghost = route_to(memory, "/ghost", true, "ghost");
    route_message *any_canary = route_to(memory, "/", false, "greeter");
    add_header(memory, any_canary, header_present(memory, "x-canary", true));
    route_message *to_greeter = route_to(memory, "/", false, "greeter");

    virtual_host_message *hosts[] = {
        service_host(memory, "greeter", NULL, 0),
        service_host(memory, "billing", billing_routes, 5),
        virtual_host(memory, "catalog",
                     (const char *const[]){"catalog", "catalog.shop", "catalog:*"}, 3,
                     catalog_routes, 4),
        virtual_host(memory, "mesh", (const char *const[]){"*.mesh.internal", "*.internal"}, 2,
                     &to_greeter, 1),
        virtual_host(memory, "api", (const char *const[]){"api.*", "api.v2.*"}, 2, &api_canary, 1),
        virtual_host(memory, "any", (const char *const[]){"*"}, 1,
                     (route_message *const[]){any_ghost, any_canary}, 2),
    };
    size_t host_count = sizeof(hosts) / sizeof(hosts[0]);
    add_message(set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(memory, "outbound", hosts, host_count)->base);
    add_message(set, PROXY_RESOURCE_ROUTE, "strict",
                &route_configuration(memory, "strict", hosts, host_count - 1)->base);
}

/* The snapshot and the route tables of fuzz_listeners, built on the first
 * call and kept for the whole run. */
typedef struct fuzz_snapshot {
    proxy_config *config;
    const proxy_route_table *tables[FUZZ_LISTENER_COUNT];
} fuzz_snapshot;

static bool table_in(const proxy_route_table *table, const proxy_route_table *tables, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (table == &tables[i])
            return true;
    return false;
}

static const fuzz_snapshot *snapshot(void)
{
    static fuzz_snapshot built;
    if (built.config != NULL)
        return &built;
    pool memory = {0};
    proxy_resource_set set = {0};
    build_fuzz_resources(&memory, &set);
    char error[512] = "";
    built.config = proxy_config_build(&set, 1, error, sizeof(error));
    proxy_resource_set_clear(&set);
    pool_free(&memory);
    if (built.config == NULL) {
        fprintf(stderr, "fuzz_http_request: the snapshot did not build: %s\n", error);
        abort();
    }
    const proxy_config *config = built.config;
    for (size_t i = 0; i < FUZZ_LISTENER_COUNT; i++) {
        const proxy_listener *listener = proxy_config_find_listener(config, fuzz_listeners[i].name);
        CHECK(listener != NULL);
        const proxy_route_table *table = listener->route_table;
        CHECK((table != NULL) == fuzz_listeners[i].has_table);
        CHECK(table == NULL || table_in(table, config->route_tables, config->route_table_count) ||
              table_in(table, config->inline_tables, config->inline_table_count));
        built.tables[i] = table;
    }
    CHECK(proxy_config_find_cluster(config, "ghost") == NULL);
    return &built;
}

/* ---- routing ---- */

/* splitmix64: the random numbers the data path would draw. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t mixed = (*state += 0x9e3779b97f4a7c15ULL);
    mixed = (mixed ^ (mixed >> 30)) * 0xbf58476d1ce4e5b9ULL;
    mixed = (mixed ^ (mixed >> 27)) * 0x94d049bb133111ebULL;
    return mixed ^ (mixed >> 31);
}

/* Where route is in host's routes (compared as pointers), or route_count. */
static size_t route_position(const proxy_route *route, const proxy_virtual_host *host)
{
    size_t position = 0;
    while (position < host->route_count && &host->routes[position] != route)
        position++;
    return position;
}

/* Checks a ROUTED result for head on host; sets the positions of its route
 * in host and of its cluster in the route. Picks an endpoint of that
 * cluster (when it was received) and checks it. */
static void check_routed(const proxy_config *config, const proxy_virtual_host *host,
                         const router_result *result, const http_head *head, uint64_t random,
                         size_t *route_index, size_t *cluster_index)
{
    /* The first route of host that matches. */
    const proxy_route *route = result->route;
    CHECK(route != NULL);
    *route_index = route_position(route, host);
    CHECK(*route_index < host->route_count);
    CHECK(router_route_matches(route, head));
    for (size_t i = 0; i < *route_index; i++)
        CHECK(!router_route_matches(&host->routes[i], head));

    /* One of its clusters: the one the random number falls on by weight. */
    const proxy_weighted_cluster *chosen = result->cluster;
    CHECK(chosen != NULL && route->cluster_count > 0);
    uint64_t total = 0, start = 0;
    *cluster_index = route->cluster_count;
    for (size_t i = 0; i < route->cluster_count; i++) {
        if (&route->clusters[i] == chosen) {
            *cluster_index = i;
            start = total;
        }
        total += route->clusters[i].weight;
    }
    CHECK(*cluster_index < route->cluster_count);
    CHECK(total == route->total_weight && total > 0);
    if (route->cluster_count > 1) {
        uint64_t point = random % total;
        CHECK(chosen->weight > 0 && start <= point && point < start + chosen->weight);
    }

    /* Its cluster is the snapshot's of that name, or NULL when none was received. */
    proxy_cluster *cluster = chosen->cluster;
    if (cluster == NULL) {
        CHECK(proxy_config_find_cluster(config, chosen->name) == NULL);
        return;
    }
    CHECK(cluster->index < config->cluster_count && cluster == &config->clusters[cluster->index]);
    CHECK(strcmp(cluster->name, chosen->name) == 0);
    CHECK(proxy_config_find_cluster(config, chosen->name) == cluster);

    /* An endpoint of its own, healthy; none only when none is healthy. */
    const proxy_endpoint *endpoint = proxy_cluster_pick(cluster);
    if (cluster->schedule_length == 0) {
        CHECK(endpoint == NULL);
        return;
    }
    CHECK(endpoint != NULL);
    CHECK(endpoint->index < cluster->endpoint_count &&
          endpoint == &cluster->endpoints[endpoint->index]);
    CHECK(endpoint->healthy);
}

/* Routes head on the table of every listener, as the data path does, checks
 * each result and records it. */
static void route_head(transcript *out, const http_head *head, uint64_t *random_state)
{
    const fuzz_snapshot *routing = snapshot();
    for (size_t i = 0; i < FUZZ_LISTENER_COUNT; i++) {
        const proxy_route_table *table = routing->tables[i];
        uint64_t random = next_random(random_state);
        router_result result = router_route(table, head, random);
        const proxy_virtual_host *host =
            table != NULL ? proxy_route_table_find_host(table, head->host.data, head->host.length)
                          : NULL;
        size_t host_index = SIZE_MAX, route_index = SIZE_MAX, cluster_index = SIZE_MAX;
        if (host != NULL) {
            host_index = 0;
            while (host_index < table->virtual_host_count &&
                   &table->virtual_hosts[host_index] != host)
                host_index++;
            CHECK(host_index < table->virtual_host_count);
        }
        switch (result.outcome) {
        case ROUTER_NO_ROUTE_TABLE:
            CHECK(table == NULL);
            break;
        case ROUTER_UNKNOWN_HOST:
            CHECK(table != NULL && host == NULL);
            break;
        case ROUTER_NO_ROUTE:
            CHECK(host != NULL);
            for (size_t r = 0; r < host->route_count; r++)
                CHECK(!router_route_matches(&host->routes[r], head));
            break;
        case ROUTER_ROUTED:
            CHECK(host != NULL);
            check_routed(routing->config, host, &result, head, random, &route_index,
                         &cluster_index);
            break;
        default:
            abort(); /* out of range */
        }
        if (result.outcome != ROUTER_ROUTED)
            CHECK(result.route == NULL && result.cluster == NULL);
        record_bytes(out, "R", 1);
        record_number(out, (uint64_t)result.outcome);
        record_number(out, host_index);
        record_number(out, route_index);
        record_number(out, cluster_index);
    }
}

typedef struct run {
    http_codec *codec;
    transcript out;
    transcript body;       /* body bytes of the current message */
    size_t raw_bytes;      /* consumed since the current message began */
    uint64_t random_state; /* for the weighted cluster picks */
    bool failed;
} run;

static void check_error(run *state)
{
    const char *reason = NULL;
    int status = http_codec_error(state->codec, &reason);
    CHECK(status == 400 || status == 431 || status == 500 || status == 501 || status == 505);
    CHECK(reason != NULL && reason[0] != '\0');
    CHECK(http_codec_head(state->codec) == NULL);
    /* Errors stick. */
    size_t consumed = 1;
    CHECK(http_codec_execute(state->codec, "GET", 3, &consumed) == HTTP_CODEC_ERROR);
    CHECK(consumed == 0);
    /* Which error comes first may depend on the split (a fold found at a line
     * end, a bad byte found before it), and so do the body bytes handed over
     * before it: record only that an error happened. */
    state->body.length = 0;
    record_bytes(&state->out, "E", 1);
    state->failed = true;
}

/* Feeds data[0, length) until all of it is used or an error. */
static void feed(run *state, const char *data, size_t length)
{
    size_t offset = 0;
    size_t calls = 0;
    http_codec_event event;
    do {
        size_t available = length - offset;
        size_t consumed = SIZE_MAX;
        event = http_codec_execute(state->codec, data + offset, available, &consumed);
        CHECK(consumed <= available);
        /* Progress: each call consumes bytes or reports HEAD (at least one
         * byte) or the MESSAGE_END of a bodyless message (none, after HEAD). */
        CHECK(++calls <= 2 * length + 2);
        switch (event) {
        case HTTP_CODEC_NEED_MORE:
            CHECK(consumed == available);
            state->raw_bytes += consumed;
            break;
        case HTTP_CODEC_HEAD:
            CHECK(consumed > 0);
            state->raw_bytes += consumed;
            record_bytes(&state->out, "H", 1);
            check_head(&state->out, http_codec_head(state->codec), state->raw_bytes);
            route_head(&state->out, http_codec_head(state->codec), &state->random_state);
            break;
        case HTTP_CODEC_BODY:
            CHECK(consumed == available);
            record_bytes(&state->body, data + offset, consumed);
            break;
        case HTTP_CODEC_MESSAGE_END:
            CHECK(http_codec_head(state->codec) != NULL);
            record_bytes(&state->body, data + offset, consumed);
            record_bytes(&state->out, "M", 1);
            record_number(&state->out, state->body.length);
            record_bytes(&state->out, state->body.bytes, state->body.length);
            state->body.length = 0;
            state->raw_bytes = 0;
            break;
        case HTTP_CODEC_ERROR:
            CHECK(consumed == 0);
            check_error(state);
            return;
        default:
            abort();
        }
        offset += consumed;
    } while (offset < length || event == HTTP_CODEC_HEAD);
}

/* Runs input through a new request codec in two pieces cut at split, routing
 * with random numbers from seed; returns what it saw (the caller frees
 * out.bytes). */
static transcript run_split(const char *input, size_t length, size_t split, uint64_t seed)
{
    run state = {.random_state = seed};
    state.codec = http_codec_new(HTTP_CODEC_REQUEST);
    CHECK(state.codec != NULL);
    feed(&state, input, split);
    if (!state.failed)
        feed(&state, input + split, length - split);
    if (!state.failed) {
        record_number(&state.out, state.body.length); /* a body the input left unfinished */
        record_bytes(&state.out, state.body.bytes, state.body.length);
        http_codec_event event = http_codec_finish(state.codec);
        CHECK(event == HTTP_CODEC_NEED_MORE || event == HTTP_CODEC_ERROR);
        record_bytes(&state.out, event == HTTP_CODEC_ERROR ? "e" : "c", 1);
        size_t consumed = 1;
        CHECK(http_codec_execute(state.codec, "x", 1, &consumed) == HTTP_CODEC_ERROR);
        CHECK(consumed == 0);
    }
    http_codec_free(state.codec);
    free(state.body.bytes);
    return state.out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* libFuzzer's entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *input = (const char *)data + 1;
    size_t length = size - 1;
    size_t split = data[0] % (length + 1);

    transcript whole = run_split(input, length, length, data[0]);
    transcript pieces = run_split(input, length, split, data[0]);
    CHECK(whole.length == pieces.length);
    CHECK(whole.length == 0 || memcmp(whole.bytes, pieces.bytes, whole.length) == 0);
    free(whole.bytes);
    free(pieces.bytes);
    return 0;
}
