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
 * The spec (written by qpod_engine/launchspec.py) is tab-separated lines, fields escaped
 * (\\ \t \n).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "qpod_fnv.h"
#include "qpod_proto.h"

#define EXIT_QPOD 125
#define MAX_LIST 256

extern char **environ;

/* ------------------------------------------------------------------------------------------
 * Small helpers.
 */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    /* one line, shown literally: paths and argv come from anyone, so control characters (C0,
     * DEL, C1) are written as escapes (\n, \t, \xNN, as qpod_engine/textsafe.py does), never
     * interpreted by the terminal */
    char out[4 * sizeof(buf) + 2];
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == 0xc2 && i + 1 < n && (unsigned char)buf[i + 1] >= 0x80 && (unsigned char)buf[i + 1] < 0xa0) {
            k += (size_t)sprintf(out + k, "\\x%02x", (unsigned char)buf[++i]);
        } else if (c == '\n' || c == '\t' || c == '\r') {
            k += (size_t)sprintf(out + k, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
        } else if (c < 0x20 || c == 0x7f) {
            k += (size_t)sprintf(out + k, "\\x%02x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '\n';
    (void)!write(2, out, k);
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            say("qpod: out of memory");
            _exit(EXIT_QPOD);
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_tag(struct buf *b, char tag, const char *s)
{
    buf_add(b, &tag, 1);
    buf_add(b, s, strlen(s) + 1);
}

static void buf_tagn(struct buf *b, char tag, long v)
{
    char n[32];
    snprintf(n, sizeof(n), "%ld", v);
    buf_tag(b, tag, n);
}

static int within(const char *path, const char *root)
{
    size_t rl = strlen(root);
    if (rl == 1 && root[0] == '/')
        return path[0] == '/';
    return strncmp(path, root, rl) == 0 && (path[rl] == 0 || path[rl] == '/');
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static char *state_dir(void);

/* ------------------------------------------------------------------------------------------
 * The launch spec.
 */
struct map {
    char *host, *ctr;
};

struct spec {
    char *root, *env, *image, *container, *hash, *agent_dir, *head_path, *head_want, *log_path;
    int branch_rules;
    long log_max, log_keep;
    struct map maps[MAX_LIST];
    int nmaps;
    char *pass[MAX_LIST], *deny[MAX_LIST], *set[MAX_LIST], *ttycmd[MAX_LIST], *cmds[MAX_LIST];
    int npass, ndeny, nset, nttycmd, ncmds;
    int have_user;
    long uid, gid;
    long groups[MAX_LIST];
    int ngroups;
    int stale; /* a source file changed since the launcher wrote this */
    char *host, *facts; /* an environment on another host: its name, and the launcher's facts file */
    char *ssh[MAX_LIST + 1]; /* the command that reaches its bridge (qpod_proto.h, "The relay") */
    int nssh;
};

static char *unescape(char *s)
{
    char *o = s;
    for (char *i = s; *i; i++) {
        if (*i == '\\' && i[1]) {
            i++;
            *o++ = *i == 't' ? '\t' : *i == 'n' ? '\n' : *i;
        } else {
            *o++ = *i;
        }
    }
    *o = 0;
    return s;
}

static int split(char *line, char **f, int max)
{
    int n = 0;
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t)
            break;
        *t = 0;
        p = t + 1;
    }
    for (int i = 0; i < n; i++)
        unescape(f[i]);
    return n;
}

/* A config file's stamp (change time, size) as the launcher saw it: "-" for absent. */
static int source_changed(const char *path, const char *mtime, const char *size)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return strcmp(mtime, "-") != 0;
    char m[64], s[32];
    snprintf(m, sizeof(m), "%lld", (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec);
    snprintf(s, sizeof(s), "%lld", (long long)st.st_size);
    return strcmp(m, mtime) != 0 || strcmp(s, size) != 0;
}

static char *read_file(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct buf b = {0};
    char tmp[8192];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0 && b.len < max)
        buf_add(&b, tmp, (size_t)n);
    close(fd);
    if (n < 0 && !b.p) {
        return NULL;
    }
    if (!b.p)
        buf_add(&b, "", 0);
    return b.p;
}

/* Trust. A launch spec names the container, its agent's socket, the environment and the
 * identity a command runs with, so it is used only from a regular file of the effective user
 * that nobody else may write, in directories (up to the state dir) of that user that nobody
 * else may write either; the agent's directory likewise. Anything else ends the client with
 * 125 and one line, before any of it is used: the command runs neither there nor on the host. */
static int owned_closed(const struct stat *st, int dir)
{
    return (dir ? S_ISDIR(st->st_mode) : S_ISREG(st->st_mode)) && st->st_uid == geteuid() &&
           !(st->st_mode & (S_IWGRP | S_IWOTH));
}

static void require_trusted(const char *path, const struct stat *st, int dir)
{
    if (owned_closed(st, dir))
        return;
    unsigned uid = (unsigned)st->st_uid, mode = (unsigned)st->st_mode & 07777;
    if (uid != (unsigned)geteuid())
        say("qpod: %s is not yours (owner uid %u, mode %04o): another user could choose what runs as you; "
            "remove it (as its owner or root) and run the command again", path, uid, mode);
    else if (dir ? !S_ISDIR(st->st_mode) : !S_ISREG(st->st_mode))
        say("qpod: %s is not a %s (owner uid %u, mode %04o): remove it and run the command again", path,
            dir ? "directory" : "regular file", uid, mode);
    else
        say("qpod: %s is writable by others (owner uid %u, mode %04o): another user could choose what runs as "
            "you; remove it and run the command again", path, uid, mode);
    exit(EXIT_QPOD);
}

/* The directories holding path, from its own up to the state dir when path is inside it. */
static void require_trusted_dirs(const char *path)
{
    char *sd = state_dir(), *d = strdup(path);
    if (!d) {
        say("qpod: out of memory");
        exit(EXIT_QPOD);
    }
    for (char *slash; (slash = strrchr(d, '/')) != NULL;) {
        if (slash == d)
            slash[1] = 0;
        else
            *slash = 0;
        struct stat st;
        if (stat(d, &st) != 0) {
            say("qpod: cannot look at %s: %s", d, strerror(errno));
            exit(EXIT_QPOD);
        }
        require_trusted(d, &st, 1);
        if (slash == d || !sd || strcmp(d, sd) == 0 || !within(d, sd))
            break;
    }
    free(d);
    free(sd);
}

/* The launch spec's text, once trusted; NULL when it cannot be read (the launcher writes it). */
static char *read_spec(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY); /* a FIFO there: no hang */
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    require_trusted(path, &st, 0);
    require_trusted_dirs(path);
    struct buf b = {0};
    char tmp[8192];
    ssize_t n;
    while (((n = read(fd, tmp, sizeof(tmp))) > 0 || (n < 0 && errno == EINTR)) && b.len < (4 << 20))
        if (n > 0)
            buf_add(&b, tmp, (size_t)n);
    close(fd);
    if (n < 0) {
        free(b.p);
        return NULL;
    }
    if (!b.p)
        buf_add(&b, "", 0);
    return b.p;
}

