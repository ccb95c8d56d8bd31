/*
 * The C baselines of mmio_overhead_ratio: the same dependent loop as the C# benchmark, a 32-bit
 * volatile write and a read-back at a register offset that walks a 64 KiB shared anonymous mapping,
 * the write carrying what the last read returned. Built twice from this file:
 *   mmio_loop_raw      (MMIO_CHECKED 0) the raw volatile pointer loop;
 *   mmio_loop_checked  (MMIO_CHECKED 1) the same accesses through a region struct that bounds- and
 *                      alignment-checks each one, as a C driver library does (a base pointer and a
 *                      size reached through a pointer the loop cannot see into).
 *
 * Usage: mmio_loop_raw|mmio_loop_checked N [BATCHES]
 * Runs BATCHES (default 5) timed batches of N write + read pairs after one untimed warm-up batch
 * and prints the fastest batch's cost per pair, in nanoseconds, as a single number on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "baseline.h"

#ifndef MMIO_CHECKED
#error "build with -DMMIO_CHECKED=0 or 1"
#endif

#define LENGTH (64 * 1024)

struct region {
    volatile uint8_t *base;
    size_t size;
};

static void out_of_range(size_t offset, size_t width)
{
    fprintf(stderr, "a %zu-byte access at 0x%zx is outside the region or misaligned\n", width, offset);
    abort();
}

static inline void check(const struct region *r, size_t offset, size_t width)
{
    if (width > r->size || offset > r->size - width || (offset & (width - 1)) != 0)
        out_of_range(offset, width);
}

static inline void write32(const struct region *r, size_t offset, uint32_t value)
{
#if MMIO_CHECKED
    check(r, offset, 4);
#endif
    *(volatile uint32_t *)(r->base + offset) = value;
}

static inline uint32_t read32(const struct region *r, size_t offset)
{
#if MMIO_CHECKED
    check(r, offset, 4);
#endif
    return *(volatile uint32_t *)(r->base + offset);
}

/* One batch; kept out of line so that the region's fields are loaded through the pointer. */
__attribute__((noinline)) static uint32_t batch(const struct region *r, long n)
{
    uint32_t sum = 1;
    for (size_t i = 0; i < (size_t)n * 4; i += 4) {
        size_t offset = i & (LENGTH - 4);
        write32(r, offset, sum);
        sum += read32(r, offset);
    }
    return sum;
}

int main(int argc, char **argv)
{
    long n, batches;
    parse_batch_args(argc, argv, &n, &batches);

    void *memory = mmap(NULL, LENGTH, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        fprintf(stderr, "mmap: %s\n", strerror(errno));
        return 1;
    }
    struct region *r = malloc(sizeof *r);
    if (r == NULL)
        return 1;
    r->base = memory;
    r->size = LENGTH;

    volatile uint32_t sink = batch(r, n);
    double best = -1;
    for (long b = 0; b < batches; b++) {
        long long start = now_ns();
        sink += batch(r, n);
        long long elapsed = now_ns() - start;
        double per_pair = (double)elapsed / (double)n;
        if (best < 0 || per_pair < best)
            best = per_pair;
    }
    (void)sink;

    printf("%.3f\n", best);
    free(r);
    munmap(memory, LENGTH);
    return 0;
}
