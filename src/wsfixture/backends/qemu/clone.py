"""VM start by restore: a clone of its shape's template per workspace, or, for the first
VM of a shape, the template itself going on.

A clone: an overlay over the template's frozen disk; the guest's memory, a copy of the
template's (only what its guest wrote; the copy is a memfd, which virtiofsd can map); QEMU
with the template's devices over them and ``-incoming defer``, the state of its devices
handed over by descriptor. Meanwhile the template's digests are checked; the clone is let
run (``cont``) only if they match, so a corrupt template never runs. The first VM of a
shape with no template boots as it (``template.boot_and_save``) and is left paused where a
clone's load leaves one. Either way the shares are then hot-plugged (connected by us,
handed over by descriptor), the identity goes down the virtio-serial port and the guest
answers. This module needs of the VM only ``RestoreTarget``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from wsfixture.backends.qemu import channel, disk
from wsfixture.backends.qemu.argv import IDENTITY_SOCKET, TEMPLATE_MAC, Boot
from wsfixture.backends.qemu.qmp import QmpClient, leave_out_memory, wait_migration
from wsfixture.backends.qemu.template import TemplateHost, boot_and_save
from wsfixture.errors import CorruptTemplateError, TemplateError
from wsfixture.guest import restore
from wsfixture.host import settings, system
from wsfixture.image import obtain, store, templates
from wsfixture.image.templates import Template
from wsfixture.retry import retry_until

log_steps = logging.getLogger("wsfixture.restore")

LOAD_TIMEOUT = 60.0
IDENTITY_TIMEOUT = 30.0  # the guest applies its identity; hot-plugged shares included
QMP_TIMEOUT = 10.0


class RestoreTarget(TemplateHost, Protocol):
    """What a restore needs of the VM it restores."""

    name: str
    progress: Callable[[str], None]
    agent_port: socket.socket | None  # the guest port, kept once the clone took its identity
    restored_from: Template | None

    def share_sockets(self) -> dict[str, Path]:
        """Each share's tag and its virtiofsd's listening socket."""
        ...

    def identity(self, template_key: str) -> bytes:
        """The restore message that makes a clone of ``template_key`` this VM."""
        ...

    def reset(self) -> None:
        """Undo a failed restore (its QEMU and share daemons), ready to try again."""
        ...


def start_by_restore(vm: RestoreTarget) -> str:
    """Restore ``vm`` from its shape's template; with none, make it by booting ``vm`` as
    it, which then goes on. A bad template is remade once. Returns how (for
    ``describe``); TemplateError if it cannot."""
    final = Template(store.templates_dir() / vm.shape.key)
    for attempt in (1, 2):
        if went_on := make_and_go_on(vm, final):
            return went_on
        try:
            restore_clone(vm, final)
            return f"restored from template {final.key}"
        except CorruptTemplateError as exc:
            templates.invalidate(final)
            if attempt == 2:
                raise
            vm.progress(f"template {final.key} is bad ({exc}): making it anew")
            vm.reset()
    raise AssertionError("unreachable")


def make_and_go_on(vm: RestoreTarget, final: Template) -> str | None:
    """If ``final`` is not there (nor made meanwhile by another process), boot ``vm`` as
    it, save it, and let it go on as ``vm``: how it started, or None (``final`` is there
    to restore). The guest takes its identity while the host hashes the saved template
    and renames it into place."""
    steps = Steps()
    with ThreadPoolExecutor(1, thread_name_prefix=f"identity-{vm.name}") as waiting:
        answer: list[Future[None]] = []

        def build(building: Template, _: object) -> dict[str, Any]:
            saved = boot_and_save(vm, building, final)
            steps.done("booted as the template and saved")
            assert vm.process is not None
            process = vm.process
            try:
                give_identity(vm, saved.port, vm.qmp(), final)
            except BaseException:
                saved.port.close()
                raise
            answer.append(waiting.submit(identity_taken, vm, saved.port, process, final, steps))
            os.sync()  # its state, memory and frozen disk on disk before anyone restores them
            return saved.facts

        # Leaving the pool, by an error too, waits for the answer the guest is giving.
        obtain.ensure_template(vm.shape, vm.image, build, vm.progress)
        if not answer:
            return None
        answer[0].result()
    log_steps.debug("%s made template %s and went on: %s", vm.name, final.key, steps)
    return f"made template {final.key} and went on from it"


def clone_boot(vm: RestoreTarget, template: Template) -> Boot:
    """How a clone of ``template`` starts: the template's devices, waiting for a state."""
    return Boot(
        template.kernel, template.initrd, vm.kernel_cmdline(template.key), vm.overlay,
        template.seed, TEMPLATE_MAC, vm.tap, vm.runtime_dir, restorable=True, incoming=True,
    )  # fmt: skip


def restore_clone(vm: RestoreTarget, template: Template) -> None:
    steps = Steps()
    with channel.listening(vm.runtime_dir / IDENTITY_SOCKET) as listener:
        with templates.restoring(template):
            why = template.problem(vm.shape, vm.image)
            if why is not None:
                raise CorruptTemplateError(why)
            disk.create_overlay(template.frozen, vm.overlay, "qcow2")
            steps.done("overlay")
            port, qmp, process = load(
                vm, clone_boot(vm, template), template.state, listener, steps,
                template.verify_state, template.ram,
            )  # fmt: skip
        give_identity(vm, port, qmp, template)
        steps.done("shares plugged")
        identity_taken(vm, port, process, template, steps)
    log_steps.debug("%s restored: %s", vm.name, steps)


