"""The chat template of a model that carries none: its architecture family's preset.

A GGUF or MLX directory without a ``chat_template`` still has a known turn format when its
architecture is known (``model_type`` in config.json): Gemma's ``<start_of_turn>``, Llama
3's headers, ChatML for Qwen, and so on. Rendering another family's format makes the model
answer with that format's markup as plain text, so the preset is picked from the family,
and where a family has had several formats (Llama), from the special tokens the vocabulary
has. Pure Python: the caller passes the vocabulary's token strings.
"""

from __future__ import annotations

from collections.abc import Container

# model_type (config.json) -> preset name (mlx_textgen.chat.templates.PRESET_NAMES)
_BY_MODEL_TYPE: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3_text": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2_moe": "chatml",
    "qwen3": "chatml",
    "qwen3_moe": "chatml",
    "phi3": "phi",
    "phimoe": "phi",
    "mistral": "mistral",
    "mixtral": "mistral",
    "deepseek_v2": "deepseek",
    "deepseek_v3": "deepseek",
}

# Special tokens that identify a turn format, for families that used several (Llama) and
# architectures this table does not know; checked in this order.
_BY_TOKEN: tuple[tuple[str, str], ...] = (
    ("<start_of_turn>", "gemma"),
    ("<|start_header_id|>", "llama3"),
    ("<|im_start|>", "chatml"),
    ("<|assistant|>", "phi"),
    ("[INST]", "mistral"),
)

FALLBACK = "chatml"


def family_preset(model_type: str | None, vocab: Container[str]) -> tuple[str, str]:
    """``(preset, why)`` for a model without a chat template of its own."""
    kind = (model_type or "").lower()
    if kind in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[kind], f"architecture {kind}"
    for token, preset in _BY_TOKEN:
        if token in vocab:
            where = f"architecture {kind}, " if kind else ""
            return preset, f"{where}vocabulary has {token}"
    return FALLBACK, f"architecture {kind or 'unknown'} has no known format"
