"""A live VM's checkpoints: its disk, memory and devices saved at one instant, and a
rollback to them.

vhost-user-fs (virtiofs) cannot be migrated in QEMU 7.2, so a checkpoint is taken without
shares, as a template is: the guest's agent (``guest.restore``, on the port a clone keeps)
unmounts them, the host unplugs them, pauses the VM, makes its running disk the
checkpoint's (``disk.qcow2``; a new overlay over it takes the writes from now on,
``blockdev-snapshot``), saves memory and devices (``state``), lets the VM run, and plugs
the shares back; the agent mounts them and sets the clock. A share in use (a process's
working directory or open file) makes the guest refuse, and nothing is changed.

A rollback is a restore: QEMU with the template's devices over a new overlay on the
checkpoint's disk, the state loaded, the shares plugged, and the agent, which was waiting
inside that same read, told to go on. What is in the shares is never rolled back.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from wsfixture.backends.qemu import channel, clone, disk
from wsfixture.backends.qemu.argv import IDENTITY_SOCKET
from wsfixture.backends.qemu.clone import RestoreTarget, Steps
from wsfixture.backends.qemu.qmp import QmpClient, save_state
from wsfixture.errors import CheckpointError
from wsfixture.guest import restore
from wsfixture.image import templates
from wsfixture.image.templates import Template
from wsfixture.retry import retry_until

DISK = "disk.qcow2"
STATE = "state"
AGENT_TIMEOUT = 30.0  # the guest unmounts or mounts its shares
UNPLUG_TIMEOUT = 10.0  # the guest lets go of a PCI device
FDSET_BASE = 100  # fd sets of checkpoint overlays: 100 + the checkpoint's number


class CheckpointTarget(RestoreTarget, Protocol):
    """What a checkpoint needs of the VM beyond a restore's."""

    disk_mib: int

    def start_share_daemons(self) -> None:
        """A new virtiofsd per share (each serves one connection), sockets made anew."""
        ...


def save(
    vm: CheckpointTarget, into: Path, final: Path, seq: int, commit: Callable[[], None]
) -> str:
    """Checkpoint the running VM into ``into`` (renamed to ``final`` by the caller);
    ``commit`` is called once the running disk stands on it. Returns the steps' times."""
    port, qmp = _agent(vm), vm.qmp()
    steps = Steps()
    said = ask(vm, port, restore.QUIESCE)
    if said != restore.QUIESCED:
        raise CheckpointError(
            vm.name, f"the guest could not let go of its shares: {said.removeprefix('error ')}",
            "end what uses them (a shell inside one, an open file), then try again",
        )  # fmt: skip
    steps.done("shares unmounted")
    tags = list(vm.share_sockets())
    try:
        unplug_shares(vm.name, qmp, tags)
        steps.done("shares unplugged")
        qmp.command("stop")
        try:
            _switch_disk(vm, qmp, into, final, FDSET_BASE + seq)
            commit()
            steps.done("disk switched")
            _save_state(vm.name, qmp, into / STATE)
            steps.done("state saved")
        finally:
            qmp.command("cont")
    finally:
        _plug_missing(vm, qmp, tags)
        steps.done("shares plugged")
        said = ask(vm, port, restore.RESUME)
        steps.done("shares mounted")
    if said != restore.OK:
        raise CheckpointError(vm.name, f"the guest did not take its shares back: {said}")
    return str(steps)


def rollback(vm: CheckpointTarget, checkpoint: Path, template: Template) -> str:
    """Restore the VM to ``checkpoint``'s disk, memory and devices, in a new QEMU (the old
    one and its share daemons ended); the shares are plugged and the guest told to go on.
    Returns the steps' times."""
    vm.reset()
    steps = Steps()
    with channel.listening(vm.runtime_dir / IDENTITY_SOCKET) as listener:
        with templates.restoring(template):
            disk.create_overlay(checkpoint / DISK, vm.overlay, "qcow2")
            steps.done("overlay")
            port, qmp, _ = clone.load(
                vm, clone.clone_boot(vm, template), checkpoint / STATE, listener, steps
            )
        clone.hot_plug_shares(vm.share_sockets(), qmp)
        steps.done("shares plugged")
        qmp.command("cont")
        vm.agent_port = port
        said = ask(vm, port, restore.RESUME)
        steps.done("guest resumed")
    if said != restore.OK:
        raise CheckpointError(vm.name, f"the rolled-back guest did not take its shares: {said}")
    return str(steps)


def ask(vm: CheckpointTarget, port: socket.socket, request: str) -> str:
    """One request to the guest's agent, and its one-line answer."""
    assert vm.process is not None
    port.sendall(f"{request}\n".encode())
    return clone.agent_answer(port, AGENT_TIMEOUT, vm.process, vm.console_log)


def _agent(vm: CheckpointTarget) -> socket.socket:
    if vm.agent_port is None:
        raise CheckpointError(vm.name, "its guest agent is not connected")
    return vm.agent_port


def unplug_shares(name: str, qmp: QmpClient, tags: list[str]) -> None:
    """Each share's device removed (the guest acknowledges it), then its chardev."""
    qmp.events.clear()
    for tag in tags:
        qmp.command("device_del", id=f"fsdev-{tag}")

    def gone(_: bool) -> bool | None:
        qmp.command("query-status")  # reads the events that came meanwhile
        deleted = {e.get("data", {}).get("device") for e in qmp.events
                   if e.get("event") == "DEVICE_DELETED"}  # fmt: skip
        return True if all(f"fsdev-{tag}" in deleted for tag in tags) else None

    if retry_until(gone, UNPLUG_TIMEOUT, 0.02) is None:
        raise CheckpointError(name, "the guest did not release its shares' devices "
                              f"within {UNPLUG_TIMEOUT:.0f} s")  # fmt: skip
    for tag in tags:
        qmp.command("chardev-remove", id=f"fs-{tag}")


def _plug_missing(vm: CheckpointTarget, qmp: QmpClient, tags: list[str]) -> None:
    """Plug back whichever shares are not plugged (all of them after a save)."""
    present = {d["name"] for d in qmp.command("qom-list", path="/machine/peripheral")}
    missing = [tag for tag in tags if f"fsdev-{tag}" not in present]
    if not missing:
        return
    vm.start_share_daemons()
    sockets = vm.share_sockets()
    clone.hot_plug_shares({tag: sockets[tag] for tag in missing}, qmp)


def _switch_disk(vm: CheckpointTarget, qmp: QmpClient, into: Path, final: Path, fdset: int) -> None:
    """The paused VM's running disk becomes the checkpoint's; a new overlay over it (by
    its final name) takes the writes."""
    _move(vm.overlay, into / DISK)
    disk.stack_overlay(qmp, vm.overlay, final / DISK, vm.disk_mib, fdset)


def _move(source: Path, target: Path) -> None:
    """Rename, or copy and unlink where ``target`` is on another filesystem (a CLI
    workspace's checkpoints are in its state directory): QEMU goes on reading the file it
    has open, whose content no longer changes, and the new overlay names the copy."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
        source.unlink()


def _save_state(name: str, qmp: QmpClient, state: Path) -> None:
    status = save_state(qmp, state, memory=True)
    if status != "completed":
        raise CheckpointError(name, f"saving the VM's state: migration {status}")
