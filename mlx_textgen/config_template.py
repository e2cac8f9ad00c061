"""The ``createconfig`` writer: a commented YAML template of every key, with its default.

Split from ``config``, which re-exports ``write_default_config`` and ``default_config_text``.
A server key appears in the template only where ``_SERVER_COMMENTS`` or ``_OWN_COMMENTS``
names it.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import fields
from typing import Any

import yaml

from mlx_textgen.config import (
    DEFAULT_CONFIG_FILENAME,
    LOG_LEVELS,
    TEMPLATE_PRESETS,
    ConfigError,
    ModelConfig,
    ServerConfig,
    _write_atomic,
)

_MODEL_COMMENTS = {
    "model_id_or_path": "local folder, .gguf file or Hugging Face repo id",
    "tokenizer_repo_or_path": "tokenizer source; null = same as the model",
    "model_kwargs": "extra keyword arguments for loading the model",
    "tokenizer_kwargs": "extra keyword arguments for loading the tokenizer",
    "model_name": "name clients put in requests; null = derived from the path",
    "enable_cache": "keep prompt caches to skip re-processing shared prefixes",
    "preprocess_batch_size": "prompt tokens processed per step",
    "extra_stop_words": "extra strings that end generation",
    "reasoning_parser": "e.g. deepseek_r1 to split <think> reasoning from the answer",
    "tool_parser": "tool-call format (e.g. hermes, llama3_json, mistral); null = from the chat template",
    "default_template": f"chat template preset ({', '.join(TEMPLATE_PRESETS)}); null = the model's",
    "revision": "branch, tag or commit when model_id_or_path is a repo id",
    "preload": "load at start (a failure stops it); null = the first model only; else on demand",
    "pin": "never unload it (not for room, not for idle_ttl)",
    "idle_ttl": "seconds idle before it is unloaded; null = only when room is needed",
    "aliases": "more names clients may use for this model",
    "memory_gb": "its footprint (weights + KV) in GB; null = estimated from its files",
    "max_image_pixels": "a vision model's images are downscaled to at most this many pixels; null = as sent",
    "max_context_tokens": "context window (prompt + output) at most this many tokens; null = the model's own",
}
_SERVER_COMMENTS = {
    "host": "address to listen on",
    "port": "port to listen on",
    "api_keys": "accepted API keys; empty = no authentication",
    "min_tokens": "shortest prompt (tokens) worth keeping a cache for",
    "max_reprocess_tokens": "most tokens re-processed rather than keeping a near-duplicate cache",
    "replace_threshold": "shared-prefix fraction above which a new cache replaces an old one",
    "max_capacity": "most caches kept per model; the oldest go first",
    "use_reasoning_content": "put reasoning in reasoning_content instead of content",
}
_OWN_COMMENTS = {
    "cache_dir": "null = $MLX_TEXTGEN_CACHE_DIR, the `cachedir --set` one, or ~/.cache/mlx_textgen",
    "cpu_weights": "on CPU: float (dequantize, fast with a real BLAS) or native (keep quantized)",
    "blas": "auto, off, or the path of a BLAS library to load before MLX",
    "max_running_requests": "requests generated together",
    "max_queued_requests": "requests waiting beyond that; more are refused",
    "request_timeout": "seconds per request; null = no limit",
    "cache_ram_gb": "prompt cache in RAM (hot tier), GB",
    "cache_disk_gb": "prompt cache on disk under cache_dir (cold tier, survives restarts), GB",
    "max_body_bytes": "largest accepted request body",
    "log_level": ", ".join(LOG_LEVELS),
    "max_loaded_models": "models resident at once (one engine process each); LRU idle one goes",
    "max_model_memory_gb": "budget for resident models' weights + KV headroom; null = none",
    "kv_headroom_tokens": "KV each resident model is assumed to need, in tokens",
    "model_wait_timeout": "seconds a request waits for a model to make room, then 503",
    "api_key_file": "file of more API keys, one a line (keeps them out of the process list)",
    "admin_api_keys": "keys for cache and model admin; empty = any API key may",
    "allowed_origins": "browser origins allowed by CORS (e.g. http://localhost:3000); empty = off",
    "allowed_media_paths": "directories local image files may be read from; empty = none",
    "allow_private_media_urls": "fetch image URLs on loopback/link-local/private addresses",
    "media_fetch_timeout": "seconds to fetch one image URL, redirects included",
    "media_max_bytes": "largest image an image URL may return, bytes",
    "media_cache_bytes": "downloaded images kept by URL (LRU), bytes; 0 = none",
}


def write_default_config(
    path: str | os.PathLike[str] = DEFAULT_CONFIG_FILENAME, num_models: int = 1, force: bool = False
) -> pathlib.Path:
    """Write a commented config template with ``num_models`` placeholder models; returns its path.

    ``path`` may be a directory (the file is then ``model_config.yaml`` inside it). An existing
    file is only replaced with ``force``; otherwise FileExistsError is raised.
    """
    if isinstance(num_models, bool) or not isinstance(num_models, int) or num_models < 1:
        raise ConfigError(f"must be at least 1; got {num_models!r}", key="num_models")
    target = pathlib.Path(path).expanduser()
    if target.is_dir():
        target = target / DEFAULT_CONFIG_FILENAME
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; use --force (force=True) to overwrite it")
    _write_atomic(target, default_config_text(num_models))
    return target


def default_config_text(num_models: int) -> str:
    """The YAML text ``write_default_config`` writes."""
    defaults = {
        f.name: _field_default(f) for f in fields(ServerConfig) if f.name != "model_configs"
    }
    model_defaults = {f.name: _field_default(f) for f in fields(ModelConfig)}
    lines = [
        "# MLX-Textgen configuration, written by `mlx_textgen createconfig`.",
        "# Serve it with: mlx_textgen serve --config-file <this file>",
        "# Flags given to `mlx_textgen serve` override the values in this file.",
        "",
        "model_configs:  # one entry per model; clients choose one by its name",
    ]
    for index in range(num_models):
        entry = {**model_defaults, "model_id_or_path": f"/path/to/model_{index}"}
        comments = _MODEL_COMMENTS if index == 0 else {}
        body = _key_lines(entry, comments, indent="  ")
        lines += ["- " + body[0][2:], *body[1:]]
    lines += ["", *_key_lines({k: defaults[k] for k in _SERVER_COMMENTS}, _SERVER_COMMENTS)]
    lines += ["", "# Options of this implementation (not read by the original MLX-Textgen):"]
    own = _key_lines({k: defaults[k] for k in _OWN_COMMENTS}, _OWN_COMMENTS)
    lines += ["# " + line for line in own]
    return "\n".join(lines) + "\n"


def _key_lines(values: dict[str, Any], comments: dict[str, str], indent: str = "") -> list[str]:
    pairs = [f"{indent}{key}: {_yaml_scalar(value)}" for key, value in values.items()]
    width = max(len(p) for p in pairs) + 2
    return [
        f"{pair:<{width}}# {comments[key]}" if key in comments else pair
        for pair, key in zip(pairs, values)
    ]


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _field_default(f: Any) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default
