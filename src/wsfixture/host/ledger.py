"""Who owns what, so a crashed run's leftovers can be found and reaped.

Every lab and workspace writes a record before it creates anything: its owner (PID and start
time), what it is (``LabInfo`` or ``WorkspaceInfo``), and each resource as it is made —
processes, cgroups, mounts, network namespaces, runtime directories. A record whose owner is
dead is an orphan; ``reap`` releases what it lists, in reverse order, and removes it.
Persistent workspaces (started by the CLI) are owned by their own supervisor process, so
they are orphans only once that process is gone.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.cleanup import Cleanup
from wsfixture.host import cgroups, settings, system
from wsfixture.model import derive


@dataclass(frozen=True)
class LabInfo:
    """A lab: its name is also its network namespace's; whether it has an uplink."""

    name: str
    internet: bool = False

    @property
    def lab(self) -> str:
        return self.name


@dataclass(frozen=True)
class SupervisorInfo:
    """A CLI workspace: what its supervisor started it from, and when."""

    config_path: str
    config_hash: str
    started: float  # seconds since the epoch
    # Field by field (``cli.persistent.config_snapshot``), so `status` and `apply` can say
    # what changed; empty in an older wsfixture's records.
    config: dict[str, str] = field(default_factory=dict)
    stop_at: float | None = None  # `up --ttl`: when the supervisor stops it (epoch seconds)
    idle_timeout: int | None = None  # seconds without an SSH session before it is stopped
    idle_since: float | None = None  # when its last SSH session ended; None while one is open
    paused: bool = False  # `wsfixture pause`: commands to it are refused until `resume`


@dataclass(frozen=True)
class WorkspaceInfo:
    """A workspace: where it runs and what the lab needs to reach it (DNS, known_hosts)."""

    name: str
    lab: str
    type: str
    ip: str = ""
    user: str = ""
    host_key: str = ""  # "ssh-ed25519 AAAA...", empty until the key is known
    supervisor: SupervisorInfo | None = None


@dataclass(frozen=True)
class BuildInfo:
    """An image build: its key, and the staging directory it builds in."""

    key: str
    staging: str

    @property
    def lab(self) -> str:
        return ""  # of no lab


@dataclass(frozen=True)
class FaultsInfo:
    """Faults between a lab's workspaces (``net.faults``): the nftables tables, iptables
    chain and shaped bridge ports that hold them, taken away when they are healed, or by
    ``gc`` when their owner died (their helper processes are the record's)."""

    lab: str
    table: str
    ports: tuple[str, ...] | list[str] = ()


Info = LabInfo | WorkspaceInfo | BuildInfo | FaultsInfo
KINDS: dict[type, str] = {
    LabInfo: "lab", WorkspaceInfo: "workspace", BuildInfo: "build", FaultsInfo: "faults",
}  # fmt: skip


@dataclass
class Record:
    """One owner's resources. Saved on every change."""

    key: str
    info: Info
    owner: system.ProcessRef
    processes: list[system.ProcessRef] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return settings.current().ledger_dir / f"{self.key}.json"

    @property
    def lab(self) -> str:
        return self.info.lab

    @classmethod
    def create(cls, key: str, info: Info) -> Record:
        record = cls(key, info, system.ProcessRef.self())
        record.save()
        return record

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "key": self.key,
            "kind": KINDS[type(self.info)],
            "info": asdict(self.info),
            "owner": self.owner.to_json(),
            "processes": [p.to_json() for p in self.processes],
            "cgroups": self.cgroups,
            "mounts": self.mounts,
            "netns": self.netns,
            "dirs": self.dirs,
        }
        system.write_atomic(self.path, json.dumps(data, indent=1), 0o600)

    def update(self, info: Info) -> None:
        self.info = info
        self.save()

    def add_process(self, process: system.ProcessRef) -> None:
        self._add(self.processes, process)

    def add_cgroup(self, path: Path) -> None:
        self._add(self.cgroups, str(path))

    def add_mount(self, path: Path) -> None:
        self._add(self.mounts, str(path))

    def add_netns(self, name: str) -> None:
        self._add(self.netns, name)

    def add_dir(self, path: Path) -> None:
        self._add(self.dirs, str(path))

    def drop_process(self, process: system.ProcessRef) -> None:
        self._drop(self.processes, process)

    def drop_cgroup(self, path: Path) -> None:
        self._drop(self.cgroups, str(path))

    def drop_mount(self, path: Path) -> None:
        self._drop(self.mounts, str(path))

    def drop_dir(self, path: Path) -> None:
        self._drop(self.dirs, str(path))

    def _add(self, items: list[Any], value: object) -> None:
        if value not in items:
            items.append(value)
        self.save()

    def _drop(self, items: list[Any], value: object) -> None:
        if value in items:
            items.remove(value)
        self.save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def orphaned(self) -> bool:
        return not self.owner.alive()


