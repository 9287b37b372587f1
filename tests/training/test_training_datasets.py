"""Datasets: deterministic demos, CSV/Parquet tables, and errors that name the column at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from server.contract.manifest import sha256_file
from training.datasets import DatasetError, DatasetSpec, fraud, load_dataset

TABLE_FEATURES = ["amount", "merchant_category", "cust_txn_count_7d"]


@pytest.fixture
def table() -> pd.DataFrame:
    return fraud.generate(rows=60, seed=3)


def _spec(path: Path, **changes: object) -> DatasetSpec:
    base: dict[str, object] = {
        "source": str(path),
        "features": TABLE_FEATURES,
        "label": "is_fraud",
        "entity_key": "customer_id",
        "request_features": ["amount", "merchant_category"],
        "categorical": ["merchant_category"],
    }
    return DatasetSpec(**{**base, **changes})


def test_demo_fraud_is_deterministic_and_mostly_legitimate() -> None:
    first = load_dataset(DatasetSpec(rows=5000, seed=4))
    again = load_dataset(DatasetSpec(rows=5000, seed=4))
    other = load_dataset(DatasetSpec(rows=5000, seed=5))
    np.testing.assert_array_equal(first.inputs, again.inputs)
    assert first.sha256 == again.sha256 != other.sha256
    assert 0.03 <= float(first.labels.mean()) <= 0.05
    assert first.entity_key == "customer_id"
    assert first.request_features == tuple(fraud.REQUEST_FEATURES)
    assert first.store_features == tuple(fraud.STORE_FEATURES)
    assert first.categorical == ("merchant_category",)
    assert first.spec.rows == 5000  # the resolved spec records what was generated


def test_demo_sequences_have_the_benchmark_shape() -> None:
    data = load_dataset(DatasetSpec(source="demo:sequences", rows=16, seed=2))
    assert data.inputs.shape == (16, 32, 64) and data.inputs.dtype == np.float32
    assert set(np.unique(data.labels)) <= {0.0, 1.0}
    assert data.feature_spec("tokens", "seq") is None
    with pytest.raises(DatasetError, match="no tabular options"):
        load_dataset(DatasetSpec(source="demo:sequences", rows=16, label="y"))


def test_unknown_demo_is_refused() -> None:
    with pytest.raises(DatasetError, match="unknown demo dataset"):
        load_dataset(DatasetSpec(source="demo:iris"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_files_load_with_their_digest(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"transactions{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path, index=False)
    data = load_dataset(_spec(path))
    np.testing.assert_allclose(data.inputs, table[TABLE_FEATURES].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(data.labels, table["is_fraud"].to_numpy(dtype=np.float32))
    assert data.sha256 == sha256_file(path)
    assert data.path == str(path.resolve())
    spec = data.feature_spec("features", "fraud")
    assert spec is not None
    assert spec.columns == TABLE_FEATURES
    assert spec.request_features == ["amount", "merchant_category"]
    assert spec.store_features == ["cust_txn_count_7d"]
    assert spec.entity_key == "customer_id"
    assert spec.view is not None  # the store features' view, typed from the table's columns
    assert (spec.view.entity_key, spec.view.entity_key_type) == ("customer_id", "STRING")
    assert [(f.name, f.datatype, f.default) for f in spec.view.features] == [("cust_txn_count_7d", "INT64", None)]


def test_an_integer_entity_key_column_gives_an_int64_view(table: pd.DataFrame, tmp_path: Path) -> None:
    table["customer_id"] = table["customer_id"].str[1:].astype(int)
    data = load_dataset(_spec(_write(table, tmp_path / "t.csv")))
    spec = data.feature_spec("features", "cust")
    assert spec is not None and spec.view is not None
    assert spec.view.entity_key_type == "INT64" and spec.view.name == "cust"


def test_features_default_to_all_but_label_and_entity_key(table: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    data = load_dataset(DatasetSpec(source=str(path), label="is_fraud", entity_key="customer_id"))
    assert list(data.columns) == fraud.REQUEST_FEATURES + fraud.STORE_FEATURES
    assert data.store_features == ()


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_column_is_named(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = _write(table.drop(columns=["cust_txn_count_7d"]), tmp_path / f"t{suffix}")
    with pytest.raises(DatasetError, match="column 'cust_txn_count_7d': feature column missing") as info:
        load_dataset(_spec(path))
    assert info.value.column == "cust_txn_count_7d"


def test_missing_label_and_entity_key_are_named(table: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(table, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="column 'fraud': label column missing"):
        load_dataset(_spec(path, label="fraud"))
    with pytest.raises(DatasetError, match="column 'card_id': entity key column missing"):
        load_dataset(_spec(path, entity_key="card_id"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_numeric_value_is_named(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    bad = table.astype({"amount": object})
    bad.loc[7, "amount"] = "twelve"
    path = _write(bad.astype({"amount": str}), tmp_path / f"t{suffix}")
    with pytest.raises(DatasetError, match=r"column 'amount': non-numeric value 'twelve' at row 7"):
        load_dataset(_spec(path))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_nan_is_named(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    bad = table.copy()
    bad.loc[[4, 9], "cust_txn_count_7d"] = np.nan
    path = _write(bad, tmp_path / f"t{suffix}")
    with pytest.raises(DatasetError, match=r"column 'cust_txn_count_7d': NaN.* at row 4 \(2 such rows\)"):
        load_dataset(_spec(path))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_table_is_refused(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = _write(table.iloc[0:0], tmp_path / f"t{suffix}")
    with pytest.raises(DatasetError, match="table is empty: 0 rows"):
        load_dataset(_spec(path))


def test_file_without_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("")
    with pytest.raises(DatasetError, match="table is empty"):
        load_dataset(_spec(path))


def test_binary_labels_must_be_zero_or_one(table: pd.DataFrame, tmp_path: Path) -> None:
    bad = table.copy()
    bad.loc[2, "is_fraud"] = 3
    path = _write(bad, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match=r"column 'is_fraud': labels must be 0 or 1; got 3.0 at row 2"):
        load_dataset(_spec(path, task="binary"))
    # Without --task, three whole-number values make it a multiclass table, and it says so.
    inferred = load_dataset(_spec(path))
    assert (inferred.task, inferred.classes) == ("multiclass", [0, 1, 3])
    assert inferred.task_note == "task multiclass inferred from label column 'is_fraud': 3 distinct whole numbers"


def test_store_features_need_an_entity_key(table: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(table, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match=r"store features \['cust_txn_count_7d'\] need an entity key"):
        load_dataset(_spec(path, entity_key=None))


def test_request_features_must_be_features(table: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(table, tmp_path / "t.csv")
    with pytest.raises(DatasetError, match="column 'hour_of_day': request feature column is not one of"):
        load_dataset(_spec(path, request_features=["amount", "hour_of_day"]))


def test_missing_file_and_unknown_suffix_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(DatasetSpec(source=str(tmp_path / "absent.csv")))
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"x")
    with pytest.raises(DatasetError, match="unsupported file type '.xlsx'"):
        load_dataset(DatasetSpec(source=str(odd)))


def test_a_text_id_column_is_refused_with_the_entity_key_advice(tmp_path: Path) -> None:
    customers = pd.DataFrame(
        {"customer_id": ["c0", "c1", "c2", "c3"], "spend": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}
    )
    path = _write(customers, tmp_path / "customers.csv")

    with pytest.raises(DatasetError, match=r"column 'customer_id': non-numeric value 'c0'") as info:
        load_dataset(DatasetSpec(source=str(path)))
    assert "give --entity-key customer_id" in str(info.value)

    dataset = load_dataset(DatasetSpec(source=str(path), entity_key="customer_id"))
    assert dataset.columns == ("spend",)