def give_identity(
    vm: RestoreTarget, port: socket.socket, qmp: QmpClient, template: Template
) -> None:
    """The paused VM, as ``template`` left it, is made ``vm``: its shares plugged, its
    identity sent (QEMU hands it to the guest's buffers meanwhile), and let run."""
    hot_plug_shares(vm.share_sockets(), qmp)
    port.sendall(vm.identity(template.key))
    qmp.command("cont")


def identity_taken(
    vm: RestoreTarget,
    port: socket.socket,
    process: subprocess.Popen[bytes],
    template: Template,
    steps: Steps,
) -> None:
    """The guest's answer to its identity; the port stays open, for the guest's agent
    serves checkpoints on it (``checkpoint``). TemplateError if it did not take it."""
    try:
        reply = agent_answer(port, IDENTITY_TIMEOUT, process, vm.console_log)
    except BaseException:
        port.close()
        raise
    steps.done("identity taken")
    vm.agent_port = port
    vm.restored_from = template
    done, said = restore.parse_reply(reply.encode())
    if not done:
        raise TemplateError(f"the restored guest did not take its identity: {said}")


def agent_answer(
    port: socket.socket, timeout: float, process: subprocess.Popen[bytes], console_log: Path
) -> str:
    """The guest agent's answer to what the host sent it. On its way there it may ask for
    the host's time (``restore.CLOCK_REQUEST``: a clone once its identity is unpacked, a
    checkpointed VM as it resumes), which it is told then: a time sent with the request
    would be as old as the guest's work before it reads it."""
    reply = channel.read_line(port, timeout, process, console_log)
    if reply == restore.CLOCK_REQUEST:
        port.sendall(restore.time_line())
        reply = channel.read_line(port, timeout, process, console_log)
    return reply


def load(
    vm: RestoreTarget,
    boot: Boot,
    state: Path,
    listener: socket.socket,
    steps: Steps,
    verify: Callable[[], str | None] | None = None,
    ram: Path | None = None,
) -> tuple[socket.socket, QmpClient, subprocess.Popen[bytes]]:
    """QEMU for ``boot`` (over ``vm.overlay``, made by the caller), with ``state`` loaded
    and the VM paused: the guest port's connection, QMP and the process. Its memory starts
    as a copy of the memory file ``ram``, which ``state`` then leaves out (a template's);
    None: empty, and ``state`` has it all (a checkpoint's). CorruptTemplateError if the
    state does not load, or ``verify`` (run meanwhile) says why it is bad."""
    log = vm.runtime_dir / settings.QEMU_LOG
    verdict: list[str | None] = []
    check = threading.Thread(
        target=lambda: verdict.append(verify() if verify else None), daemon=True
    )
    check.start()
    memory = os.memfd_create(f"wsfixture-{vm.name}-ram", os.MFD_CLOEXEC)
    try:
        os.ftruncate(memory, vm.shape.memory * 2**20)
        # QEMU opens its own descriptor of it by this name: it is QEMU's inherited fd.
        boot = dataclasses.replace(boot, ram=Path(f"/proc/self/fd/{memory}"))
        with disk.descriptors(vm.overlay) as fds:
            process = vm.launch(dataclasses.replace(boot, disk_fds=fds), (*fds, memory))
        if ram is not None:
            with open(ram, "rb") as source:
                templates.copy_ram(source.fileno(), memory)  # while QEMU starts
    finally:
        os.close(memory)
    port = channel.accept(listener, process, log)
    qmp = _connect_qmp(vm, process, log)
    steps.done("memory copied, qemu up")
    fd = os.open(state, os.O_RDONLY)
    try:
        qmp.send_fd("state", fd)
    finally:
        os.close(fd)
    try:
        leave_out_memory(qmp, ram is not None)
        qmp.command("migrate-incoming", uri="fd:state")
        status = wait_migration(qmp, LOAD_TIMEOUT)
    except (OSError, ConnectionError) as exc:
        status = f"QEMU gone ({exc})"
    steps.done("state loaded")
    check.join()
    steps.done("state verified")
    if status != "completed":
        raise CorruptTemplateError(f"loading the state: {status}\n{system.tail(log, 5)}")
    if verdict[0] is not None:
        raise CorruptTemplateError(verdict[0])
    return port, qmp, process


class Steps:
    """How long each step of a restore took, for the debug log."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.taken: list[str] = []

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.taken.append(f"{step} {now - self.last:.2f}s")
        self.last = now

    def __str__(self) -> str:
        return ", ".join(self.taken)


def _connect_qmp(vm: RestoreTarget, process: subprocess.Popen[bytes], log: Path) -> QmpClient:
    """The VM's QMP client, once QEMU has made its socket."""

    def connected(last_try: bool) -> QmpClient | None:
        try:
            return vm.qmp()
        except OSError:
            if process.poll() is not None:
                raise TemplateError(f"QEMU exited: {system.tail(log, 5)}") from None
            if last_try:
                raise
            return None

    client = retry_until(connected, QMP_TIMEOUT, 0.01)
    assert client is not None  # the last try raises instead
    return client


def hot_plug_shares(sockets: dict[str, Path], qmp: QmpClient) -> None:
    """Each share's virtiofsd, connected by us and handed to QEMU, on a spare root port."""
    for port, (tag, path) in enumerate(sockets.items()):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(path))
            qmp.send_fd(f"fs-{tag}", conn.fileno())
        qmp.command(
            "chardev-add",
            id=f"fs-{tag}",
            backend={"type": "socket", "data": {
                "addr": {"type": "fd", "data": {"str": f"fs-{tag}"}}, "server": False}},
        )  # fmt: skip
        qmp.command(
            "device_add", driver="vhost-user-fs-pci", id=f"fsdev-{tag}", chardev=f"fs-{tag}",
            tag=tag, bus=f"rp{port}", **{"queue-size": 1024},
        )  # fmt: skip
