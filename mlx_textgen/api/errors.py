"""OpenAI error objects: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi.responses import JSONResponse

log = logging.getLogger("mlx_textgen.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_overloaded",
    504: "timeout",
}


class APIError(Exception):
    """Raised anywhere in the HTTP layer; turned into an OpenAI error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


class ClientGone(Exception):
    """The client hung up before its (non-streamed) answer; the engine work was aborted.
    The app answers it with nothing, quietly: it is no server error."""


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def internal_error(detail: BaseException | str, what: str, status: int = 500) -> APIError:
    """A server-side failure as the client sees it: a generic message and an id; the detail
    goes to the log under that id (internal text never reaches a client)."""
    error_id = uuid.uuid4().hex[:12]
    if isinstance(detail, BaseException):
        log.error("%s [error id %s]", what, error_id, exc_info=detail)
    else:
        log.error("%s [error id %s]: %s", what, error_id, detail)
    return APIError(
        status,
        f"The server had an error while processing your request (error id {error_id}).",
        code="internal_error",
    )
