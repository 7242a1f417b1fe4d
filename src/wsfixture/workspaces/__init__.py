"""The workspace handle (``handle``), the same for containers and VMs: what a boot needs
(``prepare``), and the commands and waits a test uses (``commands``).

The handle loads on first use (PEP 562): ``commands`` is light, and the plugin that every
pytest run loads imports it without paramiko, fabric and testinfra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wsfixture.workspaces.commands import COMMAND_TIMEOUT_DEFAULT

if TYPE_CHECKING:
    from wsfixture.workspaces.handle import Workspace
    from wsfixture.workspaces.states import WorkspaceState

__all__ = ["COMMAND_TIMEOUT_DEFAULT", "Workspace", "WorkspaceState"]


def __getattr__(name: str) -> Any:
    if name == "Workspace":
        return importlib.import_module("wsfixture.workspaces.handle").Workspace
    if name == "WorkspaceState":
        return importlib.import_module("wsfixture.workspaces.states").WorkspaceState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
