"""VM workspaces on QEMU, microvm style: direct kernel boot, TAP on the lab bridge, virtiofs.

The root disk is a qcow2 overlay per VM over the cached ext4 base (never written). Booted
cold, the VM's identity (hostname, network unit, host key, user) arrives as a tar through
fw_cfg and is unpacked by a unit in the image before networkd and sshd start; where it can,
a VM is instead restored from a template of its shape (``wsfixture.backends.snapshot``) and
told the same identity over a virtio-serial port. QEMU runs inside the lab
namespace, so its TAP device is there too, and in a cgroup of its own with its virtiofsd
helpers. KVM is used where it really runs guests; otherwise TCG, and we say so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from wsfixture.backends import snapshot
from wsfixture.backends.base import Backend, BackendContext
from wsfixture.backends.qmp import QmpClient
from wsfixture.backends.snapshot import (
    IDENTITY_SOCKET,
    QMP_SOCKET,
    SERIAL_SOCKET,
    Boot,
    disk_argv,
    restorable_devices,
)
from wsfixture.errors import PrerequisiteError
from wsfixture.guest import seed
from wsfixture.host import idmap, ledger, system
from wsfixture.host.setup import QEMU_USER, has_qemu_user
from wsfixture.image.recipe import Image
from wsfixture.model import derive

log = logging.getLogger("wsfixture.qemu")

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
VIRTIOFSD_OPTIONS = ("-o", "cache=auto", "-o", "xattr")
# Where a rw share's daemon, not host root in its user namespace, finds the share: a
# directory every uid may walk to, in its own mount namespace.
SHARE_VIEW = Path("/mnt")
TCG_TB_SIZE_MIB = 128  # translation cache; QEMU's default (1 GiB) inflates every VM's RSS
ACCOUNT_FILES = ("etc/passwd", "etc/group", "etc/shadow")
# elevateprivileges stays "allow": QEMU 7.2 switches to -runas's user after installing the
# filter, and with "deny" (or "children") the switch is refused and QEMU silently stays
# root (measured). After the switch every uid is the unprivileged user's and no capability
# is left, so no set*id call can raise it again. spawn=deny: no fork or exec at all.
SANDBOX = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
# The owner watch: SIGTERM (its parent-death signal) kills its cgroup ($0 is cgroup.kill).
OWNER_WATCH = "trap 'echo 1 > \"$0\"; exit 0' TERM; while :; do sleep 3600 & wait $!; done"


def accel_argv(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,tb-size={TCG_TB_SIZE_MIB}"]


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str


def choose_accel(requested: str, kvm_opens: bool, cpu_flags: set[str]) -> Accel:
    """Pick the accelerator without wasting a boot.

    ``/dev/kvm`` opening is not enough: on a PVM hypervisor (a VM without vmx/svm) KVM
    creates VMs, but stock kernels never boot under it. Require the CPU flags too.
    """
    hardware = bool({"vmx", "svm"} & cpu_flags)
    if requested == "tcg":
        return Accel("tcg", "TCG requested")
    if requested == "kvm":
        if not kvm_opens:
            raise PrerequisiteError(
                "accel = 'kvm' but /dev/kvm cannot be opened", "qemu-system-x86"
            )
        return Accel("kvm", "KVM requested")
    if kvm_opens and hardware:
        return Accel("kvm", "KVM with hardware virtualisation")
    if kvm_opens:
        return Accel("tcg", "/dev/kvm opens but the CPU has no vmx/svm (nested PVM): using TCG")
    return Accel("tcg", "no usable /dev/kvm: using TCG")


def host_accel(requested: str) -> Accel:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        kvm_opens = True
    except OSError:
        kvm_opens = False
    return choose_accel(requested, kvm_opens, cpu_flags())


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def host_memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def clamp_resources(
    vcpu: int, memory: int, host_cpus: int, host_mib: int
) -> tuple[int, int, list[str]]:
    """vcpu and memory the host can give; warnings for what was cut."""
    warnings = []
    cpus = min(vcpu, host_cpus)
    if cpus < vcpu:
        warnings.append(f"vcpu {vcpu} clamped to the host's {host_cpus} CPUs")
    limit = max(256, host_mib // 2)
    mib = min(memory, limit)
    if mib < memory:
        warnings.append(f"memory {memory} MiB clamped to half the host's memory ({limit} MiB)")
    return cpus, mib, warnings


_said: set[str] = set()


def say_once(level: int, message: str) -> None:
    """Log what is true of every VM of this process once, not in every test's log."""
    if message not in _said:
        _said.add(message)
        log.log(level, "%s", message)


