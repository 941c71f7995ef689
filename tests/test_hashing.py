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


def test_decompress_hashes_a_gzip_copy_by_its_content(tmp_path):
    import gzip

    data = b"user\titem\n1\t2\n" * 1000
    (tmp_path / "a.tsv").write_bytes(data)
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress(data))
    plain = file_digest(tmp_path / "a.tsv")
    assert file_digest(tmp_path / "a.tsv.gz", decompress=True) == plain
    assert file_digest(tmp_path / "a.tsv.gz") != plain
    assert file_digest(tmp_path / "a.tsv", decompress=True) == plain
