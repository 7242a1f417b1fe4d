"""Talking to a workspace over SSH with its host key pinned.

One paramiko connection per workspace, opened on a socket inside the lab namespace and
reused by everything: ``Workspace.run``, the testinfra backend (``ws.host``) and the fabric
connection (``ws.conn``). The host key is the persisted one; an unknown or changed key is
refused (``RejectPolicy``), never added.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import enum
import json
import logging
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fabric
import paramiko
import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from wsfixture import copying
from wsfixture.errors import CommandError, CommandTimeout, WsfixtureError

if TYPE_CHECKING:
    from wsfixture.net.lab import Lab

logger = logging.getLogger("wsfixture.remote")
SSH_PORT = 22
DEFAULT_MAX_OUTPUT = 64 * 2**20
TRANSCRIPT_CAP = 2**20  # bytes per stream of one command in the transcript (artifacts)


@dataclass(frozen=True)
class Ran:
    """One command run through the handle, kept for failure reports."""

    command: str
    rc: int
    seconds: float
    tail: str = ""  # the last lines of its output (stdout, then stderr)
    probe: bool = False  # wsfixture's own (readiness, diagnostics), not the test's
    seq: int = 0  # its place among the session's commands: a test's are those from its start

    def describe(self) -> str:
        """One command for a failure report: the command, its status and time, and its
        output's last lines; wsfixture's own commands say so."""
        own = "  (wsfixture's own)" if self.probe else ""
        head = f"$ {self.command}  [exit {self.rc}, {self.seconds * 1000:.0f} ms]{own}"
        return head + "".join(f"\n    {line}" for line in self.tail.splitlines())


class SshSession:
    """A pinned, lazily (re)connected SSH connection to one workspace."""

    def __init__(
        self, lab: Lab, name: str, ip: str, user: str, client_key: Path, host_key: str
    ) -> None:
        self.lab = lab
        self.name = name
        self.ip = ip
        self.user = user
        self.client_key = client_key
        self.host_key = host_key  # "ssh-ed25519 AAAA..."
        self.history: collections.deque[Ran] = collections.deque(maxlen=200)
        self.commands_run = 0  # every command ever, the next one's ``seq``
        # Bytes a command may write to either stream before it is killed: output is kept in
        # memory, and a runaway command must not take the test process down with it.
        self.max_output = DEFAULT_MAX_OUTPUT
        # Where every command is written whole (up to TRANSCRIPT_CAP a stream), one JSON
        # line each, for a failed test's artifacts; None: only ``history`` keeps them.
        self.transcript: Path | None = None
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._spare: socket.socket | None = None  # see ``adopt``
        # Set while the workspace cannot answer (paused): every use raises it at once.
        self.refusal: WsfixtureError | None = None

    def adopt(self, sock: socket.socket) -> None:
        """Use ``sock``, a connection to the workspace's sshd that a caller made already,
        for the next login. Readiness's port probe hands its connection over: a probe
        closed unused still costs the guest a forked sshd-session, ~0.5 s of a restored
        VM's one CPU under TCG, beside the login that follows."""
        with self._lock:
            if self._spare is not None:
                self._spare.close()
            self._spare = sock

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        key_type, key_data = self.host_key.split()[:2]
        client = paramiko.SSHClient()
        client.get_host_keys().add(
            self.ip, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock, self._spare = self._spare, None
        if sock is None:
            sock = self.lab.connect(self.ip, SSH_PORT, timeout)
        sock.settimeout(timeout)
        try:
            client.connect(
                hostname=self.ip,
                port=SSH_PORT,
                username=self.user,
                pkey=paramiko.Ed25519Key.from_private_key_file(str(self.client_key)),
                sock=sock,
                allow_agent=False,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(30)
        return client

    def client(self, timeout: float = 10.0) -> paramiko.SSHClient:
        """The connected client, connecting (again) when there is none or it dropped."""
        if self.refusal is not None:
            raise self.refusal
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                self._client = self._connect(timeout)
            return self._client

    def run(
        self,
        command: str,
        timeout: float | None = None,
        max_output: int | None = None,
        probe: bool = False,
    ) -> tuple[int, bytes, bytes]:
        """Run ``command`` with the login shell; return (rc, stdout, stderr).

        Bounded: past ``timeout`` seconds, or past ``max_output`` bytes on either stream
        (default ``self.max_output``), the command's whole process group is killed in the
        workspace and CommandTimeout / CommandError says which bound it hit.
        """
        started = time.monotonic()
        cap = self.max_output if max_output is None else max_output
        transport = self.client().get_transport()
        assert transport is not None
        channel = transport.open_session()
        try:
            # The shell says its PID first (it leads the command's session and process
            # group), then runs the command itself: a bound can then end the whole group.
            channel.exec_command(f"printf '%s\\n' $$ >&2; eval {shlex.quote(command)}")
            drained = _drain(channel, timeout, cap)
            if drained.over is not None:
                killed = self._kill_group(drained.pid)
                self._remember(
                    Ran(command, -1, time.monotonic() - started,
                        _tail(drained.out, drained.err), probe), drained.out, drained.err,
                )  # fmt: skip
                out = drained.out.decode(errors="replace")
                err = drained.err.decode(errors="replace")
                if drained.over is Bound.TIME:
                    assert timeout is not None
                    error: CommandError = CommandTimeout(self.name, command, timeout, out, err)
                else:
                    error = CommandError(
                        self.name, f"{command} (its {drained.over.value} passed the output cap of "
                        f"{_size(cap)})", -1, out, err,
                    )  # fmt: skip
                error.add_note(killed)
                raise error
            rc = channel.recv_exit_status()
        finally:
            channel.close()
        ran = Ran(command, rc, time.monotonic() - started, _tail(drained.out, drained.err), probe)
        if not probe and all(r.probe for r in self.history):
            # The last phase of a start's breakdown (after the backend's and readiness's
            # debug lines): a stall here once hid behind a ready workspace (#30).
            logger.debug("%s: first command took %.2fs", self.name, ran.seconds)
        self._remember(ran, drained.out, drained.err)
        return rc, drained.out, drained.err

    def _remember(self, ran: Ran, out: bytes, err: bytes) -> None:
        ran = dataclasses.replace(ran, seq=self.commands_run)
        self.history.append(ran)
        self.commands_run += 1
        if self.transcript is not None:
            line = {**dataclasses.asdict(ran), "stdout": _capped(out), "stderr": _capped(err)}
            del line["tail"]
            with open(self.transcript, "a") as transcript:
                transcript.write(json.dumps(line) + "\n")

    def put(self, local: Path, remote: str, recursive: bool = False) -> copying.Copied:
        """Copy a host file (a directory with ``recursive``) into the workspace (SFTP over
        the pinned connection, as the workspace user: the files are that user's)."""
        with self.client().open_sftp() as sftp:
            return copying.put(sftp, self.name, local, remote, recursive)

    def get(
        self, remote: str, local: Path, recursive: bool = False, max_bytes: int | None = None
    ) -> copying.Copied:
        """Copy a workspace file (a directory with ``recursive``) to the host, read as
        hostile (``wsfixture.copying``)."""
        with self.client().open_sftp() as sftp:
            return copying.get(sftp, self.name, remote, local, recursive, max_bytes)

    def _kill_group(self, pid: int | None) -> str:
        """End a bounded command's process group in the workspace (through doas, for what
        the command started as root); say what happened."""
        if pid is None:
            return "its shell had not started yet: nothing to kill"
        kill = f"kill -KILL -- -{pid}"
        transport = self.client().get_transport()
        assert transport is not None
        channel = transport.open_session()
        try:
            channel.exec_command(f"doas -n {kill} 2>/dev/null || {kill}")
            rc = channel.recv_exit_status()
        finally:
            channel.close()
        if rc != 0:
            return f"its process group {pid} was already gone"
        return f"its process group {pid} was killed in the workspace"

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._spare is not None:
                self._spare.close()
                self._spare = None


class Bound(enum.Enum):
    """Which bound ended a command before it finished."""

    TIME = "time"
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass
class _Drained:
    out: bytes
    err: bytes
    pid: int | None  # of the command's shell, from the first line of stderr
    over: Bound | None  # None: it finished


def _drain(channel: paramiko.Channel, timeout: float | None, cap: int) -> _Drained:
    """Read stdout and stderr together until the command is done or a bound is passed.
    Reading one to its end first would hang once the other filled the SSH window (a few
    MiB of output)."""
    out, err = bytearray(), bytearray()
    pid: int | None = None
    header = True  # the shell's PID line is still to come on stderr
    deadline = None if timeout is None else time.monotonic() + timeout

    def result(over: Bound | None) -> _Drained:
        return _Drained(bytes(out), bytes(err), pid, over)

    while True:
        while channel.recv_ready() and len(out) <= cap:
            out += channel.recv(65536)
        while channel.recv_stderr_ready() and len(err) <= cap:
            err += channel.recv_stderr(65536)
        if header and b"\n" in err:
            first = err[: err.index(b"\n")]
            pid = int(first) if first.isdigit() else None
            del err[: len(first) + 1]
            header = False
        if len(out) > cap:
            return result(Bound.STDOUT)
        if len(err) > cap:
            return result(Bound.STDERR)
        done = channel.closed or (channel.eof_received and channel.exit_status_ready())
        if done and not channel.recv_ready() and not channel.recv_stderr_ready():
            return result(None)
        wait = 1.0
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return result(Bound.TIME)
        # The channel's fileno wakes on data for either stream, EOF and close.
        select.select([channel], [], [], min(wait, 1.0))


def _tail(out: bytes, err: bytes, lines: int = 5) -> str:
    text = (out[-4096:] + err[-4096:]).decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _capped(data: bytes) -> str:
    kept = data[:TRANSCRIPT_CAP].decode(errors="replace")
    return (
        kept
        if len(data) <= TRANSCRIPT_CAP
        else f"{kept}\n[... {len(data)} bytes, cut at {TRANSCRIPT_CAP}]"
    )


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class WorkspaceBackend(BaseBackend):  # type: ignore[misc]
    """A testinfra backend over the workspace's pinned SSH session.

    ``host.sudo()`` (and ``host.sudo(user)``) runs commands through the workspace's
    privilege tool, doas or sudo (``defaults.privilege``).
    """

    NAME = "wsfixture"

    def __init__(self, session: SshSession, privilege: str = "doas", **kwargs: Any) -> None:
        self.session = session
        self.privilege = privilege
        super().__init__(session.name, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        rc, stdout, stderr = self.session.run(cmd)
        return self.result(rc, self.encode(cmd), stdout, stderr)

    def get_sudo_command(self, command: str, sudo_user: str | None) -> str:
        tool = f"{self.privilege} -n"
        if sudo_user is None:
            return str(self.quote(f"{tool} /bin/sh -c %s", command))
        return str(self.quote(f"{tool} -u %s /bin/sh -c %s", sudo_user, command))


def host_over(
    session: SshSession, system_info: dict[str, str | None] | None, privilege: str,
    as_user: str | None = None,
) -> testinfra.host.Host:  # fmt: skip
    """A testinfra Host over ``session``; ``system_info``, if known, is what its
    ``host.system_info`` answers instead of asking the guest (``image.osinfo``);
    ``privilege``: what ``host.sudo()`` runs commands through; ``as_user``: every command
    through it, as that user (testinfra's ``--sudo``, ``--sudo-user``)."""
    user = None if as_user in (None, "root") else as_user
    backend = WorkspaceBackend(session, privilege, sudo=as_user is not None, sudo_user=user)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    if system_info is not None:
        # testinfra keeps what it found in the instance's cached_property, under its name.
        host.system_info.__dict__["sysinfo"] = dict(system_info)
    return host


class PromptRemote(fabric.runners.Remote):  # type: ignore[misc]
    """fabric's runner, polling for the command's end every 1 ms instead of invoke's 10 ms:
    that nap was most of ``conn.run``'s latency (12 ms for ``true``; raw paramiko 2.4 ms)."""

    input_sleep = 0.001


class PinnedConnection(fabric.Connection):  # type: ignore[misc]
    """A fabric Connection that rides the workspace's pinned SSH session.

    fabric's own client auto-adds unknown host keys; this one never opens a client of its
    own: it takes the session's, which verified the persisted host key.
    """

    def __init__(self, session: SshSession) -> None:
        # Tests run with stdin captured: commands read no input unless asked to.
        config = fabric.Config(
            overrides={
                "load_ssh_configs": False,
                "run": {"in_stream": False},
                "runners": {"remote": PromptRemote},
            }
        )
        super().__init__(host=session.ip, user=session.user, port=SSH_PORT, config=config)
        self.session = session
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def open(self) -> None:
        if self.is_connected:
            return
        self.client = self.session.client()
        self.transport = self.client.get_transport()

    def close(self) -> None:
        # The session owns the client; the workspace closes it at stop.
        self.transport = None
