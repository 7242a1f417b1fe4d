"""Where a workspace handle stands: the states its parts (checkpoints, power) read too."""

from __future__ import annotations

import enum


class WorkspaceState(enum.Enum):
    """Where a ``Workspace`` handle stands, and so what ``stop()`` releases."""

    NEW = "new"  # nothing started
    OWNED = "owned"  # this handle started it (ledger record, machine): stop() releases it all
    ATTACHED = "attached"  # another process runs it (the CLI's): stop() closes the connection
    DETACHED = "detached"  # started here, then left to outlive this process (kept)
    STOPPED = "stopped"  # released
