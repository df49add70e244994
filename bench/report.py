"""Printing benchmark tables and writing their JSON."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """``columns`` are (key, heading) pairs; floats print with 3 decimals."""
    table = Table(title=title)
    for _, heading in columns:
        table.add_column(heading, justify="right")
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if isinstance(value, float):
                cells.append(f"{value:.3f}")
            elif isinstance(value, bool):
                cells.append("yes" if value else "NO")
            else:
                cells.append("-" if value is None else str(value))
        table.add_row(*cells)
    # Wide enough for every column when the output is a file or a pipe.
    Console(width=max(Console().width, 200)).print(table)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path.write_text(json.dumps({"meta": meta, **payload}, indent=2) + "\n")
    return path
