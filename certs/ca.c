/*
 * ca.c — Atrium's certificate authority (see ca.h): root and issuer kept in a
 * directory, CSR checks and signing, trust bundle, CRLs, rotation.
 * OpenSSL 3 EVP/X509 APIs only; CSRs are parsed with ASN.1 templates of our
 * own so that the hot path never runs OpenSSL's key decoders (see "CSR
 * parsing").
 */
#include "ca.h"

#include "memory_text.h"
#include "openssl_error.h"
#include "spiffe.h"

#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* File names inside the CA directory. */
#define FILE_ROOT_CERT       "root.pem"
#define FILE_ROOT_KEY        "root.key"
#define FILE_ISSUER_CERT     "issuer.pem"
#define FILE_ISSUER_KEY      "issuer.key"
#define FILE_TRUST_DOMAIN    "trust_domain"
#define FILE_OLD_ISSUER_CERT "previous_issuers.pem"
#define FILE_OLD_ISSUER_KEY  "previous_issuers.key"
#define FILE_OLD_ROOT_CERT   "previous_roots.pem"
#define FILE_OLD_ROOT_RETIRE "previous_roots.retire"
#define FILE_JOURNAL         "rotation.commit"
#define STAGED_SUFFIX        ".new"
#define CN_MAX               64 /* ub-common-name */
#define SERIAL_BYTES         16

static const char *const known_files[] = {
    FILE_ROOT_CERT,      FILE_ROOT_KEY,      FILE_ISSUER_CERT,
    FILE_ISSUER_KEY,     FILE_TRUST_DOMAIN,  FILE_OLD_ISSUER_CERT,
    FILE_OLD_ISSUER_KEY, FILE_OLD_ROOT_CERT, FILE_OLD_ROOT_RETIRE,
};
#define KNOWN_FILE_COUNT (sizeof known_files / sizeof known_files[0])

struct ca {
    pthread_mutex_t lock;
    char *directory;
    char *trust_domain;
    X509 *root;
    EVP_PKEY *root_key;
    X509 *issuer;
    EVP_PKEY *issuer_key;
    /* Issuers replaced by a rotation, with their keys, until they expire. */
    X509 **old_issuers;
    EVP_PKEY **old_issuer_keys;
    size_t old_issuer_count;
    /* Roots replaced by ca_rotate_root and when they leave the bundle. */
    X509 **old_roots;
    int64_t *old_root_retire_ms;
    size_t old_root_count;
    /* The domain parameters of P-256 and P-384 (no key), owned here: a CSR's
     * EC key is a copy of one with the CSR's point set, a quarter of the cost
     * of building the curve again for each request. Read-only after ca_open. */
    EVP_PKEY *p256_parameters;
    EVP_PKEY *p384_parameters;
    /* The extensions every leaf carries, whoever the issuer, made once by
     * ca_open (owned here, read-only after; X509_add_ext copies them). */
    X509_EXTENSION *leaf_basic_constraints;  /* critical, CA:FALSE */
    X509_EXTENSION *leaf_key_usage;          /* critical, digitalSignature */
    X509_EXTENSION *leaf_key_usage_rsa;      /* the same and keyEncipherment */
    X509_EXTENSION *leaf_extended_key_usage; /* serverAuth, clientAuth */
    /* The current issuer as PEM (owned here, replaced with the issuer; NULL
     * when it could not be made: leaves then encode the issuer themselves). */
    char *issuer_pem;
    /* The last trust bundle made (owned here) and the times it holds for:
     * the same roots are in the bundle at any now in [from, until). Dropped
     * when the roots change. */
    char *bundle_pem;
    int64_t bundle_from_ms;
    int64_t bundle_until_ms;
};

/* ---- errors, strings, time ------------------------------------------------ */

static char *path_join(const char *directory, const char *name, const char *suffix)
{
    size_t size = strlen(directory) + 1 + strlen(name) + strlen(suffix) + 1;
    char *path = malloc(size);
    if (path != NULL) {
        snprintf(path, size, "%s/%s%s", directory, name, suffix);
    }
    return path;
}

static bool asn1_time_ms(const ASN1_TIME *time, int64_t *out)
{
    struct tm tm;
    if (time == NULL || ASN1_TIME_to_tm(time, &tm) != 1) {
        return false;
    }
    *out = (int64_t)timegm(&tm) * 1000;
    return true;
}

static int64_t not_after_ms(const X509 *cert)
{
    int64_t ms = 0;
    if (!asn1_time_ms(X509_get0_notAfter(cert), &ms)) {
        return 0;
    }
    return ms;
}

static time_t ms_to_s(int64_t ms)
{
    return (time_t)(ms / 1000);
}

static void free_secret(char *secret)
{
    if (secret != NULL) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
}

static char *certs_to_pem(X509 *const *certs, size_t count)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        if (PEM_write_bio_X509(bio, certs[i]) != 1) {
            BIO_free(bio);
            return NULL;
        }
    }
    char *pem = memory_bio_text(bio);
    BIO_free(bio);
    return pem;
}

static char *cert_to_pem(X509 *cert)
{
    return certs_to_pem(&cert, 1);
}

static char *keys_to_pem(EVP_PKEY *const *keys, size_t count)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL) {
        bio = BIO_new(BIO_s_mem());
    }
    if (bio == NULL) {
        return NULL;
    }
    char *pem = NULL;
    size_t i = 0;
    for (; i < count; i++) {
        if (PEM_write_bio_PrivateKey(bio, keys[i], NULL, NULL, 0, NULL, NULL) != 1) {
            break;
        }
    }
    if (i == count) {
        pem = memory_bio_text(bio);
    }
    BIO_free(bio); /* a secmem BIO cleanses its buffer */
    return pem;
}

/* Calls read_one on each PEM block of text ("-----BEGIN ..." to its END
 * line) in turn; text outside blocks is ignored. Returns the number of
 * objects read into *items (a new array), or -1 when a block does not parse. */
typedef void *(*pem_reader)(BIO *bio);

static void *read_one_cert(BIO *bio)
{
    return PEM_read_bio_X509(bio, NULL, NULL, NULL);
}

static void *read_one_key(BIO *bio)
{
    return PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
}

static int parse_pem_blocks(const char *text, size_t length, pem_reader read_one,
                            void (*free_one)(void *), void ***items, size_t *count)
{
    static const char begin[] = "-----BEGIN ";
    static const char end_marker[] = "-----END ";
    *items = NULL;
    *count = 0;
    const char *cursor = text;
    const char *limit = text + length;
    for (;;) {
        const char *start = memmem(cursor, (size_t)(limit - cursor), begin, sizeof begin - 1);
        if (start == NULL) {
            return 0;
        }
        const char *end = memmem(start, (size_t)(limit - start), end_marker, sizeof end_marker - 1);
        const char *line_end = end != NULL ? memchr(end, '\n', (size_t)(limit - end)) : NULL;
        const char *block_end = line_end != NULL ? line_end + 1 : limit;
        BIO *bio = end != NULL ? BIO_new_mem_buf(start, (int)(block_end - start)) : NULL;
        void *item = bio != NULL ? read_one(bio) : NULL;
        BIO_free(bio);
        void **grown = item != NULL ? realloc(*items, (*count + 1) * sizeof *grown) : NULL;
        if (grown == NULL) {
            if (item != NULL) {
                free_one(item);
            }
            for (size_t i = 0; i < *count; i++) {
                free_one((*items)[i]);
            }
            free(*items);
            *items = NULL;
            *count = 0;
            return -1;
        }
        grown[(*count)++] = item;
        *items = grown;
        cursor = block_end;
    }
}

static void free_cert_item(void *item)
{
    X509_free(item);
}

static void free_key_item(void *item)
{
    EVP_PKEY_free(item);
}

/* Reads every certificate of a PEM text (count may be 0 for an empty text).
 * *certs is a new array of new certificates. */
static int parse_certs(const char *pem, size_t length, X509 ***certs, size_t *count)
{
    void **items = NULL;
    int result = parse_pem_blocks(pem, length, read_one_cert, free_cert_item, &items, count);
    *certs = (X509 **)items;
    ERR_clear_error();
    return result;
}

/* Reads every private key of a PEM text; *keys is a new array of new keys. */
static int parse_keys(const char *pem, size_t length, EVP_PKEY ***keys, size_t *count)
{
    void **items = NULL;
    int result = parse_pem_blocks(pem, length, read_one_key, free_key_item, &items, count);
    *keys = (EVP_PKEY **)items;
    ERR_clear_error();
    return result;
}

/* ---- files ------------------------------------------------------------------ */

/* Reads a whole file. secret: refuse unless a regular file with no group or
 * other permission bits. Returns 0, 1 when the file does not exist (and
 * missing_ok), -1 on error. *data is NUL-terminated; free (free_secret for keys). */
