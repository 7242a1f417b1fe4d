"""The workspace handle (``handle``), the same for containers and VMs: what a boot needs
(``prepare``), and the commands and waits a test uses (``commands``)."""

from wsfixture.workspace.commands import COMMAND_TIMEOUT_DEFAULT
from wsfixture.workspace.handle import Workspace, WorkspaceState

__all__ = ["COMMAND_TIMEOUT_DEFAULT", "Workspace", "WorkspaceState"]
