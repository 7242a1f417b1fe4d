"""The pure side of faults between workspaces: the arguments a test gives (each refused
with its name and what is allowed), the rules made from them, the nfqueue messages of the
delayer, and the failing resolver's reading of hostile queries (fuzzed)."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsfixture.errors import FaultError
from wsfixture.model import derive
from wsfixture.net import dnswire, nfqueue
from wsfixture.net import faults as rules


@pytest.mark.parametrize(
    ("value", "ms"), [(100, 100.0), (2.5, 2.5), ("100ms", 100.0), ("0.1s", 100.0), (" 7 MS ", 7.0)]
)
def test_durations_in_milliseconds(value: float | str, ms: float) -> None:
    assert rules.parse_duration("delay", value) == ms


@pytest.mark.parametrize("value", [-5, "-5ms", "1h", "", "fast", True, 60_001, "61s"])
def test_a_duration_that_cannot_be_is_refused_by_name(value: object) -> None:
    with pytest.raises(FaultError, match=r"^fault: jitter .*: allowed: milliseconds from 0"):
        rules.parse_duration("jitter", value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "bits", "shown"),
    [(1_000_000, 1_000_000, "1mbit"), ("1mbit", 10**6, "1mbit"), ("512kbit", 512_000, "512kbit"),
     ("2.5Mbit", 2_500_000, "2500kbit"), ("9000", 9000, "9kbit"), (8001, 8001, "8001bit")],
)  # fmt: skip
def test_rates_in_bits_per_second(value: float | str, bits: int, shown: str) -> None:
    assert rules.parse_rate(value) == bits
    assert rules.show_rate(bits) == shown


@pytest.mark.parametrize("value", [0, 100, "1mbps", "1 MB", "fast", -1, "200gbit", False])
def test_a_rate_that_cannot_be_is_refused_by_name(value: object) -> None:
    with pytest.raises(FaultError, match=r"^fault: rate .*: allowed: bits per second"):
        rules.parse_rate(value)  # type: ignore[arg-type]


def test_dns_names_and_modes() -> None:
    assert rules.check_dns("db.lab", "timeout") == b"\x02db\x03lab\x00"
    assert rules.check_dns("db.", "nxdomain") == b"\x02db\x00"
    with pytest.raises(FaultError, match="mode 'refused': allowed: nxdomain, servfail, timeout"):
        rules.check_dns("db", "refused")
    for bad in ("", ".", "a..b", "-a", "a b", "é", "x" * 64, ".".join(["abcdefgh"] * 30)):
        with pytest.raises(FaultError, match=r"^fault: name .*a DNS name"):
            rules.check_dns(bad, "nxdomain")


def _matches(expression: str, payload: bytes) -> bool:
    """Evaluate the ``@th,OFFSET,LENGTH [& MASK] == VALUE`` matches as nftables does."""
    pattern = r"@th,(\d+),(\d+)(?: & 0x([0-9a-f]+))? == 0x([0-9a-f]+)"
    found = re.findall(pattern, expression)
    assert found, expression
    for offset, length, mask, value in found:
        start, size = int(offset) // 8, int(length) // 8
        field = payload[start : start + size]
        if len(field) < size:
            return False
        masked = bytes(
            a & b for a, b in zip(field, bytes.fromhex(mask or "ff" * size), strict=True)
        )
        if masked != bytes.fromhex(value):
            return False
    return True


def _query(name: str) -> bytes:
    """A UDP header and a query for ``name`` (as encoded, case kept)."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return bytes(8) + struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + question + b"\0\1\0\1"


def test_the_question_match_takes_the_name_in_either_case_and_nothing_else() -> None:
    name = "Service-01.some-long-domain.example"  # longer than one 16-byte comparison
    match = rules.question_match(rules.check_dns(name, "timeout"))
    assert match.count("@th") == 3
    for asked in (name, name.lower(), name.upper()):
        assert _matches(match, _query(asked)), asked
    for other in (
        "service-01.some-long-domain.exampl",
        "service-01.some-long-domain.example.x",
        "service-11.some-long-domain.example",
        "x.service-01.some-long-domain.example",
    ):
        assert not _matches(match, _query(other)), other  # fmt: skip
    # Digits and the hyphen are compared whole: '-' is 0x2d, '\r' is 0x0d.
    assert not _matches(match, _query(name.replace("-", "\r")))


