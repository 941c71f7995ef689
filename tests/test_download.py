import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial

import pytest

from sinkrec.data import catalog
from sinkrec.data.catalog import DatasetInfo, DownloadError, prepare


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path.startswith("/broken"):
            self.send_error(500, "server exploded")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def make_zip(root):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("toy/ratings.dat", "1::10::5::100\n1::11::4::200\n1::12::3::300\n")
    data = buffer.getvalue()
    (root / "toy.zip").write_bytes(data)
    return data


def register(monkeypatch, info):
    monkeypatch.setitem(catalog.CATALOG, info.name, info)


def test_good_file_with_published_md5(server, tmp_path, monkeypatch):
    root, url = server
    data = make_zip(root)
    (root / "toy.zip.md5").write_text(f"MD5 (toy.zip) = {hashlib.md5(data).hexdigest()}\n")
    register(monkeypatch, DatasetInfo(name="toy", url=f"{url}/toy.zip", md5_url=f"{url}/toy.zip.md5",
                                      licence="test", format="movielens-dat", member="toy/ratings.dat"))
    path = prepare("toy", root=tmp_path / "cache", progress=False)
    assert path.read_text().startswith("1::10::5::100")
    assert prepare("toy", root=tmp_path / "cache", progress=False) == path  # cached, no second download


def test_wrong_checksum_is_refused_and_removed(server, tmp_path, monkeypatch):
    root, url = server
    make_zip(root)
    register(monkeypatch, DatasetInfo(name="toy", url=f"{url}/toy.zip", sha256="0" * 64, licence="test",
                                      format="movielens-dat", member="toy/ratings.dat"))
    with pytest.raises(DownloadError, match="sha256 is .* expected 0000"):
        prepare("toy", root=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "toy").iterdir())  # nothing unverified is left to be read


def test_server_error_is_reported(server, tmp_path, monkeypatch):
    _, url = server
    register(monkeypatch, DatasetInfo(name="toy", url=f"{url}/broken/toy.zip", licence="test", format="sasrec"))
    with pytest.raises(DownloadError, match="500"):
        prepare("toy", root=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "toy").iterdir())  # no partial file left behind


def test_unknown_dataset_suggests():
    with pytest.raises(Exception, match="did you mean 'ml-1m'"):
        prepare("ml-1n")


def test_catalog_entries_are_complete():
    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-latest", "amazon-beauty", "kuairec", "steam", "ml-1m-sasrec",
                 "beauty", "sports", "toys", "yelp", "lastfm", "ml-1m-ts-half"):
        info = catalog.CATALOG[name]
        assert info.url.startswith("https://") and info.licence and info.format


TEXT = "1 10\n1 11\n1 12\n2 10\n2 12\n2 13\n"
TEXT_SHA = hashlib.sha256(TEXT.encode()).hexdigest()


def plain_entry(url, sha256=TEXT_SHA, name="toy"):
    return DatasetInfo(name=name, url=f"{url}/toy.txt", sha256=sha256, licence="test", format="sasrec")


def test_pinned_file_is_verified_marked_and_reused(server, tmp_path, monkeypatch):
    root, url = server
    (root / "toy.txt").write_text(TEXT)
    register(monkeypatch, plain_entry(url))
    path = prepare("toy", root=tmp_path / "cache", progress=False)
    assert path.read_text() == TEXT and (path.parent / catalog.MARKER).is_file()
    (root / "toy.txt").unlink()  # a second prepare must not download again
    assert prepare("toy", root=tmp_path / "cache", progress=False) == path


def test_file_without_marker_is_redone(server, tmp_path, monkeypatch):
    """A kill after the rename but before the marker: the next prepare does not trust the file."""
    root, url = server
    (root / "toy.txt").write_text(TEXT)
    register(monkeypatch, plain_entry(url))
    folder = tmp_path / "cache" / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.txt").write_text(TEXT[:7])  # truncated, unmarked
    assert prepare("toy", root=tmp_path / "cache", progress=False).read_text() == TEXT


def test_truncated_download_is_refused(server, tmp_path, monkeypatch):
    root, url = server
    (root / "toy.txt").write_text(TEXT[:9])  # the server sends less than the pinned file
    register(monkeypatch, plain_entry(url))
    with pytest.raises(DownloadError, match="sha256 is"):
        prepare("toy", root=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "toy").iterdir())


def test_local_copy_on_data_path(tmp_path, monkeypatch):
    register(monkeypatch, plain_entry("https://example.invalid"))
    (tmp_path / "mine" / "some-folder").mkdir(parents=True)
    (tmp_path / "mine" / "some-folder" / "toy.txt").write_text(TEXT)
    monkeypatch.setenv("SINKREC_DATA_PATH", str(tmp_path / "mine"))
    assert prepare("toy", root=tmp_path / "cache", progress=False) == tmp_path / "mine" / "some-folder" / "toy.txt"


def test_local_copy_with_wrong_digest_is_not_used(tmp_path, monkeypatch):
    register(monkeypatch, plain_entry("http://127.0.0.1:9"))  # nothing listens: the download fails
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "toy.txt").write_text(TEXT + "3 14\n")
    monkeypatch.setenv("SINKREC_DATA_PATH", str(tmp_path / "mine"))
    with pytest.raises(DownloadError, match="by hand.*sinkrec prepare toy --file"):
        prepare("toy", root=tmp_path / "cache", progress=False)


def test_hand_downloaded_file_is_verified_then_registered(tmp_path, monkeypatch):
    register(monkeypatch, plain_entry("http://127.0.0.1:9"))
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(TEXT)
    bad.write_text(TEXT.replace("13", "31"))
    with pytest.raises(DownloadError, match="expected " + TEXT_SHA):
        prepare("toy", root=tmp_path / "cache", file=bad)
    path = prepare("toy", root=tmp_path / "cache", file=good)
    assert path.read_text() == TEXT and path.parent == tmp_path / "cache" / "toy"
    assert prepare("toy", root=tmp_path / "cache") == path  # registered: no download needed


def test_zip_member_over_the_size_limit_is_refused(server, tmp_path, monkeypatch):
    root, url = server
    make_zip(root)
    monkeypatch.setattr(catalog, "MAX_EXTRACT_BYTES", 10)
    register(monkeypatch, DatasetInfo(name="toy", url=f"{url}/toy.zip", licence="test", format="movielens-dat",
                                      member="toy/ratings.dat"))
    with pytest.raises(DownloadError, match="more than 10 bytes"):
        prepare("toy", root=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "toy").iterdir())


def test_subset_is_cut_from_its_parent(server, tmp_path, monkeypatch):
    root, url = server
    make_zip(root)
    register(monkeypatch, DatasetInfo(name="toy", url=f"{url}/toy.zip", licence="test", format="movielens-dat",
                                      member="toy/ratings.dat"))
    register(monkeypatch, DatasetInfo(name="toy-half", url=f"{url}/toy.zip", licence="test",
                                      format="movielens-dat", subset_of="toy", max_user=0))
    assert prepare("toy-half", root=tmp_path / "cache", progress=False).read_text() == ""
