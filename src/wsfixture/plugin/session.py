"""One pytest process's wsfixture state: its config, its lab, the workspaces it shares
between tests, and those it stops in the background or keeps.

Each pytest process (each xdist worker too) has its own lab namespace, so the same config
addresses never collide. Whether a workspace is kept at the end follows ``--ws-keep`` and
whether any test that used it failed, whatever its scope.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.cleanup import Cleanup
from wsfixture.errors import CleanupError, ConfigError, ConfigIssue
from wsfixture.host import ledger
from wsfixture.model.config import Config, WorkspaceSpec, load_config, override, workspace_spec
from wsfixture.net import inventory
from wsfixture.net.lab import Lab, new_lab_name
from wsfixture.net.world import World, world
from wsfixture.plugin import artifacts
from wsfixture.plugin.options import Options
from wsfixture.plugin.prestart import (
    NOT_WORKSPACE,
    Prestarted,
    marker_args,
    param_of,
    prestart_key,
)
from wsfixture.plugin.stopping import BackgroundStop
from wsfixture.progress import Ticker

if TYPE_CHECKING:
    from wsfixture.plugin.reset import SharedReset
    from wsfixture.workspaces import Workspace
    from wsfixture.workspaces.faults import Faults


@dataclass
class WsSession:
    """This process's lab, config and the workspaces it keeps."""

    pytest_config: pytest.Config
    options: Options
    lab: Lab | None = None
    kept: list[Workspace] = field(default_factory=list)
    shared: dict[tuple[str, str], Workspace] = field(default_factory=dict)
    # Names of workspaces a failed test used: kept under --ws-keep=failed, whatever scope.
    failed: set[str] = field(default_factory=set)
    # An interrupt (Ctrl-C, SIGTERM, SIGHUP) came while this session was tearing down:
    # the teardown went on to its end, and the run must not pass for a clean one.
    interrupted: bool = False
    # Cleanup failures reported by xdist workers (controller only).
    worker_cleanup_failures: list[str] = field(default_factory=list)
    # Workspaces being stopped in the background.
    stopping: list[BackgroundStop] = field(default_factory=list)
    # What each scoped factory (ws_factory_module, ws_factory_session) made and holds.
    factory_made: dict[str, list[Workspace]] = field(default_factory=dict)
    # Shared workspaces with reset="checkpoint", by their shared key.
    resets: dict[tuple[str, str], SharedReset] = field(default_factory=dict)
    # The workspace started for the next test (--ws-prestart), and the one a test has
    # taken but is still waiting for.
    prestarted: Prestarted | None = None
    claimed: Prestarted | None = None
    # Their starts' threads. A machine gets a signal when the thread that started it ends:
    # these live until the session closes, after every workspace they started is gone.
    _starter: ThreadPoolExecutor | None = None
    _world: World | None = None
    _world_stack: contextlib.ExitStack | None = None
    _config: Config | None = None
    _state_root: Path | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def config(self) -> Config:
        if self._config is None:
            path = self.config_path
            if path and not Path(path).is_file():
                # A remote xdist worker resolves it on its own machine, in its own cwd.
                where = f"{socket.gethostname()}:{Path.cwd()}"
                worker = os.environ.get("PYTEST_XDIST_WORKER")
                said = f"no such file on {where}" + (f" (xdist worker {worker})" if worker else "")
                raise ConfigError([ConfigIssue(path, said)])
            base = load_config(path) if path else Config()
            self._config = base.with_state_root(self.state_root())
        return self._config

    def state_root(self) -> Path:
        if self._state_root is None:
            given = self.options.state_dir
            self._state_root = Path(given) if given else Path(tempfile.mkdtemp(prefix="wsstate-"))
        return self._state_root

    @property
    def keep(self) -> str:
        return self.options.keep

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @property
    def command_timeout(self) -> float | None:
        return self.options.command_timeout

    def open_world(self) -> World:
        """The session's stand-in internet (``--ws-world``), made on first use."""
        if not self.options.world:
            raise pytest.UsageError("ws_world: run pytest with --ws-world (the session's lab "
                                    "then goes out through it)")  # fmt: skip
        if self._world is None:
            self._world_stack = contextlib.ExitStack()
            self._world = self._world_stack.enter_context(world())
        return self._world

    def open_lab(self) -> Lab:
        if self.lab is None:
            ledger.reap()  # leftovers of crashed runs (dead owners only)
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            name = f"{new_lab_name()}-{worker}"
            network = self.config.network
            if self.options.world:  # its internet is the session's world
                network = dataclasses.replace(network, uplink_namespace=self.open_world().netns,
                                              internet=network.internet or True)  # fmt: skip
            # A test's lab has internet only when its config asks: tests stay hermetic.
            self.lab = Lab(
                network, name, die_with_owner=self.keep == "never",
                internet=network.internet not in (None, False),
            ).open()  # fmt: skip
            if not self.options.state_dir:
                self.lab.adopt_dir(self.state_root())  # a killed session's keys go with gc
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
            # Not one still shutting down (its boot would wait for it), nor one starting.
            stopping = {stop.ws.ip for stop in self.stopping}
            starting = {str(p.spec.ip) for p in (self.prestarted, self.claimed) if p}
            fields["ip"] = lab.free_ip(declared | running | stopping | starting)
        return workspace_spec(config, name=name or self.fresh_name(), **fields)

    @property
    def config_path(self) -> str:
        """The workspace config given (--ws-config, else the ini's); "" for none."""
        return self.options.config

    def shared_boot(self, scope: str, name: str | None, fields: dict[str, Any]) -> Workspace:
        """The workspace shared within ``scope`` (a module's node id, or "session") for this
        name and fields, booted on first use; it stops with the scope (``release_shared``)
        or, at the latest, with the session."""
        key = shared_key(scope, name, fields)
        if key not in self.shared:
            self.shared[key] = self.boot(self.spec(name, **fields))
        return self.shared[key]

    def release_shared(self, scope: str, name: str | None, fields: dict[str, Any]) -> None:
        key = shared_key(scope, name, fields)
        self._before_release(key)
        self.release(self.shared.pop(key))

    def _before_release(self, key: tuple[str, str]) -> None:
        """A shared workspace kept for a failed test goes back to what that test saw."""
        reset = self.resets.pop(key, None)
        if reset is not None and self.keep == "failed" and reset.ws.name in self.failed:
            reset.before_keep()

    def boot(self, spec: WorkspaceSpec) -> Workspace:
        # A workspace of the same name or address may still be shutting down.
        failures = self.settle(spec.name, str(spec.ip))
        if failures:
            raise CleanupError(failures)
        with self._starting(spec) as say:
            return self._start(spec, say)

    @contextlib.contextmanager
    def _starting(self, spec: WorkspaceSpec) -> Iterator[Callable[[str], None] | None]:
        """The live progress of a start (its phases go to the callable yielded), if any."""
        ticker = self.ticker()
        if ticker is None:
            yield None
            return
        with ticker.step(f"wsfixture: starting {spec.name} ({spec.type})") as say:
            yield say

    def _start(self, spec: WorkspaceSpec, say: Callable[[str], None] | None) -> Workspace:
        from wsfixture.workspaces import Workspace

        ws = Workspace(
            spec,
            self.config,
            self.open_lab(),
            timeout=self.timeout,
            die_with_owner=self.keep == "never",
            command_timeout=self.command_timeout,
            # --ws-overcommit lifts it; else the config's defaults.overcommit says.
            overcommit=True if self.options.overcommit else None,
            progress=say,
        )
        ws.start()
        if self.options.artifacts and ws._ssh is not None:
            ws._ssh.transcript = artifacts.transcript_of(ws)  # whole, for a failure's
        self._converge(ws)
        return ws

    def _converge(self, ws: Workspace) -> None:
        """``pytest_ws_converge`` for a workspace just started, where a conftest has it;
        its failure stops the workspace and fails the start."""
        hook = self.pytest_config.hook.pytest_ws_converge
        if not hook.get_hookimpls():
            return
        lab = self.open_lab()
        path = ws._runtime_dir / "converge-inventory.ini"
        found = inventory.hosts(lab.name, lab.ssh_config, self.config.defaults.privilege)
        path.write_text(inventory.render({ws.name: found[ws.name]}, "ini") + "\n")
        try:
            hook(workspace=ws, inventory=path)
        except BaseException:
            ws.stop()
            raise

    def prestart(self, item: pytest.Item | None) -> None:
        """Start now the workspace ``item`` will ask for, if it may start before its test
        (``prestart.prestart_key``) and is not started already."""
        if item is None or "workspace" not in getattr(item, "fixturenames", ()):
            return
        name, fields = marker_args(item, param_of(item))
        key = prestart_key(name, fields, self.options.prestart)
        if key is None or (self.prestarted is not None and self.prestarted.key == key):
            return
        if self.prestarted is not None:  # for a test that did not take it
            self._drop(self.prestarted)
            self.prestarted = None
        spec = self.spec(None, **{k: v for k, v in fields.items() if k not in NOT_WORKSPACE})
        if self._starter is None:
            # Two: the next test's may start while the one this test took still does.
            self._starter = ThreadPoolExecutor(2, thread_name_prefix="wsfixture-prestart")
        context = contextvars.copy_context()  # the session's settings and shared cache
        started = self._starter.submit(context.run, self._start, spec, None)
        self.prestarted = Prestarted(key, spec, started)

    def claim(self, name: str | None, fields: dict[str, Any]) -> Prestarted | None:
        """The workspace started for this test, if one was: the test then ``take``s it."""
        prestarted = self.prestarted
        key = prestart_key(name, fields, self.options.prestart)
        if prestarted is None or prestarted.key != key:
            return None
        self.prestarted, self.claimed = None, prestarted
        return prestarted

    def take(self, claimed: Prestarted) -> Workspace | None:
        """The claimed workspace once it is ready; None if its start failed."""
        if claimed.started.done():
            ws = claimed.result()
        else:
            with self._starting(claimed.spec):
                ws = claimed.result()
        self.claimed = None
        return ws

    def _drop(self, prestarted: Prestarted) -> None:
        """Stop a workspace started for a test that did not take it (one skipped, or not
        run), or whose test was interrupted while it waited."""
        ws, interrupted = prestarted.settle()
        self.interrupted |= interrupted
        if ws is not None:
            self.stopping.append(BackgroundStop.start(ws))

    def ticker(self) -> Ticker | None:
        """Progress in the live terminal, as plain lines, when the run is verbose or on a
        terminal: never into a test's captured output (it goes past capture, as pytest's
        own lines do). None otherwise."""
        plugins = self.pytest_config.pluginmanager
        reporter = plugins.get_plugin("terminalreporter")
        capture = plugins.get_plugin("capturemanager")
        verbose = self.pytest_config.get_verbosity() > 0
        if reporter is None or not (verbose or reporter.isatty):
            return None

        def write(text: str) -> None:
            # Capture is on during a fixture's setup: past it, as pytest's live logging.
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.ensure_newline()
                reporter.write(text)
                reporter.flush()

        return Ticker(write, tty=False)

    def mark_failed(self, workspaces: list[Workspace]) -> None:
        """A test that used these failed."""
        self.failed.update(ws.name for ws in workspaces)

    def release(self, ws: Workspace, background: bool = False) -> None:
        """Keep, or stop: ``background`` lets the test finish while its workspace shuts
        down; ``settle`` (next boot of that name or address, session end) waits for it."""
        if self.keep == "always" or (self.keep == "failed" and ws.name in self.failed):
            ws._detach()
            self.kept.append(ws)
        elif background:
            self.stopping.append(BackgroundStop.start(ws))
        else:
            ws.stop(discard=True)

    def settle(
        self, name: str | None = None, ip: str | None = None
    ) -> list[tuple[str, BaseException]]:
        """Wait for background stops: of one name or address, or all of them."""
        failures: list[tuple[str, BaseException]] = []
        waiting = []
        for stop in self.stopping:
            if name is None or stop.ws.name == name or stop.ws.ip == ip:
                self.interrupted |= stop.wait()
                failures += [(f"stop {stop.ws.name}", exc) for exc in stop.errors]
            else:
                waiting.append(stop)
        self.stopping = waiting
        return failures

    def close(self) -> None:
        """Stop everything this process still holds; idempotent."""
        cleanup = Cleanup()
        for prestarted in (self.prestarted, self.claimed):
            if prestarted is not None:
                self._drop(prestarted)
        self.prestarted = self.claimed = None
        cleanup.add(self.settle())
        for key, ws in list(self.shared.items()):
            cleanup.attempt(f"roll back {ws.name}", self._before_release, key)
            cleanup.attempt(f"stop {ws.name}", self.release, ws)
        self.shared.clear()
        if self.lab is not None:
            if self.kept:
                self.lab.detach()
            else:
                cleanup.attempt(f"close lab {self.lab.name}", self.lab.close)
                self.lab = None
        if self._starter is not None:  # every machine it started is gone or kept
            self._starter.shutdown()
            self._starter = None
        if self._world_stack is not None and not self.kept:  # after the lab that used it
            cleanup.attempt("take the world down", self._world_stack.close)
            self._world = self._world_stack = None
        if self._state_root is not None and not self.kept and not self.options.state_dir:
            shutil.rmtree(self._state_root, ignore_errors=True)
        cleanup.raise_any()


def shared_key(scope: str, name: str | None, fields: dict[str, Any]) -> tuple[str, str]:
    return scope, repr((name, sorted(fields.items())))


def track(test: pytest.Item, ws: Workspace) -> None:
    """The test used ``ws``: its report shows it (the commands from now on: a shared
    workspace's earlier tests' are theirs), and --ws-keep=failed keeps it."""
    test.stash.setdefault(used_key, []).append(ws)
    test.stash.setdefault(since_key, {})[ws.name] = ws._ssh.commands_run if ws._ssh else 0


session_key = pytest.StashKey[WsSession]()
used_key = pytest.StashKey["list[Workspace]"]()
since_key = pytest.StashKey["dict[str, int]"]()  # per workspace: its first command's seq
failed_key = pytest.StashKey[bool]()  # the test's call failed
faults_key: pytest.StashKey[Faults] = pytest.StashKey()  # the test's ws_faults, for its report
