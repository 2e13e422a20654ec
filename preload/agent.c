/* qpod-agent: the main process of every warm container (built static, so it runs in any image,
 * back to old glibc releases, and needs nothing from the image).
 *
 * It listens on a unix socket in a directory only the user can open (bind-mounted from the
 * user's state dir). For each connection from a peer of its own uid it forks a session, which
 * receives the caller's file descriptors, argv, environment, cwd, umask and signal state
 * (qpod_proto.h), forks the command with them in its own process group (or, in
 * terminal-owning mode, its own session on a fresh pty), and reports its start, stops and exit.
 * The session delivers the signals the client forwards to the whole process group and kills
 * the group when the client goes away. As PID 1 the agent reaps orphans and, when the
 * container is stopped, ends every process in it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "qpod_proto.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_SESSIONS 4096

static const char *config_hash = "";
static pid_t sessions[MAX_SESSIONS];

static void die(const char *what)
{
    dprintf(2, "qpod-agent: %s: %s\n", what, strerror(errno));
    exit(125);
}

static void noop(int sig) { (void)sig; }

static int send_msg(int fd, uint32_t type, int32_t value, int attach)
{
    struct qp_msg m = {type, value};
    return qp_send(fd, &m, sizeof(m), &attach, attach >= 0 ? 1 : 0);
}

/* ------------------------------------------------------------------------------------------ */

struct request {
    const char *hash, *cwd, *prog;
    char **argv, **envp;
    int *fds, *targets, nfds, ntargets;
    gid_t *groups;
    int ngroups, have_uid, have_gid;
    uid_t uid;
    gid_t gid;
    mode_t umask;
    int have_umask;
    sigset_t blocked;
    char ignored[NSIG];
    int pty;
    struct winsize ws;
    int have_modes;
    struct termios modes; /* the caller's terminal modes, for the new pty */
    char **limits; /* "RESOURCE SOFT HARD" of the caller */
    int nlimits, have_nice, nice;
    const char *pwd; /* the caller's logical cwd, as the container sees it */
};

/* "iflag:oflag:cflag:lflag:cc..." (hex, qpod_proto.h 'o') into t. 0, or -1 when malformed. */
static int parse_modes(const char *v, struct termios *t)
{
    unsigned f[4];
    int used = 0;
    if (sscanf(v, "%x:%x:%x:%x:%n", &f[0], &f[1], &f[2], &f[3], &used) != 4 || used == 0)
        return -1;
    memset(t, 0, sizeof(*t));
    t->c_iflag = f[0], t->c_oflag = f[1], t->c_cflag = f[2], t->c_lflag = f[3];
    const char *p = v + used;
    for (int i = 0; i < NCCS && p[0] && p[1]; i++, p += 2) {
        unsigned b;
        if (sscanf(p, "%2x", &b) != 1)
            return -1;
        t->c_cc[i] = (cc_t)b;
    }
    return 0;
}

