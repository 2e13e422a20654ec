/* qpod-client's local session: a command in a container of this machine. The caller's own
 * descriptors go to the container's agent with the request; the client stays as the command's
 * stand-in: it forwards signals, stops when the command stops, relays a pty when the command
 * has one, writes the command log's records and ends with the command's status.
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
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "../qpod_proto.h"
#include "client.h"

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

static void send_signal(int sock, int sig, int one)
{
    struct qp_msg m = {one ? QP_SIGNAL_ONE : QP_SIGNAL, sig};
    (void)!send(sock, &m, sizeof(m), MSG_NOSIGNAL);
}

/* The status and the one line for a command the agent could not start (QP_EXEC_FAILED). */
int qp_exec_failed(const struct spec *s, const struct args *a, const char *cwd, int value)
{
    int err = value & ~QP_CHDIR_FLAG;
    if (value & QP_CHDIR_FLAG) {
        qp_say("qpod: %s: cannot enter it in the container of environment '%s': %s", cwd, s->env, strerror(err));
        return EXIT_QPOD;
    }
    if (err == ENOENT) {
        qp_say("qpod: %s: not found in environment %s (image %s)", a->argv[0], s->env, s->image ? s->image : "?");
        return 127;
    }
    if (err == ENOEXEC) {
        qp_say("qpod: %s: cannot execute binary file: Exec format error", a->argv[0]);
        return 126;
    }
    qp_say("qpod: %s: %s", a->argv[0], strerror(err));
    return err == EACCES || err == EISDIR ? 126 : EXIT_QPOD;
}

/* ------------------------------------------------------------------------------------------
 * The session.
 */
struct local {
    const struct spec *s;
    const struct args *a;
    struct record *rec;
    const char *cwd;
    int pty;     /* 1: terminal-owning (a pty as 0, 1 and 2); 2: a pty as controlling terminal only */
    int ttyfd;   /* the caller's /dev/tty, for pty 2 */
    int devnull; /* stdin for a job in the background */
    int sock, sp[2], handled[NSIG];
    struct winsize ws;
    int master, master_open, slave_open, in_open, relay_in, relay_out;
    int started, status, death, want_stop;
    int kept[3]; /* copies of 0, 1, 2 until the command starts: a stale container sends the
                  * launch back to the launcher, which needs them */
};

enum { GO_ON, ENDED, GIVE_UP };

/* The terminal: a job in the background must not read it (natively it would stop on
 * SIGTTIN when it tried), and only terminal-owning programs get a pty. */
static void choose_terminal(struct local *l, int *fds, int nfds)
{
    const struct args *a = l->a;
    int tty_in = isatty(0), fg = 0;
    if (tty_in) {
        pid_t pg = tcgetpgrp(0);
        fg = pg == getpgrp();
    }
    l->pty = a->tty == 1   ? tty_in && fg
             : a->tty == 0 ? 0
                           : tty_in && fg && isatty(1) && qp_wants_terminal(l->s, a->argv);
    /* Otherwise the command keeps the caller's descriptors and, when the caller runs in the
     * foreground of a terminal, gets a pty of its own as controlling terminal: /dev/tty
     * prompts (read < /dev/tty, passwords) are relayed, but only while it has /dev/tty open,
     * so keys typed ahead stay on the host terminal for whoever reads them next. */
    l->ttyfd = -1;
    if (!l->pty && a->tty != 0) {
        l->ttyfd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (l->ttyfd >= 0 && tcgetpgrp(l->ttyfd) != getpgrp()) {
            close(l->ttyfd);
            l->ttyfd = -1;
        }
        if (l->ttyfd >= 0)
            l->pty = 2;
    }
    qp_term_fd = l->pty == 1 ? 0 : l->ttyfd;
    l->devnull = -1;
    if (tty_in && !fg) {
        l->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        for (int i = 0; i < nfds; i++)
            if (fds[i] == 0 && l->devnull >= 0)
                fds[i] = l->devnull;
    }
}

/* The descriptors the command gets, each on its number ('f' tags; the pty's slave takes the
 * terminal's place), and the pty's size. Returns how many go into send_fds. */
static int attach(struct local *l, struct buf *payload, const int *fds, int nfds, int *send_fds)
{
    int nsend = 0;
    for (int i = 0; i < nfds; i++) {
        int target = fds[i] == l->devnull ? 0 : fds[i];
        if (l->pty == 1 && target <= 2 && isatty(fds[i]))
            continue; /* the pty's slave takes the terminal's place */
        send_fds[nsend++] = fds[i];
        qp_buf_tagn(payload, 'f', target);
    }
    l->ws = (struct winsize){24, 80, 0, 0};
    if (l->pty) {
        ioctl(qp_term_fd, TIOCGWINSZ, &l->ws);
        char t[32];
        snprintf(t, sizeof(t), "%ux%u", l->ws.ws_row, l->ws.ws_col);
        qp_buf_tag(payload, l->pty == 1 ? 't' : 'T', t);
        qp_tag_modes(payload, qp_term_fd);
    }
    return nsend;
}

