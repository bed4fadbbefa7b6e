/*
 * test_xds_mtls.c — xDS with client certificates on atriumd's TLS port,
 * against a real atriumd: a workload gets its certificate from the CA (join
 * token), then subscribes over mTLS. An atrium-proxy whose certificate is the
 * identity of the service it fronts gets its configuration; one that claims
 * another service is refused (PERMISSION_DENIED); a client without a
 * certificate is refused (UNAUTHENTICATED). When a certificate is revoked
 * (REST), its live stream is ended and a new one refused (PERMISSION_DENIED).
 */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "atriumd_fixture.h"
#include "ca.h"
#include "ca_client.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "workload.h"

#include <curl/curl.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define ADS "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

static atriumd_fixture server;
static char *roots;               /* the CA's roots */
static char *key_pem, *chain_pem; /* reviews' certificate */

/* ---- REST ---- */

static size_t collect(char *data, size_t size, size_t count, void *context)
{
    char **text = context;
    size_t old = *text ? strlen(*text) : 0, bytes = size * count;
    char *grown = realloc(*text, old + bytes + 1);
    assert_non_null(grown);
    memcpy(grown + old, data, bytes);
    grown[old + bytes] = '\0';
    *text = grown;
    return bytes;
}

/* A REST call with the admin token; returns the body (the caller frees). */
static char *rest(const char *method, const char *path, const char *body)
{
    CURL *curl = curl_easy_init();
    char url[256], authorization[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.rest_port, path);
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", server.token);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    char *text = NULL;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &text);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    if (body != NULL)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return text ? text : strdup("");
}

/* ---- one SotW request over TLS ---- */

static grpc_byte_buffer *cluster_request(const char *service);

typedef struct outcome {
    bool got_response;
    size_t resources;
    bool has_inbound_cluster;
    grpc_status_code status; /* when the stream ended instead */
    char details[256];
} outcome;

static gpr_timespec in_ms(int64_t milliseconds)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(milliseconds, GPR_TIMESPAN));
}

/* Opens ADS on the TLS port (with the certificate when key is not NULL), asks
 * for clusters as an atrium-proxy of `service`, and waits for a response or
 * the end of the stream. */
/* A live stream: opened, asked for clusters, kept open. */
typedef struct live_stream {
    grpc_channel *channel;
    grpc_completion_queue *queue;
    grpc_call *call;
    grpc_byte_buffer *sent, *received;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    bool done[4]; /* by tag 1-3 */
} live_stream;

static bool live_next(live_stream *live, int timeout_ms)
{
    grpc_event event = grpc_completion_queue_next(live->queue, in_ms(timeout_ms), NULL);
    if (event.type != GRPC_OP_COMPLETE)
        return false;
    live->done[(intptr_t)event.tag] = true;
    return true;
}

/* Opens ADS over TLS with key/chain as an atrium-proxy of service, and waits
 * (bounded) for the first response, which must come. */
static void live_open(live_stream *live, const char *key, const char *chain, const char *service)
{
    memset(live, 0, sizeof(*live));
    grpc_ssl_pem_key_cert_pair pair = {key, chain};
    grpc_channel_credentials *credentials = grpc_ssl_credentials_create(roots, &pair, NULL, NULL);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", server.tls_port);
    live->channel = grpc_channel_create(target, credentials, NULL);
    grpc_channel_credentials_release(credentials);
    live->queue = grpc_completion_queue_create_for_next(NULL);
    live->call =
        grpc_channel_create_call(live->channel, NULL, GRPC_PROPAGATE_DEFAULTS, live->queue,
                                 grpc_slice_from_static_string(ADS), NULL, in_ms(60000), NULL);
    live->sent = cluster_request(service);
    grpc_metadata_array_init(&live->initial);
    grpc_metadata_array_init(&live->trailing);
    live->details = grpc_empty_slice();
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = live->sent;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &live->initial;
    assert_int_equal(grpc_call_start_batch(live->call, ops, 3, (void *)1, NULL), GRPC_CALL_OK);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_MESSAGE;
    ops[0].data.recv_message.recv_message = &live->received;
    assert_int_equal(grpc_call_start_batch(live->call, ops, 1, (void *)2, NULL), GRPC_CALL_OK);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &live->trailing;
    ops[0].data.recv_status_on_client.status = &live->status;
    ops[0].data.recv_status_on_client.status_details = &live->details;
    assert_int_equal(grpc_call_start_batch(live->call, ops, 1, (void *)3, NULL), GRPC_CALL_OK);
    while (!(live->done[1] && live->done[2]) && !live->done[3] && live_next(live, 10000))
        ;
    assert_true(live->done[2]);
    assert_non_null(live->received); /* the first response came */
}

