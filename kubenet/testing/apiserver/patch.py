"""The three PATCH dialects: JSON merge patch, JSON patch and strategic merge patch.

* JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge, ``null``
  deletes, everything else replaces.
* JSON patch (RFC 6902, ``application/json-patch+json``): a list of operations on JSON
  pointers (RFC 6901).
* Strategic merge patch (``application/strategic-merge-patch+json``): a merge patch
  that knows which lists merge by key.  This implements the directives ``kubectl
  apply`` and ``kubectl patch`` emit for the kinds served here: ``$patch``
  (replace / delete / merge), ``$retainKeys``, ``$setElementOrder/<list>`` and
  ``$deleteFromPrimitiveList/<list>``.  Which lists merge, and by which key, comes
  from :attr:`ResourceType.merge_keys` (upstream reads it from Go struct tags).

All functions are pure: they return a new document and never modify their inputs.
Bad patches raise :class:`PatchError`, which the server answers with an error Status.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

MergeKeyLookup = Callable[[str], str | None]


class PatchError(ValueError):
    """A patch that cannot be applied (the server answers 422 or 400)."""


# --- JSON merge patch (RFC 7386) ------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --- JSON patch (RFC 6902) ------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if token == "-" and adding:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    idx = int(token)
    limit = len(container) if adding else len(container) - 1
    if idx > limit:
        raise PatchError(f"array index {idx} out of bounds")
    return idx


def _parent(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchError(f"missing path element {token!r}")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, adding=False)]
        else:
            raise PatchError(f"cannot traverse into {type(cur).__name__}")
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"missing value at {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise PatchError(f"cannot read {path!r}")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the document root")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {last}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, adding=False))
    raise PatchError(f"cannot remove {path!r}")


def _add(doc: Any, path: str, value: Any, *, replace: bool) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, last, adding=False)] = value
        else:
            parent.insert(_index(parent, last, adding=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations)."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    out = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise PatchError("each json patch operation must be an object with an 'op'")
        kind = op["op"]
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchError(f"operation {kind!r} has no path")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind!r} has no value")
        if kind == "add":
            out = _add(out, path, copy.deepcopy(op["value"]), replace=False)
        elif kind == "remove":
            _remove(out, path)
        elif kind == "replace":
            out = _add(out, path, copy.deepcopy(op["value"]), replace=True)
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise PatchError(f"operation {kind!r} has no from")
            value = _remove(out, src) if kind == "move" else copy.deepcopy(_get(out, src))
            out = _add(out, path, value, replace=False)
        elif kind == "test":
            if _get(out, path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return out


# --- strategic merge patch ------------------------------------------------------------

_PATCH = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: Any, patch: Any, merge_key: MergeKeyLookup) -> Any:
    """Apply a strategic merge patch to ``target``.

    ``merge_key(path)`` names the merge key of the list at a dotted path such as
    ``spec.containers[].env``: a field name, ``""`` for a list of scalars merged as a
    set, or ``None`` for an atomic list that the patch replaces.
    """
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    base = copy.deepcopy(target) if isinstance(target, dict) else {}
    result = _merge_map(base, copy.deepcopy(patch), "", merge_key)
    if result is None:
        raise PatchError("a strategic merge patch may not delete the whole object")
    return result


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], path: str, merge_key: MergeKeyLookup
) -> dict[str, Any] | None:
    directive = patch.pop(_PATCH, None)
    if directive == "replace":
        _strip_directives(patch)
        return patch
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive} in map: {patch}")

    retain = patch.pop(_RETAIN, None)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"$retainKeys must be a list, got {retain!r}")
        for key in list(original):
            if key not in retain:
                del original[key]

    orders: dict[str, list[Any]] = {}
    for key in [k for k in patch if k.startswith(_ORDER)]:
        orders[key[len(_ORDER) :]] = patch.pop(key)
    for key in [k for k in patch if k.startswith(_DELETE_PRIMITIVE)]:
        field = key[len(_DELETE_PRIMITIVE) :]
        doomed = patch.pop(key)
        if isinstance(original.get(field), list) and isinstance(doomed, list):
            original[field] = [v for v in original[field] if v not in doomed]

    for key, value in patch.items():
        child = _join(path, key)
        if value is None:
            original.pop(key, None)
        elif isinstance(value, dict):
            current = original.get(key)
            merged = _merge_map(
                current if isinstance(current, dict) else {}, value, child, merge_key
            )
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            mk = merge_key(child)
            current = original.get(key)
            if mk is None:
                original[key] = _strip_list(value)
            else:
                original[key] = _merge_list(
                    current if isinstance(current, list) else [], value, child, mk, merge_key
                )
        else:
            original[key] = value

    for key, order in orders.items():
        if isinstance(original.get(key), list) and isinstance(order, list):
            mk = merge_key(_join(path, key))
            original[key] = _reorder(original[key], order, mk or "")
    return original


def _merge_list(
    original: list[Any], patch: list[Any], path: str, key: str, merge_key: MergeKeyLookup
) -> list[Any]:
    # A "$patch: replace" element means: the rest of the patch list is the new list.
    for item in patch:
        if isinstance(item, dict) and item.get(_PATCH) == "replace":
            return _strip_list([p for p in patch if p is not item])
    if key == "":
        # A set of scalars: union, keeping the original order first.
        out = list(original)
        for item in patch:
            if item not in out:
                out.append(item)
        return out
    out = list(original)
    item_path = path + "[]"
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {path} merges by {key!r}; element {item!r} is not an object")
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        idx = next(
            (i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get(_PATCH) == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            merged = _merge_map({}, item, item_path, merge_key)
        else:
            merged = _merge_map(out[idx], item, item_path, merge_key)
        if merged is None:
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(merged)
        else:
            out[idx] = merged
    return out


def _reorder(items: list[Any], order: list[Any], key: str) -> list[Any]:
    """Sort ``items`` by their position in ``order``; items not named keep their place last."""

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    rank = {repr(ident(o)): i for i, o in enumerate(order)}
    named = [i for i in items if repr(ident(i)) in rank]
    rest = [i for i in items if repr(ident(i)) not in rank]
    named.sort(key=lambda i: rank[repr(ident(i))])
    return named + rest


def _strip_directives(doc: dict[str, Any]) -> None:
    for key in [k for k in doc if k.startswith("$")]:
        del doc[key]


def _strip_list(items: list[Any]) -> list[Any]:
    out = []
    for item in items:
        if isinstance(item, dict):
            item = {k: v for k, v in item.items() if not k.startswith("$")}
        out.append(item)
    return out
