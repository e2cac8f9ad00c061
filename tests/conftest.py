"""Shared fixtures: the default model's GGUF and one import cache for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlx_textgen.blas import select_blas

# Tests that run the model in-process get the same fast CPU path as the server (before any
# test module imports MLX).
select_blas("auto")


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    from mlx_textgen.models.default import DefaultModelMissing, default_model_path

    try:
        return default_model_path()
    except DefaultModelMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session, so the GGUF import runs once."""
    shared = os.environ.get("MLX_TEXTGEN_TEST_CACHE")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return tmp_path_factory.mktemp("mlx_textgen_cache")
