"""What an export archive may hold, checked before a byte of it is unpacked.

An archive comes from outside (a CI cache file, a registry's blob) and is read as hostile:
whoever wrote it chose its manifest, its member names, its links, owners and modes, and
the import runs as host root. Before GNU tar writes anything, ``check`` refuses:

- a manifest that is not the grammar's: entries of a known kind, each key one path
  component (``store.KEY``), no entry twice; files only under their entry;
- a member not in the manifest, or a manifest file that is not a member, or one twice;
- a member name that climbs (``..``), is absolute, or passes through a link: a symlink or
  hard link member can never be the directory of a later member, so nothing is written
  outside the staging directory through one;
- a hard link to anything but an earlier regular member of the archive;
- a device node, FIFO or socket (an overlay whiteout, a 0:0 character device, is a
  layer's deletion and is kept);
- privilege on the host: a setuid or setgid file owned by host root, a file capability
  but one namespaced to the containers' root, and in a VM image's guest tree (``root/``,
  ``layer/``, owned as the guest owns it) any setuid or setgid file: its ``su`` and ``ping``
  keep theirs in its disk and in ``setid.json`` (``image.setid``), never on the host;
- in a container image's tree, an owner outside the containers' uid range (its tree is
  stored shifted: host root owns nothing there, so nothing there is host root's setuid),
  but for a layer's whiteouts, which overlayfs makes as the mounter, host root.

After the unpacking every file is checked against the manifest (``transfer``), so what
was checked here is what lies on disk.
"""

from __future__ import annotations

import fnmatch
import json
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from wsfixture.errors import ImageBuildError
from wsfixture.image import store
from wsfixture.model.share_ids import CONTAINER_UID_BASE

MANIFEST = "wsfixture-export.json"
FORMAT = 1
KINDS = {"image": "images", "template": "templates"}  # kind -> its directory in the cache
MANIFEST_LIMIT = 64 << 20  # the largest image tree's manifest seen here is ~8 MiB
MAX_ENTRIES = 1000
CONTAINER_IDS = range(CONTAINER_UID_BASE, CONTAINER_UID_BASE + 0x10000)
GUEST_TREES = ("root", "layer")  # an image's guest files, as the guest owns them
FACT_FIELDS = {"type", "mode", "uid", "gid", "xattrs", "size", "sha256", "link", "rdev"}
TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR}  # a CHR only as a whiteout
CAPS_XATTR = "security.capability"


class TransferError(ImageBuildError):
    """An export or import that cannot be done; nothing of it was left behind."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what, reason)


@dataclass(frozen=True)
class Entry:
    kind: str  # "image" or "template"
    key: str

    @property
    def relative(self) -> Path:
        return Path(KINDS[self.kind]) / self.key

    @property
    def flavour(self) -> str | None:
        """An image's flavour, from its key (``<suite>-<flavour>-<digest>``)."""
        parts = self.key.rsplit("-", 2)
        return parts[1] if self.kind == "image" and len(parts) == 3 else None


@dataclass(frozen=True)
class Manifest:
    entries: list[Entry]
    files: dict[str, dict[str, Any]]


def read_manifest(source: Path) -> Manifest:
    """The archive's manifest alone (its first member), parsed as hostile; nothing after
    it is read (what to skip is known before a large archive is read through)."""
    try:
        with tarfile.open(source, "r:") as archive:
            return _manifest(archive, source)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise TransferError(str(source), f"not a readable tar archive: {exc}") from None


def check(source: Path) -> Manifest:
    """The archive's manifest, once the archive is shown to hold only what may be
    unpacked (the module's rules); TransferError naming the first thing that may not."""
    try:
        with tarfile.open(source, "r:") as archive:
            manifest = _manifest(archive, source)
            members = iter(archive)
            next(members)  # the manifest itself
            check_members(members, manifest, str(source))
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise TransferError(str(source), f"not a readable tar archive: {exc}") from None
    return manifest


