"""What this host offers VMs: the accelerator that really runs guests, CPUs and memory to
clamp to, vsock, the TSC frequency, virtiofsd and QEMU's version. Read from /proc and /dev
(and ``qemu-system-x86_64 --version``), never by booting anything; ``doctor`` and the QEMU
backend ask the same questions here."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsfixture.errors import PrerequisiteError
from wsfixture.host import setup, system

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # QEMU 7.2's C daemon (Debian 12: qemu-system-common)


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


def host_memory_mib(field: str = "MemTotal") -> int:
    """A /proc/meminfo figure in MiB: the host's memory, or (``MemAvailable``) what it can
    give without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
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


def vsock_available() -> bool:
    return Path("/dev/vhost-vsock").exists()


def virtiofsd_available() -> bool:
    return Path(VIRTIOFSD).exists()


def tsc_khz() -> int:
    """The host TSC frequency in kHz; microvm guests under TCG hang calibrating without it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return int(float(line.split(":")[1]) * 1000)
    return 2_000_000


@functools.cache
def qemu_version() -> str:
    """QEMU's version line, asked once per process (a template is restored by the QEMU
    that made it only)."""
    out = system.run([system.require_tool("qemu-system-x86_64"), "--version"])
    return out.splitlines()[0].strip()


@dataclass(frozen=True)
class VmNeed:
    """What a VM cannot run without: ``doctor`` reports it, a VM's start requires it."""

    name: str
    problem: Callable[[], str | None]  # what is wrong, asked now; None: it is there
    fix: str
    package: str = ""


def _virtiofsd_problem() -> str | None:
    # 9p, built into QEMU, is served as host root with the guest's owners and modes
    # passed through: the guest's root would make host root's (setuid) files.
    if virtiofsd_available():
        return None
    return (f"{VIRTIOFSD} not found, and a VM's rw shares (workspace/, claude-config/ at "
            "least) would be served over 9p as host root")  # fmt: skip


def _qemu_user_problem() -> str | None:
    if setup.has_qemu_user():
        return None
    return f"the system user {setup.QEMU_USER} (QEMU drops to it) does not exist"


VM_NEEDS = (
    VmNeed("virtiofsd", _virtiofsd_problem, "apt-get install qemu-system-common",
           "qemu-system-common"),
    VmNeed(f"user {setup.QEMU_USER}", _qemu_user_problem, "wsfixture setup-host (or make host)"),
)  # fmt: skip


def require_vm_needs(name: str) -> None:
    """PrerequisiteError, naming workspace ``name``, for the first of ``VM_NEEDS`` missing."""
    for need in VM_NEEDS:
        if (problem := need.problem()) is not None:
            hint = "" if need.package else need.fix
            raise PrerequisiteError(f"workspace {name!r}: {problem}", need.package, hint)
