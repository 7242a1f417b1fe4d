"""Making a template: the first VM of a shape boots as it, is saved where it waits for
its identity, and goes on as that workspace.

The workspace's own QEMU (in its lab, on its TAP) boots the image with the template seed
(``wsfixture.guest.restore``): a throwaway identity, no network, no shares, the agent. Once
the guest says it waits for its identity, QMP ``stop``; the disk it booted (``frozen``)
stops changing under a new overlay, the workspace's (``disk.stack_overlay``); ``migrate``
to a file descriptor (a sandboxed QEMU may not open files or start programs) saves the
devices, and the pages its guest wrote are copied from the memfd it runs on into
``Template.ram``, where a clone copies them from (loading them from the stream cost each
clone ~0.5 s; a guest run on the file itself booted ~20 s slower under TCG: the host
wrote its pages back to disk as it touched them). The VM is then paused exactly where each
clone's restore leaves one, and goes on as a clone does (``clone.give_identity``): the
first VM of a shape costs a boot and a pause, not a boot, a save, a new QEMU and a load.
This module needs of the VM only ``TemplateHost``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from wsfixture.backends.qemu import channel, disk
from wsfixture.backends.qemu.argv import (
    IDENTITY_SOCKET,
    KERNEL_ARGS,
    SHARE_TRANSPORT,
    TEMPLATE_MAC,
    Boot,
)
from wsfixture.backends.qemu.qmp import QmpClient, save_state
from wsfixture.errors import TemplateError
from wsfixture.guest import restore
from wsfixture.host import settings, system, virt
from wsfixture.image import templates
from wsfixture.image.recipe import Image
from wsfixture.image.templates import Template, TemplateShape
from wsfixture.model.config import Config, WorkspaceSpec

TEMPLATE_BOOT_TIMEOUT = 300.0  # a template's first boot, under TCG with other VMs about
OVERLAY_FDSET = 2  # the workspace's overlay, stacked on the template's disk (argv's is 1)


class TemplateHost(Protocol):
    """What making a template needs of the VM that boots as it."""

    image: Image
    runtime_dir: Path
    overlay: Path
    tap: str
    console_log: Path
    process: subprocess.Popen[bytes] | None

    @property
    def shape(self) -> TemplateShape: ...

    def kernel_cmdline(self, machine_id_of: str) -> str: ...

    def launch(self, boot: Boot, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        """QEMU for ``boot``, in the lab, as the workspace's machine process."""
        ...

    def qmp(self) -> QmpClient: ...


@dataclasses.dataclass
class Saved:
    """A VM saved as a template, paused where its clones start: its guest port (the agent
    waits on it for the identity), and what ``template.json`` records of its making."""

    port: socket.socket
    facts: dict[str, Any]


def boot_and_save(vm: TemplateHost, template: Template, final: Template) -> Saved:
    """Boot ``vm`` as ``template`` (in its staging directory, to be renamed to ``final``),
    wait until it waits for its identity, save it, and leave it paused over the
    workspace's own overlay. TemplateError if it cannot; the caller ends the VM then."""
    started, shape = time.monotonic(), vm.shape
    disk.create_overlay(template.disk, template.frozen, "raw", shape.disk)
    # Not a private directory: the tar's root is the guest's /, which everyone walks.
    restore.template_seed(vm.runtime_dir / "template-seed", template.seed)
    memory = os.memfd_create("wsfixture-template-ram", os.MFD_CLOEXEC)
    try:
        os.ftruncate(memory, shape.memory * 2**20)
        boot = Boot(
            template.kernel, template.initrd, vm.kernel_cmdline(template.key), template.frozen,
            template.seed, TEMPLATE_MAC, vm.tap, vm.runtime_dir, restorable=True,
            ram=Path(f"/proc/self/fd/{memory}"),
        )  # fmt: skip
        with channel.listening(vm.runtime_dir / IDENTITY_SOCKET) as listener:
            with disk.descriptors(template.frozen) as fds:
                process = vm.launch(dataclasses.replace(boot, disk_fds=fds), (*fds, memory))
            port = channel.accept(listener, process, vm.runtime_dir / settings.QEMU_LOG)
        try:
            booted = _wait_for_the_boot(port, process, vm.console_log) - started
            _save(vm, template, final, shape.disk)
            _keep_ram(memory, template.ram)
            # Its own record of the boot: the workspace's console goes on with the workspace.
            shutil.copyfile(vm.console_log, template.dir / settings.CONSOLE_LOG)
            # Over its disk by a relative path from now on: the directory is renamed into
            # place. (QEMU, which holds it as the overlay's backing file, does not write it.)
            disk.rebase_relative(template.frozen, template.disk, "raw")
        except BaseException:
            port.close()
            raise
    finally:
        os.close(memory)
    facts = {"boot_seconds": round(booted, 2),
             "save_seconds": round(time.monotonic() - started - booted, 2)}  # fmt: skip
    return Saved(port, facts)


def _wait_for_the_boot(
    port: socket.socket, process: subprocess.Popen[bytes], console: Path
) -> float:
    """When the guest said it waits for its identity, its boot settled."""
    line = channel.read_line(port, TEMPLATE_BOOT_TIMEOUT, process, console)
    state = line.removeprefix("waiting ").strip()
    if not line.startswith("waiting ") or state != "running":
        raise TemplateError(
            f"the template's boot ended {state!r}, not 'running':\n{system.tail(console, 15)}"
        )
    return time.monotonic()


def _save(vm: TemplateHost, template: Template, final: Template, disk_mib: int) -> None:
    """Pause the VM, stack the workspace's overlay on the template's disk, save the
    devices (its memory is kept apart, ``_keep_ram``)."""
    qmp = vm.qmp()
    qmp.command("stop")
    disk.stack_overlay(qmp, vm.overlay, final.frozen, disk_mib, OVERLAY_FDSET)
    status = save_state(qmp, template.state, memory=False)
    if status != "completed":
        log = system.tail(vm.runtime_dir / settings.QEMU_LOG, 5)
        raise TemplateError(f"saving the template: migration {status}\n{log}")


def _keep_ram(memory: int, ram: Path) -> None:
    """The saved guest's memory, from its memfd into the template's sparse file."""
    fd = os.open(ram, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, os.fstat(memory).st_size)
        templates.copy_ram(memory, fd)
    finally:
        os.close(fd)


def shape_for(config: Config, spec: WorkspaceSpec, image_key: str) -> TemplateShape:
    """The template shape of a VM of ``spec`` on this host (its resources as clamped to
    the host, the accelerator it gets, this QEMU)."""
    wanted = config.resources_for(spec)
    # A VM's always has values (its kind's defaults at least).
    assert wanted.vcpu is not None
    assert wanted.memory is not None
    assert wanted.disk is not None
    vcpu, memory, _ = virt.clamp_resources(
        wanted.vcpu, wanted.memory, os.cpu_count() or 1, virt.host_memory_mib()
    )
    return TemplateShape(
        image_key=image_key, machine=spec.machine, vcpu=vcpu, memory=memory, disk=wanted.disk,
        accel=virt.host_accel(spec.accel).name, share_transport=SHARE_TRANSPORT,
        qemu=virt.qemu_version(), kernel_args=" ".join(KERNEL_ARGS),
    )  # fmt: skip


def template_build(template: Template) -> str:
    return f"{template.key}@{str(template.meta().get('state_sha256', ''))[:16]}"
