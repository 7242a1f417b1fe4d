"""``wsfixture serve`` driven by the real ``e2b`` SDK from PyPI, sync and async, as an agent
framework drives E2B: sandboxes made from a container and a VM template, commands streamed,
fed and killed, files written, read, listed and moved, a timeout that expires, keys and
tokens that are wrong, and nothing left behind when the server stops."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import e2b  # the SDK from PyPI, a test extra (`make test` installs it)
import httpx
import pytest

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from tests.support.serve import Served, serving
from wsfixture.host import system
from wsfixture.net.world import OTHER_HTTP, OTHER_NAME, PAGE, WORLD_NAME
from wsfixture.net.world import world as make_world

CONFIG = """
[defaults]
stateRoot = "{state}"

[workspaces.box]
type = "container"
ip = "192.168.83.10"

[workspaces.few]
type = "container"
ip = "192.168.83.11"
pids = 64

[workspaces.vm]
type = "vm"
ip = "192.168.83.12"
vcpu = 1
memory = 768
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_root_and_tools("systemd-nspawn", "qemu-system-x86_64")
    with serving(tmp_path_factory.mktemp("serve"), CONFIG) as served:
        try:
            yield served
        finally:
            lab = served.lab()
            assert served.stop() == 0, served.log.read_text()
            assert "serve: stopped" in served.log.read_text()
            assert leftovers(lab) == {}, "the server took its sandboxes and its lab down"


def test_a_container_sandbox_runs_commands_as_they_come(served: Served) -> None:
    sandbox = e2b.Sandbox.create("box", timeout=120, envs={"FROM_CREATE": "yes"},
                                 metadata={"test": "commands"})  # fmt: skip
    try:
        ran = sandbox.commands.run("echo hi; echo oops >&2; id -un")
        assert (ran.stdout, ran.stderr, ran.exit_code) == ("hi\ndev\n", "oops\n", 0)
        with pytest.raises(e2b.CommandExitException) as failed:
            sandbox.commands.run("echo before; exit 3")
        assert failed.value.exit_code == 3
        assert failed.value.stdout == "before\n"
        ran = sandbox.commands.run("echo $FROM_CREATE $OWN; pwd; id -un", envs={"OWN": "own"},
                                   cwd="/tmp", user="root")  # fmt: skip
        assert ran.stdout == "yes own\n/tmp\nroot\n"

        # Streamed: the command waits for a file the test writes only once the first
        # line has reached it, so it can only end if its output came as it was written.
        seen: list[str] = []

        def on_stdout(line: str) -> None:
            seen.append(line)
            if line.startswith("first"):
                threading.Thread(target=sandbox.files.write, args=("/tmp/go", "go")).start()

        ran = sandbox.commands.run(
            "echo first; for i in $(seq 300); do [ -e /tmp/go ] && break; sleep 0.1; done; "
            "[ -e /tmp/go ] && echo second", on_stdout=on_stdout, timeout=60,
        )  # fmt: skip
        assert ran.stdout == "first\nsecond\n"
        assert "".join(seen) == "first\nsecond\n"

        # In the background: listed, joined again by its PID, killed.
        sleeper = sandbox.commands.run("sleep 600", background=True)
        assert sleeper.pid in [p.pid for p in sandbox.commands.list()]
        again = sandbox.commands.connect(sleeper.pid)
        assert sandbox.commands.kill(sleeper.pid)
        with pytest.raises(e2b.CommandExitException) as killed:
            again.wait()
        assert killed.value.exit_code == -1
        assert sleeper.pid not in [p.pid for p in sandbox.commands.list()]
        assert sandbox.commands.run("pgrep -x sleep || echo none").stdout == "none\n"

        # Its stdin, then its end.
        cat = sandbox.commands.run("cat; echo end", background=True, stdin=True)
        sandbox.commands.send_stdin(cat.pid, "to cat\n")
        sandbox.commands.close_stdin(cat.pid)
        assert cat.wait().stdout == "to cat\nend\n"
    finally:
        sandbox.kill()


