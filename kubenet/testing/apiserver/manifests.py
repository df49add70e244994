"""Reading manifests: YAML or JSON files, multi-document, ``List`` kinds flattened."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

JsonObject = dict[str, Any]

_SUFFIXES = (".yaml", ".yml", ".json")


def parse(text: str, source: str = "<string>") -> list[JsonObject]:
    """The objects in a YAML or JSON document stream (``List`` items flattened)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: {err}") from None
    out: list[JsonObject] = []
    for doc in docs:
        out.extend(_flatten(doc, source))
    return out


def _flatten(doc: Any, source: str) -> Iterator[JsonObject]:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected an object, got {type(doc).__name__}")
    if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _flatten(item, source)
        return
    # Round-trip through JSON so YAML-only types (dates) become strings, as kubectl sends them.
    yield json.loads(json.dumps(doc, default=str))


def files(paths: Iterable[Path]) -> list[Path]:
    """Manifest files: each path itself, or a directory's files in name order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file()))
        else:
            out.append(path)
    return out


def load(paths: Iterable[Path]) -> list[JsonObject]:
    objects: list[JsonObject] = []
    for path in files(paths):
        objects.extend(parse(path.read_text(), str(path)))
    return objects
