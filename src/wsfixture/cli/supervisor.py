"""``python -m wsfixture.cli.supervisor CONFIG NAME``: keep one workspace running for the CLI.

``wsfixture up`` starts one supervisor per workspace, detached from the terminal. It boots
the workspace in the config's persistent lab (created on first use, then owned by its
dnsmasq), prints ``READY <seconds>`` or ``FAILED <reason>`` on stdout, and stays until
SIGTERM (``wsfixture down``), when it stops the workspace. As the workspace's owner in the
ledger, a supervisor that dies makes its workspace an orphan that ``gc`` reaps.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from wsfixture.cli.persistent import config_hash, config_snapshot, shared_lab
from wsfixture.host import ledger
from wsfixture.model.config import load_config
from wsfixture.net.forward import PortForward
from wsfixture.workspace import Workspace


def supervise(config_path: str, name: str) -> int:
    config = load_config(config_path)
    spec = config.workspaces[name]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    lab = shared_lab(config)
    supervisor = ledger.SupervisorInfo(
        config_path=str(Path(config_path).resolve()),
        config_hash=config_hash(snapshot := config_snapshot(config, spec)),
        config=snapshot,
        started=time.time(),
    )
    ws = Workspace(spec, config, lab, supervisor=supervisor)
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
        print(f"FAILED {reason}", flush=True)
        print(str(exc), file=sys.stderr)
        return 1
    print(f"READY {ws.ready_seconds:.2f}", flush=True)
    # The `up` command reads one line and leaves; nothing more goes to its pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    while not stop.is_set() and ws.is_running:
        stop.wait(1.0)
    for forward in forwards:
        forward.close()
    ws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1], sys.argv[2]))
