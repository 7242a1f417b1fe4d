"""The sandbox modules' workspaces, booted once for the three and gone after them: a
container with a read-only and a rw share, a second container (a neighbour), a VM with
the same kinds of shares, in a lab of their own (``tests.support.sandbox``)."""

from tests.support.sandbox import (  # noqa: F401 (fixtures, by name)
    box,
    other,
    sandbox_config,
    sandbox_lab,
    vmbox,
)
