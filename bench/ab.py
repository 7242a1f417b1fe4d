#!/usr/bin/env python3
"""A change's cost: start to ready of one workspace under two checkouts, alternating.

    .venv/bin/python bench/ab.py --baseline-tree ../main-before --runs 5
    .venv/bin/python bench/ab.py --baseline-tree /tmp/old --kinds container

Each run is a fresh Python with that checkout's ``src`` first on its path: a lab, one
workspace with an extra rw share, its ``ready_seconds``, then everything stopped. The two
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
import json, os, shutil, sys, tempfile
from pathlib import Path
import wsfixture
from wsfixture.model.config import config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
kind = sys.argv[1]
state = Path(tempfile.mkdtemp(prefix="wsf-ab-"))
share = state / "data"
share.mkdir()
os.chown(share, 1000, 1000)
spec = {"type": kind, "ip": "192.168.83.40", "shares": [{"source": str(share), "target": "/mnt/d"}]}
if kind == "vm":
    spec.update(vcpu=1, memory=768)
defaults = {"stateRoot": str(state / "root")}
config = config_from_dict({"defaults": defaults, "workspaces": {"ab": spec}})
try:
    with Lab(config.network) as lab, Workspace(config.workspaces["ab"], config, lab) as ws:
        ws.succeed("touch /mnt/d/x")
        boot = ws.describe().get("boot")
    print(json.dumps({"ready": ws.ready_seconds, "module": wsfixture.__file__, "boot": boot}))
finally:
    shutil.rmtree(state)  # its keys with it
"""


def one_start(tree: Path, kind: str) -> tuple[float, str]:
    done = subprocess.run(
        [sys.executable, "-c", ONE_START, kind],
        env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"a {kind} start under {tree} failed:\n{done.stderr[-2000:]}")
    said = json.loads(done.stdout.strip().splitlines()[-1])
    if kind == "vm" and not str(said["boot"]).startswith("restored"):
        raise SystemExit(f"a VM under {tree} was not restored: {said['boot']}")
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
        for tree in trees.values():
            one_start(tree, kind)
        times: dict[str, list[float]] = {name: [] for name in trees}
        began = time.monotonic()
        for _ in range(runs):
            for name, tree in trees.items():
                seconds, module = one_start(tree, kind)
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
