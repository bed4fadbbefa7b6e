/*
 * log.h — one-line, timestamped log records on stderr, shared by every binary.
 *
 * A record looks like: 2026-11-26T01:02:03.456Z info  atriumd: message
 * Libraries never log: they return errors and their caller decides what to say.
 */
#ifndef ATRIUM_COMMON_LOG_H
#define ATRIUM_COMMON_LOG_H

typedef enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
} log_level;

/* Sets the program name printed in each record (kept by pointer) and the
 * lowest level printed. Safe to call once at start. */
void log_init(const char *program, log_level minimum);
/* Parses "debug", "info", "warn", "error"; returns 0 on success, -1 otherwise. */
int log_level_parse(const char *name, log_level *out);

void log_message(log_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_message(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_message(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_message(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