/* Connects to the agent's socket in dir once dir is known to be ours and closed: checked through
 * the descriptor the connection goes through (no swap in between). -1 (errno set) when nothing
 * answers there. */
static int connect_agent(const char *dir)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) != 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        errno = e;
        return -1;
    }
    require_trusted(dir, &st, 1);
    int sock = qp_connect_dirfd(dfd);
    int e = errno;
    close(dfd);
    errno = e;
    return sock;
}

static int load_spec(const char *path, struct spec *s, int check)
{
    memset(s, 0, sizeof(*s));
    char *text = read_spec(path);
    if (!text)
        return -1;
    char *save = NULL;
    int first = 1;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[8];
        int n = split(line, f, 8);
        const char *k = f[0];
        if (first) {
            if (strcmp(k, "qpod-spec") != 0 || n < 2 || strcmp(f[1], "1") != 0)
                return -1;
            first = 0;
            continue;
        }
#define ONE(key, field) else if (strcmp(k, key) == 0 && n >= 2) s->field = f[1];
        if (0) {
        }
        ONE("root", root) ONE("env", env) ONE("image", image) ONE("container", container) ONE("hash", hash)
        ONE("agent", agent_dir) ONE("host", host) ONE("facts", facts)
        else if (strcmp(k, "ssh") == 0 && n >= 2 && s->nssh < MAX_LIST) s->ssh[s->nssh++] = f[1];
        else if (strcmp(k, "head") == 0 && n >= 3) s->head_path = f[1], s->head_want = f[2];
        else if (strcmp(k, "branch_rules") == 0 && n >= 2) s->branch_rules = atoi(f[1]);
        else if (strcmp(k, "log") == 0 && n >= 4) s->log_path = f[1], s->log_max = atol(f[2]), s->log_keep = atol(f[3]);
        else if (strcmp(k, "map") == 0 && n >= 3 && s->nmaps < MAX_LIST) s->maps[s->nmaps++] = (struct map){f[1], f[2]};
        else if (strcmp(k, "pass") == 0 && s->npass < MAX_LIST) s->pass[s->npass++] = f[1];
        else if (strcmp(k, "deny") == 0 && s->ndeny < MAX_LIST) s->deny[s->ndeny++] = f[1];
        else if (strcmp(k, "set") == 0 && n >= 2 && s->nset < MAX_LIST) s->set[s->nset++] = f[1];
        else if (strcmp(k, "tty") == 0 && n >= 2 && s->nttycmd < MAX_LIST) s->ttycmd[s->nttycmd++] = f[1];
        else if (strcmp(k, "cmd") == 0 && n >= 2 && s->ncmds < MAX_LIST) s->cmds[s->ncmds++] = f[1];
        else if (strcmp(k, "user") == 0 && n >= 3) {
            s->have_user = 1, s->uid = atol(f[1]), s->gid = atol(f[2]);
            for (int i = 3; i < n && s->ngroups < MAX_LIST; i++)
                s->groups[s->ngroups++] = atol(f[i]);
        } else if (strcmp(k, "groups") == 0) {
            /* supplementary groups may be many: a line of their own, space-separated */
            for (char *g = f[1]; g && *g && s->ngroups < MAX_LIST;) {
                s->groups[s->ngroups++] = strtol(g, &g, 10);
                while (*g == ' ')
                    g++;
            }
        } else if (strcmp(k, "src") == 0 && n >= 4 && check && !s->stale)
            s->stale = source_changed(f[1], f[2], f[3]);
#undef ONE
    }
    if (!s->root || !s->env || !s->container || !s->agent_dir || !s->nmaps)
        return -1;
    return 0;
}

/* HEAD of the work tree, as written ("ref: refs/heads/X" or a commit id), without the newline.
 * The checkout's own file: a FIFO there must not hang the open (O_NONBLOCK), nor /dev/zero or
 * a huge file fill memory; only a regular file of at most 4 KiB is read (as
 * gitinfo.read_small does), anything else is NULL (the launcher then decides). */
static char *read_head(const struct spec *s)
{
    enum { HEAD_MAX = 4096 };
    struct stat st;
    /* stat first: a device is not even opened (opening one can have effects of its own) */
    if (!s->head_path || stat(s->head_path, &st) != 0 || !S_ISREG(st.st_mode))
        return NULL;
    int fd = open(s->head_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return NULL;
    char *h = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (h = malloc(HEAD_MAX + 2))) {
        size_t len = 0;
        ssize_t n = 0;
        while (len <= HEAD_MAX && ((n = read(fd, h + len, HEAD_MAX + 1 - len)) > 0 || (n < 0 && errno == EINTR)))
            len += n > 0 ? (size_t)n : 0;
        if (n < 0 || len > HEAD_MAX) {
            free(h);
            h = NULL;
        } else {
            h[len] = 0;
            while (len && (h[len - 1] == '\n' || h[len - 1] == '\r'))
                h[--len] = 0;
        }
    }
    close(fd);
    return h;
}

