"""User namespaces made to order, and idmapped mounts made from them.

systemd-nspawn's own ``:idmap`` maps a container's ids one to one onto the host's (its root
onto host root); a share needs a narrower map (``model.share_ids``), so wsfixture makes the
mount itself: ``open_tree`` clones the source, ``mount_setattr`` gives the clone the map of a
user namespace (and nosuid, nodev), ``move_mount`` puts it where nspawn binds it from.

A user namespace is made by a short-lived ``unshare --user`` child whose maps we write; an
open fd of it outlives the child, and is all a mount or a ``nsenter`` needs. One is made
per map and kept for the life of the process.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from pathlib import Path

from wsfixture.errors import PrerequisiteError
from wsfixture.host import system
from wsfixture.model.share_ids import IdMap, map_text
from wsfixture.retry import retry_until

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # the same on x86_64 and arm64
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x2, 0x4, 0x100000
_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise PrerequisiteError(
            f"{what} failed: {os.strerror(err)}",
            hint="idmapped mounts need Linux 5.12 or later and a file system that has them",
        )
    return result


_namespaces: dict[tuple[str, str], int] = {}
_namespaces_lock = threading.Lock()


def user_namespace(uids: IdMap, gids: IdMap) -> int:
    """An fd of a user namespace with these maps: made once per process and map, and kept
    open (never close it): every share of one owner takes the same, in a few microseconds
    rather than the milliseconds of a new ``unshare`` each time. One per distinct map (a
    share owner) for the life of the process: a handful; closing one under a caller that
    is about to pass its number on would pass another file."""
    key = (map_text(uids), map_text(gids))
    with _namespaces_lock:
        if key not in _namespaces:
            _namespaces[key] = _new_user_namespace(*key)
        return _namespaces[key]


def _new_user_namespace(uid_map: str, gid_map: str, timeout: float = 5.0) -> int:
    holder = subprocess.Popen(
        [system.require_tool("unshare"), "--user", "/bin/sh", "-c", "read _"],
        stdin=subprocess.PIPE,
    )
    try:
        own = os.readlink("/proc/self/ns/user")

        def entered(_: bool) -> bool | None:
            if os.readlink(f"/proc/{holder.pid}/ns/user") != own:
                return True
            return False if holder.poll() is not None else None

        if not retry_until(entered, timeout, 0.001):
            raise PrerequisiteError("unshare --user did not make a user namespace")
        Path(f"/proc/{holder.pid}/uid_map").write_text(uid_map)
        Path(f"/proc/{holder.pid}/gid_map").write_text(gid_map)
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()


def mount_idmapped(source: Path, target: Path, uids: IdMap, gids: IdMap) -> None:
    """Mount ``source`` at ``target`` (a directory that exists) seen through these maps,
    nosuid and nodev."""
    tree = _check(
        _libc.syscall(
            SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
        ),
        f"open_tree({source})",
    )
    try:
        userns = user_namespace(uids, gids)
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, userns)
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            f"mount_setattr(idmap) of {source}",
        )  # fmt: skip
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"move_mount({source} -> {target})",
        )
    finally:
        os.close(tree)
