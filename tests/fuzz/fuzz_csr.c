/*
 * fuzz_csr.c — libFuzzer target for the CA's CSR handling, the input a
 * remote client controls in CreateCertificate. Each input is taken as the
 * DER of a certificate request, wrapped in PEM the way a client sends it,
 * and offered to ca_csr_identity and to ca_sign_csr of a real CA (created
 * once, in a temporary directory that is removed at exit). Seeds are in
 * tests/fuzz/corpus/csr. Build with -DATRIUM_FUZZ=ON and clang.
 */
#include "ca.h"
#include "memory_text.h"
#include "model.h"

#include <openssl/bio.h>
#include <openssl/pem.h>

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static ca *authority;
static char directory[] = "/tmp/atrium-fuzz-csr-XXXXXX";

static int remove_entry(const char *path, const struct stat *status, int flag, struct FTW *walk)
{
    (void)status;
    (void)flag;
    (void)walk;
    return remove(path);
}

static void close_authority(void)
{
    ca_close(authority);
    nftw(directory, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static int64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void open_authority(void)
{
    char error[256];
    if (mkdtemp(directory) == NULL) {
        perror("fuzz_csr: mkdtemp");
        abort();
    }
    ca_options options = {.directory = directory, .now_ms = now_ms()};
    if (ca_open(&options, &authority, error, sizeof(error)) != 0) {
        fprintf(stderr, "fuzz_csr: cannot open the CA: %s\n", error);
        abort();
    }
    atexit(close_authority);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* libFuzzer's entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (authority == NULL)
        open_authority();
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return 0;
    char *pem = PEM_write_bio(bio, "CERTIFICATE REQUEST", "", data, (long)size) > 0
                    ? memory_bio_text(bio)
                    : NULL;
    BIO_free(bio);
    if (pem == NULL)
        return 0;
    char error[512];
    char *identity = NULL;
    if (ca_csr_identity(pem, &identity, error, sizeof(error)) == 0)
        free(identity);
    char *chain = NULL;
    model_certificate record;
    if (ca_sign_csr(authority, pem, NULL, 3600, now_ms(), &chain, &record, error, sizeof(error)) ==
        0) {
        free(chain);
        model_certificate_clear(&record);
    }
    free(pem);
    return 0;
}
