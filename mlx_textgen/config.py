"""Server and model configuration: dataclasses, YAML loading with line-numbered errors, overrides.

The YAML schema is the one the original MLX-Textgen's ``createconfig`` writes (``model_configs``
plus server keys), extended with a few keys of our own (``cache_dir``, ``cpu_weights``, ...).
Importing this module must stay cheap and MLX-free: the CLI imports it before BLAS is loaded.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from mlx_textgen.config_values import _Spec, _check_value, _unknown_key

CACHE_DIR_ENV = "MLX_TEXTGEN_CACHE_DIR"
DEFAULT_CONFIG_FILENAME = "model_config.yaml"
# Kept in step with mlx_textgen.chat.templates.PRESET_NAMES (a unit test checks); not imported so
# that loading a config does not pull in jinja2.
TEMPLATE_PRESETS = ("chatml", "llama3", "gemma", "deepseek", "openchat", "phi", "mistral")
# Kept in step with mlx_textgen.parsers.TOOL_FORMATS (a unit test checks), not imported: cheap.
TOOL_PARSERS = (
    "hermes", "qwen3_coder", "glm4", "llama3_json", "mistral", "pythonic", "minimax_m2",
    "kimi_k2", "deepseek_v3", "gemma4", "function_gemma", "gpt_oss",
)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# GGUF file-name quantization tags after "_" -> "-": .q4-1, -q8-0, .q4-k-m, -iq4-xs, .f16, -bf16
_GGUF_QUANT_TAG = re.compile(r"[.-](?:i?q\d+(?:-[a-z0-9]+)*|bf16|f16|f32)$")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and, from YAML, the line."""

    def __init__(
        self, problem: str, *, key: str | None = None, line: int | None = None, source: str = ""
    ) -> None:
        self.problem, self.key, self.line, self.source = problem, key, line, source
        where = ", ".join(p for p in (source, f"line {line}" if line else "") if p)
        text = f"{key}: {problem}" if key else problem
        super().__init__(f"{where}: {text}" if where else text)


@dataclass
class ModelConfig:
    """One served model (a ``model_configs`` entry)."""

    model_id_or_path: str
    tokenizer_repo_or_path: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    enable_cache: bool = True
    preprocess_batch_size: int = 512
    extra_stop_words: list[str] = field(default_factory=list)
    reasoning_parser: str | None = None
    tool_parser: str | None = None  # a tool-call format (parsers.TOOL_FORMATS); null = detected
    default_template: str | None = None
    revision: str | None = None
    # Residency (several models behind one endpoint; see engine/registry.py):
    # Load at start (a failure stops the server, naming the model); None: only the first
    # configured model is, as a server with one model has always started with it loaded.
    preload: bool | None = None
    pin: bool = False  # never unloaded to make room, nor by idle_ttl
    idle_ttl: float | None = None  # seconds idle before it is unloaded; None: only for room
    aliases: list[str] = field(default_factory=list)  # more names clients may use
    memory_gb: float | None = None  # footprint (weights + KV) if the estimate is wrong
    max_image_pixels: int | None = None  # a vision model's images are downscaled past this
    max_context_tokens: int | None = None  # caps the context window below the model's own

    def preloaded(self, index: int) -> bool:
        """Whether the model loads at start, being the `index`-th configured."""
        return self.preload if self.preload is not None else index == 0

    def names(self) -> list[str]:
        """Every name clients may use for this model: its own first, then its aliases."""
        return [self.resolved_name(), *self.aliases]

    def resolved_name(self) -> str:
        """The name clients use: ``model_name``, else derived from the path as the original did.

        Basename of the path or repo id, lowercased, "_" -> "-", a trailing "-<N>bit" quantization
        tag dropped. A ``.gguf`` file also loses its extension and its quantization tag
        ("SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct"), so that the name does not
        change with the quantization chosen.
        """
        if self.model_name:
            return self.model_name
        base = re.split(r"[/\\]", self.model_id_or_path.rstrip("/\\"))[-1]
        name = base.lower().replace("_", "-")
        if name.endswith(".gguf"):
            name = _GGUF_QUANT_TAG.sub("", name.removesuffix(".gguf"))
        return re.sub(r"-\d+bit$", "", name)


