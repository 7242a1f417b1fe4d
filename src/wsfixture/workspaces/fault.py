"""One fault of a test, as its fault set records it: what it is, when it started and ended,
and what it does in the lab (the pairs it blocks, its shaping, its failing names, its
helpers), kept as JSON between commands (``wsfixture fault``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """One fault: what it is, when it started and ended (epoch seconds), what it does."""

    what: str
    started: float
    ended: float | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)  # blocked (source, destination)
    loss: list[tuple[str, str | None, float]] = field(default_factory=list)  # ip, peer, %
    delay: list[tuple[str, str | None, int]] = field(default_factory=list)  # ip, peer, queue
    rate: list[tuple[str, str | None, int]] = field(default_factory=list)  # ip, peer, bit/s
    dns: list[tuple[str, int | None]] = field(default_factory=list)  # name, responder port
    agents: list[list[int]] = field(default_factory=list)  # its helpers (ProcessRef JSON)

    def summary(self) -> dict[str, object]:
        return {"fault": self.what, "started": self.started, "ended": self.ended}

    def line(self) -> str:
        """Its line of the timeline: what, from when to when (or "active")."""
        ended = _clock(self.ended) if self.ended else "active"
        return f"{_clock(self.started)}-{ended} {self.what}"

    @classmethod
    def from_json(cls, f: dict[str, Any]) -> Fault:
        """One as ``dataclasses.asdict`` saved it (its tuples as JSON lists)."""
        return cls(f["what"], f["started"], f["ended"], [(a, b) for a, b in f["pairs"]],
                   [(ip, peer, percent) for ip, peer, percent in f["loss"]],
                   [(ip, peer, queue) for ip, peer, queue in f["delay"]],
                   [(ip, peer, bits) for ip, peer, bits in f["rate"]],
                   [(name, port) for name, port in f["dns"]], f["agents"])  # fmt: skip


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
