"""wsfixture: boot real sandboxed workspaces (containers and VMs) and check that they work.

Public names load on first use (PEP 562), so importing the package, as pytest does for the
plugin, does not pull in paramiko, fabric and testinfra until a workspace is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsfixture.api import Connected, Lab, connect, workspace
    from wsfixture.checks import CHECKS, CheckFailed, verify
    from wsfixture.copying import Copied, CopyError
    from wsfixture.errors import (
        CheckpointError,
        CleanupError,
        CommandError,
        CommandTimeout,
        ConfigError,
        CorruptTemplateError,
        FaultError,
        ImageBuildError,
        LabError,
        OvercommitError,
        PrerequisiteError,
        ReadyTimeout,
        StartError,
        TemplateError,
        WaitError,
        WaitTimeout,
        WorkspaceGone,
        WorkspacePaused,
        WsfixtureError,
    )
    from wsfixture.host.system import HostCommandError
    from wsfixture.image.archive import TransferError
    from wsfixture.image.registry import RegistryError, RegistryUnreachableError
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
    from wsfixture.process import Process
    from wsfixture.workspaces import Workspace
    from wsfixture.workspaces.checkpoint_store import Checkpoint
    from wsfixture.workspaces.faults import Faults, Healing

_HOMES = {
    "api": ("Connected", "Lab", "connect", "workspace"),
    "checks": ("CHECKS", "CheckFailed", "verify"),
    "copying": ("Copied", "CopyError"),
    "host.system": ("HostCommandError",),
    "image.archive": ("TransferError",),
    "image.registry": ("RegistryError", "RegistryUnreachableError"),
    "process": ("Process",),
    "workspaces.checkpoint_store": ("Checkpoint",),
    "workspaces.faults": ("Faults", "Healing"),
    "model.config": (
        "Config", "Defaults", "NetworkSpec", "ShareSpec", "UserSpec", "WorkspaceSpec",
        "config_from_dict", "config_from_json", "config_from_toml", "load_config",
        "workspace_spec",
    ),
    "errors": (
        "CheckpointError", "CleanupError", "CommandError", "CommandTimeout", "ConfigError",
        "CorruptTemplateError", "FaultError", "ImageBuildError", "LabError",
        "OvercommitError", "PrerequisiteError", "ReadyTimeout", "StartError", "TemplateError",
        "WaitError", "WaitTimeout", "WorkspaceGone", "WorkspacePaused", "WsfixtureError",
    ),
    "workspaces": ("Workspace",),
}  # fmt: skip
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CHECKS",
    "CheckFailed",
    "Checkpoint",
    "CheckpointError",
    "CleanupError",
    "CommandError",
    "CommandTimeout",
    "Config",
    "ConfigError",
    "Connected",
    "Copied",
    "CopyError",
    "CorruptTemplateError",
    "Defaults",
    "FaultError",
    "Faults",
    "Healing",
    "HostCommandError",
    "ImageBuildError",
    "Lab",
    "LabError",
    "NetworkSpec",
    "OvercommitError",
    "PrerequisiteError",
    "Process",
    "ReadyTimeout",
    "RegistryError",
    "RegistryUnreachableError",
    "ShareSpec",
    "StartError",
    "TemplateError",
    "TransferError",
    "UserSpec",
    "WaitError",
    "WaitTimeout",
    "Workspace",
    "WorkspaceGone",
    "WorkspacePaused",
    "WorkspaceSpec",
    "WsfixtureError",
    "config_from_dict",
    "config_from_json",
    "config_from_toml",
    "connect",
    "load_config",
    "verify",
    "workspace",
    "workspace_spec",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'wsfixture' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"wsfixture.{module}"), name)
    globals()[name] = value
    return value
