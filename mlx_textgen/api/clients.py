"""Who sent a request, as the engine's admission line knows clients (engine/admission.py)."""

from __future__ import annotations

import hashlib

from fastapi import Request


def client_id(http: Request) -> str:
    """With API keys required, the key is the client (many users may share one address
    behind a proxy); else the remote address. The key only as a hash: it stays out of the
    line's memory and of anything that might print it."""
    if getattr(http.app.state, "keyed", False):
        auth = http.headers.get("authorization", "")
        bearer = auth.lower().startswith("bearer ")
        key = auth[7:].strip() if bearer else http.headers.get("x-api-key", "")
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "addr:" + (http.client.host if http.client is not None else "?")
