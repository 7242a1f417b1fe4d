"""The text of a lab's files, pure: its hosts file, known_hosts and ssh_config, from the
workspaces it knows. ``Lab`` writes them; tests read them here without a lab."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from wsfixture.model import derive


@dataclass(frozen=True)
class LabHost:
    """What the lab knows of one workspace: enough for DNS, known_hosts and ssh_config."""

    name: str
    ip: str
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."


def hosts_text(lab: str, hosts: list[LabHost]) -> str:
    header = f"# wsfixture lab {lab}: generated, rewritten on every change\n"
    return header + "".join(f"{derive.hosts_line(h.name, h.ip)}\n" for h in hosts)


def known_hosts_text(hosts: list[LabHost]) -> str:
    """Each workspace's host key under its address and every name it answers to."""
    return "".join(f"{','.join([h.ip, *derive.hostnames(h.name)])} {h.host_key}\n" for h in hosts)


@dataclass(frozen=True)
class SshPaths:
    """Where a lab's ssh_config points: its files, and how ProxyCommand gets into it."""

    lab_dir: Path
    ssh_config: Path
    known_hosts: Path
    client_key: Path | None
    netns: Path
    python: str  # the interpreter that runs the relay


def ssh_config_text(lab: str, hosts: list[LabHost], paths: SshPaths) -> str:
    # Every path quoted: a state root may hold a space (ProxyCommand goes through sh).
    netns, python = shlex.quote(str(paths.netns)), shlex.quote(paths.python)
    relay = f"{netns} {python} -m wsfixture.net.relay %h %p"
    blocks = [f"# wsfixture lab {lab}: use with  ssh -F {paths.ssh_config} <name>\n"]
    for host in hosts:
        blocks.append(
            "\n".join(
                [
                    f"Host {' '.join([*derive.hostnames(host.name), host.ip])}",
                    f"  HostName {host.ip}",
                    f"  User {host.user}",
                    f'  IdentityFile "{paths.client_key}"',
                    "  IdentitiesOnly yes",
                    f'  UserKnownHostsFile "{paths.known_hosts}"',
                    "  StrictHostKeyChecking yes",
                    "  PasswordAuthentication no",
                    "  ControlMaster auto",
                    f'  ControlPath "{paths.lab_dir}/cm-%C"',
                    "  ControlPersist 60s",
                    f"  ProxyCommand nsenter --net={relay}",
                    "",
                ]
            )
        )
    # Any other name or address is not a workspace of this lab: refuse it, rather than let
    # OpenSSH resolve it the usual way and connect to whatever answers.
    refusal = f"echo 'wsfixture: %n is not a workspace of lab {lab}' >&2; exit 1"
    blocks.append(f'Host *\n  ProxyCommand /bin/sh -c "{refusal}"\n')
    return "\n".join(blocks)
