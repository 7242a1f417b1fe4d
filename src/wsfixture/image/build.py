"""The base root filesystem: Debian bookworm from Debian's packages, built once, cached.

The cache key is content-addressed: suite, flavour, sorted package set and the builder
version. A hit costs a stat. A miss builds under a file lock, so many processes
(pytest-xdist workers) asking at once build it once. The tree is built under a temporary
name and renamed into place, so a crash never leaves a half image that looks done.

Two kinds: the base of each flavour (the packages every workspace has), bootstrapped by
``mmdebstrap``; and, for a workspace that wants more packages, a layer: apt installs them
into an overlay over the base, and the overlay's upper directory is kept. Workspaces boot
the layer over the base (overlayfs lower directories). A new package set then costs an apt
install (seconds) instead of a bootstrap (half a minute).

The image carries no SSH host keys and no machine-id: each workspace gets its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from wsfixture.errors import ImageBuildError
from wsfixture.host import ledger, settings, system

BUILDER_VERSION = "11"
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
    # Every user exists from the build on; in a VM it sat on sshd's path, 0.46 s under TCG.
    "systemd-sysusers.service",
)
# Containers also go without logind (nothing asks for seats or sessions there). VMs keep it:
# it turns QMP's ACPI power button into an orderly poweroff.
CONTAINER_MASKED_UNITS = (
    "systemd-logind.service",
    "dev-hugepages.mount",
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
# Per-VM identity arrives as a tar through fw_cfg; one unit unpacks it before the network
# and sshd start, so nothing depends on udev noticing a disk in time. Another mounts the
# shares, before sshd but beside networkd's start: under TCG each took a second or two on
# the way to sshd when one unit did both.
SEED_FW_CFG = "opt/wsfixture/seed"
SEED_SCRIPT = f"""\
#!/bin/sh
# wsfixture: install this VM's identity (hostname, network, keys, user) from fw_cfg
# ("identity"), or mount its shares ("shares").
set -eu
if [ "$1" = identity ]; then
  modprobe qemu_fw_cfg
  seed=/sys/firmware/qemu_fw_cfg/by_name/{SEED_FW_CFG}/raw
  tar -x --numeric-owner -p -f "$seed" -C /
  hostname "$(cat /etc/hostname)"
elif [ -f /etc/wsfixture/mounts ]; then
  # One "tag target fstype options" line each.
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
ExecStart=/usr/local/sbin/wsfixture-seed identity

[Install]
WantedBy=sysinit.target
"""
SHARES_UNIT = """\
[Unit]
Description=wsfixture: mount this VM's shares
DefaultDependencies=no
After=wsfixture-seed.service local-fs.target
Requires=wsfixture-seed.service
Before=ssh.service systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/wsfixture-seed shares

[Install]
WantedBy=sysinit.target
"""
VM_FSTAB = "/dev/vda / ext4 rw,noatime,x-systemd.growfs 0 1\n"
EXT4_SIZE = "3G"  # sparse; the per-VM qcow2 overlay and growfs take it to the spec's size

VM_DISK_NAME = f"root-v{BUILDER_VERSION}.ext4"
USED_STAMP = "used"  # touched on every use
STUB_RESOLV = "../run/systemd/resolve/stub-resolv.conf"  # resolved's stub, as the target
BASE_STAMP = "base-ready"  # a layer's copy of its base's "ready" stamp

Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    print(f"wsfixture: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into an image: every package in it, and the base it is layered on (none
    for a base, which is bootstrapped)."""

    packages: tuple[str, ...] = ()
    flavour: str = "container"  # "vm" adds a kernel and an initramfs
    suite: str = SUITE
    base: ImageRecipe | None = None

    @classmethod
    def base_of(cls, flavour: str = "container") -> ImageRecipe:
        wanted = {*BASE_PACKAGES, *(VM_PACKAGES if flavour == "vm" else ())}
        return cls(tuple(sorted(wanted)), flavour)

    @classmethod
    def for_packages(cls, extra: Iterable[str], flavour: str = "container") -> ImageRecipe:
        base = cls.base_of(flavour)
        wanted = {*base.packages, *extra}
        if len(wanted) == len(base.packages):
            return base
        return cls(tuple(sorted(wanted)), flavour, base=base)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecipe:
        """The recipe as ``recipe.json`` holds it."""
        base = cls.from_dict(data["base"]) if data.get("base") else None
        return cls(tuple(data["packages"]), data["flavour"], data["suite"], base)

    @property
    def added(self) -> tuple[str, ...]:
        """What the layer installs over its base."""
        below = set(self.base.packages) if self.base is not None else set(self.packages)
        return tuple(p for p in self.packages if p not in below)

    @property
    def label(self) -> str:
        """The image for people: its key, and what it holds beyond its flavour's base."""
        if self.base is None:
            return f"{self.key} (the {self.flavour} base)"
        return f"{self.key} ({', '.join(self.added)} over the {self.flavour} base)"

    @property
    def key(self) -> str:
        parts: list[object] = [BUILDER_VERSION, self.suite, self.flavour, list(self.packages)]
        if self.base is not None:
            parts.append(self.base.key)
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
        return f"{self.suite}-{self.flavour}-{digest}"


