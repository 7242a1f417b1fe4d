"""wsfixture: boot real sandboxed workspaces (containers and VMs) and check that they work.

Public names load on first use (PEP 562), so importing the package, as pytest does for the
plugin, does not pull in paramiko, fabric and testinfra until a workspace is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsfixture.checks import CHECKS, CheckFailed, verify
    from wsfixture.errors import (
        CleanupError,
        CommandError,
        CommandTimeout,
        ConfigError,
        ImageBuildError,
        LabError,
        OvercommitError,
        PrerequisiteError,
        ReadyTimeout,
        StartError,
        WaitError,
        WaitTimeout,
        WorkspaceGone,
        WsfixtureError,
    )
    from wsfixture.model.config import (
        Config,
        Defaults,
        NetworkSpec,
        ShareSpec,
        UserSpec,
        WorkspaceSpec,
        config_from_dict,
        config_from_json,
        config_from_toml,
        load_config,
        workspace_spec,
    )
    from wsfixture.net.lab import Lab
    from wsfixture.workspace import Workspace

_HOMES = {
    "checks": ("CHECKS", "CheckFailed", "verify"),
    "model.config": (
        "Config", "Defaults", "NetworkSpec", "ShareSpec", "UserSpec", "WorkspaceSpec",
        "config_from_dict", "config_from_json", "config_from_toml", "load_config",
        "workspace_spec",
    ),
    "errors": (
        "CleanupError", "CommandError", "CommandTimeout", "ConfigError", "ImageBuildError",
        "LabError", "OvercommitError", "PrerequisiteError", "ReadyTimeout", "StartError",
        "WaitError",
        "WaitTimeout", "WorkspaceGone", "WsfixtureError",
    ),
    "net.lab": ("Lab",),
    "workspace": ("Workspace",),
}  # fmt: skip
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CHECKS",
    "CheckFailed",
    "CleanupError",
    "CommandError",
    "CommandTimeout",
    "Config",
    "ConfigError",
    "Defaults",
    "ImageBuildError",
    "Lab",
    "LabError",
    "NetworkSpec",
    "OvercommitError",
    "PrerequisiteError",
    "ReadyTimeout",
    "ShareSpec",
    "StartError",
    "UserSpec",
    "WaitError",
    "WaitTimeout",
    "Workspace",
    "WorkspaceGone",
    "WorkspaceSpec",
    "WsfixtureError",
    "config_from_dict",
    "config_from_json",
    "config_from_toml",
    "load_config",
    "verify",
    "workspace_spec",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'wsfixture' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"wsfixture.{module}"), name)
    globals()[name] = value
    return value
