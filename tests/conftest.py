"""Shared fixtures: settings for edge tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small limits so 413 is cheap to provoke; a short grace period."""
    return Settings(model_repository=tmp_path, max_request_bytes=4096, shutdown_grace_s=5)

