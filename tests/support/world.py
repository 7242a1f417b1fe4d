"""A "world" for egress tests: a network namespace the test builds, with an HTTP server and
a DNS server on addresses of its own (TEST-NET-2, 198.51.100.0/24, on its loopback device:
this kernel has no dummy interfaces). A lab's uplink runs inside it (network.uplinkNamespace),
so what a workspace sends "to the internet" never leaves the machine.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wsfixture.host import system

WORLD_HTTP = "198.51.100.10"
WORLD_DNS = "198.51.100.53"
WORLD_NAME = "world.test"
# A second server and name, for allowlists: one allowed, the other not.
OTHER_HTTP = "198.51.100.20"
OTHER_NAME = "other.test"
SUB_NAME = "api.world.test"  # a subdomain of WORLD_NAME, at WORLD_HTTP
PAGE = "hello from the world\n"


@dataclass
class World:
    netns: str
    processes: list[subprocess.Popen[bytes]]


@contextlib.contextmanager
def world(root: Path) -> Iterator[World]:
    """Build the world (its page served from ``root``), yield it, take it all down."""
    name = f"wsft-world-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(PAGE)
    etc = Path("/etc/netns") / name
    system.run(["ip", "netns", "add", name])
    processes: list[subprocess.Popen[bytes]] = []
    try:
        batch = "link set lo up\n" + "".join(
            f"addr add {address}/32 dev lo\n" for address in (WORLD_HTTP, OTHER_HTTP, WORLD_DNS)
        )
        system.run(["ip", "-netns", name, "-batch", "-"], input=batch)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(f"nameserver {WORLD_DNS}\n")
        inside = ["ip", "netns", "exec", name]
        for address in (WORLD_HTTP, OTHER_HTTP):
            processes.append(subprocess.Popen(
                [*inside, sys.executable, "-m", "http.server", "--bind", address,
                 "--directory", str(root), "80"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        processes.append(subprocess.Popen(
            [*inside, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", f"--address=/{WORLD_NAME}/{WORLD_HTTP}",
             f"--address=/{OTHER_NAME}/{OTHER_HTTP}",
             f"--listen-address={WORLD_DNS}", "--bind-interfaces", "--user=root"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        deadline = time.monotonic() + 10
        while subprocess.run(
            [*inside, sys.executable, "-c",
             "import socket\n"
             f"for a in ('{WORLD_HTTP}', '{OTHER_HTTP}'): socket.create_connection((a, 80), 1)"],
            capture_output=True, check=False,
        ).returncode:  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("the world's HTTP server never listened")
            time.sleep(0.1)
        yield World(name, processes)
    finally:
        for process in processes:  # our own children, by PID
            process.terminate()
            process.wait(10)
        system.run(["ip", "netns", "delete", name], check=False)
        system.remove_tree(etc)
