"""Commands left running in a workspace: ``Workspace.spawn`` and ``wsfixture exec --detach``.

A detached command runs in a session of its own (``setsid``), its stdin from /dev/null and
its output in a file, so the SSH channel that started it closes at once (``ssh NAME 'server
&'`` waits instead, for as long as the server holds the channel's output). A small shell
around it writes the command's exit status beside its output when it ends; a process
group killed before then leaves no status.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsfixture.errors import CommandError, WaitTimeout
from wsfixture.retry import retry_until

if TYPE_CHECKING:
    from wsfixture.remote import SshSession

# Around the command: $0 is the process's directory, $1 the command.
_WRAPPER = 'sh -c "$1"; echo $? > "$0/status"'


def spawn_command(command: str) -> str:
    """The shell line that starts ``command`` detached and prints its PID and directory.
    setsid execs in place (a background job of a shell without job control leads no group),
    so ``$!`` is the wrapper's PID, and the group's."""
    return (
        "dir=$(mktemp -d /tmp/wsfixture-process.XXXXXX) || exit 1\n"
        f'setsid sh -c {shlex.quote(_WRAPPER)} "$dir" {shlex.quote(command)} '
        '> "$dir/output" 2>&1 < /dev/null &\n'
        'printf "%s %s\\n" "$!" "$dir"'
    )


@dataclass
class Process:
    """A command running detached in a workspace: its PID (also its process group's) and
    the directory of its output (``output``) and exit status."""

    session: SshSession
    command: str
    pid: int
    directory: str

    @classmethod
    def start(cls, session: SshSession, command: str) -> Process:
        rc, out, err = session.run(spawn_command(command), timeout=30)
        words = out.decode(errors="replace").split()
        if rc != 0 or len(words) != 2 or not words[0].isdigit():
            raise CommandError(session.name, command, rc, out.decode(), err.decode())
        return cls(session, command, int(words[0]), words[1])

    @property
    def output_path(self) -> str:
        return f"{self.directory}/output"

    def output(self) -> str:
        """What it wrote so far (stdout and stderr, interleaved as written)."""
        _, out, _ = self.session.run(f"cat {shlex.quote(self.output_path)}", timeout=30)
        return out.decode(errors="replace")

    def poll(self) -> int | None:
        """Its exit status once it ended; None while it runs. A process killed before its
        status was written ended without one: -1."""
        status = shlex.quote(f"{self.directory}/status")
        probe = f"cat {status} 2>/dev/null || {{ kill -0 {self.pid} 2>/dev/null && echo running; }}"
        _, out, _ = self.session.run(probe, timeout=30, probe=True)
        said = out.decode().strip()
        if said == "running":
            return None
        return int(said) if said.lstrip("-").isdigit() else -1

    @property
    def running(self) -> bool:
        return self.poll() is None

    def wait(self, timeout: float = 60.0, interval: float = 0.2) -> int:
        """Wait for it to end; its exit status (-1: killed before it had one)."""
        status = retry_until(lambda last: self.poll(), timeout, interval)
        if status is None:
            raise WaitTimeout(
                self.session.name, f"process {self.pid} ({self.command}) to end", timeout,
                "still running",
            )  # fmt: skip
        return status

    def kill(self, signal: str = "TERM") -> None:
        """Signal its whole process group (as root too, for what it started through doas)."""
        kill = f"kill -{signal} -- -{self.pid}"
        self.session.run(f"doas -n {kill} 2>/dev/null || {kill} 2>/dev/null || true", timeout=30)
