"""Look at the machine for what a workspace or lab could leave behind."""

from __future__ import annotations

import os
from pathlib import Path

from wsfixture.host import ledger, settings, system


def netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def mounts_under(path: Path) -> list[str]:
    return [str(m) for m in system.mount_points() if m == path or path in m.parents]


def processes_with_cmdline(fragment: str) -> list[int]:
    """PIDs whose command line contains ``fragment`` (to look, never to kill)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline:
            found.append(int(entry.name))
    return found


def leftovers(lab_name: str) -> dict[str, object]:
    """Everything of ``lab_name`` still on the machine; empty when clean."""
    found: dict[str, object] = {}
    if netns_exists(lab_name):
        found["netns"] = lab_name
    if mounts := mounts_under(settings.current().labs_dir / lab_name):
        found["mounts"] = mounts
    cgroups = sorted(p.name for p in settings.current().cgroup_root.glob(f"{lab_name}-*"))
    if cgroups:
        found["cgroups"] = cgroups
    if procs := processes_with_cmdline(lab_name):
        found["processes"] = procs
    if (settings.current().labs_dir / lab_name).exists():
        found["dir"] = str(settings.current().labs_dir / lab_name)
    if Path(f"/etc/netns/{lab_name}").exists():
        found["etc"] = f"/etc/netns/{lab_name}"
    records = [r.key for r in ledger.records() if lab_name in r.key]
    if records:
        found["ledger"] = records
    return found


def footprint() -> set[str]:
    """Everything wsfixture can leave on this machine: lab directories, namespaces, their
    /etc/netns entries, cgroups and ledger records."""
    from wsfixture.host import settings

    places = {
        "lab dir": settings.current().labs_dir,
        "netns": Path("/run/netns"),
        "/etc/netns": Path("/etc/netns"),
        "cgroup": settings.current().cgroup_root,
        "ledger record": settings.current().ledger_dir,
    }
    found = set()
    for kind, place in places.items():
        if place.is_dir():
            entries = (p for p in place.iterdir() if kind != "cgroup" or p.is_dir())
            found |= {f"{kind} {p.name}" for p in entries}
    return found


def staging_records(cache: Path) -> list[str]:
    """The ledger records of imports and pulls staging in ``cache`` (other tests' caches
    are theirs)."""
    return [
        r.key
        for r in ledger.records()
        if isinstance(r.info, ledger.BuildInfo) and Path(r.info.staging).is_relative_to(cache)
    ]
