import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _shared_data() -> Path:
    return Path(os.environ.get("MTFAP_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder (``MTFAP_DATA`` or ../shared/data); skips when absent."""
    path = _shared_data()
    if not (path / "celeba").is_dir():
        pytest.skip(f"real face data not found at {path} (set MTFAP_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def celeba_dir(shared_data) -> Path:
    return shared_data / "celeba"


@pytest.fixture(scope="session")
def lfw_dir(shared_data) -> Path:
    path = shared_data / "lfw"
    if not path.is_dir():
        pytest.skip(f"LFW not found at {path}")
    return path


@pytest.fixture(scope="session")
def fairface_dir(shared_data) -> Path:
    path = shared_data / "fairface"
    if not (path / "fairface-val.zip").is_file():
        pytest.skip(f"FairFace not found at {path}")
    return path
