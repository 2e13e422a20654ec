/* What the parts of qpod-client share. A name shared between files starts with qp_.
 *
 *   client.c          the front: the command line, the launch spec taken, the request built
 *   client/util.c     small helpers: the one-line message, the growing buffer, paths, the state dir
 *   client/spec.c     the launch spec: trusted, read, checked, mapped; the environment passed on
 *   client/cmdlog.c   the command log's start and end records
 *   client/term.c     the terminal (raw, restored; who wants one) and the signals forwarded
 *   client/local.c    a command in a container of this machine, through its agent's socket
 *   client/relay.c    a command on another host, through ssh and the agent's bridge there
 */
#ifndef QPOD_CLIENT_H
#define QPOD_CLIENT_H

#include <signal.h>
#include <stddef.h>

#define EXIT_QPOD 125
#define MAX_LIST 256

/* ------------------------------------------------------------------------------------------
 * util.c
 */
void qp_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct buf {
    char *p;
    size_t len, cap;
};

void qp_buf_add(struct buf *b, const char *s, size_t n);
void qp_buf_str(struct buf *b, const char *s);
void qp_buf_tag(struct buf *b, char tag, const char *s);
void qp_buf_tagn(struct buf *b, char tag, long v);
int qp_within(const char *path, const char *root);
const char *qp_base_name(const char *p);
int qp_in_list(const char *name, const char *const *list, int n);
char *qp_state_dir(void);

/* ------------------------------------------------------------------------------------------
 * spec.c: the launch spec (written by qpod_engine/launch/spec.py).
 */
struct map {
    char *host, *ctr;
};

struct spec {
    char *root, *env, *image, *container, *hash, *agent_dir, *head_path, *head_want, *log_path;
    int branch_rules;
    long log_max, log_keep;
    struct map maps[MAX_LIST];
    int nmaps;
    char *pass[MAX_LIST], *deny[MAX_LIST], *set[MAX_LIST], *ttycmd[MAX_LIST], *cmds[MAX_LIST];
    int npass, ndeny, nset, nttycmd, ncmds;
    int have_user;
    long uid, gid;
    long groups[MAX_LIST];
    int ngroups;
    int stale; /* a source file changed since the launcher wrote this */
    char *host, *facts; /* an environment on another host: its name, and the launcher's facts file */
    char *ssh[MAX_LIST + 1]; /* the command that reaches its bridge (qpod_proto.h, "The relay") */
    int nssh;
};

int qp_load_spec(const char *path, struct spec *s, int check);
char *qp_read_head(const struct spec *s);
char *qp_map_path(const struct spec *s, const char *path);
char *qp_fast_spec_path(const char *root);
int qp_connect_agent(const char *dir);
void qp_add_env(struct buf *payload, const struct spec *s);

/* ------------------------------------------------------------------------------------------
 * client.c: the command line.
 */
struct args {
    const char *root, *spec, *reason, *path, *cwd;
    int explicit; /* qpod exec: any command started in the repository runs there */
    int by_command; /* the preload library routed it by its name: a command of the environment */
    char **launcher; /* LAUNCHER... --shim PATH CWD -- ARGV (for the fallback) */
    char **argv;
    int tty; /* -1 auto, 0 never, 1 always */
};

void qp_fallback(const struct args *a, const char *why);

/* ------------------------------------------------------------------------------------------
 * cmdlog.c
 */
struct record {
    char id[40];
    char time[64];
    double t0;
    const char *repo, *env, *container, *cwd, *path, *reason;
    const char *ended; /* how it ended when qpod knows more than its status (its container stopped) */
    char *branch;
    char *const *argv;
};

void qp_iso_time(struct record *r);
const char *qp_why(const struct spec *s, const struct args *a, char *out, size_t size);
void qp_log_write(const struct spec *s, const struct record *r, int status, int done);

/* ------------------------------------------------------------------------------------------
 * term.c
 */
extern int qp_term_fd; /* the terminal made raw and restored: the caller's 0, or its /dev/tty */

void qp_tty_raw(int full);
void qp_tty_restore(void);
void qp_tag_modes(struct buf *payload, int fd);
int qp_wants_terminal(const struct spec *s, char *const *argv);
int qp_setup_signals(struct buf *payload, int handled[NSIG], int sp[2]);
void qp_reraise(int sig);

/* ------------------------------------------------------------------------------------------
 * local.c and relay.c: the command run, the client standing in for it until it ends; both
 * return the client's exit status.
 */
int qp_exec_failed(const struct spec *s, const struct args *a, const char *cwd, int value);
int qp_run_local(const struct spec *s, const struct args *a, struct record *rec, struct buf *payload,
                 const char *cwd, int *fds, int nfds);
int qp_relay(struct spec *s, struct args *a, struct record *rec, struct buf *payload, const char *cwd,
             const int *fds, int nfds);

#endif
