/* sandbench guest agent: runs commands the host sends and returns exit status, stdout, stderr.
 *
 *   agent                 serve the virtio-serial port named "sandbench.agent"
 *   agent --init         as PID 1: start the first process named on the kernel command line
 *                        (sandbench.argv=HEX), then serve the port and reap orphans
 *   agent --run-argv     exec the first process named on the kernel command line (for a
 *                        systemd unit); exits 0 when there is none
 *   agent --vsock PORT   serve AF_VSOCK connections on PORT (Firecracker's vsock)
 *   agent --serve-fd N   serve the already connected stream on fd N until it closes (tests)
 *
 * Protocol (both directions: a frame is a 4-byte big-endian length, then that many bytes):
 *   request  = kind:u8 ('P' ping, 'X' run and wait, 'B' start in background) id:u32
 *              timeout_ms:u32 (0: none) nargs:u32 nenv:u32, then nargs + nenv NUL-terminated
 *              strings (argv, then KEY=VALUE)
 *   response = status:u8 (0 done, 1 timed out and killed, 2 could not start) id:u32 (the
 *              request's) rc:i32 (exit code, or -signal) out_len:u32 out err_len:u32 err
 *   'B' replies at once with rc = the pid; the process gets /dev/null as stdio.
 * Commands run in their own session; stdout/stderr go to memfds, not pipes, so that a server
 * a command leaves in the background (`sh -c 'server &'`) never blocks the agent and never
 * dies of SIGPIPE: the reply is sent when the command itself exits.
 * sandbench.argv is the first process's argv: hex of the arguments, each ending in NUL.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "sandbench.agent"
#define MAX_FRAME (16u << 20)
#define MAX_OUT (64u << 20)

static const char *DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static void logmsg(const char *fmt, const char *arg) {
    fprintf(stderr, "sandbench-agent: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
}

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r == 0) return -1;
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLIN, 0};
                poll(&p, 1, 1000);
                continue;
            }
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 1000);
                continue;
            }
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

static uint32_t get_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Everything a memfd holds, up to MAX_OUT bytes; *len gets the size. */
static char *slurp(int fd, uint32_t *len) {
    struct stat st;
    *len = 0;
    if (fstat(fd, &st) != 0 || st.st_size <= 0) return NULL;
    size_t n = (size_t)st.st_size > MAX_OUT ? MAX_OUT : (size_t)st.st_size;
    char *buf = malloc(n);
    if (!buf) return NULL;
    ssize_t r = pread(fd, buf, n, 0);
    if (r <= 0) {
        free(buf);
        return NULL;
    }
    *len = (uint32_t)r;
    return buf;
}

static uint32_t cur_id;

static int send_reply(int ch, int status, int32_t rc, const char *out, uint32_t outlen,
                      const char *err, uint32_t errlen) {
    uint32_t body = 1 + 4 + 4 + 4 + outlen + 4 + errlen;
    unsigned char hdr[4 + 1 + 4 + 4 + 4];
    put_u32(hdr, body);
    hdr[4] = (unsigned char)status;
    put_u32(hdr + 5, cur_id);
    put_u32(hdr + 9, (uint32_t)rc);
    put_u32(hdr + 13, outlen);
    unsigned char elen[4];
    put_u32(elen, errlen);
    if (write_full(ch, hdr, sizeof hdr) || (outlen && write_full(ch, out, outlen)) ||
        write_full(ch, elen, 4) || (errlen && write_full(ch, err, errlen)))
        return -1;
    return 0;
}

static int reply_text(int ch, int status, int32_t rc, const char *err) {
    return send_reply(ch, status, rc, "", 0, err, (uint32_t)strlen(err));
}