static char *map_path(const struct spec *s, const char *path)
{
    for (int i = 0; i < s->nmaps; i++) {
        const char *h = s->maps[i].host;
        if (within(path, h)) {
            const char *rest = strcmp(h, "/") == 0 ? path : path + strlen(h);
            const char *c = s->maps[i].ctr;
            size_t need = strlen(c) + strlen(rest) + 2;
            char *out = malloc(need);
            if (!out)
                return NULL;
            if (strcmp(c, "/") == 0)
                snprintf(out, need, "%s", *rest ? rest : "/");
            else
                snprintf(out, need, "%s%s", c, rest);
            return out;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * The command log: one JSON line per record, appended under an flock of the side lock file,
 * rotated past the size bound (the same protocol as qpod_engine/cmdlog.py).
 */
static void json_str(struct buf *b, const char *s)
{
    buf_str(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        char esc[16];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            buf_add(b, esc, 2);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            buf_str(b, esc);
            p++;
        } else if (c < 0x80) {
            buf_add(b, (const char *)p, 1);
            p++;
        } else {
            /* valid UTF-8 goes as it is; a stray byte as the lone surrogate Python's
             * surrogateescape uses, so the record stays valid JSON and the bytes are kept */
            int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            int ok = len > 0;
            for (int i = 1; ok && i < len; i++)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok) {
                buf_add(b, (const char *)p, (size_t)len);
                p += len;
            } else {
                snprintf(esc, sizeof(esc), "\\udc%02x", c);
                buf_str(b, esc);
                p++;
            }
        }
    }
    buf_str(b, "\"");
}

struct record {
    char id[40];
    char time[64];
    double t0;
    const char *repo, *env, *container, *cwd, *path, *reason;
    char *branch;
    char *const *argv;
};

static void record_json(struct buf *b, const struct record *r, int status, int done)
{
    char num[64];
    buf_str(b, "{\"id\":");
    json_str(b, r->id);
    buf_str(b, ",\"time\":");
    json_str(b, r->time);
    buf_str(b, ",\"repo\":");
    json_str(b, r->repo);
    buf_str(b, ",\"branch\":");
    if (r->branch)
        json_str(b, r->branch);
    else
        buf_str(b, "null");
    buf_str(b, ",\"env\":");
    json_str(b, r->env);
    buf_str(b, ",\"container\":");
    json_str(b, r->container);
    buf_str(b, ",\"cwd\":");
    json_str(b, r->cwd);
    buf_str(b, ",\"argv\":[");
    for (int i = 0; r->argv[i]; i++) {
        if (i)
            buf_str(b, ",");
        json_str(b, r->argv[i]);
    }
    buf_str(b, "],\"path\":");
    json_str(b, r->path);
    buf_str(b, ",\"reason\":");
    json_str(b, r->reason);
    snprintf(num, sizeof(num), ",\"pid\":%d", (int)getpid());
    buf_str(b, num);
    if (done) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double d = (double)now.tv_sec + now.tv_nsec / 1e9 - r->t0;
        snprintf(num, sizeof(num), ",\"status\":%d,\"duration\":%.3f}\n", status, d < 0 ? 0.0 : d);
    } else {
        snprintf(num, sizeof(num), ",\"status\":null}\n");
    }
    buf_str(b, num);
}

static void make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0700);
            *p = '/';
        }
}

static void rotate(const char *log, long keep)
{
    char a[4200], b[4200];
    for (long i = keep - 1; i > 0; i--) {
        snprintf(a, sizeof(a), "%s.%ld", log, i);
        snprintf(b, sizeof(b), "%s.%ld", log, i + 1);
        rename(a, b);
    }
    snprintf(a, sizeof(a), "%s.1", log);
    rename(log, a);
}

/* flock(fd, LOCK_EX), polled so that a holder that never lets go (a writer stopped with
 * Ctrl-Z while it held it) is given up on after LOG_LOCK_WAIT seconds, said in one line: the
 * record is then appended unlocked (one O_APPEND write: a record is never dropped; only a
 * rotation at that very moment could interleave). Quiet until then: parallel builds wait here
 * often and briefly. */
#define LOG_LOCK_WAIT 60
static void lock_wait(int fd, const char *path)
{
    struct timespec pause = {0, 20 * 1000 * 1000};
    for (long waited_ms = 0;; waited_ms += 20) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 || (errno != EWOULDBLOCK && errno != EINTR))
            return;
        if (waited_ms >= LOG_LOCK_WAIT * 1000) {
            say("qpod: gave up waiting for %s after %d s: the record is written without it", path, LOG_LOCK_WAIT);
            return;
        }
        nanosleep(&pause, NULL);
    }
}

static void log_write(const struct spec *s, const struct record *r, int status, int done)
{
    if (!s->log_path)
        return;
    struct buf line = {0};
    record_json(&line, r, status, done);
    char lock[4200];
    snprintf(lock, sizeof(lock), "%s.lock", s->log_path);
    make_dirs(lock);
    int lfd = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0)
        goto fail;
    lock_wait(lfd, lock);
    struct stat st;
    if (stat(s->log_path, &st) == 0 && s->log_max > 0 && (long)(st.st_size + line.len) > s->log_max)
        rotate(s->log_path, s->log_keep > 0 ? s->log_keep : 3);
    int fd = open(s->log_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        close(lfd);
        goto fail;
    }
    char last = '\n';
    if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
        (void)!write(fd, "\n", 1); /* a record cut short earlier must not swallow this one */
    const char *p = line.p;
    size_t left = line.len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n, left -= (size_t)n;
    }
    close(fd);
    close(lfd);
    free(line.p);
    if (left == 0)
        return;
fail:
    say("qpod: cannot write the command log %s: %s", s->log_path, strerror(errno));
}

/* ------------------------------------------------------------------------------------------
 * Signals: handlers only write the signal number to a pipe the main loop reads.
 */
static int sigpipe_w = -1;
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGTSTP, SIGCONT};
#define NFWD ((int)(sizeof(forwarded) / sizeof(forwarded[0])))

static void on_signal(int sig)
{
    int e = errno;
    unsigned char c = (unsigned char)sig;
    (void)!write(sigpipe_w, &c, 1);
    errno = e;
}

/* ------------------------------------------------------------------------------------------
 * The terminal, in terminal-owning mode.
 */
static struct termios saved_tio;
static int tio_saved, term_fd = -1;

/* full: the whole terminal raw (terminal-owning mode); else only its input, so that keys reach
 * the command's pty unprocessed while the host still translates the command's own output */
static void tty_raw(int full)
{
    struct termios t;
    if (term_fd < 0 || tcgetattr(term_fd, &t) < 0)
        return;
    if (!tio_saved)
        saved_tio = t, tio_saved = 1;
    if (full) {
        cfmakeraw(&t);
    } else {
        t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
    }
    tcsetattr(term_fd, TCSADRAIN, &t);
}

static void tty_restore(void)
{
    if (tio_saved && term_fd >= 0)
        tcsetattr(term_fd, TCSADRAIN, &saved_tio);
}

/* Programs that need a controlling terminal of their own get one (a pty relayed by this
 * client): shells run interactively, full-screen programs, debuggers, password prompts. */
static const char *const tty_programs[] = {"less", "more", "most", "vi", "vim", "nvim", "view", "nano", "emacs",
                                           "mc", "top", "htop", "gdb", "cgdb", "lldb", "man", "ssh", "su",
                                           "sudo", "tmux", "screen", "script", NULL};
static const char *const shells[] = {"bash", "sh", "dash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh", NULL};

