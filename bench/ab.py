#!/usr/bin/env python3
"""A change's cost: start to ready of one workspace under two checkouts, alternating.

    .venv/bin/python bench/ab.py --baseline-tree ../main-before --runs 5
    .venv/bin/python bench/ab.py --baseline-tree /tmp/old --kinds container,vm-first

Each run is a fresh Python with that checkout's ``src`` first on its path: a lab, one
workspace with an extra rw share, its ``ready_seconds``, then everything stopped. ``vm``
is a restored VM; ``vm-first`` the first VM of a shape, which makes its template (a shape
of its own each run: its memory, with its template removed first). The two
checkouts take turns (baseline, this one, baseline, ...), so a machine that gets busier
part way through weighs on both. Prints medians and the ratio this/baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN_TIMEOUT = 300  # seconds: one start of a VM whose template is made first stays within

ONE_START = """
import faulthandler, json, os, shutil, sys, tempfile
faulthandler.dump_traceback_later(int(sys.argv[3]))  # where a hung start hangs, on stderr
from pathlib import Path
import wsfixture
from wsfixture.model.config import config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
kind, memory = sys.argv[1], int(sys.argv[2])
state = Path(tempfile.mkdtemp(prefix="wsf-ab-"))
share = state / "data"
share.mkdir()
os.chown(share, 1000, 1000)
spec = {"type": kind.removesuffix("-first"), "ip": "192.168.83.40",
        "shares": [{"source": str(share), "target": "/mnt/d"}]}
if kind.startswith("vm"):
    spec.update(vcpu=1, memory=memory)
from wsfixture.image import cache
def drop_templates():  # of a shape of its own, made and removed by this run
    if kind == "vm-first":
        cache.remove_keys([t.key for t in cache.cached_templates()
                           if t.shape and t.shape.memory == memory])
drop_templates()
defaults = {"stateRoot": str(state / "root")}
config = config_from_dict({"defaults": defaults, "workspaces": {"ab": spec}})
try:
    with Lab(config.network) as lab, Workspace(config.workspaces["ab"], config, lab) as ws:
        ws.succeed("touch /mnt/d/x")
        boot = ws.describe().get("boot")
    print(json.dumps({"ready": ws.ready_seconds, "module": wsfixture.__file__, "boot": boot}))
finally:
    shutil.rmtree(state)  # its keys with it
    drop_templates()
"""


VM_MEMORY = 768  # MiB: the bench's restored shape
FIRST_MEMORY = 1032  # MiB, 16 more each run: 8 past a multiple of 16, no shape a test uses


def one_start(tree: Path, kind: str, run: int = 0) -> tuple[float, str]:
    memory = FIRST_MEMORY + 16 * run if kind == "vm-first" else VM_MEMORY
    try:
        done = subprocess.run(
            [sys.executable, "-c", ONE_START, kind, str(memory), str(RUN_TIMEOUT - 10)],
            env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise SystemExit(f"a {kind} start under {tree} hung:\n{said[-6000:]}") from None
    if done.returncode != 0:
        raise SystemExit(f"a {kind} start under {tree} failed:\n{done.stderr[-2000:]}")
    said = json.loads(done.stdout.strip().splitlines()[-1])
    if kind == "vm" and not str(said["boot"]).startswith("restored"):
        raise SystemExit(f"a VM under {tree} was not restored: {said['boot']}")
    if kind == "vm-first" and str(said["boot"]).startswith("cold boot"):
        raise SystemExit(f"the first VM under {tree} made no template: {said['boot']}")
    return float(said["ready"]), str(said["module"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kinds", default="container,vm")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 30))
    trees = {"baseline": args.baseline_tree.resolve(), "this": HERE.parent}
    for kind in args.kinds.split(","):
        # One unmeasured start each: images, layers and a VM template are made here.
        if kind != "vm-first":
            for tree in trees.values():
                one_start(tree, kind)
        times: dict[str, list[float]] = {name: [] for name in trees}
        began = time.monotonic()
        for run in range(runs):
            for turn, (name, tree) in enumerate(trees.items()):
                seconds, module = one_start(tree, kind, 2 * run + turn)
                assert Path(module).is_relative_to(tree), f"{module} is not from {tree}"
                times[name].append(seconds)
        base, this = (statistics.median(times[n]) for n in ("baseline", "this"))
        print(
            f"{kind:<10} start to ready: this {this:.3f} s, baseline {base:.3f} s, "
            f"ratio {this / base:.3f}x (medians of {runs}; {time.monotonic() - began:.0f} s)"
        )
        print(f"           this: {[round(t, 3) for t in times['this']]}")
        print(f"           baseline: {[round(t, 3) for t in times['baseline']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
