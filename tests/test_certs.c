/*
 * test_certs.c — unit tests of certs/: SPIFFE IDs, the CA (first start,
 * reopen, key file modes, plug-in CA, CSR signing and every refusal, TTL
 * rules, issuer and root rotation, CRLs, leaf verification, server
 * certificates) and the workload side (keys, CSRs, renewal time).
 * Chains are also checked with the openssl CLI. Each test has its own
 * temporary directory, removed afterwards.
 */
/* cmocka.h needs these first, in this order. */
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include "ca.h"
#include "memory_text.h"
#include "model.h"
#include "spiffe.h"
#include "workload.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The openssl command line tool; the build may pass its full path. */
#ifndef OPENSSL_CLI
#define OPENSSL_CLI "openssl"
#endif

#define IDENTITY "spiffe://atrium.local/ns/default/sa/web"
#define HOUR_MS  (3600LL * 1000)
#define DAY_MS   (24 * HOUR_MS)

typedef struct fixture {
    char dir[64];
    char ca_dir[96];
    ca *authority;
    int64_t now_ms;
} fixture;

/* ---- helpers ------------------------------------------------------------------ */

static int64_t wall_ms(void)
{
    return (int64_t)time(NULL) * 1000;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/atrium-certs-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->ca_dir, sizeof f->ca_dir, "%s/ca", f->dir);
    f->now_ms = wall_ms();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ca_close(f->authority);
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static ca *open_ca_at(const char *directory, int64_t now_ms)
{
    ca_options options = {.directory = directory, .now_ms = now_ms};
    ca *authority = NULL;
    char error[512] = "";
    if (ca_open(&options, &authority, error, sizeof error) != 0) {
        fail_msg("ca_open(%s): %s", directory, error);
    }
    return authority;
}

static void open_ca(fixture *f)
{
    f->authority = open_ca_at(f->ca_dir, f->now_ms);
}

static char *path_in(const fixture *f, const char *name)
{
    static char paths[8][256];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, 256, "%s/%s", f->dir, name);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    assert_int_equal(fputs(text, file) >= 0, 1);
    assert_int_equal(fclose(file), 0);
}

/* Writes chain's first certificate to <dir>/<leaf_name> and the rest to <dir>/<issuer_name>. */
static void write_chain(const fixture *f, const char *chain, const char *leaf_name,
                        const char *issuer_name)
{
    const char *second = strstr(chain + 1, "-----BEGIN CERTIFICATE-----");
    assert_non_null(second);
    char *leaf = strndup(chain, (size_t)(second - chain));
    assert_non_null(leaf);
    write_text(path_in(f, leaf_name), leaf);
    write_text(path_in(f, issuer_name), second);
    free(leaf);
}

/* Runs `openssl verify` in the fixture's directory; returns its exit status. */
static int openssl_verify(const fixture *f, const char *bundle, const char *untrusted,
                          const char *leaf, const char *extra)
{
    char command[1024];
    snprintf(command, sizeof command,
             "cd '%s' && '%s' verify %s -CAfile %s -untrusted %s %s >verify.out 2>&1", f->dir,
             OPENSSL_CLI, extra != NULL ? extra : "", bundle, untrusted, leaf);
    int status = system(command);
    return status == -1 ? -1 : WEXITSTATUS(status);
}

static X509 *parse_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    assert_non_null(bio);
    X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(cert);
    return cert;
}

static size_t count_certs(const char *pem)
{
    size_t count = 0;
    for (const char *p = pem; (p = strstr(p, "-----BEGIN CERTIFICATE-----")) != NULL; p++) {
        count++;
    }
    return count;
}

static char *make_csr(const char *identity)
{
    char error[256] = "";
    char *key = NULL;
    char *csr = NULL;
    assert_int_equal(workload_generate_key(&key, error, sizeof error), 0);
    if (workload_build_csr(key, identity, &csr, error, sizeof error) != 0) {
        fail_msg("workload_build_csr: %s", error);
    }
    free(key);
    return csr;
}

/* Signs a fresh CSR for identity; returns the chain (the caller frees it), fills record.
 * Not inlined: GCC 12 at -O3 takes the chain returned through &chain for a pointer into this
 * frame (a false -Wdangling-pointer in the callers). */
__attribute__((noinline)) static char *sign_new(fixture *f, const char *identity, int64_t now_ms,
                                                model_certificate *record)
{
    char *csr = make_csr(identity);
    char *chain = NULL;
    char error[512] = "";
    if (ca_sign_csr(f->authority, csr, identity, 0, now_ms, &chain, record, error, sizeof error) !=
        0) {
        fail_msg("ca_sign_csr: %s", error);
    }
    free(csr);
    return chain;
}

typedef struct san {
    int type; /* GEN_URI or GEN_DNS */
    const char *value;
} san;

/* A CSR signed by key with the given SANs and digest (built by hand, for the refusals). */
static char *custom_csr_with_digest(EVP_PKEY *key, const san *sans, size_t count,
                                    const EVP_MD *digest)
{
    X509_REQ *request = X509_REQ_new();
    assert_non_null(request);
    assert_int_equal(X509_REQ_set_pubkey(request, key), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(request), "CN",
                                                MBSTRING_UTF8, (const unsigned char *)"web", -1, -1,
                                                0),
                     1);
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    for (size_t i = 0; i < count; i++) {
        GENERAL_NAME *name = GENERAL_NAME_new();
        ASN1_IA5STRING *value = ASN1_IA5STRING_new();
        assert_int_equal(ASN1_STRING_set(value, sans[i].value, -1), 1);
        GENERAL_NAME_set0_value(name, sans[i].type, value);
        sk_GENERAL_NAME_push(names, name);
    }
    STACK_OF(X509_EXTENSION) *extensions = sk_X509_EXTENSION_new_null();
    assert_int_equal(
        X509V3_add1_i2d(&extensions, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT), 1);
    assert_int_equal(X509_REQ_add_extensions(request, extensions), 1);
    assert_true(X509_REQ_sign(request, key, digest) > 0);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(bio, request), 1);
    char *pem = memory_bio_text(bio);
    BIO_free(bio);
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    GENERAL_NAMES_free(names);
    X509_REQ_free(request);
    return pem;
}

