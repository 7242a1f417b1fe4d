"""The image cache beyond one machine: a session on an empty cache that builds its images
and VM template, against the same session pulling them from a registry on 127.0.0.1,
against a warm cache; and the first VM's start to ready with a pulled template against
making the template."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import HERE, Context, Row, median, run_suite, say, user_pytest
from tests.support.registry import local_registry

SUITE = "test_shared_cache.py"


def session(cache: Path, pytest: str, *extra: str) -> tuple[float, float]:
    """(wall, the VM test's start to ready) of the suite on ``cache``."""
    out = Path(tempfile.mkdtemp()) / "durations"
    env = dict(os.environ, WSFIXTURE_CACHE_DIR=str(cache), WSF_BENCH_OUT=str(out))
    wall, _ = run_suite([SUITE, *extra], HERE / "suite", env, pytest, expect="2 passed")
    ready = [json.loads(line).get("ready") for path in glob.glob(f"{out}.*")
             for line in Path(path).read_text().splitlines()]  # fmt: skip
    shutil.rmtree(out.parent, ignore_errors=True)
    return wall, max(r for r in ready if r is not None)  # the VM's is the longer


def run(ctx: Context) -> list[Row]:
    pytest = user_pytest()
    top = Path(tempfile.mkdtemp(prefix="wsf-bench-cache-"))
    try:
        with local_registry(top) as (host, _):
            ref = f"{host}/bench/wsfixture-images"
            say("bench: a cold session (every image and the template built)")
            cold_cache = top / "cold"
            cold_wall, cold_vm = session(cold_cache, pytest)
            env = dict(os.environ, WSFIXTURE_CACHE_DIR=str(cold_cache))
            keys = [p.name for d in ("images", "templates") for p in (cold_cache / d).iterdir()
                    if p.is_dir() and ".building-" not in p.name]  # fmt: skip
            subprocess.run([sys.executable, "-m", "wsfixture.cli", "images", "push", ref, *keys],
                           env=env, check=True, capture_output=True)  # fmt: skip
            pulled, pulled_vm, warm = [], [], []
            for i in range(ctx.runs):
                cache = top / f"pulled-{i}"
                wall, vm = session(cache, pytest, "--ws-image-cache", ref)
                pulled.append(wall)
                pulled_vm.append(vm)
                warm.append(session(cache, pytest)[0])
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return [
        Row("session, 1 container + 1 VM, images pulled", median(pulled), cold_wall,
            "the same, built on an empty cache"),
        Row("  the same, warm cache", median(warm), median(pulled), "images pulled"),
        Row("first VM start -> ready, template pulled", median(pulled_vm), cold_vm,
            "the template made (a cold boot and its save)"),
    ]  # fmt: skip
