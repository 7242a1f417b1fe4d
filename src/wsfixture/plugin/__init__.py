"""The pytest plugin (the ``pytest11`` entry point): options, hooks and the fixtures that
hand each test a booted, verified workspace.

Fixtures: ``workspace`` (one per test, or shared with ``scope="module"|"session"`` in the
marker), ``workspace_factory`` (more workspaces during a test), ``ws_lab`` (this process's
lab). The rest lives beside it: ``session`` (this process's lab, config and workspaces),
``hosts`` (testinfra's ``host`` as the workspace, ``--ws-hosts``), ``report`` (failure
reports, kept workspaces) and ``verify`` (``--ws-verify``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.cleanup import Cleanup
from wsfixture.errors import CleanupError, ConfigError, ImageBuildError
from wsfixture.net import inventory
from wsfixture.net.lab import Lab
from wsfixture.net.world import World
from wsfixture.plugin import hosts, options
from wsfixture.plugin.markers import check_marker
from wsfixture.plugin.prestart import marker_args
from wsfixture.plugin.report import (
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
from wsfixture.plugin.reset import SharedReset
from wsfixture.plugin.session import (
    WsSession,
    failed_key,
    faults_key,
    session_key,
    shared_key,
    track,
)
from wsfixture.plugin.verify import verify_items
from wsfixture.workspaces.faults import Faults

# paramiko, fabric and testinfra load only when a test asks for a workspace: a plugin that
# every pytest run loads should not cost every run (nor xdist's controller) their import.
if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace

__all__ = ["pytest_runtest_makereport", "pytest_terminal_summary"]  # hooks that live beside

WORKER_CLEANUP_KEY = "wsfixture_cleanup_failure"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from wsfixture.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "workspace(name=None, *, scope='function', reset='none', **fields): the workspace "
        "this test gets; a name from --ws-config, or inline fields such as type='vm', "
        "packages=[...]; reset='checkpoint' gives each test of a shared one a rollback",
    )
    chosen = options.read(config)
    config.stash[session_key] = WsSession(config, chosen)
    if chosen.image_cache:
        from wsfixture.host.virt import qemu_version
        from wsfixture.image import shared_cache
        from wsfixture.image.registry import Reference

        ref = Reference.parse(chosen.image_cache)
        shared_cache.use(shared_cache.SharedCache(ref, chosen.image_cache_push, qemu_version))
    # Registered now, after every entry-point plugin (testinfra's among them): its `host`
    # is then the one tests get (see wsfixture.plugin.hosts).
    if not config.pluginmanager.is_registered(hosts):
        config.pluginmanager.register(hosts, "wsfixture.hosts")
    _interrupt_on_termination(config)


# How CI systems cancel a job (SIGTERM) and a closed terminal (SIGHUP) end a test session
# the way Ctrl-C does: pytest tears down, and every workspace, lab and mount goes with it.
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
signals_key = pytest.StashKey["dict[int, Any]"]()  # the handlers they had before


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"wsfixture: got {signal.Signals(signum).name}")


def _interrupt_on_termination(config: pytest.Config) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    previous: dict[int, Any] = {}
    for signum in TERMINATION_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:  # never over someone else's handler
            previous[signum] = signal.signal(signum, _interrupt)
    config.stash[signals_key] = previous


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Release everything before the summary; a cleanup failure fails the session, also
    when it happened on an xdist worker (whose own exit status the controller ignores)."""
    ws_session = session.config.stash.get(session_key, None)
    if ws_session is None:
        return
    problems = list(ws_session.worker_cleanup_failures)
    try:
        ws_session.close()
    except CleanupError as exc:
        problems.append(str(exc))
        worker_output = getattr(session.config, "workeroutput", None)
        if worker_output is not None:  # this is a worker: tell the controller
            worker = os.environ.get("PYTEST_XDIST_WORKER", "worker")
            worker_output[WORKER_CLEANUP_KEY] = f"{worker}: {exc}"
    if ws_session.interrupted:
        problems.append("interrupted during teardown; the teardown finished first")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for problem in problems:
                reporter.write_line(f"wsfixture: {problem}", red=True)
        interrupted = ws_session.interrupted and len(problems) == 1
        session.exitstatus = (
            pytest.ExitCode.INTERRUPTED if interrupted else pytest.ExitCode.TESTS_FAILED
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: collect a worker's cleanup failure for this session's end."""
    problem = getattr(node, "workeroutput", {}).get(WORKER_CLEANUP_KEY)
    ws_session = node.config.stash.get(session_key, None)
    if problem and ws_session is not None:
        ws_session.worker_cleanup_failures.append(problem)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None:
        session.close()
        if session.options.image_cache:  # this session's, not the next one's (pytester)
            from wsfixture.image import shared_cache

            shared_cache.use(None)
    for signum, handler in config.stash.get(signals_key, {}).items():
        signal.signal(signum, handler)


def _session(request: pytest.FixtureRequest) -> WsSession:
    return request.config.stash[session_key]


def _marker_args(request: pytest.FixtureRequest) -> tuple[str | None, dict[str, Any]]:
    return marker_args(request.node, getattr(request, "param", None))


# The test pytest runs after this one (None for the last): its workspace may start early.
next_item_key = pytest.StashKey["pytest.Item | None"]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    item.stash[next_item_key] = nextitem
    return (yield)


@pytest.fixture
def ws_lab(request: pytest.FixtureRequest) -> Lab:
    """The lab network namespace of this pytest process (bridge, DNS, hosts, ssh_config)."""
    return _session(request).open_lab()


@pytest.fixture
def ws_world(request: pytest.FixtureRequest) -> World:
    """The session's stand-in internet (``pytest --ws-world``): the lab's uplink goes to
    it, and it answers ``ws_world.name`` (``world.test``) and ``ws_world.other_name`` by
    DNS and HTTP on addresses of its own (``ws_world.http``, ``ws_world.other_http``), a
    page reading ``ws_world.page``; nothing leaves the machine (``net.world``)."""
    return _session(request).open_world()


@pytest.fixture
def ws_faults(request: pytest.FixtureRequest) -> Iterator[Faults]:
    """Faults between this session's workspaces (handles or names): ``partition(*groups)``,
    ``block(src, dst)``, ``shape(ws, peer=None, loss=...)``, each a context manager that
    heals it, and ``heal()``. Everything is healed at the test's end, pass or fail; the
    timeline is in a failed test's report, its artifacts, and the JUnit property
    ``wsfixture_faults``."""
    faults = Faults(_session(request).open_lab())
    request.node.stash[faults_key] = faults
    try:
        yield faults
    finally:
        faults.heal()
        if faults.timeline:
            timeline = json.dumps([fault.summary() for fault in faults.timeline])
            request.node.user_properties.append(("wsfixture_faults", timeline))


@pytest.fixture
def ws_inventory_of(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Path]:
    """``ws_inventory_of()`` writes an Ansible inventory (INI) of this session's running
    workspaces, as they are when it is called, and returns its path. Host keys stay
    pinned: each host goes through the lab's ssh_config."""
    session = _session(request)
    lab = session.open_lab()

    def write() -> Path:
        path = tmp_path / "inventory.ini"
        running = inventory.hosts(lab.name, lab.ssh_config, session.config.defaults.privilege)
        if session.prestarted is not None:  # no test has it yet
            running.pop(session.prestarted.spec.name, None)
        text = inventory.render(running, "ini")
        path.write_text(text + "\n")
        return path

    return write


@pytest.fixture
def ws_inventory(ws_inventory_of: Callable[[], Path], workspace: Workspace) -> Path:
    """The inventory file, with the test's ``workspace`` in it."""
    return ws_inventory_of()


def _booted(boot: Callable[[], Workspace]) -> Workspace:
    """``boot()``; an image that cannot be built fails the test with what the build says
    (the setup line, its status, the log's tail), not with wsfixture's own frames."""
    try:
        return boot()
    except ImageBuildError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    pytest.fail(failure, pytrace=False)  # outside the except: nothing chained to show


@pytest.fixture
def workspace(request: pytest.FixtureRequest) -> Iterator[Workspace]:
    """A booted, ready workspace: ``ws.run``/``succeed``, ``ws.host`` (testinfra), ``ws.conn``
    (fabric), all over SSH with the pinned host key. Torn down after the test.

    Choose it with ``@pytest.mark.workspace("name-in-config")`` or inline fields
    (``@pytest.mark.workspace(type="vm", packages=["git"])``), or parametrize indirectly
    with "container"/"vm". ``scope="module"|"session"`` in the marker shares one workspace.
    """
    session = _session(request)
    name, fields = _marker_args(request)
    scope = fields.pop("scope", "function")
    reset = fields.pop("reset", "none")
    if scope == "function":
        nextitem = request.node.stash.get(next_item_key, None)
        ws = None
        claimed = session.claim(name, fields)
        if claimed is not None:
            session.prestart(nextitem)  # beside the rest of this one's start
            ws = session.take(claimed)
        if ws is None:
            ws = _booted(lambda: session.boot(session.spec(name, **fields)))
            session.prestart(nextitem)  # after: this one may have made the image or template
        track(request.node, ws)
        yield ws
        session.release(ws, background=True)
        return
    scope_key = _scope_key(request, scope)
    first = shared_key(scope_key, name, fields) not in session.shared
    ws = _booted(lambda: session.shared_boot(scope_key, name, fields))
    if first and scope == "module":
        module = request.node.getparent(pytest.Module)
        assert module is not None
        module.addfinalizer(lambda: session.release_shared(scope_key, name, fields))
    resets = None
    if reset == "checkpoint":
        resets = session.resets.setdefault(shared_key(scope_key, name, fields), SharedReset(ws))
        resets.before_test()
    track(request.node, ws)
    yield ws
    if resets is not None:
        resets.after_test(request.node.stash.get(failed_key, False), session.keep == "failed")


def _scope_key(request: pytest.FixtureRequest, scope: str) -> str:
    if scope == "module":
        module = request.node.getparent(pytest.Module)
        return module.nodeid if module is not None else ""
    return "session"


@pytest.fixture
def workspace_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Workspace]]:
    """``factory(name=None, **fields) -> Workspace``: boot more workspaces in this lab.

    A name from the config selects that workspace (fields override it); any other name makes
    an inline spec; no name gets a fresh one, and a missing ``ip`` comes from the free range.
    Everything it made is torn down after the test, also when the test or a boot failed.
    ``ws_factory_module`` and ``ws_factory_session`` are the same, shared by a module's (or
    the session's, per xdist worker) tests and torn down after the last of them.
    """
    yield from _factory(request, lambda ws: track(request.node, ws))


