"""Well-known public datasets: where to get them, how to check them, how to read them.

`prepare(name)` returns the interaction file of a catalogue dataset, from the first of:
1. the cache (`$SINKREC_CACHE/datasets/NAME/`), trusted only when its marker names the file's
   size and verified digest;
2. a copy the user already has, in a folder listed in `$SINKREC_DATA_PATH` (checked against the
   pinned sha256 before use);
3. a download: streamed to a temporary file, verified before anything reads it, extracted to a
   temporary path, renamed into place, and the marker written last. A kill at any step leaves
   nothing that a later `prepare` mistakes for a finished file.

Temporary files carry the pid of the process that writes them (`NAME.PID.part`, `.download`,
`.tmp`). They are removed on errors, Ctrl-C and SIGTERM; after a SIGKILL the next `prepare` of
the dataset removes those whose process is gone (`sweep`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import threading
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SinkrecError, env_bytes
from ..hashing import file_digest
from ..procs import alive
from .sequences import cache_dir

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
AMAZON_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
SASREC_DATA = "https://raw.githubusercontent.com/kang205/SASRec/master/data"
S3REC_DATA = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data"
AMAZON_LICENCE = "research use; see the Amazon review data page (McAuley et al.)"
ML_LICENCE = "GroupLens: research use only, no redistribution, no commercial use; cite Harper & Konstan 2015"
S3REC_LICENCE = "research use; preprocessed by Zhou et al. 2020 (S3-Rec) from the original release"
MAX_EXTRACT_BYTES = 16 << 30  # guards against zip bombs; SINKREC_MAX_EXTRACT_BYTES overrides it
MARKER = ".prepared.json"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    url: str
    licence: str
    format: str  # reader name in sinkrec.data.formats.READERS
    member: str | None = None  # file inside a zip archive; None if the download is the file itself
    sha256: str | None = None  # of the interaction file itself (decompressed), pinned by us
    md5: str | None = None  # of the download, as published
    md5_url: str | None = None  # publisher's checksum file, fetched and checked when no digest is pinned
    columns: dict[str, str] = field(default_factory=dict)
    description: str = ""
    subset_of: str | None = None  # derived: the events of users 1..max_user of this catalogue dataset
    max_user: int | None = None
    local_names: tuple[str, ...] = ()  # other names a hand-downloaded copy may have
    local_formats: dict[str, str] = field(default_factory=dict)  # such a copy's reader, when it differs

    @property
    def filename(self) -> str:
        if self.subset_of:
            return "ratings.dat"
        return Path(self.member or self.url).name


def _movielens(name: str, member: str, fmt: str, description: str) -> DatasetInfo:
    url = f"{GROUPLENS}/{name}.zip"
    return DatasetInfo(name=name, url=url, md5_url=url + ".md5", licence=ML_LICENCE, format=fmt,
                       member=member, description=description)


def _amazon(category: str, name: str) -> DatasetInfo:
    return DatasetInfo(name=name, url=f"{AMAZON_2014}/ratings_{category}.csv", licence=AMAZON_LICENCE,
                       format="csv", columns={"user": "0", "item": "1", "timestamp": "3"},
                       description=f"Amazon 2014 '{category}' ratings (user,item,rating,time; no header), "
                                   "raw, before any k-core filtering")


def _s3rec(name: str, file: str, sha256: str | None, what: str) -> DatasetInfo:
    return DatasetInfo(name=name, url=f"{S3REC_DATA}/{file}", licence=S3REC_LICENCE, format="s3rec",
                       sha256=sha256, description=f"{what}, as preprocessed by S3-Rec (one user per line, "
                                                  "chronological; the file behind most published numbers)")


CATALOG: dict[str, DatasetInfo] = {info.name: info for info in [
    DatasetInfo(name="ml-100k", url=f"{GROUPLENS}/ml-100k.zip", md5_url=f"{GROUPLENS}/ml-100k.zip.md5",
                licence=ML_LICENCE, format="csv", member="ml-100k/u.data",
                columns={"user": "0", "item": "1", "timestamp": "3"}, local_names=("ml-100k.inter",),
                local_formats={"ml-100k.inter": "recbole"},
                description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (u.data, TSV; "
                            "RecBole's ml-100k.inter holds the same events)"),
    _movielens("ml-1m", "ml-1m/ratings.dat", "movielens-dat", "MovieLens 1M: 1,000,209 ratings, 6,040 users"),
    _movielens("ml-10m", "ml-10M100K/ratings.dat", "movielens-dat", "MovieLens 10M: 10M ratings"),
    _movielens("ml-20m", "ml-20m/ratings.csv", "movielens-csv", "MovieLens 20M: 20M ratings, 138K users"),
    _movielens("ml-25m", "ml-25m/ratings.csv", "movielens-csv", "MovieLens 25M: 25M ratings, 162K users"),
    _movielens("ml-latest", "ml-latest/ratings.csv", "movielens-csv",
               "MovieLens latest (full; changes over time)"),
    _movielens("ml-latest-small", "ml-latest-small/ratings.csv", "movielens-csv",
               "MovieLens latest, small: 100K ratings (changes over time)"),
    DatasetInfo(name="ml-1m-sasrec", url=f"{SASREC_DATA}/ml-1m.txt", licence=ML_LICENCE, format="sasrec",
                sha256="b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2",
                description="MovieLens 1M as preprocessed by SASRec (`user item`, chronological, ids "
                            "re-indexed): the file behind the SASRec, BERT4Rec and HSTU ML-1M numbers"),
    DatasetInfo(name="ml-1m-ts-half", url=f"{GROUPLENS}/ml-1m.zip", licence=ML_LICENCE, format="movielens-dat",
                subset_of="ml-1m", max_user=2999, local_names=("ratings.dat.gz",),
                sha256="1273c4edfe3c0ff9e3a0a0d55819faeb947da0ad7df3927333b51ebefbeedc3d",
                description="MovieLens 1M with timestamps, users 1..2999 only (every one complete): "
                            "a half-size set for time-gap experiments, cut from `ml-1m`"),
    _s3rec("beauty", "Beauty.txt", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
           "Amazon Beauty, 5-core"),
    _s3rec("sports", "Sports_and_Outdoors.txt", None, "Amazon Sports and Outdoors, 5-core"),
    _s3rec("toys", "Toys_and_Games.txt", None, "Amazon Toys and Games, 5-core"),
    _s3rec("yelp", "Yelp.txt", None, "Yelp (2019 challenge), 5-core"),
    _s3rec("lastfm", "LastFM.txt", "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
           "LastFM (HetRec 2011) artist listening"),
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


def lookup(name: str) -> DatasetInfo:
    if name not in CATALOG:
        import difflib

        close = difflib.get_close_matches(name, CATALOG, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SinkrecError(f"unknown dataset '{name}'{hint} (see `sinkrec datasets`)")
    return CATALOG[name]


def content_digest(path: Path, algorithm: str = "sha256") -> str:
    """Digest of the file's content, decompressed when it is gzip (a hand-made .gz copy matches)."""
    try:
        return file_digest(path, algorithm, decompress=True)
    except (OSError, EOFError) as exc:
        raise DownloadError(f"{path}: cannot read ({exc})") from None


