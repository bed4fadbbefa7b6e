/*
 * golden_checks.c — what the xDS golden tests (test_proto_golden.c) assert
 * about each fixture in tests/proto/fixtures, the types that travel inside
 * google.protobuf.Any there, and three messages built from scratch in C.
 *
 * Every check asserts, field by field, each value its fixture sets; values
 * inside an Any are unpacked into our type and asserted too. Map entries are
 * looked up by key: the upstream encoder is free to write them in any order.
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "golden_checks.h"

#include "any.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/core.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "envoy/type/matcher/v3/matcher.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <stdlib.h>
#include <string.h>

/* ---- shorter names for the generated types ---- */

typedef Google__Protobuf__Any Any;
typedef Google__Protobuf__Duration Duration;
typedef Google__Protobuf__Struct Struct;
typedef Google__Protobuf__Struct__FieldsEntry StructEntry;
typedef Google__Protobuf__Value Value;
typedef Google__Rpc__Status Status;

typedef Envoy__Config__Core__V3__Address Address;
typedef Envoy__Config__Core__V3__AggregatedConfigSource AggregatedConfigSource;
typedef Envoy__Config__Core__V3__ConfigSource ConfigSource;
typedef Envoy__Config__Core__V3__DataSource DataSource;
typedef Envoy__Config__Core__V3__Locality Locality;
typedef Envoy__Config__Core__V3__Metadata__FilterMetadataEntry FilterMetadataEntry;
typedef Envoy__Config__Core__V3__Node Node;
typedef Envoy__Config__Core__V3__SocketAddress SocketAddress;
typedef Envoy__Config__Core__V3__TransportSocket TransportSocket;

typedef Envoy__Config__Listener__V3__ApiListener ApiListener;
typedef Envoy__Config__Listener__V3__Filter NetworkFilter;
typedef Envoy__Config__Listener__V3__FilterChain FilterChain;
typedef Envoy__Config__Listener__V3__Listener Listener;

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
    HttpConnectionManager;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter HttpFilter;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds Rds;
typedef Envoy__Extensions__Filters__Http__Router__V3__Router Router;
typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBAC RbacFilter;

typedef Envoy__Config__Rbac__V3__RBAC Rbac;
typedef Envoy__Config__Rbac__V3__RBAC__PoliciesEntry RbacPolicyEntry;
typedef Envoy__Config__Rbac__V3__Policy RbacPolicy;
typedef Envoy__Config__Rbac__V3__Permission Permission;
typedef Envoy__Config__Rbac__V3__Principal Principal;

typedef Envoy__Config__Route__V3__HeaderMatcher HeaderMatcher;
typedef Envoy__Config__Route__V3__RetryPolicy RetryPolicy;
typedef Envoy__Config__Route__V3__Route Route;
typedef Envoy__Config__Route__V3__RouteAction RouteAction;
typedef Envoy__Config__Route__V3__RouteAction__HashPolicy HashPolicy;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Config__Route__V3__RouteMatch RouteMatch;
typedef Envoy__Config__Route__V3__VirtualHost VirtualHost;
typedef Envoy__Config__Route__V3__WeightedCluster__ClusterWeight ClusterWeight;
typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcher;

typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds Thresholds;
typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Cluster__V3__OutlierDetection OutlierDetection;

typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment ClusterLoadAssignment;
typedef Envoy__Config__Endpoint__V3__Endpoint Endpoint;
typedef Envoy__Config__Endpoint__V3__LbEndpoint LbEndpoint;
typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints LocalityLbEndpoints;

typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext
    CertificateValidationContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext CommonTlsContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
    CombinedValidationContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext DownstreamTlsContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig SdsSecretConfig;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher SubjectAltNameMatcher;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate TlsCertificate;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext UpstreamTlsContext;

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest DeltaDiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
    InitialResourceVersionEntry;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse DeltaDiscoveryResponse;
typedef Envoy__Service__Discovery__V3__DiscoveryRequest DiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse DiscoveryResponse;
typedef Envoy__Service__Discovery__V3__Resource Resource;

/* ---- helpers shared by the checks ---- */

/* Unpacks any (whose type URL the caller has asserted) into our type, or
 * fails the test with any_unpack's reason. Free with
 * protobuf_c_message_free_unpacked(message, NULL). */
static ProtobufCMessage *unpack_any(const Any *any, const ProtobufCMessageDescriptor *descriptor)
{
    char error[256];
    assert_non_null(any);
    ProtobufCMessage *message = any_unpack(any, descriptor, error, sizeof(error));
    if (message == NULL)
        fail_msg("cannot unpack Any: %s", error);
    return message;
}

/* Map lookups by key (protobuf-c keeps a map as repeated key/value entries);
 * a missing key fails the test. */
static const Value *struct_field(const Struct *object, const char *key)
{
    for (size_t i = 0; i < object->n_fields; i++) {
        if (strcmp(object->fields[i]->key, key) == 0)
            return object->fields[i]->value;
    }
    fail_msg("Struct has no field \"%s\"", key);
    return NULL;
}

static const Struct *filter_metadata(const Envoy__Config__Core__V3__Metadata *metadata,
                                     const char *key)
{
    for (size_t i = 0; i < metadata->n_filter_metadata; i++) {
        if (strcmp(metadata->filter_metadata[i]->key, key) == 0)
            return metadata->filter_metadata[i]->value;
    }
    fail_msg("Metadata has no filter_metadata \"%s\"", key);
    return NULL;
}

static const RbacPolicy *rbac_policy(const Rbac *rbac, const char *key)
{
    for (size_t i = 0; i < rbac->n_policies; i++) {
        if (strcmp(rbac->policies[i]->key, key) == 0)
            return rbac->policies[i]->value;
    }
    fail_msg("RBAC has no policy \"%s\"", key);
    return NULL;
}

static const char *initial_resource_version(const DeltaDiscoveryRequest *request, const char *key)
{
    for (size_t i = 0; i < request->n_initial_resource_versions; i++) {
        if (strcmp(request->initial_resource_versions[i]->key, key) == 0)
            return request->initial_resource_versions[i]->value;
    }
    fail_msg("DeltaDiscoveryRequest has no initial_resource_versions \"%s\"", key);
    return NULL;
}

/* `ads {}` and `resource_api_version: V3`, which nearly every fixture uses;
 * initial_fetch_timeout is asserted by the callers whose fixture sets it. */
