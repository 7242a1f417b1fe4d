"""testinfra's ``host`` fixture, pointed at workspaces.

testinfra's own ``host`` is the machine pytest runs on unless ``--hosts`` says otherwise,
which in a session of workspaces is rarely what a test meant. This ``host`` replaces it
(registered after testinfra's plugin, so it wins; a conftest's own ``host`` still wins
over both) and is, for each test:

- the test's workspace, when it has one (the ``workspace`` fixture or marker);
- else each workspace of ``--ws-hosts`` (ini ``wsfixture_hosts``), booted once per session
  and shared with ``@pytest.mark.workspace(name, scope="session")``: an existing testinfra
  file runs unchanged, with node ids like ``--hosts`` gives (``[wsfixture://web]``);
  and each running workspace of ``--ws-attach`` (``wsfixture up``'s: a Molecule-style
  suite after its converge), through its pinned login, none stopped at the end;
- else what testinfra would give: ``--hosts``, a module's ``testinfra_hosts``, or this
  machine, with testinfra's own ids. This machine while the session has workspaces gets a
  ``LocalHostWarning`` saying how to point ``host`` at one.

One mechanism does it: ``host`` is parametrized indirectly here (testinfra parametrizes its
``_testinfra_host``, which this ``host`` does not use, so it stays out). A test with a
workspace gets one function-scoped parameter: the scope of a parametrization overrides the
fixture's, and so the module-scoped ``host`` may ask for the function-scoped workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import testinfra
import testinfra.host

from wsfixture.errors import ConfigError, WsfixtureError
from wsfixture.plugin.session import WsSession, session_key, shared_key, track
from wsfixture.suggest import unknown_workspace

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace

WS_HOSTS_INI = "wsfixture_hosts"


@dataclass(frozen=True)
class Attached:
    """A parameter of ``host``: a running workspace of ``--ws-attach``."""

    name: str

    def __repr__(self) -> str:
        return self.name


class _OwnWorkspace:
    """The one parameter of a test that has a workspace: ``host`` is that workspace's."""

    def __repr__(self) -> str:
        return "workspace"


OWN_WORKSPACE = _OwnWorkspace()
# What puts workspaces in a session: any of these fixtures, or the marker.
WORKSPACE_FIXTURES = frozenset(
    {"workspace", "workspace_factory", "ws_lab", "ws_inventory", "ws_inventory_of"}
)


# Test functions whose ``host`` is this machine because nothing said otherwise.
implicit_local_key = pytest.StashKey["set[str]"]()
ws_hosts_key = pytest.StashKey["list[str]"]()  # --ws-hosts, checked
attached_key = pytest.StashKey["dict[str, Workspace]"]()  # --ws-attach's handles, by name


class LocalHostWarning(UserWarning):
    """testinfra's ``host`` is the machine pytest runs on, in a session with workspaces."""


def pytest_configure(config: pytest.Config) -> None:
    """Mistakes in --ws-hosts and --ws-attach are usage errors before anything is
    collected or booted."""
    options = config.stash[session_key].options
    config.stash[ws_hosts_key] = _checked_names(config, "--ws-hosts", list(options.hosts))
    _checked_names(config, "--ws-attach", list(options.attach))
    config.stash[attached_key] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    """--ws-attach's handles closed: their workspaces go on running."""
    for ws in config.stash.get(attached_key, {}).values():
        ws.stop()


def _checked_names(config: pytest.Config, flag: str, names: list[str]) -> list[str]:
    if not names:
        return []
    if config.getoption("hosts", None):
        raise pytest.UsageError(f"{flag} and testinfra's --hosts: give one or the other")
    try:
        ws_config = config.stash[session_key].config
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    for name in names:
        if name not in ws_config.workspaces:
            where_looked = (
                f" in {ws_config.source}" if ws_config.source else " (no --ws-config given)"
            )
            unknown = unknown_workspace([name], list(ws_config.workspaces), where_looked)
            raise pytest.UsageError(f"{flag}: {unknown}")
    return names


@pytest.fixture(scope="module")
def host(request: pytest.FixtureRequest) -> testinfra.host.Host:
    """testinfra's Host: the test's workspace if it has one, else each workspace of
    ``--ws-hosts``, else what testinfra's ``--hosts`` gives (this machine without it).
    ``host.sudo()`` on a workspace runs through its privilege tool, and testinfra's
    ``--sudo``/``--sudo-user`` run every command so."""
    param = request.param
    if param is OWN_WORKSPACE:
        return _as_asked(request.config, request.getfixturevalue("workspace"))
    if isinstance(param, str):  # a workspace of --ws-hosts
        session: WsSession = request.config.stash[session_key]
        return _as_asked(request.config, session.shared_boot("session", param, {}))
    if isinstance(param, Attached):  # a running workspace of --ws-attach
        return _as_asked(request.config, _attached(request.config, param.name))
    assert isinstance(param, testinfra.host.Host)
    return param


