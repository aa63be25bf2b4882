/*
 * A hostile tenant's Doee: each `mode` (a parameter) is one attack on the
 * platform's resources or walls, reporting what it managed. The input
 * carries the attack's size where it has one.
 *
 *   echo          the input back (the next invocation works)
 *   sleep         holds its Worker for <input> ms
 *   shm           writes <input> MiB to /dev/shm, 1 MiB at a time
 *   map-shared    touches <input> MiB of MAP_SHARED anonymous memory
 *   fork-memory   forks <n> children that each touch <m> MiB ("n m")
 *   spinners      forks 8 children that leave the session and spin forever
 *   stderr        writes <input> MiB to stderr without a newline
 *   flood         writes its input, a frame of the Worker's protocol, to
 *                 the Worker's socket 1,500 times without reading
 *   syscalls      makes the calls the seccomp filter denies, with errno
 *   fds           lists its open descriptors and where they point
 */
#define _GNU_SOURCE
#include <isms/doee.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *mode;

static int init(isms_ctx *ctx) {
    const char *m = isms_param(ctx, "mode");
    mode = strdup(m ? m : "echo");
    return mode ? ISMS_OK : ISMS_FAILED;
}

static long number(const uint8_t *input, size_t len, long fallback) {
    char text[32] = {0};
    if (len == 0 || len >= sizeof text) return fallback;
    memcpy(text, input, len);
    return strtol(text, NULL, 10);
}

static void say(isms_ctx *ctx, const char *format, long a, long b) {
    char line[256];
    int n = snprintf(line, sizeof line, format, a, b);
    isms_output(ctx, line, (size_t)n);
}

static void touch(char *memory, size_t bytes) {
    for (size_t i = 0; i < bytes; i += 4096) memory[i] = 1;
}

static int shm(isms_ctx *ctx, long mib) {
    static char chunk[1 << 20];
    memset(chunk, 7, sizeof chunk);
    int fd = open("/dev/shm/fill", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        say(ctx, "open /dev/shm/fill: errno %ld%ld\n", errno, 0);
        return ISMS_OK;
    }
    long written = 0;
    while (written < mib && write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk) written++;
    say(ctx, "wrote %ld MiB of %ld to /dev/shm\n", written, mib);
    close(fd);
    unlink("/dev/shm/fill");
    return ISMS_OK;
}

static int map_shared(isms_ctx *ctx, long mib) {
    size_t bytes = (size_t)mib << 20;
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        say(ctx, "mmap failed: errno %ld%ld\n", errno, 0);
        return ISMS_OK;
    }
    touch(memory, bytes);
    say(ctx, "touched %ld MiB of shared memory%ld\n", mib, 0);
    munmap(memory, bytes);
    return ISMS_OK;
}

static int fork_memory(isms_ctx *ctx, const uint8_t *input, size_t len) {
    char text[64] = {0};
    memcpy(text, input, len < sizeof text - 1 ? len : sizeof text - 1);
    long children = 30, mib = 60;
    sscanf(text, "%ld %ld", &children, &mib);
    long started = 0, ok = 0, killed = 0;
    for (long i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid == 0) {
            char *memory = malloc((size_t)mib << 20);
            if (memory == NULL) _exit(3);
            touch(memory, (size_t)mib << 20);
            sleep(2);
            _exit(0);
        }
        started++;
    }
    for (long i = 0; i < started; i++) {
        int status;
        if (wait(&status) < 0) break;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
        if (WIFSIGNALED(status)) killed++;
    }
    say(ctx, "children that held their memory: %ld, killed: %ld\n", ok, killed);
    return ISMS_OK;
}

static int spinners(isms_ctx *ctx) {
    long spawned = 0;
    for (int i = 0; i < 8; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            if (fork() > 0) _exit(0); /* daemonise: the grandchild spins */
            for (;;) {
            }
        }
        if (pid > 0) {
            waitpid(pid, NULL, 0);
            spawned++;
        }
    }
    say(ctx, "spawned %ld spinners%ld\n", spawned, 0);
    return ISMS_OK;
}

static int big_stderr(isms_ctx *ctx, long mib) {
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    long written = 0;
    for (; written < mib; written++) {
        if (write(2, chunk, sizeof chunk) != (ssize_t)sizeof chunk) break;
    }
    say(ctx, "wrote %ld MiB to stderr without a newline%ld\n", written, 0);
    return ISMS_OK;
}

