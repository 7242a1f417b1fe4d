"""Whole pytest sessions of a user's suite: containers serial and under xdist; VMs restored
against cold."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import (
    HERE,
    VM,
    Context,
    Row,
    make_config,
    median,
    ours_start_stop,
    run_suite,
    user_pytest,
)


def run(ctx: Context) -> list[Row]:
    runs = ctx.runs
    rows = []
    walls = ctx.session_walls  # the peer scenario compares against them
    pytest = user_pytest()
    for label, extra in (("serial", []), ("-n 2", ["-n", "2"]), ("-n 4", ["-n", "4"])):
        samples, overheads = [], []
        for _ in range(runs):
            out = Path(tempfile.mkdtemp()) / "durations"
            env = dict(os.environ, WSF_BENCH_OUT=str(out))
            wall, _ = run_suite([*extra, "test_eight.py"], HERE / "suite", env, pytest)
            samples.append(wall)
            for path in glob.glob(f"{out}.*"):
                for line in Path(path).read_text().splitlines():
                    row = json.loads(line)
                    if row.get("ready") is not None:
                        # The workspace stops in the background after its test, so the
                        # test pays setup + teardown; its own share of that is the boot.
                        fixture = row.get("setup", 0) + row.get("teardown", 0)
                        overheads.append(fixture - row["ready"])
            shutil.rmtree(out.parent, ignore_errors=True)
        walls[label] = median(samples)
        rows.append(Row(f"pytest, 8 workspace tests, {label}", median(samples)))
        if overheads:
            rows.append(
                Row(f"  fixture overhead per test, {label}", median(overheads) * 1000, unit="ms")
            )
    for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
        restored = [vm_suite(extra, "auto", pytest) for _ in range(runs)]
        cold = [vm_suite(extra, "off", pytest) for _ in range(runs)]
        rows.append(
            Row(
                f"pytest, 8 VM workspace tests, {label}",
                median(restored),
                median(cold),
                "the same, cold boots",
                target="<= 0.35x",
                met=median(restored) <= 0.35 * median(cold),
            )
        )
        if label == "serial":
            rows += against_restores(ctx, median(restored), pytest)
    return rows


def against_restores(ctx: Context, session: float, pytest: str) -> list[Row]:
    """The serial VM session against what its restores alone would cost (a restore plus
    a second per test), and against the same session with --ws-prestart=off."""
    config = make_config(ctx.state, bv={**VM, "ip": "192.168.83.11"})
    restore = median(ours_start_stop(config, "bv", ctx.runs)[0])  # its template exists
    budget = 8 * (restore + 1.0)
    off = median([vm_suite([], "auto", pytest, "--ws-prestart=off") for _ in range(ctx.runs)])
    return [
        Row(
            "  the same, against 8 x (restore + 1 s)",
            session,
            budget,
            f"8 x ({restore:.2f} s + 1 s)",
            target="<= 1.0x",
            met=session <= budget,
        ),
        Row("  the same, against prestart off", session, off, "--ws-prestart=off"),
    ]


def vm_suite(extra: list[str], snapshot: str, pytest: str, *options: str) -> float:
    env = dict(os.environ, WSF_SNAPSHOT=snapshot)
    wall, _ = run_suite([*extra, *options, "test_eight_vm.py"], HERE / "suite", env, pytest)
    return wall
