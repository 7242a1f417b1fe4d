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
    Need("qemu-system-x86", ("qemu-system-x86_64",), "VM workspaces, virtiofsd"),
    Need("qemu-utils", ("qemu-img",), "VM disks (qcow2 overlays)"),
    Need("e2fsprogs", ("mkfs.ext4",), "VM root disks"),
    Need("cpio", ("cpio",), "the VM initrd"),
    Need("zstd", ("zstd",), "the VM initrd"),
    Need("nix-bin", ("nix-instantiate",), "checking the NixOS module (the test suite)", False),
    Need("make", ("make",), "the checkout's targets", False),
)
QEMU_USER = "wsfixture-qemu"  # QEMU runs as it once it has opened what it needs (-runas)
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
    return 0


if __name__ == "__main__":
    sys.exit(setup_host())