/* The usual CSR: signed with SHA-256. */
static char *custom_csr(EVP_PKEY *key, const san *sans, size_t count)
{
    return custom_csr_with_digest(key, sans, count, EVP_sha256());
}

/* The same CSR with one bit of its signature flipped. */
static char *tamper_csr(const char *csr_pem)
{
    BIO *bio = BIO_new_mem_buf(csr_pem, -1);
    X509_REQ *request = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(request);
    unsigned char *der = NULL;
    int length = i2d_X509_REQ(request, &der);
    assert_true(length > 10);
    der[length - 5] ^= 0x01; /* inside the signature BIT STRING, at the end */
    const unsigned char *cursor = der;
    X509_REQ *tampered = d2i_X509_REQ(NULL, &cursor, length);
    assert_non_null(tampered);
    bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(bio, tampered), 1);
    char *pem = memory_bio_text(bio);
    BIO_free(bio);
    X509_REQ_free(tampered);
    X509_REQ_free(request);
    OPENSSL_free(der);
    return pem;
}

/* Asserts a CSR is refused with a message containing fragment, and nothing is issued. */
static void assert_refused(fixture *f, const char *csr, const char *expected, uint32_t ttl_s,
                           const char *fragment)
{
    char *chain = (char *)"sentinel";
    model_certificate record = {.serial = (char *)"sentinel"};
    char error[512] = "";
    int rc = ca_sign_csr(f->authority, csr, expected, ttl_s, f->now_ms, &chain, &record, error,
                         sizeof error);
    if (rc != -1) {
        fail_msg("expected a refusal containing \"%s\"", fragment);
    }
    assert_null(chain);
    assert_null(record.serial);
    assert_null(record.identity);
    if (strstr(error, fragment) == NULL) {
        fail_msg("error \"%s\" does not contain \"%s\"", error, fragment);
    }
}

/* ---- spiffe ---------------------------------------------------------------------- */

static void test_spiffe_format_parse(void **state)
{
    (void)state;
    char error[256];
    char *id = NULL;
    assert_int_equal(spiffe_format("atrium.local", "default", "web", &id, error, sizeof error), 0);
    assert_string_equal(id, IDENTITY);
    spiffe_id parts;
    assert_int_equal(spiffe_parse(id, &parts, error, sizeof error), 0);
    assert_string_equal(parts.trust_domain, "atrium.local");
    assert_string_equal(parts.namespace_name, "default");
    assert_string_equal(parts.service, "web");
    spiffe_id_clear(&parts);
    free(id);

    assert_int_equal(spiffe_format("Atrium", "default", "web", &id, error, sizeof error), -1);
    assert_null(id);
    assert_int_equal(spiffe_format("a", "Bad_ns", "web", &id, error, sizeof error), -1);
    assert_int_equal(spiffe_format("a", "default", "-web", &id, error, sizeof error), -1);

    const char *bad[] = {
        "spiffe://atrium.local/ns/default/sa/web/",
        "spiffe://atrium.local/ns/default/sa",
        "spiffe://atrium.local/ns/default/sa/web/x",
        "spiffe://atrium.local/ns/default/xx/web",
        "spiffe://Atrium.local/ns/default/sa/web",
        "spiffe://atrium.local:8080/ns/default/sa/web",
        "spiffe:///ns/default/sa/web",
        "spiffe://atrium.local/ns//sa/web",
        "spiffe://atrium.local/ns/UPPER/sa/web",
        "SPIFFE://atrium.local/ns/default/sa/web",
        "https://atrium.local/ns/default/sa/web",
        "spiffe://atrium.local",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        error[0] = '\0';
        if (spiffe_parse(bad[i], &parts, error, sizeof error) != -1) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
        assert_null(parts.trust_domain);
        assert_true(error[0] != '\0');
    }
    char long_domain[300];
    memset(long_domain, 'a', 256);
    long_domain[256] = '\0';
    assert_false(spiffe_trust_domain_is_valid(long_domain));
    long_domain[255] = '\0';
    assert_true(spiffe_trust_domain_is_valid(long_domain));
}

/* ---- first start, reopen, modes, plug-in ------------------------------------------- */

static void assert_mode(const char *path, unsigned mode)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fail_msg("missing %s", path);
    }
    assert_int_equal(st.st_mode & 07777, mode);
}

static void test_first_start(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char path[256];
    assert_mode(f->ca_dir, 0700);
    snprintf(path, sizeof path, "%s/root.key", f->ca_dir);
    assert_mode(path, 0600);
    snprintf(path, sizeof path, "%s/issuer.key", f->ca_dir);
    assert_mode(path, 0600);
    snprintf(path, sizeof path, "%s/root.pem", f->ca_dir);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/rotation.commit", f->ca_dir);
    assert_int_equal(access(path, F_OK), -1);

    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_non_null(bundle);
    assert_int_equal(count_certs(bundle), 1);
    X509 *root = parse_cert(bundle);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "Atrium Root CA atrium.local");
    assert_int_equal(X509_check_ca(root), 1);
    assert_int_equal(X509_get_key_usage(root), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(root));
    assert_non_null(X509_get0_authority_key_id(root));
    EVP_PKEY *key = X509_get0_pubkey(root);
    assert_true(EVP_PKEY_is_a(key, "EC"));
    assert_int_equal(EVP_PKEY_get_bits(key), 256);
    int days = 0;
    int seconds = 0;
    assert_int_equal(
        ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(root), X509_get0_notAfter(root)), 1);
    assert_int_equal(days, 3650);
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(root), NULL);
    assert_true(BN_num_bits(serial) > 64 && BN_num_bits(serial) <= 128);
    BN_free(serial);

    char *issuer_pem = ca_issuer_pem(f->authority);
    X509 *issuer = parse_cert(issuer_pem);
    assert_int_equal(X509_check_ca(issuer), 1);
    assert_int_equal(X509_get_pathlen(issuer), 0);
    assert_int_equal(X509_check_issued(root, issuer), X509_V_OK);
    assert_int_equal(X509_verify(issuer, X509_get0_pubkey(root)), 1);
    assert_int_equal(
        ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(issuer), X509_get0_notAfter(issuer)),
        1);
    assert_int_equal(days, 365);
    assert_true(ca_issuer_not_after_ms(f->authority) > f->now_ms + 364 * DAY_MS);
    X509_free(issuer);
    X509_free(root);
    free(issuer_pem);
    free(bundle);
}

