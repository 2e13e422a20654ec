/* The remote side of qpod's relay (qpod_proto.h, "The relay"): part of the agent's program,
 * started by ssh on the host that runs an environment's container:
 *
 *   qpod-agent --bridge AGENT_DIR CONTAINER    relay one command to the agent in AGENT_DIR
 *   qpod-agent --check AGENT_DIR MARKER TOKEN [PATH...]
 *                                              is this host's tree the client's? (see below)
 *
 * The bridge stands in for the client on this host: it makes the pipes the command gets as its
 * stdin, stdout and stderr (in terminal mode the agent makes a pty), hands them to the agent,
 * and copies bytes between them and the frames on its own stdin and stdout (ssh's channel).
 * When that channel ends (the client or the connection died), the bridge exits: its agent
 * connection closes and the agent kills the command's process group, so nothing outlives a
 * dropped connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "qpod_proto.h"

int bridge_main(int argc, char **argv);
int check_main(int argc, char **argv);

/* A frame to the client (stdout: ssh's channel). -1 when the channel is gone. */
static int put(uint32_t type, const void *data, size_t len)
{
    struct qw_frame h = qw_header(type, len);
    return qp_write_full(1, &h, sizeof(h)) < 0 || (len && qp_write_full(1, data, len) < 0) ? -1 : 0;
}

static int put_int(uint32_t type, int32_t v)
{
    uint32_t n = qw_int(v);
    return put(type, &n, sizeof(n));
}

static int put_event(uint32_t type, int32_t value)
{
    uint32_t m[2];
    qw_event(m, type, value);
    return put(QW_EVENT, m, sizeof(m));
}

static int fail(int code, const char *msg)
{
    char buf[1024];
    uint32_t c = qw_int(code);
    memcpy(buf, &c, 4);
    size_t l = strlen(msg);
    if (l > sizeof(buf) - 4)
        l = sizeof(buf) - 4;
    memcpy(buf + 4, msg, l);
    put(QW_FAIL, buf, 4 + l);
    return 1;
}

/* The container was stopped (a reboot, `podman stop`): start it with this host's podman and
 * wait for its agent. Its config is unchanged: the client's request carries the config hash,
 * and the agent refuses a stale one. */
static int start_container(const char *dir, const char *name)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        execlp("podman", "podman", "start", name, (char *)NULL);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += 30;
    for (;;) {
        int s = qp_connect_dir(dir);
        if (s >= 0)
            return s;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec > end.tv_nsec))
            return -1;
        poll(NULL, 0, 20);
    }
}

static int has_tag(const char *p, size_t len, char tag)
{
    for (size_t i = 0; i < len; i += strlen(p + i) + 1)
        if (p[i] == tag)
            return 1;
    return 0;
}

/* Reads what a stream holds now (non-blocking) and sends it; 0 at its end. */
static int pump(int *fd, uint32_t type)
{
    char b[QW_MAX_DATA];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(*fd, b, sizeof(b));
        if (n > 0) {
            if (put(type, b, (size_t)n) < 0)
                exit(0); /* the channel is gone */
            continue;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return 1;
        close(*fd); /* end of stream; EIO: the pty's last holder closed it */
        *fd = -1;
        return 0;
    }
    return 1;
}

/* Everything a stream holds until it has nothing more to give right now, or ends. */
static void drain(int *fd, uint32_t type)
{
    while (*fd >= 0 && pump(fd, type) && *fd >= 0 && poll(&(struct pollfd){*fd, POLLIN, 0}, 1, 0) > 0)
        ;
}

/* One command's relay: the agent's connection, the command's streams on this side, and the
 * stdin the client sent that the command has not read yet. */
struct bridge {
    const char *name; /* the container */
    int sock, pty;
    int master;              /* terminal mode: the pty's master, once the agent passed it */
    int in_w, out_r, err_r;  /* else: this side of the command's pipes */
    char *q;                 /* stdin queued for the command: the client keeps at most */
    size_t qlen;             /* QW_WINDOW bytes in flight */
    int in_eof;
};

/* The first frame: the request's payload (with room for the 'f' tags added here). -1 to go on,
 * else the exit status. */
static int take_request(char **payload, uint32_t *len)
{
    struct qw_frame h;
    uint32_t type;
    if (qp_read_full(0, &h, sizeof(h)) < 0)
        return 0;
    qw_open(&h, &type, len);
    if (type != QW_REQUEST || *len == 0 || *len > QP_MAX_PAYLOAD)
        return fail(QW_FAIL_PROTO, "the first frame is not a request");
    *payload = malloc((size_t)*len + 64);
    if (!*payload || qp_read_full(0, *payload, *len) < 0)
        return 1;
    return -1;
}

