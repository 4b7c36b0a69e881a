"""Fixtures of the import/export tests (helpers live in ``imagetools``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty storage root for an offline import."""
    path = tmp_path / "root"
    path.mkdir()
    return path
