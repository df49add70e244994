"""Static files under ``--www-prefix`` from the ``--www`` folder, with no way out of it.

Behaviour follows Go's ``http.FileServer`` (what kubectl proxy uses): a directory
without its trailing slash is redirected to it, a directory serves its ``index.html``
or else a listing, ``.../index.html`` redirects to ``./``, a missing file is
``404 page not found``; files carry Last-Modified and answer If-Modified-Since with
304 and a single byte range with 206 (several ranges get the whole file, where Go
would send a multipart answer).

Unlike ``http.Dir``, a symbolic link is followed only when its target stays inside the
folder: traversal by ``..`` is already impossible after path normalisation, and this
closes the other way out.
"""

from __future__ import annotations

import email.utils
import html
import mimetypes
import os
import re
from pathlib import Path
from urllib.parse import quote

from .front import Exchange
from .paths import encode_path

#: Bytes read from a file at a time.
CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")


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


def directory_listing(folder: Path) -> str:
    """Go's listing: one link per entry, directories with a trailing slash."""
    lines = ['<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n']
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name + ("/" if entry.is_dir() else "")
        href = quote(name, safe="/")
        lines.append(f'<a href="{html.escape(href)}">{html.escape(name)}</a>\n')
    lines.append("</pre>\n")
    return "".join(lines)


def content_type(path: Path) -> str:
    kind, _ = mimetypes.guess_type(path.name)
    if kind is None:
        return "application/octet-stream"
    # Go's mime types give text/* a UTF-8 charset.
    return f"{kind}; charset=utf-8" if kind.startswith("text/") else kind


def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The single range a Range header asks for: (first, last), None for the whole
    file (no header, or several ranges), False when it cannot be satisfied."""
    if not header or "," in header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "" or int(last) == 0:
            return False
        return max(0, size - int(last)), size - 1
    start = int(first)
    if start >= size:
        return False
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return False
    return start, end


async def _plain(exchange: Exchange, status: int, text: str) -> None:
    await exchange.send(status, [_TEXT, _NOSNIFF], text.encode())


async def _redirect(exchange: Exchange, location: str) -> None:
    await exchange.send(301, [("Location", location)])


class StaticFiles:
    """A folder served read-only."""

    def __init__(self, folder: str) -> None:
        self.root = Path(folder).resolve()

    async def respond(self, exchange: Exchange, relative: str) -> None:
        """Answer for ``relative`` (the canonical path after the prefix)."""
        url_path = exchange.target.partition("?")[0]
        if relative.endswith("/index.html") or relative == "index.html":
            await _redirect(exchange, "./")
            return
        target = resolve_inside(self.root, relative)
        if target is None:
            await _plain(exchange, 404, "404 page not found\n")
            return
        if target.is_dir():
            if not url_path.endswith("/"):
                last = relative.rstrip("/").rsplit("/", 1)[-1] or "."
                await _redirect(exchange, encode_path(last) + "/")
                return
            index = resolve_inside(self.root, relative.rstrip("/") + "/index.html")
            if index is not None and index.is_file():
                await self._file(exchange, index)
                return
            try:
                listing = directory_listing(target)
            except OSError:
                await _plain(exchange, 403, "403 Forbidden\n")
                return
            headers = [("Content-Type", "text/html; charset=utf-8")]
            await exchange.send(200, headers, listing.encode())
            return
        if not target.is_file():
            await _plain(exchange, 404, "404 page not found\n")
            return
        await self._file(exchange, target)

    async def _file(self, exchange: Exchange, path: Path) -> None:
        try:
            handle = path.open("rb")
        except OSError:
            await _plain(exchange, 403, "403 Forbidden\n")
            return
        with handle:
            st = os.fstat(handle.fileno())
            size = st.st_size
            modified = email.utils.formatdate(int(st.st_mtime), usegmt=True)
            headers = [
                ("Accept-Ranges", "bytes"),
                ("Content-Type", content_type(path)),
                ("Last-Modified", modified),
            ]
            since = exchange.header("If-Modified-Since")
            if since and exchange.header("Range") is None:
                try:
                    if int(st.st_mtime) <= email.utils.parsedate_to_datetime(since).timestamp():
                        await exchange.send(304, [("Last-Modified", modified)])
                        return
                except (TypeError, ValueError):
                    pass
            wanted = byte_range(exchange.header("Range"), size)
            if wanted is False:
                await exchange.send(416, [*headers[:1], ("Content-Range", f"bytes */{size}")])
                return
            status, first, count = 200, 0, size
            if isinstance(wanted, tuple):
                status, first, count = 206, wanted[0], wanted[1] - wanted[0] + 1
                headers.append(("Content-Range", f"bytes {wanted[0]}-{wanted[1]}/{size}"))
            await exchange.start(status, headers, count)
            handle.seek(first)
            while count > 0:
                data = handle.read(min(CHUNK, count))
                if not data:
                    exchange.abort()  # the file shrank under us
                    return
                count -= len(data)
                await exchange.write(data)
            await exchange.end()
