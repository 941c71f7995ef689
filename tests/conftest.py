import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own store cache, so no test reads another's cached files."""
    monkeypatch.setenv("SINKREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    if SHARED.is_dir():  # research datasets on this machine: found as a user's own copies are
        monkeypatch.setenv("SINKREC_DATA_PATH", str(SHARED))
    else:
        monkeypatch.delenv("SINKREC_DATA_PATH", raising=False)
    yield


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"research dataset {path} is not available on this machine")
    return path


os.environ.setdefault("OMP_NUM_THREADS", "2")
# Without a GPU, Triton kernels run under its CPU interpreter. Triton reads this when it is first
# imported, so it is set here, before any test module imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