static int parse_payload(char *buf, size_t len, struct request *r)
{
    size_t nargs = 0, nenv = 0, nt = 0, ng = 0, nr = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
        switch (buf[i]) {
        case 'a': nargs++; break;
        case 'e': nenv++; break;
        case 'f': nt++; break;
        case 'G': ng++; break;
        case 'r': nr++; break;
        }
    }
    r->argv = calloc(nargs + 1, sizeof(char *));
    r->envp = calloc(nenv + 1, sizeof(char *));
    r->targets = calloc(nt + 1, sizeof(int));
    r->groups = calloc(ng + 1, sizeof(gid_t));
    r->limits = calloc(nr + 1, sizeof(char *));
    if (!r->argv || !r->envp || !r->targets || !r->groups || !r->limits)
        return -1;
    sigemptyset(&r->blocked);
    size_t a = 0, e = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
        char *v = buf + i + 1;
        long n = strtol(v, NULL, 10);
        switch (buf[i]) {
        case 'h': r->hash = v; break;
        case 'c': r->cwd = v; break;
        case 'p': r->prog = v; break;
        case 'a': r->argv[a++] = v; break;
        case 'e': r->envp[e++] = v; break;
        case 'f': r->targets[r->ntargets++] = (int)n; break;
        case 'u': r->uid = (uid_t)n, r->have_uid = 1; break;
        case 'g': r->gid = (gid_t)n, r->have_gid = 1; break;
        case 'G': r->groups[r->ngroups++] = (gid_t)n; break;
        case 'r': r->limits[r->nlimits++] = v; break;
        case 'n': r->nice = (int)n, r->have_nice = 1; break;
        case 'w': r->pwd = v; break;
        case 'm': r->umask = (mode_t)strtol(v, NULL, 8), r->have_umask = 1; break;
        case 'i': if (n > 0 && n < NSIG) r->ignored[n] = 1; break;
        case 'b': if (n > 0 && n < NSIG) sigaddset(&r->blocked, (int)n); break;
        case 'o': r->have_modes = parse_modes(v, &r->modes) == 0; break;
        case 't':
        case 'T':
            r->pty = buf[i] == 't' ? 1 : 2;
            r->ws.ws_row = (unsigned short)n;
            r->ws.ws_col = (unsigned short)(strchr(v, 'x') ? atoi(strchr(v, 'x') + 1) : 80);
            break;
        }
    }
    if (!r->prog || !r->cwd || a == 0 || r->ntargets != r->nfds)
        return -1;
    for (int i = 0; i < r->ntargets; i++)
        if (r->targets[i] < 0 || r->targets[i] > 65535)
            return -1;
    return 0;
}

static int receive_request(int conn, struct request *r, char **payload)
{
    struct qp_req h;
    memset(r, 0, sizeof(*r));
    r->fds = calloc(QP_MAX_FDS, sizeof(int));
    if (!r->fds || qp_recv(conn, &h, sizeof(h), r->fds, QP_MAX_FDS, &r->nfds) < 0)
        return -1;
    if (h.magic != QP_MAGIC || h.version != QP_VERSION || h.nfds != (uint32_t)r->nfds || h.payload_len == 0 ||
        h.payload_len > QP_MAX_PAYLOAD)
        return -1;
    *payload = malloc(h.payload_len + 1);
    if (!*payload || qp_read_full(conn, *payload, h.payload_len) < 0)
        return -1;
    (*payload)[h.payload_len] = 0;
    return parse_payload(*payload, h.payload_len, r);
}

/* ------------------------------------------------------------------------------------------ */

static const char *env_get(char **envp, const char *name)
{
    size_t l = strlen(name);
    for (; *envp; envp++)
        if (strncmp(*envp, name, l) == 0 && (*envp)[l] == '=')
            return *envp + l + 1;
    return NULL;
}

/* A file the kernel refused as ENOEXEC that a shell would run as a script: no NUL before the
 * first newline in its first bytes (how shells tell scripts from binaries). */
static int looks_like_script(const char *path)
{
    char buf[80];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n <= 0)
        return n == 0;
    for (ssize_t i = 0; i < n && buf[i] != '\n'; i++)
        if (buf[i] == 0)
            return 0;
    return 1;
}

static void exec_one(const char *path, char **argv, char **envp)
{
    execve(path, argv, envp);
    if (errno == ENOEXEC && looks_like_script(path)) {
        size_t n = 0;
        while (argv[n])
            n++;
        char **sh = calloc(n + 2, sizeof(char *));
        if (!sh)
            return;
        sh[0] = "sh";
        sh[1] = (char *)path;
        for (size_t i = 1; i < n; i++)
            sh[i + 1] = argv[i];
        execve("/bin/sh", sh, envp);
        errno = ENOEXEC;
    }
}

/* execvpe's search, over the command's own PATH (or the image's, when it brought none). */
static void exec_command(const char *prog, char **argv, char **envp)
{
    if (strchr(prog, '/')) {
        exec_one(prog, argv, envp);
        return;
    }
    const char *path = env_get(envp, "PATH");
    if (!path)
        path = getenv("PATH");
    if (!path)
        path = DEFAULT_PATH;
    int saw_eacces = 0, err = ENOENT;
    char buf[4096];
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t dl = end ? (size_t)(end - p) : strlen(p);
        if (dl + strlen(prog) + 2 < sizeof(buf)) {
            if (dl == 0)
                snprintf(buf, sizeof(buf), "%s", prog);
            else
                snprintf(buf, sizeof(buf), "%.*s/%s", (int)dl, p, prog);
            exec_one(buf, argv, envp);
            if (errno == EACCES)
                saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR)
                err = errno;
        }
        if (!end)
            break;
        p = end;
    }
    errno = saw_eacces && err == ENOENT ? EACCES : err;
}

