"""VM restore, both sides of the protocol: how a template waits for its identity, and how a
restored clone receives it.

A template is a VM booted with ``template_seed``: a throwaway hostname and host key, no
network, no user, and this agent, which the image's seed script starts (``START_UNITS``).
The agent waits until the boot has settled, starts a tar reading a virtio-serial port, says
``waiting <system state>`` on it, and waits for the tar. The host saves the VM there.

A clone restored from that state continues inside the same reads. The host sends the
identity tar (the same tar a cold boot reads from fw_cfg), which a tar the template started
unpacks, then one header line, ``HEADER_MAGIC <tar size> <mac> <address> <gateway>
<entropy hex>``. The agent asks for the host's time (``CLOCK_REQUEST``) and sets the clock,
mixes the entropy in (the vmgenid device reseeds the kernel's generator as well), takes the
MAC, gives sshd its host key and resolved the lab DNS, mounts the shares (hot-plugged by the
host) and only then gives the NIC its address itself (networkd, which read no unit for it in
the template, is not reloaded): nothing reaches sshd before it is the workspace's. It
answers ``ok`` or ``error <why>``.

``/etc/machine-id``: each clone gets its own (the identity tar carries it, derived from the
name, as a cold boot's). PID 1 and journald keep the template's in memory until the next
boot: journald goes on filing the journal under the template's id, and a link named after
the clone's id (``/run/log/journal/<clone id>``) lets ``journalctl``, which looks for the
machine's own directory, find it. Restarting journald instead cost the first login ~0.5 s
of the guest's one CPU under TCG.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

from wsfixture.guest import seed
from wsfixture.guest.identity import DNS_DROP_IN
from wsfixture.host import keys

PORT_NAME = "org.wsfixture.identity"
# The identity message's version: bump it when ``message`` changes what it sends (the
# agent's text, which parses it, is in every template's key through ``template_files``).
HEADER_MAGIC = "WSFIXTURE-IDENTITY-2"
# What the guest asks before it sets its clock (a clone, a VM resuming after a checkpoint);
# the host answers with ``time_line``.
CLOCK_REQUEST = "clock"
# The host's requests on that port, once the agent is up, and the agent's answers (an
# answer else is "error <why>"): checkpoints (``backends.qemu.checkpoint``), a VM's stop.
QUIESCE, QUIESCED = "quiesce", "quiesced"
RESUME, OK = "resume", "ok"
SYNC, SYNCED = "sync", "synced"
AGENT_PATH = "usr/local/sbin/wsfixture-restore"
AGENT_UNIT_NAME = "wsfixture-restore.service"
TEMPLATE_HOSTNAME = "wsfixture-template"
# Bounds inside the guest: how long the template waits for its boot to settle, and how long
# a clone waits for a hot-plugged share to appear.
SETTLE_SECONDS = 120
SHARE_WAIT_TRIES = 200  # x 0.05 s
DNS_WAIT_TRIES = 250  # x 0.02 s: resolved reading its settings again
PREREAD_PROGRAMS = (
    "/usr/sbin/sshd", "/usr/lib/openssh/sshd-session", "/usr/lib/openssh/sshd-auth",
    "/usr/bin/bash", "/usr/bin/doas", "/usr/bin/tar", "/usr/bin/date", "/usr/bin/mount",
    "/usr/sbin/ip",
)  # fmt: skip
# ``clock_now TOLD``: the time to set, from ``TOLD`` ("<host time> <uptime when the guest
# asked> <uptime when it was answered>"): the host's time plus the uptime passed since
# halfway between the two, as `date -s @` takes it, in ``$now``. Worked out in the shell's
# integer arithmetic, in microseconds: a program for it (awk, Python) cost a clone's one
# CPU under TCG more than the sum is worth. ``micro`` leaves its answer in ``$us`` (no
# subshell: each fork is CPU a clone waits for).
CLOCK_NOW_SH = r"""micro() {
    whole=${1%.*} frac=${1#*.}
    [ "$frac" = "$1" ] && frac=
    frac=${frac}000000
    frac=${frac%"${frac#??????}"}
    us=$((whole * 1000000 + 1$frac - 1000000))
}
clock_now() {
    read -r up _ </proc/uptime
    set -- $1
    micro "$1"; host=$us
    micro "$2"; asked=$us
    micro "$3"; answered=$us
    micro "$up"
    us=$((host + us - (asked + answered) / 2))
    frac=$((us % 1000000 + 1000000))
    now=$((us / 1000000)).${frac#1}
}"""
AGENT_SCRIPT = f"""\
#!/bin/sh
# wsfixture: wait (in a template) for this VM's identity, then take it (in a clone).
set -u
port=/dev/virtio-ports/{PORT_NAME}
state=$(timeout {SETTLE_SECONDS} systemctl is-system-running --wait 2>/dev/null)
# udev may still be loading modules for the machine's devices ("running" does not wait for
# it); a template saved then leaves each clone to finish that on its CPU. The port's name
# is udev's link as well: opened before this, it was not there in 2 template boots of 14
# on a busy host, and the host waited for a guest that had given up.
udevadm settle --timeout={SETTLE_SECONDS} || true
exec 3<>"$port"
fail() {{ echo "error $*" >&3; echo "wsfixture-restore: $*" >&2; exit 1; }}
# The shares' driver, loaded now: the template has no share, and a clone whose hot-plugged
# shares made udev load it spent its CPU on that before their mounts could go on.
modprobe virtiofs || fail "no virtiofs driver"
# The boot's dirty pages, written back: a clone would otherwise write them on its CPU.
sync
# What a clone signals, looked up now: each program run after the restore costs it ~50 ms
# of its one CPU under TCG.
read -r sshd </run/sshd.pid || fail "no sshd running"
# The program that sets a clone's address, started now: it waits (opening the fifo) for
# what to do, so a clone does not pay for starting it (exec and its eight libraries linked,
# ~0.1 s of its CPU under TCG).
nic=/run/wsfixture-nic
rm -f "$nic" && mkfifo -m 600 "$nic" || fail "making $nic"
ip -batch "$nic" 3>&- &
configure=$!
# The clock, set by `date` from the host's time and this machine's uptime when it asked
# for it and when the answer came (``clock_now``): whatever waits for the one CPU meanwhile
# is counted (a `date` of the host's time as it came left clones ~0.6 s behind).
{CLOCK_NOW_SH}
set_clock() {{
    clock_now "$1" && date -s "@$now" >/dev/null
}}
# The host's time, asked for on the port: prints "<host time> <uptime when asked>
# <uptime when answered>".
ask_time() {{
    read -r asked _ </proc/uptime
    echo {CLOCK_REQUEST} >&3
    read -r verb now <&3 && [ "$verb" = time ] || return 1
    read -r answered _ </proc/uptime
    echo "$now $asked $answered"
}}
resolved=$(systemctl show --property=MainPID --value systemd-resolved.service)
# The files a clone reads first (its login's programs, PAM modules and their libraries; this
# agent's tools), read now: they are saved in the page cache, so no clone waits on its disk
# for them. A login's sshd-session used ~0.1 s less of a clone's CPU. The libraries of the
# programs only, as the loader lists them (once per program: ldd, a bash script that runs
# it twice for each, took 2.1 s of the template's CPU under TCG against 0.6 s): listing
# those of ~40 PAM modules as well made the template's boot ~20 s longer (62.7 s against
# 42.0 s), and what they link, the programs do.
{{
    printf '%s\\n' {" ".join(PREREAD_PROGRAMS)} /usr/lib/*/security/*.so
    for program in {" ".join(PREREAD_PROGRAMS)}; do
        /lib64/ld-linux-x86-64.so.2 --list "$program"
    done 2>/dev/null | awk '$3 ~ "^/" {{ print $3 }}'
}} | sort -u | xargs cat >/dev/null 2>&1
# Python as well, which testinfra's checks, Ansible and most tests' first commands start: run
# once, it leaves its interpreter and start-up modules in the page cache.
python3 -c '' 2>/dev/null
# The identity comes first, to a tar started now: a clone does not pay for starting it.
# GNU tar stops at the archive's end (reading 512-byte records, -b 1), and the header
# line that follows is ours. The files keep the host's times (the clock is set after).
tar -x -b 1 --numeric-owner -p --warning=no-timestamp -f - -C / <&3 3>&- &
unpack=$!
echo "waiting ${{state:-unknown}}" >&3
# ---- the template is saved here; a restored clone goes on from this wait ----
wait "$unpack" || fail "unpacking the identity"
read -r magic size mac address gateway entropy <&3 || fail "no identity header"
[ "$magic" = {HEADER_MAGIC} ] || fail "unknown identity header $magic"
# The host's time, asked for now: one written with the identity, before the VM ran again,
# was 1.4-2 s old by here under TCG (the unpacking comes first), and the clone's clock
# stayed that far behind the host's.
told=$(ask_time) || fail "no time from the host"
set_clock "$told" || fail "setting the clock"
printf '%s' "$entropy" >/dev/urandom
# The shares, hot-plugged while the VM was paused, appear while the rest is done.
WSFIXTURE_MOUNT_TRIES={SHARE_WAIT_TRIES} /usr/local/sbin/wsfixture-seed shares &
shares=$!
read -r name </etc/hostname && echo "$name" >/proc/sys/kernel/hostname || fail "hostname"
# The lab DNS, if the workspace has one, is a resolved setting (identity.DNS_DROP_IN): a
# HUP makes resolved read it.
dns={DNS_DROP_IN}
if [ -f "$dns" ]; then
    kill -HUP "$resolved" || fail "reloading resolved"
fi
# OpenSSH before 9.8 reads the host key for each connection (it re-executes itself). From
# 9.8 (Debian 13) the listener holds the keys for its sshd-session children: a HUP makes it
# re-execute and read the new one, before any connection can reach it.
if [ -x /usr/lib/openssh/sshd-session ]; then
    kill -HUP "$sshd" || fail "reloading sshd"
fi
wait "$shares" || fail "mounting the shares"
# resolved lists its servers in this file once it has read them.
dns_ready() {{
    while read -r key value; do
        [ "$key $value" = "nameserver $gateway" ] && return 0
    done </run/systemd/resolve/resolv.conf
    return 1
}}
if [ -f "$dns" ]; then
    tries={DNS_WAIT_TRIES}
    until dns_ready; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || fail "resolved did not take the lab DNS"
        sleep 0.02
    done
fi
# The address last: nothing reaches sshd before the VM is the workspace. Set here as the
# NIC's unit says (networkd, which read no unit for it in the template, leaves the link
# alone; a reload of it cost ~1 s of CPU beside the first login): no IPv6 link-local
# address, no router advertisements.
echo 1 >/proc/sys/net/ipv6/conf/eth0/addr_gen_mode
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra
printf '%s\\n' "link set dev eth0 address $mac up" "address add $address dev eth0" \\
    "route add default via $gateway dev eth0" >"$nic"
wait "$configure" || fail "configuring eth0"
echo {OK} >&3
# ---- the host's requests, on the port it keeps open. Checkpoints
# (``wsfixture.backends.qemu.checkpoint``): before it saves the VM, the shares let go
# (virtiofs cannot be migrated), and back, with the clock, once the VM runs again: after
# the save, or in a rollback to it, which goes on from the read below. The clock is asked
# for there as a clone's is: a time sent with the request was the one before the guest's
# CPU had handled the shares' hot-plug.
mounts=/{seed.MOUNTS_FILE}
remount() {{
    awk -v t="$1" '$2 == t' "$mounts" | while read -r tag target fstype options; do
        mount -t "$fstype" -o "$options" "$tag" "$target"
    done
}}
# Which processes hold a share (working directory or open file), as pid:command: one
# find over /proc (a readlink per descriptor took tens of seconds under TCG).
holders() {{
    find /proc/[0-9]*/cwd /proc/[0-9]*/fd/ -maxdepth 1 -lname "$1*" 2>/dev/null |
        cut -d/ -f3 | sort -un | head -n 8 | while read -r pid; do
        printf '%s:%s ' "$pid" "$(cat /proc/"$pid"/comm 2>/dev/null)"
    done
}}
quiesce() {{
    released=""
    for target in $(awk '{{print $2}}' "$mounts" | tac); do
        if umount "$target" 2>/dev/null; then
            released="$target $released"
            continue
        fi
        held=$(holders "$target")
        for back in $released; do remount "$back"; done
        echo "error $target is in use (pid:command $held)"
        return
    done
    # No sync: the page cache is saved with the memory, consistent with the disk.
    echo {QUIESCED}
}}
while read -r verb _ <&3; do
    case "$verb" in
    {QUIESCE}) quiesce >&3 ;;
    {RESUME})
        if ! told=$(ask_time) || ! set_clock "$told"; then
            echo "error setting the clock" >&3
        elif WSFIXTURE_MOUNT_TRIES={SHARE_WAIT_TRIES} /usr/local/sbin/wsfixture-seed shares; then
            echo {OK} >&3
        else
            echo "error mounting the shares" >&3
        fi ;;
    # Before the host ends a discarded VM (``QemuBackend.stop``): what the guest holds for
    # its shares (a file's dirty pages written through a mapping) written out.
    {SYNC})
        if sync; then echo {SYNCED} >&3; else echo "error sync failed" >&3; fi ;;
    *) echo "error unknown request $verb" >&3 ;;
    esac
