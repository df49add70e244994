"""Developer sessions: tests, lint, typecheck, bench.

Each session installs the project with its test extra into its own virtualenv. The
kernel tests need root (network namespaces); without it they skip with a reason.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, tracer, real kernel, embedded API server, kubectl)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the code, tests and benchmarks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "kubenet", "cli", "tests", "bench", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the CLIs."""
    session.install("-e", ".[test]")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: print tables and write JSON under bench/results/ (suites as posargs)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)


#: What the site is built with (the lead may move these to a ``docs`` extra).


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly into site/ (offline: nothing is fetched)."""
    session.install("-e", ".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
