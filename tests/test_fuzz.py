"""Fuzzing the input path: mutated JPEG, PNG, WebP, GIF, TIFF (and AVIF) files through the HTTP upload and the worker.

Whatever the bytes: no 500 ever; a refusal is a 413/415/422 problem+json; every accepted job ends `done` (with
thumbnails that download) or `failed` with a readable error (a problem type and a one-line detail, no traceback);
the worker neither crashes nor hangs (no `worker-crashed`, `image-timeout` or `render-error`), is alive at the end
and still serves a good job.

The cases come from tests/support/mutate.py (a seeded random mutator; its docstring says why not hypothesis):
- THUMBIFY_FUZZ_ITERATIONS: how many cases (default 2000: about 16 s on two idle cores; 10,000 take about 70 s)
- THUMBIFY_FUZZ_SEED: the base seed (default 1); each case's own seed is "<base>:<index>"
- THUMBIFY_FUZZ_ONLY: comma-separated case indices, to replay just those
A failure names each bad case with its seed and mutations, writes its bytes under the test's tmp folder, and prints
the command that replays it.
"""

from __future__ import annotations

import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import images, mutate
from support.problems import PROBLEM_BASE
from support.service import Service, has_traceback, start_service, stop_service

ITERATIONS = int(os.environ.get("THUMBIFY_FUZZ_ITERATIONS", "2000"))
BASE_SEED = int(os.environ.get("THUMBIFY_FUZZ_SEED", "1"))
ONLY = {int(i) for i in os.environ.get("THUMBIFY_FUZZ_ONLY", "").split(",") if i.strip()} or None
THREADS = 8
JOB_TIMEOUT_S = 120.0

REFUSALS = {413, 415, 422}
# The errors a broken image may end with: permanent, about the image. Anything else (a crashed or timed-out render
# process, an unexpected exception in our code) is a bug this test reports.
IMAGE_SLUGS = ("corrupt-image", "too-many-pixels", "side-too-long", "too-many-frames")
IMAGE_ERRORS = {PROBLEM_BASE + slug for slug in IMAGE_SLUGS}


@pytest.fixture(scope="module")
def fuzz_service(redis_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A service of our own: a short image timeout and few retries, so a hang or a crash shows within the test."""
    svc = start_service(
        tmp_path_factory.mktemp("fuzz"),
        redis_server,
        extra_env={
            "image_processes": 2,
            "image_timeout_s": 20,
            "max_attempts": 2,
            "retry_base_s": 0.05,
            "retry_max_s": 0.5,
        },
    )
    try:
        yield svc
    finally:
        stop_service(svc)


def _check_problem(r) -> str | None:
    if r.status_code not in REFUSALS:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return f"HTTP {r.status_code} is not problem+json: {r.headers.get('content-type')}"
    body = r.json()
    if not (str(body.get("type", "")).startswith(PROBLEM_BASE) and body.get("title") and body.get("detail")):
        return f"HTTP {r.status_code} problem without type/title/detail: {body}"
    return None


def _check_error(error: dict | None) -> str | None:
    if not error or not error.get("type") or not error.get("detail"):
        return f"failed without a readable error: {error}"
    detail = error["detail"]
    if "Traceback" in detail or "\n" in detail or len(detail) > 1000:
        return f"the error detail is not one readable line: {detail[:500]!r}"
    if error["type"] not in IMAGE_ERRORS:
        return f"failed with {error['type']}: {detail}"
    return None


def _run_case(svc: Service, case: mutate.Case) -> tuple[str, str | None]:
    """(outcome, problem or None): outcome is the HTTP refusal's slug or the job's end (`done`, or its error)."""
    r = svc.submit(case.data, f"fuzz-{case.index}.{case.format}")
    if r.status_code != 202:
        problem = _check_problem(r)
        slug = r.json().get("type", "").rsplit("/", 1)[-1] if problem is None else "bad-answer"
        return f"{r.status_code} {slug}", problem
    job_id = r.json()["id"]
    try:
        job = svc.wait(job_id, timeout=JOB_TIMEOUT_S)
    except AssertionError as exc:
        return "hung", f"job {job_id} did not end: {exc}"
    if job["status"] == "failed":
        problem = _check_error(job.get("error"))
        return f"failed {(job.get('error') or {}).get('type', '?').rsplit('/', 1)[-1]}", problem
    if not job["thumbnails"]:
        return "done", f"job {job_id} is done without thumbnails: {job}"
    thumb = svc.client.get(job["thumbnails"][0]["url"])
    if thumb.status_code != 200 or not thumb.content or not thumb.headers["content-type"].startswith("image/"):
        return "done", f"job {job_id}'s thumbnail does not download: {thumb.status_code} {thumb.text[:200]}"
    return "done", None


def test_mutated_images_never_break_the_service(fuzz_service: Service, tmp_path: Path) -> None:
    svc = fuzz_service
    started = time.monotonic()
    cases = mutate.cases(BASE_SEED, ITERATIONS, ONLY)
    assert cases, "no cases selected"
    worker = svc.procs["worker"]
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda c: (c, *_run_case(svc, c)), cases))
    elapsed = time.monotonic() - started

    outcomes = collections.Counter(outcome for _, outcome, _ in results)
    print(f"\nfuzz: {len(cases)} cases of seed {BASE_SEED} in {elapsed:.1f}s: {dict(sorted(outcomes.items()))}")
    bad = [(case, outcome, problem) for case, outcome, problem in results if problem]
    if bad:
        folder = tmp_path / "failing"
        folder.mkdir()
        lines = []
        for case, outcome, problem in bad:
            path = folder / f"case-{case.index}.{case.format}"
            path.write_bytes(case.data)
            lines.append(f"- {case.describe()}\n  -> {outcome}: {problem}\n  bytes: {path}")
        only = ",".join(str(case.index) for case, _, _ in bad)
        pytest.fail(
            f"{len(bad)} of {len(cases)} cases went wrong (base seed {BASE_SEED}); replay with\n"
            f"  THUMBIFY_FUZZ_SEED={BASE_SEED} THUMBIFY_FUZZ_ITERATIONS={ITERATIONS} THUMBIFY_FUZZ_ONLY={only} "
            f".venv/bin/python -m pytest tests/test_fuzz.py\n" + "\n".join(lines) + f"\n{svc.log_text()}"
        )

    # The worker lived through it all, and still serves a good job.
    assert worker.poll() is None, f"the worker exited with {worker.returncode}\n{svc.log_text()}"
    assert svc.procs["api"].poll() is None, "the API exited"
    job = svc.run_job(images.photo_like(320, 240), "after-the-fuzz.jpg", sizes="128")
    assert job["status"] == "done", job
    assert not has_traceback((svc.logs_dir / "api.log").read_text(errors="replace")), svc.log_text()
