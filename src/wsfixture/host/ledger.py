"""Who owns what, so a crashed run's leftovers can be found and reaped.

Every lab and workspace writes a record before it creates anything: its owner (PID and start
time), and each resource as it is made — processes, cgroups, mounts, network namespaces,
runtime directories. A record whose owner is dead is an orphan; ``reap`` releases what it
lists, in reverse order, and removes it. Persistent workspaces (started by the CLI) are owned
by their own supervisor process, so they are orphans only once that process is gone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.host import system

LEDGER_DIR = system.RUN_DIR / "ledger"


@dataclass
class Record:
    """One owner's resources. Saved on every change."""

    key: str
    kind: str  # "lab" or "workspace"
    owner: system.ProcessRef
    processes: list[system.ProcessRef] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return LEDGER_DIR / f"{self.key}.json"

    @classmethod
    def create(cls, key: str, kind: str, **info: Any) -> Record:
        record = cls(key, kind, system.ProcessRef.self(), info=dict(info))
        record.save()
        return record

    def save(self) -> None:
        LEDGER_DIR.mkdir(parents=True, exist_ok=True)
        data = {
            "key": self.key,
            "kind": self.kind,
            "owner": self.owner.to_json(),
            "processes": [p.to_json() for p in self.processes],
            "cgroups": self.cgroups,
            "mounts": self.mounts,
            "netns": self.netns,
            "dirs": self.dirs,
            "info": self.info,
        }
        system.write_atomic(self.path, json.dumps(data, indent=1), 0o600)

    def add(self, what: str, value: Any) -> None:
        items = getattr(self, what)
        if value not in items:
            items.append(value)
        self.save()

    def drop(self, what: str, value: Any) -> None:
        items = getattr(self, what)
        if value in items:
            items.remove(value)
        self.save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def orphaned(self) -> bool:
        return not self.owner.alive()


def load(path: Path) -> Record | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return Record(
        key=data["key"],
        kind=data["kind"],
        owner=system.ProcessRef.from_json(data["owner"]),
        processes=[system.ProcessRef.from_json(p) for p in data["processes"]],
        cgroups=data["cgroups"],
        mounts=data["mounts"],
        netns=data["netns"],
        dirs=data["dirs"],
        info=data.get("info", {}),
    )


def records() -> Iterator[Record]:
    if not LEDGER_DIR.is_dir():
        return
    for path in sorted(LEDGER_DIR.glob("*.json")):
        record = load(path)
        if record is not None:
            yield record


def kill_cgroup(path: str, timeout: float = 5.0) -> None:
    """Kill every process in a cgroup v2 subtree and remove the (now empty) cgroups."""
    root = Path(path)
    if not root.exists():
        return
    kill = root / "cgroup.kill"
    if kill.exists():
        kill.write_text("1")
    deadline = time.monotonic() + timeout
    # Children first: rmdir only works on an empty leaf.
    for directory in [*sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True), root]:
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def release(record: Record) -> list[tuple[str, BaseException]]:
    """Release everything a record lists; return the failures, never stop at the first."""
    failures: list[tuple[str, BaseException]] = []

    def attempt(what: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:
            failures.append((what, exc))

    for proc in reversed(record.processes):
        attempt(f"kill pid {proc.pid}", proc.signal, signal.SIGKILL)
    for cgroup in reversed(record.cgroups):
        attempt(f"kill cgroup {cgroup}", kill_cgroup, cgroup)
    for mount in reversed(record.mounts):
        if system.is_mounted(Path(mount)):
            attempt(f"unmount {mount}", system.run, ["umount", "--lazy", mount])
    for netns in reversed(record.netns):
        if (Path("/run/netns") / netns).exists():
            attempt(f"delete netns {netns}", system.run, ["ip", "netns", "delete", netns])
        attempt(f"remove /etc/netns/{netns}", system.remove_tree, Path("/etc/netns") / netns)
    for directory in reversed(record.dirs):
        attempt(f"remove {directory}", system.remove_tree, Path(directory))
    if not failures:
        record.forget()
    return failures


def lab_of(record: Record) -> str:
    return str(record.info.get("lab") or record.info.get("name") or "")


def reap(lab: str | None = None) -> tuple[list[Record], list[tuple[str, BaseException]]]:
    """Release every orphaned record (workspaces before labs), or, given ``lab``, every
    record of that lab whatever its owner (kept workspaces). Returns what was reaped."""
    reaped: list[Record] = []
    failures: list[tuple[str, BaseException]] = []
    if lab is None:
        candidates = [r for r in records() if r.orphaned()]
    else:
        candidates = [r for r in records() if lab_of(r) == lab]
    for record in sorted(candidates, key=lambda r: r.kind != "workspace"):
        if record.owner.pid == os.getpid():
            continue
        problems = release(record)
        failures += problems
        if not problems:
            reaped.append(record)
    return reaped, failures