@dataclass
class ServerConfig:
    """Everything ``serve`` needs: the models plus server, cache and scheduling settings."""

    model_configs: list[ModelConfig]
    host: str = "127.0.0.1"
    port: int = 5001
    api_keys: list[str] = field(default_factory=list)
    min_tokens: int = 20
    max_reprocess_tokens: int = 250
    replace_threshold: float = 0.95
    max_capacity: int = 50
    use_reasoning_content: bool = False
    # Ours, not in the original:
    cache_dir: str | None = None
    cpu_weights: str = "float"
    blas: str = "auto"
    max_running_requests: int = 16
    max_queued_requests: int = 64
    request_timeout: float | None = None
    cache_ram_gb: float = 2.0  # prompt cache, hot tier; 0 keeps nothing in RAM
    cache_disk_gb: float = 20.0  # prompt cache, cold tier under cache_dir; 0 turns it off
    max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "info"
    max_loaded_models: int = 1  # engines (one process each) resident at once
    max_model_memory_gb: float | None = None  # weights + KV headroom of all resident models
    kv_headroom_tokens: int = 16384  # KV each resident model is assumed to need, in tokens
    model_wait_timeout: float = 60.0  # seconds a request waits for room before a 503
    api_key_file: str | None = None  # more keys, one a line (out of the process list)
    admin_api_keys: list[str] = field(default_factory=list)  # cache and model admin
    allowed_origins: list[str] = field(default_factory=list)  # CORS; empty = off
    allowed_media_paths: list[str] = field(default_factory=list)  # local image files: only here
    # Remote images (vision/fetch.py): refused from non-public addresses unless allowed
    allow_private_media_urls: bool = False
    media_fetch_timeout: float = 10.0  # seconds per image URL, redirects included
    media_max_bytes: int = 20 * 2**20
    media_cache_bytes: int = 256 * 2**20  # downloaded images kept by URL; 0 = none

    def all_api_keys(self) -> list[str]:
        """`api_keys` plus those of `api_key_file` (one a line; blank lines and # comments
        skipped). ConfigError when the file can't be read."""
        keys = list(self.api_keys)
        if self.api_key_file:
            try:
                text = pathlib.Path(self.api_key_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"api_key_file {self.api_key_file!r}: {exc.strerror}") from None
            lines = (line.strip() for line in text.splitlines())
            keys += [k for k in lines if k and not k.startswith("#")]
        return keys

    def resolved_cache_dir(self) -> pathlib.Path:
        """Where prompt caches and converted models live (see ``resolve_cache_dir``)."""
        return resolve_cache_dir(self.cache_dir)


# ---------------------------------------------------------------------------- value checks


_MODEL_SPECS: dict[str, _Spec] = {
    "model_id_or_path": _Spec("str"),
    "tokenizer_repo_or_path": _Spec("str", null_ok=True),
    "model_kwargs": _Spec("mapping"),
    "tokenizer_kwargs": _Spec("mapping"),
    "model_name": _Spec("str", null_ok=True),
    "enable_cache": _Spec("bool"),
    "preprocess_batch_size": _Spec("int", low=1),
    "extra_stop_words": _Spec("str_list"),
    "reasoning_parser": _Spec("str", null_ok=True),
    "tool_parser": _Spec("str", null_ok=True, choices=TOOL_PARSERS),
    "default_template": _Spec("str", null_ok=True, choices=TEMPLATE_PRESETS),
    "revision": _Spec("str", null_ok=True),
    "preload": _Spec("bool", null_ok=True),
    "pin": _Spec("bool"),
    "idle_ttl": _Spec("float", null_ok=True, low=0.0),
    "aliases": _Spec("str_list"),
    "memory_gb": _Spec("float", null_ok=True, low=0.0),
    "max_image_pixels": _Spec("int", null_ok=True, low=1),
    "max_context_tokens": _Spec("int", null_ok=True, low=2),
}

_SERVER_SPECS: dict[str, _Spec] = {
    "host": _Spec("str"),
    "port": _Spec("int", low=0, high=65535),
    "api_keys": _Spec("str_list"),
    "min_tokens": _Spec("int", low=0),
    "max_reprocess_tokens": _Spec("int", low=0),
    "replace_threshold": _Spec("float", low=0.0, high=1.0),
    "max_capacity": _Spec("int", low=1),
    "use_reasoning_content": _Spec("bool"),
    "cache_dir": _Spec("str", null_ok=True),
    "cpu_weights": _Spec("str", choices=("float", "native")),
    "blas": _Spec("str"),
    "max_running_requests": _Spec("int", low=1),
    "max_queued_requests": _Spec("int", low=0),
    "request_timeout": _Spec("float", null_ok=True, low=0.0),
    "cache_ram_gb": _Spec("float", low=0.0),
    "cache_disk_gb": _Spec("float", low=0.0),
    "max_body_bytes": _Spec("int", low=1),
    "log_level": _Spec("str", choices=LOG_LEVELS),
    "max_loaded_models": _Spec("int", low=1),
    "max_model_memory_gb": _Spec("float", null_ok=True, low=0.0),
    "kv_headroom_tokens": _Spec("int", low=0),
    "model_wait_timeout": _Spec("float", low=0.0),
    "api_key_file": _Spec("str", null_ok=True),
    "admin_api_keys": _Spec("str_list"),
    "allowed_origins": _Spec("str_list"),
    "allowed_media_paths": _Spec("str_list"),
    "allow_private_media_urls": _Spec("bool"),
    "media_fetch_timeout": _Spec("float", low=0.1),
    "media_max_bytes": _Spec("int", low=1),
    "media_cache_bytes": _Spec("int", low=0),
}

