"""Our cgroups' end: every process in a subtree killed and the subtree removed, children
first, in the unified hierarchy and in its mirror in the v1 name=systemd one (systemd-nspawn
makes it, on a hybrid host). What names them is the ledger (``host.ledger``)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from wsfixture.host import settings


def kill(path: str, timeout: float = 15.0) -> None:
    """Kill every process in a cgroup v2 subtree and remove the (now empty) cgroups, and
    their mirror in the v1 name=systemd hierarchy. ``timeout`` bounds the wait for the
    killed to be gone: an apt or dpkg in the middle of a write on a loaded machine took
    more than 5 s once (the kill matrix saw it)."""
    root = Path(path)
    remove_tree(root, time.monotonic() + timeout, kill=True)
    where = settings.current()
    if root.is_relative_to(where.cgroup_root):
        mirror = where.cgroup_v1_root / root.relative_to(where.cgroup_root)
        remove_tree(mirror, time.monotonic() + timeout)


def remove_tree(root: Path, deadline: float, kill: bool = False) -> None:
    """rmdir a cgroup subtree, children first (rmdir only works on an empty leaf),
    retrying while its last processes exit. Each try lists the subtree anew: a process
    still starting up when it was killed (systemd-nspawn) can have made a child cgroup
    after the last listing, and the root stays busy until that child goes too (the kill
    matrix saw it). ``kill``: cgroup.kill first, and again on each try."""
    while root.exists():
        try:
            if kill and (root / "cgroup.kill").exists():
                (root / "cgroup.kill").write_text("1")
            children = sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True)
            for directory in [*children, root]:
                with contextlib.suppress(FileNotFoundError):
                    directory.rmdir()
        except FileNotFoundError:
            continue  # gone meanwhile: the loop's test says so
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
