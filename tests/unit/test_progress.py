"""The progress of long steps: quiet when quick, plain lines in a log, one line on a TTY."""

from __future__ import annotations

import time

import pytest

from wsfixture.progress import Ticker


def test_a_quick_step_says_nothing_in_a_log() -> None:
    said: list[str] = []
    with Ticker(said.append, tty=False, quiet_for=0.5).step("starting web") as say:
        say("restoring")
    assert said == []


def test_a_long_step_says_its_detail_as_it_changes_then_its_end() -> None:
    said: list[str] = []
    with Ticker(said.append, tty=False, quiet_for=0.2, every=60).step("starting web") as say:
        say("building layer curl")
        time.sleep(0.6)
        say("restoring from template t1")
        time.sleep(0.4)
    assert said[0].startswith("starting web: building layer curl (")
    assert said[1].startswith("starting web: restoring from template t1 (")
    assert said[-1].startswith("starting web: done in ")
    assert len(said) == 3, said


def test_a_failed_step_says_so() -> None:
    said: list[str] = []

    def fail() -> None:
        with Ticker(said.append, tty=False, quiet_for=0.1).step("apply") as say:
            say("restarting web")
            time.sleep(0.3)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert said[-1].startswith("apply: failed in ")


def test_on_a_terminal_one_line_is_redrawn_then_cleared() -> None:
    said: list[str] = []
    with Ticker(said.append, tty=True, quiet_for=0.2).step("starting db") as say:
        say("waiting for sshd")
        time.sleep(0.6)
    redraws = [s for s in said if s.startswith("\r\x1b[K") and s != "\r\x1b[K"]
    assert len(redraws) >= 2
    assert all("starting db [" in s for s in redraws)
    assert "waiting for sshd" in redraws[-1]
    assert not any("\n" in s for s in redraws), "redrawn in place"
    assert said[-2:] == ["\r\x1b[K", said[-1]]
    assert said[-1].startswith("starting db: done in ")


def test_a_chatty_step_is_condensed_in_a_log() -> None:
    said: list[str] = []
    with Ticker(said.append, tty=False, quiet_for=0.3, every=60).step("building layer") as say:
        for n in range(40):  # apt says dozens of lines a second
            say(f"Unpacking package{n}")
            time.sleep(0.02)
        time.sleep(0.4)
    assert 2 <= len(said) <= 5, said
    assert said[-1].startswith("building layer: done in ")
