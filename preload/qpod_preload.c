/* qpod preload library: sees every program launch of the processes it is loaded into and hands
 * the ones the engine's rules select to the qpod launcher; everything else goes to the real libc
 * function unchanged. See README.md for the list of hooks and why each one is there.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qpod_fnv.h"

#define EXPORT __attribute__((visibility("default")))

extern char **environ;

#define LIB_NAME "libqpod_preload.so"
/* bigger rules files are ignored (everything on the host; qpod doctor and qpod-shell say so).
 * 1 MiB is several thousand repositories; the cache is bss, so untouched pages cost nothing. */
#define RULES_MAX (1024 * 1024)
#define LAUNCHER_MAX 4096       /* the launcher fields, NUL-separated */
#define LAUNCHER_FIELDS 32
#define CLIENT_MAX 1024
#define STACK_PTRS 256          /* argv/envp arrays up to this size live on the stack */
#define LDP_STACK 2048

/* ---------------------------------------------------------------------------------------------
 * Values captured at load time (the process may clear its environment later, e.g. `env -i`).
 * The constructor only keeps pointers to the original "NAME=value" strings (unsetenv and
 * clearenv edit the pointer array, never these strings) and calls nothing: every page a
 * constructor touches is paid by every process, which is what the benchmark measures. The
 * pointers are checked again when used (a setproctitle() may have overwritten the strings).
 */
enum { C_LDP, C_PRELOAD, C_RULES, C_RULES_FD, C_SHELL, C_CONFIG_DIR, C_STATE_DIR, NCAP };
static const char *const cap_names[NCAP] = {"LD_PRELOAD=", "QPOD_PRELOAD=", "QPOD_RULES=", "QPOD_RULES_FD=",
                                            "QPOD_SHELL=", "QPOD_CONFIG_DIR=", "QPOD_STATE_DIR="};
static const char *cap_raw[NCAP];
static char **self_argv; /* this process's argv: is it the launcher? */

static inline int starts(const char *s, const char *p)
{
    while (*p)
        if (*s++ != *p++)
            return 0;
    return 1;
}

/* glibc calls constructors with (argc, argv, envp) */
__attribute__((constructor)) static void qp_init(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)envp;
    self_argv = argv;
    char **e = environ;
    if (!e)
        return;
    for (; *e; e++) {
        const char *s = *e;
        if (s[0] == 'L' && starts(s, "LD_PRELOAD=")) {
            cap_raw[C_LDP] = s;
        } else if (s[0] == 'Q' && starts(s, "QPOD_")) {
            for (int i = C_PRELOAD; i < NCAP; i++)
                if (starts(s + 5, cap_names[i] + 5)) {
                    cap_raw[i] = s;
                    break;
                }
        }
    }
}

static int has_prefix(const char *s, const char *p, size_t n) { return strncmp(s, p, n) == 0; }

static const char *base_name(const char *p, size_t n, size_t *blen)
{
    const char *b = p;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '/')
            b = p + i + 1;
    *blen = (size_t)(p + n - b);
    return b;
}

static int is_our_lib(const char *e, size_t n)
{
    size_t bl;
    const char *b = base_name(e, n, &bl);
    return bl == sizeof(LIB_NAME) - 1 && memcmp(b, LIB_NAME, bl) == 0;
}

/* Our element of an LD_PRELOAD list (glibc splits on ':' and ' '), or NULL. */
static const char *find_ours(const char *v, size_t *len)
{
    while (*v) {
        size_t n = strcspn(v, ": ");
        if (n && is_our_lib(v, n)) {
            *len = n;
            return v;
        }
        v += n;
        if (*v)
            v++;
    }
    return NULL;
}

struct captured {
    const char *q[NCAP];  /* "NAME=value" entries to put back (index C_LDP unused) */
    const char *ldp;      /* the whole "LD_PRELOAD=..." entry */
    const char *our;      /* our element of it (may contain $LIB) */
    size_t our_len;
    const char *rules;    /* rules file path */
    int rules_fd;         /* qpod-shell's descriptor of the rules it started with, or -1 */
};

