"""Messages an operator acts on: each names what is wrong and the way out (issue 31's list).

Also covered where the behaviour lives: a body without `instances` (test_protocol_v1.py), a record
without its entity key (test_api_features.py), a request pinned to a version not loaded
(integration/test_serve_http.py), `features materialize --server` against a server whose admin
API is off (integration/test_feature_store.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from load_tests.server_process import REPO_ROOT
from server.errors import PromotionRefused
from server.release.policy import ReleasePolicy
from training.datasets import DatasetError, DatasetSpec, load_dataset


def test_a_bad_policy_field_names_the_file_the_field_and_the_valid_fields(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "canary_weight: [5, 50]\ngates:\n  max_p99_ratoi: 1.5\n  min_requests: -3\nregistry:\n  alais: x\n"
    )
    with pytest.raises(ValueError) as info:
        ReleasePolicy.from_yaml(policy)
    message = str(info.value)
    assert message.startswith(f"release policy {policy}: 5 invalid field(s)")
    assert "  canary_weight: not a policy field; valid fields here: shadow_share, shadow_bake_s, canary_weights," in (
        message
    )
    assert "  gates.max_p99_ratoi: not a policy field; valid fields here: false_alarm, min_requests," in message
    assert "  gates.min_requests: Input should be greater than 0 (got -3)" in message
    assert "  registry.alais: not a policy field; valid fields here: alias, registered_model" in message
    assert "https://" not in message  # no link to pydantic's error pages


def test_hotserve_release_prints_the_policy_mistakes_and_exits_3(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("shadow_bake: 60\n")
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "release", "fraud", "2", "--policy", str(policy)],
        cwd=REPO_ROOT,
        env={"HOTSERVE_ADMIN_TOKEN": "unused-the-policy-fails-first", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert f"hotserve release: release policy {policy}: 1 invalid field(s)" in done.stderr
    assert "shadow_bake: not a policy field; valid fields here: shadow_share, shadow_bake_s," in done.stderr


def test_a_refused_promotion_names_the_flag_that_overrides_it() -> None:
    refused = PromotionRefused("fraud", 4, ["observed 10 requests, 1000 required"], {})
    assert str(refused).endswith(
        '(`hotserve models promote ... --force`, or "force": true in the request, overrides it; audited)'
    )


def test_a_categorical_feature_with_text_values_is_told_to_hold_codes_not_to_be_an_entity_key(tmp_path: Path) -> None:
    table = tmp_path / "deliveries.csv"
    pd.DataFrame(
        {"distance_km": [1.0, 2.5, 4.0, 3.0], "zone": ["north", "south", "north", "east"], "minutes": [9, 20, 31, 25]}
    ).to_csv(table, index=False)
    spec = DatasetSpec(source=str(table), label="minutes", categorical=["zone"], task="regression")
    with pytest.raises(DatasetError) as info:
        load_dataset(spec)
    message = str(info.value)
    assert "non-numeric value 'north'" in message
    assert "a --categorical feature holds whole-number category codes" in message
    assert "df['zone'] = df['zone'].astype('category').cat.codes" in message
    assert "--entity-key" not in message
