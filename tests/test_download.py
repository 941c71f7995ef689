import hashlib
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
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


# ---- kills: temporary files are removed by the killed process (SIGTERM) or by the next prepare (SIGKILL) ----
SLOW_BYTES = 4 << 20


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves one zip; while `slow` is set, it trickles out so a download can be killed midway."""

    body = b""
    slow = threading.Event()

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        step = 64 << 10
        try:
            for start in range(0, len(self.body), step):
                self.wfile.write(self.body[start: start + step])
                if self.slow.is_set():
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        lines = "".join(f"{u}::{i}::5::{100 + i}\n" for u in range(1, 40) for i in range(1, 30))
        archive.writestr("toy/ratings.dat", lines)
        archive.writestr("toy/padding.bin", os.urandom(SLOW_BYTES))  # makes the download take seconds
    SlowHandler.body = buffer.getvalue()
    SlowHandler.slow.set()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/toy.zip"
    httpd.shutdown()


PREPARE = """
import sys
from sinkrec.data import catalog
url, root = sys.argv[1], sys.argv[2]
catalog.CATALOG["toy"] = catalog.DatasetInfo(name="toy", url=url, licence="test", format="movielens-dat",
                                             member="toy/ratings.dat")
catalog.prepare("toy", root=__import__("pathlib").Path(root), progress=False)
"""


def temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".part", ".download", ".tmp")) \
        if folder.is_dir() else []


def start_and_kill(url, root, sig):
    """Start a prepare in a child process, kill it with `sig` once its download has begun."""
    child = subprocess.Popen([sys.executable, "-c", PREPARE, url, str(root)])
    folder = root / "toy"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in folder.glob("*.download")) if folder.is_dir() else True:
        assert child.poll() is None and time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    child.send_signal(sig)
    child.wait()
    return child


def test_sigkilled_prepare_leaves_temporaries_that_the_next_prepare_sweeps(slow_server, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    start_and_kill(slow_server, root, signal.SIGKILL)
    left = temporaries(root / "toy")
    assert left and left[0].startswith("toy.zip.") and left[0].endswith(".download")  # what a kill leaves
    SlowHandler.slow.clear()
    register(monkeypatch, DatasetInfo(name="toy", url=slow_server, licence="test", format="movielens-dat",
                                      member="toy/ratings.dat"))
    path = prepare("toy", root=root, progress=False)
    assert temporaries(root / "toy") == []
    assert path.read_text().startswith("1::1::5::101") and catalog._marked(path)


def test_sigterm_removes_the_temporaries_at_once(slow_server, tmp_path):
    root = tmp_path / "cache"
    child = start_and_kill(slow_server, root, signal.SIGTERM)
    assert child.returncode == 128 + signal.SIGTERM
    assert temporaries(root / "toy") == []


def test_sweep_touches_only_our_names_of_dead_processes(tmp_path):
    info = DatasetInfo(name="toy", url="http://x/toy.zip", licence="test", format="movielens-dat",
                       member="toy/ratings.dat")
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "toy"
    folder.mkdir()
    stale = [f"ratings.dat.{dead.pid}.part", f"toy.zip.{dead.pid}.download", f".prepared.json.{dead.pid}.tmp"]
    kept = [f"ratings.dat.{os.getppid()}.part",  # a live process's download in progress
            f"other.txt.{dead.pid}.part", "ratings.dat", "notes.part", f"ratings.dat.{dead.pid}.partial"]
    for name in stale + kept:
        (folder / name).write_text("x")
    removed = catalog.sweep(folder, info)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)