/* Hands the request to the agent with the command's 0, 1, 2: pipes whose other ends stay here
 * (in terminal mode the agent makes a pty instead). -1 to go on, else the exit status. */
static int hand_over(struct bridge *b, char *payload, uint32_t len)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int fds[3], nfds = 0;
    if (!b->pty) {
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
            return fail(QW_FAIL_PROTO, "pipe failed");
        fds[0] = in[0], fds[1] = out[1], fds[2] = err[1], nfds = 3;
        memcpy(payload + len, "f0\0f1\0f2\0", 9);
        len += 9;
    }
    struct qp_req req = {QP_MAGIC, QP_VERSION, len, (uint32_t)nfds};
    if (qp_send(b->sock, &req, sizeof(req), fds, nfds) < 0 || qp_send(b->sock, payload, len, NULL, 0) < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "the agent of container %s does not take the request (%s)", b->name,
                 strerror(errno));
        return fail(QW_FAIL_AGENT, msg);
    }
    free(payload);
    if (!b->pty) {
        close(in[0]), close(out[1]), close(err[1]);
        fcntl(in[1], F_SETFL, O_NONBLOCK);
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
    }
    b->in_w = b->pty ? -1 : in[1], b->out_r = b->pty ? -1 : out[0], b->err_r = b->pty ? -1 : err[0];
    return -1;
}

/* Writes queued stdin to the command (w: its stdin or the pty) and acknowledges what it took. */
static void feed(struct bridge *b, int w)
{
    ssize_t n = write(w, b->q, b->qlen);
    if (n > 0) {
        memmove(b->q, b->q + n, b->qlen - (size_t)n);
        b->qlen -= (size_t)n;
        put_int(QW_ACK, (int32_t)n);
    } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
        /* the command closed its stdin: what the client still sends is dropped, and
         * acknowledged so that it does not wait */
        put_int(QW_ACK, (int32_t)b->qlen);
        b->qlen = 0;
        if (!b->pty)
            close(b->in_w), b->in_w = -1;
    }
}

/* One frame from the client (w: where stdin went when this round began). -1 to go on, else
 * the exit status. */
static int from_client(struct bridge *b, int w)
{
    struct qw_frame h;
    uint32_t type, len;
    if (qp_read_full(0, &h, sizeof(h)) < 0)
        return 0; /* the client or the connection is gone: closing sock ends the command */
    qw_open(&h, &type, &len);
    if (len > QW_MAX_DATA)
        return fail(QW_FAIL_PROTO, "frame too long");
    char d[QW_MAX_DATA];
    if (qp_read_full(0, d, len) < 0)
        return 0;
    int32_t v = qw_int_of(d, len);
    if (type == QW_STDIN) {
        if (w < 0 && !(b->pty && b->master < 0)) {
            put_int(QW_ACK, (int32_t)len); /* nobody reads it any more */
        } else {
            memcpy(b->q + b->qlen, d, len); /* the client's window keeps qlen under the bound */
            b->qlen += len;
            if (b->qlen > QW_WINDOW) {
                fail(QW_FAIL_PROTO, "the client overran its window");
                return 1;
            }
        }
    } else if (type == QW_STDIN_EOF) {
        b->in_eof = 1;
    } else if (type == QW_SIGNAL && v > 0 && v < NSIG) {
        struct qp_msg m = {QP_SIGNAL, v};
        (void)!send(b->sock, &m, sizeof(m), MSG_NOSIGNAL);
    } else if (type == QW_WINSIZE && len >= 4 && b->master >= 0) {
        uint16_t rc[2];
        memcpy(rc, d, 4);
        struct winsize ws = {ntohs(rc[0]), ntohs(rc[1]), 0, 0};
        ioctl(b->master, TIOCSWINSZ, &ws);
    } else if (type == QW_CLOSED && (v == 1 || v == 2)) {
        /* the client's reader went away: the command's next write gets EPIPE/SIGPIPE,
         * as it would have natively */
        int *fd = v == 1 ? &b->out_r : &b->err_r;
        if (*fd >= 0)
            close(*fd), *fd = -1;
    }
    return -1;
}

/* One event from the agent, passed on (at the command's end, after what it wrote last). -1 to
 * go on, else the exit status. */
