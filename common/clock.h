/*
 * clock.h — the two clocks Atrium uses, in milliseconds.
 */
#ifndef ATRIUM_COMMON_CLOCK_H
#define ATRIUM_COMMON_CLOCK_H

#include <stdint.h>

/* Wall-clock time, milliseconds since the Unix epoch: for stored timestamps. */
int64_t clock_wall_ms(void);
/* Monotonic time in milliseconds: for durations and deadlines. */
int64_t clock_monotonic_ms(void);

#endif
