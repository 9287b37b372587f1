"""A release's verdict in the MLflow Model Registry: the alias moves to the version it promoted,
and every released version is tagged with its verdict and evidence (control path).

Spoken over MLflow's REST API (`/api/2.0/mlflow/...`) with httpx: `hotserve serve` never imports
mlflow. The registered version a hotserve version stands for is the one it was imported from
(`hotserve import models:/NAME@ALIAS` records it in `imported_from.registry`), or else the
version of the policy's registered model that holds the same graph (`hotserve export --register`
tags each version with `hotserve.onnx_sha256`). The driver calls this before it stores the
verdict, so a replica that takes over after a crash does it again; both calls are idempotent.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from server.contract.manifest import ModelManifest
from server.redaction import redacted
from server.release.gates import Decision
from server.release.record import RegistryUpdate, ReleaseRecord, State

MAX_TAG_VALUE = 5000
"""MLflow's limit on a model version tag's value."""
SHA256_TAG = "hotserve.onnx_sha256"
"""The tag `hotserve export --register` puts on each registered version."""

ManifestReader = Callable[[str, int], ModelManifest]


class RegistryRefused(Exception):
    """The registry could not be reached or refused a call; the message says which and why."""


class MlflowAliases:
    """Moves aliases and tags versions in one MLflow tracking server's Model Registry."""

    def __init__(
        self,
        tracking_uri: str,
        manifests: ManifestReader,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._uri = tracking_uri.rstrip("/")
        self._manifests = manifests
        self._client = httpx.AsyncClient(
            base_url=f"{self._uri}/api/2.0/mlflow/",
            timeout=timeout_s,
            headers=_auth_headers(),
            transport=transport,
        )

    @property
    def where(self) -> str:
        return redacted(self._uri)

    async def close(self) -> None:
        await self._client.aclose()

    async def record_verdict(
        self, record: ReleaseRecord, state: State, detail: str, decision: Decision | None
    ) -> RegistryUpdate:
        """Tag the released version with `state` and, when promoted, point the alias at it. Never
        raises: what could not be done is in the update's `error`, and the verdict stands."""
        target = record.policy.registry
        assert target is not None, "only releases with a registry target are recorded"
        update = RegistryUpdate(alias=target.alias, tracking_uri=self.where)
        try:
            name, version = await self._registered(record, target.registered_model)
            update = update.model_copy(update={"registered_model": name, "registered_version": version})
            tags = {
                "hotserve.release.id": record.id,
                "hotserve.release.verdict": state,
                "hotserve.release.model": f"{record.model} v{record.version} (production was v{record.baseline})",
                "hotserve.release.evidence": _evidence(record, detail, decision),
            }
            for key, value in tags.items():
                await self._call("POST", "model-versions/set-tag", name=name, version=version, key=key, value=value)
            update = update.model_copy(update={"tagged": True})
            if state == "promoted":
                await self._call("POST", "registered-models/alias", name=name, alias=target.alias, version=version)
                update = update.model_copy(update={"alias_moved": True})
        except RegistryRefused as error:
            return update.model_copy(update={"error": str(error)})
        return update

    async def _registered(self, record: ReleaseRecord, named: str | None) -> tuple[str, str]:
        """The registered model and version that `record.version` stands for."""
        try:
            manifest = self._manifests(record.model, record.version)
        except Exception as error:  # a version deleted from the repository since it was released
            raise RefusedTarget(f"cannot read version {record.version}'s model.json: {error}") from None
        source = manifest.imported_from.registry if manifest.imported_from is not None else None
        if source is not None:
            if source.tracking_uri != self.where:  # the same name and number elsewhere is another model
                raise RefusedTarget(
                    f"version {record.version} was imported from the registry at {source.tracking_uri}, "
                    f"not this server's {self.where}"
                )
            if named is not None and named != source.name:
                raise RefusedTarget(
                    f"version {record.version} was imported from registered model {source.name!r}, not {named!r}"
                )
            return source.name, source.version
        if named is None:
            raise RefusedTarget(
                f"version {record.version} of {record.model!r} was not imported from the registry; "
                "name its registered model in the policy (registry.registered_model)"
            )
        holding = [v async for v in self._versions(named) if v.get(SHA256_TAG) == manifest.onnx_sha256]
        # The same graph may be registered more than once (two exports of one checkpoint): the
        # export's own tags then say which registered version is this hotserve version.
        exact = [
            v
            for v in holding
            if (v.get("hotserve.model"), v.get("hotserve.version")) == (record.model, str(record.version))
        ]
        if len(exact) == 1 or len(holding) == 1:
            return named, (exact or holding)[0]["version"]
        if not holding:
            raise RefusedTarget(
                f"no version of registered model {named!r} holds version {record.version}'s graph "
                f"({SHA256_TAG} {manifest.onnx_sha256[:12]}...): was it registered with `hotserve export --register`?"
            )
        raise RefusedTarget(
            f"registered versions {', '.join(v['version'] for v in holding)} of {named!r} all hold version "
            f"{record.version}'s graph and none is tagged as {record.model!r} version {record.version}"
        )

    async def _versions(self, name: str) -> AsyncIterator[dict[str, str]]:
        """Every registered version of `name`: its tags, and `version`."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": f"name='{name}'", "max_results": 200}
            if token:
                params["page_token"] = token
            page = await self._call("GET", "model-versions/search", params=params)
            for version in page.get("model_versions", []):
                yield {
                    **{t["key"]: t.get("value", "") for t in version.get("tags", [])},
                    "version": str(version["version"]),
                }
            token = page.get("next_page_token")
            if not token:
                return

    async def _call(self, method: str, path: str, params: dict[str, Any] | None = None, **body: str) -> Any:
        try:
            response = await self._client.request(method, path, params=params, json=body or None)
        except httpx.HTTPError as error:
            raise RegistryRefused(f"MLflow at {self.where} unreachable: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            try:
                reason = response.json().get("message", response.text)
            except ValueError:
                reason = response.text
            raise RegistryRefused(f"MLflow at {self.where} refused {path} ({response.status_code}): {reason[:300]}")
        return response.json()


class RefusedTarget(RegistryRefused):
    """The release's registry target does not name a registered version of this graph."""


def _auth_headers() -> dict[str, str]:
    """MLflow's own client settings: a bearer token, or a user and password (basic)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _evidence(record: ReleaseRecord, detail: str, decision: Decision | None) -> str:
    """The verdict, its gates' figures and the steps passed, as JSON cut to fit in a tag (the
    whole bundle is in the audit log)."""
    doc: dict[str, Any] = {"release": record.id, "detail": detail}
    if decision is not None:
        doc["gates"] = [
            {k: g[k] for k in ("gate", "verdict", "measured", "bound", "samples")}
            for g in decision.model_dump(mode="json")["gates"]
        ]
    doc["steps"] = [s.step.label for s in record.history]
    text = json.dumps(doc, sort_keys=True)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."
