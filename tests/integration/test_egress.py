"""Egress allowlists against the world namespace the tests build (wsfixture.net.world):
an allowed name works; another name is refused at once; another address is reset at once;
DNS to the world's resolver directly is refused; root inside cannot lift the list; one
workspace's list does not open another's; ws.egress() lists the denials; IPv6 has no route
out; the root namespace stays unchanged. Each refusal first shows its positive control: the
same request succeeds from a workspace whose internet is open."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_network import root_namespace_state
from tests.support.configs import make_config
from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.host import ledger, logcap
from wsfixture.model.config import Config, workspace_spec
from wsfixture.net import egress
from wsfixture.net.lab import Lab
from wsfixture.net.world import (
    HOST_ADDRESS,
    HOST_PAGE,
    HOST_PORT,
    METADATA,
    OTHER_HTTP,
    OTHER_NAME,
    PAGE,
    SUB_NAME,
    WORLD_DNS,
    WORLD_NAME,
    World,
)
from wsfixture.net.world import world as make_world
from wsfixture.workspaces import Workspace

# A GET that says how it ended: the page, or the error's class and text.
GET = """python3 -c '
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=8).read().decode(), end="")
except Exception as exc:
    reason = getattr(exc, "reason", exc)
    print("FAILED", type(reason).__name__, reason)
' """
# A DNS query over a connected UDP socket, as resolvers send it: the answer's size, or why not.
DIRECT_DNS = """python3 -c '
import socket, sys
query = bytes.fromhex("abcd01000001000000000000") + b"".join(
    bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + bytes.fromhex("0000010001")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 53))
try:
    s.send(query)
    print("ANSWERED", len(s.recv(512)))
except OSError as exc:
    print("FAILED", type(exc).__name__, exc)
' """


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Lab, World]]:
    require_root_and_tools("systemd-nspawn", "dnsmasq", "slirp4netns", "nft")
    before = root_namespace_state()
    with make_world(tmp_path_factory.mktemp("world")) as world:
        config = make_config(
            tmp_path_factory.mktemp("egress"),
            network={"internet": True, "uplinkNamespace": world.netns},
            open={"type": "container"},
            held={"type": "container", "internet": [WORLD_NAME]},
            other={"type": "container", "internet": [f"{OTHER_HTTP}/32:80"]},
        )
        with Lab(config.network, internet=True) as lab:
            yield config, lab, world
            name = lab.name
        assert leftovers(name) == {}
    assert root_namespace_state() == before, "the root namespace is unchanged"


@pytest.fixture(scope="module")
def trio(setup: tuple[Config, Lab, World]) -> Iterator[tuple[Workspace, Workspace, Workspace]]:
    config, lab, _ = setup
    with (
        Workspace(config.workspaces["open"], config, lab) as open_,
        Workspace(config.workspaces["held"], config, lab) as held,
        Workspace(config.workspaces["other"], config, lab) as other,
    ):
        yield open_, held, other


def get(ws: Workspace, url: str) -> str:
    return ws.succeed(GET + shlex.quote(url), timeout=30)


def test_an_allowed_name_works_and_so_do_its_subdomains(trio: tuple[Workspace, ...]) -> None:
    _, held, _ = trio
    assert get(held, f"http://{WORLD_NAME}/") == PAGE
    assert get(held, f"http://{SUB_NAME}/") == PAGE


def test_another_name_is_refused_at_once(trio: tuple[Workspace, ...]) -> None:
    open_, held, _ = trio
    assert open_.succeed(f"getent hosts {OTHER_NAME}").split()[0] == OTHER_HTTP  # control
    rc, out, err = held.run(f"resolvectl query {OTHER_NAME}", timeout=30)
    assert rc != 0
    assert "refused" in (out + err).lower(), out + err
    assert held.run(f"getent hosts {OTHER_NAME}")[0] == 2, "not found"
    assert held.succeed("getent hosts open").split()[0] == str(open_.ip), "lab names resolve"


def test_another_address_is_reset_at_once(trio: tuple[Workspace, ...]) -> None:
    open_, held, _ = trio
    assert get(open_, f"http://{OTHER_HTTP}/") == PAGE  # control
    said = get(held, f"http://{OTHER_HTTP}/")
    assert said.startswith("FAILED ConnectionRefusedError"), said


def test_dns_to_the_worlds_resolver_is_refused(trio: tuple[Workspace, ...]) -> None:
    open_, held, _ = trio
    assert open_.succeed(DIRECT_DNS + f"{WORLD_DNS} {WORLD_NAME}").startswith("ANSWERED")
    said = held.succeed(DIRECT_DNS + f"{WORLD_DNS} {WORLD_NAME}")
    assert said.startswith("FAILED"), said
    assert "timed out" not in said, "refused at once, not dropped into a timeout"


