"""A workspace's checkpoints on disk: one directory each, made whole or not at all.

- ``<root>/<seq>/``: a finished checkpoint: ``meta.json`` (its tag, when, what it was made
  over) and what the backend saved (a container's upper layer; a VM's disk delta and its
  memory and device state);
- ``<root>/.making-<seq>/``: one being written, listed in the workspace's ledger record
  until it is renamed into place: a failure removes it, a crash leaves it to ``gc``;
- ``<root>/base``: the checkpoint the running root stands on (none: the image alone).

Checkpoints form a chain: each stands on the one its workspace stood on when it was made
(``parent``). One deleted while a later checkpoint, or the running root, still stands on it
is retired: its tag and memory state go, its layer stays as a link of the chain until
nothing needs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.errors import CheckpointError
from wsfixture.host import ledger, system
from wsfixture.suggest import did_you_mean

META = "meta.json"
BASE = "base"
STAGING = ".making-"
STATE = "state"  # a VM's memory and device state: what a retired checkpoint drops
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
TAG_ALLOWED = "letters, digits, '.', '_' and '-', at most 64, the first a letter or digit"


@dataclass(frozen=True)
class Checkpoint:
    """One saved state of a workspace's root (and, for a VM, its memory and devices)."""

    tag: str
    seq: int
    created: float  # seconds since the epoch
    kind: str  # "container" or "vm"
    image: str  # the image key it was made over
    shape: str  # what it restores into: a VM's template key, a container's image key
    parent: int | None  # the checkpoint it stands on
    seconds: float  # how long making it took
    retired: bool = False
    dir: Path = field(default=Path(), compare=False)

    def summary(self, size: int) -> dict[str, object]:
        """What ``checkpoints`` shows of it."""
        return {
            "tag": self.tag,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)),
            "kind": self.kind,
            "seconds": round(self.seconds, 2),
            "size_mib": round(size / 2**20, 1),
            "image": self.image,
        }


def check_tag(name: str, tag: object) -> str:
    """``tag`` if it can name a checkpoint; CheckpointError naming it and what is allowed."""
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag):
        raise CheckpointError(name, f"checkpoint tag {tag!r} is not allowed", TAG_ALLOWED)
    return tag


class CheckpointStore:
    """The checkpoints of one workspace, under ``root``."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name  # the workspace's, for messages
        self.root = root

    def all(self) -> list[Checkpoint]:
        """Every finished checkpoint, retired ones included, oldest first."""
        found = []
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            if entry.name.isdigit() and (entry / META).is_file():
                data = json.loads((entry / META).read_text())
                found.append(Checkpoint(**data, dir=entry))
        return sorted(found, key=lambda c: c.seq)

    def listed(self) -> list[Checkpoint]:
        """The checkpoints a user can roll back to, oldest first."""
        return [c for c in self.all() if not c.retired]

    def find(self, tag: str) -> Checkpoint:
        listed = self.listed()
        for checkpoint in listed:
            if checkpoint.tag == tag:
                return checkpoint
        tags = [c.tag for c in listed]
        known = f"known: {', '.join(tags)}" if tags else "it has none"
        raise CheckpointError(
            self.name, f"no checkpoint tagged {tag!r}{did_you_mean(tag, tags)}", known
        )

    def by_seq(self, seq: int) -> Checkpoint | None:
        return next((c for c in self.all() if c.seq == seq), None)

    def chain(self, checkpoint: Checkpoint) -> list[Checkpoint]:
        """``checkpoint`` and those it stands on, newest first."""
        found = {c.seq: c for c in self.all()}
        chain = [checkpoint]
        while chain[-1].parent is not None:
            chain.append(found[chain[-1].parent])
        return chain

    @property
    def base(self) -> Checkpoint | None:
        """The checkpoint the running root stands on."""
        path = self.root / BASE
        seq = path.read_text().strip() if path.is_file() else ""
        return self.by_seq(int(seq)) if seq else None

    def set_base(self, checkpoint: Checkpoint | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / BASE).write_text("" if checkpoint is None else str(checkpoint.seq))
        self._drop_unneeded()

    def next_tag(self) -> str:
        """A tag for a checkpoint made without one: ``checkpoint-<n>``, n one past the last."""
        taken = {c.tag for c in self.all()}
        n = self._next_seq()
        while f"checkpoint-{n}" in taken:
            n += 1
        return f"checkpoint-{n}"

    def check_new_tag(self, tag: str) -> None:
        check_tag(self.name, tag)
        if any(c.tag == tag for c in self.listed()):
            raise CheckpointError(
                self.name, f"a checkpoint tagged {tag!r} exists already",
                "choose another tag, or delete that one first",
            )  # fmt: skip

    def _next_seq(self) -> int:
        names = (
            [e.name.removeprefix(STAGING) for e in self.root.iterdir()]
            if self.root.is_dir()
            else []
        )
        seqs = [int(name) for name in names if name.isdigit()]
        return max(seqs, default=0) + 1

    @contextlib.contextmanager
    def making(self, record: ledger.Record) -> Iterator[tuple[Path, Path]]:
        """(staging dir, final dir) of a new checkpoint: the body fills the staging dir and
        writes its meta (``write_meta``); renamed into place when the body ends. If it
        fails, it is removed, unless its meta was written already: then what runs stands
        on it (a VM's disk), and it is kept, retired. Listed in ``record`` meanwhile, so
        ``gc`` reaps it after a crash."""
        system.private_dir(self.root)
        seq = self._next_seq()
        staging, final = self.root / f"{STAGING}{seq}", self.root / str(seq)
        record.add_dir(staging)
        staging.mkdir(mode=0o700)
        try:
            yield staging, final
        except BaseException:
            if (staging / META).is_file():  # what runs stands on it: kept, untagged
                self._write(staging, {**self._read(staging), "retired": True})
                staging.rename(final)
            else:
                system.remove_tree(staging)
            raise
        else:
            staging.rename(final)
        finally:
            record.drop_dir(staging)

    def write_meta(self, staging: Path, checkpoint: Checkpoint) -> None:
        data = asdict(checkpoint)
        del data["dir"]
        self._write(staging, data)

    def delete(self, checkpoint: Checkpoint) -> None:
        """Remove ``checkpoint``; retire it instead while something stands on it."""
        self._write(checkpoint.dir, {**self._read(checkpoint.dir), "retired": True})
        (checkpoint.dir / STATE).unlink(missing_ok=True)
        self._drop_unneeded()

    def discard(self, checkpoint: Checkpoint) -> None:
        """Remove ``checkpoint`` whole (one that can no longer be restored)."""
        system.remove_tree(checkpoint.dir)

    def clear(self) -> None:
        system.remove_tree(self.root)

    def size(self, checkpoint: Checkpoint) -> int:
        """Bytes it holds on disk."""
        total = 0
        for top, _, files in os.walk(checkpoint.dir):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, name)).st_blocks * 512
        return total

    def _drop_unneeded(self) -> None:
        """Remove retired checkpoints nothing stands on any more (from the newest down)."""
        while True:
            found = self.all()
            base = self.base
            needed = {c.parent for c in found} | ({base.seq} if base else set())
            unneeded = [c for c in found if c.retired and c.seq not in needed]
            if not unneeded:
                return
            for checkpoint in unneeded:
                system.remove_tree(checkpoint.dir)

    @staticmethod
    def _read(directory: Path) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((directory / META).read_text())
        return data

    @staticmethod
    def _write(directory: Path, data: dict[str, Any]) -> None:
        staged = directory / f"{META}.new"
        staged.write_text(json.dumps(data, indent=1, sort_keys=True))
        staged.rename(directory / META)
