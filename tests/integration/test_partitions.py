"""Faults between workspaces (``ws_faults``, ``workspace.faults``), for real, on three
containers of one lab: a partition cuts both ways and an established TCP stream with it,
and leaves the rest alone; a block is one way; loss, delay, jitter and rate do what they
say; a failed name fails as asked; the test's own channel is never cut or slowed;
everything heals, and what a killed session left is healed by gc. Each fault beside its
positive control: the same traffic before it and after the heal."""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import FaultError, WorkspaceGone, WorkspacePaused
from wsfixture.host import ledger, system
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.faults import Faults

# Delay, jitter, rate and loss are measured: with nothing of the suite beside them.
pytestmark = pytest.mark.alone


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


ECHO = """\
import socket
s = socket.socket(2, 2)
s.bind(("", 9400))
while True:
    data, sender = s.recvfrom(64)
    s.sendto(data, sender)
"""
PROBE = """\
import json, socket, sys, time
s = socket.socket(2, 2)
s.settimeout(3)
times = []
for n in range(int(sys.argv[2])):
    start = time.monotonic()
    s.sendto(b"%d" % n, (sys.argv[1], 9400))
    while s.recvfrom(64)[0] != b"%d" % n:
        pass
    times.append((time.monotonic() - start) * 1000)
    time.sleep(0.02)
print(json.dumps(times))
"""


def round_trips(src: Workspace, dst: Workspace, count: int = 12) -> list[float]:
    """Round trips (ms) of UDP datagrams from ``src`` to an echo on ``dst``."""
    return [float(t) for t in json.loads(src.succeed(python(PROBE, dst.ip, count), timeout=60))]


@pytest.fixture
def echo(trio: list[Workspace]) -> Iterator[None]:
    server = trio[1].spawn(python(ECHO))
    time.sleep(0.3)
    yield
    server.kill()


@pytest.mark.usefixtures("echo")
def test_delay_is_added_once_to_every_round_trip(trio: list[Workspace], faults: Faults) -> None:
    a, b, c = trio
    assert max(round_trips(a, b)) < 50, "control: a plain round trip"
    with faults.shape(a, delay="100ms"):
        measured = round_trips(a, b)
        assert min(measured) >= 100, measured
        assert statistics.median(measured) < 150, measured
        assert max(round_trips(c, b)) < 50, "workspaces it does not involve are not slowed"
        started = time.monotonic()
        a.succeed("true")
        assert time.monotonic() - started < 1.0, "the test's channel is not slowed"
    assert max(round_trips(a, b)) < 50, "healed"


@pytest.mark.usefixtures("echo")
def test_jitter_spreads_the_delay_and_a_peer_limits_it(
    trio: list[Workspace], faults: Faults
) -> None:
    a, b, c = trio
    with faults.shape(a, b, delay=200, jitter=60):
        measured = round_trips(a, b, 20)
        assert min(measured) >= 140, measured
        assert max(measured) - min(measured) >= 30, f"spread: {measured}"
        assert statistics.median(measured) < 290, measured
        assert max(round_trips(c, b)) < 50
    with faults.shape(b, c, delay=200):
        assert max(round_trips(a, b)) < 50, "only the peer's round trips are slowed"
        assert min(round_trips(c, b)) >= 200
    assert max(round_trips(a, b)) < 50


SINK = """\
import socket, sys
server = socket.create_server(("", int(sys.argv[1])))
connection, _ = server.accept()
while connection.recv(65536):
    pass
connection.sendall(b"done")
"""
SOURCE = """\
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
start = time.monotonic()
c.sendall(b"x" * int(sys.argv[3]))
c.shutdown(socket.SHUT_WR)
c.recv(4)
print(int(sys.argv[3]) * 8 / (time.monotonic() - start))
"""


def throughput(src: Workspace, dst: Workspace, size: int, port: int) -> float:
    """Bits per second of ``size`` bytes sent over TCP from ``src`` to ``dst``."""
    sink = dst.spawn(python(SINK, port))
    time.sleep(0.3)
    try:
        return float(src.succeed(python(SOURCE, dst.ip, port, size), timeout=60))
    finally:
        sink.kill()


def test_rate_holds_what_a_workspace_sends_and_receives(
    trio: list[Workspace], faults: Faults
) -> None:
    a, b, c = trio
    assert throughput(a, b, 2_000_000, 9501) > 20e6, "control: unshaped"
    with faults.shape(a, rate="2mbit"):
        sent = throughput(a, b, 500_000, 9502)
        received = throughput(c, a, 500_000, 9503)
        for measured in (sent, received):
            assert 1.0e6 <= measured <= 2.4e6, f"{measured / 1e6:.2f} Mbit/s"
        assert throughput(b, c, 2_000_000, 9504) > 20e6, "others are not held"
        started = time.monotonic()
        a.put("/etc/services", "/tmp/services")  # the test's channel: ~14 kB
        assert time.monotonic() - started < 1.0, "the test's channel is not held"
    assert throughput(a, b, 2_000_000, 9505) > 20e6, "healed"


