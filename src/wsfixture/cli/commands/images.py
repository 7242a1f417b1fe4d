"""``wsfixture images``: the image and template cache, its pruning and removal."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import tempfile
import time
from pathlib import Path

from wsfixture.cli.lookup import UsageError
from wsfixture.cli.output import EXIT_FAILED, answer, emit, say
from wsfixture.errors import WsfixtureError
from wsfixture.host import settings
from wsfixture.image import cache as imagecache
from wsfixture.image import shared_cache, templates, transfer
from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.registry import Reference
from wsfixture.model.config import load_config
from wsfixture.workspaces.checkpoint_store import CheckpointStore


def checkpoint_stores(args: argparse.Namespace) -> list[tuple[CheckpointStore, str]]:
    """Every workspace's checkpoints on this host: running workspaces' (in their labs),
    and the config's CLI workspaces' (in their state directories, kept while stopped)."""
    found = [
        (CheckpointStore(ws_dir.name, ws_dir / "checkpoints"), f"lab {ws_dir.parent.name}")
        for ws_dir in sorted(settings.current().labs_dir.glob("*/*"))
        if (ws_dir / "checkpoints").is_dir()
    ]
    with contextlib.suppress(WsfixtureError, OSError):  # no config here: the labs' only
        config = load_config(args.config)
        found += [
            (CheckpointStore(name, config.state_dir(name) / "checkpoints"), "CLI workspace")
            for name in config.workspaces
        ]
    return found


ACTIONS = ("key", "export", "import", "push", "pull")


def cmd_images(args: argparse.Namespace) -> int:
    if args.action is not None:
        actions = {"key": cmd_key, "export": cmd_export, "import": cmd_import,
                   "push": cmd_push, "pull": cmd_pull}  # fmt: skip
        return actions[args.action](args)
    if args.remove:
        try:
            removed = imagecache.remove_keys(args.remove)
        except ValueError as exc:
            raise UsageError(f"nothing removed: {exc}") from None
        for key, size in removed:
            say(f"removed {key} ({size / 2**20:.0f} MiB)")
        return 0
    if args.prune:
        dropped = imagecache.prune(args.days, dry_run=args.dry_run)
        freed = sum(p.freed for p in dropped)
        data = {"removed": [p.key for p in dropped], "bytes": freed}
        answer(args, data, lambda: pruned_text(dropped, args.days, args.dry_run))
        return 0
    images = imagecache.cached_images()
    busy = imagecache.busy_keys(images)
    now = time.time()
    rows = [
        {
            "image": i.key,
            "kind": "unreadable" if i.recipe is None else (
                f"layer over {i.base_key}" if i.base_key else "base"),
            "adds": ", ".join(i.recipe.adds) if i.recipe else "",
            "last_used": f"{(now - i.last_used) / 3600:.0f}h ago",
            **size_fields(imagecache.disk_usage(i.dir)),
            "state": "in use" if i.key in busy else i.state,
        }
        for i in images
    ]  # fmt: skip
    found = imagecache.cached_templates()
    in_use = imagecache.busy_keys(found)
    images_dir = settings.current().images_dir
    rows += [
        {
            "image": t.key,
            "kind": f"VM template of {t.shape.image_key}" if t.shape else "VM template",
            "adds": f"{t.shape.vcpu} vCPU, {t.shape.memory} MiB, {t.shape.accel}"
            if t.shape else "",
            "last_used": f"{(now - t.last_used) / 3600:.0f}h ago",
            **size_fields(imagecache.disk_usage(t.dir)),
            "state": "in use" if t.key in in_use else t.state(images_dir),
        }
        for t in found
    ]  # fmt: skip
    rows += [
        {"image": staging.name, "kind": "half built", "adds": "", "last_used": "-", "size": "-",
         "state": "building" if alive else "abandoned: `wsfixture gc` removes it"}
        for staging, alive in imagecache.builds()
    ]  # fmt: skip
    rows += [
        {"image": f"{store.name}:{c.tag}", "kind": f"checkpoint of {c.kind} {store.name}",
         "adds": "", "last_used": f"{(now - c.created) / 3600:.0f}h ago",
         "size": f"{store.size(c) / 2**20:.0f} MiB", "state": where}
        for store, where in checkpoint_stores(args) for c in store.listed()
    ]  # fmt: skip
    columns = ["image", "kind", "adds", "last_used", "size", "state"]
    emit(args, rows, columns)
    return 0


def pruned_text(dropped: list[imagecache.Pruned], days: float, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    freed = sum(p.freed for p in dropped)
    lines = [f"{verb} {p.key} ({p.why}, {p.freed / 2**20:.0f} MiB)" for p in dropped]
    lines.append(f"images and templates: {verb} {len(dropped)}, {freed / 2**30:.1f} GiB")
    # What stays though no config may want it any more (a layer whose setup changed):
    # unused, but within --days. Say so, rather than leave a bare "0".
    kept = [i for i in imagecache.cached_images() if i.key not in {p.key for p in dropped}]
    if recent := [i for i in kept if i.key not in imagecache.busy_keys(kept)]:
        lines.append(
            f"kept {len(recent)} not in use but used within {days:g} days "
            "(`--days 0` prunes every unused one; `--remove KEY` one of them)"
        )
    return "\n".join(lines)


def size_fields(usage: imagecache.DiskUsage) -> dict[str, object]:
    """What ``du -s`` says of the entry; the part it shares with another entry (a
    template's hard links to its image's disk) named, as removing it does not free that."""
    mib = f"{usage.total / 2**20:.0f} MiB"
    text = f"{mib} ({usage.shared / 2**20:.0f} MiB shared)" if usage.shared else mib
    return {"size": text, "bytes": usage.total, "shared_bytes": usage.shared}


def config_keys(config_path: str) -> list[str]:
    """The keys of every image (bases included) and VM template the config's workspaces
    boot from on this host."""
    from wsfixture.backends.qemu.template import shape_for
    from wsfixture.workspaces.prepare import recipe_for

    config = load_config(config_path)
    keys = set()
    for spec in config.workspaces.values():
        recipe = recipe_for(config, spec)
        layer: ImageRecipe | None = recipe
        while layer is not None:
            keys.add(layer.key)
            layer = layer.base
        if spec.type == "vm" and templates.spec_restore_blocker(config, spec) is None:
            keys.add(shape_for(config, spec, recipe.key).key)
    return sorted(keys)


def cmd_key(args: argparse.Namespace) -> int:
    """One stable hash of everything the config's images and templates depend on."""
    keys = config_keys(args.config)
    digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:32]
    answer(args, {"key": digest, "keys": keys}, lambda: digest)
    return 0


