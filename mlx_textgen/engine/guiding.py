"""The engine's side of structured output: compiled grammars per model, a guide per sequence.

A request's grammar is compiled when the request reaches the engine process, on the
thread that hands requests to the loop, so the model thread only copies a ready matcher.
"""

from __future__ import annotations

from typing import Any

from mlx_textgen import backend
from mlx_textgen.engine.request import SamplingParams
from mlx_textgen.guided.compiler import ConstraintError, GrammarCache, make_tokenizer
from mlx_textgen.guided.constraint import Constraint, GrammarConstraint, Triggered
from mlx_textgen.guided.guide import Guide
from mlx_textgen.guided.rows import RowMasks
from mlx_textgen.guided.thinking import ThinkingBudget
from mlx_textgen.models.loader import ModelInfo


class Guides:
    """One grammar cache per model (each has its own tokenizer)."""

    def __init__(self) -> None:
        self._caches: dict[str, GrammarCache] = {}
        self._rows: dict[str, RowMasks] = {}

    def install(self, info: ModelInfo, model: Any, vocab_size: int) -> None:
        """Mask the constrained rows of `model`'s decode batches (guided/rows.py)."""
        rows = self._rows[info.name] = RowMasks(vocab_size)
        backend.set_decode_hook(model, rows)

    def attach(self, info: ModelInfo, uid: int, guide: Guide, generated: int) -> RowMasks:
        """Row `uid` decodes under `guide`, `generated` tokens into its output; the hook
        that masks it (a lone sequence's decoder calls it itself)."""
        rows = self._rows[info.name]
        rows.attach(uid, guide, generated)
        return rows

    def _cache(self, info: ModelInfo) -> GrammarCache:
        cache = self._caches.get(info.name)
        if cache is None:
            hf, eos = info.hf_tokenizer, info.eos_token_ids
            cache = self._caches[info.name] = GrammarCache(lambda: make_tokenizer(hf, eos))
        return cache

    def warm(self, info: ModelInfo) -> None:
        """Build the model's llguidance tokenizer in the background."""
        self._cache(info).warm()

    def prepare(self, info: ModelInfo | None, params: SamplingParams) -> str | None:
        """Compile the request's grammar now; what is wrong with it, if it can't be."""
        if params.grammar is None or info is None:
            return None
        try:
            self._cache(info).check(params.grammar)
        except ConstraintError as exc:
            return exc.message
        return None

    def new(self, info: ModelInfo, params: SamplingParams) -> Guide | None:
        """A fresh guide for one sequence of a request, or None if it is unconstrained."""
        if params.grammar is None and not params.reasoning_end_ids:
            return None
        cache = self._cache(info)
        constraint: Constraint | None = None
        if params.grammar is not None:
            constraint = GrammarConstraint(cache.matcher(params.grammar), cache.tokenizer.vocab_size)
        if constraint is not None and params.grammar_trigger:
            constraint = Triggered(
                constraint, params.grammar_trigger, params.trigger_included, cache.tokenizer,
                at_start=params.trigger_at_start,
            )
        if params.reasoning_end_ids:
            constraint = ThinkingBudget(
                constraint, cache.tokenizer, end=params.reasoning_end,
                end_ids=params.reasoning_end_ids, budget=params.max_reasoning_tokens,
                start=params.reasoning_start, start_ids=params.reasoning_start_ids,
            )
        assert constraint is not None
        return Guide(constraint)
