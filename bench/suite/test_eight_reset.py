"""Eight tests on one VM shape: each its own restored VM (WSF_SCOPE=function), one VM for
the module (WSF_SCOPE=module), or one VM each test gets by rollback (WSF_RESET=checkpoint)."""

import os

import pytest

pytestmark = pytest.mark.workspace(
    type="vm",
    vcpu=1,
    memory=768,
    scope=os.environ.get("WSF_SCOPE", "function"),
    reset=os.environ.get("WSF_RESET", "none"),
)


@pytest.mark.parametrize("i", range(8))
def test_vm_workspace(workspace, i):
    host = workspace.host
    assert not host.file("/etc/left-behind").exists or os.environ.get("WSF_RESET") != "checkpoint"
    workspace.succeed("echo x | doas tee /etc/left-behind")
    out = host.run("python3 -c 'print(6*7)'")
    assert out.rc == 0
    assert out.stdout.strip() == "42"
