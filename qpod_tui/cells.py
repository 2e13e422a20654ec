"""Display widths in terminal cells (a CJK character takes two, a combining mark none): every
width the TUI computes for text it draws goes through here, never ``len()``."""

from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size

if TYPE_CHECKING:
    from rich.text import Text


def cells(text: str) -> int:
    return cell_len(text)


def fit(text: str, width: int) -> str:
    """``text`` padded or cut to exactly ``width`` cells; a cut ends in an ellipsis."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…"


def fit_text(text: "Text", width: int, left: bool = False) -> "Text":
    """A copy of ``text`` at most ``width`` cells wide; a cut ends (``left``: starts) with an
    ellipsis, so a cut is never silent. ``left`` keeps the end (paths: the end names it)."""
    from rich.text import Text

    if text.cell_len <= width:
        return text
    if width <= 1:
        return Text("…"[:width])
    if not left:
        out = text.copy()
        out.truncate(width, overflow="ellipsis")
        return out
    kept, used = len(text.plain), 0
    while kept > 0 and used + cell_len(text.plain[kept - 1]) <= width - 1:
        kept -= 1
        used += cell_len(text.plain[kept])
    return Text("…", style=text.style, end="") + text[kept:]


def fit_columns(natural: list[int], available: int, minimum: int = 5) -> list[int]:
    """Column widths that fit ``available`` cells: the widest columns give up cells first (down
    to ``minimum``), so short columns (state, uptime) stay whole."""
    widths = list(natural)
    while (excess := sum(widths) - available) > 0:
        top = max(widths, default=0)
        if top <= minimum:
            break
        tied = [k for k, w in enumerate(widths) if w == top]
        below = max((w for w in widths if w < top), default=minimum)
        target = max(minimum, below, top - -(-excess // len(tied)))
        for k in tied:
            widths[k] = target
    return widths
