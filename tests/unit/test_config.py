"""Config loading and validation, overrides, model names, cache dir, and the createconfig writer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlx_textgen.config_template import write_default_config
from mlx_textgen.config import (
    ConfigError,
    ModelConfig,
    ServerConfig,
    apply_overrides,
    load_config,
    resolve_cache_dir,
    save_cache_dir,
    saved_cache_dir,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model_config.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("MLX_TEXTGEN_CACHE_DIR", raising=False)
    return home


# ---------------------------------------------------------------------------- loading


def test_original_format_file_loads(tmp_path: Path) -> None:
    # The layout the original's createconfig writes, nulls included.
    config = load_config(
        write(
            tmp_path,
            """
        model_configs:
        - model_id_or_path: mlx-community/Llama-3.2-3B-Instruct-4bit
          tokenizer_repo_or_path: null
          model_kwargs: null
          tokenizer_kwargs: {trust_remote_code: true}
          model_name: null
          enable_cache: false
          preprocess_batch_size: 256
          extra_stop_words: "<|eom_id|>"
          reasoning_parser: deepseek_r1
          default_template: Llama3
        host: 0.0.0.0
        port: 8080
        api_keys: null
        min_tokens: 10
        max_reprocess_tokens: 100
        replace_threshold: 1
        max_capacity: 5
        use_reasoning_content: yes
    """,
        )
    )
    model = config.model_configs[0]
    assert model.model_kwargs == {} and model.tokenizer_kwargs == {"trust_remote_code": True}
    assert model.extra_stop_words == ["<|eom_id|>"]
    assert (model.enable_cache, model.preprocess_batch_size) == (False, 256)
    assert (model.reasoning_parser, model.default_template) == ("deepseek_r1", "llama3")
    assert (config.host, config.port, config.api_keys) == ("0.0.0.0", 8080, [])
    assert (config.min_tokens, config.max_reprocess_tokens, config.max_capacity) == (10, 100, 5)
    assert config.replace_threshold == 1.0 and isinstance(config.replace_threshold, float)
    assert config.use_reasoning_content is True
    assert config.cache_dir is None and config.log_level == "info"


def test_own_keys_load(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
        model_configs: [{model_id_or_path: /m/a}]
        cache_dir: ~/caches
        cpu_weights: native
        blas: /usr/lib/libopenblas.so
        max_running_requests: 4
        max_queued_requests: 0
        request_timeout: 30
        max_body_bytes: 1024
        log_level: DEBUG
    """,
        )
    )
    assert (config.cpu_weights, config.blas, config.log_level) == (
        "native",
        "/usr/lib/libopenblas.so",
        "debug",
    )
    assert (config.max_running_requests, config.max_queued_requests) == (4, 0)
    assert config.request_timeout == 30.0 and config.max_body_bytes == 1024
    assert config.resolved_cache_dir() == Path(config.cache_dir).expanduser()


def test_remote_image_keys(tmp_path: Path) -> None:
    from mlx_textgen.vision.fetch import FetchPolicy

    text = "model_configs: [{model_id_or_path: /m/a}]\nallow_private_media_urls: true\n"
    config = load_config(write(tmp_path, text + "media_fetch_timeout: 3\nmedia_cache_bytes: 0\n"))
    assert FetchPolicy.from_config(config) == FetchPolicy(
        timeout_s=3.0, max_bytes=20 * 2**20, allow_private=True, cache_bytes=0
    )
    assert FetchPolicy.from_config(ServerConfig(model_configs=[])) == FetchPolicy()
    with pytest.raises(ConfigError, match="line 3.*media_fetch_timeout: must be at least 0.1"):
        load_config(write(tmp_path, text + "media_fetch_timeout: 0\n"))
    with pytest.raises(ConfigError, match="allow_private_media_urls: expected true or false"):
        load_config(write(tmp_path, "model_configs: [{model_id_or_path: /m/a}]\n"
                                    "allow_private_media_urls: yes please\n"))


def test_defaults_are_the_originals() -> None:
    config = ServerConfig(model_configs=[ModelConfig("x")])
    assert (config.host, config.port, config.api_keys) == ("127.0.0.1", 5001, [])
    assert (config.min_tokens, config.max_reprocess_tokens) == (20, 250)
    assert (config.replace_threshold, config.max_capacity) == (0.95, 50)
    model = ModelConfig("x")
    assert (model.enable_cache, model.preprocess_batch_size, model.extra_stop_words) == (
        True,
        512,
        [],
    )


def assert_error(error: ConfigError, key: str, line: int, fragment: str) -> None:
    assert (error.key, error.line) == (key, line)
    assert fragment in str(error)
    assert f"line {line}" in str(error) and key in str(error) and "model_config.yaml" in str(error)


