"""The chart's security: credentials only in Secrets (never in a ConfigMap or NOTES), a password on
the bundled Redis, network policies, and locked-down containers."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, KUBE_VERSION, Render, by_kind, one, run

REDIS_PASSWORD = "hunter2-redis-password"
ADMIN_TOKEN = "admin-token-never-shown-0123"
EXTERNAL = [f"redis.url=rediss://hotserve:{REDIS_PASSWORD}@redis.data:6380/0", f"adminToken.value={ADMIN_TOKEN}"]


def _server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    )


def _redis(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    )


def _notes(helm: str, tmp_path: Path, set_values: list[str]) -> str:
    """NOTES.txt as `helm install` would print it (rendered through a copy of the chart, since
    `helm template` leaves NOTES out and `helm install --dry-run` needs a cluster)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_test.tpl").write_text('{{- define "test.notes" }}' + notes + "{{- end }}")
    (chart / "templates" / "zz_notes_test.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    cmd = [helm, "template", "rel", str(chart), "--namespace", "serving", "--kube-version", KUBE_VERSION]
    for assignment in set_values:
        cmd += ["--set", assignment]
    out = run([*cmd, "--show-only", "templates/zz_notes_test.yaml"]).stdout
    text: str = yaml.safe_load(out)["data"]["notes"]
    return text


@pytest.mark.parametrize(
    "set_values",
    [EXTERNAL, ["redis.deploy.enabled=true", f"adminToken.value={ADMIN_TOKEN}"]],
    ids=["external", "bundled"],
)
def test_no_credential_sits_in_a_config_map_or_in_notes(
    render: Render, helm: str, tmp_path: Path, set_values: list[str]
) -> None:
    docs = render(set_values=set_values)
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    config_maps = yaml.safe_dump(by_kind(docs, "ConfigMap"))
    notes = _notes(helm, tmp_path, set_values)
    for secret in secrets.values():
        for encoded in secret["data"].values():
            value = base64.b64decode(encoded).decode()
            assert value not in config_maps and value not in notes
    for credential in (REDIS_PASSWORD, ADMIN_TOKEN):
        assert credential not in config_maps and credential not in notes
    assert "redis.data" not in notes  # not even the URL


def test_an_external_redis_url_comes_from_a_secret_created_or_named(render: Render) -> None:
    docs = render(set_values=EXTERNAL)
    config = one(docs, "ConfigMap")["data"]
    assert "HOTSERVE_REDIS_URL" not in config
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in _server(docs)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["HOTSERVE_REDIS_URL"] == {"name": "rel-hotserve-redis-url", "key": "url"}
    named = render(
        set_values=[
            "redis.existingSecret=redis-conn",
            "redis.passwordSecret.name=redis-pass",
            "redis.tls.caSecret.name=redis-ca",
            "controlSigning.existingSecret=fleet-key",
        ]
    )
    assert not by_kind(named, "Secret")  # every credential comes from a Secret named by the operator
    pod = _server(named)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "redis-conn", "key": "url"}
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert volumes == {"redis-password": "redis-pass", "redis-ca": "redis-ca", "control-signing": "fleet-key"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config = one(named, "ConfigMap")["data"]
    for setting in ("HOTSERVE_REDIS_PASSWORD_FILE", "HOTSERVE_REDIS_TLS_CA_FILE", "HOTSERVE_CONTROL_SIGNING_KEY_FILE"):
        folder = str(Path(config[setting]).parent)
        assert mounts[folder]["readOnly"] is True


@pytest.mark.parametrize("set_values", [EXTERNAL, ["redis.deploy.enabled=true"]], ids=["external", "bundled"])
def test_with_redis_the_control_document_is_always_signed(render: Render, set_values: list[str]) -> None:
    from server.settings import Settings

    docs = render(set_values=set_values)
    config = one(docs, "ConfigMap")["data"]
    assert config["HOTSERVE_CONTROL_SIGNING_KEY_FILE"] == "/var/run/secrets/hotserve/control/signing-key"
    secret = next(s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-control-signing"))
    assert len(base64.b64decode(secret["data"]["signing-key"])) == 64
    settings = Settings(**{k.removeprefix("HOTSERVE_").lower(): v for k, v in config.items()})
    assert settings.control_signing_key_file is not None and settings.metrics_port == 9090
    assert "HOTSERVE_CONTROL_SIGNING_KEY_FILE" not in one(render(), "ConfigMap")["data"]  # no Redis, no fleet


def test_the_bundled_redis_requires_a_password_it_never_shows_on_a_command_line(render: Render) -> None:
    docs = render(set_values=["redis.deploy.enabled=true"])
    redis = _redis(docs)["spec"]["template"]["spec"]
    container = redis["containers"][0]
    command = " ".join(container["command"] + container["args"])
    assert "requirepass" in command and "$(cat /var/run/secrets/redis/password)" in command
    assert "--protected-mode" not in command and "--appendonly no" in command
    auth = next(s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-redis-auth"))
    volumes = {v["name"]: v for v in redis["volumes"]}
    assert volumes["password"]["secret"]["secretName"] == auth["metadata"]["name"]
    assert volumes["config"]["emptyDir"]["medium"] == "Memory"
    assert container["env"] == [
        {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": auth["metadata"]["name"], "key": "password"}}}
    ]
    server = _server(docs)["spec"]["template"]["spec"]
    assert {"name": "redis-password", "secret": auth_volume(auth)} in server["volumes"]
    assert one(docs, "ConfigMap")["data"]["HOTSERVE_REDIS_PASSWORD_FILE"] == "/var/run/secrets/hotserve/redis/password"

    persistent = render(set_values=["redis.deploy.enabled=true", "redis.deploy.persistence.enabled=true"])
    pvc = next(c for c in by_kind(persistent, "PersistentVolumeClaim") if c["metadata"]["name"].endswith("-redis-data"))
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    persistent_redis = _redis(persistent)["spec"]["template"]["spec"]
    assert "--appendonly yes" in " ".join(persistent_redis["containers"][0]["args"])
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in persistent_redis["volumes"] if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]


def auth_volume(auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "secretName": auth["metadata"]["name"],
        "defaultMode": 0o440,
        "items": [{"key": "password", "path": "password"}],
    }


def test_network_policies_open_redis_to_the_server_and_metrics_to_monitoring_only(render: Render) -> None:
    import kubernetes_validate

    docs = render(
        set_values=["redis.deploy.enabled=true", "networkPolicy.metricsNamespace=observability"],
        set_json=['networkPolicy.clients=[{"namespaceSelector": {"matchLabels": {"team": "payments"}}}]'],
    )
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"rel-hotserve", "rel-hotserve-redis"}
    for policy in policies.values():
        kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    server_labels = _server(docs)["spec"]["template"]["metadata"]["labels"]
    redis_labels = _redis(docs)["spec"]["template"]["metadata"]["labels"]

    redis_policy = policies["rel-hotserve-redis"]["spec"]
    assert redis_policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert redis_policy["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": _selector(docs)}}],
            "ports": [{"port": "redis", "protocol": "TCP"}],
        }
    ]
    assert _selector(docs).items() <= server_labels.items()

    server_policy = policies["rel-hotserve"]["spec"]
    assert server_policy["podSelector"]["matchLabels"] == _selector(docs)
    http, metrics = server_policy["ingress"]
    assert http == {  # the clients reach the inference ports, REST and gRPC
        "ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"team": "payments"}}}],
    }
    assert metrics == {
        "ports": [{"port": "metrics", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}],
    }
    container = _server(docs)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "rel-hotserve")
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in service["spec"]["ports"]
    assert not by_kind(render(set_values=["networkPolicy.enabled=false"]), "NetworkPolicy")


def _selector(docs: list[dict[str, Any]]) -> dict[str, str]:
    selector: dict[str, str] = _server(docs)["spec"]["selector"]["matchLabels"]
    return selector


def test_every_container_runs_non_root_read_only_without_privilege_escalation(render: Render) -> None:
    docs = render(
        set_values=[
            "redis.deploy.enabled=true",
            "modelRepository.source=image",
            "modelRepository.image.repository=registry.example/models",
            "modelRepository.image.tag=v1",
        ]
    )
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 2
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
