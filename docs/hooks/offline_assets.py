"""mkdocs hook: MathJax and mermaid are served by the site itself, so equations and diagrams
render without a network (an offline laptop, an intranet mirror of the docs).

At build time each pinned npm package is fetched once from the npm registry into a cache
(SINKREC_DOCS_CACHE, default ~/.cache/sinkrec-docs), checked against the registry's sha512
integrity pinned below, and the few files the site needs are added to the build under
`javascripts/vendor/`. Nothing multi-megabyte is kept in git; a second build reuses the cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REGISTRY = "https://registry.npmjs.org"
VENDOR = "javascripts/vendor"
# name: (version, npm integrity, {path in the package: path under VENDOR/name}); a path ending in
# "/" takes the whole folder. MathJax loads its TeX extensions relative to its own script.
PACKAGES = {
    "mathjax": ("3.2.2",
                "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
                {"es5/tex-mml-svg.js": "tex-mml-svg.js", "es5/input/tex/extensions/": "input/tex/extensions/"}),
    "mermaid": ("11.17.2",
                "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg==",
                {"dist/mermaid.min.js": "mermaid.min.js"}),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SINKREC_DOCS_CACHE", Path.home() / ".cache" / "sinkrec-docs"))


def _verified(data: bytes, integrity: str, what: str) -> bytes:
    algorithm, _, expected = integrity.partition("-")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != expected:
        raise PluginError(f"{what}: the download does not match its pinned {algorithm} integrity")
    return data


def unpacked(name: str) -> Path:
    """The package's wanted files under CACHE/NAME-VERSION/VENDOR/NAME (fetched and verified once)."""
    version, integrity, wanted = PACKAGES[name]
    root = cache_dir() / f"{name}-{version}"
    done = root / ".complete"
    if done.is_file():
        return root
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - a fixed https URL
            data = _verified(response.read(), integrity, url)
    except OSError as exc:
        raise PluginError(f"cannot fetch {url} for offline {name} ({exc}); the docs build needs the npm "
                          f"registry once, or a filled cache in {cache_dir()}") from None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            inner = member.name.partition("/")[2]  # npm tarballs put everything under package/
            for source, target in wanted.items():
                match = inner == source or (source.endswith("/") and inner.startswith(source))
                if member.isfile() and match:
                    out = root / VENDOR / name / (target + inner[len(source):] if source.endswith("/") else target)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.extractfile(member).read())
    done.write_text(f"{url}\n")
    return root


def on_files(files, config):
    """Add every vendored file to the build, as if it were in docs/."""
    for name in PACKAGES:
        root = unpacked(name)
        for path in sorted((root / VENDOR / name).rglob("*")):
            if path.is_file():
                files.append(File(path.relative_to(root).as_posix(), str(root), config["site_dir"],
                                  config["use_directory_urls"]))
    return files
