"""Every error wsfixture raises, under one root that is never raised itself.

::

    WsfixtureError              the root: catch it to catch them all
    ├── ConfigError             bad input, found before anything is created
    ├── PrerequisiteError       a tool or permission is missing; names what to install
    ├── HostCommandError        a host-side command (ip, mount, ...) failed  [host.system]
    ├── ImageBuildError         an image or layer could not be built, or a cached one is corrupt
    │   └── TransferError       an export or import cannot be done  [image.archive]
    ├── TemplateError           a VM template could not be made or restored: the VM boots cold
    │   └── CorruptTemplateError  a template's files are not what was saved: it is made anew
    ├── LabError                the lab network could not be made or changed (DNS, addresses)
    ├── StartError              a workspace could not be started (its machine failed to boot)
    │   ├── ReadyTimeout        it started but never became ready in time
    │   └── OvercommitError     its memory is more than the host has available: not started
    ├── WorkspaceGone           a workspace in use is not running (never started, or died)
    ├── WorkspacePaused         a command sent to a paused workspace (``ws.pause()``)
    ├── CheckpointError         a checkpoint or rollback cannot be done; nothing was changed
    ├── CommandError            a command in a workspace exited non-zero
    │   └── CommandTimeout      a command in a workspace ran past its timeout (a TimeoutError)
    ├── WaitError               a wait_* in a running workspace ended without its condition
    │   └── WaitTimeout         ... because time ran out (a TimeoutError)
    ├── CheckFailed             a built-in check found the workspace wrong  [checks]
    ├── FaultError              a fault cannot be made as asked: names the argument
    ├── CopyError               a copy in or out cannot be done; nothing half-written  [copying]
    ├── CleanupError            one or more resources could not be released
    ├── QmpError                QEMU's monitor refused a command or went away  [backends.qemu.qmp]
    ├── RegistryError           an OCI registry refused or failed  [image.registry]
    │   └── RegistryUnreachableError  ... could not be reached at all
    ├── UsageError              the command line asks for something that cannot be  [cli.lookup]
    └── HostsFileError          a hosts file's wsfixture block is damaged  [cli.hostsfile]

Errors that concern a workspace's start carry the tail of its console log in the message,
so a failure report shows the evidence without another step. tests/unit/test_errors.py
holds this drawing and the classes together.
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


def with_tail(text: str, what: str, tail: str) -> str:
    """An error's text, then the last lines of ``what`` (a console, a build log) if any."""
    return f"{text}\n--- {what} (last lines) ---\n{tail}" if tail else text


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


class ImageBuildError(WsfixtureError):
    """An image or a layer could not be built, or a cached one no longer holds what a boot
    needs. ``image`` names it (its key, and what it installs)."""

    def __init__(self, image: str, reason: str, log_tail: str = "") -> None:
        self.image = image
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(with_tail(f"image {image}: {reason}", "build log", log_tail))


class TemplateError(WsfixtureError):
    """A VM template could not be made or restored; the VM boots cold instead."""


class CorruptTemplateError(TemplateError):
    """A template's files are not what was saved (truncated, changed, another QEMU's)."""


class LabError(WsfixtureError):
    """The lab network could not be made or changed."""

    def __init__(self, lab: str, reason: str, log_tail: str = "") -> None:
        self.lab = lab
        self.reason = reason
        text = f"lab {lab}: {reason}"
        if log_tail:
            text += f"\n{log_tail}"
        super().__init__(text)


class StartError(WsfixtureError):
    """A workspace failed to start."""

    def __init__(self, name: str, reason: str, console_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        self.console_tail = console_tail
        text = f"workspace {name!r} failed to start: {reason}"
        super().__init__(with_tail(text, f"console of {name}", console_tail))


class ReadyTimeout(StartError):
    """A workspace did not become ready within its timeout."""

    def __init__(self, name: str, awaited: str, timeout: float, state: str, console_tail: str = ""):
        self.awaited = awaited
        self.timeout = timeout
        self.state = state
        reason = f"timed out after {timeout:.1f}s waiting for {awaited}; last state: {state}"
        super().__init__(name, reason, console_tail)


class OvercommitError(StartError):
    """A workspace's memory is more than the host has available; refused before anything
    is made, with the figures, unless overcommit was asked for."""

    def __init__(self, name: str, wanted_mib: int, available_mib: int, what: str) -> None:
        self.wanted_mib = wanted_mib
        self.available_mib = available_mib
        super().__init__(
            name,
            f"{what} = {wanted_mib} MiB, but the host has {available_mib} MiB available "
            "(MemAvailable); free memory, ask for less, or allow overcommit "
            "(defaults.overcommit = true, pytest --ws-overcommit)",
        )


class WorkspaceGone(WsfixtureError):
    """A workspace was used while it is not running: never started, stopped, or its
    machine died. Carries the console tail when there is one."""

    def __init__(self, name: str, reason: str, console_tail: str = "") -> None:
        self.name = name
        self.reason = reason
        text = f"workspace {name!r} is not running: {reason}"
        super().__init__(with_tail(text, f"console of {name}", console_tail))


class WorkspacePaused(WsfixtureError):
    """A command was sent to a paused workspace: it would only hang."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"workspace {name!r} is paused: ws.resume() before sending it commands")


class CheckpointError(WsfixtureError):
    """A checkpoint or a rollback that cannot be done: an unknown or bad tag, a workspace
    that is not running, a machine that cannot be saved. Nothing was changed."""

    def __init__(self, name: str, reason: str, hint: str = "") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"workspace {name!r}: {reason}" + (f"; {hint}" if hint else ""))


class WaitError(WsfixtureError):
    """A wait in a running workspace ended without its condition (a unit failed)."""

    def __init__(self, name: str, awaited: str, state: str) -> None:
        self.name = name
        self.awaited = awaited
        self.state = state
        super().__init__(f"workspace {name!r}: gave up waiting for {awaited}; {state}")


class WaitTimeout(WaitError, TimeoutError):
    """A wait in a running workspace timed out."""

    def __init__(self, name: str, awaited: str, timeout: float, state: str) -> None:
        self.timeout = timeout
        super().__init__(name, awaited, f"timed out after {timeout:.1f}s; last state: {state}")


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
            f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
        )


def _tail(text: str, limit: int = 4096) -> str:
    """The end of a command's output, for a message; the error keeps all of it."""
    text = text.rstrip()
    return text if len(text) <= limit else f"[... {len(text) - limit} characters]{text[-limit:]}"


class CommandTimeout(CommandError, TimeoutError):
    """A command in a workspace ran past its timeout."""

    def __init__(self, name: str, command: str, timeout: float, stdout: str, stderr: str) -> None:
        self.timeout = timeout
        super().__init__(name, f"{command} (timed out after {timeout}s)", -1, stdout, stderr)


class FaultError(WsfixtureError):
    """A fault between workspaces asked for with an argument that cannot be: which one,
    what it was, what is allowed. Nothing of it was made."""

    def __init__(self, argument: str, value: str, allowed: str) -> None:
        self.argument = argument
        super().__init__(f"fault: {argument} {value}: allowed: {allowed}")


class CleanupError(WsfixtureError):
    """Releasing resources failed. Never swallowed: a swallowed cleanup error is a leak."""

    def __init__(self, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.failures = list(failures)
        lines = [f"{len(self.failures)} cleanup step(s) failed:"]
        lines += [f"  - {what}: {type(exc).__name__}: {exc}" for what, exc in self.failures]
        super().__init__("\n".join(lines))