static int in_list(const char *name, const char *const *list, int n)
{
    for (int i = 0; n < 0 ? list[i] != NULL : i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return 1;
    return 0;
}

static int wants_terminal(const struct spec *s, char *const *argv)
{
    const char *name = base_name(argv[0]);
    if (in_list(name, tty_programs, -1) || in_list(name, (const char *const *)s->ttycmd, s->nttycmd))
        return 1;
    if (!in_list(name, shells, -1))
        return 0;
    /* a shell is interactive when it is given no script and no -c, or -i */
    for (int i = 1; argv[i]; i++) {
        if (strcmp(argv[i], "-i") == 0)
            return 1;
        if (argv[i][0] != '-' && argv[i][0] != '+')
            return 0;
        if (strchr(argv[i] + 1, 'c') && argv[i][0] == '-' && argv[i][1] != '-')
            return 0;
        if (strcmp(argv[i], "--") == 0)
            return argv[i + 1] == NULL;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Talking to the agent.
 */
static int send_request(int sock, const struct buf *payload, const int *fds, int nfds)
{
    struct qp_req h = {QP_MAGIC, QP_VERSION, (uint32_t)payload->len, (uint32_t)nfds};
    return qp_send(sock, &h, sizeof(h), fds, nfds) < 0 || qp_send(sock, payload->p, payload->len, NULL, 0) < 0 ? -1 : 0;
}

/* One event from the agent (and the descriptor attached to it, if any). 0 on success, -1 at
 * end of stream or error. */
static int read_event(int sock, struct qp_msg *m, int *fd)
{
    int n = 0;
    *fd = -1;
    return qp_recv(sock, m, sizeof(*m), fd, 1, &n) == -1 ? -1 : 0;
}

static void send_signal(int sock, int sig)
{
    struct qp_msg m = {QP_SIGNAL, sig};
    (void)!send(sock, &m, sizeof(m), MSG_NOSIGNAL);
}

/* ------------------------------------------------------------------------------------------
 * Main.
 */
struct args {
    const char *root, *spec, *reason, *path, *cwd;
    int explicit; /* qpod exec: any command started in the repository runs there */
    int by_command; /* the preload library routed it by its name: a command of the environment */
    char **launcher; /* LAUNCHER... --shim PATH CWD -- ARGV (for the fallback) */
    char **argv;
    int tty; /* -1 auto, 0 never, 1 always */
};

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

/* The innermost bound root (from the compiled rules file) holding the program, else the cwd:
 * the rule of qpod_engine/policy.py redirected_root. */
static char *rules_root(const char *path, const char *cwd)
{
    char *sd = state_dir(), *rules = NULL, *text = NULL;
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
        if (path[0] == '/' && within(path, root) && rl > home_len)
            best_home = root, home_len = rl;
        if (within(cwd, root) && rl > cwd_len)
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
static void fallback(const struct args *a, const char *why)
{
    if (getenv("QPOD_DEBUG"))
        say("qpod-client: %s: using the launcher", why);
    if (a->spec || !a->launcher || !a->launcher[0] || strcmp(a->launcher[0], "--shim") == 0)
        return;
    execv(a->launcher[0], a->launcher);
    say("qpod: cannot start the launcher %s: %s", a->launcher[0], strerror(errno));
    _exit(EXIT_QPOD);
}

static char *state_dir(void)
{
    const char *q = getenv("QPOD_STATE_DIR");
    char *out = NULL;
    if (q && *q) {
        if (q[0] == '/')
            return strdup(q);
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&out, "%s/%s", cwd, q) < 0)
            return NULL;
        return out;
    }
    const char *x = getenv("XDG_STATE_HOME");
    if (x && *x)
        return asprintf(&out, "%s/qpod", x) < 0 ? NULL : out;
    const char *home = getenv("HOME");
    if (!home || !*home)
        return NULL;
    return asprintf(&out, "%s/.local/state/qpod", home) < 0 ? NULL : out;
}

/* The file the launcher writes for a root: FNV-1a of the root's path (the same in
 * qpod_engine/launch/spec.py). */
static char *fast_spec_path(const char *root)
{
    uint64_t h = qp_fnv1a(root, strlen(root));
    char *sd = state_dir(), *out = NULL;
    if (!sd || asprintf(&out, "%s/fast/%016llx", sd, (unsigned long long)h) < 0)
        out = NULL;
    free(sd);
    return out;
}

static int name_matches(const char *name, size_t nl, char *const *globs, int n)
{
    char tmp[512];
    if (nl >= sizeof(tmp))
        return 0;
    memcpy(tmp, name, nl);
    tmp[nl] = 0;
    for (int i = 0; i < n; i++)
        if (fnmatch(globs[i], tmp, 0) == 0)
            return 1;
    return 0;
}

static void add_env(struct buf *payload, const struct spec *s)
{
    static char *const always_denied[] = {"LD_PRELOAD", "QPOD_*"};
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t nl = (size_t)(eq - *e);
        if (name_matches(*e, nl, always_denied, 2) || !name_matches(*e, nl, s->pass, s->npass) ||
            name_matches(*e, nl, s->deny, s->ndeny))
            continue;
        int overridden = 0;
        for (int i = 0; i < s->nset && !overridden; i++)
            overridden = strncmp(s->set[i], *e, nl + 1) == 0;
        if (!overridden)
            buf_tag(payload, 'e', *e);
    }
    for (int i = 0; i < s->nset; i++) {
        const char *eq = strchr(s->set[i], '=');
        if (eq && !name_matches(s->set[i], (size_t)(eq - s->set[i]), always_denied, 2))
            buf_tag(payload, 'e', s->set[i]);
    }
}

static void iso_time(struct record *r)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r->t0 = (double)now.tv_sec + now.tv_nsec / 1e9;
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(r->time, sizeof(r->time), "%s.%03ld+00:00", base, now.tv_nsec / 1000000);
    snprintf(r->id, sizeof(r->id), "%lx%09lx%x", (long)now.tv_sec, now.tv_nsec, (unsigned)getpid());
}

/* Why the command runs in the container, in the words of qpod_engine/policy.py decide(). */
static const char *why(const struct spec *s, const struct args *a, char *out, size_t size)
{
    if (a->path[0] == '/' && within(a->path, s->root))
        snprintf(out, size, "program lives in bound repository %s", s->root);
    else if (in_list(base_name(a->path), (const char *const *)s->cmds, s->ncmds))
        snprintf(out, size, "'%s' is a command of environment '%s'", base_name(a->path), s->env);
    else if (a->explicit)
        snprintf(out, size, "qpod exec in repository bound to '%s'", s->env);
    else /* the preload library matched an interpreter's script */
        snprintf(out, size, "a script of bound repository %s, run by %s", s->root, base_name(a->path));
    return out;
}

/* The status and the one line for a command the agent could not start (QP_EXEC_FAILED). */
static int exec_failed(const struct spec *s, const struct args *a, const char *cwd, int value)
{
    int err = value & ~QP_CHDIR_FLAG;
    if (value & QP_CHDIR_FLAG) {
        say("qpod: %s: cannot enter it in the container of environment '%s': %s", cwd, s->env, strerror(err));
        return EXIT_QPOD;
    }
    if (err == ENOENT) {
        say("qpod: %s: not found in environment %s (image %s)", a->argv[0], s->env, s->image ? s->image : "?");
        return 127;
    }
    if (err == ENOEXEC) {
        say("qpod: %s: cannot execute binary file: Exec format error", a->argv[0]);
        return 126;
    }
    say("qpod: %s: %s", a->argv[0], strerror(err));
    return err == EACCES || err == EISDIR ? 126 : EXIT_QPOD;
}