@dataclass(frozen=True)
class Image:
    recipe: ImageRecipe
    dir: Path

    @property
    def root(self) -> Path:
        """A base image's tree (a layered image keeps only its ``layer`` here)."""
        return self.dir / "root"

    @property
    def base(self) -> Image | None:
        if self.recipe.base is None:
            return None
        return Image(self.recipe.base, self.dir.with_name(self.recipe.base.key))

    @property
    def layers(self) -> list[Path]:
        """The image's trees, top first: the overlayfs lower directories, in that order."""
        if self.base is None:
            return [self.root]
        return [self.dir / "layer", *self.base.layers]

    def path(self, relative: str) -> Path:
        """Where ``relative`` is in the merged tree: the topmost layer that has it.
        FileNotFoundError when no layer has it, or a layer deleted it."""
        for layer in self.layers:
            candidate = layer / relative
            if _is_whiteout(candidate):
                break  # deleted by this layer, whatever the ones below hold
            if candidate.is_symlink() or candidate.exists():
                return candidate
        raise FileNotFoundError(errno.ENOENT, "not in the image", f"{self.dir}:/{relative}")

    def has(self, relative: str) -> bool:
        try:
            self.path(relative)
        except FileNotFoundError:
            return False
        return True

    @property
    def disk(self) -> Path:
        """The VM root disk (ext4), versioned by the image key: overlays record this path."""
        return self.dir / VM_DISK_NAME

    def kernel(self) -> tuple[Path, Path]:
        """(vmlinuz, initrd) of the image's own kernel, so its modules are inside the guest."""
        kernels = sorted(
            {p.name for layer in self.layers for p in (layer / "boot").glob("vmlinuz-*")}
        )
        version = kernels[-1].removeprefix("vmlinuz-") if kernels else "(none)"
        wanted = (f"boot/vmlinuz-{version}", f"boot/initrd.img-{version}")
        if not all(self.has(path) for path in wanted):
            raise ImageBuildError(
                self.recipe.label, f"no kernel and initrd {version} in {self.dir}/boot"
            )
        return self.path(wanted[0]), self.path(wanted[1])

    @property
    def ready(self) -> bool:
        """Built, and (a layer) over the very base build it was installed on: a layer over
        a rebuilt base would hide the new base's dpkg database behind its own."""
        if not (self.dir / "ready").exists():
            return False
        if self.base is None:
            return True
        try:
            return (self.dir / BASE_STAMP).read_text() == (self.base.dir / "ready").read_text()
        except OSError:
            return False

    def verify(self) -> None:
        """A cached image must still hold what every boot needs; say what is missing."""
        needed = ["etc/passwd", "usr/lib/systemd/systemd", "usr/sbin/sshd"]
        missing = [path for path in needed if not self.has(path)]
        if self.recipe.flavour == "vm" and not self.disk.exists():
            missing.append(self.disk.name)
        if self.base is not None and not (self.dir / "layer").is_dir():
            missing.append("layer")
        if missing:
            raise ImageBuildError(
                self.recipe.label,
                f"the cached image {self.dir} is corrupt: missing {', '.join(missing)}; "
                f"remove that directory and it is rebuilt on next use",
            )


def image_dir(recipe: ImageRecipe, cache_dir: Path | None = None) -> Path:
    return (cache_dir or settings.current().cache_dir) / "images" / recipe.key


def ensure_image(
    recipe: ImageRecipe, cache_dir: Path | None = None, progress: Progress | None = None
) -> Image:
    """The cached image for ``recipe`` (and its base), built first if it is not there."""
    if recipe.base is not None:
        ensure_image(recipe.base, cache_dir, progress)
    image = Image(recipe, image_dir(recipe, cache_dir))
    if image.ready:
        image.verify()
    else:
        system.require_root()
        system.require_tool("mmdebstrap" if recipe.base is None else "systemd-nspawn")
        image.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(image.dir) + ".lock"):
            if not image.ready:  # another process may have built it while we waited
                _build(image, progress or _stderr_progress)
    with contextlib.suppress(OSError):  # last use, for `wsfixture images --prune`
        (image.dir / USED_STAMP).touch()
    return image


