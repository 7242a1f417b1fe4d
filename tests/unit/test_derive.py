import re

from hypothesis import given
from hypothesis import strategies as st

from wsfixture.model import derive

names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", fullmatch=True)


def test_known_vector() -> None:
    # Pinned so a change to the algorithm is a deliberate one (nix/derive.nix must follow).
    assert derive.mac("myproject") == "02:77:f5:d7:97:e7"
    assert derive.vsock_cid("myproject") == 3954002492
    assert derive.tap_name("myproject") == "wst-77f5d797"
    assert derive.veth_host_name("myproject") == "wsc-77f5d797"


@given(names)
def test_macs_are_local_unicast_and_stable(name: str) -> None:
    for make in (derive.mac, derive.bridge_mac):
        mac = make(name)
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        first = int(mac[:2], 16)
        assert first & 0b10, "locally administered"
        assert not first & 0b01, "unicast"
        assert make(name) == mac
    assert derive.bridge_mac(name) != derive.mac(name), "a bridge never takes a workspace's"


@given(names)
def test_cid_in_range(name: str) -> None:
    cid = derive.vsock_cid(name)
    assert 3 <= cid < 2**32 - 1


@given(names)
def test_interface_names_fit_linux(name: str) -> None:
    for ifname in derive.interface_names(name).values():
        assert len(ifname.encode()) <= derive.IFNAME_MAX
        assert re.fullmatch(r"[a-z0-9-]+", ifname)


def test_distinct_names_distinct_identities() -> None:
    names_ = [f"ws{i}" for i in range(2000)]
    assert len({derive.mac(n) for n in names_}) == len(names_)
    assert len({derive.vsock_cid(n) for n in names_}) == len(names_)
    assert len({derive.tap_name(n) for n in names_}) == len(names_)


def test_hosts_and_aliases() -> None:
    assert derive.hosts_line("alpha", "192.168.83.10") == "192.168.83.10 alpha workspace-alpha"
    assert derive.alias_names("alpha") == [
        "workspace_alpha",
        "workspace_alpha_start",
        "workspace_alpha_stop",
        "workspace_alpha_restart",
        "workspace_alpha_status",
    ]
