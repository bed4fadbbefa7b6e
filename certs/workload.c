/*
 * workload.c — key generation, CSR building and renewal timing for workloads
 * (see workload.h). OpenSSL 3 EVP/X509 APIs only.
 */
#include "workload.h"

#include "memory_text.h"
#include "openssl_error.h"
#include "spiffe.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int workload_generate_key(char **key_pem, char *error, size_t error_size)
{
    *key_pem = NULL;
    ERR_clear_error();
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key == NULL) {
        openssl_error_text(error, error_size, "cannot generate a P-256 key");
        return -1;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    int result = -1;
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        openssl_error_text(error, error_size, "cannot encode the private key");
    } else if ((*key_pem = memory_bio_text(bio)) == NULL) {
        openssl_error_text(error, error_size, "out of memory");
    } else {
        result = 0;
    }
    BIO_free(bio);
    EVP_PKEY_free(key);
    return result;
}

/* The digest to sign with for a key: SHA-384 for P-384, SHA-256 otherwise. */
static const EVP_MD *digest_for(EVP_PKEY *key)
{
    if (EVP_PKEY_get_bits(key) == 384 && EVP_PKEY_is_a(key, "EC")) {
        return EVP_sha384();
    }
    return EVP_sha256();
}

int workload_build_csr(const char *key_pem, const char *identity, char **csr_pem, char *error,
                       size_t error_size)
{
    *csr_pem = NULL;
    ERR_clear_error();
    spiffe_id id;
    char message[256];
    if (spiffe_parse(identity, &id, message, sizeof message) != 0) {
        openssl_error_text(error, error_size, "%s", message);
        return -1;
    }
    int result = -1;
    EVP_PKEY *key = NULL;
    X509_REQ *request = NULL;
    GENERAL_NAMES *names = NULL;
    STACK_OF(X509_EXTENSION) *extensions = NULL;
    BIO *bio = BIO_new_mem_buf(key_pem, -1);
    if (bio == NULL || (key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
        openssl_error_text(error, error_size, "cannot read the private key PEM");
        goto done;
    }
    BIO_free(bio);
    bio = NULL;
    request = X509_REQ_new();
    if (request == NULL || X509_REQ_set_version(request, X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_pubkey(request, key) != 1) {
        openssl_error_text(error, error_size, "cannot build the CSR");
        goto done;
    }
    X509_NAME *subject = X509_REQ_get_subject_name(request);
    if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)id.service,
                                   -1, -1, 0) != 1) {
        openssl_error_text(error, error_size, "cannot set the CSR subject");
        goto done;
    }
    names = GENERAL_NAMES_new();
    GENERAL_NAME *name = GENERAL_NAME_new();
    ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
    if (names == NULL || name == NULL || uri == NULL ||
        ASN1_STRING_set(uri, identity, (int)strlen(identity)) != 1) {
        GENERAL_NAME_free(name);
        ASN1_IA5STRING_free(uri);
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    GENERAL_NAME_set0_value(name, GEN_URI, uri);
    if (sk_GENERAL_NAME_push(names, name) <= 0) {
        GENERAL_NAME_free(name);
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    extensions = sk_X509_EXTENSION_new_null();
    if (extensions == NULL ||
        X509V3_add1_i2d(&extensions, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1 ||
        X509_REQ_add_extensions(request, extensions) != 1) {
        openssl_error_text(error, error_size, "cannot add the SAN to the CSR");
        goto done;
    }
    if (X509_REQ_sign(request, key, digest_for(key)) <= 0) {
        openssl_error_text(error, error_size, "cannot sign the CSR");
        goto done;
    }
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509_REQ(bio, request) != 1) {
        openssl_error_text(error, error_size, "cannot encode the CSR");
        goto done;
    }
    if ((*csr_pem = memory_bio_text(bio)) == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    result = 0;
done:
    BIO_free(bio);
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    GENERAL_NAMES_free(names);
    X509_REQ_free(request);
    EVP_PKEY_free(key);
    spiffe_id_clear(&id);
    return result;
}

int64_t workload_renew_at_ms(int64_t not_before_ms, int64_t not_after_ms)
{
    return not_before_ms + (not_after_ms - not_before_ms) / 2;
}

/* An ASN1_TIME as ms since the epoch; false when it cannot be read. */
static bool asn1_time_ms(const ASN1_TIME *time, int64_t *out)
{
    struct tm tm;
    if (time == NULL || ASN1_TIME_to_tm(time, &tm) != 1) {
        return false;
    }
    *out = (int64_t)timegm(&tm) * 1000;
    return true;
}

int workload_certificate_times(const char *cert_pem, int64_t *not_before_ms, int64_t *not_after_ms,
                               char *error, size_t error_size)
{
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(cert_pem, -1);
    X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (cert == NULL) {
        openssl_error_text(error, error_size, "cannot read the certificate PEM");
        return -1;
    }
    int result = 0;
    if (!asn1_time_ms(X509_get0_notBefore(cert), not_before_ms) ||
        !asn1_time_ms(X509_get0_notAfter(cert), not_after_ms)) {
        openssl_error_text(error, error_size, "cannot read the certificate validity");
        result = -1;
    }
    X509_free(cert);
    return result;
}
