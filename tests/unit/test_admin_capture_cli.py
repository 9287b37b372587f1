"""`hotserve models capture MODEL [SHARE|--off|--default]`: what it sends, and what it says of the
admin API's answers (the app in process, capture to a local directory or off)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.admin_cli import ACTIONS
from server.admin_client import AdminClient
from server.admin_render import render
from server.cli import build_parser
from tests.fakes import write_model_version
from tests.unit.test_admin_api import Admin, serving_admin, settings_for


class RecordingClient(AdminClient):
    """Records each call (method, path, body) instead of sending it, and answers {}."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "token", 1.0)
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        return {}


def _sent(argv: list[str]) -> tuple[str, str, Any]:
    args = build_parser().parse_args(["models", "capture", *argv])
    client = RecordingClient()
    ACTIONS[args.action](client, args)
    (call,) = client.calls
    return call


def test_each_form_calls_its_route() -> None:
    assert _sent(["fraud"]) == ("GET", "/admin/models/fraud/capture", None)
    assert _sent(["fraud", "0.25"]) == ("PUT", "/admin/models/fraud/capture", {"share": 0.25})
    assert _sent(["fraud", "10%"]) == ("PUT", "/admin/models/fraud/capture", {"share": 0.1})
    assert _sent(["fraud", "--off"]) == ("PUT", "/admin/models/fraud/capture", {"share": 0.0})
    assert _sent(["fraud", "--default"]) == ("DELETE", "/admin/models/fraud/capture", None)
    assert _sent(["fraud", "1", "--url", "http://replica:9"]) == ("PUT", "/admin/models/fraud/capture", {"share": 1.0})


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["fraud", "1.5"], "a share is from 0 to 1 (or 0% to 100%), got '1.5'"),
        (["fraud", "150%"], "a share is from 0 to 1 (or 0% to 100%), got '150%'"),
        (["fraud", "nan"], "a share is from 0 to 1 (or 0% to 100%), got 'nan'"),
        (["fraud", "half"], "a share is from 0 to 1 (or 0% to 100%), got 'half'"),
        (["fraud", "0.5", "--off"], "argument --off: not allowed with argument share"),
        (["fraud", "--off", "--default"], "argument --default: not allowed with argument --off"),
    ],
)
def test_a_bad_share_or_two_settings_are_refused_before_any_call(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["models", "capture", *argv])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    root = tmp_path / "repository"
    write_model_version(root, "mlp", 1)
    async for client in serving_admin(settings_for(root, capture_sink=str(tmp_path / "capture"))):
        yield client


async def _said(admin: Admin, method: str, body: dict[str, Any] | None = None) -> str:
    response = await admin.call(method, "/admin/models/mlp/capture", json=body)
    assert response.status_code == 200, response.text
    return render("capture", response.json())


async def test_each_change_and_the_state_are_said_as_they_are(admin: Admin, tmp_path: Path) -> None:
    sink = tmp_path / "capture"
    assert await _said(admin, "GET") == f"mlp: captures 100% of its answered requests (the default is 100%) to {sink}"
    said = await _said(admin, "PUT", {"share": 0.1})
    assert said == "capture set for mlp: 10% of its answered requests, on every replica (revision 1)"
    said = await _said(admin, "PUT", {"share": 0.1})
    assert said == "no change: mlp already captures 10% of its answered requests (revision 1)"
    assert await _said(admin, "GET") == (
        f"mlp: captures 10% of its answered requests (its own share; the default is 100%) to {sink}"
    )
    said = await _said(admin, "PUT", {"share": 0})
    assert said == "capture off for mlp: none of its answered requests are captured (revision 2)"
    said = await _said(admin, "DELETE")
    assert said == "capture of mlp back to each replica's default share (HOTSERVE_CAPTURE_SAMPLE) (revision 3)"
    said = await _said(admin, "DELETE")
    assert said == "no change: mlp already captures each replica's default share (revision 3)"


async def test_a_replica_without_a_sink_says_capture_is_off_and_what_the_share_would_be(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    write_model_version(root, "mlp", 1)
    async for admin in serving_admin(settings_for(root)):
        assert (await admin.call("PUT", "/admin/models/mlp/capture", json={"share": 0.5})).status_code == 200
        assert await _said(admin, "GET") == (
            "mlp: capture is off on this replica (no HOTSERVE_CAPTURE_SINK); "
            "where a sink is set it captures 50% of its answered requests"
        )
