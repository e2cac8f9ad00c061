"""On-disk format of one prompt-cache segment: a safetensors file with a checked header.

Array convention: arrays arrive and leave as numpy, with a map ``name -> dtype string``
("float32", "float16", "bfloat16", "int32", ...). numpy has no bfloat16, so such arrays
travel as ``uint16`` views and their real dtype lives only in that map; readers get the
same uint16 arrays and the same map, and the MLX thread views them back.

Integrity: the safetensors metadata holds the record fields, the dtype map, the caller's
meta, a format version, the size of the tensor data (so the whole file size is known from
the header) and a CRC-32 over the metadata and the tensors. ``read_header`` checks the
header, its tensor table and the file size without reading tensor data; ``checksum``
covers the rest. Where the files live, and how they are shared, is ``store.DiskStore``'s
business.

The file is written and read here rather than through the safetensors package, so that
tensor bytes go straight between the caller's buffers and the file (``file_header`` plus
``tensor_bytes`` to write, ``tensor_views`` over one read buffer): the calls that move
them (file I/O, zlib) release the GIL, so a background write or a restore of hundreds of
megabytes never holds up the thread that runs the model. The files remain standard
safetensors files.

This module never imports mlx: it may run on a background writer thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

FORMAT_NAME = "mlx_textgen.prompt_cache.segment"
FORMAT_VERSION = "2"  # 2: CRC-32 checksums (1: blake2b)
# A real header is a few KB; a huge length prefix means garbage, so don't try to read it.
MAX_HEADER_BYTES = 64 << 20

# Dtype strings numpy cannot name, and the numpy dtype their arrays travel as.
_CARRIER_DTYPES = {"bfloat16": np.dtype(np.uint16)}
_META_FIELDS = (
    "format", "version", "key", "parent_key", "fingerprint", "tokens", "num_tokens",
    "nbytes", "trimmable", "is_boundary", "dtypes", "meta", "data_nbytes", "checksum",
)  # fmt: skip


@dataclass(frozen=True)
class SegmentRecord:
    """What the cache knows about one segment without loading its arrays.

    ``parent_key`` is the previous segment's key, or the model fingerprint for the first
    segment. ``nbytes`` is the caller's figure (the arrays' size in memory); it is stored
    and returned unchanged. The on-disk size is what ``DiskStore.put`` returns.
    """

    key: str
    parent_key: str
    fingerprint: str
    tokens: tuple[int, ...]
    nbytes: int
    trimmable: bool
    is_boundary: bool


class CorruptSegment(Exception):
    """A segment file that cannot be trusted; the store quarantines it."""


# safetensors dtype codes of the numpy dtypes segments use (bfloat16 travels as U16).
_ST_CODES = {
    np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8", np.dtype(np.int16): "I16", np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8", np.dtype(np.uint16): "U16",
    np.dtype(np.uint32): "U32", np.dtype(np.uint64): "U64", np.dtype(np.bool_): "BOOL",
}  # fmt: skip
_ST_DTYPES = {code: dt for dt, code in _ST_CODES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes sit in the data section, and how to view them."""

    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SegmentHeader:
    """A parsed, validated segment header."""

    record: SegmentRecord
    dtypes: dict[str, str]
    meta: dict[str, str]
    fields: dict[str, str]
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    data_start: int = 0  # file offset of the data section


