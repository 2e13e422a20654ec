/* qpod-client: runs one redirected command in its warm container through the container's agent,
 * handing over the caller's own file descriptors, and stays as the command's stand-in on the
 * host: it forwards signals, stops when the command stops (so the shell's job control works),
 * writes the command log's start and end records, and exits with the command's status.
 *
 *   qpod-client --root ROOT LAUNCHER... --shim PATH CWD -- ARGV...
 *       from the preload library: the launch spec the launcher wrote for ROOT is used when it
 *       is current (config files, branch and container unchanged); anything else execs
 *       LAUNCHER... --shim PATH CWD -- ARGV... (the Python launcher), which prepares the
 *       container and comes back here with --spec.
 *   qpod-client --spec FILE [--reason TEXT] [--tty|--no-tty] --shim PATH CWD -- ARGV...
 *       from the launcher: the spec is used as it is; failures are final (status 125).
 *
 * The spec (written by qpod_engine/launch/spec.py) is tab-separated lines, fields escaped
 * (\\ \t \n).
 *
 * This file is the front: the command line, the launch spec taken, the request built. The
 * parts (client/client.h lists them): the spec, the command log, the terminal and signals,
 * the local session, the relay to another host.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qpod_proto.h"
#include "client/client.h"

/* ------------------------------------------------------------------------------------------
 * The command line.
 */

/* The forms the preload library and the launcher use. 0, or -1 when it is none of them. */
static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->tty = -1;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--root") == 0 && i + 1 < argc)
            a->root = argv[++i];
        else if (strcmp(argv[i], "--spec") == 0 && i + 1 < argc)
            a->spec = argv[++i];
        else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc)
            a->reason = argv[++i];
        else if (strcmp(argv[i], "--by-command") == 0)
            a->by_command = 1;
        else if (strcmp(argv[i], "--tty") == 0)
            a->tty = 1;
        else if (strcmp(argv[i], "--no-tty") == 0)
            a->tty = 0;
        else
            break;
    }
    a->launcher = argv + i;
    for (; i < argc && strcmp(argv[i], "--shim") != 0; i++)
        ;
    if (i + 3 >= argc || strcmp(argv[i + 3], "--") != 0 || i + 4 >= argc)
        return -1;
    a->path = argv[i + 1];
    a->cwd = argv[i + 2];
    a->argv = argv + i + 4;
    return (a->root || a->spec) ? 0 : -1;
}

/* PATH search as execvp does it (the caller's PATH; first executable regular file). */
static char *find_program(const char *name)
{
    if (strchr(name, '/')) {
        char cwd[PATH_MAX], *out = NULL;
        if (name[0] == '/')
            return strdup(name);
        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&out, "%s/%s", cwd, name) < 0)
            return NULL;
        return out;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t dl = end ? (size_t)(end - p) : strlen(p);
        char *cand = NULL;
        char cwd[PATH_MAX];
        const char *dir = dl ? NULL : getcwd(cwd, sizeof(cwd));
        if ((dl ? asprintf(&cand, "%.*s/%s", (int)dl, p, name) : asprintf(&cand, "%s/%s", dir ? dir : ".", name)) >= 0) {
            struct stat st;
            if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
                return cand;
            free(cand);
        }
        if (!end)
            return NULL;
        p = end;
    }
}

/* The file at path (at most about max bytes), NUL-terminated; NULL when it cannot be read. */
static char *read_file(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct buf b = {0};
    char tmp[8192];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0 && b.len < max)
        qp_buf_add(&b, tmp, (size_t)n);
    close(fd);
    if (n < 0 && !b.p) {
        return NULL;
    }
    if (!b.p)
        qp_buf_add(&b, "", 0);
    return b.p;
}

/* The innermost bound root (from the compiled rules file) holding the program, else the cwd:
 * the rule of qpod_engine/routing/policy.py redirected_root. */
