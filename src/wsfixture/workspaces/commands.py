"""What a test says to a workspace, written once on one abstract ``run``: ``succeed``,
``fail`` and the ``wait_*`` family, as the NixOS test driver's Machine writes them on its
``execute``. Pure over ``run`` and ``port_open``, so a fake tests them without a machine."""

from __future__ import annotations

import abc
import enum
import re
import shlex
from collections.abc import Mapping

from wsfixture.errors import CommandError, ConfigError, ConfigIssue, WaitError, WaitTimeout
from wsfixture.retry import retry_until


class _Default(enum.Enum):
    COMMAND_TIMEOUT = "the handle's command_timeout"


# ``run``'s timeout left out: the handle's ``command_timeout``.
COMMAND_TIMEOUT_DEFAULT = _Default.COMMAND_TIMEOUT
Timeout = float | None | _Default
WAIT_TIMEOUT = 30.0
OWN_COMMAND_TIMEOUT = 30.0  # a command of wsfixture's own in a workspace (a listing, `date`)


VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def shell_line(
    command: str, env: Mapping[str, str] | None = None, cwd: str | None = None,
    user: str | None = None,
) -> str:  # fmt: skip
    """``command`` (a shell line) with ``env`` exported, run in ``cwd``, as ``user``
    (through doas, the workspace user's own right to be root, and ``runuser`` from root to
    anyone else): one line for the login shell. ConfigError naming the argument for a
    name no shell or system would take."""
    issues = [ConfigIssue("env", "is not a variable name", key, "letters, digits and _, "
                          "not starting with a digit") for key in env or {}
              if not VARIABLE_RE.match(key)]  # fmt: skip
    if user is not None and not USER_RE.match(user):
        issues.append(ConfigIssue("user", "is not a user name", user, "a-z, 0-9, _ and -"))
    if cwd is not None and (not cwd or "\0" in cwd):
        issues.append(ConfigIssue("cwd", "is not a directory", cwd, "a path"))
    if issues:
        raise ConfigError(issues)
    exports = "".join(f"export {key}={shlex.quote(value)}; " for key, value in (env or {}).items())
    into = f"cd -- {shlex.quote(cwd)} || exit 1; " if cwd is not None else ""
    line = f"{exports}{into}{command}"
    if user is None:
        return line
    become = "" if user == "root" else f"/usr/sbin/runuser -u {user} -- "
    return f"doas -n -- {become}/bin/sh -c {shlex.quote(line)}"


class Commands(abc.ABC):
    """Commands and waits over ``run``; ``name`` says whose they are in errors."""

    @property
    @abc.abstractmethod
    def name(self) -> str: ...

    @abc.abstractmethod
    def run(
        self,
        command: str,
        timeout: Timeout = COMMAND_TIMEOUT_DEFAULT,
        max_output: int | None = None,
        probe: bool = False,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> tuple[int, str, str]:
        """Run a shell command as the workspace user (or ``user``), with ``env`` and in
        ``cwd`` if given; return (rc, stdout, stderr). ``probe``: wsfixture's own polling
        (a report marks it as such)."""

    @abc.abstractmethod
    def port_open(self, port: int) -> bool:
        """Whether something accepts connections on ``port`` of the workspace."""

    def succeed(
        self, command: str, timeout: Timeout = COMMAND_TIMEOUT_DEFAULT, *,
        env: Mapping[str, str] | None = None, cwd: str | None = None, user: str | None = None,
    ) -> str:  # fmt: skip
        """Run a command (``env``, ``cwd``, ``user`` as ``run``'s); return stdout; raise
        CommandError (rc, stdout, stderr) if it fails."""
        __tracebackhide__ = True
        rc, out, err = self.run(command, timeout, env=env, cwd=cwd, user=user)
        if rc != 0:
            raise CommandError(self.name, command, rc, out, err)
        return out

    def fail(
        self, command: str, timeout: Timeout = COMMAND_TIMEOUT_DEFAULT, *,
        env: Mapping[str, str] | None = None, cwd: str | None = None, user: str | None = None,
    ) -> str:  # fmt: skip
        """Run a command that must fail; return its stderr."""
        __tracebackhide__ = True
        rc, out, err = self.run(command, timeout, env=env, cwd=cwd, user=user)
        if rc == 0:
            raise CommandError(self.name, f"{command} (expected to fail)", rc, out, err)
        return err

    def wait_until_succeeds(self, command: str, timeout: float = WAIT_TIMEOUT) -> str:
        """Retry ``command`` until it exits 0; WaitTimeout with its last output if never."""
        last: dict[str, str] = {}

        def attempt(final: bool) -> str | None:
            rc, out, err = self.run(command)
            last["state"] = f"exit status {rc}: {(out + err).strip()[-500:]}"
            return out if rc == 0 else None

        result = retry_until(attempt, timeout, 0.1)
        if result is None:
            raise WaitTimeout(self.name, f"`{command}` to succeed", timeout, last.get("state", ""))
        return result

    def wait_for_unit(self, unit: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until a systemd unit is active; fail at once if it failed."""
        quoted = shlex.quote(unit)
        last: dict[str, str] = {}

        def active(final: bool) -> bool | None:
            _, out, _ = self.run(f"systemctl is-active {quoted}", probe=True)
            state = out.strip()
            last["state"] = state
            if state == "failed":
                _, status, _ = self.run(f"systemctl status --no-pager {quoted}", probe=True)
                raise WaitError(self.name, f"unit {unit} to be active", f"it failed:\n{status}")
            return True if state == "active" else None

        if retry_until(active, timeout, 0.1) is None:
            raise WaitTimeout(
                self.name, f"unit {unit} to be active", timeout, last.get("state", "")
            )

    def wait_for_port(self, port: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until something listens on ``port`` of the workspace (seen from the lab)."""
        if retry_until(lambda final: True if self.port_open(port) else None, timeout) is None:
            raise WaitTimeout(self.name, f"port {port} to accept connections", timeout, "closed")

    def journal(self, lines: int = 100) -> str:
        """The tail of the current boot's journal (doas: the workspace user's own right)."""
        _, out, err = self.run(journal_command(lines))
        return out or err


def journal_command(lines: int, follow: bool = False) -> str:
    """The one journalctl command line: this boot, no pager, the last ``lines``."""
    return f"doas -n journalctl -b --no-pager -n {lines}" + (" --follow" if follow else "")
