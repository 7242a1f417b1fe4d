"""A lab's DNS: dnsmasq on the gateway, answering from the lab's hosts file and forwarding
outside names only to the uplink's resolver (refusing them when there is none)."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
from pathlib import Path

from wsfixture.errors import LabError
from wsfixture.host import system
from wsfixture.net import egress
from wsfixture.net.netns import Netns
from wsfixture.retry import retry_until

START_TIMEOUT = 5.0


def dnsmasq_argv(
    gateway: str, hosts_file: Path, lab_dir: Path, upstream: str | None, port: int = 53,
    name: str = "dnsmasq", watched: bool = False,
) -> list[str]:  # fmt: skip
    """A lab resolver on ``gateway:port`` (``name``: its pid and log files in the lab
    directory); without ``upstream``, lab names only. It re-reads the hosts file on SIGHUP
    (``reload``: the lab's own), or, ``watched``, whenever its directory changes."""
    return [
        system.require_tool("dnsmasq"),
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",  # no upstream but the uplink's: without one, outside names are refused
        *([f"--server={upstream}"] if upstream else []),
        "--no-hosts",
        "--no-poll",
        f"--hostsdir={hosts_file.parent}" if watched else f"--addn-hosts={hosts_file}",
        f"--listen-address={gateway}",
        f"--port={port}",
        "--bind-interfaces",
        f"--pid-file={lab_dir / f'{name}.pid'}",
        f"--log-facility={lab_dir / f'{name}.log'}",
        *egress.UNPRIVILEGED,
        "--cache-size=0",
    ]


def start(
    netns: Netns,
    gateway: ipaddress.IPv4Address,
    hosts_file: Path,
    lab_dir: Path,
    upstream: str | None,
    die_with_owner: bool,
) -> subprocess.Popen[bytes]:
    """The lab's dnsmasq in ``netns``, returned once it answers on port 53."""
    log = lab_dir / "dnsmasq.log"
    argv = dnsmasq_argv(str(gateway), hosts_file, lab_dir, upstream)
    process = start_process(netns, argv, log, die_with_owner)
    wait_answering(netns, process, str(gateway), 53, log)
    return process


def start_process(
    netns: Netns, argv: list[str], log: Path, die_with_owner: bool
) -> subprocess.Popen[bytes]:
    """A dnsmasq ``argv`` in ``netns``, its errors in ``log``; it gets SIGTERM when we die,
    unless it is meant to outlive us."""
    return system.popen_lasting(
        netns.exec_argv(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        preexec_fn=system.set_parent_death_signal if die_with_owner else None,
        start_new_session=True,
    )


def wait_answering(
    netns: Netns, process: subprocess.Popen[bytes], address: str, port: int, log: Path
) -> None:
    """Return once ``process`` answers on ``address:port`` (TCP); else end it, LabError."""

    def answering(_: bool) -> bool | None:
        if netns.port_open(address, port, 0.1):
            return True
        if process.poll() is not None:
            return False
        return None

    if not retry_until(answering, START_TIMEOUT, 0.02):
        system.end_process(process, 0.0)
        raise LabError(netns.name, "dnsmasq did not start", system.tail(log))


def reload(process: subprocess.Popen[bytes] | None, owner: system.ProcessRef | None) -> None:
    """Make dnsmasq re-read the hosts file: our child, or the one another process started
    (the lab record's first process)."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGHUP)
    elif owner is not None:
        owner.signal(signal.SIGHUP)
