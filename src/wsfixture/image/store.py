"""The cache's layout on disk, declared once: where images and VM templates live, the
stamps that say an entry is finished and when it was last used, and the protocol every
entry is made by.

An entry ``<root>/<key>/`` is made in ``<key>.building-<pid>`` under an exclusive lock on
``<key>.lock``, listed in a ledger record while it is made (so ``gc`` reaps a killed
build), and renamed into place when done: a crash never leaves a half entry that looks
finished. Images say they are finished with a ``ready`` stamp, templates with their
``template.json``; both are touched ``used`` on every use, for pruning.

The cache is root's alone: its top directory, ``images/``, ``templates/`` and every entry
are 0700. An image's tree holds what its guest release ships; its privileged files are no
host privilege (``image.setid``: a VM tree holds none, a container tree's are the
containers' root's), and the 0700 keeps the rest of it private.

A key is one path component of the grammar ``KEY``: the one check a key from outside (an
archive's manifest, a registry's index) passes before it names anything on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from wsfixture.errors import CleanupError, ImageBuildError
from wsfixture.host import ledger, settings, system

READY = "ready"  # an image's "finished" stamp: the time it was built
USED = "used"  # touched on every use
BASE_READY = "base-ready"  # a layer's copy of its base's READY stamp
RECIPE = "recipe.json"  # an image's recipe, as the key was made of it
STAGING_MARK = ".building-"
# What every key is made of: ``trixie-container-0123abcd...``, a template's
# ``<image key>-x86_64-1c768m-<digest>``. One component: no "/", never "." or "..".
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\Z")


def valid_key(key: object) -> bool:
    return isinstance(key, str) and KEY.match(key) is not None


def private_dirs(cache_dir: Path | None = None) -> Path:
    """The cache's top directory, ``images/`` and ``templates/``, made 0700 (an older
    cache's 0755 ones too); the top."""
    for directory in (images_dir(cache_dir), templates_dir(cache_dir)):
        system.private_dir(directory.parent)
        system.private_dir(directory)
    return images_dir(cache_dir).parent


def images_dir(cache_dir: Path | None = None) -> Path:
    return settings.current().images_dir if cache_dir is None else cache_dir / "images"


def templates_dir(cache_dir: Path | None = None) -> Path:
    return settings.current().templates_dir if cache_dir is None else cache_dir / "templates"


def lock_path(entry: Path) -> Path:
    """``<key>.lock`` beside the entry: exclusive to make or remove it."""
    return entry.with_name(f"{entry.name}.lock")


LOCK_RETRIES = 100  # a lock file unlinked under a waiter this many times in a row: give up


@contextlib.contextmanager
def locked(path: Path, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold ``flock`` on the lock file ``path`` (exclusive, or ``shared``) for the body;
    it gets whether it holds it (False only where ``wait`` is off and another holds it).
    The one way every cache lock is taken. A remover unlinks a lock file only while it
    holds it (as ``remove`` does): a waiter that then gets the unlinked file's lock sees that
    ``path`` is no longer that file, and locks the one there now, so two processes never
    both hold "the" lock of one name."""
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    for _ in range(LOCK_RETRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the file we waited on was unlinked: lock the one there now
    else:
        raise ImageBuildError(str(path), f"lock file unlinked under us {LOCK_RETRIES} times")
    try:
        yield True
    finally:
        os.close(fd)


def staging_path(entry: Path, pid: int | None = None) -> Path:
    return entry.with_name(f"{entry.name}{STAGING_MARK}{pid or os.getpid()}")


def entry_key(path: Path) -> str:
    """The key of the entry ``path`` is, or is being made in (a staging directory)."""
    return path.name.split(STAGING_MARK)[0]


def is_staging(path: Path) -> bool:
    return STAGING_MARK in path.name


def staging_dirs(root: Path) -> list[Path]:
    """The half-made entries under ``root``, of any process."""
    return (
        [p for p in sorted(root.glob(f"*{STAGING_MARK}*")) if p.is_dir()] if root.is_dir() else []
    )


def ready_stamp(entry: Path) -> str:
    """An image's READY stamp (OSError if it has none): what a layer or a template
    records of the very build it stands on."""
    return (entry / READY).read_text()


def mark_used(entry: Path) -> None:
    with contextlib.suppress(OSError):  # only pruning reads it
        (entry / USED).touch()


def finished(root: Path, marker: str) -> list[tuple[Path, float]]:
    """Every finished entry under ``root`` (one holding ``marker``; half-made ones belong
    to their maker), with when it was last used (seconds since the epoch)."""
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if not entry.is_dir() or is_staging(entry) or not (entry / marker).exists():
            continue
        found.append((entry, last_used(entry, marker)))
    return found


def last_used(entry: Path, marker: str) -> float:
    """When a finished entry was last used: its use stamp, else when it was finished
    (OSError if it has neither)."""
    stamp = entry / USED
    return (stamp if stamp.exists() else entry / marker).stat().st_mtime


def remove(entry: Path, marker: str, idle_since: float | None = None) -> bool:
    """Remove a finished cache entry under its lock (not while someone makes it); whether
    it went. With ``idle_since`` (making room), not if someone holds the lock now (it is
    being made, removed or restored) or it was used after that time."""
    with locked(lock_path(entry), wait=idle_since is None) as held:
        if not held:
            return False
        if idle_since is not None:
            try:
                used = last_used(entry, marker)
            except OSError:
                return False  # removed meanwhile
            if used != idle_since:
                return False  # used (or made anew) since
        remove_held(entry, marker)
    return True


def remove_held(entry: Path, marker: str) -> None:
    """Remove ``entry`` and its lock file, whose lock the caller holds (``locked``)."""
    (entry / marker).unlink(missing_ok=True)  # no longer looks finished
    system.remove_tree(entry)
    lock_path(entry).unlink(missing_ok=True)  # held: a waiter sees it went (``locked``)


@contextlib.contextmanager
def staged(entry: Path, record_name: str, info: ledger.BuildInfo) -> Iterator[ledger.Record]:
    """Make ``entry`` in its staging directory (``staging_path``; the body creates it and
    fills it), listed in a ledger record the body may add its processes and cgroups to;
    renamed into place when the body ends. If it fails, nothing of it stays. The caller
    holds the entry's lock, and releases (or forgets) the record afterwards."""
    staging = Path(info.staging)
    system.remove_tree(staging)
    system.remove_tree(entry)
    record = ledger.Record.create(record_name, info)
    record.add_dir(staging)
    try:
        yield record
        staging.chmod(0o700)
        staging.rename(entry)
    except BaseException as exc:
        if failures := ledger.release(record):
            exc.add_note(str(CleanupError(failures)))
        raise
