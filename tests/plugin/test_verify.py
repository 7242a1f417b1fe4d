"""--ws-verify: one item per built-in check (plugin.verify)."""

from __future__ import annotations

import pytest

from wsfixture import checks


def test_verify_collects_one_item_per_check(real: pytest.Pytester) -> None:
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "--ws-verify", "-v")
    result.assert_outcomes(passed=len(checks.CHECKS))
    result.stdout.fnmatch_lines(["*verify?alpha:networking:dns? PASSED*"])
    result.stdout.fnmatch_lines(["*verify?alpha:networking:resolv-conf? PASSED*"])


def test_verify_items_name_the_config_given_by_the_ini(real: pytest.Pytester) -> None:
    real.makeini("[pytest]\nwsfixture_config = workspaces.toml\n")
    real.makeconftest(
        """
        def pytest_collection_finish(session):
            print("LOCATIONS", sorted({item.location[0] for item in session.items}))
        """
    )
    result = real.runpytest_subprocess("--ws-verify", "-k", "networking", "-s")
    result.assert_outcomes(passed=4)
    # reportinfo's path: the config the ini gave, not "." as when only --ws-config was read.
    result.stdout.fnmatch_lines(["LOCATIONS ['workspaces.toml']"])
