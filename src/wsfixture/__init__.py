"""wsfixture: boot real sandboxed workspaces (containers and VMs) and check that they work."""

from wsfixture.checks import CHECKS, CheckFailed, verify
from wsfixture.config import (
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
from wsfixture.errors import (
    CleanupError,
    CommandError,
    ConfigError,
    PrerequisiteError,
    ReadyTimeout,
    StartError,
    WsfixtureError,
)
from wsfixture.lab import Lab
from wsfixture.workspace import Workspace

__all__ = [
    "CHECKS",
    "CheckFailed",
    "CleanupError",
    "CommandError",
    "Config",
    "ConfigError",
    "Defaults",
    "Lab",
    "NetworkSpec",
    "PrerequisiteError",
    "ReadyTimeout",
    "ShareSpec",
    "StartError",
    "UserSpec",
    "Workspace",
    "WorkspaceSpec",
    "WsfixtureError",
    "config_from_dict",
    "config_from_json",
    "config_from_toml",
    "load_config",
    "verify",
    "workspace_spec",
]
