"""Running the kernel's command-line tools, optionally inside a named network namespace.

Every dataplane runner goes through :func:`run`, so every failure surfaces the same
way: a :class:`CommandError` carrying the command and the tool's own stderr, which is
what an operator needs to see. Commands are argument lists, never shell strings.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """A tool exited non-zero (or could not be started); the message carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or "(no error output)"
        super().__init__(f"{' '.join(self.argv)} failed with exit code {returncode}: {detail}")


def in_netns(argv: Sequence[str], netns: str | None) -> list[str]:
    """``argv`` as run inside the named network namespace (``ip netns exec``), or as is."""
    if netns is None:
        return list(argv)
    return ["ip", "netns", "exec", netns, *argv]


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (in ``netns`` if given), feeding ``stdin``; capture text output.

    With ``check`` (the default) a non-zero exit raises :class:`CommandError`; a
    missing binary raises it too, with exit code 127 as a shell would report.
    """
    full = in_netns(argv, netns)
    try:
        done = subprocess.run(
            full,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise CommandError(full, 127, str(exc)) from exc
    if check and done.returncode != 0:
        raise CommandError(full, done.returncode, done.stderr)
    return done
