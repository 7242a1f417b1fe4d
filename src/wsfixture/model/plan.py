"""The plan of a config: everything derived for each workspace, before anything boots. Pure.

Each workspace's fields come from the model's declarations (those only VMs use are shown
for VMs), beside what is derived from its name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wsfixture.model import derive, fields
from wsfixture.model.config import STANDARD_SHARES, Config, WorkspaceSpec


def _fields_of(spec: WorkspaceSpec) -> dict[str, Any]:
    data = fields.to_data(spec)
    for f, decl in fields.declarations(WorkspaceSpec):
        if decl.vm_only and not spec.is_vm:
            data.pop(fields.camel(f.name), None)
    return data


def plan(config: Config, accel: str | None = None) -> dict[str, Any]:
    """Plain data for ``wsfixture plan``: the network and, per workspace, its identity."""
    workspaces = []
    for spec in config.workspaces.values():
        got = config.resolve(spec)
        entry: dict[str, Any] = {
            **derive.identity(spec.name, str(spec.ip)),
            **_fields_of(spec),
            # What it may use, resolved (its own, the defaults', its kind's); none: no limit.
            "resources": {
                key: value
                for key, value in dataclasses.asdict(got.resources).items()
                if value is not None
            },
            "release": got.release,
            "packages": list(got.packages),
            # What the image layer gets beyond packages: the defaults' and its own, merged.
            "files": {target: str(source) for target, source in got.files.items()},
            "setup": list(got.setup),
            "stateDirs": {
                share: str(config.state_dir(spec.name) / share) for share in STANDARD_SHARES
            },
        }
        if spec.is_vm and accel:
            entry["accel"] = accel
        workspaces.append(entry)
    network = fields.to_data(config.network)
    return {
        "network": {
            **network,
            "range": f"{network['rangeStart']}-{network['rangeEnd']}",
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
            ("release", ws["release"]),
            ("packages", ", ".join(ws["packages"]) or "-"),
            *[
                ("files" if i == 0 else "", f"{target} <- {source}")
                for i, (target, source) in enumerate(ws["files"].items())
            ],
            *[("setup" if i == 0 else "", line) for i, line in enumerate(ws["setup"])],
            ("state dirs", ", ".join(ws["stateDirs"].values())),
        ]
        res = ws["resources"]
        shown = [
            f"{res['vcpu']} vcpu" if "vcpu" in res else "",
            f"{res['memory']} MiB" if "memory" in res else "",
            f"disk {res['disk']} MiB" if "disk" in res else "",
            f"pids {res['pids']}" if "pids" in res else "",
        ]
        if ws["type"] == "vm":
            shown += [ws["machine"], f"accel {ws['accel']}", f"vsock {ws['vsock']}"]
        rows.append(("resources", ", ".join(part for part in shown if part) or "no limits"))
        rows.append(("internet", _internet(ws.get("internet"), net.get("internet"))))
        if ws.get("forwards"):
            forwards = ", ".join(f"127.0.0.1:{local} -> {port}"
                                 for local, port in ws["forwards"].items())  # fmt: skip
            rows.append(("forwards", forwards))
        if ws.get("idleTimeout"):
            rows.append(("idle stop", f"after {ws['idleTimeout']} s without an SSH session"))
        lines += [f"  {key:<11} {value}" for key, value in rows]
    return "\n".join(lines)


def _internet(own: object, lab_wide: object) -> str:
    """What a workspace may reach: its own setting, else its network's (``up``'s labs have
    the internet unless the config says no; pytest's only when it says yes)."""
    chosen = lab_wide if own is None else own
    if isinstance(chosen, list):
        return "only " + ", ".join(str(entry) for entry in chosen)
    if chosen is False:
        return "off"
    return "open" if chosen else "off in pytest labs, open for `wsfixture up`"
