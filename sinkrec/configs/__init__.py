"""The shipped experiment configs, found by name from any working directory."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def names() -> list[str]:
    """Every shipped config by name; those in sub-folders as `tuned/ml-1m-gdn`."""
    return sorted(path.relative_to(FOLDER).with_suffix("").as_posix() for path in FOLDER.rglob("*.yaml"))


def locate(name: str) -> Path | None:
    """`ml-1m-gdn` → the shipped file, or None when there is no such config."""
    path = FOLDER / f"{name}.yaml"
    return path if path.is_file() else None
