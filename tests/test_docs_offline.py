"""The documentation renders offline: no page loads a script, style or font from another host.

The site is built with mkdocs when the docs extra is installed (its build hook fetches MathJax and
mermaid from npm once into a cache); SINKREC_SITE_DIR checks a site built already (CI).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a browser fetches by itself: scripts, stylesheets, preconnects, fonts, images, CSS imports
RESOURCE = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(https?:)?//[^\"]+\"|"
                      r"url\(\s*['\"]?(?:https?:)?//|@import\s+['\"](?:https?:)?//", re.I)


def test_config_names_no_external_script():
    text = (ROOT / "mkdocs.yml").read_text()
    assert not re.search(r"https?://", text), "mkdocs.yml loads something from the network"
    assert "font: false" in text  # the theme's default is Google Fonts


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if os.environ.get("SINKREC_SITE_DIR"):
        return Path(os.environ["SINKREC_SITE_DIR"])
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_built_site_references_no_external_resource(site):
    offenders = []
    for path in sorted(site.rglob("*")):
        if path.suffix in (".html", ".css") and path.is_file():
            for match in RESOURCE.finditer(path.read_text(errors="replace")):
                offenders.append(f"{path.relative_to(site)}: {match.group(0)[:120]}")
    assert not offenders, "\n".join(offenders[:20])


def test_vendored_mathjax_and_mermaid_are_in_the_site_and_used(site):
    for name in ("javascripts/vendor/mathjax/tex-mml-svg.js", "javascripts/vendor/mermaid/mermaid.min.js",
                 "javascripts/vendor/mathjax/input/tex/extensions/boldsymbol.js"):
        assert (site / name).stat().st_size > 1000, name
    page = (site / "models" / "sinkrec" / "index.html").read_text()
    assert 'class="arithmatex"' in page and 'class="mermaid"' in page  # the page has equations and a diagram
    assert "javascripts/vendor/mathjax/tex-mml-svg.js" in page and "javascripts/vendor/mermaid/mermaid.min.js" in page