static char *rules_root(const char *path, const char *cwd)
{
    char *sd = qp_state_dir(), *rules = NULL, *text = NULL;
    if (!sd || asprintf(&rules, "%s/rules", sd) < 0 || !(text = read_file(rules, 1 << 20))) {
        free(sd);
        free(rules);
        return NULL;
    }
    const char *best_home = NULL, *best_cwd = NULL;
    size_t home_len = 0, cwd_len = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "root\t", 5) != 0)
            continue;
        char *root = line + 5, *t = strchr(root, '\t');
        if (t)
            *t = 0;
        size_t rl = strlen(root);
        if (root[0] != '/')
            continue;
        if (path[0] == '/' && qp_within(path, root) && rl > home_len)
            best_home = root, home_len = rl;
        if (qp_within(cwd, root) && rl > cwd_len)
            best_cwd = root, cwd_len = rl;
    }
    const char *best = best_home ? best_home : best_cwd;
    char *out = best ? strdup(best) : NULL;
    free(text);
    free(rules);
    free(sd);
    return out;
}

/* qpod exec [-t|-T] [--] CMD ARGS...: the same run as from the preload library when the root's
 * launch spec is current; --env, options, and anything unusual go to the Python CLI (which
 * comes back with --spec). */
static int parse_front(const char *python, int first, int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->tty = -1;
    a->explicit = 1;
    char **slow = calloc((size_t)argc + 5, sizeof(char *));
    if (!slow)
        return -1;
    int k = 0;
    slow[k++] = (char *)python;
    slow[k++] = "-I"; /* isolated: never import from the cwd (a checkout's own qpod_engine/) */
    slow[k++] = "-m";
    slow[k++] = "qpod_engine.cli";
    slow[k++] = "--slow-exec";
    for (int i = first; i < argc; i++)
        slow[k++] = argv[i];
    a->launcher = slow;
    int i = first;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tty") == 0)
            a->tty = 1;
        else if (strcmp(argv[i], "-T") == 0 || strcmp(argv[i], "--no-tty") == 0)
            a->tty = 0;
        else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (argv[i][0] == '-')
            return -1; /* --env and --help are the CLI's */
        else
            break;
    }
    if (i >= argc)
        return -1;
    a->argv = argv + i;
    static char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return -1;
    a->cwd = cwd;
    char *path = find_program(a->argv[0]);
    a->path = path ? path : a->argv[0];
    a->root = rules_root(a->path, cwd);
    return a->root ? 0 : -1;
}

/* Back to the launcher (preload mode only), saying why under QPOD_DEBUG. */
void qp_fallback(const struct args *a, const char *why)
{
    if (getenv("QPOD_DEBUG"))
        qp_say("qpod-client: %s: using the launcher", why);
    if (a->spec || !a->launcher || !a->launcher[0] || strcmp(a->launcher[0], "--shim") == 0)
        return;
    execv(a->launcher[0], a->launcher);
    qp_say("qpod: cannot start the launcher %s: %s", a->launcher[0], strerror(errno));
    _exit(EXIT_QPOD);
}

/* ------------------------------------------------------------------------------------------
 * Main.
 */

/* The caller's descriptors, before this program opens any of its own. -1 after one line when
 * they cannot be handed over. */
static int caller_fds(int *fds, int *nfds)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        qp_say("qpod: cannot list open files: %s", strerror(errno));
        return -1;
    }
    const char *keep = getenv("QPOD_RULES_FD"); /* qpod-shell's own: not the caller's to hand over */
    int rules_fd = keep && *keep ? atoi(keep) : -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d) || fd == rules_fd)
            continue;
        if (*nfds == QP_MAX_FDS) {
            qp_say("qpod: more than %d open files to hand over", QP_MAX_FDS);
            return -1;
        }
        fds[(*nfds)++] = fd;
    }
    closedir(d);
    return 0;
}

/* Installed as the qpod command itself (a link to this program): the Python CLI is the
 * interpreter linked beside the real file; only a plain `qpod exec` is run here. -1 to go on
 * with a, else the exit status. */
