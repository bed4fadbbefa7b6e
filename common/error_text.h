/*
 * error_text.h — the one way Atrium's functions report why they failed: a
 * printf-style message written into the caller's buffer (error, error_size).
 */
#ifndef ATRIUM_COMMON_ERROR_TEXT_H
#define ATRIUM_COMMON_ERROR_TEXT_H

#include <stddef.h>

/* Formats the message into error (always terminated, cut to error_size).
 * A NULL error or a zero error_size is accepted and writes nothing. */
void error_text(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
