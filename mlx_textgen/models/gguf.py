"""Import a GGUF file into an MLX model directory that `mlx_lm.load(dir)` can load.

The import runs once per (file content, options, importer version): the result lives in
`<cache_root>/gguf/<sha256[:16]>-<options>/` and later calls return it straight away.
The directory is built under a temporary name and renamed into place, so a crashed
import never leaves a half-written directory that would be taken for a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mlx_textgen.models.gguf_arch import build_config, spec_for
from mlx_textgen.models.gguf_file import GGUFImportError, read_gguf
from mlx_textgen.models.gguf_tokenizer import build_tokenizer_files
from mlx_textgen.models.gguf_weights import (
    FLOAT_DTYPES,
    ConvertOptions,
    check_tensors,
    convert_weights,
)

__all__ = ["GGUFImportError", "import_gguf"]

logger = logging.getLogger("mlx_textgen.gguf")

# Bump when the output of an import changes, so old cache entries are not reused.
IMPORTER_VERSION = 1
HASH_MEMO_NAME = "hash-memo.json"
_HASH_CHUNK = 16 << 20


def import_gguf(
    path: str | os.PathLike,
    cache_root: str | os.PathLike,
    *,
    float_weights: bool,
    float_dtype: str = "float32",
    progress: bool = True,
) -> Path:
    """Import `path` once, cache it under `cache_root`, and return the MLX model dir.

    float_weights=True writes every weight as `float_dtype` (fastest on CPU). False keeps
    Q4_0/Q4_1/Q8_0 matrices quantized bit-exactly (MLX affine, group size 32), re-quantizes
    other quant types to 8 bits (>= 5-bit sources) or 4 bits, and leaves tensors that are
    float in the file as float; scales, biases and every float tensor use `float_dtype`.
    Raises GGUFImportError for an unsupported architecture, quant type or tokenizer.
    """
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {sorted(FLOAT_DTYPES)}, not {float_dtype!r}")
    source = Path(path).resolve()
    if not source.is_file():
        raise FileNotFoundError(f"GGUF file not found: {source}")
    cache_dir = Path(cache_root) / "gguf"
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = content_hash(source, cache_dir / HASH_MEMO_NAME, progress=progress)
    mode = "float" if float_weights else "native"
    target = cache_dir / f"{digest[:16]}-{mode}-{float_dtype}-v{IMPORTER_VERSION}"
    if target.is_dir():
        logger.info("GGUF cache hit: %s -> %s", source.name, target)
        return target
    started = time.perf_counter()
    _import_atomically(source, target, ConvertOptions(float_weights, float_dtype), progress)
    logger.info(
        "GGUF import ran: %s -> %s (%.1fs)", source.name, target, time.perf_counter() - started
    )
    return target


def content_hash(path: Path, memo_path: Path, *, progress: bool = False) -> str:
    """sha256 of the file's content, memoized by (absolute path, size, mtime_ns)."""
    stat = path.stat()
    key = str(path.resolve())
    memo = _read_memo(memo_path)
    entry = memo.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with (
        open(path, "rb") as f,
        tqdm(
            total=stat.st_size,
            unit="B",
            unit_scale=True,
            desc=f"Hashing {path.name}",
            disable=not progress,
        ) as bar,
    ):
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    memo = _read_memo(memo_path)  # re-read: another process may have added entries meanwhile
    memo[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    _write_json_atomically(memo_path, memo)
    return digest.hexdigest()


def _import_atomically(source: Path, target: Path, options: ConvertOptions, progress: bool) -> None:
    _remove_stale_temp_dirs(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=target.parent))
    try:
        write_model_dir(source, tmp, options, progress)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # not simply lost a race to a parallel import
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_model_dir(source: Path, out_dir: Path, options: ConvertOptions, progress: bool) -> None:
    """Convert the GGUF at `source` into config, tokenizer and weight files in `out_dir`."""
    gguf = read_gguf(source)
    spec = spec_for(gguf)
    check_tensors(gguf, spec)
    config = build_config(gguf, spec)
    tokenizer = build_tokenizer_files(gguf)
    weights = convert_weights(gguf, spec, out_dir, options, progress)
    if (quantization := weights.quantization_config()) is not None:
        config["quantization"] = quantization
    generation: dict[str, Any] = {"eos_token_id": tokenizer.eos_token_ids}
    if tokenizer.bos_token_id is not None:
        generation["bos_token_id"] = tokenizer.bos_token_id
    if tokenizer.pad_token_id is not None:
        generation["pad_token_id"] = tokenizer.pad_token_id
    config.update(generation)
    config["torch_dtype"] = options.float_dtype
    config["gguf_source"] = {"file": source.name, "importer_version": IMPORTER_VERSION}
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", generation)
    _write_json(out_dir / "tokenizer_config.json", tokenizer.tokenizer_config)
    _write_json(out_dir / "special_tokens_map.json", tokenizer.special_tokens_map)
    (out_dir / "tokenizer.json").write_text(tokenizer.tokenizer_json, encoding="utf-8")


def _remove_stale_temp_dirs(target: Path) -> None:
    # Leftovers of crashed imports of this same entry; skip those whose process still runs.
    for tmp in target.parent.glob(f".tmp-{target.name}-*"):
        pid = tmp.name[len(f".tmp-{target.name}-") :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_json_atomically(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