done
"""
AGENT_UNIT = f"""\
[Unit]
Description=wsfixture: wait for this VM's identity, take it after a restore
After=multi-user.target

[Service]
Type=simple
ExecStart=/{AGENT_PATH}
StandardOutput=journal+console
StandardError=journal+console
"""


def message(
    mac: str, address: str, gateway: str, seed_tar: bytes, journal: tuple[str, str]
) -> bytes:
    """What a clone reads: the identity (the cold boot's seed), then the header line.
    ``address`` is the NIC's, with its prefix length ("10.0.0.2/24"); ``journal`` is the
    clone's machine-id and the template's (see the module's notes)."""
    tar = wire_tar(seed_tar, journal)
    entropy = os.urandom(32).hex()
    line = f"{HEADER_MAGIC} {len(tar)} {mac} {address} {gateway} {entropy}\n"
    return tar + line.encode()


def time_line(now: float | None = None) -> bytes:
    """The answer to a guest's ``CLOCK_REQUEST``: the host's time (``now``, else the
    current one)."""
    return f"time {time.time() if now is None else now:.6f}\n".encode()


# Directories every guest has: the seed's entries for them are left out of the message, as
# its every 512 bytes cost a restored guest time to read (~25 ms each, measured under TCG).
PRESENT_DIRS = (".", "./etc", "./etc/ssh", "./etc/systemd", "./etc/systemd/network", "./home")


def wire_tar(seed_tar: bytes, journal: tuple[str, str]) -> bytes:
    """The seed without the entries of directories every guest has, and without the
    padding to tar's 10 KiB records; plus the journal's link (``journal`` = the clone's
    machine-id, the template's)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(seed_tar)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for member in source.getmembers():
            if member.isdir() and member.name in PRESENT_DIRS:
                continue
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        link = tarfile.TarInfo(f"./run/log/journal/{journal[0]}")
        link.type, link.linkname = tarfile.SYMTYPE, journal[1]
        tar.addfile(link)
    data = out.getvalue()
    end = len(data.rstrip(b"\0"))
    return data[: -(-end // 512) * 512 + 1024]  # the last member, then two zero blocks


def parse_reply(line: bytes) -> tuple[bool, str]:
    """The agent's answer: (done, what it said)."""
    text = line.decode(errors="replace").strip()
    return text == OK, text


def template_files() -> dict[str, tuple[str, int]]:
    """What a template's seed hands its guest (and a throwaway host key): a hostname, the
    agent and its unit, started by the image's seed script. Path -> (text, mode)."""
    return {
        "etc/hostname": (TEMPLATE_HOSTNAME + "\n", 0o644),
        AGENT_PATH: (AGENT_SCRIPT, 0o755),
        f"etc/systemd/system/{AGENT_UNIT_NAME}": (AGENT_UNIT, 0o644),
        seed.START_UNITS_FILE: (AGENT_UNIT_NAME + "\n", 0o644),
    }


def fingerprint() -> str:
    """The digest of what a template's guest is handed (``template_files``) and of the
    protocol's names and version: in every template's key, so a changed agent makes new
    templates, and a comment here none."""
    handed = {"files": template_files(), "port": PORT_NAME, "magic": HEADER_MAGIC,
              "clock": CLOCK_REQUEST}  # fmt: skip
    return hashlib.sha256(json.dumps(handed, sort_keys=True).encode()).hexdigest()[:16]


def template_seed(staging: Path, seed_tar: Path) -> None:
    """The template's seed: ``template_files`` and a throwaway host key (sshd needs one to
    start; every clone replaces it), no mounts. ``staging`` is removed."""
    for relative, (text, mode) in template_files().items():
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    key = keys.ensure_keypair(staging / "etc/ssh/ssh_host_ed25519_key", TEMPLATE_HOSTNAME)
    key.private.parent.chmod(0o755)  # the guest's /etc/ssh, which ensure_keypair made 0700
    seed.pack(staging, "", seed_tar)
