/* sandbench system-call timer: times COUNT raw getpid system calls, REPEATS times.
 *
 *   syscall COUNT REPEATS
 *
 * Prints one JSON object per repeat: {"calls": COUNT, "total_ns": N}. getpid goes through
 * syscall(2) so that no libc caching can answer it without entering the kernel (or gVisor's
 * sentry). A warm-up pass first faults in pages and warms caches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: syscall COUNT REPEATS\n");
        return 2;
    }
    long count = atol(argv[1]);
    long repeats = atol(argv[2]);
    if (count <= 0 || repeats <= 0) {
        fprintf(stderr, "syscall: COUNT and REPEATS must be positive\n");
        return 2;
    }
    volatile long sink = 0;
    for (long i = 0; i < count; i++) sink += syscall(SYS_getpid);
    for (long r = 0; r < repeats; r++) {
        long long t0 = now_ns();
        for (long i = 0; i < count; i++) sink += syscall(SYS_getpid);
        long long t1 = now_ns();
        printf("{\"calls\": %ld, \"total_ns\": %lld}\n", count, t1 - t0);
    }
    fflush(stdout);
    return sink == 0 ? 1 : 0;
}
