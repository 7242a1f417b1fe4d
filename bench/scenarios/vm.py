"""VM starts: restored and cold against raw QEMU's cold boot, the first of a new shape, a
restore beside running VMs, three at once; a VM's stop, in order and discarded."""

from __future__ import annotations

import time
from pathlib import Path

from baselines import (
    fresh_disk,
    raw_qemu_argv,
)
from harness import (
    VM,
    Context,
    Row,
    make_config,
    median,
    ours_start_stop,
    raw_start_stop,
    start_together,
)

from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


def run(ctx: Context) -> list[Row]:
    """Restore and cold boot against raw QEMU's cold boot of the same disk; the first VM of
    a shape (its template made first) against a cold boot; three restores at once."""
    state, runs = ctx.state, ctx.runs
    config = make_config(
        state,
        bv={**VM, "ip": "192.168.83.11"},
        cold={**VM, "ip": "192.168.83.12", "snapshot": "off"},
        **{f"t{i}": {**VM, "ip": f"192.168.83.{30 + i}"} for i in range(3)},
    )
    with Lab(config.network) as lab:  # the template exists before anything is timed
        Workspace(config.workspaces["bv"], config, lab).start().stop()
    restored, restored_stop = ours_start_stop(config, "bv", runs)
    cold, _ = ours_start_stop(config, "cold", runs)
    raw_ready, raw_stop_ = raw_start_stop(config, "cold", runs, raw_qemu_argv, 300, fresh_disk)
    first = first_of_a_shape(state, runs)
    raw = median(raw_ready)
    return [
        Row(
            "vm start -> ready, restored (TCG here)",
            median(restored),
            raw,
            "raw qemu cold boot -> sshd banner",
            target="<= 0.2x, 3 s",
            met=median(restored) <= min(0.2 * raw, 3.0),
        ),
        Row(
            "vm start -> ready, cold boot (snapshot off)",
            median(cold),
            raw,
            "raw qemu cold boot -> sshd banner",
            target="<= 1.10x",
            met=median(cold) <= 1.10 * raw,
        ),
        first,
        restored_beside_running(config, runs, median(restored)),
        three_at_once(config, runs),
        Row(
            "vm stop -> gone",
            median(restored_stop),
            median(raw_stop_),
            "raw qemu powerdown -> exit",
        ),
        Row(
            "vm stop -> gone, discarded (the plugin's, a throwaway lab's)",
            median(ours_start_stop(config, "bv", runs, discard=True)[1]),
            median(restored_stop),
            "the same VM shut down in order",
        ),
    ]


def first_of_a_shape(state: Path, runs: int) -> Row:
    """A shape without a template: the first start makes it (boot + save), then restores."""
    from wsfixture.image import cache

    firsts, colds = [], []
    for attempt in range(runs):
        memory = 832 + 16 * attempt  # a shape of its own each run
        config = make_config(
            state,
            new={**VM, "ip": "192.168.83.13", "memory": memory},
            base={**VM, "ip": "192.168.83.14", "memory": memory, "snapshot": "off"},
        )
        for template in cache.cached_templates():
            if template.shape is not None and template.shape.memory == memory:
                cache.remove_keys([template.key])
        firsts += ours_start_stop(config, "new", 1)[0]
        colds += ours_start_stop(config, "base", 1)[0]
    return Row(
        "vm start -> ready, first of a new shape (template made)",
        median(firsts),
        median(colds),
        "cold boot of the same shape",
        target="<= 1.3x",
        met=median(firsts) <= 1.3 * median(colds),
    )


def restored_beside_running(config: Config, runs: int, idle: float) -> Row:
    """A restore while two restored VMs idle in the same lab: what their guests' timers and
    services cost a third one's start on a TCG host."""
    ready = []
    with Lab(config.network) as lab:
        running = [Workspace(config.workspaces[name], config, lab).start() for name in ("t0", "t1")]
        try:
            time.sleep(5)  # past their own first seconds: idle, as a suite's other VMs are
            for _ in range(runs):
                ws = Workspace(config.workspaces["bv"], config, lab).start()
                assert ws.ready_seconds is not None
                ready.append(ws.ready_seconds)
                ws.stop()
        finally:
            for ws in running:
                ws.stop()
    return Row(
        "vm start -> ready, restored beside 2 running VMs",
        median(ready),
        idle,
        "the same restore, alone",
        target="<= 1.5x",
        met=median(ready) <= 1.5 * idle,
    )


def three_at_once(config: Config, runs: int) -> Row:
    names = [f"t{i}" for i in range(3)]
    walls = [start_together(config, names) for _ in range(runs)]
    return Row("3 VMs at once, restored -> all ready", median(walls))
