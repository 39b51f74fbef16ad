"""`rxguard serve`: the check API on this machine, for a bureau's own servers, curl and an
HIS developer's tests, served by uvicorn (a production ASGI server: an event loop with a C
HTTP parser, so a slow client never stalls the others) in pre-forked worker processes.

    rxguard serve [--state DIR] [--port 8080] [--host 127.0.0.1] [--callers callers.json]
                  [--workers N] [--threads N] [--max-seconds N]
    rxguard serve --simulate-aws ...   the real Lambda handler over moto (as on AWS)
    rxguard serve --memory ...         an empty in-memory repository (fastest start)

By default (`--state DIR`, default `out/state`, the state `make run` / `rxguard run` keeps)
the API runs over the SQLite state of `rxguard.local.state`: the findings a batch run
wrote are listed and reviewed here, and a dispensation posted here is history for the
next batch; both may run at once (docs/state.md). `--simulate-aws` keeps the former
behaviour: every resource of template.yaml in moto and each request, as an API Gateway
REST proxy event, handed to the real handler `functions/api/app.py`.

Paths under `/v1/` are the API. Other paths go to the console (`rxguard.console.app`,
`console_app(services)`) when it is wired in, else they answer 404 as the API does.

This module is the HTTP side (the API layer); the state, the console and the moto harness
sit above the API, so `rxguard_tools.offline.serve` (the `rxguard serve` entry point) hands
`main` what builds them: `local` (rxguard.bootstrap.open_local), `console`
(rxguard.console.app.console_app) and `moto` (rxguard_tools.offline.serve.moto_invoke).

Local-only conveniences: the header `X-Rxguard-Caller: <principal ARN>` plays the SigV4
identity (requestContext.identity.userArn); without `--callers FILE` every caller may do
everything (auth "open"). Request bodies are bounded (`max_body_bytes`, 413 beyond).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rxguard.api.service import Services
from rxguard.api.settings import ApiSettings

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
WsgiApp = Callable[..., Any]
CALLER_HEADER = "X-Rxguard-Caller"
DEFAULT_STATE = Path("out/state")  # where `make run` keeps it
DEFAULT_THREADS = 8
# Over a state, the app runs in each worker's event loop (no thread): a worker resolves one
# request at a time anyway (`services_invoke`), and handing each request to a thread and its
# answer back cost more than HTTP itself (docs/api.md: on waitress, with one app thread, one
# client cost 2.1 ms of server CPU a check where the app alone takes 1.3).
STATE_THREADS = 1
KEEP_ALIVE_SECONDS = 120  # an idle keep-alive connection is closed after this (an HIS keeps one open)


@dataclass
class LocalSite:
    """The API's services over a local state, as the layer above builds them."""

    services: Services
    where: str  # for people: the state's file
    close: Callable[[], None]  # release the state's connections (before forking workers, at exit)
    # upkeep run beside the workers until the event is set (the state's WAL checkpoints):
    # in the parent of pre-forked workers, else in a thread of the one process
    maintain: Callable[[threading.Event], None] | None = None


# (state directory, API settings) -> the site; raises with a message for people when the state cannot be opened
LocalOpener = Callable[[Path, ApiSettings], LocalSite]
ConsoleFactory = Callable[[Services], WsgiApp]  # rxguard.console.app.console_app
# Builds the moto-backed invoke (rxguard_tools.offline.serve): the offline harness sits above the
# API, so it hands this in rather than the API importing it.
MotoInvoke = Callable[[ExitStack, "dict[str, Any] | None"], Invoke]


def proxy_event(
    method: str, target: str, headers: dict[str, str], body: str | None, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as API Gateway sends it to the Lambda."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    # HTTP header names are case-insensitive (RFC 9110 §5.1): X-RXGUARD-CALLER is the same header
    caller = next((v for k, v in headers.items() if k.lower() == CALLER_HEADER.lower()), None)
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


def wsgi_app(invoke: Invoke, max_body_bytes: int = 256 * 1024) -> Callable[..., Any]:
    """HTTP to an API Gateway REST proxy event and back, as a WSGI app (what serve runs
    through `asgi_app`; in-process HTTP for schemathesis and tests)."""
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
        source_ip = str(environ.get("REMOTE_ADDR") or "127.0.0.1")
        answer = invoke(proxy_event(environ["REQUEST_METHOD"], target, headers, text, source_ip))
        status = int(answer.get("statusCode", 502))
        out = answer.get("body") or ""
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            list(answer_headers(answer).items()),
        )
        return [out.encode("utf-8") if isinstance(out, str) else bytes(out)]

    return app


