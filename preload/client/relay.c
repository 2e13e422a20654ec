/* qpod-client's relay, for an environment on another host (qpod_proto.h, "The relay"): ssh
 * runs the agent's bridge there, and the command's stdin, stdout and stderr travel as frames;
 * signals, a new terminal size and a reader gone go the same way, the agent's events come back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../qpod_proto.h"
#include "client.h"

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

/* One command relayed: the connection, the queues both ways, what the command did. */
struct relay {
    const struct spec *s;
    struct args *a;
    struct record *rec;
    const char *cwd;
    int rpty;     /* a pty there: the caller's 0, 1 and 2 are its terminal, in the foreground */
    int relay_in; /* the caller's stdin travels (else the command's stdin ends at once) */
    struct winsize ws;
    int sp[2], handled[NSIG];
    struct timespec t0; /* the first attempt to connect */
    int attempt;
    pid_t ssh;
    int rs, errfd;      /* ssh's stdin and stdout (a stream socket), its stderr */
    struct outq q;      /* frames for the bridge */
    char *in;           /* frames from it, inlen bytes of them so far */
    size_t inlen;
    size_t inflight;    /* stdin bytes sent that the command has not taken yet */
    char sshmsg[512];   /* the last line ssh said */
    size_t sshlen;
    int started, status, death, want_stop, in_eof, raw, closed[3], heard;
};

enum { GO_ON, ENDED, RETRY };

/* A remote pty when the caller's 0, 1 and 2 are its terminal, in the foreground (as ssh -t
 * does; streams are merged only where both ends are the terminal anyway); otherwise pipes:
 * stdout and stderr stay apart, and a terminal's stdin is not read (type-ahead stays here).
 * Then the signals, and only 0, 1 and 2 kept. -1 when it cannot start. */
static int relay_prepare(struct relay *r, struct buf *payload, const int *fds, int nfds)
{
    int tty_in = isatty(0), fg = tty_in && tcgetpgrp(0) == getpgrp();
    r->rpty = r->a->tty == 0 ? 0 : tty_in && fg && (r->a->tty == 1 || (isatty(1) && isatty(2)));
    r->relay_in = r->rpty || !tty_in;
    r->ws = (struct winsize){24, 80, 0, 0};
    if (r->rpty) {
        qp_term_fd = 0;
        ioctl(0, TIOCGWINSZ, &r->ws);
        char t[32];
        snprintf(t, sizeof(t), "%ux%u", r->ws.ws_row, r->ws.ws_col);
        qp_buf_tag(payload, 't', t);
        qp_tag_modes(payload, 0); /* the bridge hands the request to the agent there as it is */
    }
    if (qp_setup_signals(payload, r->handled, r->sp) < 0)
        return -1;
    for (int i = 0; i < nfds; i++) /* only 0, 1 and 2 travel */
        if (fds[i] > 2)
            close(fds[i]);
    r->in = malloc(QW_MAX_DATA + sizeof(struct qw_frame));
    if (!r->in)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    return 0;
}

/* ssh started (again), the request queued, nothing heard yet. -1 when it cannot be. */
static int relay_connect(struct relay *r, const struct buf *payload)
{
    r->ssh = start_ssh(r->s, &r->rs, &r->errfd);
    if (r->ssh < 0) {
        qp_say("qpod: cannot start ssh for host %s: %s", r->s->host, strerror(errno));
        return -1;
    }
    r->q.len = 0;
    if (frame(&r->q, QW_REQUEST, payload->p, payload->len) < 0 ||
        (!r->relay_in && frame(&r->q, QW_STDIN_EOF, NULL, 0) < 0))
        return -1;
    r->inlen = r->sshlen = r->inflight = 0;
    r->sshmsg[0] = 0;
    r->started = r->death = r->want_stop = r->raw = r->heard = 0;
    r->closed[0] = r->closed[1] = r->closed[2] = 0;
    r->status = -1;
    r->in_eof = !r->relay_in;
    return 0;
}

/* ssh's stderr: the last line it said is kept (for the line that says why it failed). */
static void ssh_said(struct relay *r)
{
    char b[512];
    ssize_t n = read(r->errfd, b, sizeof(b));
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (b[i] == '\n' || b[i] == '\r') {
                if (r->sshlen)
                    r->sshmsg[r->sshlen] = 0, r->sshlen = 0;
            } else if (r->sshlen < sizeof(r->sshmsg) - 1) {
                if (r->sshlen == 0)
                    r->sshmsg[0] = 0;
                r->sshmsg[r->sshlen++] = b[i];
                r->sshmsg[r->sshlen] = 0;
            }
        }
    } else if (n == 0 || errno != EAGAIN) {
        close(r->errfd);
        r->errfd = -1;
    }
}