static int as_qpod(int argc, char **argv, struct args *a)
{
    char self[PATH_MAX], *py = NULL;
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    if (n <= 0 || asprintf(&py, "%s/python", self) < 0 || access(py, X_OK) < 0) {
        qp_say("qpod: %s/python is missing: run scripts/setup.sh again, or use the qpod of your venv", self);
        return EXIT_QPOD;
    }
    /* run the interpreter by the path the link names (setup.sh's _lib/python names a venv's
     * bin/python): Python finds its venv, and so the package, next to the path it was started
     * by. Installed as a venv's bin/qpod (pip install .), the python beside it is that venv's
     * own, whatever its link names. */
    char target[PATH_MAX], *cfg = NULL;
    int in_venv = asprintf(&cfg, "%s/../pyvenv.cfg", self) >= 0 && access(cfg, F_OK) == 0;
    free(cfg);
    ssize_t tl = in_venv ? -1 : readlink(py, target, sizeof(target) - 1);
    if (tl > 0 && target[0] == '/') {
        target[tl] = 0;
        py = strdup(target);
    }
    if (argc < 2 || strcmp(argv[1], "exec") != 0) {
        /* -I: the package comes from this install only, never from the cwd or PYTHONPATH
         * (a checkout holding a qpod_engine/ would otherwise run its own code as us) */
        char **cli = calloc((size_t)argc + 4, sizeof(char *));
        if (!cli)
            return EXIT_QPOD;
        cli[0] = py, cli[1] = "-I", cli[2] = "-m", cli[3] = "qpod_engine.cli";
        for (int i = 1; i < argc; i++)
            cli[i + 3] = argv[i];
        execv(py, cli);
        qp_say("qpod: cannot start %s: %s", py, strerror(errno));
        return EXIT_QPOD;
    }
    if (parse_front(py, 2, argc, argv, a) < 0) {
        qp_fallback(a, "not a plain qpod exec in a bound repository");
        return EXIT_QPOD; /* out of memory before the way back was known */
    }
    return -1;
}

/* The command line: qpod itself, --front PYTHON -- (qpod exec), or the forms of the preload
 * library and the launcher. -1 to go on with a, else the exit status. */
static int read_args(int argc, char **argv, struct args *a)
{
    if (strcmp(qp_base_name(argv[0]), "qpod") == 0)
        return as_qpod(argc, argv, a);
    if (argc > 3 && strcmp(argv[1], "--front") == 0 && strcmp(argv[3], "--") == 0) {
        if (parse_front(argv[2], 4, argc, argv, a) < 0) {
            qp_fallback(a, "not a plain qpod exec in a bound repository");
            return EXIT_QPOD;
        }
        return -1;
    }
    if (parse_args(argc, argv, a) < 0) {
        qp_say("usage: qpod-client (--root ROOT LAUNCHER... | --spec FILE) --shim PATH CWD -- ARGV...");
        return 2;
    }
    return -1;
}

/* The launch spec, when it is current for this command (else, in preload mode, the launcher
 * decides: qp_fallback does not come back), and the branch for the record. -1 to go on, else
 * the exit status. */
/* A configure step (autotools configure, cmake's configure, meson setup, waf configure) may set
 * up a build directory outside the repository: the launcher binds it to the environment (the
 * next make there must build in the container too), so such a step always goes through it. */
static int configure_step(const struct args *a)
{
    const char *name = qp_base_name(a->path), *const *v = (const char *const *)a->argv;
    if (strcmp(name, "configure") == 0)
        return 1;
    if (strcmp(name, "cmake") == 0 && v[1]) {
        static const char *const other[] = {"--build", "--install", "--open", "-E", "-P", "--help", "--version"};
        for (size_t k = 0; k < sizeof(other) / sizeof(*other); k++)
            if (strncmp(v[1], other[k], strlen(other[k])) == 0)
                return 0;
        return 1;
    }
    if (strcmp(name, "meson") == 0)
        return v[1] && strcmp(v[1], "setup") == 0;
    int waf = strcmp(qp_base_name(v[0]), "waf") == 0 || (v[1] && strcmp(qp_base_name(v[1]), "waf") == 0);
    for (int i = 1; waf && v[i]; i++)
        if (strcmp(v[i], "configure") == 0)
            return 1;
    return 0;
}

