"""The image cache on disk: what it holds, when each image was last used, and pruning.

Every workspace start stamps its image (and the base under a layer) as used. ``prune``
removes images an older wsfixture built (their key no longer matches their recipe) and
images unused for a number of days, but never one a workspace stands on (an overlay lower
directory, or a VM disk a process holds open), nor the base of a layer that stays.

``make_room`` prunes on its own, when the cache's filesystem runs short: before an image
or a template is made, it removes what nothing uses until the settings' free space is left
(what this wsfixture will never use again first, then what has not been used for an hour),
and says why not when what is to be made still would not fit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from wsfixture.host import ledger, settings
from wsfixture.image import store, templates
from wsfixture.image.recipe import ImageRecipe

DAY = 86400.0
# What was used this recently may belong to a session that is starting now (a start stamps
# its image before it boots from it): making room never takes it.
RECENT = 3600.0


@dataclass(frozen=True)
class CachedImage:
    key: str
    dir: Path
    recipe: ImageRecipe | None  # None: a recipe.json this wsfixture cannot read
    last_used: float  # seconds since the epoch

    @property
    def current(self) -> bool:
        """Built by this wsfixture: the recipe still hashes to the directory's name."""
        return self.recipe is not None and self.recipe.key == self.key

    @property
    def outdated(self) -> bool:
        """Built by another wsfixture: its recipe hashes to another key now."""
        return self.recipe is not None and self.recipe.key != self.key

    @property
    def state(self) -> str:
        if self.recipe is None:
            return "unknown"
        return "current" if self.current else "older wsfixture"

    @property
    def base_key(self) -> str | None:
        return None if self.recipe is None or self.recipe.base is None else self.recipe.base.key


def cached_images(cache_dir: Path | None = None) -> list[CachedImage]:
    """Every finished image in the cache (half-built ones belong to their builder)."""
    found = []
    for entry, used in store.finished(store.images_dir(cache_dir), store.READY):
        try:
            recipe: ImageRecipe | None = ImageRecipe.from_dict(
                json.loads((entry / store.RECIPE).read_text())
            )
        except (OSError, ValueError, KeyError, TypeError):
            recipe = None
        found.append(CachedImage(entry.name, entry, recipe, used))
    return found


@dataclass(frozen=True)
class CachedTemplate:
    key: str
    dir: Path
    meta: dict[str, Any] | None  # None: unfinished or unreadable
    last_used: float

    @property
    def shape(self) -> templates.TemplateShape | None:
        try:
            return templates.TemplateShape(**(self.meta or {})["shape"])
        except (KeyError, TypeError):
            return None

    def state(self, images_dir: Path) -> str:
        """current, or why it will never be restored again."""
        shape = self.shape
        if shape is None:
            return "unreadable"
        if shape.key != self.key:
            return "older wsfixture"
        try:
            if store.ready_stamp(images_dir / shape.image_key) != (self.meta or {}).get(
                "image_ready"
            ):
                return "its image was rebuilt"
        except OSError:
            return "its image is gone"
        return "current"


def cached_templates(cache_dir: Path | None = None) -> list[CachedTemplate]:
    """Every finished template (half-made ones belong to their builder)."""
    found = []
    for entry, used in store.finished(store.templates_dir(cache_dir), templates.META):
        try:
            meta: dict[str, Any] | None = json.loads((entry / templates.META).read_text())
        except (OSError, ValueError):
            meta = None
        found.append(CachedTemplate(entry.name, entry, meta, used))
    return found


def choose_prunable_templates(
    found: list[CachedTemplate], images_dir: Path, now: float, max_idle: float, busy: set[str]
) -> list[CachedTemplate]:
    """Templates that will never be restored again (their image rebuilt or gone, made by
    another wsfixture), or unused for ``max_idle`` seconds; never one a VM runs on."""
    return [
        t
        for t in found
        if t.key not in busy
        and t.meta is not None
        and (t.state(images_dir) != "current" or now - t.last_used > max_idle)
    ]


def builds(cache_dir: Path | None = None) -> list[tuple[Path, bool]]:
    """Half-built images and VM templates (``<key>.building-<pid>``), each with whether
    its builder still runs; an abandoned one is reaped by ``wsfixture gc`` through its
    build record."""
    live = {
        r.info.staging
        for r in ledger.records()
        if isinstance(r.info, ledger.BuildInfo) and not r.orphaned()
    }
    return [
        (entry, str(entry) in live)
        for where in (store.images_dir(cache_dir), store.templates_dir(cache_dir))
        for entry in store.staging_dirs(where)
    ]