/* pty 2: is /dev/tty open in the command? (the master hangs up while nobody has it open; the
 * hang-up cannot be waited for, so it is looked at again every 100 ms). The poll timeout. */
static int watch_slave(struct local *l)
{
    int timeout = -1;
    struct pollfd q = {l->master, POLLIN, 0};
    poll(&q, 1, 0);
    int now = !(q.revents & POLLHUP);
    if (now != l->slave_open) {
        l->slave_open = now;
        if (now)
            qp_tty_raw(0);
        else
            qp_tty_restore();
    }
    l->master_open = now || (q.revents & POLLIN);
    if (!now)
        timeout = 100;
    return timeout;
}

/* The signals that came (the handlers' pipe): forwarded; a new size goes to the pty. */
static void on_signals(struct local *l)
{
    unsigned char c;
    while (read(l->sp[0], &c, 1) == 1) {
        int sig = c & ~QP_SIG_ONE;
        if (sig == SIGWINCH && l->master >= 0) {
            if (ioctl(qp_term_fd, TIOCGWINSZ, &l->ws) == 0)
                ioctl(l->master, TIOCSWINSZ, &l->ws);
            if (l->pty == 1)
                continue; /* the pty signals its own foreground */
        }
        if (sig == SIGCONT && l->master >= 0 && l->slave_open)
            qp_tty_raw(l->pty == 1);
        if (l->handled[sig])
            send_signal(l->sock, sig, c & QP_SIG_ONE);
    }
}

/* What the command wrote to its pty, to the terminal. */
static void from_master(struct local *l)
{
    char b[16384];
    ssize_t n = read(l->master, b, sizeof(b));
    if (n > 0)
        (void)!write(l->relay_out, b, (size_t)n);
    else if (l->pty == 1 && (n == 0 || (errno != EINTR && errno != EAGAIN)))
        l->master_open = 0; /* EIO: every holder of the pty's slave has gone */
}

/* What was typed, to the command's pty. */
static void to_master(struct local *l)
{
    char b[4096];
    ssize_t n = read(l->relay_in, b, sizeof(b));
    if (n > 0)
        (void)!write(l->master, b, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        l->in_open = 0;
}

static void drop_kept(struct local *l)
{
    for (int i = 0; i < 3; i++)
        if (l->kept[i] >= 0) {
            close(l->kept[i]);
            l->kept[i] = -1;
        }
}

/* The agent takes its socket away first when its container is being stopped. */
static int agent_gone(const struct spec *s)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof(p), "%s/agent.sock", s->agent_dir);
    return stat(p, &st) < 0 && errno == ENOENT;
}

/* "was stopped by qpod stop" when qpod stopped it (it leaves a note in the agent's dir; its
 * SIGKILL after the timeout included), else what was seen, outside qpod */
static const char *stopped_by(const struct spec *s, const char *what)
{
    static char out[256];
    char p[4200], by[128] = "";
    snprintf(p, sizeof(p), "%s/stopped-by", s->agent_dir);
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, by, sizeof(by) - 1);
        by[n > 0 ? n : 0] = 0;
        by[strcspn(by, "\n")] = 0;
        close(fd);
    }
    if (by[0])
        snprintf(out, sizeof(out), "was stopped %s", by);
    else
        snprintf(out, sizeof(out), "%s outside qpod (podman stop or rm)", what);
    return out;
}

/* One event from the agent. ENDED once the command's status is known (or the agent is lost);
 * GIVE_UP when the container is of another configuration (the launcher takes over). */
static int on_agent(struct local *l)
{
    struct qp_msg ev;
    int fd;
    if (read_event(l->sock, &ev, &fd) < 0) {
        if (l->status < 0) {
            /* the container went away at once (podman rm -f, stop's SIGKILL): the command was
             * killed with it, and ends as a killed process does */
            qp_tty_restore();
            l->rec->ended = stopped_by(l->s, "went away");
            qp_say("qpod: container %s %s while the command ran: it was killed", l->s->container, l->rec->ended);
            l->status = 128 + SIGKILL;
            l->death = SIGKILL;
        }
        return ENDED;
    }
    switch (ev.type) {
    case QP_PTY:
        l->master = fd;
        l->master_open = 1;
        if (l->pty == 1)
            qp_tty_raw(1);
        break;
    case QP_STARTED:
        l->started = 1;
        drop_kept(l);
        qp_log_write(l->s, l->rec, 0, 0);
        break;
    case QP_STOPPED:
        l->want_stop = ev.value > 0 ? ev.value : SIGSTOP;
        break;
    case QP_EXITED:
        l->status = ev.value;
        break;
    case QP_SIGNALED:
        l->status = 128 + ev.value;
        l->death = ev.value;
        if (agent_gone(l->s)) { /* its container is being stopped: that is what signalled it */
            l->rec->ended = stopped_by(l->s, "was stopped");
            qp_say("qpod: container %s %s while the command ran", l->s->container, l->rec->ended);
        }
        break;
    case QP_EXEC_FAILED:
        l->status = qp_exec_failed(l->s, l->a, l->cwd, ev.value);
        l->death = 0;
        break;
    case QP_REFUSED:
        qp_say("qpod: the agent of container %s refused the command: %s", l->s->container, strerror(ev.value));
        l->status = EXIT_QPOD;
        break;
    case QP_STALE:
        close(l->sock);
        for (int i = 0; i < 3; i++) /* the launcher runs the command with the caller's own */
            if (l->kept[i] >= 0)
                dup2(l->kept[i], i);
        qp_fallback(l->a, "container from another configuration");
        qp_say("qpod: container %s was created from another configuration; run the command again",
               l->s->container);
        return GIVE_UP;
    }
    return l->status >= 0 ? ENDED : GO_ON;
}

