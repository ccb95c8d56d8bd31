/*
 * What the C baselines share: the monotonic clock they time batches with, and their command line,
 * "N [BATCHES]" (N operations per batch, BATCHES timed batches, 5 by default).
 */
#ifndef VFIO_BENCHMARKS_BASELINE_H
#define VFIO_BENCHMARKS_BASELINE_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * Reads N and BATCHES from the command line into *n and *batches. On a bad command line it prints
 * why to stderr and exits with status 2.
 */
static inline void parse_batch_args(int argc, char **argv, long *n, long *batches)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [BATCHES]\n", argv[0]);
        exit(2);
    }
    *n = strtol(argv[1], NULL, 10);
    *batches = argc == 3 ? strtol(argv[2], NULL, 10) : 5;
    if (*n <= 0 || *batches <= 0) {
        fprintf(stderr, "N and BATCHES must be positive\n");
        exit(2);
    }
}

#endif
