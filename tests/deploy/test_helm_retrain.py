"""The chart's retraining: the CronJob (off by default), the Alertmanager receiver with its RBAC,
Kubernetes 1.30 strict schemas, and the settings the Job cannot run without."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import CHART, KUBE_VERSION, Render, by_kind, one, run

RETRAIN = [
    "retrain.enabled=true",
    "retrain.model=fraud",
    "adminToken.value=admin-token-0123",
    "retrain.checkpoints.existingClaim=fraud-checkpoints",
    "retrain.captureSink=s3://captures/hotserve",
    "retrain.s3.endpoint=http://minio.storage:9000",
    "retrain.s3.credentialsSecret=capture-s3",
]
WEBHOOK = [*RETRAIN, "retrain.webhook.enabled=true", "retrain.webhook.token.value=alert-token-0123"]


def _kubernetes_validate() -> Any:
    return pytest.importorskip("kubernetes_validate")


def _retrain_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "").startswith("retrain")
    ]


def test_retraining_is_off_by_default(render: Render) -> None:
    assert _retrain_docs(render()) == []


def test_the_cronjob_runs_hotserve_retrain_with_the_token_from_its_secret(render: Render) -> None:
    docs = render(
        set_values=RETRAIN, set_json=['retrain.policy={"shadow_bake_s": 600}', 'retrain.extraArgs=["--hours", "72"]']
    )
    cronjob = one(docs, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and cronjob["spec"]["schedule"] == "0 3 * * *"
    job = cronjob["spec"]["jobTemplate"]
    assert job["metadata"]["labels"]["hotserve.io/retrain"] == cronjob["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/hotserve/hotserve:0.1.0-train"
    assert container["command"] == ["hotserve"]
    assert container["args"] == [
        "retrain", "fraud", "--repository", "/models", "--checkpoints", "/checkpoints",
        "--rescan-dns", "rel-hotserve-retrain-replicas.serving.svc:8080",
        "--policy", "/etc/hotserve/retrain/policy.yaml", "--hours", "72",
    ]  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["HOTSERVE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "rel-hotserve-admin",
        "key": "admin-token",
    }
    assert env["HOTSERVE_URL"]["value"] == "http://rel-hotserve:8080"
    assert env["HOTSERVE_CAPTURE_SINK"]["value"] == "s3://captures/hotserve"
    assert env["HOTSERVE_CAPTURE_S3_ENDPOINT"]["value"] == "http://minio.storage:9000"
    assert container["envFrom"] == [{"secretRef": {"name": "capture-s3"}}]
    assert "admin-token-0123" not in str(cronjob)
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["models"] == "rel-hotserve-models" and claims["checkpoints"] == "fraud-checkpoints"
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    headless = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "rel-hotserve-retrain-replicas")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"]["app.kubernetes.io/component"] == "server"
    policy = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-retrain-policy"))
    assert "shadow_bake_s: 600" in policy["data"]["policy.yaml"]


def test_the_webhook_may_read_its_cronjob_and_create_jobs_in_its_namespace_only(render: Render) -> None:
    docs = render(set_values=WEBHOOK)
    role = one(docs, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["cronjobs"],
            "resourceNames": ["rel-hotserve-retrain"],
            "verbs": ["get"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "create"]},
    ]
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    binding = one(docs, "RoleBinding")
    account = next(d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"].endswith("-retrain-webhook"))
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "serving"}
    ]
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-retrain-webhook"))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    args = pod["containers"][0]["args"]
    assert args[:5] == ["retrain-webhook", "--cronjob", "rel-hotserve-retrain", "--model", "fraud"]
    assert args[args.index("--alert") + 1] == "HotserveQualityBelowTraining"
    env = pod["containers"][0]["env"]
    assert env == [
        {
            "name": "HOTSERVE_RETRAIN_WEBHOOK_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "rel-hotserve-retrain-webhook-token", "key": "token"}},
        }
    ]


@pytest.mark.parametrize("values", [RETRAIN, WEBHOOK], ids=["cronjob", "webhook"])
def test_retrain_manifests_match_kubernetes_1_30_strict_schemas(render: Render, values: list[str]) -> None:
    kv = _kubernetes_validate()
    docs = _retrain_docs(render(set_values=[*values, "networkPolicy.enabled=true"]))
    assert {"CronJob"} <= {d["kind"] for d in docs}
    for doc in docs:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}", pytrace=False)


def test_the_server_network_policy_admits_the_retrain_job(render: Render) -> None:
    docs = render(
        set_values=[*RETRAIN, "networkPolicy.enabled=true"],
        set_json=['networkPolicy.clients=[{"podSelector": {"matchLabels": {"role": "frontend"}}}]'],
    )
    server = next(d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "rel-hotserve")
    sources = server["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"role": "frontend"}}} in sources
    assert any(
        s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "retrain" for s in sources
    )


@pytest.mark.parametrize(
    ("drop", "extra", "complaint"),
    [
        ("retrain.model=fraud", [], "retrain.model"),
        ("adminToken.value=admin-token-0123", [], "admin token"),
        ("retrain.checkpoints.existingClaim=fraud-checkpoints", [], "checkpoints.existingClaim"),
        ("retrain.captureSink=s3://captures/hotserve", [], "captureSink"),
        (None, ["modelRepository.source=image", "modelRepository.image.repository=models"], "source=pvc"),
        (None, ["retrain.webhook.enabled=true"], "webhook.token"),
        (None, ["retrain.model=no/slash"], "model"),
    ],
)
def test_retraining_without_what_it_needs_is_refused(
    helm: str, drop: str | None, extra: list[str], complaint: str
) -> None:
    cmd = [helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION]
    for assignment in [v for v in RETRAIN if v != drop] + extra:
        cmd += ["--set", assignment]
    result = run(cmd, check=False)
    assert result.returncode != 0, f"accepted without {drop or extra}"
    assert complaint in result.stdout + result.stderr
