"""A user's serving state and its byte format: JSON skeleton + raw tensor bytes, never pickle.

A stored state must never execute code when read (a store can be shared or restored from a
backup), so the format is a JSON header describing the structure, followed by the tensors' raw
little-endian bytes. Only the cache classes listed in `CACHE_TYPES` can be rebuilt from it.

    MAGIC (8 bytes) | header length (uint32 LE) | header JSON (utf-8) | tensor bytes ...
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ..nn.gated_deltanet import DeltaCache
from ..nn.memory_attention import WindowCache

MAGIC = b"SRSTATE1"
CACHE_TYPES: dict[str, type] = {"DeltaCache": DeltaCache, "WindowCache": WindowCache}


def _cache_types() -> dict[str, type]:
    from ..models.sinkrec import SinkRecCache

    return {**CACHE_TYPES, "SinkRecCache": SinkRecCache}


class StateFormatError(ValueError):
    """A stored state that cannot be decoded (corrupt, or written by an unknown format)."""


@dataclass
class UserState:
    """Everything needed to answer a recommend and to take the next event, for one user.

    `cache` is the model's recurrent cache (streaming models); `window`/`times` hold the last
    `max_len` events for models that recompute their window; `hidden` is the last output vector
    (scores = hidden · item table); `seen` is a bitmap over the catalogue for filter-seen.
    """

    checkpoint: str  # digest of the weights and catalogue that produced this state
    n_events: int = 0  # events applied, in arrival order
    hidden: torch.Tensor | None = None
    cache: object | None = None
    window: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    seen: bytes = b""

    def seen_indices(self) -> list[int]:
        bits = np.unpackbits(np.frombuffer(self.seen, dtype=np.uint8), bitorder="little")
        return np.flatnonzero(bits).tolist()

    def mark_seen(self, index: int, n_items: int) -> None:
        if not self.seen:
            self.seen = bytes((n_items + 1 + 7) // 8)
        buf = bytearray(self.seen)
        buf[index // 8] |= 1 << (index % 8)
        self.seen = bytes(buf)


# numpy's names of the common dtypes: on a little-endian machine their raw bytes are the format's as they
# are, and looking the name up here skips numpy's slow dtype-name machinery (a third of `dumps`).
_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.int64: "int64",
          torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}
_LITTLE = sys.byteorder == "little"


def _encode(value: object, blobs: list[bytes]) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and _LITTLE and value.dtype in _NAMES and not value.requires_grad:
        blobs.append(value.cpu().contiguous().numpy().tobytes())
        return {"$t": len(blobs) - 1, "dtype": _NAMES[value.dtype], "shape": list(value.shape)}
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().contiguous().numpy()
        blobs.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        return {"$t": len(blobs) - 1, "dtype": array.dtype.name, "shape": list(array.shape)}
    if isinstance(value, bytes):
        blobs.append(value)
        return {"$b": len(blobs) - 1}
    if isinstance(value, (list, tuple)):
        return [_encode(v, blobs) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("state dict keys must be strings")
        return {"$d": {k: _encode(v, blobs) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _cache_types():
        fields = {f.name: _encode(getattr(value, f.name), blobs) for f in dataclasses.fields(value)}
        return {"$c": type(value).__name__, "fields": fields}
    raise TypeError(f"cannot store a {type(value).__name__} in a serving state")


def _decode(node: object, blobs: list[memoryview]) -> object:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, blobs) for v in node]
    if not isinstance(node, dict):
        raise StateFormatError(f"unexpected node {type(node).__name__}")
    if "$t" in node:
        dtype = np.dtype(node["dtype"]).newbyteorder("<")
        array = np.frombuffer(blobs[node["$t"]], dtype=dtype).reshape(node["shape"])
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    if "$b" in node:
        return bytes(blobs[node["$b"]])
    if "$d" in node:
        return {k: _decode(v, blobs) for k, v in node["$d"].items()}
    if "$c" in node:
        cls = _cache_types().get(node["$c"])
        if cls is None:
            raise StateFormatError(f"unknown cache type {node['$c']!r}")
        return cls(**{k: _decode(v, blobs) for k, v in node["fields"].items()})
    raise StateFormatError("unknown node in state header")


def dumps(state: UserState) -> bytes:
    blobs: list[bytes] = []
    tree = {name: _encode(getattr(state, name), blobs) for name in
            ("checkpoint", "n_events", "hidden", "cache", "window", "times", "seen")}
    header = json.dumps({"state": tree, "sizes": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *blobs])


def loads(data: bytes) -> UserState:
    if data[:8] != MAGIC:
        raise StateFormatError("not a sinkrec serving state (bad magic)")
    try:
        (size,) = struct.unpack_from("<I", data, 8)
        header = json.loads(data[12:12 + size])
        view, offset, blobs = memoryview(data), 12 + size, []
        for n in header["sizes"]:
            blobs.append(view[offset:offset + n])
            offset += n
        if offset != len(data):
            raise StateFormatError("trailing or missing bytes in state")
        tree = header["state"]
        return UserState(**{k: _decode(v, blobs) for k, v in tree.items()})
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        if isinstance(exc, StateFormatError):
            raise
        raise StateFormatError(f"corrupt serving state: {exc}") from None
