"""Reading manifests: YAML and JSON, several documents, Lists, directories, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenet.manifests import ManifestError, load_objects, parse_documents, split_objects

ROOT = Path(__file__).resolve().parent.parent


def test_multi_document_yaml_skips_empty_documents() -> None:
    text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n" \
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"
    names = [o["metadata"]["name"] for o in parse_documents(text, "x.yaml")]
    assert names == ["a", "b"]


def test_lists_are_flattened_including_typed_lists() -> None:
    text = (
        '{"apiVersion": "v1", "kind": "ServiceList", "items": ['
        '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},'
        '{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Node", "apiVersion": "v1",'
        ' "metadata": {"name": "n"}}]}]}'
    )
    kinds = [o["kind"] for o in parse_documents(text, "x.json")]
    assert kinds == ["Service", "Node"]


def test_directory_reads_manifest_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("kind: B\napiVersion: v1\n")
    (tmp_path / "a.json").write_text('{"kind": "A", "apiVersion": "v1"}')
    (tmp_path / "notes.txt").write_text("kind: Ignored\n")
    assert [o["kind"] for o in load_objects([tmp_path])] == ["A", "B"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: [unclosed\n", "invalid YAML (line"),
        ("- just\n- a list\n", "expected a Kubernetes object, got list"),
        ("42\n", "expected a Kubernetes object, got int"),
    ],
)
def test_errors_name_the_file_and_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        load_objects([path])
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file or directory"):
        load_objects([tmp_path / "nope.yaml"])


def test_split_keeps_what_node_proxy_uses_from_the_examples() -> None:
    objects = split_objects(load_objects([ROOT / "examples"]))
    names = sorted(s["metadata"]["name"] for s in objects.services)
    assert names == ["api", "dns", "dual", "empty", "legacy", "shop", "sticky", "web"]
    assert len(objects.endpoint_slices) == 8
    node = objects.node("node-a")
    assert node is not None and node["kind"] == "Node"
    assert objects.node("nowhere") is None


def test_split_ignores_wrong_api_versions() -> None:
    objs = [
        {"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice"},
        {"apiVersion": "v1", "kind": "Endpoints"},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ok"}},
    ]
    split = split_objects(objs)
    assert len(split.services) == 1 and not split.endpoint_slices
