"""The lab bridge's guard: a workspace, root inside, cannot take over a neighbour's address."""

from __future__ import annotations

import shlex

from tests.support.sandbox import as_root
from wsfixture import checks
from wsfixture.model import derive
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

GRATUITOUS_ARP = """
import socket, struct, sys, time
ip = socket.inet_aton(sys.argv[1])
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ip, b"\\xff" * 6, ip)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind(("eth0", 0))
    for _ in range(4):  # beyond the neighbour entry's locktime (1 s)
        s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + arp)
        time.sleep(0.4)
print("sent")
"""


def neighbour_of(sandbox_lab: Lab, ip: str) -> str:
    said = sandbox_lab.run(["ip", "neigh", "show", ip]).split()
    return said[said.index("lladdr") + 1] if "lladdr" in said else ""


def take_over(attacker: Workspace, ip: str) -> None:
    command = (
        f"ip addr add {ip}/24 dev eth0 2>/dev/null; "
        f"python3 -c {shlex.quote(GRATUITOUS_ARP)} {ip}; "
        f"ping -c 1 -W 1 -I {ip} 192.168.83.1 >/dev/null; "
        f"ip addr del {ip}/24 dev eth0"
    )
    _, said = as_root(attacker, command)
    assert "sent" in said.splitlines(), f"the attack did not run: {said}"


def test_a_workspace_cannot_take_over_a_neighbours_address(
    box: Workspace, other: Workspace, sandbox_lab: Lab
) -> None:
    victim = str(other.ip)
    assert other.succeed("hostname").strip() == "other"  # the lab knows its MAC now
    assert neighbour_of(sandbox_lab, victim) == derive.mac("other")
    take_over(box, victim)
    assert neighbour_of(sandbox_lab, victim) == derive.mac("other"), (
        "the bridge believed the attacker"
    )
    assert [o.check.name for o in checks.verify(other) if not o.ok] == []
    # Positive control: with the attacker's port unfiltered, the same frames move the
    # neighbour's address to the attacker; the lab is put right afterwards.
    port = derive.veth_host_name("box")
    sandbox_lab.unguard_port(port)
    try:
        take_over(box, victim)
        moved = neighbour_of(sandbox_lab, victim)
    finally:
        assert box._backend is not None
        box._backend.guard_port(port)
        sandbox_lab.forget_neighbour(victim)
    assert moved == derive.mac("box"), "the control attack did not move the address"
    assert other.succeed("hostname").strip() == "other"
