"""The base root filesystem: Debian bookworm from Debian's packages, built once, cached.

The cache key is content-addressed: suite, flavour, sorted package set and the builder
version. A hit costs a stat. A miss builds with ``mmdebstrap`` under a file lock, so many
processes (pytest-xdist workers) asking at once build it once. The tree is built under a
temporary name and renamed into place, so a crash never leaves a half image that looks done.

The image carries no SSH host keys and no machine-id: each workspace gets its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from wsfixture import system
from wsfixture.errors import StartError

BUILDER_VERSION = "9"
SUITE = "bookworm"
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "dbus",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "kmod",
    "opendoas",
    "python3",
    "procps",
)
VM_PACKAGES = ("linux-image-amd64", "initramfs-tools", "zstd")
# Units a throwaway workspace never needs; masking them shortens boot and shutdown.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
    "systemd-networkd-wait-online.service",
    "systemd-pstore.service",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-network-generator.service",
    "systemd-journal-flush.service",
    "remote-fs.target",
)
# Containers also go without logind (nothing asks for seats or sessions there). VMs keep it:
# it turns QMP's ACPI power button into an orderly poweroff.
CONTAINER_MASKED_UNITS = (
    "systemd-logind.service",
    "dev-hugepages.mount",
    "systemd-sysusers.service",
)
# Generators PID 1 runs at every boot (each an exec that loads libsystemd-shared) which have
# nothing to find in a container: disks, crypt/verity/integrity devices, hibernation,
# consoles, kernel command line. Masking them cut a container boot's CPU by ~40 ms of ~360.
# fstab, sysv and rc-local stay: a user's fstab, init script or rc.local still works.
CONTAINER_MASKED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-debug-generator", "systemd-getty-generator",
    "systemd-gpt-auto-generator", "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator", "systemd-run-generator",
    "systemd-system-update-generator", "systemd-veritysetup-generator",
)  # fmt: skip
ENABLED_UNITS = ("systemd-networkd.service", "systemd-resolved.service", "ssh.service")
SSHD_CONFIG = """\
# wsfixture: per-workspace host key, keys only, no passwords.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
"""
RESOLVED_CONFIG = """\
# wsfixture: the lab DNS on the gateway answers workspace names, single labels included.
[Resolve]
LLMNR=no
MulticastDNS=no
ResolveUnicastSingleLabel=yes
"""
JOURNALD_CONFIG = "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n"

# VM images: a small initramfs with exactly the modules a guest needs (the stock one lacks
# virtiofs, 9p and fw_cfg), written before the kernel is installed so it is built once.
VM_INITRAMFS_MODULES = (
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "ext4", "virtiofs",
    "9p", "9pnet_virtio", "qemu_fw_cfg",
)  # fmt: skip
_MODULE_LINES = "\\n".join(VM_INITRAMFS_MODULES)
VM_ESSENTIAL_HOOK = (
    'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
    'printf "MODULES=list\\nCOMPRESS=zstd\\n" > "$1/etc/initramfs-tools/conf.d/wsfixture.conf" && '
    f'printf "{_MODULE_LINES}\\n" > "$1/usr/share/initramfs-tools/modules.d/wsfixture"'
)
# Per-VM identity arrives as a tar through fw_cfg; this unit unpacks it before the network
# and sshd start, so nothing depends on udev noticing a disk in time.
SEED_FW_CFG = "opt/wsfixture/seed"
SEED_SCRIPT = f"""\
#!/bin/sh
# wsfixture: install this VM's identity (hostname, network, keys, user) from fw_cfg.
set -eu
modprobe qemu_fw_cfg
seed=/sys/firmware/qemu_fw_cfg/by_name/{SEED_FW_CFG}/raw
tar -x --numeric-owner -p -f "$seed" -C /
hostname "$(cat /etc/hostname)"
# Shares: one "tag target options" line each.
if [ -f /etc/wsfixture/mounts ]; then
  while read -r tag target fstype options; do
    mkdir -p "$target"
    mount -t "$fstype" -o "$options" "$tag" "$target"
  done < /etc/wsfixture/mounts
fi
"""
SEED_UNIT = """\
[Unit]
Description=wsfixture: install this VM's identity from fw_cfg
DefaultDependencies=no
After=systemd-remount-fs.service local-fs.target
Before=systemd-networkd.service ssh.service network-pre.target systemd-user-sessions.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/wsfixture-seed

