"""Schemathesis against the app's own OpenAPI schema, on a live uvicorn: no 5xx, every response as documented.

Every operation in `/openapi.json` is fuzzed (positive and negative cases: schemathesis's examples, coverage and
fuzzing phases) four ways: against a service with API keys, with an admin key, with a read-only key and with no key
at all; and against a service with no keys (authentication off, loopback only). Each response must not be a 5xx,
and its status code, content type, headers and body must be the ones the schema documents for that operation; errors
are RFC 9457 `application/problem+json`. Random ids mostly answer 404 and random uploads 4xx, so
`test_success_paths_conform` drives the success answers (202, 200 with a job, a page, a thumbnail's bytes, 304, 204)
through the same checks with a real upload and its real thumbnails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate as validate_openapi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.images import make_jpeg
from support.problems import PROBLEM_BASE
from support.service import PYTHON, ROOT, Service, clean_env, start_service, stop_service

from api.app import create_app
from api.problems import ProblemDetails
from thumbify.errors import ThumbifyError
from thumbify.settings import Settings

SECRET = "schema-signing-secret"


@schemathesis.check
def no_unplanned_server_error(ctx, response, case):
    """A 5xx is a fault, except the documented 501 of what needs S3 storage (these services keep a local folder)."""
    if response.status_code == 501 and response.json().get("type") == PROBLEM_BASE + "direct-uploads-unavailable":
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_unplanned_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Every operation the schema must hold (and so every operation the fuzzing below reaches).
OPERATIONS = {
    "POST /v1/jobs",
    "POST /v1/uploads",
    "GET /v1/uploads/{upload_id}",
    "DELETE /v1/uploads/{upload_id}",
    "POST /v1/uploads/{upload_id}/complete",
    "GET /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "DELETE /v1/jobs/{job_id}",
    "POST /v1/batches",
    "GET /v1/batches/{batch_id}",
    "GET /v1/batches/{batch_id}/jobs",
    "DELETE /v1/batches/{batch_id}",
    "GET /v1/thumbnails/{job_id}/{name}",
    "GET /v1/presets",
    "HEAD /v1/thumbnails/{job_id}/{name}",
    "GET /healthz",
    "GET /readyz",
}
OPEN_PATHS = ("/healthz", "/readyz")
PROBLEM_JSON = "application/problem+json"
WRITES = ("POST", "DELETE")


def create_key(keys_file: Path, name: str, scope: str) -> str:
    """A key made by the real command (`thumbify keys create`), stored (as a hash) in `keys_file`."""
    argv = [PYTHON, "-m", "thumbify_cli", "keys", "create", name, "--file", str(keys_file), "--scope", scope]
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Mode:
    """One way of calling: the service, and the key header sent with every generated request."""

    name: str
    service: Service
    headers: dict[str, str]


@pytest.fixture(scope="module")
def keyed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str]]]:
    """A service with API keys (admin, read-only), a signing secret and a preset, plus a worker for the success
    paths."""
    base = tmp_path_factory.mktemp("schema-keyed")
    keys_file, presets_file = base / "keys.json", base / "presets.json"
    presets_file.write_text('{"avatar": {"sizes": "64", "fit": "cover", "format": "webp"}}')
    keys = {"admin": create_key(keys_file, "admin", "admin"), "reader": create_key(keys_file, "reader", "read")}
    env = {"api_keys_file": keys_file, "url_signing_secret": SECRET, "presets_file": presets_file}
    svc = start_service(base, redis_server, extra_env=env)
    try:
        yield svc, keys
    finally:
        stop_service(svc)


@pytest.fixture(scope="module")
def open_service(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with no keys: authentication is off (it binds to loopback only)."""
    svc = start_service(tmp_path_factory.mktemp("schema-open"), redis_server, with_worker=False)
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="module", params=["admin", "reader", "no-key", "auth-off"])
def mode(request: pytest.FixtureRequest) -> Mode:
    if request.param == "auth-off":
        return Mode("auth-off", request.getfixturevalue("open_service"), {})
    svc, keys = request.getfixturevalue("keyed")
    headers = bearer(keys[request.param]) if request.param in keys else {}
    return Mode(request.param, svc, headers)


