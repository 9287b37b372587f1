"""`hotserve serve` flags: one per setting, same names, flags over env, invalid values refused."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.serve import add_arguments, is_secret, run, settings_from_args
from server.settings import Settings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_setting_but_secrets_has_a_flag_of_the_same_name() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    secrets = {name for name, field in Settings.model_fields.items() if is_secret(field.annotation)}
    assert "redis_url" in secrets
    assert {"--" + name.replace("_", "-") for name in set(Settings.model_fields) - secrets} <= flags
    assert not {"--" + name.replace("_", "-") for name in secrets} & flags  # a flag shows in `ps`


def test_flags_override_env_and_unset_flags_keep_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOTSERVE_PORT", "9001")
    monkeypatch.setenv("HOTSERVE_LOG_LEVEL", "WARNING")
    settings = settings_from_args(_parse("--port", "9002", "--model-repository", str(tmp_path), "--access-log"))
    assert settings.port == 9002 and settings.model_repository == tmp_path and settings.access_log is True
    assert settings.log_level == "warning"
    assert settings_from_args(_parse()).port == 9001


def test_invalid_flag_values_exit_2_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_parse("--port", "70000")) == 2
    assert "port" in capsys.readouterr().err
