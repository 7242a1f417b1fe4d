"""The workspace model: what a validated configuration is made of. Pure data.

``wsfixture.model.config`` loads and validates it from TOML, ``nix eval --json`` output or
Python; everything else consumes these frozen dataclasses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from wsfixture.model import derive, fields, tables
from wsfixture.model.resources import (
    DISK_RANGE_MIB,
    MEMORY_RANGE_MIB,
    PIDS_RANGE,
    VCPU_RANGE,
    VM_RESOURCES,
    Resolved,
    Resources,
)

WorkspaceType = Literal["vm", "container"]
WORKSPACE_TYPES: tuple[str, ...] = ("vm", "container")
ACCELERATORS: tuple[str, ...] = ("auto", "kvm", "tcg")
MACHINES: tuple[str, ...] = ("q35", "microvm")
VSOCK_MODES: tuple[str, ...] = ("auto", "required", "off")
SNAPSHOT_MODES: tuple[str, ...] = ("auto", "off")
PRIVILEGE_TOOLS: tuple[str, ...] = ("doas", "sudo")
# Debian releases an image is built from; the first is the default: Debian's stable.
RELEASES: tuple[str, ...] = ("trixie", "bookworm")
DEFAULT_RELEASE = RELEASES[0]

# `workspace-<name>` must stay a valid DNS label (63 bytes).
NAME_MAX = 63 - len("workspace-")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
USER_RE = re.compile(r"^(?!root$)[a-z_][a-z0-9_-]{0,31}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SETUP_LINE_RE = re.compile(r"^[^\n]*\S[^\n]*$")  # one non-blank line
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
KEY_RE = re.compile(r"^(ssh-|ecdsa-|sk-)")
SUBNET_PREFIXES = (8, 29)

UID_RANGE = (1000, 60000)
DEFAULT_SUBNET = ipaddress.IPv4Network("192.168.83.0/24")


# Guest trees a share may not cover: the kernel's and systemd's own, and the host keys'.
SYSTEM_GUEST_PATHS = ("/proc", "/sys", "/dev", "/run", "/etc/ssh/host-keys")


def overlaps(path: str, other: str) -> bool:
    """Whether one guest path is the other or lies under it."""
    a, b = PurePosixPath(path), PurePosixPath(other)
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def has_dot_dot(path: str) -> bool:
    return ".." in PurePosixPath(path).parts


def _guest_path(value: object, where: str, ctx: fields.Context) -> Any:
    if not isinstance(value, str) or not value.startswith("/") or value == "/":
        ctx.issues.add(where, "is not an absolute guest path", value, "a path like /mnt/data")
        return fields.INVALID
    if has_dot_dot(value):
        ctx.issues.add(where, "has a '..' component", value, "a path like /mnt/data")
        return fields.INVALID
    taken = [p for p in SYSTEM_GUEST_PATHS if PurePosixPath(value).is_relative_to(p)]
    if taken:
        ctx.issues.add(
            where, f"is a system path ({taken[0]})", value,
            f"a path outside {', '.join(SYSTEM_GUEST_PATHS)}",
        )  # fmt: skip
        return fields.INVALID
    return value.rstrip("/")


@dataclass(frozen=True)
class ShareSpec:
    """An extra host directory shared into the workspace."""

    source: Path = fields.path(fields.NO_DEFAULT, "host directory to share", prefixes=("/", "~"))
    target: str = fields.declared(
        doc="where it appears inside the workspace",
        parse=_guest_path,
        schema={"type": "string", "pattern": "^/.+"},
        allowed="a path like /mnt/data",
    )
    read_only: bool = fields.boolean(False, "the workspace may read it, not write it")


def _distinct_targets(shares: tuple[ShareSpec, ...], where: str, ctx: fields.Context) -> None:
    targets = [s.target for s in shares]
    for target in sorted({t for t in targets if targets.count(t) > 1}):
        ctx.issues.add(where, "mounts two shares at one target", target, "distinct targets")


@dataclass(frozen=True)
class UserSpec:
    """The workspace user: same name and uid in every workspace."""

    name: str = fields.text(
        "dev", "the workspace user's login name", USER_RE, "user name",
        "a POSIX user name other than root: [a-z_][a-z0-9_-]{0,31}",
    )  # fmt: skip
    uid: int = fields.integer(1000, "the workspace user's uid (and gid)", *UID_RANGE)
    authorized_keys: tuple[str, ...] = fields.string_list(
        "more public keys that may log in (the client key of wsfixture always may)",
        KEY_RE, "one line starting with ssh-, ecdsa- or sk-",
        reject=lambda key: "\n" in key, problem="is not an SSH public key",
    )  # fmt: skip


def _first_host(parsed: Mapping[str, Any]) -> ipaddress.IPv4Address:
    return fields.hosts_of(parsed.get("subnet", DEFAULT_SUBNET))[0]


def _range_start(parsed: Mapping[str, Any]) -> ipaddress.IPv4Address:
    subnet: ipaddress.IPv4Network = parsed.get("subnet", DEFAULT_SUBNET)
    return min(subnet.network_address + 10, fields.hosts_of(subnet)[1])


def _last_host(parsed: Mapping[str, Any]) -> ipaddress.IPv4Address:
    return fields.hosts_of(parsed.get("subnet", DEFAULT_SUBNET))[1]


@dataclass(frozen=True)
class NetworkSpec:
    """The lab network every workspace of a config joins."""

    subnet: ipaddress.IPv4Network = fields.ipv4_network(
        DEFAULT_SUBNET, "the lab's IPv4 subnet", SUBNET_PREFIXES
    )
    gateway: ipaddress.IPv4Address = fields.address_in_subnet(
        DEFAULT_SUBNET[1], "the bridge's address (default: the subnet's first)", _first_host
    )
    range_start: ipaddress.IPv4Address = fields.address_in_subnet(
        DEFAULT_SUBNET[10], "first address workspaces may take (default: .10)", _range_start
    )
    range_end: ipaddress.IPv4Address = fields.address_in_subnet(
        DEFAULT_SUBNET[254], "last address workspaces may take (default: the subnet's last)",
        _last_host,
    )  # fmt: skip
    bridge: str = fields.text(
        "wsbr0", "the lab bridge's name", IFNAME_RE, "interface name",
        "1-15 characters of letters, digits, '_', '.', '-'",
    )  # fmt: skip
    dns: bool = fields.boolean(True, "run a DNS server on the gateway for workspace names")
    internet: bool | tuple[str, ...] | None = fields.egress(
        "egress through NAT and the host's DNS (default: on for `wsfixture up`'s lab, off in "
        "pytest labs); a list allows only those destinations (domains, IPv4 networks, ports)"
    )
    uplink_namespace: str | None = fields.text(
        None, "run the uplink in this network namespace, not the host's (a VPN's; a test's)",
        NAMESPACE_RE, "namespace name", "an existing network namespace: 1-31 characters of "
        "lowercase letters, digits and '-'",
    )  # fmt: skip
    # The network namespace of a persistent lab (the CLI's); tests make their own.
    namespace: str = fields.text(
        "wsfixture", "the network namespace of the CLI's persistent lab", NAMESPACE_RE,
        "namespace name", "1-31 characters of lowercase letters, digits and '-'",
    )  # fmt: skip

    def usable(self) -> Iterator[ipaddress.IPv4Address]:
        """Addresses a workspace may take, in order."""
        for number in range(int(self.range_start), int(self.range_end) + 1):
            address = ipaddress.IPv4Address(number)
            if address != self.gateway:
                yield address


def _range_in_order(network: NetworkSpec, where: str, ctx: fields.Context) -> bool:
    if network.range_start > network.range_end:
        ctx.issues.add(
            f"{where}.rangeStart", f"is after rangeEnd {network.range_end}",
            str(network.range_start), "rangeStart <= rangeEnd",
        )  # fmt: skip
        return False
    return True


@dataclass(frozen=True)
class Defaults:
    """What every workspace gets unless it says otherwise."""

    user: UserSpec = tables.section(UserSpec, "the workspace user, the same in every workspace")
    packages: tuple[str, ...] = fields.string_list(
        "Debian packages every workspace gets", PACKAGE_RE, "Debian package names"
    )
    state_root: Path = fields.path(
        Path("~/sandboxed"), "where each workspace keeps <name>/{workspace,ssh-host-keys,...}",
        not_system=True,
    )  # fmt: skip
    release: str = fields.choice(
        DEFAULT_RELEASE, "the Debian release every workspace's image is built from", RELEASES
    )
    snapshot: str = fields.choice(
        "auto", "VMs: \"auto\" restores a booted template where it can, \"off\" boots cold",
        SNAPSHOT_MODES,
    )  # fmt: skip
    setup: tuple[str, ...] = fields.string_list(
        "shell lines every workspace's image runs as root after its packages, in order",
        SETUP_LINE_RE, "one non-blank line of shell",
    )  # fmt: skip
    files: tuple[tuple[str, Path], ...] = fields.file_map(
        "files every workspace's image gets: guest path -> host file (before the setup lines)"
    )
    vcpu: int | None = fields.integer(
        None, "every workspace's `vcpu` unless it sets its own (containers: a bound)",
        *VCPU_RANGE,
    )  # fmt: skip
    memory: int | None = fields.size_mib(
        None, "every workspace's `memory` unless it sets its own (containers: a bound)",
        *MEMORY_RANGE_MIB,
    )  # fmt: skip
    pids: int | None = fields.integer(
        None, "every workspace's `pids` unless it sets its own (containers: a bound)",
        *PIDS_RANGE,
    )  # fmt: skip
    overcommit: bool = fields.boolean(
        False, "start a workspace whose `memory` is more than the host has available "
        "(refused otherwise, before anything is made)",
    )  # fmt: skip
    docs: bool = fields.boolean(
        False, "every workspace's `docs` unless it sets its own: the packages of its image "
        "layer come with their docs, man pages and locales (the base leaves them out)",
    )  # fmt: skip
    privilege: str = fields.choice(
        "doas", "what the user becomes root (or another user) with, what testinfra's "
        "`host.sudo()` uses: doas, or sudo (installed, with a NOPASSWD rule); the image's "
        "own rules are kept", PRIVILEGE_TOOLS,
    )  # fmt: skip


@dataclass(frozen=True)
class WorkspaceSpec:
    """One workspace, as the user declared it. ``name`` is its key in the config."""

    name: str
    type: WorkspaceType = fields.choice(
        fields.NO_DEFAULT, "what boots: a systemd-nspawn container or a QEMU VM",
        WORKSPACE_TYPES,
    )  # fmt: skip
    ip: ipaddress.IPv4Address = fields.workspace_address(
        "its address on the lab bridge, unique in the config"
    )
    auto_start: bool = fields.boolean(False, "`wsfixture up` without names starts it")
    restart_if_changed: bool = fields.boolean(
        True, "`wsfixture apply` restarts it when its config changed"
    )
    release: str | None = fields.choice(
        None, "its Debian release (default: the defaults' release)", RELEASES, inherits="or"
    )
    packages: tuple[str, ...] = fields.string_list(
        "Debian packages beyond the defaults' (an image layer)", PACKAGE_RE,
        "Debian package names", inherits="union",
    )  # fmt: skip
    setup: tuple[str, ...] = fields.string_list(
        "shell lines run as root in its image after the defaults' (an image layer)",
        SETUP_LINE_RE, "one non-blank line of shell", inherits="after",
    )  # fmt: skip
    files: tuple[tuple[str, Path], ...] = fields.file_map(
        "files put into its image beside the defaults': guest path -> host file", inherits="over"
    )
    docs: bool | None = fields.boolean(
        None, "its layer's packages come with their docs, man pages and locales (default: "
        "the defaults' docs; the base's own packages have none)", inherits="or",
    )  # fmt: skip
    vcpu: int | None = fields.integer(
        None, f"CPUs: a VM's virtual CPUs (default {VM_RESOURCES.vcpu}, clamped to the host's); "
        "a container's CPU time, in CPUs (default: no limit)", *VCPU_RANGE, inherits="or",
    )  # fmt: skip
    memory: int | None = fields.size_mib(
        None, f"MiB, or like \"2G\": a VM's memory (default {VM_RESOURCES.memory}, clamped to "
        "the host's); a container's bound, swap included, over which it is OOM-killed "
        "(default: no limit)", *MEMORY_RANGE_MIB, inherits="or",
    )  # fmt: skip
    disk: int | None = fields.size_mib(
        None, f"MiB, or like \"8G\": a VM's root disk (default {VM_RESOURCES.disk}); what a "
        "container may write to its root, past which it gets ENOSPC (default: no limit)",
        *DISK_RANGE_MIB,
    )  # fmt: skip
    pids: int | None = fields.integer(
        None, f"processes and threads: a VM's QEMU and share daemons (default "
        f"{VM_RESOURCES.pids}); a container's (default: no limit)", *PIDS_RANGE, inherits="or",
    )  # fmt: skip
    shares: tuple[ShareSpec, ...] = tables.section_list(
        ShareSpec, "extra host directories to share in", _distinct_targets
    )
    accel: str = fields.choice("auto", "VM acceleration", ACCELERATORS, vm_only=True)
    machine: str = fields.choice("q35", "QEMU machine type", MACHINES, vm_only=True)
    vsock: str = fields.choice("auto", "a vsock device with the derived CID", VSOCK_MODES,
                               vm_only=True)  # fmt: skip
    snapshot: str | None = fields.choice(
        None, "\"auto\" or \"off\" for this VM (default: the defaults' snapshot)",
        SNAPSHOT_MODES, vm_only=True, inherits="or",
    )  # fmt: skip
    internet: bool | tuple[str, ...] | None = fields.egress(
        "false keeps it off the internet in a lab that has it; a list allows only those "
        "destinations (default: the network's)"
    )
    forwards: tuple[tuple[int, int], ...] = fields.port_map(
        "host port -> workspace port on 127.0.0.1 (`wsfixture up` workspaces)"
    )
    idle_timeout: int | None = fields.duration(
        '`wsfixture up` stops it after this long without an SSH session, like "30m"'
    )
    # The seed's per-workspace NixOS module; opaque here, meaningful to the Nix side only.
    config: str | None = fields.opaque_string(
        "the workspace's own NixOS module (the Nix side only)", "a Nix module path"
    )

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
        return fields.to_data(self)


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    network: NetworkSpec = tables.section(NetworkSpec, "the lab network", _range_in_order)
    defaults: Defaults = tables.section(Defaults, "what every workspace gets")
    # Checked by wsfixture.model.validation: each entry is a WorkspaceSpec's fields.
    workspaces: Mapping[str, WorkspaceSpec] = field(default_factory=dict)
    enable: bool = fields.boolean(True, "the NixOS module's switch (read, not acted on here)")
    source: str = ""  # where it was loaded from, for messages

    def state_root(self) -> Path:
        return self.defaults.state_root.expanduser()

    def state_dir(self, name: str) -> Path:
        """``<state root>/<name>``, the seed's per-workspace directory."""
        return self.state_root() / name

    def resolve(self, spec: WorkspaceSpec) -> Resolved:
        """What ``spec`` gets: each field it inherits (``inherits`` in its declaration)
        made of its own value and the defaults' field of the same name."""
        own = {
            f.name: fields.INHERITANCE[decl.inherits](
                getattr(spec, f.name), getattr(self.defaults, f.name, None)
            )
            for f, decl in fields.declarations(WorkspaceSpec)
            if decl.inherits is not None
        }
        kind = VM_RESOURCES if spec.is_vm else Resources()
        tool = () if self.defaults.privilege == "doas" else (self.defaults.privilege,)
        return Resolved(
            release=own["release"],
            snapshot=own["snapshot"],
            packages=tuple(sorted({*own["packages"], *tool})),  # doas is in every base
            setup=own["setup"],
            docs=own["docs"],
            files=own["files"],
            resources=Resources(
                vcpu=own["vcpu"] or kind.vcpu,
                memory=own["memory"] or kind.memory,
                disk=spec.disk or kind.disk,
                pids=own["pids"] or kind.pids,
            ),
        )

    def resources_for(self, spec: WorkspaceSpec) -> Resources:
        """What a workspace may use: its own settings, else the defaults', else its kind's
        (a VM's ``VM_RESOURCES``; a container's: no limit)."""
        return self.resolve(spec).resources

    def internet_for(self, spec: WorkspaceSpec | None) -> bool | tuple[str, ...] | None:
        """What a workspace may reach: its own ``internet``, else its network's (None: the
        network says nothing, so a pytest lab's is off and ``up``'s open)."""
        own = None if spec is None else spec.internet
        return self.network.internet if own is None else own

    def with_state_root(self, state_root: Path) -> Config:
        """The same config with its state kept under ``state_root`` (tests, the demo)."""
        return replace(self, defaults=replace(self.defaults, state_root=state_root))
