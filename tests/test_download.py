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
    with pytest.raises(DownloadError, match="sha256 of .* expected 0000"):
        prepare("toy", root=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "toy" / "toy.zip").exists()


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
    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-latest", "amazon-beauty", "kuairec", "steam"):
        info = catalog.CATALOG[name]
        assert info.url.startswith("https://") and info.licence and info.format
