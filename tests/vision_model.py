"""Tiny randomly initialised vision-language models written as local model dirs (no
downloads): config, random weights, a byte-level tokenizer with the architecture's special
tokens, a chat template and the image processor's config. Used by the vision tests and
bench/vision.py (which also writes a Qwen2.5-VL-3B-shaped one for a GPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
IDEFICS_SPECIALS = ["<|im_start|>", "<end_of_utterance>", "<|endoftext|>", "<image>",
                    "<fake_token_around_image>", "<global-img>"]  # fmt: skip
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _tokenizer(directory: Path, specials: list[str], template: str, eos: str) -> dict[str, int]:
    """A byte-level BPE without merges (every byte a token) plus `specials`; their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>", chat_template=template
    )
    fast.save_pretrained(str(directory))
    return {s: tok.token_to_id(s) for s in specials}


def _text(hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 4096, "tie_word_embeddings": True,
    }  # fmt: skip


def qwen2_vl_config(ids: dict[str, int], shape: str = "tiny") -> dict[str, Any]:
    if shape == "qwen2_5_vl_3b":  # Qwen2.5-VL-3B-Instruct's shape
        text = _text(2048, 36, 16, 2, 11008, 151936)
        vision = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                  "out_hidden_size": 2048, "fullatt_block_indexes": [7, 15, 23, 31],
                  "window_size": 112}  # fmt: skip
        model_type, sections = "qwen2_5_vl", [16, 24, 24]
    elif shape == "tiny25":  # a tiny Qwen2.5-VL (windowed vision attention)
        text = _text(64, 2, 4, 2, 128, 256 + len(QWEN_SPECIALS))
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": 64, "fullatt_block_indexes": [1], "window_size": 56}
        model_type, sections = "qwen2_5_vl", [2, 3, 3]
    elif shape == "small":  # the CPU benchmark's: big enough that images cost something
        text = _text(256, 4, 4, 2, 768, 256 + len(QWEN_SPECIALS))
        vision = {"depth": 4, "embed_dim": 128, "hidden_size": 256, "num_heads": 4, "mlp_ratio": 2}
        model_type, sections = "qwen2_vl", [8, 12, 12]
    else:
        text = _text(64, 2, 4, 2, 128, 256 + len(QWEN_SPECIALS))
        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2}
        model_type, sections = "qwen2_vl", [2, 3, 3]
    vision |= {"model_type": model_type, "patch_size": 14, "spatial_patch_size": 14,
               "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}  # fmt: skip
    text |= {"model_type": model_type, "rope_theta": 1000000.0,
             "rope_scaling": {"type": "mrope", "mrope_section": sections}}  # fmt: skip
    return text | {
        "model_type": model_type, "text_config": dict(text), "vision_config": vision,
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "eos_token_id": ids["<|im_end|>"],
    }


def idefics3_config(ids: dict[str, int]) -> dict[str, Any]:
    vocab = 256 + len(IDEFICS_SPECIALS)
    text = _text(64, 2, 4, 2, 128, vocab) | {"model_type": "llama", "rope_theta": 10000.0}
    vision = {"model_type": "idefics3_vision", "hidden_size": 32, "num_attention_heads": 2,
              "patch_size": 8, "num_hidden_layers": 1, "intermediate_size": 64, "image_size": 32}
    return {
        "model_type": "idefics3", "text_config": text, "vision_config": vision, "scale_factor": 2,
        "image_token_id": ids["<image>"], "image_token_index": ids["<image>"], "vocab_size": vocab,
        "eos_token_id": ids["<end_of_utterance>"],
    }


def _processor_files(directory: Path, arch: str, shape: str) -> None:
    if arch == "qwen2_vl":
        pixels = {"tiny": (56 * 56, 112 * 112), "tiny25": (56 * 56, 112 * 112), "small": (3136, 448 * 448)}.get(shape, (3136, 1003520))
        pre = {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14,
               "merge_size": 2, "temporal_patch_size": 2, "min_pixels": pixels[0],
               "max_pixels": pixels[1], "image_mean": MEAN, "image_std": STD}  # fmt: skip
        pre["size"] = {"shortest_edge": pixels[0], "longest_edge": pixels[1]}
    else:
        pre = {"image_processor_type": "Idefics3ImageProcessor", "do_image_splitting": False,
               "size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 32},
               "image_mean": MEAN, "image_std": STD, "do_resize": True}  # fmt: skip
        (directory / "processor_config.json").write_text(
            json.dumps({"processor_class": "Idefics3Processor", "image_seq_len": 4})
        )
    (directory / "preprocessor_config.json").write_text(json.dumps(pre))


def write_vision_model(directory: Path, arch: str = "qwen2_vl", shape: str = "tiny",
                       seed: int = 0) -> Path:
    """Write a random `arch` model ("qwen2_vl" or "idefics3") into `directory`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_textgen.vision import door

    directory.mkdir(parents=True, exist_ok=True)
    if arch == "qwen2_vl":
        ids = _tokenizer(directory, QWEN_SPECIALS, CHATML, "<|im_end|>")
        config = qwen2_vl_config(ids, shape)
    else:
        ids = _tokenizer(directory, IDEFICS_SPECIALS, IDEFICS, "<end_of_utterance>")
        config = idefics3_config(ids)
    (directory / "config.json").write_text(json.dumps(config))
    _processor_files(directory, arch, shape)
    mx.random.seed(seed)
    model = door.build_model(directory)
    if shape == "qwen2_5_vl_3b":
        model.set_dtype(mx.bfloat16)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(directory / "model.safetensors"), weights)
    return directory
