"""The workspace model: what a validated configuration is made of. Pure data.

``wsfixture.model.config`` loads and validates it from TOML, ``nix eval --json`` output or
Python; everything else consumes these frozen dataclasses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from wsfixture.model import derive

WorkspaceType = Literal["vm", "container"]
WORKSPACE_TYPES: tuple[str, ...] = ("vm", "container")
ACCELERATORS: tuple[str, ...] = ("auto", "kvm", "tcg")
MACHINES: tuple[str, ...] = ("q35", "microvm")
VSOCK_MODES: tuple[str, ...] = ("auto", "required", "off")
STANDARD_SHARES: tuple[str, ...] = ("workspace", "ssh-host-keys", "claude-config")

# `workspace-<name>` must stay a valid DNS label (63 bytes).
NAME_MAX = 63 - len("workspace-")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")
SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]i?B?|[KMGT])?$", re.IGNORECASE)

VCPU_RANGE = (1, 256)
MEMORY_RANGE_MIB = (128, 1024 * 1024)
DISK_RANGE_MIB = (256, 16 * 1024 * 1024)
UID_RANGE = (1000, 60000)
DEFAULT_SUBNET = ipaddress.IPv4Network("192.168.83.0/24")


@dataclass(frozen=True)
class ShareSpec:
    """An extra host directory shared into the workspace."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class UserSpec:
    """The workspace user: same name and uid in every workspace."""

    name: str = "dev"
    uid: int = 1000
    authorized_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkSpec:
    """The lab network every workspace of a config joins."""

    subnet: ipaddress.IPv4Network = DEFAULT_SUBNET
    gateway: ipaddress.IPv4Address = DEFAULT_SUBNET[1]
    range_start: ipaddress.IPv4Address = DEFAULT_SUBNET[10]
    range_end: ipaddress.IPv4Address = DEFAULT_SUBNET[254]
    bridge: str = "wsbr0"
    dns: bool = True
    # The network namespace of a persistent lab (the CLI's); tests make their own.
    namespace: str = "wsfixture"

    def usable(self) -> Iterator[ipaddress.IPv4Address]:
        """Addresses a workspace may take, in order."""
        for number in range(int(self.range_start), int(self.range_end) + 1):
            address = ipaddress.IPv4Address(number)
            if address != self.gateway:
                yield address


@dataclass(frozen=True)
class Defaults:
    """What every workspace gets unless it says otherwise."""

    user: UserSpec = field(default_factory=UserSpec)
    packages: tuple[str, ...] = ()
    state_root: Path = Path("~/sandboxed")


@dataclass(frozen=True)
class WorkspaceSpec:
    """One workspace, as the user declared it."""

    name: str
    type: WorkspaceType
    ip: ipaddress.IPv4Address
    auto_start: bool = False
    restart_if_changed: bool = True
    packages: tuple[str, ...] = ()
    vcpu: int = 8
    memory: int = 4096
    disk: int = 8192
    shares: tuple[ShareSpec, ...] = ()
    accel: str = "auto"
    machine: str = "q35"
    vsock: str = "auto"
    # The seed's per-workspace NixOS module; opaque here, meaningful to the Nix side only.
    config: str | None = None

    @property
    def mac(self) -> str:
        return derive.mac(self.name)

    @property
    def cid(self) -> int:
        return derive.vsock_cid(self.name)

    @property
    def is_vm(self) -> bool:
        return self.type == "vm"

    def to_dict(self) -> dict[str, Any]:
        """The spec as config keys (camelCase), such that loading it gives it back."""
        return {
            "type": self.type,
            "ip": str(self.ip),
            "autoStart": self.auto_start,
            "restartIfChanged": self.restart_if_changed,
            "packages": list(self.packages),
            "vcpu": self.vcpu,
            "memory": self.memory,
            "disk": self.disk,
            "shares": [
                {"source": str(s.source), "target": s.target, "readOnly": s.read_only}
                for s in self.shares
            ],
            "accel": self.accel,
            "machine": self.machine,
            "vsock": self.vsock,
            **({"config": self.config} if self.config is not None else {}),
        }


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    network: NetworkSpec = field(default_factory=NetworkSpec)
    defaults: Defaults = field(default_factory=Defaults)
    workspaces: Mapping[str, WorkspaceSpec] = field(default_factory=dict)
    enable: bool = True
    source: str = ""

    def state_root(self) -> Path:
        return self.defaults.state_root.expanduser()

    def state_dir(self, name: str) -> Path:
        """``<state root>/<name>``, the seed's per-workspace directory."""
        return self.state_root() / name

    def packages_for(self, spec: WorkspaceSpec) -> tuple[str, ...]:
        """Every package a workspace gets: the defaults plus its own, sorted, unique."""
        return tuple(sorted({*self.defaults.packages, *spec.packages}))

    def with_state_root(self, state_root: Path) -> Config:
        """The same config with its state kept under ``state_root`` (tests, the demo)."""
        return replace(self, defaults=replace(self.defaults, state_root=state_root))
