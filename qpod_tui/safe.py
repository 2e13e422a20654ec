"""Text the TUI does not control (paths, argv, branch and image names, env values, podman's
errors) is drawn literally: control characters escaped by the engine's one helper
(``qpod_engine.base.textsafe.visible``), and never parsed as markup, so ``[/bold]`` cannot crash a
view and ``[link=...]`` cannot make a link. Build such text with these functions (a ``Text`` is
never parsed); plain ``str`` given to a widget is reserved for qpod's own fixed strings."""

from rich.text import Text

from qpod_engine.api import visible


def literal(value: object, style: str = "") -> Text:
    """``value`` on one line, as is (control characters and newlines escaped)."""
    return Text(visible(value), style=style, end="")


def literal_lines(value: object, style: str = "") -> Text:
    """``value`` as is, its line breaks kept (a container's output, an error of several lines)."""
    return Text(visible(value, keep_newlines=True), style=style, end="")


def assemble(*parts: "str | tuple[str, str] | Text") -> Text:
    """``Text.assemble`` with every str part escaped (styles come from qpod, text from anywhere)."""
    out = Text(end="")
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(visible(part[0], keep_newlines=True), style=part[1])
        else:
            out.append(visible(part, keep_newlines=True))
    return out
