"""The verification suite: does a workspace really work as promised?

Each check takes a ready ``Workspace`` and raises ``CheckFailed`` with what it found. The
pytest plugin (``--ws-verify``) makes one test item per (workspace, check), the CLI's
``check`` prints them as a table, so every failing check is reported, not only the first.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from wsfixture.errors import WsfixtureError
from wsfixture.guest import identity, osconfig
from wsfixture.model import derive
from wsfixture.remote import SSH_PORT

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace


class CheckSkipped(Exception):  # an outcome, not an error: not under WsfixtureError
    """The check does not apply to this workspace; the message says why."""


class CheckFailed(WsfixtureError, AssertionError):
    """A verification check found the workspace not as promised."""


def _expect(condition: bool, message: str) -> None:
    __tracebackhide__ = True
    if not condition:
        raise CheckFailed(message)


def _out(ws: Workspace, command: str) -> tuple[int, str]:
    rc, out, err = ws.run(command)
    return rc, (out + err).strip()


# -- networking ---------------------------------------------------------------------------


def check_address(ws: Workspace) -> None:
    """The configured address is on an interface."""
    prefix = ws.config.network.subnet.prefixlen
    _, out = _out(ws, "ip -o -4 addr show")
    _expect(f"{ws.ip}/{prefix}" in out, f"{ws.ip}/{prefix} is not configured; addresses:\n{out}")


def check_route(ws: Workspace) -> None:
    """The default route goes via the lab gateway, and the gateway answers."""
    gateway = str(ws.config.network.gateway)
    _, out = _out(ws, "ip -4 route show default")
    _expect(f"via {gateway}" in out, f"no default route via {gateway}; routes: {out!r}")
    rc, out = _out(ws, f"ping -c 1 -W 2 {gateway}")
    _expect(rc == 0, f"gateway {gateway} does not answer ping: {out}")


def check_resolv_conf(ws: Workspace) -> None:
    """/etc/resolv.conf is resolved's stub, through which the lab DNS answers (a layer
    that left another file there would send lookups elsewhere, or nowhere)."""
    _, out = _out(ws, "readlink -f /etc/resolv.conf")
    stub = "/run/systemd/resolve/stub-resolv.conf"
    _expect(out.strip() == stub, f"/etc/resolv.conf is {out.strip()!r}, expected a link to {stub}")


def check_dns(ws: Workspace) -> None:
    """Every workspace of the lab resolves by both its names through the lab DNS."""
    if not ws.config.network.dns:
        raise CheckSkipped("the lab has no DNS (network.dns = false)")
    for host in ws.lab.hosts.values():
        for name in derive.hostnames(host.name):
            _, out = _out(ws, f"getent hosts {shlex.quote(name)}")
            _expect(out.split()[:1] == [host.ip], f"{name} resolves to {out!r}, expected {host.ip}")


# -- ssh ----------------------------------------------------------------------------------


def check_host_key(ws: Workspace) -> None:
    """The host key sshd presents is the persisted one that known_hosts pins."""
    assert ws._ssh is not None
    transport = ws._ssh.client().get_transport()
    assert transport is not None
    presented = transport.get_remote_server_key()
    pinned = ws._ssh.host_key.split()
    _expect(
        [presented.get_name(), presented.get_base64()] == pinned[:2],
        f"sshd presents {presented.get_name()} {presented.get_base64()}, pinned {pinned[:2]}",
    )
    persisted = (ws.state_dir / "ssh-host-keys" / "ssh_host_ed25519_key.pub").read_text()
    _expect(persisted.split()[:2] == pinned[:2], "pinned key differs from the persisted key")


def check_client_login(ws: Workspace) -> None:
    """The client key logs in as the workspace user."""
    _, out = _out(ws, "id -un")
    _expect(out == ws.user, f"logged in as {out!r}, expected {ws.user!r}")


def check_password_refused(ws: Workspace) -> None:
    """sshd offers no password authentication."""
    sock = ws.lab.connect(ws.ip, SSH_PORT, 10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        try:
            transport.auth_none(ws.user)
            allowed: list[str] = []
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
        _expect(allowed == ["publickey"], f"sshd allows {allowed}, expected only publickey")
    finally:
        transport.close()


# -- hosts --------------------------------------------------------------------------------


def check_hosts_file(ws: Workspace) -> None:
    """The lab's hosts file lists every workspace, and names resolve on the lab side."""
    text = ws.lab.hosts_file.read_text()
    for host in ws.lab.hosts.values():
        line = derive.hosts_line(host.name, host.ip)
        _expect(line in text.splitlines(), f"{line!r} missing from {ws.lab.hosts_file}")
    for name in derive.hostnames(ws.name):
        found = ws.lab.resolve(name)
        _expect(found == ws.ip, f"lab side resolves {name} to {found!r}, expected {ws.ip}")


