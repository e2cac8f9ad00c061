"""Why a lookup reused what it did: the reason strings a request's log line shows.

One place for the wording, so that every reason names the position and the rule that
decided it. Pure Python; ``index.PrefixIndex.match_prefix`` and the manager use these.

- ``"hit"``: the whole cached path the prompt runs along was reused.
- ``"divergence at token N"``: the prompt leaves every cached prefix at token N (a hit of
  the tokens before N; with N = 0 a miss: nothing cached starts like this prompt).
- checkpoint trees (caches that can't be cut to any prefix): a hit that had to stop short
  of the shared tokens names the checkpoint it resumed at; a miss names how many tokens
  were shared and where the nearest checkpoint lies, and the manager adds which cache
  kinds impose the rule.
"""

from __future__ import annotations

from collections.abc import Iterable

HIT = "hit"
NO_ENTRY = "no entry"
MODEL_CHANGED = "model changed"
DISABLED = "cache disabled"


def divergence(at: int) -> str:
    """The prompt leaves every cached prefix at token ``at``."""
    return f"divergence at token {at}"


def trimmable_miss(shared: int, prompt_len: int) -> str:
    """Nothing reusable in a tree of KV slices, where any shared prefix would do."""
    if shared == 0:
        return divergence(0)
    if prompt_len <= 1:
        return "a 1-token prompt leaves nothing to reuse"
    return f"no stored segment within the {shared} tokens shared with a cached prompt"


def checkpoint_hit(length: int, shared: int, diverged_at: int | None) -> str:
    """A checkpoint hit at ``length`` while the prompt shared ``shared`` cached tokens."""
    if shared <= length:
        return divergence(diverged_at) if diverged_at is not None else HIT
    where = divergence(diverged_at) if diverged_at is not None else f"{shared} tokens shared"
    return f"{where}; resumed at the checkpoint at token {length}"


def checkpoint_miss(shared: int, nearest: int | None, prompt_len: int) -> str:
    """No checkpoint lies within the ``shared`` tokens the prompt has in common with the
    cache; ``nearest``: the first checkpoint past them, on the path the prompt left."""
    if shared == 0:
        return divergence(0)
    if nearest is not None and nearest >= prompt_len and shared >= prompt_len:
        return (
            f"the checkpoint at token {nearest} covers the whole {prompt_len}-token prompt "
            "(one token must be left to decode)"
        )
    past = f", the nearest is at token {nearest}" if nearest is not None else ""
    return f"no checkpoint within the {shared} tokens shared with a cached prompt{past}"


def only_at_checkpoints(reason: str, cache_classes: Iterable[str]) -> str:
    """A checkpoint miss, with the cache kinds that forbid cutting a state to a prefix."""
    kinds = ", ".join(sorted(set(cache_classes))) or "these"
    return f"{reason}; {kinds} caches resume only at a stored checkpoint"
