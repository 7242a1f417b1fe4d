"""The booting fixtures several test directories use, defined once: a module's lab, and every
workspace of the module's ``config`` running in it. A conftest imports them by name."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


@pytest.fixture(scope="module")
def lab(config: Config) -> Iterator[Lab]:
    with Lab(config.network) as made:
        yield made


@pytest.fixture(scope="module")
def running(config: Config, lab: Lab) -> Iterator[dict[str, Workspace]]:
    """Every workspace of the module's config, booted in its lab, by name; all stopped
    after the module (as the pytest plugin stops a test's: ``discard_at_stop``), also
    when one of them failed to boot."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(Workspace(spec, config, lab, discard_at_stop=True))
            for name, spec in config.workspaces.items()
        }
