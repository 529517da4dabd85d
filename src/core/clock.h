/*
 * clock.h - the two clocks the engine reads (internal): wall time
 * (monotonic) for rates and progress, and the process's CPU time for what
 * outsourcing saves.  Trusted code may read clocks; it reads nothing else
 * of the system.
 */
#ifndef EML_CORE_CLOCK_H
#define EML_CORE_CLOCK_H

#include <time.h>

static inline double eml_clock_seconds(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds on the monotonic clock. */
static inline double eml_wall_seconds(void)
{
    return eml_clock_seconds(CLOCK_MONOTONIC);
}

/* CPU seconds this process has used (every thread). */
static inline double eml_cpu_seconds(void)
{
    return eml_clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
}
#endif
