"""Many workspaces at once: 32 containers started together all become ready and pass every
built-in check. Every container's systemd, networkd and resolved hold inotify instances
that the kernel counts against host root's (the owner of each container's user
namespace); at Debian's 128 the 15th of 16 failed. `make host` raises the limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.configs import make_config
from tests.support.prereqs import require, require_root_and_tools
from wsfixture import checks
from wsfixture.host import setup
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

COUNT = 32
READY_TIMEOUT = 120.0


def test_32_containers_start_together_and_pass_their_checks(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    require(not setup.low_sysctls(), f"inotify limits of `wsfixture setup-host` {setup.SYSCTLS}")
    config = make_config(tmp_path, **{f"m{i}": {"type": "container"} for i in range(COUNT)})
    with Lab(config.network) as lab:
        wss = [Workspace(s, config, lab, timeout=READY_TIMEOUT) for s in config.workspaces.values()]
        errors: dict[str, BaseException] = {}

        def wait(ws: Workspace) -> None:
            try:
                ws._wait_ready()
            except BaseException as exc:  # every failure is reported below, by name
                errors[ws.name] = exc

        try:
            began = time.monotonic()
            for ws in wss:
                ws._launch()
            threads = [threading.Thread(target=wait, args=(ws,)) for ws in wss]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == {}, f"{len(errors)} of {COUNT} did not start: {errors}"
            assert time.monotonic() - began < READY_TIMEOUT
            failed = [(ws.name, o.check.id, o.detail) for ws in wss for o in checks.verify(ws)
                      if not o.ok]  # fmt: skip
            assert failed == []
        finally:
            for ws in wss:
                ws.stop()
