"""A compact list of string ids: one UTF-8 blob and int64 offsets.

A fixed-width numpy "U" array costs 4 bytes × the longest id for every id, so one 500-character
id among a million short ones costs ~2 GB; here each id costs its UTF-8 bytes plus 8. Both arrays
are plain numbers, so a cache file of them loads without pickle.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

import numpy as np


class IdList:
    """Distinct ids by index: `ids[i]` is a str, `ids.index(token)` its position (a dict built on first use)."""

    def __init__(self, ids: Iterable[str] = ()):
        encoded = [str(token).encode() for token in ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        self._set(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def _set(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets
        self._positions: dict[str, int] | None = None

    @classmethod
    def from_arrays(cls, blob: np.ndarray, offsets: np.ndarray) -> IdList:
        """The list stored as `blob` and `offsets` (e.g. from a cache file), checked so no id decodes wrongly later."""
        blob, offsets = np.asarray(blob), np.asarray(offsets)
        if blob.dtype != np.uint8 or offsets.dtype != np.int64 or blob.ndim != 1 or offsets.ndim != 1:
            raise ValueError(f"id arrays must be 1-D uint8 and int64, got {blob.dtype} and {offsets.dtype}")
        if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != blob.size or (np.diff(offsets) < 0).any():
            raise ValueError("id offsets do not describe the blob")
        starts = offsets[:-1][offsets[:-1] < blob.size]
        if ((blob[starts] & 0xC0) == 0x80).any():  # an id starting inside a character
            raise ValueError("an id offset splits a UTF-8 character")
        check = codecs.getincrementaldecoder("utf-8")()  # raises UnicodeDecodeError on invalid UTF-8,
        for start in range(0, blob.size, 1 << 20):  # a block at a time: never the whole text at once
            check.decode(blob[start: start + (1 << 20)].tobytes())
        check.decode(b"", final=True)
        out = cls.__new__(cls)
        out._set(blob, offsets)
        return out

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, key):
        """An id (int key), or an IdList of the ids a slice, index array or boolean mask selects."""
        if isinstance(key, (int, np.integer)):
            n = len(self)
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"id index {int(key)} out of range for {n} ids")
            return self.blob[self.offsets[i]: self.offsets[i + 1]].tobytes().decode()
        index = np.arange(len(self))[key]
        starts, ends = self.offsets[:-1][index], self.offsets[1:][index]
        lengths = ends - starts
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        out = IdList.__new__(IdList)
        out._set(self.blob[gather], offsets)
        return out

    def __iter__(self) -> Iterator[str]:
        data, offsets = self.blob.tobytes(), self.offsets.tolist()
        for start, end in zip(offsets[:-1], offsets[1:]):
            yield data[start:end].decode()

    def index(self, token: str) -> int:
        """The position of `token`; KeyError when it is not an id here."""
        if self._positions is None:
            self._positions = {token: i for i, token in enumerate(self)}
        return self._positions[token]

    def __contains__(self, token: object) -> bool:
        try:
            self.index(token)  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False
        return True

    def tolist(self) -> list[str]:
        return list(self)

    @property
    def nbytes(self) -> int:
        return self.blob.nbytes + self.offsets.nbytes

    def __repr__(self) -> str:
        head = ", ".join(repr(token) for token in self[:3])
        return f"IdList([{head}{', ...' if len(self) > 3 else ''}], {len(self)} ids)"
