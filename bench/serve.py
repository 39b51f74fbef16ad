"""Benchmark of `rxguard serve --state DIR` (uvicorn over the SQLite state) under
concurrent clients: POST /v1/checks of patients with a year of history.

    .venv/bin/python -m bench.serve [--patients 300] [--clients 20] [--requests 50]

A synthetic population of 12 months (bench.engine.population) is recorded into a fresh
state; `rxguard serve` runs in its own process; `clients` keep-alive clients (threads
spread over 4 client processes, so the clients' own GIL does not stand in the
measurement) each send `requests` checks of one proposed monitored line for a patient
among those with the most history. Figures: errors, latency percentiles (wall, as a
client sees it), the server's CPU seconds (from /proc) and its CPU per request.
Figures, not pass/fail; target (issue 11): 20 x 50, 0 errors, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import reference_loop_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]

CLIENT_PROCESSES = 4


def _record(state_dir: str, lines: Sequence[Any]) -> None:
    """The population's lines recorded into a fresh state (5,000 a transaction)."""
    from rxguard.local.state import State

    with State.open(state_dir) as state:
        repo = state.repository()
        for start in range(0, len(lines), 5000):
            repo.record_lines(lines[start : start + 5000])


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process and its children (pre-fork workers),
    each counted once."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or int(fields[1]) == pid:  # itself, or a child of it
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _bodies(lines: list[Any], patients: int) -> tuple[list[dict[str, Any]], int]:
    """Check bodies for the patients with the most history: a monitored drug they take, a day after their last line."""
    by_patient: dict[str, list[Any]] = {}
    for line in lines:
        by_patient.setdefault(line.psn_no, []).append(line)
    ranked = sorted(by_patient, key=lambda p: (-len(by_patient[p]), p))[:patients]
    bodies = []
    for psn in ranked:
        history = by_patient[psn]
        drug = next((x for x in reversed(history) if x.monitored), history[-1])
        at = history[-1].fee_ocur_time + timedelta(days=1)
        bodies.append(
            {
                "psn_no": psn,
                "fixmedins_code": drug.fixmedins_code,
                "med_type": drug.med_type,
                "fee_ocur_time": f"{at:%Y-%m-%d %H:%M:%S}",
                "lines": [{"med_list_codg": drug.med_list_codg, "cnt": 1, "pric": drug.pric}],
            }
        )
    history_lines = statistics.median(len(by_patient[p]) for p in ranked)
    return bodies, int(history_lines)


def _client_process(
    port: int,
    threads: int,
    requests: int,
    bodies: list[dict[str, Any]],
    offset: int,
    queue: Any,
    start: Any = None,
) -> None:
    """`threads` keep-alive clients in this process. With `start` (an Event), each client
    connects, the process says so on `queue` ("ready") and waits for `start`: the load
    begins when every client process is up, not while the later ones still start."""
    samples: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    connected = threading.Barrier(threads + 1)

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        connected.wait()
        if start is not None:
            start.wait()
        mine, bad = [], []
        for i in range(requests):
            body = json.dumps(bodies[(n * requests + i) % len(bodies)]).encode()
            started = time.perf_counter()
            try:
                conn.request("POST", "/v1/checks", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    bad.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                bad.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            samples.extend(mine)
            errors.extend(bad)

    workers = [threading.Thread(target=client, args=(offset + t,)) for t in range(threads)]
    for w in workers:
        w.start()
    connected.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = usage.ru_utime + usage.ru_stime  # the process's start is not the load's
    if start is not None:
        queue.put("ready")
    for w in workers:
        w.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((samples, errors, usage.ru_utime + usage.ru_stime - before))


def _load(
    port: int, clients: int, requests: int, bodies: list[dict[str, Any]], probe: Callable[[], Any] = lambda: None
) -> tuple[list[Any], float, Any]:
    """`clients` keep-alive clients over CLIENT_PROCESSES processes, started together once
    all are connected; (their results, wall seconds from the start, what `probe()` gave at
    the start)."""
    ctx = multiprocessing.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    per_process = [clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES) for i in range(CLIENT_PROCESSES)]
    procs = []
    offset = 0
    for threads in per_process:
        if threads:
            p = ctx.Process(target=_client_process, args=(port, threads, requests, bodies, offset, queue, start))
            p.start()
            procs.append(p)
            offset += threads
    for _ in procs:
        if queue.get() != "ready":
            raise RuntimeError("a client process answered before the start")
    at_start = probe()
    started = time.perf_counter()
    start.set()
    results = [queue.get() for _ in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    return results, wall, at_start


def _figures(results: list[Any], wall: float, server_cpu: float, machine_busy: float) -> dict[str, Any]:
    samples = sorted(s for r in results for s in r[0])
    errors = [e for r in results for e in r[1]]
    client_cpu = sum(r[2] for r in results)

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, round(q * (len(samples) - 1)))] * 1000, 2)

    return {
        "requests": len(samples),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0)},
        "mean_ms": round(statistics.fmean(samples) * 1000, 2),
        "throughput_rps_wall": round(len(samples) / wall, 1),
        "wall_seconds": round(wall, 2),
        "server_cpu_seconds": round(server_cpu, 3),
        "server_cpu_ms_per_request": round(server_cpu / len(samples) * 1000, 3),
        "client_cpu_ms_per_request": round(client_cpu / len(samples) * 1000, 3),
        # What else ran meanwhile: other processes' CPU over the run, in cores (shared machine)
        "other_processes_cores": round(max(0.0, machine_busy - server_cpu - client_cpu) / wall, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "reference_loop_cpu_s": reference_loop_seconds(),  # the core's speed now (bench.reference_loop_seconds)
    }


