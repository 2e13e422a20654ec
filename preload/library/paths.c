/* Resolving what a launch runs, as the real call would (preload library; the hook path's
 * constraints hold): lexical paths, the PATH search of execvp and posix_spawnp, the working
 * directory the spawn file actions give, the script an interpreter runs, a symlink's target.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "library.h"

/* The last component of p[0..n) and its length. */
const char *qp_base_name(const char *p, size_t n, size_t *blen)
{
    const char *b = p;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '/')
            b = p + i + 1;
    *blen = (size_t)(p + n - b);
    return b;
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
int qp_path_join(char *out, size_t cap, const char *base, const char *rel)
{
    size_t len = 1;
    out[0] = '/';
    out[1] = 0;
    if (rel[0] != '/' && append_components(out, &len, cap, base) < 0)
        return -1;
    return append_components(out, &len, cap, rel);
}

int qp_fd_path(int fd, char *out, size_t cap)
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
int qp_runnable(const char *path)
{
    struct stat st;
    return faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* What the kernel would run: an ELF object or a "#!" script. Anything else fails natively with
 * ENOEXEC (and a shell then runs it as a script itself, command by command): it is left to the
 * real call, so that happens here too. An unreadable file cannot be looked at: the kernel
 * decides in the container. */
int qp_exec_format(const char *path)
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
    return (n >= 2 && h[0] == '#' && h[1] == '!') || (n == 4 && qp_same(h, "\x7f" "ELF", 4));
}

/* PATH search as glibc's execvpe/posix_spawnp do it (the caller's PATH, default /bin:/usr/bin;
 * an empty element is the working directory). Returns -1 when nothing runnable is found: the
 * real call then fails with its own errno. */
int qp_search_path(const char *file, const char *cwd, char *out, size_t cap)
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
            if (qp_path_join(out, cap, cwd, cand) == 0 && qp_runnable(out))
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

/* The directory a spawned program will run in: the caller's, changed by the file actions'
 * chdir and fchdir in their order. */
/* (out of line, as the other paths with PATH_MAX buffers here: a call made from a frame holding
 * one writes its return address a page below the caller's, a page fault in every fork child) */
__attribute__((noinline)) static int apply_chdirs(const posix_spawn_file_actions_t *fa, char *cwd)
{
    const struct qp_spawn_action *a = (const struct qp_spawn_action *)fa->__actions;
    char tmp[PATH_MAX];
    for (int i = 0; i < fa->__used; i++) {
        if (a[i].tag == A_CHDIR && a[i].action.chdir_action.path) {
            if (qp_path_join(tmp, sizeof(tmp), cwd, a[i].action.chdir_action.path) < 0)
                return -1;
            memcpy(cwd, tmp, strlen(tmp) + 1);
        } else if (a[i].tag == A_FCHDIR) {
            int fd = a[i].action.fchdir_action.fd, j;
            for (j = i - 1; j >= 0; j--)   /* a directory opened by an earlier action */
                if (a[j].tag == A_OPEN && a[j].action.open_action.fd == fd && a[j].action.open_action.path)
                    break;
            if (j >= 0 ? qp_path_join(tmp, sizeof(tmp), cwd, a[j].action.open_action.path) < 0
                       : qp_fd_path(fd, tmp, sizeof(tmp)) < 0)
                return -1;
            memcpy(cwd, tmp, strlen(tmp) + 1);
        }
    }
    return 0;
}

int qp_spawn_cwd(const posix_spawn_file_actions_t *fa, char *cwd, size_t cap)
{
    if (!getcwd(cwd, cap))
        return -1;
    if (!fa || fa->__used <= 0 || fa->__used > 65536 || !fa->__actions)
        return 0;
    return cap >= PATH_MAX ? apply_chdirs(fa, cwd) : -1;
}

/* Interpreters whose first operand is a script run where the script lives (the same rule as
 * qpod_engine/routing/policy.py script_of): shells, and python/perl/ruby/lua/php with any version suffix. */
static int name_is(const char *n, size_t l, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == l && qp_same(*list, n, l))
            return 1;
    return 0;
}

static const char *const shells[] = {"sh", "bash", "dash", "zsh", "ksh", "mksh", NULL};
static const char *const interpreters[] = {"python", "perl", "ruby", "tclsh", "wish", "node", "php", "lua", NULL};

int qp_script_path(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap)
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
    if (!argv[i] || !argv[i][0] || qp_path_join(out, cap, cwd, argv[i]) < 0)
        return -1;
    return stat(out, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
}

/* Where path leads when it is a symlink: its last component followed to the end (the same as
 * qpod_engine/routing/policy.py link_target). 0 with out filled, -1 when it is no symlink. */
__attribute__((noinline)) static int follow_links(const char *path, const char *first, char *out, size_t cap)
{
    char cur[PATH_MAX], buf[PATH_MAX];
    size_t l = strlen(path), fl = strlen(first);
    if (l >= sizeof(cur) || fl >= sizeof(buf))
        return -1;
    memcpy(cur, path, l + 1);
    memcpy(buf, first, fl + 1);
    for (int hops = 0; hops < 40; hops++) {
        char *slash = strrchr(cur, '/');
        if (slash)
            *slash = 0;
        if (qp_path_join(out, cap, slash && cur[0] ? cur : "/", buf) < 0)
            return -1;
        l = strlen(out);
        if (l >= sizeof(cur))
            return -1;
        memcpy(cur, out, l + 1);
        ssize_t n = readlink(cur, buf, sizeof(buf) - 1);
        if (n < 0)
            return 0;
        buf[n] = 0;
    }
    return 0; /* (40 links: where the last one led) */
}

int qp_link_target(const char *path, char *out, size_t cap)
{
    /* most programs are no symlink: asked straight into out, from a small frame */
    ssize_t n = cap > 1 ? readlink(path, out, cap - 1) : -1;
    if (n < 0)
        return -1;
    out[n] = 0;
    return follow_links(path, out, out, cap);
}
