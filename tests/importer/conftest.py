"""Real models from other libraries, converted by the real converters, shared per session.

scikit-learn models through skl2onnx, a LightGBM model through onnxmltools, the example
models shipped inside the onnxruntime wheel, and a graph with onnxruntime-extensions' custom
operators. Everything is tiny (a few hundred rows, a few trees) so the suite stays fast;
session fixtures are read-only, tests import into their own `tmp_path` repositories.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest

ROWS = 300
FEATURES = ["f0", "f1", "f2", "f3"]


@dataclass(frozen=True)
class Converted:
    """A fitted model of another library and its ONNX file."""

    model: Any
    path: Path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="session")
def table() -> pd.DataFrame:
    """Four numeric features and a 0/1 label that depends on two of them, with noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=ROWS) > 0).astype(np.int64)
    return pd.DataFrame({**{name: x[:, i] for i, name in enumerate(FEATURES)}, "label": y})


@pytest.fixture(scope="session")
def reference_csv(table: pd.DataFrame, models_dir: Path) -> Path:
    path = models_dir / "reference.csv"
    table.to_csv(path, index=False)
    return path


def _xy(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return table[FEATURES].to_numpy(np.float32), table["label"].to_numpy()


def _skl2onnx(model: Any, sample: np.ndarray, path: Path, zipmap: bool = False) -> Path:
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(to_onnx(model, sample, options=None if zipmap else {"zipmap": False}), str(path))
    return path


@pytest.fixture(scope="session")
def sklearn_pipeline(table: pd.DataFrame, models_dir: Path) -> Converted:
    """`Pipeline(StandardScaler, LogisticRegression)` -> skl2onnx, probabilities as a tensor."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _xy(table)
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())]).fit(x, y)
    return Converted(model, _skl2onnx(model, x[:1], models_dir / "pipeline.onnx"))


@pytest.fixture(scope="session")
def sklearn_pipeline_zipmap(sklearn_pipeline: Converted, table: pd.DataFrame, models_dir: Path) -> Path:
    """The same pipeline with skl2onnx's default ZipMap output (a sequence of maps)."""
    x, _ = _xy(table)
    return _skl2onnx(sklearn_pipeline.model, x[:1], models_dir / "pipeline_zipmap.onnx", zipmap=True)


@pytest.fixture(scope="session")
def gradient_boosting(table: pd.DataFrame, models_dir: Path) -> Converted:
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _xy(table)
    model = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(x, y)
    return Converted(model, _skl2onnx(model, x[:1], models_dir / "gbc.onnx"))


@pytest.fixture(scope="session")
def mlp_classifier(table: pd.DataFrame, models_dir: Path) -> Converted:
    """A small scikit-learn MLP: MatMul/Add graph that dynamic int8 quantisation acts on."""
    from sklearn.neural_network import MLPClassifier

    x, y = _xy(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at this tiny size
        model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(x, y)
    return Converted(model, _skl2onnx(model, x[:1], models_dir / "mlp.onnx"))


@pytest.fixture(scope="session")
def lightgbm_model(table: pd.DataFrame, models_dir: Path) -> Converted:
    """LightGBM through onnxmltools (which declares its `label` output as shape [1])."""
    import lightgbm
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = _xy(table)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(x, y)
    converted = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 4]))], zipmap=False)
    path = models_dir / "lightgbm.onnx"
    onnx.save(converted, str(path))
    return Converted(model, path)


@pytest.fixture(scope="session")
def mixed_table() -> pd.DataFrame:
    """Two numeric columns and a text column: a model with three inputs, one of them BYTES."""
    rng = np.random.default_rng(1)
    amount = rng.gamma(2.0, 50.0, size=ROWS).astype(np.float32)
    count = rng.integers(0, 20, size=ROWS).astype(np.float32)
    country = rng.choice(["de", "fr", "us"], size=ROWS)
    label = ((amount > 120) | (country == "us")).astype(np.int64)
    return pd.DataFrame({"amount": amount, "count": count, "country": country, "label": label})


@pytest.fixture(scope="session")
def mixed_pipeline(mixed_table: pd.DataFrame, models_dir: Path) -> Converted:
    """`ColumnTransformer(scale numbers, one-hot text) -> LogisticRegression`: inputs `amount`,
    `count` (FP32 [-1, 1]) and `country` (BYTES [-1, 1]), outputs label and probabilities."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prepare = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["amount", "count"]),
            ("text", OneHotEncoder(handle_unknown="ignore"), ["country"]),
        ]
    )
    model = Pipeline([("prepare", prepare), ("classify", LogisticRegression())])
    model.fit(mixed_table[["amount", "count", "country"]], mixed_table["label"])
    types = [
        ("amount", FloatTensorType([None, 1])),
        ("count", FloatTensorType([None, 1])),
        ("country", StringTensorType([None, 1])),
    ]
    path = models_dir / "mixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(to_onnx(model, initial_types=types, options={"zipmap": False}), str(path))
    return Converted(model, path)


@pytest.fixture(scope="session")
def mixed_csv(mixed_table: pd.DataFrame, models_dir: Path) -> Path:
    path = models_dir / "mixed.csv"
    mixed_table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def ort_datasets() -> Path:
    """The example models inside the onnxruntime wheel: logreg_iris (ZipMap, fixed batch of 3),
    sigmoid (fixed [3, 4, 5]) and mul_1 (an IR 3 file onnx's checker rejects)."""
    return Path(onnxruntime.__file__).parent / "datasets"


@pytest.fixture(scope="session")
def custom_op_model(models_dir: Path) -> Path:
    """`upper = StringUpper(text)` from onnxruntime-extensions' `ai.onnx.contrib` domain."""
    from onnx import TensorProto, helper

    node = helper.make_node("StringUpper", ["text"], ["upper"], domain="ai.onnx.contrib")
    graph = helper.make_graph(
        [node],
        "upper",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("upper", TensorProto.STRING, ["N"])],
    )
    model = helper.make_model(
        graph,
        producer_name="hand-made",
        ir_version=9,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)],
    )
    path = models_dir / "upper.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def extensions_library() -> Path:
    from onnxruntime_extensions import get_library_path

    return Path(get_library_path())
