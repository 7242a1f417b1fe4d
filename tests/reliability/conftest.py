"""The reliability tests' shared fixtures: a module's lab and its running workspaces
(``tests.support.fixtures``)."""

from tests.support.fixtures import lab, running  # noqa: F401 (fixtures, by name)