/* Until the command ends: its events, the signals, the pty. ENDED or GIVE_UP. */
static int watch(struct local *l)
{
    for (;;) {
        int timeout = -1;
        if (l->master >= 0 && l->pty == 2)
            timeout = watch_slave(l);
        struct pollfd pf[4] = {{l->sock, POLLIN, 0}, {l->sp[0], POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
        if (l->master >= 0 && l->master_open)
            pf[2].fd = l->master;
        if (l->master >= 0 && l->in_open && l->slave_open)
            pf[3].fd = l->relay_in;
        if (poll(pf, 4, timeout) < 0 && errno != EINTR)
            return ENDED;
        if (pf[1].revents)
            on_signals(l);
        if (pf[2].revents)
            from_master(l);
        if (pf[3].revents)
            to_master(l);
        if (pf[0].revents) {
            int step = on_agent(l);
            if (step != GO_ON)
                return step;
        }
        if (l->want_stop) {
            /* the command stopped (Ctrl-Z, SIGSTOP): stop too, so the shell sees a stopped job;
             * the SIGCONT that resumes us (fg, bg) is forwarded by the loop */
            /* by the same signal: the shell says "Stopped" for Ctrl-Z, "Stopped (signal)" for
             * SIGSTOP, as natively */
            int sig = l->want_stop;
            l->want_stop = 0;
            qp_tty_restore();
            struct sigaction dfl, old;
            memset(&dfl, 0, sizeof(dfl));
            dfl.sa_handler = SIG_DFL;
            sigaction(sig, &dfl, &old);
            kill(getpid(), sig);
            sigaction(sig, &old, NULL);
        }
    }
}

/* The command has ended: what it wrote last, the end record, its status (or its signal). */
static int finish(struct local *l)
{
    if (l->master >= 0) {
        /* what the command wrote last */
        fcntl(l->master, F_SETFL, O_NONBLOCK);
        char b[16384];
        ssize_t n;
        while ((n = read(l->master, b, sizeof(b))) > 0)
            (void)!write(l->relay_out, b, (size_t)n);
        qp_tty_restore();
    }
    if (l->started || l->status != EXIT_QPOD)
        qp_log_write(l->s, l->rec, l->status, 1);
    if (l->death && l->status == 128 + l->death)
        qp_reraise(l->death);
    return l->status < 0 ? EXIT_QPOD : l->status;
}

int qp_run_local(const struct spec *s, const struct args *a, struct record *rec, struct buf *payload,
                 const char *cwd, int *fds, int nfds)
{
    struct local l = {.s = s, .a = a, .rec = rec, .cwd = cwd, .master = -1, .status = -1, .in_open = 1,
                      .kept = {-1, -1, -1}};
    choose_terminal(&l, fds, nfds);
    int send_fds[QP_MAX_FDS];
    int nsend = attach(&l, payload, fds, nfds, send_fds);
    if (qp_setup_signals(payload, l.handled, l.sp) < 0)
        return EXIT_QPOD;
    l.sock = qp_connect_agent(s->agent_dir);
    if (l.sock < 0) {
        qp_fallback(a, "agent does not answer");
        qp_say("qpod: container %s is not running (its agent does not answer: %s)", s->container, strerror(errno));
        return EXIT_QPOD;
    }
    if (send_request(l.sock, payload, send_fds, nsend) < 0) {
        qp_fallback(a, "agent does not take the request");
        qp_say("qpod: cannot hand the command to container %s: %s", s->container, strerror(errno));
        return EXIT_QPOD;
    }
    free(payload->p);

    l.relay_in = l.pty == 1 ? 0 : l.ttyfd, l.relay_out = l.pty == 1 ? 1 : l.ttyfd, l.slave_open = l.pty == 1;
    /* the command has the descriptors now: holding them here would keep pipes open (but for a
     * copy of 0, 1 and 2 until it has started: see kept) */
    if (!a->spec) /* from the launcher there is no going back to it */
        for (int i = 0; i < 3; i++)
            l.kept[i] = fcntl(i, F_DUPFD_CLOEXEC, 10);
    for (int i = 0; i < nfds; i++)
        if (fds[i] != 2 && !(l.pty == 1 && fds[i] <= 1))
            close(fds[i]);
    if (l.devnull >= 0)
        close(l.devnull);
    int how = watch(&l);
    drop_kept(&l);
    if (how == GIVE_UP)
        return EXIT_QPOD;
    return finish(&l);
}
