"""`FeatureJoin`: v1 records + stored features -> complete records, in the model's column order.

On the request path between `protocol/v1.py` (records checked) and `assemble_features` (the
input tensor in `features.columns` order). Per record: request features as sent; each stored
feature from the request where the view lets it override and the record carries it, else
from the store by the record's entity key, else the feature's default, else an error. A
record that carries every stored feature needs no lookup at all, so it is served even while
the store is down. One lookup per request, for its distinct entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.contract.manifest import FeatureView
from server.errors import EntityNotFound, FeatureStoreUnavailable, FeatureValueInvalid, HotserveError, InvalidInput
from server.features.lookup import FeatureLookup, Missing
from server.features.store import EntityRow
from server.features.values import parse_entity

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A view's per-request facts, worked out once."""

    view: FeatureView
    features: tuple[tuple[str, float | None], ...]
    """(name, default) of every stored feature."""


class FeatureJoin:
    """Fills v1 records with stored features; the app-wide object on `Edge.features`."""

    def __init__(self, lookup: FeatureLookup, feast: FeatureLookup | None = None) -> None:
        self.lookup = lookup
        """Views in hotserve's own layout (Redis or the embedded store)."""
        self.feast = feast
        """Views with a `feast` source: Feast's Redis online store (None: no Redis configured)."""
        self._plans: dict[int, _Plan] = {}

    def lookup_for(self, view: FeatureView) -> FeatureLookup:
        """The lookup path of the store that holds `view`. Raises FeatureStoreUnavailable."""
        if view.feast is None:
            return self.lookup
        if self.feast is None:
            raise FeatureStoreUnavailable(
                f"feature view {view.label} reads Feast's Redis online store (project "
                f"{view.feast.project!r}): set HOTSERVE_FEAST_REDIS_URL or HOTSERVE_REDIS_URL"
            )
        return self.feast

    async def close(self) -> None:
        await self.lookup.close()
        if self.feast is not None:
            await self.feast.close()

    def _plan(self, view: FeatureView) -> _Plan:
        plan = self._plans.get(id(view))
        if plan is None or plan.view is not view:
            plan = _Plan(view, tuple((f.name, f.default) for f in view.features))
            self._plans[id(view)] = plan
        return plan

    async def join(self, records: list[Record], view: FeatureView) -> tuple[list[Record], tuple[str, ...]]:
        """Records with every stored feature filled in, and each record's entity key ("" when
        it needed none). Raises InvalidInput, EntityNotFound, FeatureStoreUnavailable,
        FeatureValueInvalid."""
        plan = self._plan(view)
        names = [name for name, _ in plan.features]
        key_field = view.entity_key
        entities: list[str] = []
        needing: list[int] = []
        for index, record in enumerate(records):
            if all(name in record for name in names):
                entities.append("")
                continue
            raw = record.get(key_field)
            if raw is None:
                raise InvalidInput(
                    f"instances[{index}].{key_field}",
                    detail=f"missing: each record needs this entity key, by which feature view {view.label} "
                    f"looks up its stored features ({_few(names)})",
                )
            try:
                entities.append(parse_entity(view, raw))
            except ValueError as exc:
                raise InvalidInput(f"instances[{index}].{key_field}", detail=str(exc)) from None
            needing.append(index)
        if not needing:
            return records, tuple(entities)
        lookup = self.lookup_for(view)
        results = lookup.instruments(view).results
        try:
            rows = await lookup.rows(view, [entities[i] for i in needing])
            joined, used_defaults = self._fill(plan, records, entities, needing, rows)
        except HotserveError as exc:
            results[_outcome(exc)].inc()
            raise
        results["defaults" if used_defaults else "ok"].inc()
        return joined, tuple(entities)

    def _fill(
        self,
        plan: _Plan,
        records: list[Record],
        entities: list[str],
        needing: list[int],
        rows: dict[str, EntityRow | Missing],
    ) -> tuple[list[Record], bool]:
        view = plan.view
        joined = list(records)
        used_defaults = False
        for index in needing:
            entity = entities[index]
            row = rows[entity]
            missing: Missing | None = None
            values: Any = {}
            if isinstance(row, EntityRow):
                values = row.values
            else:
                missing = row
                if missing.unavailable is not None:
                    if view.on_unavailable == "error":
                        raise missing.unavailable
                elif view.on_missing_entity == "error":
                    raise EntityNotFound(view.label, entity, missing.reason)
            record = dict(records[index])
            for name, default in plan.features:
                if name in record:
                    continue
                value = values.get(name)
                if value is None:
                    if default is None:
                        raise _required(view, entity, name, missing)
                    value = default
                    used_defaults = True
                elif value is True or value is False:
                    value = int(value)
                record[name] = value
            joined[index] = record
        return joined, used_defaults


def _required(view: FeatureView, entity: str, name: str, missing: Missing | None) -> HotserveError:
    if missing is not None and missing.unavailable is not None:
        return FeatureStoreUnavailable(f"{missing.unavailable.message}; feature {name!r} has no default")
    reason = missing.reason if missing is not None else f"feature {name!r} not stored"
    if missing is not None:
        reason += f"; feature {name!r} has no default"
    return EntityNotFound(view.label, entity, reason)


def _outcome(exc: HotserveError) -> str:
    if isinstance(exc, EntityNotFound):
        return "not_found"
    if isinstance(exc, FeatureStoreUnavailable):
        return "unavailable"
    if isinstance(exc, FeatureValueInvalid):
        return "invalid"
    return "invalid"


def _few(names: list[str], shown: int = 4) -> str:
    """`a, b, c, d and 3 more`."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")
