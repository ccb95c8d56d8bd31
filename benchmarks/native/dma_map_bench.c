/*
 * The C side of benchmarks/vm/run-dma-bench.sh (dma_map_ratio_legacy, dma_map_ratio_iommufd,
 * device_open_ratio_*): the system calls the library makes to open a PCI device bound to vfio-pci and
 * to map and unmap a DMA buffer, issued straight from C, as a driver written in C issues them. The
 * sequences follow what the benchmark's untimed first pass prints for the library (the calls its
 * kernel layer saw), so both sides ask the same of the kernel:
 *
 *   open, legacy:   open the group, VFIO_GROUP_GET_STATUS; open /dev/vfio/vfio, VFIO_GET_API_VERSION,
 *                   IOMMU_OPTION (is the container iommufd's? vfio's own refuses it with EINVAL);
 *                   VFIO_GROUP_SET_CONTAINER, VFIO_CHECK_EXTENSION (type1v2), VFIO_SET_IOMMU;
 *                   VFIO_GROUP_GET_DEVICE_FD
 *   open, iommufd:  open /dev/iommu, IOMMU_OPTION (RLIMIT_MODE, get), IOMMU_IOAS_ALLOC; open the cdev,
 *                   VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_ATTACH_IOMMUFD_PT
 *   then, both:     VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO (REQ), an eventfd for the request
 *                   notifier and one to wake the thread that waits on it, VFIO_DEVICE_SET_IRQS (REQ,
 *                   trigger)
 *   close:          VFIO_DEVICE_SET_IRQS (REQ, none), a write to the wake-up eventfd, both closed;
 *                   legacy: close the device, VFIO_GROUP_UNSET_CONTAINER, close the group and the
 *                   container; iommufd: VFIO_DEVICE_DETACH_IOMMUFD_PT, close the device,
 *                   IOMMU_IOAS_UNMAP (all), IOMMU_DESTROY (the IOAS), close the iommufd
 *   first map:      the IOMMU's valid ranges, once per open: VFIO_IOMMU_GET_INFO twice (the header,
 *                   then with its capability chain), or IOMMU_IOAS_IOVA_RANGES twice (the count, then
 *                   the ranges)
 *   map + unmap:    mmap (anonymous, private, MAP_POPULATE), VFIO_IOMMU_MAP_DMA or IOMMU_IOAS_MAP
 *                   (fixed IOVA), VFIO_IOMMU_UNMAP_DMA or IOMMU_IOAS_UNMAP, munmap
 *
 * Usage: dma_map_bench legacy GROUP_FILE ADDRESS OPENS MAPS HUGE_MAPS
 *        dma_map_bench iommufd CDEV_FILE ADDRESS OPENS MAPS HUGE_MAPS
 * Times OPENS open + close cycles, MAPS map + unmap of 4 KiB and HUGE_MAPS of 2 MiB (each after one
 * untimed warm-up) and prints "open_ns: N", "map_4k_ns: N" and "map_2m_ns: N", nanoseconds per
 * operation. Built against the uAPI headers of a 7.x kernel (iommufd.h and the cdev ioctls of
 * vfio.h). Exits 1 naming the call that failed, 2 on a bad command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "baseline.h"

/* The IOVA the library chooses for a first buffer here (its trace prints it): the same page tables. */
#define IOVA 0x1000ULL
#define SMALL 4096ULL
#define LARGE (2ULL << 20)

static int iommufd_mode;
static const char *device_file;
static const char *address;

/* What one open holds. */
struct device {
    int group, container;   /* legacy */
    int iommufd;            /* iommufd */
    uint32_t ioas;
    int device, req, wake;
};

static void fail(const char *call)
{
    fprintf(stderr, "dma_map_bench: %s: %s\n", call, strerror(errno));
    exit(1);
}

#define CHECK(call) do { if ((call) < 0) fail(#call); } while (0)

static void wire_request(struct device *d)
{
    char buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
    struct vfio_irq_set *set = (struct vfio_irq_set *)buf;
    struct vfio_irq_info irq = { .argsz = sizeof(irq), .index = VFIO_PCI_REQ_IRQ_INDEX };
    CHECK(ioctl(d->device, VFIO_DEVICE_GET_IRQ_INFO, &irq));
    d->req = eventfd(0, EFD_NONBLOCK);
    CHECK(d->req);
    d->wake = eventfd(0, EFD_NONBLOCK);
    CHECK(d->wake);
    memset(buf, 0, sizeof(buf));
    set->argsz = sizeof(buf);
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = VFIO_PCI_REQ_IRQ_INDEX;
    set->count = 1;
    memcpy(set->data, &d->req, sizeof(int32_t));
    CHECK(ioctl(d->device, VFIO_DEVICE_SET_IRQS, set));
}

