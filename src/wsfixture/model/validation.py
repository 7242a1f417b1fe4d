"""Strict validation of workspace configuration data, whatever its source.

The fields themselves are declared once, in ``wsfixture.model.spec`` with the helpers of
``wsfixture.model.fields``; this module walks a document through them and adds what looks
across fields and workspaces: a workspace's name, and addresses and derived identities
unique in the config. Every problem goes to a ``Collector``, so a document's problems are
reported together; each names where it is, what was found and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfixture.model import derive, fields, tables
from wsfixture.model.fields import Collector, Context, camel
from wsfixture.model.shares import standard_share_targets
from wsfixture.model.spec import (
    NAME_MAX,
    NAME_RE,
    Config,
    NetworkSpec,
    WorkspaceSpec,
    overlaps,
)

__all__ = [
    "WORKSPACE_KEYS", "Collector", "camel", "check_share_sources", "parse_config",
    "parse_workspace",
]  # fmt: skip

WORKSPACE_KEYS = ("name", *fields.keys(WorkspaceSpec))


def _check_name(name: object, where: str, issues: Collector) -> bool:
    allowed = f"a hostname label: lowercase letters, digits and '-', 1-{NAME_MAX} characters"
    if not isinstance(name, str) or not NAME_RE.match(name):
        issues.add(where, "is not a valid workspace name", name, allowed)
        return False
    if len(name) > NAME_MAX:
        issues.add(where, "is too long", name, allowed)
        return False
    return True


@dataclass(frozen=True)
class _Parsed:
    """A workspace as far as it parsed: the spec when every field was valid, and otherwise
    still its name and address when those were, so the checks between workspaces see it."""

    spec: WorkspaceSpec | None
    name: str | None
    ip: object


def _parse(
    name: object, data: object, network: NetworkSpec, issues: Collector, where: str,
    base_dir: Path | None = None,
) -> _Parsed:  # fmt: skip
    raw = tables.table_keys(data, where, WORKSPACE_KEYS, issues)
    if raw is None:
        return _Parsed(None, None, None)
    if "name" in raw and name is not None and raw["name"] != name:
        issues.add(f"{where}.name", "differs from the workspace's key", raw["name"], repr(name))
    name = raw.pop("name", name)
    name_ok = _check_name(name, f"{where} name", issues)
    ctx = Context(issues, network=network, base_dir=base_dir)
    parsed, ok = tables.parse_fields(WorkspaceSpec, raw, where, ctx)
    valid_name = name if name_ok and isinstance(name, str) else None
    spec = WorkspaceSpec(name=valid_name, **parsed) if ok and valid_name else None
    return _Parsed(spec, valid_name, parsed.get("ip"))


def parse_workspace(
    name: object, data: object, network: NetworkSpec, issues: Collector, where: str
) -> WorkspaceSpec | None:
    """One workspace's table (``name`` is its key, or None when the table names it)."""
    return _parse(name, data, network, issues, where).spec


def _check_collisions(workspaces: list[_Parsed], issues: Collector) -> None:
    """Addresses and every derived identity must be unique within one config. Every
    workspace takes part with what of it is valid, whatever its other fields' problems."""
    derived: dict[str, Callable[[_Parsed], object]] = {
        "ip": lambda w: w.ip,
        "MAC": lambda w: derive.mac(w.name) if w.name else None,
        "vsock CID": lambda w: derive.vsock_cid(w.name) if w.name else None,
        "TAP name": lambda w: derive.tap_name(w.name) if w.name else None,
        "veth name": lambda w: derive.veth_host_name(w.name) if w.name else None,
    }
    for what, of in derived.items():
        owners: dict[object, str] = {}
        for workspace in workspaces:
            value = of(workspace)
            if value is None or workspace.name is None:
                continue
            if value in owners:
                issues.add(
                    f"workspaces.{workspace.name}" + (".ip" if what == "ip" else ""),
                    f"{what} {value} is already used by workspace {owners[value]!r}",
                    str(value) if what == "ip" else None,
                    f"a {what} unique in the config",
                )
            else:
                owners[value] = workspace.name


def _check_standard_share_targets(
    workspaces: Iterable[WorkspaceSpec], user: str, issues: Collector
) -> None:
    """A share may not sit on, under or above a standard share's mount point: it would hide
    that share, or the user's home with it."""
    standard = standard_share_targets(user)
    for spec in workspaces:
        for index, share in enumerate(spec.shares):
            for tag, target in standard.items():
                if overlaps(share.target, target):
                    issues.add(
                        f"workspaces.{spec.name}.shares[{index}].target",
                        f"covers the standard share {tag} at {target}", share.target,
                        f"a path apart from {', '.join(standard.values())}",
                    )  # fmt: skip
                    break


def check_share_sources(config: Config, spec: WorkspaceSpec) -> None:
    """Each share's source a directory that exists: checked before a workspace is made,
    not when the config is read (a NixOS host's config is evaluated elsewhere)."""
    issues = Collector()
    for index, share in enumerate(spec.shares):
        source = share.source.expanduser()
        if not source.is_dir():
            problem = "is not a directory" if source.exists() else "does not exist"
            where = f"workspaces.{spec.name}.shares[{index}].source"
            issues.add(where, problem, str(share.source), "a directory on the host")
    issues.raise_if_any(config.source)


def parse_config(
    data: object, issues: Collector, source: str, base_dir: Path | None = None
) -> Config | None:
    top = (*fields.keys(Config), "workspaces")
    raw = tables.table_keys(data, "config", top, issues)
    if raw is None:
        return None
    ctx = Context(issues, base_dir=base_dir)
    sections: dict[str, Any] = {}
    for f, decl in fields.declarations(Config):
        if f.name in raw:
            value = decl.parse(raw[f.name], camel(f.name), ctx)
            if value is not fields.INVALID:
                sections[f.name] = value
    config = Config(**sections, source=source)
    entries = raw.get("workspaces", {})
    if not isinstance(entries, Mapping):
        issues.add(
            "workspaces", "must be a table/object", entries,
            "a mapping of workspace names to tables",
        )  # fmt: skip
        entries = {}
    parsed = [
        _parse(name, entry, config.network, issues, f"workspaces.{name}", base_dir)
        for name, entry in entries.items()
    ]
    _check_collisions(parsed, issues)
    workspaces = {w.spec.name: w.spec for w in parsed if w.spec is not None}
    _check_standard_share_targets(workspaces.values(), config.defaults.user.name, issues)
    _check_allowlists_have_an_uplink(workspaces.values(), config.network.internet, issues)
    return Config(**sections, workspaces=workspaces, source=source)


def _check_allowlists_have_an_uplink(
    specs: Iterable[WorkspaceSpec], internet: object, issues: Collector
) -> None:
    """An allowlist means "the uplink, but only to these": in a network that has none
    (``internet = false``) it could never apply. (A pytest lab without internet says the
    same when the workspace starts, before anything is made.)"""
    if internet is not False:
        return
    for spec in specs:
        if isinstance(spec.internet, tuple):
            issues.add(
                f"workspaces.{spec.name}.internet",
                "is an allowlist, but network.internet is false", list(spec.internet),
                "an allowlist where network.internet is true or a list",
            )  # fmt: skip
