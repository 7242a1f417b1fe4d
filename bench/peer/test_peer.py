"""The peer a user would pick instead: testcontainers-python + pytest-testinfra on podman.

A bare container per test (no systemd, no network, no sshd), reached with `podman exec`.
Run by bench/run.py against podman's Docker-compatible API, with the quirks this machine
kind needs (runc, ulimits, network none; see ../shared/peer/FINDINGS.md).
"""

import os

import pytest
import testinfra
from testcontainers.core.container import DockerContainer

IMAGE = "localhost/wsbase"
API_VERSION = os.environ.get("PEER_API_VERSION", "1.41")  # skips docker-py's GET /version


@pytest.fixture
def workspace():
    container = (
        DockerContainer(IMAGE, docker_client_kw={"version": API_VERSION})
        .with_command("sleep infinity")
        .with_kwargs(network_mode="none")  # never podman's default bridge
    )
    container.start()
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture
def host(workspace):
    return testinfra.get_host(f"podman://{workspace.get_wrapped_container().id}")


@pytest.mark.parametrize("i", range(8))
def test_workspace(host, i):
    assert host.file("/etc/debian_version").exists
    assert host.exists("python3")
    out = host.run("python3 -c 'print(6*7)'")
    assert out.rc == 0
    assert out.stdout.strip() == "42"
