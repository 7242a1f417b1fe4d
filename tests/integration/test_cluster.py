"""The example cluster (examples/cluster/: three etcd members from Debian 12's
etcd-server) under faults, run as a user runs it: pytest with its config, in a subprocess.
Its tests check themselves (a new leader, a write that commits and one that does not, all
three agreeing, a paused member catching up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.prereqs import require_root_and_tools

EXAMPLE = Path(__file__).parents[2] / "examples" / "cluster"


def test_the_etcd_cluster_example_passes_under_its_faults(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "mmdebstrap", "dnsmasq", "nft")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "--ws-config", str(EXAMPLE / "workspaces.toml"), "--ws-state-dir", str(tmp_path),
         str(EXAMPLE)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout
