"""Logs a guest can write, held to a size: a workspace's console (a container's output, a
VM's serial port) and its resolver's query log grow as fast as root inside writes or asks,
and they are on the host's disk, outside every limit the workspace has.

Every writer of such a log holds it open with ``O_APPEND`` (our own open of a container's
output, QEMU's ``logappend=on``, dnsmasq's log file), so it can be cut from outside: when a
log passes its ``limit``, its last half is kept in ``<log>.1`` (replacing the previous) and
the log is truncated, the writer going on at its new end (``logrotate``'s copytruncate, on
the tail only). A log and its ``.1`` never hold much more than ``limit`` and a half, plus
what the guest writes between two looks (``EVERY``). ``tail`` reads across both.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

EVERY = 0.2  # seconds between looks: a console written at 200 MiB/s overshoots by ~40 MiB


def previous(path: Path) -> Path:
    return path.with_name(f"{path.name}.1")


def trim(path: Path, limit: int) -> int:
    """If ``path`` is over ``limit`` bytes: its last ``limit // 2`` into ``<path>.1``, and
    ``path`` emptied. The bytes it held when cut (0: not cut)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size <= limit:
        return 0
    keep = limit // 2
    with open(path, "rb") as log:
        log.seek(max(0, size - keep))
        kept = log.read(keep)
    partial = path.with_name(f".{path.name}.1.partial")
    partial.write_bytes(kept)
    partial.replace(previous(path))
    os.truncate(path, 0)
    return size


def read_tail(path: Path, size: int) -> bytes:
    """The last ``size`` bytes of a log, across ``<path>.1`` and ``path``."""
    data = b""
    for part in (previous(path), path):
        with contextlib.suppress(FileNotFoundError), open(part, "rb") as log:
            end = log.seek(0, os.SEEK_END)
            log.seek(max(0, end - size))
            data = (data + log.read())[-size:]
    return data


class LogCap:
    """A thread that holds ``paths`` to ``limit`` bytes each, until ``stop``."""

    def __init__(self, paths: list[Path], limit: int) -> None:
        self.paths = list(paths)
        self.limit = limit
        self.cut_bytes = 0  # what the logs held when they were cut, together
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsfixture-logcap", daemon=True)

    def watch(self, path: Path) -> None:
        self.paths.append(path)

    def start(self) -> LogCap:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(EVERY):
            for path in list(self.paths):
                with contextlib.suppress(OSError):  # a log that went with its workspace
                    self.cut_bytes += trim(path, self.limit)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for path in self.paths:  # a last look: what was written since
            with contextlib.suppress(OSError):
                self.cut_bytes += trim(path, self.limit)
