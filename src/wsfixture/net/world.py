"""A stand-in "world" for egress tests, in two network namespaces of its own (``ws_world``,
``pytest --ws-world``, ``wsfixture world``):

- the **host** (``World.netns``), where a lab's uplink runs (``network.uplinkNamespace``),
  standing in for the machine wsfixture runs on: an address of its own on a link
  (``HOST_ADDRESS``, TEST-NET-3), a service bound to every address (``HOST_PORT``, as a
  database or an agent on a CI runner is), and the internet's resolver in its resolv.conf;
- the **internet** beyond it, over a veth pair: HTTP and DNS servers on addresses of its
  own (TEST-NET-2, 198.51.100.0/24, on its loopback device: a kernel may have no dummy
  interfaces) and a cloud's instance metadata service at 169.254.169.254.

What a workspace sends "to the internet" goes through the uplink into the host, and on to
the internet namespace; nothing leaves the machine. The world is in the ledger (its
namespaces, servers and files) from before it exists: ``gc`` takes down what a killed
process left.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wsfixture.host import ledger, settings, system

WORLD_HTTP = "198.51.100.10"
WORLD_DNS = "198.51.100.53"
WORLD_NAME = "world.test"
# A second server and name, for allowlists: one allowed, the other not.
OTHER_HTTP = "198.51.100.20"
OTHER_NAME = "other.test"
SUB_NAME = "api.world.test"  # a subdomain of WORLD_NAME, at WORLD_HTTP
PAGE = "hello from the world\n"
METADATA = "169.254.169.254"  # a cloud's instance metadata, beyond the host
HOST_ADDRESS, INTERNET_ADDRESS = "203.0.113.1", "203.0.113.2"  # the veth pair's ends
HOST_PORT = 8080  # the host's own service, bound to 0.0.0.0
HOST_PAGE = "the host's own service\n"


@dataclass
class World:
    """A world made by ``world``: its namespaces, and the servers it runs."""

    netns: str  # the host: where a lab's uplink runs (``network.uplinkNamespace``)
    internet: str
    processes: list[subprocess.Popen[bytes]]
    http: str = WORLD_HTTP
    dns: str = WORLD_DNS
    name: str = WORLD_NAME
    other_http: str = OTHER_HTTP
    other_name: str = OTHER_NAME
    page: str = PAGE


def _started(argv: list[str], record: ledger.Record) -> subprocess.Popen[bytes]:
    """A server of the world, ours until it ends (it dies with this process)."""
    process = system.popen_lasting(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=system.set_parent_death_signal)  # fmt: skip
    if (ref := system.ProcessRef.of(process.pid)) is not None:
        record.add_process(ref)
    return process


def _serve(netns: str, address: str, port: int, root: Path) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", "--bind", address,
            "--directory", str(root), str(port)]  # fmt: skip


def _wait_listening(netns: str, targets: list[tuple[str, int]]) -> None:
    probe = "import socket, sys\nfor a, p in eval(sys.argv[1]): socket.create_connection((a, p), 1)"
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe, repr(targets)],
                         capture_output=True, check=False).returncode:  # fmt: skip
        if time.monotonic() > deadline:
            raise RuntimeError(f"the world's servers never listened: {targets}")
        time.sleep(0.1)


@contextlib.contextmanager
def world(root: Path | None = None) -> Iterator[World]:
    """Build the world (its pages served from ``root``, else from a directory made for it
    and removed with it), yield it, take it all down."""
    system.require_root()
    tag = uuid.uuid4().hex[:6]
    host, internet = f"wsft-host-{tag}", f"wsft-world-{tag}"
    own = root is None
    root = Path(tempfile.mkdtemp(prefix="wsworld-")) if root is None else root
    record = ledger.Record.create(f"world-{tag}", ledger.BuildInfo("world", str(root)))
    if own:
        record.add_dir(root)  # gc removes it with the rest
    for directory, page in ((root / "www", PAGE), (root / "host", HOST_PAGE)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "index.html").write_text(page)
    etc = settings.NETNS_ETC / host
    processes: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    try:
        for name in (host, internet):
            record.add_netns(name)  # before it exists: gc finds it either way
            system.run(["ip", "netns", "add", name])
            made.append(name)
        system.run(["ip", "-netns", host, "link", "add", "wh0", "type", "veth", "peer", "name",
                    "ww0", "netns", internet])  # fmt: skip
        system.run(["ip", "-netns", host, "-batch", "-"], input=(
            f"link set lo up\nlink set wh0 up\naddr add {HOST_ADDRESS}/24 dev wh0\n"
            f"route add default via {INTERNET_ADDRESS}\n"
        ))  # fmt: skip
        system.run(["ip", "-netns", internet, "-batch", "-"], input=(
            "link set lo up\nlink set ww0 up\n" f"addr add {INTERNET_ADDRESS}/24 dev ww0\n"
            + "".join(f"addr add {a}/32 dev lo\n" for a in (WORLD_HTTP, OTHER_HTTP, WORLD_DNS,
                                                           METADATA))
        ))  # fmt: skip
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(f"nameserver {WORLD_DNS}\n")
        for address in (WORLD_HTTP, OTHER_HTTP, METADATA):
            processes.append(_started(_serve(internet, address, 80, root / "www"), record))
        processes.append(_started(_serve(host, "0.0.0.0", HOST_PORT, root / "host"), record))
        processes.append(_started(
            ["ip", "netns", "exec", internet, system.require_tool("dnsmasq"),
             "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             f"--address=/{WORLD_NAME}/{WORLD_HTTP}", f"--address=/{OTHER_NAME}/{OTHER_HTTP}",
             f"--listen-address={WORLD_DNS}", "--bind-interfaces", "--user=root"], record,
        ))  # fmt: skip
        # From the host: the internet's servers and its own service answer.
        _wait_listening(host, [(WORLD_HTTP, 80), (OTHER_HTTP, 80), (METADATA, 80),
                               (HOST_ADDRESS, HOST_PORT)])  # fmt: skip
        yield World(host, internet, processes)
    finally:
        for process in processes:  # our own children, by PID
            system.end_process(process, 10.0)
        for name in made:
            system.run(["ip", "netns", "delete", name], check=False)
        system.remove_tree(etc)
        if own:
            system.remove_tree(root)
        record.forget()
