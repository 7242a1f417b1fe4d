"""The handles' states, where no system is touched: what a new or stopped handle refuses."""

from __future__ import annotations

import pytest

from wsfixture.errors import WorkspaceGone
from wsfixture.model.config import Config, workspace_spec
from wsfixture.net.lab import Lab, LabState
from wsfixture.workspaces import Workspace, WorkspaceState


def test_a_new_workspace_handle_refuses_commands_and_stops_as_a_no_op() -> None:
    config = Config()
    lab = Lab(config.network)
    ws = Workspace(
        workspace_spec(config, name="a", type="container", ip="192.168.83.10"), config, lab
    )
    assert ws.state is WorkspaceState.NEW
    with pytest.raises(WorkspaceGone, match="this handle is new"):
        ws.run("true")
    ws._detach()  # nothing to hand over
    assert ws.state is WorkspaceState.NEW
    ws.stop()
    assert ws.state is WorkspaceState.STOPPED
    with pytest.raises(WorkspaceGone, match="this handle is stopped"):
        ws.succeed("true")
    assert not ws.is_running


def test_a_lab_handle_that_made_nothing_closes_without_touching_the_system() -> None:
    lab = Lab(Config().network, "wsf-never-made")
    assert lab.state is LabState.NEW
    lab.detach()  # only an owned lab can be left to outlive us
    assert lab.state is LabState.NEW
    lab.close()
    assert lab.state is LabState.CLOSED
