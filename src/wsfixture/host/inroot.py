"""Reading and writing a guest path inside an image tree on the host, never outside it.

Joining a guest path onto a tree (``root / path``) lets the tree's own symlinks lead the host
elsewhere: ``/var/run`` is ``-> /run`` in a Debian image, which on the host is the host's
``/run``. Every lookup here is ``openat2`` with ``RESOLVE_IN_ROOT``: the kernel resolves the
path as a process chrooted at the tree would (absolute links and ``..`` stay inside), and
the last component is never followed (a file is replaced, not written through a link).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path, PurePosixPath

SYS_OPENAT2 = 437  # the same on x86_64 and arm64
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH, RESOLVE_IN_ROOT = (
    0x02,
    0x04,
    0x08,
    0x10,
)
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(
    dirfd: int, path: str, flags: int, mode: int = 0,
    resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
) -> int:  # fmt: skip
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = int(_libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), 24))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _parts(guest_path: str) -> tuple[str, str]:
    """(parent, name) of an absolute guest path with a last component."""
    path = PurePosixPath(guest_path)
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise ValueError(f"not an absolute path to a file: {guest_path!r}")
    return str(path.parent), path.name


def _parent_fd(root: Path, parent: str, owner: int | None) -> int:
    """An fd of ``parent`` in ``root``, each missing directory made (0755, ``owner``'s).
    Every prefix is resolved from the tree's own root, so a link met on the way (``/var/run
    -> /run``) resolves as it would inside the tree."""
    top = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = PurePosixPath(parent).parts[1:]
        fd = os.dup(top)
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            try:
                step = _openat2(top, prefix, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                if owner is None:
                    os.close(fd)
                    raise
                try:
                    os.mkdir(parts[depth - 1], 0o755, dir_fd=fd)
                except FileExistsError:
                    os.close(fd)
                    raise NotADirectoryError(
                        f"/{prefix} in {root} is a link to a directory the tree does not have"
                    ) from None
                os.chown(parts[depth - 1], owner, owner, dir_fd=fd, follow_symlinks=False)
                step = _openat2(top, prefix, os.O_PATH | os.O_DIRECTORY)
            os.close(fd)
            fd = step
        return fd
    finally:
        os.close(top)


def open_literal(root: Path, relative: str, flags: int) -> int:
    """An fd of ``relative`` under ``root`` where no component is a link, the last one
    included (``O_NOFOLLOW``: a link is opened as itself with ``O_PATH``); OSError
    otherwise (ELOOP where one is). The step a caller takes to walk links itself."""
    directory = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _openat2(directory, relative, flags | os.O_NOFOLLOW, 0,
                        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)  # fmt: skip
    finally:
        os.close(directory)


def stat(root: Path, guest_path: str) -> os.stat_result:
    """What ``guest_path`` in the tree is (a link in it resolved inside the tree)."""
    directory = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(directory, guest_path, os.O_PATH)
    finally:
        os.close(directory)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def make_dir(
    root: Path, guest_path: str, mode: int, uid: int, gid: int, parents_owner: int
) -> None:
    """``guest_path`` in the tree as a directory of this mode and owner (made if missing,
    its missing parents ``parents_owner``'s)."""
    path_fd = _parent_fd(root, guest_path, parents_owner)
    try:
        directory = _openat2(path_fd, ".", os.O_RDONLY | os.O_DIRECTORY)  # O_PATH has no fchown
    finally:
        os.close(path_fd)
    try:
        os.fchown(directory, uid, gid)
        os.fchmod(directory, mode)
    finally:
        os.close(directory)


def read_text(root: Path, guest_path: str) -> str:
    """The text of ``guest_path`` in the tree (a link in it resolved inside the tree)."""
    directory = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(directory, guest_path, os.O_RDONLY)
    finally:
        os.close(directory)
    with os.fdopen(fd) as handle:
        return handle.read()


def write(
    root: Path, guest_path: str, content: bytes, mode: int, uid: int, gid: int,
    parents_owner: int | None = None,
) -> None:  # fmt: skip
    """Put ``content`` at ``guest_path`` in the tree as a new regular file with this mode
    and owner, replacing what was there (a link too, which is not followed). Missing parent
    directories are made, ``parents_owner``'s; without one they must exist."""
    parent, name = _parts(guest_path)
    directory = _parent_fd(root, parent, parents_owner)
    try:
        try:
            os.unlink(name, dir_fd=directory)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise IsADirectoryError(f"{guest_path} is a directory in {root}") from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
    finally:
        os.close(directory)
