"""Making a template: a VM of one shape booted once and saved, for its clones to restore.

QEMU boots the image with the template seed (``wsfixture.guest.restore``) in a network
namespace of its own, with a TAP of its own (the NIC's backend is not part of the state);
once the guest says it waits for its identity, QMP ``stop`` and ``migrate`` to a file
descriptor (a sandboxed QEMU may not open files or start programs) save it, and QEMU
quits. The save leaves the guest's memory out: it ran on a memfd, whose pages the guest
wrote are copied into ``Template.ram``, and a clone copies them into its own, where loading
them from the stream cost each clone ~0.5 s. (A guest run on the file itself booted ~20 s
slower under TCG: the host wrote its pages back to disk as it touched them.) This module
needs of the VM only ``TemplateHost``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from wsfixture.backends.qemu import channel, disk
from wsfixture.backends.qemu.argv import (
    IDENTITY_SOCKET,
    KERNEL_ARGS,
    QMP_SOCKET,
    SHARE_TRANSPORT,
    TEMPLATE_MAC,
    Boot,
)
from wsfixture.backends.qemu.qmp import QmpClient, save_state
from wsfixture.errors import TemplateError
from wsfixture.guest import restore
from wsfixture.host import cgroups, ledger, settings, system, virt
from wsfixture.image import templates
from wsfixture.image.recipe import Image
from wsfixture.image.templates import Template, TemplateShape
from wsfixture.model.config import Config, WorkspaceSpec

TEMPLATE_BOOT_TIMEOUT = 300.0  # a template's first boot, under TCG with other VMs about
TEMPLATE_TAP = "tap0"


class TemplateHost(Protocol):
    """What making a template needs of the VM that asks for one."""

    image: Image
    runtime_dir: Path

    @property
    def shape(self) -> TemplateShape: ...

    def kernel_cmdline(self, machine_id_of: str) -> str: ...

    def argv(self, boot: Boot) -> list[str]: ...

    def spawn(
        self,
        argv: list[str],
        cgroup: Path,
        log: Path,
        env: dict[str, str] | None = None,
        record: ledger.Record | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]: ...

    def watch_owner(self, cgroup: Path, record: ledger.Record) -> None: ...

    def reap_spawned(self, cgroup: Path) -> None: ...


def build_template(vm: TemplateHost, template: Template, record: ledger.Record) -> dict[str, Any]:
    """Boot the template VM, wait until it waits for its identity, save it."""
    started = time.monotonic()
    sockets = system.private_dir(vm.runtime_dir / "template")
    disk.create_overlay(template.disk, template.frozen, "raw", vm.shape.disk)
    restore.template_seed(sockets / "seed-root", template.seed)
    memory = os.memfd_create("wsfixture-template-ram", os.MFD_CLOEXEC)
    try:
        return _boot_and_save(vm, template, record, sockets, memory, started)
    finally:
        os.close(memory)


def _boot_and_save(
    vm: TemplateHost,
    template: Template,
    record: ledger.Record,
    sockets: Path,
    memory: int,
    started: float,
) -> dict[str, Any]:
    os.ftruncate(memory, vm.shape.memory * 2**20)
    boot = Boot(
        template.kernel, template.initrd, vm.kernel_cmdline(template.key), template.frozen,
        template.seed, TEMPLATE_MAC, TEMPLATE_TAP, sockets, restorable=True,
        console_log=template.dir / settings.CONSOLE_LOG, ram=Path(f"/proc/self/fd/{memory}"),
    )  # fmt: skip
    cgroup = settings.current().cgroup_root / f"template-{os.getpid()}-{time.monotonic_ns()}"
    record.add_cgroup(cgroup)
    vm.watch_owner(cgroup, record)
    with channel.listening(sockets / IDENTITY_SOCKET) as listener:
        with disk.descriptors(template.frozen) as fds:
            argv = [
                "unshare", "--net", "--", "/bin/sh", "-c",
                f'ip tuntap add dev {TEMPLATE_TAP} mode tap && ip link set {TEMPLATE_TAP} up '
                '&& exec "$@"', "sh", *vm.argv(dataclasses.replace(boot, disk_fds=fds)),
            ]  # fmt: skip
            process = vm.spawn(
                argv,
                cgroup,
                template.dir / settings.QEMU_LOG,
                record=record,
                pass_fds=(*fds, memory),
            )
        try:
            port = channel.accept(listener, process, template.dir / settings.QEMU_LOG)
            line = channel.read_line(
                port, TEMPLATE_BOOT_TIMEOUT, process, template.dir / settings.CONSOLE_LOG
            )
            booted = time.monotonic() - started
            state = line.removeprefix("waiting ").strip()
            if not line.startswith("waiting ") or state != "running":
                raise TemplateError(
                    f"the template's boot ended {state!r}, not 'running':\n"
                    + system.tail(template.dir / settings.CONSOLE_LOG, 15)
                )
            try:
                _save(sockets / QMP_SOCKET, template.state)
            except TemplateError as exc:
                raise TemplateError(f"{exc}\n{system.tail(template.dir / 'qemu.log', 5)}") from None
            process.wait(30)
            port.close()
            _keep_ram(memory, template.ram)
            os.sync()  # the state, memory and frozen disk on disk before anyone restores them
        finally:
            system.end_process(process, 0.0)
            cgroups.kill(str(cgroup))
            vm.reap_spawned(cgroup)  # its owner watch
    # Over its disk by a relative path from now on: the directory is renamed into place.
    disk.rebase_relative(template.frozen, template.disk, "raw")
    system.remove_tree(sockets)
    return {
        "boot_seconds": round(booted, 2),
        "save_seconds": round(time.monotonic() - started - booted, 2),
    }


def _save(qmp_socket: Path, state: Path) -> None:
    qmp = QmpClient.connect(qmp_socket)
    try:
        qmp.command("stop")
        status = save_state(qmp, state, memory=False)
        if status != "completed":
            raise TemplateError(f"saving the template: migration {status}")
        qmp.command("quit")
    finally:
        qmp.close()


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
