"""``wsfixture checkpoint``, ``rollback`` and ``checkpoints``: a CLI workspace's
checkpoints, made and restored by its supervisor (``cli.control``)."""

from __future__ import annotations

import argparse

from wsfixture.cli import control
from wsfixture.cli.lookup import UsageError, require_running
from wsfixture.cli.output import emit, say
from wsfixture.host import ledger
from wsfixture.model.config import load_config
from wsfixture.suggest import unknown_workspace
from wsfixture.workspaces.checkpoint_store import CheckpointStore, check_tag


def cmd_checkpoint(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lab = config.network.namespace
    require_running(args.name, list(config.workspaces), lab)
    if args.tag is not None:
        check_tag(args.name, args.tag)  # before the supervisor is asked
    answer = control.request(lab, args.name, "checkpoint", tag=args.tag)
    made = answer["result"]
    say(f"{args.name}: checkpoint {made['tag']!r} made in {answer['seconds']:.2f}s "
        f"({made['size_mib']} MiB)")  # fmt: skip
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lab = config.network.namespace
    require_running(args.name, list(config.workspaces), lab)
    check_tag(args.name, args.tag)
    answer = control.request(lab, args.name, "rollback", tag=args.tag)
    say(f"{args.name}: rolled back to {args.tag!r}, ready in {answer['seconds']:.2f}s")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List (or ``--delete``) a workspace's checkpoints: through its supervisor while it
    runs, from its state directory while it is stopped (they outlive ``down``)."""
    config = load_config(args.config)
    lab = config.network.namespace
    if args.name not in config.workspaces:
        raise UsageError(unknown_workspace([args.name], list(config.workspaces)))
    running = args.name in ledger.workspaces(lab, live=True)
    if args.delete is not None:
        check_tag(args.name, args.delete)
        if running:
            control.request(lab, args.name, "delete", tag=args.delete)
        else:
            store = CheckpointStore(args.name, config.state_dir(args.name) / "checkpoints")
            store.delete(store.find(args.delete))
        say(f"{args.name}: checkpoint {args.delete!r} deleted")
        return 0
    if running:
        rows = control.request(lab, args.name, "checkpoints")["result"]
    else:
        store = CheckpointStore(args.name, config.state_dir(args.name) / "checkpoints")
        rows = [c.summary(store.size(c)) for c in store.listed()]
    if rows or args.json:
        emit(args, rows, ["tag", "created", "kind", "seconds", "size_mib"])
    else:
        say(f"{args.name}: no checkpoints")
    return 0
