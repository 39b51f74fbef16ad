"""`rxguard serve` over HTTP on 127.0.0.1 (uvicorn): a subprocess on a free port that stops
by itself (--max-seconds), over a state directory (the default), in moto mode
(--simulate-aws: the real handler over the template's resources) and in memory mode;
plus schemathesis against openapi.json, in-process through the same HTTP-to-proxy-event
translation (WSGI), where no generated request may cause a 5xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from tests.conftest import CHILD_PYTHONPATH, ROOT, load_event

START_TIMEOUT = 60
SERVE = [sys.executable, "-m", "rxguard_tools.cli", "serve"]
SERVE_ENV = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}


@contextmanager
def running_serve(*args: str, max_seconds: int = 60) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`rxguard serve --port 0 ARGS` in its own process, stopped on leaving: (it, its base URL)."""
    command = [*SERVE, "--port", "0", "--max-seconds", str(max_seconds), *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=SERVE_ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "rxguard serve: listening on http://127.0.0.1:PORT (mode)"
        assert "listening on" in line, f"serve did not start: {line!r}"
        yield proc, line.split("listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module", params=["state", "moto", "memory"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "memory":
        mode = ["--memory"]
    elif request.param == "moto":
        mode = ["--simulate-aws"]
    else:
        mode = ["--state", str(tmp_path_factory.mktemp("state"))]
    with running_serve(*mode, max_seconds=80) as (_, base):
        yield base


def http(base: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body, ensure_ascii=False).encode())
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_check_dispense_and_read_back_over_http(server: str) -> None:
    # Given the sample dispensing recorded over HTTP
    status, recorded = http(
        server, "POST", "/v1/dispensations", json.loads(load_event("api/dispensation.json")["body"])
    )
    assert status == 200 and recorded["recorded"]
    # When the HIS checks a 3101 request and the pharmacy a refill
    status, national = http(server, "POST", "/v1/checks", json.loads(load_event("api/check_3101.json")["body"]))
    check = json.loads(load_event("api/check.json")["body"])
    check["fee_ocur_time"] = "2026-03-05 10:00:00"
    status_refill, refill = http(server, "POST", "/v1/checks", check)
    # Then both answer in their shapes, and the refill sees the recorded dispensing
    assert status == 200 and national["infcode"] == 0 and national["output"]["result"]
    assert status_refill == 200
    assert "early-refill" in {h["rule_id"] for line in refill["lines"] for h in line["hits"]}
    # And the findings of the dispensing are listed
    status, page = http(server, "GET", "/v1/findings?institution=P4401001")
    assert status == 200 and page["items"]


def test_errors_over_http(server: str) -> None:
    status, answer = http(server, "POST", "/v1/checks", {"psn_no": "x", "fixmedins_code": "P1", "lines": [{}]})
    assert status == 400 and answer["error"]["field"] == "lines[0].med_list_codg"
    status, answer = http(server, "POST", "/v1/checks", raw=b"{" + b" " * (300 * 1024) + b"}")
    assert (status, answer["error"]["code"]) == (413, "too_large")
    status, answer = http(server, "GET", "/v1/openapi.json")
    assert status == 200 and answer == json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))


def test_schemathesis_finds_no_server_error(kb: Any) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from rxguard.api.serve import memory_invoke, wsgi_app
    from rxguard.api.settings import ApiSettings

    # Given the API in process (in-memory repository), behind the HTTP translation
    app = wsgi_app(memory_invoke(ApiSettings(auth_mode="open")))
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    failures: list[str] = []
    statuses: dict[int, int] = {}

    # When schemathesis sends requests generated from the document to every operation
    for result in schema.get_all_operations():
        operation = result.ok()

        # request bodies (three nested request shapes) are slow to generate: fewer of them, bounded time
        examples = 10 if operation.method.upper() == "POST" else 30

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            try:
                case.validate_response(
                    response,
                    checks=[
                        not_a_server_error,
                        status_code_conformance,
                        content_type_conformance,
                        response_schema_conformance,
                    ],
                )
            except Exception as exc:  # collect, so one run reports every operation
                failures.append(f"{case.method} {case.path}: {exc}"[:500])

        run()
    # Then no request caused a server error, an undocumented status or an answer off its schema
    assert failures == []
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses


