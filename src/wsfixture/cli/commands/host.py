"""Commands about this host: doctor, setup-host, gc, shell completion."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from wsfixture.cli.output import EXIT_FAILED, EXIT_PREREQ, answer, emit, say
from wsfixture.cli.persistent import (
    stop_supervised,
)
from wsfixture.host import ledger

if TYPE_CHECKING:
    pass


def cmd_doctor(args: argparse.Namespace) -> int:
    from wsfixture.cli import doctor

    findings = doctor.examine()
    rows = [
        {"check": f.check, "result": "ok" if f.ok else ("MISSING" if f.required else "no"),
         "detail": f.detail, "fix": "" if f.ok else f.fix}
        for f in findings
    ]  # fmt: skip
    emit(args, rows, ["check", "result", "detail", "fix"])
    return EXIT_PREREQ if any(f.required and not f.ok for f in findings) else 0


def cmd_setup_host(args: argparse.Namespace) -> int:
    from wsfixture.host import setup

    return setup.setup_host(say)


def cmd_gc(args: argparse.Namespace) -> int:
    if args.lab:
        # A CLI workspace's supervisor stops it itself and exits; reaping under a live
        # supervisor would leave it to tidy up a lab that is already gone.
        for record in ledger.workspaces(args.lab, live=True).values():
            if ledger.workspace_info(record).supervisor is not None:
                stop_supervised(record)
    reaped, failures = ledger.reap(args.lab)
    if args.json or not args.quiet or reaped:
        data = {"reaped": [r.key for r in reaped], "failures": [str(f) for f in failures]}
        answer(args, data, lambda: f"gc: reaped {len(reaped)} record(s)"
               + "".join(f"\n  {r.key}" for r in reaped))  # fmt: skip
    for what, exc in failures:
        print(f"gc: could not {what}: {exc}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    say(argcomplete.shellcode(["wsfixture"], shell=args.shell))  # type: ignore[attr-defined]
    return 0