static void child_fail(int pipe_w, int err)
{
    (void)!write(pipe_w, &err, sizeof(err));
    _exit(127);
}

/* The container's own environment (the image's ENV, podman's container=podman), with the
 * caller's variables on top, as podman exec gives it. */
static char **merged_env(char **req)
{
    size_t n = 0, m = 0;
    while (req[n])
        n++;
    while (environ[m])
        m++;
    char **out = calloc(n + m + 1, sizeof(char *));
    if (!out)
        return req;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int mine = 0;
        for (size_t j = 0; j < n && !mine; j++)
            mine = strncmp(req[j], environ[i], nl) == 0 && req[j][nl] == '=';
        if (!mine)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < n; j++)
        out[k++] = req[j];
    return out;
}

/* In the forked child: become the command. */
static const char *limit_name(int res)
{
    switch (res) {
    case RLIMIT_CORE: return "core (ulimit -c)";
    case RLIMIT_CPU: return "cpu (ulimit -t)";
    case RLIMIT_DATA: return "data (ulimit -d)";
    case RLIMIT_FSIZE: return "fsize (ulimit -f)";
    case RLIMIT_NOFILE: return "nofile (ulimit -n)";
    case RLIMIT_STACK: return "stack (ulimit -s)";
    case RLIMIT_AS: return "as (ulimit -v)";
    case RLIMIT_MEMLOCK: return "memlock (ulimit -l)";
    case RLIMIT_NPROC: return "nproc (ulimit -u)";
    default: return "a resource limit";
    }
}

/* The caller's limits and niceness, as far as the container allows: a hard limit above the
 * container's stays the container's (natively it could not be raised either); a soft one that
 * cannot be had, or a niceness that cannot, is said in one line on the command's stderr. */
static void apply_process_state(const struct request *r)
{
    for (int i = 0; i < r->nlimits; i++) {
        int res;
        long long soft, hard;
        if (sscanf(r->limits[i], "%d %lld %lld", &res, &soft, &hard) != 3)
            continue;
        struct rlimit now, want;
        if (getrlimit(res, &now) < 0)
            continue;
        want.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
        want.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
        if (want.rlim_max > now.rlim_max)
            want.rlim_max = now.rlim_max;
        int short_of = want.rlim_cur > want.rlim_max;
        if (short_of)
            want.rlim_cur = want.rlim_max;
        if ((want.rlim_cur != now.rlim_cur || want.rlim_max != now.rlim_max) && setrlimit(res, &want) < 0)
            short_of = 1;
        if (short_of && soft < 0)
            dprintf(2, "qpod: %s: the container allows at most %llu, not your unlimited\n", limit_name(res),
                    (unsigned long long)now.rlim_max);
        else if (short_of)
            dprintf(2, "qpod: %s: the container allows at most %llu, not your %lld\n", limit_name(res),
                    (unsigned long long)now.rlim_max, soft);
    }
    if (r->have_nice) {
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, 0);
        if (errno == 0 && cur != r->nice && setpriority(PRIO_PROCESS, 0, r->nice) < 0)
            dprintf(2, "qpod: nice %d: the container does not allow it (%s); the command runs at %d\n", r->nice,
                    strerror(errno), cur);
    }
    struct stat ps, cs;
    if (r->pwd && stat(r->pwd, &ps) == 0 && stat(".", &cs) == 0 && ps.st_dev == cs.st_dev && ps.st_ino == cs.st_ino)
        setenv("PWD", r->pwd, 1); /* the caller's path through a symlink: it names this directory here too */
}

