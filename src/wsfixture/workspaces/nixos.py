"""A workspace as the NixOS test driver's ``Machine`` (``ws.nixos``): its verbs, with its
semantics, so that a ``testScript`` runs on a container or a VM as written.

As the driver's: every command runs as root in ``bash`` under ``set -euo pipefail`` (a
line of several commands fails with the first that fails, a pipeline with the last
non-zero status, an unset variable is an error); ``execute`` returns ``(status, stdout)``
within ``timeout`` seconds (900), ``succeed`` and ``fail`` take several commands and
return their outputs joined, and the ``wait_*`` verbs retry each second for ``timeout``
seconds (900). Its failures are wsfixture's (``CommandError``, ``WaitTimeout``,
``WaitError``), where the driver raises its own.

The handle's own verbs (``ws.succeed``, ``ws.run``) stay as they are: the workspace
user's login shell, without those options.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import uuid
from pathlib import Path
from typing import Protocol

from wsfixture.copying import Copied
from wsfixture.errors import CommandError, WaitError, WaitTimeout
from wsfixture.retry import retry_until
from wsfixture.workspaces.commands import Timeout

DRIVER_TIMEOUT = 900  # seconds: the driver's default for a command and for a wait
RETRY_EVERY = 1.0  # seconds between a wait's tries, as the driver's ``retry``
PROPERTY_LINE = re.compile(r"^([^=]+)=(.*)$")


class Host(Protocol):
    """What the NixOS verbs use of a workspace handle."""

    @property
    def name(self) -> str: ...

    def run(
        self, command: str, timeout: Timeout = ..., max_output: int | None = None,
        probe: bool = False, *, user: str | None = None,
    ) -> tuple[int, str, str]: ...  # fmt: skip

    def put(self, local: str | Path, remote: str, recursive: bool = False) -> Copied: ...

    def get(self, remote: str, local: str | Path, recursive: bool = False) -> Copied: ...


def driver_line(command: str) -> str:
    """``command`` as the driver runs it: bash, ``set -euo pipefail`` first."""
    return f"bash -c {shlex.quote(f'set -euo pipefail; {command}')}"


def unit_properties(text: str) -> dict[str, str]:
    """``systemctl show``'s output as a mapping (lines that are not KEY=VALUE skipped)."""
    return {m[1]: m[2] for line in text.split("\n") if (m := PROPERTY_LINE.match(line))}


