/*
 * ca_client.c — CreateCertificate over gRPC C core with TLS (see
 * ca_client.h): one channel per client, one completion queue per client, and
 * every call a single batch with a bounded deadline.
 */
#include "ca_client.h"

#include "atrium/ca/v1/ca.pb-c.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METHOD "/atrium.ca.v1.CertificateService/CreateCertificate"

/* How long, beyond the call's deadline, to wait for its completion. */
#define COMPLETION_GRACE_MS 5000

struct ca_client {
    grpc_channel *channel;
    grpc_completion_queue *queue;
};

static gpr_timespec after_ms(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Shuts the queue down and drains it (bounded: nothing is pending by then). */
static void destroy_queue(grpc_completion_queue *queue)
{
    grpc_completion_queue_shutdown(queue);
    while (grpc_completion_queue_next(queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(queue);
}

ca_client *ca_client_new(const ca_client_options *options, char *error, size_t error_size)
{
    if (options == NULL || options->address == NULL || options->address[0] == '\0' ||
        options->trust_bundle == NULL || options->trust_bundle[0] == '\0') {
        snprintf(error, error_size, "an address and a trust bundle are required");
        return NULL;
    }
    if ((options->client_key == NULL) != (options->client_chain == NULL)) {
        snprintf(error, error_size, "a client key needs a client chain and the other way round");
        return NULL;
    }
    ca_client *client = calloc(1, sizeof(*client));
    if (client == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    grpc_init();
    grpc_ssl_pem_key_cert_pair pair = {options->client_key, options->client_chain};
    grpc_channel_credentials *credentials = grpc_ssl_credentials_create(
        options->trust_bundle, options->client_key ? &pair : NULL, NULL, NULL);
    if (credentials == NULL) {
        snprintf(error, error_size, "cannot create TLS credentials");
        free(client);
        grpc_shutdown();
        return NULL;
    }
    client->channel = grpc_channel_create(options->address, credentials, NULL);
    grpc_channel_credentials_release(credentials);
    if (client->channel == NULL) {
        snprintf(error, error_size, "cannot create a channel to %s", options->address);
        free(client);
        grpc_shutdown();
        return NULL;
    }
    client->queue = grpc_completion_queue_create_for_next(NULL);
    if (client->queue == NULL) {
        snprintf(error, error_size, "cannot create a completion queue");
        grpc_channel_destroy(client->channel);
        free(client);
        grpc_shutdown();
        return NULL;
    }
    return client;
}

void ca_client_free(ca_client *client)
{
    if (client == NULL)
        return;
    grpc_channel_destroy(client->channel);
    destroy_queue(client->queue);
    free(client);
    grpc_shutdown();
}

void ca_client_result_clear(ca_client_result *result)
{
    if (result == NULL)
        return;
    free(result->cert_chain_pem);
    free(result->trust_bundle_pem);
    result->cert_chain_pem = NULL;
    result->trust_bundle_pem = NULL;
}

/* Packs the request into a new byte buffer, or NULL. */
static grpc_byte_buffer *pack_request(const char *csr_pem, const char *token, uint32_t ttl_s)
{
    Atrium__Ca__V1__CreateCertificateRequest request =
        ATRIUM__CA__V1__CREATE_CERTIFICATE_REQUEST__INIT;
    request.csr_pem = (char *)csr_pem;
    request.token = (char *)(token ? token : "");
    request.ttl_s = ttl_s;
    size_t size = atrium__ca__v1__create_certificate_request__get_packed_size(&request);
    grpc_slice slice = grpc_slice_malloc(size);
    atrium__ca__v1__create_certificate_request__pack(&request, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return buffer;
}

/* Reads the response into result; 0, or -1 with the reason in result->message. */
static int unpack_response(grpc_byte_buffer *buffer, ca_client_result *result)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, buffer)) {
        snprintf(result->message, sizeof(result->message), "cannot read the response");
        return -1;
    }
    grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    Atrium__Ca__V1__CreateCertificateResponse *response =
        atrium__ca__v1__create_certificate_response__unpack(NULL, GRPC_SLICE_LENGTH(slice),
                                                            GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    if (response == NULL) {
        snprintf(result->message, sizeof(result->message),
                 "the response is not a CreateCertificateResponse");
        return -1;
    }
    result->cert_chain_pem = strdup(response->cert_chain_pem ? response->cert_chain_pem : "");
    result->trust_bundle_pem = strdup(response->trust_bundle_pem ? response->trust_bundle_pem : "");
    atrium__ca__v1__create_certificate_response__free_unpacked(response, NULL);
    if (result->cert_chain_pem == NULL || result->trust_bundle_pem == NULL) {
        ca_client_result_clear(result);
        snprintf(result->message, sizeof(result->message), "out of memory");
        return -1;
    }
    return 0;
}

int ca_client_create_certificate(ca_client *client, const char *csr_pem, const char *token,
                                 uint32_t ttl_s, int timeout_ms, ca_client_result *result)
{
    memset(result, 0, sizeof(*result));
    result->status = GRPC_STATUS_UNKNOWN;
    if (client == NULL || csr_pem == NULL) {
        snprintf(result->message, sizeof(result->message), "no client or no CSR");
        return -1;
    }
    if (timeout_ms <= 0)
        timeout_ms = 1;
    gpr_timespec deadline = after_ms(timeout_ms);
    grpc_slice method = grpc_slice_from_static_string(METHOD);
    grpc_call *call = grpc_channel_create_call(client->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                               client->queue, method, NULL, deadline, NULL);
    grpc_slice_unref(method);
    if (call == NULL) {
        snprintf(result->message, sizeof(result->message), "cannot create the call");
        return -1;
    }
    grpc_byte_buffer *request = pack_request(csr_pem, token, ttl_s);
    grpc_byte_buffer *response = NULL;
    grpc_metadata_array initial_metadata, trailing_metadata;
    grpc_metadata_array_init(&initial_metadata);
    grpc_metadata_array_init(&trailing_metadata);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_metadata;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_metadata;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    int outcome = -1;
    int batch_tag = 0;
    grpc_call_error started = grpc_call_start_batch(call, ops, 6, &batch_tag, NULL);
    if (started != GRPC_CALL_OK) {
        snprintf(result->message, sizeof(result->message), "cannot start the call (error %d)",
                 (int)started);
    } else {
        /* The deadline ends the call; the grace only guards against a stuck queue. */
        grpc_event event = grpc_completion_queue_next(
            client->queue, after_ms(timeout_ms + COMPLETION_GRACE_MS), NULL);
        if (event.type != GRPC_OP_COMPLETE) {
            /* Should not happen: cancel, then wait for the batch (it must end
             * before its buffers are freed). */
            grpc_call_cancel(call, NULL);
            event =
                grpc_completion_queue_next(client->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        if (event.type != GRPC_OP_COMPLETE || event.tag != &batch_tag) {
            snprintf(result->message, sizeof(result->message), "the call did not complete");
        } else {
            outcome = 0;
            result->status = (int)status;
            if (status == GRPC_STATUS_OK) {
                if (response == NULL) {
                    result->status = GRPC_STATUS_INTERNAL;
                    snprintf(result->message, sizeof(result->message),
                             "OK without a response message");
                } else if (unpack_response(response, result) != 0) {
                    result->status = GRPC_STATUS_INTERNAL;
                }
            } else {
                size_t length = GRPC_SLICE_LENGTH(details);
                if (length >= sizeof(result->message))
                    length = sizeof(result->message) - 1;
                memcpy(result->message, GRPC_SLICE_START_PTR(details), length);
                result->message[length] = '\0';
            }
        }
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_metadata);
    grpc_metadata_array_destroy(&trailing_metadata);
    if (request != NULL)
        grpc_byte_buffer_destroy(request);
    if (response != NULL)
        grpc_byte_buffer_destroy(response);
    grpc_call_unref(call);
    return outcome;
}
