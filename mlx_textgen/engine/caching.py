"""The engine's side of the prompt cache: where prefill starts, and what gets kept.

Every request asks the cache for its longest stored prefix before prefill; when its prompt
is prefilled the prompt is committed (with its message boundaries), and when it finishes
the prompt plus completion is, so the next turn of a conversation hits everything before
its new message. Runs on the MLX thread, as the manager must.
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
from mlx_textgen.models.loader import ModelInfo

log = logging.getLogger("mlx_textgen.cache")


@dataclass
class Start:
    """Where a prompt's prefill starts."""

    cache: list[Any]
    cached_tokens: int
    reason: str
    pinned: list[Any] = field(default_factory=list)


class EngineCache:
    """Prompt cache calls for the engine loop; a no-op for models with `enable_cache: false`."""

    def __init__(self, options: CacheOptions | None) -> None:
        self.manager = self._open(options) if options is not None else None
        self._fingerprints: dict[str, str] = {}
        self._deferred: list[Callable[[], None]] = []

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

    def start(self, info: ModelInfo, model: Any, prompt: list[int], fresh: list[Any]) -> Start:
        fp = self.fingerprint(info)
        if fp is None or self.manager is None:
            return Start(fresh, 0, "cache disabled")
        hit = self.manager.lookup(fp, model, prompt)
        return Start(hit.cache, hit.cached_tokens, hit.reason, hit.pinned)

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
        if self.manager is not None:
            self.manager.close()
