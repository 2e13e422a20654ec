/* qpod-client's small helpers: the one line it says, the growing buffer (payload, record),
 * paths, the state dir.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

/* One line on stderr. */
void qp_say(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    /* one line, shown literally: paths and argv come from anyone, so control characters (C0,
     * DEL, C1) are written as escapes (\n, \t, \xNN, as qpod_engine/base/textsafe.py does), never
     * interpreted by the terminal */
    char out[4 * sizeof(buf) + 2];
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == 0xc2 && i + 1 < n && (unsigned char)buf[i + 1] >= 0x80 && (unsigned char)buf[i + 1] < 0xa0) {
            k += (size_t)sprintf(out + k, "\\x%02x", (unsigned char)buf[++i]);
        } else if (c == '\n' || c == '\t' || c == '\r') {
            k += (size_t)sprintf(out + k, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : 'r');
        } else if (c < 0x20 || c == 0x7f) {
            k += (size_t)sprintf(out + k, "\\x%02x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '\n';
    (void)!write(2, out, k);
}


void qp_buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            qp_say("qpod: out of memory");
            _exit(EXIT_QPOD);
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void qp_buf_str(struct buf *b, const char *s) { qp_buf_add(b, s, strlen(s)); }

void qp_buf_tag(struct buf *b, char tag, const char *s)
{
    qp_buf_add(b, &tag, 1);
    qp_buf_add(b, s, strlen(s) + 1);
}

void qp_buf_tagn(struct buf *b, char tag, long v)
{
    char n[32];
    snprintf(n, sizeof(n), "%ld", v);
    qp_buf_tag(b, tag, n);
}

int qp_within(const char *path, const char *root)
{
    size_t rl = strlen(root);
    if (rl == 1 && root[0] == '/')
        return path[0] == '/';
    return strncmp(path, root, rl) == 0 && (path[rl] == 0 || path[rl] == '/');
}

const char *qp_base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}


int qp_in_list(const char *name, const char *const *list, int n)
{
    for (int i = 0; n < 0 ? list[i] != NULL : i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return 1;
    return 0;
}


/* The state dir, as qpod_engine/base/paths.py finds it: $QPOD_STATE_DIR, else
 * $XDG_STATE_HOME/qpod, else ~/.local/state/qpod. NULL when none can be named. */
char *qp_state_dir(void)
{
    const char *q = getenv("QPOD_STATE_DIR");
    char *out = NULL;
    if (q && *q) {
        if (q[0] == '/')
            return strdup(q);
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd)) || asprintf(&out, "%s/%s", cwd, q) < 0)
            return NULL;
        return out;
    }
    const char *x = getenv("XDG_STATE_HOME");
    if (x && *x)
        return asprintf(&out, "%s/qpod", x) < 0 ? NULL : out;
    const char *home = getenv("HOME");
    if (!home || !*home)
        return NULL;
    return asprintf(&out, "%s/.local/state/qpod", home) < 0 ? NULL : out;
}
