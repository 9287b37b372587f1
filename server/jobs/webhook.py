"""The Alertmanager receiver: `POST /alerts` with the bearer token starts the retrain Job.

Answers 200 with what it did (created, or why not), 401 without the token, 400 for a body that
is not Alertmanager's, 502 when the Kubernetes API failed (Alertmanager then retries).
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from server.jobs.kube import KubeError
from server.jobs.trigger import Notification, Trigger

log = logging.getLogger(__name__)


def create_webhook_app(trigger: Trigger, token: str) -> FastAPI:
    if not token:
        raise ValueError("the webhook needs a bearer token")
    expected = f"Bearer {token}".encode()
    app = FastAPI(title="hotserve retrain webhook", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/alerts")
    async def alerts(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            notification = Notification.model_validate_json(await request.body())
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
            return JSONResponse({"error": f"not an Alertmanager notification: {problems}"}, status_code=400)
        try:
            outcome = await asyncio.to_thread(trigger.handle, notification)
        except KubeError as error:
            log.error("retrain not started: %s", error)
            return JSONResponse({"error": f"retrain not started: {error}"}, status_code=502)
        log.info("%s", outcome.detail)
        return JSONResponse({"created": outcome.created, "detail": outcome.detail})

    return app
