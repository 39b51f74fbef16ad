"""The browser tests' harness: a real server over a populated state, and headless Chromium driven by Playwright.

The state: a synthetic population (rxguard_tools.synth, three monthly files) and the sample
batches (one of which has rejected lines), screened by the domain's own ingestion and
engine into the in-memory services (rxguard.console.demo). The server: the API and the
console mounted in one WSGI app (paths under /v1/ to the API, as `rxguard serve` mounts them), in a
threaded wsgiref server on a free loopback port.

Chromium is Debian's (/usr/bin/chromium): Playwright never downloads a browser here.
Screenshots go to a temporary folder, or to docs/ with RXGUARD_SCREENSHOTS=docs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RXGUARD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
REGULATOR = "arn:aws:iam::123456789012:user/inspector"
REGULATOR_CLEAR = "arn:aws:iam::123456789012:user/chief-inspector"
HOSPITAL = "arn:aws:iam::123456789012:user/his"


def skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -r requirements-dev.txt"
    return None


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def mount(api: Callable[..., Any], console: Callable[..., Any]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = api if str(environ.get("PATH_INFO", "")).startswith("/v1/") else console
        return target(environ, start_response)

    return app


@dataclass
class Site:
    url: str
    services: Any
    sources: Any
    callers: dict[str, Any]
    shots: Path

    def shot(self, page: Any, name: str) -> Path:
        path = self.shots / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=False)
        return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from rxguard.api.resolver import handle
    from rxguard.api.serve import wsgi_app
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store import InMemoryFindingsStore
    from rxguard.console import ConsoleSources, console_app
    from rxguard.console.demo import screen_files
    from rxguard.kb import get_knowledge_base
    from rxguard.privacy import Pseudonymizer
    from rxguard.repository import InMemoryRepository
    from rxguard_tools.synth.generator import SynthConfig, generate
    from rxguard_tools.synth.output import write_population

    kb = get_knowledge_base()
    folder = tmp_path_factory.mktemp("population")
    files = write_population(generate(SynthConfig(patients=400, seed=11, months=4), kb), folder)
    files.append(ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv")  # has rejected lines
    callers = {
        REGULATOR: {"regulator": True},
        REGULATOR_CLEAR: {"regulator": True, "patient_ids": True},
        HOSPITAL: {"institutions": ["H3101050003"]},
    }
    settings = ApiSettings.model_validate({"auth_mode": "enforce", "callers": callers})
    repo = InMemoryRepository()
    services = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=settings)
    sources = ConsoleSources.for_repository(repo, kb)
    screen_files(services, sources, files)
    console = console_app(services, sources, pseudonymizer=Pseudonymizer("browser-tests-key-0123456789"))
    app = mount(wsgi_app(lambda event: handle(event, None, services)), console)
    server = make_server("127.0.0.1", 0, app, server_class=_Threading, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    shots = ROOT / "docs" if os.environ.get("RXGUARD_SCREENSHOTS") == "docs" else tmp_path_factory.mktemp("shots")
    try:
        yield Site(f"http://127.0.0.1:{server.server_port}", services, sources, callers, shots)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        downloads = tempfile.mkdtemp(prefix="rxguard-downloads-")
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, downloads_path=downloads)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Visit:
    page: Any
    requests: list[str]
    errors: list[str]


def open_page(browser: Any, site: Site, principal: str = REGULATOR, lang: str | None = None) -> Visit:
    """A new browser context acting as `principal`; every request and page error recorded."""
    context = browser.new_context(
        extra_http_headers={"X-Rxguard-Caller": principal},
        viewport={"width": 1440, "height": 900},
        locale="zh-CN",
        base_url=site.url,
        accept_downloads=True,
    )
    if lang:
        context.add_cookies([{"name": "rxguard_lang", "value": lang, "url": site.url}])
    page = context.new_page()
    visit = Visit(page, [], [])
    page.on("request", lambda r: visit.requests.append(r.url))
    page.on("pageerror", lambda e: visit.errors.append(str(e)))
    page.on("console", lambda m: visit.errors.append(m.text) if m.type == "error" else None)
    return visit


@pytest.fixture
def visit(browser: Any, site: Site) -> Iterator[Visit]:
    v = open_page(browser, site)
    try:
        yield v
    finally:
        v.page.context.close()


def api_json(site: Site, path: str, principal: str = REGULATOR) -> Any:
    from urllib.request import Request, urlopen

    with urlopen(Request(site.url + path, headers={"X-Rxguard-Caller": principal}), timeout=30) as r:
        return json.loads(r.read())