ASK = """\
import random, socket, struct, sys
name = sys.argv[2]
ident = random.randrange(65536)
question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
s = socket.socket(2, 2)
s.settimeout(2)
s.sendto(struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + b"\\0\\1\\0\\1",
         (sys.argv[1], 53))
try:
    answer = s.recvfrom(4096)[0]
except TimeoutError:
    print("timeout")
else:
    codes = {0: "noerror", 2: "servfail", 3: "nxdomain"}
    assert answer[:2] == struct.pack(">H", ident)
    print(codes.get(answer[3] & 0xF, answer[3] & 0xF), struct.unpack(">H", answer[6:8])[0])
"""


def ask(ws: Workspace, name: str) -> str:
    """What the lab's resolver answers ``ws`` for ``name``: its code and answer count,
    or ``timeout``."""
    gateway = str(ws.lab.network.gateway)
    return ws.succeed(python(ASK, gateway, name), timeout=20).strip()


def test_a_failed_name_fails_as_asked_and_only_that_name(
    trio: list[Workspace], faults: Faults
) -> None:
    a, b, c = trio
    assert ask(a, "b") == "noerror 1", "control: the lab answers"
    for mode, answered in (("nxdomain", "nxdomain 0"), ("servfail", "servfail 0"),
                           ("timeout", "timeout")):  # fmt: skip
        with faults.dns("b", mode):
            assert ask(a, "b") == answered
            assert ask(c, "B") == answered, "letters in either case, every workspace"
            assert ask(a, "c") == "noerror 1", "other names are answered"
            assert ask(a, "workspace-b") == "noerror 1", "nor are the name's aliases"
        assert ask(a, "b") == "noerror 1", f"healed ({mode})"
    with faults.dns("b", "nxdomain"):
        assert a.run("getent hosts b")[0] != 0, "through the workspace's own resolver too"
    assert a.succeed("getent hosts b").split()[0] == b.ip


def test_the_failing_resolver_takes_hostile_queries(trio: list[Workspace], faults: Faults) -> None:
    """A workspace's root sends the responder junk (truncated, a pointer loop, a response,
    a huge label): it stays up and still fails the next real query; and it serves as
    nobody."""
    a, _, _ = trio
    junk = [
        b"",
        bytes(5),
        bytes.fromhex("1234 0100 0001 0000 0000 0000 c00c"),  # a pointer to itself
        bytes.fromhex("1234 8180") + bytes(8),  # a response
        bytes.fromhex("1234 0100 0001") + bytes(6) + b"\x3f" + b"a" * 600,  # runs off
        bytes(range(256)) * 16,
    ]
    with faults.dns("b", "servfail"):
        agent = faults.active[-1].agents[0][0]
        status = Path(f"/proc/{agent}/status").read_text()
        assert re.search(r"^Uid:\s+65534\s", status, re.M), "the responder is nobody"
        port = faults.active[-1].dns[0][1]
        send = "import socket, sys\ns = socket.socket(2, 2)\n" + "".join(
            f"s.sendto({j!r}, (sys.argv[1], {port}))\n" for j in junk)  # fmt: skip
        a.succeed("doas " + python(send, a.lab.network.gateway))
        time.sleep(0.3)
        assert system.process_start_time(agent) is not None, "it is still there"
        assert ask(a, "b") == "servfail 0"


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
    with pytest.raises(FaultError, match=r"delay '-5ms'.*milliseconds from 0"):
        faults.shape(a, delay="-5ms")
    with pytest.raises(FaultError, match=r"jitter 10: allowed: with a delay"):
        faults.shape(a, jitter=10)
    with pytest.raises(FaultError, match=r"rate 'fast'.*bits per second"):
        faults.shape(a, rate="fast")
    with pytest.raises(FaultError, match=r"mode 'refused': allowed: nxdomain, servfail, timeout"):
        faults.dns("b", "refused")
    with pytest.raises(FaultError, match=r"name 'a..b'.*a DNS name"):
        faults.dns("a..b", "nxdomain")
    with pytest.raises(FaultError, match=r"peer 'a'.*another workspace than ws"):
        faults.shape(a, a, loss=5)
    assert faults.timeline == [], "nothing was made"
    assert reaches(a, b)


def lab_state(ws: Workspace) -> str:
    """What faults leave in the lab: its tables, iptables' FORWARD, links and qdiscs."""
    return "\n".join(ws.lab.run(argv) for argv in (
        ["nft", "list", "tables"], ["iptables-legacy", "-S", "FORWARD"],
        ["ip", "-o", "link", "show"], ["tc", "qdisc", "show"]))  # fmt: skip


def test_what_a_killed_session_left_is_healed_by_gc(trio: list[Workspace]) -> None:
    a, b, _ = trio
    before = lab_state(a)
    left = Faults(a.lab)
    left.partition([a], [b])
    left.shape(b, "c", delay=50, rate="10mbit")
    left.dns("c", "servfail")
    agents = [system.ProcessRef.from_json(ref) for f in left.active for ref in f.agents]
    assert len(agents) == 2
    assert not reaches(a, b)
    assert lab_state(a) != before
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
    assert not any(agent.alive() for agent in agents), "its helpers ended"
    for child in left._children.values():
        child.wait(5)
    assert lab_state(a) == before, "nothing of it is left in the lab"


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
