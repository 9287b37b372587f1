"""The Helm chart: lint, render, Kubernetes 1.30 schema validation, values schema, drain math."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    GPU_VALUES,
    KUBE_VERSION,
    Render,
    by_kind,
    find_tool,
    missing_tool,
    one,
    run,
)

PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing_tool("kubernetes-validate")
    return kubernetes_validate


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    )
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["hotserve"]
    return containers[0]


def _pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    )
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", [[], [GPU_VALUES]], ids=["default", "gpu"])
def test_chart_lints_strictly(helm: str, values: list[Path]) -> None:
    cmd = [helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for values_file in values:
        cmd += ["-f", str(values_file)]
    run(cmd)


@pytest.mark.parametrize("values", [[], [GPU_VALUES]], ids=["default", "gpu"])
def test_rendered_manifests_match_kubernetes_1_30_strict_schemas(render: Render, values: list[Path]) -> None:
    kv = _kubernetes_validate()
    docs = render(*values)
    validated = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in PROMETHEUS_OPERATOR_KINDS:
            with pytest.raises(kv.SchemaNotFoundError):
                kv.validate(doc, KUBE_VERSION, strict=True)
            continue
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}", pytrace=False)
        validated.append(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(validated)


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("replicaCount=two", "replicaCount"),
        ("server.port=70000", "port"),
        ("server.logLevel=verbose", "logLevel"),
        ("server.logFormat=xml", "logFormat"),
        ("server.drift.minRows=0", "minRows"),
        ("modelRepository.source=s3", "source"),
        ("gpu.count=0", "count"),
        ("autoscaling.enabled=maybe", "enabled"),
        ("server.replicas=3", "replicas"),
    ],
)
def test_values_schema_rejects_bad_values(helm: str, assignment: str, complaint: str) -> None:
    for cmd in (
        [helm, "lint", "--strict", str(CHART), "--set", assignment],
        [helm, "template", "rel", str(CHART), "--set", assignment],
    ):
        result = run(cmd, check=False)
        assert result.returncode != 0, f"{' '.join(cmd)} accepted {assignment}"
        assert complaint in result.stdout + result.stderr


def test_termination_grace_covers_pre_stop_and_drain(render: Render) -> None:
    docs = render(set_json=["lifecycle.preStopSleepSeconds=7", "server.shutdownGraceS=20.5"])
    pod = _pod_spec(docs)
    container = _container(docs)
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert pod["terminationGracePeriodSeconds"] > 7 + 20.5
    config = one(docs, "ConfigMap")["data"]
    assert config["HOTSERVE_SHUTDOWN_GRACE_S"] == "20.5"


def test_too_short_termination_grace_is_refused(helm: str) -> None:
    result = run(
        [
            helm,
            "template",
            "rel",
            str(CHART),
            "--set",
            "lifecycle.terminationGracePeriodSeconds=30",
            "--set",
            "lifecycle.preStopSleepSeconds=10",
            "--set",
            "server.shutdownGraceS=30",
        ],
        check=False,
    )
    assert result.returncode != 0
    assert "must exceed" in result.stderr


def test_default_pod_is_non_root_read_only_and_probes_v2_health(render: Render) -> None:
    docs = render()
    pod = _pod_spec(docs)
    container = _container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    assert mounts["models"]["mountPath"] == "/models"
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    # The HPA owns the replica count; the PDB and Service select only the server pods.
    assert "replicas" not in by_kind(docs, "Deployment")[0]["spec"]
    selector = one(docs, "Service")["spec"]["selector"]
    assert selector["app.kubernetes.io/component"] == "server"
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    config = one(docs, "ConfigMap")["data"]
    assert config["HOTSERVE_HOST"] == "0.0.0.0"
    assert config["HOTSERVE_MODEL_REPOSITORY"] == "/models"
    assert config["HOTSERVE_REDIS_URL"] == ""
    assert "env" not in container, "no admin token configured, yet HOTSERVE_ADMIN_TOKEN is set"


def test_gpu_values_request_a_gpu_and_ship_monitoring(render: Render) -> None:
    docs = render(GPU_VALUES)
    container = _container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _pod_spec(docs)["tolerations"][0]["key"] == "nvidia.com/gpu"
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert set(monitor["spec"]["selector"]["matchLabels"].items()) <= set(service["metadata"]["labels"].items())
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]


def test_prometheus_rule_ships_every_rule_file_unchanged(render: Render) -> None:
    rule = one(render(GPU_VALUES), "PrometheusRule")
    expected = []
    for path in sorted((CHART / "rules").glob("*.yaml")):
        expected += yaml.safe_load(path.read_text())["groups"]
    assert rule["spec"]["groups"] == expected
    # Prometheus templates stay for Prometheus to expand, not Helm.
    assert "{{ $labels.model }}" in json.dumps(rule["spec"])


def test_dashboards_config_map_carries_each_dashboard(render: Render) -> None:
    config_map = next(
        d for d in by_kind(render(GPU_VALUES), "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")
    )
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p for p in (CHART / "dashboards").glob("*.json")}
    assert files and set(config_map["data"]) == set(files)
    for name, path in files.items():
        assert json.loads(config_map["data"][name]) == json.loads(path.read_text())


def test_admin_token_comes_from_a_secret(render: Render) -> None:
    created = render(set_values=["adminToken.value=s3cret"])
    secret = one(created, "Secret")
    env = _container(created)["env"]
    assert env == [
        {
            "name": "HOTSERVE_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "admin-token"}},
        }
    ]
    existing = render(set_values=["adminToken.existingSecret=ops-token"])
    assert not by_kind(existing, "Secret")
    assert _container(existing)["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "ops-token"
    assert "HOTSERVE_CONTROL_STATE_PATH" not in one(existing, "ConfigMap")["data"]
    stored = render(
        set_values=["adminToken.existingSecret=ops-token", "server.controlStatePath=/var/lib/hotserve/control.json"]
    )
    assert one(stored, "ConfigMap")["data"]["HOTSERVE_CONTROL_STATE_PATH"] == "/var/lib/hotserve/control.json"


def test_bundled_redis_is_wired_and_exclusive_with_an_external_url(render: Render, helm: str) -> None:
    docs = render(set_values=["redis.deploy.enabled=true"])
    redis_service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-redis"))
    url = one(docs, "ConfigMap")["data"]["HOTSERVE_REDIS_URL"]
    assert url == f"redis://{redis_service['metadata']['name']}:6379/0"
    server_selector = next(s for s in by_kind(docs, "Service") if s is not redis_service)["spec"]["selector"]
    assert redis_service["spec"]["selector"] != server_selector
    result = run(
        [
            helm,
            "template",
            "rel",
            str(CHART),
            "--set",
            "redis.deploy.enabled=true",
            "--set",
            "redis.url=redis://elsewhere:6379/0",
        ],
        check=False,
    )
    assert result.returncode != 0 and "not both" in result.stderr


def test_model_repository_from_an_image_uses_an_init_container(render: Render) -> None:
    docs = render(
        set_values=[
            "modelRepository.source=image",
            "modelRepository.image.repository=registry.example/models",
            "modelRepository.image.tag=2026-11-22",
        ]
    )
    pod = _pod_spec(docs)
    init = pod["initContainers"][0]
    assert init["image"] == "registry.example/models:2026-11-22"
    assert init["command"] == ["cp", "-R", "/models/.", "/mnt/models/"]
    assert {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_chart_yaml_files_pass_yamllint() -> None:
    yamllint = find_tool("yamllint")
    config = (
        "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
    )
    files = [CHART / "Chart.yaml", CHART / "values.yaml", GPU_VALUES, *sorted((CHART / "rules").glob("*.yaml"))]
    run([yamllint, "--strict", "-d", config, *map(str, files)])


def test_log_and_drift_values_become_settings_the_server_accepts(render: Render) -> None:
    from server.settings import Settings

    docs = render(
        set_json=[
            'server.drift={"enabled": true, "windowRows": 5000, "windowS": 600, "minRows": 500, "intervalS": 2.5}',
            "server.logSuccessSampleRate=0.01",
        ]
    )
    config = one(docs, "ConfigMap")["data"]
    fields = {
        name.removeprefix("HOTSERVE_").lower(): value
        for name, value in config.items()
        if name.startswith(("HOTSERVE_LOG_", "HOTSERVE_DRIFT_"))
    }
    assert set(fields) == {name for name in Settings.model_fields if name.startswith(("log_", "drift_"))}
    settings = Settings(**fields)
    assert (settings.log_format, settings.log_success_sample_rate) == ("json", 0.01)
    assert (
        settings.drift_window_rows,
        settings.drift_window_s,
        settings.drift_min_rows,
        settings.drift_interval_s,
    ) == (5000, 600.0, 500, 2.5)


def test_grpc_port_is_served_exposed_and_probed(render: Render) -> None:
    from server.settings import Settings

    docs = render()
    container = _container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090, "grpc": 8081}
    assert container["startupProbe"]["grpc"] == {"port": 8081, "service": ""}  # grpc.health.v1: live
    service_ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc" and service_ports["grpc"]["appProtocol"] == "grpc"
    config = one(docs, "ConfigMap")["data"]
    assert Settings(grpc_port=config["HOTSERVE_GRPC_PORT"]).grpc_port == 8081

    off = render(set_json=["server.grpcPort=null"])
    assert "HOTSERVE_GRPC_PORT" not in one(off, "ConfigMap")["data"]
    assert [p["name"] for p in _container(off)["ports"]] == ["http", "metrics"]
    assert [p["name"] for p in one(off, "Service")["spec"]["ports"]] == ["http", "metrics"]
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    server_policy = next(
        p for p in policies.values() if p["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    )
    assert {"port": "grpc", "protocol": "TCP"} in server_policy["spec"]["ingress"][0]["ports"]
    assert _container(off)["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