static void test_reopen_same_root(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    char *issuer = ca_issuer_pem(f->authority);
    ca_close(f->authority);
    f->authority = open_ca_at(f->ca_dir, f->now_ms + HOUR_MS);
    char *again = ca_trust_bundle_pem(f->authority, f->now_ms);
    char *issuer_again = ca_issuer_pem(f->authority);
    assert_string_equal(bundle, again);
    assert_string_equal(issuer, issuer_again);
    free(bundle);
    free(again);
    free(issuer);
    free(issuer_again);

    /* Another trust domain on the same directory is refused. */
    ca_options options = {.directory = f->ca_dir, .trust_domain = "other.local", .now_ms = 0};
    ca *other = NULL;
    char error[512] = "";
    assert_int_equal(ca_open(&options, &other, error, sizeof error), -1);
    assert_null(other);
    assert_non_null(strstr(error, "trust domain"));
}

static void test_key_mode_refused(void **state)
{
    fixture *f = *state;
    open_ca(f);
    ca_close(f->authority);
    f->authority = NULL;
    const char *names[] = {"root.key", "issuer.key"};
    for (size_t i = 0; i < 2; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", f->ca_dir, names[i]);
        assert_int_equal(chmod(path, 0644), 0);
        ca_options options = {.directory = f->ca_dir, .now_ms = f->now_ms};
        ca *authority = NULL;
        char error[512] = "";
        assert_int_equal(ca_open(&options, &authority, error, sizeof error), -1);
        assert_null(authority);
        assert_non_null(strstr(error, path));
        assert_non_null(strstr(error, "0644"));
        assert_int_equal(chmod(path, 0600), 0);
    }
    /* A damaged key file, a missing certificate: refused with the file's name. */
    char path[256];
    snprintf(path, sizeof path, "%s/issuer.key", f->ca_dir);
    char *saved = NULL;
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    char buffer[4096];
    size_t length = fread(buffer, 1, sizeof buffer - 1, file);
    fclose(file);
    buffer[length] = '\0';
    saved = strdup(buffer);
    write_text(path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    ca_options options = {.directory = f->ca_dir, .now_ms = f->now_ms};
    ca *authority = NULL;
    char error[512] = "";
    assert_int_equal(ca_open(&options, &authority, error, sizeof error), -1);
    assert_non_null(strstr(error, path));
    write_text(path, saved);
    free(saved);
    snprintf(path, sizeof path, "%s/issuer.pem", f->ca_dir);
    char moved[256];
    snprintf(moved, sizeof moved, "%s/issuer.pem.bak", f->ca_dir);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(ca_open(&options, &authority, error, sizeof error), -1);
    assert_non_null(strstr(error, path));
    assert_int_equal(rename(moved, path), 0);
    open_ca(f);
}

static void test_plugin_ca(void **state)
{
    fixture *f = *state;
    char source[128];
    snprintf(source, sizeof source, "%s/operator", f->dir);
    ca *operator_ca = open_ca_at(source, f->now_ms);
    char *operator_bundle = ca_trust_bundle_pem(operator_ca, f->now_ms);
    char *operator_issuer = ca_issuer_pem(operator_ca);
    ca_close(operator_ca);

    char root_cert[192], root_key[192], issuer_cert[192], issuer_key[192];
    snprintf(root_cert, sizeof root_cert, "%s/root.pem", source);
    snprintf(root_key, sizeof root_key, "%s/root.key", source);
    snprintf(issuer_cert, sizeof issuer_cert, "%s/issuer.pem", source);
    snprintf(issuer_key, sizeof issuer_key, "%s/issuer.key", source);

    /* Three of four is refused. */
    ca_options options = {.directory = f->ca_dir,
                          .root_cert = root_cert,
                          .root_key = root_key,
                          .issuer_cert = issuer_cert,
                          .now_ms = f->now_ms};
    char error[512] = "";
    assert_int_equal(ca_open(&options, &f->authority, error, sizeof error), -1);
    assert_non_null(strstr(error, "all four"));
    /* Swapped: the issuer as root is refused. */
    options.root_cert = issuer_cert;
    options.root_key = issuer_key;
    options.issuer_cert = root_cert;
    options.issuer_key = root_key;
    assert_int_equal(ca_open(&options, &f->authority, error, sizeof error), -1);
    assert_non_null(strstr(error, "self-signed"));

    options.root_cert = root_cert;
    options.root_key = root_key;
    options.issuer_cert = issuer_cert;
    options.issuer_key = issuer_key;
    if (ca_open(&options, &f->authority, error, sizeof error) != 0) {
        fail_msg("plug-in ca_open: %s", error);
    }
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    char *issuer = ca_issuer_pem(f->authority);
    assert_string_equal(bundle, operator_bundle);
    assert_string_equal(issuer, operator_issuer);
    char path[256];
    snprintf(path, sizeof path, "%s/root.key", f->ca_dir);
    assert_mode(path, 0600);

    /* A leaf it signs verifies against the operator's root. */
    model_certificate record = {0};
    char *chain = sign_new(f, IDENTITY, f->now_ms, &record);
    write_text(path_in(f, "bundle.pem"), operator_bundle);
    write_chain(f, chain, "leaf.pem", "issuer.pem");
    assert_int_equal(openssl_verify(f, "bundle.pem", "issuer.pem", "leaf.pem", NULL), 0);

    /* Reopening without the plug-in options uses the copies. */
    ca_close(f->authority);
    f->authority = open_ca_at(f->ca_dir, f->now_ms);
    char *again = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_string_equal(again, operator_bundle);

    /* A plug-in key readable by others is refused. */
    char other_dir[128];
    snprintf(other_dir, sizeof other_dir, "%s/other", f->dir);
    assert_int_equal(chmod(issuer_key, 0640), 0);
    options.directory = other_dir;
    ca *refused = NULL;
    assert_int_equal(ca_open(&options, &refused, error, sizeof error), -1);
    assert_non_null(strstr(error, issuer_key));

    model_certificate_clear(&record);
    free(chain);
    free(again);
    free(bundle);
    free(issuer);
    free(operator_bundle);
    free(operator_issuer);
}

/* ---- signing ------------------------------------------------------------------------ */

static void test_sign_csr(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char *csr = make_csr(IDENTITY);
    char error[512] = "";
    char *identity = NULL;
    assert_int_equal(ca_csr_identity(csr, &identity, error, sizeof error), 0);
    assert_string_equal(identity, IDENTITY);
    free(identity);

    char *chain = NULL;
    model_certificate record = {0};
    if (ca_sign_csr(f->authority, csr, IDENTITY, 0, f->now_ms, &chain, &record, error,
                    sizeof error) != 0) {
        fail_msg("ca_sign_csr: %s", error);
    }
    assert_int_equal(count_certs(chain), 2);
    char *issuer_pem = ca_issuer_pem(f->authority);
    assert_non_null(strstr(chain, issuer_pem));
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    write_text(path_in(f, "bundle.pem"), bundle);
    write_chain(f, chain, "leaf.pem", "issuer.pem");
    assert_int_equal(openssl_verify(f, "bundle.pem", "issuer.pem", "leaf.pem", NULL), 0);
    assert_int_equal(
        openssl_verify(f, "bundle.pem", "issuer.pem", "leaf.pem", "-purpose sslserver"), 0);
    assert_int_equal(
        openssl_verify(f, "bundle.pem", "issuer.pem", "leaf.pem", "-purpose sslclient"), 0);

    X509 *leaf = parse_cert(chain);
    /* Exactly one SAN, the URI identity. */
    int critical = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, &critical, NULL);
    assert_non_null(names);
    assert_int_equal(sk_GENERAL_NAME_num(names), 1);
    const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, 0);
    assert_int_equal(name->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(name->d.uniformResourceIdentifier),
                        IDENTITY);
    GENERAL_NAMES_free(names);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "web");
    /* Usages. */
    assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
    int index = X509_get_ext_by_NID(leaf, NID_key_usage, -1);
    assert_true(index >= 0);
    assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, index)), 1);
    assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    index = X509_get_ext_by_NID(leaf, NID_basic_constraints, -1);
    assert_true(index >= 0);
    BASIC_CONSTRAINTS *constraints = X509_get_ext_d2i(leaf, NID_basic_constraints, NULL, NULL);
    assert_non_null(constraints);
    assert_int_equal(constraints->ca, 0);
    BASIC_CONSTRAINTS_free(constraints);
    assert_int_equal(X509_check_ca(leaf), 0);
    /* subjectKeyIdentifier: the SHA-1 of the key's bits (RFC 5280 method 1). */
    const ASN1_OCTET_STRING *key_id = X509_get0_subject_key_id(leaf);
    assert_non_null(key_id);
    const unsigned char *key_bits = NULL;
    int key_length = 0;
    assert_int_equal(
        X509_PUBKEY_get0_param(NULL, &key_bits, &key_length, NULL, X509_get_X509_PUBKEY(leaf)), 1);
    unsigned char key_digest[SHA_DIGEST_LENGTH];
    SHA1(key_bits, (size_t)key_length, key_digest);
    assert_int_equal(ASN1_STRING_length(key_id), SHA_DIGEST_LENGTH);
    assert_memory_equal(ASN1_STRING_get0_data(key_id), key_digest, SHA_DIGEST_LENGTH);
    assert_non_null(X509_get0_authority_key_id(leaf));
    /* Serial: 128-bit, lower-case hex, the certificate's. */
    assert_int_equal(strlen(record.serial), 32);
    for (const char *c = record.serial; *c != '\0'; c++) {
        assert_true((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'));
    }
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
    char *hex = BN_bn2hex(serial);
    assert_int_equal(strcasecmp(hex + strspn(hex, "0"), record.serial + strspn(record.serial, "0")),
                     0);
    assert_true(BN_num_bits(serial) > 64 && BN_num_bits(serial) <= 128);
    OPENSSL_free(hex);
    BN_free(serial);
    /* Record. */
    assert_string_equal(record.identity, IDENTITY);
    assert_int_equal(record.not_after_ms - record.not_before_ms, DAY_MS);
    assert_int_equal(record.not_before_ms, f->now_ms);
    assert_false(record.revoked);
    int64_t from = 0, to = 0;
    assert_int_equal(workload_certificate_times(chain, &from, &to, error, sizeof error), 0);
    assert_int_equal(from, record.not_before_ms);
    assert_int_equal(to, record.not_after_ms);
    assert_int_equal(ca_certificate_identity(chain, &identity, error, sizeof error), 0);
    assert_string_equal(identity, IDENTITY);
    free(identity);
    char *serial_text = NULL;
    assert_int_equal(ca_certificate_serial(chain, &serial_text, error, sizeof error), 0);
    assert_string_equal(serial_text, record.serial);
    free(serial_text);
    assert_int_equal(ca_certificate_serial("junk", &serial_text, error, sizeof error), -1);
    assert_null(serial_text);

    /* Without an expected identity, any identity of the trust domain; custom TTL. */
    model_certificate other = {0};
    char *other_chain = NULL;
    char *other_csr = make_csr("spiffe://atrium.local/ns/shop/sa/cart");
    assert_int_equal(ca_sign_csr(f->authority, other_csr, NULL, 3600, f->now_ms, &other_chain,
                                 &other, error, sizeof error),
                     0);
    assert_int_equal(other.not_after_ms - other.not_before_ms, HOUR_MS);
    assert_string_not_equal(other.serial, record.serial);
    model_certificate_clear(&other);
    free(other_chain);
    free(other_csr);

    X509_free(leaf);
    model_certificate_clear(&record);
    free(chain);
    free(csr);
    free(bundle);
    free(issuer_pem);
}

static void test_accepted_key_types(void **state)
{
    fixture *f = *state;
    open_ca(f);
    const char *types[][2] = {{"EC", "P-384"}, {"RSA", NULL}};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *key = types[i][1] != NULL ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", types[i][1])
                                            : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        assert_non_null(key);
        san sans[] = {{GEN_URI, IDENTITY}};
        char *csr = custom_csr(key, sans, 1);
        char *chain = NULL;
        model_certificate record = {0};
        char error[512] = "";
        if (ca_sign_csr(f->authority, csr, IDENTITY, 0, f->now_ms, &chain, &record, error,
                        sizeof error) != 0) {
            fail_msg("%s refused: %s", types[i][0], error);
        }
        X509 *leaf = parse_cert(chain);
        uint32_t expected = KU_DIGITAL_SIGNATURE;
        if (strcmp(types[i][0], "RSA") == 0) {
            expected |= KU_KEY_ENCIPHERMENT;
        }
        assert_int_equal(X509_get_key_usage(leaf), expected);
        X509_free(leaf);
        model_certificate_clear(&record);
        free(chain);
        free(csr);
        EVP_PKEY_free(key);
    }
}

