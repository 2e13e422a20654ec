/* The protocol between qpod's client (on the host) and its agent (PID 1 of each warm container).
 *
 * One unix stream connection per command. The client sends a request header with the caller's
 * file descriptors attached (SCM_RIGHTS), then the payload; the agent answers with fixed-size
 * events, the client sends fixed-size control messages (signals) until the command ends.
 */
#ifndef QPOD_PROTO_H
#define QPOD_PROTO_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define QP_MAGIC 0x51504f44u /* "QPOD" */
#define QP_VERSION 1u
#define QP_MAX_FDS 250        /* below the kernel's SCM_MAX_FD (253) */
#define QP_MAX_PAYLOAD (64u << 20)

struct qp_req {
    uint32_t magic;
    uint32_t version;
    uint32_t payload_len; /* bytes that follow the header */
    uint32_t nfds;        /* descriptors attached to the header */
};

/* Payload: NUL-terminated strings, each led by a tag character.
 *   h<hash>   the container config hash the client expects (mismatch: QP_STALE)
 *   c<dir>    working directory (container path)
 *   p<prog>   program: a path, or a name searched on PATH
 *   a<arg>    argv, in order
 *   e<N=V>    environment, in order
 *   f<n>      target number of the next attached descriptor, in attachment order
 *   u<uid> g<gid> G<gid>   identity to run as (only honoured when the agent is root)
 *   m<octal>  umask
 *   i<sig>    a signal the command starts with ignored; b<sig> one it starts with blocked
 *   t<rows>x<cols>  terminal-owning mode: the agent makes a pty the command's controlling
 *             terminal and its 0, 1 and 2, and passes its master back (QP_PTY)
 *   T<rows>x<cols>  a pty as controlling terminal only (/dev/tty prompts); the descriptors
 *             stay the caller's
 *   o<iflag>:<oflag>:<cflag>:<lflag>:<c_cc as hex bytes>  the caller's terminal modes (hex),
 *             given to the new pty: a program that set its pty's modes before starting the
 *             command (Emacs turns echo off for gdb) sees them kept, as ssh -t does
 */
#define QP_MODES_MAX (4 * 9 + 2 * 64 + 1)

struct qp_msg {
    uint32_t type;
    int32_t value;
};

enum {
    /* agent -> client */
    QP_STARTED = 1, /* value: pid in the container */
    QP_STOPPED,     /* value: the stop signal */
    QP_CONTINUED,
    QP_EXITED,      /* value: exit status 0..255 */
    QP_SIGNALED,    /* value: the signal that killed the command */
    QP_EXEC_FAILED, /* value: errno of execve (or of chdir, with QP_CHDIR_FLAG) */
    QP_REFUSED,     /* value: errno (EACCES: wrong uid; EPROTO: bad request) */
    QP_STALE,       /* the container's config hash is not the one the client expects */
    QP_PTY,         /* the pty master is attached */
    /* client -> agent */
    QP_SIGNAL = 100, /* value: a signal for the command's process group */
    QP_SIGNAL_ONE,   /* value: a signal for the command's own process only */
};

/* In the client's signal pipe: the signal number, with this bit when it was sent to the client
 * alone by kill(2) (and so is for the command's own process, see term.c) */
#define QP_SIG_ONE 0x80

#define QP_CHDIR_FLAG 0x10000

/* Sends all of buf with nfds descriptors attached (SCM_RIGHTS, to its first byte). 0, or -1. */
static inline int qp_send(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(sizeof(int) * QP_MAX_FDS)];
    } u;
    struct iovec iov = {(void *)buf, len};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0 && nfds <= QP_MAX_FDS) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        sent += (size_t)n;
        iov.iov_base = (char *)buf + sent; /* the rest goes without the descriptors */
        iov.iov_len = len - sent;
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
    }
    return 0;
}

/* Reads exactly len bytes and the descriptors attached to them (close-on-exec), at most maxfds
 * (*nfds says how many). 0; -1 at end of stream or on error; -2 when descriptors were cut off. */
static inline int qp_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds)
{
    union {
        struct cmsghdr c;
        char buf[CMSG_SPACE(sizeof(int) * QP_MAX_FDS)];
    } u;
    size_t got = 0;
    int cut = 0;
    *nfds = 0;
    while (got < len) {
        struct iovec iov = {(char *)buf + got, len - got};
        struct msghdr mh;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof(u.buf);
        ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        cut |= (mh.msg_flags & MSG_CTRUNC) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof(int));
                if (*nfds < maxfds)
                    fds[(*nfds)++] = fd;
                else
                    cut = 1; /* more than the caller takes: a protocol error */
            }
        }
        got += (size_t)n;
    }
    return cut ? -2 : 0;
}

