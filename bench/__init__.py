"""kubenet benchmarks: ``python -m bench`` (or ``nox -s bench``) prints tables and writes JSON."""
