"""Griffe extension: the code's reST-flavoured docstrings, readable as Markdown.

Docstrings in kubenet use Sphinx roles (``:class:`ServiceMap```), double-backtick
literals and ``::`` before literal blocks. Markdown renders double backticks as
code already; this turns roles into inline code (``~`` dropped, as Sphinx shows
only the last name then) and ``text::`` into ``text:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|obj|exc|const):`(~?)([^`]+)`")
_LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)


def _code(match: re.Match[str]) -> str:
    shortened, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if shortened else target}`"


def markdown_of(text: str) -> str:
    text = _ROLE.sub(_code, text)
    return _LITERAL_INTRO.sub(r"\1:", text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
