"""Small system helpers shared by the modules that touch the host.

Where things live, how a command is run with an error worth reading, how a process is
identified without being fooled by PID reuse, and how a prerequisite is checked.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfixture.errors import PrerequisiteError, WsfixtureError
from wsfixture.host import logcap, setup

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class HostCommandError(WsfixtureError):
    """A host-side command failed (``ip``, ``mount``, ...)."""

    def __init__(self, argv: Sequence[str], rc: int, output: str) -> None:
        self.argv = list(argv)
        self.rc = rc
        self.output = output
        super().__init__(f"{' '.join(argv)} exited {rc}: {output.strip()}")


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> str:
    """Run a host command; return its stdout; raise with its output when it fails."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise HostCommandError(argv, proc.returncode, proc.stderr + proc.stdout)
    return proc.stdout


def require_tool(tool: str) -> str:
    """Path of ``tool``; a PrerequisiteError naming the package when it is missing."""
    path = setup.find_tool(tool)
    if path is None:
        raise PrerequisiteError(f"{tool} not found", setup.package_of(tool))
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "wsfixture needs root to create network namespaces, mounts and workspaces",
            hint="run as root, e.g. with doas or sudo",
        )


@dataclass(frozen=True)
class ProcessRef:
    """A process named by PID and start time, so a reused PID is never mistaken for it."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        start = process_start_time(pid)
        return None if start is None else cls(pid, start)

    @classmethod
    def self(cls) -> ProcessRef:
        ref = cls.of(os.getpid())
        assert ref is not None
        return ref

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start

    def signal(self, signum: int) -> bool:
        """Send ``signum`` if this very process still runs; True when sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def to_json(self) -> list[int]:
        return [self.pid, self.start]

    @classmethod
    def from_json(cls, data: list[int]) -> ProcessRef:
        return cls(int(data[0]), int(data[1]))


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def set_parent_death_signal(signum: int = signal.SIGTERM) -> None:
    """In a child before exec: get ``signum`` when the parent thread dies (start it with
    ``popen_lasting``, whose parent thread is the process's own)."""
    _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


class _Spawner:
    """One thread that lives as long as this process and forks what is meant to die with
    it. The kernel's parent-death signal follows the *thread* that forked a child: a
    machine started from a short-lived thread (a thread pool's, a notebook's, an agent
    runner's) would get it when that thread ends. A daemon thread is never joined, so it
    ends with the process, and only then."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def call(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._serve, name="wsfixture-spawner",
                                                daemon=True)  # fmt: skip
                self._pid = os.getpid()
                self._thread.start()
        if threading.current_thread() is self._thread:
            return job()
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((job, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box.append((True, job()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()


_spawner = _Spawner()


def popen_lasting(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **options)`` forked by the process's spawner thread: its
    parent-death signal (``set_parent_death_signal``, ``setpriv --pdeathsig``) fires when
    this process ends, whichever thread asked for it."""
    process: subprocess.Popen[bytes] = _spawner.call(lambda: subprocess.Popen(argv, **options))
    return process


def enter_netns(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700; return it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# Seconds a helper of ours (a resolver, a daemon) gets between SIGTERM and SIGKILL.
END_GRACE = 5.0


def end_process(
    process: subprocess.Popen[Any], grace: float = END_GRACE, terminate: bool = True
) -> int:
    """End a child of ours: SIGTERM (unless it was told already, ``terminate=False``),
    ``grace`` seconds to exit, then SIGKILL; always reaped. Returns its exit status."""
    if process.poll() is None:
        if terminate:
            process.terminate()
        try:
            return process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def in_cgroup(cgroup: Path, argv: Sequence[str], also: Sequence[Path] = ()) -> list[str]:
    """``argv`` started inside ``cgroup`` (and the v1 cgroups ``also``, where its limits
    are): a shell joins them and execs the program, so it stays one process (no
    preexec_fn, which forces a slow fork of a large Python)."""
    joins = "".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))} && " for d in also)
    script = f'{joins}echo $$ > "$0" && exec "$@"'
    return ["/bin/sh", "-c", script, str(cgroup / "cgroup.procs"), *argv]


def mount_points() -> list[Path]:
    """Every mount point in this mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as mounts:
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        return [Path(_unescape(line.split()[4])) for line in mounts]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(path: Path) -> bool:
    return path in mount_points()


def remove_tree(path: Path) -> None:
    """Remove a directory wsfixture made. Whatever is mounted inside it is detached first
    (lazily, deepest first): removing files through a mount would reach data that is not
    ours. A file that cannot be removed raises; ignoring it would be a silent leak."""
    # A lazily detached overlayfs can still be tidying its work directory for a moment
    # (seen after an interrupted layer build): "not empty" is retried, briefly; so is
    # "busy", a mount made inside after the list was read (an interrupted step's mount
    # command finishing: seen in the kill matrix), which the next round detaches too.
    deadline = time.monotonic() + 5.0
    while True:
        inside = [m for m in mount_points() if m == path or path in m.parents]
        for mount in sorted(inside, key=lambda m: len(m.parts), reverse=True):
            run(["umount", "--lazy", str(mount)])
        try:
            shutil.rmtree(path, onerror=_removal_failed)
            return
        except OSError as exc:
            retried = exc.errno in (errno.ENOTEMPTY, errno.EBUSY)
            if not retried or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _removal_failed(
    _func: object, where: str, exc_info: tuple[object, BaseException, object]
) -> None:
    # rmtree works through directory fds, so its own error names only the last component.
    error = exc_info[1]
    if isinstance(error, FileNotFoundError):
        return
    if isinstance(error, OSError):
        raise type(error)(error.errno, error.strerror, where) from error
    raise error


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it does not exist."""
    if not path.exists():
        return f"(no log at {path})"
    data = logcap.read_tail(path, 64 * 1024)  # a log the guest writes may be long
    if not data.strip():
        return f"({path} is empty)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
