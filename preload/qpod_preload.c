/* qpod preload library: sees every program launch of the processes it is loaded into and hands
 * the ones the engine's rules select to the qpod launcher; everything else goes to the real libc
 * function unchanged. See README.md for the list of hooks and why each one is there.
 *
 * This file holds the hooks and the plan of one launch; library/ holds the parts they use:
 * env.c (the environment captured at load, and put back), paths.c (resolving what runs),
 * rules.c (the rules file, its cache and the decision).
 *
 * Constraints (hooks run in vfork children and in fork children of threaded programs):
 * no malloc, no stdio, no locks in the hook path; big scratch goes on the stack, or into an
 * anonymous mmap when it would not fit; errno is saved and restored; the only shared state is
 * the rules cache, guarded by a sequence counter (lock-free).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "library/library.h"

#define EXPORT __attribute__((visibility("default")))

extern char **environ;

/* ---------------------------------------------------------------------------------------------
 * Real functions, looked up on first use (a process that never launches anything pays nothing).
 */
typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);
typedef int (*pidfd_spawn_fn)(int *, const char *, const posix_spawn_file_actions_t *,
                              const posix_spawnattr_t *, char *const[], char *const[]);
typedef int (*system_fn)(const char *);
typedef FILE *(*popen_fn)(const char *, const char *);
typedef pid_t (*fork_fn)(void);