/* Signals: what the caller ignores stays ignored (and is not forwarded; the payload says which
 * the command starts with ignored or blocked); the rest of the forwarded set comes to the main
 * loop through the pipe sp. */
static int setup_signals(struct buf *payload, int handled[NSIG], int sp[2])
{
    if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) < 0) {
        say("qpod: pipe: %s", strerror(errno));
        return -1;
    }
    sigpipe_w = sp[1];
    sigset_t blocked;
    sigprocmask(SIG_SETMASK, NULL, &blocked);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            buf_tagn(payload, 'i', sig);
        if (sig < 32 && sigismember(&blocked, sig) == 1)
            buf_tagn(payload, 'b', sig);
    }
    for (int i = 0; i < NFWD; i++) {
        struct sigaction old, sa;
        sigaction(forwarded[i], NULL, &old);
        if (old.sa_handler == SIG_IGN && forwarded[i] != SIGCONT && forwarded[i] != SIGWINCH)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigaction(forwarded[i], &sa, NULL);
        handled[forwarded[i]] = 1;
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_IGN); /* a relay write to a closed terminal is an error, not our death */
    return 0;
}

static void reraise(int sig)
{
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = 0;
    setrlimit(RLIMIT_CORE, &rl);
    signal(sig, SIG_DFL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    kill(getpid(), sig);
}

/* ------------------------------------------------------------------------------------------
 * The relay, for an environment on another host (qpod_proto.h, "The relay"): ssh runs the
 * agent's bridge there, and the command's stdin, stdout and stderr travel as frames.
 */
struct outq {
    char *p;
    size_t len, cap;
};

/* Queues a frame for the bridge. 0, or -1 when out of memory. */
static int frame(struct outq *q, uint32_t type, const void *data, size_t len)
{
    if (q->len + sizeof(struct qw_frame) + len > q->cap) {
        size_t cap = (q->len + sizeof(struct qw_frame) + len) * 2;
        char *p = realloc(q->p, cap);
        if (!p)
            return -1;
        q->p = p, q->cap = cap;
    }
    struct qw_frame h = qw_header(type, len);
    memcpy(q->p + q->len, &h, sizeof(h));
    if (len)
        memcpy(q->p + q->len + sizeof(h), data, len);
    q->len += sizeof(h) + len;
    return 0;
}

static int frame_int(struct outq *q, uint32_t type, int32_t v)
{
    uint32_t n = qw_int(v);
    return frame(q, type, &n, sizeof(n));
}

/* ssh, with the stream socket as its stdin and stdout and a pipe as its stderr (its own
 * complaints end in qpod's one line); in its own process group, so that Ctrl-C reaches the
 * command through the relay instead of killing the connection. */
static pid_t start_ssh(const struct spec *s, int *sock, int *errfd)
{
    int sv[2], ep[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(sv[1], 0), dup2(sv[1], 1), dup2(ep[1], 2);
        closefrom(3); /* the caller's descriptors are not ssh's to hold open */
        signal(SIGPIPE, SIG_DFL);
        char *argv[MAX_LIST + 1];
        for (int i = 0; i < s->nssh; i++)
            argv[i] = s->ssh[i];
        argv[s->nssh] = NULL;
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(255);
    }
    close(sv[1]), close(ep[1]);
    if (pid < 0)
        return -1;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(ep[0], F_SETFL, O_NONBLOCK);
    *sock = sv[0], *errfd = ep[0];
    return pid;
}

static int relay(struct spec *s, struct args *a, struct record *rec, struct buf *payload, const char *cwd,
                 const int *fds, int nfds)
{
    int tty_in = isatty(0), fg = tty_in && tcgetpgrp(0) == getpgrp();
    /* a remote pty when the caller's 0, 1 and 2 are its terminal, in the foreground (as ssh -t
     * does; streams are merged only where both ends are the terminal anyway); otherwise pipes:
     * stdout and stderr stay apart, and a terminal's stdin is not read (type-ahead stays here) */
    int rpty = a->tty == 0 ? 0 : tty_in && fg && (a->tty == 1 || (isatty(1) && isatty(2)));
    int relay_in = rpty || !tty_in; /* else the command's stdin ends at once */
    struct winsize ws = {24, 80, 0, 0};
    if (rpty) {
        term_fd = 0;
        ioctl(0, TIOCGWINSZ, &ws);
        char t[32];
        snprintf(t, sizeof(t), "%ux%u", ws.ws_row, ws.ws_col);
        buf_tag(payload, 't', t);
    }
    int sp[2], handled[NSIG] = {0};
    if (setup_signals(payload, handled, sp) < 0)
        return EXIT_QPOD;
    for (int i = 0; i < nfds; i++) /* only 0, 1 and 2 travel */
        if (fds[i] > 2)
            close(fds[i]);
    char *in = malloc(QW_MAX_DATA + sizeof(struct qw_frame));
    if (!in)
        return EXIT_QPOD;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int attempt = 0, rs, errfd;
    pid_t ssh;
    struct outq q = {0};
    size_t inlen, sshlen, inflight;
    char sshmsg[512];
    int started, status, death, want_stop, in_eof, raw, closed[3], heard;
again:
    ssh = start_ssh(s, &rs, &errfd);
    if (ssh < 0) {
        say("qpod: cannot start ssh for host %s: %s", s->host, strerror(errno));
        return EXIT_QPOD;
    }
    q.len = 0;
    if (frame(&q, QW_REQUEST, payload->p, payload->len) < 0 || (!relay_in && frame(&q, QW_STDIN_EOF, NULL, 0) < 0))
        return EXIT_QPOD;
    inlen = sshlen = inflight = 0;
    sshmsg[0] = 0;
    started = death = want_stop = raw = heard = 0;
    closed[0] = closed[1] = closed[2] = 0;
    status = -1;
    in_eof = !relay_in;
    for (;;) {
        /* stdin is read once the bridge has answered: until then a failed connection can be
         * tried again without losing input */
        int read_stdin = heard && !in_eof && (!rpty || raw) && inflight < QW_WINDOW && q.len < QW_WINDOW;
        struct pollfd pf[4] = {{rs, POLLIN | (q.len ? POLLOUT : 0), 0}, {sp[0], POLLIN, 0},
                               {read_stdin ? 0 : -1, POLLIN, 0}, {errfd, POLLIN, 0}};
        if (poll(pf, 4, -1) < 0 && errno != EINTR)
            break;
        if (pf[3].revents) {
            char b[512];
            ssize_t n = read(errfd, b, sizeof(b));
            if (n > 0) {
                /* keep the last line ssh said */
                for (ssize_t i = 0; i < n; i++) {
                    if (b[i] == '\n' || b[i] == '\r') {
                        if (sshlen)
                            sshmsg[sshlen] = 0, sshlen = 0;
                    } else if (sshlen < sizeof(sshmsg) - 1) {
                        if (sshlen == 0)
                            sshmsg[0] = 0;
                        sshmsg[sshlen++] = b[i];
                        sshmsg[sshlen] = 0;
                    }
                }
            } else if (n == 0 || errno != EAGAIN) {
                close(errfd);
                errfd = -1;
            }
        }
        if (pf[1].revents) {
            unsigned char sig;
            while (read(sp[0], &sig, 1) == 1) {
                if (sig == SIGWINCH) {
                    if (rpty && ioctl(0, TIOCGWINSZ, &ws) == 0) {
                        uint16_t rc[2] = {htons(ws.ws_row), htons(ws.ws_col)};
                        frame(&q, QW_WINSIZE, rc, sizeof(rc));
                    }
                    continue; /* the remote pty signals its own foreground */
                }
                if (sig == SIGCONT && raw)
                    tty_raw(1);
                if (handled[sig])
                    frame_int(&q, QW_SIGNAL, sig);
            }
        }
        if (pf[2].revents) {
            char b[QW_MAX_DATA];
            size_t room = QW_WINDOW - inflight;
            ssize_t n = read(0, b, room < sizeof(b) ? room : sizeof(b));
            if (n > 0) {
                frame(&q, QW_STDIN, b, (size_t)n);
                inflight += (size_t)n;
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                frame(&q, QW_STDIN_EOF, NULL, 0);
                in_eof = 1;
            }
        }
        if (pf[0].revents & POLLOUT) {
            ssize_t n = send(rs, q.p, q.len, MSG_NOSIGNAL);
            if (n > 0) {
                memmove(q.p, q.p + n, q.len - (size_t)n);
                q.len -= (size_t)n;
            }
        }
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            goto stopped;
        ssize_t n = read(rs, in + inlen, QW_MAX_DATA + sizeof(struct qw_frame) - inlen);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            goto stopped;
        if (n <= 0 && !heard && ++attempt < 10) {
            /* ssh did not get through (a server refuses connections beyond its MaxStartups
             * while many commands start at once): nothing ran there, try again a little later */
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec < 60) {
                close(rs);
                if (errfd >= 0)
                    close(errfd);
                waitpid(ssh, NULL, 0);
                struct timespec pause = {0, (long)(50 + attempt * 100 + (getpid() * 7919 + attempt * 104729) % 250) *
                                                1000000L};
                while (pause.tv_nsec >= 1000000000L)
                    pause.tv_sec++, pause.tv_nsec -= 1000000000L;
                nanosleep(&pause, NULL);
                goto again;
            }
        }
        if (n <= 0) {
            /* the connection ended before the command did */
            tty_restore();
            if (started) {
                say("qpod: lost the connection to host %s%s%s", s->host, *sshmsg ? ": " : "", sshmsg);
                status = 255;
            } else {
                say("qpod: cannot reach host %s for environment '%s'%s%s", s->host, s->env, *sshmsg ? ": " : "",
                    sshmsg);
                status = EXIT_QPOD;
            }
            break;
        }
        inlen += (size_t)n;
        heard = 1;
        /* every complete frame */
        size_t off = 0;
        while (status < 0 && inlen - off >= sizeof(struct qw_frame)) {
            struct qw_frame h;
            uint32_t type, len;
            memcpy(&h, in + off, sizeof(h));
            qw_open(&h, &type, &len);
            if (len > QW_MAX_DATA) {
                tty_restore();
                say("qpod: host %s: the relay sent a frame too long", s->host);
                status = EXIT_QPOD;
                break;
            }
            if (inlen - off < sizeof(h) + len)
                break;
            const char *d = in + off + sizeof(h);
            off += sizeof(h) + len;
            int32_t v = qw_int_of(d, len);
            if (type == QW_STDOUT || type == QW_STDERR) {
                int fd = type == QW_STDOUT ? 1 : 2;
                if (!closed[fd] && qp_write_full(fd, d, len) < 0 && errno == EPIPE) {
                    /* our reader went away: the command's next write fails as it would here */
                    closed[fd] = 1;
                    frame_int(&q, QW_CLOSED, fd);
                }
            } else if (type == QW_ACK) {
                inflight -= (size_t)v < inflight ? (size_t)v : inflight;
            } else if (type == QW_FAIL) {
                tty_restore();
                int code = v;
                char msg[1100];
                snprintf(msg, sizeof(msg), "%.*s", (int)(len > 4 ? len - 4 : 0), d + 4);
                if (code == QW_FAIL_AGENT) {
                    /* the container is gone on that host: the launcher makes it again */
                    if (s->facts)
                        unlink(s->facts);
                    fallback(a, "the remote agent does not answer");
                }
                say("qpod: host %s: %s", s->host, msg);
                status = EXIT_QPOD;
            } else if (type == QW_EVENT && len >= 8) {
                uint32_t event;
                int32_t value;
                qw_event_of(d, &event, &value);
                switch (event) {
                case QP_PTY:
                    raw = 1;
                    tty_raw(1);
                    break;
                case QP_STARTED:
                    started = 1;
                    log_write(s, rec, 0, 0);
                    break;
                case QP_STOPPED:
                    want_stop = 1;
                    break;
                case QP_EXITED:
                    status = value;
                    break;
                case QP_SIGNALED:
                    status = 128 + value;
                    death = value;
                    break;
                case QP_EXEC_FAILED:
                    tty_restore();
                    status = exec_failed(s, a, cwd, value);
                    break;
                case QP_REFUSED:
                    tty_restore();
                    say("qpod: the agent of container %s on host %s refused the command: %s", s->container, s->host,
                        strerror(value));
                    status = EXIT_QPOD;
                    break;
                case QP_STALE:
                    tty_restore();
                    fallback(a, "container from another configuration");
                    say("qpod: container %s on host %s was created from another configuration; run the command "
                        "again", s->container, s->host);
                    status = EXIT_QPOD;
                    break;
                }
            }
        }
        memmove(in, in + off, inlen - off);
        inlen -= off;
        if (status >= 0)
            break;
    stopped:
        if (want_stop) {
            /* the command stopped (Ctrl-Z): stop too; the SIGCONT that resumes us is forwarded */
            want_stop = 0;
            tty_restore();
            kill(getpid(), SIGSTOP);
        }
    }
    tty_restore();
    free(payload->p);
    close(rs); /* ssh sees its end and exits; the bridge has already gone */
    if (started || status != EXIT_QPOD)
        log_write(s, rec, status, 1);
    if (death && status == 128 + death)
        reraise(death);
    return status < 0 ? EXIT_QPOD : status;
}

