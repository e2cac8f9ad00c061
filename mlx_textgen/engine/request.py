"""Plain value types that cross the seam between the HTTP layer and the engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    """Everything that decides which tokens one sequence gets; no pydantic, no mlx."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # None: off; k >= 0: the chosen token plus k alternatives
    skip_special_tokens: bool = True
    grammar: str | None = None  # an llguidance grammar the output must match (see guided/)
    # With a trigger the grammar is lazy: it applies once the output contains this text,
    # matching the trigger itself and what follows (`trigger_included`), or what follows.
    grammar_trigger: str | None = None
    trigger_included: bool = False
    trigger_at_start: bool = False  # the trigger counts only at the start of the output
    # A reasoning model's thinking (guided/thinking.py): it ends with `reasoning_end`, which is
    # forced once `max_reasoning_tokens` are spent; the grammar applies after it. A
    # `reasoning_start` says the prompt did not open the thinking (the output may).
    reasoning_end: str = ""
    reasoning_end_ids: tuple[int, ...] = ()
    reasoning_start: str = ""
    reasoning_start_ids: tuple[int, ...] = ()
    max_reasoning_tokens: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass
class Request:
    """One sequence to generate: a prompt in token ids plus how to sample it."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    model: str
    group: str | None = None  # requests of one group share a prompt: prefilled once, then forked
    boundaries: tuple[int, ...] = ()  # prompt positions where messages end (kept by the prompt cache)
    prefill_only: bool = False  # prefill and store the prompt in the prompt cache, generate nothing
    media: Any = None  # a vision prompt's images (mlx_textgen.vision.prompt.VisionPrompt)
    arrival_time: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    text: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass
class RequestOutput:
    """A delta for one sequence: new text since the last output, and the end when finished."""

    request_id: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_note: str = ""
    error: str | None = None
    error_status: int = 500  # HTTP status the API should give the error

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def absorb(self, later: RequestOutput) -> None:
        """Take in the next delta of the same sequence, as if both had come as one."""
        self.text += later.text
        self.token_ids.extend(later.token_ids)
        self.logprobs.extend(later.logprobs)
        self.prompt_tokens, self.completion_tokens = later.prompt_tokens, later.completion_tokens
        self.cached_tokens = later.cached_tokens
        self.cache_note = later.cache_note or self.cache_note
        self.finish_reason = later.finish_reason


SLOW_STEP_MS = (30, 100, 300)  # decode steps slower than these are counted (stalls)


def new_stats() -> dict[str, float]:
    """The engine's counters, zeroed: tokens (prompt received, prefill computed, cached,
    decoded), decode steps (and how many took over 30, 100 and 300 ms: stalls), and
    seconds: of loop iterations that had work (busy), of decode steps (a batch step
    includes the prefill it runs for joining prompts), of chunked prefill, and of
    prompt-cache commits."""
    return {
        "prompt_tokens": 0, "prefill_tokens": 0, "cached_tokens": 0, "decode_tokens": 0,
        "decode_steps": 0, **{f"decode_steps_over_{ms}ms": 0 for ms in SLOW_STEP_MS},
        "busy_seconds": 0.0, "decode_seconds": 0.0, "prefill_seconds": 0.0, "cache_seconds": 0.0,
    }


def count_decode_step(stats: dict[str, float], seconds: float) -> None:
    """Add one decode step that took `seconds` to the counters (and to its stall buckets)."""
    stats["decode_seconds"] += seconds
    stats["decode_steps"] += 1
    for ms in SLOW_STEP_MS:
        if seconds * 1000 > ms:
            stats[f"decode_steps_over_{ms}ms"] += 1
