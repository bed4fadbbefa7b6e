/*
 * ca_service.c — CreateCertificate over gRPC C core with TLS (client
 * certificates requested and, when present, verified), one completion queue
 * and CA_THREADS threads that sign; unary calls are answered in a single batch.
 */
#include "ca_service.h"

#include "atrium/ca/v1/ca.pb-c.h"
#include "ca.h"
#include "clock.h"
#include "join_tokens.h"
#include "log.h"
#include "spiffe.h"
#include "tsan_handoff.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* CA_THREADS: threads answering CreateCertificate, each with one call
 * requested at a time; the CA itself is thread-safe and signs outside its
 * lock. The threads also poll the server's sockets, and a certificate's store
 * transaction serializes them (SQLite write lock, and now and then a WAL
 * checkpoint), so a few more threads than cores keep the cores busy: with 4
 * clients on 2 cores, 4 threads gave a steadier and somewhat higher rate than
 * 2 (median of 5 alternating runs ~2,440/s against ~2,150/s) at the same CPU
 * per certificate (bench/ca.sh). */
#define METHOD          "/atrium.ca.v1.CertificateService/CreateCertificate"
#define CA_THREADS      4
#define SERVER_IDENTITY "/ns/atrium-system/sa/atriumd"

typedef enum tag_kind { TAG_ACCEPT, TAG_DONE } tag_kind;

typedef struct tag {
    tag_kind kind;
    struct unary_call *call;
} tag;

/* One CreateCertificate call, from accept to its final batch. */
typedef struct unary_call {
    tag accept_tag, done_tag;
    grpc_call *call;
    grpc_metadata_array metadata;
    gpr_timespec deadline;
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_slice details;
    int cancelled;
} unary_call;

struct ca_service {
    store *db;
    ca *authority;
    pthread_mutex_t lock; /* guards authority */
    char trust_domain[256];
    grpc_server *grpc;
    grpc_completion_queue *queue;
    void *method;
    pthread_t threads[CA_THREADS];
    int running; /* threads started */
    atomic_long issued, refused;
    /* The last bundle, reused while its roots and revoked serials are the
     * same (a CRL's signature differs each time it is made, and the bundle
     * goes out over xDS as Secret ROOTCA). Guarded by lock. */
    char *bundle_cache;
    char *bundle_key; /* roots PEM + revoked serials */
    int64_t bundle_made_ms;
    /* Rotations so far, and the one the TLS port's certificates reflect. */
    unsigned generation, served_generation;
};

#define CRL_REFRESH_MS (12LL * 3600 * 1000) /* CRLs are valid for a day */

/* ---- the decision ---- */

/* The client certificate the caller presented (verified by TLS), or NULL. */
static char *peer_certificate(grpc_call *call)
{
    grpc_auth_context *context = grpc_call_auth_context(call);
    if (context == NULL)
        return NULL;
    grpc_auth_property_iterator properties =
        grpc_auth_context_find_properties_by_name(context, "x509_pem_cert");
    const grpc_auth_property *property = grpc_auth_property_iterator_next(&properties);
    char *pem = property ? strndup(property->value, property->value_length) : NULL;
    grpc_auth_context_release(context);
    return pem;
}

/* Whether the call came over TLS (the listener also has a plaintext port). */
static bool over_tls(grpc_call *call)
{
    grpc_auth_context *context = grpc_call_auth_context(call);
    if (context == NULL)
        return false;
    grpc_auth_property_iterator properties =
        grpc_auth_context_find_properties_by_name(context, "transport_security_type");
    const grpc_auth_property *property = grpc_auth_property_iterator_next(&properties);
    bool tls =
        property != NULL && property->value_length == 3 && memcmp(property->value, "ssl", 3) == 0;
    grpc_auth_context_release(context);
    return tls;
}