static void test_refusals(void **state)
{
    fixture *f = *state;
    open_ca(f);
    /* Another identity than the token's. */
    char *csr = make_csr("spiffe://atrium.local/ns/default/sa/api");
    assert_refused(f, csr, IDENTITY, 0, "may only get");
    free(csr);

    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(key);
    san two[] = {{GEN_URI, IDENTITY}, {GEN_URI, "spiffe://atrium.local/ns/default/sa/api"}};
    csr = custom_csr(key, two, 2);
    assert_refused(f, csr, NULL, 0, "2 subject alternative names");
    free(csr);
    san mixed[] = {{GEN_URI, IDENTITY}, {GEN_DNS, "web.default.svc"}};
    csr = custom_csr(key, mixed, 2);
    assert_refused(f, csr, IDENTITY, 0, "2 subject alternative names");
    free(csr);
    san dns[] = {{GEN_DNS, "web.default.svc"}};
    csr = custom_csr(key, dns, 1);
    assert_refused(f, csr, NULL, 0, "DNS name");
    free(csr);
    san https[] = {{GEN_URI, "https://example.com/ns/default/sa/web"}};
    csr = custom_csr(key, https, 1);
    assert_refused(f, csr, NULL, 0, "not an Atrium SPIFFE ID");
    free(csr);
    san foreign[] = {{GEN_URI, "spiffe://other.example/ns/default/sa/web"}};
    csr = custom_csr(key, foreign, 1);
    assert_refused(f, csr, NULL, 0, "trust domain");
    free(csr);
    csr = custom_csr(key, NULL, 0);
    assert_refused(f, csr, NULL, 0, "0 subject alternative names");
    free(csr);
    /* Digests weaker than SHA-256 are refused, whatever the key (SHA-384/512 are accepted). */
    san one[] = {{GEN_URI, IDENTITY}};
    csr = custom_csr_with_digest(key, one, 1, EVP_sha1());
    assert_refused(f, csr, IDENTITY, 0, "signature algorithm ecdsa-with-SHA1 is not accepted");
    free(csr);
    csr = custom_csr_with_digest(key, one, 1, EVP_sha224());
    assert_refused(f, csr, IDENTITY, 0, "is not accepted (SHA-256");
    free(csr);
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(rsa);
    csr = custom_csr_with_digest(rsa, one, 1, EVP_sha1());
    assert_refused(f, csr, IDENTITY, 0, "RSA-SHA1 is not accepted");
    free(csr);
    EVP_PKEY_free(rsa);
    const EVP_MD *strong[] = {EVP_sha384(), EVP_sha512()};
    for (size_t i = 0; i < 2; i++) {
        csr = custom_csr_with_digest(key, one, 1, strong[i]);
        char *chain = NULL;
        model_certificate record = {0};
        char error[512] = "";
        if (ca_sign_csr(f->authority, csr, IDENTITY, 0, f->now_ms, &chain, &record, error,
                        sizeof error) != 0) {
            fail_msg("digest %zu refused: %s", i, error);
        }
        model_certificate_clear(&record);
        free(chain);
        free(csr);
    }

    /* Tampered signature. */
    char *good = make_csr(IDENTITY);
    char *tampered = tamper_csr(good);
    assert_refused(f, tampered, IDENTITY, 0, "signature");
    free(tampered);

    /* TTL outside [300 s, 30 days]. */
    assert_refused(f, good, IDENTITY, 60, "outside");
    assert_refused(f, good, IDENTITY, 31u * 24 * 3600, "outside");
    assert_refused(f, good, IDENTITY, 299, "outside");
    assert_refused(f, "not a csr", IDENTITY, 0, "parse");
    free(good);

    /* RSA 1024. */
    EVP_PKEY *weak = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(weak);
    san ok[] = {{GEN_URI, IDENTITY}};
    csr = custom_csr(weak, ok, 1);
    assert_refused(f, csr, IDENTITY, 0, "1024 bits");
    free(csr);
    EVP_PKEY_free(weak);
    /* A curve other than P-256/P-384. */
    EVP_PKEY *k1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
    assert_non_null(k1);
    csr = custom_csr(k1, ok, 1);
    assert_refused(f, csr, IDENTITY, 0, "curve");
    free(csr);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(key);

    /* The bounds themselves are accepted. */
    good = make_csr(IDENTITY);
    const uint32_t bounds[] = {300, 30u * 24 * 3600};
    for (size_t i = 0; i < 2; i++) {
        char *chain = NULL;
        model_certificate record = {0};
        char error[512] = "";
        assert_int_equal(ca_sign_csr(f->authority, good, IDENTITY, bounds[i], f->now_ms, &chain,
                                     &record, error, sizeof error),
                         0);
        assert_int_equal(record.not_after_ms - record.not_before_ms, (int64_t)bounds[i] * 1000);
        model_certificate_clear(&record);
        free(chain);
    }
    free(good);
}

