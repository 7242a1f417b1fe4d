"""Faults between workspaces (``ws_faults``, ``workspace.faults``), for real, on three
containers of one lab: a partition cuts both ways and an established TCP stream with it,
and leaves the rest alone; a block is one way; loss drops what it says; the test's own
channel is never cut; everything heals, and what a killed session left is healed by gc.
Each fault beside its positive control: the same traffic before it and after the heal."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import FaultError, WorkspaceGone, WorkspacePaused
from wsfixture.host import ledger, system
from wsfixture.workspace import Workspace
from wsfixture.workspace.faults import Faults


def python(script: str, *args: object) -> str:
    """A shell line running ``script`` with ``args`` in the workspace's python3."""
    return " ".join(["python3", "-u", "-c", shlex.quote(script), *map(str, args)])


SEND = "import socket, sys\nsocket.socket(2, 2).sendto(b'x', (sys.argv[1], int(sys.argv[2])))"
LISTEN = """\
import socket, sys
s = socket.socket(2, 2)
s.bind(("", int(sys.argv[1])))
s.settimeout(3)
print(s.recvfrom(9)[0].decode())
"""
STREAM_SERVER = """\
import socket, time
c, _ = socket.create_server(("", 9200)).accept()
for n in range(100000):
    c.sendall(b"%d\\n" % n)
    time.sleep(0.05)
"""
STREAM_CLIENT = """\
import socket, sys
for line in socket.create_connection((sys.argv[1], 9200)).makefile():
    open("/tmp/got", "a").write(line)
"""


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Workspace]]:
    require_root_and_tools("systemd-nspawn", "nft")
    config = make_config(tmp_path_factory.mktemp("faults"), a={"type": "container"},
                         b={"type": "container"}, c={"type": "container"})  # fmt: skip
    with booted(config, "a", "b", "c") as made:
        yield made


@pytest.fixture
def faults(trio: list[Workspace]) -> Iterator[Faults]:
    made = Faults(trio[0].lab)
    yield made
    made.heal()


def reaches(src: Workspace, dst: Workspace) -> bool:
    return src.run(f"ping -c 1 -W 1 {dst.ip}", timeout=10)[0] == 0


def udp_arrives(src: Workspace, dst: Workspace, port: int) -> bool:
    listener = dst.spawn(python(LISTEN, port))
    time.sleep(0.3)  # bound before the datagram leaves
    for _ in range(3):  # a datagram or two may go before the listener binds
        src.succeed(python(SEND, dst.ip, port))
        time.sleep(0.1)
    return listener.wait(10) == 0


def test_a_partition_cuts_both_ways_and_leaves_the_rest(
    trio: list[Workspace], faults: Faults
) -> None:
    a, b, c = trio
    for src, dst in ((a, b), (b, a), (b, c)):
        assert reaches(src, dst), f"control: {src.name} -> {dst.name}"
    with faults.partition([a], [b, "c"]):
        assert not reaches(a, b)
        assert not reaches(b, a)
        assert not reaches(c, a)
        assert reaches(b, c), "workspaces in one group are unaffected"
        assert a.succeed("hostname").strip() == "a", "the test's own channel is never cut"
        assert "partition a | b, c" in faults.describe()
    assert reaches(a, b), "healed at the block's end"
    assert reaches(c, a)
    assert "active" not in faults.describe()


def test_a_block_is_one_way(trio: list[Workspace], faults: Faults) -> None:
    a, b, _ = trio
    assert udp_arrives(a, b, 9101)  # control
    assert udp_arrives(b, a, 9102)
    healing = faults.block(a, b)
    assert not udp_arrives(a, b, 9103)
    assert udp_arrives(b, a, 9104), "the other way still arrives"
    healing.heal()
    assert udp_arrives(a, b, 9105)


def test_an_established_stream_stops_at_once_and_goes_on_after_the_heal(
    trio: list[Workspace], faults: Faults
) -> None:
    a, b, _ = trio
    server = a.spawn(python(STREAM_SERVER))
    time.sleep(0.5)
    client = b.spawn(python(STREAM_CLIENT, a.ip))

    def received() -> int:
        return int(b.succeed("wc -l < /tmp/got 2>/dev/null || echo 0").strip() or 0)

    try:
        deadline = time.monotonic() + 10
        while received() < 5:
            assert time.monotonic() < deadline, "the stream never flowed (control)"
            time.sleep(0.2)
        with faults.partition([a], [b]):
            time.sleep(0.3)
            cut = received()
            time.sleep(1.5)
            assert received() == cut, "not a line while partitioned"
        deadline = time.monotonic() + 20  # TCP's retransmission backoff, bounded
        while received() <= cut:
            assert time.monotonic() < deadline, "the stream never went on after the heal"
            time.sleep(0.2)
    finally:
        client.kill()
        server.kill()
        b.succeed("rm -f /tmp/got")


