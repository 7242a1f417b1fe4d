"""Two tests whose images and VM template no other bench or test makes (a layer with
`tree`; a VM of 672 MiB): what a fresh runner would build, or pull from a shared cache."""

import pytest


@pytest.mark.workspace(type="container", packages=["tree"])
def test_container(workspace):
    assert workspace.succeed("tree --version").startswith("tree")


@pytest.mark.workspace(type="vm", vcpu=1, memory=672)
def test_vm(workspace):
    assert workspace.host.file("/etc/debian_version").exists
