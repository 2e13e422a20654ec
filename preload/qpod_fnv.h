/* The one 64-bit FNV-1a of qpod's C side (offset 0xcbf29ce484222325, prime 0x100000001b3), the
 * twin of qpod_engine/base/fnv.py: the seal of the rules file (the library's rules_ok) and the
 * file name of a root's launch spec, <state>/fast/<16 hex digits> (the client's).
 *
 * Header only and free of libc: the library's hook path uses it (no malloc, no stdio, no locks).
 */
#ifndef QPOD_FNV_H
#define QPOD_FNV_H

#include <stddef.h>
#include <stdint.h>

#define QP_FNV_OFFSET 0xcbf29ce484222325ULL
#define QP_FNV_PRIME 0x100000001b3ULL

/* The hash of len bytes at data. */
static inline uint64_t qp_fnv1a(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = QP_FNV_OFFSET;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * QP_FNV_PRIME;
    return h;
}

#endif