/* The signals that came: forwarded as frames; a new size goes to the remote pty. */
static void relay_signals(struct relay *r)
{
    unsigned char c;
    while (read(r->sp[0], &c, 1) == 1) {
        int sig = c & ~QP_SIG_ONE; /* over ssh, every signal goes to the command's group */
        if (sig == SIGWINCH) {
            if (r->rpty && ioctl(0, TIOCGWINSZ, &r->ws) == 0) {
                uint16_t rc[2] = {htons(r->ws.ws_row), htons(r->ws.ws_col)};
                frame(&r->q, QW_WINSIZE, rc, sizeof(rc));
            }
            continue; /* the remote pty signals its own foreground */
        }
        if (sig == SIGCONT && r->raw)
            qp_tty_raw(1);
        if (r->handled[sig])
            frame_int(&r->q, QW_SIGNAL, sig);
    }
}

/* The caller's stdin, within the window the bridge acknowledges. */
static void relay_stdin(struct relay *r)
{
    char b[QW_MAX_DATA];
    size_t room = QW_WINDOW - r->inflight;
    ssize_t n = read(0, b, room < sizeof(b) ? room : sizeof(b));
    if (n > 0) {
        frame(&r->q, QW_STDIN, b, (size_t)n);
        r->inflight += (size_t)n;
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        frame(&r->q, QW_STDIN_EOF, NULL, 0);
        r->in_eof = 1;
    }
}

/* An event of the agent there, as the local session takes it. */
static void relay_event(struct relay *r, uint32_t type, int32_t value)
{
    const struct spec *s = r->s;
    switch (type) {
    case QP_PTY:
        r->raw = 1;
        qp_tty_raw(1);
        break;
    case QP_STARTED:
        r->started = 1;
        qp_log_write(s, r->rec, 0, 0);
        break;
    case QP_STOPPED:
        r->want_stop = 1;
        break;
    case QP_EXITED:
        r->status = value;
        break;
    case QP_SIGNALED:
        r->status = 128 + value;
        r->death = value;
        break;
    case QP_EXEC_FAILED:
        qp_tty_restore();
        r->status = qp_exec_failed(s, r->a, r->cwd, value);
        break;
    case QP_REFUSED:
        qp_tty_restore();
        qp_say("qpod: the agent of container %s on host %s refused the command: %s", s->container, s->host,
               strerror(value));
        r->status = EXIT_QPOD;
        break;
    case QP_STALE:
        qp_tty_restore();
        qp_fallback(r->a, "container from another configuration");
        qp_say("qpod: container %s on host %s was created from another configuration; run the command "
               "again", s->container, s->host);
        r->status = EXIT_QPOD;
        break;
    }
}

/* One frame from the bridge: the command's output, an acknowledgement, a failure, an event. */
static void relay_frame(struct relay *r, uint32_t type, const char *d, uint32_t len)
{
    int32_t v = qw_int_of(d, len);
    if (type == QW_STDOUT || type == QW_STDERR) {
        int fd = type == QW_STDOUT ? 1 : 2;
        if (!r->closed[fd] && qp_write_full(fd, d, len) < 0 && errno == EPIPE) {
            /* our reader went away: the command's next write fails as it would here */
            r->closed[fd] = 1;
            frame_int(&r->q, QW_CLOSED, fd);
        }
    } else if (type == QW_ACK) {
        r->inflight -= (size_t)v < r->inflight ? (size_t)v : r->inflight;
    } else if (type == QW_FAIL) {
        qp_tty_restore();
        int code = v;
        char msg[1100];
        snprintf(msg, sizeof(msg), "%.*s", (int)(len > 4 ? len - 4 : 0), d + 4);
        if (code == QW_FAIL_AGENT) {
            /* the container is gone on that host: the launcher makes it again */
            if (r->s->facts)
                unlink(r->s->facts);
            qp_fallback(r->a, "the remote agent does not answer");
        }
        qp_say("qpod: host %s: %s", r->s->host, msg);
        r->status = EXIT_QPOD;
    } else if (type == QW_EVENT && len >= 8) {
        uint32_t event;
        int32_t value;
        qw_event_of(d, &event, &value);
        relay_event(r, event, value);
    }
}

/* Every complete frame read so far, until the command's status is known. */
static void relay_frames(struct relay *r)
{
    size_t off = 0;
    while (r->status < 0 && r->inlen - off >= sizeof(struct qw_frame)) {
        struct qw_frame h;
        uint32_t type, len;
        memcpy(&h, r->in + off, sizeof(h));
        qw_open(&h, &type, &len);
        if (len > QW_MAX_DATA) {
            qp_tty_restore();
            qp_say("qpod: host %s: the relay sent a frame too long", r->s->host);
            r->status = EXIT_QPOD;
            break;
        }
        if (r->inlen - off < sizeof(h) + len)
            break;
        const char *d = r->in + off + sizeof(h);
        off += sizeof(h) + len;
        relay_frame(r, type, d, len);
    }
    memmove(r->in, r->in + off, r->inlen - off);
    r->inlen -= off;
}

