/* qpod-client's command log: one JSON line per record, appended under an flock of the side lock
 * file, rotated past the size bound (the same protocol as qpod_engine/log/cmdlog.py): a record
 * when the command starts, another when it ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/* s as a JSON string: bytes that are not UTF-8 as the lone surrogates Python reads them as. */
static void json_str(struct buf *b, const char *s)
{
    qp_buf_str(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        char esc[16];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            qp_buf_add(b, esc, 2);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            qp_buf_str(b, esc);
            p++;
        } else if (c < 0x80) {
            qp_buf_add(b, (const char *)p, 1);
            p++;
        } else {
            /* valid UTF-8 goes as it is; a stray byte as the lone surrogate Python's
             * surrogateescape uses, so the record stays valid JSON and the bytes are kept */
            int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            int ok = len > 0;
            for (int i = 1; ok && i < len; i++)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok) {
                qp_buf_add(b, (const char *)p, (size_t)len);
                p += len;
            } else {
                snprintf(esc, sizeof(esc), "\\udc%02x", c);
                qp_buf_str(b, esc);
                p++;
            }
        }
    }
    qp_buf_str(b, "\"");
}



static void record_json(struct buf *b, const struct record *r, int status, int done)
{
    char num[64];
    qp_buf_str(b, "{\"id\":");
    json_str(b, r->id);
    qp_buf_str(b, ",\"time\":");
    json_str(b, r->time);
    qp_buf_str(b, ",\"repo\":");
    json_str(b, r->repo);
    qp_buf_str(b, ",\"branch\":");
    if (r->branch)
        json_str(b, r->branch);
    else
        qp_buf_str(b, "null");
    qp_buf_str(b, ",\"env\":");
    json_str(b, r->env);
    qp_buf_str(b, ",\"container\":");
    json_str(b, r->container);
    qp_buf_str(b, ",\"cwd\":");
    json_str(b, r->cwd);
    qp_buf_str(b, ",\"argv\":[");
    for (int i = 0; r->argv[i]; i++) {
        if (i)
            qp_buf_str(b, ",");
        json_str(b, r->argv[i]);
    }
    qp_buf_str(b, "],\"path\":");
    json_str(b, r->path);
    qp_buf_str(b, ",\"reason\":");
    json_str(b, r->reason);
    snprintf(num, sizeof(num), ",\"pid\":%d", (int)getpid());
    qp_buf_str(b, num);
    if (done && r->ended) {
        qp_buf_str(b, ",\"ended\":");
        json_str(b, r->ended);
    }
    if (done) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double d = (double)now.tv_sec + now.tv_nsec / 1e9 - r->t0;
        snprintf(num, sizeof(num), ",\"status\":%d,\"duration\":%.3f}\n", status, d < 0 ? 0.0 : d);
    } else {
        snprintf(num, sizeof(num), ",\"status\":null}\n");
    }
    qp_buf_str(b, num);
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
            qp_say("qpod: gave up waiting for %s after %d s: the record is written without it", path, LOG_LOCK_WAIT);
            return;
        }
        nanosleep(&pause, NULL);
    }
}

/* Appends the start record (done 0) or the end record (status, duration); one line on stderr
 * when it cannot. */
void qp_log_write(const struct spec *s, const struct record *r, int status, int done)
{
    if (!s->log_path)
        return;
    struct buf line = {0};
    record_json(&line, r, status, done);
    char lock[4200];
    snprintf(lock, sizeof(lock), "%s.lock", s->log_path);
    /* its directories are made only when they are missing (the end record is written while the
     * caller waits: no system call it does not need) */
    int lfd = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0 && errno == ENOENT) {
        make_dirs(lock);
        lfd = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    }
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
    qp_say("qpod: cannot write the command log %s: %s", s->log_path, strerror(errno));
}


/* The record's start: its time (UTC, milliseconds), t0 for the duration, its id. */
void qp_iso_time(struct record *r)
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

/* Why the command runs in the container, in the words of qpod_engine/routing/policy.py decide(). */
const char *qp_why(const struct spec *s, const struct args *a, char *out, size_t size)
{
    if (a->path[0] == '/' && qp_within(a->path, s->root))
        snprintf(out, size, "program lives in bound repository %s", s->root);
    else if (qp_in_list(qp_base_name(a->path), (const char *const *)s->cmds, s->ncmds))
        snprintf(out, size, "'%s' is a command of environment '%s'", qp_base_name(a->path), s->env);
    else if (a->explicit)
        snprintf(out, size, "qpod exec in repository bound to '%s'", s->env);
    else /* the preload library matched an interpreter's script */
        snprintf(out, size, "a script of bound repository %s, run by %s", s->root, qp_base_name(a->path));
    return out;
}
