"""The pytest plugin: fixtures that hand each test a booted, verified workspace.

Fixtures: ``workspace`` (one per test, or shared with ``scope="module"|"session"`` in the
marker), ``workspace_factory`` (more workspaces during a test), ``ws_lab`` (this process's
lab). Each pytest process (each xdist worker too) has its own lab namespace, so the same
config addresses never collide; the base image is built once for all of them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.errors import CleanupError, ConfigError
from wsfixture.host import ledger
from wsfixture.model.config import Config, WorkspaceSpec, load_config, override, workspace_spec
from wsfixture.model.validation import WORKSPACE_KEYS, camel
from wsfixture.net.lab import Lab, new_lab_name

# paramiko, fabric and testinfra load only when a test asks for a workspace: a plugin that
# every pytest run loads should not cost every run (nor xdist's controller) their import.
if TYPE_CHECKING:
    from wsfixture.checks import Check
    from wsfixture.workspace import Workspace

KEEP_CHOICES = ("never", "failed", "always")
SCOPES = ("function", "module", "session")
# The marker's and the factory's keywords: a name, a scope, and every workspace field in
# either spelling, as the model declares them.
MARKER_FIELDS = (
    "name", "scope",
    *dict.fromkeys(spelling for key in WORKSPACE_KEYS[1:] for spelling in (key, camel(key))),
)  # fmt: skip
WORKER_CLEANUP_KEY = "wsfixture_cleanup_failure"
used_key = pytest.StashKey["list[Workspace]"]()
failed_key = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsfixture", "wsfixture workspaces")
    group.addoption("--ws-config", help="workspace config (TOML or nix eval JSON)")
    parser.addini("wsfixture_config", "workspace config file (TOML or nix eval JSON)")
    group.addoption(
        "--ws-keep",
        choices=KEEP_CHOICES,
        help="keep workspaces running after the session: never (default), failed, always",
    )
    parser.addini("wsfixture_keep", "never, failed or always", default="never")
    group.addoption("--ws-timeout", type=float, help="seconds a workspace may take to be ready")
    group.addoption("--ws-state-dir", help="state root for workspaces (default: a temp dir)")
    group.addoption(
        "--ws-verify",
        action="store_true",
        help="collect one test per (workspace of --ws-config, built-in check)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "workspace(name=None, *, scope='function', **fields): the workspace this test gets; "
        "a name from --ws-config, or inline fields such as type='vm', packages=[...]",
    )
    keep = config.getoption("--ws-keep") or config.getini("wsfixture_keep") or "never"
    if keep not in KEEP_CHOICES:
        raise pytest.UsageError(f"wsfixture_keep = {keep!r}; allowed: {', '.join(KEEP_CHOICES)}")
    config.stash[session_key] = WsSession(config, keep)


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
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for problem in problems:
                reporter.write_line(f"wsfixture: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


@dataclass
class WsSession:
    """This process's lab, config and the workspaces it keeps."""

    pytest_config: pytest.Config
    keep: str
    lab: Lab | None = None
    kept: list[Workspace] = field(default_factory=list)
    shared: dict[tuple[str, str], Workspace] = field(default_factory=dict)
    # Cleanup failures reported by xdist workers (controller only).
    worker_cleanup_failures: list[str] = field(default_factory=list)
    # Workspaces being stopped in the background: (thread, workspace, its errors).
    stopping: list[tuple[threading.Thread, Workspace, list[BaseException]]] = field(
        default_factory=list
    )
    _config: Config | None = None
    _state_root: Path | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def config(self) -> Config:
        if self._config is None:
            path = self.pytest_config.getoption("--ws-config") or self.pytest_config.getini(
                "wsfixture_config"
            )
            base = load_config(path) if path else Config()
            self._config = base.with_state_root(self.state_root())
        return self._config

    def state_root(self) -> Path:
        if self._state_root is None:
            given = self.pytest_config.getoption("--ws-state-dir")
            self._state_root = Path(given) if given else Path(tempfile.mkdtemp(prefix="wsstate-"))
        return self._state_root

    @property
    def timeout(self) -> float | None:
        value: float | None = self.pytest_config.getoption("--ws-timeout")
        return value

    def open_lab(self) -> Lab:
        if self.lab is None:
            ledger.reap()  # leftovers of crashed runs (dead owners only)
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            name = f"{new_lab_name()}-{worker}"
            self.lab = Lab(self.config.network, name, die_with_owner=self.keep == "never").open()
        return self.lab

    def fresh_name(self) -> str:
        return f"ws{os.getpid() % 100000}-{next(self._names)}"

    def spec(self, name: str | None = None, **fields: Any) -> WorkspaceSpec:
        """A spec from the config by name (fields override it), or inline."""
        lab = self.open_lab()
        config = self.config
        if name is not None and name in config.workspaces:
            return override(config, config.workspaces[name], **fields)
        fields.setdefault("type", "container")
        if "ip" not in fields:
            declared = {str(s.ip) for s in config.workspaces.values()}
            running = {w.ip for w in self.shared.values()}
            fields["ip"] = lab.free_ip(declared | running)
        return workspace_spec(config, name=name or self.fresh_name(), **fields)

    def boot(self, spec: WorkspaceSpec) -> Workspace:
        from wsfixture.workspace import Workspace

        # A workspace of the same name or address may still be shutting down.
        failures = self.settle(spec.name, str(spec.ip))
        if failures:
            raise CleanupError(failures)
        ws = Workspace(
            spec,
            self.config,
            self.open_lab(),
            timeout=self.timeout,
            die_with_owner=self.keep == "never",
        )
        return ws.start()

    def release(self, ws: Workspace, failed: bool, background: bool = False) -> None:
        """Keep, or stop: ``background`` lets the test finish while its workspace shuts
        down; ``settle`` (next boot of that name or address, session end) waits for it."""
        if self.keep == "always" or (self.keep == "failed" and failed):
            ws.detach()
            self.kept.append(ws)
        elif background:
            errors: list[BaseException] = []

            def stop() -> None:
                try:
                    ws.stop()
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=stop, name=f"wsfixture-stop-{ws.name}")
            thread.start()
            self.stopping.append((thread, ws, errors))
        else:
            ws.stop()

    def settle(
        self, name: str | None = None, ip: str | None = None
    ) -> list[tuple[str, BaseException]]:
        """Wait for background stops: of one name or address, or all of them."""
        failures: list[tuple[str, BaseException]] = []
        waiting = []
        for thread, ws, errors in self.stopping:
            if name is None or ws.name == name or ws.ip == ip:
                thread.join()
                failures += [(f"stop {ws.name}", exc) for exc in errors]
            else:
                waiting.append((thread, ws, errors))
        self.stopping = waiting
        return failures

    def close(self) -> None:
        """Stop everything this process still holds; idempotent."""
        failures = self.settle()
        for ws in list(self.shared.values()):
            try:
                self.release(ws, failed=False)
            except Exception as exc:
                failures.append((f"stop {ws.name}", exc))
        self.shared.clear()
        if self.lab is not None:
            if self.kept:
                self.lab.detach()
            else:
                try:
                    self.lab.close()
                except Exception as exc:
                    failures.append((f"close lab {self.lab.name}", exc))
                self.lab = None
        if (
            self._state_root is not None
            and not self.kept
            and not self.pytest_config.getoption("--ws-state-dir")
        ):
            shutil.rmtree(self._state_root, ignore_errors=True)
        if failures:
            raise CleanupError(failures)


