"""Strict validation of workspace configuration data, whatever its source.

Every check adds to a ``Collector`` instead of raising, so a document's problems are all
reported together; each names where it is, what was found and what is allowed. Keys may be
camelCase (Nix) or snake_case (Python); unknown keys get a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wsfixture.errors import ConfigError, ConfigIssue
from wsfixture.model import derive
from wsfixture.model.spec import (
    ACCELERATORS,
    DISK_RANGE_MIB,
    IFNAME_RE,
    KEY_PREFIXES,
    MACHINES,
    MEMORY_RANGE_MIB,
    NAME_MAX,
    NAME_RE,
    NAMESPACE_RE,
    PACKAGE_RE,
    SIZE_RE,
    UID_RANGE,
    USER_RE,
    VCPU_RANGE,
    VSOCK_MODES,
    WORKSPACE_TYPES,
    Config,
    Defaults,
    NetworkSpec,
    ShareSpec,
    UserSpec,
    WorkspaceSpec,
    WorkspaceType,
)


class Collector:
    """Gathers every issue so a document's problems are reported together."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(self, where: str, problem: str, value: object = None, allowed: str = "") -> None:
        self.issues.append(ConfigIssue(where, problem, value, allowed))

    def raise_if_any(self, source: str) -> None:
        if self.issues:
            raise ConfigError(self.issues, source)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _fields(
    data: object, where: str, known: tuple[str, ...], issues: Collector
) -> dict[str, Any] | None:
    """Normalise keys to snake_case; reject non-mappings, unknown and doubled keys."""
    if not isinstance(data, Mapping):
        issues.add(where, "must be a table/object", data, "a mapping of keys to values")
        return None
    out: dict[str, Any] = {}
    camel_keys = [camel(k) for k in known]
    for key, value in data.items():
        norm = _snake(str(key))
        if norm not in known:
            spellings = known if "_" in str(key) else camel_keys
            close = difflib.get_close_matches(str(key), spellings, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.add(f"{where}.{key}", f"unknown key{hint}", allowed=", ".join(camel_keys))
        elif norm in out:
            issues.add(f"{where}.{key}", "given twice (camelCase and snake_case)")
        elif value is not None:  # nix eval prints null for unset options: take the default
            out[norm] = value
    return out


def _typed(value: object, kind: type, where: str, issues: Collector, allowed: str) -> bool:
    # bool is an int in Python; a `true` where a number belongs is a mistake.
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, kind):
        issues.add(where, "has the wrong type", value, allowed)
        return False
    return True


def _int_in(
    value: object, where: str, bounds: tuple[int, int], issues: Collector, unit: str = ""
) -> int | None:
    low, high = bounds
    allowed = f"an integer from {low} to {high}{unit}"
    if not _typed(value, int, where, issues, allowed):
        return None
    assert isinstance(value, int)
    if not low <= value <= high:
        issues.add(where, "is out of range", value, allowed)
        return None
    return value


def _size_mib(value: object, where: str, issues: Collector) -> int | None:
    """A size as MiB: an integer of MiB, or a string like "8G" / "512MiB"."""
    low, high = DISK_RANGE_MIB
    allowed = f'MiB as an integer, or a string like "8G" or "512M", from {low} MiB to 16 TiB'
    if isinstance(value, str):
        match = SIZE_RE.match(value.strip())
        if not match:
            issues.add(where, "is not a size", value, allowed)
            return None
        number, unit = int(match.group(1)), (match.group(2) or "M")[0].upper()
        factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
        value = int(number * factor)
        if not low <= value <= high:
            issues.add(where, "is out of range", match.group(0), allowed)
            return None
        return value
    return _int_in(value, where, DISK_RANGE_MIB, issues, " MiB")


