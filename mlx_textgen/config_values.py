"""What one configuration key accepts, and the checks that turn a raw value into the stored
one (or a ValueError naming the problem). Split out of config.py to keep it one concept."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Spec:
    """What one key accepts. ``null_ok``: null is stored as None; collections store null as empty."""

    kind: str  # str | int | float | bool | mapping | str_list
    null_ok: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "mapping": "a mapping with string keys",
    "str_list": "a string or a list of strings",
}


def _check_value(name: str, value: Any, spec: _Spec) -> Any:
    """Return ``value`` as stored for key ``name``; raise ValueError naming the problem."""
    if value is None:
        if spec.null_ok:
            return None
        if spec.kind in ("mapping", "str_list"):
            return {} if spec.kind == "mapping" else []
        raise ValueError(f"must not be null (expected {_TYPE_WORDS[spec.kind]})")
    value = _check_type(value, spec.kind)
    if spec.kind == "str" and not value.strip():
        raise ValueError("must not be empty")
    if spec.kind == "str_list" and not all(value):
        raise ValueError("must not contain empty strings")  # an empty stop word stops at once
    if spec.kind == "float" and not math.isfinite(value):
        raise ValueError(f"must be a finite number; got {value!r}")
    if name == "blas" and value.lower() in ("auto", "off"):
        value = value.lower()
    if spec.choices:
        value = value.lower() if value.lower() in spec.choices else value
        if value not in spec.choices:
            raise ValueError(f"must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise ValueError(f"must be {_range_words(spec)}; got {value!r}")
    if name == "request_timeout" and value == 0:
        return None  # 0 disables the timeout, so the command line can switch it off
    return value


def _check_type(value: Any, kind: str) -> Any:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "mapping": isinstance(value, dict) and all(isinstance(k, str) for k in value),
        "str_list": isinstance(value, str)
        or isinstance(value, list)
        and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        shown = f"{value!r}" if len(repr(value)) < 60 else type(value).__name__
        raise ValueError(f"expected {_TYPE_WORDS[kind]}, got {shown}")
    if kind == "str_list":
        return [value] if isinstance(value, str) else list(value)
    return float(value) if kind == "float" else value


def _range_words(spec: _Spec) -> str:
    if spec.low is not None and spec.high is not None:
        return f"between {spec.low:g} and {spec.high:g}"
    if spec.low is not None:
        return f"at least {spec.low:g}" if spec.low else "zero or more"
    return f"at most {spec.high:g}"


def _unknown_key(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key in {where}; {hint}"