static void become_command(struct request *r, int pipe_w, int slave)
{
    setpgid(0, 0);
    if (slave >= 0) {
        /* the foreground of the session's pty; in terminal-owning mode its 0, 1 and 2 too */
        tcsetpgrp(slave, getpid());
        if (r->pty == 1)
            for (int t = 0; t < 3; t++)
                dup2(slave, t);
        close(slave);
    }
    if (geteuid() == 0 && r->have_uid) {
        if (setgroups((size_t)r->ngroups, r->groups) < 0 || (r->have_gid && setgid(r->gid) < 0) ||
            setuid(r->uid) < 0)
            child_fail(pipe_w, errno);
    }
    if (r->have_umask)
        umask(r->umask);
    if (chdir(r->cwd) < 0)
        child_fail(pipe_w, errno | QP_CHDIR_FLAG);
    /* the received descriptors land on the numbers the caller had them on: first out of the
     * way of every target, then each onto its target (dup2 clears close-on-exec) */
    int hi = 3;
    for (int i = 0; i < r->nfds; i++)
        if (r->targets[i] >= hi)
            hi = r->targets[i] + 1;
    if (pipe_w >= hi)
        hi = pipe_w + 1;
    for (int i = 0; i < r->nfds; i++) {
        int moved = fcntl(r->fds[i], F_DUPFD_CLOEXEC, hi);
        if (moved < 0)
            child_fail(pipe_w, errno);
        r->fds[i] = moved;
    }
    int np = fcntl(pipe_w, F_DUPFD_CLOEXEC, hi + r->nfds + 1); /* the error pipe too */
    if (np >= 0)
        pipe_w = np;
    for (int i = 0; i < r->nfds; i++)
        if (dup2(r->fds[i], r->targets[i]) < 0)
            child_fail(pipe_w, errno);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        sa.sa_handler = r->ignored[s] ? SIG_IGN : SIG_DFL;
        sigaction(s, &sa, NULL);
    }
    sigprocmask(SIG_SETMASK, &r->blocked, NULL);
    apply_process_state(r); /* after the descriptors: its lines go to the caller's stderr */
    exec_command(r->prog, r->argv, merged_env(r->envp));
    child_fail(pipe_w, errno);
}

static void report_status(int conn, int st)
{
    if (WIFEXITED(st))
        send_msg(conn, QP_EXITED, WEXITSTATUS(st), -1);
    else if (WIFSIGNALED(st))
        send_msg(conn, QP_SIGNALED, WTERMSIG(st), -1);
}

/* Terminal mode: this session process leads a session on a fresh pty and the command becomes
 * its foreground process group, as under a shell: a group whose parent is in the session is not
 * orphaned, so Ctrl-Z (SIGTSTP) stops it instead of being discarded. 0, or -1 (errno set). */
static int open_pty(const struct request *r, int *master, int *slave_fd)
{
    char slave[128] = "";
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0 || ptsname_r(*master, slave, sizeof(slave)) ||
        ioctl(*master, TIOCSWINSZ, &r->ws) < 0 || setsid() < 0 ||
        (*slave_fd = open(slave, O_RDWR | O_CLOEXEC)) < 0 || ioctl(*slave_fd, TIOCSCTTY, 0) < 0)
        return -1;
    if (r->have_modes) { /* the caller's modes; the pty's speed stays its own */
        struct termios t;
        if (tcgetattr(*slave_fd, &t) == 0) {
            t.c_iflag = r->modes.c_iflag, t.c_oflag = r->modes.c_oflag, t.c_lflag = r->modes.c_lflag;
            t.c_cflag = (t.c_cflag & CBAUD) | (r->modes.c_cflag & ~(tcflag_t)CBAUD);
            memcpy(t.c_cc, r->modes.c_cc, sizeof(t.c_cc));
            tcsetattr(*slave_fd, TCSANOW, &t);
        }
    }
    /* the pty's hang-up (the client went away) is handled below, not by dying of it;
     * tcsetpgrp from outside the foreground needs SIGTTOU ignored */
    signal(SIGHUP, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);
    return 0;
}

/* The command runs: its stops, continues and end go to the client, the client's signals to its
 * process group; when the client goes away, the group is killed. */
