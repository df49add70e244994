"""The docs' console-block reader and output matcher (tests/docs/console.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.console import blocks, output_matches


def test_blocks_commands_output_and_attributes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro\n\n"
        "<!-- test: root exit=1 -->\n"
        "```console\n"
        "$ echo one \\\n"
        "    two\n"
        "one two\n"
        "$ true\n"
        "```\n\n"
        "```python\nprint('not shell')\n```\n\n"
        "```sh\nls\n```\n"
    )
    first, second = blocks(page)
    assert first.attrs == {"root": "", "exit": "1"}
    assert first.where == "page.md:4"
    assert [c.text for c in first.commands] == ["echo one \\\n    two", "true"]
    assert first.commands[0].expected == ("one two",)
    assert first.commands[1].expected == ()
    assert second.language == "sh" and second.attrs == {}


@pytest.mark.parametrize(
    "expected,actual,ok",
    [
        (["a", "b"], ["a", "b  "], True),
        (["a", "b"], ["a", "c"], False),
        (["a"], ["a", "b"], False),
        (["serving on https://127.0.0.1:..."], ["serving on https://127.0.0.1:6443"], True),
        (["a", "...", "z"], ["a", "z"], True),
        (["a", "...", "z"], ["a", "b", "c", "z"], True),
        (["a", "...", "z"], ["a", "b", "c"], False),
        (["...", "verdict: DNAT"], ["x", "verdict: DNAT"], True),
        (["x ... y"], ["x  anything  y"], True),
        (["x ... y"], ["x  anything"], False),
        (["a.b"], ["axb"], False),
        (["10.244.... 8080"], ["10.244.1.3 8080"], True),
        (["10.244.... 8080"], ["10.245.1.3 8080"], False),
    ],
)
def test_output_matching(expected: list[str], actual: list[str], ok: bool) -> None:
    assert output_matches(expected, actual) is ok
