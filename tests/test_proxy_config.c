/*
 * test_proxy_config.c — unit tests of atrium-proxy's configuration snapshot
 * (proxy-stub/proxy_config.h). Resources are built with protobuf-c the way
 * atriumd's translator (server/translator.c) builds them (by
 * support/xds_resources.c, shared with the request fuzzer), packed, and built
 * into snapshots: every field of the result is checked, each rejection gives
 * no snapshot and an error naming the resource and the problem, API listeners
 * are skipped, unresolved references are NULL, virtual host lookup follows
 * Envoy's order, weighted round robin is exact over a schedule, references
 * count, and a 1,000-service resource set builds (timed).
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "proxy_config.h"
#include "xds_resources.h"

#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- snapshots ---- */

static double milliseconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static double last_build_ms; /* how long the last build_ok took */

/* Builds set, expecting a snapshot. */
static proxy_config *build_ok(const proxy_resource_set *set)
{
    char error[512] = "";
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    proxy_config *config = proxy_config_build(set, 7, error, sizeof(error));
    last_build_ms = milliseconds_since(&start);
    if (config == NULL)
        fail_msg("build failed: %s", error);
    assert_string_equal(error, "");
    return config;
}

/* Builds set, expecting exactly this error. */
static void assert_rejected(const proxy_resource_set *set, const char *expected)
{
    char error[512] = "unchanged";
    proxy_config *config = proxy_config_build(set, 1, error, sizeof(error));
    if (config != NULL) {
        proxy_config_release(config);
        fail_msg("built, expected: %s", expected);
    }
    assert_string_equal(error, expected);
}

/* ---- messages only these tests need ---- */

/* An unknown field carried by message: a field of the upstream message our
 * proto subset does not declare (data: its encoded value, length prefix
 * included for length-delimited fields). */
static void add_unknown_field(pool *memory, ProtobufCMessage *message, uint32_t number,
                              ProtobufCWireType wire_type, const uint8_t *data, size_t length)
{
    ProtobufCMessageUnknownField *fields =
        pool_alloc(memory, (message->n_unknown_fields + 1) * sizeof(*fields));
    if (message->n_unknown_fields > 0)
        memcpy(fields, message->unknown_fields, message->n_unknown_fields * sizeof(*fields));
    fields[message->n_unknown_fields] =
        (ProtobufCMessageUnknownField){.tag = number,
                                       .wire_type = wire_type,
                                       .len = length,
                                       .data = pool_copy(memory, data, length)};
    message->unknown_fields = fields;
    message->n_unknown_fields++;
}

/* An empty message as an unknown length-delimited field. */
static void add_unknown_message(pool *memory, ProtobufCMessage *message, uint32_t number)
{
    static const uint8_t empty[] = {0};
    add_unknown_field(memory, message, number, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, empty, 1);
}

static http_filter_message *rbac_filter(pool *memory)
{
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC rbac =
        ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
    return http_filter(memory, "envoy.filters.http.rbac", pool_any(memory, &rbac.base));
}

/* An RBAC filter with rules (a DENY policy, no policies: denies nothing, but
 * rules are rules). */
static http_filter_message *rbac_filter_with_rules(pool *memory)
{
    Envoy__Config__Rbac__V3__RBAC rules = ENVOY__CONFIG__RBAC__V3__RBAC__INIT;
    rules.action = ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY;
    Envoy__Extensions__Filters__Http__Rbac__V3__RBAC rbac =
        ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
    rbac.rules = &rules;
    return http_filter(memory, "envoy.filters.http.rbac", pool_any(memory, &rbac.base));
}

