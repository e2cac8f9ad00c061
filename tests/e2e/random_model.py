"""A small randomly initialised llama saved as an MLX model dir, with SmolLM2's tokenizer
(taken from the GGUF import in the cache dir): a second, different model for e2e tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CONFIG = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True,
    "rope_theta": 10000.0, "eos_token_id": 2,
}  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_random_model(directory: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors (random weights) and the tokenizer files."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(CONFIG))
    directory.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(directory / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (directory / "config.json").write_text(json.dumps(CONFIG))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, directory / name)
    return directory


def random_model_dir(smollm2_gguf: str, cache_root: Path, directory: Path) -> Path:
    """The random model next to the GGUF's import (which gives it its tokenizer)."""
    from mlx_textgen.models.gguf import import_gguf

    imported = import_gguf(Path(smollm2_gguf), cache_root, float_weights=True, progress=False)
    return write_random_model(directory, Path(imported))
