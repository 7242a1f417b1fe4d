"""VM workspaces on QEMU, microvm style: direct kernel boot, TAP on the lab bridge, virtiofs.

The root disk is a qcow2 overlay per VM over the cached ext4 base (never written). Booted
cold, the VM's identity (hostname, network unit, host key, user) arrives as a tar through
fw_cfg and is unpacked by a unit in the image before networkd and sshd start; where it can,
a VM is instead restored from a template of its shape (``clone``) and told the same
identity over a virtio-serial port. QEMU runs inside the lab namespace, so its TAP device
is there too, and in a cgroup of its own with its virtiofsd helpers. KVM is used where it
really runs guests; otherwise TCG, and we say so (``host.virt``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from wsfixture.backends.base import Backend, BackendContext
from wsfixture.backends.qemu import argv as qemu_argv
from wsfixture.backends.qemu import checkpoint as vm_checkpoint
from wsfixture.backends.qemu import clone, disk
from wsfixture.backends.qemu.argv import QMP_SOCKET, SHARE_TRANSPORT, Boot, Extras, Machine
from wsfixture.backends.qemu.qmp import QmpClient
from wsfixture.backends.qemu.template import shape_for, template_build
from wsfixture.errors import CheckpointError, PrerequisiteError, TemplateError
from wsfixture.guest import restore, seed
from wsfixture.host import cgroups, idmap, ledger, settings, system, virt
from wsfixture.host.setup import QEMU_USER
from wsfixture.image.build import stderr_progress
from wsfixture.image.recipe import Image
from wsfixture.image.templates import Template, TemplateShape, spec_restore_blocker
from wsfixture.model import derive
from wsfixture.model.resources import Resources
from wsfixture.retry import retry_until

logger = logging.getLogger("wsfixture.qemu")

SOCKET_TIMEOUT = 10.0  # a read-only share's virtiofsd makes its socket
PRIVILEGE_FILE = "etc/doas.conf"  # the image may have rules of its own there
ACCOUNT_FILES = ("etc/passwd", "etc/group", "etc/shadow", PRIVILEGE_FILE)
# The owner watch: SIGTERM (its parent-death signal) kills its cgroup ($0 is cgroup.kill).
OWNER_WATCH = "trap 'echo 1 > \"$0\"; exit 0' TERM; while :; do sleep 3600 & wait $!; done"

KERNEL_PANIC = re.compile(r"Kernel panic - not syncing: .*")

_said: set[str] = set()


def kernel_panic(console: str) -> str | None:
    """The last kernel panic line of a console's text, without its timestamp."""
    found = KERNEL_PANIC.findall(console)
    return found[-1].strip() if found else None


def say_once(level: int, message: str) -> None:
    """Log what is true of every VM of this process once, not in every test's log."""
    if message not in _said:
        _said.add(message)
        logger.log(level, "%s", message)


