"""Stopping every process of a cgroup for a moment (cgroup v2's freezer): what a
container checkpoint copies is then what its processes wrote, none of it half way."""

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
    control = cgroup / "cgroup.freeze"
    control.write_text("1")
    try:

        def settled(_: bool) -> bool | None:
            return True if "frozen 1" in (cgroup / "cgroup.events").read_text() else None

        if retry_until(settled, timeout, 0.002) is None:
            raise CheckpointError(name, f"its processes did not freeze within {timeout:.0f} s")
        yield
    finally:
        control.write_text("0")