# The app's schema, built here (no connection is made) so that schemathesis can make one test per operation at
# collection time; `test_the_schema_is_the_served_one` proves it is the very document the live services serve.
# (`schemathesis.pytest.from_fixture` would load it from the live service instead, but as of schemathesis 4.32 it
# fails on pytest 9.2: it sets `Function._nodeid`, which pytest no longer has.)
DOCUMENT = create_app(
    Settings(redis_url="redis://127.0.0.1:1/0", host="127.0.0.1", api_keys="", api_keys_file=None)
).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def load_schema(svc: Service) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(f"{svc.base_url}/openapi.json")
    loaded.config.update(base_url=svc.base_url)
    return loaded


def test_the_schema_is_the_served_one(mode: Mode) -> None:
    assert httpx.get(f"{mode.service.base_url}/openapi.json").json() == DOCUMENT


def test_the_schema_holds_every_operation() -> None:
    """Nothing the fuzzing should reach is missing from the schema; each error answer is problem+json."""
    document = DOCUMENT
    found = {f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops}
    assert found == OPERATIONS
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids)), operation_ids
    problem = document["components"]["schemas"]["ProblemDetails"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
            if path.startswith("/v1/"):
                for status in ("401", "403", "429", "503"):
                    assert status in op["responses"], (method, path, status)


def test_the_schema_is_valid_openapi() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate_openapi(DOCUMENT)  # raises, saying where, on any departure from the OpenAPI 3.1 schema


def kinds_of_error() -> dict[str, type[ThumbifyError]]:
    """Every kind of error the code knows, by its problem `type`."""
    found, todo = {}, [ThumbifyError]
    while todo:
        kind = todo.pop()
        found[PROBLEM_BASE + kind.slug] = kind
        todo += kind.__subclasses__()
    return found


def problem_examples(op: dict, status: str) -> dict[str, dict]:
    return op["responses"][status]["content"][PROBLEM_JSON]["examples"]


def test_every_error_response_has_correct_examples() -> None:
    """Each documented error status shows a sample problem of each kind it stands for: of that status, with that
    kind's `type` and `title`, valid as ProblemDetails."""
    kinds = kinds_of_error()
    for path, ops in DOCUMENT["paths"].items():
        for method, op in ops.items():
            for status in (s for s in op["responses"] if int(s) >= 400):
                examples = problem_examples(op, status)
                assert examples, (method, path, status)
                for slug, example in examples.items():
                    value = ProblemDetails.model_validate(example["value"])
                    kind = kinds[value.type]
                    assert value.type == PROBLEM_BASE + slug, (method, path, status, value)
                    assert value.status == kind.status == int(status), (method, path, status, value)
                    assert value.title == kind.title and value.detail, (method, path, status, value)


def test_the_options_and_the_job_are_typed() -> None:
    """Each option documented once, as a form field with its type, choices or bounds; the job's parts are models."""
    post = DOCUMENT["paths"]["/v1/jobs"]["post"]
    assert [p["name"] for p in post.get("parameters", [])] == ["Prefer", "Idempotency-Key"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["fit"]["enum"] == ["inside", "cover", "fill", "contain"]
    assert form["crop"]["enum"] == ["centre", "attention", "entropy", "focal", "faces"]
    assert form["format"]["enum"] == ["jpeg", "webp", "png", "avif", "gif", "auto"]
    assert (form["animated"]["type"], form["animated"]["default"]) == ("boolean", False)
    assert (form["quality"]["type"], form["quality"]["minimum"], form["quality"]["maximum"]) == ("integer", 1, 100)
    assert form["sizes"]["pattern"] and "WxH" in form["sizes"]["description"]
    assert "8..4096" in form["sizes"]["description"] and "1 to 8" in form["sizes"]["description"]
    assert form["background"]["default"] == "#ffffff"
    # The encoder options (issue 14): choices, bounds, defaults, and what each format ignores said in words.
    assert form["keep"]["enum"] == ["none", "icc", "copyright"] and form["keep"]["default"] == "none"
    assert (form["progressive"]["type"], form["progressive"]["default"]) == ("boolean", False)
    assert (form["optimize_coding"]["type"], form["optimize_coding"]["default"]) == ("boolean", True)
    assert (form["effort"]["type"], form["effort"]["minimum"], form["effort"]["maximum"]) == ("integer", 0, 10)
    assert (form["facts"]["type"], form["facts"]["default"]) == ("boolean", False)
    facts = DOCUMENT["components"]["schemas"]["FactsView"]["properties"]
    assert set(facts) == {"blurhash", "thumbhash", "dominant_color", "average_color", "dhash", "transparent"}
    assert "WebP 0..6" in form["effort"]["description"] and "AVIF 0..9" in form["effort"]["description"]
    assert "ignore" in form["progressive"]["description"] and "GPS" in form["keep"]["description"]
    # The focal point (issue 14): its bounds, and only with crop=focal.
    for name in ("fx", "fy"):
        assert (form[name]["type"], form[name]["minimum"], form[name]["maximum"]) == ("number", 0, 1)
        assert "crop=focal" in form[name]["description"]
    schemas = DOCUMENT["components"]["schemas"]
    job = schemas["JobView"]["properties"]
    for part, model in (("source", "SourceView"), ("spec", "SpecView")):
        assert job[part] == {"$ref": f"#/components/schemas/{model}"}, job[part]
        assert schemas[model]["properties"] and "additionalProperties" not in schemas[model], schemas[model]
    assert job["thumbnails"]["items"] == {"$ref": "#/components/schemas/ThumbnailView"}
    spec = schemas["SpecView"]["properties"]
    assert [spec[name]["$ref"].rsplit("/", 1)[1] for name in ("fit", "crop", "format")] == ["Fit", "Crop", "Format"]
    assert (spec["quality"]["minimum"], spec["quality"]["maximum"]) == (1, 100)


@schema.parametrize()
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: schemathesis.Case, mode: Mode) -> None:
    response = case.call_and_validate(mode.service.base_url, headers=mode.headers, checks=CHECKS, timeout=30)
    method = response.request.method.upper()
    if response.status_code >= 400 and method == case.operation.method.upper() != "HEAD":
        # The answer is one of the kinds of error documented for that status.
        op = DOCUMENT["paths"][case.operation.path][method.lower()]
        documented = {e["value"]["type"] for e in problem_examples(op, str(response.status_code)).values()}
        assert response.json()["type"] in documented, (case.operation.label, response.status_code, response.text)
    if case.operation.path in OPEN_PATHS or method != case.operation.method.upper():
        return  # probes and scrapers carry no key; a probe with another method is answered 405 before any key check
    status = response.status_code
    if mode.name == "no-key":
        # A thumbnail's query may carry a signed URL instead of a key: an invalid one is 403, not 401.
        signed = "expires" in (case.query or {}) or "sig" in (case.query or {})
        assert status in ((401, 403) if signed else (401,)), f"{case.operation.label} without a key: {status}"
    elif mode.name == "reader" and method in WRITES:
        assert status in (403, 429), f"{case.operation.label} with a read key: {status}"


def test_success_paths_conform(keyed: tuple[Service, dict[str, str]]) -> None:
    """The answers random input rarely reaches, checked the same way: a real upload and its real thumbnails."""
    svc, keys = keyed
    api = load_schema(svc)
    admin = bearer(keys["admin"])

    def check(method: str, path: str, status: int, headers: dict | None = None, **parts) -> schemathesis.Response:
        case = api[path][method].Case(**parts)
        response = case.call_and_validate(headers={**admin, **(headers or {})}, checks=CHECKS, timeout=60)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response

    created = check(
        "POST",
        "/v1/jobs",
        202,
        body={"file": make_jpeg(96, 64), "sizes": "32,48x48", "format": "webp"},
        media_type="multipart/form-data",
    ).json()
    job_id = created["id"]
    job = check("GET", "/v1/jobs/{job_id}", 200, path_parameters={"job_id": job_id}, query={"wait": 30}).json()
    assert job["status"] == "done" and len(job["thumbnails"]) == 2, job
    check("GET", "/v1/jobs", 200, query={"limit": 1})
    check("GET", "/v1/jobs", 200, query={"status": "done"})

    thumb = job["thumbnails"][0]
    at = {"path_parameters": {"job_id": job_id, "name": thumb["name"]}}
    got = check("GET", "/v1/thumbnails/{job_id}/{name}", 200, **at)
    assert got.headers["content-type"] == ["image/webp"] and len(got.content) == thumb["bytes"]
    check("HEAD", "/v1/thumbnails/{job_id}/{name}", 200, **at)
    check("GET", "/v1/thumbnails/{job_id}/{name}", 304, {"If-None-Match": got.headers["etag"][0]}, **at)

    # The job's `url` is signed (the server has a secret): it stands in for the key; a spoiled signature is 403.
    query = dict(httpx.URL(thumb["url"]).params)
    assert set(query) == {"expires", "sig"}, thumb["url"]
    signed = api["/v1/thumbnails/{job_id}/{name}"]["GET"].Case(query=query, **at)
    assert signed.call_and_validate(checks=CHECKS).status_code == 200
    spoiled = api["/v1/thumbnails/{job_id}/{name}"]["GET"].Case(query={**query, "sig": "0" * 16}, **at)
    assert spoiled.call_and_validate(checks=CHECKS).status_code == 403

    # The read-only key does not own the admin's job: 404, as for no job at all.
    reader = api["/v1/jobs/{job_id}"]["GET"].Case(path_parameters={"job_id": job_id})
    assert reader.call_and_validate(headers=bearer(keys["reader"]), checks=CHECKS).status_code == 404

    check("DELETE", "/v1/jobs/{job_id}", 204, path_parameters={"job_id": job_id})
    check("GET", "/v1/jobs/{job_id}", 404, path_parameters={"job_id": job_id})
    check("DELETE", "/v1/jobs/{job_id}", 404, path_parameters={"job_id": job_id})
    check("GET", "/v1/thumbnails/{job_id}/{name}", 404, **at)

    # A batch: one file accepted, one refused alone; its counts once it completes, its jobs, its deletion.
    files = {"file": [make_jpeg(48, 32), b"not an image at all"], "sizes": "32"}
    batch = check("POST", "/v1/batches", 202, body=files, media_type="multipart/form-data").json()
    assert [r["index"] for r in batch["rejected"]] == [1] and len(batch["jobs"]) == 1, batch
    of_batch = {"path_parameters": {"batch_id": batch["id"]}}
    ended = check("GET", "/v1/batches/{batch_id}", 200, query={"wait": 30}, **of_batch).json()
    assert ended["status"] == "completed" and ended["counts"]["done"] == ended["counts"]["failed"] == 1, ended
    check("GET", "/v1/batches/{batch_id}/jobs", 200, query={"limit": 1}, **of_batch)
    check("DELETE", "/v1/batches/{batch_id}", 204, **of_batch)
    check("GET", "/v1/batches/{batch_id}", 404, **of_batch)

    # Rejected uploads: each documented status, each problem+json.
    check("POST", "/v1/jobs", 415, body={"file": b"not an image at all"}, media_type="multipart/form-data")
    check("POST", "/v1/jobs", 422, body={"file": make_jpeg(32, 32), "sizes": "0"}, media_type="multipart/form-data")
    check("POST", "/v1/jobs", 422, body={"file": make_jpeg(32, 32)}, media_type="multipart/form-data", query={"x": 1})
    check("GET", "/readyz", 200)
    check("GET", "/healthz", 200)


@pytest.mark.parametrize("query", [{"expires": "9999999999", "sig": "ʇǝs"}, {"expires": "²", "sig": "x"}])
def test_a_mangled_signed_url_is_403(keyed: tuple[Service, dict[str, str]], query: dict[str, str]) -> None:
    """Found by the fuzzing above (rarely: it needs a non-ASCII signature with an all-digit expiry)."""
    svc, _ = keyed
    case = load_schema(svc)["/v1/thumbnails/{job_id}/{name}"]["GET"].Case(
        path_parameters={"job_id": "j", "name": "n"}, query=query
    )
    assert case.call_and_validate(checks=CHECKS).status_code == 403