def _offline_hint(info: DatasetInfo, folder: Path) -> str:
    return (f"download {info.url} by hand, then run `sinkrec prepare {info.name} --file PATH` "
            f"(or put {info.filename} in {folder}/, or in a folder listed in SINKREC_DATA_PATH)")


def _fetch(url: str, dest: Path, info: DatasetInfo, folder: Path, progress: bool) -> None:
    """Stream `url` to `dest` (a temporary name the caller owns), with a progress bar."""
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed ({exc}); {_offline_hint(info, folder)}") from None


def _published_digest(info: DatasetInfo) -> tuple[str, str] | None:
    """The digest of the download itself, as its publisher gives it."""
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


def _check(path: Path, algorithm: str, want: str, what: str) -> None:
    got = content_digest(path, algorithm)
    if got != want:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{what}: {algorithm} is {got}, expected {want}; the file was removed "
                            "(corrupted, truncated or changed upstream)")


def _extract(archive: Path, member: str, dest: Path) -> None:
    """Copy one zip member to `dest`, refusing more than MAX_EXTRACT_BYTES whatever the header says."""
    written, limit = 0, env_bytes("SINKREC_MAX_EXTRACT_BYTES", MAX_EXTRACT_BYTES, DownloadError)
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as src, open(dest, "wb") as out:
            if zipped.getinfo(member).file_size > limit:
                raise DownloadError(f"{archive}: '{member}' would extract to more than {limit} bytes")
            for block in iter(lambda: src.read(1 << 20), b""):
                written += len(block)
                if written > limit:
                    raise DownloadError(f"{archive}: '{member}' extracts to more than {limit} bytes")
                out.write(block)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise DownloadError(f"{archive}: cannot extract '{member}': {exc}") from None
    except DownloadError:
        dest.unlink(missing_ok=True)
        raise


def _cut_users(source: Path, dest: Path, max_user: int) -> None:
    """Events of users 1..max_user of a MovieLens `::` file (the file is grouped by user)."""
    with _open_text(source) as src, open(dest, "w", encoding="utf-8", newline="\n") as out:
        for line in src:
            if int(line.split("::", 1)[0]) <= max_user:
                out.write(line)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


