"""The benchmark scenarios by name, in the order a full run takes them; each module's
``run(ctx)`` returns its rows."""

from __future__ import annotations

from collections.abc import Callable

from harness import Context, Row

from scenarios import (
    agents,
    checkpoints,
    coldwarm,
    container,
    faults,
    latency,
    network,
    parallel,
    peer,
    releases,
    sessions,
    sharedcache,
    vm,
)

SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "container": container.run,
    "vm": vm.run,
    "parallel": parallel.run,
    "latency": latency.run,
    "network": network.run,
    "coldwarm": coldwarm.run,
    "releases": releases.run,
    "sessions": sessions.run,
    "peer": peer.run,
    "checkpoints": checkpoints.run,
    "sharedcache": sharedcache.run,
    "faults": faults.run,
    "agents": agents.run,
}
