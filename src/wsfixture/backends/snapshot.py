"""VM start by restore: a template VM booted once and saved, then a clone per workspace.

Making a template: QEMU boots the image with the template seed (``wsfixture.guest.restore``)
in a network namespace of its own, with a TAP of its own; once the guest says it waits for
its identity, QMP ``stop`` and ``migrate`` to a file descriptor (a sandboxed QEMU may not
open files or start programs) save it, and QEMU quits.

Restoring a clone: an overlay over the template's frozen disk, QEMU with the template's
devices and ``-incoming defer``, the state handed over by descriptor. While QEMU loads it,
the state's digest is checked; the clone is let run (``cont``) only if it matches, so a
corrupt template never runs. The shares are hot-plugged (connected by us, handed over by
descriptor), then the identity goes down the virtio-serial port and the guest answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsfixture.backends.qmp import QmpClient
from wsfixture.errors import CorruptTemplateError, TemplateError
from wsfixture.guest import restore
from wsfixture.host import ledger, settings, system
from wsfixture.image import templates
from wsfixture.image.build import stderr_progress
from wsfixture.image.templates import Template, TemplateShape
from wsfixture.model import derive

log_steps = logging.getLogger("wsfixture.restore")

if TYPE_CHECKING:
    from wsfixture.backends.qemu import QemuBackend

# A restorable VM's extra devices: the identity port, vmgenid (a clone's kernel reseeds its
# random generator when the generation id changes), and spare PCIe root ports for shares
# hot-plugged after a restore (vhost-user-fs cannot be migrated in QEMU 7.2).
# The sockets of a boot, in its ``Boot.sockets`` directory.
QMP_SOCKET = "qmp.sock"
SERIAL_SOCKET = "serial.sock"
IDENTITY_SOCKET = "identity.sock"
SPARE_ROOT_PORTS = 8
# Every template's NIC: a clone takes its own MAC from its identity. Locally administered.
TEMPLATE_MAC = "52:54:00:00:00:01"


@dataclass(frozen=True)
class Boot:
    """What differs between a cold boot, a template's first boot and a clone's restore."""

    kernel: Path
    initrd: Path
    cmdline: str
    disk: Path
    seed: Path
    mac: str
    tap: str
    sockets: Path  # the directory of its QMP, serial and identity sockets
    restorable: bool = False  # a template, or a clone of one
    incoming: bool = False  # a clone: QEMU waits for the template's state
    console_log: Path | None = None  # None: the workspace's
    disk_fds: tuple[int, ...] = ()  # the disk as an fd set (``disk_descriptors``)


DISK_FDSET = 1


@contextlib.contextmanager
def disk_descriptors(disk: Path) -> Iterator[tuple[int, ...]]:
    """``disk`` open read-write and read-only, for ``Boot.disk_fds``: a save, or a clone's
    first run, reopens the disk after QEMU has become the unprivileged user, which may not
    open it by name; QEMU takes the descriptor of the mode it needs from the set."""
    opened = [os.open(disk, os.O_RDWR), os.open(disk, os.O_RDONLY)]
    try:
        yield tuple(opened)
    finally:
        for fd in opened:
            os.close(fd)


def disk_argv(boot: Boot) -> list[str]:
    """The root disk's -drive: by name, or as the fd set ``boot.disk_fds``."""
    argv: list[str] = []
    source = str(boot.disk)
    if boot.disk_fds:
        for fd in boot.disk_fds:
            argv += ["-add-fd", f"fd={fd},set={DISK_FDSET}"]
        source = f"/dev/fdset/{DISK_FDSET}"
    return [*argv, "-drive", f"file={source},if=none,id=root,format=qcow2,cache=writeback"]


def restorable_devices(identity_socket: Path) -> list[str]:
    """The devices a template and its clones declare alike, in the same order (PCI
    addresses follow it). QEMU connects to the identity socket: the host listens."""
    argv = [
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"socket,id=identity,path={identity_socket}",
        "-device", f"virtserialport,bus=vser.0,chardev=identity,name={restore.PORT_NAME}",
        "-device", "vmgenid,guid=auto",
    ]  # fmt: skip
    for port in range(SPARE_ROOT_PORTS):
        argv += ["-device", f"pcie-root-port,id=rp{port},chassis={port + 1},slot={port + 1}"]
    return argv


TEMPLATE_BOOT_TIMEOUT = 300.0  # a template's first boot, under TCG with other VMs about
SAVE_TIMEOUT = 120.0
LOAD_TIMEOUT = 60.0
IDENTITY_TIMEOUT = 30.0  # the guest applies its identity; hot-plugged shares included
TEMPLATE_TAP = "tap0"


