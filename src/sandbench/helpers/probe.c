/* sandbench startup probe: the first process of a sandbox.
 *
 *   probe HOST_IP PORT [stay|exit]   connect to the host-side listener as soon as the
 *                                    network stack works, send the sandbox's view of
 *                                    CLOCK_MONOTONIC (informational), then pause (stay,
 *                                    the default) or exit.
 *   probe idle                       just pause: an idle sandbox for memory accounting.
 *   probe true                       exit 0 at once (the exec benchmark's trivial command).
 *   probe out BYTES                  write BYTES bytes ('x') to stdout, exit 0 (the exec
 *                                    benchmark's output-heavy command).
 *   probe serve PORT                 listen on PORT (all addresses); answer every connection
 *                                    with "up <CLOCK_MONOTONIC>\n", close it once the host
 *                                    has closed its side: readiness
 *                                    the host can ask again and again (the restore benchmark
 *                                    asks before a checkpoint and after each restore).
 *
 * Static, no libc name resolution: the address is numeric. Connect is retried every 500 us
 * because a user-space network stack (gVisor netstack) or a guest may come up after the
 * process starts; the host side times until accept(), so the retry only bounds resolution.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void idle(void) {
    /* As PID 1 a process ignores signals it does not handle: handle TERM/INT to stop cleanly. */
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    for (;;) pause();
}

static int out(const char *arg) {
    static char buf[65536];
    char *end;
    errno = 0;
    long long left = strtoll(arg, &end, 10);
    if (errno != 0 || *end != '\0' || end == arg || left < 0) {
        fprintf(stderr, "probe: bad byte count %s\n", arg);
        return 2;
    }
    memset(buf, 'x', sizeof buf);
    while (left > 0) {
        size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
        ssize_t w = write(1, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            perror("probe: write");
            return 1;
        }
        left -= w;
    }
    return 0;
}

static int serve(const char *arg) {
    char *end;
    long port = strtol(arg, &end, 10);
    if (*end != '\0' || end == arg || port <= 0 || port > 65535) {
        fprintf(stderr, "probe: bad port %s\n", arg);
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 16) != 0) {
        perror("probe: serve");
        return 1;
    }
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            perror("probe: accept");
            return 1;
        }
        struct timespec ts;
        char msg[64];
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int n = snprintf(msg, sizeof msg, "up %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
        if (write(fd, msg, (size_t)n) < 0) perror("probe: write");
        /* The host closes first: an endpoint this side closed first would sit in TIME_WAIT,
         * and gVisor refuses to checkpoint a connected endpoint. Bounded by 2 s. */
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char sink[64];
        while (read(fd, sink, sizeof sink) > 0) {}
        close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "idle") == 0) idle();
    if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
    if (argc == 2 && strcmp(argv[1], "true") == 0) return 0;
    if (argc == 3 && strcmp(argv[1], "out") == 0) return out(argv[2]);
    if (argc < 3) {
        fprintf(stderr, "usage: probe HOST_IP PORT [stay|exit] | probe idle | probe true | "
                        "probe out BYTES | probe serve PORT\n");
        return 2;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "probe: bad address %s\n", argv[1]);
        return 2;
    }
    /* Bounded: 120 s of retries, then give up so a broken sandbox does not linger. */
    for (long tries = 0; tries < 240000; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            struct timespec ts;
            char msg[64];
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int n = snprintf(msg, sizeof msg, "up %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
            if (write(fd, msg, (size_t)n) < 0) perror("probe: write");
            close(fd);
            if (argc > 3 && strcmp(argv[3], "exit") == 0) return 0;
            idle();
        }
        if (fd >= 0) close(fd);
        usleep(500);
    }
    fprintf(stderr, "probe: could not connect to %s:%s: %s\n", argv[1], argv[2], strerror(errno));
    return 1;
}
