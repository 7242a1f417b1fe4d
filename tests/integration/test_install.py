"""The README's "Install with pip" path, as a new user takes it: an sdist and a wheel built
from this checkout (`python -m build`), their metadata as an index checks it (`twine
check`), a fresh venv, `pip install` of the wheel, `wsfixture setup-host` and `doctor`, and
a first test that passes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.prereqs import require_root_and_tools

ROOT = Path(__file__).parents[2]


def readme_block(title: str, language: str) -> str:
    """The first ``language`` code block of the README section ``title``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"README: no {language} block under {title!r}"
    return match.group(1)


def test_the_readme_install_path_works(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("wsfixture-*-py3-none-any.whl")
    (sdist,) = dist.glob("wsfixture-*.tar.gz")
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel),
                              str(sdist)], capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    wsfixture = venv / "bin" / "wsfixture"
    version = subprocess.run([wsfixture, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("wsfixture ")
    setup = subprocess.run([wsfixture, "setup-host"], capture_output=True, text=True, check=False)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    doctor = subprocess.run([wsfixture, "doctor"], capture_output=True, text=True, check=False)
    assert doctor.returncode == 0, doctor.stdout
    aliases = subprocess.run(
        [wsfixture, "-c", str(ROOT / "examples" / "workspaces.toml"), "aliases"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"alias workspace_myproject='{wsfixture} -c " in aliases, "works after deactivate"
    (tmp_path / "test_first.py").write_text(readme_block("Install with pip", "python"))
    first = subprocess.run(
        [venv / "bin" / "pytest", "-q", "-p", "no:cacheprovider", "test_first.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:]
    assert "1 passed" in first.stdout