static void test_ttl_capped_by_issuer(void **state)
{
    fixture *f = *state;
    open_ca(f);
    int64_t issuer_end = ca_issuer_not_after_ms(f->authority);
    model_certificate record = {0};
    char *chain = sign_new(f, IDENTITY, issuer_end - HOUR_MS, &record);
    assert_int_equal(record.not_after_ms, issuer_end);
    assert_int_equal(record.not_before_ms, issuer_end - HOUR_MS);
    model_certificate_clear(&record);
    free(chain);
    /* Once the issuer has expired nothing is signed. */
    char *csr = make_csr(IDENTITY);
    char error[512] = "";
    assert_int_equal(ca_sign_csr(f->authority, csr, IDENTITY, 0, issuer_end, &chain, &record, error,
                                 sizeof error),
                     -1);
    assert_null(chain);
    assert_non_null(strstr(error, "expired"));
    free(csr);
}

/* ---- rotation ----------------------------------------------------------------------- */

static void test_rotate_issuer(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    write_text(path_in(f, "bundle.pem"), bundle);
    model_certificate old_record = {0};
    char *old_chain = sign_new(f, IDENTITY, f->now_ms, &old_record);
    char *old_issuer = ca_issuer_pem(f->authority);

    char error[512] = "";
    if (ca_rotate_issuer(f->authority, f->now_ms, error, sizeof error) != 0) {
        fail_msg("ca_rotate_issuer: %s", error);
    }
    char *new_issuer = ca_issuer_pem(f->authority);
    assert_string_not_equal(old_issuer, new_issuer);
    char *bundle_after = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_string_equal(bundle, bundle_after);

    model_certificate new_record = {0};
    char *new_chain = sign_new(f, IDENTITY, f->now_ms, &new_record);
    assert_non_null(strstr(new_chain, new_issuer));
    write_chain(f, old_chain, "old_leaf.pem", "old_issuer.pem");
    write_chain(f, new_chain, "new_leaf.pem", "new_issuer.pem");
    assert_int_equal(openssl_verify(f, "bundle.pem", "old_issuer.pem", "old_leaf.pem", NULL), 0);
    assert_int_equal(openssl_verify(f, "bundle.pem", "new_issuer.pem", "new_leaf.pem", NULL), 0);

    /* ca_verify_leaf accepts both, also after a reopen, also the bare old leaf. */
    ca_close(f->authority);
    f->authority = open_ca_at(f->ca_dir, f->now_ms);
    char *identity = NULL;
    const char *chains[] = {old_chain, new_chain};
    for (size_t i = 0; i < 2; i++) {
        if (ca_verify_leaf(f->authority, chains[i], f->now_ms, &identity, error, sizeof error) !=
            0) {
            fail_msg("ca_verify_leaf[%zu]: %s", i, error);
        }
        assert_string_equal(identity, IDENTITY);
        free(identity);
    }
    char *bare = strndup(old_chain, (size_t)(strstr(old_chain + 1, "-----BEGIN") - old_chain));
    assert_int_equal(ca_verify_leaf(f->authority, bare, f->now_ms, &identity, error, sizeof error),
                     0);
    free(identity);
    free(bare);

    /* The CRLs: one per issuer in use; the old leaf's serial is revoked by its own issuer. */
    const char *serials[] = {old_record.serial};
    char *crl = ca_crl_pem(f->authority, serials, 1, f->now_ms, error, sizeof error);
    assert_non_null(crl);
    size_t crls = 0;
    for (const char *p = crl; (p = strstr(p, "-----BEGIN X509 CRL-----")) != NULL; p++) {
        crls++;
    }
    assert_int_equal(crls, 2);
    write_text(path_in(f, "crl.pem"), crl);
    assert_int_not_equal(openssl_verify(f, "bundle.pem", "old_issuer.pem", "old_leaf.pem",
                                        "-crl_check -CRLfile crl.pem"),
                         0);
    assert_int_equal(openssl_verify(f, "bundle.pem", "new_issuer.pem", "new_leaf.pem",
                                    "-crl_check -CRLfile crl.pem"),
                     0);
    free(crl);

    /* Once the old issuer has expired it is no longer in use. */
    int64_t old_end = old_record.not_after_ms; /* < old issuer's end; use its end below */
    (void)old_end;
    X509 *old_issuer_cert = parse_cert(old_issuer);
    struct tm tm;
    ASN1_TIME_to_tm(X509_get0_notAfter(old_issuer_cert), &tm);
    int64_t old_issuer_end = (int64_t)timegm(&tm) * 1000;
    X509_free(old_issuer_cert);
    crl = ca_crl_pem(f->authority, serials, 1, old_issuer_end, error, sizeof error);
    assert_non_null(crl);
    assert_null(strstr(strstr(crl, "-----END X509 CRL-----"), "-----BEGIN X509 CRL-----"));
    free(crl);

    model_certificate_clear(&old_record);
    model_certificate_clear(&new_record);
    free(old_chain);
    free(new_chain);
    free(old_issuer);
    free(new_issuer);
    free(bundle);
    free(bundle_after);
}

