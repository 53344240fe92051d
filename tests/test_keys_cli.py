"""Keys as a new user meets them: `thumbify keys create` writes DATA_DIR/keys.json and `thumbify serve` on that data
folder is protected by it, says so at start, and follows `keys create`/`keys revoke` while it runs.

Everything here is the real CLI and the real all-in-one server (embedded Redis, a worker, the API) over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support.images import make_jpeg
from support.keys import secret_of
from support.problems import PROBLEM_BASE
from support.service import PYTHON, ROOT, clean_env, log_tail, stop_process, wait_ready

from thumbify.keys import KeyRing, add_to_file, new_key
from thumbify.redis_conn import free_port

pytestmark = pytest.mark.service  # it runs the CLI and `serve`


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "thumbify_cli", *argv], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60
    )


def serve(tmp: Path, data_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    port, log = free_port(), tmp / f"serve-{time.monotonic_ns()}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [PYTHON, "-m", "thumbify_cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=clean_env(image_processes=1),  # nothing about keys set: the data folder's keys.json is the default
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, [proc], [log], timeout=90)
    except BaseException:
        stop_process(proc)
        raise
    return proc, base, log


def upload(base: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    files = {"file": ("a.jpg", make_jpeg(32, 24), "image/jpeg")}
    return httpx.post(f"{base}/v1/jobs", files=files, headers=headers, timeout=30)


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_serve_reads_the_data_folders_keys_and_follows_create_and_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    made = cli("keys", "create", "bob", "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    bob = made.stdout.strip()
    assert (data_dir / "keys.json").exists() and bob.startswith("tfy_")

    proc, base, log = serve(tmp_path, data_dir)
    try:
        r = upload(base)
        assert r.status_code == 401, f"an upload without a key was let in: {r.status_code} {r.text}"
        assert r.json()["type"] == PROBLEM_BASE + "unauthorized"
        assert upload(base, bob).status_code == 202
        assert f"authentication ON: 1 key(s) from {data_dir / 'keys.json'}" in log_tail(log)

        # `keys list` names the key, never its secret.
        listed = cli("keys", "list", "--json", "--data-dir", str(data_dir))
        assert listed.returncode == 0, listed.stderr
        [row] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert row["name"] == "bob" and row["id"] == bob.split("_")[1] and row["scopes"] == ["read", "submit"]
        assert row["created"] and secret_of(bob) not in listed.stdout
        table = cli("keys", "list", "--data-dir", str(data_dir))
        assert "bob" in table.stdout and secret_of(bob) not in table.stdout + table.stderr

        # A key made while the server runs works within seconds; a revoked one stops working, no restart.
        alice = cli("keys", "create", "alice", "--data-dir", str(data_dir)).stdout.strip()
        assert eventually(lambda: upload(base, alice).status_code == 202), "a new key was not picked up"
        revoked = cli("keys", "revoke", "bob", "--data-dir", str(data_dir))
        assert revoked.returncode == 0 and "revoked" in revoked.stderr, revoked.stderr
        assert eventually(lambda: upload(base, bob).status_code == 401), "a revoked key still works"
        assert upload(base, alice).status_code == 202
        # Revoking every key leaves the API closed, not open.
        by_id = cli("keys", "revoke", alice.split("_")[1], "--data-dir", str(data_dir))
        assert by_id.returncode == 0, by_id.stderr
        assert eventually(lambda: upload(base, alice).status_code == 401)
        assert upload(base).status_code == 401
        unknown = cli("keys", "revoke", "nobody", "--data-dir", str(data_dir))
        assert unknown.returncode != 0 and "no key" in unknown.stderr and "Traceback" not in unknown.stderr
    finally:
        stop_process(proc)


def test_serve_without_keys_says_the_api_is_open(tmp_path: Path) -> None:
    proc, base, log = serve(tmp_path, tmp_path / "data")
    try:
        assert upload(base).status_code == 202
        assert "authentication OFF" in log_tail(log)
    finally:
        stop_process(proc)


# -- the ring itself: fail closed --------------------------------------------------------------------------------------


@pytest.fixture
def fast_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("thumbify.keys.RELOAD_EVERY_S", 0.0)


def test_an_empty_keys_file_closes_the_api(tmp_path: Path, fast_reload) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": []}')
    ring = KeyRing.load(path)
    assert ring and len(ring) == 0 and ring.verify("tfy_00000000_" + "A" * 43) is None


def test_a_broken_or_removed_file_keeps_the_keys_read_before(tmp_path: Path, fast_reload) -> None:
    path = tmp_path / "keys.json"
    token, key = new_key("carol", ["read"])
    add_to_file(path, key)
    ring = KeyRing.load(path)
    assert ring.verify(token) == key
    path.write_text("{not json")
    assert ring.verify(token) == key and ring
    path.unlink()
    assert ring.verify(token) == key and ring


def test_a_keys_file_that_appears_turns_authentication_on(tmp_path: Path, fast_reload) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing.load(path)
    assert not ring and "authentication OFF" in ring.describe()
    token, key = new_key("dave", ["submit"])
    add_to_file(path, key)
    assert ring and ring.verify(token) == key
