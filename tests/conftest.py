"""Shared fixtures: the real-data folder (tests marked ``realdata`` skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("ASSIM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $ASSIM_SHARED_DATA); skips the test when it is not there."""
    if not (SHARED_DATA / "MANIFEST.tsv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Jacobian caches of the test run out of the user's ~/.cache."""
    os.environ.setdefault("ASSIM_CACHE_DIR", str(tmp_path_factory.mktemp("assim-cache")))
