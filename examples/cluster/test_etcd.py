"""A three-member etcd cluster under faults: a partitioned leader loses its place and its
writes, the majority goes on, and after the heal all three agree; a paused member catches
up once resumed. Run: pytest --ws-config examples/cluster/workspaces.toml examples/cluster
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from wsfixture.workspaces import Workspace
from wsfixture.workspaces.faults import Faults

NAMES = ("etcd1", "etcd2", "etcd3")
DEADLINE = 60.0  # seconds: an election under load, a follower catching up


def until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE:.0f}s"
        time.sleep(0.5)


def etcdctl(ws: Workspace, target: Workspace, *args: str) -> tuple[int, str]:
    """etcdctl in ``ws`` against ``target``'s member alone."""
    rc, out, err = ws.run(
        f"ETCDCTL_API=3 etcdctl --endpoints=http://{target.ip}:2379 --command-timeout=3s "
        + " ".join(args),
        timeout=30,
    )
    return rc, out + err


def leader_of(ws: Workspace) -> str | None:
    """The member ``ws``'s etcd follows as its leader (its name), or None."""
    rc, out = etcdctl(ws, ws, "endpoint", "status", "-w", "json")
    if rc != 0:
        return None
    status = json.loads(out)[0]["Status"]
    rc, members = etcdctl(ws, ws, "member", "list", "-w", "json")
    names = {m["ID"]: m["name"] for m in json.loads(members)["members"]}
    return names.get(status.get("leader"))  # none while an election runs


def value(ws: Workspace, key: str) -> str | None:
    """``key`` as ``ws``'s own member has it (a serializable read: no leader asked)."""
    rc, out = etcdctl(ws, ws, "get", key, "--print-value-only", "--consistency=s")
    return out.strip() if rc == 0 else None


@pytest.fixture(scope="module")
def cluster(ws_factory_module: Callable[..., Workspace]) -> dict[str, Workspace]:
    """The three members, booted for the module (the factory stops them), in one cluster."""
    members = {name: ws_factory_module(name) for name in NAMES}
    peers = ",".join(f"{n}=http://{ws.ip}:2380" for n, ws in members.items())
    for name, ws in members.items():
        ws.succeed("doas -n systemctl stop etcd || true")  # the package's own single node
        ws.spawn(
            f"etcd --name {name} --data-dir /tmp/etcd --initial-cluster {peers} "
            f"--initial-cluster-state new --initial-cluster-token wsfixture "
            f"--listen-peer-urls http://{ws.ip}:2380 --initial-advertise-peer-urls "
            f"http://{ws.ip}:2380 --listen-client-urls http://{ws.ip}:2379 "
            f"--advertise-client-urls http://{ws.ip}:2379"
        )
    first = members["etcd1"]
    until("a leader", lambda: all(leader_of(ws) for ws in members.values()))
    assert etcdctl(first, first, "put", "k", "v1")[0] == 0
    return members


def test_a_partitioned_leader_loses_its_writes_and_the_majority_goes_on(
    cluster: dict[str, Workspace], ws_faults: Faults
) -> None:
    leader_name = leader_of(cluster["etcd1"])
    assert leader_name in cluster
    leader = cluster[leader_name]
    others = [ws for name, ws in cluster.items() if name != leader_name]
    with ws_faults.partition([leader], others):
        until("a new leader among the two",
              lambda: leader_of(others[0]) not in (None, leader_name))  # fmt: skip
        rc, said = etcdctl(others[0], others[0], "put", "k", "v2")
        assert rc == 0, said
        rc, said = etcdctl(leader, leader, "put", "k", "lost")
        assert rc != 0, "a write through the old leader does not commit"
    until("all three agree", lambda: all(value(ws, "k") == "v2" for ws in cluster.values()))


def test_a_paused_member_catches_up(cluster: dict[str, Workspace]) -> None:
    follower = next(ws for name, ws in cluster.items() if leader_of(ws) != name)
    writer = next(ws for ws in cluster.values() if ws is not follower)
    follower.pause()
    try:
        rc, said = etcdctl(writer, writer, "put", "k", "v3")
        assert rc == 0, said  # two of three still commit
    finally:
        follower.resume()
    until("the paused member caught up", lambda: value(follower, "k") == "v3")
