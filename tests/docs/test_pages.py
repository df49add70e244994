"""Every command in the docs runs, in order, and prints what the docs say it prints.

One test per page of docs/ (those of this part of the project; apiserver.md,
api-proxy.md and node-proxy.md are their owners' and carry their own examples).
See tests/docs/console.py for how pages mark what they expect, and
tests/docs/shell.py for the environment each page runs in.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenet.testing.netns import missing_kernel_support
from tests.docs.console import Block, blocks, output_matches
from tests.docs.shell import REPO, DocShell

DOCS = REPO / "docs"
OTHERS = {"apiserver.md", "api-proxy.md", "node-proxy.md"}
PAGES = sorted(p for p in DOCS.glob("**/*.md") if p.name not in OTHERS)
NOT_RUN = {"cluster", "skip"}


def _runs(block: Block) -> bool:
    return not NOT_RUN & block.attrs.keys()


RUNNABLE = [p for p in PAGES if any(_runs(b) for b in blocks(p))]

pytestmark = pytest.mark.timeout(600)


def _page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


@pytest.fixture(scope="module")
def kernel() -> str | None:
    """Why root blocks cannot run here (None: they can)."""
    return missing_kernel_support(iptables=True, nftables=True)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[DocShell]:
    if os.geteuid() != 0 or shutil.which("nsenter") is None:
        pytest.skip("the docs run in a network namespace of their own: needs root and nsenter")
    doc_shell = DocShell(tmp_path)
    try:
        yield doc_shell
    finally:
        doc_shell.close()


def _agrees(block: Block, expected: tuple[str, ...], status: int, lines: list[str]) -> bool:
    want_status = int(block.attrs.get("exit", "0"))
    return status == want_status and (not expected or output_matches(expected, lines))


def _check(
    block: Block, command: str, expected: tuple[str, ...], status: int, lines: list[str]
) -> None:
    want_status = int(block.attrs.get("exit", "0"))
    shown = "\n".join(lines)
    assert status == want_status, (
        f"{block.where}: `{command}` exited with {status}, not {want_status}:\n{shown}"
    )
    if expected:
        assert output_matches(expected, lines), (
            f"{block.where}: `{command}` printed\n{shown}\n--- but the docs say\n"
            + "\n".join(expected)
        )


@pytest.mark.parametrize("page", RUNNABLE, ids=[_page_id(p) for p in RUNNABLE])
def test_page_commands(page: Path, shell: DocShell, kernel: str | None) -> None:
    skipped: list[str] = []
    for block in blocks(page):
        if not _runs(block):
            continue
        if "root" in block.attrs and kernel is not None:
            skipped.append(block.where)
            continue
        for command in block.commands:
            if "background" in block.attrs:
                result = shell.background(command.text, block.attrs["wait"])
            else:
                result = shell.run(command.text)
                deadline = time.monotonic() + float(block.attrs.get("retry", "0"))
                while not _agrees(block, command.expected, result.status, result.lines):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.25)
                    result = shell.run(command.text)
            _check(block, command.text, command.expected, result.status, result.lines)
    if skipped:
        pytest.skip(f"{kernel}: not run: {', '.join(skipped)}")