/* Reads exactly len bytes. 0; -1 at end of stream or on error. */
static inline int qp_read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes all of buf (waiting when the descriptor is non-blocking and full). 0, or -1. */
static inline int qp_write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd q = {fd, POLLOUT, 0};
            poll(&q, 1, -1);
            continue;
        }
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Connects to agent.sock in the directory open as dfd (O_PATH will do): the state dir may be
 * deeper than a socket address allows, so the socket is reached through the descriptor (which
 * the caller may have checked first: no swap in between). The socket, or -1 (errno set). */
static inline int qp_connect_dirfd(int dfd)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "/proc/self/fd/%d/agent.sock", dfd);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = s < 0 ? -1 : connect(s, (struct sockaddr *)&a, sizeof(a));
    if (r < 0) {
        int e = errno;
        if (s >= 0)
            close(s);
        errno = e;
        return -1;
    }
    return s;
}

/* Connects to dir/agent.sock. The socket, or -1 (errno set). */
static inline int qp_connect_dir(const char *dir)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int s = qp_connect_dirfd(dfd);
    int e = errno;
    close(dfd);
    errno = e;
    return s;
}

/* ------------------------------------------------------------------------------------------
 * The relay, for an environment on another host (its agent is reached through ssh).
 *
 * Descriptors cannot cross machines: the client runs `ssh HOST qpod-agent --bridge DIR NAME`
 * and speaks frames over its stdio; the bridge, on the remote host, makes pipes (or, in
 * terminal mode, has the agent make a pty) for the command's 0, 1 and 2, hands them to the
 * agent as a local client would, and relays. A frame is a header (type, length, both in
 * network byte order) and that many bytes.
 */
struct qw_frame {
    uint32_t type;
    uint32_t len;
};

enum {
    /* client -> bridge */
    QW_REQUEST = 1, /* the request payload (as above, without 'f' tags); first and once */
    QW_STDIN,       /* bytes for the command's stdin (or its pty) */
    QW_STDIN_EOF,   /* the client's stdin ended */
    QW_SIGNAL,      /* int32: a signal for the command's process group */
    QW_WINSIZE,     /* uint16 rows, uint16 cols: the terminal was resized */
    QW_CLOSED,      /* int32 1 or 2: the client's reader of that stream has gone (EPIPE) */
    /* bridge -> client */
    QW_STDOUT = 16, /* bytes the command wrote to its stdout (or its pty) */
    QW_STDERR,      /* bytes the command wrote to its stderr */
    QW_EVENT,       /* struct qp_msg (network byte order): the agent's events, QP_PTY without its fd */
    QW_ACK,         /* uint32: stdin bytes delivered to the command (the client's window opens) */
    QW_FAIL,        /* int32 code, then a message: the bridge could not run the command */
};

enum { QW_FAIL_AGENT = 1, QW_FAIL_PROTO };

#define QW_WINDOW (256u << 10)  /* stdin bytes in flight at most: the bridge never queues more */
#define QW_MAX_DATA (64u << 10) /* largest data frame */

/* The framing both ends share (client/relay.c queues frames, bridge.c writes them). */

/* The header of a frame of type with len bytes of data. */
static inline struct qw_frame qw_header(uint32_t type, size_t len)
{
    struct qw_frame h = {htonl(type), htonl((uint32_t)len)};
    return h;
}

/* A header's type and length, in host byte order. */
static inline void qw_open(const struct qw_frame *h, uint32_t *type, uint32_t *len)
{
    *type = ntohl(h->type);
    *len = ntohl(h->len);
}

/* The int32 a frame's data starts with (QW_SIGNAL, QW_CLOSED, QW_ACK, QW_FAIL's code), as data
 * to send, and as read back from len bytes at d (0 when there are fewer than 4). */
static inline uint32_t qw_int(int32_t v) { return htonl((uint32_t)v); }

static inline int32_t qw_int_of(const void *d, size_t len)
{
    uint32_t x;
    if (len < 4)
        return 0;
    memcpy(&x, d, 4);
    return (int32_t)ntohl(x);
}

/* QW_EVENT's data: an agent's event (struct qp_msg), and read back from its 8 bytes at d. */
static inline void qw_event(uint32_t out[2], uint32_t type, int32_t value)
{
    out[0] = htonl(type);
    out[1] = htonl((uint32_t)value);
}

static inline void qw_event_of(const void *d, uint32_t *type, int32_t *value)
{
    uint32_t x[2];
    memcpy(x, d, 8);
    *type = ntohl(x[0]);
    *value = (int32_t)ntohl(x[1]);
}

#endif