/* translate_service's API listener for proxyless gRPC. */
static listener_message *api_listener(pool *memory, const char *service)
{
    Envoy__Config__Listener__V3__ApiListener *api =
        NEW(memory, Envoy__Config__Listener__V3__ApiListener,
            ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT);
    api->api_listener = pool_any(memory, &http_manager(memory, service, service, NULL)->base);
    listener_message *listener =
        NEW(memory, listener_message, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    listener->name = pool_text(memory, service);
    listener->api_listener = api;
    return listener;
}

/* translator.c: timeout and the same max_stream_duration for gRPC clients. */
static void set_timeout(pool *memory, route_message *route, uint32_t milliseconds)
{
    route->route->timeout = duration_ms(memory, milliseconds);
    Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *limit =
        NEW(memory, Envoy__Config__Route__V3__RouteAction__MaxStreamDuration,
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__MAX_STREAM_DURATION__INIT);
    limit->max_stream_duration = duration_ms(memory, milliseconds);
    route->route->max_stream_duration = limit;
}

static Envoy__Config__Route__V3__RetryPolicy *
retry_policy(pool *memory, const char *retry_on, uint32_t attempts, uint32_t per_try_timeout_ms)
{
    Envoy__Config__Route__V3__RetryPolicy *policy =
        NEW(memory, Envoy__Config__Route__V3__RetryPolicy,
            ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__INIT);
    policy->retry_on = pool_text(memory, retry_on);
    policy->num_retries = uint32_value(memory, attempts);
    if (per_try_timeout_ms)
        policy->per_try_timeout = duration_ms(memory, per_try_timeout_ms);
    Envoy__Config__Route__V3__RetryPolicy__RetryBackOff *backoff =
        NEW(memory, Envoy__Config__Route__V3__RetryPolicy__RetryBackOff,
            ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_BACK_OFF__INIT);
    backoff->base_interval = duration_ms(memory, 25);
    policy->retry_back_off = backoff;
    return policy;
}

/* ---- the mesh fixture ---- */

/*
 * What atriumd sends the atrium-proxy of service "web" (app port 8080,
 * inbound 15006, outbound 15001) that may call greeter and billing, plus the
 * API listeners a wildcard would have included had atriumd not filtered them:
 *   greeter: LEAST_REQUEST, 3 endpoints (one draining), connect timeout 1 s;
 *   billing: RING_HASH, connect timeout 250 ms, routes:
 *     exact /v1/charge with x-user: alice and x-debug present → 80/20 split
 *       over billing|version=v1 and billing|version=v2 (v2 has no CLA yet),
 *       timeout 2500 ms, retries 5xx,reset ×3 with 500 ms per try;
 *     prefix /v2/ with x-canary prefix "yes" → billing, no timeout set;
 *     default / → billing.
 */
static void build_mesh(pool *memory, proxy_resource_set *set)
{
    add_message(set, PROXY_RESOURCE_CLUSTER, "inbound|8080",
                &eds_cluster(memory, "inbound|8080", ROUND_ROBIN, 1000)->base);
    const test_endpoint local[] = {{"127.0.0.1", 8080, 1, HEALTHY, "", 0}};
    add_message(set, PROXY_RESOURCE_ENDPOINT, "inbound|8080",
                &load_assignment(memory, "inbound|8080", local, 1)->base);
    add_message(set, PROXY_RESOURCE_LISTENER, "outbound",
                &outbound_listener(memory, "outbound")->base);
    add_message(set, PROXY_RESOURCE_LISTENER, "inbound",
                &inbound_listener(memory, 15006, "inbound|8080")->base);

    add_message(set, PROXY_RESOURCE_CLUSTER, "greeter",
                &eds_cluster(memory, "greeter", LEAST_REQUEST, 1000)->base);
    const test_endpoint greeters[] = {{"10.0.0.1", 8080, 1, HEALTHY, "zone-a", 0},
                                      {"10.0.0.2", 8080, 3, HEALTHY, "zone-b", 0},
                                      {"10.0.0.3", 8080, 2, DRAINING, "zone-a", 0}};
    add_message(set, PROXY_RESOURCE_ENDPOINT, "greeter",
                &load_assignment(memory, "greeter", greeters, 3)->base);
    add_message(set, PROXY_RESOURCE_LISTENER, "greeter", &api_listener(memory, "greeter")->base);
    add_message(set, PROXY_RESOURCE_ROUTE, "greeter",
                &route_configuration(
                     memory, "greeter",
                     (virtual_host_message *[]){service_host(memory, "greeter", NULL, 0)}, 1)
                     ->base);

    const char *const billing_clusters[] = {"billing", "billing|version=v1", "billing|version=v2"};
    for (size_t i = 0; i < 3; i++)
        add_message(set, PROXY_RESOURCE_CLUSTER, billing_clusters[i],
                    &eds_cluster(memory, billing_clusters[i], RING_HASH, 250)->base);
    const test_endpoint billings[] = {{"fd00::1", 9090, 2, HEALTHY, "zone-a", 0},
                                      {"10.1.0.1", 9090, 0, UNKNOWN, "zone-b", 0}};
    add_message(set, PROXY_RESOURCE_ENDPOINT, "billing",
                &load_assignment(memory, "billing", billings, 2)->base);
    add_message(set, PROXY_RESOURCE_ENDPOINT, "billing|version=v1",
                &load_assignment(memory, "billing|version=v1", billings + 1, 1)->base);

    route_message *charge = route_to(memory, "/v1/charge", true, "billing");
    add_header(memory, charge, header_string(memory, "X-User", EXACT, "alice"));
    add_header(memory, charge, header_present(memory, "x-debug", true));
    set_weighted(memory, charge, (const char *const[]){"billing|version=v1", "billing|version=v2"},
                 (const uint32_t[]){80, 20}, 2);
    set_timeout(memory, charge, 2500);
    charge->route->retry_policy = retry_policy(memory, "5xx,reset", 3, 500);
    route_message *canary = route_to(memory, "/v2/", false, "billing");
    add_header(memory, canary, header_string(memory, "x-canary", PREFIX, "yes"));
    route_message *billing_routes[] = {charge, canary, route_to(memory, "/", false, "billing")};
    virtual_host_message *billing_host = service_host(memory, "billing", billing_routes, 3);
    add_message(set, PROXY_RESOURCE_LISTENER, "billing", &api_listener(memory, "billing")->base);
    add_message(set, PROXY_RESOURCE_ROUTE, "billing",
                &route_configuration(memory, "billing", &billing_host, 1)->base);

    virtual_host_message *outbound_hosts[] = {service_host(memory, "greeter", NULL, 0),
                                              billing_host};
    add_message(set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(memory, "outbound", outbound_hosts, 2)->base);
}

/* ---- tests: resource types and sets ---- */

static void test_type_urls(void **state)
{
    (void)state;
    static const struct {
        proxy_resource_type type;
        const char *url;
    } expected[] = {
        {PROXY_RESOURCE_CLUSTER, "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
        {PROXY_RESOURCE_ENDPOINT,
         "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
        {PROXY_RESOURCE_LISTENER, "type.googleapis.com/envoy.config.listener.v3.Listener"},
        {PROXY_RESOURCE_ROUTE, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
    };
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        assert_string_equal(proxy_resource_type_url(expected[i].type), expected[i].url);
        proxy_resource_type type = PROXY_RESOURCE_TYPE_COUNT;
        assert_true(proxy_resource_type_from_url(expected[i].url, &type));
        assert_int_equal(type, expected[i].type);
    }
    assert_string_equal(proxy_resource_type_url(PROXY_RESOURCE_TYPE_COUNT), "");
    proxy_resource_type type = PROXY_RESOURCE_ROUTE;
    assert_false(proxy_resource_type_from_url(
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", &type));
    assert_false(proxy_resource_type_from_url("envoy.config.cluster.v3.Cluster", &type));
    assert_false(proxy_resource_type_from_url(NULL, &type));
    assert_int_equal(type, PROXY_RESOURCE_ROUTE);
}

static void test_resource_set_clear(void **state)
{
    (void)state;
    proxy_resource_set set = {0};
    const uint8_t bytes[] = {1, 2, 3};
    add_bytes(&set, PROXY_RESOURCE_CLUSTER, "a", "1", bytes, 3);
    add_bytes(&set, PROXY_RESOURCE_CLUSTER, "b", NULL, bytes, 0);
    add_bytes(&set, PROXY_RESOURCE_ROUTE, "r", "9", bytes, 2);
    assert_int_equal(set.counts[PROXY_RESOURCE_CLUSTER], 2);
    proxy_resource_set_clear(&set);
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        assert_null(set.items[type]);
        assert_int_equal(set.counts[type], 0);
    }
    proxy_resource_set_clear(&set); /* clearing an empty set is fine */
}

/* ---- tests: a whole mesh ---- */

static void assert_endpoint(const proxy_endpoint *endpoint, const char *address, uint16_t port,
                            uint32_t weight, bool healthy, size_t index)
{
    assert_string_equal(endpoint->address, address);
    assert_int_equal(endpoint->port, port);
    assert_int_equal(endpoint->weight, weight);
    assert_int_equal(endpoint->healthy, healthy);
    assert_int_equal(endpoint->index, index);
    if (strchr(address, ':') != NULL) {
        const struct sockaddr_in6 *ipv6 = (const struct sockaddr_in6 *)&endpoint->socket_address;
        struct in6_addr expected;
        assert_int_equal(inet_pton(AF_INET6, address, &expected), 1);
        assert_int_equal(endpoint->socket_address_length, sizeof(struct sockaddr_in6));
        assert_int_equal(ipv6->sin6_family, AF_INET6);
        assert_int_equal(ntohs(ipv6->sin6_port), port);
        assert_memory_equal(&ipv6->sin6_addr, &expected, sizeof(expected));
    } else {
        const struct sockaddr_in *ipv4 = (const struct sockaddr_in *)&endpoint->socket_address;
        assert_int_equal(endpoint->socket_address_length, sizeof(struct sockaddr_in));
        assert_int_equal(ipv4->sin_family, AF_INET);
        assert_int_equal(ntohs(ipv4->sin_port), port);
        assert_int_equal(ipv4->sin_addr.s_addr, inet_addr(address));
    }
}

static void test_mesh_snapshot(void **state)
{
    (void)state;
    pool memory = {0};
    proxy_resource_set set = {0};
    build_mesh(&memory, &set);
    proxy_config *config = build_ok(&set);
    assert_int_equal(atomic_load(&config->references), 1);
    assert_int_equal(config->generation, 7);

    /* The snapshot needs nothing of the set it was built from. */
    proxy_resource_set_clear(&set);
    pool_free(&memory);

    /* Clusters, sorted by name. */
    static const char *const names[] = {"billing", "billing|version=v1", "billing|version=v2",
                                        "greeter", "inbound|8080"};
    assert_int_equal(config->cluster_count, 5);
    for (size_t i = 0; i < 5; i++) {
        const proxy_cluster *cluster = &config->clusters[i];
        assert_string_equal(cluster->name, names[i]);
        assert_int_equal(cluster->index, i);
        char version[64];
        snprintf(version, sizeof(version), "v-%s", names[i]);
        assert_string_equal(cluster->version, version);
        assert_ptr_equal(proxy_config_find_cluster(config, names[i]), cluster);
    }
    assert_null(proxy_config_find_cluster(config, "billing|version=v3"));
    assert_null(proxy_config_find_cluster(config, "aaa"));
    assert_null(proxy_config_find_cluster(config, "zzz"));

    proxy_cluster *billing = &config->clusters[0];
    assert_int_equal(billing->connect_timeout_ms, 250);
    assert_string_equal(billing->endpoints_version, "v-billing");
    assert_int_equal(billing->endpoint_count, 2);
    assert_endpoint(&billing->endpoints[0], "fd00::1", 9090, 2, true, 0);
    assert_endpoint(&billing->endpoints[1], "10.1.0.1", 9090, 1, true,
                    1); /* UNKNOWN, weight unset */
    assert_int_equal(billing->schedule_length, 3);

    proxy_cluster *billing_v2 = &config->clusters[2];
    assert_null(billing_v2->endpoints_version); /* its CLA has not arrived */
    assert_int_equal(billing_v2->endpoint_count, 0);
    assert_int_equal(billing_v2->schedule_length, 0);
    assert_null(proxy_cluster_pick(billing_v2));

    proxy_cluster *greeter = &config->clusters[3];
    assert_int_equal(greeter->connect_timeout_ms, 1000);
    assert_string_equal(greeter->endpoints_version, "v-greeter");
    assert_int_equal(greeter->endpoint_count, 3);
    /* Grouped by zone as translator.c does: zone-a (10.0.0.1, 10.0.0.3), zone-b. */
    assert_endpoint(&greeter->endpoints[0], "10.0.0.1", 8080, 1, true, 0);
    assert_endpoint(&greeter->endpoints[1], "10.0.0.3", 8080, 2, false, 1);
    assert_endpoint(&greeter->endpoints[2], "10.0.0.2", 8080, 3, true, 2);
    assert_int_equal(greeter->schedule_length, 4);

    proxy_cluster *inbound = &config->clusters[4];
    assert_int_equal(inbound->endpoint_count, 1);
    assert_endpoint(&inbound->endpoints[0], "127.0.0.1", 8080, 1, true, 0);
    assert_ptr_equal(proxy_cluster_pick(inbound), &inbound->endpoints[0]);

    /* Route tables, sorted by name. */
    assert_int_equal(config->route_table_count, 3);
    assert_string_equal(config->route_tables[0].name, "billing");
    assert_string_equal(config->route_tables[1].name, "greeter");
    assert_string_equal(config->route_tables[2].name, "outbound");
    const proxy_route_table *outbound_table = &config->route_tables[2];
    assert_string_equal(outbound_table->version, "v-outbound");
    assert_int_equal(outbound_table->virtual_host_count, 2);

    const proxy_virtual_host *greeter_host = &outbound_table->virtual_hosts[0];
    assert_string_equal(greeter_host->name, "greeter");
    assert_int_equal(greeter_host->domain_count, 3);
    assert_string_equal(greeter_host->domains[0], "greeter");
    assert_string_equal(greeter_host->domains[1], "greeter.default");
    assert_string_equal(greeter_host->domains[2], "greeter:*");
    assert_int_equal(greeter_host->route_count, 1);
    const proxy_route *route = &greeter_host->routes[0];
    assert_string_equal(route->name, "");
    assert_int_equal(route->path_match, PROXY_PATH_PREFIX);
    assert_string_equal(route->path, "/");
    assert_int_equal(route->path_length, 1);
    assert_true(route->case_sensitive);
    assert_int_equal(route->header_count, 0);
    assert_int_equal(route->cluster_count, 1);
    assert_string_equal(route->clusters[0].name, "greeter");
    assert_int_equal(route->clusters[0].weight, 1);
    assert_ptr_equal(route->clusters[0].cluster, greeter);
    assert_int_equal(route->total_weight, 1);
    assert_int_equal(route->timeout_ms, 15000); /* unset: Envoy's default */
    assert_null(route->retry_on);
    assert_int_equal(route->retry_count, 0);
    assert_int_equal(route->per_try_timeout_ms, 0);

    const proxy_virtual_host *billing_host = &outbound_table->virtual_hosts[1];
    assert_string_equal(billing_host->name, "billing");
    assert_int_equal(billing_host->route_count, 3);
    route = &billing_host->routes[0];
    assert_int_equal(route->path_match, PROXY_PATH_EXACT);
    assert_string_equal(route->path, "/v1/charge");
    assert_int_equal(route->path_length, 10);
    assert_int_equal(route->header_count, 2);
    assert_string_equal(route->headers[0].name, "x-user"); /* lower-cased */
    assert_int_equal(route->headers[0].kind, PROXY_HEADER_EXACT);
    assert_string_equal(route->headers[0].value, "alice");
    assert_false(route->headers[0].ignore_case);
    assert_false(route->headers[0].invert);
    assert_string_equal(route->headers[1].name, "x-debug");
    assert_int_equal(route->headers[1].kind, PROXY_HEADER_PRESENT);
    assert_null(route->headers[1].value);
    assert_false(route->headers[1].invert);
    assert_int_equal(route->cluster_count, 2);
    assert_string_equal(route->clusters[0].name, "billing|version=v1");
    assert_int_equal(route->clusters[0].weight, 80);
    assert_ptr_equal(route->clusters[0].cluster, &config->clusters[1]);
    assert_string_equal(route->clusters[1].name, "billing|version=v2");
    assert_int_equal(route->clusters[1].weight, 20);
    assert_ptr_equal(route->clusters[1].cluster, billing_v2);
    assert_int_equal(route->total_weight, 100);
    assert_int_equal(route->timeout_ms, 2500);
    assert_string_equal(route->retry_on, "5xx,reset");
    assert_int_equal(route->retry_count, 3);
    assert_int_equal(route->per_try_timeout_ms, 500);
    route = &billing_host->routes[1];
    assert_int_equal(route->path_match, PROXY_PATH_PREFIX);
    assert_string_equal(route->path, "/v2/");
    assert_int_equal(route->header_count, 1);
    assert_string_equal(route->headers[0].name, "x-canary");
    assert_int_equal(route->headers[0].kind, PROXY_HEADER_PREFIX);
    assert_string_equal(route->headers[0].value, "yes");
    assert_ptr_equal(route->clusters[0].cluster, billing);
    assert_int_equal(route->timeout_ms, 15000);
    assert_string_equal(billing_host->routes[2].path, "/");

    /* Listeners: the API listeners are skipped. */
    assert_int_equal(config->listener_count, 2);
    assert_null(proxy_config_find_listener(config, "greeter"));
    assert_null(proxy_config_find_listener(config, "billing"));
    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    assert_ptr_equal(outbound, &config->listeners[0]);
    assert_string_equal(outbound->version, "v-outbound");
    assert_string_equal(outbound->address, "127.0.0.1");
    assert_int_equal(outbound->port, 15001);
    assert_int_equal(outbound->direction, PROXY_DIRECTION_OUTBOUND);
    assert_string_equal(outbound->route_table_name, "outbound");
    assert_ptr_equal(outbound->route_table, outbound_table);
    assert_true(outbound->generate_request_id);

    const proxy_listener *inbound_listener = proxy_config_find_listener(config, "inbound");
    assert_ptr_equal(inbound_listener, &config->listeners[1]);
    assert_string_equal(inbound_listener->address, "0.0.0.0");
    assert_int_equal(inbound_listener->port, 15006);
    assert_int_equal(inbound_listener->direction, PROXY_DIRECTION_INBOUND);
    assert_string_equal(inbound_listener->route_table_name, "inbound");
    assert_int_equal(config->inline_table_count, 1);
    const proxy_route_table *inline_table = &config->inline_tables[0];
    assert_ptr_equal(inbound_listener->route_table, inline_table);
    assert_string_equal(inline_table->name, "inbound");
    assert_null(inline_table->version);
    assert_int_equal(inline_table->virtual_host_count, 1);
    const proxy_virtual_host *local_host = proxy_route_table_find_host(inline_table, "anything", 8);
    assert_ptr_equal(local_host, &inline_table->virtual_hosts[0]);
    assert_ptr_equal(local_host->routes[0].clusters[0].cluster, inbound);

    /* Host lookup on the outbound table, as the application calls. */
    assert_ptr_equal(proxy_route_table_find_host(outbound_table, "billing:8080", 12), billing_host);
    assert_ptr_equal(proxy_route_table_find_host(outbound_table, "greeter.default", 15),
                     greeter_host);
    assert_null(proxy_route_table_find_host(outbound_table, "web", 3));

    proxy_config_release(config);
}

static void test_api_listeners_skipped(void **state)
{
    (void)state;
    pool memory = {0};
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_LISTENER, "greeter", &api_listener(&memory, "greeter")->base);
    add_message(&set, PROXY_RESOURCE_LISTENER, "billing", &api_listener(&memory, "billing")->base);
    proxy_config *config = build_ok(&set);
    assert_int_equal(config->listener_count, 0);
    assert_int_equal(config->inline_table_count, 0);
    assert_null(proxy_config_find_listener(config, "greeter"));
    proxy_config_release(config);

    /* An API listener is skipped even when it carries things a socket
     * listener could not have (no address, an unknown filter). */
    listener_message *odd = api_listener(&memory, "odd");
    odd->n_filter_chains = 0;
    add_message(&set, PROXY_RESOURCE_LISTENER, "odd", &odd->base);
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound",
                &outbound_listener(&memory, "outbound")->base);
    config = build_ok(&set);
    assert_int_equal(config->listener_count, 1);
    assert_string_equal(config->listeners[0].name, "outbound");
    proxy_config_release(config);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

static void test_unresolved_references(void **state)
{
    (void)state;
    pool memory = {0};
    proxy_resource_set set = {0};
    /* Listener → RDS "outbound" not received; route → cluster "missing" not
     * received; cluster "lonely" without a CLA; a CLA whose cluster is not here. */
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound",
                &outbound_listener(&memory, "outbound")->base);
    route_message *route = route_to(&memory, "/", false, "missing");
    const char *domains[] = {"a"};
    virtual_host_message *host = virtual_host(&memory, "a", domains, 1, &route, 1);
    add_message(&set, PROXY_RESOURCE_ROUTE, "other",
                &route_configuration(&memory, "other", &host, 1)->base);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "lonely",
                &eds_cluster(&memory, "lonely", ROUND_ROBIN, 1000)->base);
    const test_endpoint endpoint[] = {{"10.0.0.9", 80, 1, HEALTHY, "", 0}};
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "orphan",
                &load_assignment(&memory, "orphan", endpoint, 1)->base);
    proxy_config *config = build_ok(&set);
    const proxy_listener *listener = proxy_config_find_listener(config, "outbound");
    assert_string_equal(listener->route_table_name, "outbound");
    assert_null(listener->route_table);
    assert_int_equal(config->route_table_count, 1);
    assert_string_equal(config->route_tables[0].virtual_hosts[0].routes[0].clusters[0].name,
                        "missing");
    assert_null(config->route_tables[0].virtual_hosts[0].routes[0].clusters[0].cluster);
    const proxy_cluster *lonely = proxy_config_find_cluster(config, "lonely");
    assert_null(lonely->endpoints_version);
    assert_int_equal(lonely->endpoint_count, 0);
    assert_null(proxy_cluster_pick(&config->clusters[0]));
    assert_null(proxy_config_find_cluster(config, "orphan"));
    proxy_config_release(config);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

static void test_empty_set(void **state)
{
    (void)state;
    proxy_resource_set set = {0};
    proxy_config *config = build_ok(&set);
    assert_int_equal(config->listener_count, 0);
    assert_int_equal(config->cluster_count, 0);
    assert_int_equal(config->route_table_count, 0);
    assert_null(proxy_config_find_cluster(config, "x"));
    assert_null(proxy_config_find_listener(config, "x"));
    proxy_config_release(config);
}

/* Variants that must be accepted: an optional unknown HTTP filter, RBAC
 * without rules before the router, the router named without a config, the other LB
 * policies, generate_request_id false, timeouts 0 and under a millisecond. */
static void test_accepted_variants(void **state)
{
    (void)state;
    pool memory = {0};
    proxy_resource_set set = {0};
    connection_manager_message *manager = http_manager(&memory, "outbound", "outbound", NULL);
    http_filter_message *fault =
        http_filter(&memory, "envoy.filters.http.fault",
                    raw_any(&memory, "envoy.extensions.filters.http.fault.v3.HTTPFault", NULL, 0));
    fault->is_optional = true;
    http_filter_message *filters[] = {fault, rbac_filter(&memory),
                                      http_filter(&memory, "envoy.filters.http.router", NULL)};
    set_http_filters(&memory, manager, filters, 3);
    manager->generate_request_id = bool_value(&memory, false);
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound",
                &socket_listener(&memory, "outbound", "::1", 15001,
                                 ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__UNSPECIFIED, manager)
                     ->base);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "random",
                &eds_cluster(&memory, "random", RANDOM, 1000)->base);
    cluster_message *defaults = eds_cluster(&memory, "defaults", ROUND_ROBIN, 0);
    defaults->connect_timeout = NULL;
    defaults->eds_cluster_config->service_name = pool_text(&memory, "");
    add_message(&set, PROXY_RESOURCE_CLUSTER, "defaults", &defaults->base);

    route_message *no_timeout = route_to(&memory, "/none", false, "random");
    no_timeout->route->timeout = duration_ms(&memory, 0);
    no_timeout->match->case_sensitive = bool_value(&memory, false);
    route_message *tiny = route_to(&memory, "/tiny", false, "random");
    tiny->route->timeout = duration_ms(&memory, 0);
    tiny->route->timeout->nanos = 1000; /* 1 µs: rounds up, not down to "none" */
    add_header(&memory, tiny, header_present(&memory, "x-absent", false));
    header_matcher_message *inverted = header_string(&memory, "x-v", SUFFIX, "-beta");
    inverted->invert_match = true;
    inverted->string_match->ignore_case = true;
    add_header(&memory, tiny, inverted);
    add_header(&memory, tiny, header_string(&memory, "x-c", CONTAINS, "mid"));
    header_matcher_message *bare =
        NEW(&memory, header_matcher_message, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    bare->name = pool_text(&memory, "x-bare"); /* no specifier: Envoy matches presence */
    add_header(&memory, tiny, bare);
    route_message *routes[] = {no_timeout, tiny};
    virtual_host_message *host = virtual_host(&memory, "h", (const char *[]){"h"}, 1, routes, 2);
    host->retry_policy = retry_policy(&memory, "connect-failure", 2, 0);
    host->retry_policy->num_retries = NULL; /* Envoy's default: 1 */
    route_message *own_policy = route_to(&memory, "/own", false, "random");
    own_policy->route->retry_policy = retry_policy(&memory, "5xx", 4, 0);
    virtual_host_message *second =
        virtual_host(&memory, "i", (const char *[]){"i"}, 1, &own_policy, 1);
    second->retry_policy = retry_policy(&memory, "reset", 9, 0);
    add_message(
        &set, PROXY_RESOURCE_ROUTE, "outbound",
        &route_configuration(&memory, "outbound", (virtual_host_message *[]){host, second}, 2)
             ->base);

    proxy_config *config = build_ok(&set);
    const proxy_listener *listener = &config->listeners[0];
    assert_string_equal(listener->address, "::1");
    assert_int_equal(listener->direction, PROXY_DIRECTION_UNSPECIFIED);
    assert_false(listener->generate_request_id);
    assert_ptr_equal(listener->route_table, &config->route_tables[0]);
    const proxy_cluster *cluster = proxy_config_find_cluster(config, "defaults");
    assert_int_equal(cluster->connect_timeout_ms, 5000); /* Envoy's default */
    const proxy_virtual_host *found = &config->route_tables[0].virtual_hosts[0];
    assert_int_equal(found->routes[0].timeout_ms, 0);
    assert_false(found->routes[0].case_sensitive);
    assert_string_equal(found->routes[0].retry_on, "connect-failure"); /* the host's policy */
    assert_int_equal(found->routes[0].retry_count, 1);
    assert_int_equal(found->routes[1].timeout_ms, 1);
    const proxy_header_match *headers = found->routes[1].headers;
    assert_int_equal(found->routes[1].header_count, 4);
    assert_int_equal(headers[0].kind, PROXY_HEADER_PRESENT);
    assert_true(headers[0].invert); /* present_match false: the header must be absent */
    assert_int_equal(headers[1].kind, PROXY_HEADER_SUFFIX);
    assert_string_equal(headers[1].value, "-beta");
    assert_true(headers[1].invert);
    assert_true(headers[1].ignore_case);
    assert_int_equal(headers[2].kind, PROXY_HEADER_CONTAINS);
    assert_string_equal(headers[2].value, "mid");
    assert_int_equal(headers[3].kind, PROXY_HEADER_PRESENT);
    assert_false(headers[3].invert);
    const proxy_route *own = &config->route_tables[0].virtual_hosts[1].routes[0];
    assert_string_equal(own->retry_on, "5xx"); /* a route's policy replaces its host's */
    assert_int_equal(own->retry_count, 4);
    proxy_config_release(config);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

/* ---- tests: rejections ---- */

static void test_undecodable_resources(void **state)
{
    (void)state;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    static const char *const expected[PROXY_RESOURCE_TYPE_COUNT] = {
        "Cluster \"x\": 3 bytes do not decode as envoy.config.cluster.v3.Cluster",
        "ClusterLoadAssignment \"x\": 3 bytes do not decode as "
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "Listener \"x\": 3 bytes do not decode as envoy.config.listener.v3.Listener",
        "RouteConfiguration \"x\": 3 bytes do not decode as "
        "envoy.config.route.v3.RouteConfiguration",
    };
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++) {
        proxy_resource_set set = {0};
        add_bytes(&set, (proxy_resource_type)type, "x", "1", garbage, sizeof(garbage));
        assert_rejected(&set, expected[type]);
        proxy_resource_set_clear(&set);
    }
}

