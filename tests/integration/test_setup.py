"""Setup beyond packages: `files` and `setup` lines built into an image layer, once, content-
addressed; a failing line named with its exit status and output."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prereqs import require_root_and_tools
from wsfixture import checks
from wsfixture.backends.nspawn import NspawnBackend
from wsfixture.errors import ConfigError, ImageBuildError
from wsfixture.image.recipe import Image, ImageRecipe
from wsfixture.model import share_ids
from wsfixture.model.config import Config, config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


@pytest.fixture(scope="module")
def app_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "app.conf"
    path.write_text("greeting = hello\n")
    return path


def configured(state_root: Path, app_conf: Path, setup: list[str]) -> Config:
    return config_from_dict(
        {
            "defaults": {"stateRoot": str(state_root), "setup": ["mkdir -p /srv/app"]},
            "workspaces": {
                "app": {
                    "type": "container",
                    "ip": "192.168.83.60",
                    "files": {"/etc/app/app.conf": str(app_conf)},
                    "setup": setup,
                }
            },
        }
    )


@pytest.fixture(scope="module")
def lab(state_root: Path, app_conf: Path) -> Iterator[Lab]:
    with Lab(configured(state_root, app_conf, []).network) as lab:
        yield lab


def image_of(ws: Workspace) -> Image:
    assert isinstance(ws._backend, NspawnBackend)
    return ws._backend.image


def test_files_then_setup_lines_are_in_the_image_and_built_once(
    state_root: Path, app_conf: Path, lab: Lab
) -> None:
    setup = ["cp /etc/app/app.conf /srv/app/copied", "echo ran >> /srv/app/log"]
    config = configured(state_root, app_conf, setup)
    with Workspace(config.workspaces["app"], config, lab) as ws:
        assert ws.host.file("/etc/app/app.conf").content_string == "greeting = hello\n"
        assert ws.host.file("/etc/app/app.conf").user == "root"
        # The defaults' line ran first (it made /srv/app), then the workspace's, in order.
        assert ws.succeed("cat /srv/app/copied") == "greeting = hello\n"
        assert ws.succeed("cat /srv/app/log") == "ran\n"
        image = image_of(ws)
    first, ready = image.recipe, (image.dir / "ready").read_text()
    with Workspace(config.workspaces["app"], config, lab) as again:
        assert image_of(again).recipe.key == first.key
        assert (image.dir / "ready").read_text() == ready, "the layer was reused"
    # A changed line, or a changed file, is another layer.
    other = configured(state_root, app_conf, [*setup, "true"])
    assert ImageRecipe.for_packages(
        (), "container", other.resolve(other.workspaces["app"]).setup,
        other.resolve(other.workspaces["app"]).files,
    ).key != first.key  # fmt: skip
    app_conf.write_text("greeting = changed\n")
    try:
        changed = ImageRecipe.for_packages(
            (), "container", config.resolve(config.workspaces["app"]).setup,
            config.resolve(config.workspaces["app"]).files,
        )  # fmt: skip
        assert changed.key != first.key
    finally:
        app_conf.write_text("greeting = hello\n")


def test_a_failing_line_is_named_with_its_status_and_output(
    state_root: Path, app_conf: Path, lab: Lab
) -> None:
    config = configured(
        state_root, app_conf, ["echo first-line-ok", "echo boom-output; exit 7", "echo never"]
    )
    with pytest.raises(ImageBuildError) as info:
        Workspace(config.workspaces["app"], config, lab).start()
    message = str(info.value)
    assert "setup line 3 exited 7: echo boom-output; exit 7" in message
    assert "boom-output" in message
    assert "never" not in message.split("exited 7")[1]
    assert not (lab.dir / "app").exists(), "nothing of the workspace was made"
    # ... also when its output ends without a newline (the status was said on the same
    # line, and the error fell back to the build log's raw tail)
    config = configured(state_root, app_conf, ["printf partial-output; exit 5"])
    with pytest.raises(ImageBuildError) as info:
        Workspace(config.workspaces["app"], config, lab).start()
    message = str(info.value)
    assert "setup line 2 exited 5: printf partial-output; exit 5" in message  # (1: the defaults')
    assert message.rstrip().endswith("partial-output"), message


def test_setup_only_and_files_only_layers_resolve_names_and_keep_files_inside(
    state_root: Path, app_conf: Path, lab: Lab
) -> None:
    """A layer without packages kept the host's resolv.conf (#29); a file at a path through
    the image's own absolute link (/var/run -> /run) was written onto the host (#24)."""
    probe = "wsfixture-escape-probe"
    config = config_from_dict({
        "defaults": {"stateRoot": str(state_root)},
        "workspaces": {
            "setuponly": {"type": "container", "ip": "192.168.83.61", "setup": ["true"]},
            "filesonly": {"type": "container", "ip": "192.168.83.62",
                          "files": {f"/var/run/{probe}": str(app_conf)}},
        },
    })  # fmt: skip
    with (
        Workspace(config.workspaces["setuponly"], config, lab) as setup_only,
        Workspace(config.workspaces["filesonly"], config, lab) as files_only,
    ):
        for ws, other in ((setup_only, files_only), (files_only, setup_only)):
            assert ws.host.file("/etc/resolv.conf").linked_to == (
                "/run/systemd/resolve/stub-resolv.conf"
            )
            assert ws.succeed(f"getent hosts {other.name}").split()[0] == other.ip
            outcomes = checks.verify(ws)
            assert [(o.check.name, o.detail) for o in outcomes if not o.ok] == []
            assert ("resolv-conf", "ok") in [(o.check.name, o.result) for o in outcomes]
        image = image_of(files_only)
    # The trap is real: the image's /var/run is an absolute link, which a plain join on the
    # host follows to the host's /run.
    assert os.readlink(image.path("var/run")) == "/run"
    assert not Path("/run", probe).exists(), "the file went onto the host"
    assert (image.layers[0] / "run" / probe).read_text() == "greeting = hello\n"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"/etc/x.conf": "/nonexistent/x.conf"}, "does not exist"),
        ({"/etc/x.conf": "/etc"}, "is not a regular file"),
        ({"etc/x.conf": "/etc/hostname"}, "is not an absolute guest path"),
        ({"/etc/x.conf": "relative.conf"}, "is not an absolute host path"),
    ],
)
def test_bad_files_are_refused_naming_the_field(files: dict[str, str], problem: str) -> None:
    target = next(iter(files))
    with pytest.raises(ConfigError, match=f"workspaces.a.files.{target}: {problem}"):
        config_from_dict(
            {"workspaces": {"a": {"type": "container", "ip": "192.168.83.10", "files": files}}}
        )


def test_a_hard_linked_file_is_shifted_into_the_containers_range_once(tmp_path: Path) -> None:
    """``perl`` and ``perl5.40.1`` are one file: shifted twice it was 2^31's, an id outside
    the containers' namespace (an import of the honest image found it)."""
    from wsfixture.guest import osconfig

    require_root_and_tools()
    tree = tmp_path / "root"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "perl").write_text("#!/bin/true\n")
    os.link(tree / "usr" / "bin" / "perl", tree / "usr" / "bin" / "perl5.40.1")
    (tree / "usr" / "bin" / "alone").write_text("x")  # control: a file with one name
    osconfig.shift_ownership(tree)
    base = share_ids.CONTAINER_UID_BASE
    for name in ("perl", "perl5.40.1", "alone"):
        st = (tree / "usr" / "bin" / name).lstat()
        assert (st.st_uid, st.st_gid) == (base, base), name
    assert tree.stat().st_uid == base
