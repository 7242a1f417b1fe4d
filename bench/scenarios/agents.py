"""``wsfixture serve`` through the real ``e2b`` SDK against the same work through the
Python API: a sandbox made to its first command's output (a container and a restored VM),
and one command's round trip."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness import VM, Context, Row, median
from tests.support.serve import serving

import wsfixture
from wsfixture.model.config import Config, load_config

ROUND_TRIPS = 30  # commands a run, for the round trip's median
CONFIG = """
[defaults]
stateRoot = "{{state}}"

[workspaces.box]
type = "container"
ip = "192.168.83.10"

[workspaces.vm]
type = "vm"
ip = "192.168.83.11"
vcpu = {vcpu}
memory = {memory}
"""


def run(ctx: Context) -> list[Row]:
    text = CONFIG.format(vcpu=VM["vcpu"], memory=VM["memory"])
    with serving(ctx.state / "served", text) as server:
        try:
            return _measured(load_config(ctx.state / "served" / "workspaces.toml"), ctx.runs)
        finally:
            server.stop()


def _measured(config: Config, runs: int) -> list[Row]:
    """The rows, the SDK pointed at a server of ``config``."""
    import e2b  # the agents extra

    with wsfixture.Lab(config) as lab:  # the VM's template made before anything is timed
        lab.workspace("warm", like="vm").stop()

    def ours_first(template: str) -> float:
        began = time.perf_counter()
        with e2b.Sandbox.create(template, timeout=300) as sandbox:
            sandbox.commands.run("true")
            return time.perf_counter() - began

    def api_first(template: str) -> float:
        with wsfixture.Lab(config) as lab:
            began = time.perf_counter()
            ws = lab.workspace("x", like=template)
            ws.run("true")
            return time.perf_counter() - began

    rows = []
    for template, kind in (("box", "container"), ("vm", "restored VM")):
        ours = [ours_first(template) for _ in range(runs)]
        base = [api_first(template) for _ in range(runs)]
        rows.append(Row(
            f"E2B Sandbox.create -> first output, {kind}", median(ours), median(base),
            "the Python API: Lab.workspace + ws.run", target="<= 1.2x",
            met=median(ours) <= 1.2 * median(base),
        ))  # fmt: skip
    with e2b.Sandbox.create("box", timeout=300) as sandbox:
        served = _timed(lambda: sandbox.commands.run("true"), ROUND_TRIPS * runs)
    with wsfixture.Lab(config) as lab:
        ws = lab.workspace("rt", like="box")
        # The SDK runs every command as `/bin/bash -l -c LINE`: a login shell's startup is
        # the same work through either door.
        same = _timed(lambda: ws.run("/bin/bash -l -c true"), ROUND_TRIPS * runs)
        bare = _timed(lambda: ws.run("true"), ROUND_TRIPS * runs)
    rows.append(Row(
        "E2B commands.run('true') round trip", served * 1000, same * 1000,
        "ws.run of its argv, bash -l -c true", unit="ms", target="<= 2x",
        met=served <= 2 * same,
    ))  # fmt: skip
    rows.append(Row(
        "E2B commands.run('true') round trip", served * 1000, bare * 1000,
        "ws.run('true'), no login shell", unit="ms",
    ))  # fmt: skip
    return rows


def _timed(action: Callable[[], object], count: int) -> float:
    action()  # warm: the connection made
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        action()
        samples.append(time.perf_counter() - began)
    return median(samples)
