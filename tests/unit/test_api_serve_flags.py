"""`hotserve serve` flags: one per setting, same names, flags over env, invalid values refused."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.serve import add_arguments, run, settings_from_args
from server.settings import Settings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


SECRETS = {"redis_url", "feast_redis_url", "admin_tokens", "admin_token", "control_signing_key", "mlflow_tracking_uri"}


def test_every_setting_but_the_secrets_has_a_flag_of_the_same_name() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {"--" + name.replace("_", "-") for name in Settings.model_fields if name not in SECRETS} <= flags
    assert not {"--" + name.replace("_", "-") for name in SECRETS} & flags  # a flag shows in `ps`
    assert "--admin-tokens-file" in flags  # a file of tokens is no secret itself


def test_secrets_come_from_the_environment_and_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSERVE_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    settings = settings_from_args(_parse())
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value().endswith("@127.0.0.1:6379/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    with pytest.raises(SystemExit):
        _parse("--redis-url", "redis://x")


def test_unusable_admin_tokens_exit_2_without_showing_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTSERVE_ADMIN_TOKENS", "alice:visible")
    assert run(_parse("--model-repository", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "HOTSERVE_ADMIN_TOKENS entry 1: the token of 'alice' is a placeholder or shorter than 16" in err
    assert "visible" not in err


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


def test_a_secret_given_as_a_flag_is_refused_with_the_reason_and_the_variable_to_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--redis-url", "redis://:hunter2@127.0.0.1:6379/0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--redis-url is not a flag: HOTSERVE_REDIS_URL may hold a password" in err
    assert "set HOTSERVE_REDIS_URL in the environment" in err and "hunter2" not in err
    with pytest.raises(SystemExit):
        main(["serve", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_serve_help_lists_the_settings_that_are_environment_only(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "Environment only" in out
    assert all(f"HOTSERVE_{name.upper()}" in out for name in SECRETS)


def test_grpc_is_off_unless_a_port_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_args(_parse()).grpc_port is None
    assert settings_from_args(_parse("--grpc-port", "8081")).grpc_port == 8081
    monkeypatch.setenv("HOTSERVE_GRPC_PORT", "")  # `docker run -e HOTSERVE_GRPC_PORT=` turns the image's off
    assert settings_from_args(_parse()).grpc_port is None
    monkeypatch.setenv("HOTSERVE_GRPC_PORT", "9100")
    assert settings_from_args(_parse()).grpc_port == 9100