# (line 2 of a file whose line 1 is a valid model list, key, expected message fragment)
TOP_LEVEL_ERRORS = [
    ("port: abc", "port", "expected an integer"),
    ("port: 70000", "port", "between 0 and 65535"),
    ("prot: 1", "prot", "did you mean 'port'"),
    ("colour: red", "colour", "valid keys: model_configs, host, port"),
    ("replace_threshold: 1.5", "replace_threshold", "between 0 and 1"),
    ("replace_threshold: .nan", "replace_threshold", "finite"),
    ("use_reasoning_content: 1", "use_reasoning_content", "true or false"),
    ("max_capacity: 0", "max_capacity", "at least 1"),
    ("min_tokens: -1", "min_tokens", "zero or more"),
    ("api_keys: [1, 2]", "api_keys", "list of strings"),
    ("api_keys: [k, '']", "api_keys", "empty strings"),
    ("cpu_weights: half", "cpu_weights", "one of float, native"),
    ("log_level: loud", "log_level", "one of critical"),
    ("host: null", "host", "must not be null"),
    ("model_configs: []", "model_configs", "appears twice (first on line 1)"),
]


@pytest.mark.parametrize(("snippet", "key", "fragment"), TOP_LEVEL_ERRORS)
def test_top_level_errors_name_key_and_line(
    tmp_path: Path, snippet: str, key: str, fragment: str
) -> None:
    error = load_error(tmp_path, f"model_configs: [{{model_id_or_path: a}}]\n{snippet}\n")
    assert_error(error, key, 2, fragment)


# (line 3 of a model entry whose line 2 is its model_id_or_path, key, expected message fragment)
MODEL_ERRORS = [
    ("enable_cache: yes-ish", "enable_cache", "true or false"),
    ("model_kwargs: [1]", "model_kwargs", "a mapping"),
    ("model_kwargs: {1: 2}", "model_kwargs", "string keys"),
    ("preprocess_batch_size: 0", "preprocess_batch_size", "at least 1"),
    ("model_nam: b", "model_nam", "did you mean 'model_name'"),
    ("default_template: vicuna", "default_template", "one of chatml"),
    ("extra_stop_words: ['']", "extra_stop_words", "empty strings"),
    ("revision: 3", "revision", "expected a string"),
]


@pytest.mark.parametrize(("snippet", "key", "fragment"), MODEL_ERRORS)
def test_model_errors_name_key_and_line(
    tmp_path: Path, snippet: str, key: str, fragment: str
) -> None:
    error = load_error(tmp_path, f"model_configs:\n- model_id_or_path: a\n  {snippet}\n")
    assert_error(error, f"model_configs[0].{key}", 3, fragment)


@pytest.mark.parametrize(
    ("yaml_text", "key", "line", "fragment"),
    [
        ("model_configs:\n- model_id_or_path: a\n- revision: b\n", "model_configs[1]", 3, "is required"),
        ("model_configs:\n- model_id_or_path: ''\n", "model_configs[0].model_id_or_path", 2, "empty"),
        ("model_configs: []\n", "model_configs", 1, "is empty"),
        ("host: x\nmodel_configs:\n", "model_configs", 2, "is empty"),
        ("model_configs: a\n", "model_configs", 1, "expected a list"),
    ],
)  # fmt: skip
def test_model_list_errors(
    tmp_path: Path, yaml_text: str, key: str, line: int, fragment: str
) -> None:
    assert_error(load_error(tmp_path, yaml_text), key, line, fragment)


def test_duplicate_model_names_name_both_lines(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        """
        port: 5001
        model_configs:
        - model_id_or_path: /models/Qwen_2-4bit
        - model_id_or_path: org/qwen-2
          revision: main
    """,
    )
    assert error.line == 4 and "line 3" in str(error)
    assert "'qwen-2'" in str(error) and "model_configs[0]" in str(error)


@pytest.mark.parametrize(
    ("yaml_text", "line", "fragment"),
    [
        ("model_configs:\n  - model_id_or_path: a\n port: [1\n", 3, "invalid YAML"),
        ("model_configs: [{model_id_or_path: a}\n", 2, "invalid YAML"),
        ("- model_id_or_path: a\n", 1, "top level must be a mapping"),
        ("port: 1\n", 1, "model_configs is missing"),
    ],
)
def test_structural_errors(tmp_path: Path, yaml_text: str, line: int, fragment: str) -> None:
    error = load_error(tmp_path, yaml_text)
    assert error.line == line and fragment in str(error)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty" in str(load_error(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


# ---------------------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("mlx-community/Llama-3.2-3B-Instruct-4bit", "llama-3.2-3b-instruct"),
        ("/models/My_Model-8bit/", "my-model"),
        ("C:\\models\\Phi_3-mini", "phi-3-mini"),
        ("/gguf/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
        ("/gguf/SmolLM2-135M-Instruct-Q8_0.gguf", "smollm2-135m-instruct"),
        ("qwen2.5-7b-instruct-q4_k_m.gguf", "qwen2.5-7b-instruct"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.GGUF", "llama-3.2-1b-instruct"),
        ("phi-3-mini-f16.gguf", "phi-3-mini"),
        ("tiny-model.gguf", "tiny-model"),
        ("org/model-4bit-mixed", "model-4bit-mixed"),
        ("bitnet", "bitnet"),
    ],
)
def test_resolved_name_derived_from_path(path: str, name: str) -> None:
    assert ModelConfig(path).resolved_name() == name


