"""v1 `:predict` records: `{"instances": [...]}` -> the model's input tensor, outputs -> predictions.

A model with a feature spec takes one record (an object) per instance; its fields are
assembled into `features.input` in `features.columns` order. With a feature view, records
carry the request features and the entity key, and the join (`features/join.py`) fills in
the stored features (a record may carry those the view lets it override); without one,
records carry every column. A missing field, an unknown field or a non-number is refused
naming instance and field. A model without a feature spec takes instances as raw rows of
its single input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from server.contract.manifest import FeatureSpec
from server.errors import InvalidInput
from server.protocol.schema import ModelSchema
from server.protocol.tensors import check_header, tensor_from_json

Record = dict[str, Any]


def parse_instances(body: bytes) -> list[Any]:
    """The non-empty `instances` list of a v1 body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", expected="a JSON object", got=f"invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body", expected='a JSON object {"instances": [...]}', got=f"a JSON {_json_kind(doc)}")
    if "instances" not in doc:
        keys = ", ".join(repr(k) for k in list(doc)[:5])
        found = f"this body's keys are {keys}" if keys else "this body is {}"
        hint = " (v2 `inputs` go to /v2/models/{name}/infer)" if "inputs" in doc else ""
        raise InvalidInput(
            "instances", detail=f'missing: a v1 body is {{"instances": [...]}}, one entry per record; {found}{hint}'
        )
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        got = "an empty list" if isinstance(instances, list) else f"a JSON {_json_kind(instances)}"
        raise InvalidInput("instances", expected="a non-empty list of records", got=got)
    return instances


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def first_record_field(body: bytes, field: str) -> str | None:
    """`instances[0][field]` as text, or None when the body has none (the full parse reports why)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        return None
    value = instances[0].get(field)
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def check_records(instances: list[Any], spec: FeatureSpec) -> list[Record]:
    """Refuse records that are not objects, miss a field they must carry, or carry unknown
    fields (or, with a feature view, stored features the view does not let them override)."""
    view = spec.view
    required = spec.request_features if view is not None else spec.columns
    allowed = (
        set(spec.columns)
        if view is None
        else (set(spec.request_features) | {f.name for f in view.features if f.overridable})
    )
    if spec.entity_key:
        allowed.add(spec.entity_key)
    store_features = set(spec.store_features)
    for index, record in enumerate(instances):
        if not isinstance(record, dict):
            raise InvalidInput(f"instances[{index}]", expected="an object of features", got=type(record).__name__)
        for name in required:
            if name not in record:
                detail = (
                    "missing (a store feature: this model has no feature view, so records must carry it)"
                    if name in store_features
                    else "missing"
                )
                raise InvalidInput(f"instances[{index}].{name}", detail=detail)
        if len(record) > len(required):
            for name in record:
                if name not in allowed:
                    raise InvalidInput(f"instances[{index}].{name}", detail=_unknown(name, spec, allowed))
    return instances


def _unknown(name: str, spec: FeatureSpec, allowed: set[str]) -> str:
    if spec.view is not None and name in spec.store_features:
        return (
            f"a stored feature of view {spec.view.label}, looked up by {spec.entity_key}; the view "
            "does not let requests override it"
        )
    return f"unknown field; the model takes {sorted(allowed)}"


def assemble_features(records: list[Record], spec: FeatureSpec, schema: ModelSchema) -> np.ndarray:
    """Build the `features.input` tensor, one row per record in `columns` order."""
    columns = spec.columns
    rows: list[list[float | int]] = []
    for index, record in enumerate(records):
        row = []
        for name in columns:
            value = record[name]
            if type(value) not in (int, float):
                raise InvalidInput(f"instances[{index}].{name}", expected="a number", got=type(value).__name__)
            row.append(value)
        rows.append(row)
    dtype = schema.inputs[spec.input].dtype
    with np.errstate(over="ignore"):  # overflow becomes inf, reported below
        tensor = np.asarray(rows, dtype=dtype)
    if tensor.dtype.kind == "f":
        finite = np.isfinite(tensor)
        if not finite.all():
            row_index, col_index = np.argwhere(~finite)[0]
            raise InvalidInput(
                f"instances[{row_index}].{columns[col_index]}",
                expected=f"a finite {schema.inputs[spec.input].datatype}",
                got=str(tensor[row_index, col_index]),
            )
    return tensor


def raw_tensor(instances: list[Any], schema: ModelSchema) -> tuple[str, np.ndarray]:
    """Instances as rows of the model's single input (models without a feature spec)."""
    if len(schema.inputs) != 1:
        raise InvalidInput(
            "instances", detail=f"the model has inputs {list(schema.inputs)} and no feature spec; use the v2 protocol"
        )
    (input_schema,) = schema.inputs.values()
    try:
        shape = list(np.asarray(instances).shape)
    except ValueError:
        raise InvalidInput("instances", expected="rows of equal shape", got="ragged nesting") from None
    check_header(input_schema, input_schema.datatype, shape, "instances")
    return input_schema.name, tensor_from_json(input_schema, shape, instances, "instances")


def encode_predictions(
    model_name: str, model_version: int, results: dict[str, np.ndarray], output_names: tuple[str, ...]
) -> bytes:
    """`{"predictions", "model_name", "model_version"}`: one value per instance, or one object of
    outputs per instance when the model has several outputs."""
    arrays = {name: _jsonable(results[name]) for name in output_names}
    if len(arrays) == 1:
        (predictions,) = arrays.values()
    else:
        # orjson serialises numpy arrays and float scalars, but not every integer scalar type
        # (onnxruntime's int64 outputs are `longlong`): 1-D integer outputs become Python ints.
        columns = {
            name: arr.tolist() if isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.dtype.kind in "iub" else arr
            for name, arr in arrays.items()
        }
        rows = len(next(iter(columns.values())))
        predictions = [{name: column[i] for name, column in columns.items()} for i in range(rows)]
    return orjson.dumps(
        {"predictions": predictions, "model_name": model_name, "model_version": str(model_version)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return np.vectorize(lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b), otypes=[object])(
            array
        ).tolist()
    return np.ascontiguousarray(array)