class QemuBackend(Backend):
    kind = "vm"
    ready_timeout = 240.0  # a cold boot under TCG, with other VMs about
    stop_timeout = 20.0

    def __init__(self, ctx: BackendContext, image: Image) -> None:
        super().__init__(ctx, image)
        spec = ctx.spec
        self.name = spec.name
        self.runtime_dir = ctx.runtime_dir
        self.overlay = self.runtime_dir / "root.qcow2"
        self.seed = self.runtime_dir / "seed.tar"
        self.qmp_socket = self.runtime_dir / QMP_SOCKET
        self.tap = derive.tap_name(spec.name)
        self.progress: Callable[[str], None] = ctx.progress or stderr_progress
        self.accel = virt.host_accel(spec.accel)
        wanted = ctx.config.resources_for(spec)
        # A VM's always has values (its kind's defaults at least).
        assert wanted.vcpu is not None
        assert wanted.memory is not None
        assert wanted.disk is not None
        self.disk_mib = wanted.disk
        self.vcpu, self.memory, self.warnings = virt.clamp_resources(
            wanted.vcpu, wanted.memory, os.cpu_count() or 1, virt.host_memory_mib()
        )
        if spec.vsock == "required" and not virt.vsock_available():
            raise PrerequisiteError(
                f"workspace {spec.name!r} requires vsock but /dev/vhost-vsock does not exist",
                hint="load vhost_vsock on the host, or set vsock = 'auto'",
            )
        self.vsock = spec.vsock != "off" and virt.vsock_available()
        virt.require_vm_needs(spec.name)
        self._qmp: QmpClient | None = None
        self.boot_mode = "not started"
        # A clone's: the guest port, kept for its agent (checkpoints), and its template.
        self.agent_port: socket.socket | None = None
        self.restored_from: Template | None = None

    # -- what the command line is made of ------------------------------------------------

    @property
    def machine(self) -> Machine:
        spec = self.ctx.spec
        return Machine(spec.name, spec.machine, self.accel.name, self.vcpu, self.memory)

    @property
    def shape(self) -> TemplateShape:
        """The template this VM can restore from."""
        return shape_for(self.ctx.config, self.ctx.spec, self.image.recipe.key)

    def kernel_cmdline(self, machine_id_of: str) -> str:
        microvm = self.ctx.spec.machine == "microvm"
        return qemu_argv.kernel_cmdline(
            derive.machine_id(machine_id_of), virt.tsc_khz() if microvm else None
        )

    def cold_boot(self) -> Boot:
        kernel, initrd = self.image.kernel()
        return Boot(
            kernel, initrd, self.kernel_cmdline(self.ctx.spec.name), self.overlay, self.seed,
            derive.mac(self.ctx.spec.name), self.tap, self.runtime_dir,
        )  # fmt: skip

    def argv(self, boot: Boot, shares: bool = True) -> list[str]:
        """QEMU's command line for ``boot``; without the virtiofs devices for the
        benchmarks' raw baseline (``shares=False``)."""
        cid = derive.vsock_cid(self.ctx.spec.name) if self.vsock else None
        sockets = self.share_sockets() if shares else {}
        return qemu_argv.qemu_argv(
            system.require_tool("qemu-system-x86_64"), self.machine, boot, self.console_log,
            Extras(sockets, cid), QEMU_USER,
        )  # fmt: skip

    def fs_socket(self, tag: str) -> Path:
        return self.runtime_dir / f"fs-{tag}.sock"

    def share_sockets(self) -> dict[str, Path]:
        return {tag: self.fs_socket(tag) for tag, _, _, _ in self.shares()}

    def identity(self, template_key: str) -> bytes:
        spec, network = self.ctx.spec, self.ctx.config.network
        return restore.message(
            derive.mac(spec.name), f"{spec.ip}/{network.subnet.prefixlen}", str(network.gateway),
            self.seed.read_bytes(), (derive.machine_id(spec.name), derive.machine_id(template_key)),
        )  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for note in self.warnings:
            say_once(logging.WARNING, note)  # the defaults (``model.fields``), clamped
        say_once(logging.INFO, self.accel.reason)
        self._write_seed()
        self.guard_port(self.tap)
        self.ctx.lab.ip_batch(
            f"tuntap add dev {self.tap} mode tap\n"
            f"link set {self.tap} master {self.ctx.lab.network.bridge} up"
        )
        # QEMU bounds the guest's CPUs and memory itself; its cgroup bounds its threads.
        self.enforce(Resources(pids=self.resources.pids))
        self._start_helpers()
        blocker = spec_restore_blocker(self.ctx.config, self.ctx.spec)
        if blocker is None:
            try:
                self.say("restoring from a template")
                self.boot_mode = clone.start_by_restore(self)
                return
            except Exception as exc:  # a cold boot still gives a working VM
                logger.warning("%s: restore failed, booting cold: %s", self.ctx.spec.name, exc)
                self.boot_mode = f"cold boot (restore failed: {str(exc).splitlines()[0]})"
                self.reset()
        else:
            say_once(logging.INFO, f"VM cold boot: {blocker}")
            self.boot_mode = f"cold boot ({blocker})"
        under = ", about 30 s under TCG" if self.accel.name == "tcg" else ""
        self.say(f"{self.boot_mode}{under}")
        self.create_overlay()
        self.launch(self.cold_boot(), ())

    def create_overlay(self) -> None:
        """A new qcow2 overlay over the cached base disk: every boot starts from the image."""
        disk.create_overlay(self.image.disk, self.overlay, "raw", self.disk_mib)

    def launch(self, boot: Boot, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
        self.process = self.spawn(
            self.ctx.lab.exec_argv(self.argv(boot)), self.cgroup,
            self.runtime_dir / settings.QEMU_LOG, pass_fds=pass_fds,
        )  # fmt: skip
        return self.process

    def _start_helpers(self) -> None:
        """The VM's owner watch (``watch_owner``) and its share daemons."""
        if self.ctx.die_with_owner:
            self.watch_owner(self.cgroup, self.ctx.record)
        self.start_share_daemons()

    def start_share_daemons(self) -> None:
        """A virtiofsd per share; each serves one connection (a new one after an unplug)."""
        for tag, source, _, read_only in self.shares():
            self.fs_socket(tag).unlink(missing_ok=True)
            if read_only:
                self._start_read_only_virtiofsd(tag, source)
            else:
                self._start_mapped_virtiofsd(tag, source)

    def watch_owner(self, cgroup: Path, record: ledger.Record) -> None:
        """-runas clears the parent-death signal QEMU inherits (the kernel drops it when
        credentials change), so a VM meant to die with its owner gets a watcher in its
        cgroup instead: it keeps the signal, and ends the whole cgroup when it comes."""
        argv = ["/bin/sh", "-c", OWNER_WATCH, str(cgroup / "cgroup.kill")]
        self.spawn(argv, cgroup, self.runtime_dir / "owner-watch.log", record=record)

    def reset(self) -> None:
        """Undo a failed restore: its QEMU and share daemons gone, daemons started anew
        (each serves one connection)."""
        self._close_agent()
        self._close_qmp()
        cgroups.kill(str(self.cgroup))
        self.reap_spawned(self.cgroup)
        self.process = None
        for path in self.runtime_dir.glob("*.sock"):
            path.unlink()
        self._start_helpers()

    def _start_read_only_virtiofsd(self, tag: str, source: Path) -> None:
        socket_path = self.fs_socket(tag)
        argv = qemu_argv.read_only_virtiofsd(virt.VIRTIOFSD, source, socket_path)
        self.spawn(argv, self.cgroup, self.runtime_dir / f"virtiofsd-{tag}.log")
        made = retry_until(lambda _: True if socket_path.exists() else None, SOCKET_TIMEOUT, 0.01)
        if made is None:
            raise PrerequisiteError(f"virtiofsd for {tag} did not create {socket_path}")

    def _start_mapped_virtiofsd(self, tag: str, source: Path) -> None:
        """A rw share's daemon (``argv.mapped_virtiofsd``), in a user namespace of the
        share's map (``model.share_ids``), under the share filter (no setuid, setgid or
        special files): not host root there, it cannot walk the private state dirs, so it
        gets its listening socket as an fd."""
        socket_path = self.fs_socket(tag)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            socket_path.unlink(missing_ok=True)
            listener.bind(str(socket_path))
            listener.listen(1)
            userns = idmap.user_namespace(*self.share_owners(source).virtiofsd_namespace())
            argv = qemu_argv.mapped_virtiofsd(system.require_tool("nsenter"), virt.VIRTIOFSD,
                                              source, userns, listener.fileno())  # fmt: skip
            self.spawn(argv, self.cgroup, self.runtime_dir / f"virtiofsd-{tag}.log",
                       pass_fds=(listener.fileno(), userns), setid_filter="share")  # fmt: skip

    def _write_seed(self) -> None:
        """The VM's identity as a tar: the shared base plus the share mount table."""
        staging = self.runtime_dir / "seed-root"
        for name in ACCOUNT_FILES:  # what the identity adds to: the image's own
            try:
                text = self.image.read_text(name)
            except FileNotFoundError:
                if name == PRIVILEGE_FILE:
                    continue  # no rules of its own
                raise
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.ctx.provision(staging, 0)
        shares = [(tag, target, ro) for tag, _, target, ro in self.shares()]
        seed.pack(staging, seed.mount_table(shares, SHARE_TRANSPORT), self.seed)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_blocker(self) -> str | None:
        if self.restored_from is None or self.agent_port is None:
            return (f"only a VM restored from a template can be checkpointed (its agent does "
                    f"the guest's part), and this one is a {self.boot_mode}")  # fmt: skip
        return None

    def checkpoint_shape(self) -> str:
        """Its template, and which making of it (one remade under its key is another)."""
        assert self.restored_from is not None
        return template_build(self.restored_from)

    def checkpoint(self, into: Path, final: Path, seq: int, commit: Callable[[], None]) -> str:
        return vm_checkpoint.save(self, into, final, seq, commit)

    def rollback(self, chain: list[Path], shape: str) -> str:
        template = Template(settings.current().templates_dir / shape.split("@")[0])
        if not template.meta_path.is_file() or template_build(template) != shape:
            raise CheckpointError(
                self.name, f"the VM template {template.key} it stands on is gone or was "
                "made anew since", "make a new checkpoint",
            )  # fmt: skip
        steps = vm_checkpoint.rollback(self, chain[0], template)
        self.restored_from = template
        return steps

    def qmp(self) -> QmpClient:
        if self._qmp is None:
            self._qmp = QmpClient.connect(self.qmp_socket)
        return self._qmp

    def _close_agent(self) -> None:
        if self.agent_port is not None:
            self.agent_port.close()
            self.agent_port = None

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            with contextlib.suppress(OSError):  # QEMU may be gone already
                self._qmp.close()
            self._qmp = None

    def failure(self) -> str | None:
        reason = super().failure()
        if reason is not None:
            return f"{reason}{self.panic()}\n{system.tail(self.runtime_dir / 'qemu.log', 10)}"
        if not self.qmp_socket.exists():
            return None
        try:
            status = self.qmp().command("query-status")
        except (OSError, ConnectionError):
            return None
        if status.get("status") in ("internal-error", "guest-panicked", "shutdown"):
            state = f"the VM stopped in state {status['status']!r}"
            return f"{state} (accelerator: {self.accel.name}){self.panic()}"
        return None

    def panic(self) -> str:
        """``: <the guest kernel's panic line>`` if its console has one, else nothing: the
        reason itself, which a console's last lines may no longer hold (a panic's call trace
        alone is ~40 lines)."""
        said = kernel_panic(system.tail(self.console_log, lines=1000))
        return f": {said}" if said else ""

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "accel": self.accel.name,
            "accel_reason": self.accel.reason,
            "vcpu": self.vcpu,
            "memory_mib": self.memory,
            "vsock": derive.vsock_cid(self.ctx.spec.name) if self.vsock else "unavailable",
            "machine": self.ctx.spec.machine,
            "shares": SHARE_TRANSPORT,
            "boot": self.boot_mode,
        }

    def stop(self, timeout: float, discard: bool = False) -> None:
        if self.is_up():
            try:
                if not (discard and self._synced()):
                    self.qmp().command("system_powerdown")
                    assert self.process is not None
                    self.process.wait(timeout)
            except Exception as exc:  # ended below, whatever it was
                logger.debug("%s: no orderly shutdown: %s: %s", self.ctx.spec.name,
                             type(exc).__name__, exc)  # fmt: skip
        if self.is_up():
            try:
                self.qmp().command("quit")
            except Exception as exc:  # its cgroup is ended below
                logger.debug("%s: QMP quit: %s: %s", self.ctx.spec.name, type(exc).__name__, exc)
        self._close_agent()
        self._close_qmp()
        self.finish(self.cgroup, system.END_GRACE)
        if self._tap_exists():
            self.ctx.lab.ip_batch(f"link delete {self.tap}")
        self.ctx.lab.unguard_port(self.tap)
        for path in (self.overlay, self.seed):
            path.unlink(missing_ok=True)

    def pause(self) -> None:
        # QEMU itself stays up, its vCPUs stop: the guest's clock and devices with them.
        self.qmp().command("stop")

    def resume(self) -> None:
        self.qmp().command("cont")

    def _synced(self) -> bool:
        """Whether the guest's agent wrote out what it holds for the shares, so that QEMU
        may be ended: a discarded VM's shutdown would only cost its CPU (~6 s under TCG,
        beside the next test's restore). A cold-booted VM has no agent: False."""
        if self.agent_port is None:
            return False
        try:
            said = vm_checkpoint.ask(self, self.agent_port, restore.SYNC)
        except (OSError, TemplateError) as exc:
            said = str(exc)
        if said != restore.SYNCED:
            logger.warning("%s: the guest did not sync its shares (%s): shutting it down",
                           self.name, said)  # fmt: skip
            return False
        return True

    def _tap_exists(self) -> bool:
        out = self.ctx.lab.run(["ip", "-o", "link", "show", self.tap], check=False)
        return bool(out.strip())