def choose_prunable(
    images: Iterable[CachedImage], now: float, keep_days: float, busy: set[str]
) -> list[CachedImage]:
    """The images to remove: from an older wsfixture, or unused for ``keep_days``; never a
    busy one, nor the base of an image that stays, nor one whose recipe cannot be read
    (what it is, and what stands on it, is unknown)."""
    images = list(images)
    by_key = {image.key: image for image in images}
    busy = set(busy)
    for key in list(busy):  # a busy layer keeps its base busy
        base = by_key[key].base_key if key in by_key else None
        if base:
            busy.add(base)
    stale = {
        i.key
        for i in images
        if i.key not in busy
        and i.recipe is not None
        and (i.outdated or now - i.last_used > keep_days * DAY)
    }
    kept_bases = {i.base_key for i in images if i.key not in stale and i.base_key}
    return [i for i in images if i.key in stale and i.key not in kept_bases]


class Cached(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def dir(self) -> Path: ...


def busy_keys(images: Iterable[Cached]) -> set[str]:
    """Images (or VM templates) a running workspace stands on: named in an overlay mount's
    options (a container's lower directories) or held open by a process (a VM's disk)."""
    dirs = {str(image.dir) + "/": image.key for image in images}

    def owner(path: str) -> str | None:
        return next((key for prefix, key in dirs.items() if path.startswith(prefix)), None)

    busy = set()
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            options = line.split(" - ", 1)[-1]
            for word in options.replace(",", " ").replace(":", " ").replace("=", " ").split():
                if key := owner(word.rstrip("/") + "/"):
                    busy.add(key)
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            # One by one: an fd may close after the listing (the listing's own, in this
            # process), and the others still count.
            with contextlib.suppress(OSError):
                if key := owner(os.readlink(fd)):
                    busy.add(key)
    return busy


@dataclass(frozen=True)
class DiskUsage:
    """Bytes on disk under a directory, as ``du -s`` counts them (every file and directory,
    a file with several names once, sparse files by what they use), and of those the bytes
    of files that also have a name outside it (a VM template's hard links to its image)."""

    total: int
    shared: int

    @property
    def freed(self) -> int:
        """What removing the directory frees."""
        return self.total - self.shared


def disk_usage(directory: Path) -> DiskUsage:
    met: dict[tuple[int, int], int] = {}  # a file's (device, inode) -> its names met here
    files: dict[tuple[int, int], tuple[int, int]] = {}  # -> (bytes, its names anywhere)
    total = 0
    for root, dirs, names in os.walk(directory):
        for name in ([] if root != str(directory) else ["."]) + dirs + names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISDIR(st.st_mode):
                total += st.st_blocks * 512
                continue
            inode = (st.st_dev, st.st_ino)
            met[inode] = met.get(inode, 0) + 1
            files[inode] = (st.st_blocks * 512, st.st_nlink)
    total += sum(size for size, _ in files.values())
    shared = sum(size for inode, (size, links) in files.items() if links > met[inode])
    return DiskUsage(total, shared)


@dataclass(frozen=True)
class Pruned:
    """An image or template ``prune`` removed (or would), why, and the bytes that freed."""

    key: str
    why: str  # "unused", or why it will never be used again
    freed: int


def prune(keep_days: float, cache_dir: Path | None = None, dry_run: bool = False) -> list[Pruned]:
    """Remove the templates and images ``choose_prunable_templates`` and
    ``choose_prunable`` pick: templates first (a template holds its image's files by hard
    links), then images, a layer before its base."""
    images_dir = store.images_dir(cache_dir)
    found = cached_templates(cache_dir)
    old = choose_prunable_templates(
        found, images_dir, time.time(), keep_days * DAY, busy_keys(found)
    )
    removed = []
    for template in old:
        why = template.state(images_dir)
        removed.append(Pruned(template.key, "unused" if why == "current" else why,
                              disk_usage(template.dir).freed))  # fmt: skip
        if not dry_run:
            store.remove(template.dir, templates.META)
    images = cached_images(cache_dir)
    stale = choose_prunable(images, time.time(), keep_days, busy_keys(images))
    for image in sorted(stale, key=lambda i: i.base_key is None):
        why = image.state if image.outdated else "unused"
        removed.append(Pruned(image.key, why, disk_usage(image.dir).freed))
        if not dry_run:
            store.remove(image.dir, store.READY)
    return removed


def eviction_order(
    found: list[CachedTemplate],
    images: list[CachedImage],
    images_dir: Path,
    now: float,
    busy: set[str],
) -> list[CachedTemplate | CachedImage]:
    """What making room removes, in the order it goes: first what this wsfixture will never
    use again, then what has not been used for ``RECENT`` seconds; templates before images
    (a template holds its image's disk by a hard link), least recently used first, a layer
    before its base. Never a busy one, nor the base of an image that stays."""
    old_templates = choose_prunable_templates(found, images_dir, now, math.inf, busy)
    old_images = choose_prunable(images, now, math.inf, busy)
    idle_templates = choose_prunable_templates(found, images_dir, now, RECENT, busy)
    idle_images = choose_prunable(images, now, RECENT / DAY, busy)
    order: list[CachedTemplate | CachedImage] = []
    for some_templates, some_images in ((old_templates, old_images), (idle_templates, idle_images)):
        order += sorted((t for t in some_templates if t not in order), key=lambda t: t.last_used)
        # (a base is stamped whenever a layer on it is used: it is never older than its layers)
        by_age = sorted(some_images, key=lambda i: (i.last_used, i.base_key is None))
        order += [i for i in by_age if i not in order]
    return order


def free_bytes(path: Path) -> int:
    """What the filesystem holding ``path`` has free for us."""
    return shutil.disk_usage(path).free


def make_room(
    need: int, what: str, cache_dir: Path | None = None, say: Callable[[str], None] | None = None
) -> str | None:
    """Before ``what`` (about ``need`` bytes) is made in the cache: when its filesystem has
    less than ``need`` and the settings' ``cache_min_free`` left, remove cached images and
    templates in ``eviction_order`` until it has. Returns why ``what`` cannot be made if
    ``need`` still does not fit (None: it fits). One process removes at a time."""
    root = store.private_dirs(cache_dir)
    want = need + settings.current().cache_min_free
    if free_bytes(root) >= want:
        return None
    with store.locked(root / "room.lock"):
        images = cached_images(root)
        found = cached_templates(root)
        busy = busy_keys(images) | busy_keys(found)
        for entry in eviction_order(found, images, store.images_dir(root), time.time(), busy):
            before = free_bytes(root)
            if before >= want:
                break
            marker = templates.META if isinstance(entry, CachedTemplate) else store.READY
            if store.remove(entry.dir, marker, idle_since=entry.last_used) and say:
                freed = _gib(free_bytes(root) - before)
                say(f"making room for {what}: removed {entry.key}, unused ({freed})")
        free = free_bytes(root)
    if free >= need:
        return None
    return (
        f"no room for {what} in {root}: {_gib(free)} free, it needs about {_gib(need)}, and "
        "nothing cached is left that no workspace uses; free space on that filesystem, or "
        "set WSFIXTURE_CACHE_DIR to a larger one"
    )


def _gib(size: int) -> str:
    return f"{size / settings.GIB:.1f} GiB"


def remove_keys(keys: Iterable[str], cache_dir: Path | None = None) -> list[tuple[str, int]]:
    """Remove these images and VM templates, with the bytes each freed; an image's own
    templates go with it (they could never be restored again). Refused as a whole, naming
    why, for a key the cache does not have, one in use, or a base a layer that stays
    stands on (ValueError)."""
    root = cache_dir or settings.current().cache_dir
    images = {i.key: i for i in cached_images(root)}
    found = {t.key: t for t in cached_templates(root)}
    wanted = set(keys)
    wanted |= {k for k, t in found.items() if t.shape and t.shape.image_key in wanted}
    problems = [f"{k}: no such image or template" for k in sorted(wanted)
                if k not in images and k not in found]  # fmt: skip
    busy = busy_keys(images.values()) | busy_keys(found.values())
    problems += [f"{k}: in use" for k in sorted(wanted & busy)]
    problems += [
        f"{i.base_key}: the base of {i.key}, which stays"
        for i in images.values()
        if i.base_key in wanted and i.key not in wanted
    ]
    if problems:
        raise ValueError("; ".join(problems))
    removed = []
    for key in sorted(wanted & set(found)):  # templates first: they hold images' files
        removed.append((key, disk_usage(found[key].dir).freed))
        store.remove(found[key].dir, templates.META)
    layers_first = sorted(wanted & set(images), key=lambda k: images[k].base_key is None)
    for key in layers_first:
        removed.append((key, disk_usage(images[key].dir).freed))
        store.remove(images[key].dir, store.READY)
    return removed
