"""The model.json contract a registry version carries back into the repository (`hotserve import
models:/...`).

`hotserve export --register` stores the published model.json with the registered ONNX model
(`exporters/shared/mlflow_registry.py`), so a version that goes through the registry and back keeps
what the graph alone cannot say: the feature spec and view behind v1 records, the prediction
contract, the drift reference, the lineage and the batching policy. What the import's own options
set explicitly wins (`--feature-spec`/`--feast-*`, `--reference`, `--task` and its threshold or
tolerance, the batching flags), and a note says what it replaced. A field that does not fit the
imported graph (an input or output it names is not there) is dropped with a warning naming it, as
is every contract field when the registry version carries no model.json at all (registered by
another tool, or by a hotserve that did not store it).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from exporters.imports.options import ImportOptions
from server.contract.manifest import ModelManifest

CARRIED = ("features", "drift", "prediction", "batching", "lineage")
"""The fields carried over, in the order they are checked against the imported graph."""
CONTRACT = ("features", "prediction", "drift")
"""What a version cannot be served as its registered self without (a warning names each missing)."""


def given_by_options(options: ImportOptions) -> set[str]:
    """The carried fields the import's options set explicitly (those win over the registry's)."""
    given = set()
    if options.feature_spec is not None or options.feast.enabled:
        given.add("features")
    if options.reference is not None:
        given.add("drift")
    if options.task is not None or options.decision_threshold is not None or options.agreement_tolerance is not None:
        given.add("prediction")
    if options.max_batch_size is not None or options.max_queue_delay_ms is not None or options.instances is not None:
        given.add("batching")
    if not options.batch_axis:
        given.add("batching")
    return given


def carry_registered(
    manifest: ModelManifest, options: ImportOptions, notes: list[str]
) -> tuple[ModelManifest, list[str]]:
    """`manifest` (what the import built from the graph and its options) with the registry version's
    contract carried over; the warnings name each field lost on the way (see the module doc)."""
    ref = options.registry
    if ref is None:
        return manifest, []
    where = f"models:/{ref.name}/{ref.version}"
    registered = options.registered_manifest
    if registered is None:
        missing = [field for field in CONTRACT if getattr(manifest, field) is None]
        if not missing:
            return manifest, []
        return manifest, [
            f"{where} carries no hotserve model.json (registered by another tool, or by a hotserve that did not "
            f"store it): {', '.join(missing)} not known, the version is imported without them; give "
            "--feature-spec, --task and --reference to describe it"
        ]
    given = given_by_options(options)
    doc: dict[str, Any] = manifest.model_dump()
    warnings = []
    for field in CARRIED:
        value = getattr(registered, field)
        if value is None:
            continue  # nothing recorded: what the import found stands
        if field in given:
            if value != getattr(manifest, field):
                notes.append(f"{field}: the import's options replace what {where} recorded")
            continue
        attempt = {**doc, field: value.model_dump()}
        try:
            ModelManifest.model_validate(attempt)
        except ValidationError as error:
            reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
            warnings.append(f"{field} of {where} does not fit the imported graph ({reasons}); not carried over")
            continue
        doc = attempt
    out = ModelManifest.model_validate(doc)
    lost = [field for field in CONTRACT if getattr(registered, field) is not None and getattr(out, field) is None]
    if lost:
        warnings.append(f"lost on the way from {where}: {', '.join(lost)}")
    return out, warnings
