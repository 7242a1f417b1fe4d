"""A directory watched for E2B's ``watch_dir``: what changed in it, found by comparing
listings the guest's ``find`` gives every ``POLL_EVERY`` seconds (no inotify tool is in
the images, and no daemon of ours in the guest). A file made shows as CREATE (and WRITE
when it holds something), one changed as WRITE, one gone as REMOVE; a rename is a REMOVE
of the old name and a CREATE of the new (polling cannot tell a move from the two)."""

from __future__ import annotations

import dataclasses
import shlex
import threading
from collections.abc import Callable
from typing import Literal

POLL_EVERY = 0.3  # seconds between listings
MAX_ENTRIES = 100_000  # a listing longer than this is cut: a watch is not an index
MAX_UNTAKEN = 10_000  # changes kept for a client that does not ask: the oldest go first
# type, mtime, size, path; NUL-separated, so a newline in a name stays in its name
LISTING_FORMAT = r"%y %T@ %s %p\0"

Kind = Literal["create", "write", "remove"]


@dataclasses.dataclass(frozen=True)
class Change:
    kind: Kind
    name: str  # relative to the watched directory, as E2B's events say it


Listing = dict[str, tuple[str, str, str]]  # path -> (type, mtime, size)


def listing_line(path: str, recursive: bool) -> str:
    depth = "" if recursive else " -maxdepth 1"
    return f"find {shlex.quote(path)}/ -mindepth 1{depth} -printf '{LISTING_FORMAT}'"


def read_listing(out: str, root: str) -> Listing:
    """``find``'s records as path (relative to ``root``) -> (type, mtime, size); a record
    that does not read as one is skipped."""
    prefix = root.rstrip("/") + "/"
    found: Listing = {}
    for record in out.split("\0")[:MAX_ENTRIES]:
        fields = record.split(" ", 3)
        if len(fields) != 4 or not fields[3].startswith(prefix):
            continue
        kind, mtime, size, path = fields
        found[path[len(prefix) :].lstrip("/")] = (kind, mtime, size)
    return found


def changes(before: Listing, after: Listing) -> list[Change]:
    """What happened between two listings, in E2B's words."""
    made: list[Change] = []
    for name, (kind, mtime, size) in after.items():
        old = before.get(name)
        if old is None:
            made.append(Change("create", name))
            if kind == "f" and size != "0":
                made.append(Change("write", name))
        elif kind == "f" and (old[1], old[2]) != (mtime, size):
            made.append(Change("write", name))
    made += [Change("remove", name) for name in before if name not in after]
    return made


class Watcher:
    """A directory polled in a thread of its own until ``stop``; ``take`` returns what
    changed since the last call, and ``listener`` (if given) hears each change at once."""

    def __init__(
        self, list_dir: Callable[[], str], root: str,
        listener: Callable[[Change], None] | None = None,
    ) -> None:  # fmt: skip
        self._list_dir = list_dir
        self._root = root
        self._listener = listener
        self._seen = read_listing(list_dir(), root)  # from now on
        self._pending: list[Change] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._poll, name="e2b-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopped.wait(POLL_EVERY):
            try:
                now = read_listing(self._list_dir(), self._root)
            except Exception as exc:  # the workspace went away: the watch ends, saying why
                self.failure = f"{type(exc).__name__}: {exc}"
                return
            found = changes(self._seen, now)
            self._seen = now
            with self._lock:
                self._pending = (self._pending + found)[-MAX_UNTAKEN:]
            if self._listener is not None:
                for change in found:
                    self._listener(change)

    def take(self) -> list[Change]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def stop(self) -> None:
        self._stopped.set()
