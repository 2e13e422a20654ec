/* qpod-client's terminal and signals: the caller's terminal made raw while a pty of the command
 * has it, and restored; which programs want a terminal of their own; the signals forwarded to
 * the command (through a pipe the main loop reads) and the one it died of, raised again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

#include "../qpod_proto.h"
#include "client.h"

/* ------------------------------------------------------------------------------------------
 * Signals: handlers only write the signal number to a pipe the main loop reads.
 */
static int sigpipe_w = -1;
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGTSTP, SIGCONT};
#define NFWD ((int)(sizeof(forwarded) / sizeof(forwarded[0])))

/* Where a signal goes: one from the terminal (Ctrl-C, Ctrl-\, Ctrl-Z: the kernel sends it to the
 * foreground group) to the command's whole group, as natively; one a program sent with kill(2)
 * to the command's own process, as a signal to its pid would reach only it (kill -USR1 <make>
 * toggles make's debug output and kills no recipe). Except SIGTERM and SIGHUP, which end the whole
 * build (the client cannot tell kill(pid) from kill(-pgid), and a build ended by them must leave
 * no orphans in the container), and SIGCONT, which resumes all of it. */
static void on_signal(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    int e = errno;
    int by_kill = si && (si->si_code == SI_USER || si->si_code == SI_QUEUE || si->si_code == SI_TKILL);
    int whole = sig == SIGTERM || sig == SIGHUP || sig == SIGCONT || sig == SIGWINCH;
    unsigned char c = (unsigned char)(sig | (by_kill && !whole ? QP_SIG_ONE : 0));
    (void)!write(sigpipe_w, &c, 1);
    errno = e;
}

/* ------------------------------------------------------------------------------------------
 * The terminal, in terminal-owning mode.
 */
static struct termios saved_tio;
static int tio_saved;
int qp_term_fd = -1;

/* full: the whole terminal raw (terminal-owning mode); else only its input, so that keys reach
 * the command's pty unprocessed while the host still translates the command's own output */
void qp_tty_raw(int full)
{
    struct termios t;
    if (qp_term_fd < 0 || tcgetattr(qp_term_fd, &t) < 0)
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
    tcsetattr(qp_term_fd, TCSADRAIN, &t);
}

void qp_tty_restore(void)
{
    if (tio_saved && qp_term_fd >= 0)
        tcsetattr(qp_term_fd, TCSADRAIN, &saved_tio);
}

/* Programs that need a controlling terminal of their own get one (a pty relayed by this
 * client): shells run interactively, full-screen programs, debuggers, password prompts. */
static const char *const tty_programs[] = {"less", "more", "most", "vi", "vim", "nvim", "view", "nano", "emacs",
                                           "mc", "top", "htop", "gdb", "cgdb", "lldb", "man", "ssh", "su",
                                           "sudo", "tmux", "screen", "script", NULL};
static const char *const shells[] = {"bash", "sh", "dash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh", NULL};


/* The terminal's modes as the caller left them (before the client makes it raw), for the
 * command's new pty, here or on another host (qpod_proto.h 'o'): a program that set its terminal
 * up before starting the command (Emacs turns echo off for gdb) sees the pty set the same way. */
void qp_tag_modes(struct buf *payload, int fd)
{
    struct termios tio;
    if (tcgetattr(fd, &tio) != 0)
        return;
    char m[QP_MODES_MAX];
    int k = snprintf(m, sizeof(m), "%x:%x:%x:%x:", (unsigned)tio.c_iflag, (unsigned)tio.c_oflag,
                     (unsigned)tio.c_cflag, (unsigned)tio.c_lflag);
    for (int i = 0; i < NCCS && k + 3 < (int)sizeof(m); i++)
        k += snprintf(m + k, sizeof(m) - (size_t)k, "%02x", (unsigned)tio.c_cc[i]);
    qp_buf_tag(payload, 'o', m);
}

int qp_wants_terminal(const struct spec *s, char *const *argv)
{
    const char *name = qp_base_name(argv[0]);
    if (qp_in_list(name, tty_programs, -1) || qp_in_list(name, (const char *const *)s->ttycmd, s->nttycmd))
        return 1;
    if (!qp_in_list(name, shells, -1))
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


/* Signals: what the caller ignores stays ignored (and is not forwarded; the payload says which
 * the command starts with ignored or blocked); the rest of the forwarded set comes to the main
 * loop through the pipe sp. */
int qp_setup_signals(struct buf *payload, int handled[NSIG], int sp[2])
{
    if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) < 0) {
        qp_say("qpod: pipe: %s", strerror(errno));
        return -1;
    }
    sigpipe_w = sp[1];
    sigset_t blocked;
    sigprocmask(SIG_SETMASK, NULL, &blocked);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            qp_buf_tagn(payload, 'i', sig);
        if (sig < 32 && sigismember(&blocked, sig) == 1)
            qp_buf_tagn(payload, 'b', sig);
    }
    for (int i = 0; i < NFWD; i++) {
        struct sigaction old, sa;
        sigaction(forwarded[i], NULL, &old);
        if (old.sa_handler == SIG_IGN && forwarded[i] != SIGCONT && forwarded[i] != SIGWINCH)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_signal;
        sa.sa_flags = SA_RESTART | SA_SIGINFO;
        sigaction(forwarded[i], &sa, NULL);
        handled[forwarded[i]] = 1;
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_IGN); /* a relay write to a closed terminal is an error, not our death */
    return 0;
}

/* The command died of sig: so do we (without a core file), for the caller to see the same end. */
void qp_reraise(int sig)
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
