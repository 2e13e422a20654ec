/* The protocol between qpod's client (on the host) and its agent (PID 1 of each warm container).
 *
 * One unix stream connection per command. The client sends a request header with the caller's
 * file descriptors attached (SCM_RIGHTS), then the payload; the agent answers with fixed-size
 * events, the client sends fixed-size control messages (signals) until the command ends.
 */
#ifndef QPOD_PROTO_H
#define QPOD_PROTO_H

#include <stdint.h>

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
 */

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
};

#define QP_CHDIR_FLAG 0x10000

#endif