def test_serve_enforces_grants_with_the_caller_header(tmp_path: Any) -> None:
    # Given `rxguard serve --callers` with the sample grants, over a state directory
    callers = str(ROOT / "events/api/callers.json")
    with running_serve("--state", str(tmp_path), "--callers", callers, max_seconds=40) as (_, base):
        body = json.dumps(json.loads(load_event("api/check.json")["body"])).encode()

        def post(caller: str | None) -> int:
            headers = {"Content-Type": "application/json", **({"X-Rxguard-Caller": caller} if caller else {})}
            request = urllib.request.Request(base + "/v1/checks", data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        # When the pharmacy, the hospital and nobody post the pharmacy's check
        # Then only the pharmacy (and a regulator) may
        assert post("arn:aws:iam::123456789012:user/his-P4401001") == 200
        assert post("arn:aws:iam::123456789012:role/bureau-auditor") == 200
        assert post("arn:aws:iam::123456789012:user/his-H6108001") == 403
        assert post(None) == 403


@pytest.mark.parametrize("mode", [["--state", "STATE", "--workers", "1"], ["--memory"]])
def test_a_slow_client_stalls_no_other(mode: list[str], tmp_path: Any) -> None:
    # Given serve with one worker process (the app in its event loop over a state; a thread pool in memory)
    import socket
    import time

    with running_serve(*[str(tmp_path) if a == "STATE" else a for a in mode]) as (_, base):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        body = load_event("api/check_3101.json")["body"].encode()
        # And a client that sent its headers and half its body, and goes quiet
        slow = socket.create_connection((host, int(port)), timeout=30)
        slow.sendall(
            b"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        # When another client checks meanwhile, three times
        started = time.monotonic()
        answers = [http(base, "POST", "/v1/checks", json.loads(body)) for _ in range(3)]
        waited = time.monotonic() - started
        # Then each is answered at once, the slow one still pending
        assert [status for status, _ in answers] == [200, 200, 200]
        assert waited < 10
        # And the slow client, once it sends the rest, is answered too
        slow.sendall(body[len(body) // 2 :])
        head = slow.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        slow.close()


def _established_by_process(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to `port` each process holds (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    counts = {}
    for pid in pids:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        counts[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return counts


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux /proc")
def test_connections_opened_at_once_are_spread_over_the_workers(tmp_path: Any) -> None:
    # Given serve over a state with two worker processes
    import socket

    with running_serve("--state", str(tmp_path), "--workers", "2") as (proc, base), ExitStack() as open_sockets:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        # When 24 keep-alive clients connect at once, then each asks for the rules
        clients = [
            open_sockets.enter_context(socket.create_connection((host, int(port)), timeout=30)) for _ in range(24)
        ]
        for client in clients:
            client.sendall(b"GET /v1/rules HTTP/1.1\r\nHost: x\r\n\r\n")
        for client in clients:
            assert client.recv(64).startswith(b"HTTP/1.1 200")
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == proc.pid]
        held = _established_by_process(int(port), workers)
        # Then both workers hold some of them (one socket shared by both gave one worker 18 of 20)
        assert len(held) == 2 and sum(held.values()) == 24
        assert min(held.values()) >= 3, held


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux /proc")
def test_when_a_worker_dies_the_other_takes_every_new_connection(tmp_path: Any) -> None:
    # Given serve over a state with two workers (a listening socket each), one of them killed
    import signal
    import time

    with running_serve("--state", str(tmp_path), "--workers", "2") as (proc, base):
        assert http(base, "GET", "/v1/rules")[0] == 200
        workers = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(1.0)
        # When clients connect, each on a connection of its own
        statuses = [http(base, "GET", "/v1/rules")[0] for _ in range(6)]
        # Then every one is answered, and the server is still up
        assert statuses == [200] * 6 and proc.poll() is None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def test_a_second_server_on_a_busy_port_is_refused(tmp_path: Any) -> None:
    # Given serve over a state with two workers
    with running_serve("--state", str(tmp_path / "a"), "--workers", "2") as (_, base):
        port = base.rsplit(":", 1)[1]
        # When another serve, over another state, is started on the same port
        second = subprocess.run(
            [*SERVE, "--max-seconds", "60", "--workers", "2", "--port", port, "--state", str(tmp_path / "b")],
            cwd=ROOT,
            env=SERVE_ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # Then it is refused with a clear message, and shares none of the first one's connections
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
        assert "listening on" not in second.stdout
        status, _ = http(base, "GET", "/v1/rules")
        assert status == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_checkpoints_the_checks_wal_beside_its_workers(tmp_path: Any, workers: str) -> None:
    # Given serve over a state (one process, or a parent and two workers)
    import time

    checks = tmp_path / "checks.db"
    with running_serve("--state", str(tmp_path), "--workers", workers) as (_, base):
        body = json.loads(load_event("api/check.json")["body"])
        assert http(base, "POST", "/v1/checks", body)[0] == 200
        time.sleep(1.0)  # what the first check wrote may be copied already
        size = checks.stat().st_size
        # When checks write their access records (pages of checks.db's WAL; the workers' own
        # automatic checkpoint waits for 8,192 of them)
        for n in range(150):
            body["psn_no"] = f"6101{n:016d}"
            assert http(base, "POST", "/v1/checks", body)[0] == 200
        # Then, while serve runs, the pages reach the database file: a checkpoint off the
        # workers' path copied them
        deadline = time.monotonic() + 10
        while checks.stat().st_size <= size and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checks.stat().st_size > size
