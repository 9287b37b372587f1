"""Every answer the load scenarios get is checked here, not just counted: status, shape, the version
that answered. Pure functions over status, headers and body, so they are tested without a server.

Each check returns the version named in the answer (or None for an expected error) and raises
`WrongAnswer` with what was wrong; the scenario marks the request failed with that message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from server.protocol.datatypes import numpy_dtype


class WrongAnswer(Exception):
    """A response that is not what the request should have got."""


def _doc(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise WrongAnswer(f"body is not JSON: {body[:120]!r}") from None


def _status(status: int, body: bytes, expected: int = 200) -> None:
    if status != expected:
        raise WrongAnswer(f"status {status}, expected {expected}: {body[:200].decode(errors='replace')}")


def _version(doc: Mapping[str, Any], model: str) -> str:
    if doc.get("model_name") != model:
        raise WrongAnswer(f"model_name {doc.get('model_name')!r}, expected {model!r}")
    version = doc.get("model_version")
    if not isinstance(version, str) or not version.isdigit():
        raise WrongAnswer(f"model_version {version!r} names no version")
    return version


def _outputs(doc: Mapping[str, Any], names: list[str], rows: int) -> list[dict[str, Any]]:
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or sorted(o.get("name") for o in outputs) != sorted(names):
        raise WrongAnswer(f"outputs {outputs!r:.200}, expected {names}")
    for output in outputs:
        shape = output.get("shape")
        if not isinstance(shape, list) or not shape or shape[0] != rows:
            raise WrongAnswer(f"output {output['name']} shape {shape}, expected {rows} rows")
    return outputs


def v2_json(status: int, body: bytes, model: str, outputs: list[str], rows: int, request_id: str) -> str:
    """A v2 JSON answer: 200, the request's id echoed, every output with `rows` rows and as many
    values as its shape says; returns the version that answered."""
    _status(status, body)
    doc = _doc(body)
    version = _version(doc, model)
    if doc.get("id") != request_id:
        raise WrongAnswer(f"id {doc.get('id')!r}, expected {request_id!r}")
    for output in _outputs(doc, outputs, rows):
        data = output.get("data")
        if not isinstance(data, list) or len(data) != math.prod(output["shape"]):
            raise WrongAnswer(
                f"output {output['name']}: {len(data) if isinstance(data, list) else data!r} "
                f"values for shape {output['shape']}"
            )
    return version


def v2_binary(status: int, headers: Mapping[str, str], body: bytes, model: str, outputs: list[str], rows: int) -> str:
    """A v2 binary answer: 200, a JSON header of the length `Inference-Header-Content-Length` says,
    every output as raw bytes whose size matches its shape and datatype; returns the version."""
    _status(status, body)
    length_text = headers.get("inference-header-content-length") or headers.get("Inference-Header-Content-Length")
    if length_text is None or not length_text.isdigit() or int(length_text) > len(body):
        raise WrongAnswer(f"Inference-Header-Content-Length {length_text!r} for a {len(body)}-byte body")
    header_length = int(length_text)
    doc = _doc(body[:header_length])
    version = _version(doc, model)
    declared = 0
    for output in _outputs(doc, outputs, rows):
        size = (output.get("parameters") or {}).get("binary_data_size")
        if not isinstance(size, int):
            raise WrongAnswer(f"output {output['name']} is not binary: {output!r:.200}")
        expected = math.prod(output["shape"]) * numpy_dtype(output["datatype"]).itemsize
        if output["datatype"] != "BYTES" and size != expected:
            raise WrongAnswer(f"output {output['name']}: {size} bytes for {output['datatype']} {output['shape']}")
        declared += size
    if declared != len(body) - header_length:
        raise WrongAnswer(f"outputs declare {declared} bytes, the body carries {len(body) - header_length}")
    return version


def v1_predictions(status: int, body: bytes, model: str, rows: int) -> str:
    """A v1 answer: 200 with one prediction per record; returns the version."""
    _status(status, body)
    doc = _doc(body)
    version = _version(doc, model)
    predictions = doc.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise WrongAnswer(
            f"{len(predictions) if isinstance(predictions, list) else predictions!r} predictions for {rows} records"
        )
    return version


def v1_unknown_entity(status: int, body: bytes, entity: str) -> None:
    """A record whose entity the store lacks: 404 with an error naming the entity."""
    _status(status, body, expected=404)
    error = _doc(body).get("error")
    if not isinstance(error, str) or entity not in error:
        raise WrongAnswer(f"404 error {error!r} does not name entity {entity!r}")
