"""The hooks the plugin calls, for a ``conftest.py`` to implement."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace


def pytest_ws_converge(workspace: Workspace, inventory: Path) -> None:
    """Called once for each workspace the session starts, when it is ready and before a
    test uses it: converge it, as Molecule does before its tests (``ansible-playbook -i
    inventory site.yml``). ``inventory`` is an Ansible inventory (INI) of that workspace
    alone, its host key pinned through the lab's ssh_config. An exception fails its
    start, as a boot that fails does."""
