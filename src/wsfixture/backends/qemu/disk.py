"""A VM's qcow2 disks: overlays over a base or a frozen template disk, and the disk handed
to QEMU as descriptors. ``qemu-img`` is called here and nowhere else."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from wsfixture.host import system


def create_overlay(
    backing: Path, overlay: Path, backing_format: str, size_mib: int = 0, unopened: bool = False
) -> None:
    """A new qcow2 ``overlay`` over ``backing`` (never written through it); ``size_mib``
    grows the guest's disk beyond the backing file's size, 0 keeps it. ``unopened``: the
    backing file is named, not read (it is not in place yet; the size must be given)."""
    overlay.unlink(missing_ok=True)
    size = [f"{size_mib}M"] if size_mib else []
    unsafe = ["-u"] if unopened else []
    system.run(
        [system.require_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", backing_format,
         "-b", str(backing), *unsafe, str(overlay), *size]
    )  # fmt: skip


def rebase_relative(overlay: Path, backing: Path, backing_format: str) -> None:
    """Point ``overlay`` at ``backing`` by its name alone (both in one directory), so the
    directory can be renamed."""
    system.run([system.require_tool("qemu-img"), "rebase", "-q", "-u", "-F", backing_format,
                "-b", backing.name, str(overlay)])  # fmt: skip


@contextlib.contextmanager
def descriptors(disk: Path) -> Iterator[tuple[int, ...]]:
    """``disk`` open read-write and read-only, for ``Boot.disk_fds``: a save, or a clone's
    first run, reopens the disk after QEMU has become the unprivileged user, which may not
    open it by name; QEMU takes the descriptor of the mode it needs from the set."""
    opened = [os.open(disk, os.O_RDWR), os.open(disk, os.O_RDONLY)]
    try:
        yield tuple(opened)
    finally:
        for fd in opened:
            os.close(fd)
