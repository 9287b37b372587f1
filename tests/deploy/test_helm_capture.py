"""The chart's capture and labels: settings the server accepts, S3 credentials from a Secret through
secretKeyRef (never values, never the ConfigMap), Kubernetes 1.30 strict schemas, and the sinks a
pod cannot write to refused at render time."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import CHART, KUBE_VERSION, Render, by_kind, one, run

S3_WITH_SECRET = [
    "capture.sink=s3://captures/hotserve",
    "capture.s3.endpoint=http://minio.storage:9000",
    "capture.s3.region=eu-west-1",
    "capture.s3.credentials.existingSecret=capture-s3",
    "redis.url=rediss://hotserve@redis.data:6380/0",
]
WRITABLE_VOLUME = [
    'extraVolumes=[{"name": "capture", "persistentVolumeClaim": {"claimName": "capture"}}]',
    'extraVolumeMounts=[{"name": "capture", "mountPath": "/var/capture/"}]',
]
PREFIXES = ("capture_", "label_", "quality_")


def _server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _settings(config: dict[str, str]) -> tuple[dict[str, str], Any]:
    """The ConfigMap's capture, label and quality variables as the server reads them."""
    from server.settings import Settings

    fields = {
        name.removeprefix("HOTSERVE_").lower(): value
        for name, value in config.items()
        if name.removeprefix("HOTSERVE_").lower().startswith(PREFIXES)
    }
    return fields, Settings(**fields)


def test_capture_to_s3_takes_its_credentials_from_the_secret(render: Render, helm: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render(
        set_values=[*S3_WITH_SECRET, "capture.s3.credentials.sessionTokenKey=session-token"],
        set_json=["capture.sample=0.05", "capture.rotateAgeS=30", "labels.horizonS=86400"],
    )
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    env = {e["name"]: e for e in _server(docs)["env"]}
    for name, key in [
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_SESSION_TOKEN", "session-token"),
    ]:
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "capture-s3", "key": key}}}
    config = one(docs, "ConfigMap")["data"]
    assert not {name for name in config if name.startswith("AWS_")} - {"AWS_REGION"}
    assert config["AWS_REGION"] == "eu-west-1"
    # The chart makes no Secret of its own for them: the named one is the only source.
    assert not [s for s in by_kind(docs, "Secret") if "capture" in s["metadata"]["name"]]

    fields, settings = _settings(config)
    assert set(fields) == {name for name in type(settings).model_fields if name.startswith(PREFIXES)}
    assert (settings.capture_sink, settings.capture_s3_endpoint) == (
        "s3://captures/hotserve",
        "http://minio.storage:9000",
    )
    assert (settings.capture_sample, settings.capture_rotate_age_s, settings.label_horizon_s) == (0.05, 30.0, 86400.0)
    assert (settings.capture_rotate_bytes, settings.capture_buffer_bytes) == (16 * 2**20, 64 * 2**20)

    cmd = [helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for assignment in S3_WITH_SECRET:
        cmd += ["--set", assignment]
    run(cmd)


def test_without_a_session_token_key_or_a_secret_no_aws_variable_is_set(render: Render) -> None:
    named = {e["name"] for e in _server(render(set_values=S3_WITH_SECRET))["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= named and "AWS_SESSION_TOKEN" not in named
    # No Secret: the pod's own identity (IRSA, workload identity) signs the requests.
    identity = [a for a in S3_WITH_SECRET if not a.startswith("capture.s3.credentials")]
    assert not [e for e in _server(render(set_values=identity))["env"] if e["name"].startswith("AWS_")]


def test_capture_is_off_by_default_with_every_setting_valid(render: Render) -> None:
    docs = render()
    config = one(docs, "ConfigMap")["data"]
    assert "HOTSERVE_CAPTURE_SINK" not in config
    fields, settings = _settings(config)
    assert set(fields) == {name for name in type(settings).model_fields if name.startswith(PREFIXES)} - {
        "capture_sink",
        "capture_s3_endpoint",
    }
    assert (settings.capture_sink, settings.label_horizon_s, settings.quality_max_pairs) == ("", 259200.0, 50000)
    assert "env" not in _server(docs)


def test_a_local_sink_on_a_writable_volume_is_taken(render: Render) -> None:
    docs = render(set_values=["capture.sink=/var/capture/rows"], set_json=WRITABLE_VOLUME)
    assert one(docs, "ConfigMap")["data"]["HOTSERVE_CAPTURE_SINK"] == "/var/capture/rows"
    assert one(render(set_values=["capture.sink=/tmp/capture"]), "ConfigMap")["data"]["HOTSERVE_CAPTURE_SINK"]


@pytest.mark.parametrize(
    ("set_values", "set_json", "complaint"),
    [
        (["capture.sink=/var/capture"], [], 'capture.sink "/var/capture" is not on a writable volume'),
        (
            ["capture.sink=/var/capture"],
            ['extraVolumeMounts=[{"name": "capture", "mountPath": "/var/capture", "readOnly": true}]'],
            "is not on a writable volume",
        ),
        (["capture.sink=/models/capture"], [], "is not on a writable volume"),
        (["capture.sink=capture"], [], 'capture.sink "capture": a local directory is an absolute path'),
        (["capture.sink=gs://bucket/captures"], [], "expected a local directory or s3://bucket/prefix"),
        (["capture.sink=s3:///", "redis.url=redis://r:6379/0"], [], "an s3:// sink names a bucket"),
        (["capture.sink=s3://captures"], [], "without Redis keeps the label join in a file beside the control state"),
        (
            ["capture.sink=/tmp/capture", "capture.s3.credentials.existingSecret=capture-s3"],
            [],
            "capture.s3 is for an s3:// capture.sink",
        ),
    ],
)
def test_a_sink_the_pod_cannot_use_is_refused_naming_why(
    helm: str, set_values: list[str], set_json: list[str], complaint: str
) -> None:
    cmd = [helm, "template", "rel", str(CHART)]
    for assignment in set_values:
        cmd += ["--set", assignment]
    for assignment in set_json:
        cmd += ["--set-json", assignment]
    result = run(cmd, check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("capture.sample=1.5", "sample"),
        ("capture.rotateBytes=0", "rotateBytes"),
        ("capture.bufferRecords=0", "bufferRecords"),
        ('capture.s3.credentials.accessKeyIdKey=""', "accessKeyIdKey"),
        ('capture.s3.endpoint="http://key:secret@minio:9000"', "endpoint"),
        ('capture.s3.credentials.secretAccessKey="plain-text"', "secretAccessKey"),
        ('capture.s3.accessKeyId="plain-text"', "accessKeyId"),
        ("labels.horizonS=0", "horizonS"),
        ("labels.quality.maxPairs=0", "maxPairs"),
        ("labels.quality.refresh=5", "refresh"),
    ],
)
def test_values_schema_rejects_bad_capture_and_label_values(helm: str, assignment: str, complaint: str) -> None:
    """Including any key that would hold a credential in values: there is none to set."""
    result = run([helm, "template", "rel", str(CHART), "--set-json", assignment], check=False)
    assert result.returncode != 0, f"accepted {assignment}"
    assert complaint in result.stderr, result.stderr
