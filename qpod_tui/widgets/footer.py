"""The footer: the view's keys from the left, then always, at the right end, the command
palette, help and quit. Keys that do not fit are left out whole and an ellipsis says so (the
stock footer cut the last ones mid-label and pushed help and quit off a 120-column screen)."""

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey

from qpod_tui.cells import cells

END_ACTIONS = ("command_palette", "help", "quit")  # in this order, at the right end


def key_width(key: FooterKey, compact: bool) -> int:
    """Cells a FooterKey takes (its CSS: key padded 0 1 and description 0 1 0 0; compact: a
    space between them and a margin of 1)."""
    if compact:
        return cells(key.key_display) + (1 + cells(key.description) if key.description else 0) + 1
    return cells(key.key_display) + 2 + (cells(key.description) + 1 if key.description else 0)


def bare_key(k: FooterKey) -> FooterKey:
    """The key alone, its description as its tooltip (where the footer has no room for it)."""
    tooltip = k.tooltip if isinstance(k.tooltip, str) and k.tooltip else k.description
    return FooterKey(k.key, k.key_display, "", k.action, disabled=k._disabled, tooltip=tooltip).data_bind(
        compact=Footer.compact
    )


class QFooter(Footer):
    DEFAULT_CSS = """
    QFooter .footer-spacer { width: 1fr; height: 1; }
    QFooter .footer-more { width: auto; height: 1; padding: 0 1 0 0; color: $footer-description-foreground; }
    QFooter FooterKey.-command-palette { dock: none; border-left: none; padding-right: 0; }
    """

    def __init__(self) -> None:
        super().__init__(show_command_palette=True)
        self._width = 0

    def compose(self) -> ComposeResult:
        keys = [k for k in super().compose() if isinstance(k, Widget)]
        end = sorted(
            (k for k in keys if isinstance(k, FooterKey) and k.action in END_ACTIONS),
            key=lambda k: END_ACTIONS.index(k.action),
        )
        rest = [k for k in keys if k not in end]
        width = self.size.width or self.app.size.width
        compact = width < 100
        if self.compact != compact:  # (a change restyles every key: costly, so only when it changes)
            self.compact = compact
        budget = width - sum(key_width(k, compact) for k in end) - 1
        shown: list[Widget] = []
        bare = False  # past the first key that did not fit whole: keys without their descriptions
        for k in rest:
            if bare and isinstance(k, FooterKey) and k.description:
                k = bare_key(k)  # the view's own keys stay listed (? names them all) rather than lost
            w = key_width(k, compact) if isinstance(k, FooterKey) else 999
            if not bare and w > budget - (0 if k is rest[-1] else 2) and isinstance(k, FooterKey):
                bare = True
                k = bare_key(k)
                w = key_width(k, compact)
            if w > budget - (0 if k is rest[-1] else 2):  # room for the ellipsis unless it is the last
                shown.append(Static("…", classes="footer-more"))
                break
            shown.append(k)
            budget -= w
        yield from shown
        yield Static("", classes="footer-spacer")
        yield from end

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.call_later(self.recompose)