static int take_spec(const struct args *a, struct spec *s, struct record *rec)
{
    if (!a->spec && configure_step(a))
        qp_fallback(a, "a configure step: the launcher binds the build directory it sets up");
    char *spec_path = a->spec ? strdup(a->spec) : qp_fast_spec_path(a->root);
    int loaded = spec_path ? qp_load_spec(spec_path, s, !a->spec) : -1;
    if (loaded < 0 || s->stale || (a->root && strcmp(s->root, a->root) != 0)) {
        qp_fallback(a, loaded < 0 ? "no launch spec" : s->stale ? "config changed" : "spec of another root");
        qp_say("qpod: cannot read the launch spec %s", spec_path ? spec_path : "(no state dir)");
        return EXIT_QPOD;
    }
    char *head = qp_read_head(s);
    if (!a->spec && s->branch_rules && (!head || !s->head_want || strcmp(head, s->head_want) != 0))
        qp_fallback(a, "branch changed"); /* another branch may mean another environment */
    if (head && strncmp(head, "ref: refs/heads/", 16) == 0)
        rec->branch = head + 16;
    if (a->by_command && !qp_in_list(qp_base_name(a->path), (const char *const *)s->cmds, s->ncmds))
        /* the rules route the commands of every branch's environment; not this one's: the
         * launcher decides (the host, or another rule) */
        qp_fallback(a, "not a command of this branch's environment");
    return -1;
}

/* What a child inherits natively besides its descriptors: the caller's resource limits ('r':
 * "RESOURCE SOFT HARD", -1 for unlimited) and niceness ('n'), applied by the agent as far as the
 * container allows; and the logical working directory ('w': $PWD when it names the same
 * directory as the cwd, a path through a symlink), kept when it names the same one there. */
static void add_process_state(struct buf *payload, const struct spec *s, const struct args *a)
{
    /* not RLIMIT_NPROC: it counts the user's processes machine-wide, the container's (qpod's
     * 8192 by default, below what podman can be given here) stays */
    static const int limits[] = {RLIMIT_CORE,  RLIMIT_CPU, RLIMIT_DATA,   RLIMIT_FSIZE,
                                 RLIMIT_NOFILE, RLIMIT_STACK, RLIMIT_AS, RLIMIT_MEMLOCK};
    for (size_t i = 0; i < sizeof(limits) / sizeof(*limits); i++) {
        struct rlimit rl;
        if (getrlimit(limits[i], &rl) < 0)
            continue;
        char v[96];
        snprintf(v, sizeof(v), "%d %lld %lld", limits[i],
                 rl.rlim_cur == RLIM_INFINITY ? -1LL : (long long)rl.rlim_cur,
                 rl.rlim_max == RLIM_INFINITY ? -1LL : (long long)rl.rlim_max);
        qp_buf_tag(payload, 'r', v);
    }
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (errno == 0)
        qp_buf_tagn(payload, 'n', nice);
    const char *pwd = getenv("PWD");
    struct stat ps, cs;
    if (pwd && pwd[0] == '/' && strcmp(pwd, a->cwd) != 0 && stat(pwd, &ps) == 0 && stat(a->cwd, &cs) == 0 &&
        ps.st_dev == cs.st_dev && ps.st_ino == cs.st_ino) {
        char *m = qp_map_path(s, pwd);
        if (m)
            qp_buf_tag(payload, 'w', m);
    }
}

/* The request: the config hash, where it runs (cwd, the container's path), what (the program,
 * argv), with what (environment, umask, identity). */
