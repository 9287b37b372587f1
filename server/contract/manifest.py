"""`model.json`: the one contract between exporters (writers) and the server (reader).

Defined once here and imported by `exporters/` and `training/`; the server's base
install needs nothing beyond pydantic to read it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILENAME = "model.json"
ONNX_FILENAME = "model.onnx"
SCHEMA_VERSION = 1
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Model names: a folder name in the repository and a URL path segment."""

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""v2 datatype -> the numpy dtype its tensors have in the server and in onnxruntime
(BYTES: object arrays of `bytes`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One named input or output of the ONNX graph, in v2 protocol terms."""

    name: str
    datatype: Datatype
    shape: list[int]
    """Dimensions; -1 marks a dynamic axis. The first axis is the batch axis, unless the
    version's `batching.batch_axis` is false (then the shape is the whole tensor's)."""


class BatchingPolicy(_Strict):
    """How the server's dynamic batcher treats this version (Triton's `dynamic_batching`)."""

    enabled: bool = True
    """False: every request runs alone (still bounded by `max_queue_size`)."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most rows one runtime call sees."""
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    """Longest a first waiting row is held back hoping for company."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Row counts worth dispatching at as soon as they are reached."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Most requests waiting; beyond it a request is refused at once (429)."""
    instances: int = Field(default=1, ge=1)
    """Batches run at once (worker threads of this version)."""
    allow_split: bool = False
    """A request with more rows than `max_batch_size` is split instead of refused."""
    default_timeout_ms: float | None = Field(default=None, gt=0)
    """Deadline for requests that carry none; None: no deadline."""
    batch_axis: bool = True
    """False: the graph has no batch axis (Triton's `max_batch_size: 0`). Shapes are whole
    tensors, a request is exactly one run of the graph, and `enabled` must be false."""

    @model_validator(mode="after")
    def _preferred_fit(self) -> BatchingPolicy:
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} outside 1..max_batch_size")
        if not self.batch_axis and (self.enabled or self.max_batch_size != 1 or self.allow_split):
            raise ValueError(
                "a graph without a batch axis runs one request at a time: "
                "batch_axis false needs enabled false, max_batch_size 1, allow_split false"
            )
        return self


class StoredFeature(_Strict):
    """One feature of a view: its stored type, what stands in when it is missing, who may set it."""

    name: str
    datatype: Literal[
        "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"
    ] = "FP32"
    """Type a stored value must parse as; a value that does not is an error naming key and feature."""
    default: float | None = None
    """Stands in when the value is missing (entity absent, older than `max_age_s`, store
    unavailable with `on_unavailable: defaults`); None: the feature is required."""
    overridable: bool = False
    """A request may carry this feature; its value then replaces the stored one."""


FEAST_SERIALIZATION_VERSION = 3
"""The Feast entity key serialization hotserve reads (Feast >= 0.38; its default since 0.50)."""

FEAST_REF_PATTERN = r"^[^:]+:[^:]+$"


class FeastSource(_Strict):
    """Where a view's features live in a Feast Redis online store (`feast materialize` writes them).

    The view's `entity_key` is the Feast join key and `entity_key_type` its Feast value type
    (STRING or INT64); one hash per entity under the serialized key plus `project`.
    """

    project: str = Field(min_length=1)
    """The Feast project (`project:` in `feature_store.yaml`): the tail of every Redis key."""
    features: dict[str, str] = Field(min_length=1)
    """hotserve feature name -> `<feast feature view>:<feature>`; several Feast views of the
    same entity share one hash, so they are read in one `HMGET`."""
    entity_key_serialization_version: int = FEAST_SERIALIZATION_VERSION

    @model_validator(mode="after")
    def _supported(self) -> FeastSource:
        version = self.entity_key_serialization_version
        if version != FEAST_SERIALIZATION_VERSION:
            raise ValueError(
                f"Feast entity_key_serialization_version {version} is not supported: hotserve reads "
                f"version {FEAST_SERIALIZATION_VERSION} (Feast 0.38 and later, the default since 0.50); "
                "set entity_key_serialization_version: 3 in feature_store.yaml and materialize again"
            )
        bad = [ref for ref in self.features.values() if not re.match(FEAST_REF_PATTERN, ref)]
        if bad:
            raise ValueError(f"Feast feature references {bad} are not <feature_view>:<feature>")
        return self

    @property
    def feature_views(self) -> list[str]:
        """The Feast feature views read, in first-use order."""
        return list(dict.fromkeys(ref.split(":", 1)[0] for ref in self.features.values()))