/* Whether serial is revoked (a revoked certificate cannot renew). */
static bool revoked(store *db, const char *serial, int64_t now_ms)
{
    model_certificate_list list;
    store_error error;
    if (store_list_revoked_certificates(db, now_ms, &list, &error) != STORE_OK)
        return true; /* cannot tell: refuse */
    bool found = false;
    for (size_t i = 0; i < list.count && !found; i++)
        found = strcmp(list.items[i].serial, serial) == 0;
    model_certificate_list_free(&list);
    return found;
}

/* A renewal: the client certificate must be ours, valid, not revoked, and of
 * the identity the CSR asks for. Returns GRPC_STATUS_OK or
 * GRPC_STATUS_PERMISSION_DENIED with why filled. */
static grpc_status_code check_renewal(ca_service *service, grpc_call *call, const char *identity,
                                      int64_t now, char *why, size_t why_size)
{
    char reason[512];
    grpc_status_code status = GRPC_STATUS_OK;
    char *presented = peer_certificate(call);
    char *presented_identity = NULL;
    char *presented_serial = NULL;
    if (presented == NULL) {
        snprintf(why, why_size,
                 "no join token and no client certificate: a first certificate needs a join "
                 "token, a renewal the current certificate of %s",
                 identity);
        status = GRPC_STATUS_PERMISSION_DENIED;
    } else if (ca_verify_leaf(service->authority, presented, now, &presented_identity, reason,
                              sizeof(reason)) != 0) {
        snprintf(why, why_size, "client certificate: %s", reason);
        status = GRPC_STATUS_PERMISSION_DENIED;
    } else if (strcmp(presented_identity, identity) != 0) {
        snprintf(why, why_size, "the client certificate is %s, the CSR asks for %s",
                 presented_identity, identity);
        status = GRPC_STATUS_PERMISSION_DENIED;
    } else if (ca_certificate_serial(presented, &presented_serial, reason, sizeof(reason)) != 0 ||
               revoked(service->db, presented_serial, now)) {
        snprintf(why, why_size, "the client certificate is revoked");
        status = GRPC_STATUS_PERMISSION_DENIED;
    }
    free(presented);
    free(presented_identity);
    free(presented_serial);
    return status;
}

/* Signs, then authorizes; on refusal the certificate is thrown away (it
 * never leaves this function, and no record of it exists) and the status
 * says why. Signing first parses the CSR once, for both its checks and its
 * identity. A first certificate's token use and its record are one store
 * transaction, so a refusal never uses up a token. */