static void build_payload(struct buf *payload, const struct spec *s, const struct args *a, const char *cwd)
{
    const char *prog = a->argv[0];
    if (a->path[0] == '/' && qp_within(a->path, s->root) && (a->argv[0][0] == '/' || !strchr(a->argv[0], '/'))) {
        /* a program of the repository: the container's view of the same file (a bare name found
         * through the host's PATH is not on the container's PATH) */
        char *m = qp_map_path(s, a->path);
        prog = m ? m : a->path;
    }
    if (s->hash)
        qp_buf_tag(payload, 'h', s->hash);
    qp_buf_tag(payload, 'c', cwd);
    qp_buf_tag(payload, 'p', prog);
    for (int i = 0; a->argv[i]; i++)
        qp_buf_tag(payload, 'a', a->argv[i]);
    qp_add_env(payload, s);
    mode_t mask = umask(0);
    umask(mask);
    char m[16];
    snprintf(m, sizeof(m), "%o", (unsigned)mask);
    qp_buf_tag(payload, 'm', m);
    if (s->have_user) {
        qp_buf_tagn(payload, 'u', s->uid);
        qp_buf_tagn(payload, 'g', s->gid);
        for (int i = 0; i < s->ngroups; i++)
            qp_buf_tagn(payload, 'G', s->groups[i]);
    }
    add_process_state(payload, s, a);
}

static int client_main(int argc, char **argv)
{
    /* the caller's descriptors, before this program opens any of its own */
    int fds[QP_MAX_FDS], nfds = 0;
    if (caller_fds(fds, &nfds) < 0)
        return EXIT_QPOD;
    struct args a;
    int r = read_args(argc, argv, &a);
    if (r >= 0)
        return r;

    struct record rec = {0};
    qp_iso_time(&rec);
    struct spec s;
    if ((r = take_spec(&a, &s, &rec)) >= 0)
        return r;
    /* where it runs, and what */
    char *cwd = qp_map_path(&s, a.cwd);
    if (!cwd) {
        qp_say("qpod: %s: not visible in the container of environment '%s' (run it from inside %s or a mounted "
               "directory)", a.cwd, s.env, s.root);
        return EXIT_QPOD;
    }
    struct buf payload = {0};
    build_payload(&payload, &s, &a, cwd);

    rec.repo = s.root, rec.env = s.env, rec.container = s.container, rec.cwd = a.cwd, rec.path = a.path;
    rec.argv = a.argv;
    char reason[4200];
    rec.reason = a.reason ? a.reason : qp_why(&s, &a, reason, sizeof(reason));
    if (s.nssh)
        return qp_relay(&s, &a, &rec, &payload, cwd, fds, nfds);
    return qp_run_local(&s, &a, &rec, &payload, cwd, fds, nfds);
}

#ifdef QP_CLIENT_SO
/* libqpod_client.so: the preload library's way in. In the child a program forked to exec a
 * redirected command (single-threaded, its own memory: the library checked), the client runs in
 * that process instead of being exec'd, saving an exec (on virtual machines mostly the C library's
 * start, which asks the CPU about its caches). What the exec would have done is done first:
 * descriptors marked close-on-exec are closed, caught signals go back to their defaults (ignored
 * ones stay ignored, the mask stays), the environment is the one the exec would have given. The
 * process never returns to its program: _exit, never exit (its atexit handlers and stdio buffers
 * are its own). */
#include <signal.h>
#include <sys/prctl.h>

extern char **environ;

__attribute__((visibility("default"))) void qp_client_inprocess(int argc, char **argv, char **envp)
{
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            int fd = e->d_name[0] >= '0' && e->d_name[0] <= '9' ? atoi(e->d_name) : -1;
            int fl = fd >= 0 && fd != dirfd(d) ? fcntl(fd, F_GETFD) : -1;
            if (fl >= 0 && (fl & FD_CLOEXEC))
                close(fd);
        }
        closedir(d);
    }
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &old) < 0)
            continue;
        if (!(old.sa_flags & SA_SIGINFO) && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN))
            continue;
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    }
    environ = envp;
    prctl(PR_SET_NAME, (unsigned long)"qpod-client", 0, 0, 0);
    _exit(client_main(argc, argv));
}
#else
int main(int argc, char **argv) { return client_main(argc, argv); }
#endif
