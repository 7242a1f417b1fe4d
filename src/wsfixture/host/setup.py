"""What a host needs, in one place: the Debian packages (with the tools they bring) and the
system user QEMU drops to; and installing them (`wsfixture setup-host`, `make host`).

Standard library only: `make host` runs it from the checkout before any virtualenv exists
(`PYTHONPATH=src python3 -m wsfixture.host.setup`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    package: str  # Debian's
    tools: tuple[str, ...]  # what wsfixture calls from it
    why: str
    # False: only the checkout's own Makefile and test suite need it; `setup-host` still
    # installs it, `doctor` reports it as optional.
    required: bool = True


NEEDS = (
    Need("python3-venv", (), "virtualenvs (make's .venv, the README's pip install)"),
    Need("systemd-container", ("systemd-nspawn",), "container workspaces"),
    Need("mmdebstrap", ("mmdebstrap",), "base images from Debian's packages"),
    Need("dnsmasq-base", ("dnsmasq",), "DNS for a lab"),
    Need("openssh-client", ("ssh", "ssh-keygen"), "keys, and `wsfixture ssh`"),
    Need("iproute2", ("ip",), "network namespaces, bridges, veth, TAP"),
    Need("util-linux", ("nsenter", "unshare", "setpriv"), "entering a lab's namespace"),
    Need("slirp4netns", ("slirp4netns",), "internet for a lab: the userspace uplink"),
    Need("nftables", ("nft",), "anti-spoofing on the lab bridge; NAT in a lab with internet"),
    Need("iptables", ("iptables-legacy",), "delay and jitter between workspaces (NFQUEUE)"),
    Need("qemu-system-x86", ("qemu-system-x86_64",), "VM workspaces, virtiofsd"),
    Need("qemu-utils", ("qemu-img",), "VM disks (qcow2 overlays)"),
    Need("e2fsprogs", ("mkfs.ext4", "debugfs"), "VM root disks"),
    Need("cpio", ("cpio",), "the VM initrd"),
    Need("zstd", ("zstd",), "the VM initrd"),
    Need("nix-bin", ("nix-instantiate",), "checking the NixOS module (the test suite)", False),
    Need("make", ("make",), "the checkout's targets", False),
    Need("docker-registry", ("docker-registry",), "the image-cache tests' own OCI registry", False),
    Need("openssh-server", ("sshd",), "the remote-worker tests' own sshd on 127.0.0.1", False),
)
QEMU_USER = "wsfixture-qemu"  # QEMU runs as it once it has opened what it needs (-runas)
# Every container's user namespace is root's, and the kernel counts what its processes
# hold against their namespace's owner up the tree: the inotify instances of every
# container's systemd, networkd and resolved add up in host root's 128 (Debian's default).
# The 15th of 16 containers started at once failed there (networkd, resolved): measured.
SYSCTLS = {"fs.inotify.max_user_instances": 8192, "fs.inotify.max_user_watches": 524288}
SYSCTL_FILE = "/etc/sysctl.d/60-wsfixture.conf"


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def low_sysctls() -> dict[str, tuple[int, int]]:
    """The host limits below what many workspaces need: key -> (now, wanted)."""
    return {
        key: (_current(key), wanted)
        for key, wanted in SYSCTLS.items()
        if 0 <= _current(key) < wanted
    }


def _current(key: str) -> int:
    """The host's value now; -1 where this kernel has no such knob."""
    try:
        with open(sysctl_path(key)) as knob:
            return int(knob.read())
    except (OSError, ValueError):
        return -1


def raise_sysctls() -> list[str]:
    """Raise the low ones now and at every boot (never lower one); what changed."""
    changed = []
    for key, (now, wanted) in low_sysctls().items():
        with open(sysctl_path(key), "w") as knob:
            knob.write(str(wanted))
        changed.append(f"{key} {now} -> {wanted}")
    # At boot too, never below what the host has now (another file may set more).
    kept = {key: max(wanted, _current(key)) for key, wanted in SYSCTLS.items()}
    lines = "".join(f"{key} = {value}\n" for key, value in kept.items())
    if os.path.isdir(os.path.dirname(SYSCTL_FILE)):
        with open(SYSCTL_FILE, "w") as conf:
            conf.write("# wsfixture: many containers' inotify instances (wsfixture setup-host)\n")
            conf.write(lines)
    return changed


SEARCH_PATH = "/usr/sbin:/sbin:/usr/lib/qemu"


def package_of(tool: str) -> str:
    return next((need.package for need in NEEDS if tool in need.tools), "")


def find_tool(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=SEARCH_PATH)


def is_debian() -> bool:
    return shutil.which("apt-get") is not None and shutil.which("dpkg-query") is not None


def missing_packages() -> list[str]:
    missing = []
    for need in NEEDS:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", need.package],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        if status != "install ok installed":
            missing.append(need.package)
    return missing


def has_qemu_user() -> bool:
    import pwd

    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return False
    return True


def setup_host(say: object = print) -> int:
    """Install what is missing (Debian/Ubuntu, as root); elsewhere print the list. Returns
    an exit code: 0 done, 1 failed, 3 not root or not Debian (the list was printed)."""
    assert callable(say)
    if not is_debian():
        say("setup-host: not a Debian/Ubuntu system; install the equivalents of:")
        for need in NEEDS:
            say(f"  {need.package:<20} {need.why}")
        say(f"  and a system user {QEMU_USER} (useradd --system --shell /usr/sbin/nologin)")
        return 3
    if os.geteuid() != 0:
        say("setup-host: must run as root (it installs packages and adds a system user)")
        return 3
    missing = missing_packages()
    if missing:
        say(f"setup-host: installing {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        ):
            if subprocess.run(argv, env=env, check=False).returncode != 0:
                say(f"setup-host: {' '.join(argv[:2])} failed")
                return 1
    else:
        say("setup-host: all Debian packages present")
    if not has_qemu_user():
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", QEMU_USER],
            check=True,
        )  # fmt: skip
        say(f"setup-host: created the system user {QEMU_USER}")
    for change in raise_sysctls():
        say(f"setup-host: raised {change} (also in {SYSCTL_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(setup_host())
