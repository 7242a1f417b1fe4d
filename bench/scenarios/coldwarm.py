"""A cold start (image build) against a warm one, a layer against a base build, a cache hit."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from harness import (
    Context,
    Row,
    make_config,
    median,
    ours_start_stop,
)

from wsfixture.host import settings
from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import ImageRecipe


def run(ctx: Context) -> list[Row]:
    state, runs = ctx.state, ctx.runs
    cache = Path(
        tempfile.mkdtemp(prefix="wsf-bench-cache-", dir=settings.current().cache_dir.parent)
    )
    config = make_config(state, cw={"type": "container", "ip": "192.168.83.13"})
    spec = config.workspaces["cw"]
    try:
        began = time.monotonic()
        ensure_image(
            ImageRecipe.for_packages(config.resolve(spec).packages), cache, progress=lambda _: None
        )
        build = time.monotonic() - began
        # A package set not seen before: apt installs it as a layer over that base.
        began = time.monotonic()
        ensure_image(ImageRecipe.for_packages(["curl"]), cache, progress=lambda _: None)
        layer = time.monotonic() - began
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    began = time.monotonic()
    ensure_image(ImageRecipe.for_packages(config.resolve(spec).packages))
    hit = time.monotonic() - began
    ready, _ = ours_start_stop(config, "cw", runs)
    return [
        Row(
            "cold start (image build + boot)",
            build + median(ready),
            median(ready),
            "warm start (cached image)",
        ),
        Row("image build, new package set (apt layer)", layer, build, "base image build"),
        Row("image cache hit", hit * 1000, unit="ms"),
    ]