def _manifest(archive: tarfile.TarFile, source: Path) -> Manifest:
    first = archive.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise TransferError(str(source), f"not a wsfixture export ({MANIFEST} first)")
    if first.size > MANIFEST_LIMIT:
        raise TransferError(str(source), f"its {MANIFEST} is over {MANIFEST_LIMIT} bytes")
    stream = archive.extractfile(first)
    assert stream is not None  # a regular member
    return parse_manifest(stream.read(), str(source))


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest's text, checked field by field (nothing from it names a path until
    it has passed)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise TransferError(where, f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise TransferError(where, f"{MANIFEST} is not a JSON object")
    if document.get("format") != FORMAT:
        raise TransferError(
            where, f"export format {document.get('format')!r}; this wsfixture reads {FORMAT}"
        )
    listed, files = document.get("entries"), document.get("files")
    if not isinstance(listed, list) or not listed or len(listed) > MAX_ENTRIES:
        raise TransferError(
            where, f"entries: a list of 1 to {MAX_ENTRIES} entries, not {listed!r:.80}"
        )
    entries = [_entry(item, where) for item in listed]
    if len(set(entries)) != len(entries):
        raise TransferError(where, "entries: one entry is listed twice")
    if not isinstance(files, dict):
        raise TransferError(where, "files: not an object of path -> facts")
    tops = _tops(entries)
    for path, fact in files.items():
        entry = _owning_entry(path, tops, where)
        _check_fact(path, fact, entry, where)
    for top in tops:
        fact = files.get(str(top))
        if not isinstance(fact, dict) or fact.get("type") != stat.S_IFDIR:
            raise TransferError(where, f"{top}: an entry's top must be listed as a directory")
    return Manifest(entries, files)


def _entry(item: object, where: str) -> Entry:
    if not isinstance(item, dict) or set(item) != {"kind", "key"}:
        raise TransferError(where, f"entries: {item!r:.120} is not {{kind, key}}")
    kind, key = item["kind"], item["key"]
    if kind not in KINDS:
        raise TransferError(where, f"entries: kind {kind!r:.40}; allowed: {', '.join(KINDS)}")
    if not store.valid_key(key):
        raise TransferError(
            where, f"entries: key {key!r:.120} is not a cache key (one path component: "
            f"{store.KEY.pattern})",
        )  # fmt: skip
    return Entry(kind, key)


def _tops(entries: list[Entry]) -> dict[PurePosixPath, Entry]:
    """Each entry by its top directory in the archive (``images/<key>``)."""
    return {PurePosixPath(*e.relative.parts): e for e in entries}


def _owning_entry(path: object, tops: dict[PurePosixPath, Entry], where: str) -> Entry:
    """The entry ``path`` lies in; TransferError unless it is a plain relative path
    inside one (no ``..``, ``.``, empty or absolute part)."""
    if not isinstance(path, str) or not path:
        raise TransferError(where, f"files: {path!r:.120} is not a path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        raise TransferError(where, f"files: {path!r:.120} is not a plain relative path")
    entry = tops.get(PurePosixPath(*parts[:2]))
    if entry is None:
        raise TransferError(where, f"files: {path!r:.120} is in none of the entries")
    return entry


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_fact(path: str, fact: object, entry: Entry, where: str) -> None:
    """One file's facts: well-formed, and allowed where it lies (the module's rules)."""
    if not isinstance(fact, dict) or not set(fact) <= FACT_FIELDS:
        raise TransferError(
            where, f"files: {path}: its facts are not an object of {sorted(FACT_FIELDS)}"
        )
    kind, mode, uid, gid = fact.get("type"), fact.get("mode"), fact.get("uid"), fact.get("gid")
    if kind not in TYPES or not _is_int(mode, 0, 0o7777):
        raise TransferError(where, f"files: {path}: type {kind!r} mode {mode!r}: not a "
                            "regular file, directory, symlink or whiteout with a mode")  # fmt: skip
    if not _is_int(uid, 0, 2**32 - 2) or not _is_int(gid, 0, 2**32 - 2):
        raise TransferError(where, f"files: {path}: owner {uid!r}:{gid!r} is not numeric")
    xattrs = fact.get("xattrs", {})
    if not isinstance(xattrs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in xattrs.items()
    ):
        raise TransferError(where, f"files: {path}: xattrs are not name -> hex")
    if kind == stat.S_IFCHR and fact.get("rdev") != 0:
        raise TransferError(where, f"files: {path}: a device node (rdev {fact.get('rdev')!r}); "
                            "only overlay whiteouts (0:0) are imported")  # fmt: skip
    if kind == stat.S_IFREG and not _is_int(fact.get("size"), 0, 2**63):
        raise TransferError(where, f"files: {path}: a regular file without a size")
    if kind == stat.S_IFLNK and not isinstance(fact.get("link"), str):
        raise TransferError(where, f"files: {path}: a symlink without a target")
    mode, uid, gid = fact["mode"], fact["uid"], fact["gid"]  # numbers: checked above
    if unknown := sorted(name for name in xattrs if not _known_xattr(name)):
        raise TransferError(where, f"files: {path}: extended attribute {unknown[0]!r:.80}; "
                            f"allowed: {', '.join(XATTRS)}")  # fmt: skip
    parts = path.split("/")
    in_tree = len(parts) > 2 and parts[2] in GUEST_TREES
    if (
        entry.flavour == "container"
        and in_tree
        and (uid not in CONTAINER_IDS or gid not in CONTAINER_IDS)
        and kind != stat.S_IFCHR  # a whiteout (0:0, checked above): overlayfs makes it as root
    ):
        raise TransferError(where, f"files: {path}: owner {uid}:{gid} in a container image's "
                            f"tree; allowed: the containers' ids {CONTAINER_IDS.start}-"
                            f"{CONTAINER_IDS.stop - 1}")  # fmt: skip
    vm_tree = in_tree and entry.flavour == "vm"
    privileged = (mode & stat.S_ISUID and uid == 0) or (mode & stat.S_ISGID and gid == 0)
    # (A setgid directory, as /var/mail, only hands its group to what is made in it.)
    setid_file = kind == stat.S_IFREG and mode & (stat.S_ISUID | stat.S_ISGID)
    if privileged or (vm_tree and setid_file):
        raise TransferError(where, f"files: {path}: setuid or setgid "
                            f"{'in a VM image' if vm_tree else 'root'}; a VM image's "
                            "are in its disk and setid.json")  # fmt: skip
    caps = xattrs.get(CAPS_XATTR)
    root = _caps_root(caps)  # (None in a range would be a scan of it: 65536 comparisons)
    container_caps = (
        entry.flavour == "container" and in_tree and root is not None and root in CONTAINER_IDS
    )
    if caps is not None and not container_caps:
        raise TransferError(where, f"files: {path}: a file capability that host users would "
                            "hold (allowed: one namespaced to the containers' root)")  # fmt: skip


# File capabilities (checked apart), what overlayfs writes in an upper layer (an opaque
# directory, a copied-up file's origin, the upper's uuid, ...), ACLs, user attributes. Not
# overlay redirects or metacopy: they point at other files of the layers.
XATTRS = (CAPS_XATTR, "trusted.overlay.*", "system.posix_acl_access",
          "system.posix_acl_default", "user.*")  # fmt: skip
POINTING = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


def _known_xattr(name: str) -> bool:
    return name not in POINTING and any(fnmatch.fnmatchcase(name, p) for p in XATTRS)


def _caps_root(value: str | None) -> int | None:
    """The root a namespaced (v3) file capability belongs to; None for any other."""
    try:
        data = bytes.fromhex(value or "")
    except ValueError:
        return None
    return int.from_bytes(data[20:24], "little") if len(data) == 24 and data[3] == 3 else None


def check_members(members: Iterable[tarfile.TarInfo], manifest: Manifest, where: str) -> None:
    """The archive's members after the manifest: each a file the manifest lists, once, of
    a type that may be unpacked, never under a link."""
    links: set[str] = set()
    regular: set[str] = set()
    seen: set[str] = set()
    tops = _tops(manifest.entries)
    for member in members:
        name = member.name
        if name not in manifest.files or name in seen:
            why = "listed twice" if name in seen else "not in the manifest"
            raise TransferError(where, f"member {name!r:.120}: {why}")
        seen.add(name)
        _owning_entry(name, tops, where)  # a plain path inside an entry, whatever the manifest
        fact = manifest.files[name]
        if _member_type(member) != fact.get("type") or (
            member.issym() and member.linkname != fact.get("link")
        ):
            raise TransferError(where, f"member {name!r:.120}: not the type its manifest says")
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise TransferError(where, f"member {name!r:.120} lies under a link")
        if member.issym() or member.islnk():
            links.add(name)
        if member.islnk() and member.linkname not in regular:
            raise TransferError(
                where, f"member {name!r:.120}: a hard link to {member.linkname!r:.120}, not "
                "to an earlier regular member",
            )  # fmt: skip
        if member.isreg():
            regular.add(name)
        elif member.ischr():
            if member.devmajor or member.devminor:
                raise TransferError(where, f"member {name!r:.120}: a device node")
        elif not (member.isdir() or member.issym() or member.islnk()):
            raise TransferError(where, f"member {name!r:.120}: a FIFO, socket or device")
    if missing := sorted(set(manifest.files) - seen - {MANIFEST}):
        raise TransferError(where, f"{missing[0]!r:.120}: in the manifest, not in the archive")


def _member_type(member: tarfile.TarInfo) -> int | None:
    if member.isreg() or member.islnk():
        return stat.S_IFREG
    kinds = {
        tarfile.DIRTYPE: stat.S_IFDIR,
        tarfile.SYMTYPE: stat.S_IFLNK,
        tarfile.CHRTYPE: stat.S_IFCHR,
    }
    return kinds.get(member.type)
