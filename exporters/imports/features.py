"""The v1 feature spec of an imported model: which record fields fill its input, from where.

`--feature-spec` completed from the model (its one 2-D input, `--features` as the columns),
or, with none given, every reference feature a request feature, as training does by default.
The server's v1 route assembles records into one input, so only a model with a single 2-D
input gets one; others are served through v2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from exporters.errors import ExportError
from server.contract.manifest import FeatureSpec, TensorSpec


def feature_spec(
    inputs: Sequence[TensorSpec], given: Mapping[str, Any] | None, reference_columns: list[str] | None, notes: list[str]
) -> FeatureSpec | None:
    """The manifest's `features`, or None (v2 only); ExportError when `given` cannot work."""
    single = inputs[0] if len(inputs) == 1 and len(inputs[0].shape) == 2 else None
    if given is None:
        if single is None or single.datatype == "BYTES" or reference_columns is None:
            return None
        notes.append(f"v1 records: fields {reference_columns} (all request features) fill input {single.name!r}")
        return FeatureSpec(input=single.name, columns=reference_columns, request_features=reference_columns)
    if single is None:
        raise ExportError(
            f"a feature spec assembles v1 records into one 2-D input; the model has "
            f"inputs {[(s.name, s.shape) for s in inputs]}: its clients use the v2 "
            f"protocol"
        )
    raw = dict(given)
    raw.setdefault("input", single.name)
    if "columns" not in raw:
        raw["columns"] = reference_columns or [*raw.get("request_features", []), *raw.get("store_features", [])]
    try:
        spec = FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors())
        raise ExportError(f"--feature-spec is invalid: {problems}") from exc
    if spec.input != single.name:
        raise ExportError(f"--feature-spec input {spec.input!r} is not the model's input {single.name!r}")
    width = single.shape[1]
    if width != -1 and width != len(spec.columns):
        raise ExportError(f"--feature-spec has {len(spec.columns)} columns, input {single.name!r} takes {width}")
    if reference_columns is not None and reference_columns != spec.columns:
        raise ExportError(
            f"--feature-spec columns {spec.columns} differ from the reference "
            f"features {reference_columns}: they must be the same, in order"
        )
    return spec