static void *real_fn(const char *name, void **slot)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}
#define REAL(type, name)                                                                         \
    static type real_##name(void)                                                                \
    {                                                                                            \
        static void *slot;                                                                       \
        return (type)real_fn(#name, &slot);                                                      \
    }
REAL(execve_fn, execve)
REAL(execve_fn, execvpe)
REAL(execveat_fn, execveat)
REAL(fexecve_fn, fexecve)
REAL(spawn_fn, posix_spawn)
REAL(spawn_fn, posix_spawnp)
REAL(pidfd_spawn_fn, pidfd_spawn)
REAL(pidfd_spawn_fn, pidfd_spawnp)
REAL(system_fn, system)
REAL(popen_fn, popen)
REAL(fork_fn, fork)

/* ---------------------------------------------------------------------------------------------
 * The one line the library ever writes (async-signal-safe).
 */
static void put_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void put_int(long v)
{
    char b[24], *p = b + sizeof(b);
    int neg = v < 0;
    unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    *--p = 0;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (neg)
        *--p = '-';
    put_str(p);
}

/* ---------------------------------------------------------------------------------------------
 * One launch: resolve, decide, prepare the arguments of the real call.
 */
enum kind { K_PATH, K_SEARCH, K_AT, K_FD };

struct launch {
    int kind;
    const char *file; /* K_PATH, K_SEARCH, K_AT */
    int fd;           /* K_AT: dirfd, K_FD: the program */
    int flags;        /* K_AT */
    const posix_spawn_file_actions_t *fa;
    char *const *argv;
    char *const *envp;
};

/* Laid out so that a launch writes as few pages of it as it can (each page a shell's fork child
 * writes is a page fault): the small fields, then the arrays whose first bytes a decision
 * writes, the arrays used only to change a launch last. */
struct plan {
    int off;
    int redirect;
    char *const *envp;
    char *const *argv;
    char *cwd, *resolved;
    struct scratch s_argv;
    size_t used;
    struct dec_out dec;
    /* the launch's paths one after another (each under PATH_MAX, so each finds room; the last
     * two, a build tool's directories, are written together: one more) */
    char paths[6 * PATH_MAX];
    struct env_build eb;
    char *argv_stack[STACK_PTRS];
};

/* Where the plan's next path goes (room for PATH_MAX bytes), and keeping the one written there. */
static char *path_room(struct plan *p) { return p->paths + p->used; }
static char *path_keep(struct plan *p, char *s)
{
    p->used += strlen(s) + 1;
    return s;
}

/* A path relative to a directory descriptor. Out of line, as every PATH_MAX buffer of the hook
 * path: a call made from a frame holding one writes a page further down the stack, and each
 * page a shell's fork child writes is a page fault. */
__attribute__((noinline)) static int resolve_at(const struct launch *l, char *out, size_t cap)
{
    char dir[PATH_MAX];
    if (qp_fd_path(l->fd, dir, sizeof(dir)) < 0)
        return -1;
    return qp_path_join(out, cap, dir, l->file);
}

static int resolve(const struct launch *l, const char *cwd, char *out, size_t cap)
{
    switch (l->kind) {
    case K_SEARCH:
        if (!l->file[0])
            return -1;
        if (!strchr(l->file, '/'))
            return qp_search_path(l->file, cwd, out, cap);
        /* fall through */
    case K_PATH:
        if (!l->file[0])
            return -1;
        return qp_path_join(out, cap, cwd, l->file);
    case K_AT:
        if (l->file[0] == '/')
            return qp_path_join(out, cap, "/", l->file);
        if (!l->file[0] && (l->flags & AT_EMPTY_PATH))
            return qp_fd_path(l->fd, out, cap);
        if (l->fd == AT_FDCWD)
            return qp_path_join(out, cap, cwd, l->file);
        return resolve_at(l, out, cap);
    case K_FD:
        return qp_fd_path(l->fd, out, cap);
    }
    return -1;
}

/* True in the launcher itself when it runs `path` on the host: its own argv is
 * <launcher fields> --shim <path> ... . Whatever QPOD_HOST_ROOT says, that exec must not come
 * back to the launcher (it would loop forever). */
static int launcher_runs_it(const struct dec_out *d, const char *path)
{
    char **a = qp_self_argv;
    if (!a)
        return 0;
    const char *f = d->launcher;
    for (int i = 0; i < d->nfields; i++, f += strlen(f) + 1)
        if (!a[i] || strcmp(a[i], f) != 0)
            return 0;
    return a[d->nfields] && strcmp(a[d->nfields], "--shim") == 0 && a[d->nfields + 1] &&
           strcmp(a[d->nfields + 1], path) == 0;
}

static int plan_launch(const struct launch *l, struct plan *p)
{
    struct env_scan s;
    qp_scan_env(l->envp, &s);
    p->off = s.off;
    p->redirect = 0;
    p->envp = l->envp;
    p->argv = l->argv;
    p->eb.s_arr.map = p->eb.s_ldp.map = p->s_argv.map = NULL;
    if (s.off || (l->kind != K_FD && !l->file))
        return 0; /* a NULL program fails in the real call (EFAULT), as without qpod */
    struct captured c;
    qp_get_captured(&c);
    p->used = 0;
    if (c.rules && qp_spawn_cwd(l->fa, path_room(p), PATH_MAX) == 0 && (p->cwd = path_keep(p, path_room(p))) &&
        resolve(l, p->cwd, path_room(p), PATH_MAX) == 0) {
        p->resolved = path_keep(p, path_room(p));
        struct dec_in in = {p->resolved, p->cwd, NULL, 0, s.host_root, NULL, NULL, NULL};
        if (qp_link_target(p->resolved, path_room(p), PATH_MAX) == 0)
            in.link = path_keep(p, path_room(p));
        in.name = qp_base_name(p->resolved, strlen(p->resolved), &in.name_len);
        if (qp_script_path(in.name, in.name_len, l->argv, p->cwd, path_room(p), PATH_MAX) == 0)
            in.script = path_keep(p, path_room(p));
        /* routed by the directory it works in (make -C DIR); the command still starts in cwd */
        char *work = path_room(p), *alt = work + PATH_MAX; /* (room for both: see paths) */
        int given = qp_work_dir(in.name, in.name_len, l->argv, p->cwd, work, PATH_MAX, alt);
        if (given)
            in.cwd = path_keep(p, work);
        if (given == 2)
            in.cwd_else = path_keep(p, memmove(path_room(p), alt, strlen(alt) + 1));
        /* a program that cannot run stays with the real call, which fails as it always would;
         * a hook git starts runs where git runs */
        p->redirect = !qp_git_hook(in.name, in.name_len) && qp_decide(c.rules, c.rules_fd, &in, &p->dec) == 0 &&
                      p->dec.redirect &&
                      (l->kind == K_SEARCH && !strchr(l->file, '/') ? 1 : qp_runnable(p->resolved)) &&
                      qp_exec_format(p->resolved) &&
                      !launcher_runs_it(&p->dec, p->resolved);
    }
    p->envp = qp_build_env(l->envp, &s, &c, &p->eb);
    if (!p->redirect)
        return 0;
    /* [<client> --root <root>] <launcher fields...> --shim <resolved path> <cwd> -- <original argv...>
     * (the client runs the command natively when the launcher prepared it, else execs the rest) */
    size_t argc = 0;
    while (l->argv && l->argv[argc])
        argc++;
    size_t n = (size_t)p->dec.nfields + 9 + argc + 1;
    char **a = scratch_get(&p->s_argv, n * sizeof(char *), p->argv_stack, sizeof(p->argv_stack));
    if (!a) {
        p->redirect = 0;
        return 0;
    }
    size_t k = 0;
    if (p->dec.client[0] && p->dec.root[0]) {
        a[k++] = p->dec.client;
        a[k++] = "--root";
        a[k++] = p->dec.root;
        if (p->dec.by_command) /* the rules list every branch's commands: the client checks this one's */
            a[k++] = "--by-command";
    }
    char *f = p->dec.launcher;
    for (int i = 0; i < p->dec.nfields; i++, f += strlen(f) + 1)
        a[k++] = f;
    a[k++] = "--shim";
    a[k++] = p->resolved;
    a[k++] = p->cwd;
    a[k++] = "--";
    for (size_t i = 0; i < argc; i++)
        a[k++] = l->argv[i];
    a[k] = NULL;
    p->argv = a;
    return 0;
}

static void plan_free(struct plan *p)
{
    qp_free_env(&p->eb);
    scratch_free(&p->s_argv);
}

static void launcher_failed(const struct plan *p, int err)
{
    put_str("qpod: cannot start the launcher ");
    put_str(p->argv[0]);
    put_str(" for ");
    put_str(p->resolved);
    put_str(" (errno ");
    put_int(err);
    put_str("); run 'qpod doctor'\n");
}

/* ---------------------------------------------------------------------------------------------
 * The client in this process. A redirected exec would start the client, a program of its own:
 * on a virtual machine the C library's start alone (it asks the CPU about its caches, and each
 * question traps to the hypervisor) costs more than the rest of the client's work. When the
 * process is one the client can run in as safely as in its own (one thread, and memory of its
 * own: a fork child, or a program exec'ing itself; never a vfork child, whose memory is its
 * parent's, nor a threaded program, where another thread may hold the allocator's lock), the
 * client's code (libqpod_client.so, beside the client) is loaded here and runs instead of the
 * exec; it does first what the exec would have done (client.c, qp_client_inprocess) and never
 * returns. Anywhere else, or when it cannot be loaded, the client is exec'd as before.
 */
static int one_thread(void)
{
    char b[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, b, sizeof(b) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    b[n] = 0;
    char *p = strrchr(b, ')'); /* the name may hold anything; the fields after it do not */
    if (!p)
        return 0;
    /* num_threads is field 20; field 3 (the state) is the first after the name */
    for (int field = 2; field < 20 && p; field++)
        p = strchr(p + 1, ' ');
    return p && p[1] == '1' && p[2] == ' ';
}

static int own_memory(void)
{
    long r = syscall(SYS_kcmp, (long)getpid(), (long)getppid(), (long)KCMP_VM, 0L, 0L);
    return r > 0; /* 0: the parent's memory (vfork); -1: cannot tell */
}

__attribute__((noinline)) static void client_inprocess(const struct plan *p)
{
    static const char so_name[] = "/libqpod_client.so";
    const char *client = p->argv[0], *slash = strrchr(client, '/');
    char so[PATH_MAX];
    size_t dl = slash ? (size_t)(slash - client) : 0;
    if (!slash || dl + sizeof(so_name) > sizeof(so) || !one_thread() || !own_memory())
        return;
    memcpy(so, client, dl);
    memcpy(so + dl, so_name, sizeof(so_name));
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    void (*run)(int, char **, char **) = (void (*)(int, char **, char **))dlsym(h, "qp_client_inprocess");
    if (!run) {
        dlclose(h);
        return;
    }
    int argc = 0;
    while (p->argv[argc])
        argc++;
    run(argc, (char **)p->argv, (char **)p->envp);
}

/* ---------------------------------------------------------------------------------------------
 * Warm before the first fork. A shell launches nothing itself: each command is a fork child
 * that would look up the real exec functions (dlsym), bind each libc function the hooks call
 * (the dynamic linker's lazy binding, in every child again) and read the rules file into an
 * empty cache. So before this process's first fork the parent makes one decision that launches
 * nothing, and every child starts with all of that done; later forks only read the flag. fork
 * itself is the hook, not a pthread_atfork handler: registering one costs every process that
 * loads the library two page faults at start, and most never fork. A process that never forks
 * pays nothing; vfork children share their parent's memory and warm it themselves.
 */
static int warmed;

static void warm_before_fork(void)
{
    /* read before writing: after a fork every page of the parent is write-protected again, and
     * writing the flag at each fork would cost the parent a page fault each time */
    if (__atomic_load_n(&warmed, __ATOMIC_RELAXED) || __atomic_exchange_n(&warmed, 1, __ATOMIC_RELAXED))
        return;
    int saved = errno;
    (void)real_execve();
    (void)real_execvpe();
    char *argv[] = {(char *)"/", NULL};
    struct launch l = {K_PATH, "/", -1, 0, NULL, argv, environ};
    struct plan p;
    plan_launch(&l, &p);
    plan_free(&p);
    errno = saved;
}

EXPORT pid_t fork(void)
{
    warm_before_fork();
    fork_fn f = real_fork();
    if (!f) {
        errno = ENOSYS;
        return -1;
    }
    return f();
}

/* ---------------------------------------------------------------------------------------------
 * exec family.
 */
static int do_exec(const struct launch *l)
{
    int saved = errno;
    struct plan p;
    plan_launch(l, &p);
    int r, err;
    errno = saved;
    if (p.redirect) {
        if (p.dec.client[0] && p.dec.root[0] && p.argv[0] == p.dec.client)
            client_inprocess(&p); /* does not return when it could */
        r = real_execve()(p.argv[0], p.argv, p.envp);
        err = errno;
        launcher_failed(&p, err);
    } else {
        switch (l->kind) {
        case K_SEARCH: {
            execve_fn f = real_execvpe();
            if (!f) {
                r = -1, err = ENOSYS;
                break;
            }
            r = f(l->file, l->argv, p.envp);
            err = errno;
            break;
        }
        case K_AT: {
            execveat_fn f = real_execveat();
            if (!f) {
                r = -1, err = ENOSYS;
                break;
            }
            r = f(l->fd, l->file, l->argv, p.envp, l->flags);
            err = errno;
            break;
        }
        case K_FD:
            r = real_fexecve()(l->fd, l->argv, p.envp);
            err = errno;
            break;
        default:
            r = real_execve()(l->file, l->argv, p.envp);
            err = errno;
        }
    }
    plan_free(&p);
    errno = err;
    return r;
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    struct launch l = {K_PATH, path, -1, 0, NULL, argv, envp};
    return do_exec(&l);
}

EXPORT int execv(const char *path, char *const argv[])
{
    struct launch l = {K_PATH, path, -1, 0, NULL, argv, environ};
    return do_exec(&l);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    struct launch l = {K_SEARCH, file, -1, 0, NULL, argv, envp};
    return do_exec(&l);
}

EXPORT int execvp(const char *file, char *const argv[])
{
    struct launch l = {K_SEARCH, file, -1, 0, NULL, argv, environ};
    return do_exec(&l);
}

EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    struct launch l = {K_AT, path, dirfd, flags, NULL, argv, envp};
    return do_exec(&l);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    struct launch l = {K_FD, "", fd, 0, NULL, argv, envp};
    return do_exec(&l);
}

/* execl, execle, execlp: collect the variadic arguments (stack, or a mapping for huge lists). */
static int exec_list(int kind, const char *file, const char *arg0, va_list ap, int with_env)
{
    va_list cp;
    va_copy(cp, ap);
    size_t n = 1;
    while (va_arg(cp, char *))
        n++;
    va_end(cp);
    char *stack[STACK_PTRS];
    struct scratch sc = {0};
    char **argv = scratch_get(&sc, (n + 1) * sizeof(char *), stack, sizeof(stack));
    if (!argv) {
        errno = E2BIG;
        return -1;
    }
    argv[0] = (char *)arg0;
    for (size_t i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    argv[n] = NULL;
    (void)va_arg(ap, char *); /* the terminating NULL */
    char *const *envp = with_env ? va_arg(ap, char *const *) : environ;
    struct launch l = {kind, file, -1, 0, NULL, argv, envp};
    int r = do_exec(&l);
    int err = errno;
    scratch_free(&sc);
    errno = err;
    return r;
}

EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(K_PATH, path, arg, ap, 0);
    va_end(ap);
    return r;
}

EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(K_PATH, path, arg, ap, 1);
    va_end(ap);
    return r;
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(K_SEARCH, file, arg, ap, 0);
    va_end(ap);
    return r;
}

