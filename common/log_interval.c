/*
 * log_interval.c — at most one log line per interval, with a count.
 */
#include "log_interval.h"

bool log_interval_due(log_interval *interval, int64_t now_ms, int64_t every_ms, uint64_t *count)
{
    interval->events++;
    if (interval->last_line_ms != 0 && now_ms - interval->last_line_ms < every_ms)
        return false;
    *count = interval->events;
    interval->events = 0;
    interval->last_line_ms = now_ms != 0 ? now_ms : 1;
    return true;
}
