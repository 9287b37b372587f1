"""Which inference endpoint a path names: v2 infer and v1 :predict, each optionally pinned."""

from __future__ import annotations

import pytest

from server.errors import InvalidInput, ModelNotFound
from server.protocol import paths
from server.protocol.paths import InferenceTarget, match_inference_path, parse_model_name, parse_version


@pytest.mark.parametrize(
    "path, target",
    [
        ("/v2/models/m/infer", InferenceTarget("v2", "m", None)),
        ("/v2/models/m/versions/3/infer", InferenceTarget("v2", "m", "3")),
        ("/v1/models/m:predict", InferenceTarget("v1", "m", None)),
        ("/v1/models/m/versions/3:predict", InferenceTarget("v1", "m", "3")),  # KServe v1 / TF Serving form
        ("/v1/models/m/versions/latest:predict", InferenceTarget("v1", "m", "latest")),  # refused 400 later
        ("/v1/models/m/versions/:predict", None),
        ("/v1/models/m/versions/3/extra:predict", None),
        ("/v2/models/m", None),
        ("/v1/models/m:explain", None),
    ],
)
def test_inference_paths_name_protocol_model_and_pinned_version(path: str, target: InferenceTarget | None) -> None:
    assert match_inference_path(path) == target


def test_versions_are_numbers_in_ascii_digits() -> None:
    assert parse_version("m", "12") == 12
    assert parse_version("m", "007") == 7
    assert parse_version("m", "9" * 18) == int("9" * 18)


@pytest.mark.parametrize(
    "bad",
    [
        "-1",
        "+1",
        " 1",
        "latest",
        "1.5",
        "",
        "\u00b9",  # superscript one: str.isdigit() takes it, int() refuses it (was a 500)
        "\u0663",  # Arabic-Indic three: int() reads it as 3
        "\uff11",  # fullwidth one
        "9" * 19,  # past an int64
        "1" * 5000,  # past int()'s digit limit
    ],
)
def test_a_malformed_version_is_invalid_input_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput, match="^version: expected a version number") as raised:
        parse_version("m", bad)
    assert len(str(raised.value)) < 200  # a long parameter is not echoed whole


def test_version_zero_is_well_formed_but_not_found() -> None:
    with pytest.raises(ModelNotFound, match="model 'm' version 0 not found"):
        parse_version("m", "0")


@pytest.mark.parametrize("name", ["m", "tab", "a.b-c_1", "9lives", "m" * 255])
def test_model_names_of_the_repository_pattern_pass(name: str) -> None:
    assert parse_model_name(name) == name


@pytest.mark.parametrize(
    "bad",
    ["", "-m", ".hidden", "a b", "m\n", "caf\u00e9", "a:b", "x" * 500 + "!", "m" * 256],  # past a file name
)
def test_a_name_no_model_can_have_is_not_found(bad: str) -> None:
    with pytest.raises(ModelNotFound) as raised:
        parse_model_name(bad)
    assert len(str(raised.value)) < 200


def test_answers_stay_the_same_when_seen_again_and_past_the_memo_bound() -> None:
    """Matched paths, well-formed names and parsed versions are remembered; refusals never are."""
    for _ in range(2):
        assert match_inference_path("/v2/models/m/versions/3/infer") == InferenceTarget("v2", "m", "3")
        assert match_inference_path("/v2/models/m") is None
        assert parse_model_name("m") == "m"
        assert parse_version("m", "007") == 7
        with pytest.raises(ModelNotFound):
            parse_version("m", "0")
        with pytest.raises(InvalidInput):
            parse_version("m", "x")
        with pytest.raises(ModelNotFound):
            parse_model_name("bad name")
    for i in range(paths._MAX_TARGETS + 10):  # more than the bound: the memo starts over, answers hold
        assert match_inference_path(f"/v1/models/m{i}:predict") == InferenceTarget("v1", f"m{i}", None)
        assert parse_model_name(f"m{i}") == f"m{i}"
        assert parse_version("m", str(i + 1)) == i + 1
    assert len(paths._TARGETS) <= paths._MAX_TARGETS and len(paths._NAMES) <= paths._MAX_TARGETS
    assert len(paths._VERSIONS) <= paths._MAX_TARGETS
    assert match_inference_path("/v2/models/m/infer") == InferenceTarget("v2", "m", None)
