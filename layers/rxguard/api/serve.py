"""`rxguard serve`: the check API on localhost, for curl and an HIS developer's tests.

By default it runs over the same moto resources as `rxguard run` (`rxguard.offline.
Environment`: every resource of template.yaml, wired in by `rxguard.offline.serve`) and
hands each HTTP request, translated into an API Gateway REST proxy event, to the real
handler `functions/api/app.py` through the offline Lambda router. `--memory` skips moto and serves the resolver over an
in-memory repository (fastest start).

Local-only conveniences: the header `X-Rxguard-Caller: <principal ARN>` plays the SigV4
identity (requestContext.identity.userArn); without `--callers FILE` every caller may do
everything (auth "open"). Request bodies are bounded (`max_body_bytes`, 413 beyond).

    rxguard serve [--port 8080] [--host 127.0.0.1] [--memory] [--callers callers.json]
                  [--max-seconds N]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rxguard.api.resolver import handle
from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings
from rxguard.api.store import InMemoryFindingsStore
from rxguard.kb import get_knowledge_base
from rxguard.repository import InMemoryRepository

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
CALLER_HEADER = "X-Rxguard-Caller"


def proxy_event(
    method: str, target: str, headers: dict[str, str], body: str | None, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as API Gateway sends it to the Lambda."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    caller = headers.get(CALLER_HEADER) or headers.get(CALLER_HEADER.lower())
    now = datetime.now(UTC)
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": parts.path,
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "accountId": "123456789012",
            "identity": {"userArn": caller, "caller": caller, "sourceIp": source_ip},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def answer_headers(answer: dict[str, Any]) -> dict[str, str]:
    """Headers of a proxy answer (Powertools REST answers put them in multiValueHeaders)."""
    headers = {k: ", ".join(str(x) for x in v) for k, v in (answer.get("multiValueHeaders") or {}).items()}
    headers.update({k: str(v) for k, v in (answer.get("headers") or {}).items()})
    return headers


def make_handler(invoke: Invoke, max_body_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rxguard-serve/1"
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
            self.close_connection = True
            self._send(status, {"Content-Type": "application/json", "Connection": "close"}, body)

        def _handle(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._error(400, "bad_request", "Content-Length is not a number")
                return
            if length > max_body_bytes:
                self._error(413, "too_large", f"request body larger than {max_body_bytes} bytes")
                return
            raw = self.rfile.read(length) if length > 0 else b""
            try:
                text = raw.decode("utf-8") if raw else None
            except UnicodeDecodeError:
                self._error(400, "invalid_encoding", "request body is not UTF-8")
                return
            headers = {k: v for k, v in self.headers.items()}
            event = proxy_event(self.command, self.path, headers, text, self.client_address[0])
            answer = invoke(event)
            if "statusCode" not in answer:  # the handler failed: a Lambda error payload
                self._error(502, "handler_error", str(answer.get("errorType", "handler error")))
                return
            out_headers = answer_headers(answer)
            body = answer.get("body") or ""
            data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            self._send(int(answer["statusCode"]), out_headers, data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            # method, path and status only: bodies and query strings may carry patient ids
            sys.stderr.write(f"{self.log_date_time_string()} {self.command} {urlsplit(self.path).path} {args[1]}\n")

    return Handler


def wsgi_app(invoke: Invoke, max_body_bytes: int = 256 * 1024) -> Callable[..., Any]:
    """The same translation as a WSGI app (in-process HTTP for schemathesis and tests)."""
    from http import HTTPStatus

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > max_body_bytes:
            body = json.dumps({"error": {"code": "too_large", "message": "request body too large", "field": None}})
            start_response("413 Request Entity Too Large", [("Content-Type", "application/json")])
            return [body.encode()]
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        target = environ.get("PATH_INFO", "/") + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        text = raw.decode("utf-8", errors="replace") if raw else None
        answer = invoke(proxy_event(environ["REQUEST_METHOD"], target, headers, text))
        status = int(answer.get("statusCode", 502))
        out = answer.get("body") or ""
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            list(answer_headers(answer).items()),
        )
        return [out.encode("utf-8") if isinstance(out, str) else bytes(out)]

    return app


def memory_invoke(settings: ApiSettings) -> Invoke:
    repo = InMemoryRepository()
    services = Services(kb=get_knowledge_base(), repo=repo, store=InMemoryFindingsStore(repo), settings=settings)
    return lambda event: handle(event, None, services)


# Builds the moto-backed invoke (rxguard.offline.serve): the offline harness sits above the
# API, so it hands this in rather than the API importing it.
MotoInvoke = Callable[[ExitStack, "dict[str, Any] | None"], Invoke]


def main(argv: Sequence[str] | None = None, *, moto: MotoInvoke | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rxguard serve", description="serve the check API on localhost")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    parser.add_argument("--memory", action="store_true", help="in-memory repository instead of moto")
    parser.add_argument("--callers", type=Path, help="JSON {principal: {institutions, regulator}}: enforce access")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop by itself after this many seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)

    callers = json.loads(args.callers.read_text(encoding="utf-8")) if args.callers else None
    settings = ApiSettings.model_validate(
        {"auth_mode": "enforce" if callers is not None else "open", "callers": callers or {}}
    )
    if not args.memory and moto is None:
        parser.error("the moto mode runs through `rxguard serve` (rxguard.offline.serve); use --memory here")
    with ExitStack() as stack:
        invoke = memory_invoke(settings) if args.memory or moto is None else moto(stack, callers)
        server = HTTPServer((args.host, args.port), make_handler(invoke, settings.max_body_bytes))
        stack.callback(server.server_close)
        host, port = str(server.server_address[0]), int(server.server_address[1])
        mode = "in-memory" if args.memory else "moto"
        print(f"rxguard serve: listening on http://{host}:{port} ({mode})", flush=True)
        if args.max_seconds is not None:
            timer = threading.Timer(args.max_seconds, server.shutdown)
            timer.daemon = True
            timer.start()
        with suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.2)
    print("rxguard serve: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
