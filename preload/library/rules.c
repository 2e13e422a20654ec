/* The preload library's decision: the rules file the engine compiles (trusted, sealed), parsed
 * for one launch, from a static cache guarded by a sequence counter (a seqlock: readers never
 * wait) or, when it cannot be used, from qpod-shell's descriptor or the last good rules. The
 * same decision as qpod_engine/routing/policy.py decide(); see README.md, "The decision".
 *
 * Hook path: no malloc, no stdio, no locks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../qpod_fnv.h"
#include "library.h"

/* ---------------------------------------------------------------------------------------------
 * The parser.
 */
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


/* What the lines of the rules say about one launch, gathered while they are read: the
 * innermost root holding the program (home), its .git (git), the cwd, the script. */
struct dir_match {
    long len; /* -1: no root holds the directory */
    const char *root;
    int host, named; /* sent back to the host; the command on the root's list */
};

struct scan {
    long home_len, git_len, script_len, script_git_len; /* -1: no such root */
    int script_host, path_in_root, link_in_root;
    const char *script_root;
    int home_host;
    const char *home_root;
    struct dir_match cwd, alt; /* the cwd (or the directory a build tool is given), in->cwd_else */
};

/* launcher<TAB>field...: the fields (t is the tab after the key, le the line's end), each
 * NUL-terminated; none when they do not fit or the first is not an absolute path. */
static void parse_launcher(const char *t, const char *le, struct dec_out *out)
{
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
}

/* client<TAB>path: the native-exec client, an absolute path that fits. */
static void parse_client(const char *t, const char *le, struct dec_out *out)
{
    size_t cl = (size_t)(le - t - 1);
    if (cl < CLIENT_MAX && t[1] == '/') {
        memcpy(out->client, t + 1, cl);
        out->client[cl] = 0;
    }
}

/* Whether root r (its line's commands from re to le) is the innermost so far holding dir. */
static void match_dir(const char *dir, const char *r, size_t rl, const char *re, const char *le,
                      const struct dec_in *in, struct dir_match *m)
{
    if (!within(dir, r, rl) || (long)rl <= m->len)
        return;
    m->len = (long)rl;
    m->root = r;
    m->host = same(in->host_root, r, rl);
    m->named = 0;
    for (const char *f = re; f < le && !m->named;) {
        f++;
        const char *fe = memchr(f, '\t', (size_t)(le - f));
        if (!fe)
            fe = le;
        m->named = (size_t)(fe - f) == in->name_len && qp_same(f, in->name, in->name_len);
        f = fe;
    }
}

/* root<TAB>path<TAB>command...: does the root hold the program, its link, the script, the cwd
 * (and is the command on its list)? The innermost root of each kind is kept. */
static void parse_root(const char *t, const char *le, const struct dec_in *in, struct scan *sc)
{
    const char *r = t + 1;
    const char *re = memchr(r, '\t', (size_t)(le - r));
    if (!re)
        re = le;
    size_t rl = (size_t)(re - r);
    if (!(rl > 0 && rl < PATH_MAX && r[0] == '/'))
        return;
    sc->path_in_root |= in->path && within(in->path, r, rl);
    sc->link_in_root |= in->link && within(in->link, r, rl);
    if (in->path && within(in->path, r, rl) && in_git_dir(in->path, rl)) {
        if ((long)rl > sc->git_len)
            sc->git_len = (long)rl;
    }
    if (in->script && within(in->script, r, rl)) {
        if (in_git_dir(in->script, rl)) {
            if ((long)rl > sc->script_git_len)
                sc->script_git_len = (long)rl;
        } else if ((long)rl > sc->script_len) {
            sc->script_len = (long)rl;
            sc->script_root = r;
            sc->script_host = same(in->host_root, r, rl);
        }
    }
    if (in->path && within(in->path, r, rl) && !in_git_dir(in->path, rl) && (long)rl > sc->home_len) {
        sc->home_len = (long)rl;
        sc->home_root = r;
        sc->home_host = same(in->host_root, r, rl);
    }
    match_dir(in->cwd, r, rl, re, le, in, &sc->cwd);
    if (in->cwd_else)
        match_dir(in->cwd_else, r, rl, re, le, in, &sc->alt);
}

/* The program's own repository wins (unless the innermost root holding it keeps it in its
 * .git: git's machinery); else the innermost repository around the cwd, for a command on its
 * list; never the repository the launcher just sent back to the host. */
