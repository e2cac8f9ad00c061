"""A request's constraint, checked before anything is queued: a 400 names what is wrong.

Grammars compile in a worker thread of this process (cached per model), so a bad schema,
regex or grammar never reaches the engine; the engine compiles its own copy when the
request arrives there, off its model thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.errors import bad_request
from mlx_textgen.guided.compiler import ConstraintError, GrammarCache, make_tokenizer
from mlx_textgen.guided.forms import Constraint, JsonStyle, from_request

if TYPE_CHECKING:
    from mlx_textgen.api.protocol import _Common
    from mlx_textgen.models.loader import ModelInfo

_caches: dict[int, GrammarCache] = {}


def grammar_cache(info: ModelInfo) -> GrammarCache:
    """The grammar cache of a loaded model; it goes when the model's info does (an unloaded
    model's tokenizer and compiled grammars are not kept)."""
    key = id(info)
    cache = _caches.get(key)
    if cache is None:
        hf, eos = info.hf_tokenizer, info.eos_token_ids
        cache = _caches[key] = GrammarCache(lambda: make_tokenizer(hf, eos))
        weakref.finalize(info, _caches.pop, key, None)
    return cache


def warm(models: Iterable[ModelInfo]) -> None:
    """Start building each model's llguidance tokenizer in the background."""
    for info in models:
        grammar_cache(info).warm()


async def checked_constraint(req: _Common, info: ModelInfo, style: JsonStyle) -> Constraint | None:
    """The request's constraint, compiled once here to prove it compiles; None if none."""
    constraint = None
    try:
        constraint = from_request(req.constraint_fields(), style)
        if constraint is not None:
            cache = grammar_cache(info)
            if constraint.grammar not in cache:
                await run_in_threadpool(cache.check, constraint.grammar)
    except ConstraintError as exc:
        param = exc.param or (constraint.param if constraint is not None else None)
        where = f"`{param}`: " if param and "`" not in exc.message else ""
        raise bad_request(f"invalid constraint: {where}{exc.message}", param) from None
    return constraint