static void test_rotate_root(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char *old_bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    int64_t old_issuer_end = ca_issuer_not_after_ms(f->authority);
    model_certificate old_record = {0};
    char *old_chain = sign_new(f, IDENTITY, f->now_ms, &old_record);

    char error[512] = "";
    if (ca_rotate_root(f->authority, f->now_ms, error, sizeof error) != 0) {
        fail_msg("ca_rotate_root: %s", error);
    }
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_int_equal(count_certs(bundle), 2);
    assert_true(strncmp(bundle, old_bundle, strlen(old_bundle)) != 0); /* new root first */
    assert_non_null(strstr(bundle, old_bundle));                       /* old root kept */
    char retire_path[256];
    snprintf(retire_path, sizeof retire_path, "%s/previous_roots.retire", f->ca_dir);
    assert_int_equal(access(retire_path, F_OK), 0);

    model_certificate new_record = {0};
    char *new_chain = sign_new(f, IDENTITY, f->now_ms, &new_record);
    write_text(path_in(f, "bundle.pem"), bundle);
    write_chain(f, old_chain, "old_leaf.pem", "old_issuer.pem");
    write_chain(f, new_chain, "new_leaf.pem", "new_issuer.pem");
    assert_int_equal(openssl_verify(f, "bundle.pem", "old_issuer.pem", "old_leaf.pem", NULL), 0);
    assert_int_equal(openssl_verify(f, "bundle.pem", "new_issuer.pem", "new_leaf.pem", NULL), 0);
    /* The new leaf does not verify against the old root alone. */
    write_text(path_in(f, "old_bundle.pem"), old_bundle);
    assert_int_not_equal(
        openssl_verify(f, "old_bundle.pem", "new_issuer.pem", "new_leaf.pem", NULL), 0);

    /* After a restart: same bundle, both leaves verify. */
    ca_close(f->authority);
    f->authority = open_ca_at(f->ca_dir, f->now_ms);
    char *reopened = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_string_equal(reopened, bundle);
    const char *chains[] = {old_chain, new_chain};
    for (size_t i = 0; i < 2; i++) {
        char *identity = NULL;
        if (ca_verify_leaf(f->authority, chains[i], f->now_ms, &identity, error, sizeof error) !=
            0) {
            fail_msg("ca_verify_leaf[%zu]: %s", i, error);
        }
        assert_string_equal(identity, IDENTITY);
        free(identity);
    }

    /* Retirement: the old root leaves the bundle at the old issuer's end. */
    char *before = ca_trust_bundle_pem(f->authority, old_issuer_end - 1);
    assert_int_equal(count_certs(before), 2);
    char *after = ca_trust_bundle_pem(f->authority, old_issuer_end);
    assert_int_equal(count_certs(after), 1);
    assert_null(strstr(after, old_bundle));
    assert_true(strncmp(after, bundle, strlen(after)) == 0);

    model_certificate_clear(&old_record);
    model_certificate_clear(&new_record);
    free(before);
    free(after);
    free(reopened);
    free(old_chain);
    free(new_chain);
    free(bundle);
    free(old_bundle);
}

