"""Bring your own playbook: `wsfixture inventory` lists a lab's running workspaces for
Ansible, host keys pinned through the lab's ssh_config; a playbook converges a container
and a VM, and testinfra verifies both (Molecule's converge, then verify)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configs import make_config
from tests.support.prereqs import require
from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

pytestmark = pytest.mark.vm

PLAYBOOK = """\
- hosts: workspaces
  gather_facts: false
  tasks:
    - name: the package goes over
      ansible.builtin.copy:
        src: "{{ deb }}"
        dest: /tmp/wsf-hello.deb
    - name: and is installed
      become: true
      ansible.builtin.command: dpkg -i /tmp/wsf-hello.deb
    - name: a file from a template
      become: true
      ansible.builtin.template:
        src: motd.j2
        dest: /etc/wsf-motd
        mode: "0644"
"""


@pytest.fixture(scope="module")
def config(state_root: Path) -> Config:
    return make_config(
        state_root, web={"type": "container"}, db={"type": "vm", "vcpu": 1, "memory": 768}
    )


def local_deb(where: Path) -> Path:
    """A package built here (the test sends nothing beyond the lab)."""
    root = where / "wsf-hello"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: wsf-hello\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: wsfixture <dev@example.invalid>\nDescription: a test package\n"
    )
    (root / "usr/share/wsf-hello").mkdir(parents=True)
    (root / "usr/share/wsf-hello/hello.txt").write_text("hello\n")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root)], check=True,
                   capture_output=True)  # fmt: skip
    return where / "wsf-hello.deb"


def wsfixture(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", *args], capture_output=True, text=True, check=True
    ).stdout


def test_the_inventory_names_every_running_workspace_with_pinned_ssh(
    running: dict[str, Workspace], lab: Lab
) -> None:
    document = json.loads(wsfixture("inventory", "--lab", lab.name, "--format", "json"))
    assert sorted(document["workspaces"]["hosts"]) == ["db", "web"]
    for name, ws in running.items():
        variables = document["_meta"]["hostvars"][name]
        assert variables["ansible_user"] == ws.user
        assert variables["ansible_ssh_common_args"] == f"-F {lab.ssh_config}"
        assert variables["wsfixture_ip"] == ws.ip
    ssh_config = lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in ssh_config
    assert "StrictHostKeyChecking no" not in ssh_config


def test_a_playbook_converges_both_and_testinfra_verifies(
    running: dict[str, Workspace], lab: Lab, tmp_path: Path
) -> None:
    playbook_bin = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    require(playbook_bin is not None, "ansible-playbook (ansible-core, a test dependency)")
    assert playbook_bin is not None
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(wsfixture("inventory", "--lab", lab.name))
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    (tmp_path / "motd.j2").write_text("{{ inventory_hostname }} is a {{ wsfixture_type }}\n")
    deb = local_deb(tmp_path)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    result = subprocess.run(
        [playbook_bin, "-i", str(inventory), "site.yml", "-e", f"deb={deb}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "failed=0" in result.stdout
    for name, ws in running.items():
        assert ws.host.package("wsf-hello").is_installed
        assert ws.host.file("/usr/share/wsf-hello/hello.txt").content_string == "hello\n"
        motd = ws.host.file("/etc/wsf-motd")
        assert motd.content_string == f"{name} is a {ws.spec.type}\n"
        assert motd.user == "root"