def encode_tokens(tokens: tuple[int, ...]) -> str:
    """Token ids as base64 of little-endian uint32, as the header stores them."""
    arr = np.asarray(tokens, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        raise ValueError("token ids must fit in uint32")
    return base64.b64encode(arr.astype("<u4").tobytes()).decode("ascii")


def decode_tokens(text: str, count: int) -> tuple[int, ...]:
    """Inverse of ``encode_tokens``; CorruptSegment unless there are ``count`` tokens."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != 4 * count:
        raise CorruptSegment("token count does not match token data")
    return tuple(np.frombuffer(raw, dtype="<u4").tolist())


def _c_contiguous(arr: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays into shape (1,).
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def checksum(fields: dict[str, str], arrays: dict[str, np.ndarray]) -> str:
    """CRC-32 over the metadata (minus the checksum) and every tensor, in name order.

    It guards against torn or damaged files, not tampering; CRC-32 catches every one- and
    two-bit error and runs three times as fast as blake2b, which matters when a restarted
    server reads hundreds of megabytes of KV before its first token."""
    covered = {k: v for k, v in fields.items() if k != "checksum"}
    crc = zlib.crc32(json.dumps(covered, sort_keys=True).encode())
    for name in sorted(arrays):
        arr = _c_contiguous(arrays[name])
        crc = zlib.crc32(json.dumps([name, arr.dtype.str, list(arr.shape)]).encode(), crc)
        crc = zlib.crc32(arr.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def prepare_arrays(arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Check the arrays against their dtype map; return C-contiguous arrays."""
    if set(arrays) != set(dtypes):
        raise ValueError("dtypes must name exactly the arrays given")
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid array name {name!r}")
        want = _CARRIER_DTYPES.get(dtypes[name])
        if want is None:
            try:
                want = np.dtype(dtypes[name])
            except TypeError as exc:
                raise ValueError(f"unknown dtype {dtypes[name]!r} for {name!r}") from exc
        if arr.dtype != want:
            raise ValueError(f"array {name!r} is {arr.dtype}, dtype map says {dtypes[name]!r}")
        out[name] = _c_contiguous(arr)
    return out


def build_metadata(
    record: SegmentRecord,
    arrays: dict[str, np.ndarray],
    dtypes: dict[str, str],
    meta: dict[str, str],
) -> dict[str, str]:
    """The safetensors metadata of a segment file, checksum included."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("meta must map str to str")
    fields = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "key": record.key,
        "parent_key": record.parent_key,
        "fingerprint": record.fingerprint,
        "tokens": encode_tokens(record.tokens),
        "num_tokens": str(len(record.tokens)),
        "nbytes": str(int(record.nbytes)),
        "trimmable": "1" if record.trimmable else "0",
        "is_boundary": "1" if record.is_boundary else "0",
        "dtypes": json.dumps(dtypes, sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
        "data_nbytes": str(sum(a.nbytes for a in arrays.values())),
    }
    fields["checksum"] = checksum(fields, arrays)
    return fields


def parse_fields(fields: dict[str, str]) -> SegmentHeader:
    """Turn header metadata into a record; CorruptSegment on anything unexpected."""
    if any(k not in fields for k in _META_FIELDS):
        raise CorruptSegment("missing metadata fields")
    if fields["format"] != FORMAT_NAME or fields["version"] != FORMAT_VERSION:
        raise CorruptSegment(f"unknown format {fields['format']!r} v{fields['version']!r}")
    try:
        dtypes = json.loads(fields["dtypes"])
        meta = json.loads(fields["meta"])
        record = SegmentRecord(
            key=fields["key"],
            parent_key=fields["parent_key"],
            fingerprint=fields["fingerprint"],
            tokens=decode_tokens(fields["tokens"], int(fields["num_tokens"])),
            nbytes=int(fields["nbytes"]),
            trimmable=fields["trimmable"] == "1",
            is_boundary=fields["is_boundary"] == "1",
        )
    except (ValueError, binascii.Error) as exc:  # JSONDecodeError is a ValueError
        raise CorruptSegment(f"bad metadata: {exc}") from exc
    if not isinstance(dtypes, dict) or not isinstance(meta, dict):
        raise CorruptSegment("dtypes/meta are not maps")
    return SegmentHeader(record=record, dtypes=dtypes, meta=meta, fields=fields)


def read_header(f: BinaryIO, file_size: int) -> SegmentHeader:
    """Read and check only the header of an open segment file, including the file size."""
    prefix = f.read(8)
    if len(prefix) != 8:
        raise CorruptSegment("shorter than a header")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > file_size:
        raise CorruptSegment("header length out of range")
    try:
        header = json.loads(f.read(length))
        fields = header.pop("__metadata__")
        tensors = {name: _entry(t) for name, t in header.items()}
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise CorruptSegment(f"unreadable header: {exc}") from exc
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise CorruptSegment("metadata is not a string map")
    parsed = parse_fields(fields)
    data_nbytes = int(fields["data_nbytes"]) if fields["data_nbytes"].isdigit() else -1
    if set(tensors) != set(parsed.dtypes) or not _tiles(tensors.values(), data_nbytes):
        raise CorruptSegment("tensor table does not match metadata")
    if 8 + length + data_nbytes != file_size:
        raise CorruptSegment(f"file is {file_size} bytes, header says {8 + length + data_nbytes}")
    return SegmentHeader(parsed.record, parsed.dtypes, parsed.meta, parsed.fields, tensors, 8 + length)


def _entry(t: dict) -> TensorEntry:
    dtype = _ST_DTYPES[t["dtype"]]
    shape = tuple(int(d) for d in t["shape"])
    begin, end = (int(x) for x in t["data_offsets"])
    if any(d < 0 for d in shape) or end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError("tensor size does not match its offsets")
    return TensorEntry(dtype, shape, begin, end)


def _tiles(entries: Iterable[TensorEntry], nbytes: int) -> bool:
    """The tensors cover the data section exactly, without overlap."""
    at = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != at:
            return False
        at = e.end
    return at == nbytes


def file_header(fields: dict[str, str], arrays: dict[str, np.ndarray]) -> bytes:
    """The 8-byte length and JSON header of a safetensors file holding ``arrays`` in name
    order (``tensor_bytes``), padded with spaces to 8 bytes as safetensors does."""
    table: dict[str, object] = {"__metadata__": fields}
    at = 0
    for name in sorted(arrays):
        arr = arrays[name]
        code = _ST_CODES.get(arr.dtype)
        if code is None:
            raise ValueError(f"array {name!r}: no safetensors dtype for {arr.dtype}")
        table[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [at, at + arr.nbytes]}
        at += arr.nbytes
    raw = json.dumps(table, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(arrays: dict[str, np.ndarray]) -> list[memoryview]:
    """The data section, as byte views of the (C-contiguous) arrays in name order."""
    return [memoryview(arrays[name].reshape(-1).view(np.uint8)) for name in sorted(arrays)]


def tensor_views(buf: np.ndarray, header: SegmentHeader) -> dict[str, np.ndarray]:
    """Arrays viewing ``buf`` (the whole file as uint8) without copying."""
    base = header.data_start
    return {
        name: buf[base + e.begin : base + e.end].view(e.dtype).reshape(e.shape)
        for name, e in header.tensors.items()
    }


def check_identity(header: SegmentHeader, fingerprint: str, key: str) -> None:
    """CorruptSegment unless the header names the segment its file name says."""
    if header.record.key != key or header.record.fingerprint != fingerprint:
        raise CorruptSegment("file name does not match its key/fingerprint")