def _info(kind: str, data: dict[str, Any]) -> Info:
    if kind == "lab":
        return LabInfo(data["name"], data.get("internet", False))
    if kind == "build":
        return BuildInfo(**data)
    if kind == "faults":
        return FaultsInfo(**data)
    if "lab_host" in data:  # written by wsfixture 0.1 (untyped): still reapable after an upgrade
        host = data["lab_host"] or {}
        return WorkspaceInfo(
            data["name"], data["lab"], data["type"], host.get("ip", ""), host.get("user", "")
        )
    supervisor = data.get("supervisor")
    return WorkspaceInfo(
        **{**data, "supervisor": SupervisorInfo(**supervisor) if supervisor else None}
    )


def load(path: Path) -> Record | None:
    """The record at ``path``; None when it is gone, half written or of another format."""
    try:
        data = json.loads(path.read_text())
        return Record(
            key=data["key"],
            info=_info(data["kind"], data["info"]),
            owner=system.ProcessRef.from_json(data["owner"]),
            processes=[system.ProcessRef.from_json(p) for p in data["processes"]],
            cgroups=data["cgroups"],
            mounts=data["mounts"],
            netns=data["netns"],
            dirs=data["dirs"],
        )
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def records() -> Iterator[Record]:
    ledger_dir = settings.current().ledger_dir
    if not ledger_dir.is_dir():
        return
    for path in sorted(ledger_dir.glob("*.json")):
        record = load(path)
        if record is not None:
            yield record


def lab_record(lab: str) -> Record | None:
    """The record of the lab named ``lab``, if it has one."""
    return next((r for r in records() if isinstance(r.info, LabInfo) and r.lab == lab), None)


def workspaces(lab: str | None = None, *, live: bool = False) -> dict[str, Record]:
    """Workspace records of ``lab`` by workspace name (unique in a lab), or of every lab by
    record key; ``live``: only those whose owner still runs."""
    found: dict[str, Record] = {}
    for record in records():
        info = record.info
        if not isinstance(info, WorkspaceInfo) or (live and record.orphaned()):
            continue
        if lab is None:
            found[record.key] = record
        elif info.lab == lab:
            found[info.name] = record
    return found


def workspace_info(record: Record) -> WorkspaceInfo:
    """A workspace record's info (a lab record here is a programming error)."""
    assert isinstance(record.info, WorkspaceInfo), record.key
    return record.info


def sweep_cgroups() -> list[tuple[str, BaseException]]:
    """Remove our empty cgroups that no record names, in both hierarchies: what a crash or
    a kill left (a record names each cgroup before it is made). One that still holds a
    process stays: its record, when reaped, ends it."""
    where = settings.current()

    def named() -> set[str]:
        return {
            Path(c).relative_to(where.cgroup_root).parts[0]
            for r in records()
            for c in r.cgroups
            if Path(c).is_relative_to(where.cgroup_root)
        }

    failures: list[tuple[str, BaseException]] = []
    for root in (where.cgroup_root, where.cgroup_v1_root):
        if not root.is_dir():
            continue
        candidates = [d for d in root.iterdir() if d.is_dir() and d.name not in named()]
        in_use = named()  # read again: one may have been recorded meanwhile
        for directory in candidates:
            if directory.name in in_use:
                continue
            for cgroup in [*sorted(directory.rglob("*"), reverse=True), directory]:
                try:
                    if cgroup.is_dir():
                        cgroup.rmdir()
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
                        failures.append((f"remove cgroup {cgroup}", exc))
    return failures


