"""Label and field selectors: upstream's grammar, matching and error wording."""

from __future__ import annotations

import pytest

from kubenet.testing.apiserver.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=api", False),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("missing!=x", True),
        ("app in (web, api)", True),
        ("app notin (web)", False),
        ("tier in (back)", False),
        ("version>2", True),
        ("version<3", False),
        ("app=web,tier=front", True),
        ("app=web, tier=back", False),
        ("app=web,!missing,tier", True),
        ("app in (api,)", False),
    ],
)
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app web", "found 'web', expected: in, notin, =, ==, !=, gt, lt"),
        ("app=web extra", "found 'extra', expected: ',' or 'end of string'"),
        ("invalid=label=value", "found '=', expected: ',' or 'end of string'"),
        ("app=web,", "found '', expected: identifier after ','"),
        ("app in web", "unable to parse requirement: found 'web', expected: '('"),
        ("=web", "found '=', expected: !, identifier, or 'end of string'"),
        ("version>x", "for 'Gt', 'Lt' operators, the value must be an integer: x"),
        ("-bad=1", 'key: Invalid value: "-bad": name part must consist of alphanumeric'),
        ("app=-bad-", 'values[0][app]: Invalid value: "-bad-": a valid label must be'),
    ],
)
def test_label_selector_errors_use_upstream_wording(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert message in str(err.value)


def test_prefixed_label_keys() -> None:
    sel = parse_label_selector("kubernetes.io/service-name=web")
    assert sel.matches({"kubernetes.io/service-name": "web"})
    with pytest.raises(SelectorError):
        parse_label_selector("Bad_Prefix/x=1")


def test_field_selector_terms_and_exact_values() -> None:
    sel = parse_field_selector("metadata.name=web,metadata.namespace!=kube-system")
    assert sel.field_names() == {"metadata.name", "metadata.namespace"}
    assert sel.exact("metadata.name") == "web"
    assert sel.matches({"metadata.name": "web", "metadata.namespace": "demo"})
    assert not sel.matches({"metadata.name": "web", "metadata.namespace": "kube-system"})
    assert not sel.matches({"metadata.name": "api", "metadata.namespace": "demo"})


def test_field_selector_escapes_and_double_equals() -> None:
    sel = parse_field_selector(r"metadata.name==a\,b")
    assert sel.matches({"metadata.name": "a,b"})


def test_field_selector_without_operator_is_an_error() -> None:
    with pytest.raises(SelectorError, match=r"invalid selector: 'metadata\.name'"):
        parse_field_selector("metadata.name")