static int read_file(const char *path, bool secret, bool missing_ok, char **data, size_t *length,
                     char *error, size_t error_size)
{
    *data = NULL;
    *length = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && missing_ok) {
            return 1;
        }
        openssl_error_text(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        openssl_error_text(error, error_size, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        openssl_error_text(error, error_size, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (secret && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        openssl_error_text(
            error, error_size,
            "refusing key file %s with mode %04o: a CA key must not be accessible by group "
            "or others (chmod 600 it)",
            path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    size_t capacity = (size_t)st.st_size + 1;
    char *buffer = malloc(capacity);
    if (buffer == NULL) {
        openssl_error_text(error, error_size, "out of memory reading %s", path);
        close(fd);
        return -1;
    }
    size_t used = 0;
    for (;;) {
        if (used + 1 >= capacity) {
            char *grown = realloc(buffer, capacity * 2);
            if (grown == NULL) {
                secret ? free_secret(buffer) : free(buffer);
                openssl_error_text(error, error_size, "out of memory reading %s", path);
                close(fd);
                return -1;
            }
            buffer = grown;
            capacity *= 2;
        }
        buffer[used] = '\0';
        ssize_t n = read(fd, buffer + used, capacity - used - 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            openssl_error_text(error, error_size, "cannot read %s: %s", path, strerror(errno));
            secret ? free_secret(buffer) : free(buffer);
            close(fd);
            return -1;
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
    }
    buffer[used] = '\0';
    close(fd);
    *data = buffer;
    *length = used;
    return 0;
}

static int fsync_directory(const char *directory, char *error, size_t error_size)
{
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        openssl_error_text(error, error_size, "cannot sync directory %s: %s", directory,
                           strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    return 0;
}

/* Creates path exclusively (mode 0600 for secrets, 0644 otherwise), writes
 * data and fsyncs it. */
static int write_new_file(const char *path, const char *data, size_t length, bool secret,
                          char *error, size_t error_size)
{
    if (unlink(path) != 0 && errno != ENOENT) {
        openssl_error_text(error, error_size, "cannot remove stale %s: %s", path, strerror(errno));
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, secret ? 0600 : 0644);
    if (fd < 0) {
        openssl_error_text(error, error_size, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(fd, data + done, length - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            openssl_error_text(error, error_size, "cannot write %s: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            return -1;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        openssl_error_text(error, error_size, "cannot sync %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    return 0;
}

/* A set of files written as <name>.new, then committed together. */
typedef struct staging {
    const char *names[KNOWN_FILE_COUNT];
    size_t count;
} staging;

static int stage(const char *directory, staging *staged, const char *name, const char *data,
                 bool secret, char *error, size_t error_size)
{
    char *path = path_join(directory, name, STAGED_SUFFIX);
    if (path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        return -1;
    }
    int result = write_new_file(path, data, strlen(data), secret, error, error_size);
    free(path);
    if (result == 0) {
        staged->names[staged->count++] = name;
    }
    return result;
}

static bool is_known_file(const char *name)
{
    for (size_t i = 0; i < KNOWN_FILE_COUNT; i++) {
        if (strcmp(known_files[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* Removes every staged file (an abandoned change). */
static void discard_staged(const char *directory)
{
    for (size_t i = 0; i < KNOWN_FILE_COUNT; i++) {
        char *path = path_join(directory, known_files[i], STAGED_SUFFIX);
        if (path != NULL) {
            unlink(path);
            free(path);
        }
    }
}

/* Applies a committed journal: renames each listed <name>.new over <name>
 * (those already renamed are skipped), then removes the journal. */
static int apply_journal(const char *directory, char *error, size_t error_size)
{
    char *journal_path = path_join(directory, FILE_JOURNAL, "");
    if (journal_path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        return -1;
    }
    char *journal = NULL;
    size_t length = 0;
    int found = read_file(journal_path, false, true, &journal, &length, error, error_size);
    if (found != 0) {
        free(journal_path);
        return found < 0 ? -1 : 0;
    }
    int result = 0;
    char *save = NULL;
    for (char *name = strtok_r(journal, "\n", &save); name != NULL && result == 0;
         name = strtok_r(NULL, "\n", &save)) {
        if (!is_known_file(name)) {
            openssl_error_text(error, error_size, "%s names an unknown file \"%s\"", journal_path,
                               name);
            result = -1;
            break;
        }
        char *from = path_join(directory, name, STAGED_SUFFIX);
        char *to = path_join(directory, name, "");
        if (from == NULL || to == NULL) {
            openssl_error_text(error, error_size, "out of memory");
            result = -1;
        } else if (rename(from, to) != 0 && errno != ENOENT) {
            openssl_error_text(error, error_size, "cannot rename %s to %s: %s", from, to,
                               strerror(errno));
            result = -1;
        }
        free(from);
        free(to);
    }
    free(journal);
    if (result == 0) {
        result = fsync_directory(directory, error, error_size);
    }
    if (result == 0) {
        if (unlink(journal_path) != 0) {
            openssl_error_text(error, error_size, "cannot remove %s: %s", journal_path,
                               strerror(errno));
            result = -1;
        } else {
            result = fsync_directory(directory, error, error_size);
        }
    }
    free(journal_path);
    return result;
}

/* Makes the staged files current: writes the journal (the commit point), then
 * applies it. On failure before the commit point the staged files are removed. */
static int commit_staged(const char *directory, const staging *staged, char *error,
                         size_t error_size)
{
    size_t size = 1;
    for (size_t i = 0; i < staged->count; i++) {
        size += strlen(staged->names[i]) + 1;
    }
    char *journal = malloc(size);
    if (journal == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        discard_staged(directory);
        return -1;
    }
    size_t used = 0;
    for (size_t i = 0; i < staged->count; i++) {
        size_t length = strlen(staged->names[i]);
        memcpy(journal + used, staged->names[i], length);
        used += length;
        journal[used++] = '\n';
    }
    journal[used] = '\0';
    char *staged_path = path_join(directory, FILE_JOURNAL, STAGED_SUFFIX);
    char *journal_path = path_join(directory, FILE_JOURNAL, "");
    int result = -1;
    if (staged_path == NULL || journal_path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
    } else if (fsync_directory(directory, error, error_size) == 0 &&
               write_new_file(staged_path, journal, strlen(journal), false, error, error_size) ==
                   0) {
        if (rename(staged_path, journal_path) != 0) {
            openssl_error_text(error, error_size, "cannot rename %s: %s", staged_path,
                               strerror(errno));
            unlink(staged_path);
        } else {
            result = 0;
        }
    }
    free(journal);
    free(staged_path);
    free(journal_path);
    if (result != 0) {
        discard_staged(directory);
        return -1;
    }
    return apply_journal(directory, error, error_size);
}

/* ---- certificate building ---------------------------------------------------- */

static const EVP_MD *digest_for(EVP_PKEY *key)
{
    if (EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_bits(key) >= 384) {
        return EVP_sha384();
    }
    return EVP_sha256();
}

/* Sets a random, positive 128-bit serial. */
static bool set_random_serial(X509 *cert)
{
    unsigned char bytes[SERIAL_BYTES];
    do {
        if (RAND_bytes(bytes, sizeof bytes) != 1) {
            return false;
        }
    } while (bytes[0] == 0 && bytes[1] == 0); /* keep it a full-size number */
    BIGNUM *bn = BN_bin2bn(bytes, sizeof bytes, NULL);
    if (bn == NULL) {
        return false;
    }
    ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    if (serial == NULL) {
        return false;
    }
    int ok = X509_set_serialNumber(cert, serial);
    ASN1_INTEGER_free(serial);
    return ok == 1;
}

/* A serial as lower-case hex, zero-padded to 32 digits; new string or NULL. */
static char *serial_hex(const ASN1_INTEGER *serial)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
    if (bn == NULL) {
        return NULL;
    }
    int bytes = BN_num_bytes(bn);
    if (bytes < SERIAL_BYTES) {
        bytes = SERIAL_BYTES;
    }
    unsigned char *buffer = malloc((size_t)bytes);
    char *hex = malloc((size_t)bytes * 2 + 1);
    if (buffer == NULL || hex == NULL || BN_bn2binpad(bn, buffer, bytes) != bytes) {
        free(buffer);
        free(hex);
        BN_free(bn);
        return NULL;
    }
    for (int i = 0; i < bytes; i++) {
        snprintf(hex + 2 * i, 3, "%02x", buffer[i]);
    }
    free(buffer);
    BN_free(bn);
    return hex;
}

/* Adds an extension from its configuration text (issuer/subject for key ids). */
static bool add_extension(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX context;
    X509V3_set_ctx(&context, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *extension = X509V3_EXT_conf_nid(NULL, &context, nid, value);
    if (extension == NULL) {
        return false;
    }
    int ok = X509_add_ext(cert, extension, -1);
    X509_EXTENSION_free(extension);
    return ok == 1;
}

/* authorityKeyIdentifier from the issuer's subjectKeyIdentifier, as
 * "keyid:always" makes it, without parsing configuration text. An issuer
 * without one (an operator's CA) goes the configuration way, which refuses it
 * as before. */
static bool add_authority_key_id(X509 *cert, X509 *issuer)
{
    const ASN1_OCTET_STRING *issuer_key_id = X509_get0_subject_key_id(issuer);
    if (issuer_key_id == NULL) {
        return add_extension(cert, issuer, NID_authority_key_identifier, "keyid:always");
    }
    AUTHORITY_KEYID *key_id = AUTHORITY_KEYID_new();
    bool ok =
        key_id != NULL && (key_id->keyid = ASN1_OCTET_STRING_dup(issuer_key_id)) != NULL &&
        X509_add1_ext_i2d(cert, NID_authority_key_identifier, key_id, 0, X509V3_ADD_DEFAULT) == 1;
    AUTHORITY_KEYID_free(key_id);
    return ok;
}

/* An extension from its configuration text, for one that needs no issuer or
 * subject; a new extension or NULL. */
static X509_EXTENSION *make_extension(int nid, const char *value)
{
    X509V3_CTX context;
    X509V3_set_ctx(&context, NULL, NULL, NULL, NULL, 0);
    return X509V3_EXT_conf_nid(NULL, &context, nid, value);
}

/* "<prefix> <trust domain><suffix>" when it fits a CN, else "<prefix><suffix>". */
static void ca_common_name(char *out, size_t size, const char *prefix, const char *trust_domain,
                           const char *suffix)
{
    int n = snprintf(out, size, "%s %s%s", prefix, trust_domain, suffix);
    if (n < 0 || (size_t)n > CN_MAX || (size_t)n >= size) {
        snprintf(out, size, "%s%s", prefix, suffix);
    }
}

/* Builds a CA certificate for key: self-signed when signer is NULL, else
 * signed by signer/signer_key. pathlen < 0: no path length constraint. */
static X509 *make_ca_certificate(const char *common_name, EVP_PKEY *key, X509 *signer,
                                 EVP_PKEY *signer_key, time_t not_before, time_t not_after,
                                 int pathlen)
{
    X509 *cert = X509_new();
    if (cert == NULL) {
        return NULL;
    }
    bool ok = X509_set_version(cert, X509_VERSION_3) == 1 && set_random_serial(cert) &&
              ASN1_TIME_set(X509_getm_notBefore(cert), not_before) != NULL &&
              ASN1_TIME_set(X509_getm_notAfter(cert), not_after) != NULL &&
              X509_set_pubkey(cert, key) == 1 &&
              X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                                         (const unsigned char *)common_name, -1, -1, 0) == 1;
    if (ok) {
        ok = X509_set_issuer_name(cert, signer != NULL ? X509_get_subject_name(signer)
                                                       : X509_get_subject_name(cert)) == 1;
    }
    X509 *issuer = signer != NULL ? signer : cert;
    ok = ok &&
         add_extension(cert, issuer, NID_basic_constraints,
                       pathlen >= 0 ? "critical,CA:TRUE,pathlen:0" : "critical,CA:TRUE") &&
         add_extension(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         add_extension(cert, issuer, NID_subject_key_identifier, "hash") &&
         add_extension(cert, issuer, NID_authority_key_identifier, "keyid:always") &&
         X509_sign(cert, signer_key != NULL ? signer_key : key,
                   digest_for(signer_key != NULL ? signer_key : key)) > 0;
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static EVP_PKEY *generate_p256(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static X509 *make_root(const char *trust_domain, EVP_PKEY *key, int64_t now_ms)
{
    char name[CN_MAX * 2];
    ca_common_name(name, sizeof name, "Atrium Root CA", trust_domain, "");
    time_t now = ms_to_s(now_ms);
    return make_ca_certificate(name, key, NULL, NULL, now, now + (time_t)CA_ROOT_LIFETIME_S, -1);
}

static X509 *make_issuer(const char *trust_domain, EVP_PKEY *key, X509 *root, EVP_PKEY *root_key,
                         int64_t now_ms)
{
    unsigned char tag[4];
    if (RAND_bytes(tag, sizeof tag) != 1) {
        return NULL;
    }
    char suffix[16];
    snprintf(suffix, sizeof suffix, " %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    char name[CN_MAX * 2];
    ca_common_name(name, sizeof name, "Atrium Issuing CA", trust_domain, suffix);
    time_t now = ms_to_s(now_ms);
    time_t end = now + (time_t)CA_ISSUER_LIFETIME_S;
    time_t root_end = ms_to_s(not_after_ms(root));
    if (root_end < end) {
        end = root_end;
    }
    return make_ca_certificate(name, key, root, root_key, now, end, 0);
}

/* ---- CSR parsing ------------------------------------------------------------------ */

/*
 * A PKCS #10 request (RFC 2986), parsed with templates of our own rather than
 * OpenSSL's X509_REQ. X509_REQ turns the SubjectPublicKeyInfo into an
 * EVP_PKEY while it parses, and OpenSSL 3.0 builds a decoder chain for that
 * on every call: over a third of the time a signing took. Here the key stays
 * as its algorithm and BIT STRING until csr_public_key has accepted the
 * algorithm and curve (or size), and then builds the EVP_PKEY from its
 * parameters. The CertificationRequestInfo keeps its encoding as received
 * (ASN1_SEQUENCE_enc), so the signature is verified over exactly the bytes
 * that were signed, as X509_REQ_verify does.
 */
/* clang-format off */
typedef struct csr_key_info {
    X509_ALGOR *algorithm;
    ASN1_BIT_STRING *public_key;
} csr_key_info;

ASN1_SEQUENCE(csr_key_info) = {
    ASN1_SIMPLE(csr_key_info, algorithm, X509_ALGOR),
    ASN1_SIMPLE(csr_key_info, public_key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(csr_key_info)

typedef struct csr_info {
    ASN1_ENCODING encoding; /* the DER as received: what the signature covers */
    ASN1_INTEGER *version;
    X509_NAME *subject;
    csr_key_info *key_info;
    STACK_OF(X509_ATTRIBUTE) *attributes; /* NULL when absent */
} csr_info;

/* The attributes are OPTIONAL here, as in OpenSSL's X509_REQ_INFO (some
 * encoders leave the empty set out). */
ASN1_SEQUENCE_enc(csr_info, encoding, NULL) = {
    ASN1_SIMPLE(csr_info, version, ASN1_INTEGER),
    ASN1_SIMPLE(csr_info, subject, X509_NAME),
    ASN1_SIMPLE(csr_info, key_info, csr_key_info),
    ASN1_IMP_SET_OF_OPT(csr_info, attributes, X509_ATTRIBUTE, 0),
} static_ASN1_SEQUENCE_END_ref(csr_info, csr_info)

typedef struct csr_request {
    csr_info *info;
    X509_ALGOR *signature_algorithm;
    ASN1_BIT_STRING *signature;
} csr_request;

ASN1_SEQUENCE(csr_request) = {
    ASN1_SIMPLE(csr_request, info, csr_info),
    ASN1_SIMPLE(csr_request, signature_algorithm, X509_ALGOR),
    ASN1_SIMPLE(csr_request, signature, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(csr_request)

/* RSAPublicKey (RFC 8017 A.1.1), the content of an RSA key's BIT STRING. */
typedef struct rsa_public_numbers {
    BIGNUM *modulus;
    BIGNUM *exponent;
} rsa_public_numbers;

ASN1_SEQUENCE(rsa_public_numbers) = {
    ASN1_SIMPLE(rsa_public_numbers, modulus, BIGNUM),
    ASN1_SIMPLE(rsa_public_numbers, exponent, BIGNUM),
} static_ASN1_SEQUENCE_END(rsa_public_numbers)

/* Frees a request from csr_from_pem (NULL is ignored). */
static void csr_request_free(csr_request *request);
/* clang-format on */

static void csr_request_free(csr_request *request)
{
    ASN1_item_free((ASN1_VALUE *)request, ASN1_ITEM_rptr(csr_request));
}

/* Parses a PEM CSR (labelled as PEM_read_bio_X509_REQ accepts it: CERTIFICATE
 * REQUEST or NEW CERTIFICATE REQUEST). A new request the caller frees with
 * csr_request_free, or NULL. */
static csr_request *csr_from_pem(const char *csr_pem)
{
    BIO *bio = BIO_new_mem_buf(csr_pem, -1);
    unsigned char *der = NULL;
    long length = 0;
    char *label = NULL;
    csr_request *request = NULL;
    if (bio != NULL &&
        PEM_bytes_read_bio(&der, &length, &label, PEM_STRING_X509_REQ, bio, NULL, NULL) == 1) {
        const unsigned char *cursor = der;
        request = (csr_request *)ASN1_item_d2i(NULL, &cursor, length, ASN1_ITEM_rptr(csr_request));
    }
    OPENSSL_free(der);
    OPENSSL_free(label);
    BIO_free(bio);
    return request;
}

/* The extensions a CSR asks for, read as X509_REQ_get_extensions reads them
 * (the PKCS #9 extensionRequest attribute, else Microsoft's older one; the
 * first value). A new stack (empty when none are asked for) the caller frees
 * with sk_X509_EXTENSION_pop_free(..., X509_EXTENSION_free); NULL when the
 * attribute is malformed. */
static STACK_OF(X509_EXTENSION) * csr_extensions(const csr_info *info)
{
    static const int attribute_nids[] = {NID_ext_req, NID_ms_ext_req};
    ASN1_TYPE *value = NULL;
    for (size_t i = 0; info->attributes != NULL && i < 2; i++) {
        int index = X509at_get_attr_by_NID(info->attributes, attribute_nids[i], -1);
        if (index >= 0) {
            value = X509_ATTRIBUTE_get0_type(X509at_get_attr(info->attributes, index), 0);
            break;
        }
    }
    if (value == NULL) {
        return sk_X509_EXTENSION_new_null();
    }
    if (value->type != V_ASN1_SEQUENCE) {
        return NULL;
    }
    const unsigned char *cursor = value->value.sequence->data;
    return (STACK_OF(X509_EXTENSION) *)ASN1_item_d2i(NULL, &cursor, value->value.sequence->length,
                                                     ASN1_ITEM_rptr(X509_EXTENSIONS));
}

/* The name of an OID for messages: its short name, else its dotted form. */
static const char *object_name(const ASN1_OBJECT *object, char *buffer, size_t size)
{
    int nid = OBJ_obj2nid(object);
    if (nid != NID_undef && OBJ_nid2sn(nid) != NULL) {
        return OBJ_nid2sn(nid);
    }
    if (OBJ_obj2txt(buffer, (int)size, object, 1) <= 0) {
        snprintf(buffer, size, "unknown");
    }
    return buffer;
}

/* A public key of type ("RSA") from its OSSL_PARAMs; NULL when the provider
 * refuses them. */
static EVP_PKEY *key_from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY_CTX *context = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *key = NULL;
    if (context == NULL || EVP_PKEY_fromdata_init(context) != 1 ||
        EVP_PKEY_fromdata(context, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    EVP_PKEY_CTX_free(context);
    return key;
}

/* The domain parameters of a named curve as a key without key material;
 * NULL on failure. */
static EVP_PKEY *curve_parameters(const char *group)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY_CTX *context = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *parameters = NULL;
    if (context == NULL || EVP_PKEY_fromdata_init(context) != 1 ||
        EVP_PKEY_fromdata(context, &parameters, EVP_PKEY_KEY_PARAMETERS, params) != 1) {
        EVP_PKEY_free(parameters);
        parameters = NULL;
    }
    EVP_PKEY_CTX_free(context);
    return parameters;
}

/* An ECDSA key: a named curve, P-256 or P-384, and a point encoded for it
 * (uncompressed or compressed). The key is a copy of the curve's parameters
 * (authority->p256_parameters / p384_parameters) with the point set; the
 * provider checks the point is on the curve. */
static EVP_PKEY *csr_ec_key(const ca *authority, int parameter_type, const void *parameter,
                            const unsigned char *point, size_t length, char *error,
                            size_t error_size)
{
    if (parameter_type != V_ASN1_OBJECT) {
        openssl_error_text(
            error, error_size,
            "the CSR's EC key does not name its curve: only the named curves P-256 and "
            "P-384 are accepted");
        return NULL;
    }
    int curve = OBJ_obj2nid(parameter);
    const char *group = NULL;
    size_t field_bytes = 0;
    EVP_PKEY *curve_key = NULL;
    if (curve == NID_X9_62_prime256v1) {
        group = "P-256";
        field_bytes = 32;
        curve_key = authority->p256_parameters;
    } else if (curve == NID_secp384r1) {
        group = "P-384";
        field_bytes = 48;
        curve_key = authority->p384_parameters;
    } else {
        char name[80];
        openssl_error_text(error, error_size,
                           "the CSR's EC key uses curve %s: only P-256 and P-384 are accepted",
                           object_name(parameter, name, sizeof name));
        return NULL;
    }
    bool uncompressed = length == 1 + 2 * field_bytes && point[0] == 0x04;
    bool compressed = length == 1 + field_bytes && (point[0] == 0x02 || point[0] == 0x03);
    if (!uncompressed && !compressed) {
        openssl_error_text(error, error_size,
                           "the CSR's EC public key is not a point encoding for %s", group);
        return NULL;
    }
    EVP_PKEY *key = EVP_PKEY_dup(curve_key);
    if (key == NULL || EVP_PKEY_set1_encoded_public_key(key, point, length) != 1) {
        EVP_PKEY_free(key);
        openssl_error_text(error, error_size, "the CSR's EC public key is not a point on %s",
                           group);
        return NULL;
    }
    return key;
}

/* An RSA key of at least 2048 bits (algorithm parameters NULL, RFC 3279). */
static EVP_PKEY *csr_rsa_key(int parameter_type, const unsigned char *data, size_t length,
                             char *error, size_t error_size)
{
    if (parameter_type != V_ASN1_NULL && parameter_type != V_ASN1_UNDEF) {
        openssl_error_text(error, error_size,
                           "the CSR's RSA key has algorithm parameters (must be NULL)");
        return NULL;
    }
    const unsigned char *cursor = data;
    rsa_public_numbers *numbers = (rsa_public_numbers *)ASN1_item_d2i(
        NULL, &cursor, (long)length, ASN1_ITEM_rptr(rsa_public_numbers));
    if (numbers == NULL) {
        openssl_error_text(error, error_size, "the CSR's RSA public key does not parse");
        return NULL;
    }
    EVP_PKEY *key = NULL;
    OSSL_PARAM_BLD *builder = NULL;
    OSSL_PARAM *params = NULL;
    int bits = BN_num_bits(numbers->modulus);
    if (bits < 2048) {
        openssl_error_text(error, error_size,
                           "the CSR's RSA key has %d bits: at least 2048 are required", bits);
    } else if ((builder = OSSL_PARAM_BLD_new()) == NULL ||
               OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_N, numbers->modulus) != 1 ||
               OSSL_PARAM_BLD_push_BN(builder, OSSL_PKEY_PARAM_RSA_E, numbers->exponent) != 1 ||
               (params = OSSL_PARAM_BLD_to_param(builder)) == NULL ||
               (key = key_from_params("RSA", params)) == NULL) {
        openssl_error_text(error, error_size, "the CSR's RSA public key is not usable");
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(builder);
    ASN1_item_free((ASN1_VALUE *)numbers, ASN1_ITEM_rptr(rsa_public_numbers));
    return key;
}

/* The CSR's public key, accepted only for ECDSA P-256/P-384 (named curves)
 * and RSA >= 2048, built from its parameters (no decoder). A new key the
 * caller frees, or NULL with the reason. */
static EVP_PKEY *csr_public_key(const ca *authority, const csr_key_info *key_info, char *error,
                                size_t error_size)
{
    const ASN1_OBJECT *algorithm = NULL;
    int parameter_type = V_ASN1_UNDEF;
    const void *parameter = NULL;
    X509_ALGOR_get0(&algorithm, &parameter_type, &parameter, key_info->algorithm);
    const ASN1_BIT_STRING *bits = key_info->public_key;
    if ((bits->flags & 0x07) != 0 || bits->length <= 0) {
        openssl_error_text(error, error_size, "the CSR's public key is empty or not whole bytes");
        return NULL;
    }
    size_t length = (size_t)bits->length;
    switch (OBJ_obj2nid(algorithm)) {
    case NID_X9_62_id_ecPublicKey:
        return csr_ec_key(authority, parameter_type, parameter, bits->data, length, error,
                          error_size);
    case NID_rsaEncryption:
        return csr_rsa_key(parameter_type, bits->data, length, error, error_size);
    default: {
        char name[80];
        openssl_error_text(
            error, error_size,
            "the CSR's key type %s is not accepted (ECDSA P-256/P-384 or RSA >= 2048)",
            object_name(algorithm, name, sizeof name));
        return NULL;
    }
    }
}

/* Whether the CSR is signed with a SHA-2 digest (SHA-256, SHA-384 or SHA-512).
 * SHA-1 and older digests are refused: a chosen-prefix collision lets one
 * CSR's signature stand for another (RFC 9155 deprecates them for TLS). */
static bool csr_digest_accepted(const csr_request *request, char *error, size_t error_size)
{
    int digest = NID_undef, key_type = NID_undef;
    const ASN1_OBJECT *algorithm = request->signature_algorithm->algorithm;
    if (OBJ_find_sigid_algs(OBJ_obj2nid(algorithm), &digest, &key_type) == 1 &&
        (digest == NID_sha256 || digest == NID_sha384 || digest == NID_sha512)) {
        return true;
    }
    char name[80];
    openssl_error_text(error, error_size,
                       "the CSR's signature algorithm %s is not accepted (SHA-256, SHA-384 or "
                       "SHA-512 with ECDSA or RSA)",
                       object_name(algorithm, name, sizeof name));
    return false;
}

/* Whether the CSR's signature verifies with key (the CSR's own), over the
 * CertificationRequestInfo as received, with the algorithm checks of
 * X509_REQ_verify (the signature algorithm must suit the key). */
static bool csr_signature_verifies(const csr_request *request, EVP_PKEY *key)
{
    return ASN1_item_verify_ex(ASN1_ITEM_rptr(csr_info), request->signature_algorithm,
                               request->signature, request->info, NULL, key, NULL, NULL) == 1;
}

/* ---- SAN handling ------------------------------------------------------------ */

static const char *general_name_kind(int type)
{
    switch (type) {
    case GEN_DNS:
        return "a DNS name";
    case GEN_EMAIL:
        return "an email address";
    case GEN_IPADD:
        return "an IP address";
    case GEN_DIRNAME:
        return "a directory name";
    case GEN_OTHERNAME:
        return "an otherName";
    case GEN_RID:
        return "a registered ID";
    default:
        return "an unsupported name";
    }
}

/* Copies a URI GENERAL_NAME; NULL (with error) when it holds a NUL byte. */
static char *copy_uri(const GENERAL_NAME *name, char *error, size_t error_size)
{
    const ASN1_IA5STRING *uri = name->d.uniformResourceIdentifier;
    int length = ASN1_STRING_length(uri);
    const unsigned char *data = ASN1_STRING_get0_data(uri);
    if (length <= 0 || memchr(data, '\0', (size_t)length) != NULL) {
        openssl_error_text(error, error_size, "the URI SAN is empty or holds a NUL byte");
        return NULL;
    }
    char *copy = malloc((size_t)length + 1);
    if (copy == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        return NULL;
    }
    memcpy(copy, data, (size_t)length);
    copy[length] = '\0';
    return copy;
}

/* The SAN of a CSR, which must be exactly one name, a URI. A new string the
 * caller frees, or NULL with the reason. */
static char *csr_single_uri(const csr_info *info, char *error, size_t error_size)
{
    STACK_OF(X509_EXTENSION) *extensions = csr_extensions(info);
    if (extensions == NULL) {
        openssl_error_text(error, error_size, "the CSR's extension request is malformed");
        return NULL;
    }
    X509_EXTENSION *san = NULL;
    int san_count = 0;
    for (int i = 0; i < sk_X509_EXTENSION_num(extensions); i++) {
        X509_EXTENSION *extension = sk_X509_EXTENSION_value(extensions, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(extension)) == NID_subject_alt_name) {
            san = extension;
            san_count++;
        }
    }
    char *uri = NULL;
    if (san_count != 1) {
        openssl_error_text(error, error_size,
                           san_count == 0
                               ? "the CSR has no subject alternative name (expected one URI "
                                 "SAN, the SPIFFE ID)"
                               : "the CSR has several subjectAltName extensions");
    } else {
        GENERAL_NAMES *names = X509V3_EXT_d2i(san);
        if (names == NULL) {
            openssl_error_text(error, error_size,
                               "the CSR's subjectAltName extension is malformed");
        } else if (sk_GENERAL_NAME_num(names) != 1) {
            openssl_error_text(
                error, error_size,
                "the CSR has %d subject alternative names: exactly one (a URI, the SPIFFE "
                "ID) is allowed",
                sk_GENERAL_NAME_num(names));
        } else {
            const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, 0);
            if (name->type != GEN_URI) {
                openssl_error_text(
                    error, error_size,
                    "the CSR's subject alternative name is %s: it must be a URI (the "
                    "SPIFFE ID)",
                    general_name_kind(name->type));
            } else {
                uri = copy_uri(name, error, error_size);
            }
        }
        GENERAL_NAMES_free(names);
    }
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    return uri;
}

/* The single URI SAN of a certificate (other name types may be present). */
static char *certificate_single_uri(const X509 *cert, char *error, size_t error_size)
{
    int critical = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &critical, NULL);
    if (names == NULL) {
        openssl_error_text(error, error_size,
                           critical == -2 ? "the certificate has several subjectAltName extensions"
                                          : "the certificate has no subject alternative name");
        return NULL;
    }
    const GENERAL_NAME *found = NULL;
    int uri_count = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type == GEN_URI) {
            found = name;
            uri_count++;
        }
    }
    char *uri = NULL;
    if (uri_count != 1) {
        openssl_error_text(error, error_size,
                           "the certificate has %d URI SANs: expected exactly one", uri_count);
    } else {
        uri = copy_uri(found, error, error_size);
    }
    GENERAL_NAMES_free(names);
    return uri;
}

/* Checks identity is a SPIFFE ID of the trust domain; *service_out (optional)
 * gets the service, a new string. */
static int check_identity(const char *trust_domain, const char *identity, char **service_out,
                          char *error, size_t error_size)
{
    spiffe_id id;
    char message[256];
    if (spiffe_parse(identity, &id, message, sizeof message) != 0) {
        openssl_error_text(error, error_size, "identity \"%s\" is not an Atrium SPIFFE ID: %s",
                           identity, message);
        return -1;
    }
    if (strcmp(id.trust_domain, trust_domain) != 0) {
        openssl_error_text(error, error_size,
                           "identity \"%s\" is in trust domain \"%s\", not \"%s\"", identity,
                           id.trust_domain, trust_domain);
        spiffe_id_clear(&id);
        return -1;
    }
    if (service_out != NULL) {
        *service_out = id.service;
        id.service = NULL;
    }
    spiffe_id_clear(&id);
    return 0;
}

/* ---- leaves ---------------------------------------------------------------------- */

/* The validity of a new leaf; -1 for a TTL outside the allowed range or an expired issuer. */
static int leaf_validity(const ca *authority, uint32_t ttl_s, int64_t now_ms, time_t *not_before,
                         time_t *not_after, char *error, size_t error_size)
{
    if (ttl_s == 0) {
        ttl_s = CA_LEAF_TTL_DEFAULT_S;
    }
    if (ttl_s < CA_LEAF_TTL_MIN_S || ttl_s > CA_LEAF_TTL_MAX_S) {
        openssl_error_text(error, error_size, "ttl %" PRIu32 " s is outside [%u s, %u s]", ttl_s,
                           CA_LEAF_TTL_MIN_S, CA_LEAF_TTL_MAX_S);
        return -1;
    }
    time_t now = ms_to_s(now_ms);
    time_t issuer_end = ms_to_s(not_after_ms(authority->issuer));
    if (issuer_end <= now) {
        openssl_error_text(error, error_size, "the issuing CA has expired: rotate it");
        return -1;
    }
    *not_before = now;
    *not_after = now + (time_t)ttl_s;
    if (*not_after > issuer_end) {
        *not_after = issuer_end;
    }
    return 0;
}

/* Copies a CSR's SubjectPublicKeyInfo into cert as it is (nothing is
 * decoded). X509_set_pubkey would encode the EVP_PKEY again, and OpenSSL 3.0
 * decodes that back with a decoder chain. */
static bool copy_public_key(X509 *cert, const csr_key_info *from)
{
    const ASN1_OBJECT *algorithm = NULL;
    int parameter_type = V_ASN1_UNDEF;
    const void *parameter_value = NULL;
    X509_ALGOR_get0(&algorithm, &parameter_type, &parameter_value, from->algorithm);
    const unsigned char *bits = from->public_key->data;
    int length = from->public_key->length;
    void *value = NULL;
    if (parameter_type == V_ASN1_OBJECT)
        value = OBJ_dup(parameter_value);
    else if (parameter_type == V_ASN1_SEQUENCE || parameter_type == V_ASN1_OCTET_STRING)
        value = ASN1_STRING_dup(parameter_value);
    else if (parameter_type != V_ASN1_NULL && parameter_type != V_ASN1_UNDEF)
        return false;
    ASN1_OBJECT *algorithm_copy = OBJ_dup(algorithm);
    unsigned char *bits_copy = OPENSSL_memdup(bits, (size_t)length);
    if (algorithm_copy == NULL || bits_copy == NULL ||
        (value == NULL && (parameter_type == V_ASN1_OBJECT || parameter_type == V_ASN1_SEQUENCE ||
                           parameter_type == V_ASN1_OCTET_STRING)) ||
        X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(cert), algorithm_copy, parameter_type, value,
                               bits_copy, length) != 1) {
        ASN1_OBJECT_free(algorithm_copy);
        OPENSSL_free(bits_copy);
        if (parameter_type == V_ASN1_OBJECT)
            ASN1_OBJECT_free(value);
        else
            ASN1_STRING_free(value);
        return false;
    }
    return true;
}

/* What one signing needs, taken under the lock and then used without it, so
 * that signings run in parallel and a rotation never swaps the issuer under
 * one: the issuer and its key (each with a reference of its own) and the
 * leaf's validity. */
typedef struct {
    X509 *issuer;
    EVP_PKEY *issuer_key;
    char *issuer_pem; /* a copy the snapshot owns, or NULL */
    time_t not_before;
    time_t not_after;
    const ca *authority; /* for the leaf extensions it made at ca_open */
} signing_snapshot;

static int take_signing_snapshot(ca *authority, uint32_t ttl_s, int64_t now_ms,
                                 signing_snapshot *signer, char *error, size_t error_size)
{
    memset(signer, 0, sizeof *signer);
    pthread_mutex_lock(&authority->lock);
    int result = leaf_validity(authority, ttl_s, now_ms, &signer->not_before, &signer->not_after,
                               error, error_size);
    if (result == 0) {
        X509_up_ref(authority->issuer);
        EVP_PKEY_up_ref(authority->issuer_key);
        signer->issuer = authority->issuer;
        signer->issuer_key = authority->issuer_key;
        signer->issuer_pem = authority->issuer_pem != NULL ? strdup(authority->issuer_pem) : NULL;
        signer->authority = authority;
    }
    pthread_mutex_unlock(&authority->lock);
    return result;
}

static void release_signing_snapshot(signing_snapshot *signer)
{
    X509_free(signer->issuer);
    EVP_PKEY_free(signer->issuer_key);
    free(signer->issuer_pem);
    memset(signer, 0, sizeof *signer);
}

/* Builds and signs a leaf for key with URI SAN identity (+ IP SAN when ip !=
 * NULL). key: the subject's key; public_key (may be NULL): the same key as a
 * CSR carried it, copied as is when given. Returns a new certificate. */
static X509 *make_leaf(const signing_snapshot *signer, EVP_PKEY *key,
                       const csr_key_info *public_key, const char *identity, const char *service,
                       const char *ip, char *error, size_t error_size)
{
    X509 *cert = X509_new();
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    if (cert == NULL || names == NULL) {
        X509_free(cert);
        GENERAL_NAMES_free(names);
        openssl_error_text(error, error_size, "out of memory");
        return NULL;
    }
    bool ok = X509_set_version(cert, X509_VERSION_3) == 1 && set_random_serial(cert) &&
              ASN1_TIME_set(X509_getm_notBefore(cert), signer->not_before) != NULL &&
              ASN1_TIME_set(X509_getm_notAfter(cert), signer->not_after) != NULL &&
              (public_key != NULL ? copy_public_key(cert, public_key)
                                  : X509_set_pubkey(cert, key) == 1) &&
              X509_set_issuer_name(cert, X509_get_subject_name(signer->issuer)) == 1 &&
              X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
                                         (const unsigned char *)service, -1, -1, 0) == 1;
    /* The SAN, built as values (never parsed from text). */
    GENERAL_NAME *uri_name = GENERAL_NAME_new();
    ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
    if (uri_name == NULL || uri == NULL ||
        ASN1_STRING_set(uri, identity, (int)strlen(identity)) != 1) {
        GENERAL_NAME_free(uri_name);
        ASN1_IA5STRING_free(uri);
        ok = false;
    } else {
        GENERAL_NAME_set0_value(uri_name, GEN_URI, uri);
        if (sk_GENERAL_NAME_push(names, uri_name) <= 0) {
            GENERAL_NAME_free(uri_name);
            ok = false;
        }
    }
    if (ok && ip != NULL) {
        ASN1_OCTET_STRING *address = a2i_IPADDRESS(ip);
        GENERAL_NAME *ip_name = address != NULL ? GENERAL_NAME_new() : NULL;
        if (ip_name == NULL) {
            ASN1_OCTET_STRING_free(address);
            GENERAL_NAMES_free(names);
            X509_free(cert);
            openssl_error_text(error, error_size, "\"%s\" is not an IPv4 or IPv6 address", ip);
            return NULL;
        }
        GENERAL_NAME_set0_value(ip_name, GEN_IPADD, address);
        if (sk_GENERAL_NAME_push(names, ip_name) <= 0) {
            GENERAL_NAME_free(ip_name);
            ok = false;
        }
    }
    const ca *authority = signer->authority;
    X509_EXTENSION *usage =
        EVP_PKEY_is_a(key, "RSA") ? authority->leaf_key_usage_rsa : authority->leaf_key_usage;
    ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1 &&
         X509_add_ext(cert, authority->leaf_basic_constraints, -1) == 1 &&
         X509_add_ext(cert, usage, -1) == 1 &&
         X509_add_ext(cert, authority->leaf_extended_key_usage, -1) == 1 &&
         add_extension(cert, signer->issuer, NID_subject_key_identifier, "hash") &&
         add_authority_key_id(cert, signer->issuer) &&
         X509_sign(cert, signer->issuer_key, digest_for(signer->issuer_key)) > 0;
    GENERAL_NAMES_free(names);
    if (!ok) {
        openssl_error_text(error, error_size, "cannot build the certificate");
        X509_free(cert);
        return NULL;
    }
    return cert;
}

/* Fills chain (leaf + issuer PEM) and record from a signed leaf. */
static int finish_leaf(const signing_snapshot *signer, X509 *leaf, const char *identity,
                       char **chain_pem, model_certificate *record, char *error, size_t error_size)
{
    char *pem = NULL;
    if (signer->issuer_pem != NULL) {
        char *leaf_pem = cert_to_pem(leaf);
        if (leaf_pem != NULL && asprintf(&pem, "%s%s", leaf_pem, signer->issuer_pem) < 0) {
            pem = NULL;
        }
        free(leaf_pem);
    } else {
        X509 *chain[2] = {leaf, signer->issuer};
        pem = certs_to_pem(chain, 2);
    }
    char *serial = serial_hex(X509_get0_serialNumber(leaf));
    char *identity_copy = strdup(identity);
    int64_t from = 0;
    int64_t to = 0;
    if (pem == NULL || serial == NULL || identity_copy == NULL ||
        !asn1_time_ms(X509_get0_notBefore(leaf), &from) ||
        !asn1_time_ms(X509_get0_notAfter(leaf), &to)) {
        free(pem);
        free(serial);
        free(identity_copy);
        openssl_error_text(error, error_size, "out of memory");
        return -1;
    }
    *chain_pem = pem;
    memset(record, 0, sizeof *record);
    record->serial = serial;
    record->identity = identity_copy;
    record->not_before_ms = from;
    record->not_after_ms = to;
    return 0;
}

static void clear_outputs(char **chain_pem, model_certificate *record)
{
    *chain_pem = NULL;
    if (record != NULL) {
        memset(record, 0, sizeof *record);
    }
}

int ca_sign_csr(ca *authority, const char *csr_pem, const char *expected_identity, uint32_t ttl_s,
                int64_t now_ms, char **chain_pem, model_certificate *record, char *error,
                size_t error_size)
{
    clear_outputs(chain_pem, record);
    ERR_clear_error();
    if (csr_pem == NULL) {
        openssl_error_text(error, error_size, "no CSR");
        return -1;
    }
    csr_request *request = csr_from_pem(csr_pem);
    if (request == NULL) {
        openssl_error_text(error, error_size, "cannot parse the CSR PEM");
        return -1;
    }
    int result = -1;
    char *identity = NULL;
    char *service = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    if (!csr_digest_accepted(request, error, error_size)) {
        goto done;
    }
    key = csr_public_key(authority, request->info->key_info, error, error_size);
    if (key == NULL) {
        goto done;
    }
    if (!csr_signature_verifies(request, key)) {
        openssl_error_text(error, error_size, "the CSR's signature does not verify");
        goto done;
    }
    identity = csr_single_uri(request->info, error, error_size);
    if (identity == NULL) {
        goto done;
    }
    if (check_identity(authority->trust_domain, identity, &service, error, error_size) != 0) {
        goto done;
    }
    if (expected_identity != NULL && strcmp(identity, expected_identity) != 0) {
        openssl_error_text(error, error_size,
                           "the CSR asks for \"%s\" but this request may only get \"%s\"", identity,
                           expected_identity);
        goto done;
    }
    signing_snapshot signer;
    if (take_signing_snapshot(authority, ttl_s, now_ms, &signer, error, error_size) == 0 &&
        (leaf = make_leaf(&signer, key, request->info->key_info, identity, service, NULL, error,
                          error_size)) != NULL) {
        result = finish_leaf(&signer, leaf, identity, chain_pem, record, error, error_size);
    }
    release_signing_snapshot(&signer);
done:
    X509_free(leaf);
    free(identity);
    free(service);
    EVP_PKEY_free(key);
    csr_request_free(request);
    return result;
}

int ca_issue_server_certificate(ca *authority, const char *identity, const char *ip_address,
                                uint32_t ttl_s, int64_t now_ms, char **key_pem, char **chain_pem,
                                model_certificate *record, char *error, size_t error_size)
{
    clear_outputs(chain_pem, record);
    *key_pem = NULL;
    ERR_clear_error();
    char *service = NULL;
    if (identity == NULL ||
        check_identity(authority->trust_domain, identity, &service, error, error_size) != 0) {
        if (identity == NULL) {
            openssl_error_text(error, error_size, "no identity");
        }
        return -1;
    }
    EVP_PKEY *key = generate_p256();
    if (key == NULL) {
        free(service);
        openssl_error_text(error, error_size, "cannot generate a P-256 key");
        return -1;
    }
    int result = -1;
    X509 *leaf = NULL;
    signing_snapshot signer;
    if (take_signing_snapshot(authority, ttl_s, now_ms, &signer, error, error_size) == 0 &&
        (leaf = make_leaf(&signer, key, NULL, identity, service, ip_address, error, error_size)) !=
            NULL) {
        result = finish_leaf(&signer, leaf, identity, chain_pem, record, error, error_size);
    }
    release_signing_snapshot(&signer);
    if (result == 0) {
        *key_pem = keys_to_pem(&key, 1);
        if (*key_pem == NULL) {
            free(*chain_pem);
            model_certificate_clear(record);
            clear_outputs(chain_pem, record);
            openssl_error_text(error, error_size, "cannot encode the private key");
            result = -1;
        }
    }
    X509_free(leaf);
    EVP_PKEY_free(key);
    free(service);
    return result;
}

int ca_csr_identity(const char *csr_pem, char **identity, char *error, size_t error_size)
{
    *identity = NULL;
    ERR_clear_error();
    csr_request *request = csr_pem != NULL ? csr_from_pem(csr_pem) : NULL;
    if (request == NULL) {
        openssl_error_text(error, error_size, "cannot parse the CSR PEM");
        return -1;
    }
    *identity = csr_single_uri(request->info, error, error_size);
    csr_request_free(request);
    return *identity != NULL ? 0 : -1;
}

/* The first certificate of a PEM text (the caller frees it), or NULL with the
 * reason in error. */
static X509 *parse_certificate(const char *cert_pem, char *error, size_t error_size)
{
    ERR_clear_error();
    BIO *bio = cert_pem != NULL ? BIO_new_mem_buf(cert_pem, -1) : NULL;
    X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (cert == NULL)
        openssl_error_text(error, error_size, "cannot parse the certificate PEM");
    return cert;
}

int ca_certificate_identity(const char *cert_pem, char **identity, char *error, size_t error_size)
{
    *identity = NULL;
    X509 *cert = parse_certificate(cert_pem, error, error_size);
    if (cert == NULL)
        return -1;
    *identity = certificate_single_uri(cert, error, error_size);
    X509_free(cert);
    return *identity != NULL ? 0 : -1;
}

int ca_certificate_serial(const char *cert_pem, char **serial, char *error, size_t error_size)
{
    *serial = NULL;
    X509 *cert = parse_certificate(cert_pem, error, error_size);
    if (cert == NULL)
        return -1;
    *serial = serial_hex(X509_get0_serialNumber(cert));
    X509_free(cert);
    if (*serial == NULL) {
        openssl_error_text(error, error_size, "cannot read the certificate's serial");
        return -1;
    }
    return 0;
}

/* ---- bundle, verification, CRLs ----------------------------------------------- */

/* The roots of the bundle at now (pointers owned by the CA); caller frees the array. */
static X509 **bundle_roots(ca *authority, int64_t now_ms, size_t *count)
{
    X509 **roots = malloc((authority->old_root_count + 1) * sizeof *roots);
    *count = 0;
    if (roots == NULL) {
        return NULL;
    }
    roots[(*count)++] = authority->root;
    for (size_t i = 0; i < authority->old_root_count; i++) {
        if (authority->old_root_retire_ms[i] > now_ms) {
            roots[(*count)++] = authority->old_roots[i];
        }
    }
    return roots;
}

/* Makes authority->bundle_pem the bundle at now_ms (called with the lock
 * held); false when out of memory. */
static bool refresh_bundle(ca *authority, int64_t now_ms)
{
    if (authority->bundle_pem != NULL && authority->bundle_from_ms <= now_ms &&
        now_ms < authority->bundle_until_ms) {
        return true;
    }
    size_t count = 0;
    X509 **roots = bundle_roots(authority, now_ms, &count);
    char *pem = roots != NULL ? certs_to_pem(roots, count) : NULL;
    free(roots);
    if (pem == NULL) {
        return false;
    }
    /* A previous root is in the bundle while now < its retirement: the set
     * changes at the last retirement passed and at the next one to come. */
    int64_t from = INT64_MIN;
    int64_t until = INT64_MAX;
    for (size_t i = 0; i < authority->old_root_count; i++) {
        int64_t retire = authority->old_root_retire_ms[i];
        if (retire > now_ms && retire < until) {
            until = retire;
        } else if (retire <= now_ms && retire > from) {
            from = retire;
        }
    }
    free(authority->bundle_pem);
    authority->bundle_pem = pem;
    authority->bundle_from_ms = from;
    authority->bundle_until_ms = until;
    return true;
}

char *ca_trust_bundle_pem(ca *authority, int64_t now_ms)
{
    pthread_mutex_lock(&authority->lock);
    char *pem = refresh_bundle(authority, now_ms) ? strdup(authority->bundle_pem) : NULL;
    pthread_mutex_unlock(&authority->lock);
    return pem;
}

char *ca_issuer_pem(ca *authority)
{
    pthread_mutex_lock(&authority->lock);
    char *pem = cert_to_pem(authority->issuer);
    pthread_mutex_unlock(&authority->lock);
    return pem;
}

int64_t ca_issuer_not_after_ms(ca *authority)
{
    pthread_mutex_lock(&authority->lock);
    int64_t ms = not_after_ms(authority->issuer);
    pthread_mutex_unlock(&authority->lock);
    return ms;
}

const char *ca_trust_domain(const ca *authority)
{
    return authority->trust_domain;
}

int ca_verify_leaf(ca *authority, const char *chain_pem, int64_t now_ms, char **identity,
                   char *error, size_t error_size)
{
    *identity = NULL;
    ERR_clear_error();
    X509 **chain = NULL;
    size_t chain_count = 0;
    if (chain_pem == NULL || parse_certs(chain_pem, strlen(chain_pem), &chain, &chain_count) != 0 ||
        chain_count == 0) {
        openssl_error_text(error, error_size, "cannot parse the presented certificate chain");
        return -1;
    }
    int result = -1;
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *context = X509_STORE_CTX_new();
    X509 **roots = NULL;
    char *uri = NULL;
    pthread_mutex_lock(&authority->lock);
    size_t root_count = 0;
    roots = bundle_roots(authority, now_ms, &root_count);
    bool ok = store != NULL && untrusted != NULL && context != NULL && roots != NULL;
    for (size_t i = 0; ok && i < root_count; i++) {
        ok = X509_STORE_add_cert(store, roots[i]) == 1;
    }
    for (size_t i = 1; ok && i < chain_count; i++) {
        ok = sk_X509_push(untrusted, chain[i]) > 0;
    }
    ok = ok && sk_X509_push(untrusted, authority->issuer) > 0;
    for (size_t i = 0; ok && i < authority->old_issuer_count; i++) {
        ok = sk_X509_push(untrusted, authority->old_issuers[i]) > 0;
    }
    if (!ok) {
        openssl_error_text(error, error_size, "out of memory");
    } else if (X509_STORE_CTX_init(context, store, chain[0], untrusted) != 1) {
        openssl_error_text(error, error_size, "cannot set up certificate verification");
    } else {
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(context), ms_to_s(now_ms));
        if (X509_verify_cert(context) != 1) {
            openssl_error_text(error, error_size, "the certificate does not verify: %s",
                               X509_verify_cert_error_string(X509_STORE_CTX_get_error(context)));
        } else if (X509_check_ca(chain[0]) != 0) {
            openssl_error_text(error, error_size,
                               "the presented certificate is a CA, not a workload");
        } else if ((uri = certificate_single_uri(chain[0], error, error_size)) != NULL &&
                   check_identity(authority->trust_domain, uri, NULL, error, error_size) == 0) {
            *identity = uri;
            uri = NULL;
            result = 0;
        }
    }
    pthread_mutex_unlock(&authority->lock);
    free(uri);
    free(roots);
    X509_STORE_CTX_free(context);
    sk_X509_free(untrusted); /* the certificates are not owned by the stack */
    X509_STORE_free(store);  /* the store holds its own references */
    for (size_t i = 0; i < chain_count; i++) {
        X509_free(chain[i]);
    }
    free(chain);
    return result;
}

/* True for 1..40 hex digits. */
static bool is_serial_hex(const char *serial)
{
    size_t length = serial != NULL ? strlen(serial) : 0;
    if (length == 0 || length > 40) {
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        char c = serial[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* Writes one CRL signed by issuer/key listing serials into bio. */
static int write_crl(BIO *bio, X509 *issuer, EVP_PKEY *key, const char *const *serials,
                     size_t count, int64_t now_ms, char *error, size_t error_size)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *now = ASN1_TIME_set(NULL, ms_to_s(now_ms));
    ASN1_TIME *next = ASN1_TIME_set(NULL, ms_to_s(now_ms) + (time_t)CA_CRL_LIFETIME_S);
    ASN1_INTEGER *number = ASN1_INTEGER_new();
    bool ok = crl != NULL && now != NULL && next != NULL && number != NULL &&
              X509_CRL_set_version(crl, X509_CRL_VERSION_2) == 1 &&
              X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)) == 1 &&
              X509_CRL_set1_lastUpdate(crl, now) == 1 && X509_CRL_set1_nextUpdate(crl, next) == 1;
    for (size_t i = 0; ok && i < count; i++) {
        BIGNUM *bn = NULL;
        if (BN_hex2bn(&bn, serials[i]) != (int)strlen(serials[i])) {
            BN_free(bn);
            ok = false;
            break;
        }
        ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
        BN_free(bn);
        X509_REVOKED *revoked = X509_REVOKED_new();
        ok = serial != NULL && revoked != NULL &&
             X509_REVOKED_set_serialNumber(revoked, serial) == 1 &&
             X509_REVOKED_set_revocationDate(revoked, now) == 1 &&
             X509_CRL_add0_revoked(crl, revoked) == 1;
        if (!ok) {
            X509_REVOKED_free(revoked);
        }
        ASN1_INTEGER_free(serial);
    }
    if (ok) {
        X509V3_CTX context;
        X509V3_set_ctx(&context, issuer, NULL, NULL, crl, 0);
        X509_EXTENSION *aki =
            X509V3_EXT_conf_nid(NULL, &context, NID_authority_key_identifier, "keyid:always");
        ok = aki != NULL && X509_CRL_add_ext(crl, aki, -1) == 1;
        X509_EXTENSION_free(aki);
    }
    ok = ok && ASN1_INTEGER_set_int64(number, now_ms) == 1 &&
         X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) == 1 && X509_CRL_sort(crl) == 1 &&
         X509_CRL_sign(crl, key, digest_for(key)) > 0 && PEM_write_bio_X509_CRL(bio, crl) == 1;
    if (!ok) {
        openssl_error_text(error, error_size, "cannot build the CRL");
    }
    ASN1_INTEGER_free(number);
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
    return ok ? 0 : -1;
}

char *ca_crl_pem(ca *authority, const char *const *serials, size_t count, int64_t now_ms,
                 char *error, size_t error_size)
{
    ERR_clear_error();
    for (size_t i = 0; i < count; i++) {
        if (!is_serial_hex(serials[i])) {
            openssl_error_text(error, error_size, "serials[%zu] is not a hex serial number", i);
            return NULL;
        }
    }
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&authority->lock);
    int result = write_crl(bio, authority->issuer, authority->issuer_key, serials, count, now_ms,
                           error, error_size);
    for (size_t i = 0; result == 0 && i < authority->old_issuer_count; i++) {
        if (not_after_ms(authority->old_issuers[i]) > now_ms) {
            result = write_crl(bio, authority->old_issuers[i], authority->old_issuer_keys[i],
                               serials, count, now_ms, error, error_size);
        }
    }
    pthread_mutex_unlock(&authority->lock);
    char *pem = result == 0 ? memory_bio_text(bio) : NULL;
    if (result == 0 && pem == NULL) {
        openssl_error_text(error, error_size, "out of memory");
    }
    BIO_free(bio);
    return pem;
}

/* ---- loading and saving the CA -------------------------------------------------- */

static void free_cert_array(X509 **certs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        X509_free(certs[i]);
    }
    free(certs);
}

static void free_key_array(EVP_PKEY **keys, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        EVP_PKEY_free(keys[i]);
    }
    free(keys);
}

void ca_close(ca *authority)
{
    if (authority == NULL) {
        return;
    }
    pthread_mutex_destroy(&authority->lock);
    X509_free(authority->root);
    EVP_PKEY_free(authority->root_key);
    X509_free(authority->issuer);
    EVP_PKEY_free(authority->issuer_key);
    free_cert_array(authority->old_issuers, authority->old_issuer_count);
    free_key_array(authority->old_issuer_keys, authority->old_issuer_count);
    free_cert_array(authority->old_roots, authority->old_root_count);
    free(authority->old_root_retire_ms);
    EVP_PKEY_free(authority->p256_parameters);
    EVP_PKEY_free(authority->p384_parameters);
    X509_EXTENSION_free(authority->leaf_basic_constraints);
    X509_EXTENSION_free(authority->leaf_key_usage);
    X509_EXTENSION_free(authority->leaf_key_usage_rsa);
    X509_EXTENSION_free(authority->leaf_extended_key_usage);
    free(authority->issuer_pem);
    free(authority->bundle_pem);
    free(authority->directory);
    free(authority->trust_domain);
    free(authority);
}

/* Reads exactly one certificate from a file. */
static X509 *load_cert(const char *path, char *error, size_t error_size)
{
    char *data = NULL;
    size_t length = 0;
    if (read_file(path, false, false, &data, &length, error, error_size) != 0) {
        return NULL;
    }
    X509 **certs = NULL;
    size_t count = 0;
    X509 *cert = NULL;
    if (parse_certs(data, length, &certs, &count) != 0 || count != 1) {
        openssl_error_text(error, error_size, "%s must hold exactly one PEM certificate", path);
    } else {
        cert = certs[0];
        count = 0;
    }
    free_cert_array(certs, count);
    free(data);
    return cert;
}

/* Reads exactly one private key from a file that only its owner may access. */
static EVP_PKEY *load_key(const char *path, char *error, size_t error_size)
{
    char *data = NULL;
    size_t length = 0;
    if (read_file(path, true, false, &data, &length, error, error_size) != 0) {
        return NULL;
    }
    EVP_PKEY **keys = NULL;
    size_t count = 0;
    EVP_PKEY *key = NULL;
    if (parse_keys(data, length, &keys, &count) != 0 || count != 1) {
        openssl_error_text(error, error_size,
                           "%s must hold exactly one unencrypted PEM private key", path);
    } else {
        key = keys[0];
        count = 0;
    }
    free_key_array(keys, count);
    OPENSSL_cleanse(data, length);
    free(data);
    return key;
}

static int load_pair(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key,
                     char *error, size_t error_size)
{
    *cert = load_cert(cert_path, error, error_size);
    if (*cert == NULL) {
        return -1;
    }
    *key = load_key(key_path, error, error_size);
    if (*key == NULL) {
        X509_free(*cert);
        *cert = NULL;
        return -1;
    }
    if (X509_check_private_key(*cert, *key) != 1) {
        openssl_error_text(error, error_size, "%s does not match the certificate in %s", key_path,
                           cert_path);
        X509_free(*cert);
        EVP_PKEY_free(*key);
        *cert = NULL;
        *key = NULL;
        return -1;
    }
    return 0;
}

/* Checks root is a self-signed CA and issuer a CA it signed. */
static int check_hierarchy(X509 *root, X509 *issuer, const char *root_name, const char *issuer_name,
                           char *error, size_t error_size)
{
    EVP_PKEY *root_public = X509_get0_pubkey(root);
    if (X509_check_ca(root) == 0 || root_public == NULL || X509_verify(root, root_public) != 1 ||
        X509_NAME_cmp(X509_get_subject_name(root), X509_get_issuer_name(root)) != 0) {
        openssl_error_text(error, error_size, "%s is not a self-signed CA certificate", root_name);
        return -1;
    }
    if (X509_check_ca(issuer) == 0) {
        openssl_error_text(error, error_size, "%s is not a CA certificate", issuer_name);
        return -1;
    }
    if (X509_check_issued(root, issuer) != X509_V_OK || X509_verify(issuer, root_public) != 1) {
        openssl_error_text(error, error_size, "%s is not signed by %s", issuer_name, root_name);
        return -1;
    }
    return 0;
}

/* Reads the optional lists of previous issuers and roots. */
static int load_previous(ca *authority, char *error, size_t error_size)
{
    int result = -1;
    char *cert_path = path_join(authority->directory, FILE_OLD_ISSUER_CERT, "");
    char *key_path = path_join(authority->directory, FILE_OLD_ISSUER_KEY, "");
    char *root_path = path_join(authority->directory, FILE_OLD_ROOT_CERT, "");
    char *retire_path = path_join(authority->directory, FILE_OLD_ROOT_RETIRE, "");
    char *certs_text = NULL;
    char *keys_text = NULL;
    char *roots_text = NULL;
    char *retire_text = NULL;
    size_t length = 0;
    size_t key_length = 0;
    if (cert_path == NULL || key_path == NULL || root_path == NULL || retire_path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    int certs_found = read_file(cert_path, false, true, &certs_text, &length, error, error_size);
    if (certs_found < 0) {
        goto done;
    }
    if (certs_found == 0) {
        if (read_file(key_path, true, false, &keys_text, &key_length, error, error_size) != 0) {
            goto done;
        }
        size_t key_count = 0;
        if (parse_certs(certs_text, length, &authority->old_issuers,
                        &authority->old_issuer_count) != 0 ||
            parse_keys(keys_text, key_length, &authority->old_issuer_keys, &key_count) != 0 ||
            key_count != authority->old_issuer_count) {
            free_key_array(authority->old_issuer_keys, key_count);
            authority->old_issuer_keys = NULL;
            free_cert_array(authority->old_issuers, authority->old_issuer_count);
            authority->old_issuers = NULL;
            authority->old_issuer_count = 0;
            openssl_error_text(error, error_size,
                               "%s and %s do not hold matching certificates and keys", cert_path,
                               key_path);
            goto done;
        }
        for (size_t i = 0; i < key_count; i++) {
            if (X509_check_private_key(authority->old_issuers[i], authority->old_issuer_keys[i]) !=
                1) {
                openssl_error_text(error, error_size,
                                   "key %zu of %s does not match its certificate", i, key_path);
                goto done;
            }
        }
    }
    int roots_found = read_file(root_path, false, true, &roots_text, &length, error, error_size);
    if (roots_found < 0) {
        goto done;
    }
    if (roots_found == 0) {
        if (read_file(retire_path, false, false, &retire_text, &key_length, error, error_size) !=
                0 ||
            parse_certs(roots_text, length, &authority->old_roots, &authority->old_root_count) !=
                0) {
            if (retire_text != NULL) {
                openssl_error_text(error, error_size, "%s does not parse", root_path);
            }
            goto done;
        }
        authority->old_root_retire_ms =
            calloc(authority->old_root_count + 1, sizeof *authority->old_root_retire_ms);
        if (authority->old_root_retire_ms == NULL) {
            openssl_error_text(error, error_size, "out of memory");
            goto done;
        }
        char *cursor = retire_text;
        for (size_t i = 0; i < authority->old_root_count; i++) {
            char *end = NULL;
            errno = 0;
            long long value = strtoll(cursor, &end, 10);
            if (end == cursor || errno != 0 || (*end != '\n' && *end != '\0')) {
                openssl_error_text(error, error_size, "%s: line %zu is not a time in ms",
                                   retire_path, i + 1);
                goto done;
            }
            authority->old_root_retire_ms[i] = value;
            cursor = *end == '\n' ? end + 1 : end;
        }
    }
    result = 0;
done:
    free(certs_text);
    if (keys_text != NULL) {
        OPENSSL_cleanse(keys_text, key_length);
    }
    free(keys_text);
    free(roots_text);
    free(retire_text);
    free(cert_path);
    free(key_path);
    free(root_path);
    free(retire_path);
    return result;
}

/* The state a change writes: the current pair(s) and the lists of previous ones. */
typedef struct ca_state {
    X509 *root;
    EVP_PKEY *root_key;
    X509 *issuer;
    EVP_PKEY *issuer_key;
    X509 **old_issuers;
    EVP_PKEY **old_issuer_keys;
    size_t old_issuer_count;
    X509 **old_roots;
    int64_t *old_root_retire_ms;
    size_t old_root_count;
} ca_state;

/* Stages and commits the files of state. root: also write the root pair;
 * roots_list: also write the previous roots; trust_domain: also write it. */
static int save_state(const char *directory, const ca_state *state, bool root, bool lists,
                      const char *trust_domain, char *error, size_t error_size)
{
    staging staged = {.count = 0};
    int result = -1;
    char *text = NULL;
    char *secret = NULL;
    if (root) {
        if ((text = cert_to_pem(state->root)) == NULL ||
            (secret = keys_to_pem(&state->root_key, 1)) == NULL ||
            stage(directory, &staged, FILE_ROOT_CERT, text, false, error, error_size) != 0 ||
            stage(directory, &staged, FILE_ROOT_KEY, secret, true, error, error_size) != 0) {
            goto fail;
        }
        free(text);
        free_secret(secret);
        text = NULL;
        secret = NULL;
    }
    if ((text = cert_to_pem(state->issuer)) == NULL ||
        (secret = keys_to_pem(&state->issuer_key, 1)) == NULL ||
        stage(directory, &staged, FILE_ISSUER_CERT, text, false, error, error_size) != 0 ||
        stage(directory, &staged, FILE_ISSUER_KEY, secret, true, error, error_size) != 0) {
        goto fail;
    }
    free(text);
    free_secret(secret);
    text = NULL;
    secret = NULL;
    if (lists) {
        if ((text = certs_to_pem(state->old_issuers, state->old_issuer_count)) == NULL ||
            (secret = keys_to_pem(state->old_issuer_keys, state->old_issuer_count)) == NULL ||
            stage(directory, &staged, FILE_OLD_ISSUER_CERT, text, false, error, error_size) != 0 ||
            stage(directory, &staged, FILE_OLD_ISSUER_KEY, secret, true, error, error_size) != 0) {
            goto fail;
        }
        free(text);
        free_secret(secret);
        secret = NULL;
        if ((text = certs_to_pem(state->old_roots, state->old_root_count)) == NULL ||
            stage(directory, &staged, FILE_OLD_ROOT_CERT, text, false, error, error_size) != 0) {
            goto fail;
        }
        free(text);
        text = malloc(state->old_root_count * 24 + 1);
        if (text == NULL) {
            goto fail;
        }
        text[0] = '\0';
        for (size_t i = 0; i < state->old_root_count; i++) {
            snprintf(text + strlen(text), 24, "%" PRId64 "\n", state->old_root_retire_ms[i]);
        }
        if (stage(directory, &staged, FILE_OLD_ROOT_RETIRE, text, false, error, error_size) != 0) {
            goto fail;
        }
        free(text);
        text = NULL;
    }
    if (trust_domain != NULL) {
        size_t size = strlen(trust_domain) + 2;
        text = malloc(size);
        if (text == NULL) {
            goto fail;
        }
        snprintf(text, size, "%s\n", trust_domain);
        if (stage(directory, &staged, FILE_TRUST_DOMAIN, text, false, error, error_size) != 0) {
            goto fail;
        }
        free(text);
        text = NULL;
    }
    result = commit_staged(directory, &staged, error, error_size);
    return result;
fail:
    if (error != NULL && error_size > 0 && error[0] == '\0') {
        openssl_error_text(error, error_size, "cannot encode the CA files");
    }
    free(text);
    free_secret(secret);
    discard_staged(directory);
    return -1;
}

/* First start: a new root and issuer, or the operator's plug-in CA. */
static int create_ca(ca *authority, const ca_options *options, char *error, size_t error_size)
{
    ca_state state = {0};
    if (options->root_cert != NULL) {
        if (load_pair(options->root_cert, options->root_key, &state.root, &state.root_key, error,
                      error_size) != 0 ||
            load_pair(options->issuer_cert, options->issuer_key, &state.issuer, &state.issuer_key,
                      error, error_size) != 0 ||
            check_hierarchy(state.root, state.issuer, options->root_cert, options->issuer_cert,
                            error, error_size) != 0) {
            goto fail;
        }
        if (not_after_ms(state.issuer) <= options->now_ms) {
            openssl_error_text(error, error_size, "%s has expired", options->issuer_cert);
            goto fail;
        }
    } else {
        state.root_key = generate_p256();
        state.issuer_key = generate_p256();
        if (state.root_key == NULL || state.issuer_key == NULL ||
            (state.root = make_root(authority->trust_domain, state.root_key, options->now_ms)) ==
                NULL ||
            (state.issuer = make_issuer(authority->trust_domain, state.issuer_key, state.root,
                                        state.root_key, options->now_ms)) == NULL) {
            openssl_error_text(error, error_size, "cannot create the root and issuing CA");
            goto fail;
        }
    }
    if (save_state(authority->directory, &state, true, false, authority->trust_domain, error,
                   error_size) != 0) {
        goto fail;
    }
    authority->root = state.root;
    authority->root_key = state.root_key;
    authority->issuer = state.issuer;
    authority->issuer_key = state.issuer_key;
    return 0;
fail:
    X509_free(state.root);
    EVP_PKEY_free(state.root_key);
    X509_free(state.issuer);
    EVP_PKEY_free(state.issuer_key);
    return -1;
}

static int load_ca(ca *authority, char *error, size_t error_size)
{
    char *td_path = path_join(authority->directory, FILE_TRUST_DOMAIN, "");
    char *root_cert = path_join(authority->directory, FILE_ROOT_CERT, "");
    char *root_key = path_join(authority->directory, FILE_ROOT_KEY, "");
    char *issuer_cert = path_join(authority->directory, FILE_ISSUER_CERT, "");
    char *issuer_key = path_join(authority->directory, FILE_ISSUER_KEY, "");
    char *recorded = NULL;
    size_t length = 0;
    int result = -1;
    if (td_path == NULL || root_cert == NULL || root_key == NULL || issuer_cert == NULL ||
        issuer_key == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    if (read_file(td_path, false, false, &recorded, &length, error, error_size) != 0) {
        goto done;
    }
    recorded[strcspn(recorded, "\n")] = '\0';
    if (strcmp(recorded, authority->trust_domain) != 0) {
        openssl_error_text(error, error_size,
                           "the CA in %s was created for trust domain \"%s\", not \"%s\"",
                           authority->directory, recorded, authority->trust_domain);
        goto done;
    }
    if (load_pair(root_cert, root_key, &authority->root, &authority->root_key, error, error_size) !=
            0 ||
        load_pair(issuer_cert, issuer_key, &authority->issuer, &authority->issuer_key, error,
                  error_size) != 0 ||
        check_hierarchy(authority->root, authority->issuer, root_cert, issuer_cert, error,
                        error_size) != 0 ||
        load_previous(authority, error, error_size) != 0) {
        goto done;
    }
    result = 0;
done:
    free(recorded);
    free(td_path);
    free(root_cert);
    free(root_key);
    free(issuer_cert);
    free(issuer_key);
    return result;
}

int ca_open(const ca_options *options, ca **out, char *error, size_t error_size)
{
    *out = NULL;
    ERR_clear_error();
    if (error != NULL && error_size > 0) {
        error[0] = '\0';
    }
    if (options == NULL || options->directory == NULL || options->directory[0] == '\0') {
        openssl_error_text(error, error_size, "no CA directory");
        return -1;
    }
    const char *trust_domain =
        options->trust_domain != NULL ? options->trust_domain : CA_DEFAULT_TRUST_DOMAIN;
    if (!spiffe_trust_domain_is_valid(trust_domain)) {
        openssl_error_text(error, error_size,
                           "invalid trust domain \"%s\": expected 1..255 characters of [a-z0-9.-]",
                           trust_domain);
        return -1;
    }
    int plugins = (options->root_cert != NULL) + (options->root_key != NULL) +
                  (options->issuer_cert != NULL) + (options->issuer_key != NULL);
    if (plugins != 0 && plugins != 4) {
        openssl_error_text(error, error_size,
                           "a plug-in CA needs all four files (root_cert, root_key, issuer_cert, "
                           "issuer_key) or none");
        return -1;
    }
    if (mkdir(options->directory, 0700) != 0 && errno != EEXIST) {
        openssl_error_text(error, error_size, "cannot create %s: %s", options->directory,
                           strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(options->directory, &st) != 0 || !S_ISDIR(st.st_mode)) {
        openssl_error_text(error, error_size, "%s is not a directory", options->directory);
        return -1;
    }
    ca *authority = calloc(1, sizeof *authority);
    if (authority == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        return -1;
    }
    pthread_mutex_init(&authority->lock, NULL);
    authority->directory = strdup(options->directory);
    authority->trust_domain = strdup(trust_domain);
    if (authority->directory == NULL || authority->trust_domain == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        ca_close(authority);
        return -1;
    }
    authority->p256_parameters = curve_parameters("P-256");
    authority->p384_parameters = curve_parameters("P-384");
    authority->leaf_basic_constraints = make_extension(NID_basic_constraints, "critical,CA:FALSE");
    authority->leaf_key_usage = make_extension(NID_key_usage, "critical,digitalSignature");
    authority->leaf_key_usage_rsa =
        make_extension(NID_key_usage, "critical,digitalSignature,keyEncipherment");
    authority->leaf_extended_key_usage = make_extension(NID_ext_key_usage, "serverAuth,clientAuth");
    if (authority->p256_parameters == NULL || authority->p384_parameters == NULL ||
        authority->leaf_basic_constraints == NULL || authority->leaf_key_usage == NULL ||
        authority->leaf_key_usage_rsa == NULL || authority->leaf_extended_key_usage == NULL) {
        openssl_error_text(error, error_size, "cannot set up the curves and leaf extensions");
        ca_close(authority);
        return -1;
    }
    /* Finish a committed change interrupted by a crash, or drop an uncommitted one. */
    char *journal_path = path_join(authority->directory, FILE_JOURNAL, "");
    if (journal_path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        ca_close(authority);
        return -1;
    }
    bool journal = access(journal_path, F_OK) == 0;
    free(journal_path);
    if (journal ? apply_journal(authority->directory, error, error_size) != 0
                : (discard_staged(authority->directory), false)) {
        ca_close(authority);
        return -1;
    }
    char *root_path = path_join(authority->directory, FILE_ROOT_CERT, "");
    if (root_path == NULL) {
        openssl_error_text(error, error_size, "out of memory");
        ca_close(authority);
        return -1;
    }
    bool exists = access(root_path, F_OK) == 0;
    free(root_path);
    int result = exists ? load_ca(authority, error, error_size)
                        : create_ca(authority, options, error, error_size);
    if (result != 0) {
        ca_close(authority);
        return -1;
    }
    authority->issuer_pem = cert_to_pem(authority->issuer);
    *out = authority;
    return 0;
}

/* ---- rotation ------------------------------------------------------------------ */

/* Builds the previous-issuer list after a rotation: the current issuer, then
 * the previous ones that have not expired. Pointers are borrowed. */
static int previous_issuers_after(ca *authority, int64_t now_ms, ca_state *state)
{
    size_t capacity = authority->old_issuer_count + 1;
    state->old_issuers = malloc(capacity * sizeof *state->old_issuers);
    state->old_issuer_keys = malloc(capacity * sizeof *state->old_issuer_keys);
    if (state->old_issuers == NULL || state->old_issuer_keys == NULL) {
        return -1;
    }
    state->old_issuers[0] = authority->issuer;
    state->old_issuer_keys[0] = authority->issuer_key;
    state->old_issuer_count = 1;
    for (size_t i = 0; i < authority->old_issuer_count; i++) {
        if (not_after_ms(authority->old_issuers[i]) > now_ms) {
            state->old_issuers[state->old_issuer_count] = authority->old_issuers[i];
            state->old_issuer_keys[state->old_issuer_count] = authority->old_issuer_keys[i];
            state->old_issuer_count++;
        }
    }
    return 0;
}

/* Makes state the CA's: takes references for the borrowed lists, frees what is dropped. */
static int adopt_state(ca *authority, ca_state *state)
{
    for (size_t i = 0; i < state->old_issuer_count; i++) {
        if (X509_up_ref(state->old_issuers[i]) != 1 ||
            EVP_PKEY_up_ref(state->old_issuer_keys[i]) != 1) {
            return -1; /* cannot happen with OpenSSL 3 */
        }
    }
    for (size_t i = 0; i < state->old_root_count; i++) {
        if (X509_up_ref(state->old_roots[i]) != 1) {
            return -1;
        }
    }
    if (state->root != authority->root) {
        X509_free(authority->root);
        EVP_PKEY_free(authority->root_key);
    }
    X509_free(authority->issuer);
    EVP_PKEY_free(authority->issuer_key);
    free_cert_array(authority->old_issuers, authority->old_issuer_count);
    free_key_array(authority->old_issuer_keys, authority->old_issuer_count);
    free_cert_array(authority->old_roots, authority->old_root_count);
    free(authority->old_root_retire_ms);
    authority->root = state->root;
    authority->root_key = state->root_key;
    authority->issuer = state->issuer;
    authority->issuer_key = state->issuer_key;
    free(authority->issuer_pem);
    authority->issuer_pem = cert_to_pem(authority->issuer);
    free(authority->bundle_pem); /* the roots may have changed */
    authority->bundle_pem = NULL;
    authority->old_issuers = state->old_issuers;
    authority->old_issuer_keys = state->old_issuer_keys;
    authority->old_issuer_count = state->old_issuer_count;
    authority->old_roots = state->old_roots;
    authority->old_root_retire_ms = state->old_root_retire_ms;
    authority->old_root_count = state->old_root_count;
    return 0;
}

/* Room for the previous roots: those kept plus extra new ones. */
static int previous_roots_alloc(ca *authority, size_t extra, ca_state *state)
{
    size_t capacity = authority->old_root_count + extra + 1;
    state->old_roots = malloc(capacity * sizeof *state->old_roots);
    state->old_root_retire_ms = malloc(capacity * sizeof *state->old_root_retire_ms);
    if (state->old_roots == NULL || state->old_root_retire_ms == NULL) {
        return -1;
    }
    state->old_root_count = 0;
    return 0;
}

static void append_live_roots(ca *authority, int64_t now_ms, ca_state *state)
{
    for (size_t i = 0; i < authority->old_root_count; i++) {
        if (authority->old_root_retire_ms[i] > now_ms) {
            state->old_roots[state->old_root_count] = authority->old_roots[i];
            state->old_root_retire_ms[state->old_root_count] = authority->old_root_retire_ms[i];
            state->old_root_count++;
        }
    }
}

static int rotate(ca *authority, bool new_root, int64_t now_ms, char *error, size_t error_size)
{
    ERR_clear_error();
    if (error != NULL && error_size > 0) {
        error[0] = '\0';
    }
    ca_state state = {0};
    pthread_mutex_lock(&authority->lock);
    int result = -1;
    if (previous_issuers_after(authority, now_ms, &state) != 0 ||
        previous_roots_alloc(authority, 1, &state) != 0) {
        openssl_error_text(error, error_size, "out of memory");
        goto done;
    }
    if (new_root) {
        /* The old root stays until every issuer under it has expired. */
        int64_t retire = 0;
        for (size_t i = 0; i < state.old_issuer_count; i++) {
            int64_t end = not_after_ms(state.old_issuers[i]);
            if (end > retire) {
                retire = end;
            }
        }
        state.old_roots[0] = authority->root;
        state.old_root_retire_ms[0] = retire;
        state.old_root_count = 1;
        state.root_key = generate_p256();
        if (state.root_key == NULL ||
            (state.root = make_root(authority->trust_domain, state.root_key, now_ms)) == NULL) {
            openssl_error_text(error, error_size, "cannot create a new root");
            goto done;
        }
    } else {
        state.root = authority->root;
        state.root_key = authority->root_key;
    }
    append_live_roots(authority, now_ms, &state);
    state.issuer_key = generate_p256();
    if (state.issuer_key == NULL ||
        (state.issuer = make_issuer(authority->trust_domain, state.issuer_key, state.root,
                                    state.root_key, now_ms)) == NULL) {
        openssl_error_text(error, error_size, "cannot create a new issuing CA");
        goto done;
    }
    if (save_state(authority->directory, &state, new_root, true, NULL, error, error_size) != 0 ||
        adopt_state(authority, &state) != 0) {
        goto done;
    }
    result = 0;
done:
    if (result != 0) {
        if (new_root) {
            X509_free(state.root);
            EVP_PKEY_free(state.root_key);
        }
        X509_free(state.issuer);
        EVP_PKEY_free(state.issuer_key);
        free(state.old_issuers);
        free(state.old_issuer_keys);
        free(state.old_roots);
        free(state.old_root_retire_ms);
    }
    pthread_mutex_unlock(&authority->lock);
    return result;
}

int ca_rotate_issuer(ca *authority, int64_t now_ms, char *error, size_t error_size)
{
    return rotate(authority, false, now_ms, error, error_size);
}

int ca_rotate_root(ca *authority, int64_t now_ms, char *error, size_t error_size)
{
    return rotate(authority, true, now_ms, error, error_size);
}
