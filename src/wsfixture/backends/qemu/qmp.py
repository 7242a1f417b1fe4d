"""A minimal QMP client: JSON lines over a UNIX socket, events set aside, one command at a time."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from wsfixture.errors import WsfixtureError
from wsfixture.retry import retry_until


class QmpError(WsfixtureError):
    """QEMU answered a QMP command with an error."""


class QmpClient:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rwb")
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    @classmethod
    def connect(cls, path: Path, timeout: float = 5.0) -> QmpClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return cls(sock)
        except BaseException:
            sock.close()
            raise

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        message: dict[str, Any] = json.loads(line)
        return message

    def command(self, name: str, **arguments: Any) -> Any:
        """Execute a command and return its ``return`` value; events are kept in ``events``."""
        return self._execute(name, arguments, None)

    def send_fd(self, name: str, fd: int) -> None:
        """Give QEMU an open file descriptor under ``name`` (``getfd``, SCM_RIGHTS): how a
        QEMU that may not open files or start programs (``-runas``, ``-sandbox``) gets a
        migration stream or a connected socket."""
        self._execute("getfd", {"fdname": name}, fd)

    def add_fd(self, fdset: int, fd: int) -> None:
        """Put an open file descriptor into fd set ``fdset`` (``add-fd``): a node opened as
        ``/dev/fdset/<fdset>`` takes it."""
        self._execute("add-fd", {"fdset-id": fdset}, fd)

    def _execute(self, name: str, arguments: dict[str, Any], fd: int | None) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        data = json.dumps(request).encode() + b"\n"
        with self._lock:
            if fd is None:
                self._file.write(data)
                self._file.flush()
            else:
                socket.send_fds(self._sock, [data], [fd])
            while True:
                reply = self._read()
                if "event" in reply:
                    self.events.append(reply)
                    continue
                if "error" in reply:
                    raise QmpError(f"{name}: {reply['error'].get('desc', reply['error'])}")
                return reply.get("return")

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()


# A migration's bandwidth cap (bytes/s): QEMU's default, 128 MiB/s, throttles a save to a
# local file as it would a link between hosts (measured: 180 MiB took 1.33 s).
UNTHROTTLED = 2**40


# A save's bound: a VM's memory (a few GiB) written out, unthrottled, under a busy host.
SAVE_TIMEOUT = 120.0


def save_state(qmp: QmpClient, state: Path, memory: bool, timeout: float = SAVE_TIMEOUT) -> str:
    """Migrate the (paused) VM's devices, and its memory if ``memory`` (a template's
    stays in its memory file), into the file ``state``, handed over as a descriptor,
    unthrottled: "completed", or why not."""
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        qmp.send_fd("state", fd)
    finally:
        os.close(fd)
    leave_out_memory(qmp, not memory)
    qmp.command("migrate-set-parameters", **{"max-bandwidth": UNTHROTTLED})
    qmp.command("migrate", uri="fd:state")
    return wait_migration(qmp, timeout)


def leave_out_memory(qmp: QmpClient, left_out: bool) -> None:
    """Whether a migration leaves out shared guest memory (x-ignore-shared): set alike on
    both sides of one, as the stream's format follows it. A clone loaded from a template
    has it set, so each later save says what it wants."""
    qmp.command(
        "migrate-set-capabilities",
        capabilities=[{"capability": "x-ignore-shared", "state": left_out}],
    )


def wait_migration(qmp: QmpClient, timeout: float) -> str:
    """Poll a migration (a save or a load) until it ends: "completed", or why not."""

    def ended(_: bool) -> str | None:
        info = qmp.command("query-migrate")
        status = str(info.get("status", "none"))
        if status in ("failed", "cancelled"):
            return f"{status}: {info.get('error-desc', 'no reason given')}"
        return status if status == "completed" else None

    return retry_until(ended, timeout, 0.02) or f"not done after {timeout:.0f}s"
