"""The documentation: generated pages are current, no page points outside the repository."""

from __future__ import annotations

import importlib.util
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