static void unwire_request(struct device *d)
{
    struct vfio_irq_set set = {
        .argsz = sizeof(set),
        .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        .index = VFIO_PCI_REQ_IRQ_INDEX,
    };
    uint64_t one = 1;
    CHECK(ioctl(d->device, VFIO_DEVICE_SET_IRQS, &set));
    CHECK(write(d->wake, &one, sizeof(one)));
    close(d->req);
    close(d->wake);
}

static void device_info(struct device *d)
{
    struct vfio_device_info info = { .argsz = sizeof(info) };
    CHECK(ioctl(d->device, VFIO_DEVICE_GET_INFO, &info));
}

static void open_legacy(struct device *d)
{
    struct vfio_group_status status = { .argsz = sizeof(status) };

    d->group = open(device_file, O_RDWR);
    CHECK(d->group);
    CHECK(ioctl(d->group, VFIO_GROUP_GET_STATUS, &status));
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        errno = EBUSY;
        fail("group not viable");
    }
    d->container = open("/dev/vfio/vfio", O_RDWR);
    CHECK(d->container);
    struct iommu_option option = { .size = sizeof(option), .option_id = IOMMU_OPTION_RLIMIT_MODE, .op = IOMMU_OPTION_OP_GET };
    CHECK(ioctl(d->container, VFIO_GET_API_VERSION));
    if (ioctl(d->container, IOMMU_OPTION, &option) < 0 && errno != EINVAL && errno != ENOTTY)
        fail("IOMMU_OPTION on the container");
    CHECK(ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container));
    if (ioctl(d->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
        fail("VFIO_CHECK_EXTENSION (type1v2)");
    CHECK(ioctl(d->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
    d->device = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, address);
    CHECK(d->device);
}

static void close_legacy(struct device *d)
{
    close(d->device);
    CHECK(ioctl(d->group, VFIO_GROUP_UNSET_CONTAINER));
    close(d->group);
    close(d->container);
}

static void open_iommufd(struct device *d)
{
    struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
    struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
    struct iommu_option option = { .size = sizeof(option), .option_id = IOMMU_OPTION_RLIMIT_MODE, .op = IOMMU_OPTION_OP_GET };
    struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };

    d->iommufd = open("/dev/iommu", O_RDWR);
    CHECK(d->iommufd);
    CHECK(ioctl(d->iommufd, IOMMU_OPTION, &option));
    CHECK(ioctl(d->iommufd, IOMMU_IOAS_ALLOC, &alloc));
    d->ioas = alloc.out_ioas_id;
    d->device = open(device_file, O_RDWR);
    CHECK(d->device);
    bind.iommufd = d->iommufd;
    CHECK(ioctl(d->device, VFIO_DEVICE_BIND_IOMMUFD, &bind));
    attach.pt_id = d->ioas;
    CHECK(ioctl(d->device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach));
}

static void close_iommufd(struct device *d)
{
    struct vfio_device_detach_iommufd_pt detach = { .argsz = sizeof(detach) };
    struct iommu_ioas_unmap all = { .size = sizeof(all), .ioas_id = d->ioas, .length = UINT64_MAX };
    struct iommu_destroy destroy = { .size = sizeof(destroy), .id = d->ioas };
    CHECK(ioctl(d->device, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach));
    close(d->device);
    CHECK(ioctl(d->iommufd, IOMMU_IOAS_UNMAP, &all));
    CHECK(ioctl(d->iommufd, IOMMU_DESTROY, &destroy));
    close(d->iommufd);
}

static void open_device(struct device *d)
{
    if (iommufd_mode)
        open_iommufd(d);
    else
        open_legacy(d);
    device_info(d);
    wire_request(d);
}

static void close_device(struct device *d)
{
    unwire_request(d);
    if (iommufd_mode)
        close_iommufd(d);
    else
        close_legacy(d);
}

/* The IOMMU's valid ranges, asked once per open before the first map. */
static void iova_ranges(struct device *d)
{
    if (iommufd_mode) {
        struct iommu_iova_range ranges[16];
        struct iommu_ioas_iova_ranges query = { .size = sizeof(query), .ioas_id = d->ioas };
        /* The count first (EMSGSIZE tells it), then the ranges. */
        if (ioctl(d->iommufd, IOMMU_IOAS_IOVA_RANGES, &query) < 0 && errno != EMSGSIZE)
            fail("IOMMU_IOAS_IOVA_RANGES (count)");
        if (query.num_iovas > 16) {
            errno = E2BIG;
            fail("IOMMU_IOAS_IOVA_RANGES (more than 16 ranges)");
        }
        query.allowed_iovas = (uintptr_t)ranges;
        CHECK(ioctl(d->iommufd, IOMMU_IOAS_IOVA_RANGES, &query));
    } else {
        char buf[4096];
        struct vfio_iommu_type1_info *info = (struct vfio_iommu_type1_info *)buf;
        memset(info, 0, sizeof(*info));
        info->argsz = sizeof(*info);
        CHECK(ioctl(d->container, VFIO_IOMMU_GET_INFO, info));
        if (info->argsz > sizeof(buf)) {
            errno = E2BIG;
            fail("VFIO_IOMMU_GET_INFO (capabilities over 4 KiB)");
        }
        uint32_t argsz = info->argsz;
        memset(buf, 0, argsz);
        info->argsz = argsz;
        CHECK(ioctl(d->container, VFIO_IOMMU_GET_INFO, info));
    }
}

static void map_unmap(struct device *d, unsigned long long size)
{
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (memory == MAP_FAILED)
        fail("mmap");
    if (iommufd_mode) {
        struct iommu_ioas_map map = {
            .size = sizeof(map),
            .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            .ioas_id = d->ioas,
            .user_va = (uintptr_t)memory,
            .length = size,
            .iova = IOVA,
        };
        struct iommu_ioas_unmap unmap = { .size = sizeof(unmap), .ioas_id = d->ioas, .iova = IOVA, .length = size };
        CHECK(ioctl(d->iommufd, IOMMU_IOAS_MAP, &map));
        CHECK(ioctl(d->iommufd, IOMMU_IOAS_UNMAP, &unmap));
    } else {
        struct vfio_iommu_type1_dma_map map = {
            .argsz = sizeof(map),
            .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            .vaddr = (uintptr_t)memory,
            .iova = IOVA,
            .size = size,
        };
        struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap), .iova = IOVA, .size = size };
        CHECK(ioctl(d->container, VFIO_IOMMU_MAP_DMA, &map));
        CHECK(ioctl(d->container, VFIO_IOMMU_UNMAP_DMA, &unmap));
    }
    CHECK(munmap(memory, size));
}

