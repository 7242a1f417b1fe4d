"""A workspace's resource limits on its cgroup: memory (with no swap beyond it), CPU time
and processes (threads included).

Each controller is used where this host has it: in the unified (v2) hierarchy when it is
available there, else in its own v1 hierarchy (a hybrid host, as this machine kind, where
v2 has no controllers at all). There a workspace's cgroup is made under the v1 cgroup of
the process that starts it, so it stays within whatever bounds the host gives that
process; its owner lists it in the workspace's ledger record, for ``gc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsfixture.host import settings
from wsfixture.model.resources import Resources

PERIOD_US = 100_000  # the CPU bandwidth period: vcpu = 2 allows 200 ms of CPU time per 100 ms


@dataclass(frozen=True)
class Knob:
    controller: str  # "memory", "cpu" or "pids"
    file: str
    value: str
    optional: bool = False  # absent where the kernel lacks it (v1 swap accounting)


def knobs(resources: Resources, v2: frozenset[str]) -> list[Knob]:
    """What to write, per controller and hierarchy, for ``resources`` (pure). ``v2``: the
    controllers the unified hierarchy has here."""
    found: list[Knob] = []
    if resources.memory is not None:
        size = str(resources.memory * 2**20)
        if "memory" in v2:
            found += [Knob("memory", "memory.max", size), Knob("memory", "memory.swap.max", "0")]
        else:
            # memsw (memory + swap) can only be set at or above the memory limit.
            found.append(Knob("memory", "memory.limit_in_bytes", size))
            found.append(Knob("memory", "memory.memsw.limit_in_bytes", size, optional=True))
    if resources.vcpu is not None:
        quota = str(resources.vcpu * PERIOD_US)
        if "cpu" in v2:
            found.append(Knob("cpu", "cpu.max", f"{quota} {PERIOD_US}"))
        else:
            found.append(Knob("cpu", "cpu.cfs_period_us", str(PERIOD_US)))
            found.append(Knob("cpu", "cpu.cfs_quota_us", quota))
    if resources.pids is not None:
        found.append(Knob("pids", "pids.max", str(resources.pids)))
    return found


def v2_controllers() -> frozenset[str]:
    """The controllers the unified hierarchy offers our cgroups here."""
    try:
        text = (settings.current().cgroup_root.parent / "cgroup.controllers").read_text()
    except OSError:
        return frozenset()
    return frozenset(text.split())


def controller_dir(controller: str, cgroup: Path, v2: frozenset[str]) -> Path:
    """Where ``controller``'s limits of the unified ``cgroup`` live: that cgroup itself
    with v2's controller, else ``wsfixture/<its name>`` under this process's own cgroup of
    the v1 hierarchy."""
    if controller in v2:
        return cgroup
    own = _own_v1_cgroup(controller).lstrip("/")
    mount = settings.current().cgroup_v1_controllers / controller
    return mount / own / "wsfixture" / cgroup.name


def _own_v1_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def apply(cgroup: Path, resources: Resources) -> list[Path]:
    """Make ``cgroup``'s limits before anything runs in it; return the v1 cgroups its
    processes must join as well (none where v2 has every controller). The caller lists
    them in the ledger record before, for ``gc``: ``v1_dirs`` says which they will be."""
    v2 = v2_controllers()
    chosen = knobs(resources, v2)
    if any(k.controller in v2 for k in chosen):
        _enable_in_v2({k.controller for k in chosen} & v2)
    joins: list[Path] = []
    for knob in chosen:
        directory = controller_dir(knob.controller, cgroup, v2)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / knob.file
        if knob.optional and not target.exists():
            continue
        target.write_text(knob.value)
        if knob.controller not in v2 and directory not in joins:
            joins.append(directory)
    return joins


def v1_dirs(cgroup: Path, resources: Resources) -> list[Path]:
    """The v1 cgroups ``apply`` makes for ``cgroup`` (to record before they exist)."""
    v2 = v2_controllers()
    dirs = [controller_dir(k.controller, cgroup, v2) for k in knobs(resources, v2)]
    return [d for i, d in enumerate(dirs) if d != cgroup and d not in dirs[:i]]


def _enable_in_v2(controllers: set[str]) -> None:
    """Controllers reach a v2 cgroup only when each ancestor hands them down: the
    hierarchy's root, then ours (which holds no process itself)."""
    change = " ".join(f"+{c}" for c in sorted(controllers))
    ours = settings.current().cgroup_root
    ours.mkdir(parents=True, exist_ok=True)
    for parent in (ours.parent, ours):
        (parent / "cgroup.subtree_control").write_text(change)


def oom_kills(cgroup: Path) -> int:
    """How many processes of ``cgroup`` the OOM killer ended (0 without a memory limit)."""
    v2 = v2_controllers()
    directory = controller_dir("memory", cgroup, v2)
    events = directory / ("memory.events" if "memory" in v2 else "memory.oom_control")
    try:
        for line in events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except OSError:
        pass
    return 0


def summary(resources: Resources) -> str:
    """The limits in a few words, for `status`: "1 cpu, 128 MiB, disk 2048 MiB, 64 pids"."""
    parts = [
        f"{resources.vcpu} cpu" if resources.vcpu is not None else "",
        f"{resources.memory} MiB" if resources.memory is not None else "",
        f"disk {resources.disk} MiB" if resources.disk is not None else "",
        f"{resources.pids} pids" if resources.pids is not None else "",
    ]
    return ", ".join(part for part in parts if part) or "none"


def describe(resources: Resources) -> dict[str, object]:
    """The limits for ``describe()`` and status: each set one, or "none"."""
    shown: dict[str, object] = {
        "vcpu": resources.vcpu,
        "memory_mib": resources.memory,
        "disk_mib": resources.disk,
        "pids": resources.pids,
    }
    return {key: "none" if value is None else value for key, value in shown.items()}