/* Child side of a spawn: new session, stdio, environment, exec. Never returns. */
static void child_exec(char **argv, char **envp, int out, int err) {
    setsid();
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) dup2(nul, 0);
    dup2(out >= 0 ? out : nul, 1);
    dup2(err >= 0 ? err : nul, 2);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    execvpe(argv[0], argv, envp);
    fprintf(stderr, "sandbench-agent: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int wait_child(pid_t pid, int *status, long long timeout_ms) {
    long long deadline = now_ms() + timeout_ms;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) {
            *status = 0;
            break;
        }
        long long left = deadline - now_ms();
        if (timeout_ms > 0 && left <= 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            if (pfd >= 0) close(pfd);
            return 1;
        }
        if (pfd >= 0) {
            struct pollfd p = {pfd, POLLIN, 0};
            poll(&p, 1, timeout_ms > 0 ? (int)(left > 1000 ? 1000 : left) : 1000);
        } else {
            usleep(1000);
        }
    }
    if (pfd >= 0) close(pfd);
    return 0;
}

static void handle(int ch, unsigned char *req, uint32_t len) {
    if (len < 17) {
        reply_text(ch, 2, -1, "sandbench-agent: short request");
        return;
    }
    char kind = (char)req[0];
    cur_id = get_u32(req + 1);
    uint32_t timeout_ms = get_u32(req + 5), nargs = get_u32(req + 9), nenv = get_u32(req + 13);
    if (kind == 'P') {
        reply_text(ch, 0, 0, "");
        return;
    }
    if (nargs == 0 || nargs > 65536 || nenv > 65536) {
        reply_text(ch, 2, -1, "sandbench-agent: bad argument count");
        return;
    }
    char **argv = calloc(nargs + 1, sizeof *argv);
    char **envp = calloc(nenv + 2, sizeof *envp);
    char *p = (char *)req + 17, *end = (char *)req + len;
    uint32_t i;
    int have_path = 0;
    for (i = 0; i < nargs + nenv; i++) {
        char *z = memchr(p, 0, (size_t)(end - p));
        if (!z) break;
        if (i < nargs)
            argv[i] = p;
        else {
            envp[i - nargs] = p;
            if (strncmp(p, "PATH=", 5) == 0) have_path = 1;
        }
        p = z + 1;
    }
    if (i != nargs + nenv) {
        reply_text(ch, 2, -1, "sandbench-agent: malformed strings");
        free(argv);
        free(envp);
        return;
    }
    if (!have_path) envp[nenv] = (char *)DEFAULT_PATH;

    if (kind == 'B') {
        pid_t pid = fork();
        if (pid == 0) child_exec(argv, envp, -1, -1);
        if (pid < 0)
            reply_text(ch, 2, -1, "sandbench-agent: fork failed");
        else
            reply_text(ch, 0, (int32_t)pid, "");
        free(argv);
        free(envp);
        return;
    }
    int out = memfd_create("stdout", 0), err = memfd_create("stderr", 0);
    if (out < 0 || err < 0) {
        reply_text(ch, 2, -1, "sandbench-agent: memfd_create failed");
        goto done;
    }
    /* The child reports exec failure on stderr and exits 127, like a shell. */
    pid_t pid = fork();
    if (pid == 0) child_exec(argv, envp, out, err);
    if (pid < 0) {
        reply_text(ch, 2, -1, "sandbench-agent: fork failed");
        goto done;
    }
    int st = 0;
    int timed_out = wait_child(pid, &st, (long long)timeout_ms);
    int32_t rc = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1;
    uint32_t olen, elen;
    char *obuf = slurp(out, &olen), *ebuf = slurp(err, &elen);
    send_reply(ch, timed_out ? 1 : 0, rc, obuf ? obuf : "", olen, ebuf ? ebuf : "", elen);
    free(obuf);
    free(ebuf);
done:
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    free(argv);
    free(envp);
}

