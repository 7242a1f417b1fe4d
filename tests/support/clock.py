"""A workspace's clock against the host's."""

from __future__ import annotations

import time

from wsfixture.workspaces import Workspace


def assert_clock_is_the_hosts(ws: Workspace, slack: float = 0.5) -> None:
    """The guest's time, read between two readings of the host's, is within ``slack``
    seconds of them. (Measured here: a clone's within the command's round trip, 0.15-0.25 s,
    a resumed VM's at most ~0.1 s behind it; a resume that set the time the host sent with
    its request was 0.6-1.1 s behind after a rollback.)"""
    before = time.time()
    guest = float(ws.succeed("date +%s.%N"))
    after = time.time()
    assert before - slack <= guest <= after + slack, (before, guest, after)
