"""Logs a guest writes, held to a size: the cut keeps the last half beside the log, the
writer (O_APPEND, as every writer of these logs holds them) goes on at the new end, and
a tail reads across both."""

from __future__ import annotations

import json
import os
from pathlib import Path

from wsfixture.host import logcap
from wsfixture.net import egress


def test_a_log_over_its_limit_keeps_its_last_half_and_the_writer_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    writer = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(writer, b"a" * 6000 + b"b" * 4000)
        assert logcap.trim(log, 20_000) == 0, "under the limit: left alone"
        assert logcap.trim(log, 8000) == 10_000
        assert logcap.previous(log).read_bytes() == b"b" * 4000
        assert log.stat().st_size == 0
        os.write(writer, b"after\n")
        assert log.read_bytes() == b"after\n", "written at the new end, no hole before it"
    finally:
        os.close(writer)
    assert logcap.read_tail(log, 10) == b"bbbbafter\n"
    assert logcap.read_tail(log, 1 << 20) == b"b" * 4000 + b"after\n"
    assert logcap.read_tail(tmp_path / "none", 10) == b""


def test_a_cap_holds_every_log_it_watches(tmp_path: Path) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    cap = logcap.LogCap(logs[:1], limit=1000).start()
    cap.watch(logs[1])
    for log in logs:
        log.write_bytes(b"x" * 5000)
    cap.stop()  # its last look cuts what is over
    assert cap.cut_bytes == 10_000
    assert all(log.stat().st_size == 0 for log in logs)
    assert all(logcap.previous(log).stat().st_size == 500 for log in logs)


def test_a_full_record_of_refusals_says_so() -> None:
    elements = [{"elem": {"val": {"concat": ["192.168.83.10", f"10.0.{n // 256}.{n % 256}",
                                             "icmp", 0]}, "expires": 10, "timeout": 3600}}
                for n in range(egress.DENIED_SIZE)]  # fmt: skip
    listed = json.dumps({"nftables": [{"set": {"elem": elements}}]})
    denied, full = egress.read_denied(listed, "192.168.83.10", 1e9, {})
    assert full
    assert str(denied[0]) == "10.0.0.0 icmp: refused", "a protocol without ports"
    record = egress.Record(("x.test",), {}, denied, full)
    assert record.note is not None
    assert "full (65536 entries" in record.note
    assert not egress.read_denied(json.dumps({"nftables": []}), "192.168.83.10", 1e9, {})[1]
