"""The guest's operating system configuration: what every workspace image is made of and
how its tree is set up, in one place.

``image_setup`` says, as data, everything it does to a tree (the files it writes, the
links, the units it enables and masks, ...) and ``customise`` does exactly that; the digest
of that data is in each image's key (``fingerprint``), beside the build procedure's version
(``image.recipe.BUILDER_VERSION``). So a changed config, unit or script builds new images
instead of silently booting old ones, and a comment, a docstring or a reformat of this
code changes no key. A change to how the data is applied (the code below) bumps
``BUILDER_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import struct
from pathlib import Path
from typing import Any

from wsfixture.guest import seed
from wsfixture.host import system
from wsfixture.model.share_ids import CONTAINER_UID_BASE, CONTAINER_UID_COUNT

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
    # First-boot-after-an-upgrade work (ConditionNeedsUpdate), which every workspace's fresh
    # /etc would redo at each boot: dpkg's triggers already did it when the image was built.
    "ldconfig.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-done.service",
    # Debian 13: credentials for udev (none are passed), and drm for a screen there is not.
    "systemd-udev-load-credentials.service",
    "modprobe@drm.service",
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
# Drivers udev would load for q35's emulated hardware, which a workspace never uses: the
# SATA controller, the TCO watchdog, SMBus, the PC speaker, nested KVM, VMware's vsock, wifi
# regulation, PS/2 mouse. udev loaded them at every boot for nothing (37 modules loaded,
# 30 without them). Blacklisted, so udev skips them; `modprobe <name>` still loads one.
VM_UNUSED_MODULES = (
    "ahci", "iTCO_wdt", "i2c_i801", "lpc_ich", "pcspkr", "kvm_amd", "kvm_intel", "ccp",
    "vmw_vmci", "vmw_vsock_vmci_transport", "cfg80211", "psmouse", "serio_raw",
)  # fmt: skip
# udev's part of the initramfs (its hook, which copies udevd in, and the scripts that start
# and stop it), diverted away before udev is installed: the initramfs loads the modules
# above by name and devtmpfs makes /dev/vda, so udevd there only started, triggered every
# device and settled, ~2.3 s of a boot under TCG, before the real root's udev does it all
# again. Diversions: package upgrades in a layer keep them. Of udev's scripts one step is
# kept (``VM_INITRAMFS_DEV``): /dev moved into the root before init runs there.
# (Out of initramfs-tools' directories: it would copy a script beside the others whatever
# its name.)
VM_INITRAMFS_UDEV = (
    "/usr/share/initramfs-tools/hooks/udev",
    "/usr/share/initramfs-tools/scripts/init-top/udev",
    "/usr/share/initramfs-tools/scripts/init-bottom/udev",
)
VM_DIVERTED_DIR = "/usr/lib/wsfixture/initramfs-udev"
_DIVERSIONS = " && ".join(
    [f'mkdir -p "$1{VM_DIVERTED_DIR}"']
    + [
        f'chroot "$1" dpkg-divert --quiet --local --rename '
        f"--divert {VM_DIVERTED_DIR}/{path.split('/')[-2]} --add {path}"
        for path in VM_INITRAMFS_UDEV
    ]
)
VM_INITRAMFS_DEV = (
    "#!/bin/sh",
    '[ "$1" = prereqs ] && exit 0',
    'mount -n -o move /dev "${rootmnt:?}/dev" || mount -n --move /dev "${rootmnt}/dev"',
    "rm -rf /dev",
    'ln -s "${rootmnt}/dev" /dev',
)
_DEV_SCRIPT = "$1/etc/initramfs-tools/scripts/init-bottom/wsfixture-dev"
VM_ESSENTIAL_HOOK = (
    'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
    'printf "MODULES=list\\nCOMPRESS=zstd\\n" > "$1/etc/initramfs-tools/conf.d/wsfixture.conf" && '
    f'printf "{_MODULE_LINES}\\n" > "$1/usr/share/initramfs-tools/modules.d/wsfixture" && '
    f'mkdir -p "$(dirname "{_DEV_SCRIPT}")" && '
    f"printf '%s\\n' {' '.join(shlex.quote(line) for line in VM_INITRAMFS_DEV)} "
    f'> "{_DEV_SCRIPT}" && chmod 755 "{_DEV_SCRIPT}" && '
    f"{_DIVERSIONS}"
)
VM_FSTAB = "/dev/vda / ext4 rw,noatime,x-systemd.growfs 0 1\n"

STUB_RESOLV = "../run/systemd/resolve/stub-resolv.conf"  # resolved's stub, as the target


# systemd-nspawn's options for that namespace, over a tree already shifted into it.
NSPAWN_USER_NAMESPACE = (
    f"--private-users={CONTAINER_UID_BASE}:{CONTAINER_UID_COUNT}",
    "--private-users-ownership=off",
)


def shift_ownership(root: Path, offset: int = CONTAINER_UID_BASE) -> None:
    """Every file under ``root`` (and ``root``) owned ``offset`` higher: a tree made as host
    root becomes the tree a container's root owns. chown clears setuid and setgid bits and
    file capabilities, so they are put back; capabilities as belonging to the namespace's
    root (``ping`` needs cap_net_raw, and a host root's capabilities mean nothing there).
    A file with several names (a hard link: ``perl`` and ``perl5.40.1``) is shifted once:
    twice made it 2^31's, an id outside the namespace."""
    shifted: set[tuple[int, int]] = set()
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if (st.st_dev, st.st_ino) in shifted:
            continue
        shifted.add((st.st_dev, st.st_ino))
        link = stat.S_ISLNK(st.st_mode)
        caps = None if link else _file_caps(path)
        os.lchown(path, _shifted(st.st_uid, offset), _shifted(st.st_gid, offset))
        if not link and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            path.chmod(stat.S_IMODE(st.st_mode))
        if caps is not None:
            os.setxattr(path, CAPS_XATTR, _caps_owned_by(caps, offset))


def _shifted(number: int, offset: int) -> int:
    # Shifting back (a negative offset) leaves alone an id that is not in the range.
    return number + offset if number + offset >= 0 else number


CAPS_XATTR = "security.capability"


def _file_caps(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, CAPS_XATTR)
    except OSError:
        return None  # none set (ENODATA), or a filesystem without xattrs


def _caps_owned_by(caps: bytes, offset: int) -> bytes:
    """File capabilities (v2 or v3) as v3 whose root is uid ``offset`` (+ its old root)."""
    magic, *data = struct.unpack_from("<5I", caps)
    root = struct.unpack_from("<I", caps, 20)[0] if len(caps) >= 24 else 0
    return struct.pack("<6I", (magic & 0x00FFFFFF) | 0x03000000, *data, _shifted(root, offset))


SEED_SCRIPT_PATH = "usr/local/sbin/wsfixture-seed"
REMOVED = ("etc/ssh/ssh_host_*", "etc/hostname")  # globs: the build's keys, its hostname


def image_files(flavour: str) -> dict[str, str]:
    """Every file the guest configuration writes into a tree: its path -> its content."""
    files = {
        "etc/machine-id": "",  # each workspace gets its own at boot
        "etc/ssh/sshd_config.d/wsfixture.conf": SSHD_CONFIG,
        "etc/systemd/resolved.conf.d/wsfixture.conf": RESOLVED_CONFIG,
        "etc/systemd/journald.conf.d/wsfixture.conf": JOURNALD_CONFIG,
    }
    if flavour == "vm":  # a VM boots its own kernel: fstab, unused drivers off, the seed
        files |= {
            "etc/fstab": VM_FSTAB,
            "etc/modprobe.d/wsfixture.conf": "".join(
                f"blacklist {module}\n" for module in VM_UNUSED_MODULES
            ),
            SEED_SCRIPT_PATH: seed.SEED_SCRIPT,
            "etc/systemd/system/wsfixture-seed.service": seed.SEED_UNIT,
            "etc/systemd/system/wsfixture-shares.service": seed.SHARES_UNIT,
        }
    return files


def image_setup(flavour: str) -> dict[str, Any]:
    """What ``customise`` does to a tree of ``flavour``, as data (hashed into its key)."""
    vm = flavour == "vm"
    links = {"etc/resolv.conf": STUB_RESOLV}
    if not vm:  # a /dev/null link in system-generators masks a generator
        links |= {f"etc/systemd/system-generators/{name}": "/dev/null"
                  for name in CONTAINER_MASKED_GENERATORS}  # fmt: skip
    seed_units = ("wsfixture-seed.service", "wsfixture-shares.service")
    masked = MASKED_UNITS + (("serial-getty@ttyS0.service",) if vm else CONTAINER_MASKED_UNITS)
    return {
        "removed": REMOVED,
        "files": image_files(flavour),
        "executable": (SEED_SCRIPT_PATH,) if vm else (),
        "links": links,
        "enabled": ENABLED_UNITS + (seed_units if vm else ()),
        "masked": masked,
        "sshd_pam_dropped": SSHD_PAM_DROPPED,
        "ping_caps": PING_CAPS.hex(),
        "essential_hook": VM_ESSENTIAL_HOOK if vm else "",
        "containers_ids": (CONTAINER_UID_BASE, CONTAINER_UID_COUNT),
    }


def fingerprint(flavour: str) -> str:
    """The digest of what the guest configuration does to an image of ``flavour``."""
    blob = json.dumps(image_setup(flavour), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def customise(root: Path, flavour: str) -> None:
    """Do ``image_setup(flavour)`` to the tree ``root``: what every workspace of the kind
    shares (no host keys, a volatile journal, our units and configs)."""
    setup = image_setup(flavour)
    for pattern in setup["removed"]:
        for path in root.glob(pattern):
            path.unlink()
    for relative, text in setup["files"].items():
        drop_in(root / relative, text)
    for relative in setup["executable"]:
        (root / relative).chmod(0o755)
    for relative, target in setup["links"].items():
        link = root / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    _trim_sshd_pam(root / "etc/pam.d/sshd", setup["sshd_pam_dropped"])
    systemctl = ["systemctl", f"--root={root}"]
    system.run([*systemctl, "enable", *setup["enabled"]])
    system.run([*systemctl, "mask", *setup["masked"]])
    _give_ping_raw_sockets(root, bytes.fromhex(setup["ping_caps"]))


# cap_net_raw, effective (VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE; bit 13 permitted).
PING_CAPS = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


def _give_ping_raw_sockets(root: Path, caps: bytes) -> None:
    """Debian 13's ping has no file capability: it relies on the ping_group_range sysctl,
    set by linux-sysctl-defaults (a recommendation we do not install) through systemd-sysctl,
    which cannot write a container's read-only /proc/sys anyway. Without either, ping fails;
    it gets cap_net_raw as Debian 12 gave it, in both flavours (a container's is shifted to
    its root with the rest of the tree)."""
    ping = root / "usr/bin/ping"
    if ping.is_file() and not ping.is_symlink() and _file_caps(ping) is None:
        os.setxattr(ping, CAPS_XATTR, caps)


# Per-login PAM steps a workspace does not need: the motd scripts and mail check cost ~20 ms
# per connection, and pam_nologin refuses the user until systemd-user-sessions has run,
# which makes the first logins after sshd starts fail for nothing.
SSHD_PAM_DROPPED = ("pam_motd.so", "pam_mail.so", "pam_nologin.so")


def _trim_sshd_pam(path: Path, dropped: tuple[str, ...]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not any(module in line for module in dropped)]
    path.write_text("".join(kept))


def drop_in(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
