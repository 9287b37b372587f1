"""`DataPlane` and `Call`: one inference request from admission to outcome, knowing no transport.

Request path, after a transport has matched an inference endpoint: `DataPlane.call()` opens a
`Call`; `Call.route()` admits it (refused while the server drains), routes it against the
published table and leases what it got; the transport then reads and decodes the body against
the primary's schema; `Call.infer()` (tensors) or `Call.infer_records()` (v1 records: feature
join first) runs it on the primary's batcher and offers a shadow copy; `Call.release()` gives
the leases back; `Call.finish(status)` records the outcome. REST (`server/api/inference.py`)
and gRPC front ends decode into a `Call` and encode out of it; errors stay `HotserveError`
facts that each transport maps with its own table.

Two phases because of an ordering constraint: a request is routed and leased *before* its
body is read (a swap while the body arrives must not strand it), yet decoding needs the routed
version's schema. The one request whose version depends on its body, a v1 request under a
traffic split sticky by entity, leases every version the split can pick before the body is
read; `Call.pick()` keeps the one the first record's entity key hashes to.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable
from typing import Protocol

from server.capture.tap import CaptureTap
from server.dataplane.inflight import InflightRequests
from server.dataplane.request_metrics import RequestMetrics
from server.errors import HotserveError, InvalidInput, ShuttingDown
from server.features.join import FeatureJoin, Record
from server.protocol.v1 import assemble_features
from server.registry.served import ServedVersion
from server.request import InferenceRequest, Tensors
from server.routing.table import Route, ShadowRoute
from server.shadow import ShadowRunner

CLIENT_GONE = 499
"""The status of a request whose client left before its answer (nginx's code): not an answer."""


class Router(Protocol):
    """What the data plane needs of the registry: the published routing table, and why not."""

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> Route:
        """Where a request goes (no lease taken); raises ModelNotFound, ModelNotReady, ShuttingDown."""
        ...

    def unroutable(self, name: str, version: int | None) -> HotserveError:
        """Why a request for `name` (pinned to `version`, or not) has nowhere to go now."""
        ...


class DataPlane:
    """The inference core every transport calls; app-wide, built once by `create_app`."""

    def __init__(
        self,
        router: Router,
        features: FeatureJoin,
        shadow: ShadowRunner,
        inflight: InflightRequests,
        request_metrics: RequestMetrics,
        capture: CaptureTap | None = None,
    ) -> None:
        self.router = router
        self.features = features
        """Stored features for v1 records: the configured store behind its local cache,
        gatherer and circuit breaker (`server/features/`)."""
        self.shadow = shadow
        self.inflight = inflight
        """Requests between admission and release; graceful shutdown drains it."""
        self.request_metrics = request_metrics
        self.capture = capture
        """Which answered requests are captured (`server/capture/`); None: capture off."""

    def call(self, protocol: str, arrived: float) -> Call:
        """Open one request's passage; `protocol` labels its metrics (`v1`, `v2`, ...),
        `arrived` is `time.monotonic()` when it reached the server."""
        return Call(self, protocol, arrived)


class Call:
    """One inference request through the data plane: route -> (decode) -> infer -> release -> finish.

    Not reusable; lives on the event loop. `finish` is the one place a request's outcome (the
    version that served it, its status, its latency) is known and recorded.
    """

    __slots__ = ("_plane", "protocol", "arrived", "primary", "entity_field", "_name", "_shadow", "_route", "_held")

    def __init__(self, plane: DataPlane, protocol: str, arrived: float) -> None:
        self._plane = plane
        self.protocol = protocol
        self.arrived = arrived
        self.primary: ServedVersion | None = None
        """The version that answers (leased); None until routed, or until `pick` for a v1
        request sticky by entity."""
        self.entity_field = ""
        """Set when the primary waits for `pick`: the v1 record field to read from the body."""
        self._name = ""
        self._shadow: ShadowRoute | None = None
        self._route: Route | None = None
        self._held = False

    def route(
        self, name: str, version: int | None = None, routing_key: str | None = None, by_entity: bool = False
    ) -> ServedVersion | None:
        """Admit the request, route it and lease what it goes to; returns the primary.

        `version` pins it (no traffic split, no shadow copy). `routing_key` keeps it on one
        version under a split. `by_entity`: the request carries v1 records, so without a
        routing key, under a split sticky by entity, the primary waits for `pick`: None is
        returned, `entity_field` names the field, and every version the split can pick is
        leased. A shadow copy is decided here (the shadow's share, and whether the shadow runner
        would drop it anyway: then it is counted dropped now, and the request pays nothing more
        for it), and the shadow leased with it. Raises ShuttingDown while draining,
        ModelNotFound, ModelNotReady.
        """
        plane = self._plane
        if plane.inflight.draining:
            raise ShuttingDown()
        plane.inflight.enter()
        self._held = True
        route = plane.router.route(name, version, routing_key, by_entity)
        self._name = name
        shadow = route.shadow
        primary = route.primary
        if (
            shadow is not None
            and (shadow.share >= 1.0 or random.random() < shadow.share)
            and not plane.shadow.declines(shadow, primary)
        ):
            shadow.served.lease()  # held until released: a swap cannot close it under the primary
            self._shadow = shadow
        if primary is None:
            self._route = route
            self.entity_field = route.entity_field or ""
            for target in _targets(route):
                target.lease()
            return None
        primary.lease()
        self.primary = primary
        return primary

    def pick(self, entity: str | None) -> ServedVersion:
        """The primary of a request sticky by entity, once its body named the key (`None`: the
        first record has none, so the split draws at random); the other versions the split
        could have picked are released."""
        route = self._route
        if route is None or route.split is None:
            raise RuntimeError("pick() is for a request routed without a primary")
        primary = route.split.pick(entity)
        for target in _targets(route):
            if target is not primary:
                target.release()
        self._route = None
        self.entity_field = ""
        if primary is None:  # that share has no ready version here
            raise self._plane.router.unroutable(self._name, None)
        self.primary = primary
        return primary

    def infer(self, request: InferenceRequest) -> Awaitable[Tensors]:
        """Run a decoded request on the primary's batcher; await it for the outputs. Once the
        primary answered, a shadow copy, if drawn, is offered (never awaited) and the request, if
        drawn for capture, handed to the capture tap with the copy. Raises what the batcher
        raises (Overloaded, DeadlineExceeded, InvalidInput, InferenceFailed, ModelNotReady)."""
        primary = self.primary
        if primary is None:
            raise RuntimeError("infer() before the request was routed")
        capture = self._plane.capture
        captured = capture is not None and capture.draws(primary.name)
        if self._shadow is None and not captured:
            return primary.infer(request)  # the batcher's own coroutine: no frame of ours per request
        return self._infer_and_tap(primary, request, captured)

    async def _infer_and_tap(self, primary: ServedVersion, request: InferenceRequest, captured: bool) -> Tensors:
        outputs = await primary.infer(request)
        shadow = self._shadow
        copy = None if shadow is None else self._plane.shadow.offer(shadow, request, outputs, primary)
        if captured and (capture := self._plane.capture) is not None:
            capture.capture(
                primary, self.protocol, request, outputs, None if shadow is None else shadow.served.version, copy
            )
        return outputs

    async def infer_records(self, records: list[Record], deadline: float | None, request_id: str) -> Tensors:
        """Run v1 records (checked against the primary's feature spec): stored features joined
        by entity key when the spec names a view, then assembled into the input tensor."""
        primary = self.primary
        if primary is None:
            raise RuntimeError("infer_records() before the request was routed")
        spec = primary.manifest.features
        if spec is None:
            raise InvalidInput("instances", detail="the model has no feature spec; send raw rows")
        if spec.view is not None:
            records, _ = await self._plane.features.join(records, spec.view)
        inputs = {spec.input: assemble_features(records, spec, primary.schema)}
        return await self.infer(InferenceRequest(inputs, len(records), deadline, request_id))

    def release(self) -> None:
        """Give back every lease and the in-flight slot (the answer is ready, or never will be).
        Safe to call twice; `finish` calls it if the transport did not."""
        if not self._held:
            return
        self._held = False
        if self.primary is not None:
            self.primary.release()
        if self._route is not None:  # never picked (its body failed)
            for target in _targets(self._route):
                target.release()
            self._route = None
        if self._shadow is not None:
            self._shadow.served.release()  # a copy offered holds its own lease
        self._plane.inflight.exit()

    def finish(self, status: int) -> float:
        """The request's outcome: `status` is what it was answered (its HTTP status; a transport
        with codes of its own passes the HTTP status its error maps to; 499: the client left).
        Records it against the version that served it (labels "" when none did); returns the
        latency in seconds."""
        if self._held:
            self.release()
        duration_s = time.monotonic() - self.arrived
        served = self.primary
        if served is None:
            self._plane.request_metrics.record("", "", self.protocol, status, duration_s)
        else:
            self._plane.request_metrics.record(served.name, str(served.version), self.protocol, status, duration_s)
            if status != CLIENT_GONE:  # the evidence of this load of the version (guarded promotion)
                served.evidence.answered(status, duration_s, self.protocol)
        return duration_s


def _targets(route: Route) -> list[ServedVersion]:
    """The versions a split waiting for its entity key may pick, each once."""
    targets: list[ServedVersion] = []
    if route.split is not None:
        for target in route.split.targets:
            if target is not None and all(target is not seen for seen in targets):
                targets.append(target)
    return targets
