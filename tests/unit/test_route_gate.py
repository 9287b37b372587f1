"""The gate in front of the FastAPI routes: admin credentials before any body byte, bodies bounded."""

from __future__ import annotations

from pathlib import Path

from starlette.types import Message, Receive, Scope, Send

from server.api.admin_auth import AdminTokens
from server.api.body_budget import BodyBudget
from server.api.route_gate import RouteGate
from server.settings import Settings
from tests.fakes import FakeRegistry, serving

TOKEN = "unit-gate-token-0123456"


def _tokens() -> AdminTokens:
    tokens = AdminTokens.from_settings(Settings(admin_tokens=f"ops:{TOKEN}"))
    assert tokens is not None
    return tokens


async def _call(gate: RouteGate, path: str, headers: list[tuple[bytes, bytes]], body: list[bytes]) -> tuple[int, int]:
    """(status answered, body messages the app behind the gate or the gate itself received)."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        chunk = body[pulled - 1] if pulled <= len(body) else b""
        return {"type": "http.request", "body": chunk, "more_body": pulled < len(body)}

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await gate(app, scope, receive, send)
    return sent[0]["status"], pulled


async def test_admin_routes_refuse_a_missing_or_wrong_token_before_reading_the_body() -> None:
    gate = RouteGate(1024 * 1024, _tokens(), BodyBudget(64 * 1024 * 1024))
    for path in ("/admin/models/m/rollback", "/admin/features/views/v/versions/1/rows", "/v2/repository/index"):
        assert await _call(gate, path, [], [b"{}"]) == (401, 0)
        assert await _call(gate, path, [(b"authorization", b"Bearer wrong-token-000000")], [b"{}"]) == (403, 0)
        assert await _call(gate, path, [(b"authorization", f"Bearer {TOKEN}".encode())], [b"{}"]) == (200, 1)


async def test_bodies_over_the_limit_get_413_declared_at_once_chunked_once_past_it() -> None:
    gate = RouteGate(1024, None, BodyBudget(64 * 1024 * 1024))
    assert await _call(gate, "/v2/models/m", [(b"content-length", b"4096")], [b"x" * 4096]) == (413, 0)
    assert await _call(gate, "/v2/models/m", [], [b"x" * 600, b"x" * 600, b"x" * 600]) == (413, 2)
    assert await _call(gate, "/v2/models/m", [(b"content-length", b"many")], [b""]) == (400, 0)
    assert await _call(gate, "/v2/models/m", [], [b"x" * 600, b"x" * 400]) == (200, 2)


async def test_the_features_admin_route_answers_413_in_the_app(tmp_path: Path) -> None:
    settings = Settings(model_repository=tmp_path, admin_tokens=f"ops:{TOKEN}", max_route_request_bytes=2048)
    async with serving(settings, FakeRegistry([])) as client:
        answer = await client.post(
            "/admin/features/views/v/versions/1/rows",
            content=b'{"rows": [' + b" " * 4096 + b"]}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 413
        assert answer.json() == {"error": "request body of 4108 bytes exceeds the limit of 2048 bytes"}
        assert (await client.post("/admin/features/views/v/versions/1/rows", json={"rows": []})).status_code == 401
