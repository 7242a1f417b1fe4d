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
JOBS_DIR = "/tmp"  # the machine's own: a rollback or a restart takes its jobs with it
JOB_PREFIX = "wsfixture-process."


def spawn_command(command: str, shown: str | None = None) -> str:
    """The shell line that starts ``command`` detached and prints its PID and directory,
    where it also leaves its PID and what it is called (``shown``, else ``command``) for
    ``jobs``. setsid execs in place (a background job of a shell without job control
    leads no group), so ``$!`` is the wrapper's PID, and the group's."""
    return (
        f"dir=$(mktemp -d {JOBS_DIR}/{JOB_PREFIX}XXXXXX) || exit 1\n"
        f"printf '%s' {shlex.quote(shown or command)} > \"$dir/command\"\n"
        f'setsid sh -c {shlex.quote(_WRAPPER)} "$dir" {shlex.quote(command)} '
        '> "$dir/output" 2>&1 < /dev/null &\n'
        'echo "$!" > "$dir/pid"\n'
        'printf "%s %s\\n" "$!" "$dir"'
    )


# One line a job, oldest first: PID, state (running, exit N, or killed), directory, command.
JOBS_COMMAND = f"""\
for dir in $(ls -dtr {JOBS_DIR}/{JOB_PREFIX}* 2>/dev/null); do
  pid=$(cat "$dir/pid" 2>/dev/null) || continue
  if [ -e "$dir/status" ]; then state="exit $(cat "$dir/status")"
  elif kill -0 "$pid" 2>/dev/null || doas -n kill -0 "$pid" 2>/dev/null; then state=running
  else state=killed; fi
  said=$(head -c 200 "$dir/command" | tr '\\n\\t' '  ')
  printf '%s\\t%s\\t%s\\t%s\\n' "$pid" "$state" "$dir" "$said"
done"""


@dataclass(frozen=True)
class Job:
    """A detached command as ``jobs`` lists it."""

    pid: int
    state: str  # running, exit N, killed
    directory: str
    command: str


def read_jobs(listing: str) -> list[Job]:
    """``JOBS_COMMAND``'s output as jobs; a line it cannot read (the guest's) is skipped."""
    jobs = []
    for line in listing.splitlines():
        fields = line.split("\t", 3)
        if len(fields) == 4 and fields[0].isdigit() and fields[2].startswith(JOBS_DIR + "/"):
            jobs.append(Job(int(fields[0]), fields[1], fields[2], fields[3]))
    return jobs


@dataclass
class Process:
    """A command running detached in a workspace: its PID (also its process group's) and
    the directory of its output (``output``) and exit status."""

    session: SshSession
    command: str
    pid: int
    directory: str
    listed: str = ""  # its state when ``Workspace.jobs()`` listed it (``poll()``: now)

    @classmethod
    def start(cls, session: SshSession, line: str, command: str | None = None) -> Process:
        """``line`` started detached; ``command`` is what it is called (``line`` itself
        unless it was wrapped: an environment, a directory, another user)."""
        shown = line if command is None else command
        rc, out, err = session.run(spawn_command(line, shown), timeout=30)
        words = out.decode(errors="replace").split()
        if rc != 0 or len(words) != 2 or not words[0].isdigit():
            raise CommandError(session.name, shown, rc, out.decode(), err.decode())
        return cls(session, shown, int(words[0]), words[1])

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
