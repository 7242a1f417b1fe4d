"""Egress allowlists without a lab: what an entry means, the rules and the resolver a
workspace gets, and how its record is read back."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from wsfixture.model import allowlist
from wsfixture.model.allowlist import Destination
from wsfixture.net import egress


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("github.com", Destination(domain="github.com")),
        ("*.Example.com", Destination(domain="example.com", subdomains_only=True)),
        ("pypi.org:443", Destination(domain="pypi.org", port=443)),
        ("198.51.100.0/24", Destination(network=ipaddress.IPv4Network("198.51.100.0/24"))),
        ("198.51.100.7:22", Destination(network=ipaddress.IPv4Network("198.51.100.7/32"), port=22)),
    ],
)
def test_entries_mean_what_they_say(text: str, meant: Destination) -> None:
    assert allowlist.parse(text) == meant
    assert allowlist.parse(str(meant)) == meant, "an entry's text parses back to it"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not a name", "neither a domain nor an IPv4 network"),
        ("example", "neither a domain nor an IPv4 network"),
        ("1.2.3.4/8", "host bits set"),
        ("300.1.1.1", "neither"),
        ("pypi.org:0", "port out of range"),
        ("pypi.org:70000", "port out of range"),
        ("2001:db8::1", "neither"),
    ],
)
def test_bad_entries_say_why(text: str, problem: str) -> None:
    found = allowlist.parse(text)
    assert isinstance(found, str)
    assert problem in found


def test_a_workspace_chain_refuses_dns_then_private_ranges_unless_listed() -> None:
    allowed = allowlist.destinations(("world.test", "10.9.0.0/16:443", "*.example.com"))
    batch = egress.restrict("192.168.83.10", "192.168.83.1", 20010, allowed)
    rules = [line for line in batch.splitlines() if line.startswith("add rule")]
    assert "th dport { 53, 853 } goto deny" in rules[0], "DNS elsewhere: refused first"
    assert "ip daddr 10.9.0.0/16 meta l4proto { tcp, udp } th dport 443 accept" in rules[1]
    assert "10.0.0.0/8" in rules[2], "a listed private network comes before the refusal"
    assert rules[2].endswith("goto deny")
    assert rules[3].endswith("ip daddr @n_192_168_83_10_0 accept")
    assert rules[4].endswith("ip daddr @n_192_168_83_10_2 accept")
    assert rules[-1].endswith("goto deny"), "everything else: refused"
    assert "add element ip wsfixture dns_to { 192.168.83.10 : 192.168.83.1 . 20010 }" in batch
    undo = egress.unrestrict("192.168.83.10", allowed)
    assert "delete chain ip wsfixture e_192_168_83_10" in undo
    assert undo.count("delete set") == 2


def test_the_resolver_forwards_only_listed_domains_into_their_sets() -> None:
    allowed = allowlist.destinations(("world.test", "*.example.com", "198.51.100.0/24"))
    argv = egress.resolver_argv(
        "dnsmasq", "192.168.83.10", "192.168.83.1", 20010, allowed, "10.0.2.3",
        Path("/etc/netns/l"), Path("/tmp/log"),
    )  # fmt: skip
    assert "--no-resolv" in argv
    servers = [a for a in argv if a.startswith("--server=")]
    assert servers == ["--server=/world.test/10.0.2.3", "--server=/*.example.com/10.0.2.3"]
    assert "--nftset=/world.test/4#ip#wsfixture#n_192_168_83_10_0" in argv
    assert egress.resolver_port("192.168.83.10", ipaddress.IPv4Network("192.168.83.0/24")) == (
        egress.RESOLVER_PORT_BASE + 10
    )


LOG = """\
Nov 29 23:51:06 dnsmasq[1]: query[A] world.test from 192.168.83.10
Nov 29 23:51:06 dnsmasq[1]: forwarded world.test to 10.0.2.3
Nov 29 23:51:06 dnsmasq[1]: nftset add 4 ip wsfixture n_0 198.51.100.10 world.test
Nov 29 23:51:06 dnsmasq[1]: reply world.test is 198.51.100.10
Nov 29 23:51:07 dnsmasq[1]: query[A] other.test from 192.168.83.10
Nov 29 23:51:07 dnsmasq[1]: config error is REFUSED (EDE: not ready)
Nov 29 23:51:07 dnsmasq[1]: query[AAAA] other.test from 192.168.83.10
Nov 29 23:51:07 dnsmasq[1]: config error is REFUSED (EDE: not ready)
"""


def test_the_record_reads_names_and_denials() -> None:
    now = time.mktime(
        time.strptime(f"{time.localtime().tm_year} Nov 29 23:55:00", "%Y %b %d %H:%M:%S")
    )
    resolved, refused = egress.read_log(LOG, now)
    assert resolved == {"world.test": ["198.51.100.10"]}
    assert [d.name for d in refused] == ["other.test"], "each refused name once"
    assert str(refused[0]) == "name other.test: refused (not in the allowlist)"
    listed = {"nftables": [{"set": {"elem": [
        {"elem": {"val": {"concat": ["192.168.83.10", "198.51.100.10", "tcp", 8080]},
                  "timeout": 3600, "expires": 3590}},
        {"elem": {"val": {"concat": ["192.168.83.11", "198.51.100.20", "tcp", 80]},
                  "timeout": 3600, "expires": 3500}},
    ]}}]}  # fmt: skip
    denied = egress.read_denied(json.dumps(listed), "192.168.83.10", now, resolved)
    assert len(denied) == 1, "another workspace's denials are its own"
    assert str(denied[0]) == "198.51.100.10 (world.test) tcp/8080: refused"
    assert denied[0].when == pytest.approx(now - 10)
