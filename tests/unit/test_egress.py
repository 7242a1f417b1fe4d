"""Egress allowlists without a lab: what an entry means, the rules and the resolver a
workspace gets, and how its record is read back."""

from __future__ import annotations

import ipaddress
import time

import pytest

from wsfixture.model import allowlist
from wsfixture.model.allowlist import Destination
from wsfixture.net import egress, uplink


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
        ("0.0.0.0/0", "covers every private range at once"),
        ("0.0.0.0/1:443", "covers every private range at once"),
        ("198.51.100.0/24:53", "names port 53, DNS's"),
        ("dns.example:853", "names port 853"),
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
    # Its resolver's port answers it alone (the lab namespace's input filter).
    assert "add element ip wsfixture resolvers { 192.168.83.10 . 20010 }" in batch
    undo = egress.unrestrict("192.168.83.10", "192.168.83.1", 20010, allowed)
    assert "delete chain ip wsfixture e_192_168_83_10" in undo
    assert "delete element ip wsfixture resolvers { 192.168.83.10 . 20010 }" in undo
    assert undo.count("delete set") == 2


def test_the_lab_refuses_the_host_and_lets_each_resolver_answer_its_workspace_only() -> None:
    rules = uplink.nat_rules(
        ipaddress.IPv4Network("192.168.83.0/24"), "wsbr0", "192.168.83.1", ["203.0.113.1"]
    )
    assert "elements = { 169.254.0.0/16, 203.0.113.1 }" in rules
    forward = rules[rules.index("chain forward") :]
    host_rule = forward.index("ip daddr @host goto deny")
    assert host_rule < forward.index("vmap @egress"), "before any allowlist can accept it"
    assert forward.index("ip saddr @offline drop") < host_rule
    inputs = rules[rules.index("chain input") : rules.index("chain prerouting")]
    assert inputs.index("@resolvers accept") < inputs.index(
        f"th dport >= {egress.RESOLVER_PORT_BASE}"
    )
    assert "ct state established,related accept" in inputs, "our own connections' replies"
    # Every protocol is recorded: ICMP and the rest with port 0.
    assert "meta l4proto != { tcp, udp } update @denied" in rules
    offline = uplink.offline_change("192.168.83.10", "192.168.83.1", offline=True)
    assert "add element ip wsfixture offline { 192.168.83.10 }" in offline
    port = egress.OFFLINE_RESOLVER_PORT
    assert f"add element ip wsfixture dns_to {{ 192.168.83.10 : 192.168.83.1 . {port} }}" in offline
    assert "delete element" in uplink.offline_change("192.168.83.10", "192.168.83.1", offline=False)


def test_read_log_records_each_refused_name_once() -> None:
    lines = []
    for n in (*range(1000), *range(1000)):  # every name asked twice
        lines.append(f"Dec  3 10:00:00 dnsmasq[7]: query[A] n{n}.example from 192.168.83.10")
        lines.append(f"Dec  3 10:00:00 dnsmasq[7]: config n{n}.example is REFUSED")
    _, refused = egress.read_log("\n".join(lines), time.time())
    assert [d.name for d in refused] == [f"n{n}.example" for n in range(1000)]
