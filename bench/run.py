#!/usr/bin/env python3
"""wsfixture benchmarks: medians, each beside a baseline measured in the same run.

    make bench            # RUNS=3
    make bench RUNS=1     # quick
    .venv/bin/python bench/run.py --runs 5 --only container,latency

Prints one table (metric, wsfixture, baseline, ratio, target) and writes
bench/results/latest.json. Every loop is bounded in count and time; everything it starts
lives in lab namespaces it creates, and it stops what it started. The scenarios are in
``bench/scenarios/``, what they share in ``harness.py`` and ``baselines.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import DEADLINE, RESULTS, Context, Row, render, say
from scenarios import SCENARIOS


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    ctx = Context(Path(tempfile.mkdtemp(prefix="wsf-bench-state-")), runs)
    began = time.monotonic()
    rows: list[Row] = []
    try:
        for scenario in chosen:
            if time.monotonic() - began > DEADLINE:
                say(f"bench: time limit reached; skipping {scenario}")
                continue
            say(f"bench: {scenario} ({runs} run(s)) ...")
            rows += SCENARIOS[scenario](ctx)
    finally:
        shutil.rmtree(ctx.state, ignore_errors=True)
    print(render(rows))
    RESULTS.mkdir(exist_ok=True)
    data = {
        "runs": runs,
        "seconds": time.monotonic() - began,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [{**r.__dict__, "ratio": r.ratio} for r in rows],
    }
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=1))
    print(
        f"\n{len(rows)} figures in {data['seconds']:.0f}s (medians of {runs}); "
        f"written to {RESULTS / 'latest.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