def baseline(clients: int = 20, requests: int = 50) -> dict[str, Any]:
    """The same load against a WSGI app that does nothing (a fixed 1 kB answer) through
    serve's own server (`rxguard.api.serve.asgi_app` on uvicorn) in a thread of this process:
    the latency this machine gives a server that needs no CPU, at this moment. When it is
    far from zero, other processes hold the cores."""
    import socket

    import uvicorn

    from rxguard.api.serve import asgi_app

    answer = b'{"decision": "pass"}' + b" " * 1004

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [answer]

    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = uvicorn.Server(
        uvicorn.Config(
            asgi_app(app, 1 << 20),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        bodies = [{"psn_no": "0" * 20, "lines": [{"med_list_codg": "X", "cnt": 1, "pric": 1.0}]}]
        results, wall, (cpu_before, busy_before) = _load(
            int(listener.getsockname()[1]),
            clients,
            requests,
            bodies,
            lambda: (time.process_time(), _machine_busy_seconds()),
        )
        figures = _figures(results, wall, time.process_time() - cpu_before, _machine_busy_seconds() - busy_before)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
    return figures


def measure(
    patients: int = 300,
    clients: int = 20,
    requests: int = 50,
    seed: int = 7,
    workers: int | None = None,
    threads: int | None = None,
    rounds: int = 1,
    checked: int = 100,
) -> dict[str, Any]:
    from bench.engine import population

    serve_args = [*(["--threads", str(threads)] if threads else []), *(["--workers", str(workers)] if workers else [])]
    lines = population(patients, 12, seed)
    bodies, history_lines = _bodies(lines, min(patients, checked))
    with tempfile.TemporaryDirectory() as tmp:
        _record(tmp, lines)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)])}
        server = subprocess.Popen(
            [sys.executable, "-m", "rxguard_tools.cli", "serve", "--port", "0", "--state", tmp, *serve_args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
            # warm-up: imports, the knowledge base, the first connection
            _warm = multiprocessing.get_context("spawn").Queue()
            _client_process(port, 1, 20, bodies, 0, _warm)
            _warm.get()
            figures: dict[str, Any] = {}
            for n in range(rounds):
                results, wall, (cpu_before, busy_before) = _load(
                    port, clients, requests, bodies, lambda: (_cpu_seconds(server.pid), _machine_busy_seconds())
                )
                measured = _figures(
                    results, wall, _cpu_seconds(server.pid) - cpu_before, _machine_busy_seconds() - busy_before
                )
                if n == 0:
                    figures = measured
                else:  # the same load again: every worker started, the patients' histories read and kept
                    figures.setdefault("again", []).append(measured)
        finally:
            server.terminate()
            server.wait(timeout=30)
    cores = os.cpu_count() or 1
    per_request = (figures["server_cpu_ms_per_request"] + figures["client_cpu_ms_per_request"]) / 1000
    return {
        "population_lines": len(lines),
        "checked_patients": len(bodies),
        "history_lines_median": history_lines,
        "clients": clients,
        "requests_per_client": requests,
        "serve_args": serve_args,
        **figures,
        # Closed loop: each client waits for its answer before its next request, so even with
        # the machine to ourselves the mean latency is at least clients x CPU a request / cores.
        "cpu_bound_mean_ms": round(clients * per_request / cores * 1000, 2),
        "cores": cores,
        "target": "20 x 50, 0 errors, p99 <= 50 ms",
    }


def in_process(
    patients: int = 300,
    checks: int = 300,
    blocks: int = 5,
    seed: int = 7,
    profile: str | None = None,
    checked: int = 100,
) -> dict[str, Any]:
    """One process, one request at a time through serve's WSGI app over a fresh state (no
    HTTP, no concurrency): the server CPU a check without the machine's sharing. The same
    bodies as `measure`; best and median of `blocks` blocks of `checks` checks. With
    `profile`, a cProfile of one more block is written there (pstats)."""
    import io

    from bench.engine import population
    from rxguard.api.serve import services_invoke, site_app
    from rxguard.api.settings import ApiSettings
    from rxguard.bootstrap import open_local

    lines = population(patients, 12, seed)
    bodies, history_lines = _bodies(lines, min(patients, checked))
    with tempfile.TemporaryDirectory() as tmp:
        _record(tmp, lines)
        settings = ApiSettings.model_validate({"auth_mode": "open", "callers": {}})
        site = open_local(Path(tmp), settings)
        try:
            app = site_app(site.services, services_invoke(site.services), settings.max_body_bytes)
            raw = [json.dumps(b).encode() for b in bodies]
            gc.freeze()  # as `rxguard serve` does before it serves (rxguard.api.serve.main)

            def one(body: bytes) -> None:
                environ = {
                    "REQUEST_METHOD": "POST",
                    "PATH_INFO": "/v1/checks",
                    "CONTENT_TYPE": "application/json",
                    "CONTENT_LENGTH": str(len(body)),
                    "wsgi.input": io.BytesIO(body),
                }
                status: list[str] = []
                app(environ, lambda s, h: status.append(s))
                if not status[0].startswith("200"):
                    raise RuntimeError(f"check answered {status[0]}")

            for body in raw[:20]:  # warm-up: the knowledge base, the engine's caches
                one(body)
            per_block = []
            for b in range(blocks):
                started = time.process_time()
                for i in range(checks):
                    one(raw[(b * checks + i) % len(raw)])
                per_block.append((time.process_time() - started) / checks * 1000)
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
                for i in range(checks):
                    one(raw[i % len(raw)])
                profiler.disable()
                profiler.dump_stats(profile)
        finally:
            site.close()
    return {
        "population_lines": len(lines),
        "checked_patients": len(bodies),
        "history_lines_median": history_lines,
        "checks_per_block": checks,
        "cpu_ms_per_check_best": round(min(per_block), 3),
        "cpu_ms_per_check_median": round(statistics.median(per_block), 3),
        "cpu_ms_per_check_blocks": [round(x, 3) for x in per_block],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "reference_loop_cpu_s": reference_loop_seconds(),  # the core's speed now (bench.reference_loop_seconds)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--checked", type=int, default=100, help="checks spread over this many patients, those with the most history"
    )
    parser.add_argument("--workers", type=int, default=None, help="serve's worker processes (default: serve's)")
    parser.add_argument("--threads", type=int, default=None, help="serve's threads per worker (default: serve's)")
    parser.add_argument(
        "--baseline", action="store_true", help="also the same load on a do-nothing app (the machine's share)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the load this many times on one server (figures of each: 'again')"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="only the CPU a check in one process, one request at a time through the WSGI app (no HTTP)",
    )
    parser.add_argument("--profile", metavar="FILE", help="with --in-process: a cProfile (pstats) of one more block")
    args = parser.parse_args(argv)
    if args.in_process:
        print(json.dumps(in_process(args.patients, profile=args.profile, checked=args.checked), indent=1))
        return 0
    figures = measure(
        args.patients,
        args.clients,
        args.requests,
        workers=args.workers,
        threads=args.threads,
        rounds=args.rounds,
        checked=args.checked,
    )
    if args.baseline:
        figures["baseline_do_nothing_app"] = baseline(args.clients, args.requests)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
