"""Turn a ModelConfig into a loaded model: GGUF import, local dir or Hugging Face repo."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx import nn

from mlx_textgen import backend
from mlx_textgen.config import ModelConfig

log = logging.getLogger("mlx_textgen.models")

DEFAULT_CONTEXT = 4096
_GEN_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass
class ModelInfo:
    """What the API and engine know about a model before (and after) its weights load."""

    config: ModelConfig
    name: str
    model_dir: Path
    tokenizer: Any  # mlx-lm TokenizerWrapper; `.tokenizer` on it is the HF tokenizer
    context_length: int
    eos_token_ids: frozenset[int]
    float_weights: bool
    generation_defaults: dict[str, float | int] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    # The preset of the model's architecture family, when it carries no template itself.
    family_template: str | None = None
    template_stop_words: tuple[str, ...] = ()  # a preset's end of turn that is no one token
    vision: Any = None  # a vision model's VisionSpec (mlx_textgen.vision.prompt), else None

    @property
    def hf_tokenizer(self) -> Any:
        return self.tokenizer._tokenizer

    def decoder(self, skip_special_tokens: bool = True) -> Callable[[Sequence[int]], str]:
        """A fast `ids -> text`: the Rust tokenizer directly where that gives the same text
        as transformers' decode (it skips a Python layer that costs more than the decode)."""
        hf = self.hf_tokenizer
        fast = getattr(hf, "backend_tokenizer", None)
        if fast is not None and not getattr(hf, "clean_up_tokenization_spaces", False):
            return lambda ids: fast.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return lambda ids: hf.decode(ids, skip_special_tokens=skip_special_tokens)

    @property
    def chat_template(self) -> str | None:
        """The model's own chat template, else its architecture family's preset."""
        own = getattr(self.hf_tokenizer, "chat_template", None)
        if own or self.family_template is None:
            return own
        from mlx_textgen.chat.templates import load_preset

        return load_preset(self.family_template)

    @property
    def extra_stop_words(self) -> tuple[str, ...]:
        return tuple(self.config.extra_stop_words or ()) + self.template_stop_words


def on_cpu() -> bool:
    return mx.default_device().type == mx.DeviceType.cpu


def resolve_model_dir(mc: ModelConfig, cache_root: Path, float_weights: bool) -> Path:
    """A local MLX model dir for the config: imported GGUF, local dir, or a hub snapshot."""
    path = Path(mc.model_id_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        from mlx_textgen.models.gguf import import_gguf

        return import_gguf(path, cache_root, float_weights=float_weights)
    return backend.download(mc.model_id_or_path, revision=mc.revision)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _as_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def generation_defaults(model_dir: Path) -> dict[str, float | int]:
    """Sampling defaults the model's authors set in generation_config.json."""
    gen = _read_json(model_dir / "generation_config.json")
    out = {k: gen[k] for k in _GEN_KEYS if isinstance(gen.get(k), (int, float))}
    if gen.get("do_sample") is False:
        out["temperature"] = 0.0
    return out


def context_length(config: dict, tokenizer: Any, cap: int | None = None) -> int:
    """The model's context window, lowered to ``cap`` (max_context_tokens) when one is set."""
    own = _own_context(config, tokenizer)
    return own if cap is None else min(own, cap)


def _own_context(config: dict, tokenizer: Any) -> int:
    text_cfg = config.get("text_config") or {}
    for cfg in (config, text_cfg):
        for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
            if isinstance(cfg.get(key), int) and cfg[key] > 0:
                return cfg[key]
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else DEFAULT_CONTEXT


def prepare(mc: ModelConfig, *, cache_root: Path, cpu_weights: str = "float") -> ModelInfo:
    """Resolve the model dir (importing a GGUF once) and load its tokenizer; no weights yet."""
    float_weights = on_cpu() and cpu_weights == "float"
    model_dir = resolve_model_dir(mc, cache_root, float_weights)
    config = _read_json(model_dir / "config.json")
    gen = _read_json(model_dir / "generation_config.json")
    eos = _as_ids(config.get("eos_token_id")) | _as_ids(gen.get("eos_token_id"))
    tok_dir = (
        backend.download(mc.tokenizer_repo_or_path, revision=None)
        if mc.tokenizer_repo_or_path
        else model_dir
    )
    tokenizer = backend.load_tokenizer(
        tok_dir, dict(mc.tokenizer_kwargs), eos_token_ids=sorted(eos) or None
    )
    eos |= set(tokenizer.eos_token_ids)
    name = mc.resolved_name()
    family, preset = _template_choice(mc, name, config, tokenizer._tokenizer)
    stop_words: tuple[str, ...] = ()
    if preset is not None:
        end_ids, stop_words = _end_of_turn(preset, tokenizer._tokenizer)
        eos |= end_ids
    from mlx_textgen.vision.loader import vision_spec

    return ModelInfo(
        vision=vision_spec(model_dir, config, mc.max_image_pixels),
        config=mc,
        name=name,
        model_dir=model_dir,
        tokenizer=tokenizer,
        context_length=context_length(config, tokenizer, mc.max_context_tokens),
        eos_token_ids=frozenset(eos),
        float_weights=float_weights,
        generation_defaults=generation_defaults(model_dir),
        family_template=family,
        template_stop_words=stop_words,
    )


def _template_choice(
    mc: ModelConfig, name: str, config: dict, hf: Any
) -> tuple[str | None, str | None]:
    """``(family preset if the model has no template, preset rendering will use)``; logged."""
    own = bool(getattr(hf, "chat_template", None))
    family = None
    if not own:
        from mlx_textgen.models.chat_family import family_preset

        family, why = family_preset(config.get("model_type"), hf.get_vocab())
        log.info("model %s carries no chat template: using the %s preset (%s)", name, family, why)
    if mc.default_template:
        log.info("model %s: chat template preset %s (default_template)", name, mc.default_template)
        return family, mc.default_template
    return family, family


def _end_of_turn(preset: str, hf: Any) -> tuple[set[int], tuple[str, ...]]:
    """What ends a turn in ``preset``: a token id to stop on, else a stop string."""
    from mlx_textgen.chat.templates import preset_end_of_turn

    text = preset_end_of_turn(preset)
    if text is None:
        return set(), ()  # the tokenizer's eos, already a stop
    ids = hf.encode(text, add_special_tokens=False)
    return (set(ids), ()) if len(ids) == 1 else (set(), (text,))


def load_weights(info: ModelInfo) -> nn.Module:
    """Load the weights of a prepared model; float32 on a CPU unless told otherwise."""
    start = time.perf_counter()
    if info.vision is not None:  # through mlx-vlm (vision/loader.py logs its weights)
        from mlx_textgen.vision.loader import load_vision_model

        model = load_vision_model(info.vision, info.float_weights)
    else:
        model, _ = backend.load_weights(info.model_dir, info.config.model_kwargs)
        _to_served_weights(info, model)
    log.info(
        "model %s loaded from %s in %.1fs (context %d, eos ids %s)",
        info.name, info.model_dir, time.perf_counter() - start,
        info.context_length, sorted(info.eos_token_ids),
    )
    return model


def _to_served_weights(info: ModelInfo, model: nn.Module) -> None:
    if info.float_weights:
        was_quantized = backend.to_float_weights(model)
        log.info(
            "weights: float32 on the CPU%s (--cpu-weights native keeps them quantized)",
            ", dequantized" if was_quantized else "",
        )
    else:
        log.info("weights: as stored (%s device)", mx.default_device().type)
