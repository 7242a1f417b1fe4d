"""An Ansible inventory of a lab's running workspaces. Each host is reached through the
lab's ssh_config (its ProxyCommand enters the lab, its known_hosts pins the host key), so
Ansible checks keys exactly as `wsfixture ssh` does. Pure but for reading the ledger."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from wsfixture.host import ledger

FORMATS = ("ini", "yaml", "json")
GROUP = "workspaces"


def hosts(lab: str, ssh_config: Path, privilege: str = "doas") -> dict[str, dict[str, str]]:
    """The lab's running workspaces, each with its Ansible connection variables
    (``privilege``: the config's, what Ansible's become goes through)."""
    found = {}
    for name, record in sorted(ledger.workspaces(lab, live=True).items()):
        info = ledger.workspace_info(record)
        found[name] = {
            "ansible_host": name,  # a Host of the lab's ssh_config
            "ansible_user": info.user,
            "ansible_ssh_common_args": f"-F {shlex.quote(str(ssh_config))}",
            "ansible_python_interpreter": "/usr/bin/python3",
            "wsfixture_type": info.type,
            "wsfixture_ip": info.ip,
        }
        if privilege == "doas":
            # become: ansible-core has no doas plugin; its sudo one runs `doas -n -u root
            # ...` with these (passwordless for the workspace user).
            found[name] |= {"ansible_become_exe": "doas", "ansible_become_flags": "-n"}
    return found


def render(found: dict[str, dict[str, str]], fmt: str) -> str:
    """The inventory as Ansible reads it: INI, YAML, or a dynamic inventory's JSON."""
    if fmt == "json":
        document = {
            "_meta": {"hostvars": found},
            "all": {"children": [GROUP]},
            GROUP: {"hosts": list(found)},
        }
        return json.dumps(document, indent=1)
    if fmt == "yaml":  # JSON strings are YAML strings: no YAML library needed
        lines = ["all:", "  children:", f"    {GROUP}:", "      hosts:"]
        for name, variables in found.items():
            lines.append(f"        {name}:")
            lines += [f"          {key}: {json.dumps(value)}" for key, value in variables.items()]
        if not found:
            lines[-1] += " {}"
        return "\n".join(lines)
    lines = [f"[{GROUP}]"]
    for name, variables in found.items():
        pairs = " ".join(f"{key}={_ini_value(value)}" for key, value in variables.items())
        lines.append(f"{name} {pairs}")
    return "\n".join(lines)


def _ini_value(value: str) -> str:
    return f"'{value}'" if " " in value else value
