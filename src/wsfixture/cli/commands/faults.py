"""``wsfixture fault``: faults between the workspaces started with ``wsfixture up``, kept
between commands (``workspace.faults.Faults.kept``) until ``fault heal`` or until their lab
goes.

    fault partition A B [-- C D]   A | B, or the groups A B | C D: no packet across
    fault block A B                A's packets to B dropped (one way)
    fault shape A [B] --loss 10% --delay 50ms --jitter 10ms --rate 1mbit
                                   A's traffic (with B only) degraded
    fault dns NAME MODE            the lab's DNS fails NAME: nxdomain, servfail, timeout
    fault list                     each fault, from when to when
    fault heal                     all off

The helpers some faults need (a delayer, a failing resolver) outlive the command: they are
the lab owner's, and go with ``fault heal`` or the lab.
"""

from __future__ import annotations

import argparse

from wsfixture.cli.lookup import UsageError
from wsfixture.cli.output import say
from wsfixture.host import ledger, settings
from wsfixture.model.config import load_config
from wsfixture.net.lab import Lab
from wsfixture.workspaces.faults import Faults

ACTIONS = ("partition", "block", "shape", "dns", "list", "heal")


def cmd_fault(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = config.network.namespace
    record = ledger.lab_record(name)
    if record is None or record.orphaned():
        raise UsageError(f"fault: lab {name} is not running; start a workspace with `wsfixture up`")
    lab = Lab(config.network, name, shared=True, die_with_owner=False)
    lab.open()
    try:
        faults = Faults.kept(lab, settings.current().labs_dir / name / "faults.json", record.owner)
        _act(faults, args.action, list(args.operands))
    finally:
        lab.detach()
    return 0


def _act(faults: Faults, action: str, operands: list[str]) -> None:
    if action == "list":
        say(faults.describe() or "no faults")
    elif action == "heal":
        faults.heal()
        say("healed")
    elif action == "partition":
        groups = _groups(operands)
        faults.partition(*groups)
        say(faults.timeline[-1].what)
    elif action == "block":
        if len(operands) != 2:
            raise UsageError("fault block: SRC DST, two workspaces")
        faults.block(operands[0], operands[1])
        say(faults.timeline[-1].what)
    elif action == "dns":
        if len(operands) != 2:
            raise UsageError("fault dns: NAME MODE (nxdomain, servfail or timeout)")
        faults.dns(operands[0], operands[1])
        say(faults.timeline[-1].what)
    else:
        parser = argparse.ArgumentParser(prog="wsfixture fault shape", add_help=False)
        parser.add_argument("ws")
        parser.add_argument("peer", nargs="?")
        for option in ("--loss", "--delay", "--jitter", "--rate"):
            parser.add_argument(option)
        try:
            shaped = parser.parse_args(operands)
        except SystemExit:
            raise UsageError("fault shape: WS [PEER] [--loss PERCENT] [--delay MS [--jitter MS]] "
                             "[--rate BITS]") from None  # fmt: skip
        faults.shape(shaped.ws, shaped.peer, loss=shaped.loss, delay=shaped.delay,
                     jitter=shaped.jitter, rate=shaped.rate)  # fmt: skip
        say(faults.timeline[-1].what)


def _groups(operands: list[str]) -> list[list[str]]:
    """``A B`` is two groups of one; ``A B -- C D`` is the groups split at ``--``."""
    if "--" not in operands:
        return [[name] for name in operands]
    groups: list[list[str]] = [[]]
    for word in operands:
        if word == "--":
            groups.append([])
        else:
            groups[-1].append(word)
    return groups
