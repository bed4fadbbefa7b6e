/*
 * ca.h — Atrium's certificate authority: a root (the trust anchor) and an
 * issuing intermediate kept in a directory, signing short-lived workload
 * certificates whose only name is a SPIFFE ID, trust bundles, CRLs, and
 * rotation of the issuer and of the root.
 *
 * Directory layout (created 0700; keys 0600, never logged, never in SQLite):
 *   root.pem root.key issuer.pem issuer.key trust_domain
 *   previous_issuers.pem/.key  issuers replaced by a rotation, kept until they
 *                              expire (their leaves may still need a CRL)
 *   previous_roots.pem/.retire roots replaced by ca_rotate_root and the time
 *                              (ms, one line each) they leave the trust bundle
 * Every change is staged as *.new files and committed with a journal file
 * (rotation.commit), so a crash leaves either the old or the new state.
 *
 * A ca is safe to use from several threads (one internal mutex).
 * Errors are returned (0 / -1 with a message in error[error_size]), never
 * printed; on error nothing is issued and the outputs are NULL / empty.
 */
#ifndef ATRIUM_CERTS_CA_H
#define ATRIUM_CERTS_CA_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>

#define CA_DEFAULT_TRUST_DOMAIN "atrium.local"
#define CA_LEAF_TTL_DEFAULT_S   (24u * 3600u)
#define CA_LEAF_TTL_MIN_S       300u
#define CA_LEAF_TTL_MAX_S       (30u * 24u * 3600u)
#define CA_ROOT_LIFETIME_S      (10LL * 365 * 24 * 3600)
#define CA_ISSUER_LIFETIME_S    (365LL * 24 * 3600)
#define CA_CRL_LIFETIME_S       (24LL * 3600)

typedef struct ca ca;

typedef struct ca_options {
    const char *directory;    /* e.g. <data-dir>/ca; created 0700 when missing */
    const char *trust_domain; /* NULL: CA_DEFAULT_TRUST_DOMAIN */
    /* An operator-provided CA, copied into directory at first start (ignored
     * afterwards): all four paths or none. The root must be self-signed, the
     * issuer a CA signed by it, each key must match its certificate and key
     * files must not be accessible by group or others. */
    const char *root_cert;
    const char *root_key;
    const char *issuer_cert;
    const char *issuer_key;
    int64_t now_ms; /* the current time (validity of what first start creates) */
} ca_options;

/* Opens the CA in options->directory, creating a root (ECDSA P-256, 10 years)
 * and an issuer (1 year, pathlen 0) at first start, or reading them back
 * later. Refuses a key file readable or writable by group or others (the
 * message names the file and its mode), a directory created for another trust
 * domain, missing files and keys that do not match their certificates.
 * *out is released with ca_close. */
int ca_open(const ca_options *options, ca **out, char *error, size_t error_size);
/* Frees the CA (keys are cleared from memory). NULL is ignored. */
void ca_close(ca *authority);

/* The trust domain of the CA (owned by it). */
const char *ca_trust_domain(const ca *authority);

/* Signs a workload CSR. The CSR's signature must verify, its key be ECDSA
 * P-256/P-384 (named curves; explicit curve parameters are refused) or RSA >=
 * 2048, and it must carry exactly one SAN: a URI that is a SPIFFE ID of this
 * trust domain, equal to expected_identity unless that is NULL. ttl_s 0 means
 * 24 h; otherwise it must be within [300 s, 30 days]. The leaf never
 * outlives the issuer (not_after is cut at the issuer's). *chain_pem (leaf PEM
 * then issuer PEM) is a new string the caller frees; record gets serial
 * (lower-case hex), identity and validity, and the caller releases it with
 * model_certificate_clear. */
int ca_sign_csr(ca *authority, const char *csr_pem, const char *expected_identity, uint32_t ttl_s,
                int64_t now_ms, char **chain_pem, model_certificate *record, char *error,
                size_t error_size);

/* Issues a certificate for atriumd's own TLS port: a P-256 key generated here,
 * URI SAN identity (a SPIFFE ID of this trust domain) and, when ip_address is
 * not NULL, an IP SAN (IPv4 or IPv6 literal). TTL rules as ca_sign_csr.
 * *key_pem and *chain_pem are new strings the caller frees; record as above. */
int ca_issue_server_certificate(ca *authority, const char *identity, const char *ip_address,
                                uint32_t ttl_s, int64_t now_ms, char **key_pem, char **chain_pem,
                                model_certificate *record, char *error, size_t error_size);

/* The single URI SAN of a CSR (not checked against any trust domain; the
 * signature is not verified here). *identity is a new string the caller frees. */
int ca_csr_identity(const char *csr_pem, char **identity, char *error, size_t error_size);
/* The single URI SAN of the first certificate in cert_pem; caller frees *identity. */
int ca_certificate_identity(const char *cert_pem, char **identity, char *error, size_t error_size);

/* The serial of the first certificate in cert_pem as lower-case hex, in the
 * form of model_certificate.serial (at least 32 digits, zero-padded), for
 * looking it up in the store. *serial is a new string the caller frees. */
int ca_certificate_serial(const char *cert_pem, char **serial, char *error, size_t error_size);

/* Verifies a presented chain (leaf first, then optional intermediates) at
 * now_ms against the trust bundle at now_ms (the CA's own current and
 * previous issuers are also offered as intermediates). The leaf must not be a
 * CA and must carry one URI SAN, a SPIFFE ID of this trust domain, returned in
 * *identity (caller frees). Revocation is not checked here: the caller looks
 * the serial up in the store. */
int ca_verify_leaf(ca *authority, const char *chain_pem, int64_t now_ms, char **identity,
                   char *error, size_t error_size);

/* The trust bundle at now_ms: the current root, then previous roots not yet
 * retired, as PEM. A new string the caller frees; NULL when out of memory. */
char *ca_trust_bundle_pem(ca *authority, int64_t now_ms);

/* The issuer's certificate, PEM; a new string the caller frees (NULL: no memory). */
char *ca_issuer_pem(ca *authority);

/* The issuer's not_after, ms since the epoch. */
int64_t ca_issuer_not_after_ms(ca *authority);

/* X.509 v2 CRLs listing serials (lower-case or upper-case hex), lastUpdate
 * now_ms, nextUpdate now_ms + 1 day: one CRL per issuer still in use (the
 * current one first, then previous issuers not yet expired), each signed by
 * that issuer and each listing every serial (serials are random 128-bit
 * numbers, so a serial names one certificate). Concatenated PEM, a new string
 * the caller frees; NULL on error (a bad serial, out of memory) with a message. */
char *ca_crl_pem(ca *authority, const char *const *serials, size_t count, int64_t now_ms,
                 char *error, size_t error_size);

/* Replaces the issuer by a new intermediate under the current root. The old
 * one is kept (previous_issuers) until it expires, so its leaves still verify
 * and get CRLs. */
int ca_rotate_issuer(ca *authority, int64_t now_ms, char *error, size_t error_size);

/* Replaces the root and the issuer. The old root stays in the trust bundle
 * until the last issuer under it expires (no leaf outlives its issuer); that
 * retirement time is recorded in previous_roots.retire. */
int ca_rotate_root(ca *authority, int64_t now_ms, char *error, size_t error_size);

#endif