def test_files_are_written_read_listed_and_moved(served: Served) -> None:
    sandbox = e2b.Sandbox.create("box", timeout=120)
    try:
        files = sandbox.files
        files.write("notes/a.txt", "text")  # relative: the user's home
        files.write_files([{"path": "/tmp/d/b.bin", "data": b"\x00\xffbytes"},
                           {"path": "/tmp/d/deep/c.txt", "data": "c"}])  # fmt: skip
        assert files.read("notes/a.txt") == "text"
        assert bytes(files.read("/tmp/d/b.bin", format="bytes")) == b"\x00\xffbytes"
        assert sandbox.commands.run("cat /home/dev/notes/a.txt; stat -c %U /tmp/d/b.bin").stdout \
            == "textdev\n"  # fmt: skip
        assert sorted(e.name for e in files.list("/tmp/d")) == ["b.bin", "deep"]
        assert sorted(e.path for e in files.list("/tmp/d", depth=2)) == [
            "/tmp/d/b.bin", "/tmp/d/deep", "/tmp/d/deep/c.txt"]  # fmt: skip
        info = files.get_info("/tmp/d/b.bin")
        assert (info.type, info.size, info.owner) == (e2b.FileType.FILE, 7, "dev")
        assert files.exists("/tmp/d/deep")
        assert not files.exists("/tmp/nothing")
        assert files.make_dir("/tmp/made") is True
        assert files.make_dir("/tmp/made") is False, "it was there"
        assert files.rename("/tmp/d/deep/c.txt", "/tmp/made/c.txt").path == "/tmp/made/c.txt"
        files.remove("/tmp/d")
        assert not files.exists("/tmp/d")
        with pytest.raises(e2b.NotFoundException):
            files.read("/tmp/d/b.bin")
        with pytest.raises(e2b.NotFoundException):
            files.get_info("/tmp/nothing")
        # As root: where the workspace user may not write.
        files.write("/etc/by-root", "r", user="root")
        assert sandbox.commands.run("stat -c %U /etc/by-root").stdout == "root\n"
        with pytest.raises(e2b.SandboxException):
            files.write("/etc/by-dev", "d")
    finally:
        sandbox.kill()


def test_sandboxes_are_listed_connected_timed_out_and_killed(served: Served) -> None:
    kept = e2b.Sandbox.create("box", timeout=120, metadata={"role": "kept"})
    short = e2b.Sandbox.create("box", timeout=2, metadata={"role": "short"})
    try:
        ids = {s.sandbox_id for s in e2b.Sandbox.list().next_items()}
        assert {kept.sandbox_id, short.sandbox_id} <= ids
        mine = e2b.Sandbox.list(query=e2b.SandboxQuery(metadata={"role": "kept"})).next_items()
        assert [s.sandbox_id for s in mine] == [kept.sandbox_id]

        joined = e2b.Sandbox.connect(kept.sandbox_id)
        assert joined.commands.run("hostname").stdout.strip() == kept.sandbox_id
        kept.set_timeout(300)
        info = kept.get_info()
        assert (info.template_id, info.metadata) == ("box", {"role": "kept"})
        assert info.end_at.timestamp() - time.time() > 200

        # The short one is gone once its time is up: the reaper stopped its workspace.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and short.is_running():
            time.sleep(0.5)
        assert not short.is_running()
        assert short.sandbox_id not in {s.sandbox_id for s in e2b.Sandbox.list().next_items()}
        with pytest.raises(e2b.NotFoundException):
            e2b.Sandbox.connect(short.sandbox_id)
    finally:
        kept.kill()
    assert not kept.is_running()
    assert e2b.Sandbox.kill(kept.sandbox_id) is False, "killed already: not found"


def test_the_template_s_limits_apply(served: Served) -> None:
    few, base = e2b.Sandbox.create("few", timeout=120), e2b.Sandbox.create("base", timeout=120)
    # dash, which fails a fork at once (bash retries for a while)
    # (the sleeps' output away from the command's channel: they would hold it open)
    fork_many = ("sh -c 'for i in $(seq 120); do sleep 30 >/dev/null 2>&1 & done; "
                 "echo started' 2>&1 || true")  # fmt: skip
    try:
        # Positive control: base forks 120 sleeps; few (pids = 64) cannot.
        assert base.commands.run(fork_many, timeout=60).stdout == "started\n"
        said = few.commands.run(fork_many, timeout=60).stdout
        assert "Cannot fork" in said
        assert "started" not in said
    finally:
        few.kill()
        base.kill()


def test_wrong_keys_tokens_and_fields_are_refused(served: Served) -> None:
    with pytest.raises(e2b.AuthenticationException):
        e2b.Sandbox.create("box", api_key="wrong-key-0123456789")
    with pytest.raises(e2b.SandboxException, match="templateID: no template 'nope'"):
        e2b.Sandbox.create("nope")
    with pytest.raises(e2b.SandboxException, match="timeout"):
        e2b.Sandbox.create("box", timeout=10**9)
    with pytest.raises(e2b.SandboxException, match="allow_internet_access: true, but template"):
        e2b.Sandbox.create("box", allow_internet_access=True)  # its lab is offline
    assert list(e2b.Sandbox.list().next_items()) == [], "nothing was made"
    with pytest.raises(e2b.NotFoundException):
        e2b.Sandbox.connect("sbdoesnotexist")

    one, other = e2b.Sandbox.create("box", timeout=60), e2b.Sandbox.create("box", timeout=60)
    try:
        # The other sandbox's token is not this one's: its envd calls are refused.
        answer = httpx.post(
            f"{served.url}/process.Process/List", content=b"{}",
            headers={"E2b-Sandbox-Id": one.sandbox_id, "Content-Type": "application/json",
                     "X-Access-Token": other._envd_access_token or ""},
        )  # fmt: skip
        assert answer.status_code == 401
        positive = httpx.post(
            f"{served.url}/process.Process/List", content=b"{}",
            headers={"E2b-Sandbox-Id": one.sandbox_id, "Content-Type": "application/json",
                     "X-Access-Token": one._envd_access_token or ""},
        )  # fmt: skip
        assert positive.status_code == 200, "the right token gets in"
    finally:
        one.kill()
        other.kill()