static long count(const char *text)
{
    char *end;
    long value = strtol(text, &end, 10);
    if (*end != '\0' || value <= 0) {
        fprintf(stderr, "dma_map_bench: '%s' is not a positive count\n", text);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv)
{
    struct device d;
    long opens, maps, huge;
    long long start;

    if (argc != 7 || (strcmp(argv[1], "legacy") != 0 && strcmp(argv[1], "iommufd") != 0)) {
        fprintf(stderr, "usage: %s legacy|iommufd GROUP_FILE|CDEV_FILE ADDRESS OPENS MAPS HUGE_MAPS\n", argv[0]);
        return 2;
    }
    iommufd_mode = strcmp(argv[1], "iommufd") == 0;
    device_file = argv[2];
    address = argv[3];
    opens = count(argv[4]);
    maps = count(argv[5]);
    huge = count(argv[6]);

    open_device(&d); /* warm-up */
    close_device(&d);
    start = now_ns();
    for (long i = 0; i < opens; i++) {
        open_device(&d);
        close_device(&d);
    }
    printf("open_ns: %lld\n", (now_ns() - start) / opens);

    open_device(&d);
    iova_ranges(&d);
    map_unmap(&d, SMALL); /* warm-up */
    map_unmap(&d, LARGE);
    start = now_ns();
    for (long i = 0; i < maps; i++)
        map_unmap(&d, SMALL);
    printf("map_4k_ns: %lld\n", (now_ns() - start) / maps);
    start = now_ns();
    for (long i = 0; i < huge; i++)
        map_unmap(&d, LARGE);
    printf("map_2m_ns: %lld\n", (now_ns() - start) / huge);
    close_device(&d);
    return 0;
}
