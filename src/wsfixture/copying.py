"""Files between the host and a workspace, over the pinned session's SFTP.

Copying out crosses a trust boundary: the guest (root inside included) chooses what the
remote path is and, through a share, what lies at the host path. So the host side never
follows the last component of its target: each file is written to a new name created
``O_CREAT|O_EXCL|O_NOFOLLOW`` in the target's directory (opened once; everything after is
relative to it) and renamed into place, so a link the guest planted there is replaced,
never written through. A remote file is read up to a bound, its own size as ``stat``
said or ``max_bytes``: a link to ``/dev/zero`` is not a regular file and is refused, a
file that grows past its size is refused. What is copied must fit in the target's free
space. A directory is copied with ``recursive`` (its links as links, no special files),
each entry under the same guards. The host's modes are the guest's, without setuid,
setgid or sticky bits; the files are the host user's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from wsfixture.errors import WsfixtureError
from wsfixture.model.fields import SIZE_RE

CHUNK = 1 << 18
PLAIN_MODE = 0o777  # what of a guest file's mode the host copy keeps


class CopyError(WsfixtureError):
    """A copy into or out of a workspace that cannot be done; nothing half-written of
    it is left."""

    def __init__(self, name: str, path: str, reason: str) -> None:
        super().__init__(f"cp {name}:{path}: {reason}")


@dataclass
class Copied:
    """What a copy did: files and bytes, and what it left out (special files)."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def parse_size(text: str) -> int:
    """Bytes from ``--max``: a number, or with a unit (``100M``, ``2GiB``: powers of 1024)."""
    match = SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(f"--max: not a size (got {text!r}); allowed: bytes, or 100K, 20M, 2G")
    unit = (match.group(2) or " ")[0].upper()
    return int(match.group(1)) * {" ": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]


def get(
    sftp: paramiko.SFTPClient,
    name: str,
    remote: str,
    local: Path,
    recursive: bool = False,
    max_bytes: int | None = None,
) -> Copied:
    """Copy ``remote`` of workspace ``name`` to ``local`` (into it, as ``cp`` does, if it
    is a real directory), under the module's guards."""
    with _said(name, remote):
        attrs = sftp.stat(remote)
    target_dir, target_name = local, posixpath.basename(remote.rstrip("/")) or "root"
    if not _is_real_dir(local):
        target_dir, target_name = local.parent, local.name
    done = Copied()
    with _directory(target_dir, name, remote) as dir_fd, _said(name, remote):
        if stat.S_ISDIR(attrs.st_mode or 0):
            if not recursive:
                raise CopyError(name, remote, "is a directory; cp -r (recursive=True) copies it")
            total = sum(a.st_size or 0 for _, a in _walk(sftp, remote))
            _check_room(dir_fd, total, max_bytes, name, remote)
            _get_tree(sftp, name, remote, dir_fd, target_name, done)
        elif stat.S_ISREG(attrs.st_mode or 0):
            _check_room(dir_fd, attrs.st_size or 0, max_bytes, name, remote)
            _get_file(sftp, name, remote, attrs, dir_fd, target_name, max_bytes, done)
        else:
            raise CopyError(name, remote, "is not a regular file or a directory (a device, "
                            "FIFO or socket, or a link to one): not copied")  # fmt: skip
    return done


