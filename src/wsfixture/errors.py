"""Every error wsfixture raises, under one root.

::

    WsfixtureError              never raised itself; catch it to catch them all
    ├── ConfigError             bad input, found before anything is created
    ├── PrerequisiteError       a tool or permission is missing; names what to install
    ├── StartError              a workspace could not be started (process died, boot failed)
    │   └── ReadyTimeout        it started but never became ready in time
    ├── CommandError            a command in a workspace exited non-zero
    └── CleanupError            one or more resources could not be released

Errors that concern a workspace's start carry the tail of its console log in the message,
so a failure report shows the evidence without another step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WsfixtureError(Exception):
    """Root of every wsfixture error."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: where it is, what was found, what is allowed."""

    where: str
    problem: str
    value: object = None
    allowed: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.allowed:
            text += f"; allowed: {self.allowed}"
        return text


class ConfigError(WsfixtureError):
    """The configuration is invalid. Carries every problem found, not only the first."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str = "") -> None:
        self.issues = list(issues)
        self.source = source
        head = f"invalid wsfixture config{f' in {source}' if source else ''}"
        count = len(self.issues)
        lines = [f"{head}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class PrerequisiteError(WsfixtureError):
    """Something wsfixture needs on the host is missing."""

    def __init__(self, what: str, package: str = "", hint: str = "") -> None:
        self.what = what
        self.package = package
        text = what
        if package:
            text += f"; install it with: apt-get install {package}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class StartError(WsfixtureError):
    """A workspace failed to start."""

    def __init__(self, name: str, reason: str, console_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        self.console_tail = console_tail
        text = f"workspace {name!r} failed to start: {reason}"
        if console_tail:
            text += f"\n--- console of {name} (last lines) ---\n{console_tail}"
        super().__init__(text)


class ReadyTimeout(StartError):
    """A workspace did not become ready within its timeout."""

    def __init__(self, name: str, awaited: str, timeout: float, state: str, console_tail: str = ""):
        self.awaited = awaited
        self.timeout = timeout
        self.state = state
        reason = f"timed out after {timeout:.1f}s waiting for {awaited}; last state: {state}"
        super().__init__(name, reason, console_tail)


class CommandError(WsfixtureError):
    """A command run in a workspace exited non-zero."""

    def __init__(self, name: str, command: str, rc: int, stdout: str, stderr: str) -> None:
        self.name = name
        self.command = command
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed in workspace {name!r} with exit status {rc}: {command}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


class CleanupError(WsfixtureError):
    """Releasing resources failed. Never swallowed: a swallowed cleanup error is a leak."""

    def __init__(self, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.failures = list(failures)
        lines = [f"{len(self.failures)} cleanup step(s) failed:"]
        lines += [f"  - {what}: {type(exc).__name__}: {exc}" for what, exc in self.failures]
        super().__init__("\n".join(lines))