/* Waits up to timeout_ms for the stream's status; true when it came. */
static bool live_wait_end(live_stream *live, int timeout_ms)
{
    gpr_timespec deadline = in_ms(timeout_ms);
    while (!live->done[3]) {
        grpc_event event = grpc_completion_queue_next(live->queue, deadline, NULL);
        if (event.type != GRPC_OP_COMPLETE)
            return false;
        live->done[(intptr_t)event.tag] = true;
    }
    return true;
}

static void live_close(live_stream *live)
{
    grpc_call_cancel(live->call, NULL);
    while (!(live->done[1] && live->done[2] && live->done[3]) && live_next(live, 5000))
        ;
    if (live->received != NULL)
        grpc_byte_buffer_destroy(live->received);
    grpc_byte_buffer_destroy(live->sent);
    grpc_slice_unref(live->details);
    grpc_metadata_array_destroy(&live->initial);
    grpc_metadata_array_destroy(&live->trailing);
    grpc_call_unref(live->call);
    grpc_channel_destroy(live->channel);
    grpc_completion_queue_shutdown(live->queue);
    while (grpc_completion_queue_next(live->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(live->queue);
}

/* A DiscoveryRequest for clusters from node mtls-proxy, an atrium-proxy of
 * service (app port 9080), as a byte buffer the caller destroys. */
static grpc_byte_buffer *cluster_request(const char *service)
{
    Google__Protobuf__Value service_value = GOOGLE__PROTOBUF__VALUE__INIT;
    service_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    service_value.string_value = (char *)service;
    Google__Protobuf__Value port_value = GOOGLE__PROTOBUF__VALUE__INIT;
    port_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    port_value.string_value = "9080";
    Google__Protobuf__Struct__FieldsEntry service_field =
        GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    service_field.key = "atrium.service";
    service_field.value = &service_value;
    Google__Protobuf__Struct__FieldsEntry port_field = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    port_field.key = "atrium.app_port";
    port_field.value = &port_value;
    Google__Protobuf__Struct__FieldsEntry *fields[] = {&service_field, &port_field};
    Google__Protobuf__Struct metadata = GOOGLE__PROTOBUF__STRUCT__INIT;
    metadata.n_fields = 2;
    metadata.fields = fields;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    node.id = "mtls-proxy";
    node.metadata = &metadata;
    Envoy__Service__Discovery__V3__DiscoveryRequest request =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    request.node = &node;
    request.type_url = CDS;
    grpc_slice payload = grpc_slice_malloc(protobuf_c_message_get_packed_size(&request.base));
    protobuf_c_message_pack(&request.base, GRPC_SLICE_START_PTR(payload));
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);
    return buffer;
}

static outcome subscribe(const char *key, const char *chain, const char *service)
{
    outcome result = {.status = GRPC_STATUS_OK};
    grpc_ssl_pem_key_cert_pair pair = {key, chain};
    grpc_channel_credentials *credentials =
        grpc_ssl_credentials_create(roots, key ? &pair : NULL, NULL, NULL);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", server.tls_port);
    grpc_channel *channel = grpc_channel_create(target, credentials, NULL);
    grpc_channel_credentials_release(credentials);
    grpc_completion_queue *queue = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method = grpc_slice_from_static_string(ADS);
    grpc_call *call = grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, queue,
                                               method, NULL, in_ms(10000), NULL);
    grpc_byte_buffer *sent = cluster_request(service);

    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_byte_buffer *received = NULL;
    grpc_status_code status = GRPC_STATUS_OK;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = sent;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &initial;
    assert_int_equal(grpc_call_start_batch(call, ops, 3, (void *)1, NULL), GRPC_CALL_OK);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_MESSAGE;
    ops[0].data.recv_message.recv_message = &received;
    assert_int_equal(grpc_call_start_batch(call, ops, 1, (void *)2, NULL), GRPC_CALL_OK);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    assert_int_equal(grpc_call_start_batch(call, ops, 1, (void *)3, NULL), GRPC_CALL_OK);

    /* Up to 10 s for the response (or the end); then close and drain. */
    bool message_done = false, status_done = false, first_done = false;
    gpr_timespec deadline = in_ms(10000);
    while (!(message_done && first_done) && !status_done) {
        grpc_event event = grpc_completion_queue_next(queue, deadline, NULL);
        if (event.type != GRPC_OP_COMPLETE)
            break;
        first_done |= event.tag == (void *)1;
        message_done |= event.tag == (void *)2;
        status_done |= event.tag == (void *)3;
    }
    if (received != NULL) {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, received);
        grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        Envoy__Service__Discovery__V3__DiscoveryResponse *response =
            envoy__service__discovery__v3__discovery_response__unpack(
                NULL, GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice));
        grpc_slice_unref(slice);
        if (response != NULL) {
            result.got_response = true;
            result.resources = response->n_resources;
            for (size_t i = 0; i < response->n_resources; i++) {
                Envoy__Config__Cluster__V3__Cluster *cluster =
                    envoy__config__cluster__v3__cluster__unpack(NULL,
                                                                response->resources[i]->value.len,
                                                                response->resources[i]->value.data);
                if (cluster != NULL && strcmp(cluster->name, "inbound|9080") == 0)
                    result.has_inbound_cluster = true;
                if (cluster != NULL)
                    envoy__config__cluster__v3__cluster__free_unpacked(cluster, NULL);
            }
            envoy__service__discovery__v3__discovery_response__free_unpacked(response, NULL);
        }
        grpc_byte_buffer_destroy(received);
    }
    grpc_call_cancel(call, NULL);
    /* Drain every batch still pending. */
    while (!(first_done && message_done && status_done)) {
        grpc_event event = grpc_completion_queue_next(queue, in_ms(5000), NULL);
        if (event.type != GRPC_OP_COMPLETE)
            break;
        first_done |= event.tag == (void *)1;
        message_done |= event.tag == (void *)2;
        status_done |= event.tag == (void *)3;
    }
    if (!result.got_response) {
        result.status = status;
        snprintf(result.details, sizeof(result.details), "%.*s", (int)GRPC_SLICE_LENGTH(details),
                 (const char *)GRPC_SLICE_START_PTR(details));
    }
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(sent);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    grpc_channel_destroy(channel);
    grpc_completion_queue_shutdown(queue);
    while (grpc_completion_queue_next(queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(queue);
    return result;
}

/* ---- setup: atriumd, a service, and reviews' certificate ---- */

static bool issue_certificate(char **key, char **chain);

static int setup(void **state)
{
    (void)state;
    grpc_init();
    char error[512];
    if (atriumd_fixture_start(&server, ATRIUMD_PATH, "mtls", error, sizeof(error)) != 0) {
        fprintf(stderr, "%s\n", error);
        return -1;
    }
    free(rest("PUT", "/v1/services/reviews", "{}"));
    char *bundle = rest("GET", "/v1/ca/bundle", NULL);
    char *crl = strstr(bundle, "-----BEGIN X509 CRL-----");
    roots = crl ? strndup(bundle, (size_t)(crl - bundle)) : strdup(bundle);
    free(bundle);
    return issue_certificate(&key_pem, &chain_pem) ? 0 : -1;
}

/* A new key and certificate for reviews (join token, CreateCertificate);
 * true with *key and *chain (the caller frees them). */
static bool issue_certificate(char **key, char **chain)
{
    char error[512];
    char *minted = rest("POST", "/v1/tokens", "{\"service\": \"reviews\"}");
    json_t *token = json_loads(minted, 0, NULL);
    free(minted);
    char *csr = NULL;
    ca_client *client = NULL;
    ca_client_result result = {0};
    int ok = token != NULL && workload_generate_key(key, error, sizeof(error)) == 0 &&
             workload_build_csr(*key, "spiffe://atrium.local/ns/default/sa/reviews", &csr, error,
                                sizeof(error)) == 0;
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", server.tls_port);
    if (ok)
        client =
            ca_client_new(&(ca_client_options){target, roots, NULL, NULL}, error, sizeof(error));
    ok = ok && client != NULL &&
         ca_client_create_certificate(client, csr,
                                      json_string_value(json_object_get(token, "token")), 0, 10000,
                                      &result) == 0 &&
         result.status == 0;
    if (ok)
        *chain = strdup(result.cert_chain_pem);
    ca_client_result_clear(&result);
    ca_client_free(client);
    free(csr);
    json_decref(token);
    return ok;
}

static int teardown(void **state)
{
    (void)state;
    free(roots);
    free(key_pem);
    free(chain_pem);
    int exit_status = atriumd_fixture_stop(&server);
    grpc_shutdown();
    return exit_status == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void test_own_identity_gets_its_configuration(void **state)
{
    (void)state;
    outcome result = subscribe(key_pem, chain_pem, "reviews");
    assert_true(result.got_response);
    assert_true(result.has_inbound_cluster); /* its own inbound|<app port> */
    assert_true(result.resources >= 2);      /* and the services it may call */
}

static void test_another_identity_is_refused(void **state)
{
    (void)state;
    outcome result = subscribe(key_pem, chain_pem, "ratings");
    assert_false(result.got_response);
    assert_int_equal(result.status, GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(result.details, "spiffe://atrium.local/ns/default/sa/reviews"));
}

static void test_no_certificate_is_refused(void **state)
{
    (void)state;
    outcome result = subscribe(NULL, NULL, "reviews");
    assert_false(result.got_response);
    assert_int_equal(result.status, GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(result.details, "client certificate"));
}

/* Revoking a certificate ends the live stream it authenticated and refuses
 * new ones (issue 12, defect 2: it used to keep getting xDS). */
static void test_revoked_certificate_loses_xds(void **state)
{
    (void)state;
    char *key = NULL, *chain = NULL, *serial = NULL, error[256];
    assert_true(issue_certificate(&key, &chain));
    assert_int_equal(ca_certificate_serial(chain, &serial, error, sizeof(error)), 0);
    live_stream live;
    live_open(&live, key, chain, "reviews");

    char path[256];
    snprintf(path, sizeof(path), "/v1/certs/%s/revoke", serial);
    char *answer = rest("POST", path, NULL);
    assert_non_null(strstr(answer, "revoked_at_ms"));
    free(answer);

    /* The live stream ends, told why (bounded: the revocation wakes the xDS thread). */
    bool ended = live_wait_end(&live, 5000);
    char details[256];
    snprintf(details, sizeof(details), "%.*s", (int)GRPC_SLICE_LENGTH(live.details),
             (const char *)GRPC_SLICE_START_PTR(live.details));
    grpc_status_code status = live.status;
    live_close(&live);
    assert_true(ended);
    assert_int_equal(status, GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(details, "revoked"));

    /* A new stream with it is refused. */
    outcome result = subscribe(key, chain, "reviews");
    assert_false(result.got_response);
    assert_int_equal(result.status, GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(result.details, "revoked"));

    /* Another certificate of the same identity still works. */
    outcome other = subscribe(key_pem, chain_pem, "reviews");
    assert_true(other.got_response);
    free(key);
    free(chain);
    free(serial);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_identity_gets_its_configuration),
        cmocka_unit_test(test_another_identity_is_refused),
        cmocka_unit_test(test_no_certificate_is_refused),
        cmocka_unit_test(test_revoked_certificate_loses_xds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
