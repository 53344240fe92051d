"""Structured logs (thumbify/logs.py, api/access_log.py): ECS JSON lines, the request id from the API's access line
to the worker's line about the job, and no key, signature or secret in any line.

The service test runs real traffic (keys on, signed thumbnail URLs, a webhook secret set) through uvicorn and a
worker, stops them so every line is written, then reads every line both wrote (the render processes' included).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.images import make_jpeg
from support.keys import bearer, create_key, secret_of
from support.service import Service, start_service, stop_service

from api.access_log import request_id
from thumbify import logs

SIGNING_SECRET = "log-test-signing-secret-5b1c"
WEBHOOK_SECRET = "whsec_bG9nLXRlc3Qtd2ViaG9vay1zZWNyZXQtMTIzNDU2"
S3_SECRET = "log-test-s3-secret-9f7e"


def _lines(path: Path) -> list[dict]:
    text = path.read_text(errors="replace")
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{path.name}: not a JSON line: {line!r}") from exc
    return out


# -- in-process --------------------------------------------------------------------------------------------------


def test_a_sane_request_id_is_kept_and_any_other_replaced() -> None:
    assert request_id([(b"x-request-id", b"abc-123_XYZ.7")]) == "abc-123_XYZ.7"
    for bad in (b"", b"has space", b"x" * 129, b"caf\xc3\xa9", b"new\nline"):
        fresh = request_id([(b"x-request-id", bad)])
        assert fresh != bad.decode("latin-1") and len(fresh) == 32 and fresh.isalnum()
    assert request_id([]) != request_id([])


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_lines_carry_the_context_in_either_format(fmt: str) -> None:
    stream = io.StringIO()
    logs.configure(fmt, "info", "test", stream)
    try:
        log = logging.getLogger("thumbify.test")
        token = logs.open_context(request_id="req-1")
        logs.bind(job_id="0" * 32)
        log.info("about the job")
        logs.close_context(token)
        log.info("about nothing")
    finally:  # leave this process's logging as the other tests expect it
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_thumbify", False)]:
            root.removeHandler(handler)
        logging.captureWarnings(False)
        logging.getLogger("pyvips").setLevel(logging.NOTSET)
    first, second = stream.getvalue().splitlines()
    if fmt == "console":
        assert first.endswith(f"about the job [request=req-1 job={'0' * 32}]") and second.endswith("about nothing")
        return
    first, second = json.loads(first), json.loads(second)
    assert first["message"] == "about the job" and first["log.level"] == "info" and "@timestamp" in first
    assert first["http"]["request"]["id"] == "req-1" and first["thumbify"]["job"]["id"] == "0" * 32
    assert first["service"]["name"] == "thumbify-test" and first["ecs.version"]
    assert "http" not in second and "thumbify" not in second


# -- a real service ----------------------------------------------------------------------------------------------


@pytest.fixture
def keyed(redis_server: str, tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    keys_file = tmp_path / "keys.json"
    keys = {"alice": create_key(keys_file, "alice"), "admin": create_key(keys_file, "admin", "admin")}
    env = {
        "api_keys_file": keys_file,
        "url_signing_secret": SIGNING_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "s3_secret_access_key": S3_SECRET,
        "log_format": "json",
    }
    svc = start_service(tmp_path, redis_server, extra_env=env)
    try:
        yield svc, keys
    finally:
        stop_service(svc)


def test_every_line_is_ecs_json_joins_api_to_worker_and_holds_no_secret(keyed) -> None:
    svc, keys = keyed
    alice = bearer(keys["alice"])
    submitted = svc.submit(make_jpeg(64, 48), headers={**alice, "X-Request-ID": "upload-42"})
    assert submitted.status_code == 202 and submitted.headers["x-request-id"] == "upload-42"
    job_id = submitted.json()["id"]
    done = svc.client.get(
        f"/v1/jobs/{job_id}", params={"wait": 30}, headers={"X-API-Key": keys["admin"], "X-Request-ID": "poll-1"}
    )
    assert done.status_code == 200 and done.json()["status"] == "done"
    url = done.json()["thumbnails"][0]["url"]
    sig = url.split("sig=")[1]
    assert httpx.get(svc.base_url + url).status_code == 200  # the signed URL, no key
    assert httpx.get(svc.base_url + url + "AA").status_code == 403  # a wrong signature
    # A problem+json answer echoes the request id too; an insane one is replaced by a fresh id.
    refused = svc.client.get("/v1/jobs", headers={"Authorization": "Bearer tfy_wrong_key", "X-Request-ID": "x y"})
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    fresh = refused.headers["x-request-id"]
    assert fresh and fresh != "x y"
    stop_service(svc)  # every line written and flushed

    api, worker = _lines(svc.logs_dir / "api.log"), _lines(svc.logs_dir / "worker.log")
    text = (svc.logs_dir / "api.log").read_text() + (svc.logs_dir / "worker.log").read_text()
    for secret in (*keys.values(), *(secret_of(k) for k in keys.values()), "tfy_wrong_key", sig):
        assert secret not in text
    for secret in (SIGNING_SECRET, WEBHOOK_SECRET, S3_SECRET):
        assert secret not in text
    for line in api + worker:
        assert {"@timestamp", "log.level", "message", "ecs.version"} <= line.keys(), line
        assert line["service"]["name"] in ("thumbify-api", "thumbify-worker", "thumbify-render"), line

    access = [line for line in api if line["log"]["logger"] == "thumbify.access"]
    [upload] = [line for line in access if line["http"]["request"]["id"] == "upload-42"]
    assert upload["http"]["request"]["method"] == "POST" and upload["url"]["path"] == "/v1/jobs"
    assert upload["http"]["response"]["status_code"] == 202 and upload["http"]["response"]["body"]["bytes"] > 0
    assert upload["thumbify"]["job"]["id"] == job_id
    assert isinstance(upload["event"]["duration"], int) and upload["event"]["duration"] > 0
    [poll] = [line for line in access if line["http"]["request"]["id"] == "poll-1"]
    assert poll["thumbify"]["job"]["id"] == job_id and poll["http"]["response"]["status_code"] == 200
    signed = [line for line in access if line["url"]["path"] == url.split("?")[0]]
    assert sorted(line["http"]["response"]["status_code"] for line in signed) == [200, 403]
    [denied] = [line for line in access if line["http"]["request"]["id"] == fresh]
    assert denied["http"]["response"]["status_code"] == 401
    assert not [line for line in api if line["log"]["logger"] == "uvicorn.access"]

    about_job = [line for line in worker if line.get("thumbify", {}).get("job", {}).get("id") == job_id]
    assert about_job and all(line["http"]["request"]["id"] == "upload-42" for line in about_job), about_job
    assert any(line["message"].startswith(f"job {job_id} done") for line in about_job)