# ---- the cache marker: written last, so its presence means "verified and complete" -----------
def _marked(target: Path) -> bool:
    marker = target.parent / MARKER
    try:
        record = json.loads(marker.read_text())
        return record["file"] == target.name and record["bytes"] == target.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _mark(target: Path, sha256: str, source: str) -> None:
    marker = target.parent / MARKER
    tmp = marker.with_name(f"{MARKER}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"file": target.name, "bytes": target.stat().st_size, "sha256": sha256,
                                   "source": source}, indent=1))
        os.replace(tmp, marker)
    finally:
        tmp.unlink(missing_ok=True)


def _install(tmp: Path, target: Path, info: DatasetInfo, source: str) -> Path:
    """Verify `tmp` against the pinned digest (or record it), move it into place, mark it done."""
    if info.sha256:
        _check(tmp, "sha256", info.sha256, f"{info.name} ({source})")
        digest = info.sha256
    else:
        digest = content_digest(tmp)
        log.warning("%s: no digest is pinned for this file; recorded sha256 %s (compare it with a colleague's)",
                    info.name, digest)
    os.replace(tmp, target)
    _mark(target, digest, source)
    return target


def local_copy(info: DatasetInfo) -> Path | None:
    """A copy the user already has, in a folder of SINKREC_DATA_PATH (NAME/FILE, or any */FILE when pinned)."""
    names = (info.filename, *info.local_names)
    for root in filter(None, os.environ.get("SINKREC_DATA_PATH", "").split(os.pathsep)):
        root = Path(root).expanduser()
        candidates = [root / name for name in names] + [root / info.name / name for name in names]
        if info.sha256:  # only a pinned digest makes a loose name match safe
            candidates += [path for name in names for path in sorted(root.glob(f"*/{name}"))]
        for path in candidates:
            if path.is_file() and (info.sha256 is None or content_digest(path) == info.sha256):
                return path
    return None


# ---- temporary files: named with their writer's pid, swept once that process is gone --------------


def sweep(folder: Path, info: DatasetInfo) -> list[Path]:
    """Remove this dataset's temporary files whose writing process is gone; returns what was removed.

    Only our own names are touched (the dataset's file or download name, or the marker, then
    `.PID.part`, `.PID.download` or `.PID.tmp`), and only when no process with that pid is alive.
    """
    stems = "|".join(re.escape(n) for n in {info.filename, Path(info.url).name, MARKER})
    pattern = re.compile(rf"(?:{stems})\.(\d{{1,10}})\.(?:part|download|tmp)")
    removed = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) != os.getpid() and not alive(int(match.group(1))):
            try:
                path.unlink()
            except FileNotFoundError:  # another prepare swept it first
                continue
            removed.append(path)
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed prepare", info.name, len(removed))
    return removed


@contextmanager
def _cleanup_on_sigterm():
    """SIGTERM raises SystemExit while a prepare writes, so its `finally` removes the temporary files
    (only in the main thread, and only where SIGTERM still has its default action)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def prepare(name: str, root: Path | None = None, progress: bool = True, file: str | Path | None = None) -> Path:
    """The verified interaction file of catalogue dataset `name` (see the module docstring)."""
    info = lookup(name)
    folder = (root or cache_dir() / "datasets") / name
    target = folder / info.filename
    if file is None and target.is_file() and _marked(target):
        return target
    if file is None and (found := local_copy(info)) is not None:
        log.info("%s: using %s (from SINKREC_DATA_PATH)", name, found)
        return found
    folder.mkdir(parents=True, exist_ok=True)
    sweep(folder, info)
    with _cleanup_on_sigterm():
        return _prepare(info, folder, target, progress, file, root)


def _prepare(info: DatasetInfo, folder: Path, target: Path, progress: bool, file: str | Path | None,
             root: Path | None) -> Path:
    name = info.name
    tmp = folder / f"{info.filename}.{os.getpid()}.part"
    try:
        if file is not None:  # a copy the user downloaded by hand: verify, then register in the cache
            source = Path(file)
            if not source.is_file():
                raise SinkrecError(f"--file {source}: no such file")
            unpack = source.suffix == ".gz" and not info.filename.endswith(".gz")
            with open(tmp, "wb") as out, (gzip.open if unpack else open)(source, "rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
            return _install(tmp, target, info, f"file {source}")
        if info.subset_of:
            _cut_users(prepare(info.subset_of, root, progress), tmp, info.max_user or 0)
            return _install(tmp, target, info, f"users 1..{info.max_user} of {info.subset_of}")
        download = folder / f"{Path(info.url).name}.{os.getpid()}.download"
        try:
            _fetch(info.url, download, info, folder, progress)
            if (published := _published_digest(info)) is not None:
                _check(download, *published, f"{name} ({info.url})")
            if info.member:
                _extract(download, info.member, tmp)
            else:
                os.replace(download, tmp)
        finally:
            download.unlink(missing_ok=True)
        return _install(tmp, target, info, info.url)
    finally:
        tmp.unlink(missing_ok=True)
