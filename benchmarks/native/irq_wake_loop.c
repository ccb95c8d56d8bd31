/*
 * The C baseline of irq_wake_ratio: a thread blocked in read(2) on an eventfd, woken by a writer
 * thread that signals it with write(2) and then waits, in a blocking read of a second eventfd,
 * for the reader to acknowledge. Each round trip is one counted wake-up, as an interrupt handler
 * loop written in C would see them.
 *
 * Usage: irq_wake_loop N [BATCHES]
 * Runs BATCHES (default 5) timed batches of N wake-ups after one untimed warm-up batch and prints
 * the fastest batch's rate, in wake-ups per second, as a single number on stdout.
 * Exits non-zero if an eventfd cannot be made or any call fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "baseline.h"

static int irq_fd, ack_fd;
static long total;

/* The interrupt handler loop: a blocking read per wake-up, then the acknowledgement. */
static void *reader(void *arg)
{
    (void)arg;
    uint64_t value, one = 1;
    for (long i = 0; i < total; i++) {
        if (read(irq_fd, &value, sizeof value) != sizeof value || value == 0)
            return (void *)1;
        if (write(ack_fd, &one, sizeof one) != sizeof one)
            return (void *)1;
    }
    return NULL;
}

/* The device side: signal, then wait for the handler to have run. Returns failed calls. */
static long signal_batch(long n)
{
    uint64_t one = 1, value;
    long failures = 0;
    for (long i = 0; i < n; i++) {
        if (write(irq_fd, &one, sizeof one) != sizeof one)
            failures++;
        if (read(ack_fd, &value, sizeof value) != sizeof value)
            failures++;
    }
    return failures;
}

int main(int argc, char **argv)
{
    long n, batches;
    parse_batch_args(argc, argv, &n, &batches);
    irq_fd = eventfd(0, EFD_CLOEXEC);
    ack_fd = eventfd(0, EFD_CLOEXEC);
    if (irq_fd < 0 || ack_fd < 0) {
        fprintf(stderr, "eventfd: %s\n", strerror(errno));
        return 1;
    }
    total = n * (batches + 1);
    pthread_t thread;
    if (pthread_create(&thread, NULL, reader, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    if (signal_batch(n) != 0) {
        fprintf(stderr, "warm-up batch failed\n");
        return 1;
    }
    double best = -1;
    for (long b = 0; b < batches; b++) {
        long long start = now_ns();
        long failures = signal_batch(n);
        long long elapsed = now_ns() - start;
        if (failures != 0) {
            fprintf(stderr, "write/read failed %ld times\n", failures);
            return 1;
        }
        double rate = (double)n * 1e9 / (double)elapsed;
        if (rate > best)
            best = rate;
    }
    void *result;
    pthread_join(thread, &result);
    if (result != NULL) {
        fprintf(stderr, "the reader failed\n");
        return 1;
    }
    printf("%.1f\n", best);
    close(irq_fd);
    close(ack_fd);
    return 0;
}
