/* Which directory a launch is routed by, and git's hooks: the C twin of
 * qpod_engine/routing/policy.py work_dirs() and runs_on_host(). Hook path rules apply: no malloc,
 * no stdio, the caller's buffers only. */
#include "library.h"

#include <string.h>

static int eq(const char *s, const char *lit) { return s && strcmp(s, lit) == 0; }
static int named(const char *n, size_t l, const char *lit) { return strlen(lit) == l && qp_same(n, lit, l); }
static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* the value of option `opt` at argv[*i] ("-C DIR", "--directory=DIR", "-CDIR"), or NULL; *i is
 * moved past a separate value */
static const char *value_of(char *const *argv, int *i, const char *opt)
{
    const char *a = argv[*i];
    size_t ol = strlen(opt);
    if (strcmp(a, opt) == 0)
        return argv[*i + 1] ? argv[++*i] : NULL;
    if (opt[1] == '-' && strncmp(a, opt, ol) == 0 && a[ol] == '=')
        return a + ol + 1;
    if (opt[1] != '-' && strncmp(a, opt, ol) == 0 && a[ol])
        return a + ol;
    return NULL;
}

/* make -C / -f (gmake too), ninja -C, cmake --build, ctest --test-dir: the directory each
 * names, applied in turn from cwd. 0 when none was named; 1: out holds it; 2: a makefile named
 * out, and alt the directory make works in (cwd and its -C only) */
static int dir_options(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap,
                       char *alt)
{
    static const char *const make_dir[] = {"-C", "--directory", NULL}, *const make_file[] = {"-f", "--file",
                                                                                               "--makefile", NULL};
    static const char *const ninja_dir[] = {"-C", NULL}, *const cmake_dir[] = {"--build", NULL},
                             *const ctest_dir[] = {"--test-dir", NULL}, *const none[] = {NULL};
    int is_make = named(name, nl, "make") || named(name, nl, "gmake");
    const char *const *dirs = is_make                      ? make_dir
                              : named(name, nl, "ninja")   ? ninja_dir
                              : named(name, nl, "cmake")   ? cmake_dir
                              : named(name, nl, "ctest")   ? ctest_dir
                                                           : NULL;
    const char *const *files = is_make ? make_file : none;
    if (!dirs)
        return 0;
    char where[PATH_MAX], next[PATH_MAX], wd[PATH_MAX]; /* wd: make's own directory (-C only) */
    size_t cl = strlen(cwd);
    if (cl >= sizeof(where))
        return 0;
    memcpy(where, cwd, cl + 1);
    memcpy(wd, cwd, cl + 1);
    int moved = 0, by_file = 0;
    for (int i = 1; argv[i] && !eq(argv[i], "--"); i++) {
        const char *v = NULL;
        int is_file = 0;
        for (int k = 0; dirs[k] && !v; k++)
            v = value_of(argv, &i, dirs[k]);
        for (int k = 0; files[k] && !v; k++)
            if ((v = value_of(argv, &i, files[k])))
                is_file = 1;
        if (!v || !*v || qp_path_join(next, sizeof(next), where, v) < 0)
            continue;
        if (is_file) { /* the makefile's own directory */
            char *slash = strrchr(next, '/');
            if (slash && slash != next)
                *slash = 0;
            else if (slash)
                slash[1] = 0;
        } else {
            char to[PATH_MAX];
            if (qp_path_join(to, sizeof(to), wd, v) < 0)
                return 0;
            memcpy(wd, to, strlen(to) + 1);
        }
        memcpy(where, next, strlen(next) + 1);
        moved = 1;
        by_file |= is_file;
    }
    if (!moved || strlen(where) >= cap)
        return 0;
    memcpy(out, where, strlen(where) + 1);
    if (!by_file || strcmp(wd, where) == 0)
        return 1;
    memcpy(alt, wd, strlen(wd) + 1);
    return 2;
}

/* cmake's configure step (not --build, -E, -P, ...) and meson setup: the source tree named
 * (cmake -S SRC or its first operand, meson setup BUILD SRC) */
static const char *configure_source(const char *name, size_t nl, char *const *argv)
{
    static const char *const valued[] = {"-B", "-S", "-C", "-D", "-U", "-G", "-T", "-A", "--preset",
                                         "--toolchain", "--install-prefix", "--graphviz", "--log-level",
                                         "--log-context", NULL};
    if (named(name, nl, "cmake") && argv[1]) {
        static const char *const not_configure[] = {"--build", "--install", "--open", "-E", "-P", "--help",
                                                    "--version", NULL};
        for (int k = 0; not_configure[k]; k++)
            if (starts(argv[1], not_configure[k]))
                return NULL;
        const char *src = NULL;
        for (int i = 1; argv[i]; i++) {
            const char *a = argv[i];
            if ((eq(a, "-S") || eq(a, "-B")) && argv[i + 1]) {
                if (a[1] == 'S')
                    src = argv[i + 1];
                i++;
                continue;
            }
            if ((starts(a, "-S") || starts(a, "-B")) && a[2]) {
                if (a[1] == 'S')
                    src = a + 2;
                continue;
            }
            int takes = 0;
            for (int k = 0; valued[k] && !takes; k++)
                takes = eq(a, valued[k]);
            if (takes) {
                if (argv[i + 1])
                    i++;
            } else if (a[0] != '-' && !src) {
                src = a;
            }
        }
        return src;
    }
    if (named(name, nl, "meson") && eq(argv[1], "setup")) {
        int words = 0;
        for (int i = 2; argv[i]; i++)
            if (argv[i][0] != '-' && ++words == 2)
                return argv[i];
    }
    return NULL;
}

int qp_work_dir(const char *name, size_t nl, char *const *argv, const char *cwd, char *out, size_t cap, char *alt)
{
    if (!argv || !argv[0])
        return 0;
    const char *src = configure_source(name, nl, argv);
    if (src)
        return *src && qp_path_join(out, cap, cwd, src) == 0;
    if (named(name, nl, "cmake") && argv[1] && !starts(argv[1], "--build"))
        return 0;
    return dir_options(name, nl, argv, cwd, out, cap, alt);
}

int qp_git_hook(const char *name, size_t nl)
{
    static const char *const hooks[] = {
        "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
        "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
        "pre-push", "pre-receive", "update", "proc-receive", "post-receive", "post-update",
        "reference-transaction", "push-to-checkout", "pre-auto-gc", "post-rewrite", "sendemail-validate",
        "fsmonitor-watchman", "p4-changelist", "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit",
        "post-index-change", NULL};
    char **self = qp_self_argv;
    if (!self || !self[0])
        return 0;
    size_t cl;
    const char *caller = qp_base_name(self[0], strlen(self[0]), &cl);
    if (!(named(caller, cl, "git") || (cl > 4 && qp_same(caller, "git-", 4))))
        return 0;
    for (int k = 0; hooks[k]; k++)
        if (named(name, nl, hooks[k]))
            return 1;
    return 0;
}
