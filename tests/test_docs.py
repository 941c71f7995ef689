"""The documentation: generated pages are current, no page points outside the repository."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_generated_pages_are_current():
    result = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, (
        "generated documentation is stale; run `python docs/generate.py`\n" + result.stdout + result.stderr)


def load_generate():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    """docs/generate.py pointed at a small copy of the repository: one results file, its plot, one page."""
    gen = load_generate()
    results = tmp_path / "benchmarks" / "results"
    (tmp_path / "docs").mkdir()
    results.mkdir(parents=True)
    for name in ("learning_curves.py", "common.py"):
        shutil.copy(ROOT / "benchmarks" / name, tmp_path / "benchmarks" / name)
    shutil.copy(ROOT / "benchmarks" / "results" / "serving.png", results / "serving.png")
    data = json.loads((ROOT / "benchmarks" / "results" / "serving.json").read_text())
    (results / "serving.json").write_text(json.dumps({**data, "command": "python benchmarks/learning_curves.py a"}))
    (tmp_path / "docs" / "page.md").write_text("See `benchmarks/results/serving.json`.\n\n"
                                               "![plot](../benchmarks/results/serving.png)\n")
    for name, value in (("ROOT", tmp_path), ("DOCS", tmp_path / "docs"), ("RESULTS", results),
                        ("README", tmp_path / "README.md")):
        monkeypatch.setattr(gen, name, value)
    return gen


def write_results(path, command, records):
    path.write_text(json.dumps({"command": command, "machine": "m", "date": "2026-12-04", "git": "x",
                                "records": records}))


def test_check_accepts_the_clean_copy(tmp_repo):
    write_results(tmp_repo.RESULTS / "curves.json", "python benchmarks/learning_curves.py a.json --name curves", [])
    assert tmp_repo.image_problems() == []
    assert tmp_repo.citation_problems() == []
    assert tmp_repo.command_problems() == []


def test_check_fails_on_a_stale_image(tmp_repo):
    source = tmp_repo.RESULTS / "serving.json"
    data = json.loads(source.read_text())
    data["records"][0] = {**data["records"][0], "planted": 1}
    source.write_text(json.dumps(data))
    problems = tmp_repo.image_problems()
    assert len(problems) == 1 and "stale image" in problems[0] and "serving.png" in problems[0]
    data["command"] = "python benchmarks/serving.py --quick"  # provenance alone does not change a plot
    del data["records"][0]["planted"]
    source.write_text(json.dumps(data))
    assert tmp_repo.image_problems() == []


def test_check_fails_on_an_image_without_a_source(tmp_repo):
    bare = tmp_repo.DOCS / "bare.png"
    bare.write_bytes(tmp_repo.PNG_SIGNATURE)  # a PNG of no chunks: no recorded source
    (tmp_repo.DOCS / "bare.md").write_text("![bare](bare.png)\n")
    (problem,) = tmp_repo.image_problems()
    assert problem.startswith("image without a recorded source: docs/bare.png")
    (tmp_repo.DOCS / "gone.md").write_text("![gone](gone.png)\n")
    assert "missing image: a page links docs/gone.png" in tmp_repo.image_problems()
    (tmp_repo.DOCS / "gone.md").unlink()
    bare.write_bytes(b"GIF89a")
    assert tmp_repo.image_problems() == ["not a readable PNG: docs/bare.png (not a PNG file)"]
    shutil.copy(tmp_repo.RESULTS / "serving.png", bare)
    tmp_repo.stamp_png(bare, tmp_repo.RESULTS / "serving.json")
    assert tmp_repo.image_problems() == []


def test_check_fails_on_a_missing_cited_file(tmp_repo):
    (tmp_repo.DOCS / "page.md").write_text("Run `python benchmarks/gone.py`, see sinkrec/configs/nope.yaml, "
                                           "not `benchmarks/results/*.json` or `benchmarks/X.py`. "
                                           "`sinkrec train --config ml-1m-gdn`, `--config no-such-config`, "
                                           "`--config FILE`.\n")
    write_results(tmp_repo.RESULTS / "r.json", "python benchmarks/learning_curves.py x.json",
                  [{"config": "sinkrec/configs/missing.yaml"}])
    problems = tmp_repo.citation_problems()
    assert sorted(problems) == ["missing cited config: docs/page.md names --config no-such-config",
                                "missing cited file: benchmarks/results/r.json names sinkrec/configs/missing.yaml",
                                "missing cited file: docs/page.md names benchmarks/gone.py",
                                "missing cited file: docs/page.md names sinkrec/configs/nope.yaml"]


def test_check_fails_on_a_command_that_no_longer_parses(tmp_repo):
    write_results(tmp_repo.RESULTS / "old.json", "python benchmarks/learning_curves.py a.json --smooth 3", [])
    write_results(tmp_repo.RESULTS / "gone.json", "python benchmarks/gone.py", [])
    gone, old = tmp_repo.command_problems()
    assert "old.json" in old and "--smooth" in old and "unrecognized arguments" in old
    assert "gone.json" in gone and "no benchmark script" in gone
    data = json.loads((tmp_repo.RESULTS / "old.json").read_text())
    (tmp_repo.RESULTS / "old.json").write_text(json.dumps({**data, "superseded": True}))
    assert len(tmp_repo.command_problems()) == 1  # a historical record is not held to HEAD


def test_historical_results_stay_off_the_results_pages(tmp_repo):
    write_results(tmp_repo.RESULTS / "old.json", "python benchmarks/gone.py", [{"op": "x", "ms": 1.0}])
    assert tmp_repo.result_files() == ["old.json", "serving.json"]
    data = json.loads((tmp_repo.RESULTS / "old.json").read_text())
    (tmp_repo.RESULTS / "old.json").write_text(json.dumps({**data, "superseded": True, "superseded_reason": "why"}))
    assert tmp_repo.result_files() == ["serving.json"] and tmp_repo.result_files(historical=True) == ["old.json"]
    pages = {path.name: text for path, text in tmp_repo.results_pages().items()}
    assert "- `old.json`: why" in pages["index.md"] and "## old" not in pages["speed.md"]


def test_recorded_commands_are_read_with_the_current_parsers():
    gen = load_generate()
    assert gen.command_problem("sinkrec train --config ml-1m-sinkrec") is None
    assert "--no-such-flag" in gen.command_problem("python -m sinkrec.cli train --no-such-flag")
    assert "--no-such-flag" in gen.command_problem("sinkrec train --config ml-1m-sinkrec --no-such-flag")
    assert "invalid choice" in gen.command_problem("python benchmarks/quality.py --study no-such-study")
    assert gen.command_problem("python quality.py --merge a.json") is None  # run from inside benchmarks/
    assert "does not read NOPE" in gen.command_problem("NOPE=1 bash benchmarks/probe_sinkrec_ml1m.sh")
    assert "not one shell command" in gen.command_problem("python benchmarks/quality.py --machine 'x")


def test_no_page_points_outside_the_repository():
    offenders = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for needle in ("../shared", "DESIGN.md"):
            if needle in text:
                offenders.append(f"{page.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


def test_describe_fields_reads_trailing_comments():
    from dataclasses import dataclass, field

    from sinkrec.describe import describe_fields, format_options

    @dataclass
    class Inner:
        size: int = 3  # how many

    @dataclass
    class Outer:
        name: str = "x"  # the name
        plain: float = 0.5
        inner: Inner = field(default_factory=Inner)

    rows = describe_fields(Outer)
    assert [(r.name, r.default, r.help) for r in rows] == [
        ("name", "x", "the name"), ("plain", 0.5, ""), ("inner.size", 3, "how many")]
    text = format_options(rows)
    assert "inner.size" in text and "how many" in text


def test_describe_does_not_import_torch():
    code = ("import sys; import sinkrec.describe, sinkrec.config; "
            "from sinkrec.describe import describe_fields; describe_fields(sinkrec.config.Config); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.skipif(shutil.which("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs and mkdocstrings are not installed (pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(["mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the repository's history")
def test_numbers_older_than_their_model_code_are_stale():
    gen = load_generate()
    last = subprocess.run(["git", "log", "-1", "--format=%h", "--", *gen.MODEL_CODE["gdn"]], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    before = subprocess.run(["git", "rev-parse", "--short", f"{last}^"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert gen.stale_model_runs("gdn", last) is None
    assert gen.stale_model_runs("gdn", "HEAD") is None
    assert f"changed at {last}" in gen.stale_model_runs("gdn", before)
