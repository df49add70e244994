"""Running a Typer app the way kube-proxy and kubectl fail: one line, exit code 2.

Click's standalone mode prints a usage block (and Typer a rich box) for a bad flag;
people and scripts expect a single ``error:`` line on stderr and exit status 2, and
never a traceback.

Recent Typer releases carry their own private copy of Click, older ones use Click
itself, so parsing errors are recognised by their shape (an ``exit_code`` and a
``format_message()``, the ClickException interface) rather than by importing a class.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

#: Exit status for bad flags and bad input, as kube-proxy and kubectl use it.
EXIT_USAGE = 2


class InputError(Exception):
    """Bad input found after flag parsing (a missing file, invalid YAML, ...)."""


def fail(message: str) -> None:
    """Stop with one error line and exit status 2."""
    raise InputError(message)


def _click_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, message) when ``exc`` is a Click-style error, else None."""
    code = getattr(exc, "exit_code", None)
    fmt = getattr(exc, "format_message", None)
    if isinstance(code, int) and callable(fmt):
        return code, str(fmt())
    return None


def run(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run ``app``; return the exit status instead of raising SystemExit."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # A bare command group: Typer has already printed the help.
            return 0
        click_error = _click_error(exc)
        if click_error is None:
            raise
        code, message = click_error
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
    # Exit raised inside a command with standalone_mode=False comes back as the code.
    return result if isinstance(result, int) else 0
