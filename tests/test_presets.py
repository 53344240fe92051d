"""Presets: named option sets from THUMBIFY_PRESETS_FILE, `preset=NAME` on a job, presets-only keys, GET /v1/presets.

The presets file is read by the real API (uvicorn) started with it; keys are made with `thumbify keys create`; the
thumbnails are rendered by a real worker and their pixel sizes read back.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import cli
from support.direct import direct_service, fetch_thumbnail, send
from support.images import make_jpeg
from support.keys import bearer, create_key
from support.localstack import BUCKET
from support.problems import assert_problem
from support.service import PYTHON, ROOT, Service, clean_env, start_service, stop_service

from thumbify.presets import Presets
from thumbify.redis_conn import free_port
from thumbify.spec import PRESET_NAME

PRESETS_YAML = """\
avatar:
  sizes: [64, 128]
  fit: cover
  format: webp
  quality: 70
banner:
  sizes: 300x100
  fit: fill
  format: auto
  progressive: true
"""


@pytest.fixture(scope="module")
def preset_service(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, dict[str, str]]]:
    base = tmp_path_factory.mktemp("presets")
    keys_file, presets_file = base / "keys.json", base / "presets.yaml"
    presets_file.write_text(PRESETS_YAML)
    keys = {"full": create_key(keys_file, "full"), "reader": create_key(keys_file, "reader", "read")}
    done = cli("keys", "create", "kiosk", "--presets-only", "--file", str(keys_file))
    assert done.returncode == 0 and "presets only" in done.stderr, done.stderr
    keys["kiosk"] = done.stdout.strip()
    env = {"api_keys_file": keys_file, "presets_file": presets_file}
    svc = start_service(base, redis_server, extra_env=env)
    try:
        yield svc, keys
    finally:
        stop_service(svc)


def _run(svc: Service, headers: dict[str, str], params: dict | None = None, **options: object) -> dict:
    """A job of a 640x480 JPEG submitted with `headers` (a key), once it has ended."""
    job = svc.submit_ok(make_jpeg(640, 480), headers=headers, params=params, **options)
    return svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, headers=headers).json()


def _sizes(job: dict) -> list[tuple[int, int]]:
    return [(t["width"], t["height"]) for t in job["thumbnails"]]


@pytest.mark.service
def test_a_preset_expands_to_its_options(preset_service) -> None:
    svc, keys = preset_service
    auth = bearer(keys["full"])
    job = _run(svc, auth, preset="avatar")
    assert job["status"] == "done", job
    spec = job["spec"]
    assert spec["preset"] == "avatar"
    assert (spec["sizes"], spec["fit"], spec["format"], spec["quality"]) == (["64x64", "128x128"], "cover", "webp", 70)
    assert _sizes(job) == [(64, 64), (128, 128)]  # cover fills each box
    for thumb in job["thumbnails"]:
        image = fetch_thumbnail(svc, thumb, auth)
        assert image.get("vips-loader").startswith("webp")


@pytest.mark.service
def test_options_beside_a_preset_override_it(preset_service) -> None:
    svc, keys = preset_service
    job = _run(svc, bearer(keys["full"]), preset="avatar", sizes="96", quality="50")
    assert job["status"] == "done", job
    assert (job["spec"]["sizes"], job["spec"]["quality"], job["spec"]["fit"]) == (["96x96"], 50, "cover")
    assert _sizes(job) == [(96, 96)]


@pytest.mark.service
def test_a_preset_in_the_query_and_auto_format_negotiates(preset_service) -> None:
    svc, keys = preset_service
    headers = bearer(keys["full"]) | {"Accept": "image/png"}
    job = _run(svc, headers, params={"preset": "banner"})
    assert job["status"] == "done", job
    assert (job["spec"]["format"], job["spec"]["preset"], job["spec"]["progressive"]) == ("png", "banner", True)
    assert _sizes(job) == [(300, 100)]  # fill: stretched to the box


@pytest.mark.service
def test_an_unknown_preset_is_422_listing_the_known_ones(preset_service) -> None:
    svc, keys = preset_service
    for where in ("form", "query"):
        options = {"preset": "nope"}
        r = svc.submit(make_jpeg(64, 64), headers=bearer(keys["full"]), **(options if where == "form" else {}),
                       params=options if where == "query" else None)  # fmt: skip
        body = assert_problem(r, 422, "invalid-options", "preset", "avatar", "banner")
        assert [e["field"] for e in body["errors"]] == ["preset"]
    r = svc.submit(make_jpeg(64, 64), headers=bearer(keys["full"]), preset="Not A Name")
    assert_problem(r, 422, "invalid-options", "preset")


@pytest.mark.service
def test_a_presets_only_key_must_name_a_preset_and_nothing_else(preset_service) -> None:
    svc, keys = preset_service
    kiosk = bearer(keys["kiosk"])
    body = assert_problem(svc.submit(make_jpeg(64, 64), headers=kiosk), 422, "invalid-options", "preset")
    assert [e["field"] for e in body["errors"]] == ["preset"]
    r = svc.submit(make_jpeg(64, 64), headers=kiosk, sizes="2000")
    assert_problem(r, 422, "invalid-options", "only use presets")
    r = svc.submit(make_jpeg(64, 64), headers=kiosk, preset="avatar", quality="100", fit="fill")
    body = assert_problem(r, 422, "invalid-options", "only use presets")
    assert sorted(e["field"] for e in body["errors"]) == ["fit", "quality"]
    job = _run(svc, kiosk, preset="avatar")
    assert job["status"] == "done" and _sizes(job) == [(64, 64), (128, 128)], job


@pytest.mark.service
def test_the_presets_are_listed(preset_service) -> None:
    svc, keys = preset_service
    for key in ("full", "reader", "kiosk"):
        r = svc.client.get("/v1/presets", headers=bearer(keys[key]))
        assert r.status_code == 200, r.text
        items = {item["name"]: item["options"] for item in r.json()["items"]}
        assert list(items) == ["avatar", "banner"]
        assert items["avatar"]["sizes"] == ["64x64", "128x128"] and items["avatar"]["effort"] == 4
        assert (items["banner"]["format"], items["banner"]["fit"], items["banner"]["quality"]) == ("auto", "fill", 80)
    assert_problem(svc.client.get("/v1/presets"), 401, "unauthorized")


@pytest.mark.service
def test_openapi_documents_preset_and_the_listing(preset_service) -> None:
    svc, _ = preset_service
    doc = svc.client.get("/openapi.json").json()
    form = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["preset"]["pattern"] == PRESET_NAME
    assert "GET /v1/presets" in form["properties"]["preset"]["description"]
    listing = doc["paths"]["/v1/presets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing == {"$ref": "#/components/schemas/PresetList"}
    options = doc["components"]["schemas"]["PresetOptionsView"]["properties"]
    assert {"type": "string", "const": "auto"} in options["format"]["anyOf"]


@pytest.mark.service
def test_keys_list_shows_presets_only(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    create_key(keys_file, "plain")
    assert cli("keys", "create", "kiosk", "--presets-only", "--file", str(keys_file)).returncode == 0
    listed = cli("keys", "list", "--json", "--file", str(keys_file))
    rows = {row["name"]: row["presets_only"] for row in map(json.loads, listed.stdout.splitlines())}
    assert rows == {"plain": False, "kiosk": True}
    table = cli("keys", "list", "--file", str(keys_file)).stdout
    assert "presets only" in table and "yes" in table, table


@pytest.mark.service
def test_the_cli_submits_a_preset_and_lists_the_presets(preset_service, tmp_path: Path) -> None:
    svc, keys = preset_service
    photo = tmp_path / "cli-preset.jpg"
    photo.write_bytes(make_jpeg(320, 240))
    remote = ["--url", svc.base_url, "--key", keys["kiosk"]]
    done = cli("submit", str(photo), "--wait", "--preset", "avatar", *remote)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "thumb_cli-preset_64x64.webp" in done.stdout and "thumb_cli-preset_128x128.webp" in done.stdout
    refused = cli("submit", str(photo), "--preset", "avatar", "--size", "999", *remote)
    assert refused.returncode == 1 and "only use presets" in refused.stdout, refused.stdout
    listed = cli("presets", "--json", *remote)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["avatar", "banner"]
    table = cli("presets", *remote).stdout
    assert "64x64, 128x128" in table and "auto" in table, table


# -- the file ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suffix", "words"),
    [
        ('{"thumb": {"sizes": "0"}}', ".json", ["'thumb'", "sizes"]),
        ("small: {quality: 101}", ".yaml", ["'small'", "quality"]),
        ("small: {qualty: 50}", ".yml", ["'small'", "unknown option", "qualty"]),
        ("Big: {sizes: 64}", ".yaml", ["'Big'", "name"]),
        ("small: {effort: 9, format: webp}", ".yaml", ["'small'", "effort"]),
        ("[1, 2]", ".yaml", ["mapping"]),
        ("{", ".json", ["does not parse"]),
    ],
)
def test_a_bad_presets_file_is_refused_naming_the_preset_and_field(
    tmp_path: Path, text: str, suffix: str, words: list[str]
) -> None:
    path = tmp_path / f"presets{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        Presets.load(path)
    for word in [str(path), *words]:
        assert word in str(caught.value), (word, str(caught.value))


def test_presets_in_json_and_yaml_read_alike(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"a": {"sizes": [64, "32x16"], "progressive": true, "quality": 60}}')
    (tmp_path / "p.yaml").write_text("a: {sizes: [64, 32x16], progressive: true, quality: 60}")
    want = {"a": {"sizes": ["64", "32x16"], "progressive": ["true"], "quality": ["60"]}}
    assert Presets.load(tmp_path / "p.json").items == Presets.load(tmp_path / "p.yaml").items == want


@pytest.mark.service
def test_the_api_and_serve_refuse_to_start_with_a_bad_presets_file(tmp_path: Path, redis_server: str) -> None:
    presets_file = tmp_path / "presets.yaml"
    presets_file.write_text("avatar: {fit: squash}")
    for command in ("api", "serve"):
        env = clean_env(data_dir=tmp_path / "data", redis_url=redis_server, presets_file=presets_file)
        if command == "serve":
            env.pop("THUMBIFY_REDIS_URL")
        argv = [PYTHON, "-m", "thumbify_cli", command, "--port", str(free_port())]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "refusing to start" in done.stderr and "'avatar'" in done.stderr and "fit" in done.stderr, done.stderr
    assert not (tmp_path / "data" / "redis").exists()  # serve refused before starting anything


# -- the JSON bodies: direct uploads and objects in the bucket (LocalStack's S3) ---------------------------------------


@pytest.mark.service
def test_presets_in_direct_uploads_and_jobs_from_the_bucket(
    localstack, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("presets-s3")
    presets_file = base / "presets.json"
    presets_file.write_text(json.dumps({"avatar": {"sizes": [64, 128], "fit": "cover", "format": "webp"}}))
    done = cli("keys", "create", "kiosk", "--presets-only", "--file", str(base / "keys.json"))
    assert done.returncode == 0, done.stderr
    with direct_service(base, redis_server, localstack, presets_file=presets_file) as d:
        d.keys["kiosk"] = done.stdout.strip()
        data = make_jpeg(640, 480)
        # A presets-only key's direct upload: its preset alone, nothing beside it.
        r = d.create("kiosk", filename="a.jpg", size=len(data), options={"preset": "avatar", "sizes": "2000"})
        assert_problem(r, 422, "invalid-options", "sizes", "only use presets")
        upload = d.create_ok(data, "a.jpg", who="kiosk", options={"preset": "avatar"})
        assert send(upload, data, "a.jpg") is None
        job = d.wait(d.complete_ok(upload, who="kiosk")["id"], who="kiosk")
        assert job["status"] == "done" and job["spec"]["preset"] == "avatar", job
        assert _sizes(job) == [(64, 64), (128, 128)]
        # A job of an object in the bucket: the preset, one option overridden; an unknown one refused.
        d.s3.client().put_object(Bucket=BUCKET, Key=d.prefix + "photos/p.jpg", Body=data)
        body = {"source_key": "photos/p.jpg", "options": {"preset": "avatar", "sizes": "32"}}
        r = d.svc.client.post("/v1/jobs", json=body, headers=d.headers("admin"))
        assert r.status_code == 202, r.text
        job = d.wait(r.json()["id"], who="admin")
        assert (job["spec"]["preset"], job["spec"]["format"], _sizes(job)) == ("avatar", "webp", [(32, 32)]), job
        body["options"] = {"preset": "nope"}
        r = d.svc.client.post("/v1/jobs", json=body, headers=d.headers("admin"))
        assert_problem(r, 422, "invalid-options", "preset", "avatar")


@pytest.mark.service
def test_a_batch_takes_a_preset(preset_service) -> None:
    svc, keys = preset_service
    kiosk = bearer(keys["kiosk"])
    files = [("file", (f"b{i}.jpg", make_jpeg(320, 240), "image/jpeg")) for i in range(2)]
    r = svc.client.post("/v1/batches", files=files, data={"preset": "avatar", "quality": "5"}, headers=kiosk)
    assert_problem(r, 422, "invalid-options", "quality", "only use presets")
    r = svc.client.post("/v1/batches", files=files, data={"preset": "avatar"}, headers=kiosk)
    assert r.status_code == 202, r.text
    for job in r.json()["jobs"]:
        done = svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, headers=kiosk).json()
        assert done["spec"]["preset"] == "avatar" and _sizes(done) == [(64, 64), (128, 128)], done