/* ---------------------------------------------------------------------------------------------
 * spawn family: same decision; the error comes back as the return value.
 */
static int do_spawn(const struct launch *l, void *res, int search, int pidfd,
                    const posix_spawnattr_t *attr)
{
    int saved = errno;
    struct plan p;
    plan_launch(l, &p);
    const char *exe = p.redirect ? p.argv[0] : l->file;
    int r;
    errno = saved;
    if (pidfd) {
        pidfd_spawn_fn f = search && !p.redirect ? real_pidfd_spawnp() : real_pidfd_spawn();
        r = f ? f(res, exe, l->fa, attr, p.argv, p.envp) : ENOSYS;
    } else {
        spawn_fn f = search && !p.redirect ? real_posix_spawnp() : real_posix_spawn();
        r = f ? f(res, exe, l->fa, attr, p.argv, p.envp) : ENOSYS;
    }
    if (r != 0 && p.redirect)
        launcher_failed(&p, r);
    plan_free(&p);
    errno = saved;
    return r;
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    struct launch l = {K_PATH, path, -1, 0, fa, argv, envp};
    return do_spawn(&l, pid, 0, 0, attr);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    struct launch l = {K_SEARCH, file, -1, 0, fa, argv, envp};
    return do_spawn(&l, pid, 1, 0, attr);
}