/* One listener in a set of its own, expecting error. */
static void assert_listener_rejected(pool *memory, listener_message *listener, const char *expected)
{
    (void)memory;
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_LISTENER, listener->name, &listener->base);
    assert_rejected(&set, expected);
    proxy_resource_set_clear(&set);
}

static void test_listener_rejections(void **state)
{
    (void)state;
    pool memory = {0};
    listener_message *listener = outbound_listener(&memory, "outbound");
    listener->address = socket_address(&memory, "localhost", 15001);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address \"localhost\" is not a numeric IPv4 "
                             "or IPv6 address (hostnames are not resolved)");
    listener->address = socket_address(&memory, "127.0.0.1", 0);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address 127.0.0.1: port 0 is out of range "
                             "(1-65535)");
    listener->address = socket_address(&memory, "127.0.0.1", 70000);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address 127.0.0.1: port 70000 is out of "
                             "range (1-65535)");
    listener->address->socket_address->port_specifier_case =
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER__NOT_SET;
    static const uint8_t named_port[] = {4, 'h', 't', 't', 'p'};
    add_unknown_field(&memory, &listener->address->socket_address->base, 4,
                      PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, named_port, sizeof(named_port));
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address 127.0.0.1: named_port is not "
                             "supported, only port_value");
    listener->address = socket_address(&memory, "127.0.0.1", 15001);
    listener->address->socket_address->protocol =
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__UDP;
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address: protocol UDP is not supported "
                             "(TCP only)");
    listener->address = NULL;
    assert_listener_rejected(&memory, listener, "Listener \"outbound\": no address");
    listener->address = NEW(&memory, address_message, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
    add_unknown_message(&memory, &listener->address->base, 2);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": address is a pipe: only socket_address is "
                             "supported");

    listener = outbound_listener(&memory, "outbound");
    listener->n_filter_chains = 0;
    assert_listener_rejected(&memory, listener, "Listener \"outbound\": no filter chains");
    listener = outbound_listener(&memory, "outbound");
    filter_chain_message *chains[] = {listener->filter_chains[0], listener->filter_chains[0]};
    listener->filter_chains = chains;
    listener->n_filter_chains = 2;
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": 2 filter chains: only one is supported");

    listener = outbound_listener(&memory, "outbound");
    listener->filter_chains[0]->n_filters = 0;
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": the filter chain has no network filter");
    listener->filter_chains[0]->n_filters = 1;
    listener->filter_chains[0]->filters[0] = network_filter(
        &memory, "envoy.filters.network.tcp_proxy",
        raw_any(&memory, "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", NULL, 0));
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": unknown network filter "
                             "\"envoy.filters.network.tcp_proxy\" (type "
                             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy): only "
                             "envoy.filters.network.http_connection_manager is supported");
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    listener->filter_chains[0]->filters[0] =
        network_filter(&memory, "envoy.filters.network.http_connection_manager",
                       raw_any(&memory,
                               "envoy.extensions.filters.network.http_connection_manager.v3."
                               "HttpConnectionManager",
                               garbage, sizeof(garbage)));
    assert_listener_rejected(
        &memory, listener,
        "Listener \"outbound\": network filter \"envoy.filters.network.http_connection_manager\": "
        "3 bytes do not decode as "
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    listener->filter_chains[0]->filters[0]->config_type_case =
        ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE__NOT_SET;
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": network filter "
                             "\"envoy.filters.network.http_connection_manager\" has no "
                             "typed_config");

    /* HTTP filters. */
    connection_manager_message *manager = http_manager(&memory, "outbound", "outbound", NULL);
    http_filter_message *fault =
        http_filter(&memory, "envoy.filters.http.fault",
                    raw_any(&memory, "envoy.extensions.filters.http.fault.v3.HTTPFault", NULL, 0));
    set_http_filters(&memory, manager, (http_filter_message *[]){fault, router_filter(&memory)}, 2);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": unknown HTTP filter "
                             "\"envoy.filters.http.fault\" (type "
                             "envoy.extensions.filters.http.fault.v3.HTTPFault), not optional");
    set_http_filters(&memory, manager,
                     (http_filter_message *[]){router_filter(&memory), rbac_filter(&memory)}, 2);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": HTTP filter \"envoy.filters.http.rbac\" "
                             "comes after the router filter, which must be last");
    set_http_filters(
        &memory, manager,
        (http_filter_message *[]){rbac_filter_with_rules(&memory), router_filter(&memory)}, 2);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": HTTP filter \"envoy.filters.http.rbac\": "
                             "RBAC rules are not enforced by atrium-proxy yet: refused rather "
                             "than served unenforced");
    set_http_filters(&memory, manager, NULL, 0);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": no router filter: the last HTTP filter must "
                             "be envoy.filters.http.router");
    http_filter_message *bad_router =
        http_filter(&memory, "envoy.filters.http.router",
                    raw_any(&memory, "envoy.extensions.filters.http.router.v3.Router", garbage, 3));
    set_http_filters(&memory, manager, &bad_router, 1);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": HTTP filter \"envoy.filters.http.router\": 3 "
                             "bytes do not decode as "
                             "envoy.extensions.filters.http.router.v3.Router");

    /* Routes: RDS over something other than ADS, scoped routes, neither. */
    manager = http_manager(&memory, "outbound", "outbound", NULL);
    manager->rds->config_source->config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER__NOT_SET;
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": rds.config_source is not ads: routes are "
                             "only fetched over ADS");
    manager->route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER__NOT_SET;
    add_unknown_message(&memory, &manager->base, 31);
    listener = socket_listener(&memory, "outbound", "127.0.0.1", 15001,
                               ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND, manager);
    assert_listener_rejected(&memory, listener,
                             "Listener \"outbound\": scoped_routes is not supported (rds and "
                             "route_config are)");

    /* Names. */
    listener = outbound_listener(&memory, "outbound");
    listener->name = pool_text(&memory, "other");
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound", &listener->base);
    assert_rejected(&set, "Listener \"outbound\": its name is \"other\": it must be the "
                          "resource's name");
    proxy_resource_set_clear(&set);
    listener = outbound_listener(&memory, "outbound");
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound", &listener->base);
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound", &listener->base);
    assert_rejected(&set, "Listener \"outbound\": received twice");
    proxy_resource_set_clear(&set);

    /* An error in an inline route table names the listener and the table. */
    listener = inbound_listener(&memory, 15006, "inbound|8080");
    route_message *split = route_to(&memory, "/", false, "x");
    set_weighted(&memory, split, (const char *const[]){"a", "b"}, (const uint32_t[]){0, 0}, 2);
    virtual_host_message *host =
        virtual_host(&memory, "inbound", (const char *[]){"*"}, 1, &split, 1);
    listener->filter_chains[0]->filters[0]->typed_config =
        pool_any(&memory, &http_manager(&memory, "inbound", NULL,
                                        route_configuration(&memory, "inbound", &host, 1))
                               ->base);
    assert_listener_rejected(&memory, listener,
                             "Listener \"inbound\": route_config \"inbound\", virtual host "
                             "\"inbound\", routes[0]: weighted_clusters: the total weight of 2 "
                             "clusters is 0");
    pool_free(&memory);
}

