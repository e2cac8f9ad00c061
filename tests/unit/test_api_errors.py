"""Internal error text stays in the log: a client sees a generic message and an id."""

from __future__ import annotations

import logging

from mlx_textgen.api.body import surrogate_param
from mlx_textgen.api.generation import _error_of
from mlx_textgen.engine.request import FinishReason, RequestOutput


def test_engine_error_text_goes_to_the_log_only(caplog):
    out = RequestOutput("r1", finish_reason=FinishReason.ERROR,
                        error="internal error: key(): incompatible function arguments")
    with caplog.at_level(logging.ERROR, logger="mlx_textgen.api"):
        err = _error_of(out)
    assert err is not None and err.status == 500 and "key()" not in err.message
    error_id = err.message.split("error id ")[1].rstrip(").")
    assert any(error_id in r.getMessage() and "key()" in r.getMessage() for r in caplog.records)


def test_client_errors_and_timeouts_keep_their_message():
    bad = _error_of(RequestOutput("r", finish_reason=FinishReason.ERROR, error="bad regex",
                                  error_status=400))
    slow = _error_of(RequestOutput("r", finish_reason=FinishReason.ERROR, error="timed out",
                                   error_status=504))
    assert bad.message == "bad regex" and slow.status == 504 and slow.message == "timed out"
    assert _error_of(RequestOutput("r", finish_reason=FinishReason.STOP)) is None


def test_surrogate_param_names_the_field():
    assert surrogate_param(b'{"a": [1, {"b": "x\\ud800"}]}') == "a[1].b"
    assert surrogate_param(b'{"a": "\\ud83d\\ude00"}') is None  # a proper pair: an emoji
    assert surrogate_param(b'"\\udc00"') == "body"
    assert surrogate_param(b'{"\\ud800": 1}') == "body"
    assert surrogate_param(b'{"a": "\\\\ud800"}') is None  # an escaped backslash
    assert surrogate_param(b'{not json \\ud800') is None  # the route reports bad JSON
