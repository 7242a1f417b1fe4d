"""Container start and stop against raw systemd-nspawn, with and without its user namespace."""

from __future__ import annotations

from baselines import (
    raw_nspawn_argv,
    raw_nspawn_argv_without_userns,
)
from harness import (
    Context,
    Row,
    make_config,
    median,
    ours_start_stop,
    raw_start_stop,
)


def run(ctx: Context) -> list[Row]:
    state, runs = ctx.state, ctx.runs
    # Limits that do not bind a boot (2 CPUs are all this host has): what enforcing costs.
    limited = {"type": "container", "ip": "192.168.83.11", "memory": 512, "vcpu": 2, "pids": 512}
    sized = {"type": "container", "ip": "192.168.83.12", "disk": "8G"}
    config = make_config(
        state, bc={"type": "container", "ip": "192.168.83.10"}, lim=limited, sized=sized
    )
    ours_ready, ours_stop = ours_start_stop(config, "bc", runs)

    def in_turns(name: str) -> tuple[list[float], list[float]]:
        """Start to ready of ``name`` and of the open one, taken in turns, so a machine
        that gets busier weighs on both."""
        pairs = [(ours_start_stop(config, name, 1)[0][0], ours_start_stop(config, "bc", 1)[0][0])
                 for _ in range(max(runs, 5))]  # fmt: skip
        return [p[0] for p in pairs], [p[1] for p in pairs]

    with_limits, without = in_turns("lim")
    with_disk, without_disk = in_turns("sized")
    raw_ready, raw_stop_ = raw_start_stop(config, "bc", runs, raw_nspawn_argv, 60)
    plain_ready, _ = raw_start_stop(config, "bc", runs, raw_nspawn_argv_without_userns, 60)
    return [
        Row(
            "container start -> ready",
            median(ours_ready),
            median(raw_ready),
            "raw nspawn -> sshd banner",
            target="<= 1.03x",
            met=median(ours_ready) <= 1.03 * median(raw_ready),
        ),
        Row(
            "container stop -> gone",
            median(ours_stop),
            median(raw_stop_),
            "raw nspawn SIGTERM -> exit",
        ),
        Row(
            "container start -> ready, with memory/cpu/pids limits",
            median(with_limits),
            median(without),
            "the same without limits",
            target="<= 1.05x",
            met=median(with_limits) <= 1.05 * median(without),
        ),
        Row(
            "container start -> ready, disk = 8G (its own ext4 layer)",
            median(with_disk),
            median(without_disk),
            "the same without",
        ),
        Row(
            "raw nspawn with user namespace -> banner",
            median(raw_ready),
            median(plain_ready),
            "raw nspawn without one",
        ),
    ]
