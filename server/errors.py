"""The HotserveError family: facts about what went wrong, no HTTP status codes.

`server/api/error_handlers.py` maps each class to a status in one table.
"""

from __future__ import annotations

from typing import Any


class HotserveError(Exception):
    """Base of every error the server answers on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = {}
        """Facts that go into the error body beside `error` (e.g. a refused promotion's evidence)."""


# --- input -----------------------------------------------------------------


class InvalidInput(HotserveError):
    """A request that can never succeed as sent; names the field, expected vs got."""

    def __init__(
        self, field: str, expected: str | None = None, got: str | None = None, detail: str | None = None
    ) -> None:
        if detail is not None:
            message = f"{field}: {detail}"
        else:
            message = f"{field}: expected {expected}, got {got}"
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.got = got


class PayloadTooLarge(HotserveError):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"request body of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


# --- lookup ----------------------------------------------------------------


class ModelNotFound(HotserveError):
    def __init__(self, name: str, version: int | str | None = None) -> None:
        what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
        super().__init__(f"{what} not found")
        self.name = name
        self.version = version


class ReleaseNotFound(HotserveError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} has no release")
        self.name = name


class EntityNotFound(HotserveError):
    """The feature store has no (fresh) values for an entity a request names."""

    def __init__(self, view: str, entity: str, reason: str) -> None:
        super().__init__(f"entity {entity!r} not found in feature view {view}: {reason}")
        self.view = view
        self.entity = entity


# --- state -----------------------------------------------------------------


class Conflict(HotserveError):
    """The request contradicts the current state (a version not ready, a stale revision)."""


class PromotionRefused(Conflict):
    """A guarded promotion whose evidence falls short of its requirements (409, evidence in the body)."""

    def __init__(self, model: str, version: int, shortfalls: list[str], evidence: dict[str, Any]) -> None:
        super().__init__(
            f"model {model!r} version {version} not promoted: "
            + "; ".join(shortfalls)
            + ' (`hotserve models promote ... --force`, or "force": true in the request, overrides it; audited)'
        )
        self.fields = {"shortfalls": shortfalls, "evidence": evidence}


class ControlConflict(Conflict):
    """A control-state write based on a revision that is no longer the stored one."""

    def __init__(self, expected_revision: int, stored_revision: int) -> None:
        super().__init__(
            f"control state changed meanwhile: expected revision {expected_revision}, "
            f"stored revision is {stored_revision}; read it again and retry"
        )
        self.expected_revision = expected_revision
        self.stored_revision = stored_revision


class VersionNotReady(Conflict):
    """An admin change needs a version that is not READY (failed to load, loading, unloaded)."""

    def __init__(self, name: str, version: int, state: str, reason: str | None = None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"model {name!r} version {version} is {state}{detail}")
        self.name = name
        self.version = version
        self.state = state
        self.reason = reason


# --- access ----------------------------------------------------------------


class Unauthorized(HotserveError):
    """No usable credentials (a missing or malformed `Authorization: Bearer` header)."""


class Forbidden(HotserveError):
    """Credentials that are not valid here (an unknown admin token)."""


# --- capacity --------------------------------------------------------------


class Overloaded(HotserveError):
    """The version's queue is full; the client should retry after `retry_after_s`."""

    def __init__(self, name: str, version: int, queue_size: int, retry_after_s: int = 1) -> None:
        super().__init__(f"model {name!r} version {version} is overloaded: queue of {queue_size} is full")
        self.retry_after_s = retry_after_s


class BodiesInFlightFull(HotserveError):
    """The request bodies being read or held across every connection would pass
    `HOTSERVE_MAX_BODY_BYTES_IN_FLIGHT` with this one; retry after `retry_after_s`."""

    def __init__(self, size_bytes: int, held_bytes: int, limit_bytes: int, retry_after_s: int = 1) -> None:
        super().__init__(
            f"the server holds {held_bytes} bytes of request bodies; {size_bytes} more would pass its limit of "
            f"{limit_bytes} bytes in flight: retry later"
        )
        self.retry_after_s = retry_after_s


class ModelNotReady(HotserveError):
    """Not loaded yet, failed, unloading, or the server is draining."""


class ShuttingDown(ModelNotReady):
    """The server is draining (SIGTERM) or closed: new requests are refused on purpose, an
    answer the operator expects rather than a failure (request logs keep it below ERROR)."""

    def __init__(self) -> None:
        super().__init__("server is shutting down")


class DeadlineExceeded(HotserveError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"deadline of {timeout_s * 1000:.0f} ms passed before inference ran")
        self.timeout_s = timeout_s


# --- dependencies ----------------------------------------------------------


class FeatureStoreUnavailable(HotserveError):
    """The feature store could not answer (Redis down, timeout)."""


class FeatureValueInvalid(HotserveError):
    """A stored feature value does not parse as the type its view declares."""

    def __init__(self, key: str, feature: str | None, problem: str) -> None:
        where = f"key {key!r}" if feature is None else f"key {key!r}, feature {feature!r}"
        super().__init__(f"stored feature value at {where}: {problem}")
        self.key = key
        self.feature = feature


class ControlStateUnavailable(HotserveError):
    """The control state (desired routing) could not be read or stored (a file that cannot be
    written, Redis down): nothing was changed, and routing stays as last applied."""


class LabelStoreUnavailable(HotserveError):
    """The served index or the labelled pairs could not be read or written (Redis down, the
    embedded file unwritable): no label of the batch was taken; sending it again is safe."""


# --- execution -------------------------------------------------------------


class InferenceFailed(HotserveError):
    """The runtime raised while running a batch."""


class ModelLoadFailed(HotserveError):
    """A version could not be loaded: missing/corrupt files, sha256 mismatch, warm-up failure."""