@pytest.fixture(scope="module")
def ws_factory_module(request: pytest.FixtureRequest) -> Iterator[Callable[..., Workspace]]:
    """``workspace_factory`` for a module: ``@pytest.fixture(scope="module")`` fixtures can
    ask for it (a web + db pair per module); torn down after the module's last test."""
    yield from _shared_factory(request, "module")


@pytest.fixture(scope="session")
def ws_factory_session(request: pytest.FixtureRequest) -> Iterator[Callable[..., Workspace]]:
    """``workspace_factory`` for the session (per xdist worker); torn down at its end."""
    yield from _shared_factory(request, "session")


def _shared_factory(
    request: pytest.FixtureRequest, scope: str
) -> Iterator[Callable[..., Workspace]]:
    made = _session(request).factory_made.setdefault(FACTORY_FIXTURES[scope], [])
    try:
        yield from _factory(request, made.append)
    finally:
        made.clear()


# The scoped factories' fixture names: a test that uses one (directly or through its own
# fixtures) used what it made, for its report and --ws-keep=failed.
FACTORY_FIXTURES = {"module": "ws_factory_module", "session": "ws_factory_session"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    session = item.config.stash.get(session_key, None)
    if session is None:
        return
    for fixture in FACTORY_FIXTURES.values():
        if fixture in getattr(item, "fixturenames", ()):
            for ws in session.factory_made.get(fixture, []):
                track(item, ws)


def _factory(
    request: pytest.FixtureRequest, made_one: Callable[[Workspace], None]
) -> Iterator[Callable[..., Workspace]]:
    """The factory, and the teardown of all it made (each in its own try: one failure does
    not keep the others running)."""
    session = _session(request)
    made: list[Workspace] = []

    def factory(name: str | None = None, **fields: Any) -> Workspace:
        __tracebackhide__ = True
        try:
            spec = session.spec(name, **fields)
        except ConfigError as exc:
            call = ", ".join([*([repr(name)] if name else []),
                              *(f"{k}={v!r}" for k, v in fields.items())])  # fmt: skip
            raise ConfigError(
                exc.issues, f"{request.node.nodeid}: {request.fixturename}({call})"
            ) from None
        ws = session.boot(spec)
        made.append(ws)
        made_one(ws)
        return ws

    yield factory
    cleanup = Cleanup()
    for ws in reversed(made):
        cleanup.attempt(f"stop {ws.name}", session.release, ws)
    cleanup.raise_any()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        marker = item.get_closest_marker("workspace")
        if marker is not None:
            check_marker(item, marker, config.stash[session_key])
    if config.stash[session_key].options.verify:
        items.extend(verify_items(session, config))