/* The Worker's socket: the one descriptor that is a socket. */
static int worker_socket(void) {
    for (int fd = 3; fd < 256; fd++) {
        char path[64], target[64] = {0};
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (readlink(path, target, sizeof target - 1) > 0 && strncmp(target, "socket:", 7) == 0) {
            return fd;
        }
    }
    return -1;
}

static int flood(isms_ctx *ctx, const uint8_t *frame, size_t len) {
    int fd = worker_socket();
    if (fd < 0) {
        isms_error(ctx, "no socket found");
        return ISMS_FAILED;
    }
    long sent = 0;
    for (; sent < 1500; sent++) {
        if (write(fd, frame, len) != (ssize_t)len) break;
    }
    say(ctx, "sent %ld platform calls without reading an answer%ld\n", sent, 0);
    return ISMS_OK;
}

static void try_call(isms_ctx *ctx, const char *name, long result) {
    char line[128];
    int n = snprintf(line, sizeof line, "%s: %s\n", name,
                     result >= 0 ? "ALLOWED" : (errno == EPERM ? "EPERM" : strerror(errno)));
    isms_output(ctx, line, (size_t)n);
}

static int syscalls(isms_ctx *ctx) {
    char buffer[16];
    struct iovec local = {buffer, sizeof buffer}, remote = {buffer, sizeof buffer};
    try_call(ctx, "ptrace", syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
    try_call(ctx, "process_vm_readv",
             syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0));
    try_call(ctx, "bpf", syscall(SYS_bpf, 0, NULL, 0));
    try_call(ctx, "perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    try_call(ctx, "userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */));
    try_call(ctx, "keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0));
    try_call(ctx, "add_key", syscall(SYS_add_key, "user", "isms", "x", 1, -3));
    try_call(ctx, "mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    try_call(ctx, "unshare", syscall(SYS_unshare, 0x04000000 /* CLONE_NEWUTS */));
    try_call(ctx, "setns", syscall(SYS_setns, 0, 0));
    try_call(ctx, "kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    try_call(ctx, "init_module", syscall(SYS_init_module, NULL, 0, ""));
    try_call(ctx, "io_uring_setup", syscall(SYS_io_uring_setup, 1, buffer));
    return ISMS_OK;
}

static int fds(isms_ctx *ctx) {
    for (int fd = 0; fd < 1024; fd++) {
        char path[64], target[512] = {0};
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (readlink(path, target, sizeof target - 1) < 0) continue;
        char line[640];
        int n = snprintf(line, sizeof line, "%d -> %s\n", fd, target);
        isms_output(ctx, line, (size_t)n);
    }
    return ISMS_OK;
}

static int exec(isms_ctx *ctx, const uint8_t *input, size_t len) {
    if (strcmp(mode, "echo") == 0) {
        isms_output(ctx, input, len);
    } else if (strcmp(mode, "sleep") == 0) {
        long ms = number(input, len, 1000);
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000};
        nanosleep(&pause, NULL);
        isms_output(ctx, "slept", 5);
    } else if (strcmp(mode, "shm") == 0) {
        return shm(ctx, number(input, len, 1536));
    } else if (strcmp(mode, "map-shared") == 0) {
        return map_shared(ctx, number(input, len, 1024));
    } else if (strcmp(mode, "fork-memory") == 0) {
        return fork_memory(ctx, input, len);
    } else if (strcmp(mode, "spinners") == 0) {
        return spinners(ctx);
    } else if (strcmp(mode, "stderr") == 0) {
        return big_stderr(ctx, number(input, len, 1024));
    } else if (strcmp(mode, "flood") == 0) {
        return flood(ctx, input, len);
    } else if (strcmp(mode, "syscalls") == 0) {
        return syscalls(ctx);
    } else if (strcmp(mode, "fds") == 0) {
        return fds(ctx);
    } else {
        isms_error(ctx, "unknown mode");
        return ISMS_FAILED;
    }
    return ISMS_OK;
}

static void term(isms_ctx *ctx) { (void)ctx; }

ISMS_DOEE_C(init, exec, term)