static void check_ads_v3(const ConfigSource *source)
{
    assert_non_null(source);
    assert_int_equal(source->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_non_null(source->ads);
    assert_int_equal(source->resource_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
}

/* An SdsSecretConfig: name, and sds_config `ads {}` over V3. */
static void check_sds_over_ads(const SdsSecretConfig *config, const char *name)
{
    assert_non_null(config);
    assert_string_equal(config->name, name);
    check_ads_v3(config->sds_config);
}

/* The terminal HTTP filter every HCM in the fixtures ends with. */
static void check_router_filter(const HttpFilter *filter)
{
    assert_string_equal(filter->name, "envoy.filters.http.router");
    assert_int_equal(
        filter->config_type_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(filter->typed_config->type_url,
                        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    /* Router has no fields: it must unpack, and there is nothing more to assert. */
    ProtobufCMessage *router = unpack_any(
        filter->typed_config, &envoy__extensions__filters__http__router__v3__router__descriptor);
    protobuf_c_message_free_unpacked(router, NULL);
}

/* A Struct value holding a string. */
static void check_string_value(const Value *value, const char *expected)
{
    assert_int_equal(value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    assert_string_equal(value->string_value, expected);
}

/* ---- listeners ---- */

static void check_listener_sidecar_outbound(const ProtobufCMessage *message)
{
    const Listener *listener = (const Listener *)message;
    assert_string_equal(listener->name, "outbound");

    assert_non_null(listener->address);
    assert_int_equal(listener->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    const SocketAddress *socket_address = listener->address->socket_address;
    assert_int_equal(socket_address->protocol,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP);
    assert_string_equal(socket_address->address, "127.0.0.1");
    assert_int_equal(socket_address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(socket_address->port_value, 15001);

    assert_int_equal(listener->traffic_direction,
                     ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND);

    assert_int_equal(listener->n_filter_chains, 1);
    const FilterChain *chain = listener->filter_chains[0];
    assert_string_equal(chain->name, "outbound-http");
    assert_int_equal(chain->n_filters, 1);
    const NetworkFilter *filter = chain->filters[0];
    assert_string_equal(filter->name, "envoy.filters.network.http_connection_manager");
    assert_int_equal(filter->config_type_case,
                     ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        filter->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager");

    HttpConnectionManager *hcm = (HttpConnectionManager *)unpack_any(
        filter->typed_config,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_int_equal(
        hcm->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO);
    assert_string_equal(hcm->stat_prefix, "outbound_0.0.0.0_15001");
    assert_int_equal(
        hcm->route_specifier_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
    check_ads_v3(hcm->rds->config_source);
    assert_non_null(hcm->rds->config_source->initial_fetch_timeout);
    assert_int_equal(hcm->rds->config_source->initial_fetch_timeout->seconds, 15);
    assert_int_equal(hcm->rds->config_source->initial_fetch_timeout->nanos, 0);
    assert_string_equal(hcm->rds->route_config_name, "outbound");
    assert_int_equal(hcm->n_http_filters, 1);
    check_router_filter(hcm->http_filters[0]);
    assert_non_null(hcm->use_remote_address);
    assert_false(hcm->use_remote_address->value);
    assert_non_null(hcm->generate_request_id);
    assert_true(hcm->generate_request_id->value);
    protobuf_c_message_free_unpacked(&hcm->base, NULL);
}

static void check_listener_api_grpc(const ProtobufCMessage *message)
{
    const Listener *listener = (const Listener *)message;
    assert_string_equal(listener->name, "reviews");

    assert_non_null(listener->api_listener);
    const Any *any = listener->api_listener->api_listener;
    assert_non_null(any);
    assert_string_equal(
        any->type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager");

    HttpConnectionManager *hcm = (HttpConnectionManager *)unpack_any(
        any,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_int_equal(
        hcm->route_specifier_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
    check_ads_v3(hcm->rds->config_source);
    assert_string_equal(hcm->rds->route_config_name, "reviews");
    assert_int_equal(hcm->n_http_filters, 1);
    check_router_filter(hcm->http_filters[0]);
    protobuf_c_message_free_unpacked(&hcm->base, NULL);
}

/* The RBAC HTTP filter of listener_inbound_mtls: DENY callers outside the
 * default namespace. */
static void check_inbound_rbac_filter(const HttpFilter *filter)
{
    assert_string_equal(filter->name, "envoy.filters.http.rbac");
    assert_int_equal(
        filter->config_type_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(filter->typed_config->type_url,
                        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC");

    RbacFilter *config = (RbacFilter *)unpack_any(
        filter->typed_config, &envoy__extensions__filters__http__rbac__v3__rbac__descriptor);
    const Rbac *rules = config->rules;
    assert_non_null(rules);
    assert_int_equal(rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY);
    assert_int_equal(rules->n_policies, 1);
    const RbacPolicy *policy = rbac_policy(rules, "deny-untrusted-namespaces");

    assert_int_equal(policy->n_permissions, 1);
    assert_int_equal(policy->permissions[0]->rule_case,
                     ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY);
    assert_true(policy->permissions[0]->any);

    assert_int_equal(policy->n_principals, 1);
    const Principal *not_id = policy->principals[0];
    assert_int_equal(not_id->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID);
    assert_int_equal(not_id->not_id->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    const StringMatcher *name = not_id->not_id->authenticated->principal_name;
    assert_non_null(name);
    assert_int_equal(name->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(name->prefix, "spiffe://atrium.local/ns/default/");
    protobuf_c_message_free_unpacked(&config->base, NULL);
}

static void check_listener_inbound_mtls(const ProtobufCMessage *message)
{
    const Listener *listener = (const Listener *)message;
    assert_string_equal(listener->name, "inbound");

    assert_non_null(listener->address);
    assert_int_equal(listener->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    const SocketAddress *socket_address = listener->address->socket_address;
    assert_string_equal(socket_address->address, "0.0.0.0");
    assert_int_equal(socket_address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(socket_address->port_value, 15006);

    assert_int_equal(listener->traffic_direction,
                     ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);

    assert_int_equal(listener->n_filter_chains, 1);
    const FilterChain *chain = listener->filter_chains[0];
    assert_string_equal(chain->name, "inbound-mtls-http");

    /* transport_socket: DownstreamTlsContext */
    const TransportSocket *socket = chain->transport_socket;
    assert_non_null(socket);
    assert_string_equal(socket->name, "envoy.transport_sockets.tls");
    assert_int_equal(socket->config_type_case,
                     ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        socket->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext");
    DownstreamTlsContext *tls = (DownstreamTlsContext *)unpack_any(
        socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_non_null(tls->require_client_certificate);
    assert_true(tls->require_client_certificate->value);
    const CommonTlsContext *common = tls->common_tls_context;
    assert_non_null(common);
    assert_int_equal(common->n_tls_certificate_sds_secret_configs, 1);
    check_sds_over_ads(common->tls_certificate_sds_secret_configs[0], "default");
    assert_int_equal(
        common->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT);
    const CombinedValidationContext *combined = common->combined_validation_context;
    const CertificateValidationContext *validation = combined->default_validation_context;
    assert_non_null(validation);
    assert_int_equal(validation->n_match_typed_subject_alt_names, 1);
    const SubjectAltNameMatcher *san = validation->match_typed_subject_alt_names[0];
    assert_int_equal(
        san->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_non_null(san->matcher);
    assert_int_equal(san->matcher->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(san->matcher->prefix, "spiffe://atrium.local/");
    check_sds_over_ads(combined->validation_context_sds_secret_config, "ROOTCA");
    assert_int_equal(common->n_alpn_protocols, 2);
    assert_string_equal(common->alpn_protocols[0], "h2");
    assert_string_equal(common->alpn_protocols[1], "http/1.1");
    protobuf_c_message_free_unpacked(&tls->base, NULL);

    /* filters: HttpConnectionManager with RBAC then router */
    assert_int_equal(chain->n_filters, 1);
    const NetworkFilter *filter = chain->filters[0];
    assert_string_equal(filter->name, "envoy.filters.network.http_connection_manager");
    assert_int_equal(filter->config_type_case,
                     ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        filter->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager");
    HttpConnectionManager *hcm = (HttpConnectionManager *)unpack_any(
        filter->typed_config,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_int_equal(
        hcm->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2);
    assert_string_equal(hcm->stat_prefix, "inbound_0.0.0.0_9080");
    assert_int_equal(
        hcm->route_specifier_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
    check_ads_v3(hcm->rds->config_source);
    assert_string_equal(hcm->rds->route_config_name, "inbound|9080||reviews.default");
    assert_int_equal(hcm->n_http_filters, 2);
    check_inbound_rbac_filter(hcm->http_filters[0]);
    check_router_filter(hcm->http_filters[1]);
    assert_non_null(hcm->use_remote_address);
    assert_false(hcm->use_remote_address->value);
    assert_non_null(hcm->generate_request_id);
    assert_false(hcm->generate_request_id->value);
    protobuf_c_message_free_unpacked(&hcm->base, NULL);
}

/* ---- routes ---- */

static void check_route_reviews_api(const Route *route)
{
    assert_string_equal(route->name, "reviews-api");

    const RouteMatch *match = route->match;
    assert_non_null(match);
    assert_int_equal(match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    assert_string_equal(match->prefix, "/api");
    assert_non_null(match->case_sensitive);
    assert_false(match->case_sensitive->value);
    assert_int_equal(match->n_headers, 4);

    const HeaderMatcher *canary = match->headers[0];
    assert_string_equal(canary->name, "x-atrium-canary");
    assert_int_equal(canary->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH);
    assert_int_equal(canary->string_match->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(canary->string_match->exact, "true");

    const HeaderMatcher *content_type = match->headers[1];
    assert_string_equal(content_type->name, "content-type");
    assert_int_equal(content_type->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH);
    assert_int_equal(content_type->string_match->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(content_type->string_match->prefix, "application/grpc");

    const HeaderMatcher *request_id = match->headers[2];
    assert_string_equal(request_id->name, "x-request-id");
    assert_int_equal(
        request_id->header_match_specifier_case,
        ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH);
    assert_true(request_id->present_match);

    const HeaderMatcher *user_agent = match->headers[3];
    assert_string_equal(user_agent->name, "user-agent");
    assert_int_equal(user_agent->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH);
    assert_int_equal(user_agent->string_match->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS);
    assert_string_equal(user_agent->string_match->contains, "bot");
    assert_true(user_agent->string_match->ignore_case);
    assert_true(user_agent->invert_match);

    assert_int_equal(route->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
    const RouteAction *action = route->route;
    assert_int_equal(action->cluster_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS);
    assert_int_equal(action->weighted_clusters->n_clusters, 2);
    const ClusterWeight *v1 = action->weighted_clusters->clusters[0];
    assert_string_equal(v1->name, "reviews|version=v1");
    assert_non_null(v1->weight);
    assert_int_equal(v1->weight->value, 90);
    const ClusterWeight *v2 = action->weighted_clusters->clusters[1];
    assert_string_equal(v2->name, "reviews|version=v2");
    assert_non_null(v2->weight);
    assert_int_equal(v2->weight->value, 10);

    assert_non_null(action->timeout);
    assert_int_equal(action->timeout->seconds, 2);
    assert_int_equal(action->timeout->nanos, 0);

    const RetryPolicy *retry = action->retry_policy;
    assert_non_null(retry);
    assert_string_equal(retry->retry_on, "5xx,connect-failure,retriable-status-codes");
    assert_non_null(retry->num_retries);
    assert_int_equal(retry->num_retries->value, 3);
    assert_non_null(retry->per_try_timeout);
    assert_int_equal(retry->per_try_timeout->seconds, 0);
    assert_int_equal(retry->per_try_timeout->nanos, 500000000);
    assert_int_equal(retry->n_retriable_status_codes, 1);
    assert_int_equal(retry->retriable_status_codes[0], 503);
    assert_non_null(retry->retry_back_off);
    assert_non_null(retry->retry_back_off->base_interval);
    assert_int_equal(retry->retry_back_off->base_interval->seconds, 0);
    assert_int_equal(retry->retry_back_off->base_interval->nanos, 25000000);
    assert_non_null(retry->retry_back_off->max_interval);
    assert_int_equal(retry->retry_back_off->max_interval->seconds, 0);
    assert_int_equal(retry->retry_back_off->max_interval->nanos, 250000000);

    assert_int_equal(action->n_hash_policy, 2);
    const HashPolicy *by_header = action->hash_policy[0];
    assert_int_equal(by_header->policy_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER);
    assert_string_equal(by_header->header->header_name, "x-user-id");
    const HashPolicy *by_filter_state = action->hash_policy[1];
    assert_int_equal(
        by_filter_state->policy_specifier_case,
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_FILTER_STATE);
    assert_string_equal(by_filter_state->filter_state->key, "io.grpc.channel_id");
    assert_true(by_filter_state->terminal);

    assert_non_null(action->max_stream_duration);
    const Duration *max_stream_duration = action->max_stream_duration->max_stream_duration;
    assert_non_null(max_stream_duration);
    assert_int_equal(max_stream_duration->seconds, 30);
    assert_int_equal(max_stream_duration->nanos, 0);
    const Duration *grpc_timeout_header_max = action->max_stream_duration->grpc_timeout_header_max;
    assert_non_null(grpc_timeout_header_max);
    assert_int_equal(grpc_timeout_header_max->seconds, 10);
    assert_int_equal(grpc_timeout_header_max->nanos, 0);
}

static void check_route_weighted_retry(const ProtobufCMessage *message)
{
    const RouteConfiguration *config = (const RouteConfiguration *)message;
    assert_string_equal(config->name, "reviews");
    assert_int_equal(config->n_virtual_hosts, 1);

    const VirtualHost *host = config->virtual_hosts[0];
    assert_string_equal(host->name, "reviews.default.svc:9080");
    assert_int_equal(host->n_domains, 3);
    assert_string_equal(host->domains[0], "reviews");
    assert_string_equal(host->domains[1], "reviews.default");
    assert_string_equal(host->domains[2], "reviews:*");

    assert_int_equal(host->n_routes, 2);
    check_route_reviews_api(host->routes[0]);

    const Route *health = host->routes[1];
    assert_string_equal(health->name, "reviews-health");
    assert_non_null(health->match);
    assert_int_equal(health->match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH);
    assert_string_equal(health->match->path, "/health");
    assert_int_equal(health->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
    assert_int_equal(health->route->cluster_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER);
    assert_string_equal(health->route->cluster, "reviews");

    const RetryPolicy *retry = host->retry_policy;
    assert_non_null(retry);
    assert_string_equal(retry->retry_on, "connect-failure,refused-stream,unavailable");
    assert_non_null(retry->num_retries);
    assert_int_equal(retry->num_retries->value, 2);
    assert_non_null(retry->per_try_timeout);
    assert_int_equal(retry->per_try_timeout->seconds, 1);
    assert_int_equal(retry->per_try_timeout->nanos, 0);
}

/* ---- clusters ---- */

/* The UpstreamTlsContext of cluster_eds_ring_hash: SDS certificate and CA. */
static void check_ring_hash_upstream_tls(const TransportSocket *socket)
{
    assert_non_null(socket);
    assert_string_equal(socket->name, "envoy.transport_sockets.tls");
    assert_int_equal(socket->config_type_case,
                     ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        socket->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    UpstreamTlsContext *tls = (UpstreamTlsContext *)unpack_any(
        socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(tls->sni, "outbound_.9080_._.reviews.default.svc.atrium.local");
    const CommonTlsContext *common = tls->common_tls_context;
    assert_non_null(common);
    assert_int_equal(common->n_tls_certificate_sds_secret_configs, 1);
    check_sds_over_ads(common->tls_certificate_sds_secret_configs[0], "default");
    assert_int_equal(
        common->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG);
    check_sds_over_ads(common->validation_context_sds_secret_config, "ROOTCA");
    assert_int_equal(common->n_alpn_protocols, 1);
    assert_string_equal(common->alpn_protocols[0], "h2");
    protobuf_c_message_free_unpacked(&tls->base, NULL);
}

static void check_cluster_eds_ring_hash(const ProtobufCMessage *message)
{
    const Cluster *cluster = (const Cluster *)message;
    assert_string_equal(cluster->name, "reviews");
    assert_int_equal(cluster->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(cluster->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(cluster->eds_cluster_config);
    check_ads_v3(cluster->eds_cluster_config->eds_config);
    assert_string_equal(cluster->eds_cluster_config->service_name, "reviews");
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 1);
    assert_int_equal(cluster->connect_timeout->nanos, 0);
    assert_int_equal(cluster->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH);

    assert_int_equal(cluster->lb_config_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG);
    const Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig *ring_hash =
        cluster->ring_hash_lb_config;
    assert_non_null(ring_hash->minimum_ring_size);
    assert_int_equal(ring_hash->minimum_ring_size->value, 1024);
    assert_int_equal(
        ring_hash->hash_function,
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__XX_HASH);
    assert_non_null(ring_hash->maximum_ring_size);
    assert_int_equal(ring_hash->maximum_ring_size->value, 8388608);

    assert_non_null(cluster->circuit_breakers);
    assert_int_equal(cluster->circuit_breakers->n_thresholds, 2);
    const Thresholds *normal = cluster->circuit_breakers->thresholds[0];
    assert_int_equal(normal->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT);
    assert_non_null(normal->max_connections);
    assert_int_equal(normal->max_connections->value, 1024);
    assert_non_null(normal->max_pending_requests);
    assert_int_equal(normal->max_pending_requests->value, 1024);
    assert_non_null(normal->max_requests);
    assert_int_equal(normal->max_requests->value, 1024);
    assert_non_null(normal->max_retries);
    assert_int_equal(normal->max_retries->value, 3);
    const Thresholds *high = cluster->circuit_breakers->thresholds[1];
    assert_int_equal(high->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH);
    assert_non_null(high->max_connections);
    assert_int_equal(high->max_connections->value, 2048);
    assert_non_null(high->max_pending_requests);
    assert_int_equal(high->max_pending_requests->value, 2048);
    assert_non_null(high->max_requests);
    assert_int_equal(high->max_requests->value, 2048);
    assert_non_null(high->max_retries);
    assert_int_equal(high->max_retries->value, 10);

    const OutlierDetection *outlier = cluster->outlier_detection;
    assert_non_null(outlier);
    assert_non_null(outlier->consecutive_5xx);
    assert_int_equal(outlier->consecutive_5xx->value, 5);
    assert_non_null(outlier->interval);
    assert_int_equal(outlier->interval->seconds, 10);
    assert_int_equal(outlier->interval->nanos, 0);
    assert_non_null(outlier->base_ejection_time);
    assert_int_equal(outlier->base_ejection_time->seconds, 30);
    assert_int_equal(outlier->base_ejection_time->nanos, 0);
    assert_non_null(outlier->max_ejection_percent);
    assert_int_equal(outlier->max_ejection_percent->value, 50);
    assert_non_null(outlier->enforcing_consecutive_5xx);
    assert_int_equal(outlier->enforcing_consecutive_5xx->value, 100);
    assert_non_null(outlier->consecutive_gateway_failure);
    assert_int_equal(outlier->consecutive_gateway_failure->value, 3);
    assert_non_null(outlier->enforcing_consecutive_gateway_failure);
    assert_int_equal(outlier->enforcing_consecutive_gateway_failure->value, 100);
    assert_non_null(outlier->max_ejection_time);
    assert_int_equal(outlier->max_ejection_time->seconds, 300);
    assert_int_equal(outlier->max_ejection_time->nanos, 0);

    check_ring_hash_upstream_tls(cluster->transport_socket);
}

static void check_cluster_least_request(const ProtobufCMessage *message)
{
    const Cluster *cluster = (const Cluster *)message;
    assert_string_equal(cluster->name, "ratings|version=v2");
    assert_int_equal(cluster->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(cluster->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(cluster->eds_cluster_config);
    check_ads_v3(cluster->eds_cluster_config->eds_config);
    assert_string_equal(cluster->eds_cluster_config->service_name, "ratings|version=v2");
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 0);
    assert_int_equal(cluster->connect_timeout->nanos, 250000000);
    assert_int_equal(cluster->lb_policy,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    assert_int_equal(cluster->lb_config_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG);
    assert_non_null(cluster->least_request_lb_config->choice_count);
    assert_int_equal(cluster->least_request_lb_config->choice_count->value, 3);

    const TransportSocket *socket = cluster->transport_socket;
    assert_non_null(socket);
    assert_string_equal(socket->name, "envoy.transport_sockets.tls");
    assert_int_equal(socket->config_type_case,
                     ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        socket->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    UpstreamTlsContext *tls = (UpstreamTlsContext *)unpack_any(
        socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    const CommonTlsContext *common = tls->common_tls_context;
    assert_non_null(common);
    assert_non_null(common->tls_certificate_provider_instance);
    assert_string_equal(common->tls_certificate_provider_instance->instance_name,
                        "atrium_file_watcher");
    assert_string_equal(common->tls_certificate_provider_instance->certificate_name, "default");
    assert_int_equal(
        common->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT);
    const CertificateValidationContext *validation = common->validation_context;
    assert_non_null(validation->ca_certificate_provider_instance);
    assert_string_equal(validation->ca_certificate_provider_instance->instance_name,
                        "atrium_file_watcher");
    assert_string_equal(validation->ca_certificate_provider_instance->certificate_name, "ROOTCA");
    assert_int_equal(validation->n_match_typed_subject_alt_names, 1);
    const SubjectAltNameMatcher *san = validation->match_typed_subject_alt_names[0];
    assert_int_equal(
        san->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_non_null(san->matcher);
    assert_int_equal(san->matcher->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(san->matcher->exact, "spiffe://atrium.local/ns/default/sa/ratings");
    protobuf_c_message_free_unpacked(&tls->base, NULL);
}

static void check_unmodeled_fields_cluster(const ProtobufCMessage *message)
{
    const Cluster *cluster = (const Cluster *)message;
    assert_string_equal(cluster->name, "ratings");
    assert_int_equal(cluster->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(cluster->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(cluster->eds_cluster_config);
    check_ads_v3(cluster->eds_cluster_config->eds_config);
    assert_string_equal(cluster->eds_cluster_config->service_name, "ratings");
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 1);
    assert_int_equal(cluster->connect_timeout->nanos, 0);
    assert_int_equal(cluster->lb_policy,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN);

    assert_non_null(cluster->circuit_breakers);
    assert_int_equal(cluster->circuit_breakers->n_thresholds, 1);
    const Thresholds *normal = cluster->circuit_breakers->thresholds[0];
    assert_int_equal(normal->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT);
    assert_non_null(normal->max_connections);
    assert_int_equal(normal->max_connections->value, 512);
    assert_non_null(normal->max_requests);
    assert_int_equal(normal->max_requests->value, 512);

    const OutlierDetection *outlier = cluster->outlier_detection;
    assert_non_null(outlier);
    assert_non_null(outlier->consecutive_5xx);
    assert_int_equal(outlier->consecutive_5xx->value, 5);
    assert_non_null(outlier->interval);
    assert_int_equal(outlier->interval->seconds, 10);
    assert_int_equal(outlier->interval->nanos, 0);
    assert_non_null(outlier->base_ejection_time);
    assert_int_equal(outlier->base_ejection_time->seconds, 30);
    assert_int_equal(outlier->base_ejection_time->nanos, 0);
    assert_non_null(outlier->max_ejection_percent);
    assert_int_equal(outlier->max_ejection_percent->value, 10);

    /* The fields we do not model were kept as unknown fields, by number:
     * per_connection_buffer_limit_bytes (5), dns_lookup_family (17),
     * metadata (25), common_lb_config (27), ignore_health_on_host_removal (32)
     * in the Cluster, and success_rate_minimum_hosts (7) in OutlierDetection. */
    assert_true(cluster->base.n_unknown_fields > 0);
    assert_int_equal(cluster->base.n_unknown_fields, 5);
    assert_int_equal(cluster->base.unknown_fields[0].tag, 5);
    assert_int_equal(cluster->base.unknown_fields[1].tag, 17);
    assert_int_equal(cluster->base.unknown_fields[2].tag, 25);
    assert_int_equal(cluster->base.unknown_fields[3].tag, 27);
    assert_int_equal(cluster->base.unknown_fields[4].tag, 32);
    assert_int_equal(outlier->base.n_unknown_fields, 1);
    assert_int_equal(outlier->base.unknown_fields[0].tag, 7);
}

/* ---- endpoints ---- */

static void check_endpoints_two_localities(const ProtobufCMessage *message)
{
    const ClusterLoadAssignment *assignment = (const ClusterLoadAssignment *)message;
    assert_string_equal(assignment->cluster_name, "reviews");
    assert_int_equal(assignment->n_endpoints, 2);

    /* zone-a, priority 0: a healthy v1 host and a draining v2 host */
    const LocalityLbEndpoints *zone_a = assignment->endpoints[0];
    assert_non_null(zone_a->locality);
    assert_string_equal(zone_a->locality->region, "local");
    assert_string_equal(zone_a->locality->zone, "zone-a");
    assert_string_equal(zone_a->locality->sub_zone, "rack-1");
    assert_int_equal(zone_a->n_lb_endpoints, 2);

    const LbEndpoint *reviews_v1_0 = zone_a->lb_endpoints[0];
    assert_int_equal(reviews_v1_0->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    const SocketAddress *address = reviews_v1_0->endpoint->address->socket_address;
    assert_int_equal(reviews_v1_0->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    assert_int_equal(address->protocol, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP);
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 19080);
    assert_string_equal(reviews_v1_0->endpoint->hostname, "reviews-v1-0.default");
    assert_int_equal(reviews_v1_0->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    assert_non_null(reviews_v1_0->metadata);
    assert_int_equal(reviews_v1_0->metadata->n_filter_metadata, 1);
    const Struct *lb_metadata = filter_metadata(reviews_v1_0->metadata, "envoy.lb");
    assert_int_equal(lb_metadata->n_fields, 1);
    check_string_value(struct_field(lb_metadata, "version"), "v1");
    assert_non_null(reviews_v1_0->load_balancing_weight);
    assert_int_equal(reviews_v1_0->load_balancing_weight->value, 3);

    const LbEndpoint *reviews_v2_0 = zone_a->lb_endpoints[1];
    assert_int_equal(reviews_v2_0->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    assert_int_equal(reviews_v2_0->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    address = reviews_v2_0->endpoint->address->socket_address;
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 19081);
    assert_string_equal(reviews_v2_0->endpoint->hostname, "reviews-v2-0.default");
    assert_int_equal(reviews_v2_0->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING);
    assert_non_null(reviews_v2_0->metadata);
    assert_int_equal(reviews_v2_0->metadata->n_filter_metadata, 1);
    lb_metadata = filter_metadata(reviews_v2_0->metadata, "envoy.lb");
    assert_int_equal(lb_metadata->n_fields, 1);
    check_string_value(struct_field(lb_metadata, "version"), "v2");
    assert_non_null(reviews_v2_0->load_balancing_weight);
    assert_int_equal(reviews_v2_0->load_balancing_weight->value, 1);

    assert_non_null(zone_a->load_balancing_weight);
    assert_int_equal(zone_a->load_balancing_weight->value, 80);
    assert_int_equal(zone_a->priority, 0);

    /* zone-b, priority 1: a healthy v1 host and an unhealthy v3 host */
    const LocalityLbEndpoints *zone_b = assignment->endpoints[1];
    assert_non_null(zone_b->locality);
    assert_string_equal(zone_b->locality->region, "local");
    assert_string_equal(zone_b->locality->zone, "zone-b");
    assert_string_equal(zone_b->locality->sub_zone, "rack-2");
    assert_int_equal(zone_b->n_lb_endpoints, 2);

    const LbEndpoint *reviews_v1_1 = zone_b->lb_endpoints[0];
    assert_int_equal(reviews_v1_1->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    assert_int_equal(reviews_v1_1->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    address = reviews_v1_1->endpoint->address->socket_address;
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 29080);
    assert_string_equal(reviews_v1_1->endpoint->hostname, "reviews-v1-1.default");
    assert_int_equal(reviews_v1_1->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    assert_non_null(reviews_v1_1->metadata);
    assert_int_equal(reviews_v1_1->metadata->n_filter_metadata, 1);
    lb_metadata = filter_metadata(reviews_v1_1->metadata, "envoy.lb");
    assert_int_equal(lb_metadata->n_fields, 1);
    check_string_value(struct_field(lb_metadata, "version"), "v1");
    assert_non_null(reviews_v1_1->load_balancing_weight);
    assert_int_equal(reviews_v1_1->load_balancing_weight->value, 1);

    const LbEndpoint *reviews_v3_0 = zone_b->lb_endpoints[1];
    assert_int_equal(reviews_v3_0->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    assert_int_equal(reviews_v3_0->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    address = reviews_v3_0->endpoint->address->socket_address;
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 29081);
    assert_string_equal(reviews_v3_0->endpoint->hostname, "reviews-v3-0.default");
    assert_int_equal(reviews_v3_0->health_status,
                     ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY);
    assert_non_null(reviews_v3_0->load_balancing_weight);
    assert_int_equal(reviews_v3_0->load_balancing_weight->value, 1);

    assert_non_null(zone_b->load_balancing_weight);
    assert_int_equal(zone_b->load_balancing_weight->value, 20);
    assert_int_equal(zone_b->priority, 1);

    assert_non_null(assignment->policy);
    assert_non_null(assignment->policy->overprovisioning_factor);
    assert_int_equal(assignment->policy->overprovisioning_factor->value, 140);
}

/* ---- secrets ---- */

static void check_secret_tls_certificate(const ProtobufCMessage *message)
{
    static const char chain[] = "-----BEGIN CERTIFICATE-----\n"
                                "MIIBszCCAVmgAwIBAgIRAreviewsWorkloadCertQQ==\n"
                                "-----END CERTIFICATE-----\n";
    static const char key[] = "-----BEGIN EC PRIVATE KEY-----\n"
                              "MHcCAQEEIreviewsWorkloadKeyQQ==\n"
                              "-----END EC PRIVATE KEY-----\n";
    const Secret *secret = (const Secret *)message;
    assert_string_equal(secret->name, "default");
    assert_int_equal(secret->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);

    const DataSource *certificate_chain = secret->tls_certificate->certificate_chain;
    assert_non_null(certificate_chain);
    assert_int_equal(certificate_chain->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
    assert_int_equal(certificate_chain->inline_bytes.len, strlen(chain));
    assert_memory_equal(certificate_chain->inline_bytes.data, chain, strlen(chain));

    const DataSource *private_key = secret->tls_certificate->private_key;
    assert_non_null(private_key);
    assert_int_equal(private_key->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
    assert_int_equal(private_key->inline_bytes.len, strlen(key));
    assert_memory_equal(private_key->inline_bytes.data, key, strlen(key));
}

static void check_secret_validation_context(const ProtobufCMessage *message)
{
    const Secret *secret = (const Secret *)message;
    assert_string_equal(secret->name, "ROOTCA");
    assert_int_equal(
        secret->type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
    const CertificateValidationContext *validation = secret->validation_context;

    assert_non_null(validation->trusted_ca);
    assert_int_equal(validation->trusted_ca->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING);
    assert_string_equal(validation->trusted_ca->inline_string,
                        "-----BEGIN CERTIFICATE-----\n"
                        "MIIBjTCCATOgAwIBAgIQatriumRootCA==\n"
                        "-----END CERTIFICATE-----\n");

    assert_int_equal(validation->n_match_typed_subject_alt_names, 1);
    const SubjectAltNameMatcher *san = validation->match_typed_subject_alt_names[0];
    assert_int_equal(
        san->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_non_null(san->matcher);
    assert_int_equal(san->matcher->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(san->matcher->prefix, "spiffe://atrium.local/");

    assert_non_null(validation->crl);
    assert_int_equal(validation->crl->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING);
    assert_string_equal(validation->crl->inline_string, "-----BEGIN X509 CRL-----\n"
                                                        "MIIBCatriumRootCRL==\n"
                                                        "-----END X509 CRL-----\n");
}

/* ---- RBAC ---- */

/* Policy "mesh-health-and-public": /health or non-/admin paths, for the
 * or_ids principal set or any principal. */
static void check_rbac_mesh_health_and_public(const RbacPolicy *policy)
{
    assert_int_equal(policy->n_permissions, 1);
    const Permission *either = policy->permissions[0];
    assert_int_equal(either->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES);
    assert_int_equal(either->or_rules->n_rules, 2);

    const Permission *health = either->or_rules->rules[0];
    assert_int_equal(health->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH);
    assert_int_equal(health->url_path->rule_case,
                     ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH);
    assert_int_equal(health->url_path->path->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(health->url_path->path->exact, "/health");

    const Permission *not_admin = either->or_rules->rules[1];
    assert_int_equal(not_admin->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE);
    const Permission *admin = not_admin->not_rule;
    assert_int_equal(admin->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH);
    assert_int_equal(admin->url_path->rule_case, ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH);
    assert_int_equal(admin->url_path->path->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(admin->url_path->path->prefix, "/admin");
    assert_true(admin->url_path->path->ignore_case);

    assert_int_equal(policy->n_principals, 2);
    const Principal *or_ids = policy->principals[0];
    assert_int_equal(or_ids->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS);
    assert_int_equal(or_ids->or_ids->n_ids, 2);

    const Principal *ratings = or_ids->or_ids->ids[0];
    assert_int_equal(ratings->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    const StringMatcher *name = ratings->authenticated->principal_name;
    assert_non_null(name);
    assert_int_equal(name->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX);
    assert_string_equal(name->suffix, "/sa/ratings");

    const Principal *and_ids = or_ids->or_ids->ids[1];
    assert_int_equal(and_ids->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS);
    assert_int_equal(and_ids->and_ids->n_ids, 2);
    const Principal *in_default = and_ids->and_ids->ids[0];
    assert_int_equal(in_default->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    name = in_default->authenticated->principal_name;
    assert_non_null(name);
    assert_int_equal(name->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS);
    assert_string_equal(name->contains, "/ns/default/");
    const Principal *not_untrusted = and_ids->and_ids->ids[1];
    assert_int_equal(not_untrusted->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID);
    assert_int_equal(not_untrusted->not_id->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    name = not_untrusted->not_id->authenticated->principal_name;
    assert_non_null(name);
    assert_int_equal(name->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(name->exact, "spiffe://atrium.local/ns/default/sa/untrusted");

    const Principal *anyone = policy->principals[1];
    assert_int_equal(anyone->identifier_case, ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY);
    assert_true(anyone->any);
}

/* Policy "productpage-read-api": GET /api*, for productpage only. */
static void check_rbac_productpage_read_api(const RbacPolicy *policy)
{
    assert_int_equal(policy->n_permissions, 1);
    const Permission *both = policy->permissions[0];
    assert_int_equal(both->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES);
    assert_int_equal(both->and_rules->n_rules, 2);

    const Permission *get = both->and_rules->rules[0];
    assert_int_equal(get->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER);
    assert_string_equal(get->header->name, ":method");
    assert_int_equal(get->header->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH);
    assert_int_equal(get->header->string_match->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(get->header->string_match->exact, "GET");

    const Permission *api = both->and_rules->rules[1];
    assert_int_equal(api->rule_case, ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH);
    assert_int_equal(api->url_path->rule_case, ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH);
    assert_int_equal(api->url_path->path->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX);
    assert_string_equal(api->url_path->path->prefix, "/api");

    assert_int_equal(policy->n_principals, 1);
    const Principal *productpage = policy->principals[0];
    assert_int_equal(productpage->identifier_case,
                     ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED);
    const StringMatcher *name = productpage->authenticated->principal_name;
    assert_non_null(name);
    assert_int_equal(name->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(name->exact, "spiffe://atrium.local/ns/default/sa/productpage");
}

static void check_rbac_filter(const ProtobufCMessage *message)
{
    const RbacFilter *filter = (const RbacFilter *)message;
    const Rbac *rules = filter->rules;
    assert_non_null(rules);
    assert_int_equal(rules->action, ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW);
    assert_int_equal(rules->n_policies, 2);
    check_rbac_mesh_health_and_public(rbac_policy(rules, "mesh-health-and-public"));
    check_rbac_productpage_read_api(rbac_policy(rules, "productpage-read-api"));
}

/* ---- discovery: state of the world ---- */

static void check_discovery_request_sotw_nack(const ProtobufCMessage *message)
{
    const DiscoveryRequest *request = (const DiscoveryRequest *)message;
    assert_string_equal(request->version_info, "1");

    const Node *node = request->node;
    assert_non_null(node);
    assert_string_equal(node->id,
                        "sidecar~127.0.0.1~reviews-v1-0.default~default.svc.atrium.local");
    assert_string_equal(node->cluster, "reviews");
    assert_non_null(node->metadata);
    assert_int_equal(node->metadata->n_fields, 4);
    const Value *app_port = struct_field(node->metadata, "atrium.app_port");
    assert_int_equal(app_port->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    assert_float_equal(app_port->number_value, 9080.0, 0.0);
    const Value *inbound_port = struct_field(node->metadata, "atrium.inbound_port");
    assert_int_equal(inbound_port->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    assert_float_equal(inbound_port->number_value, 15006.0, 0.0);
    check_string_value(struct_field(node->metadata, "atrium.namespace"), "default");
    check_string_value(struct_field(node->metadata, "atrium.service"), "reviews");
    assert_non_null(node->locality);
    assert_string_equal(node->locality->region, "local");
    assert_string_equal(node->locality->zone, "zone-a");
    assert_string_equal(node->locality->sub_zone, "rack-1");
    assert_string_equal(node->user_agent_name, "atrium-proxy");
    assert_int_equal(node->user_agent_version_type_case,
                     ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION);
    assert_string_equal(node->user_agent_version, "0.4.0");
    assert_int_equal(node->n_client_features, 1);
    assert_string_equal(node->client_features[0], "envoy.lb.does_not_support_overprovisioning");

    assert_int_equal(request->n_resource_names, 2);
    assert_string_equal(request->resource_names[0], "reviews");
    assert_string_equal(request->resource_names[1], "ratings|version=v2");
    assert_string_equal(request->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_string_equal(request->response_nonce, "cds-7");
    assert_non_null(request->error_detail);
    assert_int_equal(request->error_detail->code, 3);
    assert_string_equal(request->error_detail->message, "cluster reviews: unknown lb_policy");
}

/* Cluster "reviews" of discovery_response_sotw: SDS certificate, SAN check
 * plus ROOTCA over SDS. */
static void check_sotw_cluster_reviews(const Any *any)
{
    assert_string_equal(any->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    Cluster *cluster = (Cluster *)unpack_any(any, &envoy__config__cluster__v3__cluster__descriptor);
    assert_string_equal(cluster->name, "reviews");
    assert_int_equal(cluster->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(cluster->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(cluster->eds_cluster_config);
    const ConfigSource *eds_config = cluster->eds_cluster_config->eds_config;
    check_ads_v3(eds_config);
    assert_non_null(eds_config->initial_fetch_timeout);
    assert_int_equal(eds_config->initial_fetch_timeout->seconds, 15);
    assert_int_equal(eds_config->initial_fetch_timeout->nanos, 0);
    assert_string_equal(cluster->eds_cluster_config->service_name, "reviews");
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 1);
    assert_int_equal(cluster->connect_timeout->nanos, 0);
    assert_int_equal(cluster->lb_policy,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN);

    const TransportSocket *socket = cluster->transport_socket;
    assert_non_null(socket);
    assert_string_equal(socket->name, "envoy.transport_sockets.tls");
    assert_int_equal(socket->config_type_case,
                     ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        socket->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    UpstreamTlsContext *tls = (UpstreamTlsContext *)unpack_any(
        socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(tls->sni, "reviews.default.svc.atrium.local");
    const CommonTlsContext *common = tls->common_tls_context;
    assert_non_null(common);
    assert_int_equal(common->n_tls_certificate_sds_secret_configs, 1);
    check_sds_over_ads(common->tls_certificate_sds_secret_configs[0], "default");
    assert_int_equal(
        common->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT);
    const CombinedValidationContext *combined = common->combined_validation_context;
    const CertificateValidationContext *validation = combined->default_validation_context;
    assert_non_null(validation);
    assert_int_equal(validation->n_match_typed_subject_alt_names, 1);
    const SubjectAltNameMatcher *san = validation->match_typed_subject_alt_names[0];
    assert_int_equal(
        san->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_non_null(san->matcher);
    assert_int_equal(san->matcher->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(san->matcher->exact, "spiffe://atrium.local/ns/default/sa/reviews");
    check_sds_over_ads(combined->validation_context_sds_secret_config, "ROOTCA");
    protobuf_c_message_free_unpacked(&tls->base, NULL);
    protobuf_c_message_free_unpacked(&cluster->base, NULL);
}

/* Cluster "details" of discovery_response_sotw: certificates from files. */
static void check_sotw_cluster_details(const Any *any)
{
    assert_string_equal(any->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    Cluster *cluster = (Cluster *)unpack_any(any, &envoy__config__cluster__v3__cluster__descriptor);
    assert_string_equal(cluster->name, "details");
    assert_int_equal(cluster->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(cluster->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(cluster->eds_cluster_config);
    check_ads_v3(cluster->eds_cluster_config->eds_config);
    assert_string_equal(cluster->eds_cluster_config->service_name, "details");
    assert_non_null(cluster->connect_timeout);
    assert_int_equal(cluster->connect_timeout->seconds, 0);
    assert_int_equal(cluster->connect_timeout->nanos, 500000000);
    assert_int_equal(cluster->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM);

    const TransportSocket *socket = cluster->transport_socket;
    assert_non_null(socket);
    assert_string_equal(socket->name, "envoy.transport_sockets.tls");
    assert_int_equal(socket->config_type_case,
                     ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(
        socket->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    UpstreamTlsContext *tls = (UpstreamTlsContext *)unpack_any(
        socket->typed_config,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(tls->sni, "details.default.svc.atrium.local");
    const CommonTlsContext *common = tls->common_tls_context;
    assert_non_null(common);
    assert_int_equal(common->n_tls_certificates, 1);
    const TlsCertificate *certificate = common->tls_certificates[0];
    assert_non_null(certificate->certificate_chain);
    assert_int_equal(certificate->certificate_chain->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME);
    assert_string_equal(certificate->certificate_chain->filename,
                        "/etc/atrium/certs/cert-chain.pem");
    assert_non_null(certificate->private_key);
    assert_int_equal(certificate->private_key->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME);
    assert_string_equal(certificate->private_key->filename, "/etc/atrium/certs/key.pem");
    assert_int_equal(
        common->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT);
    const CertificateValidationContext *validation = common->validation_context;
    assert_non_null(validation->trusted_ca);
    assert_int_equal(validation->trusted_ca->specifier_case,
                     ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME);
    assert_string_equal(validation->trusted_ca->filename, "/etc/atrium/certs/root-cert.pem");
    assert_int_equal(validation->n_match_typed_subject_alt_names, 1);
    const SubjectAltNameMatcher *san = validation->match_typed_subject_alt_names[0];
    assert_int_equal(
        san->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_non_null(san->matcher);
    assert_int_equal(san->matcher->match_pattern_case,
                     ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
    assert_string_equal(san->matcher->exact, "spiffe://atrium.local/ns/default/sa/details");
    assert_int_equal(common->n_alpn_protocols, 1);
    assert_string_equal(common->alpn_protocols[0], "h2");
    protobuf_c_message_free_unpacked(&tls->base, NULL);
    protobuf_c_message_free_unpacked(&cluster->base, NULL);
}

static void check_discovery_response_sotw(const ProtobufCMessage *message)
{
    const DiscoveryResponse *response = (const DiscoveryResponse *)message;
    assert_string_equal(response->version_info, "2");
    assert_string_equal(response->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_string_equal(response->nonce, "cds-8");
    assert_int_equal(response->n_resources, 2);
    check_sotw_cluster_reviews(response->resources[0]);
    check_sotw_cluster_details(response->resources[1]);
}

/* ---- discovery: delta ---- */

static void check_delta_request_reconnect(const ProtobufCMessage *message)
{
    const DeltaDiscoveryRequest *request = (const DeltaDiscoveryRequest *)message;

    const Node *node = request->node;
    assert_non_null(node);
    assert_string_equal(node->id, "grpc~127.0.0.1~productpage-0.default~default.svc.atrium.local");
    assert_string_equal(node->cluster, "productpage");
    assert_non_null(node->metadata);
    assert_int_equal(node->metadata->n_fields, 2);
    check_string_value(struct_field(node->metadata, "atrium.namespace"), "default");
    check_string_value(struct_field(node->metadata, "atrium.service"), "productpage");
    assert_non_null(node->locality);
    assert_string_equal(node->locality->region, "local");
    assert_string_equal(node->locality->zone, "zone-b");
    assert_string_equal(node->user_agent_name, "gRPC Go");
    assert_int_equal(node->user_agent_version_type_case,
                     ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION);
    assert_string_equal(node->user_agent_version, "1.62.1");
    assert_int_equal(node->n_client_features, 2);
    assert_string_equal(node->client_features[0], "envoy.lb.does_not_support_overprovisioning");
    assert_string_equal(node->client_features[1], "xds.config.resource-in-sotw");

    assert_string_equal(request->type_url,
                        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");
    assert_int_equal(request->n_resource_names_subscribe, 2);
    assert_string_equal(request->resource_names_subscribe[0], "reviews");
    assert_string_equal(request->resource_names_subscribe[1], "details");
    assert_int_equal(request->n_resource_names_unsubscribe, 1);
    assert_string_equal(request->resource_names_unsubscribe[0], "ratings|version=v1");
    assert_int_equal(request->n_initial_resource_versions, 2);
    assert_string_equal(initial_resource_version(request, "details"), "eds-details-17");
    assert_string_equal(initial_resource_version(request, "reviews"), "eds-reviews-41");
    assert_string_equal(request->response_nonce, "eds-delta-12");
    assert_non_null(request->error_detail);
    assert_int_equal(request->error_detail->code, 3);
    assert_string_equal(
        request->error_detail->message,
        "ClusterLoadAssignment reviews: endpoint 127.0.0.1 port_value 0 is invalid");
}

/* Resource "reviews" of delta_response. */
static void check_delta_resource_reviews(const Resource *resource)
{
    assert_string_equal(resource->name, "reviews");
    assert_int_equal(resource->n_aliases, 2);
    assert_string_equal(resource->aliases[0], "reviews.default");
    assert_string_equal(resource->aliases[1], "reviews.default.svc.atrium.local");
    assert_string_equal(resource->version, "eds-reviews-42");
    assert_non_null(resource->resource);
    assert_string_equal(resource->resource->type_url,
                        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");

    ClusterLoadAssignment *assignment = (ClusterLoadAssignment *)unpack_any(
        resource->resource, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_string_equal(assignment->cluster_name, "reviews");
    assert_int_equal(assignment->n_endpoints, 1);
    const LocalityLbEndpoints *zone_a = assignment->endpoints[0];
    assert_non_null(zone_a->locality);
    assert_string_equal(zone_a->locality->region, "local");
    assert_string_equal(zone_a->locality->zone, "zone-a");
    assert_int_equal(zone_a->n_lb_endpoints, 1);
    const LbEndpoint *host = zone_a->lb_endpoints[0];
    assert_int_equal(host->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    assert_int_equal(host->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    const SocketAddress *address = host->endpoint->address->socket_address;
    assert_int_equal(address->protocol, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP);
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 19080);
    assert_int_equal(host->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    assert_non_null(zone_a->load_balancing_weight);
    assert_int_equal(zone_a->load_balancing_weight->value, 1);
    protobuf_c_message_free_unpacked(&assignment->base, NULL);
}

/* Resource "ratings|version=v2" of delta_response. */
static void check_delta_resource_ratings_v2(const Resource *resource)
{
    assert_string_equal(resource->name, "ratings|version=v2");
    assert_int_equal(resource->n_aliases, 1);
    assert_string_equal(resource->aliases[0], "ratings.default");
    assert_string_equal(resource->version, "eds-ratings-v2-7");
    assert_non_null(resource->resource);
    assert_string_equal(resource->resource->type_url,
                        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");

    ClusterLoadAssignment *assignment = (ClusterLoadAssignment *)unpack_any(
        resource->resource, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_string_equal(assignment->cluster_name, "ratings|version=v2");
    assert_int_equal(assignment->n_endpoints, 1);
    const LocalityLbEndpoints *zone_b = assignment->endpoints[0];
    assert_non_null(zone_b->locality);
    assert_string_equal(zone_b->locality->region, "local");
    assert_string_equal(zone_b->locality->zone, "zone-b");
    assert_int_equal(zone_b->n_lb_endpoints, 1);
    const LbEndpoint *host = zone_b->lb_endpoints[0];
    assert_int_equal(host->host_identifier_case,
                     ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT);
    assert_int_equal(host->endpoint->address->address_case,
                     ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    const SocketAddress *address = host->endpoint->address->socket_address;
    assert_string_equal(address->address, "127.0.0.1");
    assert_int_equal(address->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(address->port_value, 19082);
    assert_string_equal(host->endpoint->hostname, "ratings-v2-0.default");
    assert_int_equal(host->health_status, ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY);
    assert_non_null(host->load_balancing_weight);
    assert_int_equal(host->load_balancing_weight->value, 1);
    assert_int_equal(zone_b->priority, 0);
    assert_non_null(assignment->policy);
    assert_non_null(assignment->policy->overprovisioning_factor);
    assert_int_equal(assignment->policy->overprovisioning_factor->value, 100);
    protobuf_c_message_free_unpacked(&assignment->base, NULL);
}

static void check_delta_response(const ProtobufCMessage *message)
{
    const DeltaDiscoveryResponse *response = (const DeltaDiscoveryResponse *)message;
    assert_string_equal(response->system_version_info, "atrium-cp-2024-06-01T12:00:00Z");
    assert_string_equal(response->type_url,
                        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");
    assert_string_equal(response->nonce, "eds-delta-13");
    assert_int_equal(response->n_removed_resources, 2);
    assert_string_equal(response->removed_resources[0], "details");
    assert_string_equal(response->removed_resources[1], "ratings|version=v1");
    assert_int_equal(response->n_resources, 2);
    check_delta_resource_reviews(response->resources[0]);
    check_delta_resource_ratings_v2(response->resources[1]);
}

/* ---- the fixtures ---- */

const golden_case golden_cases[] = {
    {"listener_sidecar_outbound.txtpb", &envoy__config__listener__v3__listener__descriptor,
     check_listener_sidecar_outbound, false},
    {"listener_api_grpc.txtpb", &envoy__config__listener__v3__listener__descriptor,
     check_listener_api_grpc, false},
    {"listener_inbound_mtls.txtpb", &envoy__config__listener__v3__listener__descriptor,
     check_listener_inbound_mtls, false},
    {"route_weighted_retry.txtpb", &envoy__config__route__v3__route_configuration__descriptor,
     check_route_weighted_retry, false},
    {"cluster_eds_ring_hash.txtpb", &envoy__config__cluster__v3__cluster__descriptor,
     check_cluster_eds_ring_hash, false},
    {"cluster_least_request.txtpb", &envoy__config__cluster__v3__cluster__descriptor,
     check_cluster_least_request, false},
    {"endpoints_two_localities.txtpb",
     &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
     check_endpoints_two_localities, false},
    {"secret_tls_certificate.txtpb",
     &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
     check_secret_tls_certificate, false},
    {"secret_validation_context.txtpb",
     &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
     check_secret_validation_context, false},
    {"rbac_filter.txtpb", &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
     check_rbac_filter, false},
    {"discovery_request_sotw_nack.txtpb",
     &envoy__service__discovery__v3__discovery_request__descriptor,
     check_discovery_request_sotw_nack, false},
    {"discovery_response_sotw.txtpb",
     &envoy__service__discovery__v3__discovery_response__descriptor, check_discovery_response_sotw,
     false},
    {"delta_request_reconnect.txtpb",
     &envoy__service__discovery__v3__delta_discovery_request__descriptor,
     check_delta_request_reconnect, false},
    {"delta_response.txtpb", &envoy__service__discovery__v3__delta_discovery_response__descriptor,
     check_delta_response, false},
    {"unmodeled_fields_cluster.txtpb", &envoy__config__cluster__v3__cluster__descriptor,
     check_unmodeled_fields_cluster, true},
    {NULL, NULL, NULL, false},
};

/* Every [type.googleapis.com/...] expansion in the fixtures. */
const ProtobufCMessageDescriptor *const golden_any_types[] = {
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &envoy__extensions__filters__http__router__v3__router__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    NULL,
};

/* ---- messages built from scratch ----
 *
 * Each builder allocates one block holding the message (its first member, so
 * the message pointer is the block pointer) and every sub-message it points
 * to; strings point to literals. Messages inside an Any live on the stack only
 * until any_pack_new has encoded them. A release function frees the Any
 * values it packed, then the block. */

/* listener_api_grpc.txtpb */

typedef struct scratch_api_listener {
    Listener listener;
    ApiListener api_listener;
} scratch_api_listener;

static ProtobufCMessage *build_listener_api_grpc(void)
{
    /* The HttpConnectionManager: RDS "reviews" over ADS, then the router. */
    AggregatedConfigSource ads = ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT;
    ConfigSource config_source = ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT;
    config_source.config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    config_source.ads = &ads;
    config_source.resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;

    Rds rds = ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT;
    rds.config_source = &config_source;
    rds.route_config_name = (char *)"reviews";

    Router router = ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT;
    Any *router_any = any_pack_new(&router.base);
    assert_non_null(router_any);
    HttpFilter router_filter =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__INIT;
    router_filter.name = (char *)"envoy.filters.http.router";
    router_filter.config_type_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    router_filter.typed_config = router_any;
    HttpFilter *http_filters[] = {&router_filter};

    HttpConnectionManager hcm =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT;
    hcm.route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
    hcm.rds = &rds;
    hcm.n_http_filters = 1;
    hcm.http_filters = http_filters;
    Any *hcm_any = any_pack_new(&hcm.base);
    any_free(router_any);
    assert_non_null(hcm_any);

    /* The Listener, on the heap. */
    scratch_api_listener *scratch = malloc(sizeof(*scratch));
    assert_non_null(scratch);
    *scratch = (scratch_api_listener){
        .listener = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT,
        .api_listener = ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT,
    };
    scratch->listener.name = (char *)"reviews";
    scratch->listener.api_listener = &scratch->api_listener;
    scratch->api_listener.api_listener = hcm_any;
    return &scratch->listener.base;
}

static void release_listener_api_grpc(ProtobufCMessage *message)
{
    scratch_api_listener *scratch = (scratch_api_listener *)message;
    any_free(scratch->api_listener.api_listener);
    free(scratch);
}

/* delta_request_reconnect.txtpb */

typedef struct scratch_delta_request {
    DeltaDiscoveryRequest request;
    Node node;
    Struct metadata;
    StructEntry namespace_entry;
    Value namespace_value;
    StructEntry service_entry;
    Value service_value;
    StructEntry *metadata_fields[2];
    Locality locality;
    char *client_features[2];
    char *subscribe[2];
    char *unsubscribe[1];
    InitialResourceVersionEntry details_version;
    InitialResourceVersionEntry reviews_version;
    InitialResourceVersionEntry *initial_resource_versions[2];
    Status error_detail;
} scratch_delta_request;

static ProtobufCMessage *build_delta_request_reconnect(void)
{
    scratch_delta_request *scratch = malloc(sizeof(*scratch));
    assert_non_null(scratch);
    *scratch = (scratch_delta_request){
        .request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT,
        .node = ENVOY__CONFIG__CORE__V3__NODE__INIT,
        .metadata = GOOGLE__PROTOBUF__STRUCT__INIT,
        .namespace_entry = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
        .namespace_value = GOOGLE__PROTOBUF__VALUE__INIT,
        .service_entry = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
        .service_value = GOOGLE__PROTOBUF__VALUE__INIT,
        .locality = ENVOY__CONFIG__CORE__V3__LOCALITY__INIT,
        .details_version =
            ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT,
        .reviews_version =
            ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT,
        .error_detail = GOOGLE__RPC__STATUS__INIT,
    };
    DeltaDiscoveryRequest *request = &scratch->request;

    /* node */
    Node *node = &scratch->node;
    node->id = (char *)"grpc~127.0.0.1~productpage-0.default~default.svc.atrium.local";
    node->cluster = (char *)"productpage";
    scratch->namespace_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    scratch->namespace_value.string_value = (char *)"default";
    scratch->namespace_entry.key = (char *)"atrium.namespace";
    scratch->namespace_entry.value = &scratch->namespace_value;
    scratch->service_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    scratch->service_value.string_value = (char *)"productpage";
    scratch->service_entry.key = (char *)"atrium.service";
    scratch->service_entry.value = &scratch->service_value;
    scratch->metadata_fields[0] = &scratch->namespace_entry;
    scratch->metadata_fields[1] = &scratch->service_entry;
    scratch->metadata.n_fields = 2;
    scratch->metadata.fields = scratch->metadata_fields;
    node->metadata = &scratch->metadata;
    scratch->locality.region = (char *)"local";
    scratch->locality.zone = (char *)"zone-b";
    node->locality = &scratch->locality;
    node->user_agent_name = (char *)"gRPC Go";
    node->user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
    node->user_agent_version = (char *)"1.62.1";
    scratch->client_features[0] = (char *)"envoy.lb.does_not_support_overprovisioning";
    scratch->client_features[1] = (char *)"xds.config.resource-in-sotw";
    node->n_client_features = 2;
    node->client_features = scratch->client_features;
    request->node = node;

    request->type_url =
        (char *)"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    scratch->subscribe[0] = (char *)"reviews";
    scratch->subscribe[1] = (char *)"details";
    request->n_resource_names_subscribe = 2;
    request->resource_names_subscribe = scratch->subscribe;
    scratch->unsubscribe[0] = (char *)"ratings|version=v1";
    request->n_resource_names_unsubscribe = 1;
    request->resource_names_unsubscribe = scratch->unsubscribe;

    /* initial_resource_versions, in the fixture's order */
    scratch->details_version.key = (char *)"details";
    scratch->details_version.value = (char *)"eds-details-17";
    scratch->reviews_version.key = (char *)"reviews";
    scratch->reviews_version.value = (char *)"eds-reviews-41";
    scratch->initial_resource_versions[0] = &scratch->details_version;
    scratch->initial_resource_versions[1] = &scratch->reviews_version;
    request->n_initial_resource_versions = 2;
    request->initial_resource_versions = scratch->initial_resource_versions;

    request->response_nonce = (char *)"eds-delta-12";
    scratch->error_detail.code = 3;
    scratch->error_detail.message =
        (char *)"ClusterLoadAssignment reviews: endpoint 127.0.0.1 port_value 0 is invalid";
    request->error_detail = &scratch->error_detail;
    return &request->base;
}

static void release_delta_request_reconnect(ProtobufCMessage *message)
{
    free((scratch_delta_request *)message);
}

/* secret_validation_context.txtpb */

typedef struct scratch_secret {
    Secret secret;
    CertificateValidationContext validation_context;
    DataSource trusted_ca;
    SubjectAltNameMatcher san;
    StringMatcher san_matcher;
    SubjectAltNameMatcher *sans[1];
    DataSource crl;
} scratch_secret;

static ProtobufCMessage *build_secret_validation_context(void)
{
    scratch_secret *scratch = malloc(sizeof(*scratch));
    assert_non_null(scratch);
    *scratch = (scratch_secret){
        .secret = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT,
        .validation_context =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT,
        .trusted_ca = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT,
        .san = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__INIT,
        .san_matcher = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT,
        .crl = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT,
    };
    CertificateValidationContext *validation = &scratch->validation_context;

    scratch->trusted_ca.specifier_case =
        ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    scratch->trusted_ca.inline_string = (char *)"-----BEGIN CERTIFICATE-----\n"
                                                "MIIBjTCCATOgAwIBAgIQatriumRootCA==\n"
                                                "-----END CERTIFICATE-----\n";
    validation->trusted_ca = &scratch->trusted_ca;

    scratch->san_matcher.match_pattern_case =
        ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
    scratch->san_matcher.prefix = (char *)"spiffe://atrium.local/";
    scratch->san.san_type =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI;
    scratch->san.matcher = &scratch->san_matcher;
    scratch->sans[0] = &scratch->san;
    validation->n_match_typed_subject_alt_names = 1;
    validation->match_typed_subject_alt_names = scratch->sans;

    scratch->crl.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    scratch->crl.inline_string = (char *)"-----BEGIN X509 CRL-----\n"
                                         "MIIBCatriumRootCRL==\n"
                                         "-----END X509 CRL-----\n";
    validation->crl = &scratch->crl;

    scratch->secret.name = (char *)"ROOTCA";
    scratch->secret.type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
    scratch->secret.validation_context = validation;
    return &scratch->secret.base;
}

static void release_secret_validation_context(ProtobufCMessage *message)
{
    free((scratch_secret *)message);
}

const golden_scratch golden_scratch_builders[] = {
    {"listener_api_grpc.txtpb", build_listener_api_grpc, release_listener_api_grpc},
    {"delta_request_reconnect.txtpb", build_delta_request_reconnect,
     release_delta_request_reconnect},
    {"secret_validation_context.txtpb", build_secret_validation_context,
     release_secret_validation_context},
    {NULL, NULL, NULL},
};
