"""The image cache shared through an OCI registry: ``wsfixture images push`` / ``pull``,
and pytest's ``--ws-image-cache REF`` (``use``), which pulls an image or VM template
before building it and, with ``--ws-image-cache-push``, pushes what it built.

Each cache entry is one OCI artifact tagged by its key in REF's repository: a config
(what the entry is: kind, key, its recipe or template shape, QEMU's version line, the
machine) and one layer, the entry as ``image.transfer`` writes it. REF's own tag, if it
has one, is an index of the entries pushed with it. A pull checks each blob against its
digest as it downloads, refuses a template made for another QEMU, machine or accelerator
(with the reason: the workspace then makes its own), and imports the entry, which checks
every file against its manifest before anything is placed. The downloads are in a
staging directory listed in the ledger: ``gc`` reaps a killed pull.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.host import ledger, settings, system
from wsfixture.image import archive, cache, store, templates, transfer
from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.registry import (
    INDEX_TYPE,
    MANIFEST_TYPE,
    Reference,
    Registry,
    RegistryError,
    RegistryUnreachableError,
    describe,
    descriptor,
    json_object,
)
from wsfixture.image.transfer import Entry

ARTIFACT_TYPE = "application/vnd.wsfixture.cache-entry.v1"
CONFIG_TYPE = "application/vnd.wsfixture.cache-entry.config.v1+json"
LAYER_TYPE = "application/vnd.wsfixture.cache-entry.tar.v1"
KEY_ANNOTATION = "org.wsfixture.key"
CONFIG_LIMIT = 1 << 20

logger = logging.getLogger("wsfixture.images")


def config_of(entry: Entry, root: Path) -> dict[str, Any]:
    """What a puller checks before it takes the entry."""
    config: dict[str, Any] = {"kind": entry.kind, "key": entry.key, "machine": platform.machine()}
    directory = root / entry.relative
    if entry.kind == "template":
        config["shape"] = templates.Template(directory).meta().get("shape")
    else:
        config["recipe"] = json.loads((directory / store.RECIPE).read_text())
    return config


def refusal(config: dict[str, Any], key: str, qemu: Callable[[], str]) -> str | None:
    """Why an artifact's entry may not be taken on this host; None if it may."""
    if config.get("key") != key:
        return f"its config names {config.get('key')!r}, not {key!r}"
    if config.get("machine") != platform.machine():
        return f"made on a {config.get('machine')} machine, this is {platform.machine()}"
    if config.get("kind") == "image":
        try:
            made_for = ImageRecipe.from_dict(config.get("recipe") or {}).key
        except (KeyError, TypeError, ValueError) as exc:
            return f"its recipe is unreadable ({exc})"
        if made_for != key:
            return f"its recipe makes {made_for!r} here, not {key!r} (another wsfixture?)"
    shape = config.get("shape") or {}
    if config.get("kind") == "template" and shape.get("qemu") != qemu():
        return f"a template made by {shape.get('qemu')!r}; this host has {qemu()!r}"
    return None


def push(ref: Reference, keys: list[str], cache_dir: Path | None = None) -> list[Entry]:
    """Push ``keys``' entries (images with their bases, templates with their images);
    REF's tag, if any, becomes their index."""
    root = cache_dir or settings.current().cache_dir
    entries = transfer.entries_for(keys, root)
    registry = Registry(ref)
    pushed = []
    with _staging(root, "push") as staging:
        for entry in entries:
            tar = staging / f"{entry.key}.tar"
            transfer.export_entries([entry], tar, root)
            config = json.dumps(config_of(entry, root), sort_keys=True).encode()
            with open(tar, "rb") as layer, open(staging / "config.json", "w+b") as blob:
                blob.write(config)
                layer_digest, layer_size = describe(layer)
                config_digest, config_size = describe(blob)
                registry.push_blob(blob, config_digest, config_size)
                registry.push_blob(layer, layer_digest, layer_size)
            tar.unlink()
            manifest = {
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_digest,
                           "size": config_size},
                "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest,
                            "size": layer_size}],
                "annotations": {KEY_ANNOTATION: entry.key},
            }  # fmt: skip
            digest = registry.put_manifest(entry.key, manifest)
            pushed.append((entry, digest, len(json.dumps(manifest, sort_keys=True))))
    if ref.tag:
        index = {
            "schemaVersion": 2, "mediaType": INDEX_TYPE, "artifactType": ARTIFACT_TYPE,
            "manifests": [{"mediaType": MANIFEST_TYPE, "digest": digest, "size": size,
                           "annotations": {KEY_ANNOTATION: entry.key}}
                          for entry, digest, size in pushed],
        }  # fmt: skip
        registry.put_manifest(ref.tag, index)
    return entries


def listed(ref: Reference) -> list[str]:
    """The keys REF's tag indexes."""
    if not ref.tag:
        raise RegistryError(f"{ref}: which tag? (REF:TAG, as it was pushed)")
    index = Registry(ref).get_manifest(ref.tag)
    if index is None:
        raise RegistryError(f"registry {ref.host}: {ref.name} has no tag {ref.tag!r}")
    listed = index.get("manifests")
    if not isinstance(listed, list) or not all(isinstance(m, dict) for m in listed):
        raise RegistryError(f"registry {ref.host}: {ref}'s index lists no manifests")
    keys = []
    for manifest in listed:
        annotations = manifest.get("annotations")
        if isinstance(annotations, dict) and KEY_ANNOTATION in annotations:
            keys.append(checked_key(annotations[KEY_ANNOTATION], f"{ref}'s index"))
    return keys


