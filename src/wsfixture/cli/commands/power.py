"""``wsfixture pause`` and ``resume``: a CLI workspace's processes stopped where they
stand and let go on, by its supervisor (``cli.control``), which alone holds the machine.
While it is paused, ``exec``, ``cp`` and ``ssh`` refuse at once (they would only hang)."""

from __future__ import annotations

import argparse

from wsfixture.cli import control
from wsfixture.cli.lookup import require_running
from wsfixture.cli.output import say
from wsfixture.model.config import load_config


def cmd_pause(args: argparse.Namespace) -> int:
    return _ask(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _ask(args, "resume")


def _ask(args: argparse.Namespace, verb: str) -> int:
    config = load_config(args.config)
    lab = config.network.namespace
    require_running(args.name, list(config.workspaces), lab, paused_ok=True)
    answer = control.request(lab, args.name, verb)
    state = "paused" if answer["result"]["paused"] else "running"
    say(f"{args.name}: {state}")
    return 0
