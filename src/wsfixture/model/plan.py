"""The plan of a config: everything derived for each workspace, before anything boots. Pure."""

from __future__ import annotations

from typing import Any

from wsfixture.model import derive
from wsfixture.model.config import STANDARD_SHARES, Config


def plan(config: Config, accel: str | None = None) -> dict[str, Any]:
    """Plain data for ``wsfixture plan``: the network and, per workspace, its identity."""
    network = config.network
    workspaces = []
    for spec in config.workspaces.values():
        entry: dict[str, Any] = {
            "type": spec.type,
            "ip": str(spec.ip),
            **derive.identity(spec.name, str(spec.ip)),
            "autoStart": spec.auto_start,
            "restartIfChanged": spec.restart_if_changed,
            "packages": list(config.packages_for(spec)),
            "stateDirs": {
                share: str(config.state_dir(spec.name) / share) for share in STANDARD_SHARES
            },
        }
        if spec.is_vm:
            entry.update(
                vcpu=spec.vcpu,
                memoryMiB=spec.memory,
                diskMiB=spec.disk,
                machine=spec.machine,
                accel=accel or spec.accel,
                vsock=spec.vsock,
                shares=[{"source": str(s.source), "target": s.target} for s in spec.shares],
            )
        workspaces.append(entry)
    return {
        "network": {
            "subnet": str(network.subnet),
            "gateway": str(network.gateway),
            "range": f"{network.range_start}-{network.range_end}",
            "bridge": network.bridge,
            "dns": network.dns,
            "namespace": network.namespace,
        },
        "user": config.defaults.user.name,
        "workspaces": workspaces,
    }


def render_text(data: dict[str, Any]) -> str:
    """The plan for people."""
    net = data["network"]
    lines = [
        f"network {net['subnet']}  gateway {net['gateway']}  range {net['range']}  "
        f"bridge {net['bridge']}  dns {'on' if net['dns'] else 'off'}  user {data['user']}",
    ]
    for ws in data["workspaces"]:
        lines.append("")
        lines.append(f"{ws['name']}  ({ws['type']})")
        rows = [
            ("ip", ws["ip"]),
            ("mac", ws["mac"]),
            ("vsock cid", str(ws["cid"])),
            ("interface", ws["interfaces"]["tap" if ws["type"] == "vm" else "veth"]),
            ("hostnames", ", ".join(ws["hostnames"])),
            ("hosts line", ws["hostsLine"]),
            ("aliases", ", ".join(ws["aliases"])),
            ("packages", ", ".join(ws["packages"]) or "-"),
            ("state dirs", ", ".join(ws["stateDirs"].values())),
        ]
        if ws["type"] == "vm":
            rows.append(
                (
                    "resources",
                    f"{ws['vcpu']} vcpu, {ws['memoryMiB']} MiB, disk {ws['diskMiB']} MiB, "
                    f"{ws['machine']}, accel {ws['accel']}, vsock {ws['vsock']}",
                )
            )
        lines += [f"  {key:<11} {value}" for key, value in rows]
    return "\n".join(lines)