static void get_captured(struct captured *c)
{
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < NCAP; i++) {
        const char *s = __atomic_load_n(&cap_raw[i], __ATOMIC_RELAXED);
        if (s && has_prefix(s, cap_names[i], strlen(cap_names[i])))
            c->q[i] = s;
    }
    if (c->q[C_LDP]) {
        c->our = find_ours(c->q[C_LDP] + 11, &c->our_len);
        if (c->our)
            c->ldp = c->q[C_LDP];
    }
    c->q[C_LDP] = NULL;
    if (c->q[C_RULES] && c->q[C_RULES][11] == '/')
        c->rules = c->q[C_RULES] + 11;
    c->rules_fd = -1;
    if (c->q[C_RULES_FD]) {
        const char *v = c->q[C_RULES_FD] + 14;
        int fd = 0;
        for (; *v >= '0' && *v <= '9' && fd < 65536; v++)
            fd = fd * 10 + (*v - '0');
        if (!*v && v != c->q[C_RULES_FD] + 14)
            c->rules_fd = fd;
    }
}

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

/* ---------------------------------------------------------------------------------------------
 * Small helpers (async-signal-safe).
 */
struct scratch {
    void *map;
    size_t len;
};

/* Stack memory when it fits, else an anonymous mapping (never malloc). */
static void *scratch_get(struct scratch *s, size_t need, void *stack, size_t stack_cap)
{
    if (need <= stack_cap)
        return stack;
    void *p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    s->map = p;
    s->len = need;
    return p;
}

static void scratch_free(struct scratch *s)
{
    if (s->map)
        munmap(s->map, s->len);
    s->map = NULL;
}

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

/* Appends the components of `s` to the absolute path out[0..*len), resolving "." and ".."
 * lexically (the launcher and the policy compare plain strings, so must we). */
static int append_components(char *out, size_t *len, size_t cap, const char *s)
{
    while (*s) {
        while (*s == '/')
            s++;
        size_t n = strcspn(s, "/");
        if (n == 0)
            break;
        if (n == 1 && s[0] == '.') {
            /* nothing */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (*len > 1 && out[*len - 1] != '/')
                (*len)--;
            if (*len > 1)
                (*len)--;
        } else {
            if (*len + (*len > 1) + n + 1 > cap)
                return -1;
            if (*len > 1)
                out[(*len)++] = '/';
            memcpy(out + *len, s, n);
            *len += n;
        }
        s += n;
    }
    out[*len] = 0;
    return 0;
}

/* out = normalised absolute path of `rel` seen from directory `base` (absolute). */
static int path_join(char *out, size_t cap, const char *base, const char *rel)
{
    size_t len = 1;
    out[0] = '/';
    out[1] = 0;
    if (rel[0] != '/' && append_components(out, &len, cap, base) < 0)
        return -1;
    return append_components(out, &len, cap, rel);
}

static int fd_path(int fd, char *out, size_t cap)
{
    char link[32] = "/proc/self/fd/";
    char num[12], *p = num + sizeof(num);
    unsigned u = (unsigned)fd;
    if (fd < 0)
        return -1;
    *--p = 0;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    memcpy(link + 14, p, strlen(p) + 1);
    ssize_t n = readlink(link, out, cap - 1);
    if (n <= 0 || out[0] != '/')
        return -1;
    out[n] = 0;
    return 0;
}