def _attached(config: pytest.Config, name: str) -> Workspace:
    """A handle on the running workspace ``name`` (``wsfixture.connect``), once a session."""
    handles = config.stash[attached_key]
    if name not in handles:
        from wsfixture.api import connect

        # The config as its file says (its stateRoot: where `up` keeps the host keys), not
        # the session's, whose workspaces live under a state root of their own.
        try:
            handles[name] = connect(name, config.stash[session_key].config_path or None)
        except WsfixtureError as exc:
            raise pytest.UsageError(f"--ws-attach: {exc}") from None
    return handles[name]


def _as_asked(config: pytest.Config, ws: Workspace) -> testinfra.host.Host:
    """The workspace's Host, as testinfra's ``--sudo`` and ``--sudo-user`` mean for any
    host: every command through the privilege tool, as root or that user."""
    if not getattr(config.option, "sudo", False):
        return ws.host
    return ws.host_as(getattr(config.option, "sudo_user", None) or "root")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host" not in metafunc.fixturenames or not _is_ours(metafunc):
        return
    if _has_workspace(metafunc.fixturenames, metafunc.definition):
        metafunc.parametrize(
            "host", [OWN_WORKSPACE], ids=["workspace"], indirect=True, scope="function"
        )
        return
    names = metafunc.config.stash[ws_hosts_key]
    attach = list(metafunc.config.stash[session_key].options.attach)
    if names or attach:
        params = [*names, *(Attached(name) for name in attach)]
        ids = [f"{_backend_name()}://{name}" for name in (*names, *attach)]
        metafunc.parametrize("host", params, ids=ids, indirect=True, scope="module")
        return
    # As testinfra's plugin does it, for its own ``_testinfra_host``.
    option = metafunc.config.option
    if option.hosts is not None:
        wanted = option.hosts.split(",")
    else:
        wanted = getattr(metafunc.module, "testinfra_hosts", [None])
    if wanted == [None]:  # nobody chose this machine: say so if there are workspaces
        metafunc.config.stash.setdefault(implicit_local_key, set()).add(metafunc.definition.nodeid)
    hosts = testinfra.get_hosts(
        wanted,
        connection=option.connection,
        ssh_config=option.ssh_config,
        ssh_identity_file=option.ssh_identity_file,
        sudo=option.sudo,
        sudo_user=option.sudo_user,
        ansible_inventory=option.ansible_inventory,
        force_ansible=option.force_ansible,
    )
    hosts = sorted(hosts, key=lambda h: h.backend.get_pytest_id())
    ids = [h.backend.get_pytest_id() for h in hosts]
    metafunc.parametrize("host", hosts, ids=ids, indirect=True, scope="module")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A test on a workspace of --ws-hosts used it (``host`` is module-scoped: its request
    is the module's, so the test is told here): its report shows it."""
    name = getattr(item, "callspec", None) and item.callspec.params.get("host")  # type: ignore[attr-defined]
    if isinstance(name, str):
        session = item.config.stash[session_key]
        ws = session.shared.get(shared_key("session", name, {}))
        if ws is not None:
            track(item, ws)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Warn each test whose ``host`` is this machine, in a session that has workspaces."""
    implicit = config.stash.get(implicit_local_key, set())
    if not implicit:
        return
    if not (config.stash[session_key].config_path or any(_uses_workspaces(i) for i in items)):
        return
    for item in items:
        if item.nodeid.partition("[")[0] in implicit:
            item.warn(
                LocalHostWarning(
                    f"{item.nodeid}: testinfra's `host` here is this machine (local://), "
                    "not a workspace. Give the test a workspace (the `workspace` fixture "
                    "or @pytest.mark.workspace(...)) and `host` is that workspace; or run "
                    "with --ws-hosts=NAME[,NAME] (ini wsfixture_hosts) for workspaces of "
                    "--ws-config; or, if this machine is meant, say so with "
                    "`testinfra_hosts = ['local://']` in the module."
                )
            )


def _is_ours(metafunc: pytest.Metafunc) -> bool:
    """Whether the test's ``host`` is this one (a conftest may define its own)."""
    definitions = metafunc.definition._fixtureinfo.name2fixturedefs.get("host", ())
    return bool(definitions) and getattr(definitions[-1].func, "__module__", "") == __name__


def _has_workspace(fixturenames: Any, node: pytest.Item) -> bool:
    return "workspace" in fixturenames or node.get_closest_marker("workspace") is not None


def _uses_workspaces(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return bool(WORKSPACE_FIXTURES & set(names)) or _has_workspace(names, item)


def _backend_name() -> str:
    from wsfixture.remote import WorkspaceBackend

    return WorkspaceBackend.NAME
