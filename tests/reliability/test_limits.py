"""A container's limits hold against a runaway workload, inside its own cgroup: memory
(OOM-killed there, swap included), processes and CPU time. Each attack first shows its
positive control: the same workload succeeds in a container without limits."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import OvercommitError
from wsfixture.host import ledger, virt
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

MEMORY, PIDS = 256, 128
LIMITED = {"type": "container", "memory": MEMORY, "vcpu": 1, "pids": PIDS}

ALLOCATE = (
    "python3 -c 'b = bytearray({mib} * 2**20); b[::4096] = b\"x\" * len(b[::4096]); print(len(b))'"
)
# Fork up to 256 children that sleep a moment; say how many it got and why it stopped.
FORK = """python3 -c '
import os, time
made = []
try:
    for _ in range(256):
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        made.append(pid)
    print("forked", len(made))
except OSError as exc:
    print("refused", len(made), exc.strerror)
for pid in made:
    os.waitpid(pid, 0)
'"""
# Two busy loops for a while; the CPU seconds they got, and the wall time.
BUSY = """python3 -c '
import os, time
began = time.monotonic()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
t = os.times()
print(t.children_user + t.children_system, time.monotonic() - began)
'"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Workspace]]:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    config = make_config(
        tmp_path_factory.mktemp("limits"), limited=LIMITED, open={"type": "container"}
    )
    with booted(config, "limited", "open") as [limited, unlimited]:
        yield limited, unlimited


def test_the_limits_are_described_and_recorded(pair: tuple[Workspace, Workspace]) -> None:
    limited, unlimited = pair
    facts = limited.describe()["limits"]
    assert facts == {"vcpu": 1, "memory_mib": MEMORY, "disk_mib": "none", "pids": PIDS,
                     "oom_kills": 0}  # fmt: skip
    assert unlimited.describe()["limits"] == {
        "vcpu": "none", "memory_mib": "none", "disk_mib": "none", "pids": "none", "oom_kills": 0
    }  # fmt: skip
    assert limited._backend is not None
    dirs = limited._backend.limit_dirs
    assert dirs, "this hybrid host keeps the limits in v1 cgroups"
    record = next(r for r in ledger.records() if r.key == f"ws-{limited.lab.name}-limited")
    assert {str(d) for d in dirs} <= set(record.cgroups), "gc finds them after a crash"


def test_memory_over_the_limit_is_oom_killed_inside(pair: tuple[Workspace, Workspace]) -> None:
    limited, unlimited = pair
    # Positive control: without a limit, twice the memory is there to take.
    assert unlimited.succeed(ALLOCATE.format(mib=2 * MEMORY)).strip() == str(2 * MEMORY * 2**20)
    rc, out, err = limited.run(ALLOCATE.format(mib=2 * MEMORY), timeout=60)
    assert rc == 137, f"not killed: rc {rc} {out} {err}"
    assert "Killed" in err
    assert limited.succeed("echo still here").strip() == "still here", "only the hog died"
    said = limited.out_of_memory()
    assert said is not None
    assert said.startswith(f"killed: out of memory (memory = {MEMORY} MiB)")
    assert unlimited.out_of_memory() is None


def test_processes_past_the_limit_cannot_fork(pair: tuple[Workspace, Workspace]) -> None:
    limited, unlimited = pair
    assert unlimited.succeed(FORK, timeout=60).split() == ["forked", "256"]  # control
    said = limited.succeed(FORK, timeout=60).split()
    assert said[0] == "refused", said
    assert int(said[1]) < PIDS
    assert "Resource temporarily unavailable" in " ".join(said[2:])


def test_two_busy_loops_get_one_cpu(pair: tuple[Workspace, Workspace]) -> None:
    limited, unlimited = pair
    cpu, wall = map(float, unlimited.succeed(BUSY, timeout=60).split())
    assert cpu / wall > 1.3, f"control: two loops used {cpu:.2f} s of CPU in {wall:.2f} s"
    cpu, wall = map(float, limited.succeed(BUSY, timeout=60).split())
    assert cpu / wall <= 1.15, f"vcpu = 1, yet {cpu:.2f} s of CPU in {wall:.2f} s"
    assert limited._backend is not None
    throttled = [d / "cpu.stat" for d in limited._backend.limit_dirs if (d / "cpu.stat").exists()]
    stats = dict(line.split() for line in throttled[0].read_text().splitlines())
    assert int(stats["nr_throttled"]) > 0


def test_stopping_removes_the_limit_cgroups(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    config = make_config(tmp_path, bounded=LIMITED)
    with booted(config, "bounded") as [ws]:
        assert ws._backend is not None
        dirs = list(ws._backend.limit_dirs)
        assert all(d.is_dir() for d in dirs)
    assert [d for d in dirs if d.exists()] == []


def test_memory_the_host_does_not_have_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    more = virt.host_memory_mib("MemAvailable") + 1024
    config = make_config(tmp_path, greedy={"type": "container", "memory": more})
    with Lab(config.network) as lab:
        with pytest.raises(OvercommitError) as info:
            Workspace(config.workspaces["greedy"], config, lab).start()
        assert f"memory = {more} MiB, but the host has" in str(info.value)
        assert not (lab.dir / "greedy").exists(), "nothing of it was made"
        assert not [r for r in ledger.records() if r.key.endswith("-greedy")]
        # Positive control: asked for, the same workspace starts (its bound never binds).
        with Workspace(config.workspaces["greedy"], config, lab, overcommit=True) as ws:
            assert ws.describe()["limits"]["memory_mib"] == more  # type: ignore[index]


def test_writing_past_disk_gets_enospc_and_costs_the_host_at_most_disk(
    pair: tuple[Workspace, Workspace], tmp_path: Path
) -> None:
    disk = 256
    config = make_config(tmp_path, small={"type": "container", "disk": disk})
    fill = f"dd if=/dev/zero of=/var/tmp/fill bs=1M count={2 * disk} 2>&1; rm -f /var/tmp/fill"
    _, unlimited = pair
    assert "No space" not in unlimited.succeed(fill, timeout=120)  # control: 2x fits there
    with booted(config, "small") as [ws]:
        assert ws._backend is not None
        free_before = shutil.disk_usage(ws._runtime_dir).free
        dd = f"dd if=/dev/zero of=/var/tmp/fill bs=1M count={2 * disk}"
        rc, out, err = ws.run(dd, timeout=120)
        used = free_before - shutil.disk_usage(ws._runtime_dir).free
        assert rc != 0
        assert "No space left on device" in out + err
        assert used <= (disk + 16) * 2**20, f"the host lost {used / 2**20:.0f} MiB"
        assert ws.succeed("echo still up").strip() == "still up"