static void reap(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

/* Serve one byte stream until it ends; returns when the peer is gone (read gives 0). */
static void serve(int ch) {
    for (;;) {
        struct pollfd p = {ch, POLLIN, 0};
        int r = poll(&p, 1, 1000);
        if (r == 0) {
            reap();
            continue;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (p.revents & POLLHUP && !(p.revents & POLLIN)) return;
        unsigned char hdr[4];
        if (read_full(ch, hdr, 4)) return;
        uint32_t len = get_u32(hdr);
        if (len > MAX_FRAME) return;
        unsigned char *req = malloc(len + 1);
        if (!req) return;
        if (read_full(ch, req, len)) {
            free(req);
            return;
        }
        req[len] = 0;
        handle(ch, req, len);
        free(req);
        reap();
    }
}

static int open_port(void) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d) return -1;
    struct dirent *e;
    int fd = -1;
    while ((e = readdir(d)) && fd < 0) {
        if (e->d_name[0] == '.') continue;
        char path[512], name[128] = {0};
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(name, sizeof name, f)) name[strcspn(name, "\n")] = 0;
        fclose(f);
        if (strcmp(name, PORT_NAME) != 0) continue;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    closedir(d);
    return fd;
}

static void serve_port(void) {
    int fd = -1;
    for (int tries = 0; fd < 0; tries++) {
        fd = open_port();
        if (fd < 0) {
            if (tries == 100) logmsg("waiting for virtio port %s", PORT_NAME);
            reap();
            usleep(50000);
        }
    }
    for (;;) {
        serve(fd);
        /* Host side closed: virtio-serial reads return 0 until it reconnects. */
        reap();
        usleep(50000);
    }
}

static void serve_vsock(unsigned port) {
    int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_vm addr;
    memset(&addr, 0, sizeof addr);
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = port;
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 4)) {
        logmsg("vsock: %s", strerror(errno));
        exit(1);
    }
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            reap();
            continue;
        }
        serve(c);
        close(c);
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* argv from sandbench.argv=HEX on /proc/cmdline, or NULL. */
static char **cmdline_argv(void) {
    static char line[8192];
    FILE *f = fopen("/proc/cmdline", "r");
    if (!f) return NULL;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *tok = strstr(line, "sandbench.argv=");
    if (!tok || (tok != line && tok[-1] != ' ')) return NULL;
    tok += strlen("sandbench.argv=");
    size_t hl = strcspn(tok, " \n");
    char *buf = malloc(hl / 2 + 1);
    size_t bl = 0;
    for (size_t i = 0; i + 1 < hl; i += 2) {
        int a = hexval(tok[i]), b = hexval(tok[i + 1]);
        if (a < 0 || b < 0) return NULL;
        buf[bl++] = (char)(a * 16 + b);
    }
    if (bl == 0 || buf[bl - 1] != 0) return NULL;
    size_t count = 0;
    for (size_t i = 0; i < bl; i++) count += buf[i] == 0;
    char **argv = calloc(count + 1, sizeof *argv);
    char *p = buf;
    for (size_t i = 0; i < count; i++) {
        argv[i] = p;
        p += strlen(p) + 1;
    }
    return argv;
}

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "--run-argv") == 0) {
        char **a = cmdline_argv();
        if (!a) return 0;
        char *envp[] = {(char *)DEFAULT_PATH, NULL};
        execvpe(a[0], a, envp);
        logmsg("exec failed: %s", strerror(errno));
        return 127;
    }
    if (argc > 2 && strcmp(argv[1], "--serve-fd") == 0) {
        serve(atoi(argv[2]));
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "--vsock") == 0) {
        serve_vsock((unsigned)atoi(argv[2]));
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--init") == 0) {
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term);
        char **a = cmdline_argv();
        if (a) {
            pid_t pid = fork();
            if (pid == 0) {
                char *envp[] = {(char *)DEFAULT_PATH, NULL};
                setsid();
                signal(SIGPIPE, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                signal(SIGINT, SIG_DFL);
                execvpe(a[0], a, envp);
                logmsg("exec of the first process failed: %s", strerror(errno));
                _exit(127);
            }
        }
        if (argc > 3 && strcmp(argv[2], "--vsock") == 0) serve_vsock((unsigned)atoi(argv[3]));
    }
    serve_port();
    return 0;
}
