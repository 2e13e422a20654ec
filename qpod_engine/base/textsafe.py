"""Showing text qpod does not control literally: repository paths, argv, branch names, image
names, environment values, podman's errors. A terminal must never interpret them (an argv word
``\\e]0;title\\a`` would set the window title, ``\\e[2J`` clear the screen, a newline fake a
log line), so every character a terminal could act on is shown as a Python-repr-like escape:
ESC as ``\\x1b``, newline as ``\\n``, U+202E (right-to-left override) as ``\\u202e``; an
undecodable byte (a surrogate escape of a path) as ``\\xNN``. Printable text, non-ASCII
included, is left alone. The TUI uses the same function and then never parses markup.

Stdlib only and cheap: ``qpod log`` runs it on every field it prints.
"""

import unicodedata

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(value: object, keep_newlines: bool = False) -> str:
    """``value`` as text with every non-printable character escaped (see the module doc).
    ``keep_newlines`` keeps line breaks (and tabs) for multi-line text shown as such, e.g. a
    container's output in a scrolling pane."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    if keep_newlines:
        return "".join(ch if ch.isprintable() or ch in "\n\t" else _escape(ch) for ch in text)
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes (after ``visible``: wide East Asian characters take two,
    combining marks none). For aligning plain-text tables."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` cells."""
    return text + " " * max(0, width - cell_width(text))
