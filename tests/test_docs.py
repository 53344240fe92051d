"""The API's documentation pages work offline: `/docs` (Swagger UI) and `/redoc` (ReDoc), rendered by a real headless
Chromium whose every request outside loopback goes to a dead proxy, list the API's operations; `/` leads to `/docs`.

Needs Debian's `chromium` (`.ci/run` installs it); skipped, saying so, without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.service import Service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

# Every documented operation, as the pages show it.
OPERATIONS = {
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("DELETE", "/v1/jobs/{job_id}"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/{batch_id}"),
    ("GET", "/v1/batches/{batch_id}/jobs"),
    ("DELETE", "/v1/batches/{batch_id}"),
    ("POST", "/v1/uploads"),
    ("POST", "/v1/uploads/{upload_id}/complete"),
    ("GET", "/v1/uploads/{upload_id}"),
    ("DELETE", "/v1/uploads/{upload_id}"),
    ("GET", "/v1/thumbnails/{job_id}/{name}"),
    ("GET", "/v1/presets"),
    ("HEAD", "/v1/thumbnails/{job_id}/{name}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM of `url` once its scripts ran, in headless Chromium with no way out of loopback: every other host goes
    to a proxy on the discard port, where nothing listens."""
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--virtual-time-budget=15000",
        "--window-size=1280,2400",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class Operations(HTMLParser):
    """(method, path) of each operation in Swagger UI's DOM: an `opblock` holds a `opblock-summary-method` span and
    a `opblock-summary-path` element carrying `data-path`."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[tuple[str, str]] = set()
        self._method: str | None = None
        self._in_method = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if "opblock-summary-method" in classes:
            self._in_method = True
        elif "opblock-summary-path" in classes and self._method and attributes.get("data-path"):
            self.found.add((self._method, attributes["data-path"]))

    def handle_data(self, data: str) -> None:
        if self._in_method and data.strip():
            self._method = data.strip().upper()
            self._in_method = False


def test_root_leads_to_the_docs(service: Service) -> None:
    r = service.client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307), r.text
    assert r.headers["location"] == "/docs"
    assert service.client.get("/", follow_redirects=True).url.path == "/docs"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_nothing_from_outside(service: Service, page: str) -> None:
    html = service.client.get(page).text
    sources = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert sources, html
    assert all(s.startswith("/") and not s.startswith("//") for s in sources), sources


def test_swagger_ui_renders_every_operation_offline(service: Service, tmp_path: Path) -> None:
    dom = rendered_dom(f"{service.base_url}/docs", tmp_path)
    parser = Operations()
    parser.feed(dom)
    assert parser.found == OPERATIONS, dom[-3000:]


def test_redoc_renders_every_operation_offline(service: Service, tmp_path: Path) -> None:
    dom = rendered_dom(f"{service.base_url}/redoc", tmp_path)
    # ReDoc shows each operation's method and path in its right-hand panel: `<span class="... http-verb post">post
    # </span><span class="...">/v1/jobs</span>`.
    shown = re.findall(r'class="[^"]*\bhttp-verb (\w+)">\w+</span><span[^>]*>([^<]+)</span>', dom)
    assert {(method.upper(), path) for method, path in shown} == OPERATIONS, dom[-3000:]