static void assert_cluster_rejected(cluster_message *cluster, const char *expected)
{
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_CLUSTER, cluster->name, &cluster->base);
    assert_rejected(&set, expected);
    proxy_resource_set_clear(&set);
}

static void test_cluster_rejections(void **state)
{
    (void)state;
    pool memory = {0};
    cluster_message *cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    cluster->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS;
    assert_cluster_rejected(cluster,
                            "Cluster \"greeter\": type STRICT_DNS is not supported: only EDS is");
    cluster->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC;
    assert_cluster_rejected(cluster,
                            "Cluster \"greeter\": type STATIC is not supported: only EDS is");
    cluster->cluster_discovery_type_case =
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE__NOT_SET;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": type STATIC (the default) is not "
                                     "supported: only EDS is");
    add_unknown_message(&memory, &cluster->base, 38);
    assert_cluster_rejected(cluster, "Cluster \"greeter\": cluster_type (a custom cluster type) "
                                     "is not supported: only type EDS is");

    cluster = eds_cluster(&memory, "greeter",
                          ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV, 1000);
    assert_cluster_rejected(cluster, "Cluster \"greeter\": lb_policy MAGLEV is not supported "
                                     "(ROUND_ROBIN, LEAST_REQUEST, RANDOM and RING_HASH are)");
    cluster->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": lb_policy CLUSTER_PROVIDED is not "
                                     "supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM and "
                                     "RING_HASH are)");
    cluster->lb_policy = (Envoy__Config__Cluster__V3__Cluster__LbPolicy)42;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": lb_policy 42 is not supported "
                                     "(ROUND_ROBIN, LEAST_REQUEST, RANDOM and RING_HASH are)");

    cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    cluster->eds_cluster_config = NULL;
    assert_cluster_rejected(
        cluster, "Cluster \"greeter\": an EDS cluster needs eds_cluster_config.eds_config");
    cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    cluster->eds_cluster_config->eds_config->config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER__NOT_SET;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": eds_cluster_config.eds_config is not "
                                     "ads: endpoints are only fetched over ADS");
    add_unknown_message(&memory, &cluster->eds_cluster_config->eds_config->base, 5); /* self */
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_CLUSTER, "greeter", &cluster->base);
    proxy_config_release(build_ok(&set));
    proxy_resource_set_clear(&set);

    cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    cluster->eds_cluster_config->service_name = pool_text(&memory, "greeter-eds");
    assert_cluster_rejected(cluster, "Cluster \"greeter\": eds_cluster_config.service_name "
                                     "\"greeter-eds\" differs from the cluster's name: not "
                                     "supported");
    cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    cluster->connect_timeout->seconds = -1;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": connect_timeout (-1 s 0 ns) is not a "
                                     "valid non-negative duration");
    cluster->connect_timeout->seconds = 5000000;
    assert_cluster_rejected(cluster, "Cluster \"greeter\": connect_timeout (5000000 s) is too "
                                     "long: at most 4294967295 ms");

    cluster = eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "greeter", &cluster->base);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "greeter", &cluster->base);
    assert_rejected(&set, "Cluster \"greeter\": received twice");
    proxy_resource_set_clear(&set);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "billing", &cluster->base);
    assert_rejected(&set, "Cluster \"billing\": its name is \"greeter\": it must be the "
                          "resource's name");
    proxy_resource_set_clear(&set);
    cluster->name = pool_text(&memory, "");
    add_message(&set, PROXY_RESOURCE_CLUSTER, "", &cluster->base);
    assert_rejected(&set, "Cluster \"\": no name");
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

