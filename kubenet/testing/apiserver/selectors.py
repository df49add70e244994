"""Label and field selectors, parsed and matched the way the API does.

The label grammar is upstream's (``k8s.io/apimachinery/pkg/labels``)::

    selector    := requirement ( "," requirement )*
    requirement := [ "!" ] KEY
                 | KEY ( "=" | "==" | "!=" ) VALUE
                 | KEY ( "in" | "notin" ) "(" VALUE ( "," VALUE )* ")"
                 | KEY ( ">" | "<" ) INTEGER

Parse errors raise :class:`SelectorError` with upstream's wording, which the
HTTP layer turns into 400 BadRequest.  Field selectors are the simpler
``key=value,key!=value`` form; which keys a kind supports is the caller's business.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """A selector that does not parse or names an invalid key or value."""


class Op(enum.Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER = ">"
    LESS = "<"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in (Op.EQUALS, Op.IN):
            return present and value in self.values
        if self.op in (Op.NOT_EQUALS, Op.NOT_IN):
            return not present or value not in self.values
        if self.op is Op.EXISTS:
            return present
        if self.op is Op.DOES_NOT_EXIST:
            return not present
        # Gt/Lt compare integers; a label that is not an integer never matches.
        try:
            have = int(value)
        except ValueError:
            return False
        want = int(self.values[0])
        return present and (have > want if self.op is Op.GREATER else have < want)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_HINT = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
    "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_HINT = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def qualified_name_errors(key: str) -> list[str]:
    """Why ``key`` is not a valid label key (``[prefix/]name``); empty when it is."""
    errs: list[str] = []
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        errs.append("prefix part must be non-empty")
    if prefix:
        if len(prefix) > 253:
            errs.append("prefix part must be no more than 253 characters")
        if not _DNS_SUBDOMAIN.match(prefix):
            errs.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character"
            )
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not _NAME.match(name):
        errs.append(_NAME_HINT)
    if key.count("/") > 1:
        errs = [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyName',  or "
            "'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain "
            "prefix and '/' (e.g. 'example.com/MyName')"
        ]
    return errs


def label_value_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label value; empty when it is."""
    if value == "":
        return []
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _NAME.match(value):
        errs.append(_VALUE_HINT)
    return errs


# --- lexer -----------------------------------------------------------------------------

_SPECIAL = "!=<>(),"


class _Tok(enum.Enum):
    IDENT = 1
    END = 2
    COMMA = 3
    OPEN = 4
    CLOSE = 5
    EQ = 6
    DEQ = 7
    NEQ = 8
    NOT = 9
    GT = 10
    LT = 11
    IN = 12
    NOTIN = 13


_OPERATORS = {
    "=": _Tok.EQ,
    "==": _Tok.DEQ,
    "!=": _Tok.NEQ,
    "!": _Tok.NOT,
    ">": _Tok.GT,
    "<": _Tok.LT,
    "(": _Tok.OPEN,
    ")": _Tok.CLOSE,
    ",": _Tok.COMMA,
}