/* ---- CRL, verification, server certificate, workload ---------------------------------- */

static void test_crl(void **state)
{
    fixture *f = *state;
    open_ca(f);
    model_certificate revoked = {0};
    model_certificate kept = {0};
    char *revoked_chain = sign_new(f, IDENTITY, f->now_ms, &revoked);
    char *kept_chain = sign_new(f, IDENTITY, f->now_ms, &kept);
    char error[512] = "";
    const char *serials[] = {revoked.serial, "0123abcd"};
    char *crl_pem = ca_crl_pem(f->authority, serials, 2, f->now_ms, error, sizeof error);
    if (crl_pem == NULL) {
        fail_msg("ca_crl_pem: %s", error);
    }
    BIO *bio = BIO_new_mem_buf(crl_pem, -1);
    X509_CRL *crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(crl);
    assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
    X509 *leaf = parse_cert(revoked_chain);
    X509_REVOKED *entry = NULL;
    assert_int_equal(X509_CRL_get0_by_cert(crl, &entry, leaf), 1);
    X509 *issuer = parse_cert(strstr(revoked_chain + 1, "-----BEGIN CERTIFICATE-----"));
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(issuer)), 1);
    int days = 0, seconds = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &seconds, X509_CRL_get0_lastUpdate(crl),
                                    X509_CRL_get0_nextUpdate(crl)),
                     1);
    assert_int_equal(days, 1);
    assert_int_equal(seconds, 0);
    X509_free(issuer);
    X509_free(leaf);
    X509_CRL_free(crl);

    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    write_text(path_in(f, "bundle.pem"), bundle);
    write_text(path_in(f, "crl.pem"), crl_pem);
    write_chain(f, revoked_chain, "revoked.pem", "issuer.pem");
    write_chain(f, kept_chain, "kept.pem", "issuer.pem");
    assert_int_not_equal(
        openssl_verify(f, "bundle.pem", "issuer.pem", "revoked.pem", "-crl_check -CRLfile crl.pem"),
        0);
    assert_int_equal(
        openssl_verify(f, "bundle.pem", "issuer.pem", "kept.pem", "-crl_check -CRLfile crl.pem"),
        0);

    /* An empty CRL is valid; a bad serial is an error. */
    char *empty = ca_crl_pem(f->authority, NULL, 0, f->now_ms, error, sizeof error);
    assert_non_null(empty);
    free(empty);
    const char *bad[] = {"xyz"};
    assert_null(ca_crl_pem(f->authority, bad, 1, f->now_ms, error, sizeof error));
    assert_non_null(strstr(error, "serials[0]"));

    model_certificate_clear(&revoked);
    model_certificate_clear(&kept);
    free(revoked_chain);
    free(kept_chain);
    free(crl_pem);
    free(bundle);
}