static void choose(const struct dec_in *in, struct scan *sc, struct dec_out *out)
{
    if (sc->git_len > sc->home_len)
        sc->home_len = -1;
    if (in->link && !sc->link_in_root)
        sc->home_len = -1; /* a link to a host program (a venv's bin/python3) is the host's */
    if (sc->script_git_len > sc->script_len || sc->path_in_root)
        sc->script_len = -1; /* only a host interpreter runs where its script lives */
    if (sc->home_len < 0 && sc->script_len >= 0) { /* no program of a repository: the script's, if any */
        sc->home_len = sc->script_len;
        sc->home_root = sc->script_root;
        sc->home_host = sc->script_host;
    }
    /* a makefile in no bound tree (make -f /dev/null): where make works decides */
    const struct dir_match *w = sc->cwd.len >= 0 || !in->cwd_else ? &sc->cwd : &sc->alt;
    out->by_command = sc->home_len < 0;
    if (sc->home_len >= 0)
        out->redirect = !sc->home_host;
    else
        out->redirect = w->len >= 0 && w->named && !w->host;
    const char *won = sc->home_len >= 0 ? sc->home_root : w->root;
    size_t wl = (size_t)(sc->home_len >= 0 ? sc->home_len : w->len);
    if (out->redirect && won && wl < PATH_MAX) {
        memcpy(out->root, won, wl);
        out->root[wl] = 0;
    } else if (out->redirect) {
        out->root[0] = 0;
    } /* (read only for a redirect: a host launch leaves that page of the caller's stack alone) */
    if (out->nfields == 0)
        out->redirect = 0;
}

/* Reads buf (possibly being rewritten by another thread: every access stays inside
 * buf[0..len), the caller validates with the sequence counter). Returns -1 for a file that is
 * not a version-1 rules file. */
static int parse_rules(const char *buf, size_t len, const struct dec_in *in, struct dec_out *out)
{
    static const char header[] = "qpod-rules\t1\n";
    if (len < sizeof(header) - 1 || !qp_same(buf, header, sizeof(header) - 1))
        return -1;
    const char *p = buf + sizeof(header) - 1, *end = buf + len;
    struct scan sc = {.home_len = -1, .git_len = -1, .script_len = -1, .script_git_len = -1};
    sc.cwd.len = sc.alt.len = -1;
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
        if (kl == 8 && qp_same(p, "launcher", 8))
            parse_launcher(t, le, out);
        else if (kl == 6 && qp_same(p, "client", 6) && t < le)
            parse_client(t, le, out);
        else if (kl == 4 && qp_same(p, "root", 4) && t < le)
            parse_root(t, le, in, &sc);
        p = le + 1;
    }
    choose(in, &sc, out);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The cache, the trust and integrity checks, the decision.
 */
static struct {
    unsigned seq; /* odd while a writer fills the cache */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    size_t len;
    int valid; /* data holds rules that passed rules_ok (and, being read, the file checks) */
    char *data; /* RULES_MAX bytes, mapped by the first writer: not a megabyte of every
                 * process's image that the loader would map at each start */
} cache;

/* The cache's buffer, for the writer that holds the sequence (odd); NULL when it cannot be
 * mapped. Never unmapped: readers may hold it. */
static char *cache_buf(void)
{
    if (!cache.data) {
        void *m = mmap(NULL, RULES_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED)
            __atomic_store_n(&cache.data, (char *)m, __ATOMIC_RELEASE);
    }
    return cache.data;
}

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

/* (out of line: its buffer lives in a frame of its own, used only when the file is read) */
__attribute__((noinline)) static int dir_owned_closed(const char *path)
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
    if (len < sizeof(header) - 1 + SUM_LINE || !qp_same(buf, header, sizeof(header) - 1))
        return 0;
    const char *s = buf + len - SUM_LINE;
    if (s[-1] != '\n' || !qp_same(s, "sum\t", 4) || s[SUM_LINE - 1] != '\n')
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
        char *cb = cache_buf();
        if (cb) {
            memcpy(cb, buf, (size_t)n);
            cache.dev = fst->st_dev;
            cache.ino = fst->st_ino;
            cache.size = fst->st_size;
            cache.mtime = fst->st_mtim;
            cache.len = (size_t)n;
            cache.valid = 1;
        }
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

/* True when the cache holds the very file st describes (read consistently with its writer). */
static int cache_holds(const struct stat *st)
{
    unsigned s1 = __atomic_load_n(&cache.seq, __ATOMIC_ACQUIRE);
    int same = !(s1 & 1) && cache_matches(st);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return same && __atomic_load_n(&cache.seq, __ATOMIC_RELAXED) == s1;
}

/* Decides from the rules file (trusted and sealed, see above), else decide_fallback. Returns 0
 * with out filled, -1 when there are no usable rules: everything runs on the host. The common
 * case is one stat of the file per launch, the rules parsed from the cache. The directory is
 * checked whenever the file is read: while the cache holds this very file (its inode, size
 * and mtime, still the user's and closed), nobody could have put another one in its place, so
 * each launch skips that stat (every program of an activated session pays for each). */
int qp_decide(const char *rules_path, int rules_fd, const struct dec_in *in, struct dec_out *out)
{
    struct stat st;
    if (stat(rules_path, &st) < 0 || !owned_closed(&st, 0) || st.st_size >= RULES_MAX ||
        (!cache_holds(&st) && !dir_owned_closed(rules_path)))
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
        char *cb = cache_buf();
        if (!cb) { /* no cache today: read privately below */
            __atomic_store_n(&cache.seq, s1 + 2, __ATOMIC_RELEASE);
            break;
        }
        ssize_t n = lseek(fd, 0, SEEK_SET) == 0 ? read_all(fd, cb, RULES_MAX) : -1;
        int good = n > 0 && rules_ok(cb, (size_t)n);
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
