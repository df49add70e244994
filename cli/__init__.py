"""Thin Typer entry points; installed as ``kubenet.cli``."""
