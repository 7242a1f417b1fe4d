"""`wsfixture doctor`: is this host ready for workspaces, and if not, what to install.

Each check says what it looked at, what it found, and the fix. A missing requirement makes
the command exit 3 (a missing prerequisite); what only makes workspaces slower or less
capable (KVM, vsock), or what only this project's own checkout needs (its test suite's Nix,
make), is reported, not required.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsfixture.host import settings, setup, virt

FREE_SPACE_NEEDED = 5 * 2**30  # a container and a VM base with a few layers


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _root() -> Finding:
    ok = os.geteuid() == 0
    return Finding("root", ok, "running as root" if ok else f"uid {os.geteuid()}",
                   "run as root (sudo, doas)")  # fmt: skip


def _tools() -> list[Finding]:
    found = []
    for need in setup.NEEDS:
        for tool in need.tools:
            path = setup.find_tool(tool)
            found.append(Finding(
                f"tool {tool}", path is not None, path or "not found",
                f"apt-get install {need.package}  ({need.why})", required=need.required,
            ))  # fmt: skip
    return found


def _overlayfs() -> Finding:
    ok = "overlay" in Path("/proc/filesystems").read_text()
    return Finding("overlayfs", ok, "in /proc/filesystems" if ok else "not in the kernel",
                   "a kernel with CONFIG_OVERLAY_FS")  # fmt: skip


def _netns() -> Finding:
    done = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    ok = done.returncode == 0
    detail = "a network namespace can be made" if ok else done.stderr.decode().strip()
    return Finding("network namespaces", ok, detail, "root, and a kernel with CONFIG_NET_NS")


def _cgroups() -> Finding:
    root = settings.current().cgroup_root.parent
    ok = (root / "cgroup.controllers").exists()
    return Finding("cgroup v2", ok, f"mounted at {root}" if ok else f"no cgroup v2 at {root}",
                   "mount cgroup2 there (systemd hosts have it)")  # fmt: skip


def _vm_needs() -> list[Finding]:
    """What a VM's start requires (``virt.VM_NEEDS``), as it asks."""
    return [Finding(need.name, (problem := need.problem()) is None, problem or "present",
                    need.fix) for need in virt.VM_NEEDS]  # fmt: skip


def _inotify() -> Finding:
    low = setup.low_sysctls()
    detail = ", ".join(f"{key} = {now} (wanted {wanted})" for key, (now, wanted) in low.items())
    fix = ("wsfixture setup-host (every container's systemd counts against host root's; "
           "about 15 containers start at Debian's 128)")  # fmt: skip
    return Finding("inotify limits", not low, detail or "enough for many containers", fix,
                   required=False)  # fmt: skip


def _space() -> Finding:
    cache = settings.current().cache_dir
    where = cache if cache.exists() else next(p for p in cache.parents if p.exists())
    free = shutil.disk_usage(where).free
    floor = settings.current().cache_min_free / settings.GIB
    return Finding(
        "free space", free >= FREE_SPACE_NEEDED,
        f"{free / 2**30:.1f} GiB free at {where} (images need about 5; while less than "
        f"{floor:g} GiB is free, unused cached ones make room)",
        f"free space at {cache}, or set WSFIXTURE_CACHE_DIR elsewhere",
    )  # fmt: skip


def _kvm() -> Finding:
    accel = virt.host_accel("auto")
    return Finding("KVM", accel.name == "kvm", accel.reason,
                   "VMs use TCG (~35 s to boot cold, ~3 s restored)", required=False)  # fmt: skip


def _vsock() -> Finding:
    ok = virt.vsock_available()
    return Finding("vhost-vsock", ok, "/dev/vhost-vsock" if ok else "no /dev/vhost-vsock",
                   "modprobe vhost_vsock; VMs run without it", required=False)  # fmt: skip


CHECKS: tuple[Callable[[], Finding | list[Finding]], ...] = (
    _root,
    _tools,
    _overlayfs,
    _netns,
    _cgroups,
    _vm_needs,
    _inotify,
    _space,
    _kvm,
    _vsock,
)


def examine() -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        result = check()
        findings += result if isinstance(result, list) else [result]
    return findings
