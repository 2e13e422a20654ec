"""``qpod tui``: repositories, environments, containers and the command log in one dashboard.

The app only talks to ``qpod_engine.api.Engine``; every call that may touch podman or the
disk runs in a worker and comes back as a message. ``make_app(engine)`` builds the app, so
tests and the screenshot script choose the engine (and with it the data).
"""

import argparse
import asyncio
import gc
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import AwaitMount, Widget
from textual.widgets import Tab, TabbedContent, TabPane, Tabs
from textual.widgets._tabs import Underline  # (the tabs' underline, not exported)

from qpod_engine.api import Engine, QpodError, visible

from .screens.help import HelpScreen
from .widgets.command_log import CommandLogView
from .widgets.containers import ContainersView
from .widgets.environments import EnvironmentsView
from .widgets.footer import QFooter
from .widgets.log_table import LogTable
from .widgets.nav_table import NAV_BINDINGS
from .widgets.repositories import RepositoriesView
from .widgets.running import title_suffix

# (id, tab title, view class)
VIEWS: tuple[tuple[str, str, type[Widget]], ...] = (
    ("repositories", "1 Repositories", RepositoriesView),
    ("environments", "2 Environments", EnvironmentsView),
    ("containers", "3 Containers", ContainersView),
    ("log", "4 Command log", CommandLogView),
)


class QpodApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "qpod"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "1", "show_view('repositories')", "Repos", tooltip="Show the bound repositories", id="view.repositories"
        ),
        Binding("2", "show_view('environments')", "Envs", tooltip="Show the environments", id="view.environments"),
        Binding("3", "show_view('containers')", "Containers", tooltip="Show qpod's containers", id="view.containers"),
        Binding("4", "show_view('log')", "Log", tooltip="Show the command log", id="view.log"),
        Binding("slash", "filter", "Filter", tooltip="Filter the list in view", id="app.filter"),
        Binding("question_mark", "help", "Help", tooltip="Show every key", id="app.help"),
        Binding("f5,ctrl+r", "reload", "Reload", show=False, tooltip="Reload the view's data", id="app.reload"),
        Binding("q", "quit", "Quit", tooltip="Quit", id="app.quit"),
        # priority: decided when the key is read, so keys typed after Tab (a burst, or typed
        # ahead) reach the field it moved to, in order (a widget's own binding came too late:
        # "q1<Tab>q2" filled one field with q1q2)
        Binding("tab", "tab_key(1)", "Next field", show=False, priority=True, tooltip="Next field", id="app.next"),
        Binding(
            "shift+tab",
            "tab_key(-1)",
            "Previous field",
            show=False,
            priority=True,
            tooltip="Previous field",
            id="app.prev",
        ),
    ]

    INDEX_LOG_AFTER = 1.0  # seconds after start
    FIRST_ROWS_WAIT = 0.3  # seconds the first frame may wait for the first view's rows (config files)
    MOUNT_REST_AFTER = 1.0  # seconds after start: the other views, even if the first view's rows are late

    def __init__(
        self,
        engine: Engine,
        view: str = "repositories",
        keymap: dict[str, str] | None = None,
        keymap_error: str | None = None,
        watch: bool = True,
        freeze_gc: bool = False,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.start_view = view
        self.keymap = dict(keymap or {})
        self.keymap_error = keymap_error
        self.watch_changes = watch  # not ``watch``: that is DOMNode.watch, a method Textual calls
        self.freeze_gc = freeze_gc
        self.active_view = ""
        self._saved_theme = ""
        self.views_ready = False  # every view mounted (the first one is, from the start)
        self._mounting: dict[str, AwaitMount] = {}
        self._rest_mounting = False
        self._log_wanted = False

    def compose(self) -> ComposeResult:
        """Only the first view: the others are mounted once its rows are on screen (each view is
        dozens of widgets whose styles would be computed before the first frame)."""
        with TabbedContent(id="views", initial=self.start_view):
            for view_id, title, cls in VIEWS:
                with TabPane(title, id=view_id):
                    if view_id == self.start_view:
                        yield cls(id=f"{view_id}-view", classes="view")
        yield QFooter()

    def on_mount(self) -> None:
        self.query_one(Tabs).can_focus = False  # keys 1-4 switch views; focus stays in the view
        if self.keymap:
            self._apply_keymap()
        if self.keymap_error:
            self.notify(f"keymap ignored: {self.keymap_error}", severity="error", timeout=10)
        self._restore_theme()
        self.active_view = self.start_view
        # its rows in the first frame when the config is read in time (see first_load)
        self.view(self.start_view).first_load(self.FIRST_ROWS_WAIT)  # type: ignore[attr-defined]
        self.set_timer(self.MOUNT_REST_AFTER, self.first_rows_shown)
        if self.start_view != "log":  # the log tab counts what runs: index the log once the first
            # view is on screen (indexing 100,000 records meanwhile would delay its first paint)
            self.set_timer(self.INDEX_LOG_AFTER, self.prepare_log)
        if self.freeze_gc:
            # ~100,000 objects of imported modules live as long as the app: a full collection
            # walking them all stalls a frame for 50-100 ms; frozen, they are never walked again
            # (now, and once the workers' lazy imports, podman-py and pygit2, are done)
            gc.freeze()
            self.set_timer(1.0, gc.freeze)

    # --- the other views, mounted after the first paint

    def first_rows_shown(self) -> None:
        """The first view drew its first rows (or MOUNT_REST_AFTER passed): once they are on
        screen, the other views are mounted and loaded, then the file watcher starts."""
        if not self._rest_mounting:
            self._rest_mounting = True
            self.call_after_refresh(self._mount_rest)

    @work(group="views")
    async def _mount_rest(self) -> None:
        for view_id, _title, _cls in VIEWS:
            mounting = self._mount_view(view_id)
            if mounting is not None:
                await mounting  # one view at a time: frames go on between them
                if not self.query(f"#{view_id}-view"):
                    return  # the app is closing
                if view_id != "log":  # loaded now, so switching to them is instant
                    self.view(view_id).load()  # type: ignore[attr-defined]
        self.views_ready = True
        if self.freeze_gc:
            gc.freeze()  # the views' widgets and styles live as long as the app, as the imports do
        if self._log_wanted:
            self.prepare_log()
        if self.watch_changes:
            self.watch_files()

    def _mount_view(self, view_id: str) -> AwaitMount | None:
        """Mount a view not mounted yet; its AwaitMount while it is being mounted, else None."""
        if view_id in self._mounting:
            mounting = self._mounting[view_id]
            return None if self.query(f"#{view_id}-view").first().is_mounted else mounting
        if self.query(f"#{view_id}-view"):
            return None  # (the first view, composed)
        cls = next(c for v, _t, c in VIEWS if v == view_id)
        pane = self.query_one(f"#{view_id}", TabPane)
        if not pane.is_attached:  # the app is closing
            return AwaitMount(pane, [])
        mounting = pane.mount(cls(id=f"{view_id}-view", classes="view"))
        self._mounting[view_id] = mounting
        return mounting

    def when_view(self, view_id: str, then: Callable[[Widget], object]) -> None:
        """``then(view)`` now if the view is mounted, else once it is (switched to at once)."""
        mounting = self._mount_view(view_id)
        if mounting is None:
            then(self.view(view_id))
            return

        async def later() -> None:
            await mounting
            if self.query(f"#{view_id}-view"):  # (else the app is closing)
                then(self.view(view_id))

        self.run_worker(later(), group="views")

    def prepare_log(self) -> None:
        """Index the log (its tab counts the running commands), now or once it is mounted."""
        if self.query("#log-view"):
            self.view("log").prepare()  # type: ignore[attr-defined]
        else:
            self._log_wanted = True  # once mounted

    def _apply_keymap(self) -> None:
        """Apply the usable entries; report the others once (file:line), never silently."""
        from .keymap import keymap_problems, usable

        try:
            path = self.engine.settings_path()
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError, QpodError):
            path, text = "settings.yaml", ""
        problems = keymap_problems(self.keymap, text, path)
        self.keymap = usable(self.keymap)
        self.set_keymap(self.keymap)
        if problems:
            self.notify("\n".join(problems), severity="error", timeout=12)

    def key_for(self, binding_id: str) -> str:
        """The key shown for a binding id after the user's keymap (for hint texts)."""
        for cls in [type(self), *(c for _v, _t, c in VIEWS), LogTable]:
            for b in cls.BINDINGS:  # type: ignore[attr-defined]
                if isinstance(b, Binding) and b.id == binding_id:
                    return self.key_of(b).split(", ")[0]
        return "?"

    # --- the theme picked in the palette, kept for the next start

    def _restore_theme(self) -> None:
        try:
            name = self.engine.tui_theme()
        except QpodError:
            name = None
        if name and name in self.available_themes:
            self.theme = name
        self._saved_theme = self.theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, theme: object) -> None:
        name = getattr(theme, "name", None)
        if name and name != self._saved_theme:
            self._saved_theme = name
            self._save_theme(name)

    @work(thread=True, group="theme")
    def _save_theme(self, name: str) -> None:
        try:
            self.engine.save_tui_theme(name)
        except QpodError as err:
            self.call_from_thread(self.notify, f"{err} (it applies until you quit)", severity="warning")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: str = "information",  # type: ignore[override]
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text: they quote paths, argv and podman's errors, and
        markup in those must not be interpreted (``[/bold]`` would crash, ``[link=]`` link)."""
        super().notify(
            visible(message, keep_newlines=True),
            title=visible(title),
            severity=severity,  # type: ignore[arg-type]
            timeout=timeout,
            markup=False,
        )

    def running_count(self, count: int) -> None:
        """The log tab's title says how many commands run now."""
        title = next(t for v, t, _c in VIEWS if v == "log")
        tab = self.query_one(TabbedContent).get_tab("log")
        tab.label = title + title_suffix(count)
        self.fit_tab_underline(tab)
        for view in self.query("#containers-view"):
            view.running_changed()  # type: ignore[attr-defined]

    def fit_tab_underline(self, relabelled: Tab, tries: int = 100) -> None:
        """Puts the tabs' underline under the active tab once a new title is laid out. Textual
        moves the underline on a relabel, but measures the tabs when the next refresh comes, which
        on a loaded machine can be before the layout, and then never again (seen: an underline
        left at the old width for good)."""
        tabs = self.query(Tabs)
        underlines = tabs.first().query(Underline) if tabs and tabs.first().is_attached else None
        active = tabs.first().active_tab if underlines else None
        if not underlines or active is None or not relabelled.is_attached:
            return  # (the app is closing, or no tab is active)
        underline = underlines.first()
        laid_out = relabelled.region.width == relabelled.label.cell_length + relabelled.styles.gutter.width
        moving = any(self.animator.is_being_animated(underline, a) for a in ("highlight_start", "highlight_end"))
        if laid_out and not moving:
            # from now on every measure is the right one, Textual's own later moves included
            span = active.virtual_region.shrink(active.styles.gutter).column_span
            underline.highlight_start, underline.highlight_end = span
        elif tries:
            self.set_timer(0.05, partial(self.fit_tab_underline, relabelled, tries - 1))

    def view(self, view_id: str) -> Widget:
        return self.query_one(f"#{view_id}-view")

    @property
    def current_view(self) -> Widget | None:
        """The view on screen; None while it is being mounted (just switched to at start)."""
        found = self.query(f"#{self.query_one(TabbedContent).active}-view")
        return found.first() if found and found.first().is_mounted else None

    def _activate(self, view_id: str) -> None:
        self.active_view = view_id

        def activate(view: Widget) -> None:
            if self.active_view == view_id:  # (not switched away while it was being mounted)
                view.activated()  # type: ignore[attr-defined]

        self.when_view(view_id, activate)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id and event.pane.id != self.active_view:  # a click on a tab, or keys 1-4
            self._activate(event.pane.id)

    # --- actions

    def action_show_view(self, view_id: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != view_id:
            tabs.active = view_id  # TabActivated activates it
        else:
            self._activate(view_id)

    def action_tab_key(self, step: int) -> None:
        """Focus the next (1) or previous (-1) field now; a field whose Tab completes what is
        typed (``tab_completes``) is asked first."""
        focused = self.focused
        completes = getattr(focused, "tab_completes", None)
        if step > 0 and completes is not None and completes():
            return
        if step > 0:
            self.screen.focus_next()
        else:
            self.screen.focus_previous()

    def action_filter(self) -> None:
        if self.current_view is not None:
            self.current_view.action_filter()  # type: ignore[attr-defined]

    def action_reload(self) -> None:
        view = self.current_view
        if isinstance(view, CommandLogView):
            view.changed()
        elif view is not None:
            view.load()  # type: ignore[attr-defined]

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    def key_of(self, binding: Binding) -> str:
        """The key(s) a binding answers to after the keymap."""
        keys = self.keymap.get(binding.id or "", binding.key)
        return ", ".join(self.get_key_display(replace(binding, key=k.strip())) for k in keys.split(","))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        sections = [("Everywhere", type(self).BINDINGS)]
        sections += [(title[2:], cls.BINDINGS) for _id, title, cls in VIEWS]
        sections += [
            ("Every table", NAV_BINDINGS),
            ("Command log table", [b for b in LogTable.BINDINGS if b not in NAV_BINDINGS]),
        ]
        out = []
        for title, bindings in sections:
            rows = [
                (self.key_of(b), b.tooltip or b.description, b.id or "")
                for b in bindings
                if isinstance(b, Binding) and b.id
            ]
            out.append((title, rows))
        return out

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """A command palette entry per view and per action of each view."""
        yield from super().get_system_commands(screen)
        if screen is not self.screen_stack[0]:
            return  # a dialog is open: its own keys apply
        for view_id, title, cls in VIEWS:
            name = title[2:]
            yield SystemCommand(f"Show {name}", f"Switch to view {title[0]}", partial(self.action_show_view, view_id))
            extra = [b for b in LogTable.BINDINGS if b.show] if view_id == "log" else []  # type: ignore[union-attr]
            for b in [*cls.BINDINGS, *extra]:
                if isinstance(b, Binding) and b.id and b.show:
                    yield SystemCommand(
                        f"{name}: {b.tooltip or b.description}",
                        f"key {self.key_of(b)}",
                        partial(self.run_view_action, view_id, b.action),
                    )
        mine = {b.id: b for b in type(self).BINDINGS if isinstance(b, Binding)}
        for binding_id, action in (
            ("app.filter", self.action_filter),
            ("app.reload", self.action_reload),
            ("app.help", self.action_help),
        ):
            b = mine[binding_id]
            yield SystemCommand(b.tooltip, f"key {self.key_of(b)}", action)

    def run_view_action(self, view_id: str, action: str) -> None:
        self.action_show_view(view_id)
        self.when_view(view_id, lambda view: self.call_after_refresh(getattr(view, f"action_{action}")))

    # --- watching the log and the config

    @work(exclusive=True, group="watch")
    async def watch_files(self) -> None:
        """New log records and hand edits of the config reach the views within a second."""
        from watchfiles import awatch

        log = self.engine.log_path()
        config = self.engine.config_dir()
        state = os.path.dirname(log)
        await asyncio.to_thread(os.makedirs, state, exist_ok=True)
        dirs = [state] + ([config] if await asyncio.to_thread(os.path.isdir, config) else [])

        def wanted(_change: object, path: str) -> bool:
            if path.startswith(log):
                return not path.endswith(".lock")
            return (
                path.startswith(config + os.sep)
                and path.endswith(".yaml")
                and not os.path.basename(path).startswith(".")
            )

        try:
            async for changes in awatch(*dirs, watch_filter=wanted, step=50):
                paths = {p for _c, p in changes}
                if any(p.startswith(log) for p in paths):
                    self.view("log").changed()  # type: ignore[attr-defined]
                if any(not p.startswith(log) for p in paths):
                    self.view("repositories").load()  # type: ignore[attr-defined]
                    self.view("environments").load()  # type: ignore[attr-defined]
        except (OSError, RuntimeError) as err:  # e.g. out of inotify watches: poll instead
            self.notify(f"watching files failed ({err}); polling the log every second", severity="warning")
            self.set_interval(1.0, self.view("log").changed)  # type: ignore[attr-defined]


def make_app(engine: Engine, view: str = "repositories", watch: bool = True, freeze_gc: bool = False) -> QpodApp:
    """The app for ``engine``, with the user's key map from settings.yaml."""
    keymap: dict[str, str] = {}
    error = None
    try:
        keymap = engine.keymap()
    except QpodError as err:
        error = str(err)
    return QpodApp(engine, view=view, keymap=keymap, keymap_error=error, watch=watch, freeze_gc=freeze_gc)


def main(argv: list[str] | None = None) -> int:
    """Entry of ``qpod tui [--view VIEW]`` (argv: what follows ``tui``)."""
    parser = argparse.ArgumentParser(prog="qpod tui", description="The qpod dashboard.")
    parser.add_argument(
        "--view", choices=[v for v, _t, _c in VIEWS], default="repositories", help="the view to open first"
    )
    argv = list(argv or [])
    if argv[:1] == ["--"]:  # "qpod tui -- --view log": the CLI passes its separator through
        argv = argv[1:]
    args = parser.parse_args(argv)
    app = make_app(Engine(), view=args.view, freeze_gc=True)
    app.run()
    return app.return_code or 0
