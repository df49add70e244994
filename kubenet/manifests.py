"""Reading Kubernetes manifests from files: YAML or JSON, multi-document, ``kind: List``.

An I/O edge for the offline commands (``node-proxy render`` / ``trace``) and for
preloading the embedded API server. Errors name the file and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: File endings read when a directory is given.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    """A manifest file could not be read; the message names the file."""


@dataclass(frozen=True)
class ClusterObjects:
    """The objects node-proxy cares about, split by kind."""

    services: tuple[dict[str, Any], ...]
    endpoint_slices: tuple[dict[str, Any], ...]
    nodes: tuple[dict[str, Any], ...]

    def node(self, name: str) -> dict[str, Any] | None:
        for node in self.nodes:
            if node.get("metadata", {}).get("name") == name:
                return node
        return None


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, and the manifest files inside named directories (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES))
        elif path.exists():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def _flatten(doc: object, where: str) -> Iterator[dict[str, Any]]:
    if doc is None:  # an empty YAML document (for instance a trailing '---')
        return
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _flatten(item, where)
        return
    yield doc


def parse_documents(text: str, where: str) -> list[dict[str, Any]]:
    """Every object in one file's text. JSON is YAML, so one parser serves both."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{where}: invalid YAML{at}: {problem}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        objects.extend(_flatten(doc, where))
    return objects


def load_objects(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All objects from files and directories, in file order."""
    objects: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from None
        objects.extend(parse_documents(text, str(path)))
    return objects


def split_objects(objects: Iterable[dict[str, Any]]) -> ClusterObjects:
    """Keep Services, EndpointSlices and Nodes; everything else is not node-proxy's business."""
    services: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for obj in objects:
        kind, api = obj.get("kind"), obj.get("apiVersion", "")
        if kind == "Service" and api == "v1":
            services.append(obj)
        elif kind == "EndpointSlice" and api == "discovery.k8s.io/v1":
            slices.append(obj)
        elif kind == "Node" and api == "v1":
            nodes.append(obj)
    return ClusterObjects(tuple(services), tuple(slices), tuple(nodes))