[Install]
WantedBy=sysinit.target
"""
VM_FSTAB = "/dev/vda / ext4 rw,noatime,x-systemd.growfs 0 1\n"
EXT4_SIZE = "3G"  # sparse; the per-VM qcow2 overlay and growfs take it to the spec's size

VM_DISK_NAME = f"root-v{BUILDER_VERSION}.ext4"

Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    print(f"wsfixture: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into a base image."""

    packages: tuple[str, ...] = ()
    flavour: str = "container"  # "vm" adds a kernel and an initramfs
    suite: str = SUITE

    @classmethod
    def for_packages(cls, extra: Iterable[str], flavour: str = "container") -> ImageRecipe:
        wanted = {*BASE_PACKAGES, *extra}
        if flavour == "vm":
            wanted |= set(VM_PACKAGES)
        return cls(tuple(sorted(wanted)), flavour)

    @property
    def key(self) -> str:
        blob = json.dumps([BUILDER_VERSION, self.suite, self.flavour, list(self.packages)])
        return f"{self.suite}-{self.flavour}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Image:
    recipe: ImageRecipe
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def disk(self) -> Path:
        """The VM root disk (ext4), versioned by the image key: overlays record this path."""
        return self.dir / VM_DISK_NAME

    def kernel(self) -> tuple[Path, Path]:
        """(vmlinuz, initrd) of the image's own kernel, so its modules are inside the guest."""
        kernels = sorted((self.root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise StartError("base image", f"no kernel in {self.root / 'boot'}")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        return kernels[-1], self.root / "boot" / f"initrd.img-{version}"

    @property
    def ready(self) -> bool:
        return (self.dir / "ready").exists()

    def verify(self) -> None:
        """A cached image must still hold what every boot needs; say what is missing."""
        needed = ["etc/passwd", "usr/lib/systemd/systemd", "usr/sbin/sshd"]
        missing = [path for path in needed if not (self.root / path).exists()]
        if self.recipe.flavour == "vm" and not self.disk.exists():
            missing.append(self.disk.name)
        if missing:
            raise StartError(
                "base image",
                f"the cached image {self.dir} is corrupt: missing {', '.join(missing)}; "
                f"remove that directory and it is rebuilt on next use",
            )


def image_dir(recipe: ImageRecipe, cache_dir: Path | None = None) -> Path:
    return (cache_dir or system.CACHE_DIR) / "images" / recipe.key


def ensure_image(
    recipe: ImageRecipe, cache_dir: Path | None = None, progress: Progress | None = None
) -> Image:
    """The cached image for ``recipe``, built first if it is not there."""
    image = Image(recipe, image_dir(recipe, cache_dir))
    if image.ready:
        image.verify()
        return image
    system.require_root()
    system.require_tool("mmdebstrap")
    image.dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(image.dir) + ".lock"):
        if not image.ready:  # another process may have built it while we waited
            _build(image, progress or _stderr_progress)
    return image


def _build(image: Image, progress: Progress) -> None:
    started = time.monotonic()
    staging = image.dir.with_name(f"{image.dir.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(image.dir, ignore_errors=True)
    staging.mkdir(parents=True)
    log = staging / "build.log"
    progress(f"building base image {image.recipe.key} ({len(image.recipe.packages)} packages)")
    argv = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=root",
        f"--include={','.join(image.recipe.packages)}",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        image.recipe.suite,
        str(staging / "root"),
    ]
    if image.recipe.flavour == "vm":
        argv.insert(-2, f"--essential-hook={VM_ESSENTIAL_HOOK}")
    # An explicit mirror for hosts whose apt reaches Debian through another address.
    if mirror := os.environ.get("WSFIXTURE_MIRROR"):
        argv.append(mirror)
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            if line.startswith("I: "):
                progress(f"[{time.monotonic() - started:5.1f}s] {line[3:].strip()}")
        rc = proc.wait()
    if rc != 0:
        tail = system.tail(log, 30)
        shutil.rmtree(staging, ignore_errors=True)
        raise StartError("base image", f"mmdebstrap exited {rc}", tail)
    customise(staging / "root", image.recipe.flavour)
    if image.recipe.flavour == "vm":
        customise_vm(staging / "root")
        progress("building the VM root disk (ext4)")
        _make_ext4(staging / "root", staging / VM_DISK_NAME)
    (staging / "recipe.json").write_text(json.dumps(image.recipe.__dict__, indent=1))
    (staging / "ready").write_text(f"{time.time()}\n")
    staging.rename(image.dir)
    progress(f"base image ready in {time.monotonic() - started:.1f}s: {image.dir}")


def customise(root: Path, flavour: str) -> None:
    """What every workspace shares: no host keys, volatile journal, our units and configs."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    _drop_in(root / "etc/ssh/sshd_config.d/wsfixture.conf", SSHD_CONFIG)
    _drop_in(root / "etc/systemd/resolved.conf.d/wsfixture.conf", RESOLVED_CONFIG)
    _drop_in(root / "etc/systemd/journald.conf.d/wsfixture.conf", JOURNALD_CONFIG)
    _trim_sshd_pam(root / "etc/pam.d/sshd")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    systemctl = ["systemctl", f"--root={root}"]
    system.run([*systemctl, "enable", *ENABLED_UNITS])
    masked = MASKED_UNITS + (CONTAINER_MASKED_UNITS if flavour == "container" else ())
    system.run([*systemctl, "mask", *masked])
    if flavour == "container":
        generators = root / "etc/systemd/system-generators"
        generators.mkdir(parents=True, exist_ok=True)
        for name in CONTAINER_MASKED_GENERATORS:  # a /dev/null link here masks one
            (generators / name).symlink_to("/dev/null")


def customise_vm(root: Path) -> None:
    """A VM boots its own kernel: fstab, the seed unit, serial console login off."""
    (root / "etc/fstab").write_text(VM_FSTAB)
    script = root / "usr/local/sbin/wsfixture-seed"
    _drop_in(script, SEED_SCRIPT)
    script.chmod(0o755)
    _drop_in(root / "etc/systemd/system/wsfixture-seed.service", SEED_UNIT)
    system.run(["systemctl", f"--root={root}", "enable", "wsfixture-seed.service"])
    system.run(["systemctl", f"--root={root}", "mask", "serial-getty@ttyS0.service"])


def _make_ext4(root: Path, target: Path) -> None:
    system.require_tool("mkfs.ext4")
    system.run(["mkfs.ext4", "-q", "-F", "-L", "wsroot", "-d", str(root), str(target), EXT4_SIZE])
    target.chmod(0o444)  # the cached base is never written; overlays take the writes


# Per-login PAM steps a workspace does not need: the motd scripts and mail check cost ~20 ms
# per connection, and pam_nologin refuses the user until systemd-user-sessions has run,
# which makes the first logins after sshd starts fail for nothing.
SSHD_PAM_DROPPED = ("pam_motd.so", "pam_mail.so", "pam_nologin.so")


def _trim_sshd_pam(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not any(module in line for module in SSHD_PAM_DROPPED)]
    path.write_text("".join(kept))


def _drop_in(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
