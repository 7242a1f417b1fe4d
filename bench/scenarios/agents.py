"""``wsfixture serve`` through the real ``e2b`` SDK against the same work through the
Python API: a sandbox made to its first command's output (a container and a restored VM),
and one command's round trip."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import VM, Context, Row, median, say

import wsfixture
from wsfixture.model.config import load_config

KEY = "wsf-bench-key-0123456789abcdef"
ROUND_TRIPS = 30  # commands a run, for the round trip's median


CONFIG = """
[defaults]
stateRoot = "{state}"

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
    import e2b  # the agents extra

    config_file = ctx.state / "agents.toml"
    config_file.write_text(CONFIG.format(state=ctx.state, vcpu=VM["vcpu"], memory=VM["memory"]))
    config = load_config(config_file)

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
    with _served(config_file, ctx.state):
        for template, kind in (("box", "container"), ("vm", "restored VM")):
            ours = [ours_first(template) for _ in range(ctx.runs)]
            base = [api_first(template) for _ in range(ctx.runs)]
            rows.append(Row(
                f"E2B Sandbox.create -> first output, {kind}", median(ours), median(base),
                "the Python API: Lab.workspace + ws.run", target="<= 1.2x",
                met=median(ours) <= 1.2 * median(base),
            ))  # fmt: skip
        with e2b.Sandbox.create("box", timeout=300) as sandbox:
            served = _timed(lambda: sandbox.commands.run("true"), ROUND_TRIPS * ctx.runs)
        with wsfixture.Lab(config) as lab:
            ws = lab.workspace("rt", like="box")
            # The SDK runs every command as `/bin/bash -l -c LINE`: a login shell's startup
            # is the same work through either door.
            same = _timed(lambda: ws.run("/bin/bash -l -c true"), ROUND_TRIPS * ctx.runs)
            bare = _timed(lambda: ws.run("true"), ROUND_TRIPS * ctx.runs)
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


@contextmanager
def _served(config: Path, state: Path) -> Iterator[None]:
    """``wsfixture serve`` on a free loopback port, the SDK pointed at it; stopped after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(state / "serve.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "wsfixture.cli", "-c", str(config), "serve", "--listen",
         f"127.0.0.1:{port}", "--api-key", KEY], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=KEY)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        if process.wait(timeout=120) != 0:
            say(f"bench agents: serve exited {process.returncode}; see {state / 'serve.log'}")
        log.close()
