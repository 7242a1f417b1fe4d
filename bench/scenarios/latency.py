"""A command's round trip through testinfra and fabric against raw paramiko."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness import (
    Context,
    Row,
    make_config,
    median,
)

from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


def run(ctx: Context) -> list[Row]:
    state, runs = ctx.state, ctx.runs
    config = make_config(state, lat={"type": "container", "ip": "192.168.83.12"})
    calls = 100 * runs
    with Lab(config.network) as lab, Workspace(config.workspaces["lat"], config, lab) as ws:
        assert ws._ssh is not None
        session = ws._ssh

        def timed(action: Callable[[], object]) -> float:
            action()  # warm
            samples = []
            for _ in range(calls):
                begin = time.perf_counter()
                action()
                samples.append(time.perf_counter() - begin)
            return median(samples) * 1000

        raw = timed(lambda: session.run("true"))
        host = timed(lambda: ws.host.run("true"))
        conn = timed(lambda: ws.conn.run("true", hide=True))
    return [
        Row(
            "command via ws.host.run (testinfra)",
            host,
            raw,
            "raw paramiko exec",
            "ms",
            "< 15 ms",
            host < 15,
        ),
        Row(
            "command via ws.conn.run (fabric)",
            conn,
            raw,
            "raw paramiko exec",
            "ms",
            "< 15 ms",
            conn < 15,
        ),
    ]