def _lex(text: str) -> list[tuple[_Tok, str]]:
    out: list[tuple[_Tok, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            two = text[i : i + 2]
            if two in ("==", "!="):
                out.append((_OPERATORS[two], two))
                i += 2
            else:
                out.append((_OPERATORS[ch], ch))
                i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        tok = {"in": _Tok.IN, "notin": _Tok.NOTIN}.get(word, _Tok.IDENT)
        out.append((tok, word))
        i = j
    out.append((_Tok.END, ""))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[_Tok, str]:
        return self.toks[self.pos]

    def take(self) -> tuple[_Tok, str]:
        tok = self.toks[self.pos]
        if tok[0] is not _Tok.END:
            self.pos += 1
        return tok

    def selector(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.peek()
            if tok is _Tok.END:
                return reqs
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except SelectorError as err:
                raise SelectorError(f"unable to parse requirement: {err}") from None
            tok, lit = self.take()
            if tok is _Tok.END:
                return reqs
            if tok is not _Tok.COMMA:
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            nxt, nlit = self.peek()
            if nxt not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(f"found '{nlit}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        tok, lit = self.take()
        if tok is _Tok.NOT:
            tok, lit = self.take()
            if tok is not _Tok.IDENT:
                raise SelectorError(f"found '{lit}', expected: identifier")
            return _checked(lit, Op.DOES_NOT_EXIST, ())
        key = lit
        tok, lit = self.peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return _checked(key, Op.EXISTS, ())
        self.take()
        if tok in (_Tok.EQ, _Tok.DEQ, _Tok.NEQ):
            vtok, vlit = self.peek()
            value = ""
            if vtok is _Tok.IDENT:
                self.take()
                value = vlit
            elif vtok not in (_Tok.END, _Tok.COMMA):
                raise SelectorError(f"found '{vlit}', expected: identifier")
            return _checked(key, Op.NOT_EQUALS if tok is _Tok.NEQ else Op.EQUALS, (value,))
        if tok in (_Tok.GT, _Tok.LT):
            vtok, vlit = self.take()
            if vtok is not _Tok.IDENT:
                raise SelectorError(f"found '{vlit}', expected: identifier")
            if not re.fullmatch(r"-?\d+", vlit):
                raise SelectorError(
                    f"for 'Gt', 'Lt' operators, the value must be an integer: {vlit}"
                )
            return _checked(key, Op.GREATER if tok is _Tok.GT else Op.LESS, (vlit,))
        if tok in (_Tok.IN, _Tok.NOTIN):
            otok, olit = self.take()
            if otok is not _Tok.OPEN:
                raise SelectorError(f"found '{olit}', expected: '('")
            values: list[str] = []
            while True:
                vtok, vlit = self.take()
                if vtok is _Tok.IDENT:
                    values.append(vlit)
                    vtok, vlit = self.take()
                elif vtok in (_Tok.COMMA, _Tok.CLOSE):
                    values.append("")  # upstream allows empty values in a set
                if vtok is _Tok.CLOSE:
                    break
                if vtok is not _Tok.COMMA:
                    raise SelectorError(f"found '{vlit}', expected: ',', ')' or identifier")
            return _checked(key, Op.IN if tok is _Tok.IN else Op.NOT_IN, tuple(values))
        raise SelectorError(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")


def _checked(key: str, op: Op, values: tuple[str, ...]) -> Requirement:
    for err in qualified_name_errors(key):
        raise SelectorError(f'key: Invalid value: "{key}": {err}')
    for i, value in enumerate(values):
        for err in label_value_errors(value):
            raise SelectorError(f'values[{i}][{key}]: Invalid value: "{value}": {err}')
    return Requirement(key, op, values)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter."""
    return LabelSelector(tuple(_Parser(text).selector()))


# --- field selectors ---------------------------------------------------------------------


@dataclass(frozen=True)
class FieldTerm:
    key: str
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...] = ()

    def field_names(self) -> set[str]:
        return {t.key for t in self.terms}

    def exact(self, key: str) -> str | None:
        """The value ``key`` must equal, if the selector pins it (used as an index)."""
        for t in self.terms:
            if t.key == key and not t.negate:
                return t.value
        return None

    def matches(self, values: Mapping[str, str]) -> bool:
        return all((values.get(t.key, "") == t.value) != t.negate for t in self.terms)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\,=!":
                raise SelectorError(f"invalid field selector: {text!r}: invalid escape sequence")
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def parse_field_selector(text: str) -> FieldSelector:
    """Parse a ``fieldSelector`` query parameter (``a=b,c!=d``)."""
    terms: list[FieldTerm] = []
    if not text.strip():
        return FieldSelector()
    for part in _split_unescaped(text, ","):
        for op, negate in (("!=", True), ("==", False), ("=", False)):
            idx = _find_unescaped(part, op)
            if idx >= 0:
                key = part[:idx].strip()
                value = _unescape(part[idx + len(op) :])
                terms.append(FieldTerm(key, value, negate))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(terms))


def _find_unescaped(text: str, op: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            return i
        i += 1
    return -1