/* What execve would accept: an executable regular file. */
static int runnable(const char *path)
{
    struct stat st;
    return faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* What the kernel would run: an ELF object or a "#!" script. Anything else fails natively with
 * ENOEXEC (and a shell then runs it as a script itself, command by command): it is left to the
 * real call, so that happens here too. An unreadable file cannot be looked at: the kernel
 * decides in the container. */
static int exec_format(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return 1;
    unsigned char h[4] = {0};
    ssize_t n;
    do
        n = read(fd, h, sizeof(h));
    while (n < 0 && errno == EINTR);
    close(fd);
    return (n >= 2 && h[0] == '#' && h[1] == '!') || (n == 4 && memcmp(h, "\x7f" "ELF", 4) == 0);
}

/* PATH search as glibc's execvpe/posix_spawnp do it (the caller's PATH, default /bin:/usr/bin;
 * an empty element is the working directory). Returns -1 when nothing runnable is found: the
 * real call then fails with its own errno. */
static int search_path(const char *file, const char *cwd, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    size_t fl = strlen(file);
    char cand[PATH_MAX];
    for (;;) {
        size_t n = strcspn(path, ":");
        if (n + 1 + fl + 1 <= sizeof(cand)) {
            memcpy(cand, path, n);
            size_t k = n;
            if (k == 0)
                cand[k++] = '.';
            cand[k++] = '/';
            memcpy(cand + k, file, fl + 1);
            if (path_join(out, cap, cwd, cand) == 0 && runnable(out))
                return 0;
        }
        if (!path[n])
            return -1;
        path += n + 1;
    }
}

/* glibc's internal layout of posix_spawn_file_actions_t entries (stable since 2.29, new kinds
 * only appended): read to find the directory a spawned program will run in. */
struct qp_spawn_action {
    enum { A_CLOSE, A_DUP2, A_OPEN, A_CHDIR, A_FCHDIR, A_CLOSEFROM, A_TCSETPGRP } tag;
    union {
        struct { int fd; } close_action;
        struct { int fd; int newfd; } dup2_action;
        struct { int fd; char *path; int oflag; mode_t mode; } open_action;
        struct { char *path; } chdir_action;
        struct { int fd; } fchdir_action;
        struct { int from; } closefrom_action;
    } action;
};

static int spawn_cwd(const posix_spawn_file_actions_t *fa, char *cwd, size_t cap)
{
    if (!getcwd(cwd, cap))
        return -1;
    if (!fa || fa->__used <= 0 || fa->__used > 65536 || !fa->__actions)
        return 0;
    const struct qp_spawn_action *a = (const struct qp_spawn_action *)fa->__actions;
    char tmp[PATH_MAX];
    for (int i = 0; i < fa->__used; i++) {
        if (a[i].tag == A_CHDIR && a[i].action.chdir_action.path) {
            if (path_join(tmp, sizeof(tmp), cwd, a[i].action.chdir_action.path) < 0)
                return -1;
            memcpy(cwd, tmp, strlen(tmp) + 1);
        } else if (a[i].tag == A_FCHDIR) {
            int fd = a[i].action.fchdir_action.fd, j;
            for (j = i - 1; j >= 0; j--)   /* a directory opened by an earlier action */
                if (a[j].tag == A_OPEN && a[j].action.open_action.fd == fd && a[j].action.open_action.path)
                    break;
            if (j >= 0 ? path_join(tmp, sizeof(tmp), cwd, a[j].action.open_action.path) < 0
                       : fd_path(fd, tmp, sizeof(tmp)) < 0)
                return -1;
            memcpy(cwd, tmp, strlen(tmp) + 1);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Rules: parsing and the lock-free cache.
 */
struct dec_in {
    const char *path;      /* resolved program */
    const char *cwd;
    const char *name;      /* basename of path */
    size_t name_len;
    const char *host_root; /* $QPOD_HOST_ROOT of the target environment, or NULL */
    const char *script;    /* the script an interpreter runs (python3 ./waf), or NULL */
    const char *link;      /* where path leads when it is a symlink, or NULL */
};

struct dec_out {
    int redirect;
    int nfields;
    char launcher[LAUNCHER_MAX]; /* fields, each NUL-terminated */
    char client[CLIENT_MAX];     /* the native-exec client, "" when the rules name none */
    char root[PATH_MAX];         /* the root that decided (the client runs its spec) */
    int by_command;              /* decided by the cwd's root and the command's name */
};

static int within(const char *path, const char *root, size_t rl)
{
    if (rl == 1)
        return path[0] == '/';
    return strncmp(path, root, rl) == 0 && (path[rl] == 0 || path[rl] == '/');
}

/* path (within a root of length rl) is in the root's .git: git's machinery, not the repository's */
static int in_git_dir(const char *path, size_t rl)
{
    const char *rest = rl == 1 ? path : path + rl;
    return strncmp(rest, "/.git", 5) == 0 && (rest[5] == 0 || rest[5] == '/');
}

static int same(const char *s, const char *p, size_t n)
{
    return s && strncmp(s, p, n) == 0 && s[n] == 0;
}

/* Reads buf (possibly being rewritten by another thread: every access stays inside
 * buf[0..len), the caller validates with the sequence counter). Returns -1 for a file that is
 * not a version-1 rules file. */
static int parse_rules(const char *buf, size_t len, const struct dec_in *in, struct dec_out *out)
{
    static const char header[] = "qpod-rules\t1\n";
    if (len < sizeof(header) - 1 || memcmp(buf, header, sizeof(header) - 1) != 0)
        return -1;
    const char *p = buf + sizeof(header) - 1, *end = buf + len;
    long home_len = -1, cwd_len = -1, git_len = -1, script_len = -1, script_git_len = -1;
    int script_host = 0, path_in_root = 0, link_in_root = 0;
    const char *script_root = NULL;
    int home_host = 0, cwd_host = 0, cwd_named = 0;
    const char *home_root = NULL, *cwd_root = NULL;
    out->nfields = 0;
    out->client[0] = 0;
    while (p < end) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le)
            le = end;
        const char *t = memchr(p, '\t', (size_t)(le - p));
        if (!t)
            t = le;
        size_t kl = (size_t)(t - p);
        if (kl == 8 && memcmp(p, "launcher", 8) == 0) {
            size_t used = 0;
            int nf = 0;
            for (const char *f = t; f < le && nf >= 0;) {
                f++;
                const char *fe = memchr(f, '\t', (size_t)(le - f));
                if (!fe)
                    fe = le;
                size_t fl = (size_t)(fe - f);
                if (used + fl + 1 > LAUNCHER_MAX || nf >= LAUNCHER_FIELDS) {
                    nf = -1;
                    break;
                }
                memcpy(out->launcher + used, f, fl);
                out->launcher[used + fl] = 0;
                used += fl + 1;
                nf++;
                f = fe;
            }
            out->nfields = nf > 0 && out->launcher[0] == '/' ? nf : 0;
        } else if (kl == 6 && memcmp(p, "client", 6) == 0 && t < le) {
            size_t cl = (size_t)(le - t - 1);
            if (cl < CLIENT_MAX && t[1] == '/') {
                memcpy(out->client, t + 1, cl);
                out->client[cl] = 0;
            }
        } else if (kl == 4 && memcmp(p, "root", 4) == 0 && t < le) {
            const char *r = t + 1;
            const char *re = memchr(r, '\t', (size_t)(le - r));
            if (!re)
                re = le;
            size_t rl = (size_t)(re - r);
            if (rl > 0 && rl < PATH_MAX && r[0] == '/') {
                path_in_root |= in->path && within(in->path, r, rl);
                link_in_root |= in->link && within(in->link, r, rl);
                if (in->path && within(in->path, r, rl) && in_git_dir(in->path, rl)) {
                    if ((long)rl > git_len)
                        git_len = (long)rl;
                }
                if (in->script && within(in->script, r, rl)) {
                    if (in_git_dir(in->script, rl)) {
                        if ((long)rl > script_git_len)
                            script_git_len = (long)rl;
                    } else if ((long)rl > script_len) {
                        script_len = (long)rl;
                        script_root = r;
                        script_host = same(in->host_root, r, rl);
                    }
                }
                if (in->path && within(in->path, r, rl) && !in_git_dir(in->path, rl) && (long)rl > home_len) {
                    home_len = (long)rl;
                    home_root = r;
                    home_host = same(in->host_root, r, rl);
                }
                if (within(in->cwd, r, rl) && (long)rl > cwd_len) {
                    cwd_len = (long)rl;
                    cwd_root = r;
                    cwd_host = same(in->host_root, r, rl);
                    cwd_named = 0;
                    for (const char *f = re; f < le && !cwd_named;) {
                        f++;
                        const char *fe = memchr(f, '\t', (size_t)(le - f));
                        if (!fe)
                            fe = le;
                        cwd_named = (size_t)(fe - f) == in->name_len && memcmp(f, in->name, in->name_len) == 0;
                        f = fe;
                    }
                }
            }
        }
        p = le + 1;
    }
    /* the program's own repository wins (unless the innermost root holding it keeps it in its
     * .git: git's machinery); else the innermost repository around the cwd, for a command on its
     * list; never the repository the launcher just sent back to the host */
    if (git_len > home_len)
        home_len = -1;
    if (in->link && !link_in_root)
        home_len = -1; /* a link to a host program (a venv's bin/python3) is the host's */
    if (script_git_len > script_len || path_in_root)
        script_len = -1; /* only a host interpreter runs where its script lives */
    if (home_len < 0 && script_len >= 0) { /* no program of a repository: the script's, if any */
        home_len = script_len;
        home_root = script_root;
        home_host = script_host;
    }
    out->by_command = home_len < 0;
    if (home_len >= 0)
        out->redirect = !home_host;
    else
        out->redirect = cwd_len >= 0 && cwd_named && !cwd_host;
    const char *won = home_len >= 0 ? home_root : cwd_root;
    size_t wl = (size_t)(home_len >= 0 ? home_len : cwd_len);
    if (out->redirect && won && wl < PATH_MAX) {
        memcpy(out->root, won, wl);
        out->root[wl] = 0;
    } else {
        out->root[0] = 0;
    }
    if (out->nfields == 0)
        out->redirect = 0;
    return 0;
}

static struct {
    unsigned seq; /* odd while a writer fills the cache */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    size_t len;
    int valid; /* data holds rules that passed rules_ok (and, being read, the file checks) */
    char data[RULES_MAX];
} cache;

static int cache_matches(const struct stat *st)
{
    return cache.valid && cache.dev == st->st_dev && cache.ino == st->st_ino && cache.size == st->st_size &&
           cache.mtime.tv_sec == st->st_mtim.tv_sec && cache.mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return got < cap ? (ssize_t)got : -1; /* a full buffer means too big */
}

/* Trust. The rules choose the program that runs for the user's commands, so they are used only
 * from a regular file of the effective user that nobody else may write, in a directory (the
 * state dir) of that user that nobody else may write either: another user's file, or one in a
 * directory another user could swap, is not rules. */
static int owned_closed(const struct stat *st, int dir)
{
    return (dir ? S_ISDIR(st->st_mode) : S_ISREG(st->st_mode)) && st->st_uid == geteuid() &&
           !(st->st_mode & (S_IWGRP | S_IWOTH));
}

static int dir_owned_closed(const char *path)
{
    const char *slash = strrchr(path, '/');
    char d[PATH_MAX];
    size_t dl = slash == path ? 1 : (size_t)(slash - path);
    if (!slash || dl >= sizeof(d))
        return 0;
    memcpy(d, path, dl);
    d[dl] = 0;
    struct stat st;
    return stat(d, &st) == 0 && owned_closed(&st, 1);
}

/* Integrity: version-1 rules whose last line, `sum\t<16 hex digits>`, is the 64-bit FNV-1a of
 * every byte before it (a truncated, corrupted or hand-edited file is not rules). buf must not
 * change while this runs: a private copy, or the cache while this thread fills it. */
#define SUM_LINE 21 /* "sum\t", 16 lowercase hex digits, "\n" */
static int rules_ok(const char *buf, size_t len)
{
    static const char header[] = "qpod-rules\t1\n", hex[] = "0123456789abcdef";
    if (len < sizeof(header) - 1 + SUM_LINE || memcmp(buf, header, sizeof(header) - 1) != 0)
        return 0;
    const char *s = buf + len - SUM_LINE;
    if (s[-1] != '\n' || memcmp(s, "sum\t", 4) != 0 || s[SUM_LINE - 1] != '\n')
        return 0;
    uint64_t h = qp_fnv1a(buf, (size_t)(s - buf));
    for (int i = 15; i >= 0; i--, h >>= 4)
        if (s[4 + i] != hex[h & 15])
            return 0;
    return 1;
}

/* Reads the whole file fd into a private mapping (pread: the descriptor may be shared with other
 * processes, qpod-shell's, its offset too) and decides from it when it holds good rules. With
 * keep, good rules also replace the cache (unless another thread is filling it). Returns 0 with
 * out filled, -1 when the file holds no good rules. */
static int decide_private(int fd, const struct stat *fst, int keep, const struct dec_in *in, struct dec_out *out)
{
    struct scratch sc = {0};
    char *buf = scratch_get(&sc, RULES_MAX, NULL, 0);
    ssize_t n = -1;
    if (buf) {
        size_t got = 0;
        while (got < RULES_MAX) {
            ssize_t k = pread(fd, buf + got, RULES_MAX - got, (off_t)got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        n = got < RULES_MAX ? (ssize_t)got : -1;
    }
    int r = n > 0 && rules_ok(buf, (size_t)n) ? parse_rules(buf, (size_t)n, in, out) : -1;
    unsigned s1 = __atomic_load_n(&cache.seq, __ATOMIC_ACQUIRE);
    if (r == 0 && keep && !(s1 & 1) &&
        __atomic_compare_exchange_n(&cache.seq, &s1, s1 + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        __atomic_thread_fence(__ATOMIC_RELEASE);
        memcpy(cache.data, buf, (size_t)n);
        cache.dev = fst->st_dev;
        cache.ino = fst->st_ino;
        cache.size = fst->st_size;
        cache.mtime = fst->st_mtim;
        cache.len = (size_t)n;
        cache.valid = 1;
        __atomic_store_n(&cache.seq, s1 + 2, __ATOMIC_RELEASE);
    }
    scratch_free(&sc);
    return r;
}

/* When the rules file is gone or unusable (corrupt, unsealed, another user's, open to others, in
 * a directory that is): the rules qpod-shell holds open (QPOD_RULES_FD) if they pass the same
 * checks (but their directory's: it may be gone, which is when they are needed), else the last
 * good rules this process read. So bound repositories stay claimed and their builds go to the
 * launcher (which recompiles, or fails with 125), never to the host. -1 when neither exists: the
 * real function, without a word (the library never prints about its rules; qpod-shell does). */
static int decide_fallback(int rules_fd, const struct dec_in *in, struct dec_out *out)
{
    struct stat st;
    if (rules_fd >= 0 && fstat(rules_fd, &st) == 0 && owned_closed(&st, 0) && st.st_size < RULES_MAX &&
        decide_private(rules_fd, &st, 0, in, out) == 0)
        return 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned s1 = __atomic_load_n(&cache.seq, __ATOMIC_ACQUIRE);
        if (s1 & 1 || !cache.valid)
            return -1;
        size_t len = cache.len < RULES_MAX ? cache.len : RULES_MAX;
        int r = parse_rules(cache.data, len, in, out);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&cache.seq, __ATOMIC_RELAXED) == s1)
            return r;
    }
    return -1;
}

/* Decides from the rules file (trusted and sealed, see above), else decide_fallback. Returns 0
 * with out filled, -1 when there are no usable rules: everything runs on the host. The common
 * case is one stat of the file and one of its directory per launch, the rules parsed from the
 * cache. */
static int decide(const char *rules_path, int rules_fd, const struct dec_in *in, struct dec_out *out)
{
    struct stat st;
    if (stat(rules_path, &st) < 0 || !owned_closed(&st, 0) || st.st_size >= RULES_MAX ||
        !dir_owned_closed(rules_path))
        return decide_fallback(rules_fd, in, out);
    int fd = -1, r = -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned s1 = __atomic_load_n(&cache.seq, __ATOMIC_ACQUIRE);
        if (!(s1 & 1) && cache_matches(&st)) {
            size_t len = cache.len < RULES_MAX ? cache.len : RULES_MAX;
            r = parse_rules(cache.data, len, in, out);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&cache.seq, __ATOMIC_RELAXED) == s1)
                goto done;
            continue;
        }
        if (fd < 0 && (fd = open(rules_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
            return decide_fallback(rules_fd, in, out);
        struct stat fst;
        if (fstat(fd, &fst) < 0 || !owned_closed(&fst, 0) || fst.st_size >= RULES_MAX) {
            close(fd);
            return decide_fallback(rules_fd, in, out);
        }
        /* the cache holds good rules (older ones): read privately, so that bad new ones leave
         * them in place for decide_fallback */
        if (cache.valid)
            break;
        if (s1 & 1 || !__atomic_compare_exchange_n(&cache.seq, &s1, s1 + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            break; /* another thread is filling the cache (or died doing so before a fork) */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        ssize_t n = lseek(fd, 0, SEEK_SET) == 0 ? read_all(fd, cache.data, RULES_MAX) : -1;
        int good = n > 0 && rules_ok(cache.data, (size_t)n);
        cache.dev = fst.st_dev;
        cache.ino = fst.st_ino;
        cache.size = fst.st_size;
        cache.mtime = fst.st_mtim;
        cache.len = good ? (size_t)n : 0;
        cache.valid = good;
        __atomic_store_n(&cache.seq, s1 + 2, __ATOMIC_RELEASE);
        if (!good) {
            close(fd);
            return decide_fallback(rules_fd, in, out);
        }
        st = fst; /* now read it through the cache */
    }
    if (fd < 0 && (fd = open(rules_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return decide_fallback(rules_fd, in, out);
    struct stat fst;
    r = fstat(fd, &fst) == 0 && owned_closed(&fst, 0) ? decide_private(fd, &fst, 1, in, out) : -1;
    if (r < 0) {
        close(fd);
        return decide_fallback(rules_fd, in, out);
    }
done:
    if (fd >= 0)
        close(fd);
    return r;
}

/* ---------------------------------------------------------------------------------------------
 * Environment: keeping ourselves in it.
 */
struct env_scan {
    int off;               /* QPOD_OFF=1: hands off */
    long ldp_idx;          /* index of LD_PRELOAD, -1 when absent */
    int ldp_ours;
    int has_q[NCAP];
    const char *host_root;
    size_t n;
};

static void scan_env(char *const *envp, struct env_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->ldp_idx = -1;
    if (!envp)
        return;
    for (size_t i = 0; envp[i]; i++, s->n++) {
        const char *e = envp[i];
        if (e[0] == 'L' && has_prefix(e, "LD_PRELOAD=", 11)) {
            s->ldp_idx = (long)i;
            size_t l;
            s->ldp_ours = find_ours(e + 11, &l) != NULL;
        } else if (e[0] == 'Q' && has_prefix(e, "QPOD_", 5)) {
            if (strcmp(e + 5, "OFF=1") == 0)
                s->off = 1;
            else if (has_prefix(e + 5, "HOST_ROOT=", 10))
                s->host_root = e + 15;
            else
                for (int q = C_PRELOAD; q < NCAP; q++)
                    if (has_prefix(e, cap_names[q], strlen(cap_names[q])))
                        s->has_q[q] = 1;
        }
    }
}

struct env_build {
    char *stack[STACK_PTRS];
    char ldp[LDP_STACK];
    struct scratch s_arr, s_ldp;
};

/* The environment the launched program gets: envp itself, or a copy with the qpod variables
 * that were dropped put back (LD_PRELOAD: ours first, the others in their order). */
static char *const *build_env(char *const *envp, const struct env_scan *s, const struct captured *c,
                              struct env_build *b)
{
    int add_ldp = c->ldp && s->ldp_idx < 0;
    int fix_ldp = c->our && s->ldp_idx >= 0 && !s->ldp_ours;
    int missing = 0;
    for (int q = 0; q < NCAP; q++)
        missing += c->q[q] && !s->has_q[q];
    if (!add_ldp && !fix_ldp && !missing)
        return envp;
    char **out = scratch_get(&b->s_arr, (s->n + NCAP + 2) * sizeof(char *), b->stack, sizeof(b->stack));
    if (!out)
        return envp;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        out[k++] = envp[i];
    if (fix_ldp) {
        const char *old = envp[s->ldp_idx] + 11;
        size_t need = 11 + c->our_len + 1 + strlen(old) + 1;
        char *v = scratch_get(&b->s_ldp, need, b->ldp, sizeof(b->ldp));
        if (v) {
            memcpy(v, "LD_PRELOAD=", 11);
            memcpy(v + 11, c->our, c->our_len);
            v[11 + c->our_len] = *old ? ':' : 0;
            memcpy(v + 12 + c->our_len, old, strlen(old) + 1);
            out[s->ldp_idx] = v;
        }
    }
    if (add_ldp)
        out[k++] = (char *)c->ldp;
    for (int q = 0; q < NCAP; q++)
        if (c->q[q] && !s->has_q[q])
            out[k++] = (char *)c->q[q];
    out[k] = NULL;
    return out;
}

static void free_env(struct env_build *b)
{
    scratch_free(&b->s_arr);
    scratch_free(&b->s_ldp);
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

/* Interpreters whose first operand is a script run where the script lives (the same rule as
 * qpod_engine/policy.py script_of): shells, and python/perl/ruby/lua/php with any version suffix. */
static int name_is(const char *n, size_t l, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == l && memcmp(*list, n, l) == 0)
            return 1;
    return 0;
}

static const char *const shells[] = {"sh", "bash", "dash", "zsh", "ksh", "mksh", NULL};
static const char *const interpreters[] = {"python", "perl", "ruby", "tclsh", "wish", "node", "php", "lua", NULL};

static int script_path(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap)
{
    int shell = name_is(name, nl, shells);
    size_t k = nl;
    while (k && ((name[k - 1] >= '0' && name[k - 1] <= '9') || name[k - 1] == '.'))
        k--;
    if (!argv || !argv[0] || !(shell || name_is(name, k, interpreters)))
        return -1;
    size_t i = 1;
    for (; argv[i]; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] == '-' || (shell && a[0] == '+')) {
            if (shell ? a[0] == '-' && a[1] != '-' && strchr(a + 1, 'c') != NULL
                      : !strcmp(a, "-c") || !strcmp(a, "-m") || !strcmp(a, "-e") || !strcmp(a, "-E"))
                return -1; /* a command string, not a script */
            continue;
        }
        break;
    }
    struct stat st;
    if (!argv[i] || !argv[i][0] || path_join(out, cap, cwd, argv[i]) < 0)
        return -1;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
}

/* Where path leads when it is a symlink: its last component followed to the end (the same as
 * qpod_engine/policy.py link_target). 0 with out filled, -1 when it is no symlink. */
static int link_target(const char *path, char *out, size_t cap)
{
    char cur[PATH_MAX], buf[PATH_MAX];
    size_t l = strlen(path);
    if (l >= sizeof(cur))
        return -1;
    memcpy(cur, path, l + 1);
    int hops = 0;
    for (; hops < 40; hops++) {
        ssize_t n = readlink(cur, buf, sizeof(buf) - 1);
        if (n < 0)
            break;
        buf[n] = 0;
        char *slash = strrchr(cur, '/');
        if (slash)
            *slash = 0;
        if (path_join(out, cap, slash && cur[0] ? cur : "/", buf) < 0)
            return -1;
        l = strlen(out);
        if (l >= sizeof(cur))
            return -1;
        memcpy(cur, out, l + 1);
    }
    return hops ? 0 : -1;
}

struct plan {
    int off;
    int redirect;
    char *const *envp;
    char *const *argv;
    struct env_build eb;
    struct scratch s_argv;
    char *argv_stack[STACK_PTRS];
    char cwd[PATH_MAX];
    char resolved[PATH_MAX];
    char script[PATH_MAX];
    char link[PATH_MAX];
    struct dec_out dec;
};

static int resolve(const struct launch *l, const char *cwd, char *out, size_t cap)
{
    switch (l->kind) {
    case K_SEARCH:
        if (!l->file[0])
            return -1;
        if (!strchr(l->file, '/'))
            return search_path(l->file, cwd, out, cap);
        /* fall through */
    case K_PATH:
        if (!l->file[0])
            return -1;
        return path_join(out, cap, cwd, l->file);
    case K_AT: {
        char dir[PATH_MAX];
        if (l->file[0] == '/')
            return path_join(out, cap, "/", l->file);
        if (!l->file[0] && (l->flags & AT_EMPTY_PATH))
            return fd_path(l->fd, out, cap);
        if (l->fd == AT_FDCWD)
            return path_join(out, cap, cwd, l->file);
        if (fd_path(l->fd, dir, sizeof(dir)) < 0)
            return -1;
        return path_join(out, cap, dir, l->file);
    }
    case K_FD:
        return fd_path(l->fd, out, cap);
    }
    return -1;
}

/* True in the launcher itself when it runs `path` on the host: its own argv is
 * <launcher fields> --shim <path> ... . Whatever QPOD_HOST_ROOT says, that exec must not come
 * back to the launcher (it would loop forever). */
static int launcher_runs_it(const struct dec_out *d, const char *path)
{
    char **a = self_argv;
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
    scan_env(l->envp, &s);
    p->off = s.off;
    p->redirect = 0;
    p->envp = l->envp;
    p->argv = l->argv;
    p->eb.s_arr.map = p->eb.s_ldp.map = p->s_argv.map = NULL;
    if (s.off || (l->kind != K_FD && !l->file))
        return 0; /* a NULL program fails in the real call (EFAULT), as without qpod */
    struct captured c;
    get_captured(&c);
    if (c.rules && spawn_cwd(l->fa, p->cwd, sizeof(p->cwd)) == 0 &&
        resolve(l, p->cwd, p->resolved, sizeof(p->resolved)) == 0) {
        struct dec_in in = {p->resolved, p->cwd, NULL, 0, s.host_root, NULL, NULL};
        if (link_target(p->resolved, p->link, sizeof(p->link)) == 0)
            in.link = p->link;
        in.name = base_name(p->resolved, strlen(p->resolved), &in.name_len);
        if (script_path(in.name, in.name_len, l->argv, p->cwd, p->script, sizeof(p->script)) == 0)
            in.script = p->script;
        /* a program that cannot run stays with the real call, which fails as it always would */
        p->redirect = decide(c.rules, c.rules_fd, &in, &p->dec) == 0 && p->dec.redirect &&
                      (l->kind == K_SEARCH && !strchr(l->file, '/') ? 1 : runnable(p->resolved)) &&
                      exec_format(p->resolved) &&
                      !launcher_runs_it(&p->dec, p->resolved);
    }
    p->envp = build_env(l->envp, &s, &c, &p->eb);
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
    free_env(&p->eb);
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
    get_captured(&c);                                                                            \
    scan_env(environ, &s);                                                                       \
    char **env = s.off ? environ : (char **)build_env(environ, &s, &c, &b);                      \
    char **old = environ;                                                                        \
    environ = env;                                                                               \
    errno = saved;                                                                               \
    call;                                                                                        \
    int err = errno;                                                                             \
    environ = old;                                                                               \
    free_env(&b);                                                                                \
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
