"""A test's faults between the workspaces of one lab (the ``ws_faults`` fixture):
partitions, one-way blocks and loss, healed one by one (each verb returns a context
manager) or all at once (``heal``), and recorded as a timeline for the failure report.

The faults live in a table of their own in the lab namespace (``net.faults``), listed in a
ledger record: ``gc`` heals what a killed session left. Every change rewrites the table's
set and rules in one nft transaction from the faults that are active, so two faults that
share a pair never undo each other, and no packet passes in between.

``Faults.kept`` is the CLI's (``wsfixture fault``): its state in a file of the lab's, its
record owned by the lab's own owner, so the faults outlive the command that made them and
go with the lab.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from wsfixture.errors import FaultError
from wsfixture.host import ledger, system
from wsfixture.net import faults as rules

if TYPE_CHECKING:
    from wsfixture.net.lab import Lab
    from wsfixture.workspace.handle import Workspace

_serials = itertools.count(1)


@dataclass
class Fault:
    """One fault: what it is, when it started and ended (epoch seconds), what it does."""

    what: str
    started: float
    ended: float | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)  # blocked (source, destination)
    loss: list[tuple[str, str | None, float]] = field(default_factory=list)  # ip, peer, %

    def summary(self) -> dict[str, object]:
        return {"fault": self.what, "started": self.started, "ended": self.ended}


class Healing:
    """What a fault verb returns: heals that fault when its ``with`` block ends, or when
    ``heal()`` is called on it."""

    def __init__(self, faults: Faults, fault: Fault) -> None:
        self.faults = faults
        self.fault = fault

    def heal(self) -> None:
        self.faults.end(self.fault)

    def __enter__(self) -> Healing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.heal()


class Faults:
    """Faults between the workspaces of ``lab``; arguments are workspace handles or names."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.timeline: list[Fault] = []
        self._table: str | None = None
        self._record: ledger.Record | None = None
        self._kept_in: Path | None = None  # ``kept``: where the state is written
        self._owner: system.ProcessRef | None = None

    @classmethod
    def kept(cls, lab: Lab, path: Path, owner: system.ProcessRef) -> Faults:
        """The faults of ``lab`` kept in ``path`` between commands, owned by ``owner``."""
        faults = cls(lab)
        faults._kept_in, faults._owner = path, owner
        if path.exists():
            state = json.loads(path.read_text())
            faults.timeline = [
                Fault(f["what"], f["started"], f["ended"], [(a, b) for a, b in f["pairs"]],
                      [(ip, peer, percent) for ip, peer, percent in f["loss"]])
                for f in state["timeline"]
            ]  # fmt: skip
            faults._table = state["table"]
            faults._record = next((r for r in ledger.records() if r.key == state["record"]), None)
        return faults

    @property
    def active(self) -> list[Fault]:
        return [f for f in self.timeline if f.ended is None]

    # -- the verbs ------------------------------------------------------------------------

    def partition(self, *groups: Sequence[Workspace | str]) -> Healing:
        """Workspaces in different groups exchange no packet, either way; others are
        unaffected. ``partition([a], [b, c])``."""
        if any(isinstance(group, str) for group in groups):
            raise FaultError("partition", repr(groups), "groups as lists: partition([a], [b, c])")
        named = [[self._address("partition", member) for member in group] for group in groups]
        rules.check_groups([[name for name, _ in group] for group in named])
        pairs = rules.partition_pairs([[ip for _, ip in group] for group in named])
        shown = " | ".join(", ".join(name for name, _ in group) for group in named)
        return self._start(Fault(f"partition {shown}", time.time(), pairs=pairs))

    def block(self, src: Workspace | str, dst: Workspace | str) -> Healing:
        """``src``'s packets to ``dst`` are dropped; ``dst``'s to ``src`` still arrive."""
        (src_name, src_ip), (dst_name, dst_ip) = (
            self._address("src", src),
            self._address("dst", dst),
        )
        if src_ip == dst_ip:
            raise FaultError("dst", repr(dst_name), f"another workspace than src ({src_name})")
        return self._start(Fault(f"block {src_name} -> {dst_name}", time.time(),
                                 pairs=[(src_ip, dst_ip)]))  # fmt: skip

    def shape(
        self, ws: Workspace | str, peer: Workspace | str | None = None, *, loss: float | str
    ) -> Healing:
        """Drop ``loss`` percent (0-100) of what ``ws`` sends and receives, or only of
        what it exchanges with ``peer``."""
        name, ip = self._address("ws", ws)
        peer_name, peer_ip = self._address("peer", peer) if peer is not None else (None, None)
        percent = rules.parse_loss(loss)
        between = f" <-> {peer_name}" if peer_name else ""
        return self._start(Fault(f"loss {percent:g}% {name}{between}", time.time(),
                                 loss=[(ip, peer_ip, percent)]))  # fmt: skip

    def heal(self) -> None:
        """Every fault off, and the table gone."""
        now = time.time()
        for fault in self.active:
            fault.ended = now
        if self._record is not None:
            assert isinstance(self._record.info, ledger.FaultsInfo)
            ledger.delete_fault_table(self._record.info)
            self._record.forget()
            self._record = self._table = None
        self._save()

    def end(self, fault: Fault) -> None:
        if fault.ended is None:
            fault.ended = time.time()
            self._apply()

    def describe(self) -> str:
        """The timeline, a line each: what, from when to when (or "active")."""
        return "\n".join(
            f"{_clock(f.started)}-{_clock(f.ended) if f.ended else 'active'} {f.what}"
            for f in self.timeline
        )

    # -- below ----------------------------------------------------------------------------

    def _address(self, argument: str, target: Workspace | str) -> tuple[str, str]:
        """(name, address) of a workspace of this lab; FaultError naming ``argument``."""
        if isinstance(target, str):
            host = self.lab.hosts.get(target)
            if host is None:
                known = ", ".join(sorted(self.lab.hosts)) or "none"
                raise FaultError(argument, repr(target), f"a workspace of lab {self.lab.name}: "
                                 f"{known}")  # fmt: skip
            return target, host.ip
        if target.lab.name != self.lab.name:
            raise FaultError(argument, f"{target.name} (of lab {target.lab.name})",
                             f"a workspace of lab {self.lab.name}")  # fmt: skip
        return target.name, target.ip

    def _start(self, fault: Fault) -> Healing:
        self.timeline.append(fault)
        try:
            self._apply()
        except BaseException:
            self.timeline.remove(fault)
            raise
        return Healing(self, fault)

    def _apply(self) -> None:
        """The table as the active faults make it, in one transaction."""
        name = self._ensure_table()
        pairs = sorted({pair for fault in self.active for pair in fault.pairs})
        batch = rules.blocked(name, pairs) + f"flush chain bridge {name} shaped\n"
        for fault in self.active:
            for ip, peer, percent in fault.loss:
                batch += rules.loss_rules(name, ip, peer, percent)
        self.lab.run(["nft", "-f", "-"], input=batch)
        self._save()

    def _save(self) -> None:
        if self._kept_in is None:
            return
        if self._record is None:
            self._kept_in.unlink(missing_ok=True)
            return
        state = {"table": self._table, "record": self._record.key,
                 "timeline": [dataclasses.asdict(f) for f in self.timeline]}  # fmt: skip
        system.write_atomic(self._kept_in, json.dumps(state), 0o600)

    def _ensure_table(self) -> str:
        if self._table is None:
            name = rules.table_name(os.getpid(), next(_serials))
            self._record = ledger.Record.create(
                f"faults-{self.lab.name}-{name}", ledger.FaultsInfo(self.lab.name, name)
            )
            if self._owner is not None:  # they go with the lab, not with this process
                self._record.owner = self._owner
                self._record.save()
            self.lab.run(["nft", "-f", "-"], input=rules.table(name))
            self._table = name
        return self._table


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
