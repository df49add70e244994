"""The commands ``pods/exec`` can run: a fixed allow-list implemented in Python.

No process is ever started.  Each command reads the pod it "runs in" (for ``env``
and ``hostname``) and talks through three async callables (stdin chunks in; stdout
and stderr out), so the channel protocol in :mod:`~kubenet.testing.apiserver.upgrade`
streams them like a real exec: ``cat`` echoes stdin as it arrives and ends when the
client closes stdin.

======== ===========================================================================
echo     its arguments joined by spaces and a newline (``-n``: no newline)
cat      stdin to stdout (file arguments fail: there is no file system)
env      PATH, HOSTNAME, HOME and the container's literal ``env`` values
hostname the pod's ``spec.hostname`` or name
true     exits 0
false    exits 1
======== ===========================================================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]
Write = Callable[[bytes], Awaitable[None]]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Context:
    """Where a command runs: the pod and the container within it."""

    pod: JsonObject
    container: JsonObject


class CommandNotFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


async def _echo(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    newline = True
    if args[:1] == ["-n"]:
        newline, args = False, args[1:]
    await out((" ".join(args) + ("\n" if newline else "")).encode())
    return 0


async def _cat(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    status = 0
    for name in args:
        if name == "-":
            continue
        await err(f"cat: {name}: No such file or directory\n".encode())
        status = 1
    if (not args or "-" in args) and stdin is not None:
        async for chunk in stdin:
            await out(chunk)
    return status


async def _env(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    lines = [f"PATH={_PATH}", f"HOSTNAME={_hostname(ctx.pod)}"]
    for var in ctx.container.get("env") or []:
        if isinstance(var, dict) and "name" in var and "valueFrom" not in var:
            lines.append(f"{var['name']}={var.get('value', '')}")
    lines.append("HOME=/root")
    await out(("\n".join(lines) + "\n").encode())
    return 0


async def _hostname_cmd(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    await out((_hostname(ctx.pod) + "\n").encode())
    return 0


async def _true(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    return 0


async def _false(
    args: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    return 1


def _hostname(pod: JsonObject) -> str:
    return str((pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"])


Command = Callable[
    [list[str], Context, "AsyncIterator[bytes] | None", Write, Write], Awaitable[int]
]

COMMANDS: dict[str, Command] = {
    "cat": _cat,
    "echo": _echo,
    "env": _env,
    "false": _false,
    "hostname": _hostname_cmd,
    "true": _true,
}


async def run(
    argv: list[str], ctx: Context, stdin: AsyncIterator[bytes] | None, out: Write, err: Write
) -> int:
    """Run ``argv``; returns the exit code or raises :class:`CommandNotFound`."""
    if not argv:
        raise CommandNotFound("")
    # "/bin/echo" runs echo, as a shell's PATH lookup would find it.
    name = argv[0].rsplit("/", 1)[-1]
    command = COMMANDS.get(name)
    if command is None:
        raise CommandNotFound(argv[0])
    return await command(argv[1:], ctx, stdin, out, err)
