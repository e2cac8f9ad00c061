"""Qwen2.5-VL's vision tower gets no empty attention window (vision/windows.py), and its
output is the same as with them (CPU attention accepts a zero-length window)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("mlx_vlm")

from mlx_textgen.vision import door
from mlx_textgen.vision.windows import distinct_bounds
from tests.vision_model import write_vision_model


def test_distinct_bounds_drop_only_repeats() -> None:
    assert distinct_bounds([0, 16, 16, 32, 32, 32, 48]) == [0, 16, 32, 48]
    assert distinct_bounds([0, 4, 8]) == [0, 4, 8] and distinct_bounds([]) == []


def test_the_tower_runs_no_empty_window_and_gives_the_same_output(tmp_path: Path) -> None:
    d = write_vision_model(tmp_path / "m", "qwen2_vl", shape="tiny25")
    model = door.load_model(d)  # installs the patch (door.architecture)
    tower = model.vision_tower
    patched = type(tower).get_window_index
    assert hasattr(patched, "__wrapped__")
    # 8x8 patches: a 4x4 merged grid, windows of 2 (56 px / 2 / 14), a whole empty row and
    # column of windows padded on.
    grid = mx.array([[1, 8, 8]])
    _, bounds = tower.get_window_index(grid)
    _, raw = patched.__wrapped__(tower, grid)
    assert len(set(raw.tolist())) < raw.size  # mlx-vlm's own has repeats
    assert bounds.tolist() == sorted(set(raw.tolist()))  # strictly increasing, same windows
    cfg = json.loads((d / "config.json").read_text())["vision_config"]
    channels = cfg["in_channels"] * cfg["temporal_patch_size"] * cfg["patch_size"] ** 2
    pixels = mx.array(np.random.default_rng(0).standard_normal((64, channels)), dtype=mx.float32)
    ours = tower(pixels, grid)
    try:
        type(tower).get_window_index = patched.__wrapped__
        theirs = tower(pixels, grid)
    finally:
        type(tower).get_window_index = patched
    assert ours.shape == theirs.shape and mx.allclose(ours, theirs, atol=1e-5).item()
