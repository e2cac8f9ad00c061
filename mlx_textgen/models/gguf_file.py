"""Read a GGUF file: its metadata as plain Python values and its tensor directory.

Nothing here converts weights; the tensors stay as read-only memory maps of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader


class GGUFImportError(ValueError):
    """A GGUF file the importer can't convert (unsupported architecture, quant type, layout).

    The message names the offending architecture, quant type or tensor.
    """


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as stored in the file.

    `shape` is in numpy/MLX order (rows first), the reverse of GGUF's dimension list;
    `data` is the raw memory map: float32/float16 for those types, uint8 blocks otherwise.
    """

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def type_name(self) -> str:
        return self.qtype.name


@dataclass
class GGUFFile:
    """Metadata and tensors of a single GGUF file."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value; a leading "{arch}." in `key` is filled in."""
        return self.metadata.get(key.replace("{arch}", self.arch), default)

    def require(self, key: str) -> Any:
        """A metadata value that the conversion can't do without."""
        value = self.get(key)
        if value is None:
            name = key.replace("{arch}", self.arch)
            raise GGUFImportError(f"GGUF metadata key {name!r} is missing in {self.path.name}")
        return value


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse the header of `path`; tensor data stays memory-mapped."""
    path = Path(path)
    try:
        reader = GGUFReader(path, "r")
    except OSError as e:
        raise GGUFImportError(f"{path} is not a readable GGUF file: {e}") from e
    except (ValueError, IndexError, EOFError) as e:  # a bad magic, or a cut file's end
        size = path.stat().st_size
        raise GGUFImportError(f"{path} is not a readable GGUF file ({size} bytes; truncated "
                              f"or corrupt, an incomplete download?): {e}") from e  # fmt: skip
    metadata = {key: _field_value(f) for key, f in reader.fields.items()}
    if int(metadata.get("split.count", 1) or 1) > 1:
        raise GGUFImportError(
            f"{path.name} is one part of a split GGUF; merge the parts first "
            "(llama-gguf-split --merge)"
        )
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        tensors[t.name] = GGUFTensor(t.name, GGMLQuantizationType(t.tensor_type), shape, t.data)
    return GGUFFile(path=path, metadata=metadata, tensors=tensors)


def _field_value(f: Any) -> Any:
    # contents() decodes strings and arrays; numpy scalars become Python numbers.
    value = f.contents()
    if isinstance(value, np.generic):
        return value.item()
    return value