def checked_key(key: object, where: str) -> str:
    """A key from a registry or the command line, before it names anything."""
    if not store.valid_key(key):
        raise RegistryError(f"{where}: {key!r:.120} is not a cache key ({store.KEY.pattern})")
    assert isinstance(key, str)
    return key


def pull(
    ref: Reference,
    keys: list[str],
    qemu: Callable[[], str],
    cache_dir: Path | None = None,
    locked: bool = False,
) -> list[tuple[str, str]]:
    """Pull ``keys`` into the cache (images before templates); each key with what became
    of it: "imported", "present, kept", or "refused: <why>" (a template this host cannot
    restore). RegistryError for one the registry does not have, or a blob not as named."""
    root = cache_dir or settings.current().cache_dir
    registry = Registry(ref)
    done = []
    keys = [checked_key(key, f"registry {ref.host}") for key in keys]
    with _staging(root, "pull") as staging:
        layers, configs = {}, {}
        for key in keys:
            manifest = registry.get_manifest(key)
            if manifest is None:
                raise RegistryError(f"registry {ref.host}: {ref.name} has no {key!r}")
            what = f"registry {ref.host}: {key}'s manifest"
            layers[key] = descriptor(manifest, "layers", what)
            config_digest, _ = descriptor(manifest, "config", what)
            configs[key] = json_object(registry.blob_bytes(config_digest), f"{key}'s config",
                                       CONFIG_LIMIT)  # fmt: skip
        for key in sorted(keys, key=lambda k: configs[k].get("kind") != "image"):
            why = refusal(configs[key], key, qemu)
            if why is not None:
                done.append((key, f"refused: {why}"))
                continue
            kind = configs[key].get("kind")
            if kind not in archive.KINDS:  # the registry's word, read as hostile
                raise RegistryError(
                    f"registry {ref.host}: {key}'s config has kind "
                    f"{kind!r:.40}; allowed: {', '.join(archive.KINDS)}"
                )
            expected = [Entry(str(kind), key)]
            if transfer.present(expected[0], root):  # known before a byte is downloaded
                done.append((key, transfer.PRESENT))
                continue
            digest, size = layers[key]
            if short := cache.make_room(size, f"the download of {key}", root):
                raise RegistryError(f"registry {ref.host}: {key} not pulled: {short}")
            tar = staging / f"{key}.tar"  # a checked key: one path component
            registry.fetch_blob(digest, size, tar)
            placed = transfer.import_(tar, root, locked, expected)
            tar.unlink()
            done += [(entry.key, what) for entry, what in placed]
    return done


class _staging:
    """A private scratch directory in the cache, in a ledger record while it exists."""

    def __init__(self, root: Path, what: str) -> None:
        self.dir = root / f".{what}{store.STAGING_MARK}{os.getpid()}"
        info = ledger.BuildInfo(what, str(self.dir))
        self.record = ledger.Record.create(f"{what}-{os.getpid()}-{id(self)}", info)

    def __enter__(self) -> Path:
        self.record.add_dir(self.dir)
        system.remove_tree(self.dir)
        system.private_dir(self.dir)
        return self.dir

    def __exit__(self, *_: object) -> None:
        system.remove_tree(self.dir)
        ledger.release(self.record)


@dataclass
class SharedCache:
    """A session's shared cache (``--ws-image-cache``): pull before building, push after."""

    ref: Reference
    push_built: bool = False
    qemu: Callable[[], str] = field(default=lambda: "")
    unreachable: bool = False  # said once; no more tries in this process

    def fetch(self, key: str, say: Callable[[str], None]) -> bool:
        """Pull ``key`` (whose lock the caller holds) if the registry has it; False to
        build it here."""
        if self.unreachable:
            return False
        try:
            if Registry(self.ref).get_manifest(key) is None:
                return False
            results = pull(self.ref, [key], self.qemu, locked=True)  # the caller's lock
        except RegistryUnreachableError as exc:
            self.unreachable = True
            say(f"image cache {self.ref} unreachable ({exc}): building here")
            return False
        except RegistryError as exc:
            say(f"image cache {self.ref}: {key} not taken ({exc}): building here")
            return False
        taken = any(k == key and not what.startswith("refused") for k, what in results)
        if taken:
            say(f"pulled {key} from {self.ref}")
        return taken

    def publish(self, key: str, say: Callable[[str], None]) -> None:
        """Push what was built here, if asked to; a failure is said, not raised."""
        if not self.push_built or self.unreachable:
            return
        try:
            push(Reference(self.ref.host, self.ref.name, None), [key])  # no index
            say(f"pushed {key} to {self.ref}")
        except RegistryError as exc:
            say(f"image cache {self.ref}: pushing {key} failed: {exc}")


# The shared cache of this context: the pytest plugin's session sets it, and the threads
# it starts run in a copy of its context (``contextvars.copy_context``), so a build deep in
# a prestart thread sees it and nothing else does.
_active: contextvars.ContextVar[SharedCache | None] = contextvars.ContextVar(
    "wsfixture_shared_cache", default=None
)


def active() -> SharedCache | None:
    return _active.get()


def use(cache: SharedCache | None) -> None:
    """The shared cache of this context from now on (None: none)."""
    _active.set(cache)
