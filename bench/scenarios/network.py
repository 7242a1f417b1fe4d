"""The uplink against the lab itself, ws.forward against a request made in the lab, a lab
with internet against one without. The world is a namespace of this machine."""

from __future__ import annotations

import os
import time

from harness import (
    Context,
    Row,
    median,
)

from wsfixture.model.config import config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.net.world import WORLD_HTTP, WORLD_NAME
from wsfixture.net.world import world as make_world
from wsfixture.workspaces import Workspace

DOWNLOAD_MIB = 32

TIMED_GET = (
    "python3 -c 'import sys, time, urllib.request as u; b = time.perf_counter(); "
    "n = len(u.urlopen(sys.argv[1], timeout=60).read()); "
    "print(n, time.perf_counter() - b)' "
)


def timed_get(ws: Workspace, url: str) -> float:
    """Seconds a workspace takes to GET ``url`` (all of it), measured inside it."""
    size, seconds = ws.succeed(TIMED_GET + url, timeout=120).split()
    assert int(size) == DOWNLOAD_MIB * 2**20, size
    return float(seconds)


SMALL_GETS = (
    "python3 -c 'import statistics, sys, time, urllib.request as u\n"
    "def one():\n b = time.perf_counter(); u.urlopen(sys.argv[1], timeout=10).read()\n"
    " return time.perf_counter() - b\n"
    "one(); print(statistics.median(one() for _ in range(int(sys.argv[2]))))' "
)


def small_get_latency(ws: Workspace, url: str, count: int) -> float:
    """Median seconds of ``count`` small GETs of ``url``, each on a fresh connection,
    measured inside the workspace."""
    return float(ws.succeed(f"{SMALL_GETS} {url} {count}", timeout=120))


FRESH_NAMES = (
    "python3 -c 'import socket, statistics, sys, time, uuid\n"
    "def one():\n b = time.perf_counter()\n"
    ' socket.getaddrinfo(f"n{uuid.uuid4().hex[:8]}.{sys.argv[1]}", 80)\n'
    " return time.perf_counter() - b\n"
    "print(statistics.median(one() for _ in range(int(sys.argv[2]))))' "
)


def fresh_name_latency(ws: Workspace, domain: str, count: int) -> float:
    """Median seconds to resolve a subdomain of ``domain`` never asked before (no cache
    anywhere holds it), ``count`` times, inside the workspace."""
    return float(ws.succeed(f"{FRESH_NAMES} {domain} {count}", timeout=120))


def http_get_from_host(address: tuple[str, int], path: str = "/") -> float:
    """One small GET from this process over a fresh connection to ``address``."""
    import urllib.request

    begin = time.perf_counter()
    urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10).read()
    return time.perf_counter() - begin


def http_get_in_lab(lab: Lab, ip: str, port: int, path: str = "/") -> float:
    """The same GET, made from this process on a socket inside the lab (no relay)."""
    import http.client

    begin = time.perf_counter()
    connection = http.client.HTTPConnection(ip, port, timeout=10)
    connection.sock = lab.connect(ip, port, 10)
    connection.request("GET", path)
    connection.getresponse().read()
    connection.close()
    return time.perf_counter() - begin


def run(ctx: Context) -> list[Row]:
    """The uplink against the lab itself, ws.forward against a request made in the lab, and
    a lab with internet against one without. The world is a namespace of this machine."""
    state, runs = ctx.state, ctx.runs
    with make_world(state / "www") as world:
        blob = f"blob-{DOWNLOAD_MIB}m"
        (state / "www" / blob).write_bytes(os.urandom(DOWNLOAD_MIB * 2**20))
        config = config_from_dict({
            "network": {"internet": True, "uplinkNamespace": world.netns},
            "defaults": {"stateRoot": str(state)},
            "workspaces": {
                "nc": {"type": "container", "ip": "192.168.83.13"},
                "ns": {"type": "container", "ip": "192.168.83.14"},
                "nh": {"type": "container", "ip": "192.168.83.15", "internet": [WORLD_NAME]},
            },
        })  # fmt: skip
        on, off = [], []
        for _ in range(max(runs, 10)):
            for internet, samples in ((True, on), (False, off)):
                begin = time.perf_counter()
                lab = Lab(config.network, internet=internet).open()
                samples.append(time.perf_counter() - begin)  # creation only: close untimed
                lab.close()
        with (
            Lab(config.network, internet=True) as lab,
            Workspace(config.workspaces["nc"], config, lab) as client,
            Workspace(config.workspaces["ns"], config, lab) as server,
            Workspace(config.workspaces["nh"], config, lab) as held,
        ):
            server.succeed(f"head -c {DOWNLOAD_MIB * 2**20} /dev/urandom > /tmp/{blob}")
            server.succeed(
                "python3 -m http.server --directory /tmp 8000 </dev/null >/dev/null 2>&1 &"
            )
            server.wait_for_port(8000)
            uplink = [timed_get(client, f"http://{WORLD_HTTP}/{blob}") for _ in range(runs)]
            in_lab = [timed_get(client, f"http://{server.ip}:8000/{blob}") for _ in range(runs)]
            (state / "www" / "small").write_text("small\n")
            server.succeed("echo small > /tmp/small")
            uplink_rtt = [
                small_get_latency(client, f"http://{WORLD_HTTP}/small", 20) for _ in range(runs)
            ]
            lab_rtt = [
                small_get_latency(client, f"http://{server.ip}:8000/small", 20) for _ in range(runs)
            ]
            # An allowlisted workspace against an open one, in turns, by name.
            open_get, held_get, open_names, held_names = [], [], [], []
            for _ in range(runs):
                open_get.append(small_get_latency(client, f"http://{WORLD_NAME}/small", 20))
                held_get.append(small_get_latency(held, f"http://{WORLD_NAME}/small", 20))
                open_names.append(fresh_name_latency(client, WORLD_NAME, 20))
                held_names.append(fresh_name_latency(held, WORLD_NAME, 20))
            address = server.forward(8000)
            forwarded = [http_get_from_host(address, "/small") for _ in range(50 * runs)]
            direct = [http_get_in_lab(lab, server.ip, 8000, "/small") for _ in range(50 * runs)]
    mib = float(DOWNLOAD_MIB)
    return [
        Row(
            f"HTTP GET {DOWNLOAD_MIB} MiB via the uplink (MiB/s)",
            mib / median(uplink), mib / median(in_lab), "the same from a workspace in the lab",
            unit="MiB/s",
        ),
        Row(
            "small HTTP GET via the uplink", median(uplink_rtt) * 1000, median(lab_rtt) * 1000,
            "the same from a workspace in the lab", unit="ms",
        ),
        Row(
            "HTTP GET via ws.forward (127.0.0.1)", median(forwarded) * 1000,
            median(direct) * 1000, "the same request made in the lab", unit="ms",
        ),
        Row(
            "small HTTP GET by name through an allowlist", median(held_get) * 1000,
            median(open_get) * 1000, "the same with internet = true", unit="ms",
            target="<= 1.10x", met=median(held_get) <= 1.10 * median(open_get),
        ),
        Row(
            "resolving a new allowed name (its own resolver)", median(held_names) * 1000,
            median(open_names) * 1000, "the same through the lab's resolver", unit="ms",
        ),
        Row(
            "lab creation with internet", median(on), median(off), "lab creation without",
            target="<= +50 ms", met=median(on) - median(off) <= 0.050,
        ),
    ]  # fmt: skip
