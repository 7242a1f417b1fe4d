"""The same 8-test suite on testcontainers + podman, against our sessions' walls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from baselines import PEER_VENV, setup_peer
from harness import (
    HERE,
    Context,
    Row,
    median,
    run_suite,
)


def run(ctx: Context) -> list[Row]:
    state, runs, ours = ctx.state, ctx.runs, ctx.session_walls
    setup_peer(state)
    conf = str(HERE / "peer" / "containers.conf")
    sock_dir = Path(tempfile.mkdtemp(prefix="wsf-peer-"))
    sock = sock_dir / "podman.sock"
    env = dict(
        os.environ,
        CONTAINERS_CONF=conf,
        DOCKER_HOST=f"unix://{sock}",
        TESTCONTAINERS_RYUK_DISABLED="true",
    )
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        pytest = str(PEER_VENV / "bin" / "pytest")
        for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
            samples = [
                run_suite([*extra, "test_peer.py"], HERE / "peer", env, pytest)[0]
                for _ in range(runs)
            ]
            peer = median(samples)
            mine = ours.get(label)
            rows.append(
                Row(
                    f"8 tests {label}: wsfixture vs testcontainers+podman",
                    mine,
                    peer,
                    "peer (bare container, podman exec)",
                    target="<= 0.7x",
                    met=None if mine is None else mine <= 0.7 * peer,
                )
            )
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return rows
