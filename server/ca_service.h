/*
 * ca_service.h — the mesh's certificate authority as a service: the gRPC
 * method atrium.ca.v1.CertificateService/CreateCertificate on the TLS port,
 * and the operations the admin API needs (trust bundle with CRL, rotation).
 * The method is served on the TLS port of the xDS server's gRPC server.
 *
 * A CSR is signed when a valid, unexpired, unused join token admits exactly
 * the identity the CSR asks for (first certificate), or when the caller's
 * client certificate — issued by this CA, not revoked — carries that same
 * identity (renewal). Anything else is PERMISSION_DENIED or
 * INVALID_ARGUMENT with the reason, and nothing is issued. Every certificate
 * issued is recorded in the store. The CA's keys live in <data-dir>/ca.
 * Thread-safe: the CA itself is used under one lock.
 */
#ifndef ATRIUM_SERVER_CA_SERVICE_H
#define ATRIUM_SERVER_CA_SERVICE_H

#include "store.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ca_service_options {
    const char *data_dir;     /* the CA lives in <data_dir>/ca */
    const char *trust_domain; /* NULL: atrium.local */
    /* An operator's CA (plug-in), all four or none; used at the CA's first start. */
    const char *root_cert, *root_key, *issuer_cert, *issuer_key;
} ca_service_options;

typedef struct ca_service ca_service;

/* Opens (or creates) the CA. Returns 0 with *out (released with
 * ca_service_stop), or -1 with the reason in error. */
int ca_service_open(const ca_service_options *options, store *db, ca_service **out, char *error,
                    size_t error_size);

/* TLS credentials for the port that serves the CA (and xDS over mTLS):
 * atriumd's serving certificate, issued by this CA and re-issued after a
 * rotation; client certificates requested and verified against the roots.
 * The caller releases them after adding the port. */
grpc_server_credentials *ca_service_credentials(ca_service *service);

/* Registers CreateCertificate and the CA's own completion queue on server;
 * call before grpc_server_start. */
void ca_service_attach(ca_service *service, grpc_server *server);

/* After the server started: answers CreateCertificate on its own threads.
 * Returns 0, or -1 with the reason. */
int ca_service_begin(ca_service *service, char *error, size_t error_size);

/* Ends the thread and closes the CA; call after the server that carried the
 * calls was shut down (NULL accepted). */
void ca_service_stop(ca_service *service);

/* The trust bundle: the roots, then a CRL per issuer listing the revoked,
 * unexpired serials. The caller frees it; NULL on failure (error says why). */
char *ca_service_bundle_pem(ca_service *service, char *error, size_t error_size);

/* Replaces the issuing intermediate (root: also starts a root rotation). */
int ca_service_rotate(ca_service *service, bool root, char *error, size_t error_size);

/* When the current issuer expires (for the 30-day warning and the metric). */
int64_t ca_service_issuer_not_after_ms(ca_service *service);

/* Prometheus text (issued, refused, issuer expiry). The caller frees it. */
char *ca_service_metrics(ca_service *service);

#endif
