/*
 * openssl_error.h — error_text for failures inside OpenSSL: the caller's
 * message, then OpenSSL's first queued reason in parentheses.
 */
#ifndef ATRIUM_CERTS_OPENSSL_ERROR_H
#define ATRIUM_CERTS_OPENSSL_ERROR_H

#include <stddef.h>

/* Formats the message into error (always terminated, cut to error_size) and
 * appends " (<OpenSSL's first queued reason>)" when OpenSSL queued one. The
 * thread's OpenSSL error queue is cleared in every case, so a stale reason
 * never attaches to a later failure. A NULL error or a zero error_size is
 * accepted and writes nothing. */
void openssl_error_text(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