class FeatureView(_Strict):
    """The features an online store holds per entity, as one model reads them.

    Stored under `hotserve:fv:<name>:v<version>:<entity>`, so a view whose definition changes
    gets a new version and never reads keys written for the old one; or, with `feast`, read
    from the hashes Feast materialized (hotserve never writes those).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(default=1, ge=1)
    entity_key: str
    entity_key_type: Literal["STRING", "INT64"] = "STRING"
    """JSON type of the entity key in requests: a string, or an integer."""
    features: list[StoredFeature] = Field(min_length=1)
    max_age_s: float | None = Field(default=None, gt=0)
    """Values computed longer ago than this count as missing; None: no limit."""
    on_missing_entity: Literal["error", "defaults"] = "error"
    """An entity the store has no (fresh) values for: 404 naming it, or the features' defaults."""
    on_unavailable: Literal["error", "defaults"] = "error"
    """The store cannot answer (down, timeout, circuit open): 503, or the features' defaults."""
    feast: FeastSource | None = None
    """Set: the features are Feast's (see `FeastSource`); None: hotserve's own layout."""

    @property
    def key_prefix(self) -> str:
        """Prefix of every stored key of this view version (the entity follows it)."""
        return f"hotserve:fv:{self.name}:v{self.version}:"

    @property
    def label(self) -> str:
        """`<name>:v<version>`, as metrics and messages name the view."""
        return f"{self.name}:v{self.version}"

    @model_validator(mode="after")
    def _unique_features(self) -> FeatureView:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names) or self.entity_key in names:
            raise ValueError(f"feature names must be unique and differ from the entity key: {names}")
        if self.feast is not None and sorted(self.feast.features) != sorted(names):
            raise ValueError(f"feast.features must map exactly the view's features {names}")
        return self


class FeatureSpec(_Strict):
    """How v1 records become the model's input tensor.

    `columns` is the order of the input tensor's last axis. Each column comes from
    the request (`request_features`) or from the feature store, looked up by
    `entity_key` (`store_features`). Without a `view` (manifests written before feature
    views) nothing is looked up: records carry every column.
    """

    input: str
    """Name of the ONNX input the columns are assembled into."""
    columns: list[str]
    request_features: list[str]
    store_features: list[str] = Field(default_factory=list)
    entity_key: str | None = None
    defaults: dict[str, float] = Field(default_factory=dict)
    """Superseded by `view.features[].default`; read from old manifests only."""
    view: FeatureView | None = None
    """Where `store_features` are looked up (None: records carry them)."""

    @model_validator(mode="after")
    def _columns_covered(self) -> FeatureSpec:
        sources = set(self.request_features) | set(self.store_features)
        missing = [c for c in self.columns if c not in sources]
        if missing:
            raise ValueError(f"columns {missing} come from neither request nor store")
        if self.store_features and not self.entity_key:
            raise ValueError("store_features need an entity_key")
        if self.view is not None:
            if self.view.entity_key != self.entity_key:
                raise ValueError(f"view entity_key {self.view.entity_key!r} is not {self.entity_key!r}")
            if sorted(f.name for f in self.view.features) != sorted(self.store_features):
                raise ValueError("view features must be exactly the store_features")
        return self


class ReferenceHistogram(_Strict):
    """Training-time distribution of one quantity (a feature column or the prediction): bin
    edges and the share of the reference rows in each bin. Drift monitoring bins live values
    on these same edges."""

    name: str
    bin_edges: list[float]
    """len(proportions) + 1 ascending edges; values outside fall in the end bins."""
    proportions: list[float]
    categories: list[float] | list[str] | None = None
    """Set for a categorical quantity: the category value each bin counts, in bin order. A
    categorical feature's numeric categories ascend (`bin_edges` are the midpoints between them)
    and live values equal to none of them count in one more bin, "other", whose reference share is
    `1 - sum(proportions)`. A classifier's `label` lists its class names; text ones are monitored
    by class index, the argmax of the output holding one score per class."""

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceHistogram:
        if len(self.bin_edges) != len(self.proportions) + 1:
            raise ValueError("bin_edges must have one more entry than proportions")
        if self.categories is not None:
            if len(self.categories) != len(self.proportions):
                raise ValueError("categories must have one entry per proportion")
            numeric = [c for c in self.categories if not isinstance(c, str)]
            if len(numeric) == len(self.categories) and any(b <= a for a, b in zip(numeric, numeric[1:], strict=False)):
                raise ValueError("categories must be strictly ascending")
            if sum(self.proportions) > 1.0 + 1e-6:
                raise ValueError("category proportions must not sum to more than 1")
        return self


class DriftReference(_Strict):
    """Training-data statistics that live traffic is compared against (PSI)."""

    features: list[ReferenceHistogram] = Field(default_factory=list)
    """One per tabular feature column, named as in `features.columns`."""
    prediction: ReferenceHistogram | None = None
    """Distribution of `prediction_output`'s values on the reference rows."""
    prediction_output: str | None = None
    """Which model output `prediction` describes (None: the first output)."""
    sample_size: int = 0


