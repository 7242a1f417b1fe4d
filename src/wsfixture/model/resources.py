"""What a workspace may use, pure: CPUs, memory, disk and processes, their ranges, and a
VM's defaults. A container's are unbounded unless set (the seed's "no resource limits by
default"); ``Config.resolve`` makes a workspace's (``Resolved``: these and what else it
inherits) from its own, its defaults, its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VCPU_RANGE = (1, 256)
MEMORY_RANGE_MIB = (128, 1024 * 1024)  # a container boots in 19 MiB at its peak (measured)
PIDS_RANGE = (64, 4 * 1024 * 1024)  # a container idles at 9 tasks, a VM's QEMU at 37 (measured)
DISK_RANGE_MIB = (256, 16 * 1024 * 1024)


@dataclass(frozen=True)
class Resources:
    """What a workspace may use; None: no limit (a container's unless it is given one)."""

    vcpu: int | None = None
    memory: int | None = None  # MiB
    disk: int | None = None  # MiB
    pids: int | None = None


# A VM's when neither it nor the defaults say: the seed's 8 vCPUs, 4 GiB and 8 GiB disk.
VM_RESOURCES = Resources(vcpu=8, memory=4096, disk=8192, pids=4096)


@dataclass(frozen=True)
class Resolved:
    """What a workspace gets, with what it inherits from the defaults made whole
    (``Config.resolve``)."""

    release: str
    snapshot: str
    packages: tuple[str, ...]  # the defaults', its own and its privilege tool, sorted, once
    setup: tuple[str, ...]  # the defaults', then its own
    files: dict[str, Path]  # guest path -> host file; its own win over the defaults'
    docs: bool  # its layer's packages with their docs, man pages and locales
    resources: Resources  # its own, else the defaults', else its kind's