static grpc_status_code create_certificate(ca_service *service, grpc_call *call,
                                           const Atrium__Ca__V1__CreateCertificateRequest *request,
                                           char **chain, char **bundle, char *why, size_t why_size)
{
    int64_t now = clock_wall_ms();
    char reason[512];
    *chain = *bundle = NULL;
    if (request->csr_pem == NULL || request->csr_pem[0] == '\0') {
        snprintf(why, why_size, "csr_pem is required");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (request->ttl_s != 0 &&
        (request->ttl_s < CA_LEAF_TTL_MIN_S || request->ttl_s > CA_LEAF_TTL_MAX_S)) {
        snprintf(why, why_size,
                 "ttl_s: %" PRIu32 " s is outside [%u s, %u s] (0: the default, %u s)",
                 request->ttl_s, CA_LEAF_TTL_MIN_S, CA_LEAF_TTL_MAX_S, CA_LEAF_TTL_DEFAULT_S);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    model_certificate record;
    memset(&record, 0, sizeof(record));
    if (ca_sign_csr(service->authority, request->csr_pem, NULL, request->ttl_s, now, chain, &record,
                    reason, sizeof(reason)) != 0) {
        snprintf(why, why_size, "csr_pem: %s", reason);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const char *identity = record.identity;
    grpc_status_code status = GRPC_STATUS_OK;
    bool first_certificate = request->token != NULL && request->token[0] != '\0';
    if (!first_certificate) {
        status = check_renewal(service, call, identity, now, why, why_size);
    }
    if (status == GRPC_STATUS_OK &&
        (*bundle = ca_trust_bundle_pem(service->authority, now)) == NULL) {
        snprintf(why, why_size, "could not build the trust bundle");
        status = GRPC_STATUS_INTERNAL;
    }
    store_error error;
    if (status == GRPC_STATUS_OK && first_certificate) {
        /* The token must admit exactly this identity; its use is counted and
         * the certificate recorded in one transaction. */
        uint8_t token_hash[MODEL_TOKEN_HASH_SIZE];
        join_token_hash(request->token, token_hash);
        spiffe_id asked;
        if (spiffe_parse(identity, &asked, reason, sizeof(reason)) != 0) {
            snprintf(why, why_size, "csr_pem: %s", reason);
            status = GRPC_STATUS_INVALID_ARGUMENT;
        } else {
            store_status stored = store_record_certificate_with_join_token(
                service->db, token_hash, asked.namespace_name, asked.service, now, &record, NULL,
                &error);
            if (stored == STORE_NOT_FOUND ||
                (stored == STORE_CONFLICT && strcmp(error.field, "token") == 0)) {
                snprintf(why, why_size, "%s (the CSR asks for %s)", error.message, identity);
                status = GRPC_STATUS_PERMISSION_DENIED;
            } else if (stored != STORE_OK) {
                snprintf(why, why_size, "could not record the certificate: %s", error.message);
                status = GRPC_STATUS_INTERNAL;
            }
            spiffe_id_clear(&asked);
        }
    } else if (status == GRPC_STATUS_OK &&
               store_record_certificate(service->db, &record, NULL, &error) != STORE_OK) {
        snprintf(why, why_size, "could not record the certificate: %s", error.message);
        status = GRPC_STATUS_INTERNAL;
    }
    if (status != GRPC_STATUS_OK) {
        free(*chain);
        free(*bundle);
        *chain = *bundle = NULL;
    }
    model_certificate_clear(&record);
    return status;
}

/* ---- the call ---- */

static void request_call(ca_service *service)
{
    unary_call *pending = calloc(1, sizeof(*pending));
    if (pending == NULL)
        return;
    pending->accept_tag = (tag){TAG_ACCEPT, pending};
    pending->done_tag = (tag){TAG_DONE, pending};
    grpc_metadata_array_init(&pending->metadata);
    HANDOFF_RELEASE(&pending->accept_tag); /* taken by whichever signing thread gets the call */
    if (grpc_server_request_registered_call(service->grpc, service->method, &pending->call,
                                            &pending->deadline, &pending->metadata,
                                            &pending->request, service->queue, service->queue,
                                            &pending->accept_tag) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&pending->metadata);
        free(pending);
    }
}

static void free_call(unary_call *pending)
{
    grpc_metadata_array_destroy(&pending->metadata);
    if (pending->request)
        grpc_byte_buffer_destroy(pending->request);
    if (pending->response)
        grpc_byte_buffer_destroy(pending->response);
    grpc_slice_unref(pending->details);
    if (pending->call)
        grpc_call_unref(pending->call);
    free(pending);
}

static void answer(ca_service *service, unary_call *pending)
{
    grpc_status_code status = GRPC_STATUS_INVALID_ARGUMENT;
    char why[768] = "the request is not a CreateCertificateRequest";
    char *chain = NULL, *bundle = NULL;
    Atrium__Ca__V1__CreateCertificateRequest *request = NULL;
    if (pending->request != NULL) {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, pending->request);
        grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        request = atrium__ca__v1__create_certificate_request__unpack(NULL, GRPC_SLICE_LENGTH(slice),
                                                                     GRPC_SLICE_START_PTR(slice));
        grpc_slice_unref(slice);
    }
    if (request != NULL && !over_tls(pending->call)) {
        status = GRPC_STATUS_UNAUTHENTICATED;
        snprintf(why, sizeof(why), "the certificate service answers on atriumd's TLS port only");
    } else if (request != NULL) {
        status =
            create_certificate(service, pending->call, request, &chain, &bundle, why, sizeof(why));
    }
    if (request != NULL)
        atrium__ca__v1__create_certificate_request__free_unpacked(request, NULL);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t count = 0;
    ops[count++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (status == GRPC_STATUS_OK) {
        Atrium__Ca__V1__CreateCertificateResponse response =
            ATRIUM__CA__V1__CREATE_CERTIFICATE_RESPONSE__INIT;
        response.cert_chain_pem = chain;
        response.trust_bundle_pem = bundle;
        grpc_slice slice = grpc_slice_malloc(
            atrium__ca__v1__create_certificate_response__get_packed_size(&response));
        atrium__ca__v1__create_certificate_response__pack(&response, GRPC_SLICE_START_PTR(slice));
        pending->response = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        ops[count].op = GRPC_OP_SEND_MESSAGE;
        ops[count++].data.send_message.send_message = pending->response;
        pending->details = grpc_empty_slice();
        atomic_fetch_add(&service->issued, 1);
    } else {
        pending->details = grpc_slice_from_copied_string(why);
        atomic_fetch_add(&service->refused, 1);
        log_info("certificate refused: %s", why);
    }
    free(chain);
    free(bundle);
    ops[count].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[count].data.send_status_from_server.status = status;
    ops[count++].data.send_status_from_server.status_details = &pending->details;
    ops[count].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[count++].data.recv_close_on_server.cancelled = &pending->cancelled;
    grpc_call *call = pending->call; /* after the release, pending is another thread's */
    HANDOFF_RELEASE(&pending->done_tag);
    if (grpc_call_start_batch(call, ops, count, &pending->done_tag, NULL) != GRPC_CALL_OK)
        free_call(pending);
}

static void *serve(void *context)
{
    ca_service *service = context;
    for (;;) {
        grpc_event event =
            grpc_completion_queue_next(service->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (event.type == GRPC_QUEUE_SHUTDOWN)
            break;
        HANDOFF_ACQUIRE(event.tag);
        tag *done = event.tag;
        unary_call *pending = done->call;
        if (done->kind == TAG_DONE) {
            free_call(pending);
            continue;
        }
        if (event.success) {
            answer(service, pending);
            request_call(service);
        } else {
            free_call(pending);
        }
    }
    return NULL;
}

/* ---- the serving certificate ---- */

/* grpc's certificate-config fetcher: a new serving certificate (and the
 * current roots for client certificates) whenever the CA rotated since the
 * last one; otherwise unchanged. Called on grpc's threads. */
static grpc_ssl_certificate_config_reload_status
fetch_serving_config(void *user_data, grpc_ssl_server_certificate_config **config)
{
    ca_service *service = user_data;
    pthread_mutex_lock(&service->lock);
    if (service->served_generation == service->generation) {
        pthread_mutex_unlock(&service->lock);
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    }
    int64_t now = clock_wall_ms();
    char identity[512], error[256];
    snprintf(identity, sizeof(identity), "spiffe://%s%s", service->trust_domain, SERVER_IDENTITY);
    char *key = NULL, *chain = NULL;
    model_certificate record;
    memset(&record, 0, sizeof(record));
    int issued =
        ca_issue_server_certificate(service->authority, identity, "127.0.0.1", CA_LEAF_TTL_MAX_S,
                                    now, &key, &chain, &record, error, sizeof(error));
    char *roots = issued == 0 ? ca_trust_bundle_pem(service->authority, now) : NULL;
    if (roots != NULL) {
        grpc_ssl_pem_key_cert_pair pair = {key, chain};
        *config = grpc_ssl_server_certificate_config_create(roots, &pair, 1);
        service->served_generation = service->generation;
    }
    pthread_mutex_unlock(&service->lock);
    store_error failure;
    if (roots != NULL)
        store_record_certificate(service->db, &record, NULL, &failure);
    else
        log_error("cannot issue atriumd's serving certificate: %s", error);
    model_certificate_clear(&record);
    free(key);
    free(chain);
    free(roots);
    return roots != NULL ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                         : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
}

/* ---- lifecycle ---- */

int ca_service_open(const ca_service_options *options, store *db, ca_service **out, char *error,
                    size_t error_size)
{
    *out = NULL;
    ca_service *service = calloc(1, sizeof(*service));
    if (service == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    service->db = db;
    pthread_mutex_init(&service->lock, NULL);
    snprintf(service->trust_domain, sizeof(service->trust_domain), "%s",
             options->trust_domain ? options->trust_domain : CA_DEFAULT_TRUST_DOMAIN);
    char directory[4096];
    snprintf(directory, sizeof(directory), "%s/ca", options->data_dir);
    ca_options settings = {.directory = directory,
                           .trust_domain = service->trust_domain,
                           .root_cert = options->root_cert,
                           .root_key = options->root_key,
                           .issuer_cert = options->issuer_cert,
                           .issuer_key = options->issuer_key,
                           .now_ms = clock_wall_ms()};
    if (ca_open(&settings, &service->authority, error, error_size) != 0) {
        ca_service_stop(service);
        return -1;
    }
    service->generation = 1; /* served_generation 0: the first fetch issues one */
    *out = service;
    return 0;
}

grpc_server_credentials *ca_service_credentials(ca_service *service)
{
    /* The serving certificate and the client roots come from a fetcher that
     * grpc asks before handshakes: after a rotation it issues a new serving
     * certificate and trusts the new roots, without a restart. Client
     * certificates are requested, and verified when presented: a first
     * certificate is asked for without one. */
    return grpc_ssl_server_credentials_create_with_options(
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY, fetch_serving_config, service));
}

void ca_service_attach(ca_service *service, grpc_server *server)
{
    grpc_init();
    service->grpc = server;
    service->queue = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, service->queue, NULL);
    service->method = grpc_server_register_method(server, METHOD, NULL,
                                                  GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
}

int ca_service_begin(ca_service *service, char *error, size_t error_size)
{
    /* One call waiting per thread; each answered call asks for the next. */
    for (int i = 0; i < CA_THREADS; i++) {
        request_call(service);
        if (pthread_create(&service->threads[i], NULL, serve, service) != 0) {
            snprintf(error, error_size, "cannot start a CA thread");
            return -1;
        }
        service->running++;
    }
    return 0;
}

void ca_service_stop(ca_service *service)
{
    if (service == NULL)
        return;
    if (service->queue != NULL) {
        /* The server that carried the calls was shut down first: pending
         * requests have completed as cancelled; end the thread and the queue. */
        grpc_completion_queue_shutdown(service->queue);
        for (int i = 0; i < service->running; i++)
            pthread_join(service->threads[i], NULL);
        if (service->running == 0)
            while (
                grpc_completion_queue_next(service->queue, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                    .type != GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(service->queue);
        grpc_shutdown();
    }
    ca_close(service->authority);
    free(service->bundle_cache);
    free(service->bundle_key);
    pthread_mutex_destroy(&service->lock);
    free(service);
}

/* Roots, then one CRL per issuer in use listing the revoked, unexpired serials. */
static char *make_bundle(ca_service *service, char *error, size_t error_size)
{
    int64_t now = clock_wall_ms();
    model_certificate_list revoked_list;
    store_error failure;
    if (store_list_revoked_certificates(service->db, now, &revoked_list, &failure) != STORE_OK) {
        snprintf(error, error_size, "%s", failure.message);
        return NULL;
    }
    const char **serials = calloc(revoked_list.count ? revoked_list.count : 1, sizeof(char *));
    for (size_t i = 0; serials != NULL && i < revoked_list.count; i++)
        serials[i] = revoked_list.items[i].serial;
    pthread_mutex_lock(&service->lock);
    char *roots = ca_trust_bundle_pem(service->authority, now);
    char *crl = serials ? ca_crl_pem(service->authority, serials, revoked_list.count, now, error,
                                     error_size)
                        : NULL;
    pthread_mutex_unlock(&service->lock);
    free(serials);
    model_certificate_list_free(&revoked_list);
    char *bundle = NULL;
    if (roots != NULL && crl != NULL && asprintf(&bundle, "%s%s", roots, crl) < 0)
        bundle = NULL;
    if (bundle == NULL && roots != NULL && crl != NULL)
        snprintf(error, error_size, "out of memory");
    free(roots);
    free(crl);
    return bundle;
}

/* The bundle as above, made again only when its roots or revoked serials
 * changed, or its CRLs are half-way through their life. */
char *ca_service_bundle_pem(ca_service *service, char *error, size_t error_size)
{
    int64_t now = clock_wall_ms();
    model_certificate_list revoked_list;
    store_error failure;
    if (store_list_revoked_certificates(service->db, now, &revoked_list, &failure) != STORE_OK) {
        snprintf(error, error_size, "%s", failure.message);
        return NULL;
    }
    pthread_mutex_lock(&service->lock);
    char *roots = ca_trust_bundle_pem(service->authority, now);
    pthread_mutex_unlock(&service->lock);
    char *key = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&key, &length);
    if (out != NULL) {
        fputs(roots ? roots : "", out);
        for (size_t i = 0; i < revoked_list.count; i++)
            fprintf(out, "%s\n", revoked_list.items[i].serial);
        fclose(out);
    }
    model_certificate_list_free(&revoked_list);
    free(roots);
    char *bundle = NULL;
    pthread_mutex_lock(&service->lock);
    bool fresh = key != NULL && service->bundle_key != NULL &&
                 strcmp(key, service->bundle_key) == 0 &&
                 now - service->bundle_made_ms < CRL_REFRESH_MS;
    if (fresh)
        bundle = strdup(service->bundle_cache);
    pthread_mutex_unlock(&service->lock);
    if (fresh) {
        free(key);
        return bundle;
    }
    bundle = make_bundle(service, error, error_size);
    pthread_mutex_lock(&service->lock);
    if (bundle != NULL && key != NULL) {
        free(service->bundle_cache);
        free(service->bundle_key);
        service->bundle_cache = strdup(bundle);
        service->bundle_key = key;
        service->bundle_made_ms = now;
        key = NULL;
    }
    pthread_mutex_unlock(&service->lock);
    free(key);
    return bundle;
}

int ca_service_rotate(ca_service *service, bool root, char *error, size_t error_size)
{
    int64_t now = clock_wall_ms();
    pthread_mutex_lock(&service->lock);
    int result = root ? ca_rotate_root(service->authority, now, error, error_size)
                      : ca_rotate_issuer(service->authority, now, error, error_size);
    if (result == 0) {
        service->generation++;     /* new serving certificate and roots on the TLS port */
        free(service->bundle_key); /* a new issuer needs its CRL in the bundle */
        service->bundle_key = NULL;
    }
    pthread_mutex_unlock(&service->lock);
    return result;
}

int64_t ca_service_issuer_not_after_ms(ca_service *service)
{
    pthread_mutex_lock(&service->lock);
    int64_t not_after = ca_issuer_not_after_ms(service->authority);
    pthread_mutex_unlock(&service->lock);
    return not_after;
}

char *ca_service_metrics(ca_service *service)
{
    char *text = NULL;
    int64_t remaining_s = (ca_service_issuer_not_after_ms(service) - clock_wall_ms()) / 1000;
    if (asprintf(&text,
                 "# HELP atrium_ca_certificates_issued_total Certificates issued over gRPC.\n"
                 "# TYPE atrium_ca_certificates_issued_total counter\n"
                 "atrium_ca_certificates_issued_total %ld\n"
                 "# HELP atrium_ca_requests_refused_total Certificate requests refused.\n"
                 "# TYPE atrium_ca_requests_refused_total counter\n"
                 "atrium_ca_requests_refused_total %ld\n"
                 "# HELP atrium_ca_issuer_expiry_seconds Seconds until the issuing certificate "
                 "expires.\n"
                 "# TYPE atrium_ca_issuer_expiry_seconds gauge\n"
                 "atrium_ca_issuer_expiry_seconds %lld\n",
                 atomic_load(&service->issued), atomic_load(&service->refused),
                 (long long)remaining_s) < 0)
        return NULL;
    return text;
}
