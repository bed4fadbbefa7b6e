/*
 * log.c — timestamped, one-line log records on stderr. Each record is built in
 * a local buffer and written with one write(2), so lines from several threads
 * never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "atrium";
static log_level log_minimum = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *program, log_level minimum)
{
    log_program = program;
    log_minimum = minimum;
}

int log_level_parse(const char *name, log_level *out)
{
    for (int level = LOG_LEVEL_DEBUG; level <= LOG_LEVEL_ERROR; level++) {
        if (strcmp(name, level_names[level]) == 0) {
            *out = (log_level)level;
            return 0;
        }
    }
    return -1;
}

void log_message(log_level level, const char *format, ...)
{
    if (level < log_minimum)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm utc;
    gmtime_r(&now.tv_sec, &utc);

    char line[2048];
    size_t length = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &utc);
    int written =
        snprintf(line + length, sizeof(line) - length, ".%03ldZ %-5s %s: ", now.tv_nsec / 1000000L,
                 level_names[level], log_program);
    if (written > 0)
        length += (size_t)written;

    va_list arguments;
    va_start(arguments, format);
    written = vsnprintf(line + length, sizeof(line) - length - 1, format, arguments);
    va_end(arguments);
    if (written > 0)
        length += (size_t)written < sizeof(line) - length - 1 ? (size_t)written
                                                              : sizeof(line) - length - 2;
    line[length++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, length);
    (void)ignored;
}