# -- doas ---------------------------------------------------------------------------------


def check_doas_user(ws: Workspace) -> None:
    """The workspace user runs commands as root through doas without a password."""
    rc, out = _out(ws, "doas -n id -u")
    _expect(rc == 0 and out == "0", f"doas -n id -u gave rc {rc}: {out!r}")


def check_doas_others(ws: Workspace) -> None:
    """No other user may use doas (unless the image's own rules say so), and the workspace
    user's rule is there."""
    rc, out = _out(ws, "doas -n runuser -u nobody -- doas -n true")
    _expect(rc != 0, f"user nobody could use doas: {out!r}")
    _, conf = _out(ws, "doas -n cat /etc/doas.conf")
    rules = [line for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    _expect(identity.doas_rule(ws.user) in rules, f"no doas rule for {ws.user}: {rules}")


# -- services -----------------------------------------------------------------------------


def check_services(ws: Workspace) -> None:
    """What every image enables (networkd, resolved, sshd) is active, and no unit failed."""
    for unit in osconfig.ENABLED_UNITS:
        _, state = _out(ws, f"systemctl is-active {unit}")
        _expect(state == "active", f"{unit} is {state!r}")
    _, failed = _out(ws, "systemctl --failed --no-legend --plain")
    _expect(failed == "", f"failed units:\n{failed}")


@dataclass(frozen=True)
class Check:
    group: str
    name: str
    run: Callable[[Workspace], None]

    @property
    def id(self) -> str:
        return f"{self.group}:{self.name}"

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip()


CHECKS: tuple[Check, ...] = (
    Check("networking", "address", check_address),
    Check("networking", "route", check_route),
    Check("networking", "resolv-conf", check_resolv_conf),
    Check("networking", "dns", check_dns),
    Check("ssh", "host-key", check_host_key),
    Check("ssh", "client-login", check_client_login),
    Check("ssh", "password-refused", check_password_refused),
    Check("hosts", "hosts-file", check_hosts_file),
    Check("doas", "user", check_doas_user),
    Check("doas", "others", check_doas_others),
    Check("services", "active", check_services),
)


class Result(enum.StrEnum):
    """How a check went; the value is what tables and JSON show."""

    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Outcome:
    workspace: str
    check: Check
    result: Result
    detail: str

    @property
    def ok(self) -> bool:
        """Nothing wrong: passed, or not applicable (skipped, with the reason)."""
        return self.result is not Result.FAIL


def verify(ws: Workspace, say: Callable[[str], None] | None = None) -> list[Outcome]:
    """Run every check on ``ws``; collect outcomes instead of stopping at the first.
    ``say`` hears which check runs (a hung lookup is then named while it hangs)."""
    outcomes = []
    for check in CHECKS:
        if say is not None:
            say(f"{check.id}: {check.doc.splitlines()[0] if check.doc else ''}")
        try:
            check.run(ws)
            outcomes.append(Outcome(ws.name, check, Result.OK, ""))
        except CheckSkipped as skipped:
            outcomes.append(Outcome(ws.name, check, Result.SKIPPED, str(skipped)))
        except Exception as exc:
            outcomes.append(Outcome(ws.name, check, Result.FAIL, f"{type(exc).__name__}: {exc}"))
    return outcomes
