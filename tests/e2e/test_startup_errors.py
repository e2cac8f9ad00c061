"""A model that can't be loaded stops `mlx_textgen serve` with one clear line and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys


def serve(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "mlx_textgen", "serve", "--port", "1", "--cache-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )


def test_missing_gguf(tmp_path):
    r = serve("-m", str(tmp_path / "nope.gguf"), tmp_path=tmp_path)
    assert r.returncode == 1
    assert "could not load model `nope`: FileNotFoundError: GGUF file not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_hub_repo_offline(tmp_path):
    r = serve("-m", "some-org/NoSuchModel-4bit", "--revision", "main", tmp_path=tmp_path)
    assert r.returncode == 1 and "could not load model `nosuchmodel`" in r.stderr
    assert "Traceback" not in r.stderr


def test_preloaded_second_model_missing_names_it(tmp_path, smollm2_gguf):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"max_loaded_models": 2, "model_configs": [
        {"model_id_or_path": smollm2_gguf, "preload": False},
        {"model_id_or_path": str(tmp_path / "gone.gguf"), "model_name": "second", "preload": True},
    ]}))
    r = serve("--config-file", str(cfg), tmp_path=tmp_path)
    assert r.returncode == 1 and "could not load model `second`: FileNotFoundError" in r.stderr
    assert "Traceback" not in r.stderr


def test_unsupported_gguf_architecture(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = serve("-m", str(path), tmp_path=tmp_path)
    assert r.returncode == 1 and "bert" in r.stderr


def test_truncated_gguf_says_so(tmp_path, smollm2_gguf):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        cut.write_bytes(f.read(200_000))  # an interrupted download: the header's end is missing
    r = serve("-m", str(cut), tmp_path=tmp_path)
    assert r.returncode == 1 and "could not load model `cut`" in r.stderr
    assert "truncated or corrupt" in r.stderr and "Traceback" not in r.stderr