def vsock_available() -> bool:
    return Path("/dev/vhost-vsock").exists()


class QemuBackend(Backend):
    kind = "vm"

    def __init__(self, ctx: BackendContext, image: Image) -> None:
        super().__init__(ctx)
        self.image = image
        spec = ctx.spec
        run = ctx.runtime_dir
        self.overlay = run / "root.qcow2"
        self.seed = run / "seed.tar"
        self.qmp_socket = run / QMP_SOCKET
        self.tap = derive.tap_name(spec.name)
        self.accel = host_accel(spec.accel)
        self.vcpu, self.memory, self.warnings = clamp_resources(
            spec.vcpu, spec.memory, os.cpu_count() or 1, host_memory_mib()
        )
        if spec.vsock == "required" and not vsock_available():
            raise PrerequisiteError(
                f"workspace {spec.name!r} requires vsock but /dev/vhost-vsock does not exist",
                hint="load vhost_vsock on the host, or set vsock = 'auto'",
            )
        self.vsock = spec.vsock != "off" and vsock_available()
        # virtiofs where its daemon exists; 9p (built into QEMU) otherwise, said in the log.
        self.share_transport = "virtiofs" if Path(VIRTIOFSD).exists() else "9p"
        if self.share_transport == "virtiofs":
            require_qemu_user()
        elif any(not read_only for _, _, _, read_only in self.shares()):
            # QEMU serves 9p as host root with the guest's owners and modes passed through:
            # the guest's root would make host root's (setuid) files in a rw share.
            raise PrerequisiteError(
                f"workspace {spec.name!r}: {VIRTIOFSD} not found, and its rw shares "
                "(workspace/, claude-config/ at least) would be served over 9p as host root",
                "qemu-system-common",
            )
        self._qmp: QmpClient | None = None
        self.boot_mode = "not started"

    # -- argv ----------------------------------------------------------------------------

    def kernel_cmdline(self, machine_id_of: str) -> str:
        args = [
            "console=ttyS0",
            "root=/dev/vda",
            "rw",
            "rootfstype=ext4",
            "panic=-1",  # a panic reboots, and -no-reboot turns that into an exit we see
            f"systemd.machine_id={derive.machine_id(machine_id_of)}",
            "systemd.show_status=1",
            "net.ifnames=0",
        ]
        if self.ctx.spec.machine == "microvm":
            args.append(f"tsc_early_khz={tsc_khz()}")
        return " ".join(args)

    def cold_boot(self) -> Boot:
        kernel, initrd = self.image.kernel()
        return Boot(
            kernel, initrd, self.kernel_cmdline(self.ctx.spec.name), self.overlay, self.seed,
            derive.mac(self.ctx.spec.name), self.tap, self.ctx.runtime_dir,
        )  # fmt: skip

    def argv(self, boot: Boot) -> list[str]:
        """QEMU's command line. A restorable boot (a template, and its clones) declares
        the same devices on both sides of a save, and no shares: they are hot-plugged."""
        spec = self.ctx.spec
        microvm = spec.machine == "microvm"
        dev = "device" if microvm else "pci"  # virtio-mmio vs virtio-pci device names
        sockets = boot.sockets
        argv = [
            system.require_tool("qemu-system-x86_64"),
            "-name", f"{spec.name},debug-threads=on",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        ]  # fmt: skip
        if microvm:
            argv += ["-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
                     "-global", "virtio-mmio.force-legacy=false"]  # fmt: skip
        else:
            argv += ["-M", "q35"]
        argv += accel_argv(self.accel.name)
        argv += [
            "-smp", str(self.vcpu), "-m", f"{self.memory}M",
            # virtiofs needs guest memory that virtiofsd can map
            "-object", f"memory-backend-memfd,id=mem,size={self.memory}M,share=on",
            "-numa", "node,memdev=mem",
            "-kernel", str(boot.kernel), "-initrd", str(boot.initrd), "-append", boot.cmdline,
            *disk_argv(boot),
            "-device", f"virtio-blk-{dev},drive=root",
            "-netdev", f"tap,id=net0,ifname={boot.tap},script=no,downscript=no",
            "-device", f"virtio-net-{dev},netdev=net0,mac={boot.mac}",
            "-device", f"virtio-rng-{dev}",
            "-fw_cfg", f"name={seed.SEED_FW_CFG},file={boot.seed}",
            "-chardev", f"socket,id=ser0,path={sockets / SERIAL_SOCKET},server=on,wait=off,"
            f"logfile={boot.console_log or self.console_log}",
            "-serial", "chardev:ser0",
            "-qmp", f"unix:{sockets / QMP_SOCKET},server=on,wait=off",
            "-sandbox", SANDBOX,
        ]  # fmt: skip
        if self.runs_as_qemu_user:
            argv += ["-runas", QEMU_USER]
        if boot.restorable:
            argv += restorable_devices(sockets / IDENTITY_SOCKET)
            if boot.incoming:
                argv += ["-incoming", "defer"]
            return argv
        for tag, source, _, read_only in self.shares():
            if self.share_transport == "virtiofs":
                argv += [
                    "-chardev", f"socket,id=fs-{tag},path={self.fs_socket(tag)}",
                    "-device", f"vhost-user-fs-{dev},chardev=fs-{tag},tag={tag},queue-size=1024",
                ]  # fmt: skip
            else:
                ro = ",readonly=on" if read_only else ""
                argv += [
                    "-fsdev", f"local,id=fs-{tag},path={source},security_model=passthrough{ro}",
                    "-device", f"virtio-9p-{dev},fsdev=fs-{tag},mount_tag={tag}",
                ]  # fmt: skip
        if self.vsock:
            argv += ["-device", f"vhost-vsock-{dev},guest-cid={derive.vsock_cid(spec.name)}"]
        return argv

    @property
    def runs_as_qemu_user(self) -> bool:
        """QEMU drops root once it has opened what it needs. Not with 9p: QEMU serves that
        itself, with the host's permissions (passthrough owners), and as an unprivileged
        user it could not reach the state dirs."""
        return self.share_transport == "virtiofs"

    def fs_socket(self, tag: str) -> Path:
        return self.ctx.runtime_dir / f"fs-{tag}.sock"

    # -- lifecycle -----------------------------------------------------------------------

    def create_overlay(self) -> None:
        """A new qcow2 overlay over the cached base disk: every boot starts from the image."""
        self.overlay.unlink(missing_ok=True)
        system.run(
            [system.require_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(self.image.disk), str(self.overlay), f"{self.ctx.spec.disk}M"]
        )  # fmt: skip

    def start(self) -> None:
        for note in self.warnings:
            say_once(logging.WARNING, note)  # the seed's 8 vCPUs, 4 GiB, clamped to the host
        say_once(logging.INFO, self.accel.reason)
        self._write_seed()
        self.guard_port(self.tap)
        self.ctx.lab.ip_batch(
            f"tuntap add dev {self.tap} mode tap\n"
            f"link set {self.tap} master {self.ctx.lab.network.bridge} up"
        )
        if self.share_transport == "9p":
            log.warning(
                "%s: %s not found: sharing over 9p (slower metadata; QEMU keeps root to serve "
                "it)", self.ctx.spec.name, VIRTIOFSD,
            )  # fmt: skip
        self._start_helpers()
        blocker = restore_blocker(
            self.ctx.snapshot, self.ctx.spec.machine, self.share_transport, self.vsock,
            len(self.shares()),
        )  # fmt: skip
        if blocker is None:
            try:
                self.say("restoring from a template")
                self.boot_mode = snapshot.start_by_restore(self)
                return
            except Exception as exc:  # a cold boot still gives a working VM
                log.warning("%s: restore failed, booting cold: %s", self.ctx.spec.name, exc)
                self.boot_mode = f"cold boot (restore failed: {str(exc).splitlines()[0]})"
                self.reset()
        else:
            say_once(logging.INFO, f"VM cold boot: {blocker}")
            self.boot_mode = f"cold boot ({blocker})"
        under = ", about 30 s under TCG" if self.accel.name == "tcg" else ""
        self.say(f"{self.boot_mode}{under}")
        self.create_overlay()
        self.process = self.spawn(
            self.ctx.lab.exec_argv(self.argv(self.cold_boot())), self.cgroup,
            self.ctx.runtime_dir / "qemu.log",
        )  # fmt: skip

    def _start_helpers(self) -> None:
        """The VM's owner watch (``watch_owner``) and its share daemons."""
        if self.ctx.die_with_owner and self.runs_as_qemu_user:
            self.watch_owner(self.cgroup, self.ctx.record)
        for tag, source, _, read_only in self.shares():
            if self.share_transport == "virtiofs":
                self._start_virtiofsd(tag, source, read_only)

    def watch_owner(self, cgroup: Path, record: ledger.Record) -> None:
        """-runas clears the parent-death signal QEMU inherits (the kernel drops it when
        credentials change), so a VM meant to die with its owner gets a watcher in its
        cgroup instead: it keeps the signal, and ends the whole cgroup when it comes."""
        argv = ["/bin/sh", "-c", OWNER_WATCH, str(cgroup / "cgroup.kill")]
        self.spawn(argv, cgroup, self.ctx.runtime_dir / "owner-watch.log", record=record)

    def reset(self) -> None:
        """Undo a failed restore: its QEMU and share daemons gone, daemons started anew
        (each serves one connection)."""
        self._close_qmp()
        ledger.kill_cgroup(str(self.cgroup))
        self.reap_spawned()
        self.process = None
        for path in self.ctx.runtime_dir.glob("*.sock"):
            path.unlink()
        self._start_helpers()

    def _start_virtiofsd(self, tag: str, source: Path, read_only: bool) -> None:
        socket_path = self.fs_socket(tag)
        if read_only:
            # QEMU 7.2's virtiofsd has no read-only switch, and the guest's root could
            # remount a share rw: serve it a read-only view, in a mount namespace of its own.
            argv = [*read_only_view(source), VIRTIOFSD, f"--socket-path={socket_path}",
                    "-o", f"source={source}", *VIRTIOFSD_OPTIONS]  # fmt: skip
            self.spawn(argv, self.cgroup, self.ctx.runtime_dir / f"virtiofsd-{tag}.log")
            deadline = time.monotonic() + 10
            while not socket_path.exists():
                if time.monotonic() > deadline:
                    raise PrerequisiteError(f"virtiofsd for {tag} did not create {socket_path}")
                time.sleep(0.01)
            return
        self._start_mapped_virtiofsd(tag, source, socket_path)

    def _start_mapped_virtiofsd(self, tag: str, source: Path, socket_path: Path) -> None:
        """A rw share's daemon: in a user namespace of the share's map
        (``guest.share_ids``), under the share filter (no setuid, setgid or special files),
        without the capabilities to make device nodes or file capabilities. In that
        namespace it is not host root and cannot walk the private state dirs, so it gets
        its listening socket as an fd, and the share bound at /mnt in a mount namespace of
        its own."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            socket_path.unlink(missing_ok=True)
            listener.bind(str(socket_path))
            listener.listen(1)
            userns = idmap.user_namespace(*self.share_owners(source).virtiofsd_namespace())
            daemon = [
                system.require_tool("nsenter"), f"--user=/proc/self/fd/{userns}", "--",
                VIRTIOFSD, f"--fd={listener.fileno()}", "-o", f"source={SHARE_VIEW}",
                *VIRTIOFSD_OPTIONS, "-o", "posix_acl", "-o", "modcaps=-mknod:-setfcap",
            ]  # fmt: skip
            self.spawn(
                [*private_view(source, SHARE_VIEW), *daemon], self.cgroup,
                self.ctx.runtime_dir / f"virtiofsd-{tag}.log",
                pass_fds=(listener.fileno(), userns), setid_filter="share",
            )  # fmt: skip

    def _write_seed(self) -> None:
        """The VM's identity as a tar: the shared base plus the share mount table."""
        staging = self.ctx.runtime_dir / "seed-root"
        for name in ACCOUNT_FILES:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.image.path(name), target)
        self.ctx.provision(staging, 0)
        shares = [(tag, target, ro) for tag, _, target, ro in self.shares()]
        seed.pack(staging, seed.mount_table(shares, self.share_transport), self.seed)

    def qmp(self) -> QmpClient:
        if self._qmp is None:
            self._qmp = QmpClient.connect(self.qmp_socket)
        return self._qmp

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            with contextlib.suppress(OSError):  # QEMU may be gone already
                self._qmp.close()
            self._qmp = None

    def failure(self) -> str | None:
        reason = super().failure()
        if reason is not None:
            return f"{reason}\n{system.tail(self.ctx.runtime_dir / 'qemu.log', 10)}"
        if not self.qmp_socket.exists():
            return None
        try:
            status = self.qmp().command("query-status")
        except (OSError, ConnectionError):
            return None
        if status.get("status") in ("internal-error", "guest-panicked", "shutdown"):
            return f"the VM stopped in state {status['status']!r} (accelerator: {self.accel.name})"
        return None

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "accel": self.accel.name,
            "accel_reason": self.accel.reason,
            "vcpu": self.vcpu,
            "memory_mib": self.memory,
            "vsock": derive.vsock_cid(self.ctx.spec.name) if self.vsock else "unavailable",
            "machine": self.ctx.spec.machine,
            "shares": self.share_transport,
            "boot": self.boot_mode,
        }

    def stop(self, timeout: float) -> None:
        if self.is_up():
            try:
                self.qmp().command("system_powerdown")
                assert self.process is not None
                self.process.wait(timeout)
            except Exception:
                with contextlib.suppress(Exception):
                    self.qmp().command("quit")
        self._close_qmp()
        self.finish(self.cgroup, 5.0)
        if _link_exists(self):
            self.ctx.lab.ip_batch(f"link delete {self.tap}")
        self.ctx.lab.unguard_port(self.tap)
        for path in (self.overlay, self.seed):
            path.unlink(missing_ok=True)


