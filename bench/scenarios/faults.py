"""Faults between workspaces: how long a partition and a heal take to be in force (the nft
transaction is synchronous: once the call returns, packets are dropped or pass), what the
fault table costs a small GET when no fault is active, and how close requested loss,
delay, jitter and rate come to what is measured (a delay's call includes starting its
delayer). Two containers of one lab."""

from __future__ import annotations

import re
import shlex
import statistics
import time

from harness import Context, Row, median

from scenarios.network import small_get_latency
from wsfixture.model.config import config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.faults import Faults

PINGS = 400
DELAY_MS, JITTER_MS, RATE = 100, 30, 4_000_000
SEND = """\
import socket, sys, time
c = socket.create_connection((sys.argv[1], 9600))
start = time.monotonic()
c.sendall(bytes(1_000_000))
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(8_000_000 / (time.monotonic() - start))
"""
SINK = """\
import socket
server = socket.create_server(("", 9600))
while True:  # a readiness probe connects too
    c = server.accept()[0]
    while c.recv(1 << 16):
        pass
    c.close()
"""


def round_trips(ws: Workspace, ip: str, count: int = 20) -> list[float]:
    """Round trips (ms) of ``count`` pings from ``ws``."""
    out = ws.succeed(f"ping -c {count} -i 0.05 -W 2 {ip}", timeout=60)
    return [float(t) for t in re.findall(r"time=([0-9.]+) ms", out)]


def bits_per_second(src: Workspace, dst: Workspace) -> float:
    sink = dst.spawn(f"python3 -c {shlex.quote(SINK)}")
    dst.wait_for_port(9600)
    try:
        return float(src.succeed(f"python3 -c {shlex.quote(SEND)} {dst.ip}", timeout=60))
    finally:
        sink.kill()


def round_trip_loss(ws: Workspace, ip: str) -> float:
    """Percent of ``PINGS`` round trips lost, measured inside ``ws``."""
    out = ws.run(f"ping -q -c {PINGS} -i 0.005 -W 1 {ip}", timeout=120)[1]
    match = re.search(r"([0-9.]+)% packet loss", out)
    assert match, out
    return float(match.group(1))


def run(ctx: Context) -> list[Row]:
    config = config_from_dict({
        "defaults": {"stateRoot": str(ctx.state)},
        "workspaces": {"fa": {"type": "container", "ip": "192.168.83.31"},
                       "fb": {"type": "container", "ip": "192.168.83.32"}},
    })  # fmt: skip
    with (
        Lab(config.network) as lab,
        Workspace(config.workspaces["fa"], config, lab) as a,
        Workspace(config.workspaces["fb"], config, lab) as b,
    ):
        b.succeed("echo small > /tmp/small")
        b.succeed("python3 -m http.server --directory /tmp 8000 </dev/null >/dev/null 2>&1 &")
        b.wait_for_port(8000)
        url = f"http://{b.ip}:8000/small"
        faults = Faults(lab)
        partition, heal, without, with_table = [], [], [], []
        try:
            for run in range(ctx.runs):
                begin = time.perf_counter()
                healing = faults.partition([a], [b])
                partition.append(time.perf_counter() - begin)
                assert a.run(f"ping -c 1 -W 1 {b.ip}")[0] != 0, "the partition holds"
                begin = time.perf_counter()
                healing.heal()
                heal.append(time.perf_counter() - begin)
                # The table stays, empty: what an idle ws_faults costs what passes, against
                # the same GETs with no table, in turns (which goes first alternates).
                for idle in (run % 2 == 0, run % 2 == 1):
                    if idle:
                        faults.partition([a], [b]).heal()  # the table there, empty
                    else:
                        faults.heal()  # the table gone
                    (with_table if idle else without).append(small_get_latency(a, url, 30))
                faults.heal()
            faults.shape(a, b, loss=20)
            lost = round_trip_loss(a, b.ip)
            faults.heal()
            plain = round_trips(a, b.ip)
            delay_calls, added, spread, rates = [], [], [], []
            for _ in range(ctx.runs):
                begin = time.perf_counter()
                healing = faults.shape(a, b, delay=DELAY_MS)
                delay_calls.append(time.perf_counter() - begin)
                added.append(median(round_trips(a, b.ip)) - median(plain))
                healing.heal()
                with faults.shape(a, b, delay=DELAY_MS, jitter=JITTER_MS):
                    spread.append(statistics.pstdev(round_trips(a, b.ip, 40)))
                with faults.shape(a, rate=RATE):
                    rates.append(bits_per_second(a, b))
        finally:
            faults.heal()
    # A round trip crosses the rule twice: loss per packet p gives 1 - (1 - p)^2.
    per_packet = 100 * (1 - (1 - lost / 100) ** 0.5)
    return [
        Row("faults: partition() to in force", median(partition), target="< 0.05 s"),
        Row("faults: heal() to in force", median(heal), target="< 0.05 s"),
        Row(
            "faults: small GET, the fault table idle",
            median(with_table),
            median(without),
            "the same GET, no fault table",
            target="<= 1.05x",
        ),
        Row(
            "faults: loss asked 20 %, measured per packet",
            per_packet,
            20.0,
            f"asked ({PINGS} round trips)",
            unit="%",
        ),
        Row(
            "faults: shape(delay=) to in force (its delayer started)",
            median(delay_calls),
            target="< 0.5 s",
        ),
        Row(
            f"faults: delay asked {DELAY_MS} ms, added to a round trip",
            median(added),
            float(DELAY_MS),
            "asked (median of 20 pings, less the plain median)",
            unit="ms",
        ),
        Row(
            f"faults: jitter asked +-{JITTER_MS} ms (uniform), round trips' std dev",
            median(spread),
            JITTER_MS / 3**0.5,
            "a uniform +-30 ms's std dev",
            unit="ms",
        ),
        Row(
            "faults: rate asked 4 Mbit/s, 1 MB over TCP",
            median(rates) / 1e6,
            RATE / 1e6,
            "asked",
            unit="Mbit/s",
        ),
    ]