def test_loss_drops_about_what_it_says(trio: list[Workspace], faults: Faults) -> None:
    a, b, _ = trio

    def lost(count: int = 100) -> float:
        out = a.run(f"ping -q -c {count} -i 0.02 -W 1 {b.ip}", timeout=60)[1]
        match = re.search(r"([0-9.]+)% packet loss", out)
        assert match, out
        return float(match.group(1))

    assert lost() == 0  # control
    with faults.shape(a, b, loss=50):
        # Each round trip crosses the rule twice (the request and the reply): ~75 % lost.
        assert 55 <= lost(200) <= 92
    assert lost() == 0


def test_faults_refuse_what_cannot_be(trio: list[Workspace], faults: Faults) -> None:
    a, b, _ = trio
    with pytest.raises(FaultError, match="partition 'a' in two groups"):
        faults.partition([a], [a, b])
    with pytest.raises(FaultError, match=r"loss '150'.*from 0 to 100"):
        faults.shape(a, loss="150")
    with pytest.raises(FaultError, match="ws 'nobody-here': allowed: a workspace of lab"):
        faults.shape("nobody-here", loss=5)
    with pytest.raises(FaultError, match="partition 1 group"):
        faults.partition([a, b])
    assert faults.timeline == [], "nothing was made"
    assert reaches(a, b)


def test_what_a_killed_session_left_is_healed_by_gc(trio: list[Workspace]) -> None:
    a, b, _ = trio
    left = Faults(a.lab)
    left.partition([a], [b])
    assert not reaches(a, b)
    record = left._record
    assert record is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    record.owner = system.ProcessRef(gone.pid, 1)  # its start time never matches: dead
    record.save()
    reaped, failures = ledger.reap()
    assert failures == []
    assert record.key in [r.key for r in reaped]
    assert reaches(a, b), "gc healed it"


SERVE = "python3 -m http.server --directory /etc 8088"


def answers(src: Workspace, dst: Workspace) -> bool:
    fetch = f"import urllib.request as u; u.urlopen('http://{dst.ip}:8088/hostname', timeout=2)"
    return src.run(python(fetch), timeout=20)[0] == 0


def pause_and_resume(
    ws: Workspace, peer: Workspace, while_paused: Callable[[], None], wait: float = 15.0
) -> None:
    """``ws`` paused once its server answers ``peer``: commands to it are refused at once,
    ``while_paused`` runs, nothing answers; resumed, it answers again and a process
    started before the pause is the same one. Resumed and its processes ended, whatever
    happens."""
    sleeper, server = ws.spawn("sleep 1000"), ws.spawn(SERVE)
    try:
        deadline = time.monotonic() + wait
        while not answers(peer, ws):
            assert time.monotonic() < deadline, "control: its server never answered"
        ws.pause()
        assert ws.paused
        with pytest.raises(WorkspacePaused, match=rf"'{ws.name}' is paused: ws\.resume\(\)"):
            ws.run("true")
        while_paused()
        assert not answers(peer, ws), "its processes answer nothing while paused"
        ws.resume()
        assert answers(peer, ws)
        assert ws.succeed(f"kill -0 {sleeper.pid} && echo alive").strip() == "alive"
    finally:
        if ws.paused:
            ws.resume()
        sleeper.kill()
        server.kill()


def test_a_paused_workspace_stops_and_goes_on_as_the_same_processes(
    trio: list[Workspace],
) -> None:
    a, b, _ = trio

    def testinfra_is_refused_too() -> None:
        with pytest.raises(WorkspacePaused):
            assert a.host.file("/etc/hostname").exists

    pause_and_resume(a, b, testinfra_is_refused_too)


def test_a_crash_cuts_the_power_and_a_start_brings_it_back(trio: list[Workspace]) -> None:
    """The last of the module: ``a`` is booted anew, with its pinned host key."""
    a, b, _ = trio
    a.succeed("echo before > /tmp/mark")
    a.crash()
    assert a.state.value == "stopped"
    with pytest.raises(WorkspaceGone):
        a.run("true")
    assert not reaches(b, a), "nothing answers at its address"
    a.start()
    assert a.succeed("hostname").strip() == "a", "the pinned login works: the same host key"
    assert a.run("cat /tmp/mark")[0] != 0, "a boot anew: /tmp was the machine's"
    assert reaches(b, a)
