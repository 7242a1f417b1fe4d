"""A VM image's privileged files, kept in its disk and out of the host's tree.

A VM image's tree is owned as the guest owns it (host root's ``su``, ``passwd``, the
``shadow`` group's ``chage``, ``ping`` with ``cap_net_raw``): on the host those bits would
be host privileges for whoever reached the file. So once a tree's disk is made they are
taken off the tree (``strip``) and listed beside it (``setid.json``), and a layer's disk
gets back those of the layers below that it did not replace (``give_back``, written into
the ext4 image by ``debugfs``, which never touches a host path). The list comes from the
cache or from an imported archive, so it is read as hostile: plain relative paths, a
permission mode, a capability's bytes.

A container image's tree needs none of this: it is stored shifted, so its setuid files
belong to the containers' root, and its capabilities are namespaced to it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from wsfixture.errors import ImageBuildError

MANIFEST = "setid.json"
CAPS_XATTR = "security.capability"
SETID = stat.S_ISUID | stat.S_ISGID
# What debugfs takes as one word, and no climbing: a guest's privileged files are all
# plain names (``usr/lib/dbus-1.0/dbus-daemon-launch-helper``).
PATH = re.compile(r"[A-Za-z0-9._+@-]+(/[A-Za-z0-9._+@-]+)*")
CAPS_LIMIT = 64  # bytes; a v3 capability is 24


@dataclass(frozen=True)
class Privileged:
    """One file of a guest's tree with bits the host must not carry."""

    path: str  # relative to the tree
    mode: int  # its permission bits, setuid and setgid included
    caps: str | None = None  # its security.capability, in hex


def strip(tree: Path) -> list[Privileged]:
    """Take every setuid and setgid bit and file capability off ``tree``'s regular files;
    return what was there. Opened without following links: a name is this tree's file."""
    found: list[Privileged] = []
    for directory, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(directory, name)
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                caps: bytes | None = os.getxattr(path, CAPS_XATTR, follow_symlinks=False)
            except OSError:
                caps = None
            if not (st.st_mode & SETID or caps):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~SETID)
                if caps:
                    os.removexattr(fd, CAPS_XATTR)
            finally:
                os.close(fd)
            relative = path.relative_to(tree).as_posix()
            hexed = caps.hex() if caps else None
            found.append(Privileged(relative, stat.S_IMODE(st.st_mode), hexed))
    return sorted(found, key=lambda p: p.path)


def save(entries: Sequence[Privileged], directory: Path) -> None:
    (directory / MANIFEST).write_text(json.dumps([asdict(e) for e in entries], indent=1))


def load(directory: Path) -> list[Privileged]:
    """The list beside a VM image's tree, every field checked."""
    where = str(directory / MANIFEST)
    try:
        raw = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ImageBuildError(
            where, f"unreadable: {exc}; remove the image to build it anew"
        ) from exc
    if not isinstance(raw, list):
        raise ImageBuildError(where, "not a list of files")
    return [_entry(item, where) for item in raw]


def _entry(item: object, where: str) -> Privileged:
    if not isinstance(item, dict) or set(item) != {"path", "mode", "caps"}:
        raise ImageBuildError(where, f"{item!r:.80}: allowed: {{path, mode, caps}}")
    path, mode, caps = item["path"], item["mode"], item["caps"]
    if not isinstance(path, str) or not PATH.fullmatch(path) or ".." in path.split("/"):
        raise ImageBuildError(where, f"path {path!r:.80}: allowed: a plain relative path")
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        raise ImageBuildError(where, f"{path}: mode {mode!r:.20}: allowed: 0 to 0o7777")
    if caps is not None:
        try:
            ok = isinstance(caps, str) and 0 < len(bytes.fromhex(caps)) <= CAPS_LIMIT
        except ValueError:
            ok = False
        if not ok:
            raise ImageBuildError(where, f"{path}: caps {caps!r:.80}: allowed: hex bytes, "
                                  f"at most {CAPS_LIMIT}")  # fmt: skip
    return Privileged(path, mode, caps)


def debugfs_script(entries: Iterable[Privileged], caps_dir: Path) -> tuple[str, dict[Path, bytes]]:
    """The debugfs commands that give ``entries`` their bits in a disk, and the files
    holding the capabilities they set (debugfs reads a value from a file)."""
    lines: list[str] = []
    values: dict[Path, bytes] = {}
    for n, entry in enumerate(entries):
        lines.append(f"sif /{entry.path} mode 0{stat.S_IFREG | entry.mode:o}")
        if entry.caps is not None:
            value = caps_dir / f"caps-{n}"
            values[value] = bytes.fromhex(entry.caps)
            lines.append(f"ea_set -f {value} /{entry.path} {CAPS_XATTR}")
    return "".join(f"{line}\n" for line in lines), values


def give_back(disk: Path, entries: Sequence[Privileged], debugfs: str) -> None:
    """Write ``entries``' bits into the ext4 image ``disk``; every command must succeed."""
    if not entries:
        return
    with tempfile.TemporaryDirectory(prefix="wsfixture-setid-") as scratch:
        script, values = debugfs_script(entries, Path(scratch))
        for value, data in values.items():
            value.write_bytes(data)
        commands = Path(scratch, "commands")
        commands.write_text(script)
        done = subprocess.run([debugfs, "-w", "-f", str(commands), str(disk)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    # debugfs exits 0 whatever its commands did; each failure is a line on stderr.
    errors = [line for line in done.stderr.splitlines()
              if line.strip() and not line.startswith("debugfs ")]  # fmt: skip
    if done.returncode != 0 or errors:
        raise ImageBuildError(
            str(disk),
            "giving the guest's setuid files back failed: "
            + "; ".join(errors[:5] or [f"debugfs exited {done.returncode}"]),
        )
