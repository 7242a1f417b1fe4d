"""A workspace's clock against the host's."""

from __future__ import annotations

import time

from wsfixture.workspace import Workspace


def assert_clock_is_the_hosts(ws: Workspace, slack: float = 1.0) -> None:
    """The guest's time, read between two readings of the host's, is within ``slack``
    seconds of them."""
    before = time.time()
    guest = float(ws.succeed("date +%s.%N"))
    after = time.time()
    assert before - slack <= guest <= after + slack, (before, guest, after)
