"""The README's tour runs as written, on tiny data: every `sinkrec` command and the Python example.

Training commands get `train.epochs` lowered (and a catalogue run a short history) so the tour
takes seconds; everything else runs exactly as the README shows it. The tour runs twice: on a
file in the README's own shape, and on a file laid out like a public dataset a newcomer brings
(MovieLens' ratings.csv: userId,movieId,rating,timestamp; skewed popularity, unix times).
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from sinkrec.cli import main

from .conftest import SHARED

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = ["--set", "train.epochs=2", "--set", "train.progress=false", "--device", "cpu"]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def tour_commands() -> list[list[str]]:
    """`sinkrec ...` lines of the README's bash blocks after the set-up block, comments removed."""
    commands = []
    for block in blocks("bash")[1:]:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("sinkrec "):
                commands.append(shlex.split(line)[1:])
    return commands


def write_ratings(folder: Path, users: int = 40, length: int = 12) -> None:
    """A tiny log in the README's shape: user_id,item_id,timestamp, with the items the tour names."""
    rng = np.random.default_rng(0)
    pool = ["1193", "661", "914", *[str(3000 + i) for i in range(30)]]
    rows = ["user_id,item_id,timestamp"]
    for user in range(users):
        for step, item in enumerate(rng.choice(pool, size=length, replace=False)):
            rows.append(f"u{user},{item},{1_000_000 + 60 * step}")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")


def write_public_style(path: Path, users: int = 50, length: int = 14, seed: int = 0) -> Path:
    """A MovieLens-latest-style ratings.csv: userId,movieId,rating,timestamp, Zipf-skewed popularity."""
    rng = np.random.default_rng(seed)
    pool = np.array([1193, 661, 914, *range(2000, 2297)])
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.2
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(1, users + 1):
        start = int(rng.integers(1_200_000_000, 1_500_000_000))
        for step, item in enumerate(rng.choice(pool, size=length, replace=False, p=weights / weights.sum())):
            rows.append(f"{user},{item},{rng.integers(1, 11) / 2},{start + 3600 * step}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def tour_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # conftest points SINKREC_DATA_PATH at the research datasets, if present
    write_ratings(tmp_path)
    return tmp_path


@pytest.fixture(params=["readme-shape", "public-style"])
def any_tour_dir(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if request.param == "public-style":
        write_public_style(tmp_path / "ratings.csv")
    else:
        write_ratings(tmp_path)
    return tmp_path


def _with(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `flag`'s value replaced (or the flag added)."""
    if flag in args:
        args = list(args)
        args[args.index(flag) + 1] = value
        return args
    return [*args, flag, value]


def shrink(args: list[str]) -> list[str]:
    if args[0] == "compare":
        return _with(_with(_with(args, "--seeds", "1"), "--budget", "epochs:1"), "--parallel", "1")
    if args[0] == "tune":
        return _with(_with(args, "--trials", "2"), "--budget", "epochs:1")
    if args[0] != "train":
        return args
    args = [a for a in args if a not in ("--device", "cuda")]
    if "--config" in args:  # a catalogue dataset: a real run, on a short window
        args += ["--set", "data.max_len=20", "--set", "model.d_model=16"]
    return args + FAST


def test_readme_tour_commands(any_tour_dir, capsys):
    tour_dir = any_tour_dir
    commands = tour_commands()
    assert len(commands) >= 8, "the README tour lost its commands"
    catalogue = {"prepare", "datasets"}
    for args in commands:
        needs_catalogue = args[0] == "prepare" or "--config" in args
        if needs_catalogue and not SHARED.is_dir():
            continue  # a fresh machine without the research datasets: no network in CI either
        code = main(shrink(args))
        out = capsys.readouterr()
        assert code == 0, f"`sinkrec {' '.join(args)}` failed: {out.err[-500:]}"
        if args[0] == "recommend":
            assert len(out.out.strip().splitlines()) == 10
        if args[0] == "train":  # the floor to beat, in every run's table
            assert "pop test" in out.out and "itemknn test" in out.out
        if args[0] not in catalogue:
            assert out.out.strip(), f"`sinkrec {' '.join(args)}` printed nothing"
    assert (tour_dir / "runs" / "ratings-gdn" / "best.pt").is_file()
    assert (tour_dir / "runs" / "ratings-sasrec" / "metrics.json").is_file()


def test_readme_python_example(tour_dir):
    (code,) = blocks("python")
    code = code.replace('"train.epochs=30"', '"train.epochs=2", "train.progress=false", "train.device=cpu"')
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    run = namespace["run"]
    assert 0.0 <= run.test["ndcg@10"] <= 1.0
    assert run.path == Path("runs/ratings-gdn")
    assert len(namespace["session"].recommend(k=5)["items"]) == 5


def test_training_twice_never_overwrites(tour_dir):
    assert main(["train", "ratings.csv", "--set", "train.epochs=1", "--set", "train.progress=false"]) == 0
    first = (tour_dir / "runs" / "ratings-gdn" / "metrics.json").read_bytes()
    assert main(["train", "ratings.csv", "--set", "train.epochs=1", "--set", "train.progress=false"]) == 0
    assert (tour_dir / "runs" / "ratings-gdn" / "metrics.json").read_bytes() == first
    assert (tour_dir / "runs" / "ratings-gdn-2" / "metrics.json").is_file()
    assert main(["train", "ratings.csv", "--overwrite", "--set", "train.epochs=1",
                 "--set", "train.progress=false"]) == 0
    assert not (tour_dir / "runs" / "ratings-gdn-3").exists()