static void assert_endpoints_rejected(pool *memory, const test_endpoint *endpoints, size_t count,
                                      const char *expected)
{
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_CLUSTER, "greeter",
                &eds_cluster(memory, "greeter", ROUND_ROBIN, 1000)->base);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "greeter",
                &load_assignment(memory, "greeter", endpoints, count)->base);
    assert_rejected(&set, expected);
    proxy_resource_set_clear(&set);
}

static void test_endpoint_rejections(void **state)
{
    (void)state;
    pool memory = {0};
    const test_endpoint hostname[] = {{"10.0.0.1", 80, 1, HEALTHY, "", 0},
                                      {"db.internal", 80, 1, HEALTHY, "", 0}};
    assert_endpoints_rejected(&memory, hostname, 2,
                              "ClusterLoadAssignment \"greeter\": "
                              "endpoints[0].lb_endpoints[1].endpoint.address \"db.internal\" is "
                              "not a numeric IPv4 or IPv6 address (hostnames are not resolved)");
    const test_endpoint port_zero[] = {{"10.0.0.1", 80, 1, HEALTHY, "a", 0},
                                       {"10.0.0.2", 0, 1, HEALTHY, "b", 0}};
    assert_endpoints_rejected(&memory, port_zero, 2,
                              "ClusterLoadAssignment \"greeter\": "
                              "endpoints[1].lb_endpoints[0].endpoint.address 10.0.0.2: port 0 is "
                              "out of range (1-65535)");
    const test_endpoint zone_suffix[] = {{"fe80::1%eth0", 80, 1, HEALTHY, "", 0}};
    assert_endpoints_rejected(&memory, zone_suffix, 1,
                              "ClusterLoadAssignment \"greeter\": "
                              "endpoints[0].lb_endpoints[0].endpoint.address \"fe80::1%eth0\" is "
                              "not a numeric IPv4 or IPv6 address (hostnames are not resolved)");

    /* Weight 0, and the same rejection when the cluster is not there. */
    proxy_resource_set set = {0};
    load_assignment_message *assignment = load_assignment(&memory, "orphan", hostname, 1);
    assignment->endpoints[0]->lb_endpoints[0]->load_balancing_weight = uint32_value(&memory, 0);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "orphan", &assignment->base);
    assert_rejected(&set, "ClusterLoadAssignment \"orphan\": endpoints[0].lb_endpoints[0] "
                          "(10.0.0.1): load_balancing_weight 0 (it must be at least 1)");
    proxy_resource_set_clear(&set);

    assignment = load_assignment(&memory, "orphan", hostname, 1);
    assignment->endpoints[0]->lb_endpoints[0]->host_identifier_case =
        ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER__NOT_SET;
    static const uint8_t endpoint_name[] = {2, 'e', '1'};
    add_unknown_field(&memory, &assignment->endpoints[0]->lb_endpoints[0]->base, 5,
                      PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, endpoint_name, 3);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "orphan", &assignment->base);
    assert_rejected(&set, "ClusterLoadAssignment \"orphan\": endpoints[0].lb_endpoints[0]: "
                          "endpoint_name is not supported, only endpoint");
    proxy_resource_set_clear(&set);

    const test_endpoint fine[] = {{"10.0.0.1", 80, 1, HEALTHY, "", 0}};
    add_message(&set, PROXY_RESOURCE_CLUSTER, "greeter",
                &eds_cluster(&memory, "greeter", ROUND_ROBIN, 1000)->base);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "greeter",
                &load_assignment(&memory, "greeter", fine, 1)->base);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "greeter",
                &load_assignment(&memory, "greeter", fine, 1)->base);
    assert_rejected(&set, "ClusterLoadAssignment \"greeter\": received twice");
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

