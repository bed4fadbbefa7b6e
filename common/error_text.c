/*
 * error_text.c — formatting a failure's reason into the caller's buffer (see
 * error_text.h).
 */
#include "error_text.h"

#include <stdarg.h>
#include <stdio.h>

void error_text(char *error, size_t error_size, const char *format, ...)
{
    if (error == NULL || error_size == 0)
        return;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error, error_size, format, arguments);
    va_end(arguments);
}
