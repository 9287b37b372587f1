"""`load_dataset`: a `DatasetSpec` -> its rows, from a demo generator or a CSV/Parquet table."""

from __future__ import annotations

from pathlib import Path

from demos import DEMO_PREFIX, DEMOS
from server.contract.manifest import sha256_file
from training.datasets.dataset import Dataset, DatasetError, DatasetSpec, demo_digest


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Load (or generate) the dataset `spec` names; raises DatasetError with the column at fault."""
    # Imported here: each loader pulls in its own dependencies (pandas/pyarrow for tables).
    from training.datasets import delivery, fraud, segments, sequences, tables

    if spec.source == "demo:sequences":
        return sequences.load(spec)
    if spec.is_demo:
        tabular_demos = {"demo:fraud": fraud, "demo:segments": segments, "demo:delivery": delivery}
        demo = tabular_demos.get(spec.source)
        if demo is None:
            raise DatasetError(spec.source, f"unknown demo dataset; known: {', '.join(DEMOS)}")
        rows = spec.rows or demo.DEFAULT_ROWS
        frame = demo.generate(rows=rows, seed=spec.seed)
        digest = demo_digest(
            spec.source.removeprefix(DEMO_PREFIX), {"version": demo.GENERATOR_VERSION, "rows": rows, "seed": spec.seed}
        )
        return tables.tabular_dataset(frame, demo.fill_defaults(spec.model_copy(update={"rows": rows})), digest)
    path = Path(spec.source)
    frame = tables.read_table(path)
    return tables.tabular_dataset(frame, spec, sha256_file(path))
