"""The Dockerfile: hadolint-clean, and the properties the chart and operators rely on."""

from __future__ import annotations

import json
import re

from tests.deploy.conftest import REPO, run

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    starts = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_passes_hadolint(hadolint: str) -> None:
    result = run([hadolint, "--format", "json", str(DOCKERFILE)], check=False)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings


def test_runtime_stage_runs_hotserve_serve_as_non_root() -> None:
    stage = dict(_runtime_stage())
    assert stage["FROM"].endswith("AS runtime")
    user = stage["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(stage["CMD"]) == ["hotserve", "serve"]
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert "/opt/hotserve/healthcheck.py" in stage["HEALTHCHECK"]
    env = stage["ENV"]
    assert "HOTSERVE_MODEL_REPOSITORY=/models" in env and "HOTSERVE_HOST=0.0.0.0" in env
    assert "MALLOC_TRIM_THRESHOLD_=131072" in env  # unloaded versions' memory goes back


def test_both_variants_install_through_the_shared_script() -> None:
    runs = [args for keyword, args in _instructions() if keyword == "RUN"]
    installs = [args for args in runs if args.startswith("hotserve-install ")]
    assert installs == [
        'hotserve-install /opt/venv /src "${VARIANT}" deps',
        'hotserve-install /opt/venv /src "${VARIANT}" project',
    ]
    assert ("COPY", "docker/install.sh /usr/local/bin/hotserve-install") in _instructions()
    assert not any("pip install" in args for args in runs), "pip belongs in docker/install.sh"
