"""A VM image's list of privileged files (``image.setid``) is read as hostile: it may come
from an imported archive, and its paths are written into a disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsfixture.errors import ImageBuildError
from wsfixture.image import setid

HONEST = {"path": "usr/bin/su", "mode": 0o4755, "caps": None}
PING = {"path": "usr/bin/ping", "mode": 0o755, "caps": "0100000200200000" + "00" * 12}


def saved(tmp_path: Path, entries: object) -> Path:
    (tmp_path / setid.MANIFEST).write_text(json.dumps(entries))
    return tmp_path


def test_the_honest_list_is_read_back_as_written(tmp_path: Path) -> None:
    entries = [setid.Privileged("usr/bin/su", 0o4755), setid.Privileged(**PING)]  # type: ignore[arg-type]
    setid.save(entries, tmp_path)
    assert setid.load(tmp_path) == entries


@pytest.mark.parametrize(
    ("entry", "refused"),
    [
        ({**HONEST, "path": "../../etc/shadow"}, "a plain relative path"),
        ({**HONEST, "path": "/usr/bin/su"}, "a plain relative path"),
        ({**HONEST, "path": "usr/bin/../../x"}, "a plain relative path"),
        # debugfs reads one command a line, words split at blanks: no way to smuggle one in
        ({**HONEST, "path": "usr/bin/su\nrm /etc/passwd"}, "a plain relative path"),
        ({**HONEST, "path": "usr/bin/a b"}, "a plain relative path"),
        ({**HONEST, "mode": 0o104755}, "0 to 0o7777"),
        ({**HONEST, "mode": "4755"}, "0 to 0o7777"),
        ({**HONEST, "mode": True}, "0 to 0o7777"),
        ({**HONEST, "caps": "zz"}, "hex bytes"),
        ({**HONEST, "caps": "00" * 65}, "hex bytes"),
        ({**HONEST, "caps": ""}, "hex bytes"),
        ({**HONEST, "owner": 0}, "allowed: {path, mode, caps}"),
        ("usr/bin/su", "allowed: {path, mode, caps}"),
    ],
    ids=[
        "climbs",
        "absolute",
        "climbs-inside",
        "second-command",
        "blank",
        "file-type-bits",
        "mode-text",
        "mode-bool",
        "caps-not-hex",
        "caps-too-long",
        "caps-empty",
        "unknown-field",
        "not-an-object",
    ],
)
def test_a_hostile_entry_is_refused_by_field(tmp_path: Path, entry: object, refused: str) -> None:
    setid.load(saved(tmp_path, [HONEST]))  # control: the same list, honest, is read
    with pytest.raises(ImageBuildError, match=refused):
        setid.load(saved(tmp_path, [HONEST, entry]))


def test_a_list_that_is_not_one_or_is_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="unreadable"):
        setid.load(tmp_path)
    with pytest.raises(ImageBuildError, match="not a list"):
        setid.load(saved(tmp_path, {"path": "usr/bin/su"}))


def test_the_debugfs_commands_set_the_whole_mode_and_the_capability(tmp_path: Path) -> None:
    entries = [setid.Privileged("usr/bin/su", 0o4755), setid.Privileged(**PING)]  # type: ignore[arg-type]
    script, values = setid.debugfs_script(entries, tmp_path)
    assert script == (
        "sif /usr/bin/su mode 0104755\n"
        "sif /usr/bin/ping mode 0100755\n"
        f"ea_set -f {tmp_path}/caps-1 /usr/bin/ping security.capability\n"
    )
    assert values == {tmp_path / "caps-1": bytes.fromhex(PING["caps"])}  # type: ignore[arg-type]
