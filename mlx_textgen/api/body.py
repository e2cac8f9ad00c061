"""The request body before routing: read whole under the size limit (413 past it, chunked
bodies included) and checked for text that can't be UTF-8 (400), then replayed to the app."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_textgen.api.errors import error_body

# A lone surrogate reaches a decoded JSON string only through a \uD800-\uDFFF escape or the
# raw bytes ED A0..BF (Python's json decodes bytes with "surrogatepass"): look closer only then.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_text_at(value: Any, path: str = "") -> str | None:
    """Where in a decoded JSON value a string (key or value) has a lone surrogate."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if not _is_text(node):
                return at
        elif isinstance(node, dict):
            for key, item in node.items():
                child = f"{at}.{key}" if at else str(key)
                if not _is_text(key):
                    return at or "body"
                stack.append((item, child))
        elif isinstance(node, list):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(node))
    return None


def surrogate_param(body: bytes) -> str | None:
    """The field of a JSON body holding a lone surrogate (None: there is none, or the body
    is not JSON, which the route's own parsing reports)."""
    # Substring tests first: the regex alone scans a large body (an image as a data URL)
    # five times slower than both of them.
    if (b"\\u" not in body and b"\xed" not in body) or not _MAYBE_SURROGATE.search(body):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = _bad_text_at(value)
    return None if found is None else (found or "body")


class BodyGuard:
    """413 for bodies over the limit, counted as they arrive (Content-Length can lie, and a
    chunked body has none); 400 for a JSON body with a lone surrogate in a string."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, receive, send, 413, self._too_big(), None)
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client left before its body arrived
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await self._reject(scope, receive, send, 413, self._too_big(), None)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        param = surrogate_param(body)
        if param is not None:
            message = f"Invalid value for '{param}': the string is not valid Unicode (a lone surrogate)."
            return await self._reject(scope, receive, send, 400, message, param)
        await self.app(scope, _replay(body, receive), send)

    def _too_big(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes."

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str,
        param: str | None,
    ) -> None:
        # The connection closes after: the rest of an oversized body is never read.
        response = JSONResponse(
            error_body(status, message, _printable(param)), status_code=status,
            headers={"Connection": "close"} if status == 413 else None,
        )
        await response(scope, receive, send)


def _printable(param: str | None) -> str | None:
    return None if param is None else param.encode("utf-8", "backslashreplace").decode("utf-8")


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; after it, the real channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