def _build(image: Image, progress: Progress) -> None:
    started = time.monotonic()
    staging = image.dir.with_name(f"{image.dir.name}.building-{os.getpid()}")
    system.remove_tree(staging)
    system.remove_tree(image.dir)
    staging.mkdir(parents=True)
    try:
        if image.recipe.base is None:
            _bootstrap(image, staging, progress, started)
        else:
            _install_layer(image, staging, progress)
    except BaseException:
        system.remove_tree(staging)  # also detaches a layer's overlay if it is still up
        raise
    recipe = dataclasses.asdict(image.recipe)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=1))
    (staging / "ready").write_text(f"{time.time()}\n")
    staging.rename(image.dir)
    progress(f"image ready in {time.monotonic() - started:.1f}s: {image.dir}")


def _bootstrap(image: Image, staging: Path, progress: Progress, started: float) -> None:
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
    if mirror := settings.current().mirror:
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
        raise ImageBuildError(image.recipe.label, f"mmdebstrap exited {rc}", system.tail(log, 30))
    customise(staging / "root", image.recipe.flavour)
    if image.recipe.flavour == "vm":
        customise_vm(staging / "root")
        progress("building the VM root disk (ext4)")
        _make_ext4(staging / "root", staging / VM_DISK_NAME)


# Run by apt inside the overlay. No daemon starts during the install (policy-rc.d), and the
# package lists go afterwards, as mmdebstrap leaves the base.
LAYER_SCRIPT = """\
set -e
apt-get update -q
apt-get install -y -q --no-install-recommends {packages}
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
POLICY_RC_D = "usr/sbin/policy-rc.d"


def _install_layer(image: Image, staging: Path, progress: Progress) -> None:
    """apt-get install the added packages into an overlay over the base; keep its upper."""
    assert image.base is not None
    added = image.recipe.added
    progress(f"building layer {image.recipe.key}: {' '.join(added)} over {image.base.dir.name}")
    layer, work, merged = staging / "layer", staging / "work", staging / "merged"
    for directory in (layer, work, merged):
        directory.mkdir()
    (staging / BASE_STAMP).write_text((image.base.dir / "ready").read_text())
    lower = ":".join(str(path) for path in image.base.layers)
    system.run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={layer},workdir={work}", str(merged)])  # fmt: skip
    try:
        _drop_in(merged / POLICY_RC_D, "#!/bin/sh\nexit 101\n")
        (merged / POLICY_RC_D).chmod(0o755)
        script = LAYER_SCRIPT.format(packages=" ".join(shlex.quote(p) for p in added))
        _run_in_tree(
            merged,
            script,
            staging / "build.log",
            f"installing {', '.join(added)}",
            image.recipe.label,
        )
        (merged / POLICY_RC_D).unlink()
        # nspawn put the host's resolv.conf there for apt; the workspace uses resolved's.
        resolv = merged / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.symlink_to(STUB_RESOLV)
        if image.recipe.flavour == "vm":
            progress("building the VM root disk (ext4)")
            _make_ext4(merged, staging / VM_DISK_NAME)
    finally:
        system.run(["umount", str(merged)])
    system.remove_tree(work)
    merged.rmdir()


def _run_in_tree(tree: Path, script: str, log: Path, what: str, label: str) -> None:
    """Run ``script`` with ``tree`` as its root (systemd-nspawn, the host's network for
    apt), in a cgroup of its own that is emptied afterwards."""
    cgroup = settings.current().cgroup_root / f"image-build-{os.getpid()}-{time.monotonic_ns()}"
    cgroup.mkdir(parents=True)
    argv = [
        "systemd-nspawn", "--quiet", f"--directory={tree}", "--register=no", "--keep-unit",
        "--as-pid2", "--resolv-conf=replace-host", "--timezone=off", "--link-journal=no",
        "--setenv=DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script,
    ]  # fmt: skip
    try:
        with open(log, "ab") as output:
            rc = subprocess.run(
                system.in_cgroup(cgroup, argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                check=False,
            ).returncode
    finally:
        ledger.kill_cgroup(str(cgroup))
    if rc != 0:
        raise ImageBuildError(label, f"{what} failed (exit {rc})", system.tail(log, 30))


def _is_whiteout(path: Path) -> bool:
    """overlayfs marks a file deleted by an upper layer with a 0:0 character device."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


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
    resolv.symlink_to(STUB_RESOLV)
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
    _drop_in(root / "etc/systemd/system/wsfixture-shares.service", SHARES_UNIT)
    system.run(["systemctl", f"--root={root}", "enable",
                "wsfixture-seed.service", "wsfixture-shares.service"])  # fmt: skip
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