def test_the_dns_table_drops_and_redirects_before_the_lab_redirects() -> None:
    table = rules.dns_table(
        "wsfixture_faults_9_1", "wsbr0", "192.168.83.1",
        [rules.DnsFailure(b"\x01a\x00", None), rules.DnsFailure(b"\x01b\x00", 19900)],
    )  # fmt: skip
    assert table.startswith("table ip wsfixture_faults_9_1\ndelete table ip wsfixture_faults_9_1\n")
    assert re.search(r"priority mangle;.*\n.*@th,160,24 & 0xffdfff == 0x014100 drop", table)
    assert re.search(r"priority dstnat - 10;.*\n.*== 0x014200 redirect to :19900", table)
    assert 'iifname "wsbr0" ip daddr 192.168.83.1 udp dport 53' in table


def test_delays_go_to_their_queues_one_peer_before_everyone() -> None:
    chain = derive.fault_queue_chain("wsfixture_faults_4194304_999")
    assert len(chain) <= 28, "iptables' limit"
    delays = [rules.Delay("192.168.83.10", None, 4096),
              rules.Delay("192.168.83.11", "192.168.83.12", 4097)]  # fmt: skip
    text = rules.delay_rules(chain, "192.168.83.0/24", delays)
    lines = text.splitlines()
    assert lines[:2] == ["*filter", f":{chain} - [0:0]"]
    assert lines[2] == (f"-A {chain} -s 192.168.83.11/32 -d 192.168.83.12 -j NFQUEUE "
                        "--queue-num 4097 --queue-bypass")  # fmt: skip
    assert "-d 192.168.83.0/24 -j NFQUEUE --queue-num 4096" in lines[3]
    assert lines[-1] == "COMMIT"


def test_rates_shape_both_ways_and_never_the_gateway() -> None:
    port = derive.veth_host_name("box")
    ifb = derive.ifb_name(port)
    assert len(ifb) <= 15
    rates = [rules.Rate("192.168.83.10", None, 2_000_000),
             rules.Rate("192.168.83.10", "192.168.83.11", 10**6)]  # fmt: skip
    batch = rules.rate_batch(port, "192.168.83.1", "192.168.83.0/24", rates)
    assert f"match ip dst 192.168.83.0/24 action mirred egress redirect dev {ifb}" in batch
    for device, field in ((port, "src"), (ifb, "dst")):
        first = f"dev {device} parent 1: protocol ip prio 1 u32 match ip {field} 192.168.83.1/32"
        assert f"{first} flowid 1:0" in batch, "the gateway's traffic is classified to none"
        assert "classid 1:10 htb rate 1000000bit" in batch  # the peer's first
        assert f"prio 2 u32 match ip {field} 192.168.83.11 flowid 1:10" in batch
        assert f"prio 3 u32 match ip {field} 192.168.83.0/24 flowid 1:11" in batch


def test_nfqueue_messages() -> None:
    requests = nfqueue.bind(4096, 100)
    assert len(requests) == 3
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", requests[0])
    assert (length, kind, flags) == (len(requests[0]), (3 << 8) | 2, 0x5)
    assert requests[0][16:20] == b"\x00\x00\x10\x00", "AF_UNSPEC, version 0, queue 4096"
    verdict = nfqueue.verdict(4096, 77)
    assert verdict.endswith(struct.pack(">II", nfqueue.NF_ACCEPT, 77))

    def packet(packet_id: int) -> bytes:
        attribute = struct.pack("=HH", 11, 1) + struct.pack(">IHB", packet_id, 0x0800, 2) + b"\0"
        body = b"\x02\x00\x10\x00" + attribute
        return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body

    assert nfqueue.packet_ids(packet(5) + packet(6) + packet(7)) == [5, 6, 7]
    assert nfqueue.packet_ids(packet(5)[:-3]) == [], "a cut message is none"
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -16) + bytes(16)
    assert nfqueue.ack_error(error) == 16
    assert nfqueue.ack_error(b"") is None


def test_the_failing_resolver_answers_a_query_with_its_question() -> None:
    query = _query("db.lab")[8:]
    answer = dnswire.failure(query, dnswire.NXDOMAIN)
    assert answer is not None
    ident, flags, questions, answers, _, _ = dnswire.HEADER.unpack_from(answer)
    assert (ident, flags & 0x8000, flags & 0xF, questions, answers) == (7, 0x8000, 3, 1, 0)
    assert flags & 0x0100, "recursion desired, as asked"
    assert answer[12:] == query[12:]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_no_bytes_make_the_failing_resolver_raise_or_answer_junk(junk: bytes) -> None:
    answer = dnswire.failure(junk, dnswire.SERVFAIL)
    if answer is not None:
        end = dnswire.question_end(junk)
        assert end is not None
        assert len(answer) == end <= len(junk)
        assert answer[:2] == junk[:2]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_no_bytes_make_the_packet_reader_raise(junk: bytes) -> None:
    assert all(isinstance(i, int) for i in nfqueue.packet_ids(junk))
