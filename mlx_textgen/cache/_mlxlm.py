"""The mlx-lm names the prompt cache needs beyond ``backend``; to be folded into backend.py.

Kept apart only so that ``backend.py`` stays the one place that will import mlx-lm
internals once this moves there.
"""

from __future__ import annotations

from mlx_lm.models.cache import KVCache

__all__ = ["KVCache"]