def test_model_name_wins() -> None:
    assert ModelConfig("org/Some-4bit", model_name="Mine").resolved_name() == "Mine"


# ---------------------------------------------------------------------------- overrides


def test_apply_overrides_sets_only_given_keys() -> None:
    base = ServerConfig(model_configs=[ModelConfig("a")], port=6000, host="0.0.0.0")
    out = apply_overrides(base, port=7000, host=None, model_name="alias", request_timeout=0)
    assert (out.port, out.host, out.request_timeout) == (7000, "0.0.0.0", None)
    assert out.model_configs[0].model_name == "alias"
    assert base.port == 6000 and base.model_configs[0].model_name is None  # copy, not mutation


def test_apply_overrides_validates() -> None:
    base = ServerConfig(model_configs=[ModelConfig("a"), ModelConfig("b")])
    with pytest.raises(ConfigError, match="port: must be between") as info:
        apply_overrides(base, port=-1)
    assert "command line" in str(info.value)
    with pytest.raises(ConfigError, match="single model, but 2"):
        apply_overrides(base, model_name="x")
    with pytest.raises(ConfigError, match="did you mean 'max_capacity'"):
        apply_overrides(base, max_capacit=1)


# ---------------------------------------------------------------------------- cache dir


def test_cache_dir_precedence(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_cache_dir() == isolated_home / ".cache" / "mlx_textgen"
    save_cache_dir(str(tmp_path / "saved"))
    assert saved_cache_dir() == str(tmp_path / "saved")
    assert (isolated_home / ".config" / "mlx_textgen" / "settings.json").is_file()
    assert resolve_cache_dir() == tmp_path / "saved"
    monkeypatch.setenv("MLX_TEXTGEN_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    config = ServerConfig(model_configs=[ModelConfig("a")], cache_dir=str(tmp_path / "explicit"))
    assert config.resolved_cache_dir() == tmp_path / "explicit"
    save_cache_dir(None)
    assert saved_cache_dir() is None


def test_corrupt_settings_file_is_ignored(isolated_home: Path) -> None:
    settings = isolated_home / ".config" / "mlx_textgen" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text("{not json")
    assert saved_cache_dir() is None
    assert resolve_cache_dir() == isolated_home / ".cache" / "mlx_textgen"


# ---------------------------------------------------------------------------- createconfig


def test_default_config_round_trips(tmp_path: Path) -> None:
    path = write_default_config(tmp_path / "cfg.yaml", num_models=3, force=False)
    config = load_config(path)
    assert [m.model_id_or_path for m in config.model_configs] == [
        f"/path/to/model_{i}" for i in range(3)
    ]
    assert config == ServerConfig(
        model_configs=[ModelConfig(f"/path/to/model_{i}") for i in range(3)]
    )
    text = path.read_text()
    for key in ("tokenizer_repo_or_path", "reasoning_parser", "default_template", "revision",
                "use_reasoning_content", "max_capacity", "# cpu_weights: float"):  # fmt: skip
        assert key in text


def test_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "model_config.yaml"
    path.write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        write_default_config(path, num_models=1, force=False)
    assert path.read_text() == "mine"
    assert write_default_config(tmp_path, num_models=2, force=True) == path  # a folder works too
    assert len(load_config(path).model_configs) == 2


def test_default_config_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        write_default_config(tmp_path / "x.yaml", num_models=0, force=False)


# -- residency keys (several models behind one endpoint) ------------------------------------


def test_residency_keys_parse() -> None:
    from mlx_textgen.config import parse_config

    cfg = parse_config(
        "model_configs:\n"
        "- model_id_or_path: /m/a\n  aliases: [first, one]\n  pin: true\n  idle_ttl: 30\n"
        "- model_id_or_path: /m/b\n  preload: false\n  memory_gb: 1.5\n"
        "max_loaded_models: 2\nmax_model_memory_gb: 8\nmodel_wait_timeout: 5\n"
    )
    a, b = cfg.model_configs
    assert a.names() == ["a", "first", "one"] and a.pin and a.idle_ttl == 30.0
    assert a.preloaded(0) and not b.preloaded(1) and b.memory_gb == 1.5
    assert cfg.max_loaded_models == 2 and cfg.max_model_memory_gb == 8.0


def test_alias_clash_names_the_line() -> None:
    import pytest

    from mlx_textgen.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config("model_configs:\n- model_id_or_path: /m/a\n- model_id_or_path: /m/b\n"
                     "  aliases: [a]\n")
    assert "line 3" in str(exc.value) and "'a' is already used" in str(exc.value)


def test_more_preloads_than_may_be_resident() -> None:
    import pytest

    from mlx_textgen.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config("model_configs:\n- model_id_or_path: /m/a\n- model_id_or_path: /m/b\n"
                     "  preload: true\n")
    assert "max_loaded_models is 1" in str(exc.value) and "line 3" in str(exc.value)
    with pytest.raises(ConfigError, match="idle_ttl"):
        parse_config("model_configs:\n- model_id_or_path: /m/a\n  idle_ttl: -1\n")
