"""Images and VM templates through a file: ``wsfixture images export`` and ``import``, for
CI caches (actions/cache, GitLab's cache) and hosts without a network.

The file is a POSIX (pax) tar written by GNU tar: numeric owners, modes, every extended
attribute (file capabilities included: a container image is stored shifted to uid 2^30
with v3 capabilities, which a tar made as a runner user would lose), sparse files kept
sparse, hard links kept (a template links its image's files). Its first member,
``MANIFEST``, lists each entry (kind, key) and every file's type, owner, mode, size,
extended attributes and, for a regular file, SHA-256.

An archive is hostile input (``image.archive``): its manifest and every member are
checked before anything is unpacked, and room is made for it (or it is refused) first.
An import then unpacks into a private staging directory in the cache (in a ledger record:
``gc`` reaps a killed import), checks every file against the manifest, and only then
renames each entry into place; an entry the cache has already is kept as it is. A failure
(a full disk, a file not as listed) leaves nothing behind and says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from wsfixture.host import ledger, settings, system
from wsfixture.image import archive, cache, store, templates
from wsfixture.image.archive import FORMAT, MANIFEST, Entry, TransferError

__all__ = ["Entry", "TransferError", "entries_for", "export", "export_entries", "import_"]

TAR_FLAGS = ["--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner"]


def entries_for(keys: list[str], cache_dir: Path | None = None) -> list[Entry]:
    """What exporting ``keys`` takes: each image with its base, each template with its
    image (a template is restored only over the very build it was made from). A key the
    cache does not have is a TransferError naming it."""
    root = cache_dir or settings.current().cache_dir
    images = {i.key: i for i in cache.cached_images(root)}
    found = {t.key: t for t in cache.cached_templates(root)}
    wanted: dict[str, Entry] = {}

    def add_image(key: str) -> None:
        image = images[key]
        wanted.setdefault(key, Entry("image", key))
        if image.base_key:
            add_image(image.base_key)

    for key in keys:
        if key in images:
            add_image(key)
        elif key in found and (shape := found[key].shape) and shape.image_key in images:
            wanted.setdefault(key, Entry("template", key))
            add_image(shape.image_key)
        else:
            raise TransferError(key, "the cache has no such image or VM template, or not its image")
    return sorted(wanted.values(), key=lambda e: (e.kind != "image", e.key))


def facts_of(root: Path, entries: list[Entry], digests: bool = True) -> dict[str, dict[str, Any]]:
    """Every file of the entries under ``root``, by relative path: what an import checks
    (``digests``: with each regular file's SHA-256, a hard link's read once)."""
    facts: dict[str, dict[str, Any]] = {}
    hashed: dict[tuple[int, int], str] = {}
    for entry in entries:
        top = root / entry.relative
        for directory, dirs, files in os.walk(top):
            for name in [*dirs, *files, *([""] if directory == str(top) else [])]:
                path = Path(directory) / name if name else Path(directory)
                facts[str(path.relative_to(root))] = _facts(path, hashed if digests else None)
    return facts


def _facts(path: Path, hashed: dict[tuple[int, int], str] | None) -> dict[str, Any]:
    st = os.lstat(path)
    fact: dict[str, Any] = {
        "type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid, "gid": st.st_gid,
        "xattrs": {name: os.getxattr(path, name, follow_symlinks=False).hex()
                   for name in sorted(os.listxattr(path, follow_symlinks=False))},
    }  # fmt: skip
    if stat.S_ISREG(st.st_mode):
        fact["size"] = st.st_size
        if hashed is not None:
            inode = (st.st_dev, st.st_ino)
            if inode not in hashed:
                with open(path, "rb") as stream:
                    hashed[inode] = hashlib.file_digest(stream, "sha256").hexdigest()
            fact["sha256"] = hashed[inode]
    elif stat.S_ISLNK(st.st_mode):
        fact["link"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        fact["rdev"] = st.st_rdev
    return fact


def differences(wanted: dict[str, dict[str, Any]], found: dict[str, dict[str, Any]]) -> list[str]:
    """How ``found`` differs from ``wanted``, file by file (the first few)."""
    problems = [f"{path}: missing" for path in sorted(set(wanted) - set(found))]
    problems += [f"{path}: not in the manifest" for path in sorted(set(found) - set(wanted))]
    for path in sorted(set(wanted) & set(found)):
        for field, value in wanted[path].items():
            if found[path].get(field) != value:
                problems.append(f"{path}: {field} is {found[path].get(field)!r}, not {value!r}")
    return problems


def export(keys: list[str], target: Path, cache_dir: Path | None = None) -> list[Entry]:
    """Write ``keys``' entries (``entries_for``) into the tar ``target``, whole or not at
    all (made beside it and renamed)."""
    root = cache_dir or settings.current().cache_dir
    entries = entries_for(keys, root)
    export_entries(entries, target, root)
    return entries


def export_entries(entries: list[Entry], target: Path, root: Path) -> None:
    """Write exactly ``entries`` of the cache at ``root`` into the tar ``target``."""
    manifest = {"format": FORMAT, "entries": [e.__dict__ for e in entries],
                "files": facts_of(root, entries)}  # fmt: skip
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / MANIFEST).write_text(json.dumps(manifest))
        try:
            system.run([system.require_tool("tar"), "--create", "--sparse", *TAR_FLAGS,
                        "--file", str(partial), "-C", scratch, MANIFEST, "-C", str(root),
                        *(str(e.relative) for e in entries)])  # fmt: skip
            partial.rename(target)
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, system.HostCommandError):
                raise TransferError(str(target), f"writing it failed: {exc}") from None
            raise


def import_(
    source: Path,
    cache_dir: Path | None = None,
    locked: bool = False,
    expected: list[Entry] | None = None,
) -> list[tuple[Entry, str]]:
    """Unpack ``source`` into the cache, checked against its manifest first; each entry
    with what became of it ("imported", or "present, kept"). ``locked``: the caller
    holds the entries' locks (it is making the one entry the file holds). ``expected``:
    the entries it must hold, no other (a registry's artifact holds the one it is tagged
    by: another entry in it would poison the cache)."""
    system.require_root()  # owners and capabilities are set as they were
    root = store.private_dirs(cache_dir)
    held = archive.read_manifest(source).entries
    if (expected is None or held == expected) and all(present(e, root) for e in held):
        return [(entry, PRESENT) for entry in held]  # nothing to read through, nor write
    manifest = archive.check(source)  # before a byte of it is unpacked
    if expected is not None and manifest.entries != expected:
        listed = ", ".join(f"{e.kind} {e.key}" for e in manifest.entries)
        wanted = ", ".join(f"{e.kind} {e.key}" for e in expected)
        raise TransferError(str(source), f"it holds {listed}, not {wanted}: refused")
    if short := cache.make_room(_size(source), f"the import of {source}", root):
        raise TransferError(str(source), short)
    staging = root / f".import{store.STAGING_MARK}{os.getpid()}"
    info = ledger.BuildInfo("import", str(staging))
    record = ledger.Record.create(f"import-{os.getpid()}", info)
    record.add_dir(staging)
    try:
        system.remove_tree(staging)
        system.private_dir(staging)
        try:
            system.run([system.require_tool("tar"), "--extract", *TAR_FLAGS, "--same-owner",
                        "--same-permissions", "--file", str(source),
                        "-C", str(staging)])  # fmt: skip
        except system.HostCommandError as exc:
            raise TransferError(
                str(source), f"unpacking it failed, nothing was imported: {exc}"
            ) from None
        entries = manifest.entries
        problems = [f"{path}: not in the manifest" for path in _strays(staging, entries)]
        problems += differences(manifest.files, facts_of(staging, entries))
        if problems:
            more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise TransferError(
                str(source), f"not as its manifest says, nothing was imported: "
                f"{'; '.join(problems[:5])}{more}",
            )  # fmt: skip
        return [(entry, _place(staging, root, entry, locked)) for entry in entries]
    finally:
        system.remove_tree(staging)
        ledger.release(record)


def _strays(staging: Path, entries: list[Entry]) -> list[str]:
    """What the unpacking made in ``staging`` beside the manifest and the entries (tar
    and the check read the archive alike, or this is where they did not)."""
    wanted = {Path(MANIFEST), *(e.relative.parent for e in entries), *(e.relative for e in entries)}
    return sorted(
        str(path.relative_to(staging))
        for path in [*staging.iterdir(), *(p for d in ("images", "templates")
                                           for p in (staging / d).glob("*"))]
        if path.relative_to(staging) not in wanted
    )  # fmt: skip


def _size(source: Path) -> int:
    try:
        return source.stat().st_size
    except OSError as exc:
        raise TransferError(str(source), f"cannot be read: {exc.strerror}") from None


PRESENT = "present, kept"


def present(entry: Entry, root: Path) -> bool:
    """Whether the cache at ``root`` holds ``entry`` whole (its ready marker written)."""
    marker = store.READY if entry.kind == "image" else templates.META
    return (root / entry.relative / marker).exists()  # a checked key: one component


def _place(staging: Path, root: Path, entry: Entry, locked: bool) -> str:
    """Rename one checked entry into the cache, under its lock, unless it is there."""
    target = root / entry.relative  # a checked key: one component under images/ or templates/
    with contextlib.nullcontext() if locked else store.locked(store.lock_path(target)):
        if present(entry, root):
            return PRESENT
        system.remove_tree(target)  # a half entry without its marker
        unpacked = staging / entry.relative
        unpacked.chmod(0o700)
        try:
            unpacked.rename(target)
        except OSError as exc:
            raise TransferError(str(target), f"placing it failed: {exc.strerror}") from None
    return "imported"
