/*
 * memory_text.h — turns the contents of an OpenSSL memory BIO into a C string.
 * PEM writers in OpenSSL write into a memory BIO whose buffer is not
 * NUL-terminated; this is the one place that copies it out.
 */
#ifndef ATRIUM_CERTS_MEMORY_TEXT_H
#define ATRIUM_CERTS_MEMORY_TEXT_H

#include <openssl/bio.h>

/* Returns a new NUL-terminated copy of everything in the memory BIO `bio`
 * (the BIO is not drained), or NULL when out of memory. The caller frees the
 * result with free(). */
char *memory_bio_text(BIO *bio);

#endif
