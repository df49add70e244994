"""Running a Typer app the way kube-proxy and kubectl fail: one line, exit code 2.

Click's standalone mode prints a usage block (and Typer a rich box) for a bad flag;
people and scripts expect a single ``error:`` line on stderr and exit status 2, and
never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import typer

#: Exit status for bad flags and bad input, as kube-proxy and kubectl use it.
EXIT_USAGE = 2


class InputError(Exception):
    """Bad input found after flag parsing (a missing file, invalid YAML, ...)."""


def fail(message: str) -> None:
    """Stop with one error line and exit status 2."""
    raise InputError(message)


def run(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run ``app``; return the exit status instead of raising SystemExit."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # A bare command group prints its help, as kube-proxy does with no flags.
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    return result if isinstance(result, int) else 0