def shape_of(backend: QemuBackend) -> TemplateShape:
    return TemplateShape(
        image_key=backend.image.recipe.key,
        machine=backend.ctx.spec.machine,
        vcpu=backend.vcpu,
        memory=backend.memory,
        disk=backend.ctx.spec.disk,
        accel=backend.accel.name,
        share_transport=backend.share_transport,
        qemu=qemu_version(),
    )


@functools.cache
def qemu_version() -> str:
    """QEMU's version line, asked once per process."""
    out = system.run([system.require_tool("qemu-system-x86_64"), "--version"])
    return out.splitlines()[0].strip()


def start_by_restore(backend: QemuBackend) -> str:
    """Restore ``backend``'s VM from its shape's template, made first if need be; a bad
    template is remade once. Returns how (for ``describe``); TemplateError if it cannot."""
    shape = shape_of(backend)
    progress = backend.ctx.progress or stderr_progress
    for attempt in (1, 2):
        template = templates.ensure(
            shape, backend.image, lambda t, r: build_template(backend, t, r), progress
        )
        try:
            restore_clone(backend, template)
            return f"restored from template {template.key}"
        except CorruptTemplateError as exc:
            templates.invalidate(template)
            if attempt == 2:
                raise
            progress(f"template {template.key} is bad ({exc}): making it anew")
            backend.reset()
    raise AssertionError("unreachable")


# -- making a template -------------------------------------------------------------------


def build_template(
    backend: QemuBackend, template: Template, record: ledger.Record
) -> dict[str, Any]:
    """Boot the template VM, wait until it waits for its identity, save it."""
    started = time.monotonic()
    sockets = system.private_dir(backend.ctx.runtime_dir / "template")
    system.run(
        [system.require_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
         str(template.disk), str(template.frozen), f"{backend.ctx.spec.disk}M"]
    )  # fmt: skip
    restore.template_seed(sockets / "seed-root", template.seed)
    boot = Boot(
        template.kernel, template.initrd, backend.kernel_cmdline(template.key), template.frozen,
        template.seed, TEMPLATE_MAC, TEMPLATE_TAP, sockets, restorable=True,
        console_log=template.dir / "console.log",
    )  # fmt: skip
    cgroup = settings.current().cgroup_root / f"template-{os.getpid()}-{time.monotonic_ns()}"
    record.add_cgroup(cgroup)
    backend.watch_owner(cgroup, record)
    with _listening(sockets / IDENTITY_SOCKET) as listener:
        with disk_descriptors(template.frozen) as fds:
            # Its own network namespace and TAP: the NIC's backend is not part of the state.
            argv = [
                "unshare", "--net", "--", "/bin/sh", "-c",
                f'ip tuntap add dev {TEMPLATE_TAP} mode tap && ip link set {TEMPLATE_TAP} up '
                '&& exec "$@"', "sh", *backend.argv(dataclasses.replace(boot, disk_fds=fds)),
            ]  # fmt: skip
            process = backend.spawn(
                argv, cgroup, template.dir / "qemu.log", record=record, pass_fds=fds
            )
        try:
            channel = _accept(listener, process, template.dir / "qemu.log")
            line = _read_line(channel, TEMPLATE_BOOT_TIMEOUT, process, template.dir / "console.log")
            booted = time.monotonic() - started
            state = line.removeprefix("waiting ").strip()
            if not line.startswith("waiting ") or state != "running":
                raise TemplateError(
                    f"the template's boot ended {state!r}, not 'running':\n"
                    + system.tail(template.dir / "console.log", 15)
                )
            try:
                _save(sockets / QMP_SOCKET, template.state)
            except TemplateError as exc:
                raise TemplateError(f"{exc}\n{system.tail(template.dir / 'qemu.log', 5)}") from None
            process.wait(30)
            channel.close()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            ledger.kill_cgroup(str(cgroup))
            backend.reap_spawned()  # its owner watch
    # Over its disk by a relative path from now on: the directory is renamed into place.
    system.run([system.require_tool("qemu-img"), "rebase", "-q", "-u", "-F", "raw", "-b",
                template.disk.name, str(template.frozen)])  # fmt: skip
    system.remove_tree(sockets)
    return {
        "boot_seconds": round(booted, 2),
        "save_seconds": round(time.monotonic() - started - booted, 2),
    }


def _save(qmp_socket: Path, state: Path) -> None:
    qmp = QmpClient.connect(qmp_socket)
    try:
        qmp.command("stop")
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            qmp.send_fd("state", fd)
        finally:
            os.close(fd)
        qmp.command("migrate", uri="fd:state")
        status = _wait_migration(qmp, SAVE_TIMEOUT)
        if status != "completed":
            raise TemplateError(f"saving the template: migration {status}")
        os.sync()  # the state and the frozen disk on disk before anyone restores them
        qmp.command("quit")
    finally:
        qmp.close()