def test_a_vm_template_and_the_async_client(served: Served) -> None:
    async def drive() -> tuple[str, str]:
        sandbox = await e2b.AsyncSandbox.create("vm", timeout=300)
        try:
            ran = await sandbox.commands.run("systemd-detect-virt --vm; id -un")
            await sandbox.files.write("/tmp/from-async", "async")
            return ran.stdout, await sandbox.files.read("/tmp/from-async")
        finally:
            await sandbox.kill()

    stdout, read = asyncio.run(drive())
    assert stdout.split() in (["qemu", "dev"], ["kvm", "dev"])
    assert read == "async"


def test_a_directory_is_watched_by_both_clients(served: Served) -> None:
    sandbox = e2b.Sandbox.create("box", timeout=120)
    try:
        sandbox.files.make_dir("/tmp/w")
        sandbox.files.write("/tmp/w/before", "old")
        handle = sandbox.files.watch_dir("/tmp/w")
        sandbox.files.write("/tmp/w/new.txt", "new")
        sandbox.files.write("/tmp/w/before", "changed")
        sandbox.files.remove("/tmp/w/before")
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 20
        wanted = {("new.txt", "create"), ("new.txt", "write"), ("before", "remove")}
        while time.monotonic() < deadline and not wanted <= seen:
            seen |= {(e.name, e.type.value) for e in handle.get_new_events()}
            time.sleep(0.2)
        handle.stop()
        assert wanted <= seen
        assert ("before", "create") not in seen, "only what happened after the watch began"
    finally:
        sandbox.kill()

    async def stream() -> set[tuple[str, str]]:
        box = await e2b.AsyncSandbox.create("box", timeout=120)
        try:
            await box.files.make_dir("/tmp/w")
            events: list[tuple[str, str]] = []
            handle = await box.files.watch_dir(
                "/tmp/w", on_event=lambda e: events.append((e.name, e.type.value)),
                recursive=True,
            )  # fmt: skip
            await box.files.write("/tmp/w/sub/deep.txt", "deep")
            for _ in range(100):
                if ("sub/deep.txt", "write") in events:
                    break
                await asyncio.sleep(0.2)
            await handle.stop()
            return set(events)
        finally:
            await box.kill()

    assert {("sub", "create"), ("sub/deep.txt", "create"), ("sub/deep.txt", "write")} <= (
        asyncio.run(stream())
    )


def test_a_paused_sandbox_keeps_its_files_and_processes(served: Served) -> None:
    sandbox = e2b.Sandbox.create("box", timeout=120)
    try:
        sandbox.files.write("/tmp/kept", "kept")
        sleeper = sandbox.commands.run("sleep 600", background=True)
        assert sandbox.pause() is True
        assert sandbox.pause() is False, "paused already"
        assert not sandbox.is_running()
        [info] = e2b.Sandbox.list(
            query=e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED])
        ).next_items()
        assert info.sandbox_id == sandbox.sandbox_id
        with pytest.raises(e2b.SandboxException):
            sandbox.commands.run("true")
        back = e2b.Sandbox.connect(sandbox.sandbox_id)  # resumes it
        assert back.is_running()
        assert back.files.read("/tmp/kept") == "kept"
        assert sleeper.pid in [p.pid for p in back.commands.list()]
        assert back.commands.run(f"kill -0 {sleeper.pid} && echo alive").stdout == "alive\n"
    finally:
        sandbox.kill()

    # Past its timeout, one created to pause on timeout is paused, not killed.
    napper = e2b.Sandbox.create("box", timeout=2, lifecycle={"on_timeout": "pause"})
    try:
        napper.files.write("/tmp/mark", "m")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and napper.get_info().state.value != "paused":
            time.sleep(0.5)
        assert napper.get_info().state.value == "paused"
        assert e2b.Sandbox.connect(napper.sandbox_id).files.read("/tmp/mark") == "m"
    finally:
        napper.kill()


def test_the_agents_guide_s_e2b_client_runs_as_written(served: Served, tmp_path: Path) -> None:
    page = (Path(__file__).parents[2] / "docs" / "guides" / "agents.md").read_text()
    block = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)[1]
    assert "from e2b import Sandbox" in block
    script = tmp_path / "client.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # its echo ends a line, and print adds one
    assert re.fullmatch(r"hello from sb[0-9a-f]{12}\n\n", done.stdout), done.stdout
    assert list(e2b.Sandbox.list().next_items()) == [], "the with block killed it"


