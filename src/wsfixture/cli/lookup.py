"""What a command names: workspaces of the config, running or not, and the lab they are in."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.cli.persistent import handle_on_running
from wsfixture.errors import WorkspaceGone, WorkspacePaused, WsfixtureError
from wsfixture.host import ledger, settings
from wsfixture.model.config import Config, load_config
from wsfixture.suggest import unknown_workspace

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace


class UsageError(WsfixtureError):
    """The command line asks for something that cannot be."""


def select(
    config: Config, names: list[str], all_: bool, default: Callable[[str], bool]
) -> list[str]:
    unknown = [n for n in names if n not in config.workspaces]
    if unknown:
        raise UsageError(
            unknown_workspace(unknown, list(config.workspaces), f" in {config.source}")
        )
    if names:
        return names
    return [n for n in config.workspaces if all_ or default(n)]


def lab_dir(args: argparse.Namespace) -> tuple[str, Path]:
    name = args.lab or load_config(args.config).network.namespace
    return name, settings.current().labs_dir / name


def require_running(
    name: str, known: list[str], lab: str, where: str = "", paused_ok: bool = False
) -> None:
    """A usage error for a name that is not a workspace (exit 2), then ``live_supervisor``'s
    errors."""
    if name not in known:
        raise UsageError(unknown_workspace([name], known, where))
    live_supervisor(name, lab, paused_ok)


def live_supervisor(name: str, lab: str, paused_ok: bool = False) -> ledger.SupervisorInfo | None:
    """What CLI workspace ``name`` of ``lab`` runs under: WorkspaceGone for one that is not
    running, WorkspacePaused for a paused one unless ``paused_ok`` (what would be sent to
    it would only hang)."""
    record = ledger.workspaces(lab, live=True).get(name)
    if record is None:
        raise WorkspaceGone(name, f"start it with `wsfixture up {name}`")
    supervisor = ledger.workspace_info(record).supervisor
    if supervisor is not None and supervisor.paused and not paused_ok:
        raise WorkspacePaused(name)
    return supervisor


def running_workspace(args: argparse.Namespace, name: str) -> Workspace:
    """A handle on a running CLI workspace of the config (usage error for an unknown name,
    WorkspaceGone for a stopped one)."""
    config = load_config(args.config)
    require_running(name, list(config.workspaces), config.network.namespace)
    return handle_on_running(config, name)
