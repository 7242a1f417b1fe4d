"""Every code block of the README and the docs, read by Sybil: each is of a kind this test
knows and passes its check here, in the fast lane. A TOML block is a valid config; a
Python block compiles (and runs where ``RUN_BY`` says, booting what it boots); every
``wsfixture`` line of a shell block is a command line the CLI's parser accepts; a console
or text block is shown as is."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser

from wsfixture.cli import main as cli
from wsfixture.model.config import config_from_toml

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
KINDS = ("toml", "python", "sh", "console", "text")


def toml(example: Example) -> None:
    config_from_toml(example.parsed, source=f"{example.path}:{example.line}")


def python(example: Example) -> None:
    compile(example.parsed, f"{example.path}:{example.line}", "exec")


def shell(example: Example) -> None:
    parser = cli.build_parser()
    for line in example.parsed.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for word in lexer:  # one command line may hold several: a && b; c | d
            if word in ("&&", "||", ";", "|"):
                commands.append([])
            else:
                commands[-1].append(word)
        for words in commands:
            if words and words[0].endswith("wsfixture"):
                try:
                    parser.parse_args(words[1:])
                except SystemExit:
                    pytest.fail(f"{example.path}:{example.line}: the CLI refuses {words}")


def shown(example: Example) -> None:
    assert example.parsed.strip(), "an empty block"


SYBIL = Sybil(parsers=[
    CodeBlockParser(language="toml", evaluator=toml),
    CodeBlockParser(language="python", evaluator=python),
    CodeBlockParser(language="sh", evaluator=shell),
    CodeBlockParser(language="console", evaluator=shown),
    CodeBlockParser(language="text", evaluator=shown),
])  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_of_the_page_passes_its_check(page: Path) -> None:
    fences = [line.strip() for line in page.read_text().splitlines() if line.startswith("```")]
    opening = fences[::2]
    unknown = [fence for fence in opening if fence.removeprefix("```") not in KINDS]
    assert not unknown, f"blocks of no known kind (one of {KINDS}): {unknown}"
    examples = list(SYBIL.parse(page))
    assert len(examples) == len(opening), "every block is read"
    for example in examples:
        example.evaluate()


# Where each page's Python blocks run as written, booting what they boot: every block of
# the first three, the one block of the guides the plugin's tests run.
RUN_BY = {
    "README.md": ("tests/integration/test_api.py", None),
    "docs/tutorial.md": ("tests/integration/test_api.py", None),
    "docs/guides/python.md": ("tests/integration/test_api.py", None),
    "docs/guides/agents.md": ("tests/integration/test_api.py", None),
    "docs/guides/faults.md": ("tests/plugin/test_examples.py", 1),
    "docs/guides/pytest.md": ("tests/plugin/test_examples.py", 1),
    "docs/guides/checkpoints.md": ("tests/plugin/test_examples.py", 1),
}


def test_every_python_block_is_run_by_a_test() -> None:
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        blocks = page.read_text().count("```python\n")
        if not blocks:
            continue
        assert name in RUN_BY, f"{name}'s Python blocks are run by no test"
        runner, count = RUN_BY[name]
        assert page.name in (ROOT / runner).read_text(), f"{runner} does not read {name}"
        assert count is None or blocks == count, f"{name}: {runner} runs its first block only"