def test_a_killed_server_s_sandboxes_are_listed_and_reaped_by_gc(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn")
    with serving(tmp_path, CONFIG, "--max-sandboxes", "1") as served:
        sandbox = e2b.Sandbox.create("box", timeout=300)
        with pytest.raises(e2b.RateLimitException):
            e2b.Sandbox.create("box", timeout=300)  # past --max-sandboxes
        lab = served.lab()
        listed = subprocess.run([sys.executable, "-m", "wsfixture.cli", "list", "--json"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert sandbox.sandbox_id in listed, "`wsfixture list` shows the server's sandboxes"
        served.process.kill()  # no chance to clean up
        served.process.wait(timeout=30)
    assert leftovers(lab) != {}, "positive control: the killed server left its lab"
    subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--quiet"], check=True)
    assert leftovers(lab) == {}
    system.remove_tree(tmp_path / "state")


ALLOWLISTED = """
[network]
internet = true
uplinkNamespace = "{netns}"

[defaults]
stateRoot = "{{state}}"

[workspaces.held]
type = "container"
ip = "192.168.83.10"
internet = ["{allowed}"]
"""
GET = (
    "python3 -c 'import sys, urllib.request\n"
    'try: print(urllib.request.urlopen(sys.argv[1], timeout=8).read().decode(), end="")\n'
    'except Exception as exc: print("FAILED", type(exc).__name__)\' '
)


def test_the_template_s_allowlist_holds_a_sandbox(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq", "slirp4netns", "nft")
    with make_world(tmp_path / "world") as world:
        text = ALLOWLISTED.format(netns=world.netns, allowed=WORLD_NAME)
        with serving(tmp_path / "served", text) as served:
            try:
                lab = served.lab()
                with e2b.Sandbox.create("held", timeout=120) as held:
                    allowed = held.commands.run(GET + f"http://{WORLD_NAME}/", timeout=60)
                    refused = held.commands.run(GET + f"http://{OTHER_NAME}/", timeout=60)
                    direct = held.commands.run(GET + f"http://{OTHER_HTTP}/", timeout=60)
            finally:
                served.stop()
    assert allowed.stdout == PAGE, "positive control: the allowed name answers"
    assert refused.stdout.startswith("FAILED"), refused.stdout
    assert direct.stdout.startswith("FAILED"), direct.stdout
    assert leftovers(lab) == {}
    system.remove_tree(tmp_path / "served" / "state")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def start_request(client: httpx.Client, sandbox_id: str, token: str, line: str) -> httpx.Request:
    """process.Process/Start as a Connect streaming call (one JSON message, enveloped)."""
    message = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", line]}}).encode()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    return client.build_request("POST", "/process.Process/Start", content=body, headers={
        "E2b-Sandbox-Id": sandbox_id, "X-Access-Token": token,
        "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
    })  # fmt: skip


def started_pid(chunks: Iterator[bytes]) -> tuple[int, int]:
    """The PID in a Start stream's first message (its start event), and how many bytes
    after it were read with it."""
    head = b""
    while len(head) < 5:
        head += next(chunks)
    size = int.from_bytes(head[1:5], "big")
    while len(head) < 5 + size:
        head += next(chunks)
    return int(json.loads(head[5 : 5 + size])["event"]["start"]["pid"]), len(head) - 5 - size


def test_a_guest_flooding_a_client_that_reads_nothing_grows_no_memory(served: Served) -> None:
    server = served.process.pid
    with (
        e2b.Sandbox.create("box", timeout=120) as sandbox,
        httpx.Client(base_url=served.url, timeout=30) as client,
    ):
        token = sandbox._envd_access_token or ""
        # Positive control: a client that reads gets the flood, fast.
        reading = client.send(start_request(client, sandbox.sandbox_id, token, "yes"), stream=True)
        chunks = reading.iter_raw()
        pid, read = started_pid(chunks)
        for chunk in chunks:
            read += len(chunk)
            if read > 64 * 2**20:
                break
        sandbox.commands.kill(pid)
        reading.close()
        before = rss_kib(server)
        stalled = client.send(start_request(client, sandbox.sandbox_id, token, "yes"), stream=True)
        held = stalled.iter_raw()  # kept: a dropped iterator closes the connection
        pid, _ = started_pid(held)
        time.sleep(8)  # the guest writes as fast as it can; nobody reads
        grown = rss_kib(server) - before
        sandbox.commands.kill(pid)
        stalled.close()
    assert read > 64 * 2**20, "the guest can flood a client that reads"
    assert grown < 48 * 1024, f"the server grew {grown} KiB for a client that reads nothing"
