"""A wsfixture-owned block in a hosts file: written atomically, every other line untouched.

``apply_block`` is pure; ``write_block`` reads, applies and replaces the file (temp file +
rename), keeping its mode. A file with a broken block (two starts, an end before its start,
a start without an end) or that is not text is refused, never guessed at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from wsfixture.errors import WsfixtureError
from wsfixture.host import system

BEGIN = "# BEGIN wsfixture: managed by `wsfixture hosts --apply`, do not edit"
END = "# END wsfixture"


class HostsFileError(WsfixtureError):
    """The hosts file cannot be parsed safely."""


def render_block(entries: Sequence[str], newline: str = "\n") -> str:
    return newline.join([BEGIN, *entries, END]) + newline


def apply_block(text: str, entries: Sequence[str], source: str = "hosts file") -> str:
    """``text`` with the wsfixture block set to ``entries`` (added at the end if absent)."""
    if "\0" in text:
        raise HostsFileError(f"{source} contains NUL bytes; refusing to edit it")
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    block = render_block(entries, newline)
    if not begins and not ends:
        if text and not text.endswith(("\n", "\r")):
            text += newline
        return text + block
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise HostsFileError(
            f"{source} has a broken wsfixture block ({len(begins)} start and {len(ends)} end "
            "markers); fix or remove it by hand"
        )
    start, end = begins[0], ends[0]
    return "".join(lines[:start]) + block + "".join(lines[end + 1 :])


def write_block(path: Path, entries: Sequence[str]) -> bool:
    """Apply the block to ``path``, keeping its mode and owner; return whether it changed."""
    try:
        raw = path.read_bytes()
        stat = path.stat()
        mode, owner = stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid)
    except FileNotFoundError:
        raw, mode, owner = b"", 0o644, None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise HostsFileError(f"{path} is not UTF-8 text; refusing to edit it") from exc
    updated = apply_block(text, entries, str(path))
    if updated == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    system.write_atomic(path, updated, mode)
    if owner is not None:
        os.chown(path, *owner)
    return True