static int from_agent(struct bridge *b)
{
    struct qp_msg m;
    int fd = -1, n = 0;
    if (qp_recv(b->sock, &m, sizeof(m), &fd, 1, &n) == -1) {
        char msg[600];
        snprintf(msg, sizeof(msg), "lost the agent of container %s (the container was stopped?)", b->name);
        return fail(QW_FAIL_AGENT + 100, msg);
    }
    if (m.type == QP_PTY) {
        b->master = fd;
        fcntl(b->master, F_SETFL, O_NONBLOCK);
        put_event(QP_PTY, 0);
        return -1;
    }
    if (fd >= 0)
        close(fd);
    int end = m.type == QP_EXITED || m.type == QP_SIGNALED || m.type == QP_EXEC_FAILED ||
              m.type == QP_REFUSED || m.type == QP_STALE;
    if (end) {
        /* what the command wrote before it ended, then the end */
        drain(&b->out_r, QW_STDOUT);
        drain(&b->err_r, QW_STDERR);
        drain(&b->master, QW_STDOUT);
    }
    put_event(m.type, m.value);
    return end ? 0 : -1;
}

int bridge_main(int argc, char **argv)
{
    if (argc < 4) {
        dprintf(2, "usage: qpod-agent --bridge AGENT_DIR CONTAINER\n");
        return 2;
    }
    const char *dir = argv[2];
    struct bridge b = {.name = argv[3], .master = -1, .in_w = -1, .out_r = -1, .err_r = -1};
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* sshd hangs up as the channel closes: the channel's end is what counts */

    char *payload = NULL;
    uint32_t len = 0;
    int r = take_request(&payload, &len);
    if (r >= 0)
        return r;
    b.pty = has_tag(payload, len, 't');
    put_int(QW_ACK, 0); /* heard: the client may send stdin now (before, it could retry) */

    b.sock = qp_connect_dir(dir);
    if (b.sock < 0)
        b.sock = start_container(dir, b.name);
    if (b.sock < 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "container %s is not running and cannot be started (%s)", b.name, strerror(errno));
        return fail(QW_FAIL_AGENT, msg);
    }
    if ((r = hand_over(&b, payload, len)) >= 0)
        return r;

    b.q = malloc(QW_WINDOW + QW_MAX_DATA);
    if (!b.q)
        return fail(QW_FAIL_PROTO, "out of memory");
    for (;;) {
        int w = b.pty ? b.master : b.in_w;
        struct pollfd pf[5] = {
            {0, POLLIN, 0},
            {b.sock, POLLIN, 0},
            {b.pty ? b.master : b.out_r, POLLIN, 0},
            {b.err_r, POLLIN, 0},
            {b.qlen ? w : -1, POLLOUT, 0},
        };
        if (poll(pf, 5, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (pf[2].revents && pf[2].fd >= 0)
            pump(b.pty ? &b.master : &b.out_r, QW_STDOUT);
        if (pf[3].revents && b.err_r >= 0)
            pump(&b.err_r, QW_STDERR);
        if (pf[4].revents && w >= 0)
            feed(&b, w);
        if (!b.pty && b.in_eof && !b.qlen && b.in_w >= 0)
            close(b.in_w), b.in_w = -1;
        if (pf[0].revents && (r = from_client(&b, w)) >= 0)
            return r;
        if (pf[1].revents && (r = from_agent(&b)) >= 0)
            return r;
    }
}

/* Is the tree this host sees the client's? The client wrote TOKEN into MARKER (a new file in
 * the repository) just before; the same content here means the same files, not a stale copy
 * or a different checkout at the same path. Each PATH (the environment's mounts) must exist.
 * AGENT_DIR is made (0700) for the container's agent. Prints one line per problem. */
int check_main(int argc, char **argv)
{
    if (argc < 5) {
        dprintf(2, "usage: qpod-agent --check AGENT_DIR MARKER TOKEN [PATH...]\n");
        return 2;
    }
    int bad = 0;
    char seen[256] = "";
    int fd = open(argv[3], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    ssize_t n = fd < 0 ? -1 : read(fd, seen, sizeof(seen) - 1);
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        printf("marker\t%s\n", strerror(errno));
        bad = 1;
    } else {
        seen[n] = 0;
        if (strcmp(seen, argv[4]) != 0) {
            printf("marker\tdifferent content\n");
            bad = 1;
        }
    }
    struct stat st;
    for (int i = 5; i < argc; i++)
        if (stat(argv[i], &st) < 0) {
            printf("path\t%s\t%s\n", argv[i], strerror(errno));
            bad = 1;
        }
    /* the agent dir and its parents, private */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", argv[2]);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0700);
            *s = '/';
        }
    if (mkdir(p, 0700) < 0 && errno != EEXIST) {
        printf("agent\t%s\t%s\n", p, strerror(errno));
        bad = 1;
    }
    fflush(stdout);
    return bad;
}
