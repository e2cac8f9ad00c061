"""A model's fingerprint: what makes cached KV valid for it (and its cache dir's name)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_FINGERPRINT_VERSION = b"mlx_textgen.prompt_cache.fingerprint.v1"
_CONTENT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".npz", ".bin", ".pt", ".pth")


def model_fingerprint(model_dir: Path, extra: str = "", *, name: str | None = None) -> str:
    """``{name}-{hash}``: what makes cached KV valid for a model.

    The hash covers the contents of config.json, tokenizer.json and
    tokenizer_config.json, the names, sizes and mtimes of the weight files (never their
    bytes) and ``extra`` (e.g. the compute dtype). ``name`` (default: the model dir's,
    or the repo's for a Hugging Face snapshot) only makes the cache dir readable and
    lets a lookup tell "model changed" from "no entry".
    """
    model_dir = Path(model_dir)
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    for fname in _CONTENT_FILES:
        path = model_dir / fname
        data = path.read_bytes() if path.is_file() else b""
        h.update(f"\0{fname}\0{len(data)}\0".encode() + data)
    for path in sorted(model_dir.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES or path.name == "tokenizer.model":
            st = path.stat()
            h.update(f"\0{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    h.update(b"\0extra\0" + extra.encode())
    return f"{_slug(name or _model_name(model_dir))}-{h.hexdigest()[:24]}"


def _model_name(model_dir: Path) -> str:
    """The dir's name, or ``org--repo`` for a Hugging Face snapshot dir."""
    if model_dir.parent.name == "snapshots":
        return model_dir.parent.parent.name.removeprefix("models--")
    return model_dir.name


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:64].rstrip("-._")
    return slug or "model"