def test_one_allowlist_does_not_open_another(trio: tuple[Workspace, ...]) -> None:
    _, held, other = trio
    assert get(other, f"http://{OTHER_HTTP}/") == PAGE  # its own list: an address and port
    assert get(other, f"http://{WORLD_NAME}/").startswith("FAILED"), "held's name is held's"
    assert get(held, f"http://{OTHER_HTTP}/").startswith("FAILED"), "other's address is other's"


def test_root_inside_cannot_lift_the_list(trio: tuple[Workspace, ...]) -> None:
    _, held, _ = trio
    # Its own names and its own namespace's firewall (where it has nft) are root's to
    # change: a name it sets itself resolves, and its firewall goes. The list is elsewhere.
    held.succeed(f"doas -n sh -c 'echo {OTHER_HTTP} {OTHER_NAME} >> /etc/hosts'")
    held.succeed("doas -n sh -c 'command -v nft >/dev/null && nft flush ruleset; true'")
    assert held.succeed(f"getent hosts {OTHER_NAME}").split()[0] == OTHER_HTTP
    assert get(held, f"http://{OTHER_NAME}/").startswith("FAILED ConnectionRefusedError")
    assert get(held, f"http://{WORLD_NAME}/") == PAGE


def test_ipv6_has_no_route_out(trio: tuple[Workspace, ...]) -> None:
    _, held, _ = trio
    assert held.succeed("ip -6 route show default").strip() == ""
    said = get(held, "http://[2001:db8::1]/")
    assert said.startswith("FAILED"), said


def test_egress_lists_what_was_allowed_and_denied(trio: tuple[Workspace, ...]) -> None:
    open_, held, _ = trio
    get(held, f"http://{WORLD_NAME}/")
    held.run(f"getent hosts {OTHER_NAME}")
    get(held, f"http://{OTHER_HTTP}/")
    record = held.egress()
    assert record is not None
    assert record.allowlist == (WORLD_NAME,)
    assert WORLD_NAME in record.resolved
    refused_names = [d.name for d in record.denied if d.address is None]
    assert OTHER_NAME in refused_names
    refused = [(d.address, d.protocol, d.port) for d in record.denied if d.address]
    assert (OTHER_HTTP, "tcp", 80) in refused
    assert open_.egress() is None, "an open uplink has no allowlist to report on"


@pytest.mark.vm
def test_a_vm_is_held_the_same_way(setup: tuple[Config, Lab, World]) -> None:
    # The rules are per address on the lab bridge: a VM's TAP is held as a container's veth.
    config, lab, _ = setup
    spec = workspace_spec(
        config, name="vmheld", type="vm", vcpu=1, memory=768, internet=[WORLD_NAME],
        ip=lab.free_ip({str(s.ip) for s in config.workspaces.values()}),
    )  # fmt: skip
    with Workspace(spec, config, lab, discard_at_stop=True) as vm:
        assert get(vm, f"http://{WORLD_NAME}/") == PAGE
        assert get(vm, f"http://{OTHER_HTTP}/").startswith("FAILED ConnectionRefusedError")
        assert vm.run(f"getent hosts {OTHER_NAME}")[0] == 2
        record = vm.egress()
        assert record is not None
        assert (OTHER_HTTP, "tcp", 80) in [(d.address, d.protocol, d.port) for d in record.denied]


@contextlib.contextmanager
def lifted(lab: Lab, element: str, add: bool = False) -> Iterator[None]:
    """A positive control: one guard element deleted (or, ``add``, one let in) for the
    block, and put back as it was."""
    first, then = ("add", "delete") if add else ("delete", "add")
    lab.run(["nft", f"{first} element ip wsfixture {element}"])
    try:
        yield
    finally:
        lab.run(["nft", f"{then} element ip wsfixture {element}"])