/* glibc 2.39+; on older glibc no program can call these, and the lookup finds nothing. */
EXPORT int pidfd_spawn(int *pidfd, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    struct launch l = {K_PATH, path, -1, 0, fa, argv, envp};
    return do_spawn(&l, pidfd, 0, 1, attr);
}

EXPORT int pidfd_spawnp(int *pidfd, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    struct launch l = {K_SEARCH, file, -1, 0, fa, argv, envp};
    return do_spawn(&l, pidfd, 1, 1, attr);
}

/* ---------------------------------------------------------------------------------------------
 * system and popen: glibc starts /bin/sh through an internal spawn no preload can see. The shell
 * loads this library from its environment and its own exec is hooked, so all that is needed is
 * that the environment still carries us: when the program dropped us, the environment is
 * swapped for the duration of the call (these functions are not async-signal-safe anyway).
 */
#define WITH_OUR_ENV(call)                                                                       \
    int saved = errno;                                                                           \
    struct env_scan s;                                                                           \
    struct env_build b;                                                                          \
    b.s_arr.map = b.s_ldp.map = NULL;                                                            \
    struct captured c;                                                                           \
    qp_get_captured(&c);                                                                         \
    qp_scan_env(environ, &s);                                                                    \
    char **env = s.off ? environ : (char **)qp_build_env(environ, &s, &c, &b);                   \
    char **old = environ;                                                                        \
    environ = env;                                                                               \
    errno = saved;                                                                               \
    call;                                                                                        \
    int err = errno;                                                                             \
    environ = old;                                                                               \
    qp_free_env(&b);                                                                             \
    errno = err;

EXPORT int system(const char *command)
{
    system_fn f = real_system();
    if (!f || !command)
        return f ? f(command) : -1;
    int r;
    WITH_OUR_ENV(r = f(command))
    return r;
}

EXPORT FILE *popen(const char *command, const char *type)
{
    popen_fn f = real_popen();
    if (!f) {
        errno = ENOSYS;
        return NULL;
    }
    FILE *r;
    WITH_OUR_ENV(r = f(command, type))
    return r;
}
