/*
 * log_interval.h — one log line per interval for an event that can happen
 * thousands of times a second (accept() out of descriptors, a flood of bad
 * requests): the first occurrence is logged at once, later ones at most once
 * per interval, each line with the count since the previous one.
 */
#ifndef ATRIUM_COMMON_LOG_INTERVAL_H
#define ATRIUM_COMMON_LOG_INTERVAL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct log_interval {
    int64_t last_line_ms; /* monotonic ms of the last line; 0: none yet */
    uint64_t events;      /* since that line */
} log_interval;           /* zero-initialized: nothing counted yet */

/* Counts one event at now_ms (monotonic). Returns true when a line is due
 * (the first event, or every_ms since the last line): *count then gets the
 * events since the last line, this one included, and counting starts over. */
bool log_interval_due(log_interval *interval, int64_t now_ms, int64_t every_ms, uint64_t *count);

#endif
