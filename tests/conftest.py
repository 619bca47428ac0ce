"""Shared test fixtures: the official parity fixtures live in ../shared/fixtures (JAVIS_FIXTURES overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    return Path(os.environ.get("JAVIS_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def official_tiny() -> Path:
    """The official tiny-network fixtures; missing files fail the run in CI instead of skipping."""
    path = fixtures_dir() / "official_tiny"
    if not (path / "tiny_official_io.safetensors").exists():
        message = f"official parity fixtures not found at {path} (set JAVIS_FIXTURES to the fixtures dir)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
