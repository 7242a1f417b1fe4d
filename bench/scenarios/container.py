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
    config = make_config(state, bc={"type": "container", "ip": "192.168.83.10"})
    ours_ready, ours_stop = ours_start_stop(config, "bc", runs)
    raw_ready, raw_stop_ = raw_start_stop(config, "bc", runs, raw_nspawn_argv, 60)
    plain_ready, _ = raw_start_stop(config, "bc", runs, raw_nspawn_argv_without_userns, 60)
    return [
        Row(
            "container start -> ready",
            median(ours_ready),
            median(raw_ready),
            "raw nspawn -> sshd banner",
            target="<= 1.10x",
            met=median(ours_ready) <= 1.10 * median(raw_ready),
        ),
        Row(
            "container stop -> gone",
            median(ours_stop),
            median(raw_stop_),
            "raw nspawn SIGTERM -> exit",
        ),
        Row(
            "raw nspawn with user namespace -> banner",
            median(raw_ready),
            median(plain_ready),
            "raw nspawn without one",
        ),
    ]
