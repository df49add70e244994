"""Static files under ``--www-prefix`` from the ``--www`` folder, with no way out of it.

Behaviour follows Go's ``http.FileServer`` (what kubectl proxy uses): a directory
without its trailing slash is redirected to it, a directory serves its ``index.html``
or else a listing, ``.../index.html`` redirects to ``./``, and a missing file is
``404 page not found``. Ranges, Last-Modified and conditional requests come from
aiohttp's ``FileResponse``.

Unlike ``http.Dir``, a symbolic link is followed only when its target stays inside the
folder: traversal by ``..`` is already impossible after path normalisation, and this
closes the other way out.
"""

from __future__ import annotations

import html
import mimetypes
import os
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from .paths import encode_path


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The real file ``relative`` names under ``root``, or None if it is not inside.

    ``root`` must already be resolved. Any ``.``/``..``/empty segment or NUL is
    refused outright; symbolic links are resolved and must land inside ``root``.
    """
    parts = [p for p in relative.split("/") if p != ""]
    if any(p in (".", "..") or "\x00" in p or "\\" in p for p in parts):
        return None
    candidate = root.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real != root and root not in real.parents:
        return None
    return real


class _FileResponse(web.FileResponse):
    """aiohttp's file response, safe to prepare twice.

    The proxy prepares every answer itself (to log its size) and aiohttp prepares it
    again after the handler; a file must not be sent twice.
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return None
        return await super().prepare(request)


def _file(path: Path) -> web.FileResponse:
    response = _FileResponse(path)
    kind, _ = mimetypes.guess_type(path.name)
    if kind is not None:
        # Go's mime types give text/* a UTF-8 charset.
        response.headers["Content-Type"] = (
            f"{kind}; charset=utf-8" if kind.startswith("text/") else kind
        )
    return response


def _plain(status: int, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=301, headers={"Location": location})


def directory_listing(folder: Path) -> str:
    """Go's listing: one link per entry, directories with a trailing slash."""
    lines = ['<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n']
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name + ("/" if entry.is_dir() else "")
        href = quote(name, safe="/")
        lines.append(f'<a href="{html.escape(href)}">{html.escape(name)}</a>\n')
    lines.append("</pre>\n")
    return "".join(lines)


class StaticFiles:
    """A folder served read-only."""

    def __init__(self, folder: str) -> None:
        self.root = Path(folder).resolve()

    async def respond(self, request: web.BaseRequest, relative: str) -> web.StreamResponse:
        """Answer for ``relative`` (the canonical path after the prefix)."""
        url_path = request.rel_url.raw_path
        if relative.endswith("/index.html") or relative == "index.html":
            return _redirect("./")
        target = resolve_inside(self.root, relative)
        if target is None:
            return _plain(404, "404 page not found\n")
        if target.is_dir():
            if not url_path.endswith("/"):
                last = relative.rstrip("/").rsplit("/", 1)[-1] or "."
                return _redirect(encode_path(last) + "/")
            index = resolve_inside(self.root, relative.rstrip("/") + "/index.html")
            if index is not None and index.is_file():
                return _file(index)
            try:
                listing = directory_listing(target)
            except OSError:
                return _plain(403, "403 Forbidden\n")
            return web.Response(text=listing, content_type="text/html", charset="utf-8")
        if not target.is_file():
            return _plain(404, "404 page not found\n")
        if not os.access(target, os.R_OK):
            return _plain(403, "403 Forbidden\n")
        return _file(target)
