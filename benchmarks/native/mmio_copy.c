/*
 * The C baseline of mmio_copy_ratio: a buffer copied into a mapping and back out the way a C driver
 * copies into a BAR without memcpy (which may use any width, and vector stores a device may not
 * take): volatile, naturally aligned accesses, each as wide as the alignment and the bytes left
 * allow, 8 bytes in the body; the range bounds-checked once per copy against a region struct, as a
 * C driver library does. The same work per operation as the C# side: a 4 KiB copy in at a
 * 4 KiB-aligned offset that walks a 64 KiB shared anonymous mapping, then the same 4 KiB copied out.
 *
 * Usage: mmio_copy N [BATCHES]
 * Runs BATCHES (default 5) timed batches of N copy-in + copy-out pairs after one untimed warm-up
 * batch and prints the fastest batch's cost per pair, in nanoseconds, as a single number on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "baseline.h"

#define LENGTH (64 * 1024)
#define COPY 4096

struct region {
    volatile uint8_t *base;
    size_t size;
};

static void out_of_range(size_t offset, size_t length)
{
    fprintf(stderr, "a %zu-byte copy at 0x%zx is outside the region\n", length, offset);
    abort();
}

static inline size_t width_at(size_t at, size_t left)
{
    size_t aligned = (size_t)1 << __builtin_ctzll(at | 8);
    size_t fits = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    return aligned < fits ? aligned : fits;
}

static void copy_in(const struct region *r, size_t offset, const uint8_t *from, size_t length)
{
    if (length > r->size || offset > r->size - length)
        out_of_range(offset, length);
    volatile uint8_t *to = r->base + offset;
    size_t done = 0;
    while (done < length) {
        size_t at = offset + done;
        if ((at & 7) == 0 && length - done >= 8) {
            size_t end = done + ((length - done) & ~(size_t)7);
            for (; done < end; done += 8) {
                uint64_t v;
                memcpy(&v, from + done, 8);
                *(volatile uint64_t *)(to + done) = v;
            }
            continue;
        }
        size_t w = width_at(at, length - done);
        if (w == 1) {
            to[done] = from[done];
        } else if (w == 2) {
            uint16_t v;
            memcpy(&v, from + done, 2);
            *(volatile uint16_t *)(to + done) = v;
        } else if (w == 4) {
            uint32_t v;
            memcpy(&v, from + done, 4);
            *(volatile uint32_t *)(to + done) = v;
        } else {
            uint64_t v;
            memcpy(&v, from + done, 8);
            *(volatile uint64_t *)(to + done) = v;
        }
        done += w;
    }
}

static void copy_out(const struct region *r, size_t offset, uint8_t *into, size_t length)
{
    if (length > r->size || offset > r->size - length)
        out_of_range(offset, length);
    const volatile uint8_t *from = r->base + offset;
    size_t done = 0;
    while (done < length) {
        size_t at = offset + done;
        if ((at & 7) == 0 && length - done >= 8) {
            size_t end = done + ((length - done) & ~(size_t)7);
            for (; done < end; done += 8) {
                uint64_t v = *(const volatile uint64_t *)(from + done);
                memcpy(into + done, &v, 8);
            }
            continue;
        }
        size_t w = width_at(at, length - done);
        if (w == 1) {
            into[done] = from[done];
        } else if (w == 2) {
            uint16_t v = *(const volatile uint16_t *)(from + done);
            memcpy(into + done, &v, 2);
        } else if (w == 4) {
            uint32_t v = *(const volatile uint32_t *)(from + done);
            memcpy(into + done, &v, 4);
        } else {
            uint64_t v = *(const volatile uint64_t *)(from + done);
            memcpy(into + done, &v, 8);
        }
        done += w;
    }
}

/* One batch; out of line so that the region's fields are loaded through the pointer. */
__attribute__((noinline)) static uint8_t batch(const struct region *r, const uint8_t *source, uint8_t *destination, long n)
{
    uint8_t sum = 0;
    for (long i = 0; i < n; i++) {
        size_t offset = ((size_t)i * COPY) & (LENGTH - 1);
        copy_in(r, offset, source, COPY);
        copy_out(r, offset, destination, COPY);
        sum += destination[i & (COPY - 1)];
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
    uint8_t *source = malloc(COPY);
    uint8_t *destination = malloc(COPY);
    if (r == NULL || source == NULL || destination == NULL)
        return 1;
    r->base = memory;
    r->size = LENGTH;
    for (size_t i = 0; i < COPY; i++)
        source[i] = (uint8_t)(i * 7);

    volatile uint8_t sink = batch(r, source, destination, n);
    if (memcmp(source, destination, COPY) != 0) {
        fprintf(stderr, "the copy out did not return what the copy in wrote\n");
        return 1;
    }
    double best = -1;
    for (long b = 0; b < batches; b++) {
        long long start = now_ns();
        sink += batch(r, source, destination, n);
        long long elapsed = now_ns() - start;
        double per_pair = (double)elapsed / (double)n;
        if (best < 0 || per_pair < best)
            best = per_pair;
    }
    (void)sink;

    printf("%.3f\n", best);
    free(destination);
    free(source);
    free(r);
    munmap(memory, LENGTH);
    return 0;
}