def _wait_migration(qmp: QmpClient, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = qmp.command("query-migrate")
        status = str(info.get("status", "none"))
        if status in ("failed", "cancelled"):
            return f"{status}: {info.get('error-desc', 'no reason given')}"
        if status == "completed":
            return status
        time.sleep(0.02)
    return f"not done after {timeout:.0f}s"


# -- restoring a clone -------------------------------------------------------------------


def restore_clone(backend: QemuBackend, template: Template) -> None:
    runtime = backend.ctx.runtime_dir
    log = runtime / "qemu.log"
    boot = Boot(
        template.kernel, template.initrd, backend.kernel_cmdline(template.key), backend.overlay,
        template.seed, TEMPLATE_MAC, backend.tap, runtime, restorable=True, incoming=True,
    )  # fmt: skip
    steps = Steps()
    with _listening(runtime / IDENTITY_SOCKET) as listener:
        with templates.restoring(template):
            why = template.problem(shape_of(backend), backend.image)
            if why is not None:
                raise CorruptTemplateError(why)
            backend.overlay.unlink(missing_ok=True)
            system.run(
                [system.require_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "qcow2",
                 "-b", str(template.frozen), str(backend.overlay)]
            )  # fmt: skip
            steps.done("overlay")
            with disk_descriptors(backend.overlay) as fds:
                argv = backend.argv(dataclasses.replace(boot, disk_fds=fds))
                backend.process = backend.spawn(
                    backend.ctx.lab.exec_argv(argv), backend.cgroup, log, pass_fds=fds
                )
            channel = _accept(listener, backend.process, log)
            qmp = _connect_qmp(backend, log)
            steps.done("qemu up")
            verdict: list[str | None] = []
            check = threading.Thread(target=lambda: verdict.append(template.verify_state()))
            check.start()
            fd = os.open(template.state, os.O_RDONLY)
            try:
                qmp.send_fd("state", fd)
            finally:
                os.close(fd)
            try:
                qmp.command("migrate-incoming", uri="fd:state")
                status = _wait_migration(qmp, LOAD_TIMEOUT)
            except (OSError, ConnectionError) as exc:
                status = f"QEMU gone ({exc})"
            steps.done("state loaded")
            check.join()
            steps.done("state verified")
        if status != "completed":
            raise CorruptTemplateError(f"loading the state: {status}\n{system.tail(log, 5)}")
        if verdict[0] is not None:
            raise CorruptTemplateError(verdict[0])
        _hot_plug_shares(backend, qmp)
        steps.done("shares plugged")
        # Sent while the VM is paused: QEMU hands it to the guest's buffers meanwhile.
        _send_identity(backend, template, channel)
        qmp.command("cont")
        reply = _read_line(channel, IDENTITY_TIMEOUT, backend.process, backend.console_log)
        steps.done("identity taken")
        channel.close()
    log_steps.debug("%s restored: %s", backend.ctx.spec.name, steps)
    done, said = restore.parse_reply(reply.encode())
    if not done:
        raise TemplateError(f"the restored guest did not take its identity: {said}")


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


def _connect_qmp(backend: QemuBackend, log: Path) -> QmpClient:
    deadline = time.monotonic() + 10
    while True:
        try:
            return backend.qmp()
        except OSError:
            if backend.process is not None and backend.process.poll() is not None:
                raise TemplateError(f"QEMU exited: {system.tail(log, 5)}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _hot_plug_shares(backend: QemuBackend, qmp: QmpClient) -> None:
    """Each share's virtiofsd, connected by us and handed to QEMU, on a spare root port."""
    for port, (tag, _source, _target, _ro) in enumerate(backend.shares()):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(backend.fs_socket(tag)))
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


def _send_identity(backend: QemuBackend, template: Template, channel: socket.socket) -> None:
    spec, network = backend.ctx.spec, backend.ctx.config.network
    message = restore.message(
        derive.mac(spec.name), f"{spec.ip}/{network.subnet.prefixlen}", str(network.gateway),
        backend.seed.read_bytes(), (derive.machine_id(spec.name), derive.machine_id(template.key)),
    )  # fmt: skip
    channel.sendall(message)


# -- the identity channel ----------------------------------------------------------------


@contextlib.contextmanager
def _listening(path: Path) -> Any:
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1)
        yield listener
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _accept(listener: socket.socket, process: subprocess.Popen[bytes], log: Path) -> socket.socket:
    """QEMU's connection to the identity socket (made while it starts)."""
    listener.settimeout(0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            channel, _ = listener.accept()
            return channel
        except TimeoutError:
            if process.poll() is not None:
                tail = system.tail(log, 8)
                raise TemplateError(f"QEMU exited {process.returncode}: {tail}") from None
    raise TemplateError("QEMU did not connect to the identity socket within 30 s")


def _read_line(
    channel: socket.socket, timeout: float, process: subprocess.Popen[bytes], console_log: Path
) -> str:
    """One line from the guest, or TemplateError (with the console's tail) when it does
    not come."""
    channel.settimeout(0.5)
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
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
