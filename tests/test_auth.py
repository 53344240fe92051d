"""API keys, scopes, per-owner isolation, signed thumbnail URLs, per-key limits, and the open-bind refusal.

Keys are made with `thumbify keys create` (the real command) into a keys file the real API reads; the service is
uvicorn + a worker + a redis-server, all real processes on loopback.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.images import make_jpeg
from support.keys import bearer, create_key, secret_of
from support.problems import assert_problem
from support.service import PYTHON, ROOT, Service, clean_env, start_service, stop_service

from thumbify.redis_conn import free_port
from thumbify.signing import sign

SECRET = "test-signing-secret"


@pytest.fixture(scope="module")
def keyed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str]]]:
    base = tmp_path_factory.mktemp("keyed")
    keys_file = base / "keys.json"
    keys = {
        "alice": create_key(keys_file, "alice"),
        "bob": create_key(keys_file, "bob"),
        "reader": create_key(keys_file, "reader", "read"),
        "submitter": create_key(keys_file, "submitter", "submit"),
        "admin": create_key(keys_file, "admin", "admin"),
    }
    svc = start_service(base, redis_server, extra_env={"api_keys_file": keys_file, "url_signing_secret": SECRET})
    try:
        yield svc, keys
    finally:
        stop_service(svc)


@pytest.mark.service
def test_the_keys_file_holds_hashes_only(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    token = create_key(keys_file, "carol", "read")
    assert token.startswith("tfy_")
    text = keys_file.read_text()
    assert token not in text and secret_of(token) not in text
    [entry] = json.loads(text)["keys"]
    assert entry["name"] == "carol" and entry["scopes"] == ["read"] and len(entry["sha256"]) == 64
    assert keys_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    # A second key of the same name is refused; so is an unknown scope.
    for argv in (["carol"], ["dave", "--scope", "superuser"]):
        done = subprocess.run(
            [PYTHON, "-m", "thumbify_cli", "keys", "create", *argv, "--file", str(keys_file)],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0


def test_no_key_or_a_wrong_key_is_401(keyed) -> None:
    svc, keys = keyed
    c = svc.client
    for headers in ({}, bearer("tfy_00000000_" + "A" * 43), bearer(keys["alice"] + "x"), {"X-API-Key": "nonsense"}):
        for r in (c.get("/v1/jobs", headers=headers), svc.submit(make_jpeg(32, 32), headers=headers)):
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
    # Health and metrics stay open (probes and scrapers carry no key).
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_both_headers_work(keyed) -> None:
    svc, keys = keyed
    assert svc.client.get("/v1/jobs", headers=bearer(keys["alice"])).status_code == 200
    assert svc.client.get("/v1/jobs", headers={"X-API-Key": keys["alice"]}).status_code == 200


def test_a_key_without_the_scope_is_403(keyed) -> None:
    svc, keys = keyed
    assert_problem(svc.submit(make_jpeg(32, 32), headers=bearer(keys["reader"])), 403, "forbidden")
    job = svc.submit_ok(make_jpeg(32, 32), headers=bearer(keys["submitter"]))
    assert_problem(svc.client.get(f"/v1/jobs/{job['id']}", headers=bearer(keys["submitter"])), 403, "forbidden")
    assert_problem(svc.client.get("/v1/jobs", headers=bearer(keys["submitter"])), 403, "forbidden")
    assert_problem(svc.client.delete(f"/v1/jobs/{job['id']}", headers=bearer(keys["reader"])), 403, "forbidden")


def test_another_owners_job_is_404_everywhere_and_admin_sees_all(keyed) -> None:
    svc, keys = keyed
    alice, bob, admin = bearer(keys["alice"]), bearer(keys["bob"]), bearer(keys["admin"])
    job = svc.submit_ok(make_jpeg(64, 48), headers=alice)
    done = svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, headers=alice).json()
    assert done["status"] == "done"
    thumb_path = done["thumbnails"][0]["url"].split("?")[0]
    # Bob: 404 on the job, its thumbnail (even with his key) and its deletion; absent from his listing.
    assert_problem(svc.client.get(f"/v1/jobs/{job['id']}", headers=bob), 404, "not-found")
    assert_problem(svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 1}, headers=bob), 404, "not-found")
    assert_problem(svc.client.get(thumb_path, headers=bob), 404, "not-found")
    assert_problem(svc.client.delete(f"/v1/jobs/{job['id']}", headers=bob), 404, "not-found")
    bob_ids = {j["id"] for j in svc.client.get("/v1/jobs", params={"limit": 200}, headers=bob).json()["items"]}
    assert job["id"] not in bob_ids
    bob_done = svc.client.get("/v1/jobs", params={"status": "done", "limit": 200}, headers=bob).json()["items"]
    assert job["id"] not in {j["id"] for j in bob_done}
    # Alice and the admin see it, in the job, the listing (also filtered by status) and the thumbnail.
    for who in (alice, admin):
        assert svc.client.get(f"/v1/jobs/{job['id']}", headers=who).status_code == 200
        assert svc.client.get(thumb_path, headers=who).status_code == 200
        listed = svc.client.get("/v1/jobs", params={"status": "done", "limit": 200}, headers=who).json()["items"]
        assert job["id"] in {j["id"] for j in listed}
    # The job still exists after Bob's attempts; Alice deletes it.
    assert svc.client.delete(f"/v1/jobs/{job['id']}", headers=alice).status_code == 204


def test_listing_pages_through_one_owners_jobs_only(keyed) -> None:
    svc, keys = keyed
    mine = [svc.submit_ok(make_jpeg(32, 32), headers=bearer(keys["bob"]))["id"] for _ in range(5)]
    for _ in range(3):
        svc.submit_ok(make_jpeg(32, 32), headers=bearer(keys["alice"]))
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = svc.client.get("/v1/jobs", params=params, headers=bearer(keys["bob"])).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(mine) <= set(seen) and len(seen) == len(set(seen))
    alice_page = svc.client.get("/v1/jobs", params={"limit": 200}, headers=bearer(keys["alice"])).json()
    alice_ids = {j["id"] for j in alice_page["items"]}
    assert not alice_ids & set(seen)


def test_signed_thumbnail_urls(keyed) -> None:
    svc, keys = keyed
    alice = bearer(keys["alice"])
    job = svc.submit_ok(make_jpeg(64, 48), headers=alice)
    done = svc.client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, headers=alice).json()
    url = done["thumbnails"][0]["url"]
    assert "expires=" in url and "sig=" in url
    # The signed URL works with no key at all (an <img src> in a browser).
    r = httpx.get(svc.base_url + url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    path = url.split("?")[0]
    assert_problem(httpx.get(svc.base_url + path), 401, "unauthorized")  # neither key nor signature
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    assert_problem(httpx.get(svc.base_url + tampered), 403, "forbidden")
    other = sign(SECRET, path.replace(job["id"], "f" * 32), 600)  # a signature for another path
    assert_problem(httpx.get(svc.base_url + path + "?" + other.split("?")[1]), 403, "forbidden")
    expired = sign(SECRET, path, 60, now=time.time() - 3600)
    assert_problem(httpx.get(svc.base_url + expired), 403, "forbidden")
    wrong_secret = sign("not-the-secret", path, 600)
    assert_problem(httpx.get(svc.base_url + wrong_secret), 403, "forbidden")


# -- per-key limits ---------------------------------------------------------------------------------------------------


@pytest.fixture
def limited(redis_server: str, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    keys_file = tmp_path / "keys.json"
    key = create_key(keys_file, "limited")
    env = {"api_keys_file": keys_file, "rate_limit_per_s": 0.5, "rate_limit_burst": 4, "max_concurrent_uploads": 1}
    svc = start_service(tmp_path, redis_server, extra_env=env, with_worker=False)
    try:
        yield svc, key
    finally:
        stop_service(svc)


def test_request_rate_per_key_is_429_with_retry_after(limited) -> None:
    svc, key = limited
    codes = [svc.client.get("/v1/jobs", headers=bearer(key)).status_code for _ in range(6)]
    assert codes[:4] == [200] * 4 and codes[4:] == [429, 429]
    r = svc.client.get("/v1/jobs", headers=bearer(key))
    assert_problem(r, 429, "rate-limited")
    assert 1 <= int(r.headers["retry-after"]) <= 3
    time.sleep(int(r.headers["retry-after"]) + 0.1)
    assert svc.client.get("/v1/jobs", headers=bearer(key)).status_code == 200


def test_concurrent_uploads_per_key_are_capped(limited) -> None:
    svc, key = limited
    jpeg = make_jpeg(64, 48)
    boundary = "capboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    started, result = threading.Event(), {}

    def slow_body() -> Iterator[bytes]:
        yield head + jpeg[:100]
        started.set()
        time.sleep(2.0)
        yield jpeg[100:] + f"\r\n--{boundary}--\r\n".encode()

    def slow_upload() -> None:
        headers = {**bearer(key), "content-type": f"multipart/form-data; boundary={boundary}"}
        with httpx.Client(base_url=svc.base_url, timeout=30) as c:
            result["slow"] = c.post("/v1/jobs", content=slow_body(), headers=headers)

    thread = threading.Thread(target=slow_upload)
    thread.start()
    assert started.wait(10)
    time.sleep(0.3)
    assert_problem(svc.submit(jpeg, headers=bearer(key)), 429, "rate-limited")
    thread.join(30)
    assert result["slow"].status_code == 202, result["slow"].text
    assert svc.submit(jpeg, headers=bearer(key)).status_code == 202  # the slot is free again


# -- binding ----------------------------------------------------------------------------------------------------------


@pytest.mark.service
def test_without_keys_the_server_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    for argv in (
        [PYTHON, "-m", "thumbify_cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        [PYTHON, "-m", "thumbify_cli", "api", "--host", "0.0.0.0", "--port", str(free_port())],
    ):
        env = clean_env(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0")
        if argv[3] == "serve":
            env.pop("THUMBIFY_REDIS_URL")
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr
    assert not (tmp_path / "data" / "redis").exists()  # refused before starting anything


def test_with_keys_a_non_loopback_bind_starts(tmp_path: Path, redis_server: str) -> None:
    keys_file = tmp_path / "keys.json"
    key = create_key(keys_file, "ops")
    port = free_port()
    env = clean_env(data_dir=tmp_path / "data", redis_url=redis_server, api_keys_file=keys_file)
    proc = subprocess.Popen(
        [PYTHON, "-m", "thumbify_cli", "api", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers=bearer(key)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