/* RouteConfiguration "outbound" with one host "billing" holding route. */
static void assert_route_rejected(pool *memory, route_message *route, const char *expected)
{
    virtual_host_message *host = service_host(memory, "billing", &route, 1);
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(memory, "outbound", &host, 1)->base);
    assert_rejected(&set, expected);
    proxy_resource_set_clear(&set);
}

static void test_route_rejections(void **state)
{
    (void)state;
    pool memory = {0};
    static const uint8_t regex[] = {5, 0x12, 3, 'a', '.', '*'}; /* RegexMatcher{regex: "a.*"} */

    route_message *route = route_to(&memory, "/", false, "billing");
    header_matcher_message *header =
        NEW(&memory, header_matcher_message, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    header->name = pool_text(&memory, "x-user");
    add_unknown_field(&memory, &header->base, 11, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, regex,
                      sizeof(regex));
    add_header(&memory, route, header);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "header \"x-user\": safe_regex_match is not supported (present_match "
                          "and string_match are)");

    route = route_to(&memory, "/", false, "billing");
    header = header_string(&memory, "x-user", EXACT, "");
    header->string_match->match_pattern_case =
        ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN__NOT_SET;
    add_unknown_field(&memory, &header->string_match->base, 5, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                      regex, sizeof(regex));
    add_header(&memory, route, header);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "header \"x-user\": string_match.safe_regex is not supported");

    route = route_to(&memory, "/", false, "billing");
    add_header(&memory, route, header_string(&memory, "x-user", PREFIX, ""));
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "header \"x-user\": an empty string_match pattern");
    route = route_to(&memory, "/", false, "billing");
    add_header(&memory, route, header_string(&memory, "", EXACT, "a"));
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "headers[0] has no name");

    route = route_to(&memory, "/", false, "billing");
    set_weighted(&memory, route, (const char *const[]){"billing|a", "billing|b"},
                 (const uint32_t[]){0, 0}, 2);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "weighted_clusters: the total weight of 2 clusters is 0");
    route->route->weighted_clusters->clusters[1]->weight = NULL;
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "weighted_clusters: the total weight of 2 clusters is 0");
    set_weighted(&memory, route, (const char *const[]){"a", "b"}, (const uint32_t[]){UINT32_MAX, 1},
                 2);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "weighted_clusters: the total weight 4294967296 is over 4294967295");

    route = route_to(&memory, "/", false, "billing");
    route->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION__NOT_SET;
    add_unknown_message(&memory, &route->base, 3);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "action redirect is not supported (only route is)");

    route = route_to(&memory, "/", false, "billing");
    route->match->path_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER__NOT_SET;
    add_unknown_field(&memory, &route->match->base, 10, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, regex,
                      sizeof(regex));
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "match.safe_regex is not supported (prefix and path are)");

    route = route_to(&memory, "/", false, "billing");
    add_unknown_message(&memory, &route->match->base, 7);
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "match.query_parameters is not supported");

    route = route_to(&memory, "/", false, "billing");
    route->route->cluster_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER__NOT_SET;
    static const uint8_t header_name[] = {1, 'x'};
    add_unknown_field(&memory, &route->route->base, 2, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                      header_name, sizeof(header_name));
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "route.cluster_header is not supported (cluster and weighted_clusters "
                          "are)");

    route = route_to(&memory, "/", false, "billing");
    route->route->timeout = duration_ms(&memory, 0);
    route->route->timeout->seconds = -1;
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "route.timeout (-1 s 0 ns) is not a valid non-negative duration");

    route = route_to(&memory, "/", false, "billing");
    route->route->retry_policy = retry_policy(&memory, "5xx", 1, 100);
    route->route->retry_policy->per_try_timeout->nanos = 1000000000;
    assert_route_rejected(&memory, route,
                          "RouteConfiguration \"outbound\": virtual host \"billing\", routes[0]: "
                          "retry_policy.per_try_timeout (0 s 1000000000 ns) is not a valid "
                          "non-negative duration");

    /* A second route, in a host without a name: the path says which. */
    route_message *routes[] = {route_to(&memory, "/", false, "a"),
                               route_to(&memory, "/", false, "")};
    virtual_host_message *host = virtual_host(&memory, "", (const char *[]){"x"}, 1, routes, 2);
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(&memory, "outbound", &host, 1)->base);
    assert_rejected(&set, "RouteConfiguration \"outbound\": virtual_hosts[0].routes[1]: "
                          "route.cluster is empty");
    proxy_resource_set_clear(&set);

    /* Twice. */
    host = service_host(&memory, "billing", NULL, 0);
    add_message(&set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(&memory, "outbound", &host, 1)->base);
    add_message(&set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(&memory, "outbound", &host, 1)->base);
    assert_rejected(&set, "RouteConfiguration \"outbound\": received twice");
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

static void test_error_buffer(void **state)
{
    (void)state;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    proxy_resource_set set = {0};
    add_bytes(&set, PROXY_RESOURCE_CLUSTER, "a-rather-long-cluster-name", NULL, garbage, 3);
    char error[16];
    memset(error, 'x', sizeof(error));
    assert_null(proxy_config_build(&set, 1, error, sizeof(error)));
    assert_string_equal(error, "Cluster \"a-rath"); /* truncated, terminated */
    assert_null(proxy_config_build(&set, 1, NULL, 0));
    proxy_resource_set_clear(&set);
}

/* ---- tests: virtual host lookup ---- */

static const proxy_virtual_host *find(const proxy_route_table *table, const char *host)
{
    return proxy_route_table_find_host(table, host, strlen(host));
}

static void test_find_host(void **state)
{
    (void)state;
    pool memory = {0};
    route_message *route = route_to(&memory, "/", false, "c");
    struct {
        const char *name;
        const char *domains[3];
        size_t count;
    } hosts[] = {
        {"greeter", {"greeter", "greeter.default", "greeter:*"}, 3},
        {"billing", {"Billing"}, 1},
        {"wild", {"*.example.com"}, 1},
        {"deeper", {"*.api.example.com"}, 1},
        {"prefix", {"api.*"}, 1},
        {"longer-prefix", {"API.internal.*"}, 1},
        {"ipv6", {"[::1]"}, 1},
        {"alpha", {"alpha"}, 1},
        {"alpha-ports", {"alpha:*"}, 1},
        {"late", {"greeter", "[::1]"}, 2}, /* both taken: the first host keeps a domain */
        {"default", {"*"}, 1},
    };
    size_t count = sizeof(hosts) / sizeof(hosts[0]);
    virtual_host_message **messages = pool_alloc(&memory, count * sizeof(*messages));
    for (size_t i = 0; i < count; i++)
        messages[i] =
            virtual_host(&memory, hosts[i].name, hosts[i].domains, hosts[i].count, &route, 1);
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_ROUTE, "with-default",
                &route_configuration(&memory, "with-default", messages, count)->base);
    add_message(&set, PROXY_RESOURCE_ROUTE, "without-default",
                &route_configuration(&memory, "without-default", messages, 9)->base);
    proxy_config *config = build_ok(&set);
    const proxy_route_table *table = &config->route_tables[0];
    const proxy_route_table *strict = &config->route_tables[1];
    const proxy_virtual_host *by_name[sizeof(hosts) / sizeof(hosts[0])];
    for (size_t i = 0; i < count; i++)
        by_name[i] = &table->virtual_hosts[i];
    enum {
        GREETER,
        BILLING,
        WILD,
        DEEPER,
        PREFIX_HOST,
        LONGER_PREFIX,
        IPV6,
        ALPHA,
        ALPHA_PORTS,
        LATE,
        DEFAULT
    };

    static const struct {
        const char *host;
        int expected; /* -1: none (without a default) */
    } cases[] = {
        {"greeter", GREETER},
        {"GrEeTeR", GREETER},
        {"greeter.default", GREETER},
        {"greeter:8080", GREETER},       /* "greeter:*" */
        {"Greeter.Default:80", GREETER}, /* port stripped, then exact */
        {"billing", BILLING},            /* domains are matched case-insensitively */
        {"BILLING:443", BILLING},        /* port stripped */
        {"www.example.com", WILD},       /* "*suffix" */
        {"x.api.example.com", DEEPER},   /* the longest suffix wins */
        {"X.API.Example.COM", DEEPER},
        {".example.com", -1},               /* a wildcard matches at least one character */
        {"www.example.com:80", -1},         /* wildcards see the whole Host, as in Envoy */
        {"api.foo", PREFIX_HOST},           /* "prefix*" */
        {"api.internal.db", LONGER_PREFIX}, /* the longest prefix wins */
        {"api.", -1},
        {"[::1]:8080", IPV6},
        {"[::1]", IPV6},
        {"::1", -1}, /* a bare IPv6 address has no port to strip */
        {"alpha", ALPHA},
        {"alpha:80", ALPHA_PORTS}, /* "name:*" before the stripped exact match */
        {"alpha:", -1},
        {"unknown", -1},
        {"", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const proxy_virtual_host *found = find(table, cases[i].host);
        const proxy_virtual_host *expected =
            cases[i].expected >= 0 ? by_name[cases[i].expected] : by_name[DEFAULT];
        if (found != expected)
            fail_msg("\"%s\": found %s, expected %s", cases[i].host, found ? found->name : "none",
                     expected->name);
        found = find(strict, cases[i].host);
        expected = cases[i].expected >= 0 ? &strict->virtual_hosts[cases[i].expected] : NULL;
        if (found != expected)
            fail_msg("\"%s\" without a default: found %s, expected %s", cases[i].host,
                     found ? found->name : "none", expected ? expected->name : "none");
    }
    (void)LATE;
    /* The host is not NUL-terminated: only length bytes count. */
    assert_ptr_equal(proxy_route_table_find_host(table, "greeter.default.junk", 7),
                     by_name[GREETER]);
    assert_null(proxy_route_table_find_host(NULL, "greeter", 7));
    assert_null(proxy_route_table_find_host(strict, NULL, 0));
    proxy_config_release(config);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
}