static void test_verify_leaf(void **state)
{
    fixture *f = *state;
    open_ca(f);
    model_certificate record = {0};
    char *chain = sign_new(f, IDENTITY, f->now_ms, &record);
    char error[512] = "";
    char *identity = NULL;
    assert_int_equal(ca_verify_leaf(f->authority, chain, f->now_ms, &identity, error, sizeof error),
                     0);
    assert_string_equal(identity, IDENTITY);
    free(identity);
    /* Expired. */
    assert_int_equal(ca_verify_leaf(f->authority, chain, record.not_after_ms + 1000, &identity,
                                    error, sizeof error),
                     -1);
    assert_null(identity);
    assert_non_null(strstr(error, "expired"));
    /* A CA certificate is not a workload. */
    char *issuer = ca_issuer_pem(f->authority);
    assert_int_equal(
        ca_verify_leaf(f->authority, issuer, f->now_ms, &identity, error, sizeof error), -1);
    free(issuer);
    /* A leaf of another CA (same trust domain, another root). */
    char other_dir[128];
    snprintf(other_dir, sizeof other_dir, "%s/other", f->dir);
    ca *other = open_ca_at(other_dir, f->now_ms);
    char *csr = make_csr(IDENTITY);
    char *foreign = NULL;
    model_certificate foreign_record = {0};
    assert_int_equal(ca_sign_csr(other, csr, IDENTITY, 0, f->now_ms, &foreign, &foreign_record,
                                 error, sizeof error),
                     0);
    error[0] = '\0';
    assert_int_equal(
        ca_verify_leaf(f->authority, foreign, f->now_ms, &identity, error, sizeof error), -1);
    assert_null(identity);
    assert_true(error[0] != '\0');
    assert_int_equal(
        ca_verify_leaf(f->authority, "garbage", f->now_ms, &identity, error, sizeof error), -1);
    ca_close(other);
    model_certificate_clear(&foreign_record);
    model_certificate_clear(&record);
    free(foreign);
    free(csr);
    free(chain);
}

static void test_server_certificate(void **state)
{
    fixture *f = *state;
    open_ca(f);
    const char *identity = "spiffe://atrium.local/ns/atrium-system/sa/atriumd";
    char *key_pem = NULL;
    char *chain = NULL;
    model_certificate record = {0};
    char error[512] = "";
    if (ca_issue_server_certificate(f->authority, identity, "127.0.0.1", 0, f->now_ms, &key_pem,
                                    &chain, &record, error, sizeof error) != 0) {
        fail_msg("ca_issue_server_certificate: %s", error);
    }
    assert_string_equal(record.identity, identity);
    X509 *leaf = parse_cert(chain);
    BIO *bio = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(key);
    assert_int_equal(X509_check_private_key(leaf, key), 1);
    assert_int_equal(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
    char *uri = NULL;
    assert_int_equal(ca_certificate_identity(chain, &uri, error, sizeof error), 0);
    assert_string_equal(uri, identity);
    free(uri);
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    write_text(path_in(f, "bundle.pem"), bundle);
    write_chain(f, chain, "server.pem", "issuer.pem");
    assert_int_equal(openssl_verify(f, "bundle.pem", "issuer.pem", "server.pem",
                                    "-purpose sslserver -verify_ip 127.0.0.1"),
                     0);
    assert_int_not_equal(openssl_verify(f, "bundle.pem", "issuer.pem", "server.pem",
                                        "-purpose sslserver -verify_ip 127.0.0.2"),
                         0);
    EVP_PKEY_free(key);
    X509_free(leaf);
    model_certificate_clear(&record);
    free(key_pem);
    free(chain);
    free(bundle);

    /* Refusals: bad IP, foreign identity. */
    assert_int_equal(ca_issue_server_certificate(f->authority, identity, "not-an-ip", 0, f->now_ms,
                                                 &key_pem, &chain, &record, error, sizeof error),
                     -1);
    assert_null(key_pem);
    assert_null(chain);
    assert_int_equal(ca_issue_server_certificate(f->authority, "spiffe://x.example/ns/a/sa/b", NULL,
                                                 0, f->now_ms, &key_pem, &chain, &record, error,
                                                 sizeof error),
                     -1);
}

static void test_renewal_time(void **state)
{
    fixture *f = *state;
    assert_int_equal(workload_renew_at_ms(1000, 3000), 2000);
    open_ca(f);
    model_certificate record = {0};
    char *chain = sign_new(f, IDENTITY, f->now_ms, &record);
    int64_t from = 0, to = 0;
    char error[256];
    assert_int_equal(workload_certificate_times(chain, &from, &to, error, sizeof error), 0);
    assert_int_equal(workload_renew_at_ms(from, to), f->now_ms + 12 * HOUR_MS);
    assert_int_equal(workload_certificate_times("junk", &from, &to, error, sizeof error), -1);
    char *csr = NULL;
    char *key = NULL;
    assert_int_equal(workload_generate_key(&key, error, sizeof error), 0);
    assert_int_equal(workload_build_csr(key, "spiffe://bad", &csr, error, sizeof error), -1);
    assert_null(csr);
    assert_int_equal(workload_build_csr("junk", IDENTITY, &csr, error, sizeof error), -1);
    free(key);
    model_certificate_clear(&record);
    free(chain);
}

static void test_interrupted_change(void **state)
{
    fixture *f = *state;
    open_ca(f);
    char *bundle = ca_trust_bundle_pem(f->authority, f->now_ms);
    ca_close(f->authority);
    f->authority = NULL;
    /* An uncommitted staged file (no journal) is dropped. */
    char path[256];
    snprintf(path, sizeof path, "%s/root.pem.new", f->ca_dir);
    write_text(path, "garbage");
    open_ca(f);
    assert_int_equal(access(path, F_OK), -1);
    char *again = ca_trust_bundle_pem(f->authority, f->now_ms);
    assert_string_equal(bundle, again);
    free(again);
    free(bundle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spiffe_format_parse),
        cmocka_unit_test_setup_teardown(test_first_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_same_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_mode_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_csr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accepted_key_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_capped_by_issuer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotate_issuer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotate_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_leaf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_change, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