class NixosMachine:
    """The NixOS test driver's ``Machine`` verbs over a workspace."""

    def __init__(self, ws: Host) -> None:
        self.ws = ws

    @property
    def name(self) -> str:
        return self.ws.name

    # -- commands ---------------------------------------------------------------------------

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: int | None = DRIVER_TIMEOUT,
    ) -> tuple[int, str]:
        """Run ``command`` as root (bash, ``set -euo pipefail``); ``(status, stdout)``.
        ``check_return=False``: the status is -1; ``check_output=False``: ``(-2, "")``."""
        status, out, _ = self._run(command, timeout)
        if not check_output:
            return -2, ""
        return (status if check_return else -1), out

    def succeed(self, *commands: str, timeout: int | None = None) -> str:
        """Each command in turn must exit 0 (CommandError otherwise); their outputs."""
        __tracebackhide__ = True
        return self._each(commands, timeout, succeeds=True)

    def fail(self, *commands: str, timeout: int | None = None) -> str:
        """Each command in turn must fail (CommandError if one exits 0); their outputs."""
        __tracebackhide__ = True
        return self._each(commands, timeout, succeeds=False)

    def _run(self, command: str, timeout: Timeout, probe: bool = False) -> tuple[int, str, str]:
        """One command as the driver runs it, as root."""
        return self.ws.run(driver_line(command), timeout, probe=probe, user="root")

    def _each(self, commands: tuple[str, ...], timeout: int | None, succeeds: bool) -> str:
        __tracebackhide__ = True
        output = ""
        for command in commands:
            status, out, err = self._run(command, timeout)
            if (status == 0) != succeeds:
                what = command if succeeds else f"{command} (expected to fail)"
                raise CommandError(self.name, what, status, out, err)
            output += out
        return output

    def sleep(self, secs: int) -> None:
        """Sleep in the guest's time."""
        self.succeed(f"sleep {secs}")

    def _wait(self, awaited: str, succeeds: bool, command: str, timeout: float) -> str:
        """Retry ``command`` each second until it succeeds (or fails, ``succeeds=False``);
        its output then. WaitTimeout with its last output otherwise."""
        last: dict[str, str] = {}

        def attempt(final: bool) -> str | None:
            status, out, err = self._run(command, timeout, probe=True)
            last["state"] = f"exit status {status}: {(out + err).strip()[-500:]}"
            return out if (status == 0) == succeeds else None

        result = retry_until(attempt, timeout, RETRY_EVERY)
        if result is None:
            raise WaitTimeout(self.name, awaited, timeout, last.get("state", ""))
        return result

    def wait_until_succeeds(self, command: str, timeout: int = DRIVER_TIMEOUT) -> str:
        return self._wait(f"`{command}` to succeed", True, command, timeout)

    def wait_until_fails(self, command: str, timeout: int = DRIVER_TIMEOUT) -> str:
        return self._wait(f"`{command}` to fail", False, command, timeout)

    def wait_for_file(self, filename: str, timeout: int = DRIVER_TIMEOUT) -> None:
        self._wait(f"file {filename}", True, f"test -e {filename}", timeout)

    # Ports are asked with bash's /dev/tcp and sockets with python3: both are in every
    # workspace image, where nc is not.
    def wait_for_open_port(
        self, port: int, addr: str = "localhost", timeout: int = DRIVER_TIMEOUT
    ) -> None:
        self._wait(f"TCP port {port} on {addr}", True, _tcp_probe(addr, port), timeout)

    def wait_for_closed_port(
        self, port: int, addr: str = "localhost", timeout: int = DRIVER_TIMEOUT
    ) -> None:
        probe = _tcp_probe(addr, port)
        self._wait(f"TCP port {port} on {addr} to be closed", False, probe, timeout)

    def wait_for_open_unix_socket(
        self, addr: str, is_datagram: bool = False, timeout: int = DRIVER_TIMEOUT
    ) -> None:
        kind = "SOCK_DGRAM" if is_datagram else "SOCK_STREAM"
        probe = (f"python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX, socket.{kind})"
                 f".connect(sys.argv[1])' {shlex.quote(addr)}")  # fmt: skip
        self._wait(f"UNIX socket {addr}", True, probe, timeout)

    # -- systemd ----------------------------------------------------------------------------

    def systemctl(self, q: str, user: str | None = None) -> tuple[int, str]:
        """``systemctl q`` (``--user``, as ``user``, where given); ``(status, stdout)``."""
        if user is None:
            return self.execute(f"systemctl {q}")
        inner = f"XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user {q}"
        return self.execute(f"su -l {shlex.quote(user)} --shell /bin/sh -c {shlex.quote(inner)}")

    def get_unit_info(self, unit: str, user: str | None = None) -> dict[str, str]:
        """Every property of ``unit``, as ``systemctl show`` says them."""
        status, out = self.systemctl(f"--no-pager show {shlex.quote(unit)}", user)
        if status != 0:
            raise CommandError(self.name, f"systemctl show {unit}", status, out, "")
        return unit_properties(out)

    def get_unit_property(self, unit: str, property: str, user: str | None = None) -> str:
        """One property of ``unit``."""
        q = f"--no-pager show {shlex.quote(unit)} --property={shlex.quote(property)}"
        status, out = self.systemctl(q, user)
        found = unit_properties(out)
        if status != 0 or property not in found:
            raise CommandError(self.name, f"systemctl show {unit} --property={property}",
                               status, out, "")  # fmt: skip
        return found[property]

    def require_unit_state(self, unit: str, require_state: str = "active") -> None:
        """WaitError unless ``unit`` is in ``require_state`` now."""
        state = self.get_unit_info(unit)["ActiveState"]
        if state != require_state:
            raise WaitError(self.name, f"unit {unit} to be {require_state}", f"it is {state}")

    def wait_for_unit(
        self, unit: str, user: str | None = None, timeout: int = DRIVER_TIMEOUT
    ) -> None:
        """Until ``unit`` is active; WaitError at once if it failed, or is inactive with no
        job pending."""

        def active(final: bool) -> bool | None:
            state = self.get_unit_property(unit, "ActiveState", user)
            if state == "failed":
                raise WaitError(self.name, f"unit {unit} to be active", "it failed")
            if state == "inactive":
                _, jobs = self.systemctl("list-jobs --full 2>&1", user)
                if "No jobs" in jobs and self.get_unit_info(unit, user)["ActiveState"] == state:
                    raise WaitError(self.name, f"unit {unit} to be active",
                                    "it is inactive and no job is pending")  # fmt: skip
            return True if state == "active" else None

        if retry_until(active, timeout, RETRY_EVERY) is None:
            raise WaitTimeout(self.name, f"unit {unit} to be active", timeout, "not active")

    def start_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"start {shlex.quote(jobname)}", user)

    def stop_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"stop {shlex.quote(jobname)}", user)

    # -- files ------------------------------------------------------------------------------

    def copy_from_host(self, source: str, target: str) -> None:
        """Copy a host file (or directory) to ``target`` in the machine, root's there, its
        modes kept (the driver's are root:root too)."""
        staged = f"/tmp/wsfixture-copy-{uuid.uuid4().hex}"
        self.ws.put(source, staged, recursive=Path(source).is_dir())
        parent = posixpath.dirname(target) or "/"
        self.succeed(f"mkdir -p {shlex.quote(parent)}",
                     f"cp -r --preserve=mode {staged} {shlex.quote(target)}",
                     f"chown -R root:root {shlex.quote(target)}",
                     f"rm -rf {staged}")  # fmt: skip

    def copy_from_machine(self, source: str, target_dir: str = "") -> None:
        """Copy a file (or directory) of the machine into the host directory ``target_dir``
        (the current one if not given), under its own name (the driver's is under $out)."""
        staged = f"/tmp/wsfixture-copy-{uuid.uuid4().hex}"
        quoted = shlex.quote(source)
        self.succeed(f"cp -r {quoted} {staged}", f"chmod -R a+rX {staged}")
        try:
            target = Path(target_dir or ".") / posixpath.basename(source.rstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            directory = self.execute(f"test -d {staged}")[0] == 0
            self.ws.get(staged, target, recursive=directory)
        finally:
            self.execute(f"rm -rf {staged}")


def _tcp_probe(addr: str, port: int) -> str:
    return f"exec 3<>/dev/tcp/{shlex.quote(addr)}/{int(port)}"
