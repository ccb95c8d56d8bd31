/*
 * The C baseline of ioctl_overhead_ratio: FIONREAD on an empty pipe, issued N times through the
 * C library's ioctl(), as a driver written in C would issue it: errno is read only when a call
 * fails (as libvfn and rust-vmm's vfio-ioctls do).
 *
 * run.sh builds this file three ways:
 *   libioctl_loop.so        (-DIOCTL_LOOP_LIBRARY) exports ioctl_loop_batch(fd, n), which the
 *                           benchmark calls inside its own process on its own pipe: the baseline
 *                           of the ratio, same descriptor, same process;
 *   ioctl_loop              a process of its own, single-threaded;
 *   ioctl_loop_threaded     (-DIOCTL_LOOP_IDLE_THREAD) the same with one idle thread beside the loop.
 * The two programs are context: on some machines a system call costs more in any process with more
 * than one thread, and a .NET process always has several.
 *
 * Usage of the programs: ioctl_loop N [BATCHES]
 * Runs BATCHES (default 5) timed batches of N calls after one untimed warm-up batch and prints
 * the fastest batch's cost per call, in nanoseconds, as a single number on stdout.
 * Exits non-zero if the pipe cannot be made or any call fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "baseline.h"

/* Returns the number of failed calls (0 when all succeed). */
static long run(int fd, long n)
{
    long failures = 0;
    for (long i = 0; i < n; i++) {
        int available = -1;
        if (ioctl(fd, FIONREAD, &available) < 0 || available != 0)
            failures++;
    }
    return failures;
}

#ifdef IOCTL_LOOP_LIBRARY

/* One timed batch of n calls on fd: nanoseconds per call, or -1 if any call failed. */
double ioctl_loop_batch(int fd, long n)
{
    long long start = now_ns();
    long failures = run(fd, n);
    long long elapsed = now_ns() - start;
    return failures == 0 ? (double)elapsed / (double)n : -1;
}

#else

#ifdef IOCTL_LOOP_IDLE_THREAD
/* Blocks until the process exits: a thread that only exists. */
static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}
#endif

int main(int argc, char **argv)
{
    long n, batches;
    parse_batch_args(argc, argv, &n, &batches);

#ifdef IOCTL_LOOP_IDLE_THREAD
    pthread_t thread;
    if (pthread_create(&thread, NULL, idle, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
#endif

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "pipe2: %s\n", strerror(errno));
        return 1;
    }

    if (run(fds[0], n) != 0) {
        fprintf(stderr, "ioctl(FIONREAD): %s\n", strerror(errno));
        return 1;
    }

    double best = -1;
    for (long b = 0; b < batches; b++) {
        long long start = now_ns();
        long failures = run(fds[0], n);
        long long elapsed = now_ns() - start;
        if (failures != 0) {
            fprintf(stderr, "ioctl(FIONREAD) failed %ld times\n", failures);
            return 1;
        }
        double per_call = (double)elapsed / (double)n;
        if (best < 0 || per_call < best)
            best = per_call;
    }

    printf("%.3f\n", best);
    close(fds[0]);
    close(fds[1]);
    return 0;
}

#endif