def memory_services(settings: ApiSettings) -> Services:
    from rxguard.api.store import InMemoryFindingsStore
    from rxguard.api.subscriptions import InMemorySubscriptions
    from rxguard.kb import get_knowledge_base
    from rxguard.repository import InMemoryRepository

    repo = InMemoryRepository()
    return Services(
        kb=get_knowledge_base(),
        repo=repo,
        store=InMemoryFindingsStore(repo),
        settings=settings,
        subscriptions=InMemorySubscriptions(),
    )


def services_invoke(services: Services) -> Invoke:
    """The resolver in this process. Powertools' resolver keeps the current request on the
    app object, so requests are resolved one at a time (the work is CPU-bound under the
    GIL anyway); the server's event loop still reads and writes every connection meanwhile."""
    from rxguard.api.resolver import handle

    lock = threading.Lock()

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return handle(event, None, services)

    return invoke


def memory_invoke(settings: ApiSettings) -> Invoke:
    return services_invoke(memory_services(settings))


def site_app(
    services: Services | None, invoke: Invoke, max_body_bytes: int, console: ConsoleFactory | None = None
) -> WsgiApp:
    """The WSGI app of serve: `/v1/...` to the API, other paths to the console when one is
    given (`console(services)`), else to the API (404)."""
    api = wsgi_app(invoke, max_body_bytes)
    if console is None or services is None:
        return api
    pages = console(services)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path == "/v1" or path.startswith("/v1/"):
            return api(environ, start_response)
        return pages(environ, start_response)

    return app


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def main(
    argv: Sequence[str] | None = None,
    *,
    moto: MotoInvoke | None = None,
    local: LocalOpener | None = None,
    console: ConsoleFactory | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog="rxguard serve", description="serve the check API on this machine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--state", type=Path, metavar="DIR", help=f"state directory shared with `rxguard run` (default {DEFAULT_STATE})"
    )
    mode.add_argument(
        "--simulate-aws", action="store_true", help="the real Lambda handler over moto (template.yaml's resources)"
    )
    mode.add_argument("--memory", action="store_true", help="an empty in-memory repository")
    parser.add_argument("--callers", type=Path, help="JSON {principal: {institutions, regulator}}: enforce access")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"threads running the app per worker process; 1 runs it in the event loop (default {STATE_THREADS} over "
        f"a state, else {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port, --state only (default: the cores, at most 4; elsewhere 1)",
    )
    parser.add_argument("--max-seconds", type=float, default=None, help="stop by itself after this many seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)

    callers = json.loads(args.callers.read_text(encoding="utf-8")) if args.callers else None
    settings = ApiSettings.model_validate(
        {"auth_mode": "enforce" if callers is not None else "open", "callers": callers or {}}
    )
    if args.simulate_aws and moto is None:
        parser.error("--simulate-aws runs through `rxguard serve` (rxguard_tools.offline.serve)")
    if not (args.simulate_aws or args.memory) and local is None:
        parser.error("the state runs through `rxguard serve` (rxguard_tools.offline.serve); use --memory here")
    with ExitStack() as stack:
        services: Services | None = None
        site: LocalSite | None = None
        workers = 1
        if args.simulate_aws:
            assert moto is not None
            invoke, where = moto(stack, callers), "moto (--simulate-aws)"
        elif args.memory:
            services = memory_services(settings)
            invoke, where = services_invoke(services), "in-memory"
        else:
            assert local is not None
            try:
                site = local(args.state or DEFAULT_STATE, settings)
            except Exception as exc:
                print(f"rxguard serve: {exc}", file=sys.stderr)
                return 1
            stack.callback(site.close)
            services = site.services
            invoke, where = services_invoke(services), site.where
            workers = args.workers or _default_workers()
            if not hasattr(os, "fork"):
                workers = 1
            if workers > 1:
                where += f", {workers} workers"
        app = site_app(services, invoke, settings.max_body_bytes, console)
        threads = args.threads or (STATE_THREADS if site is not None else DEFAULT_THREADS)
        if site is not None and workers > 1:
            site.close()  # no SQLite connection may cross a fork (console reads too): each worker opens its own
        # What is built so far (the knowledge base, the resolver and its models, the imports)
        # lives as long as the server: frozen, no garbage collection goes through it again (a
        # patient's first check in a worker decodes and walks its history, thousands of objects
        # that set off full collections: 1.5 of its 4.3 ms went to them), and forked workers
        # keep sharing its memory pages
        import uvicorn  # noqa: F401  # local serving only, not in the Lambda layer: imported once, before the fork

        gc.freeze()
        try:
            listeners = _listeners(args.host, args.port, workers)
        except OSError as exc:
            print(f"rxguard serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        for listener in listeners:
            stack.callback(listener.close)
        port = int(listeners[0].getsockname()[1])
        print(f"rxguard serve: listening on http://{args.host}:{port} ({where})", flush=True)
        maintain = site.maintain if site is not None else None
        if workers > 1:
            _prefork(app, listeners, workers, threads, settings, args.max_seconds, maintain)
        else:
            with _upkeep(maintain):
                _serve(app, listeners[0], threads, settings, args.max_seconds)
    print("rxguard serve: stopped", flush=True)
    return 0


def asgi_app(app: WsgiApp, max_body_bytes: int, executor: Any = None) -> Callable[..., Awaitable[None]]:
    """`app` (WSGI) as an ASGI HTTP app for uvicorn. Without `executor` the app runs in the
    event loop's own thread, one request at a time: no hand-over to a worker thread and
    back, no GIL passed between them (a check is CPU in Python, and one process resolves one
    request at a time anyway); the loop still reads and writes every other connection
    between requests, so a slow client stalls nobody. With `executor` (a thread pool) the
    app runs there (`--threads` above 1). A body declared or read beyond `max_body_bytes`
    is not read further: the app answers 413 from its length."""

    def call(environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        answered: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            answered[:] = [status, headers]
            return lambda data: None  # the legacy write(): our apps return their body

        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = answered
        out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if not any(k == b"content-length" for k, _ in out):
            out.append((b"content-length", str(len(body)).encode()))
        return int(status[:3]), out, body

    async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
            "PATH_INFO": scope["path"].encode().decode("latin-1"),  # PEP 3333: the bytes as latin-1
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": executor is not None,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        server, client = scope.get("server") or ("127.0.0.1", 0), scope.get("client")
        environ["SERVER_NAME"], environ["SERVER_PORT"] = str(server[0]), str(server[1])
        environ["REMOTE_ADDR"] = str(client[0]) if client else "127.0.0.1"
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
            key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        declared = environ.get("CONTENT_LENGTH", "")
        body = b""
        if not (declared.isdigit() and int(declared) > max_body_bytes):
            chunks: list[bytes] = []
            size, more = 0, True
            while more and size <= max_body_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = bool(message.get("more_body"))
            body = b"".join(chunks)
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        if executor is None:
            status, headers, out = call(environ)
        else:
            status, headers, out = await asyncio.get_running_loop().run_in_executor(executor, call, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return asgi


def _serve(
    app: WsgiApp,
    listener: socket.socket,
    threads: int,
    settings: ApiSettings,
    max_seconds: float | None,
    parent: int | None = None,
) -> None:
    """uvicorn on an already listening socket, in this process, until interrupted (SIGINT,
    SIGTERM) or `max_seconds` have passed; a pre-forked worker also stops when its `parent`
    is gone."""
    import uvicorn  # local serving only: not in the Lambda layer

    executor = None
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(threads, thread_name_prefix="rxguard-serve")
    config = uvicorn.Config(
        asgi_app(app, settings.max_body_bytes, executor),
        log_config=None,  # the process's own logging, untouched
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        backlog=1024,
        server_header=False,
        # asyncio's own loop, not uvloop: with the app run in the loop, uvloop served some
        # connections far behind others (one worker, wrk 20 connections: p99 138-354 ms, max
        # up to 619, against 73-122 and 81-132 on asyncio's loop, the CPU a check the same)
        loop="asyncio",
    )
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True  # the loop looks every 0.1 s, answers what it has, and returns

    watchers: list[threading.Thread] = []
    if max_seconds is not None:
        watchers.append(threading.Timer(max_seconds, stop))
    if parent is not None:
        watchers.append(threading.Thread(target=_orphan_watch, args=(parent, stop)))
    for watcher in watchers:
        watcher.daemon = True
        watcher.start()
    # uvicorn takes SIGINT / SIGTERM while it serves, stops gracefully, then raises the signal
    # again to the handler it found: a quiet one here, so the process ends normally after it
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[listener])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _upkeep(maintain: Callable[[threading.Event], None] | None) -> Iterator[None]:
    """`maintain(stop)` in a thread while the block runs; stopped and waited for on leaving."""
    if maintain is None:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=maintain, args=(stop,), name="rxguard-upkeep", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _listeners(host: str, port: int, workers: int) -> list[socket.socket]:
    """The listening sockets: one, or one per pre-forked worker on the same port
    (SO_REUSEPORT: the kernel spreads new connections over them by their addresses). One
    socket shared by the workers went to whichever woke first, and it took every connection
    pending (the event loop accepts until none is left): 20 clients connecting at once were
    split 18 / 2, and the busier worker's clients waited for 17 others at every check.
    TCP_NODELAY on each (accepted sockets inherit it): an answer's head and body go out as
    two writes, and a client delaying its ACK would hold the body back ~40 ms."""
    reuse = workers > 1 and hasattr(socket, "SO_REUSEPORT")
    if reuse and port:
        # the port must be free: SO_REUSEPORT would otherwise let this server share it with
        # another one already there (another `rxguard serve`, perhaps over another state)
        with socket.socket() as probe:  # bound, never listening: no connection can land on it
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server: TIME_WAIT is no conflict
            probe.bind((host, port))
    first = socket.create_server((host, port), backlog=1024, reuse_port=reuse)
    sockets = [first]
    if reuse:
        bound = first.getsockname()[:2]
        sockets += [socket.create_server(bound, backlog=1024, reuse_port=True) for _ in range(workers - 1)]
    for listener in sockets:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sockets


def _prefork(
    app: Callable[..., Any],
    listeners: list[socket.socket],
    workers: int,
    threads: int,
    settings: ApiSettings,
    max_seconds: float | None,
    maintain: Callable[[threading.Event], None] | None = None,
) -> None:
    """Pre-fork: `workers` processes, each on its own listening socket of the port (or all
    on the one, where SO_REUSEPORT is missing), so checks use every core; the resolver and
    the engine are Python, one request at a time per process. The parent waits, passes
    SIGTERM / SIGINT on, and stops them after `max_seconds`; a worker whose parent is gone
    stops itself. Meanwhile the parent runs `maintain` (the state's checkpoints), on the
    workers' behalf and off their requests' path; its thread starts after the forks."""
    parent = os.getpid()
    children: list[int] = []
    for number in range(workers):
        listener = listeners[number % len(listeners)]
        pid = os.fork()
        if pid == 0:  # a worker
            code = 0
            try:
                for other in listeners:  # a worker's own socket closes with it: the kernel sends the others on
                    if other is not listener:
                        other.close()
                _serve(app, listener, threads, settings, None, parent)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    if len(listeners) > 1:  # each is a worker's own now
        for listener in listeners:
            listener.close()

    def stop(*_: object) -> None:
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    timer = None
    if max_seconds is not None:
        timer = threading.Timer(max_seconds, stop)
        timer.daemon = True
        timer.start()
    try:
        with _upkeep(maintain):
            for child in children:
                while True:
                    try:
                        os.waitpid(child, 0)
                        break
                    except ChildProcessError:
                        break
                    except InterruptedError:
                        continue
    finally:
        if timer is not None:
            timer.cancel()
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _orphan_watch(parent: int, stop: Callable[[], None]) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    stop()


if __name__ == "__main__":
    sys.exit(main())