# ---------------------------------------------------------------------------- YAML loading


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and validate a YAML config file; every problem raises ConfigError with key and line."""
    source = str(path)
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=source) from exc
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str = "<config>") -> ServerConfig:
    """Validate YAML ``text`` (see ``load_config``); ``source`` names it in error messages."""
    root = _root_mapping(_compose(text, source), source)
    values: dict[str, Any] = {}
    models: list[ModelConfig] | None = None
    model_lines: list[int | None] = []
    for key, key_node, value_node in _mapping_items(root, "the top level", source):
        line = _line(key_node)
        if key == "model_configs":
            models, model_lines = _load_models(value_node, line, source)
            continue
        spec = _SERVER_SPECS.get(key)
        if spec is None:
            problem = _unknown_key(key, ["model_configs", *_SERVER_SPECS], "the top level")
            raise ConfigError(problem, key=key, line=line, source=source)
        values[key] = _checked(key, _construct(value_node, source), spec, key, line, source)
    if models is None:
        raise ConfigError("model_configs is missing", line=_line(root), source=source)
    config = ServerConfig(model_configs=models, **values)
    check_config(config, model_lines=model_lines, source=source)
    return config


def _root_mapping(root: yaml.Node | None, source: str) -> yaml.MappingNode:
    if root is None:
        raise ConfigError("the file is empty; expected a mapping with model_configs", source=source)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            "the top level must be a mapping with a model_configs list (the pre-0.2 list format "
            "is not supported; `mlx_textgen createconfig` writes a template)",
            line=_line(root),
            source=source,
        )
    return root


def _load_models(
    node: yaml.Node, line: int | None, source: str
) -> tuple[list[ModelConfig], list[int | None]]:
    items = node.value if isinstance(node, yaml.SequenceNode) else None
    if items is None and _construct(node, source) is not None:
        raise ConfigError(
            "expected a list of models", key="model_configs", line=line, source=source
        )
    if not items:
        raise ConfigError(
            "is empty; list at least one model", key="model_configs", line=line, source=source
        )
    models = [_load_model(item, index, source) for index, item in enumerate(items)]
    return models, [_line(item) for item in items]


def _load_model(node: yaml.Node, index: int, source: str) -> ModelConfig:
    prefix = f"model_configs[{index}]"
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            "expected a mapping of model keys", key=prefix, line=_line(node), source=source
        )
    values: dict[str, Any] = {}
    for key, key_node, value_node in _mapping_items(node, prefix, source):
        name, line = f"{prefix}.{key}", _line(key_node)
        spec = _MODEL_SPECS.get(key)
        if spec is None:
            problem = _unknown_key(key, list(_MODEL_SPECS), "a model entry")
            raise ConfigError(problem, key=name, line=line, source=source)
        values[key] = _checked(key, _construct(value_node, source), spec, name, line, source)
    if "model_id_or_path" not in values:
        raise ConfigError(
            "model_id_or_path is required", key=prefix, line=_line(node), source=source
        )
    return ModelConfig(**values)


def _checked(name: str, raw: Any, spec: _Spec, key: str, line: int | None, source: str) -> Any:
    try:
        return _check_value(name, raw, spec)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key, line=line, source=source) from None


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"invalid YAML: {problem}", line=_line_of(mark), source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


def _construct(node: yaml.Node, source: str) -> Any:
    """Build the Python value of one node with the safe constructor (tags, ints, bools...)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(
            f"invalid value: {exc.problem}", line=_line_of(mark), source=source
        ) from None
    finally:
        loader.dispose()


def _mapping_items(
    node: yaml.MappingNode, where: str, source: str
) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """(key, key node, value node) triples; rejects non-string and repeated keys."""
    seen: dict[str, int | None] = {}
    items = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            raise ConfigError(
                f"keys in {where} must be plain names", line=_line(key_node), source=source
            )
        key = key_node.value
        if key in seen:
            problem = f"appears twice (first on line {seen[key]})"
            raise ConfigError(problem, key=key, line=_line(key_node), source=source)
        seen[key] = _line(key_node)
        items.append((key, key_node, value_node))
    return items


