"""``python -m wsfixture.supervisor CONFIG NAME``: keep one workspace running for the CLI.

``wsfixture up`` starts one supervisor per workspace, detached from the terminal. It boots
the workspace in the config's persistent lab (created on first use, then owned by its
dnsmasq), prints ``READY <seconds>`` or ``FAILED <reason>`` on stdout, and stays until
SIGTERM (``wsfixture down``), when it stops the workspace. As the workspace's owner in the
ledger, a supervisor that dies makes its workspace an orphan that ``gc`` reaps.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from filelock import FileLock

from wsfixture import system
from wsfixture.config import Config, WorkspaceSpec, load_config
from wsfixture.lab import Lab
from wsfixture.workspace import Workspace

LOG_DIR = system.LIB_DIR / "supervisors"


def config_hash(config: Config, spec: WorkspaceSpec) -> str:
    """What a running workspace was started from; a change means it needs a restart."""
    user = config.defaults.user
    blob = {
        "spec": spec.to_dict(),
        "packages": list(config.packages_for(spec)),
        "user": [user.name, user.uid, list(user.authorized_keys)],
        "network": [str(config.network.subnet), str(config.network.gateway)],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def shared_lab(config: Config) -> Lab:
    """The config's persistent lab, created once even when several supervisors start."""
    name = config.network.namespace
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(str(LOG_DIR / f"lab-{name}.lock")):
        lab = Lab(config.network, name, reuse=True, die_with_owner=False).open()
        lab.detach()
    return lab


def log_path(lab: str, name: str) -> Path:
    return LOG_DIR / f"{lab}-{name}.log"


def supervise(config_path: str, name: str) -> int:
    config = load_config(config_path)
    spec = config.workspaces[name]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    lab = shared_lab(config)
    labels = {
        "config_path": str(Path(config_path).resolve()),
        "config_hash": config_hash(config, spec),
        "started": time.time(),
        "supervised": True,
    }
    ws = Workspace(spec, config, lab, labels=labels)
    try:
        ws.start()
    except Exception as exc:
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
    ws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1], sys.argv[2]))