int main(int argc, char **argv)
{
    /* the caller's descriptors, before this program opens any of its own */
    int fds[QP_MAX_FDS], nfds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        say("qpod: cannot list open files: %s", strerror(errno));
        return EXIT_QPOD;
    }
    const char *keep = getenv("QPOD_RULES_FD"); /* qpod-shell's own: not the caller's to hand over */
    int rules_fd = keep && *keep ? atoi(keep) : -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d) || fd == rules_fd)
            continue;
        if (nfds == QP_MAX_FDS) {
            say("qpod: more than %d open files to hand over", QP_MAX_FDS);
            return EXIT_QPOD;
        }
        fds[nfds++] = fd;
    }
    closedir(d);

    struct args a;
    if (strcmp(base_name(argv[0]), "qpod") == 0) {
        /* installed as the qpod command itself (a link to this program): the Python CLI is
         * the interpreter linked beside the real file */
        char self[PATH_MAX], *py = NULL;
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        self[n > 0 ? n : 0] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = 0;
        if (n <= 0 || asprintf(&py, "%s/python", self) < 0 || access(py, X_OK) < 0) {
            say("qpod: %s/python is missing: run scripts/setup.sh again, or use the qpod of your venv", self);
            return EXIT_QPOD;
        }
        /* run the interpreter by the path the link names (a venv's bin/python): Python finds
         * its venv, and so the package, next to the path it was started by */
        char target[PATH_MAX];
        ssize_t tl = readlink(py, target, sizeof(target) - 1);
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
            say("qpod: cannot start %s: %s", py, strerror(errno));
            return EXIT_QPOD;
        }
        if (parse_front(py, 2, argc, argv, &a) < 0) {
            fallback(&a, "not a plain qpod exec in a bound repository");
            return EXIT_QPOD; /* out of memory before the way back was known */
        }
    } else if (argc > 3 && strcmp(argv[1], "--front") == 0 && strcmp(argv[3], "--") == 0) {
        if (parse_front(argv[2], 4, argc, argv, &a) < 0) {
            fallback(&a, "not a plain qpod exec in a bound repository");
            return EXIT_QPOD;
        }
    } else if (parse_args(argc, argv, &a) < 0) {
        say("usage: qpod-client (--root ROOT LAUNCHER... | --spec FILE) --shim PATH CWD -- ARGV...");
        return 2;
    }

    struct record rec = {0};
    iso_time(&rec);
    struct spec s;
    char *spec_path = a.spec ? strdup(a.spec) : fast_spec_path(a.root);
    int loaded = spec_path ? load_spec(spec_path, &s, !a.spec) : -1;
    if (loaded < 0 || s.stale || (a.root && strcmp(s.root, a.root) != 0)) {
        fallback(&a, loaded < 0 ? "no launch spec" : s.stale ? "config changed" : "spec of another root");
        say("qpod: cannot read the launch spec %s", spec_path ? spec_path : "(no state dir)");
        return EXIT_QPOD;
    }
    char *head = read_head(&s);
    if (!a.spec && s.branch_rules && (!head || !s.head_want || strcmp(head, s.head_want) != 0))
        fallback(&a, "branch changed"); /* another branch may mean another environment */
    if (head && strncmp(head, "ref: refs/heads/", 16) == 0)
        rec.branch = head + 16;
    if (a.by_command && !in_list(base_name(a.path), (const char *const *)s.cmds, s.ncmds))
        /* the rules route the commands of every branch's environment; not this one's: the
         * launcher decides (the host, or another rule) */
        fallback(&a, "not a command of this branch's environment");

    /* where it runs, and what */
    char *cwd = map_path(&s, a.cwd);
    if (!cwd) {
        say("qpod: %s: not visible in the container of environment '%s' (run it from inside %s or a mounted "
            "directory)", a.cwd, s.env, s.root);
        return EXIT_QPOD;
    }
    const char *prog = a.argv[0];
    if (a.path[0] == '/' && within(a.path, s.root) && (a.argv[0][0] == '/' || !strchr(a.argv[0], '/'))) {
        /* a program of the repository: the container's view of the same file (a bare name found
         * through the host's PATH is not on the container's PATH) */
        char *m = map_path(&s, a.path);
        prog = m ? m : a.path;
    }
    struct buf payload = {0};
    if (s.hash)
        buf_tag(&payload, 'h', s.hash);
    buf_tag(&payload, 'c', cwd);
    buf_tag(&payload, 'p', prog);
    for (int i = 0; a.argv[i]; i++)
        buf_tag(&payload, 'a', a.argv[i]);
    add_env(&payload, &s);
    mode_t mask = umask(0);
    umask(mask);
    char m[16];
    snprintf(m, sizeof(m), "%o", (unsigned)mask);
    buf_tag(&payload, 'm', m);
    if (s.have_user) {
        buf_tagn(&payload, 'u', s.uid);
        buf_tagn(&payload, 'g', s.gid);
        for (int i = 0; i < s.ngroups; i++)
            buf_tagn(&payload, 'G', s.groups[i]);
    }

    rec.repo = s.root, rec.env = s.env, rec.container = s.container, rec.cwd = a.cwd, rec.path = a.path;
    rec.argv = a.argv;
    char reason[4200];
    rec.reason = a.reason ? a.reason : why(&s, &a, reason, sizeof(reason));
    if (s.nssh)
        return relay(&s, &a, &rec, &payload, cwd, fds, nfds);

    /* the terminal: a job in the background must not read it (natively it would stop on
     * SIGTTIN when it tried), and only terminal-owning programs get a pty */
    int tty_in = isatty(0), fg = 0;
    if (tty_in) {
        pid_t pg = tcgetpgrp(0);
        fg = pg == getpgrp();
    }
    int pty = a.tty == 1 ? tty_in && fg : a.tty == 0 ? 0 : tty_in && fg && isatty(1) && wants_terminal(&s, a.argv);
    /* Otherwise the command keeps the caller's descriptors and, when the caller runs in the
     * foreground of a terminal, gets a pty of its own as controlling terminal: /dev/tty
     * prompts (read < /dev/tty, passwords) are relayed, but only while it has /dev/tty open,
     * so keys typed ahead stay on the host terminal for whoever reads them next. */
    int ttyfd = -1;
    if (!pty && a.tty != 0) {
        ttyfd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (ttyfd >= 0 && tcgetpgrp(ttyfd) != getpgrp()) {
            close(ttyfd);
            ttyfd = -1;
        }
        if (ttyfd >= 0)
            pty = 2;
    }
    term_fd = pty == 1 ? 0 : ttyfd;
    int devnull = -1;
    if (tty_in && !fg) {
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        for (int i = 0; i < nfds; i++)
            if (fds[i] == 0 && devnull >= 0)
                fds[i] = devnull;
    }
    int send_fds[QP_MAX_FDS], nsend = 0;
    for (int i = 0; i < nfds; i++) {
        int target = fds[i] == devnull ? 0 : fds[i];
        if (pty == 1 && target <= 2 && isatty(fds[i]))
            continue; /* the pty's slave takes the terminal's place */
        send_fds[nsend++] = fds[i];
        buf_tagn(&payload, 'f', target);
    }
    struct winsize ws = {24, 80, 0, 0};
    if (pty) {
        ioctl(term_fd, TIOCGWINSZ, &ws);
        char t[32];
        snprintf(t, sizeof(t), "%ux%u", ws.ws_row, ws.ws_col);
        buf_tag(&payload, pty == 1 ? 't' : 'T', t);
    }

    int sp[2], handled[NSIG] = {0};
    if (setup_signals(&payload, handled, sp) < 0)
        return EXIT_QPOD;
    int sock = connect_agent(s.agent_dir);
    if (sock < 0) {
        fallback(&a, "agent does not answer");
        say("qpod: container %s is not running (its agent does not answer: %s)", s.container, strerror(errno));
        return EXIT_QPOD;
    }
    if (send_request(sock, &payload, send_fds, nsend) < 0) {
        fallback(&a, "agent does not take the request");
        say("qpod: cannot hand the command to container %s: %s", s.container, strerror(errno));
        return EXIT_QPOD;
    }
    free(payload.p);

    int master = -1, started = 0, status = -1, death = 0, want_stop = 0, master_open = 0, in_open = 1;
    int relay_in = pty == 1 ? 0 : ttyfd, relay_out = pty == 1 ? 1 : ttyfd, slave_open = pty == 1;
    /* the command has the descriptors now: holding them here would keep pipes open */
    for (int i = 0; i < nfds; i++)
        if (fds[i] != 2 && !(pty == 1 && fds[i] <= 1))
            close(fds[i]);
    if (devnull >= 0)
        close(devnull);
    for (;;) {
        int timeout = -1;
        if (master >= 0 && pty == 2) {
            /* is /dev/tty open in the command? (the master hangs up while nobody has it open;
             * the hang-up cannot be waited for, so it is looked at again every 100 ms) */
            struct pollfd q = {master, POLLIN, 0};
            poll(&q, 1, 0);
            int now = !(q.revents & POLLHUP);
            if (now != slave_open) {
                slave_open = now;
                if (now)
                    tty_raw(0);
                else
                    tty_restore();
            }
            master_open = now || (q.revents & POLLIN);
            if (!now)
                timeout = 100;
        }
        struct pollfd pf[4] = {{sock, POLLIN, 0}, {sp[0], POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
        if (master >= 0 && master_open)
            pf[2].fd = master;
        if (master >= 0 && in_open && slave_open)
            pf[3].fd = relay_in;
        if (poll(pf, 4, timeout) < 0 && errno != EINTR)
            break;
        if (pf[1].revents) {
            unsigned char sig;
            while (read(sp[0], &sig, 1) == 1) {
                if (sig == SIGWINCH && master >= 0) {
                    if (ioctl(term_fd, TIOCGWINSZ, &ws) == 0)
                        ioctl(master, TIOCSWINSZ, &ws);
                    if (pty == 1)
                        continue; /* the pty signals its own foreground */
                }
                if (sig == SIGCONT && master >= 0 && slave_open)
                    tty_raw(pty == 1);
                if (handled[sig])
                    send_signal(sock, sig);
            }
        }
        if (pf[2].revents) {
            char b[16384];
            ssize_t n = read(master, b, sizeof(b));
            if (n > 0)
                (void)!write(relay_out, b, (size_t)n);
            else if (pty == 1 && (n == 0 || (errno != EINTR && errno != EAGAIN)))
                master_open = 0; /* EIO: every holder of the pty's slave has gone */
        }
        if (pf[3].revents) {
            char b[4096];
            ssize_t n = read(relay_in, b, sizeof(b));
            if (n > 0)
                (void)!write(master, b, (size_t)n);
            else if (n == 0 || (errno != EINTR && errno != EAGAIN))
                in_open = 0;
        }
        if (pf[0].revents) {
            struct qp_msg ev;
            int fd;
            if (read_event(sock, &ev, &fd) < 0) {
                if (status < 0) {
                    tty_restore();
                    say("qpod: lost the agent of container %s (the container was stopped?)", s.container);
                    status = EXIT_QPOD;
                }
                break;
            }
            switch (ev.type) {
            case QP_PTY:
                master = fd;
                master_open = 1;
                if (pty == 1)
                    tty_raw(1);
                break;
            case QP_STARTED:
                started = 1;
                log_write(&s, &rec, 0, 0);
                break;
            case QP_STOPPED:
                want_stop = 1;
                break;
            case QP_EXITED:
                status = ev.value;
                break;
            case QP_SIGNALED:
                status = 128 + ev.value;
                death = ev.value;
                break;
            case QP_EXEC_FAILED:
                status = exec_failed(&s, &a, cwd, ev.value);
                death = 0;
                break;
            case QP_REFUSED:
                say("qpod: the agent of container %s refused the command: %s", s.container, strerror(ev.value));
                status = EXIT_QPOD;
                break;
            case QP_STALE:
                close(sock);
                fallback(&a, "container from another configuration");
                say("qpod: container %s was created from another configuration; run the command again",
                    s.container);
                return EXIT_QPOD;
            }
            if (status >= 0)
                break;
        }
        if (want_stop) {
            /* the command stopped (Ctrl-Z, SIGSTOP): stop too, so the shell sees a stopped job;
             * the SIGCONT that resumes us (fg, bg) is forwarded by the loop */
            want_stop = 0;
            tty_restore();
            kill(getpid(), SIGSTOP);
        }
    }
    if (master >= 0) {
        /* what the command wrote last */
        fcntl(master, F_SETFL, O_NONBLOCK);
        char b[16384];
        ssize_t n;
        while ((n = read(master, b, sizeof(b))) > 0)
            (void)!write(relay_out, b, (size_t)n);
        tty_restore();
    }
    if (started || status != EXIT_QPOD)
        log_write(&s, &rec, status, 1);
    if (death && status == 128 + death)
        reraise(death);
    return status < 0 ? EXIT_QPOD : status;
}
