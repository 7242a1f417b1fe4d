from pathlib import Path

import pytest

from wsfixture.cli.hostsfile import BEGIN, END, HostsFileError, apply_block, write_block

FOREIGN = "127.0.0.1\tlocalhost\n# a comment   with  spaces\n::1 ip6-localhost\n10.0.0.1 router"


def test_block_added_and_foreign_lines_kept_byte_for_byte() -> None:
    out = apply_block(FOREIGN, ["192.168.83.10 a workspace-a"])
    assert out.startswith(FOREIGN + "\n")
    assert out.endswith(f"{BEGIN}\n192.168.83.10 a workspace-a\n{END}\n")


def test_block_replaced_in_place_and_idempotent() -> None:
    first = apply_block(FOREIGN, ["192.168.83.10 a workspace-a"])
    with_tail = first + "# after\n"
    second = apply_block(with_tail, ["192.168.83.11 b workspace-b"])
    assert "workspace-a" not in second
    assert second.endswith(f"{BEGIN}\n192.168.83.11 b workspace-b\n{END}\n# after\n")
    assert apply_block(second, ["192.168.83.11 b workspace-b"]) == second


def test_crlf_files_keep_crlf() -> None:
    out = apply_block("127.0.0.1 localhost\r\n", ["x"])
    assert out == f"127.0.0.1 localhost\r\n{BEGIN}\r\nx\r\n{END}\r\n"


@pytest.mark.parametrize(
    "text",
    [f"{BEGIN}\nx\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", "a\0b"],
)
def test_broken_files_are_refused(text: str) -> None:
    with pytest.raises(HostsFileError):
        apply_block(text, ["x"])


def test_write_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(FOREIGN)
    hosts.chmod(0o640)
    assert write_block(hosts, ["1.2.3.4 a"]) is True
    assert write_block(hosts, ["1.2.3.4 a"]) is False
    assert hosts.stat().st_mode & 0o777 == 0o640
    assert hosts.read_text().startswith(FOREIGN)
    assert list(tmp_path.iterdir()) == [hosts], "no temp file left"


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"\xff\xfe")
    with pytest.raises(HostsFileError):
        write_block(hosts, ["x"])
    assert hosts.read_bytes() == b"\xff\xfe"
