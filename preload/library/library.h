/* What the parts of the preload library share (qpod_preload.c, the hooks; library/env.c, the
 * environment; library/paths.c, resolving a launch; library/rules.c, the rules and the decision).
 *
 * Everything here is hidden: the library exports the hooked libc names only (build.py compiles
 * with -fvisibility=hidden; the pragma holds without it). A name shared between files starts
 * with qp_. The hook path's constraints hold for all of it: no malloc, no stdio, no locks.
 */
#ifndef QPOD_LIBRARY_H
#define QPOD_LIBRARY_H

#include <limits.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/types.h>

#pragma GCC visibility push(hidden)

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
 * Scratch memory: the stack when it fits, else an anonymous mapping (never malloc).
 */
struct scratch {
    void *map;
    size_t len;
};

static inline void *scratch_get(struct scratch *s, size_t need, void *stack, size_t stack_cap)
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

static inline void scratch_free(struct scratch *s)
{
    if (s->map)
        munmap(s->map, s->len);
    s->map = NULL;
}

/* Equal bytes. The library compares with this, never memcmp: a libc function the warm decision
 * before a fork does not call is bound lazily again in every fork child (the loader's symbol
 * lookup and its page faults at each launch of a shell; measured: 10 faults per command). */
static inline int qp_same(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--)
        if (*x++ != *y++)
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * The environment (library/env.c): what the process had at load, and keeping us in what a
 * launched program gets.
 */
enum { C_LDP, C_PRELOAD, C_RULES, C_RULES_FD, C_SHELL, C_CONFIG_DIR, C_STATE_DIR, NCAP };

extern char **qp_self_argv; /* this process's argv: is it the launcher? */

struct captured {
    const char *q[NCAP];  /* "NAME=value" entries to put back (index C_LDP unused) */
    const char *ldp;      /* the whole "LD_PRELOAD=..." entry */
    const char *our;      /* our element of it (may contain $LIB) */
    size_t our_len;
    const char *rules;    /* rules file path */
    int rules_fd;         /* qpod-shell's descriptor of the rules it started with, or -1 */
};

void qp_get_captured(struct captured *c);

struct env_scan {
    int off;               /* QPOD_OFF=1: hands off */
    long ldp_idx;          /* index of LD_PRELOAD, -1 when absent */
    int ldp_ours;
    int has_q[NCAP];
    const char *host_root;
    size_t n;
};

void qp_scan_env(char *const *envp, struct env_scan *s);

struct env_build {
    char *stack[STACK_PTRS];
    char ldp[LDP_STACK];
    struct scratch s_arr, s_ldp;
};

char *const *qp_build_env(char *const *envp, const struct env_scan *s, const struct captured *c,
                          struct env_build *b);
void qp_free_env(struct env_build *b);

/* ---------------------------------------------------------------------------------------------
 * Resolving a launch (library/paths.c): lexical paths, PATH search, the spawn file actions'
 * working directory, an interpreter's script, a symlink's target.
 */
const char *qp_base_name(const char *p, size_t n, size_t *blen);
int qp_path_join(char *out, size_t cap, const char *base, const char *rel);
int qp_fd_path(int fd, char *out, size_t cap);
int qp_runnable(const char *path);
int qp_exec_format(const char *path);
int qp_search_path(const char *file, const char *cwd, char *out, size_t cap);
int qp_spawn_cwd(const posix_spawn_file_actions_t *fa, char *cwd, size_t cap);
int qp_script_path(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap);
int qp_link_target(const char *path, char *out, size_t cap);

/* ---------------------------------------------------------------------------------------------
 * The decision (library/rules.c): the rules file, trusted and sealed, parsed from a lock-free
 * cache.
 */
struct dec_in {
    const char *path;      /* resolved program */
    const char *cwd;
    const char *name;      /* basename of path */
    size_t name_len;
    const char *host_root; /* $QPOD_HOST_ROOT of the target environment, or NULL */
    const char *script;    /* the script an interpreter runs (python3 ./waf), or NULL */
    const char *link;      /* where path leads when it is a symlink, or NULL */
    const char *cwd_else;  /* where make works when the makefile it was given (-f), which set
                            * cwd, is in no bound tree; or NULL */
};

struct dec_out {
    int redirect;
    int nfields;
    int by_command;              /* decided by the cwd's root and the command's name */
    char client[CLIENT_MAX];     /* the native-exec client, "" when the rules name none */
    char launcher[LAUNCHER_MAX]; /* fields, each NUL-terminated (the short ones first: what a
                                  * decision writes shares fewer pages) */
    char root[PATH_MAX];         /* the root that decided (the client runs its spec); set only
                                  * when redirect is */
};

int qp_decide(const char *rules_path, int rules_fd, const struct dec_in *in, struct dec_out *out);

/* workdir.c: the directory a build tool is told to work in (0: the cwd; 1: out holds it; 2: out
 * holds its makefile's directory and alt, PATH_MAX bytes, the directory it works in, for when
 * the makefile is in no bound tree), and whether this process is git starting one of its hooks
 * (those run on the host, like git) */
int qp_work_dir(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap, char *alt);
int qp_git_hook(const char *name, size_t nl);

#pragma GCC visibility pop

#endif
