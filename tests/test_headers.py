"""Response headers: `X-Content-Type-Options: nosniff` on every answer, `Content-Disposition` on downloads, no
`server` header, and CORS only for configured origins (none by default: no `Access-Control-*` header at all)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support import images
from support.service import Service, start_service, stop_service

from api.security import check_origins, content_disposition

ALLOWED = "https://app.example"
OTHER = "https://evil.example"


@pytest.fixture(scope="module")
def done_job(service: Service) -> dict:
    job = service.run_job(images.photo_like(160, 120, seed=11), "Ünïcode photo.jpg", sizes="64")
    assert job["status"] == "done", job
    return job


def _answers(service: Service, job: dict) -> dict[str, httpx.Response]:
    """One answer of every kind the API gives."""
    c = service.client
    thumb = job["thumbnails"][0]["url"]
    return {
        "json": c.get(f"/v1/jobs/{job['id']}"),
        "list": c.get("/v1/jobs", params={"limit": 1}),
        "problem-404": c.get("/v1/jobs/" + "0" * 32),
        "problem-415": service.submit(b"plain text, not an image" * 4, "x.jpg"),
        "problem-422": c.get("/v1/jobs", params={"limit": 0}),
        "problem-405": c.put(f"/v1/jobs/{job['id']}"),
        "route-404": c.get("/no/such/route"),
        "thumbnail": c.get(thumb),
        "thumbnail-head": c.head(thumb),
        "thumbnail-304": c.get(thumb, headers={"If-None-Match": c.get(thumb).headers["etag"]}),
        "metrics": c.get("/metrics"),
        "healthz": c.get("/healthz"),
        "readyz": c.get("/readyz"),
        "openapi": c.get("/openapi.json"),
        "docs": c.get("/docs"),
        "preflight": c.options("/v1/jobs", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}),
    }


def test_every_answer_has_nosniff_and_no_server_header(service: Service, done_job: dict) -> None:
    for kind, r in _answers(service, done_job).items():
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], (kind, r.status_code, r.headers)
        assert "server" not in r.headers, (kind, r.headers["server"])
        assert r.status_code < 500, (kind, r.status_code, r.text[:300])


def test_problems_are_problem_json(service: Service, done_job: dict) -> None:
    for kind, r in _answers(service, done_job).items():
        if kind.startswith("problem"):
            assert r.headers["content-type"].startswith("application/problem+json"), (kind, r.headers)


def test_thumbnail_downloads_carry_a_safe_content_disposition(service: Service, done_job: dict) -> None:
    thumb = done_job["thumbnails"][0]
    assert thumb["name"].startswith("thumb_") and thumb["name"].isascii()
    for r in (service.client.get(thumb["url"]), service.client.head(thumb["url"])):
        assert r.status_code == 200
        assert r.headers["content-disposition"] == f'inline; filename="{thumb["name"]}"'
        assert r.headers["content-type"].startswith("image/")


def test_no_cors_headers_by_default(service: Service, done_job: dict) -> None:
    for kind, r in _answers(service, done_job).items():
        cors = [h for h in r.headers if h.lower().startswith("access-control-")]
        assert not cors, (kind, cors)
    # A simple GET from a browser on another origin: answered, but the browser may not read it.
    r = service.client.get(f"/v1/jobs/{done_job['id']}", headers={"Origin": OTHER})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.fixture(scope="module")
def cors_service(redis_server: str, tmp_path_factory: pytest.TempPathFactory):
    svc = start_service(
        tmp_path_factory.mktemp("cors"),
        redis_server,
        with_worker=False,
        extra_env={"cors_origins": f'["{ALLOWED}"]'},
    )
    try:
        yield svc
    finally:
        stop_service(svc)


def test_cors_preflight_allows_only_the_configured_origin(cors_service: Service) -> None:
    c = cors_service.client
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"}
    r = c.options("/v1/jobs", headers={"Origin": ALLOWED, **preflight})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert {m.strip() for m in r.headers["access-control-allow-methods"].split(",")} == {"GET", "POST", "DELETE"}
    allowed_headers = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "idempotency-key", "content-type", "x-request-id"} <= allowed_headers
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]

    r = c.options("/v1/jobs", headers={"Origin": OTHER, **preflight})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = c.options(
        "/v1/jobs", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "PUT"}
    )  # a method not allowed
    assert r.status_code == 400


def test_cors_simple_requests_name_only_the_configured_origin(cors_service: Service) -> None:
    c = cors_service.client
    r = c.get("/healthz", headers={"Origin": ALLOWED})
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert {"Location", "X-Request-ID"} <= {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    r = c.get("/v1/jobs/" + "0" * 32, headers={"Origin": ALLOWED})  # problems too, so a page can read them
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == ALLOWED
    r = c.get("/healthz", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in r.headers
    r = c.get("/healthz")
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "origin", ["*", "https://*.example", "https://app.example/path", "ftp://app.example", "app.example", "https://"]
)
def test_cors_origins_must_be_plain_origins(origin: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        check_origins([origin])


def test_a_wildcard_cors_origin_stops_the_api_at_start(redis_server: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="CORS_ORIGINS"):
        start_service(tmp_path, redis_server, with_worker=False, extra_env={"cors_origins": '["*"]'})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("thumb_photo_256x192.jpg", 'inline; filename="thumb_photo_256x192.jpg"'),
        (
            "thumb_fötö_1x1.png",
            "inline; filename=\"thumb_foto_1x1.png\"; filename*=UTF-8''thumb_f%C3%B6t%C3%B6_1x1.png",
        ),
        ('a"b\\c/../d.jpg', 'inline; filename="d.jpg"'),
        (
            "x\r\nSet-Cookie: a=b.jpg",
            "inline; filename=\"x_Set-Cookie_a_b.jpg\"; filename*=UTF-8''x%0D%0ASet-Cookie%3A%20a%3Db.jpg",
        ),
        ("📷", "inline; filename=\"thumbnail\"; filename*=UTF-8''%F0%9F%93%B7"),
    ],
)
def test_content_disposition_is_ascii_and_quoted_safely(name: str, expected: str) -> None:
    value = content_disposition(name)
    assert value == expected
    assert value.isascii() and "\r" not in value and "\n" not in value


def test_an_unhandled_error_still_gets_the_headers() -> None:
    """The headers wrap even Starlette's error middleware: a 500 carries them too (in-process, over ASGI: the route
    that raises is the test's own)."""
    import anyio
    from fastapi import FastAPI

    from api import problems, security
    from thumbify.settings import Settings

    app = FastAPI()
    problems.install(app)
    security.install(app, Settings(cors_origins=[]))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal-secret-detail")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/boom")

    r = anyio.run(get)
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "internal-secret-detail" not in r.text
