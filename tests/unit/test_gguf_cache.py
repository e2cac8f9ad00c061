"""The GGUF import cache: content-hash keys, hash memo, atomic directories, logging."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from mlx_textgen.models import gguf as gguf_import
from mlx_textgen.models.gguf import HASH_MEMO_NAME, content_hash, import_gguf
from tests.unit.test_gguf_builders import write_tiny_model

LOGGER = "mlx_textgen.gguf"


@pytest.fixture
def tiny_path(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path, "qwen2").path


def test_dir_name_is_content_hash_plus_options(tiny_path: Path, tmp_path: Path) -> None:
    import hashlib

    cache = tmp_path / "cache"
    digest = hashlib.sha256(tiny_path.read_bytes()).hexdigest()
    float_dir = import_gguf(tiny_path, cache, float_weights=True, progress=False)
    native_dir = import_gguf(
        tiny_path, cache, float_weights=False, float_dtype="float16", progress=False
    )
    assert float_dir.parent == cache / "gguf"
    assert float_dir.name.startswith(digest[:16] + "-float-float32-v")
    assert native_dir.name.startswith(digest[:16] + "-native-float16-v")
    expected = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    }
    assert expected <= {p.name for p in float_dir.iterdir()}


def test_second_import_is_a_logged_cache_hit(
    tiny_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        first = import_gguf(tiny_path, tmp_path / "c", float_weights=True, progress=False)
    assert any("import ran" in r.getMessage() for r in caplog.records)
    caplog.clear()

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not convert again")

    monkeypatch.setattr(gguf_import, "write_model_dir", no_conversion)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        second = import_gguf(tiny_path, tmp_path / "c", float_weights=True, progress=False)
    assert second == first
    assert next(r.getMessage() for r in caplog.records if r.name == LOGGER).startswith(
        "GGUF cache hit"
    )


def test_hash_is_memoized_until_the_file_changes(
    tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = tmp_path / HASH_MEMO_NAME
    digest = content_hash(tiny_path, memo)
    entry = json.loads(memo.read_text())[str(tiny_path.resolve())]
    assert entry["sha256"] == digest and entry["size"] == tiny_path.stat().st_size

    calls = []
    real_sha256 = gguf_import.hashlib.sha256
    monkeypatch.setattr(gguf_import.hashlib, "sha256", lambda: calls.append(1) or real_sha256())
    assert content_hash(tiny_path, memo) == digest
    assert calls == []  # served from the memo
    stat = tiny_path.stat()
    os.utime(tiny_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert content_hash(tiny_path, memo) == digest
    assert calls == [1]  # mtime changed: hashed again


def test_failed_import_leaves_nothing_behind(
    tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    real = gguf_import.write_model_dir

    def crash_half_way(source: Path, out_dir: Path, *args: object) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_import, "write_model_dir", crash_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        import_gguf(tiny_path, cache, float_weights=True, progress=False)
    assert [p.name for p in (cache / "gguf").iterdir()] == [HASH_MEMO_NAME]

    monkeypatch.setattr(gguf_import, "write_model_dir", real)
    model_dir = import_gguf(tiny_path, cache, float_weights=True, progress=False)
    assert (model_dir / "model.safetensors").is_file()


def test_stale_temp_dirs_of_dead_imports_are_removed(tiny_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model_dir = import_gguf(tiny_path, cache, float_weights=True, progress=False)
    dead_pid = 2**22 + 12345  # above Linux's pid_max
    stale = model_dir.parent / f".tmp-{model_dir.name}-{dead_pid}-abc"
    live = model_dir.parent / f".tmp-{model_dir.name}-{os.getpid()}-xyz"
    stale.mkdir()
    live.mkdir()
    shutil.rmtree(model_dir)  # force a fresh import of the same entry
    import_gguf(tiny_path, cache, float_weights=True, progress=False)
    assert not stale.exists() and live.exists()


def test_bad_float_dtype_and_missing_file_are_refused(tiny_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float_dtype"):
        import_gguf(tiny_path, tmp_path, float_weights=True, float_dtype="int8")
    with pytest.raises(FileNotFoundError):
        import_gguf(tmp_path / "missing.gguf", tmp_path, float_weights=True)


def test_progress_bars_go_to_stderr(
    tiny_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_gguf(tiny_path, tmp_path / "cache", float_weights=True, progress=True)
    err = capsys.readouterr().err
    assert "Hashing" in err and "Converting GGUF tensors" in err
