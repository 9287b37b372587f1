"""Shared fixtures: settings for edge tests; the developer's own HOTSERVE_* settings kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


@pytest.fixture(autouse=True)
def _no_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Settings()` reads the environment: an operator's HOTSERVE_ADMIN_TOKEN (the CLI's token)
    or HOTSERVE_PORT must not change what a test builds."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"HOTSERVE_{name.upper()}", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # also read by `mlflow_tracking_uri`


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small limits so 413 is cheap to provoke; a short grace period."""
    return Settings(model_repository=tmp_path, max_request_bytes=4096, shutdown_grace_s=5)