def restore_blocker(
    snapshot_mode: str, machine: str, share_transport: str, vsock: bool, shares: int
) -> str | None:
    """Why this VM boots cold instead of restoring a template; None if it can restore."""
    if snapshot_mode == "off":
        return "snapshot = 'off'"
    if machine != "q35":
        return f"machine {machine!r} has no PCIe slots to hot-plug shares into (q35 has)"
    if share_transport != "virtiofs":
        return "shares over 9p cannot be added to a restored VM (virtiofs can)"
    if vsock:
        return "a vsock device's CID is fixed at boot"
    if shares > snapshot.SPARE_ROOT_PORTS:
        return f"{shares} shares, a restored VM takes at most {snapshot.SPARE_ROOT_PORTS}"
    return None


def require_qemu_user() -> None:
    if not has_qemu_user():
        raise PrerequisiteError(
            f"the system user {QEMU_USER} (QEMU drops to it) does not exist",
            hint="run `wsfixture setup-host` (or make host)",
        )


def read_only_view(path: Path) -> list[str]:
    """A prefix for an argv that runs it in a private mount namespace where ``path`` is a
    read-only bind mount of itself (virtiofsd's own namespace inherits it)."""
    return private_view(path, path, "-o ro")


def private_view(source: Path, at: Path, options: str = "") -> list[str]:
    """A prefix for an argv that runs it in a private mount namespace where ``source`` is
    bind-mounted at ``at``."""
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", f'mount --bind {options} "$0" "$1" && shift && exec "$@"',
        str(source), str(at),
    ]  # fmt: skip


def _link_exists(backend: QemuBackend) -> bool:
    out = backend.ctx.lab.run(["ip", "-o", "link", "show", backend.tap], check=False)
    return bool(out.strip())


def tsc_khz() -> int:
    """The host TSC frequency in kHz; microvm guests under TCG hang calibrating without it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return int(float(line.split(":")[1]) * 1000)
    return 2_000_000
