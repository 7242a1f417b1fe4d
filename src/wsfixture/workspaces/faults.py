"""A test's faults between the workspaces of one lab (the ``ws_faults`` fixture):
partitions, one-way blocks, loss, delay, jitter, rate and failing names, healed one by one
(each verb returns a context manager) or all at once (``heal``), and recorded as a
timeline for the failure report.

The faults live in the lab namespace (``net.faults``: a table of their own, and what needs
more than a table), listed in a ledger record with the helper processes they started
(``net.fault_agent``): ``gc`` heals what a killed session left. Every change rewrites the
rules from the faults that are active, the table's in one nft transaction, so two faults
that share a pair never undo each other.

``Faults.kept`` is the CLI's (``wsfixture fault``): its state in a file of the lab's, its
record owned by the lab's own owner, so the faults outlive the command that made them and
go with the lab.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from wsfixture.errors import FaultError, LabError
from wsfixture.host import ledger, system
from wsfixture.model import derive
from wsfixture.net import dnswire
from wsfixture.net import faults as rules
from wsfixture.retry import retry_until
from wsfixture.workspaces.fault import Fault

if TYPE_CHECKING:
    from wsfixture.net.lab import Lab
    from wsfixture.workspaces.handle import Workspace

_serials = itertools.count(1)
AGENT_START_TIMEOUT = 10.0
AGENT_STOP_GRACE = 2.0
BRIDGE_NETFILTER = "net.bridge.bridge-nf-call-iptables"


class Healing:
    """What a fault verb returns: heals that fault when its ``with`` block ends, or when
    ``heal()`` is called on it."""

    def __init__(self, faults: Faults, fault: Fault) -> None:
        self.faults = faults
        self.fault = fault

    def heal(self) -> None:
        self.faults.end(self.fault)

    def __enter__(self) -> Healing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.heal()


class Faults:
    """Faults between the workspaces of ``lab``; arguments are workspace handles or names."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.timeline: list[Fault] = []
        self._table: str | None = None
        self._record: ledger.Record | None = None
        self._kept_in: Path | None = None  # ``kept``: where the state is written
        self._owner: system.ProcessRef | None = None
        self._ports: set[str] = set()  # bridge ports shaped (rate) now
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # our helpers, to reap

    @classmethod
    def kept(cls, lab: Lab, path: Path, owner: system.ProcessRef) -> Faults:
        """The faults of ``lab`` kept in ``path`` between commands, owned by ``owner``."""
        faults = cls(lab)
        faults._kept_in, faults._owner = path, owner
        if path.exists():
            state = json.loads(path.read_text())
            faults.timeline = [Fault.from_json(f) for f in state["timeline"]]
            faults._table = state["table"]
            faults._ports = set(state["ports"])
            faults._record = next((r for r in ledger.records() if r.key == state["record"]), None)
        return faults

    @property
    def active(self) -> list[Fault]:
        return [f for f in self.timeline if f.ended is None]

    # -- the verbs ------------------------------------------------------------------------

    def partition(self, *groups: Sequence[Workspace | str]) -> Healing:
        """Workspaces in different groups exchange no packet, either way; others are
        unaffected. ``partition([a], [b, c])``."""
        if any(isinstance(group, str) for group in groups):
            raise FaultError("partition", repr(groups), "groups as lists: partition([a], [b, c])")
        named = [[self._address("partition", member) for member in group] for group in groups]
        rules.check_groups([[name for name, _ in group] for group in named])
        pairs = rules.partition_pairs([[ip for _, ip in group] for group in named])
        shown = " | ".join(", ".join(name for name, _ in group) for group in named)
        return self._start(Fault(f"partition {shown}", time.time(), pairs=pairs))

    def block(self, src: Workspace | str, dst: Workspace | str) -> Healing:
        """``src``'s packets to ``dst`` are dropped; ``dst``'s to ``src`` still arrive."""
        (src_name, src_ip), (dst_name, dst_ip) = (
            self._address("src", src),
            self._address("dst", dst),
        )
        if src_ip == dst_ip:
            raise FaultError("dst", repr(dst_name), f"another workspace than src ({src_name})")
        return self._start(Fault(f"block {src_name} -> {dst_name}", time.time(),
                                 pairs=[(src_ip, dst_ip)]))  # fmt: skip

    def shape(
        self, ws: Workspace | str, peer: Workspace | str | None = None, *,
        loss: float | str | None = None, delay: float | str | None = None,
        jitter: float | str | None = None, rate: float | str | None = None,
    ) -> Healing:  # fmt: skip
        """Degrade what ``ws`` exchanges with the other workspaces (or with ``peer`` only):
        ``loss`` percent (0-100) of what it sends and receives dropped; ``delay`` (+-
        ``jitter``) milliseconds added to each packet it sends, so once to every round
        trip; ``rate`` (bits per second, or ``"1mbit"``) the most it sends and the most it
        receives. Its traffic with the gateway (the test's channel, DNS) is left alone."""
        name, ip = self._address("ws", ws)
        peer_name, peer_ip = self._address("peer", peer) if peer is not None else (None, None)
        if peer_ip == ip:
            raise FaultError("peer", repr(peer_name), f"another workspace than ws ({name})")
        if jitter is not None and delay is None:
            raise FaultError("jitter", repr(jitter), "with a delay: delay=100, jitter=10")
        if loss is None and delay is None and rate is None:
            raise FaultError("shape", "with nothing to do", "loss=, delay= (jitter=) or rate=")
        percent = None if loss is None else rules.parse_loss(loss)
        delay_ms = None if delay is None else rules.parse_duration("delay", delay)
        jitter_ms = 0.0 if jitter is None else rules.parse_duration("jitter", jitter)
        bits = None if rate is None else rules.parse_rate(rate)
        what = [f"loss {percent:g}%" if percent is not None else "",
                f"delay {delay_ms:g}ms" if delay_ms is not None else "",
                f"jitter {jitter_ms:g}ms" if jitter else "",
                f"rate {rules.show_rate(bits)}" if bits is not None else ""]  # fmt: skip
        between = f" <-> {peer_name}" if peer_name else ""
        fault = Fault(f"{' '.join(w for w in what if w)} {name}{between}", time.time())
        if percent is not None:
            fault.loss.append((ip, peer_ip, percent))
        if bits is not None:
            self._port(name)  # refused now if it has none in this lab
            fault.rate.append((ip, peer_ip, bits))
        if delay_ms is not None:
            self._check_bridge_netfilter()
            queue = self._start_agent(fault, "delay", f"{delay_ms:g}", f"{jitter_ms:g}")
            fault.delay.append((ip, peer_ip, queue))
        return self._start(fault)

    def dns(self, name: str, mode: str) -> Healing:
        """The lab's DNS fails ``name`` (as written, letters in either case) for every
        workspace: ``nxdomain`` (no such name), ``servfail`` (the server failed) or
        ``timeout`` (no answer at all)."""
        rules.check_dns(name, mode)
        fault = Fault(f"dns {name} {mode}", time.time())
        rcode = rules.DNS_MODES[mode]
        port = None
        if rcode is not None:
            port = self._start_agent(fault, "dns", str(rcode), str(self.lab.network.gateway))
        fault.dns.append((name, port))
        return self._start(fault)

    def heal(self) -> None:
        """Every fault off: the rules and shaping gone, the helpers ended."""
        now = time.time()
        active = self.active
        for fault in active:
            fault.ended = now
        if self._record is not None:
            assert isinstance(self._record.info, ledger.FaultsInfo)
            ledger.delete_fault_table(self._record.info)
            self._ports.clear()
            for fault in active:
                self._stop_agents(fault)
            self._record.forget()
            self._record = self._table = None
        self._save()

    def end(self, fault: Fault) -> None:
        if fault.ended is None:
            fault.ended = time.time()
            self._apply()
            self._stop_agents(fault)

    def describe(self) -> str:
        """The timeline, a line each: what, from when to when (or "active")."""
        return "\n".join(f.line() for f in self.timeline)

    # -- below ----------------------------------------------------------------------------

    def _address(self, argument: str, target: Workspace | str) -> tuple[str, str]:
        """(name, address) of a workspace of this lab; FaultError naming ``argument``."""
        if isinstance(target, str):
            host = self.lab.hosts.get(target)
            if host is None:
                known = ", ".join(sorted(self.lab.hosts)) or "none"
                raise FaultError(argument, repr(target), f"a workspace of lab {self.lab.name}: "
                                 f"{known}")  # fmt: skip
            return target, host.ip
        if target.lab.name != self.lab.name:
            raise FaultError(argument, f"{target.name} (of lab {target.lab.name})",
                             f"a workspace of lab {self.lab.name}")  # fmt: skip
        return target.name, target.ip

    def _port(self, name: str) -> str:
        """The lab bridge's port of workspace ``name`` (its veth or its TAP)."""
        for port in derive.interface_names(name).values():
            if self.lab.run(["ip", "link", "show", "dev", port], check=False).strip():
                return port
        raise FaultError("ws", repr(name), "a workspace that is up (it has no port on the lab)")

    def _check_bridge_netfilter(self) -> None:
        """Delay needs bridged frames to pass iptables (``br_netfilter``), in the lab only."""
        if not self.lab.run(["sysctl", "-n", BRIDGE_NETFILTER], check=False).strip():
            raise FaultError(
                "delay",
                "on this kernel",
                "a kernel with CONFIG_BRIDGE_NETFILTER "
                "(br_netfilter: the delayer sees bridged frames through it)",
            )
        self.lab.sysctl(BRIDGE_NETFILTER, "1")

    def _start(self, fault: Fault) -> Healing:
        self.timeline.append(fault)
        try:
            self._apply()
        except BaseException:
            self.timeline.remove(fault)
            self._stop_agents(fault)
            raise
        return Healing(self, fault)

    def _apply(self) -> None:
        """The rules as the active faults make them: the table in one transaction, then
        the delays' queues, the shaped ports and the failed names."""
        name = self._ensure_table()
        active = self.active
        pairs = sorted({pair for fault in active for pair in fault.pairs})
        batch = rules.blocked(name, pairs) + f"flush chain bridge {name} shaped\n"
        for fault in active:
            for ip, peer, percent in fault.loss:
                batch += rules.loss_rules(name, ip, peer, percent)
        self.lab.run(["nft", "-f", "-"], input=batch)
        subnet, gateway = str(self.lab.network.subnet), str(self.lab.network.gateway)
        delays = [rules.Delay(*d) for fault in active for d in fault.delay]
        if any(fault.delay for fault in self.timeline):  # its chain made, or to be
            self._apply_delays(name, subnet, delays)
        self._apply_rates(gateway, subnet, [rules.Rate(*r) for f in active for r in f.rate])
        failures = [rules.DnsFailure(dnswire.encode_name(dns_name), port)
                    for fault in active for dns_name, port in fault.dns]  # fmt: skip
        if any(fault.dns for fault in self.timeline):  # its table made, or to be
            self.lab.run(["nft", "-f", "-"], input=rules.dns_table(
                name, self.lab.network.bridge, gateway, failures))  # fmt: skip
        self._save()

    def _apply_delays(self, name: str, subnet: str, delays: list[rules.Delay]) -> None:
        chain = derive.fault_queue_chain(name)
        self.lab.run(["iptables-legacy-restore", "--noflush"],
                     input=rules.delay_rules(chain, subnet, delays))  # fmt: skip
        if f"-j {chain}" not in self.lab.run(["iptables-legacy", "-S", "FORWARD"]):
            self.lab.run(["iptables-legacy", "-I", "FORWARD", "-j", chain])

    def _apply_rates(self, gateway: str, subnet: str, rates: list[rules.Rate]) -> None:
        """Each shaped port made anew from ``rates``; a port no longer shaped let go."""
        by_port: dict[str, list[rules.Rate]] = {}
        for rate in rates:
            by_port.setdefault(self._port(self._name_of(rate.ip)), []).append(rate)
        for port in sorted(self._ports | set(by_port)):  # each made anew, IFB and all
            ledger.unshape_port(self.lab.name, port)
            if port in by_port:
                ifb = derive.ifb_name(port)
                self.lab.ip_batch(f"link add {ifb} type ifb\nlink set {ifb} up")
                shaping = rules.rate_batch(port, gateway, subnet, by_port[port])
                self.lab.run(["tc", "-batch", "-"], input=shaping)
        if set(by_port) != self._ports and self._record is not None:  # for gc: which to unshape
            assert isinstance(self._record.info, ledger.FaultsInfo)
            self._record.info = dataclasses.replace(self._record.info, ports=sorted(by_port))
            self._record.save()
        self._ports = set(by_port)

    def _name_of(self, ip: str) -> str:
        return next(h.name for h in self.lab.hosts.values() if h.ip == ip)

    # -- helpers ----------------------------------------------------------------------------

    def _start_agent(self, fault: Fault, *args: str) -> int:
        """A helper (``net.fault_agent``) in the lab for ``fault``, listed in the record
        so gc ends it; returns the queue or port it took."""
        self._ensure_table()
        kept = self._kept_in is not None  # the CLI's: it outlives this command
        process = system.popen_lasting(
            self.lab.exec_argv([sys.executable, "-m", "wsfixture.net.fault_agent", *args]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=None if kept else system.set_parent_death_signal,
            start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        assert self._record is not None
        ready = select.select([process.stdout], [], [], AGENT_START_TIMEOUT)[0]
        line = process.stdout.readline().decode() if ready else ""
        ref = system.ProcessRef.of(process.pid)
        if not line.startswith("ready ") or ref is None:
            system.end_process(process, 0.0)
            raise LabError(
                self.lab.name,
                f"the fault helper {' '.join(args)} did not start",
                (process.stderr.read() if process.stderr else b"").decode()[-2000:],
            )
        if kept:
            process.stdout.close()
            assert process.stderr is not None
            process.stderr.close()
        else:
            self._children[process.pid] = process
        fault.agents.append(ref.to_json())
        self._record.add_process(ref)
        return int(line.split()[1])

    def _stop_agents(self, fault: Fault) -> None:
        """End ``fault``'s helpers (a delayer lets go of what it holds first)."""
        for data in fault.agents:
            ref = system.ProcessRef.from_json(data)
            child = self._children.pop(ref.pid, None)
            if child is not None:
                system.end_process(child, AGENT_STOP_GRACE)
            elif ref.signal(signal.SIGTERM):  # the CLI's: another process's child
                ended = _ended(ref)
                if retry_until(ended, AGENT_STOP_GRACE) is None:
                    ref.signal(signal.SIGKILL)
            if self._record is not None:
                self._record.drop_process(ref)
        fault.agents = []

    def _save(self) -> None:
        if self._kept_in is None:
            return
        if self._record is None:
            self._kept_in.unlink(missing_ok=True)
            return
        state = {"table": self._table, "record": self._record.key, "ports": sorted(self._ports),
                 "timeline": [dataclasses.asdict(f) for f in self.timeline]}  # fmt: skip
        system.write_atomic(self._kept_in, json.dumps(state), 0o600)

    def _ensure_table(self) -> str:
        if self._table is None:
            name = rules.table_name(os.getpid(), next(_serials))
            self._record = ledger.Record.create(
                f"faults-{self.lab.name}-{name}", ledger.FaultsInfo(self.lab.name, name)
            )
            if self._owner is not None:  # they go with the lab, not with this process
                self._record.owner = self._owner
                self._record.save()
            self.lab.run(["nft", "-f", "-"], input=rules.table(name))
            self._table = name
        return self._table


def _ended(ref: system.ProcessRef) -> Callable[[bool], bool | None]:
    """A ``retry_until`` check: True once ``ref`` has ended."""
    return lambda _: None if ref.alive() else True