def keys_to_send(args: argparse.Namespace, given: list[str]) -> list[str]:
    """The keys named, or the config's whole set: all of it, never a part saved under the
    whole set's name (a CI cache keyed by ``images key`` would keep the part for good).
    ``--build`` makes what the cache lacks first."""
    if given:
        return given
    keys = config_keys(args.config)
    missing = _missing(keys)
    if missing and args.build:
        build_set(args.config)
        missing = _missing(keys)
    if missing:
        raise UsageError(
            f"{len(missing)} of the {len(keys)} images and templates of {args.config} are not "
            f"in the cache: {', '.join(missing)}; make them first (--build starts each "
            f"workspace once), or name the keys to send"
        )  # fmt: skip
    return keys


def _missing(keys: list[str]) -> list[str]:
    cached = {i.key for i in imagecache.cached_images()}
    cached |= {t.key for t in imagecache.cached_templates()}
    return [key for key in keys if key not in cached]


def build_set(config_path: str) -> None:
    """Start each workspace of the config once, in a lab of its own, and stop it: its
    image (layers and base) is built and its VM template made, as a first boot makes them."""
    from wsfixture import api

    config = load_config(config_path)
    with (  # a state of their own: the config's may belong to its running workspaces
        tempfile.TemporaryDirectory(prefix="wsfixture-build-") as state,
        api.Lab(config, state_root=state, internet=False) as lab,
    ):
        for name in config.workspaces:
            say(f"building: {name}")
            lab.workspace(name).stop(discard=True)  # its state is a temporary directory


def cmd_export(args: argparse.Namespace) -> int:
    if not args.operands:
        raise UsageError("images export FILE [KEY...]: which file?")
    target = Path(args.operands[0])
    entries = transfer.export(keys_to_send(args, args.operands[1:]), target)
    size = target.stat().st_size
    for entry in entries:
        say(f"exported {entry.kind} {entry.key}")
    say(f"{target}: {len(entries)} entries, {size / 2**20:.0f} MiB")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if len(args.operands) != 1:
        raise UsageError("images import FILE: one file")
    for entry, what in transfer.import_(Path(args.operands[0])):
        say(f"{entry.kind} {entry.key}: {what}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    if not args.operands:
        raise UsageError("images push REF [KEY...]: which registry reference?")
    ref = Reference.parse(args.operands[0])
    for entry in shared_cache.push(ref, keys_to_send(args, args.operands[1:])):
        say(f"pushed {entry.kind} {entry.key} to {ref.host}/{ref.name}:{entry.key}")
    if ref.tag:
        say(f"{ref}: the index of them")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from wsfixture.host.virt import qemu_version

    if not args.operands:
        raise UsageError("images pull REF [KEY...]: which registry reference?")
    ref = Reference.parse(args.operands[0])
    keys = args.operands[1:] or shared_cache.listed(ref)
    results = shared_cache.pull(ref, keys, qemu_version)
    for key, what in results:
        say(f"{key}: {what}")
    return EXIT_FAILED if any(w.startswith("refused") for _, w in results) else 0
