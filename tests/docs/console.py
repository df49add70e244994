"""Reading the runnable parts of the docs, and checking what commands print.

A page's runnable examples are fenced ``console`` blocks: ``$ `` starts a command
(a line ending in ``\\`` continues it), the lines after it are what it prints.
Printed output is compared line by line, trailing spaces ignored, with two
placeholders for what varies from run to run:

* ``...`` inside a line matches any text (times, ports, random names); in a longer
  run of dots the last three are the placeholder (``10.244....`` is ``10.244.``
  and then anything);
* a line that is only ``...`` matches any number of lines, none included.

No expected lines means the output is not checked; the exit status always is (0,
unless the block says otherwise). An HTML comment on the line before the fence
sets a block's attributes, e.g. ``<!-- test: root -->``:

* ``root``: needs root and kernel support (network namespaces, iptables,
  nftables); skipped with the reason where missing;
* ``background wait=TEXT``: the block's one command keeps running (a server, a
  second terminal); the test goes on once its output contains TEXT, and checks
  the output printed so far;
* ``exit=N``: every command of the block exits with status N;
* ``retry=S``: what a command prints depends on something still settling (a sync,
  a log flushed every second): it is run again until it prints what the docs say,
  for up to S seconds;
* ``skip=REASON``: not run, for the reason given (installing the project: the
  tests run in that very install);
* ``cluster``: needs a real cluster, so it is not run; each ``node-proxy`` and
  ``api-proxy`` command in it must parse with the real CLI, and every file it
  names under ``deploy/`` or ``examples/`` must exist.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FENCE = "```"
ATTRS = re.compile(r"^<!--\s*test:(.*?)-->\s*$")


@dataclass(frozen=True)
class Command:
    text: str
    expected: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    commands: tuple[Command, ...]
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _attrs(text: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        out[key] = value if sep else ""
    return out


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page that holds shell commands (console, sh, bash, shell)."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith(FENCE):
            i += 1
            continue
        language = stripped[len(FENCE) :].strip().split(" ")[0].strip("{}.")
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != FENCE:
            body.append(lines[i])
            i += 1
        i += 1
        if language not in ("console", "sh", "bash", "shell"):
            continue
        previous = lines[start - 1].strip() if start > 0 else ""
        match = ATTRS.match(previous)
        attrs = _attrs(match.group(1)) if match else {}
        found.append(Block(path.name, start + 1, language, _commands(body, start + 2), attrs))
    return found


def _commands(body: list[str], first_line: int) -> tuple[Command, ...]:
    commands: list[Command] = []
    text: list[str] = []
    expected: list[str] = []
    line = first_line
    continuing = False
    for number, raw in enumerate(body, first_line):
        if continuing:
            text.append(raw)
            continuing = raw.rstrip().endswith("\\")
            continue
        if raw.startswith("$ "):
            if text:
                commands.append(Command("\n".join(text), tuple(expected), line))
            text, expected, line = [raw[2:]], [], number
            continuing = raw.rstrip().endswith("\\")
        elif text:
            expected.append(raw)
    if text:
        commands.append(Command("\n".join(text), tuple(expected), line))
    return tuple(commands)


# ---------------------------------------------------------------------- matching


def _line_pattern(expected: str) -> re.Pattern[str]:
    # In a run of more than three dots the last three are the placeholder, so that
    # "10.244...." reads as "10.244." followed by anything.
    pattern = []
    for part in re.split(r"(\.{3,})", expected.rstrip()):
        if part.startswith("..."):
            pattern.append(re.escape(part[:-3]) + ".*?")
        else:
            pattern.append(re.escape(part))
    return re.compile("".join(pattern) + r"\s*")


def _trim(lines: list[str]) -> list[str]:
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def output_matches(expected: tuple[str, ...] | list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is what ``expected`` describes (placeholders included)."""
    want = _trim(list(expected))
    got = _trim(actual)
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(want):
                memo[key] = j == len(got)
            elif want[i].strip() == "...":
                memo[key] = match(i + 1, j) or (j < len(got) and match(i, j + 1))
            else:
                memo[key] = (
                    j < len(got)
                    and _line_pattern(want[i]).fullmatch(got[j]) is not None
                    and match(i + 1, j + 1)
                )
        return memo[key]

    return match(0, 0)