session_key = pytest.StashKey[WsSession]()


def _session(request: pytest.FixtureRequest) -> WsSession:
    return request.config.stash[session_key]


def _marker_args(request: pytest.FixtureRequest) -> tuple[str | None, dict[str, Any]]:
    marker = request.node.get_closest_marker("workspace")
    fields: dict[str, Any] = {}
    name: str | None = None
    if marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
        fields = {k: v for k, v in marker.kwargs.items() if k != "name"}
    param = getattr(request, "param", None)
    if isinstance(param, str) and param in ("container", "vm"):
        fields["type"] = param
    elif isinstance(param, str):
        name = param
    elif isinstance(param, dict):
        fields.update(param)
    return name, fields


def _track(request: pytest.FixtureRequest, ws: Workspace) -> None:
    request.node.stash.setdefault(used_key, []).append(ws)


def _failed(request: pytest.FixtureRequest) -> bool:
    failed: bool = request.node.stash.get(failed_key, False)
    return failed


@pytest.fixture
def ws_lab(request: pytest.FixtureRequest) -> Lab:
    """The lab network namespace of this pytest process (bridge, DNS, hosts, ssh_config)."""
    return _session(request).open_lab()


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
    if scope == "function":
        ws = session.boot(session.spec(name, **fields))
        _track(request, ws)
        yield ws
        session.release(ws, _failed(request), background=True)
        return
    key = (_scope_key(request, scope), repr((name, sorted(fields.items()))))
    if key not in session.shared:
        session.shared[key] = session.boot(session.spec(name, **fields))
        if scope == "module":
            module = request.node.getparent(pytest.Module)
            assert module is not None
            module.addfinalizer(lambda: session.release(session.shared.pop(key), False))
    ws = session.shared[key]
    _track(request, ws)
    yield ws


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
    """
    session = _session(request)
    made: list[Workspace] = []

    def factory(name: str | None = None, **fields: Any) -> Workspace:
        ws = session.boot(session.spec(name, **fields))
        made.append(ws)
        _track(request, ws)
        return ws

    yield factory
    failures: list[tuple[str, BaseException]] = []
    for ws in reversed(made):
        try:
            session.release(ws, _failed(request))
        except Exception as exc:
            failures.append((f"stop {ws.name}", exc))
    if failures:
        raise CleanupError(failures)


# -- reports ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[failed_key] = True
        for ws in item.stash.get(used_key, []):
            for title, text in diagnostics(ws):
                report.sections.append((f"wsfixture {ws.name}: {title}", text))
    return report


def diagnostics(ws: Workspace) -> list[tuple[str, str]]:
    """What a failure report shows of a workspace; each part gathered on its own."""
    parts: list[tuple[str, str]] = [("console (tail)", ws.logs(40))]
    commands = {
        "journal (tail)": "doas -n journalctl -b --no-pager -n 60",
        "failed units": "systemctl --failed --no-pager --no-legend",
        "network": "networkctl status --no-pager 2>&1 | head -30; ip -br addr; ip route",
    }
    for title, command in commands.items():
        try:
            _, out, err = ws.run(command, timeout=15)
            parts.append((title, (out + err).strip() or "(empty)"))
        except Exception as exc:
            parts.append((title, f"(could not run: {type(exc).__name__}: {exc})"))
    if ws.session is not None:
        history = "\n".join(
            f"[rc={r.rc} {r.seconds * 1000:.0f}ms] {r.command}" for r in ws.session.history
        )
        parts.append(("commands run", history or "(none)"))
    return parts


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is None or not session.kept or session.lab is None:
        return
    lab = session.lab
    terminalreporter.section("wsfixture: kept workspaces")
    for ws in session.kept:
        terminalreporter.write_line(f"{ws.name} ({ws.spec.type}, {ws.ip}) in lab {lab.name}:")
        terminalreporter.write_line(f"    ssh -F {lab.ssh_config} {ws.name}")
        terminalreporter.write_line(f"    wsfixture ssh --lab {lab.name} {ws.name}")
    terminalreporter.write_line(f"remove them all: wsfixture gc --lab {lab.name}")


# -- --ws-verify --------------------------------------------------------------------------


class VerifyItem(pytest.Item):
    """One built-in check on one workspace of the config."""

    def __init__(self, *, ws_name: str, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ws_name = ws_name
        self.check = check

    def runtest(self) -> None:
        session = self.config.stash[session_key]
        key = ("verify", self.ws_name)
        if key not in session.shared:
            session.shared[key] = session.boot(session.spec(self.ws_name))
        ws = session.shared[key]
        self.stash[used_key] = [ws]
        self.check.run(ws)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return Path(self.config.getoption("--ws-config") or "."), None, self.name

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return f"{self.name}: {self.check.doc}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        marker = item.get_closest_marker("workspace")
        if marker is None:
            continue
        unknown = sorted(set(marker.kwargs) - set(MARKER_FIELDS))
        if unknown or len(marker.args) > 1:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.workspace got unknown argument(s) "
                f"{unknown or marker.args[1:]}; allowed: one name, then {', '.join(MARKER_FIELDS)}"
            )
        if marker.kwargs.get("scope", "function") not in SCOPES:
            raise pytest.UsageError(
                f"{item.nodeid}: scope={marker.kwargs['scope']!r}; allowed: {', '.join(SCOPES)}"
            )
    if not config.getoption("--ws-verify"):
        return
    from wsfixture.checks import CHECKS

    try:
        ws_config = config.stash[session_key].config
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    if not ws_config.workspaces:
        raise pytest.UsageError("--ws-verify needs --ws-config with at least one workspace")
    for name in ws_config.workspaces:
        for check in CHECKS:
            items.append(
                VerifyItem.from_parent(
                    session, name=f"verify[{name}:{check.id}]", ws_name=name, check=check
                )
            )
