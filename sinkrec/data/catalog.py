"""Well-known public datasets: where to get them, how to check them, how to read them.

`prepare(name)` downloads the official file, verifies its checksum (a published digest, or the
publisher's `.md5` file beside the archive), extracts the interaction file and returns its path;
`sinkrec.data.sequences.load_store` then converts and caches it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SinkrecError
from .sequences import cache_dir

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
AMAZON_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
AMAZON_LICENCE = "research use; see the Amazon review data page (McAuley et al.)"
ML_LICENCE = "GroupLens: research use only, no redistribution, no commercial use; cite Harper & Konstan 2015"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    url: str
    licence: str
    format: str  # reader name in sinkrec.data.formats.READERS
    member: str | None = None  # file inside a zip archive; None if the download is the file itself
    sha256: str | None = None
    md5: str | None = None
    md5_url: str | None = None  # publisher's checksum file, fetched and checked when no digest is pinned
    columns: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _movielens(name: str, member: str, fmt: str, description: str) -> DatasetInfo:
    url = f"{GROUPLENS}/{name}.zip"
    return DatasetInfo(name=name, url=url, md5_url=url + ".md5", licence=ML_LICENCE, format=fmt,
                       member=member, description=description)


def _amazon(category: str, name: str) -> DatasetInfo:
    return DatasetInfo(name=name, url=f"{AMAZON_2014}/ratings_{category}.csv", licence=AMAZON_LICENCE,
                       format="csv", columns={"user": "0", "item": "1", "timestamp": "3"},
                       description=f"Amazon 2014 '{category}' ratings (user,item,rating,time; no header), "
                                   "as used by SASRec/S3-Rec before 5-core filtering")


CATALOG: dict[str, DatasetInfo] = {info.name: info for info in [
    DatasetInfo(name="ml-100k", url=f"{GROUPLENS}/ml-100k.zip", md5_url=f"{GROUPLENS}/ml-100k.zip.md5",
                licence=ML_LICENCE, format="csv", member="ml-100k/u.data",
                columns={"user": "0", "item": "1", "timestamp": "3"},
                description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (u.data, TSV)"),
    _movielens("ml-1m", "ml-1m/ratings.dat", "movielens-dat", "MovieLens 1M: 1,000,209 ratings, 6,040 users"),
    _movielens("ml-10m", "ml-10M100K/ratings.dat", "movielens-dat", "MovieLens 10M: 10M ratings"),
    _movielens("ml-20m", "ml-20m/ratings.csv", "movielens-csv", "MovieLens 20M: 20M ratings, 138K users"),
    _movielens("ml-25m", "ml-25m/ratings.csv", "movielens-csv", "MovieLens 25M: 25M ratings, 162K users"),
    _movielens("ml-latest", "ml-latest/ratings.csv", "movielens-csv",
               "MovieLens latest (full; changes over time)"),
    _movielens("ml-latest-small", "ml-latest-small/ratings.csv", "movielens-csv",
               "MovieLens latest, small: 100K ratings (changes over time)"),
    _amazon("Beauty", "amazon-beauty"),
    _amazon("Sports_and_Outdoors", "amazon-sports"),
    _amazon("Toys_and_Games", "amazon-toys"),
    _amazon("Video_Games", "amazon-games"),
    DatasetInfo(name="kuairec", url="https://zenodo.org/records/18164998/files/KuaiRec.zip",
                md5="261550d472c48eff4990fb13c0e5bcf7", licence="CC BY-SA 4.0 (KuaiRec 2.0, Gao et al. 2022)",
                format="csv", member="KuaiRec 2.0/data/big_matrix.csv",
                columns={"user": "user_id", "item": "video_id", "timestamp": "timestamp"},
                description="KuaiRec 2.0 big matrix: 12.5M views of short videos by 7,176 users"),
    DatasetInfo(name="steam", url="https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz",
                licence="research use; Kang & McAuley 2018 (SASRec)", format="jsonl",
                columns={"user": "username", "item": "product_id", "timestamp": "date"},
                description="Steam reviews as used by SASRec (one Python-literal record per line)"),
]}


class DownloadError(SinkrecError):
    """A download failed or its checksum did not match."""


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, progress: bool = True) -> None:
    """Stream `url` to `dest` atomically, with a progress bar when the size is known."""
    from tqdm import tqdm

    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed: {exc}") from None
    os.replace(tmp, dest)


def _expected_digest(info: DatasetInfo) -> tuple[str, str] | None:
    if info.sha256:
        return "sha256", info.sha256.lower()
    if info.md5:
        return "md5", info.md5.lower()
    if info.md5_url:
        try:
            with urllib.request.urlopen(info.md5_url, timeout=60) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"could not fetch the published checksum {info.md5_url}: {exc}") from None
        token = next((t for t in text.replace("=", " ").split() if len(t) == 32), None)
        if token is None:
            raise DownloadError(f"{info.md5_url} holds no MD5 digest: {text[:80]!r}")
        return "md5", token.lower()
    return None


def prepare(name: str, root: Path | None = None, progress: bool = True) -> Path:
    """Download (once), verify and extract dataset `name`; returns the interaction file."""
    if name not in CATALOG:
        import difflib

        close = difflib.get_close_matches(name, CATALOG, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SinkrecError(f"unknown dataset '{name}'{hint} (see `sinkrec datasets`)")
    info = CATALOG[name]
    folder = (root or cache_dir() / "datasets") / name
    target = folder / (Path(info.member).name if info.member else Path(info.url).name)
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    download = folder / Path(info.url).name
    if not download.is_file():
        _fetch(info.url, download, progress)
        expected = _expected_digest(info)
        if expected is None:
            log.warning("%s: the publisher gives no checksum; the download is not verified", name)
        else:
            algorithm, want = expected
            got = _digest(download, algorithm)
            if got != want:
                download.unlink()
                raise DownloadError(f"{name}: {algorithm} of {info.url} is {got}, expected {want}; "
                                    "the file was removed (corrupted or changed upstream)")
    if info.member:
        try:
            with zipfile.ZipFile(download) as archive, archive.open(info.member) as src, \
                    open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, KeyError) as exc:
            target.unlink(missing_ok=True)
            raise DownloadError(f"{download}: cannot extract '{info.member}': {exc}") from None
    return target
