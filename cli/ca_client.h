/*
 * ca_client.h — a client of atriumd's certificate service
 * (atrium.ca.v1.CertificateService/CreateCertificate over TLS, gRPC C core):
 * send a CSR with a join token (first certificate) or with the current
 * certificate as the TLS client certificate (renewal), get the chain and the
 * trust bundle back. Used by `atriumctl cert issue`, the tests and bench/ca.
 */
#ifndef ATRIUM_CLI_CA_CLIENT_H
#define ATRIUM_CLI_CA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ca_client ca_client;

typedef struct ca_client_options {
    const char *address;      /* host:port of atriumd's TLS port, e.g. 127.0.0.1:15012 */
    const char *trust_bundle; /* PEM roots that atriumd's serving certificate must chain to */
    const char *client_key;   /* PEM; with client_chain, presented for renewals (may be NULL) */
    const char *client_chain; /* PEM leaf + intermediate (may be NULL) */
} ca_client_options;

/* Opens a channel (one TLS connection, reused for every call). NULL with the
 * reason in error on failure. Free with ca_client_free. */
ca_client *ca_client_new(const ca_client_options *options, char *error, size_t error_size);
void ca_client_free(ca_client *client);

typedef struct ca_client_result {
    int status; /* the gRPC status code: 0 OK, 7 PERMISSION_DENIED, 3 INVALID_ARGUMENT, ... */
    char message[512];      /* the status details when not OK */
    char *cert_chain_pem;   /* when OK: leaf + intermediate; the caller frees */
    char *trust_bundle_pem; /* when OK; the caller frees */
} ca_client_result;

/* Sends one CreateCertificate (token may be NULL or ""; ttl_s 0 for the CA's
 * default) and waits at most timeout_ms. Returns 0 when a status came back
 * (result->status says which), -1 when the call could not be made. */
int ca_client_create_certificate(ca_client *client, const char *csr_pem, const char *token,
                                 uint32_t ttl_s, int timeout_ms, ca_client_result *result);

/* Frees the strings of a result. */
void ca_client_result_clear(ca_client_result *result);

#endif