def release(record: Record) -> list[tuple[str, BaseException]]:
    """Release everything a record lists; return the failures, never stop at the first."""
    cleanup = Cleanup()
    attempt = cleanup.attempt
    if isinstance(record.info, FaultsInfo):
        attempt(f"heal faults {record.info.table}", delete_fault_table, record.info)
    for proc in reversed(record.processes):
        attempt(f"kill pid {proc.pid}", proc.signal, signal.SIGKILL)
    for cgroup in reversed(record.cgroups):
        attempt(f"kill cgroup {cgroup}", cgroups.kill, cgroup)
    for mount in reversed(record.mounts):
        if system.is_mounted(Path(mount)):
            attempt(f"unmount {mount}", _unmount, mount)
    for netns in reversed(record.netns):
        attempt(f"delete netns {netns}", _delete_netns, netns)
        attempt(f"remove /etc/netns/{netns}", system.remove_tree, settings.NETNS_ETC / netns)
    for directory in reversed(record.dirs):
        attempt(f"remove {directory}", system.remove_tree, Path(directory))
    if not cleanup.failures:
        record.forget()
    return cleanup.failures


# Two reapers may release one record at once (a `wsfixture gc` beside a session's own reap,
# or two sessions'): what the other took away meanwhile is gone all the same, not a failure.
def _delete_netns(name: str) -> None:
    try:
        system.run(["ip", "netns", "delete", name])
    except system.HostCommandError:
        if (settings.NETNS_RUN / name).exists():
            raise


def _unmount(mount: str) -> None:
    try:
        system.run(["umount", "--lazy", mount])
    except system.HostCommandError:
        if system.is_mounted(Path(mount)):
            raise


def delete_fault_table(info: FaultsInfo) -> None:
    """Heal a set of faults: delete its tables, its delays' chain and its ports' shaping,
    where its lab and they are still there."""
    if not (settings.NETNS_RUN / info.lab).exists():
        return  # the lab went, and its faults with it
    lab = ["nsenter", f"--net={settings.NETNS_RUN / info.lab}", "--"]
    tables = system.run([*lab, "nft", "list", "tables"]).splitlines()
    for family in ("bridge", "ip"):
        if f"table {family} {info.table}" in tables:
            system.run([*lab, "nft", "delete", "table", family, info.table])
    chain = derive.fault_queue_chain(info.table)
    iptables = [*lab, "iptables-legacy"]
    if system.run([*iptables, "-S", chain], check=False).strip():
        while f"-j {chain}" in system.run([*iptables, "-S", "FORWARD"]):
            system.run([*iptables, "-D", "FORWARD", "-j", chain])
        system.run([*iptables, "-F", chain])
        system.run([*iptables, "-X", chain])
    for port in info.ports:
        unshape_port(info.lab, port)


def unshape_port(lab: str, port: str) -> None:
    """Take a bridge port's rate shaping off: its qdiscs and its IFB device (what is not
    there any more is no failure)."""
    inside = ["nsenter", f"--net={settings.NETNS_RUN / lab}", "--"]
    for qdisc in ("root", "ingress"):
        system.run([*inside, "tc", "qdisc", "del", "dev", port, qdisc], check=False)
    system.run([*inside, "ip", "link", "delete", derive.ifb_name(port)], check=False)


def reap(lab: str | None = None) -> tuple[list[Record], list[tuple[str, BaseException]]]:
    """Release every orphaned record (workspaces before labs), or, given ``lab``, every
    record of that lab whatever its owner (kept workspaces). Returns what was reaped."""
    reaped: list[Record] = []
    failures: list[tuple[str, BaseException]] = []
    if lab is None:
        candidates = [r for r in records() if r.orphaned()]
    else:
        candidates = [r for r in records() if r.lab == lab and r.lab]
    # Workspaces and builds before the labs they may stand in.
    for record in sorted(candidates, key=lambda r: isinstance(r.info, LabInfo)):
        if record.owner.pid == os.getpid():
            continue
        problems = release(record)
        failures += problems
        if not problems:
            reaped.append(record)
    if lab is None:
        failures += sweep_cgroups()
        sweep_half_written()
    return reaped, failures


def sweep_half_written() -> None:
    """Remove record files a killed writer left half written (``system.write_atomic``'s
    ``.<name>.<pid>.tmp``, never renamed into place)."""
    ledger_dir = settings.current().ledger_dir
    for path in ledger_dir.glob(".*.tmp") if ledger_dir.is_dir() else []:
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and system.process_start_time(int(pid)) is None:
            path.unlink(missing_ok=True)