static int watch_command(int conn, pid_t pid, int sfd)
{
    struct pollfd pf[2] = {{conn, POLLIN, 0}, {sfd, POLLIN, 0}};
    int client_gone = 0;
    for (;;) {
        if (!client_gone && poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (!client_gone && pf[0].revents) {
            struct qp_msg m;
            if (qp_read_full(conn, &m, sizeof(m)) < 0) {
                /* the client is gone (killed, its terminal closed): nothing may outlive it */
                kill(-pid, SIGKILL);
                client_gone = 1;
                pf[0].fd = -1;
            } else if (m.type == QP_SIGNAL && m.value > 0 && m.value < NSIG) {
                kill(-pid, m.value);
            } else if (m.type == QP_SIGNAL_ONE && m.value > 0 && m.value < NSIG) {
                kill(pid, m.value); /* the command's own process, as a signal to its pid */
            }
        }
        if (pf[1].revents || client_gone) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) > 0)
                ;
            int st;
            pid_t w;
            while ((w = waitpid(pid, &st, (client_gone ? 0 : WNOHANG) | WUNTRACED | WCONTINUED)) == pid) {
                if (WIFSTOPPED(st)) {
                    send_msg(conn, QP_STOPPED, WSTOPSIG(st), -1);
                } else if (WIFCONTINUED(st)) {
                    send_msg(conn, QP_CONTINUED, 0, -1);
                } else {
                    report_status(conn, st);
                    return 0;
                }
                if (client_gone)
                    kill(-pid, SIGKILL);
            }
            if (w < 0 && errno != EINTR)
                return 0;
        }
    }
    return 0;
}

static int session(int conn)
{
    struct request r;
    char *payload = NULL;
    if (receive_request(conn, &r, &payload) < 0) {
        send_msg(conn, QP_REFUSED, EPROTO, -1);
        return 125;
    }
    if (r.hash && *config_hash && strcmp(r.hash, config_hash) != 0) {
        send_msg(conn, QP_STALE, 0, -1);
        return 125;
    }
    int master = -1, slave_fd = -1;
    if (r.pty && open_pty(&r, &master, &slave_fd) < 0) {
        send_msg(conn, QP_EXEC_FAILED, errno ? errno : EIO, -1);
        return 125;
    }
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        send_msg(conn, QP_EXEC_FAILED, errno, -1);
        return 125;
    }
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    pid_t pid = fork();
    if (pid == 0) {
        close(ep[0]);
        become_command(&r, ep[1], slave_fd);
    }
    close(ep[1]);
    /* a container being stopped signals every process (kill(-1) from PID 1): the command ends
     * by it as natively, and this session lives to report how (SIGKILL still ends it) */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    for (int i = 0; i < r.nfds; i++) /* the command has them: holding them would hide EOF */
        close(r.fds[i]);
    if (pid < 0) {
        send_msg(conn, QP_EXEC_FAILED, errno, -1);
        return 125;
    }
    setpgid(pid, pid); /* also here: signals may come before the child ran setpgid */
    if (slave_fd >= 0) {
        tcsetpgrp(slave_fd, pid);
        close(slave_fd); /* nobody holds the pty but the command: the client sees /dev/tty opened */
    }
    int err = 0;
    ssize_t n;
    do
        n = read(ep[0], &err, sizeof(err));
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n > 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        send_msg(conn, QP_EXEC_FAILED, err, -1);
        return 127;
    }
    if (master >= 0) {
        send_msg(conn, QP_PTY, 0, master);
        close(master);
    }
    send_msg(conn, QP_STARTED, pid, -1);
    return watch_command(conn, pid, sfd);
}

/* ------------------------------------------------------------------------------------------ */

static void remember(pid_t pid)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (!sessions[i]) {
            sessions[i] = pid;
            return;
        }
}

static void forget(pid_t pid)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i] == pid)
            sessions[i] = 0;
}

static int busy(void)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i])
            return 1;
    return 0;
}

/* qpod marks a container whose config changed while commands ran in it: a file "retire" beside
 * the socket. It serves those commands to their end, then stops. */
static int retired(const char *sock_path)
{
    char path[PATH_MAX];
    const char *slash = strrchr(sock_path, '/');
    int dir = slash ? (int)(slash - sock_path) : 0;
    if (snprintf(path, sizeof(path), "%.*s/retire", dir, sock_path) >= (int)sizeof(path))
        return 0;
    return access(path, F_OK) == 0;
}

