"""The ``--ws-*`` options come from one table: the pytest guide's list is made from it, and a
value is the command line's, else the ini's, else the default, checked before any boot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wsfixture.plugin import options
from wsfixture.plugin.options import COMMAND_TIMEOUT, OPTIONS, Options

README = Path(__file__).parents[2] / "docs" / "guides" / "pytest.md"  # the pytest guide


class Given:
    """What pytest.Config answers for options and ini keys (only the calls ``read`` makes)."""

    def __init__(self, flags: dict[str, Any], ini: dict[str, str]) -> None:
        self.flags, self.ini = flags, ini

    def getoption(self, flag: str) -> Any:
        return self.flags.get(flag)

    def getini(self, key: str) -> str:
        return self.ini.get(key, "")


def read(flags: dict[str, Any] | None = None, ini: dict[str, str] | None = None) -> Options:
    return options.read(Given(flags or {}, ini or {}))  # type: ignore[arg-type]


def test_the_guide_s_option_table_is_the_generated_one() -> None:
    table = options.markdown()
    assert table in README.read_text()
    assert len(table.splitlines()) == len(OPTIONS) + 2
    assert "never\\|failed\\|always" in table, "a | in a cell would split it"


def test_defaults_then_the_ini_then_the_command_line() -> None:
    assert read() == Options(
        "",
        (),
        (),
        "never",
        None,
        COMMAND_TIMEOUT,
        "short",
        None,
        None,
        False,
        None,
        False,
        "vm",
        False,
        False,
    )
    ini = {"wsfixture_keep": "failed", "wsfixture_command_timeout": "0",
           "wsfixture_hosts": "a, b", "wsfixture_config": "ws.toml",
           "wsfixture_artifacts": "out/artifacts"}  # fmt: skip
    from_ini = read(ini=ini)
    assert (from_ini.keep, from_ini.command_timeout, from_ini.hosts) == ("failed", None, ("a", "b"))
    assert (from_ini.config, from_ini.artifacts) == ("ws.toml", "out/artifacts")
    flags = {"--ws-keep": "always", "--ws-command-timeout": 5.0, "--ws-verify": True,
             "--ws-prestart": "off"}  # fmt: skip
    both = read(flags, {**ini, "wsfixture_prestart": "all"})
    assert (both.keep, both.command_timeout, both.verify) == ("always", 5.0, True)
    assert (both.prestart, read(ini={"wsfixture_prestart": "all"}).prestart) == ("off", "all")


@pytest.mark.parametrize(
    ("ini", "said"),
    [
        ({"wsfixture_keep": "sometimes"}, "--ws-keep (ini wsfixture_keep) = 'sometimes'; allowed:"),
        ({"wsfixture_report": "long"}, "--ws-report (ini wsfixture_report) = 'long'; allowed:"),
        ({"wsfixture_prestart": "containers"}, "(ini wsfixture_prestart) = 'containers'; allowed:"),
        ({"wsfixture_command_timeout": "soon"}, "= 'soon'; allowed: seconds (0: no limit)"),
        ({"wsfixture_command_timeout": "-1"}, "= '-1'; allowed: seconds"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_option_ini_and_value(
    ini: dict[str, str], said: str
) -> None:
    with pytest.raises(pytest.UsageError) as info:
        read(ini=ini)
    assert said in str(info.value)
