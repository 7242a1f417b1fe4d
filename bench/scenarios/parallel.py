"""Many containers started at once."""

from __future__ import annotations

from harness import (
    Context,
    Row,
    make_config,
    median,
    start_together,
)


def run(ctx: Context) -> list[Row]:
    state, runs = ctx.state, ctx.runs
    rows = []
    for count in (4, 8):
        config = make_config(
            state,
            **{f"p{i}": {"type": "container", "ip": f"192.168.83.{20 + i}"} for i in range(count)},
        )
        walls = [start_together(config, list(config.workspaces)) for _ in range(runs)]
        target = "< 4 s" if count == 8 else ""
        rows.append(
            Row(
                f"{count} containers at once -> all ready",
                median(walls),
                target=target,
                met=median(walls) < 4 if count == 8 else None,
            )
        )
    return rows