static void reap(void)
{
    pid_t w;
    while ((w = waitpid(-1, NULL, WNOHANG)) > 0)
        forget(w);
}

/* The container is being stopped: end every command, gently first. As PID 1 of the
 * container's own pid namespace kill(-1) reaches exactly its processes; sharing the host's
 * (an environment may ask for it) only our sessions are signalled, never kill(-1). */
static void shutdown_all(int sfd)
{
    int init = getpid() == 1;
    for (int round = 0; round < 2; round++) {
        int sig = round ? SIGKILL : SIGTERM;
        if (init)
            kill(-1, sig);
        else
            for (int i = 0; i < MAX_SESSIONS; i++)
                if (sessions[i])
                    kill(sessions[i], sig);
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        end.tv_sec += 3;
        for (;;) {
            reap();
            if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
                return;
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
            if (ms <= 0)
                break;
            struct pollfd pf = {sfd, POLLIN, 0};
            poll(&pf, 1, (int)(ms < 100 ? ms : 100));
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) > 0)
                ;
        }
    }
}

int bridge_main(int argc, char **argv); /* bridge.c: the remote side of the relay */
int check_main(int argc, char **argv);

/* the signals the agent takes through its signalfd */
static const int agent_sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP};
#define NSIGS (sizeof(agent_sigs) / sizeof(agent_sigs[0]))

/* init drops signals it has no handler for: install real (empty) handlers, then take them
 * through a signalfd (set: the signals blocked for it). */
static int take_signals(sigset_t *set)
{
    sigemptyset(set);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = noop;
    for (size_t i = 0; i < NSIGS; i++) {
        sigaddset(set, agent_sigs[i]);
        sigaction(agent_sigs[i], &sa, NULL);
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigprocmask(SIG_BLOCK, set, NULL);
    int sfd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd");
    return sfd;
}

/* The socket clients connect to, only the user's (umask 077 while it is made). */
static int listen_at(const char *sock_path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        die(sock_path);
    }
    strcpy(addr.sun_path, sock_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    unlink(sock_path);
    mode_t old = umask(077);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die(sock_path);
    umask(old);
    if (listen(lfd, 128) < 0)
        die("listen");
    return lfd;
}

/* A connection: a session process for a peer of our own uid, a refusal for anyone else. */
static void serve(int lfd, int sfd, const sigset_t *set)
{
    int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != geteuid()) {
        /* only the user who owns this container may run commands in it */
        send_msg(conn, QP_REFUSED, EACCES, -1);
        close(conn);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(lfd);
        close(sfd);
        sigprocmask(SIG_UNBLOCK, set, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        for (size_t i = 0; i < NSIGS; i++)
            sigaction(agent_sigs[i], &sa, NULL);
        _exit(session(conn));
    }
    if (pid > 0)
        remember(pid);
    close(conn);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bridge") == 0)
        return bridge_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--check") == 0)
        return check_main(argc, argv);
    const char *sock_path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--socket") == 0)
            sock_path = argv[i + 1];
        else if (strcmp(argv[i], "--hash") == 0)
            config_hash = argv[i + 1];
    }
    if (!sock_path) {
        dprintf(2, "usage: qpod-agent --socket PATH [--hash HASH]\n");
        return 2;
    }
    sigset_t set;
    int sfd = take_signals(&set);
    int lfd = listen_at(sock_path);

    struct pollfd pf[2] = {{lfd, POLLIN, 0}, {sfd, POLLIN, 0}};
    for (;;) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (pf[1].revents) {
            struct signalfd_siginfo si;
            int stop = 0;
            while (read(sfd, &si, sizeof(si)) == sizeof(si))
                if (si.ssi_signo != SIGCHLD)
                    stop = 1;
            reap();
            if (!stop && retired(sock_path) && !busy())
                stop = 1; /* replaced by a container of the new config: gone with its last command */
            if (stop) {
                close(lfd);
                unlink(sock_path);
                shutdown_all(sfd);
                return 0;
            }
        }
        if (pf[0].revents)
            serve(lfd, sfd, &set);
    }
}