/* ---- tests: weighted round robin ---- */

/* A snapshot with one cluster "c" of these endpoints. */
static proxy_config *cluster_snapshot(const test_endpoint *endpoints, size_t count)
{
    pool memory = {0};
    proxy_resource_set set = {0};
    add_message(&set, PROXY_RESOURCE_CLUSTER, "c",
                &eds_cluster(&memory, "c", ROUND_ROBIN, 1000)->base);
    add_message(&set, PROXY_RESOURCE_ENDPOINT, "c",
                &load_assignment(&memory, "c", endpoints, count)->base);
    proxy_config *config = build_ok(&set);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
    return config;
}

static void count_picks(proxy_cluster *cluster, size_t picks, size_t *counts)
{
    for (size_t i = 0; i < picks; i++) {
        const proxy_endpoint *endpoint = proxy_cluster_pick(cluster);
        assert_non_null(endpoint);
        assert_ptr_equal(endpoint, &cluster->endpoints[endpoint->index]);
        counts[endpoint->index]++;
    }
}

static void test_weighted_round_robin(void **state)
{
    (void)state;
    const test_endpoint endpoints[] = {
        {"10.0.0.1", 80, 5, HEALTHY, "", 0},   {"10.0.0.2", 80, 3, UNKNOWN, "", 0},
        {"10.0.0.3", 80, 2, HEALTHY, "", 0},   {"10.0.0.4", 80, 7, DRAINING, "", 0},
        {"10.0.0.5", 80, 4, UNHEALTHY, "", 0}, {"10.0.0.6", 80, 4, DEGRADED, "", 0},
        {"10.0.0.7", 80, 4, TIMEOUT, "", 0},
    };
    proxy_config *config = cluster_snapshot(endpoints, 7);
    proxy_cluster *cluster = &config->clusters[0];
    assert_int_equal(cluster->schedule_length, 10);
    size_t counts[7] = {0};
    count_picks(cluster, 1000, counts);
    assert_int_equal(counts[0], 500);
    assert_int_equal(counts[1], 300);
    assert_int_equal(counts[2], 200);
    for (size_t i = 3; i < 7; i++)
        assert_int_equal(counts[i], 0); /* never an unhealthy one */
    /* Every window of a whole schedule's length holds each weight exactly. */
    for (size_t start = 0; start < 10; start++) {
        size_t window[3] = {0};
        for (size_t i = 0; i < 10; i++)
            window[cluster->schedule[(start + i) % 10]]++;
        assert_int_equal(window[0], 5);
        assert_int_equal(window[1], 3);
        assert_int_equal(window[2], 2);
    }
    proxy_config_release(config);

    /* nginx's example: weights a=5, b=1, c=1 give a a b a c a a. */
    const test_endpoint nginx[] = {{"10.0.0.1", 80, 5, HEALTHY, "", 0},
                                   {"10.0.0.2", 80, 1, HEALTHY, "", 0},
                                   {"10.0.0.3", 80, 1, HEALTHY, "", 0}};
    config = cluster_snapshot(nginx, 3);
    static const uint32_t smooth[] = {0, 0, 1, 0, 2, 0, 0};
    assert_int_equal(config->clusters[0].schedule_length, 7);
    assert_memory_equal(config->clusters[0].schedule, smooth, sizeof(smooth));
    for (size_t i = 0; i < 14; i++)
        assert_int_equal(proxy_cluster_pick(&config->clusters[0])->index, smooth[i % 7]);
    proxy_config_release(config);

    /* A common divisor is taken out: 50/30/20 schedules like 5/3/2. */
    const test_endpoint divisible[] = {{"10.0.0.1", 80, 50, HEALTHY, "", 0},
                                       {"10.0.0.2", 80, 30, HEALTHY, "", 0},
                                       {"10.0.0.3", 80, 20, HEALTHY, "", 0}};
    config = cluster_snapshot(divisible, 3);
    assert_int_equal(config->clusters[0].schedule_length, 10);
    proxy_config_release(config);

    /* Equal weights: the plain round, in endpoint order. */
    const test_endpoint equal[] = {{"10.0.0.1", 80, 0, HEALTHY, "", 0},
                                   {"10.0.0.2", 80, 0, DRAINING, "", 0},
                                   {"10.0.0.3", 80, 0, HEALTHY, "", 0}};
    config = cluster_snapshot(equal, 3);
    assert_int_equal(config->clusters[0].schedule_length, 2);
    assert_int_equal(config->clusters[0].schedule[0], 0);
    assert_int_equal(config->clusters[0].schedule[1], 2);
    proxy_config_release(config);
}

static void test_schedule_capped(void **state)
{
    (void)state;
    /* Weights summing far above the cap are scaled down; each keeps a slot. */
    const test_endpoint huge[] = {{"10.0.0.1", 80, 3000000, HEALTHY, "", 0},
                                  {"10.0.0.2", 80, 1000000, HEALTHY, "", 0},
                                  {"10.0.0.3", 80, 1, HEALTHY, "", 0}};
    proxy_config *config = cluster_snapshot(huge, 3);
    proxy_cluster *cluster = &config->clusters[0];
    assert_true(cluster->schedule_length <= 4096 + 3);
    size_t counts[3] = {0};
    count_picks(cluster, cluster->schedule_length, counts);
    assert_int_equal(counts[2], 1);
    assert_true(counts[0] >= 3 * counts[1] - 3 && counts[0] <= 3 * counts[1] + 3);
    proxy_config_release(config);

    /* Many endpoints with mixed weights (the model allows 1-128). */
    test_endpoint *many = calloc(5000, sizeof(*many));
    char(*addresses)[32] = calloc(5000, 32);
    assert_non_null(many);
    assert_non_null(addresses);
    for (size_t i = 0; i < 5000; i++) {
        snprintf(addresses[i], 32, "10.%zu.%zu.%zu", i / 65536, i / 256 % 256, i % 256);
        many[i] = (test_endpoint){addresses[i], 8080, (uint32_t)(i % 128 + 1), HEALTHY, "", 0};
    }
    config = cluster_snapshot(many, 5000);
    double many_ms = last_build_ms;
    cluster = &config->clusters[0];
    assert_true(cluster->schedule_length >= 5000 && cluster->schedule_length <= 4096 + 5000);
    size_t *seen = calloc(5000, sizeof(*seen));
    assert_non_null(seen);
    count_picks(cluster, cluster->schedule_length, seen);
    for (size_t i = 0; i < 5000; i++)
        assert_true(seen[i] >= 1);
    printf("  a cluster of 5,000 endpoints with weights 1-128 (schedule of %zu) built in "
           "%.1f ms\n",
           cluster->schedule_length, many_ms);
    free(seen);
    free(many);
    free(addresses);
    proxy_config_release(config);
}

static void test_priorities_and_no_healthy(void **state)
{
    (void)state;
    /* Priority 1 is a fallback: unused while priority 0 has a healthy endpoint. */
    const test_endpoint tiers[] = {{"10.0.0.1", 80, 1, HEALTHY, "a", 0},
                                   {"10.0.0.2", 80, 1, HEALTHY, "b", 1},
                                   {"10.0.0.3", 80, 1, DRAINING, "a", 0}};
    proxy_config *config = cluster_snapshot(tiers, 3);
    size_t counts[3] = {0};
    count_picks(&config->clusters[0], 100, counts);
    assert_int_equal(counts[0], 100);
    proxy_config_release(config);
    const test_endpoint fallback[] = {{"10.0.0.1", 80, 1, UNHEALTHY, "a", 0},
                                      {"10.0.0.2", 80, 1, HEALTHY, "b", 1}};
    config = cluster_snapshot(fallback, 2);
    assert_int_equal(proxy_cluster_pick(&config->clusters[0])->index, 1);
    proxy_config_release(config);

    const test_endpoint draining[] = {{"10.0.0.1", 80, 1, DRAINING, "", 0},
                                      {"10.0.0.2", 80, 1, UNHEALTHY, "", 0}};
    config = cluster_snapshot(draining, 2);
    assert_int_equal(config->clusters[0].endpoint_count, 2);
    assert_int_equal(config->clusters[0].schedule_length, 0);
    assert_null(config->clusters[0].schedule);
    assert_null(proxy_cluster_pick(&config->clusters[0]));
    proxy_config_release(config);
    config = cluster_snapshot(NULL, 0);
    assert_int_equal(config->clusters[0].endpoint_count, 0);
    assert_string_equal(config->clusters[0].endpoints_version, "v-c");
    assert_null(proxy_cluster_pick(&config->clusters[0]));
    assert_null(proxy_cluster_pick(NULL));
    proxy_config_release(config);
}