def test_the_hosts_own_addresses_and_the_metadata_service_are_refused(
    setup: tuple[Config, Lab, World], trio: tuple[Workspace, ...]
) -> None:
    """The world's host namespace stands in for the machine: a service of its own bound to
    0.0.0.0, and 169.254.169.254 beyond it. Both answer the host itself, and a workspace
    whose internet is open once the guard is lifted; with it, they are refused at once,
    to open and allowlisted workspaces alike."""
    _, lab, world = setup
    open_, held, _ = trio
    host_url, metadata_url = f"http://{HOST_ADDRESS}:{HOST_PORT}/", f"http://{METADATA}/"
    from_host = subprocess.run(
        ["ip", "netns", "exec", world.netns, sys.executable, "-c",
         f"import urllib.request as u; print(u.urlopen('{host_url}', timeout=5).read().decode())"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert from_host.stdout == HOST_PAGE + "\n"
    for ws in (open_, held):
        for url in (host_url, metadata_url):
            said = get(ws, url)
            assert said.startswith("FAILED ConnectionRefusedError"), (ws.name, url, said)
    with lifted(lab, f"host {{ {HOST_ADDRESS} }}"), lifted(lab, "host { 169.254.0.0/16 }"):
        assert get(open_, host_url) == HOST_PAGE, "the attack is real without the guard"
        assert get(open_, metadata_url) == PAGE
    assert get(open_, host_url).startswith("FAILED ConnectionRefusedError"), "put back"
    assert get(open_, f"http://{WORLD_NAME}/") == PAGE, "the internet itself still answers"


def test_a_resolver_answers_only_the_workspace_it_is_for(
    setup: tuple[Config, Lab, World], trio: tuple[Workspace, ...]
) -> None:
    """``held``'s resolver (gateway:20000+N) forwards its allowlist upstream: another
    workspace asking it directly is dropped in the lab namespace."""
    config, lab, _ = setup
    open_, held, _ = trio
    gateway = str(config.network.gateway)
    port = egress.resolver_port(held.ip, config.network.subnet)
    ask = DIRECT_DNS + f"{gateway} {WORLD_NAME} {port}"
    assert held.succeed(ask).startswith("ANSWERED"), "its own resolver answers it"
    said = open_.succeed(ask)
    assert said.startswith("FAILED"), said
    with lifted(lab, f"resolvers {{ {open_.ip} . {port} }}", add=True):
        assert open_.succeed(ask).startswith("ANSWERED"), "the attack is real without the guard"
    assert open_.succeed(ask).startswith("FAILED"), "put back"


MANY_QUERIES = """python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for n in range(int(sys.argv[2])):
    name = f"q{n}.flood.test"
    s.sendto(bytes.fromhex("abcd01000001000000000000") + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + bytes.fromhex("0000010001"),
        (sys.argv[1], 53))
    s.recv(512)
' """


def test_a_workspace_asking_without_end_fills_no_disk(
    setup: tuple[Config, Lab, World], trio: tuple[Workspace, ...]
) -> None:
    """Each refused name is two lines of its resolver's query log, on the host's disk:
    held to its limit (the limit put back after)."""
    config, _, _ = setup
    _, held, _ = trio
    assert held._log_cap is not None
    log = held._runtime_dir / "egress-dns.log"
    before, held._log_cap.limit = held._log_cap.limit, 64 * 1024
    cut = held._log_cap.cut_bytes
    try:
        held.succeed(MANY_QUERIES + f"{config.network.gateway} 3000", timeout=120)
        held._log_cap.stop()  # its last look, then on again as the handle had it
        assert held._log_cap.cut_bytes - cut > 256 * 1024, "the queries (~480 KB) reached it"
        assert log.stat().st_size + logcap.previous(log).stat().st_size <= 96 * 1024
        record = held.egress()
        assert record is not None
        names = [d.name for d in record.denied]
        assert "q2999.flood.test" in names, "the newest are kept"
        assert "q0.flood.test" not in names, "the oldest went"
    finally:
        held._log_cap = logcap.LogCap([held.console_log, log], before).start()


def test_the_world_of_the_cli_and_of_a_killed_process_go(tmp_path: Path) -> None:
    """`wsfixture world` stands until told to go and takes everything with it; a world
    whose process was killed is taken down by gc (its namespaces, /etc/netns, its
    servers), from the ledger record it had before it existed."""
    require_root_and_tools("dnsmasq")
    cli = subprocess.Popen([sys.executable, "-m", "wsfixture.cli", "world"],
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert cli.stdout is not None
    first = cli.stdout.readline()
    host = re.search(r"host namespace is (\S+),", first)
    assert host, first
    assert Path(f"/run/netns/{host.group(1)}").exists()
    assert (
        Path(f"/etc/netns/{host.group(1)}/resolv.conf").read_text() == f"nameserver {WORLD_DNS}\n"
    )
    cli.send_signal(signal.SIGTERM)  # our own child
    assert cli.wait(30) == 0
    assert "world: down" in cli.stdout.read()
    assert not Path(f"/run/netns/{host.group(1)}").exists()
    assert not Path(f"/etc/netns/{host.group(1)}").exists()
    script = ("import sys, time\nfrom pathlib import Path\nfrom wsfixture.net.world import world\n"
              "with world(Path(sys.argv[1])) as made:\n    print(made.netns, made.internet, "
              "flush=True)\n    time.sleep(600)\n")  # fmt: skip
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "w")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert killed.stdout is not None
    names = killed.stdout.readline().split()
    assert len(names) == 2, names
    killed.kill()
    killed.wait(10)
    assert all(Path(f"/run/netns/{name}").exists() for name in names), "left by the kill"
    gc = subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc"], capture_output=True,
                        text=True, timeout=120, check=True)  # fmt: skip
    # This gc reaped the world, or one a test beside this one ran first did (both are gc):
    # either way no record of it is left, and its namespaces went with it.
    assert not [r.key for r in ledger.records() if set(r.netns) & set(names)], gc.stdout
    assert not any(Path(f"/run/netns/{name}").exists() for name in names)
    assert not Path(f"/etc/netns/{names[0]}").exists()
