"""A lab's generated files, without a lab: hosts, known_hosts and the ssh_config whose
ProxyCommand is the only way in."""

from __future__ import annotations

import shlex
from pathlib import Path

from wsfixture.model import derive
from wsfixture.net import labfiles
from wsfixture.net.labfiles import LabHost, SshPaths

HOSTS = [
    LabHost("alpha", "192.168.83.10", "dev", "ssh-ed25519 AAAAalpha"),
    LabHost("beta", "192.168.83.11", "dev", "ssh-ed25519 AAAAbeta"),
]


def paths(root: Path) -> SshPaths:
    return SshPaths(
        root, root / "ssh_config", root / "known_hosts", root / "id_ed25519",
        Path("/run/netns/wsf-x"), "/usr/bin/python3",
    )  # fmt: skip


def test_the_hosts_file_has_a_line_per_workspace_under_its_header() -> None:
    text = labfiles.hosts_text("wsf-x", HOSTS)
    lines = text.splitlines()
    assert lines[0].startswith("# wsfixture lab wsf-x")
    assert lines[1:] == [derive.hosts_line(h.name, h.ip) for h in HOSTS]


def test_known_hosts_pins_each_key_under_its_address_and_names() -> None:
    lines = labfiles.known_hosts_text(HOSTS).splitlines()
    assert len(lines) == 2
    names, key = lines[0].split(" ", 1)
    assert key == "ssh-ed25519 AAAAalpha"
    assert names.split(",") == ["192.168.83.10", *derive.hostnames("alpha")]


def test_ssh_config_pins_keys_and_refuses_every_other_host(tmp_path: Path) -> None:
    text = labfiles.ssh_config_text("wsf-x", HOSTS, paths(tmp_path))
    blocks = text.split("\nHost ")
    assert len(blocks) == 4  # the header, two workspaces, the refusal
    for host, block in zip(HOSTS, blocks[1:3], strict=True):
        assert block.startswith(" ".join([*derive.hostnames(host.name), host.ip]))
        assert f"HostName {host.ip}\n" in block
        assert "StrictHostKeyChecking yes" in block
        assert "StrictHostKeyChecking no" not in block
        assert "-m wsfixture.net.relay %h %p" in block
    assert blocks[3].startswith("*\n")
    assert "is not a workspace of lab wsf-x" in blocks[3]


def test_ssh_config_quotes_a_state_root_with_a_space(tmp_path: Path) -> None:
    root = tmp_path / "state root"
    text = labfiles.ssh_config_text("wsf-x", HOSTS[:1], paths(root))
    assert f'UserKnownHostsFile "{root / "known_hosts"}"' in text
    proxy = next(line for line in text.splitlines() if "nsenter" in line)
    words = shlex.split(proxy.split("ProxyCommand ", 1)[1])
    assert words[:4] == ["nsenter", "--net=/run/netns/wsf-x", "/usr/bin/python3", "-m"]
