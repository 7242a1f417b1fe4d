"""Debian 13 against Debian 12: image builds and boots; a layer with setup lines."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import (
    VM,
    Context,
    Row,
    make_config,
    median,
    ours_start_stop,
)

from wsfixture.host import settings
from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import ImageRecipe
from wsfixture.model.spec import RELEASES
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

# A setup as a role's converge would do it: a system user, a directory, a config file, a
# link. Lines run by `sh -e` in the layer, after the packages.
BENCH_SETUP = (
    "useradd --system --home-dir /srv/app --create-home app",
    "install -d -o app -g app /srv/app/data",
    "printf 'listen = 8080\\ndata = /srv/app/data\\n' > /etc/app.conf",
    "ln -s /etc/app.conf /srv/app/app.conf",
)


def run(ctx: Context) -> list[Row]:
    """Debian 13 (the default) against Debian 12: base image builds of both flavours, boot
    of both kinds (a VM restored, and cold); and a layer with a setup against the same
    packages without one."""
    state, runs = ctx.state, ctx.runs
    quiet: Callable[[str], None] = lambda _: None  # noqa: E731
    cache = Path(
        tempfile.mkdtemp(prefix="wsf-bench-cache-", dir=settings.current().cache_dir.parent)
    )
    builds: dict[tuple[str, str], list[float]] = {}
    layers: dict[str, list[float]] = {"plain": [], "setup": []}
    try:
        for _ in range(runs):
            for release in RELEASES:
                for flavour in ("container", "vm"):
                    recipe = ImageRecipe.base_of(flavour, release)
                    shutil.rmtree(cache / "images" / recipe.key, ignore_errors=True)
                    began = time.monotonic()
                    ensure_image(recipe, cache, progress=quiet)
                    builds.setdefault((release, flavour), []).append(time.monotonic() - began)
            for kind, setup in (("plain", ()), ("setup", BENCH_SETUP)):
                recipe = ImageRecipe.for_packages(["curl"], setup=setup)
                shutil.rmtree(cache / "images" / recipe.key, ignore_errors=True)
                began = time.monotonic()
                ensure_image(recipe, cache, progress=quiet)
                layers[kind].append(time.monotonic() - began)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    new, old = RELEASES
    rows = [
        Row(f"base image build, {flavour}: {new}", median(builds[new, flavour]),
            median(builds[old, flavour]), f"the same, {old}")
        for flavour in ("container", "vm")
    ]  # fmt: skip
    rows.append(
        Row("layer build: curl + 4 setup lines", median(layers["setup"]),
            median(layers["plain"]), "the same layer, curl only")
    )  # fmt: skip
    boots = {
        f"{release}-{kind}": {**spec, "release": release, "ip": f"192.168.83.{50 + i}"}
        for i, (release, (kind, spec)) in enumerate(
            (r, k) for r in RELEASES for k in (
                ("ct", {"type": "container"}), ("vm", VM), ("cold", {**VM, "snapshot": "off"}),
            )
        )
    }  # fmt: skip
    config = make_config(state, **boots)
    with Lab(config.network) as lab:  # each release's template exists before timing
        for release in RELEASES:
            Workspace(config.workspaces[f"{release}-vm"], config, lab).start().stop()
    for kind, label in (("ct", "container"), ("vm", "VM, restored"), ("cold", "VM, cold")):
        ready = {r: median(ours_start_stop(config, f"{r}-{kind}", runs)[0]) for r in RELEASES}
        rows.append(
            Row(f"start -> ready, {label}: {new}", ready[new], ready[old], f"the same, {old}")
        )
    return rows
