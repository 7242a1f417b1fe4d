"""Commands an E2B client starts in a sandbox, run over the workspace's pinned SSH session
(no daemon inside the guest): their output streamed as it comes, their stdin, their
signals, and a way back to one that is still running (``connect`` by PID).

Each command is one SSH channel. Its login shell prints its own PID on stderr before it
runs the command: sshd makes that shell a session and process-group leader, so the PID
is also the group a signal is sent to (what the command started goes with it)."""

from __future__ import annotations

import dataclasses
import select
import shlex
import threading
from collections.abc import Callable, Mapping
from typing import Literal

import paramiko

from wsfixture.serve.refusals import BadRequest, NotFound, Refusal
from wsfixture.workspaces.commands import shell_line

Stream = Literal["stdout", "stderr", "end"]
READ_SIZE = 32 * 1024
PID_LINE_MAX = 32  # bytes before the PID's newline: a shell's PID, nothing longer
PID_TIMEOUT = 30.0  # seconds a login shell has to say its PID
SIGNALS = {"SIGKILL": "KILL", "SIGTERM": "TERM", "SIGINT": "INT", "SIGHUP": "HUP"}


@dataclasses.dataclass(frozen=True)
class Output:
    """A piece of what a command wrote, or its end (``stream == "end"``, ``exit_code``)."""

    stream: Stream
    data: bytes = b""
    exit_code: int = 0
    status: str = ""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the client asked to run: the program and its arguments, as E2B's
    ``ProcessConfig`` says (its SDK sends ``/bin/bash -l -c LINE``)."""

    cmd: str
    args: tuple[str, ...] = ()
    envs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None  # None: the workspace's own user
    tag: str | None = None

    def line(self) -> str:
        """The shell line the login shell runs: the argv quoted, with ``envs``, ``cwd``
        and ``user`` as ``Workspace.run`` takes them."""
        return shell_line(shlex.join([self.cmd, *self.args]), dict(self.envs), self.cwd,
                          self.user)  # fmt: skip


class Command:
    """One running command: ``subscribe`` to its output, then ``begin`` reading it."""

    def __init__(self, spec: Spec, pid: int, channel: paramiko.Channel) -> None:
        self.spec = spec
        self.pid = pid
        self._channel = channel
        self._listeners: list[Callable[[Output], None]] = []
        self._lock = threading.Lock()
        self.ended: Output | None = None
        self._done = threading.Event()

    @classmethod
    def start(cls, client: paramiko.SSHClient, spec: Spec, stdin: bool) -> Command:
        """``spec`` started over a new channel of ``client``; returns once its PID is known.
        Without ``stdin`` its input is closed at once (a command reading it sees EOF)."""
        transport = client.get_transport()
        if transport is None:
            raise Refusal("the workspace's SSH connection is closed")
        channel = transport.open_session()
        channel.exec_command(f"printf '%s\\n' $$ >&2; eval {shlex.quote(spec.line())}")
        if not stdin:
            channel.shutdown_write()
        try:
            pid = _read_pid(channel)
        except BaseException:
            channel.close()
            raise
        return cls(spec, pid, channel)

    def subscribe(self, listener: Callable[[Output], None]) -> None:
        """Call ``listener`` (from the reader thread) for each piece of output from now
        on, and once with the end; at once with the end if it has ended already."""
        with self._lock:
            ended = self.ended
            if ended is None:
                self._listeners.append(listener)
        if ended is not None:
            listener(ended)

    def unsubscribe(self, listener: Callable[[Output], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def begin(self, on_end: Callable[[Command], None]) -> None:
        """Read its output in a thread of its own until it ends; then ``on_end(self)``."""

        def pump() -> None:
            try:
                self._pump()
            finally:
                on_end(self)

        threading.Thread(target=pump, name=f"e2b-command-{self.pid}", daemon=True).start()

    def _pump(self) -> None:
        channel = self._channel
        try:
            while True:
                while channel.recv_ready():
                    self._emit(Output("stdout", channel.recv(READ_SIZE)))
                while channel.recv_stderr_ready():
                    self._emit(Output("stderr", channel.recv_stderr(READ_SIZE)))
                done = channel.closed or (channel.eof_received and channel.exit_status_ready())
                if done and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                # The channel's fileno wakes on data for either stream, EOF and close.
                select.select([channel], [], [], 1.0)
            code = channel.recv_exit_status() if channel.exit_status_ready() else -1
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._finish(Output("end", exit_code=-1, status=f"error: {exc}"))
            return
        finally:
            channel.close()
        # No exit status (an exit-signal instead): paramiko reports -1, as E2B's envd
        # reports a command ended by a signal.
        status = f"exit status {code}" if code >= 0 else "signal: killed"
        self._finish(Output("end", exit_code=code, status=status))

    def _emit(self, output: Output) -> None:
        if not output.data:
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(output)

    def _finish(self, end: Output) -> None:
        with self._lock:
            self.ended = end
            listeners, self._listeners = self._listeners, []
        self._done.set()
        for listener in listeners:
            listener(end)

    def send(self, data: bytes) -> None:
        """Write ``data`` to its stdin."""
        if self._channel.closed or self.ended is not None:
            raise NotFound(f"process {self.pid} has ended")
        self._channel.sendall(data)

    def close_stdin(self) -> None:
        self._channel.shutdown_write()

    def wait(self, timeout: float) -> bool:
        """Whether it ended within ``timeout`` seconds."""
        return self._done.wait(timeout)


def _read_pid(channel: paramiko.Channel) -> int:
    """The login shell's first line on stderr: its PID, within ``PID_TIMEOUT`` seconds."""
    line = b""
    channel.settimeout(PID_TIMEOUT)
    while not line.endswith(b"\n"):
        if len(line) > PID_LINE_MAX:
            raise Refusal(f"the workspace's shell did not say its PID: {line!r}")
        try:
            byte = channel.recv_stderr(1)
        except TimeoutError:
            raise Refusal(f"the workspace's shell said no PID in {PID_TIMEOUT:.0f} s") from None
        if not byte:
            raise Refusal("the workspace's shell ended before it said its PID")
        line += byte
    channel.settimeout(None)
    text = line.decode(errors="replace").strip()
    if not text.isdigit():
        raise Refusal(f"the workspace's shell did not say its PID: {text!r}")
    return int(text)


def signal_line(pid: int, signal: str) -> str:
    """The line that sends ``signal`` (E2B's name, ``SIGKILL``) to ``pid``'s process group."""
    name = SIGNALS.get(signal)
    if name is None:
        raise BadRequest(f"signal: {signal!r} is not one of {', '.join(SIGNALS)}")
    return f"kill -s {name} -- -{int(pid)} 2>/dev/null || kill -s {name} {int(pid)}"
