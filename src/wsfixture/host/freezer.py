"""Stopping every process of a cgroup (cgroup v2's freezer): for a moment, so that what a
container checkpoint copies is what its processes wrote, none of it half way; or until
told (``ws.pause()``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from wsfixture.errors import CheckpointError
from wsfixture.retry import retry_until

FREEZE_TIMEOUT = 10.0


@contextlib.contextmanager
def frozen(name: str, cgroup: Path, timeout: float = FREEZE_TIMEOUT) -> Iterator[None]:
    """Every process of workspace ``name``'s ``cgroup`` (and its children) frozen while
    the block runs."""
    try:
        freeze(name, cgroup, timeout)
        yield
    finally:
        thaw(cgroup)


def freeze(name: str, cgroup: Path, timeout: float = FREEZE_TIMEOUT) -> None:
    """Freeze every process of ``cgroup``; return once they all are (CheckpointError if
    they are not within ``timeout``: the cgroup is thawed again)."""
    (cgroup / "cgroup.freeze").write_text("1")

    def settled(_: bool) -> bool | None:
        return True if "frozen 1" in (cgroup / "cgroup.events").read_text() else None

    if retry_until(settled, timeout, 0.002) is None:
        thaw(cgroup)
        raise CheckpointError(name, f"its processes did not freeze within {timeout:.0f} s")


def thaw(cgroup: Path) -> None:
    (cgroup / "cgroup.freeze").write_text("0")
