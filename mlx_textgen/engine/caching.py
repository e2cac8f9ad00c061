"""The engine's side of the prompt cache: where prefill starts, and what gets kept.

Every request asks the cache for its longest stored prefix before prefill; when its prompt
is prefilled the prompt is committed (with its message boundaries), and when it finishes
the prompt plus completion is, so the next turn of a conversation hits everything before
its new message. Runs on the MLX thread, as the manager must.

A finished sequence's commit waits: the engine commits one per step, so a burst of
sequences finishing together never freezes the running streams or the next request's
first token (16 at once took 300 ms on an H100). A new prompt that could reuse a waiting
one (the next turn of its conversation) has it committed before its lookup.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlx_textgen.cache import segments as seg
from mlx_textgen.cache.manager import CacheOptions, PromptCacheManager
from mlx_textgen.cache.node import common_prefix
from mlx_textgen.engine.prefill import Checkpoints
from mlx_textgen.models.loader import ModelInfo

log = logging.getLogger("mlx_textgen.cache")


@dataclass
class Start:
    """Where a prompt's prefill starts, and where it must stop to store a checkpoint."""

    cache: list[Any]
    cached_tokens: int
    reason: str
    pinned: list[Any] = field(default_factory=list)
    checkpoints: Checkpoints | None = None  # None: prefill may run through


@dataclass
class _Finished:
    """A finished sequence waiting to be committed."""

    info: ModelInfo
    tokens: list[int]
    cache: list[Any]
    stored: int  # leading tokens already committed (its prompt, when its prefill ended)


def reuses(prompt: list[int], finished: list[int], stored: int, min_tokens: int) -> bool:
    """Whether `prompt` would hit more of a finished sequence's tokens than is already
    stored: it shares a prefix of at least `min_tokens` that goes past `stored`."""
    shared = common_prefix(tuple(finished), tuple(prompt), 0)
    return shared >= min_tokens and shared > stored


class EngineCache:
    """Prompt cache calls for the engine loop; a no-op for models with `enable_cache: false`."""

    def __init__(self, options: CacheOptions | None) -> None:
        self.manager = self._open(options) if options is not None else None
        self._fingerprints: dict[str, str] = {}
        self._deferred: list[Callable[[], None]] = []
        self._finished: list[_Finished] = []

    @staticmethod
    def _open(options: CacheOptions) -> PromptCacheManager:
        """The manager; if its directory can't be used, a RAM-only cache rather than no server."""
        try:
            return PromptCacheManager(options)
        except OSError as exc:
            log.warning("prompt cache: %s unusable (%s); keeping the cache in RAM only", options.root, exc)
            # An empty scratch root: with no disk budget nothing is written there.
            scratch = Path(tempfile.mkdtemp(prefix="mlx_textgen-cache-"))
            return PromptCacheManager(replace(options, root=scratch, disk_budget_bytes=0))

    def fingerprint(self, info: ModelInfo) -> str | None:
        if self.manager is None or not info.config.enable_cache:
            return None
        if info.name not in self._fingerprints:
            extra = "float32" if info.float_weights else "as-stored"
            self._fingerprints[info.name] = PromptCacheManager.fingerprint(info.model_dir, extra, name=info.name)
        return self._fingerprints[info.name]

    def start(
        self, info: ModelInfo, model: Any, prompt: list[int], fresh: list[Any],
        boundaries: tuple[int, ...] = (),
    ) -> Start:
        """The longest cached prefix of `prompt`, and for a cache that can't be cut to a
        prefix, the `boundaries` past it where prefill must stop to store its state."""
        fp = self.fingerprint(info)
        if fp is None or self.manager is None:
            return Start(fresh, 0, "cache disabled")
        hit = self.manager.lookup(fp, model, prompt)
        start = Start(hit.cache, hit.cached_tokens, hit.reason, hit.pinned)
        if not seg.is_trimmable(hit.cache):
            least = max(self.manager.options.min_tokens, hit.cached_tokens + 1)
            stops = tuple(sorted({b for b in boundaries if least <= b < len(prompt) - 1}))
            if stops:
                start.checkpoints = Checkpoints(stops, lambda t, c: self.commit(info, t, c, [len(t)]))
        return start

    def commit(self, info: ModelInfo, tokens: list[int], cache: list[Any], boundaries: list[int]) -> None:
        fp = self.fingerprint(info)
        if fp is None or self.manager is None or not tokens:
            return
        try:
            self.manager.commit(fp, tokens, cache, sorted({b for b in boundaries if 0 < b <= len(tokens)}))
        except Exception:  # a cache failure must never fail the request
            log.exception("prompt cache: commit failed")

    def commit_prompt(self, info: ModelInfo, tokens: list[int], cache: list[Any], boundaries: list[int]) -> None:
        """Commit a just-prefilled prompt after the next decode step, so storing it never
        delays the first token. A cache that can't be trimmed holds an exact state, which
        decoding would move past, so that kind is committed now."""
        if self.fingerprint(info) is None:
            return
        if seg.is_trimmable(cache):
            self._deferred.append(lambda: self.commit(info, tokens, cache, boundaries))
        else:
            self.commit(info, tokens, cache, boundaries)

    def run_deferred(self) -> None:
        jobs, self._deferred = self._deferred, []
        for job in jobs:
            job()

    def finished(self, info: ModelInfo, tokens: list[int], cache: list[Any], stored: int) -> None:
        """A finished sequence's prompt plus completion, committed later (see the module doc);
        `stored`: how many of its leading tokens were committed already."""
        if self.fingerprint(info) is not None and tokens:
            self._finished.append(_Finished(info, tokens, cache, stored))

    @property
    def has_finished(self) -> bool:
        return bool(self._finished)

    def commit_finished(self, backlog: int) -> None:
        """Commit the oldest waiting sequence, and more while over `backlog` wait."""
        while self._finished:
            f = self._finished.pop(0)
            self.commit(f.info, f.tokens, f.cache, [len(f.tokens)])
            if len(self._finished) <= backlog:
                return

    def commit_reused(self, prompt: list[int]) -> None:
        """Commit now every waiting sequence that `prompt` would reuse."""
        if not self._finished or self.manager is None:
            return
        least = self.manager.options.min_tokens
        for f in [f for f in self._finished if reuses(prompt, f.tokens, f.stored, least)]:
            self._finished.remove(f)
            self.commit(f.info, f.tokens, f.cache, [len(f.tokens)])

    def flush(self) -> None:
        """Everything waiting, committed: before admin calls, a model switch and shutdown."""
        self.run_deferred()
        self.commit_finished(backlog=0)

    def release(self, pinned: list[Any]) -> None:
        if self.manager is not None and pinned:
            self.manager.release(pinned)

    def entries(self, models: dict[str, ModelInfo]) -> list[dict[str, Any]]:
        """Stored entries, each with the model name it belongs to (or its fingerprint's)."""
        if self.manager is None:
            return []
        names = {self.fingerprint(i): n for n, i in models.items() if self.fingerprint(i)}
        out = self.manager.entries()
        for e in out:
            e["model"] = names.get(e["fingerprint"], e["fingerprint"].rsplit("-", 1)[0])
            e["current"] = e["fingerprint"] in names
        return out

    def clear(self, info: ModelInfo | None) -> int:
        if self.manager is None:
            return 0
        if info is None:
            return self.manager.clear()
        fp = self.fingerprint(info)
        return self.manager.clear(fp) if fp else 0

    def close(self) -> None:
        self.flush()
        if self.manager is not None:
            self.manager.close()
