/* Test driver: starts a program through one libc entry point, waits for it and exits with its
 * status (128+signal when killed), so a test can run the same command through every entry point
 * the preload library hooks and check where each one landed.
 *
 *   driver ENTRY PROG [ARG...]
 *
 * ENTRY: execve execv execvp execvpe execl execle execlp execveat execveat-dirfd execveat-empty
 *        fexecve posix_spawn posix_spawnp pidfd_spawn pidfd_spawnp system popen vfork
 *        posix_spawn-chdir posix_spawnp-fchdir (run in $DRIVER_CHDIR)
 *        execve-noenv (an environment without LD_PRELOAD/QPOD_*), system-unset (the driver
 *        unsets them from its own environment first), threads (8 threads x 40 posix_spawnp).
 * The non-p entries get PROG resolved through PATH by the driver; the p entries get it as is.
 * Exit 77: the entry point does not exist in this libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *entry, *prog;
static char **args; /* argv for the program: args[0] = PROG */
static char path[4096];

static int status_of(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

static int wait_for(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return 125;
    return status_of(st);
}

static void resolve(void)
{
    if (strchr(prog, '/')) {
        snprintf(path, sizeof(path), "%s", prog);
        return;
    }
    const char *p = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", p ? p : "/bin:/usr/bin");
    for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof(path), "%s/%s", d, prog);
        if (access(path, X_OK) == 0)
            return;
    }
    snprintf(path, sizeof(path), "%s", prog); /* let the call fail as it would */
}

static char **clean_env(void)
{
    static char *env[256];
    int k = 0;
    for (char **e = environ; *e && k < 255; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "QPOD_", 5))
            env[k++] = *e;
    env[k] = NULL;
    return env;
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "driver: %s %s: errno %d (%s)\n", entry, what, err, strerror(err));
    return err == ENOENT ? 127 : 126;
}

/* exec entries: run in a forked child, like a shell does */
static void do_exec_child(void)
{
    int n = 0;
    while (args[n])
        n++;
    if (!strcmp(entry, "execve"))
        execve(path, args, environ);
    else if (!strcmp(entry, "execve-noenv"))
        execve(path, args, clean_env());
    else if (!strcmp(entry, "execv"))
        execv(path, args);
    else if (!strcmp(entry, "execvp"))
        execvp(prog, args);
    else if (!strcmp(entry, "execvpe"))
        execvpe(prog, args, environ);
    else if (!strcmp(entry, "execl") || !strcmp(entry, "execle") || !strcmp(entry, "execlp")) {
        /* up to 4 arguments after argv[0], enough for the tests */
        char *a[5] = {0};
        for (int i = 1; i < n && i < 5; i++)
            a[i - 1] = args[i];
        if (!strcmp(entry, "execl"))
            execl(path, args[0], a[0], a[1], a[2], a[3], (char *)NULL);
        else if (!strcmp(entry, "execlp"))
            execlp(prog, args[0], a[0], a[1], a[2], a[3], (char *)NULL);
        else if (!a[0])
            execle(path, args[0], (char *)NULL, environ);
        else if (!a[1])
            execle(path, args[0], a[0], (char *)NULL, environ);
        else if (!a[2])
            execle(path, args[0], a[0], a[1], (char *)NULL, environ);
        else
            execle(path, args[0], a[0], a[1], a[2], (char *)NULL, environ);
    } else if (!strcmp(entry, "execveat"))
        execveat(AT_FDCWD, path, args, environ, 0);
    else if (!strcmp(entry, "execveat-dirfd")) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (slash)
            *slash = 0;
        int fd = open(slash ? (dir[0] ? dir : "/") : ".", O_RDONLY | O_DIRECTORY);
        execveat(fd, base, args, environ, 0);
    } else if (!strcmp(entry, "execveat-empty")) {
        int fd = open(path, O_RDONLY);
        execveat(fd, "", args, environ, AT_EMPTY_PATH);
    } else if (!strcmp(entry, "fexecve")) {
        int fd = open(path, O_RDONLY);
        fexecve(fd, args, environ);
    }
    _exit(fail("returned", errno));
}

