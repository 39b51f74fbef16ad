"""`rxguard.api.serve.asgi_app`: the WSGI app serve builds, run by uvicorn through an ASGI
adapter of ours (the app in the event loop's thread, or in a thread pool with --threads).
Driven here without a socket: the ASGI messages in, the answer's messages out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from rxguard.api.serve import asgi_app, memory_invoke, wsgi_app
from rxguard.api.settings import ApiSettings
from tests.conftest import load_event

OPEN = ApiSettings.model_validate({"auth_mode": "open", "callers": {}})


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "server": ("127.0.0.1", 8080),
        "client": ("10.1.2.3", 51000),
    }


def _call(
    app: Callable[..., Any], scope: dict[str, Any], chunks: list[bytes]
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """The answer's status, headers and body, and how many body messages the app read."""
    pending = list(chunks) or [b""]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    return start["status"], dict(start["headers"]), body["body"], read


def _direct(app: Callable[..., Any], method: str, path: str, body: bytes) -> tuple[int, bytes]:
    import io

    answered: list[str] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    out = b"".join(app(environ, lambda status, headers: answered.append(status)))
    return int(answered[0][:3]), out


@pytest.fixture(scope="module")
def api() -> Callable[..., Any]:
    return wsgi_app(memory_invoke(OPEN))


@pytest.fixture(scope="module")
def small() -> Callable[..., Any]:
    """The API refusing bodies over 4 kB, as serve builds it with that limit."""
    return wsgi_app(memory_invoke(OPEN), max_body_bytes=4096)


@pytest.mark.parametrize("threads", [None, 2])
def test_a_check_answers_as_the_wsgi_app_does(api: Callable[..., Any], threads: int | None) -> None:
    # Given the sample 3101 check, and the adapter running the app in the loop or in a thread pool
    body = load_event("api/check_3101.json")["body"].encode()
    executor = ThreadPoolExecutor(threads) if threads else None
    try:
        adapter = asgi_app(api, 1024 * 1024, executor)
        # When it is sent in two body messages
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        status, answer_headers, answer, _ = _call(
            adapter, _scope("POST", "/v1/checks", headers), [body[:100], body[100:]]
        )
    finally:
        if executor is not None:
            executor.shutdown()
    # Then the answer is the WSGI app's, with its length (no chunked encoding)
    direct_status, direct = _direct(api, "POST", "/v1/checks", body)
    assert status == direct_status == 200
    first, second = json.loads(answer), json.loads(direct)
    assert first["infcode"] == second["infcode"] == 0
    assert first["output"]["result"] == second["output"]["result"]
    assert answer_headers[b"content-length"] == str(len(answer)).encode()
    assert answer_headers[b"content-type"].startswith(b"application/json")


def test_a_body_declared_too_large_is_refused_without_reading_it(small: Callable[..., Any]) -> None:
    # Given a request declaring 10 MB
    adapter = asgi_app(small, 4096)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"10485760")]
    # When it reaches the adapter
    status, _, answer, read = _call(adapter, _scope("POST", "/v1/checks", headers), [b"{" * 4096])
    # Then the app answers 413 in JSON, and no byte of the body was read
    assert status == 413 and json.loads(answer)["error"]["code"] == "too_large"
    assert read == 0


def test_a_chunked_body_is_read_only_up_to_the_limit(small: Callable[..., Any]) -> None:
    # Given a body without a length, sent in 100 chunks of 1 kB (beyond the 4 kB limit)
    adapter = asgi_app(small, 4096)
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    status, _, answer, read = _call(adapter, _scope("POST", "/v1/checks", headers), [b" " * 1024] * 100)
    # Then the adapter stopped reading past the limit and the app answered 413
    assert status == 413 and json.loads(answer)["error"]["code"] == "too_large"
    assert read == 5


def test_the_environ_follows_pep_3333() -> None:
    # Given a WSGI app that answers its environ
    seen: dict[str, Any] = {}

    def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    adapter = asgi_app(echo, 1024)
    headers = [(b"x-rxguard-caller", b"arn:aws:iam::1:user/a"), (b"accept", b"a"), (b"accept", b"b")]
    # When a request with a non-ASCII path, a query and repeated headers comes in
    status, answer_headers, answer, _ = _call(adapter, _scope("GET", "/console/患者", headers, b"q=1&r=2"), [])
    # Then the path is its UTF-8 bytes as latin-1, the query as sent, headers as HTTP_*, joined when repeated
    assert (status, answer) == (200, b"ok") and answer_headers[b"content-length"] == b"2"
    assert seen["PATH_INFO"] == "/console/患者".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "q=1&r=2"
    assert seen["HTTP_X_RXGUARD_CALLER"] == "arn:aws:iam::1:user/a"
    assert seen["HTTP_ACCEPT"] == "a,b"
    assert seen["REMOTE_ADDR"] == "10.1.2.3" and seen["SERVER_PORT"] == "8080"
    assert seen["CONTENT_LENGTH"] == "0" and seen["wsgi.input"].read() == b""
    assert seen["wsgi.url_scheme"] == "http" and seen["wsgi.version"] == (1, 0)
