"""The Helm chart as tests see it: `helm ARGS -f VALUES` and `render` (its manifests as dicts), offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "thumbify"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")


def helm(tmp: Path, *args: str, values: dict) -> subprocess.CompletedProcess:
    """`helm ARGS -f VALUES`, the values written as JSON (which is YAML) into `tmp`."""
    path = tmp / "values.json"
    path.write_text(json.dumps(values))
    return subprocess.run([HELM, *args, "-f", str(path)], capture_output=True, text=True, timeout=120, check=False)


def render(values: dict, tmp: Path, *files: Path) -> list[dict]:
    """The chart's manifests under `values` (after the values `files`, as `helm -f FILE -f VALUES` would)."""
    extra = [arg for f in files for arg in ("-f", str(f))]
    proc = helm(tmp, "template", "thumbify", str(CHART), "--namespace", "media", *extra, values=values)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
