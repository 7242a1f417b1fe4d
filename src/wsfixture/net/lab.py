"""The lab: a network namespace of our own that holds the bridge, the DNS and the workspaces.

Nothing is added to the root namespace. The test process reaches a workspace through a
socket opened inside the lab (``Lab.connect``); people reach it through the generated
``ssh_config``, whose ProxyCommand relays into the lab.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from wsfixture.cleanup import Cleanup
from wsfixture.errors import ConfigError, ConfigIssue, LabError
from wsfixture.host import ledger, settings, system
from wsfixture.model import derive
from wsfixture.model.config import NetworkSpec
from wsfixture.net import dns, egress, guard, labfiles, uplink
from wsfixture.net.labfiles import LabHost
from wsfixture.net.netns import Netns

# Neighbour resolution retries every second by default: a connect to an address that is
# not up yet then stalls for a second or more. In our own namespace we retry fast instead.
NEIGH_RETRANS_MS = 50


class LabState(enum.Enum):
    """Where a ``Lab`` handle stands, and so what ``close()`` does."""

    NEW = "new"  # nothing made yet
    OWNED = "owned"  # this handle made it: close() removes it
    ATTACHED = "attached"  # another process made it (a shared lab found by name): left be
    DETACHED = "detached"  # made here, then left to outlive this process: left be
    CLOSED = "closed"  # removed, or let go


def new_lab_name(prefix: str = "wsf") -> str:
    """A fresh, unique lab name (also the netns name)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Lab(Netns):
    """A network namespace with a bridge, DNS on the gateway, hosts file and ssh_config.

    Use it as a context manager; closing it removes everything it made.
    """

    def __init__(
        self,
        network: NetworkSpec,
        name: str | None = None,
        *,
        shared: bool = False,
        die_with_owner: bool = True,
        internet: bool = False,
    ) -> None:
        super().__init__(name or new_lab_name())
        self.network = network
        # Shared by several processes (the CLI's persistent lab): opening finds it by name
        # if it exists, and its hosts are its workspaces' ledger records, changed under a lock.
        self.shared = shared
        self.die_with_owner = die_with_owner
        # Egress through a userspace uplink (net.uplink), which runs in the root namespace
        # or in network.uplink_namespace.
        self.internet = internet
        self.uplink = uplink.plan(network.subnet) if internet else None
        self.dir = settings.current().labs_dir / self.name
        self.etc_dir = settings.NETNS_ETC / self.name
        self.hosts_file = self.etc_dir / "hosts"
        self.known_hosts = self.dir / "known_hosts"
        self.ssh_config = self.dir / "ssh_config"
        self.client_key: Path | None = None
        self.hosts: dict[str, LabHost] = {}
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._uplink: subprocess.Popen[bytes] | None = None
        self._offline_dns: subprocess.Popen[bytes] | None = None
        self._record: ledger.Record | None = None
        self._lock = threading.Lock()
        self.state = LabState.NEW

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Lab:
        system.require_root()
        system.require_tool("ip")
        if self.network.dns:
            system.require_tool("dnsmasq")
        if self.state is not LabState.NEW:
            raise LabError(self.name, f"cannot open a lab handle that is {self.state.value}")
        if self.shared and self.netns_path.exists():
            return self._attach()
        self._record = ledger.Record.create(
            f"lab-{self.name}", ledger.LabInfo(self.name, self.internet)
        )
        self.state = LabState.OWNED
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        assert self._record is not None
        self._record.add_dir(self.dir)
        system.private_dir(self.dir)
        self._record.add_netns(self.name)
        system.run(["ip", "netns", "add", self.name])
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        self._write_hosts()
        gw = f"{self.network.gateway}/{self.network.subnet.prefixlen}"
        bridge = self.network.bridge
        batch = "\n".join(
            [
                "link set lo up",
                # Its own MAC, set (derive.bridge_mac): else ports coming and going change it.
                f"link add {bridge} address {derive.bridge_mac(self.name)} type bridge "
                "forward_delay 0",
                f"addr add {gw} dev {bridge}",
                f"link set {bridge} up",
                # Our sockets live in the lab, so its route decides how they ACK. Without
                # quickack, a delayed ACK meets sshd's Nagle on the first channel of every
                # connection: 45 ms of each workspace's readiness went there.
                f"route replace {self.network.subnet} dev {bridge} proto kernel scope link "
                f"src {self.network.gateway} quickack 1",
            ]
        )
        self.ip_batch(batch)
        self.run([system.require_tool("nft"), "-f", "-"], input=guard.table())
        self.sysctl(f"net.ipv4.neigh.{bridge}.retrans_time_ms", str(NEIGH_RETRANS_MS))
        # A workspace's root may send router advertisements: the lab takes no address or
        # route from them (one made the lab route through a workspace).
        self.sysctl(f"net.ipv6.conf.{bridge}.accept_ra", "0")
        # Without internet the lab forwards nothing: workspaces reach each other on the bridge.
        self.sysctl("net.ipv4.ip_forward", "1" if self.uplink else "0")
        # dnsmasq first: a shared lab's other users find it as the record's first process.
        if self.network.dns:
            self._start_dns()
        if self.uplink is not None:
            self._start_uplink(self.uplink)
            if self.network.dns:
                self._start_offline_resolver()

    def _start_uplink(self, plan: uplink.Uplink) -> None:
        assert self._record is not None
        system.require_tool("nft")
        via = self.network.uplink_namespace
        if via is not None and not (settings.NETNS_RUN / via).exists():
            raise LabError(self.name, f"network.uplinkNamespace {via!r} does not exist")
        log = self.dir / "uplink.log"
        process, ready = uplink.launch(self.netns_path, plan, log, via, self.die_with_owner)
        self._uplink = process
        ref = system.ProcessRef.of(process.pid)
        if ref is not None:
            self._record.add_process(ref)
        # The lab's NAT rules while slirp4netns starts: both take milliseconds.
        rules = uplink.nat_rules(
            self.network.subnet, self.network.bridge, str(self.network.gateway),
            uplink.own_addresses(via),
        )  # fmt: skip
        try:
            self.run(["nft", "-f", "-"], input=rules)
        finally:
            uplink.wait_ready(process, ready, log)

    def _attach(self) -> Lab:
        """Reuse a lab that a previous command created and left running."""
        self._record = ledger.lab_record(self.name)
        if self._record is not None and isinstance(self._record.info, ledger.LabInfo):
            self.internet = self._record.info.internet  # as its maker opened it
            self.uplink = uplink.plan(self.network.subnet) if self.internet else None
        self.state = LabState.ATTACHED  # another process made it; `wsfixture down` removes it
        self._load_hosts()
        return self

    def detach(self) -> None:
        """Let the lab outlive this process: dnsmasq becomes its owner in the ledger, so
        ``gc`` leaves it alone while it runs. ``close`` then removes nothing."""
        if self.state is not LabState.OWNED:
            return
        if self._record is not None and self._record.processes:
            self._record.owner = self._record.processes[0]
            self._record.save()
        self.state = LabState.DETACHED

    def adopt_dir(self, path: Path) -> None:
        """``path`` goes with the lab: removed when the lab is, by ``gc`` too (a test
        session's temporary state root, private keys included)."""
        assert self._record is not None, "only a lab this handle made adopts directories"
        self._record.add_dir(path)

    def close(self) -> None:
        """Remove the namespace, DNS, hosts file and runtime directory if this handle owns
        the lab; let go of it otherwise."""
        if self.state is LabState.OWNED:
            self.destroy()
        self.state = LabState.CLOSED

    def destroy(self) -> None:
        cleanup = Cleanup()
        for process in (self._dnsmasq, self._offline_dns, self._uplink):  # our children
            if process is not None:
                cleanup.attempt(f"end pid {process.pid}", system.end_process, process)
        self._dnsmasq = self._offline_dns = self._uplink = None
        if self._record is not None:
            cleanup.add(ledger.release(self._record))
            self._record = None
        self.state = LabState.CLOSED
        cleanup.raise_any()

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- DNS, hosts, ssh_config ----------------------------------------------------------

    def _start_dns(self) -> None:
        assert self._record is not None
        upstream = str(self.uplink.dns) if self.uplink else None
        self._dnsmasq = dns.start(
            self, self.network.gateway, self.hosts_file, self.dir, upstream, self.die_with_owner
        )
        ref = system.ProcessRef.of(self._dnsmasq.pid)
        if ref is not None:
            self._record.add_process(ref)

    def _start_offline_resolver(self) -> None:
        """The resolver of the lab's offline workspaces: lab names only, no upstream
        (``uplink.offline_change`` sends their DNS to it)."""
        assert self._record is not None
        gateway, port = str(self.network.gateway), egress.OFFLINE_RESOLVER_PORT
        log = self.dir / "offline-dns.log"
        argv = dns.dnsmasq_argv(
            gateway, self.hosts_file, self.dir, None, port, "offline-dns", watched=True
        )
        resolver = dns.start_process(self, argv, log, self.die_with_owner)
        ref = system.ProcessRef.of(resolver.pid)
        if ref is not None:
            self._record.add_process(ref)
        self._offline_dns = resolver
        dns.wait_answering(self, resolver, gateway, port, log)

    def _reload_dns(self) -> None:
        """Make dnsmasq re-read the hosts file (it may belong to another process)."""
        if self.network.dns:
            owner = self._record.processes[0] if self._record and self._record.processes else None
            dns.reload(self._dnsmasq, owner)

    def set_client_key(self, private_key: Path) -> None:
        self.client_key = private_key

    @contextlib.contextmanager
    def _hosts_locked(self) -> Iterator[bool]:
        """Serialise hosts changes; across processes for a shared lab, whose hosts
        are whatever its workspaces' ledger records say. Yields whether the lab still
        exists: a shared lab can be gone already (the last ``down``, or ``gc --lab``)."""
        with self._lock:
            if not self.shared:
                yield True
                return
            # flock on the lab directory itself: a lock file would outlive the lab, and
            # would even recreate its directory when the lab is already gone.
            try:
                fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                yield False
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                present = self.dir.exists() and self.etc_dir.exists()
                if present:
                    self._load_hosts()
                yield present
            finally:
                os.close(fd)

    def ensure_free(self, name: str, ip: str) -> None:
        """ConfigError, before anything is made, when a live workspace of this lab already
        has ``name`` or ``ip``: booting it would fail only after the whole ready timeout."""
        with self._hosts_locked():
            hosts = list(self.hosts.values())
        issues = [
            ConfigIssue(
                "workspace.name", f"is already used by a running workspace in lab {self.name}", name
            )
            for host in hosts
            if host.name == name
        ]
        issues += [
            ConfigIssue(
                "workspace.ip", f"is already used by workspace {host.name} in lab {self.name}", ip
            )
            for host in hosts
            if host.ip == ip and host.name != name
        ]
        if issues:
            raise ConfigError(issues)

    def add_host(self, host: LabHost, online: bool = True) -> None:
        """Let the lab know a workspace: DNS, known_hosts, ssh_config; and, in a lab with
        internet, whether it may use it (``online``)."""
        with self._hosts_locked() as present:
            if not present:
                raise LabError(self.name, f"was removed meanwhile; cannot add {host.name}")
            self.hosts[host.name] = host
            self._write_hosts()
        self._reload_dns()
        if self.uplink is not None and not online:
            batch = uplink.offline_change(host.ip, str(self.network.gateway), offline=True)
            self.run(["nft", "-f", "-"], input=batch)

    def guard_port(self, ifname: str, mac: str, ip: str) -> None:
        """Admit only ``mac`` and ``ip`` from bridge port ``ifname`` (``net.guard``); call
        before the port joins the bridge."""
        self.run(["nft", "-f", "-"], input=guard.add_port(ifname, mac, ip))

    def unguard_port(self, ifname: str) -> None:
        """Drop a port's filter once the port is gone (a lab being removed has none)."""
        self.run(["nft", "-f", "-"], input=guard.remove_port(ifname), check=False)

    def check_internet(self, name: str, wanted: bool | tuple[str, ...] | None) -> bool:
        """Whether workspace ``name`` gets the uplink: as it asks (true, or an allowlist),
        or as its lab has it. Asking for it where the lab has none is a ConfigError, before
        anything is made."""
        asks = wanted is not None and wanted is not False
        if asks and not self.internet:
            what = "is true" if wanted is True else "is an allowlist"
            raise ConfigError([ConfigIssue(
                f"workspaces.{name}.internet", f"{what}, but lab {self.name} has no internet",
                wanted, "network.internet = true or a list (pytest labs are off unless they ask)",
            )])  # fmt: skip
        return self.internet if wanted is None else asks

    def remove_host(self, name: str) -> None:
        with self._hosts_locked() as present:
            if not present:
                return  # the lab went first, and its hosts with it
            host = self.hosts.pop(name, None)
            self._write_hosts()
        self._reload_dns()
        if host is not None:
            self.forget_neighbour(host.ip)
            if self.uplink is not None:
                batch = uplink.offline_change(host.ip, str(self.network.gateway), offline=False)
                self.run(["nft", "-f", "-"], input=batch, check=False)

    def _write_hosts(self) -> None:
        """Rewrite hosts file, known_hosts and ssh_config from ``self.hosts``."""
        hosts = sorted(self.hosts.values(), key=lambda h: h.name)
        system.write_atomic(self.hosts_file, labfiles.hosts_text(self.name, hosts))
        if not self.dir.exists():
            return
        system.write_atomic(self.known_hosts, labfiles.known_hosts_text(hosts), 0o600)
        paths = labfiles.SshPaths(
            self.dir, self.ssh_config, self.known_hosts, self.client_key, self.netns_path,
            sys.executable,
        )  # fmt: skip
        system.write_atomic(
            self.ssh_config, labfiles.ssh_config_text(self.name, hosts, paths), 0o600
        )

    def _load_hosts(self) -> None:
        """Rebuild ``self.hosts`` from the ledger records of the lab's workspaces."""
        self.hosts.clear()
        for name, record in ledger.workspaces(self.name).items():
            info = ledger.workspace_info(record)
            if info.host_key:
                self.hosts[name] = LabHost(name, info.ip, info.user, info.host_key)

    def free_ip(self, taken: set[str]) -> str:
        """The first usable address not in ``taken`` nor held by a workspace of this lab."""
        used = taken | {h.ip for h in self.hosts.values()}
        for address in self.network.usable():
            if str(address) not in used:
                return str(address)
        raise LabError(self.name, f"no free address in {self.network.subnet}")