def _str_list(
    value: object, where: str, issues: Collector, pattern: re.Pattern[str], what: str
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        issues.add(where, "must be a list", value, f"a list of {what}")
        return ()
    good = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not pattern.match(item):
            issues.add(f"{where}[{index}]", "is not valid", item, what)
        else:
            good.append(item)
    return tuple(good)


def _matching(
    value: object, where: str, pattern: re.Pattern[str], what: str, allowed: str, issues: Collector
) -> str | None:
    """``value`` if it is a string matching ``pattern``; otherwise an issue and None."""
    if isinstance(value, str) and pattern.match(value):
        return value
    issues.add(where, f"is not a valid {what}", value, allowed)
    return None


def _choice(value: object, where: str, choices: tuple[str, ...], issues: Collector) -> str | None:
    if value not in choices:
        issues.add(where, "is not one of the choices", value, " or ".join(repr(c) for c in choices))
        return None
    assert isinstance(value, str)
    return value


def _parse_network(data: object, issues: Collector) -> NetworkSpec:
    known = ("subnet", "gateway", "range_start", "range_end", "bridge", "dns", "namespace")
    raw = _fields(data, "network", known, issues)
    if raw is None:
        return NetworkSpec()
    try:
        subnet = ipaddress.IPv4Network(raw.get("subnet", "192.168.83.0/24"), strict=True)
    except (ValueError, TypeError) as exc:
        issues.add(
            "network.subnet",
            f"is not an IPv4 network ({exc})",
            raw.get("subnet"),
            'a network like "192.168.83.0/24"',
        )
        return NetworkSpec()
    if not 8 <= subnet.prefixlen <= 29:
        issues.add(
            "network.subnet",
            "has an unusable prefix length",
            str(subnet),
            "a prefix from /8 to /29",
        )
        return NetworkSpec()
    hosts = list(subnet.hosts()) if subnet.prefixlen >= 16 else None
    first = hosts[0] if hosts else subnet.network_address + 1
    last = hosts[-1] if hosts else subnet.broadcast_address - 1
    default_start = min(subnet.network_address + 10, last)

    def address(key: str, default: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        value = raw.get(key)
        if value is None:
            return default
        where = f"network.{camel(key)}"
        try:
            parsed = ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            issues.add(where, "is not an IPv4 address", value, f"an address in {subnet}")
            return default
        if not first <= parsed <= last:
            issues.add(where, f"is outside the subnet {subnet}", value, f"{first} to {last}")
            return default
        return parsed

    gateway = address("gateway", first)
    start = address("range_start", default_start)
    end = address("range_end", last)
    if start > end:
        issues.add(
            "network.rangeStart", f"is after rangeEnd {end}", str(start), "rangeStart <= rangeEnd"
        )
    bridge = _matching(
        raw.get("bridge", "wsbr0"), "network.bridge", IFNAME_RE, "interface name",
        "1-15 characters of letters, digits, '_', '.', '-'", issues,
    ) or "wsbr0"  # fmt: skip
    dns = raw.get("dns", True)
    if not _typed(dns, bool, "network.dns", issues, "true or false"):
        dns = True
    namespace = _matching(
        raw.get("namespace", "wsfixture"), "network.namespace", NAMESPACE_RE, "namespace name",
        "1-31 characters of lowercase letters, digits and '-'", issues,
    ) or "wsfixture"  # fmt: skip
    return NetworkSpec(subnet, gateway, start, end, bridge, bool(dns), namespace)


def _parse_user(data: object, issues: Collector) -> UserSpec:
    raw = _fields(data, "defaults.user", ("name", "uid", "authorized_keys"), issues)
    if raw is None:
        return UserSpec()
    name = raw.get("name", "dev")
    if not isinstance(name, str) or not USER_RE.match(name) or name == "root":
        issues.add(
            "defaults.user.name",
            "is not a valid user name",
            name,
            "a POSIX user name other than root: [a-z_][a-z0-9_-]{0,31}",
        )
        name = "dev"
    uid = _int_in(raw.get("uid", 1000), "defaults.user.uid", UID_RANGE, issues) or 1000
    keys: tuple[str, ...] = ()
    if "authorized_keys" in raw:
        value = raw["authorized_keys"]
        if not isinstance(value, list):
            issues.add(
                "defaults.user.authorizedKeys", "must be a list", value, "a list of public keys"
            )
        else:
            for index, key in enumerate(value):
                if not isinstance(key, str) or not key.startswith(KEY_PREFIXES) or "\n" in key:
                    issues.add(
                        f"defaults.user.authorizedKeys[{index}]",
                        "is not an SSH public key",
                        key,
                        "one line starting with ssh-, ecdsa- or sk-",
                    )
            keys = tuple(
                k
                for k in value
                if isinstance(k, str) and k.startswith(KEY_PREFIXES) and "\n" not in k
            )
    return UserSpec(name, uid, keys)


def _parse_defaults(data: object, issues: Collector) -> Defaults:
    raw = _fields(data, "defaults", ("user", "packages", "state_root"), issues)
    if raw is None:
        return Defaults()
    user = _parse_user(raw.get("user", {}), issues)
    packages = _str_list(
        raw.get("packages", []), "defaults.packages", issues, PACKAGE_RE, "Debian package names"
    )
    state_root = raw.get("state_root", "~/sandboxed")
    if not isinstance(state_root, str) or not state_root.strip():
        issues.add("defaults.stateRoot", "is not a path", state_root, "a directory path")
        state_root = "~/sandboxed"
    return Defaults(user, packages, Path(state_root))


def _parse_shares(value: object, where: str, issues: Collector) -> tuple[ShareSpec, ...]:
    if not isinstance(value, list):
        issues.add(where, "must be a list", value, "a list of {source, target, readOnly} tables")
        return ()
    shares: list[ShareSpec] = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        raw = _fields(item, here, ("source", "target", "read_only"), issues)
        if raw is None:
            continue
        source, target = raw.get("source"), raw.get("target")
        ok = True
        if not isinstance(source, str) or not source.startswith(("/", "~")):
            issues.add(
                f"{here}.source",
                "is not an absolute host path",
                source,
                "a path starting with / or ~",
            )
            ok = False
        if not isinstance(target, str) or not target.startswith("/") or target == "/":
            issues.add(
                f"{here}.target", "is not an absolute guest path", target, "a path like /mnt/data"
            )
            ok = False
        read_only = raw.get("read_only", False)
        if not _typed(read_only, bool, f"{here}.readOnly", issues, "true or false"):
            ok = False
        if ok:
            assert isinstance(source, str)
            assert isinstance(target, str)
            shares.append(ShareSpec(Path(source), target.rstrip("/"), bool(read_only)))
    targets = [s.target for s in shares]
    for target in sorted({t for t in targets if targets.count(t) > 1}):
        issues.add(where, "mounts two shares at one target", target, "distinct targets")
    return tuple(shares)


_WORKSPACE_KEYS = (
    "type", "ip", "auto_start", "restart_if_changed", "packages", "vcpu", "memory", "disk",
    "shares", "accel", "machine", "vsock", "config", "name",
)  # fmt: skip


def _check_name(name: object, where: str, issues: Collector) -> bool:
    allowed = f"a hostname label: lowercase letters, digits and '-', 1-{NAME_MAX} characters"
    if not isinstance(name, str) or not NAME_RE.match(name):
        issues.add(where, "is not a valid workspace name", name, allowed)
        return False
    if len(name) > NAME_MAX:
        issues.add(where, "is too long", name, allowed)
        return False
    return True


def parse_workspace(
    name: object, data: object, network: NetworkSpec, issues: Collector, where: str
) -> WorkspaceSpec | None:
    raw = _fields(data, where, _WORKSPACE_KEYS, issues)
    if raw is None:
        return None
    if "name" in raw and name is not None and raw["name"] != name:
        issues.add(f"{where}.name", "differs from the workspace's key", raw["name"], repr(name))
    name = raw.pop("name", name)
    ok = _check_name(name, f"{where} name", issues)
    type_ = raw.get("type")
    if type_ is None:
        issues.add(f"{where}.type", "is required", allowed='"vm" or "container"')
        ok = False
    elif _choice(type_, f"{where}.type", WORKSPACE_TYPES, issues) is None:
        ok = False
    ip = _parse_ip(raw.get("ip"), f"{where}.ip", network, issues)
    ok = ok and ip is not None
    fields: dict[str, Any] = {}
    for key in ("auto_start", "restart_if_changed"):
        if key in raw and _typed(raw[key], bool, f"{where}.{camel(key)}", issues, "true or false"):
            fields[key] = raw[key]
        elif key in raw:
            ok = False
    if "packages" in raw:
        fields["packages"] = _str_list(
            raw["packages"], f"{where}.packages", issues, PACKAGE_RE, "Debian package names"
        )
    checks: dict[str, Callable[[object, str], int | None]] = {
        "vcpu": lambda v, w: _int_in(v, w, VCPU_RANGE, issues),
        "memory": lambda v, w: _int_in(v, w, MEMORY_RANGE_MIB, issues, " MiB"),
        "disk": lambda v, w: _size_mib(v, w, issues),
    }
    for key, check in checks.items():
        if key in raw:
            value = check(raw[key], f"{where}.{key}")
            ok = ok and value is not None
            fields[key] = value
    for key, choices in (("accel", ACCELERATORS), ("machine", MACHINES), ("vsock", VSOCK_MODES)):
        if key in raw:
            choice = _choice(raw[key], f"{where}.{key}", choices, issues)
            ok = ok and choice is not None
            fields[key] = choice
    if "shares" in raw:
        fields["shares"] = _parse_shares(raw["shares"], f"{where}.shares", issues)
    if "config" in raw:
        if isinstance(raw["config"], str):
            fields["config"] = raw["config"]
        else:
            issues.add(
                f"{where}.config", "must be a path string", raw["config"], "a Nix module path"
            )
            ok = False
    if not ok:
        return None
    assert isinstance(name, str)
    assert ip is not None
    workspace_type: WorkspaceType = "vm" if type_ == "vm" else "container"
    return WorkspaceSpec(name=name, type=workspace_type, ip=ip, **fields)


def _parse_ip(
    value: object, where: str, network: NetworkSpec, issues: Collector
) -> ipaddress.IPv4Address | None:
    allowed = (
        f"an address from {network.range_start} to {network.range_end}, "
        f"not the gateway {network.gateway}"
    )
    if value is None:
        issues.add(where, "is required", allowed=allowed)
        return None
    try:
        ip = ipaddress.IPv4Address(value if isinstance(value, str) else "")
    except ValueError:
        issues.add(where, "is not an IPv4 address", value, allowed)
        return None
    if ip not in network.subnet:
        issues.add(where, f"is outside the subnet {network.subnet}", value, allowed)
    elif ip == network.gateway:
        issues.add(where, "is the gateway's address", value, allowed)
    elif not network.range_start <= ip <= network.range_end:
        issues.add(where, "is outside the usable range", value, allowed)
    else:
        return ip
    return None


def _check_collisions(
    workspaces: Mapping[str, WorkspaceSpec], network: NetworkSpec, issues: Collector
) -> None:
    """Addresses and every derived identity must be unique within one config."""
    derived: dict[str, Callable[[WorkspaceSpec], object]] = {
        "ip": lambda s: s.ip,
        "MAC": lambda s: derive.mac(s.name),
        "vsock CID": lambda s: derive.vsock_cid(s.name),
        "TAP name": lambda s: derive.tap_name(s.name),
        "veth name": lambda s: derive.veth_host_name(s.name),
    }
    for what, of in derived.items():
        owners: dict[object, str] = {}
        for spec in workspaces.values():
            value = of(spec)
            if value in owners:
                issues.add(
                    f"workspaces.{spec.name}.ip" if what == "ip" else f"workspaces.{spec.name}",
                    f"{what} {value} is already used by workspace {owners[value]!r}",
                    str(value) if what == "ip" else None,
                    f"a {what} unique in the config",
                )
            else:
                owners[value] = spec.name


def parse_config(data: object, issues: Collector, source: str) -> Config | None:
    raw = _fields(data, "config", ("enable", "network", "defaults", "workspaces"), issues)
    if raw is None:
        return None
    enable = raw.get("enable", True)
    if not _typed(enable, bool, "enable", issues, "true or false"):
        enable = True
    network = _parse_network(raw.get("network", {}), issues)
    defaults = _parse_defaults(raw.get("defaults", {}), issues)
    workspaces: dict[str, WorkspaceSpec] = {}
    entries = raw.get("workspaces", {})
    if not isinstance(entries, Mapping):
        issues.add(
            "workspaces",
            "must be a table/object",
            entries,
            "a mapping of workspace names to tables",
        )
        entries = {}
    for name, entry in entries.items():
        spec = parse_workspace(name, entry, network, issues, f"workspaces.{name}")
        if spec is not None:
            workspaces[spec.name] = spec
    _check_collisions(workspaces, network, issues)
    return Config(network, defaults, workspaces, bool(enable), source)
