"""The environment qpod's Python hands on exactly as the caller gave it.

Python coerces the C locale at start (PEP 538): with ``LANG=C`` (or no locale at all) it sets
``LC_CTYPE=C.UTF-8`` in its own environment, and every program it starts inherits that: gcc
prints curly quotes, sort orders change, and a cold command (through the launcher) would see
another environment than a warm one (the C client alone). ``-I`` cannot turn it off (it ignores
PYTHONCOERCECLOCALE). The environment the process was started with is still in
``/proc/self/environ`` (setenv never rewrites it): put back what the caller had.
"""

import os


def restore_locale() -> None:
    """Undo Python's locale coercion in ``os.environ`` (and so in every child); a no-op when the
    caller's LC_CTYPE was kept. Stdlib only, one small read: the launcher calls it first."""
    if "LC_CTYPE" not in os.environ:
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            started_with = f.read()
    except OSError:
        return
    for item in started_with.split(b"\0"):
        if item.startswith(b"LC_CTYPE="):
            if os.environb.get(b"LC_CTYPE") != item[9:]:
                os.environb[b"LC_CTYPE"] = item[9:]
            return
    del os.environ["LC_CTYPE"]