static int do_spawn(void)
{
    posix_spawn_file_actions_t fa, *pfa = NULL;
    const char *dir = getenv("DRIVER_CHDIR");
    int r;
    pid_t pid;
    if (strstr(entry, "-chdir") || strstr(entry, "-fchdir")) {
        if (!dir)
            return fail("needs DRIVER_CHDIR", EINVAL);
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, 1, 1);
        if (strstr(entry, "-fchdir"))
            posix_spawn_file_actions_addfchdir_np(&fa, open(dir, O_RDONLY | O_DIRECTORY));
        else
            posix_spawn_file_actions_addchdir_np(&fa, dir);
        pfa = &fa;
    }
    errno = 4321;
    if (!strncmp(entry, "posix_spawnp", 12))
        r = posix_spawnp(&pid, prog, pfa, NULL, args, environ);
    else
        r = posix_spawn(&pid, path, pfa, NULL, args, environ);
    if (r != 0)
        return fail("returned", r);
    if (errno != 4321)
        fprintf(stderr, "driver: errno changed by a successful spawn: %d\n", errno);
    return wait_for(pid);
}

typedef int (*pidfd_spawn_fn)(int *, const char *, const posix_spawn_file_actions_t *,
                              const posix_spawnattr_t *, char *const[], char *const[]);

static int do_pidfd_spawn(void)
{
    /* glibc 2.39+: looked up in libc itself, so that an older glibc is detected */
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc || !dlsym(libc, entry))
        return 77;
    pidfd_spawn_fn f = (pidfd_spawn_fn)dlsym(RTLD_DEFAULT, entry);
    int pidfd;
    int r = f(&pidfd, !strcmp(entry, "pidfd_spawnp") ? prog : path, NULL, NULL, args, environ);
    if (r != 0)
        return fail("returned", r);
    siginfo_t si;
    if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0)
        return 125;
    return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

static void join_args(char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; args[i]; i++)
        k += (size_t)snprintf(buf + k, k < cap ? cap - k : 0, "%s%s", i ? " " : "", args[i]);
}

static void *spawner(void *arg)
{
    long failures = 0;
    (void)arg;
    for (int i = 0; i < 40; i++) {
        pid_t pid;
        int st;
        if (posix_spawnp(&pid, prog, NULL, NULL, args, environ) != 0 || waitpid(pid, &st, 0) < 0 ||
            status_of(st) != 0)
            failures++;
    }
    return (void *)failures;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: driver ENTRY PROG [ARG...]\n");
        return 2;
    }
    entry = argv[1];
    prog = argv[2];
    args = argv + 2;
    resolve();
    fflush(stdout);

    if (!strncmp(entry, "posix_spawn", 11))
        return do_spawn();
    if (!strncmp(entry, "pidfd_spawn", 11))
        return do_pidfd_spawn();
    if (!strcmp(entry, "system") || !strcmp(entry, "system-unset")) {
        char cmd[8192];
        join_args(cmd, sizeof(cmd));
        if (!strcmp(entry, "system-unset")) {
            unsetenv("LD_PRELOAD");
            unsetenv("QPOD_PRELOAD");
            unsetenv("QPOD_RULES");
        }
        int st = system(cmd);
        return st < 0 ? fail("system", errno) : status_of(st);
    }
    if (!strcmp(entry, "popen")) {
        char cmd[8192], buf[4096];
        join_args(cmd, sizeof(cmd));
        FILE *f = popen(cmd, "r");
        if (!f)
            return fail("popen", errno);
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, n, stdout);
        int st = pclose(f);
        return st < 0 ? fail("pclose", errno) : status_of(st);
    }
    if (!strcmp(entry, "vfork")) {
        pid_t pid = vfork();
        if (pid == 0) {
            execve(path, args, environ);
            _exit(127);
        }
        return pid < 0 ? fail("vfork", errno) : wait_for(pid);
    }
    if (!strcmp(entry, "threads")) {
        pthread_t t[8];
        long total = 0;
        for (int i = 0; i < 8; i++)
            pthread_create(&t[i], NULL, spawner, NULL);
        for (int i = 0; i < 8; i++) {
            void *r;
            pthread_join(t[i], &r);
            total += (long)r;
        }
        printf("threads: %ld failures\n", total);
        return total ? 1 : 0;
    }
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork", errno);
    if (pid == 0)
        do_exec_child();
    return wait_for(pid);
}
