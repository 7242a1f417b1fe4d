"""Workspaces from Python outside pytest (a script, a notebook, an agent runner): one in a
line, several in a lab of their own, and a handle on one that ``wsfixture up`` started.

    with wsfixture.workspace(type="vm", packages=["git"]) as ws:
        ws.succeed("git --version")

    with wsfixture.Lab() as lab:
        db, app = lab.workspace("db"), lab.workspace(type="vm")

    with wsfixture.connect("dev", "workspaces.toml") as ws:  # left running at the end
        ws.succeed("uptime")

Each works from any thread: what they start is forked by the process's own long-lived
thread (``host.system.popen_lasting``), so it lives until it is stopped, or until this
process ends, never with the thread that asked for it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Self

from wsfixture.cli import control
from wsfixture.cli.lookup import live_supervisor
from wsfixture.cli.persistent import handle_on_running
from wsfixture.errors import ConfigError, ConfigIssue, LabError, WorkspacePaused
from wsfixture.host import settings
from wsfixture.model.config import Config, NetworkSpec, load_config, override, workspace_spec
from wsfixture.model.spec import Defaults
from wsfixture.net import lab as labs
from wsfixture.suggest import unknown_workspace
from wsfixture.workspaces import Workspace, WorkspaceState
from wsfixture.workspaces.checkpoint_store import Checkpoint

CONFIG_ENV = "WSFIXTURE_CONFIG"
LAB_PREFIX = "wspy"  # the labs this API makes are named wspy-<hex>
DEFAULT_CONFIG = "workspaces.toml"  # the CLI's default too


class Lab(labs.Lab):
    """A lab of its own: a network namespace with its bridge and DNS, and the workspaces
    ``workspace()`` starts in it; ``close()`` (the ``with`` block's end) stops them and
    removes it all.

    ``config``: the workspaces' defaults and the network (a ``Config``, or a
    ``NetworkSpec`` alone); its named workspaces can be started by name. The state (keys,
    checkpoints) lives under ``state_root`` if given, else under the config's own if it
    names one, else in a directory made for the lab and removed with it: then nothing
    inside its workspaces is wanted once they stop but what they wrote to their shares,
    and they are stopped as the pytest plugin stops a test's (``Workspace.stop``'s
    ``discard``: a VM's guest writes out what it holds for its shares and is ended
    without its shutdown)."""

    def __init__(
        self,
        config: Config | NetworkSpec | None = None,
        name: str | None = None,
        *,
        state_root: str | Path | None = None,
        internet: bool | None = None,
        shared: bool = False,
        die_with_owner: bool = True,
    ) -> None:
        if isinstance(config, NetworkSpec):
            config = Config(network=config)
        self.config = config or Config()
        self._throwaway = state_root is None and (
            self.config.defaults.state_root == Defaults().state_root
        )
        if state_root is not None:
            self.config = self.config.with_state_root(Path(state_root))
        network = self.config.network
        wanted = network.internet not in (None, False) if internet is None else internet
        super().__init__(network, name or labs.new_lab_name(LAB_PREFIX), shared=shared,
                         die_with_owner=die_with_owner, internet=wanted)  # fmt: skip
        self.workspaces: list[Workspace] = []
        self._names = itertools.count(1)

    def __enter__(self) -> Self:
        self.open()
        return self

    def open(self) -> Self:
        super().open()
        if self._throwaway and self.state is labs.LabState.OWNED:
            root = settings.current().lib_dir / "state" / self.name  # beside the labs
            root.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys: root's alone
            self.adopt_dir(root)  # removed with the lab, by gc for a killed process too
            self.config = self.config.with_state_root(root)
        return self

    def workspace(
        self, name: str | None = None, *, like: str | None = None, **fields: Any
    ) -> Workspace:
        """Start a workspace in this lab and return its handle once it is ready: one of
        the config's by ``name`` (``fields`` override its own), or a new one from
        ``fields`` (``type="vm"``, ``packages=[...]``, ...; a container by default; with
        ``like``, the config's workspace of that name is the rest), with the next free
        address unless ``ip`` is given. It stops with the lab, or before with ``stop()``."""
        if self.state is labs.LabState.NEW:
            self.open()
        if self.state is not labs.LabState.OWNED:
            raise LabError(self.name, f"cannot start a workspace in a lab that is "
                           f"{self.state.value}")  # fmt: skip
        config = self.config
        if name is not None and name in config.workspaces and like is None:
            spec = override(config, config.workspaces[name], **fields)
        else:
            if like is not None:
                if like not in config.workspaces:
                    raise ConfigError(
                        [
                            ConfigIssue(
                                "like",
                                "is not a workspace of the config",
                                like,
                                ", ".join(config.workspaces),
                            )
                        ]
                    )
                shaped = config.workspaces[like].to_dict()
                for own in ("ip", "forwards"):  # its own: one workspace holds them
                    shaped.pop(own, None)
                fields = {**shaped, **fields}
            fields.setdefault("type", "container")
            if "ip" not in fields:
                declared = {str(s.ip) for s in config.workspaces.values()}
                fields["ip"] = self.free_ip(declared | {w.ip for w in self.workspaces})
            spec = workspace_spec(config, name=name or self._fresh_name(), **fields)
        ws = Workspace(spec, config, self, discard_at_stop=self._throwaway)
        self.workspaces.append(ws)
        try:
            return ws.start()
        except BaseException:
            self.workspaces.remove(ws)
            raise

    def close(self) -> None:
        """Stop this lab's workspaces (the last started first), then remove the lab."""
        if self.state is labs.LabState.CLOSED:
            return
        try:
            for ws in reversed(self.workspaces):
                if ws.state is WorkspaceState.OWNED:
                    ws.stop()
        finally:
            self.workspaces.clear()
            super().close()

    def _fresh_name(self) -> str:
        taken = set(self.config.workspaces) | {w.name for w in self.workspaces}
        return next(n for n in (f"ws{i}" for i in self._names) if n not in taken)


def workspace(
    name: str | None = None,
    *,
    config: Config | None = None,
    state_root: str | Path | None = None,
    **fields: Any,
) -> Workspace:
    """One workspace in a lab of its own, started and ready; ``stop()`` (the ``with``
    block's end) takes down the workspace, the lab and the state made for them.
    ``fields`` as in the config (``type="vm"``, ``packages=["git"]``, ``memory=2048``)."""
    lab = Lab(config, state_root=state_root)
    try:
        ws = lab.workspace(name, **fields)
    except BaseException:
        lab.close()
        raise
    ws._on_stop(lab.close)
    return ws


def connect(name: str, config: Config | str | Path | None = None) -> Workspace:
    """A handle on workspace ``name``, started with ``wsfixture up`` from ``config`` (a
    path, or ``$WSFIXTURE_CONFIG``, or ``./workspaces.toml``): commands and copies through
    its pinned login; checkpoints, rollbacks, pause and resume through its supervisor.
    Closing it (``stop()``, the ``with`` block's end) leaves the workspace running."""
    if not isinstance(config, Config):
        config = load_config(config or os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    if name not in config.workspaces:
        message = unknown_workspace([name], list(config.workspaces), f" in {config.source}")
        raise ConfigError([ConfigIssue("name", message)], config.source)
    supervisor = live_supervisor(name, config.network.namespace)
    ws = handle_on_running(config, name, Connected)
    ws._supervisor = supervisor
    return ws


class Connected(Workspace):
    """A handle on a workspace that its supervisor (``wsfixture up``) runs: what needs the
    machine itself (checkpoints, rollbacks, pause, resume) is asked of the supervisor
    (``cli.control``); the rest goes through the pinned login, as for any handle."""

    def _ask(self, verb: str, **arguments: Any) -> dict[str, Any]:
        return control.request(self.lab.name, self.name, verb, **arguments)

    def checkpoint(self, tag: str | None = None) -> Checkpoint:
        made = self._ask("checkpoint", tag=tag)["result"]
        return self._checkpointing.store.find(str(made["tag"]))

    def rollback(self, to: str | Checkpoint) -> None:
        self._ask("rollback", tag=to if isinstance(to, str) else to.tag)
        self._drop_session()  # the machine was restored: the next command logs in anew

    def delete_checkpoint(self, to: str | Checkpoint) -> None:
        self._ask("delete", tag=to if isinstance(to, str) else to.tag)

    def pause(self) -> None:
        self._ask("pause")
        if self._ssh is not None:
            self._ssh.refusal = WorkspacePaused(self.name)

    def resume(self) -> None:
        self._ask("resume")
        if self._ssh is not None:
            self._ssh.refusal = None


__all__ = ["Connected", "Lab", "connect", "workspace"]
