/* qpod-client's launch spec: the file the launcher writes for a root (qpod_engine/launch/spec.py:
 * tab-separated lines, fields escaped as \\ \t \n), trusted before it is read, checked against
 * the config files it was made from, and what it says: the container's paths for the host's,
 * the branch, the environment passed on. Also the agent's socket, trusted the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../qpod_fnv.h"
#include "../qpod_proto.h"
#include "client.h"

extern char **environ;

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

/* Ends with status 125 (_exit: the client may run in the process the preload library was
 * loaded in, whose atexit handlers and stdio buffers are its program's). */
static void require_trusted(const char *path, const struct stat *st, int dir)
{
    if (owned_closed(st, dir))
        return;
    unsigned uid = (unsigned)st->st_uid, mode = (unsigned)st->st_mode & 07777;
    if (uid != (unsigned)geteuid())
        qp_say("qpod: %s is not yours (owner uid %u, mode %04o): another user could choose what runs as you; "
            "remove it (as its owner or root) and run the command again", path, uid, mode);
    else if (dir ? !S_ISDIR(st->st_mode) : !S_ISREG(st->st_mode))
        qp_say("qpod: %s is not a %s (owner uid %u, mode %04o): remove it and run the command again", path,
            dir ? "directory" : "regular file", uid, mode);
    else
        qp_say("qpod: %s is writable by others (owner uid %u, mode %04o): another user could choose what runs as "
            "you; remove it and run the command again", path, uid, mode);
    _exit(EXIT_QPOD);
}

/* The directories holding path, from its own up to the state dir when path is inside it. */
static void require_trusted_dirs(const char *path)
{
    char *sd = qp_state_dir(), *d = strdup(path);
    if (!d) {
        qp_say("qpod: out of memory");
        _exit(EXIT_QPOD);
    }
    for (char *slash; (slash = strrchr(d, '/')) != NULL;) {
        if (slash == d)
            slash[1] = 0;
        else
            *slash = 0;
        struct stat st;
        if (stat(d, &st) != 0) {
            qp_say("qpod: cannot look at %s: %s", d, strerror(errno));
            _exit(EXIT_QPOD);
        }
        require_trusted(d, &st, 1);
        if (slash == d || !sd || strcmp(d, sd) == 0 || !qp_within(d, sd))
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
            qp_buf_add(&b, tmp, (size_t)n);
    close(fd);
    if (n < 0) {
        free(b.p);
        return NULL;
    }
    if (!b.p)
        qp_buf_add(&b, "", 0);
    return b.p;
}

/* Connects to the agent's socket in dir once dir is known to be ours and closed: checked through
 * the descriptor the connection goes through (no swap in between). -1 (errno set) when nothing
 * answers there. */
int qp_connect_agent(const char *dir)
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

/* Reads the spec at path into s (its strings point into the text read); with check, a config
 * file changed since the launcher wrote it makes it stale. 0, or -1 when it is no usable spec. */
int qp_load_spec(const char *path, struct spec *s, int check)
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
char *qp_read_head(const struct spec *s)
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

/* The container's path for a host path, through the spec's mounts; NULL when none holds it. */
char *qp_map_path(const struct spec *s, const char *path)
{
    for (int i = 0; i < s->nmaps; i++) {
        const char *h = s->maps[i].host;
        if (qp_within(path, h)) {
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

/* The file the launcher writes for a root: FNV-1a of the root's path (the same in
 * qpod_engine/launch/spec.py). */
char *qp_fast_spec_path(const char *root)
{
    uint64_t h = qp_fnv1a(root, strlen(root));
    char *sd = qp_state_dir(), *out = NULL;
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

/* The environment the command gets: the caller's variables the spec passes (and does not deny),
 * then the ones it sets; never LD_PRELOAD nor QPOD_*. */
void qp_add_env(struct buf *payload, const struct spec *s)
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
            qp_buf_tag(payload, 'e', *e);
    }
    for (int i = 0; i < s->nset; i++) {
        const char *eq = strchr(s->set[i], '=');
        if (eq && !name_matches(s->set[i], (size_t)(eq - s->set[i]), always_denied, 2))
            qp_buf_tag(payload, 'e', s->set[i]);
    }
}