Task = Literal["binary", "multiclass", "regression"]
"""What a model predicts (the trainer's `training.tasks.Task`, the same three names)."""

DEFAULT_DECISION_THRESHOLD = 0.5
"""A binary model's decision threshold when training, export and import say nothing else."""


class PredictionContract(_Strict):
    """What the model's answer means: its task, which output holds the prediction, and when two
    versions give the same answer (a shadow's agreement with production). Written by `hotserve
    export` (the checkpoint's task) and `hotserve import --task` (or the task its labelled
    reference table shows); absent in older manifests, whose shadows are compared as before
    (every output within 1e-4, unless the shadow policy says otherwise)."""

    task: Task
    output: str | None = None
    """The output holding the prediction; None: the one `drift.prediction_output` names, else
    the first output (see `ModelManifest.prediction_output`). Binary: the positive class's
    score, one per row (or the second of two columns); multiclass: one score per class, or the
    label; regression: the value, in target units."""
    decision_threshold: float | None = None
    """Binary: a row is positive when its score is at least this (0.5 when not given); other
    tasks: None."""
    agreement_tolerance: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Regression: two answers this close, in target units, are the same answer (exports record
    a tenth of the training target's standard deviation unless told); other tasks: None."""

    @model_validator(mode="before")
    @classmethod
    def _binary_threshold_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task") == "binary" and data.get("decision_threshold") is None:
            return {**data, "decision_threshold": DEFAULT_DECISION_THRESHOLD}
        return data

    @model_validator(mode="after")
    def _fits_task(self) -> PredictionContract:
        if self.decision_threshold is not None:
            if self.task != "binary":
                raise ValueError(f"decision_threshold is for binary models, not {self.task}")
            if not np.isfinite(self.decision_threshold):
                raise ValueError(f"decision_threshold must be a finite number, got {self.decision_threshold}")
        if self.task == "regression" and self.agreement_tolerance is None:
            raise ValueError("a regression model needs agreement_tolerance (in target units)")
        if self.task != "regression" and self.agreement_tolerance is not None:
            raise ValueError(f"agreement_tolerance is for regression models, not {self.task}")
        return self


class MlflowRunRef(_Strict):
    """The MLflow run a version was trained in (`hotserve train` with MLflow tracking)."""

    tracking_uri: str
    """Where the run lives, without credentials."""
    experiment_id: str
    run_id: str


class RegistryModelRef(_Strict):
    """The MLflow Model Registry version a version was imported from (`hotserve import models:/...`)."""

    registry: Literal["mlflow"] = "mlflow"
    tracking_uri: str
    """The registry's server, without credentials."""
    name: str
    version: str
    alias: str | None = None
    """The alias the import resolved (`models:/NAME@ALIAS`); None when imported by version."""
    run_id: str | None = None
    """The run that logged the registered model."""
    source: str | None = None
    """The registered version's artifact location."""


class ImportedFrom(_Strict):
    """The ONNX file a version was imported from (`hotserve import`), as it was before any edit."""

    file: str
    """Its file name (not the path: that says nothing on another machine)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int
    producer_name: str | None = None
    """What wrote the file (`producer_name` in the ONNX model: skl2onnx, OnnxMLTools, pytorch...)."""
    producer_version: str | None = None
    ir_version: int
    opsets: dict[str, int]
    """Operator set per domain ("" is the default ONNX domain)."""
    imported_at: str
    edits: list[str] = Field(default_factory=list)
    """What the importer changed in the graph (ZipMap removed, a mis-declared dimension fixed)."""
    meta: dict[str, str] = Field(default_factory=dict)
    """Free-form `--meta key=value` pairs (owner, ticket, training run...)."""
    registry: RegistryModelRef | None = None
    """Set when the file came from a model registry (`hotserve import models:/NAME@ALIAS`)."""


class RetrainingLineage(_Strict):
    """What a `hotserve retrain` version was trained on: served rows of a capture window joined
    with their labels, and how it compared with the version it was to replace."""

    capture_sink: str
    """Where the captured rows and labels were read (a directory or `s3://bucket/prefix`)."""
    window_start: str
    window_end: str
    """The capture window asked for (ISO 8601, UTC): rows answered in [start, end)."""
    captured_rows: int
    """Distinct (request id, row) answered in the window with the model's features."""
    labelled_rows: int
    """Those with a label: the training table (train and holdout together)."""
    labels_read: int
    """Distinct labelled (request id, row) in the sink, matched or not."""
    train_rows: int
    holdout_rows: int
    holdout_start: str
    """Answer time of the first holdout row: the newest rows were held out."""
    served_versions: list[int]
    """The versions whose answered rows were used."""
    champion_version: int
    """The production version when retraining started: its hyperparameters were used, warm
    start began from its checkpoint, and it was compared with this version on the holdout."""
    warm_start: bool
    metric: str
    champion_holdout: dict[str, float]
    challenger_holdout: dict[str, float]
    """The task's metrics of both on the holdout rows (`training/metrics.py` definitions)."""


class Lineage(_Strict):
    """Where a version came from: copied from the checkpoint's `metadata.json`, or, for an
    imported file (see `ModelManifest.imported_from`), its reference table and the metrics
    measured on it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    architecture: str
    checkpoint: str | None = None
    """Path of the checkpoint folder this was exported from."""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    dataset_path: str | None = None
    dataset_sha256: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    parent_version: int | None = None
    mlflow_run: MlflowRunRef | None = None
    """Set when the training run was tracked in MLflow."""
    retraining: RetrainingLineage | None = None
    """Set for versions `hotserve retrain` made from captured rows and labels."""


class ExportInfo(_Strict):
    """How `model.onnx` was produced and how closely it matches its reference: the PyTorch
    module (export) or the original ONNX file (import)."""

    opset: int
    exported_at: str
    parity_max_abs_diff: float
    parity_rows: int
    parity_reference: Literal["pytorch", "source onnx"] = "pytorch"
    optimized: bool = False
    quantization: Literal["int8"] | None = None
    fp16: bool = False
    metric_deltas: dict[str, float] = Field(default_factory=dict)
    """Metric change against the float model (quantised exports)."""
    library_versions: dict[str, str] = Field(default_factory=dict)


class OpLibrary(_Strict):
    """A custom-operator library the graph needs, stored in the version folder beside it."""

    file: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
    """File name inside the version folder (no path: the folder is the unit that moves)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    domains: list[str] = Field(default_factory=list)
    """The operator domains of the graph it provides."""


class ModelManifest(_Strict):
    """Everything the server needs to know about one model version besides the graph."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batching: BatchingPolicy = Field(default_factory=BatchingPolicy)
    features: FeatureSpec | None = None
    drift: DriftReference | None = None
    lineage: Lineage
    export: ExportInfo | None = None
    imported_from: ImportedFrom | None = None
    """Set for versions `hotserve import` brought in: the file they came from."""
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    op_libraries: list[OpLibrary] = Field(default_factory=list)
    """Registered with onnxruntime before the graph is opened, each checked by sha256."""
    prediction: PredictionContract | None = None
    """What the answer means (task, prediction output, decision threshold or agreement
    tolerance); None in manifests written before it was recorded."""

    @model_validator(mode="after")
    def _feature_input_exists(self) -> ModelManifest:
        if self.features and self.features.input not in {i.name for i in self.inputs}:
            raise ValueError(f"features.input {self.features.input!r} is not a model input")
        return self

    @model_validator(mode="after")
    def _prediction_output_exists(self) -> ModelManifest:
        contract = self.prediction
        if contract is None:
            return self
        described = self.drift.prediction_output if self.drift is not None else None
        if contract.output is not None and described is not None and contract.output != described:
            raise ValueError(
                f"prediction.output {contract.output!r} and drift.prediction_output {described!r} differ: "
                "one output holds the prediction (leave prediction.output out to use drift's)"
            )
        name = self.prediction_output
        spec = next((o for o in self.outputs if o.name == name), None)
        if spec is None:
            raise ValueError(f"the prediction output {name!r} is not a model output")
        if contract.task != "multiclass" and spec.datatype == "BYTES":
            raise ValueError(f"a {contract.task} prediction is a number; output {name!r} is BYTES")
        if contract.task == "binary" and len(spec.shape) > 1 and spec.shape[-1] > 2:
            raise ValueError(
                f"a binary prediction is one score per row (or two columns); output {name!r} has shape {spec.shape}"
            )
        return self

    @property
    def prediction_output(self) -> str:
        """The output holding the prediction: `prediction.output`, else the one the drift reference
        describes, else the first output."""
        named = self.prediction.output if self.prediction is not None else None
        if named is None and self.drift is not None:
            named = self.drift.prediction_output
        return named or (self.outputs[0].name if self.outputs else "")

    @classmethod
    def read(cls, version_dir: Path) -> ModelManifest:
        """Parse `<version_dir>/model.json`; raises pydantic.ValidationError or OSError."""
        return cls.model_validate_json((version_dir / MANIFEST_FILENAME).read_bytes())

    def write(self, version_dir: Path) -> None:
        """Write `<version_dir>/model.json` (callers make the folder appear atomically)."""
        (version_dir / MANIFEST_FILENAME).write_text(self.model_dump_json(indent=2) + "\n")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
