import hashlib

import pytest

from sinkrec.hashing import file_digest


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_file_digest_matches_hashlib_across_block_boundaries(tmp_path, algorithm):
    data = bytes(range(256)) * 5000  # > 1 MiB: several blocks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_digest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()
    assert file_digest(str(path)) == hashlib.sha256(data).hexdigest()
