"""Eight trivial workspace tests: the same checks the peer's suite makes, on a full workspace
(systemd, network, pinned SSH) instead of a bare container."""

import pytest


@pytest.mark.parametrize("i", range(8))
def test_workspace(workspace, i):
    host = workspace.host
    assert host.file("/etc/debian_version").exists
    assert host.exists("python3")
    out = host.run("python3 -c 'print(6*7)'")
    assert out.rc == 0
    assert out.stdout.strip() == "42"
