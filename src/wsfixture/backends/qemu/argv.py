"""QEMU's command line, pure: what a boot is, the sockets it makes, the root disk, the
devices a template and its clones declare alike, the sandbox flags and the kernel's
command line. Nothing here touches the host: the backend passes in what it found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsfixture.guest import restore, seed
from wsfixture.image.templates import SPARE_ROOT_PORTS

# The sockets of a boot, in its ``Boot.sockets`` directory.
QMP_SOCKET = "qmp.sock"
SERIAL_SOCKET = "serial.sock"
IDENTITY_SOCKET = "identity.sock"
# Every template's NIC: a clone takes its own MAC from its identity. Locally administered.
TEMPLATE_MAC = "52:54:00:00:00:01"
DISK_FDSET = 1
SHARE_TRANSPORT = "virtiofs"  # 9p would serve rw shares as host root: refused
TCG_TB_SIZE_MIB = 128  # translation cache; QEMU's default (1 GiB) inflates every VM's RSS
# elevateprivileges stays "allow": QEMU 7.2 switches to -runas's user after installing the
# filter, and with "deny" (or "children") the switch is refused and QEMU silently stays
# root (measured). After the switch every uid is the unprivileged user's and no capability
# is left, so no set*id call can raise it again. spawn=deny: no fork or exec at all.
SANDBOX = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"


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
    disk_fds: tuple[int, ...] = ()  # the disk as an fd set (``disk.descriptors``)
    # A restorable boot's memory, a memfd by its /proc path: a template's (whose pages are
    # then kept in ``templates.Template.ram``), or a clone's copy of those. None: one QEMU
    # makes itself.
    ram: Path | None = None


@dataclass(frozen=True)
class Machine:
    """What the command line says of the machine itself, after clamping to the host."""

    name: str
    machine: str  # "q35" or "microvm"
    accel: str  # "kvm" or "tcg"
    vcpu: int
    memory: int  # MiB


@dataclass(frozen=True)
class Extras:
    """What a cold-booted VM adds to the machine: its shares' daemons, a vsock device."""

    fs_sockets: dict[str, Path]  # share tag -> its virtiofsd's socket
    vsock_cid: int | None = None


def accel_argv(accel: str, vcpu: int) -> list[str]:
    """KVM with the host's CPU; else TCG, one host thread for all of a VM's vCPUs when it
    has several. QEMU 7.2's multi-threaded TCG (its default) crashed 2-vCPU Debian guests
    here, at boot and after (a kernel oops inside code the kernel was patching, a static
    key's jump, as another vCPU ran it: 2 of ~10 cold boots); one thread emulates the
    vCPUs in turn, which no cross-CPU patching can race. It costs a 2-vCPU cold boot
    23.5 s -> 36.7 s here (medians of 4)."""
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    thread = ",thread=single" if vcpu > 1 else ""
    return ["-accel", f"tcg,tb-size={TCG_TB_SIZE_MIB}{thread}"]


KERNEL_ARGS = (
    "console=ttyS0",
    "root=/dev/vda",
    "rw",
    "rootfstype=ext4",
    "panic=-1",  # a panic reboots, and -no-reboot turns that into an exit we see
    "systemd.show_status=1",
    "net.ifnames=0",
    # The guest kernel's CPU-bug mitigations (retpolines, barriers) guard guest processes
    # from each other, and the workspace user is root there by doas anyway; the host is
    # guarded by its own kernel and QEMU. Under TCG they only cost: a restore to ready took
    # ~1 s less without them (6.3 s -> 5.3 s, medians of 4-5 here).
    "mitigations=off",
)


def kernel_cmdline(machine_id: str, tsc_khz: int | None) -> str:
    """The guest kernel's command line; ``tsc_khz`` for a microvm (it has no calibration
    source of its own under TCG)."""
    args = [*KERNEL_ARGS, f"systemd.machine_id={machine_id}"]
    if tsc_khz is not None:
        args.append(f"tsc_early_khz={tsc_khz}")
    return " ".join(args)


def disk_argv(boot: Boot) -> list[str]:
    """The root disk's -drive: by name, or as the fd set ``boot.disk_fds``."""
    argv: list[str] = []
    source = str(boot.disk)
    if boot.disk_fds:
        for fd in boot.disk_fds:
            argv += ["-add-fd", f"fd={fd},set={DISK_FDSET}"]
        source = f"/dev/fdset/{DISK_FDSET}"
        # Image locks are taken per open file description, and the fd set's read-only
        # and read-write descriptors are two: once QEMU has moved between them (a
        # checkpoint makes this disk a backing file) it would refuse its own lock.
        # Nothing else opens these private files.
        source += ",file.locking=off"
    return [*argv, "-drive", f"file={source},if=none,id=root,format=qcow2,cache=writeback"]


def restorable_devices(identity_socket: Path) -> list[str]:
    """The devices a template and its clones declare alike, in the same order (PCI
    addresses follow it): the identity port, vmgenid (a clone's kernel reseeds its random
    generator when the generation id changes), and the spare root ports. QEMU connects to
    the identity socket: the host listens."""
    argv = [
        "-device", "virtio-serial-pci,id=vser",
        "-chardev", f"socket,id=identity,path={identity_socket}",
        "-device", f"virtserialport,bus=vser.0,chardev=identity,name={restore.PORT_NAME}",
        "-device", "vmgenid,guid=auto",
    ]  # fmt: skip
    for port in range(SPARE_ROOT_PORTS):
        argv += ["-device", f"pcie-root-port,id=rp{port},chassis={port + 1},slot={port + 1}"]
    return argv


def qemu_argv(
    qemu: str, vm: Machine, boot: Boot, console_log: Path, extras: Extras, runas: str
) -> list[str]:
    """QEMU's command line. A restorable boot (a template, and its clones) declares the
    same devices on both sides of a save, and no shares: they are hot-plugged."""
    microvm = vm.machine == "microvm"
    dev = "device" if microvm else "pci"  # virtio-mmio vs virtio-pci device names
    sockets = boot.sockets
    argv = [
        qemu,
        "-name", f"{vm.name},debug-threads=on",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    ]  # fmt: skip
    if microvm:
        argv += ["-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
                 "-global", "virtio-mmio.force-legacy=false"]  # fmt: skip
    else:
        argv += ["-M", "q35"]
    argv += accel_argv(vm.accel, vm.vcpu)
    argv += [
        "-smp", str(vm.vcpu), "-m", f"{vm.memory}M",
        # virtiofs needs guest memory that virtiofsd can map: shared
        "-object", memory_backend(vm.memory, boot.ram),
        "-numa", "node,memdev=mem",
        "-kernel", str(boot.kernel), "-initrd", str(boot.initrd), "-append", boot.cmdline,
        *disk_argv(boot),
        "-device", f"virtio-blk-{dev},drive=root",
        "-netdev", f"tap,id=net0,ifname={boot.tap},script=no,downscript=no",
        "-device", f"virtio-net-{dev},netdev=net0,mac={boot.mac}",
        "-device", f"virtio-rng-{dev}",
        "-fw_cfg", f"name={seed.SEED_FW_CFG},file={boot.seed}",
        "-chardev", f"socket,id=ser0,path={sockets / SERIAL_SOCKET},server=on,wait=off,"
        f"logfile={boot.console_log or console_log},logappend=on",  # logcap cuts it
        "-serial", "chardev:ser0",
        "-qmp", f"unix:{sockets / QMP_SOCKET},server=on,wait=off",
        "-sandbox", SANDBOX,
        "-runas", runas,
    ]  # fmt: skip
    if boot.restorable:
        argv += restorable_devices(sockets / IDENTITY_SOCKET)
        if boot.incoming:
            argv += ["-incoming", "defer"]
        return argv
    for tag, fs_socket in extras.fs_sockets.items():
        argv += [
            "-chardev", f"socket,id=fs-{tag},path={fs_socket}",
            "-device", f"vhost-user-fs-{dev},chardev=fs-{tag},tag={tag},queue-size=1024",
        ]  # fmt: skip
    if extras.vsock_cid is not None:
        argv += ["-device", f"vhost-vsock-{dev},guest-cid={extras.vsock_cid}"]
    return argv


def memory_backend(mib: int, ram: Path | None) -> str:
    """The guest memory's backend: a file, shared (what a template's state leaves out
    and a clone starts from), or an anonymous one."""
    if ram is None:
        return f"memory-backend-memfd,id=mem,size={mib}M,share=on"
    return f"memory-backend-file,id=mem,size={mib}M,mem-path={ram},share=on"


def private_view(source: Path, at: Path, options: str = "") -> list[str]:
    """A prefix for an argv that runs it in a private mount namespace where ``source`` is
    bind-mounted at ``at``."""
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", f'mount --bind {options} "$0" "$1" && shift && exec "$@"',
        str(source), str(at),
    ]  # fmt: skip


def read_only_view(path: Path) -> list[str]:
    """A prefix for an argv that runs it in a private mount namespace where ``path`` is a
    read-only bind mount of itself (virtiofsd's own namespace inherits it)."""
    return private_view(path, path, "-o ro")


VIRTIOFSD_OPTIONS = ("-o", "cache=auto", "-o", "xattr")
# Where a rw share's daemon, not host root in its user namespace, finds the share: a
# directory every uid may walk to, in its own mount namespace.
SHARE_VIEW = Path("/mnt")


def read_only_virtiofsd(virtiofsd: str, source: Path, socket_path: Path) -> list[str]:
    """A read-only share's daemon: QEMU 7.2's virtiofsd has no read-only switch, and the
    guest's root could remount a share rw, so it serves a read-only view of it."""
    return [*read_only_view(source), virtiofsd, f"--socket-path={socket_path}",
            "-o", f"source={source}", *VIRTIOFSD_OPTIONS]  # fmt: skip


def mapped_virtiofsd(
    nsenter: str, virtiofsd: str, source: Path, userns_fd: int, listener_fd: int
) -> list[str]:
    """A rw share's daemon: entered into the user namespace of the share's map (an fd of
    ours), listening on an fd of ours, serving the share bound at ``SHARE_VIEW`` in a mount
    namespace of its own, without the capabilities to make device nodes or file caps."""
    return [
        *private_view(source, SHARE_VIEW), nsenter, f"--user=/proc/self/fd/{userns_fd}", "--",
        virtiofsd, f"--fd={listener_fd}", "-o", f"source={SHARE_VIEW}", *VIRTIOFSD_OPTIONS,
        "-o", "posix_acl", "-o", "modcaps=-mknod:-setfcap",
    ]  # fmt: skip
