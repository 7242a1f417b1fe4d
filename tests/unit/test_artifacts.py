"""The failure artifacts' pure parts: a directory per test id, and commands.txt from the
session's transcript."""

from __future__ import annotations

import json
from pathlib import Path

from wsfixture.plugin.artifacts import commands_text, dir_name_of


def test_test_ids_become_safe_directory_names() -> None:
    assert dir_name_of("tests/test_a.py::test_b[vm-1]") == "tests_test_a.py_test_b_vm-1"
    assert dir_name_of("t.py::test[a/../b c]") == "t.py_test_a_.._b_c"
    long = "t.py::test_" + "x" * 300
    named = dir_name_of(long)
    assert len(named) == 147
    assert named != dir_name_of(long + "y"), "cut ids stay apart by their digest"


def test_commands_text_is_every_command_of_the_test_whole(tmp_path: Path) -> None:
    transcript = tmp_path / "commands.jsonl"
    lines = [
        {"command": "true", "rc": 0, "seconds": 0.1, "probe": True, "seq": 0,
         "stdout": "", "stderr": ""},
        {"command": "seq 1 3", "rc": 0, "seconds": 0.25, "probe": False, "seq": 1,
         "stdout": "1\n2\n3\n", "stderr": ""},
        {"command": "false", "rc": 1, "seconds": 0.01, "probe": False, "seq": 2,
         "stdout": "", "stderr": "it failed\n"},
    ]  # fmt: skip
    transcript.write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = commands_text(transcript, since=1)
    assert text == (
        "$ seq 1 3\n# exit 0, 0.250 s\n--- stdout ---\n1\n2\n3\n\n"
        "$ false\n# exit 1, 0.010 s\n--- stderr ---\nit failed\n"
    )
    assert "(wsfixture's own)" in commands_text(transcript, since=0)
    assert commands_text(tmp_path / "none", 0) == "(no command was run)\n"
    # until: the commands the report ran itself (the journal's, for journal.txt) are not
    # the test's
    assert commands_text(transcript, since=1, until=2).startswith("$ seq 1 3\n")
    assert "$ false" not in commands_text(transcript, since=1, until=2)
    assert commands_text(transcript, since=1, until=1) == "(no command was run)\n"
