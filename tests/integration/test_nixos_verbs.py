"""A ``testScript`` as NixOS users write them, run on a container and on a VM through
``ws.nixos`` alone: the driver's verbs with the driver's semantics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import make_config
from wsfixture.errors import CommandError, WaitError
from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.nixos import NixosMachine

WEB_UNIT = """\
[Unit]
Description=a test's web server
[Service]
ExecStart=/usr/bin/python3 -m http.server 8000 --directory /srv/www
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_config(
        tmp_path_factory.mktemp("nixos-verbs"),
        box={"type": "container"},
        vmbox={"type": "vm", "vcpu": 1, "memory": 768},
    )


@pytest.fixture(scope="module", params=["box", pytest.param("vmbox", marks=pytest.mark.vm)])
def machine(request: pytest.FixtureRequest, config: Config, lab: Lab) -> Iterator[NixosMachine]:
    with Workspace(config.workspaces[request.param], config, lab, discard_at_stop=True) as ws:
        yield ws.nixos


def test_a_test_script_runs_as_written(machine: NixosMachine, tmp_path: Path) -> None:
    unit = tmp_path / "web.service"
    unit.write_text(WEB_UNIT)
    machine.wait_for_unit("multi-user.target")
    machine.succeed("mkdir -p /srv/www", "echo hello > /srv/www/index.html")
    machine.copy_from_host(str(unit), "/etc/systemd/system/web.service")
    assert machine.succeed("stat -c %U /etc/systemd/system/web.service") == "root\n"
    machine.systemctl("daemon-reload")
    machine.start_job("web.service")
    machine.wait_for_unit("web.service")
    machine.wait_for_open_port(8000)
    fetched = machine.succeed(
        "python3 -c 'import urllib.request as u; "
        'print(u.urlopen("http://localhost:8000/index.html").read().decode(), end="")\''
    )
    assert fetched == "hello\n"
    machine.require_unit_state("web.service", "active")
    assert machine.get_unit_property("web.service", "ActiveState") == "active"
    assert machine.get_unit_info("web.service")["Id"] == "web.service"
    with pytest.raises(WaitError, match="to be inactive"):
        machine.require_unit_state("web.service", "inactive")
    machine.stop_job("web.service")
    machine.wait_for_closed_port(8000)
    # as root, under set -euo pipefail, in bash
    assert machine.succeed("id -u; echo $0") == "0\nbash\n"
    assert machine.execute("echo out; false; echo never") == (1, "out\n")
    assert machine.execute("false | true")[0] == 1
    machine.fail("false", "test -e /nonexistent")
    with pytest.raises(CommandError):
        machine.succeed("true", "false")
    # waits for what comes later
    machine.succeed("(sleep 1; touch /tmp/later) >/dev/null 2>&1 &")
    machine.wait_for_file("/tmp/later")
    machine.succeed("(sleep 1; rm /tmp/later) >/dev/null 2>&1 &")
    machine.wait_until_fails("test -e /tmp/later")
    machine.succeed(
        "python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); "
        's.bind("/run/verbs.sock"); s.listen(); time.sleep(60)\' >/dev/null 2>&1 &'
    )
    machine.wait_for_open_unix_socket("/run/verbs.sock", timeout=30)
    assert machine.wait_until_succeeds("cat /srv/www/index.html") == "hello\n"
    machine.copy_from_machine("/srv/www/index.html", str(tmp_path / "out"))
    assert (tmp_path / "out" / "index.html").read_text() == "hello\n"
