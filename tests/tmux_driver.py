"""Drive a real terminal: a program in a detached tmux session, keys in, screen out."""

import shlex
import subprocess
import uuid

from conftest import wait_until


class Tmux:
    def __init__(
        self,
        command: str,
        env: dict[str, str] | None = None,
        width: int = 160,
        height: int = 48,
        cwd: str | None = None,
    ) -> None:
        self.name = "qpodtest-" + uuid.uuid4().hex[:8]
        # a tmux server started from pytest hands every pane COLUMNS=80 LINES=24, which Textual
        # and others read before the terminal size: say the real size
        env = {"COLUMNS": str(width), "LINES": str(height), **(env or {})}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell_cmd = f"env {exports} {command}"
        args = ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height)]
        if cwd:
            args += ["-c", cwd]
        subprocess.run([*args, shell_cmd], check=True)
        subprocess.run(["tmux", "set-option", "-t", self.name, "remain-on-exit", "on"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def type(self, text: str) -> None:
        """Type literally, then Enter."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        self.send("Enter")

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def wait_for(self, text: str, timeout: float = 30) -> str:
        return self.wait_for_any((text,), timeout)

    def wait_for_any(self, texts: tuple[str, ...], timeout: float = 30) -> str:
        """The screen, once any of ``texts`` is on it."""

        def shown() -> str | None:
            s = self.screen()
            return s if any(t in s for t in texts) else None

        return wait_until(shown, lambda: f"none of {texts!r} on screen:\n{self.screen()}", timeout, 0.1)

    def wait_count(self, text: str, count: int, timeout: float = 30) -> str:
        """Wait until ``text`` is on screen ``count`` times (e.g. the n-th shell prompt)."""

        def shown() -> str | None:
            s = self.screen()
            return s if s.count(text) >= count else None

        return wait_until(shown, lambda: f"{text!r} not {count} times on screen:\n{self.screen()}", timeout, 0.1)

    def wait_dead(self, timeout: float = 30) -> None:
        """Until the program in the pane has ended."""
        wait_until(self.dead, lambda: f"the program did not end:\n{self.screen()}", timeout, 0.1)

    def dead(self) -> bool:
        out = subprocess.run(
            ["tmux", "display-message", "-p", "-t", self.name, "#{pane_dead}"], capture_output=True, text=True
        ).stdout.strip()
        return out == "1"

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