def _line(node: yaml.Node) -> int | None:
    return _line_of(node.start_mark)


def _line_of(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


# ---------------------------------------------------------------------------- cross checks, overrides


def check_config(
    config: ServerConfig, *, model_lines: list[int | None] | None = None, source: str = ""
) -> None:
    """Checks that span keys: at least one model, and model names that clients can tell apart."""
    if not config.model_configs:
        raise ConfigError("no models configured", key="model_configs", source=source)
    lines = model_lines or [None] * len(config.model_configs)
    first_use: dict[str, int] = {}
    for index, model in enumerate(config.model_configs):
        if not isinstance(model.model_id_or_path, str) or not model.model_id_or_path.strip():
            raise ConfigError(
                "model_id_or_path must be a non-empty string",
                key=f"model_configs[{index}]",
                line=lines[index],
                source=source,
            )
        for name in model.names():
            if name in first_use:
                other = first_use[name]
                at = f" (line {lines[other]})" if lines[other] else ""
                raise ConfigError(
                    f"model name {name!r} is already used by model_configs[{other}]{at}; "
                    "set model_name or aliases to tell them apart",
                    key=f"model_configs[{index}]",
                    line=lines[index],
                    source=source,
                )
            first_use[name] = index
    _check_residency(config, lines, source)


def _check_residency(config: ServerConfig, lines: list[int | None], source: str) -> None:
    """More preloaded models than may be resident could never start."""
    preload = [i for i, m in enumerate(config.model_configs) if m.preloaded(i)]
    if len(preload) > config.max_loaded_models:
        names = ", ".join(config.model_configs[i].resolved_name() for i in preload)
        raise ConfigError(
            f"{len(preload)} models load at start ({names}; preload, or the first one) but "
            "max_loaded_models is "
            f"{config.max_loaded_models}",
            key=f"model_configs[{preload[-1]}].preload",
            line=lines[preload[-1]],
            source=source,
        )


def apply_overrides(config: ServerConfig, **values: Any) -> ServerConfig:
    """Return a copy of ``config`` with the given keys replaced, each validated like the YAML.

    Server keys (``port=...``) replace the server setting; model keys (``model_name=...``)
    apply to the single configured model and are an error when there are several. Keys whose
    value is None are skipped, so a caller can pass "not given" options straight through.
    """
    source = "command line"
    server: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in _SERVER_SPECS:
            server[key] = _checked(key, value, _SERVER_SPECS[key], key, None, source)
        elif key in _MODEL_SPECS:
            model[key] = _checked(key, value, _MODEL_SPECS[key], key, None, source)
        else:
            problem = _unknown_key(key, [*_SERVER_SPECS, *_MODEL_SPECS], "the settings")
            raise ConfigError(problem, key=key, source=source)
    models = list(config.model_configs)
    if model:
        if len(models) != 1:
            raise ConfigError(
                f"{', '.join(sorted(model))} can only be set for a single model, "
                f"but {len(models)} are configured",
                source=source,
            )
        models = [replace(models[0], **model)]
    return replace(config, model_configs=models, **server)


# ---------------------------------------------------------------------------- cache directory


def resolve_cache_dir(cache_dir: str | None = None) -> pathlib.Path:
    """The cache directory: ``cache_dir`` if given, else $MLX_TEXTGEN_CACHE_DIR, else the one saved
    by ``mlx_textgen cachedir --set``, else ~/.cache/mlx_textgen. Nothing is created."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or saved_cache_dir()
    if chosen:
        return pathlib.Path(chosen).expanduser()
    return pathlib.Path.home() / ".cache" / "mlx_textgen"


def settings_path() -> pathlib.Path:
    """The per-user settings file that ``cachedir --set`` writes."""
    base = os.environ.get("XDG_CONFIG_HOME") or pathlib.Path.home() / ".config"
    return pathlib.Path(base) / "mlx_textgen" / "settings.json"


def saved_cache_dir() -> str | None:
    """The cache directory saved by ``cachedir --set``, or None (also for an unreadable file)."""
    try:
        value = json.loads(settings_path().read_text(encoding="utf-8")).get("cache_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def save_cache_dir(cache_dir: str | None) -> None:
    """Save ``cache_dir`` (made absolute) as the user's default; None forgets the saved one."""
    path = settings_path()
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    settings = settings if isinstance(settings, dict) else {}
    if cache_dir is None:
        settings.pop("cache_dir", None)
    else:
        settings["cache_dir"] = str(pathlib.Path(cache_dir).expanduser().resolve())
    _write_atomic(path, json.dumps(settings, indent=2) + "\n")


def _write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
