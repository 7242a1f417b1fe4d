"""The same eight tests on VM workspaces: restored from a template (WSF_SNAPSHOT=auto, the
default) or booted cold (WSF_SNAPSHOT=off)."""

import os

import pytest


@pytest.mark.workspace(type="vm", vcpu=1, memory=768, snapshot=os.environ.get("WSF_SNAPSHOT"))
@pytest.mark.parametrize("i", range(8))
def test_vm_workspace(workspace, i):
    host = workspace.host
    assert host.file("/etc/debian_version").exists
    out = host.run("python3 -c 'print(6*7)'")
    assert out.rc == 0
    assert out.stdout.strip() == "42"
