"""Shared test fixtures. The official parity fixtures are kept in ``tests/fixtures`` (see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def official_tiny() -> Path:
    """Outputs of the official code on a tiny random network; part of the repository, so never skipped."""
    return FIXTURES / "official_tiny"