@contextlib.contextmanager
def _said(name: str, remote: str) -> Iterator[None]:
    """What SFTP refused (a directory the workspace user cannot read), as a CopyError."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise CopyError(name, remote, f"{exc.strerror or exc}{where}") from None


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _directory(path: Path, name: str, remote: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CopyError(name, remote, f"the target directory {path}: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _check_room(dir_fd: int, need: int, max_bytes: int | None, name: str, remote: str) -> None:
    if max_bytes is not None and need > max_bytes:
        raise CopyError(name, remote, f"{need} bytes, over the bound of {max_bytes} (--max)")
    fs = os.fstatvfs(dir_fd)
    if need > fs.f_bavail * fs.f_frsize:
        raise CopyError(name, remote, f"{need} bytes would not fit in the target's "
                        f"{fs.f_bavail * fs.f_frsize} free bytes")  # fmt: skip


def _walk(sftp: paramiko.SFTPClient, top: str) -> Iterator[tuple[str, paramiko.SFTPAttributes]]:
    """Every entry under ``top`` as the guest lists it (lstat: links not followed)."""
    for attrs in sftp.listdir_attr(top):
        path = posixpath.join(top, attrs.filename)
        yield path, attrs
        if stat.S_ISDIR(attrs.st_mode or 0):
            yield from _walk(sftp, path)


def _get_tree(
    sftp: paramiko.SFTPClient, name: str, remote: str, dir_fd: int, target: str, done: Copied
) -> None:
    try:
        os.mkdir(target, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass  # a real directory is merged into; anything else fails the open below
    except OSError as exc:
        raise CopyError(name, remote, f"making {target}: {exc.strerror}") from None
    try:
        sub = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=dir_fd)  # fmt: skip
    except OSError as exc:
        raise CopyError(name, remote, f"{target} is not a directory here: {exc.strerror}") from None
    try:
        for attrs in sftp.listdir_attr(remote):
            path, mode = posixpath.join(remote, attrs.filename), attrs.st_mode or 0
            if stat.S_ISDIR(mode):
                _get_tree(sftp, name, path, sub, attrs.filename, done)
            elif stat.S_ISREG(mode):
                _get_file(sftp, name, path, attrs, sub, attrs.filename, None, done)
            elif stat.S_ISLNK(mode):
                link = sftp.readlink(path) or ""
                make = functools.partial(_symlink, link, dir_fd=sub)
                _place(sub, attrs.filename, make, name, path)
                done.files += 1
            else:
                done.skipped.append(path)
        os.fchmod(sub, stat.S_IMODE(sftp.stat(remote).st_mode or 0o700) & PLAIN_MODE)
    finally:
        os.close(sub)


def _symlink(link: str, tmp: str, dir_fd: int) -> None:
    os.symlink(link, tmp, dir_fd=dir_fd)


def _get_file(
    sftp: paramiko.SFTPClient, name: str, remote: str, attrs: paramiko.SFTPAttributes,
    dir_fd: int, target: str, max_bytes: int | None, done: Copied,
) -> None:  # fmt: skip
    bound = (attrs.st_size or 0) if max_bytes is None else max_bytes
    mode = stat.S_IMODE(attrs.st_mode or 0o600) & PLAIN_MODE

    def write(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)  # fmt: skip
        with os.fdopen(fd, "wb") as out, sftp.open(remote, "rb") as source:
            got = 0
            while chunk := source.read(min(CHUNK, bound + 1 - got)):
                got += len(chunk)
                if got > bound:
                    raise CopyError(name, remote, f"grew past {bound} bytes while it was read "
                                    "(its size, or --max): not copied")  # fmt: skip
                out.write(chunk)
            os.fchmod(out.fileno(), mode)
        done.bytes += got

    _place(dir_fd, target, write, name, remote)
    done.files += 1


def _place(dir_fd: int, target: str, make: Callable[[str], None], name: str, remote: str) -> None:
    """Make ``target`` in ``dir_fd`` through ``make(temporary name)``, then rename it over
    whatever is there (a link is replaced, not followed); on failure nothing is left."""
    tmp = f".{target[:100]}.wsfixture-{secrets.token_hex(6)}"
    try:
        make(tmp)
        os.rename(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            raise CopyError(name, remote, f"writing {target} failed: {exc.strerror}") from None
        raise


def put(
    sftp: paramiko.SFTPClient, name: str, local: Path, remote: str, recursive: bool = False
) -> Copied:
    """Copy a host file (or, with ``recursive``, a directory) to ``remote``."""
    done = Copied()
    try:
        if local.is_dir():
            if not recursive:
                raise CopyError(name, remote, f"{local} is a directory; cp -r copies it")
            _put_tree(sftp, local, remote, done)
        else:
            sftp.put(str(local), remote)
            done.files, done.bytes = 1, local.stat().st_size
    except OSError as exc:
        raise CopyError(name, remote, f"{local}: {exc.strerror or exc}") from None
    return done


def _put_tree(sftp: paramiko.SFTPClient, local: Path, remote: str, done: Copied) -> None:
    with contextlib.suppress(OSError):  # it may be there already
        sftp.mkdir(remote)
    for child in sorted(local.iterdir()):
        target = posixpath.join(remote, child.name)
        if child.is_symlink():
            sftp.symlink(os.readlink(child), target)
        elif child.is_dir():
            _put_tree(sftp, child, target, done)
        elif child.is_file():
            sftp.put(str(child), target)
            done.files, done.bytes = done.files + 1, done.bytes + child.stat().st_size
        else:
            done.skipped.append(str(child))