/* ssh did not get through (a server refuses connections beyond its MaxStartups while many
 * commands start at once): nothing ran there. Within a minute of the first attempt, this one
 * is closed and a little time passes before the next: 0; -1 when it is too late. */
static int retry_pause(struct relay *r)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - r->t0.tv_sec >= 60)
        return -1;
    close(r->rs);
    if (r->errfd >= 0)
        close(r->errfd);
    waitpid(r->ssh, NULL, 0);
    struct timespec pause = {0, (long)(50 + r->attempt * 100 + (getpid() * 7919 + r->attempt * 104729) % 250) *
                                    1000000L};
    while (pause.tv_nsec >= 1000000000L)
        pause.tv_sec++, pause.tv_nsec -= 1000000000L;
    nanosleep(&pause, NULL);
    return 0;
}

/* What the bridge sent: RETRY when ssh did not get through, ENDED when the connection or the
 * command has ended, else GO_ON. */
static int relay_read(struct relay *r)
{
    ssize_t n = read(r->rs, r->in + r->inlen, QW_MAX_DATA + sizeof(struct qw_frame) - r->inlen);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return GO_ON;
    if (n <= 0 && !r->heard && ++r->attempt < 10 && retry_pause(r) == 0)
        return RETRY;
    if (n <= 0) {
        /* the connection ended before the command did */
        qp_tty_restore();
        if (r->started) {
            qp_say("qpod: lost the connection to host %s%s%s", r->s->host, *r->sshmsg ? ": " : "", r->sshmsg);
            r->status = 255;
        } else {
            qp_say("qpod: cannot reach host %s for environment '%s'%s%s", r->s->host, r->s->env,
                   *r->sshmsg ? ": " : "", r->sshmsg);
            r->status = EXIT_QPOD;
        }
        return ENDED;
    }
    r->inlen += (size_t)n;
    r->heard = 1;
    relay_frames(r);
    return r->status >= 0 ? ENDED : GO_ON;
}

/* One connection, until the command ends (ENDED) or ssh did not get through (RETRY). */
static int relay_loop(struct relay *r)
{
    for (;;) {
        /* stdin is read once the bridge has answered: until then a failed connection can be
         * tried again without losing input */
        int read_stdin = r->heard && !r->in_eof && (!r->rpty || r->raw) && r->inflight < QW_WINDOW &&
                         r->q.len < QW_WINDOW;
        struct pollfd pf[4] = {{r->rs, POLLIN | (r->q.len ? POLLOUT : 0), 0}, {r->sp[0], POLLIN, 0},
                               {read_stdin ? 0 : -1, POLLIN, 0}, {r->errfd, POLLIN, 0}};
        if (poll(pf, 4, -1) < 0 && errno != EINTR)
            return ENDED;
        if (pf[3].revents)
            ssh_said(r);
        if (pf[1].revents)
            relay_signals(r);
        if (pf[2].revents)
            relay_stdin(r);
        if (pf[0].revents & POLLOUT) {
            ssize_t n = send(r->rs, r->q.p, r->q.len, MSG_NOSIGNAL);
            if (n > 0) {
                memmove(r->q.p, r->q.p + n, r->q.len - (size_t)n);
                r->q.len -= (size_t)n;
            }
        }
        int step = pf[0].revents & (POLLIN | POLLHUP | POLLERR) ? relay_read(r) : GO_ON;
        if (step != GO_ON)
            return step;
        if (r->want_stop) {
            /* the command stopped (Ctrl-Z): stop too; the SIGCONT that resumes us is forwarded */
            r->want_stop = 0;
            qp_tty_restore();
            kill(getpid(), SIGSTOP);
        }
    }
}

int qp_relay(struct spec *s, struct args *a, struct record *rec, struct buf *payload, const char *cwd,
             const int *fds, int nfds)
{
    struct relay r = {.s = s, .a = a, .rec = rec, .cwd = cwd};
    if (relay_prepare(&r, payload, fds, nfds) < 0)
        return EXIT_QPOD;
    int step;
    do {
        if (relay_connect(&r, payload) < 0)
            return EXIT_QPOD;
        step = relay_loop(&r);
    } while (step == RETRY);
    qp_tty_restore();
    free(payload->p);
    close(r.rs); /* ssh sees its end and exits; the bridge has already gone */
    if (r.started || r.status != EXIT_QPOD)
        qp_log_write(s, rec, r.status, 1);
    if (r.death && r.status == 128 + r.death)
        qp_reraise(r.death);
    return r.status < 0 ? EXIT_QPOD : r.status;
}
