/*
 * memory_text.c — copies an OpenSSL memory BIO into a C string
 * (see memory_text.h).
 */
#include "memory_text.h"

#include <stdlib.h>
#include <string.h>

char *memory_bio_text(BIO *bio)
{
    char *data = NULL;
    long length = BIO_get_mem_data(bio, &data);
    if (length < 0) {
        return NULL;
    }
    char *copy = malloc((size_t)length + 1);
    if (copy == NULL) {
        return NULL;
    }
    if (length > 0) {
        memcpy(copy, data, (size_t)length);
    }
    copy[length] = '\0';
    return copy;
}