typedef struct picker {
    proxy_cluster *cluster;
    size_t counts[3];
} picker;

static void *pick_many(void *argument)
{
    picker *self = argument;
    for (size_t i = 0; i < 25000; i++)
        self->counts[proxy_cluster_pick(self->cluster)->index]++;
    return NULL;
}

static void test_pick_from_threads(void **state)
{
    (void)state;
    const test_endpoint endpoints[] = {{"10.0.0.1", 80, 5, HEALTHY, "", 0},
                                       {"10.0.0.2", 80, 3, HEALTHY, "", 0},
                                       {"10.0.0.3", 80, 2, HEALTHY, "", 0}};
    proxy_config *config = cluster_snapshot(endpoints, 3);
    picker pickers[4];
    pthread_t threads[4];
    for (size_t i = 0; i < 4; i++) {
        pickers[i] = (picker){.cluster = &config->clusters[0]};
        assert_int_equal(pthread_create(&threads[i], NULL, pick_many, &pickers[i]), 0);
    }
    size_t totals[3] = {0};
    for (size_t i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        for (size_t e = 0; e < 3; e++)
            totals[e] += pickers[i].counts[e];
    }
    /* 100,000 picks are 10,000 whole schedules, whatever the interleaving. */
    assert_int_equal(totals[0], 50000);
    assert_int_equal(totals[1], 30000);
    assert_int_equal(totals[2], 20000);
    proxy_config_release(config);
}

/* ---- tests: references ---- */

static void test_retain_release(void **state)
{
    (void)state;
    pool memory = {0};
    proxy_resource_set set = {0};
    build_mesh(&memory, &set);
    proxy_config *config = build_ok(&set);
    proxy_resource_set_clear(&set);
    pool_free(&memory);
    assert_ptr_equal(proxy_config_retain(config), config);
    assert_ptr_equal(proxy_config_retain(config), config);
    assert_int_equal(atomic_load(&config->references), 3);
    proxy_config_release(config);
    proxy_config_release(config);
    assert_int_equal(atomic_load(&config->references), 1);
    /* Still whole: a request started on it finishes on it. */
    assert_non_null(proxy_cluster_pick(&config->clusters[0]));
    assert_string_equal(proxy_config_find_listener(config, "outbound")->name, "outbound");
    proxy_config_release(config); /* the last: freed (ASan reports a leak otherwise) */
    proxy_config_release(NULL);
}

/* ---- tests: scale ---- */

static void test_thousand_services(void **state)
{
    (void)state;
    enum { SERVICES = 1000 };
    pool memory = {0};
    proxy_resource_set set = {0};
    virtual_host_message **hosts = pool_alloc(&memory, SERVICES * sizeof(*hosts));
    for (size_t s = 0; s < SERVICES; s++) {
        char name[32];
        snprintf(name, sizeof(name), "service-%04zu", s);
        add_message(&set, PROXY_RESOURCE_CLUSTER, name,
                    &eds_cluster(&memory, name, ROUND_ROBIN, 1000)->base);
        char addresses[3][32];
        test_endpoint endpoints[3];
        for (size_t e = 0; e < 3; e++) {
            snprintf(addresses[e], sizeof(addresses[e]), "10.%zu.%zu.%zu", s / 256, s % 256, e + 1);
            endpoints[e] = (test_endpoint){
                addresses[e], 8080, (uint32_t)e + 1, HEALTHY, e == 2 ? "zone-b" : "zone-a", 0};
        }
        add_message(&set, PROXY_RESOURCE_ENDPOINT, name,
                    &load_assignment(&memory, name, endpoints, 3)->base);
        add_message(&set, PROXY_RESOURCE_LISTENER, name, &api_listener(&memory, name)->base);
        route_message *routes[2] = {route_to(&memory, "/api/", false, name),
                                    route_to(&memory, "/", false, name)};
        add_header(&memory, routes[0], header_string(&memory, "x-version", EXACT, "2"));
        set_timeout(&memory, routes[0], 3000);
        hosts[s] = service_host(&memory, name, routes, 2);
        add_message(&set, PROXY_RESOURCE_ROUTE, name,
                    &route_configuration(&memory, name, &hosts[s], 1)->base);
    }
    add_message(&set, PROXY_RESOURCE_ROUTE, "outbound",
                &route_configuration(&memory, "outbound", hosts, SERVICES)->base);
    add_message(&set, PROXY_RESOURCE_LISTENER, "outbound",
                &outbound_listener(&memory, "outbound")->base);
    add_message(&set, PROXY_RESOURCE_CLUSTER, "inbound|8080",
                &eds_cluster(&memory, "inbound|8080", ROUND_ROBIN, 1000)->base);
    add_message(&set, PROXY_RESOURCE_LISTENER, "inbound",
                &inbound_listener(&memory, 15006, "inbound|8080")->base);
    pool_free(&memory);
    size_t bytes = 0;
    for (int type = 0; type < PROXY_RESOURCE_TYPE_COUNT; type++)
        for (size_t i = 0; i < set.counts[type]; i++)
            bytes += set.items[type][i].length;

    proxy_config *config = build_ok(&set);
    double build_ms = last_build_ms;

    assert_int_equal(config->cluster_count, SERVICES + 1);
    assert_int_equal(config->listener_count, 2);
    assert_int_equal(config->route_table_count, SERVICES + 1);
    const proxy_listener *outbound = proxy_config_find_listener(config, "outbound");
    const proxy_route_table *table = outbound->route_table;
    assert_non_null(table);
    assert_string_equal(table->name, "outbound");
    assert_int_equal(table->virtual_host_count, SERVICES);
    char host[64];
    for (size_t s = 0; s < SERVICES; s++) {
        /* The forms a caller may write: name, NAME.namespace, name:port. */
        static const char *const prefixes[] = {"service-", "SERVICE-", "service-"};
        static const char *const suffixes[] = {"", ".default", ":8080"};
        for (size_t f = 0; f < 3; f++) {
            int length = snprintf(host, sizeof(host), "%s%04zu%s", prefixes[f], s, suffixes[f]);
            const proxy_virtual_host *found =
                proxy_route_table_find_host(table, host, (size_t)length);
            assert_ptr_equal(found, &table->virtual_hosts[s]);
        }
        const proxy_route *api_route = &table->virtual_hosts[s].routes[0];
        snprintf(host, sizeof(host), "service-%04zu", s);
        assert_ptr_equal(api_route->clusters[0].cluster, proxy_config_find_cluster(config, host));
        assert_int_equal(api_route->timeout_ms, 3000);
        assert_int_equal(api_route->clusters[0].cluster->schedule_length, 6);
    }
    /* The hot path: a Host header with a port to a virtual host, then an endpoint. */
    enum { LOOKUPS = 1000000 };
    static char host_headers[SERVICES][24];
    static size_t lengths[SERVICES];
    for (size_t s = 0; s < SERVICES; s++)
        lengths[s] =
            (size_t)snprintf(host_headers[s], sizeof(host_headers[s]), "Service-%04zu:80", s);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t hits = 0;
    for (size_t i = 0; i < LOOKUPS; i++) {
        const proxy_virtual_host *found =
            proxy_route_table_find_host(table, host_headers[i % SERVICES], lengths[i % SERVICES]);
        hits += proxy_cluster_pick(found->routes[1].clusters[0].cluster) != NULL;
    }
    double lookup_ms = milliseconds_since(&start);
    assert_int_equal(hits, LOOKUPS);

    printf("  %d services (%zu resources, %zu bytes): built in %.1f ms; host lookup + pick "
           "%.0f ns each\n",
           SERVICES, set.counts[0] + set.counts[1] + set.counts[2] + set.counts[3], bytes, build_ms,
           lookup_ms * 1e6 / LOOKUPS);
    clock_gettime(CLOCK_MONOTONIC, &start);
    proxy_config_release(config);
    printf("  released in %.1f ms\n", milliseconds_since(&start));
    proxy_resource_set_clear(&set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_urls),
        cmocka_unit_test(test_resource_set_clear),
        cmocka_unit_test(test_mesh_snapshot),
        cmocka_unit_test(test_api_listeners_skipped),
        cmocka_unit_test(test_unresolved_references),
        cmocka_unit_test(test_empty_set),
        cmocka_unit_test(test_accepted_variants),
        cmocka_unit_test(test_undecodable_resources),
        cmocka_unit_test(test_listener_rejections),
        cmocka_unit_test(test_cluster_rejections),
        cmocka_unit_test(test_endpoint_rejections),
        cmocka_unit_test(test_route_rejections),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_find_host),
        cmocka_unit_test(test_weighted_round_robin),
        cmocka_unit_test(test_schedule_capped),
        cmocka_unit_test(test_priorities_and_no_healthy),
        cmocka_unit_test(test_pick_from_threads),
        cmocka_unit_test(test_retain_release),
        cmocka_unit_test(test_thousand_services),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
