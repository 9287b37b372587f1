"""Locust users that call hotserve as its prediction clients do: v2 JSON, v2 binary, and v1 records
that need the feature-store join (with a share of entities the store does not know, which must
be answered 404 naming them). Every answer goes through `checks`; the version that answered is
put in the request's context, where `Recorder` picks it up.

The classes here are abstract; `prediction_users` makes the concrete ones for a run (weights,
pacing, the target), and `locustfile.py` does the same for the `locust` command line.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from locust import FastHttpUser, User, constant, constant_throughput, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.exception import StopUser

from load_tests import checks
from load_tests.target import Body, Target

V2_JSON, V2_BINARY, V1_FEATURES, V1_UNKNOWN = "v2_json", "v2_binary", "v1_features", "v1_unknown_entity"
SCENARIOS = (V2_JSON, V2_BINARY, V1_FEATURES)
"""The scenarios a mix weights; `v1_features` requests for unknown entities are named V1_UNKNOWN."""
PREDICTION_NAMES = [V2_JSON, V2_BINARY, V1_FEATURES, V1_UNKNOWN]
"""Request names of prediction traffic (the operator's are `admin ...`)."""


def _body_of(response: ResponseContextManager) -> bytes:
    content = response.content
    return content if isinstance(content, bytes) else b""


def _headers_of(response: ResponseContextManager) -> dict[str, str]:
    return {k.lower(): v for k, v in (response.headers or {}).items()}


class PredictionUser(FastHttpUser):
    """One client that sends one kind of request in a loop; subclasses say which."""

    abstract = True
    target: ClassVar[Target]

    def on_start(self) -> None:
        self._bodies: dict[str, Iterator[Body]] = {}

    def _next(self, pool_name: str, pool: list[Body]) -> Body:
        if pool_name not in self._bodies:  # each user starts at its own place in the pool
            start = random.randrange(len(pool))
            self._bodies[pool_name] = itertools.islice(itertools.cycle(pool), start, None)
        return next(self._bodies[pool_name])

    def _send(self, name: str, path: str, body: Body, check: Callable[[ResponseContextManager], str | None]) -> None:
        with self.client.post(
            path,
            data=body.data,  # type: ignore[arg-type]  # bytes are sent as they are
            headers=body.headers,
            name=name,
            catch_response=True,
        ) as response:
            try:
                version = check(response)
            except checks.WrongAnswer as exc:
                response.failure(str(exc))
            except Exception as exc:  # a connection error surfaces when the body is read
                response.failure(f"{type(exc).__name__}: {exc}")
            else:
                response.success()
                if version is not None:
                    response.request_meta["context"]["version"] = version


class V2JsonUser(PredictionUser):
    abstract = True

    @task
    def v2_json(self) -> None:
        target = self.target
        body = self._next(V2_JSON, target.v2_json)
        self._send(
            V2_JSON,
            target.v2_path,
            body,
            lambda r: checks.v2_json(r.status_code, _body_of(r), target.model, target.outputs, body.rows, "loadtest"),
        )


class V2BinaryUser(PredictionUser):
    abstract = True

    @task
    def v2_binary(self) -> None:
        target = self.target
        body = self._next(V2_BINARY, target.v2_binary)
        self._send(
            V2_BINARY,
            target.v2_path,
            body,
            lambda r: checks.v2_binary(
                r.status_code, _headers_of(r), _body_of(r), target.model, target.outputs, body.rows
            ),
        )


class V1FeatureUser(PredictionUser):
    abstract = True

    @task
    def v1_features(self) -> None:
        target = self.target
        if not target.v1_known:
            raise StopUser(f"{target.model} takes no v1 records with a feature-store join")
        if target.v1_unknown and random.random() < target.unknown_share:
            unknown = self._next(V1_UNKNOWN, target.v1_unknown)
            entity = unknown.entity or ""
            self._send(
                V1_UNKNOWN,
                target.v1_path,
                unknown,
                lambda r: checks.v1_unknown_entity(r.status_code, _body_of(r), entity),
            )
            return
        body = self._next(V1_FEATURES, target.v1_known)
        self._send(
            V1_FEATURES,
            target.v1_path,
            body,
            lambda r: checks.v1_predictions(r.status_code, _body_of(r), target.model, body.rows),
        )


USER_CLASSES: dict[str, type[PredictionUser]] = {
    V2_JSON: V2JsonUser,
    V2_BINARY: V2BinaryUser,
    V1_FEATURES: V1FeatureUser,
}


def pacing(rate_per_user: float) -> Callable[[User], float]:
    """`rate_per_user` requests per second per user (a closed loop that waits between requests);
    0: no wait at all."""
    return constant_throughput(rate_per_user) if rate_per_user > 0 else constant(0)


def prediction_users(target: Target, mix: dict[str, int], rate_per_user: float) -> list[type[User]]:
    """Concrete user classes for the scenarios in `mix` (scenario -> weight), bound to `target`."""
    unknown = [s for s in mix if s not in USER_CLASSES]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    if mix.get(V1_FEATURES) and not target.v1_known:
        raise ValueError(
            f"{target.model} takes no v1 records with a feature-store join (no feature view, "
            f"or no entity table); leave {V1_FEATURES} out of the mix"
        )
    classes: list[type[User]] = []
    for scenario, weight in mix.items():
        if weight <= 0:
            continue
        attrs: dict[str, Any] = {
            "abstract": False,
            "weight": weight,
            "target": target,
            "wait_time": pacing(rate_per_user),
        }
        classes.append(type(f"{scenario}_client", (USER_CLASSES[scenario],), attrs))
    return classes
