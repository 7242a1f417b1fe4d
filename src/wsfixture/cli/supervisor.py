"""``python -m wsfixture.cli.supervisor CONFIG NAME``: keep one workspace running for the CLI.

``wsfixture up`` starts one supervisor per workspace, detached from the terminal. It boots
the workspace in the config's persistent lab (created on first use, then owned by its
dnsmasq), prints ``PROGRESS <what it does>`` and ``NOTE <what the user should know>``
lines, then ``READY <seconds>`` or ``FAILED <reason>``, on stdout, and stays until
SIGTERM (``wsfixture down``), when its ``--ttl`` runs out, or when its ``idleTimeout`` passes
without an SSH session; then it stops the workspace. Meanwhile it answers checkpoint
requests on the workspace's control socket (``cli.control``). As the workspace's owner in
the ledger, a supervisor that dies makes its workspace an orphan that ``gc`` reaps.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

from wsfixture.cli import control
from wsfixture.cli.persistent import (
    FAILED,
    NOTE,
    PROGRESS,
    READY,
    config_hash,
    config_snapshot,
    publish,
    remove_lab_if_idle,
    shared_lab,
    started,
)
from wsfixture.host import ledger
from wsfixture.model.config import load_config
from wsfixture.net.forward import PortForward
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


def ssh_sessions(lab: Lab, ip: str) -> int:
    """Established SSH connections to ``ip`` (every way in starts in the lab: the relay of
    ``wsfixture ssh``, the pinned sessions of exec and cp)."""
    out = lab.run(["ss", "-Htn", "state", "established", f"( dst {ip} and dport = :22 )"])
    return len(out.splitlines())


def watch(
    ws: Workspace,
    lab: Lab,
    info: ledger.SupervisorInfo,
    stop: threading.Event,
    busy: threading.Lock,
) -> str:
    """Wait for a reason to stop: a signal, the workspace gone, its ttl or idle time.
    ``busy`` is held while a control request (a rollback) changes the machine."""
    while not stop.is_set():
        stop.wait(1.0)
        with busy:
            running = ws.is_running
        if not running:
            return "the workspace is gone"
        now = time.time()
        if info.stop_at is not None and now >= info.stop_at:
            return "its --ttl ran out"
        timeout = info.idle_timeout
        if timeout is None:
            continue
        if ssh_sessions(lab, ws.ip):
            if info.idle_since is not None:
                info = dataclasses.replace(info, idle_since=None, paused=ws.paused)
                publish(lab.name, ws.name, info)
        elif info.idle_since is None:
            info = dataclasses.replace(info, idle_since=now, paused=ws.paused)
            publish(lab.name, ws.name, info)
        elif now - info.idle_since >= timeout:
            return f"no SSH session for {timeout}s (idleTimeout)"
    return "asked to"


def supervise(config_path: str, name: str, ttl: int | None = None) -> int:
    config = load_config(config_path)
    spec = config.workspaces[name]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    lab = shared_lab(config, starting=name)
    supervisor = ledger.SupervisorInfo(
        config_path=str(Path(config_path).resolve()),
        config_hash=config_hash(snapshot := config_snapshot(config, spec)),
        config=snapshot,
        started=(now := time.time()),
        stop_at=None if ttl is None else now + ttl,
        idle_timeout=spec.idle_timeout,
        idle_since=now,
    )
    # What the start is doing, for `up` and `apply` to show while they wait for READY.
    ws = Workspace(spec, config, lab, supervisor=supervisor,
                   progress=lambda line: print(f"{PROGRESS}{line}", flush=True))  # fmt: skip
    forwards: list[PortForward] = []
    try:
        # The host ports first: one already taken fails before the workspace is made.
        for local, port in spec.forwards:
            forwards.append(PortForward(lab, ws.ip, port, local))
        ws.start()
    except Exception as exc:
        for forward in forwards:
            forward.close()
        reason = " ".join(str(exc).split())[:2000]
        print(f"{FAILED}{reason}", flush=True)
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        started(lab.name, name)  # in the ledger now, or failed: no mark needed
    # Its checkpoints outlive it (in its state dir): those it can no longer take are said.
    for tag, why in ws._checkpointing.keep_matching():
        print(f"{NOTE}checkpoint {tag!r} removed: {why}", flush=True)
    print(f"{READY}{ws.ready_seconds:.2f}", flush=True)
    # The `up` command reads one line and leaves; nothing more goes to its pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    ws._drop_session()  # its readiness login is not a user's session
    busy = threading.Lock()
    control.serve(ws, busy, stop)
    why = watch(ws, lab, supervisor, stop, busy)
    print(f"{name}: stopping: {why}", file=sys.stderr, flush=True)
    for forward in forwards:
        forward.close()
    with busy:  # not under a checkpoint being written
        ws.stop()
    # The lab goes with its last workspace: `down` removes it (and says so); when the
    # workspace stopped by itself (its ttl, its idle timeout), nobody waits to: here.
    if not stop.is_set() and remove_lab_if_idle(lab.name):
        print(f"lab {lab.name}: removed (no workspace runs)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    ttl_arg = sys.argv[3] if len(sys.argv) > 3 else None
    sys.exit(supervise(sys.argv[1], sys.argv[2], int(ttl_arg) if ttl_arg else None))
