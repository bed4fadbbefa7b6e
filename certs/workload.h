/*
 * workload.h — the workload (client) side of Atrium's CA: generate a private
 * key locally, build a CSR asking for one SPIFFE ID, and know when to renew.
 *
 * The private key never leaves the workload: only the CSR is sent to the CA.
 * Errors are returned (0 / -1 with a message in error[error_size]), never printed.
 */
#ifndef ATRIUM_CERTS_WORKLOAD_H
#define ATRIUM_CERTS_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

/* Generates an ECDSA P-256 private key; *key_pem is its unencrypted PKCS#8
 * PEM, a new string the caller frees (ideally after clearing it). */
int workload_generate_key(char **key_pem, char *error, size_t error_size);

/* Builds a CSR for identity (a SPIFFE ID, validated) signed with the private
 * key in key_pem: subject CN=<service>, exactly one SAN, the URI identity.
 * *csr_pem is a new string the caller frees. */
int workload_build_csr(const char *key_pem, const char *identity, char **csr_pem, char *error,
                       size_t error_size);

/* When to renew a certificate valid from not_before_ms to not_after_ms: halfway. */
int64_t workload_renew_at_ms(int64_t not_before_ms, int64_t not_after_ms);

/* The validity of the first certificate in cert_pem, in ms since the epoch. */
int workload_certificate_times(const char *cert_pem, int64_t *not_before_ms, int64_t *not_after_ms,
                               char *error, size_t error_size);

#endif
