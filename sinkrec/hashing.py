"""One way to fingerprint a file: used to verify downloads and to key the store cache."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path


def file_digest(path: str | Path, algorithm: str = "sha256", *, decompress: bool = False) -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (any `hashlib` algorithm name).

    With `decompress`, a `.gz` file is hashed by its decompressed content, so a copy the user
    gzipped by hand has the digest of the published file.
    """
    digest = hashlib.new(algorithm)
    opener = gzip.open if decompress and Path(path).suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
