/*
 * openssl_error.c — see openssl_error.h.
 */
#include "openssl_error.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void openssl_error_text(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0) {
        ERR_clear_error();
        return;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
    unsigned long code = ERR_get_error();
    size_t used = strlen(error);
    if (code != 0 && used + 3 < error_size) {
        char reason[256];
        ERR_error_string_n(code, reason, sizeof reason);
        snprintf(error + used, error_size - used, " (%s)", reason);
    }
    ERR_clear_error();
}
