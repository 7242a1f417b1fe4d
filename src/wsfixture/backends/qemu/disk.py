"""A VM's qcow2 disks: overlays over a base or a frozen template disk, the disk handed
to QEMU as descriptors, and a running VM's disk frozen under a new overlay. ``qemu-img``
is called here and nowhere else."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from wsfixture.backends.qemu.qmp import QmpClient
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


def stack_overlay(qmp: QmpClient, overlay: Path, backing: Path, size_mib: int, fdset: int) -> None:
    """The paused VM's root disk stops changing: a new qcow2 ``overlay`` over it, which
    names it ``backing`` (its name from now on, perhaps not in place yet), takes the
    writes. QEMU keeps its descriptor of the old disk across a rename, and gets the new
    overlay's as fd set ``fdset``: it may not open files."""
    node = next(d["inserted"]["node-name"] for d in qmp.command("query-block")
                if d["device"] == "root")  # fmt: skip
    create_overlay(backing, overlay, "qcow2", size_mib, unopened=True)
    fd = os.open(overlay, os.O_RDWR)
    try:
        qmp.add_fd(fdset, fd)
    finally:
        os.close(fd)
    name = f"overlay-{fdset}"
    qmp.command(
        "blockdev-add", driver="qcow2", backing=None, **{"node-name": name},
        file={"driver": "file", "filename": f"/dev/fdset/{fdset}", "locking": "off"},
    )  # fmt: skip
    qmp.command("blockdev-snapshot", node=node, overlay=name)
