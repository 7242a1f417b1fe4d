"""The guest port: a UNIX socket QEMU connects to (a virtio-serial port in the guest), on
which the host sends one message and the guest answers in lines."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from wsfixture.errors import TemplateError
from wsfixture.host import system
from wsfixture.retry import retry_until

CONNECT_TIMEOUT = 30.0
LINE_LIMIT = 1 << 16  # the agent's longest line is its JSON reply: a few hundred bytes


@contextlib.contextmanager
def listening(path: Path) -> Iterator[socket.socket]:
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1)
        yield listener
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def accept(listener: socket.socket, process: subprocess.Popen[bytes], log: Path) -> socket.socket:
    """QEMU's connection to the port's socket (made while it starts)."""
    listener.settimeout(0.1)  # each try waits this long for QEMU

    def connected(_: bool) -> socket.socket | None:
        try:
            return listener.accept()[0]
        except TimeoutError:
            if process.poll() is not None:
                tail = system.tail(log, 8)
                raise TemplateError(f"QEMU exited {process.returncode}: {tail}") from None
            return None

    channel = retry_until(connected, CONNECT_TIMEOUT, 0.0)
    if channel is not None:
        return channel
    raise TemplateError(
        f"QEMU did not connect to the identity socket within {CONNECT_TIMEOUT:.0f} s"
    )


def read_line(
    channel: socket.socket, timeout: float, process: subprocess.Popen[bytes], console_log: Path
) -> str:
    """One line from the guest, or TemplateError (with the console's tail) when it does
    not come."""
    channel.settimeout(0.5)
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        if len(data) > LINE_LIMIT:
            raise TemplateError(f"the guest sent a line of over {LINE_LIMIT} bytes: refused")
        if time.monotonic() > deadline:
            said = f"the guest said nothing within {timeout:.0f}s ({data!r})"
            raise TemplateError(f"{said}\n{system.tail(console_log, 10)}")
        if process.poll() is not None:
            raise TemplateError(f"QEMU exited {process.returncode} while we waited for the guest")
        try:
            chunk = channel.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            raise TemplateError(f"the identity channel closed ({data!r})")
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")
