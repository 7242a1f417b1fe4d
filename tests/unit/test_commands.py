"""``succeed``, ``fail`` and the waits, written on one ``run``: checked against a fake that
answers from a script, as the NixOS test driver's Machine could be."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping

import pytest

from wsfixture.errors import CommandError, ConfigError, WaitError, WaitTimeout
from wsfixture.workspaces.commands import (
    COMMAND_TIMEOUT_DEFAULT,
    Commands,
    Timeout,
    shell_line,
)

Answer = tuple[int, str, str]


class Scripted(Commands):
    """A workspace whose commands answer from ``answer``; it keeps what it was asked."""

    def __init__(self, answer: Callable[[str, int], Answer], ports: tuple[int, ...] = ()) -> None:
        self.answer = answer
        self.ports = ports
        self.asked: list[tuple[str, Timeout, bool]] = []

    @property
    def name(self) -> str:
        return "fake"

    def run(
        self,
        command: str,
        timeout: Timeout = COMMAND_TIMEOUT_DEFAULT,
        max_output: int | None = None,
        probe: bool = False,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> tuple[int, str, str]:
        command = shell_line(command, env, cwd, user)
        self.asked.append((command, timeout, probe))
        return self.answer(command, sum(1 for c, _, _ in self.asked if c == command))

    def port_open(self, port: int) -> bool:
        return port in self.ports


def test_succeed_returns_stdout_and_fail_returns_stderr() -> None:
    ws = Scripted(lambda cmd, n: (0, "out\n", "") if cmd == "true" else (3, "", "err\n"))
    assert ws.succeed("true") == "out\n"
    assert ws.fail("false") == "err\n"
    assert ws.asked[0] == ("true", COMMAND_TIMEOUT_DEFAULT, False)
    with pytest.raises(CommandError) as failed:
        ws.succeed("false", timeout=5)
    assert (failed.value.rc, failed.value.stderr) == (3, "err\n")
    assert ws.asked[-1][1] == 5
    with pytest.raises(CommandError, match="expected to fail"):
        ws.fail("true")


def test_wait_until_succeeds_retries_and_says_the_last_output() -> None:
    ws = Scripted(lambda cmd, n: (0, "third\n", "") if n >= 3 else (1, "", f"try {n}"))
    assert ws.wait_until_succeeds("probe", timeout=5) == "third\n"
    assert len(ws.asked) == 3
    never = Scripted(lambda cmd, n: (1, "", f"try {n}"))
    with pytest.raises(WaitTimeout, match="exit status 1: try"):
        never.wait_until_succeeds("probe", timeout=0.3)


def test_wait_for_unit_polls_as_a_probe_and_fails_at_once_on_a_failed_unit() -> None:
    states = {1: "activating", 2: "active"}
    ws = Scripted(lambda cmd, n: (0, states.get(n, "active") + "\n", ""))
    ws.wait_for_unit("sshd.service", timeout=5)
    assert all(probe for _, _, probe in ws.asked), "wsfixture's own polling is marked"
    failed = Scripted(lambda cmd, n: (3, "failed\n", "") if "is-active" in cmd else (3, "why", ""))
    with pytest.raises(WaitError, match="it failed:\nwhy"):
        failed.wait_for_unit("broken.service", timeout=5)
    assert len(failed.asked) == 2, "no retry after the unit failed"


def test_wait_for_port_times_out_with_the_port_closed() -> None:
    Scripted(lambda cmd, n: (0, "", ""), ports=(22,)).wait_for_port(22, timeout=1)
    with pytest.raises(WaitTimeout, match="port 80 to accept connections"):
        Scripted(lambda cmd, n: (0, "", "")).wait_for_port(80, timeout=0.2)


def test_journal_is_the_one_journalctl_line() -> None:
    ws = Scripted(lambda cmd, n: (0, "log\n", ""))
    assert ws.journal(7) == "log\n"
    assert ws.asked[0][0] == "doas -n journalctl -b --no-pager -n 7"


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b"[1, 2]\n", "one JSON object, not list"),
        (b'"rollback"\n', "one JSON object, not str"),
        (b"{not json\n", "one JSON object ("),
        (b'{"verb": "rollback", "tag": ["a"]}\n', "tag: text"),
        (b"[" * 100_000, "at most 65536 bytes"),
    ],
)
def test_a_control_request_that_is_not_one_is_answered_as_such(line: bytes, said: str) -> None:
    from wsfixture.cli import control

    problem = control.parse_request(line)
    assert isinstance(problem, str)
    assert said in problem


def test_a_control_request_that_is_one_passes() -> None:
    from wsfixture.cli import control

    assert control.parse_request(b'{"verb": "rollback", "tag": "t1"}\n') == {
        "verb": "rollback",
        "tag": "t1",
    }
    assert control.parse_request(b"") == {}


def test_a_guests_console_reaches_the_terminal_without_its_escapes() -> None:
    from wsfixture.cli.commands.access import for_terminal

    hostile = (
        "\x1b]0;owned title\x07boot \x1b[1;32mOK\x1b[0m\r\n"
        "\x1b]52;c;ZWNobyBwd25lZA==\x07copied \x1bP+q\x1b\\dcs \x1b[2J\x1b[Hcleared \x9b31m\tend\n"
    )
    assert for_terminal(hostile, colours=True) == (
        "boot \x1b[1;32mOK\x1b[0m\ncopied dcs cleared 31m\tend\n"
    )
    assert for_terminal(hostile, colours=False) == "boot OK\ncopied dcs cleared 31m\tend\n"
    assert for_terminal("plain text\n", colours=True) == "plain text\n"  # control


def test_hosts_in_the_root_namespace_only_for_addresses_routed_there() -> None:
    from wsfixture.cli.commands.config import off_the_machine

    via = '[{"dst":"192.168.83.10","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.2"}]'
    assert off_the_machine("192.168.83.10", via) == (
        "the root namespace reaches 192.168.83.10 only through 192.0.2.1 on eth0"
    )
    assert (
        off_the_machine("192.168.83.10", "") == "the root namespace has no route to 192.168.83.10"
    )
    on_link = '[{"dst":"192.168.83.10","dev":"wsbr0","prefsrc":"192.168.83.1"}]'
    assert off_the_machine("192.168.83.10", on_link) is None  # a lab kept in the root namespace


def test_env_cwd_and_user_wrap_the_line_and_reach_succeed_and_fail() -> None:
    fake = Scripted(lambda command, n: (0, "", ""))
    fake.succeed("make test", env={"CI": "1", "MSG": "it's"}, cwd="/src dir")
    assert (
        fake.asked[-1][0]
        == "export CI=1; export MSG='it'\"'\"'s'; cd -- '/src dir' || exit 1; make test"
    )
    assert shlex.split(fake.asked[-1][0].split("; ")[1]) == ["export", "MSG=it's"]
    root = shell_line("id -u", user="root")
    assert root == "doas -n -- /bin/sh -c 'id -u'"
    other = shell_line("id -un", env={"A": "b"}, user="www-data")
    assert other == "doas -n -- /usr/sbin/runuser -u www-data -- /bin/sh -c 'export A=b; id -un'"
    assert shell_line("true") == "true", "nothing asked, nothing added"


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"env": {"1A": "x"}}, "env"), ({"env": {"A B": "x"}}, "env"), ({"user": "root; rm"}, "user"),
     ({"user": ""}, "user"), ({"cwd": ""}, "cwd")],
)  # fmt: skip
def test_a_name_no_shell_takes_is_refused_naming_it(
    arguments: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=rf"- {named}: is not"):
        shell_line("true", **arguments)  # type: ignore[arg-type]
