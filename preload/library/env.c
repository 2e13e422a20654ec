/* The preload library's environment: the qpod variables the process had at load (captured by
 * the constructor), and keeping them, ourselves first in LD_PRELOAD, in the environment a
 * launched program gets when the program dropped them (`env -i`, programs that build their own).
 */
#define _GNU_SOURCE
#include <string.h>

#include "library.h"

extern char **environ;

/* ---------------------------------------------------------------------------------------------
 * Values captured at load time (the process may clear its environment later, e.g. `env -i`).
 * The constructor only keeps pointers to the original "NAME=value" strings (unsetenv and
 * clearenv edit the pointer array, never these strings) and calls nothing: every page a
 * constructor touches is paid by every process, which is what the benchmark measures. The
 * pointers are checked again when used (a setproctitle() may have overwritten the strings).
 */
static const char *const cap_names[NCAP] = {"LD_PRELOAD=", "QPOD_PRELOAD=", "QPOD_RULES=", "QPOD_RULES_FD=",
                                            "QPOD_SHELL=", "QPOD_CONFIG_DIR=", "QPOD_STATE_DIR="};
static const char *cap_raw[NCAP];
char **qp_self_argv; /* this process's argv: is it the launcher? */

/* (compared here, not with strncmp: in a shell's fork child each libc function first called
 * there costs a page fault for its code) */
static inline int starts(const char *s, const char *p)
{
    while (*p)
        if (*s++ != *p++)
            return 0;
    return 1;
}

/* glibc calls constructors with (argc, argv, envp) */
__attribute__((constructor)) static void qp_init(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)envp;
    qp_self_argv = argv;
    char **e = environ;
    if (!e)
        return;
    for (; *e; e++) {
        const char *s = *e;
        if (s[0] == 'L' && starts(s, "LD_PRELOAD=")) {
            cap_raw[C_LDP] = s;
        } else if (s[0] == 'Q' && starts(s, "QPOD_")) {
            for (int i = C_PRELOAD; i < NCAP; i++)
                if (starts(s + 5, cap_names[i] + 5)) {
                    cap_raw[i] = s;
                    break;
                }
        }
    }
}

static int is_our_lib(const char *e, size_t n)
{
    size_t bl;
    const char *b = qp_base_name(e, n, &bl);
    return bl == sizeof(LIB_NAME) - 1 && qp_same(b, LIB_NAME, bl);
}

/* Our element of an LD_PRELOAD list (glibc splits on ':' and ' '), or NULL. */
static const char *find_ours(const char *v, size_t *len)
{
    while (*v) {
        size_t n = 0;
        while (v[n] && v[n] != ':' && v[n] != ' ')
            n++;
        if (n && is_our_lib(v, n)) {
            *len = n;
            return v;
        }
        v += n;
        if (*v)
            v++;
    }
    return NULL;
}

/* The captured values still intact (a setproctitle() may have overwritten the strings). */
void qp_get_captured(struct captured *c)
{
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < NCAP; i++) {
        const char *s = __atomic_load_n(&cap_raw[i], __ATOMIC_RELAXED);
        if (s && starts(s, cap_names[i]))
            c->q[i] = s;
    }
    if (c->q[C_LDP]) {
        c->our = find_ours(c->q[C_LDP] + 11, &c->our_len);
        if (c->our)
            c->ldp = c->q[C_LDP];
    }
    c->q[C_LDP] = NULL;
    if (c->q[C_RULES] && c->q[C_RULES][11] == '/')
        c->rules = c->q[C_RULES] + 11;
    c->rules_fd = -1;
    if (c->q[C_RULES_FD]) {
        const char *v = c->q[C_RULES_FD] + 14;
        int fd = 0;
        for (; *v >= '0' && *v <= '9' && fd < 65536; v++)
            fd = fd * 10 + (*v - '0');
        if (!*v && v != c->q[C_RULES_FD] + 14)
            c->rules_fd = fd;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Environment: keeping ourselves in it.
 */
void qp_scan_env(char *const *envp, struct env_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->ldp_idx = -1;
    if (!envp)
        return;
    for (size_t i = 0; envp[i]; i++, s->n++) {
        const char *e = envp[i];
        if (e[0] == 'L' && starts(e, "LD_PRELOAD=")) {
            s->ldp_idx = (long)i;
            size_t l;
            s->ldp_ours = find_ours(e + 11, &l) != NULL;
        } else if (e[0] == 'Q' && starts(e, "QPOD_")) {
            if (starts(e + 5, "OFF=1") && !e[10])
                s->off = 1;
            else if (starts(e + 5, "HOST_ROOT="))
                s->host_root = e + 15;
            else
                for (int q = C_PRELOAD; q < NCAP; q++)
                    if (starts(e, cap_names[q]))
                        s->has_q[q] = 1;
        }
    }
}

/* The environment the launched program gets: envp itself, or a copy with the qpod variables
 * that were dropped put back (LD_PRELOAD: ours first, the others in their order). */
char *const *qp_build_env(char *const *envp, const struct env_scan *s, const struct captured *c,
                          struct env_build *b)
{
    int add_ldp = c->ldp && s->ldp_idx < 0;
    int fix_ldp = c->our && s->ldp_idx >= 0 && !s->ldp_ours;
    int missing = 0;
    for (int q = 0; q < NCAP; q++)
        missing += c->q[q] && !s->has_q[q];
    if (!add_ldp && !fix_ldp && !missing)
        return envp;
    char **out = scratch_get(&b->s_arr, (s->n + NCAP + 2) * sizeof(char *), b->stack, sizeof(b->stack));
    if (!out)
        return envp;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        out[k++] = envp[i];
    if (fix_ldp) {
        const char *old = envp[s->ldp_idx] + 11;
        size_t need = 11 + c->our_len + 1 + strlen(old) + 1;
        char *v = scratch_get(&b->s_ldp, need, b->ldp, sizeof(b->ldp));
        if (v) {
            memcpy(v, "LD_PRELOAD=", 11);
            memcpy(v + 11, c->our, c->our_len);
            v[11 + c->our_len] = *old ? ':' : 0;
            memcpy(v + 12 + c->our_len, old, strlen(old) + 1);
            out[s->ldp_idx] = v;
        }
    }
    if (add_ldp)
        out[k++] = (char *)c->ldp;
    for (int q = 0; q < NCAP; q++)
        if (c->q[q] && !s->has_q[q])
            out[k++] = (char *)c->q[q];
    out[k] = NULL;
    return out;
}

void qp_free_env(struct env_build *b)
{
    scratch_free(&b->s_arr);
    scratch_free(&b->s_ldp);
}
