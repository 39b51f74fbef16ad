"""Cost against the length of one patient's history: a pre-dispensing check and a
screening of one new line, at 60, 240, 960 and 3,000 history lines (CPU time, one core),
and the size of a 200-line check answer (issue 13: linear cost, bounded answers).

    .venv/bin/python -m bench.history [--sizes 60 240 960 3000] [--repeats 5]

The history is a heavy one on purpose (a patient buying clopidogrel and a statin every
two or three days at three pharmacies, with traceability codes, visits, spending):
every supply rule fires on most lines, so findings and their evidence grow with it.
Figures, not pass/fail; `measure()` returns them for `make bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools"), str(ROOT)]

SIZES = (60, 240, 960, 3000)
DRUGS = ("XB01AC04A001", "XC10AA07A001", "XN02AX02A001")  # clopidogrel, rosuvastatin, tramadol
SHOPS = ("P3101010001", "P3101040002", "P3101050003")
START = datetime(2025, 2, 1, 9, 0)


def history(kb: Any, n: int, psn: str = "BENCH0001", start: datetime = START) -> list[Any]:
    """`n` lines of one patient, about 1.3 a day, rotating drugs and pharmacies, each with a code."""
    from rxguard.engine.factory import make_line

    lines = []
    for i in range(n):
        when = start + timedelta(hours=18 * i)
        lines.append(
            make_line(
                kb,
                psn_no=psn,
                fixmedins_code=SHOPS[(i // 3) % 3],
                drug_code=DRUGS[i % 3],
                when=when,
                packs=1,
                feedetl_sn=f"H{i:06d}",
                trace_codes=[f"8100000{i:013d}"],
                admdvs="310101",
            )
        )
    return lines


def _cpu(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def measure(sizes: Sequence[int] = SIZES, repeats: int = 5) -> dict[str, Any]:
    from rxguard.engine.factory import make_line
    from rxguard.kb import get_knowledge_base
    from rxguard.models import Scene
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import check_lines, engine_for, screen_lines

    kb = get_knowledge_base()
    rows = []
    for n in sizes:
        lines = history(kb, n)
        repo = InMemoryRepository()
        screen_lines(lines, repo, kb)
        last = lines[-1].fee_ocur_time
        proposal = make_line(
            kb, psn_no="BENCH0001", fixmedins_code=SHOPS[0], drug_code=DRUGS[0], when=last + timedelta(hours=2),
            feedetl_sn="PROPOSED", admdvs="310101",
        )  # fmt: skip
        engine = engine_for(kb, (Scene.PRE,))

        def first_check(proposal: Any = proposal, repo: Any = repo, engine: Any = engine) -> None:
            engine.forget_histories()  # the first check of the patient: its history walked
            check_lines([proposal], repo, kb)

        check_s = _cpu(first_check, repeats)
        check_lines([proposal], repo, kb)
        again_s = _cpu(lambda proposal=proposal, repo=repo: check_lines([proposal], repo, kb), repeats)
        counter = iter(range(10**6))

        def screen_one(repo: Any = repo, last: datetime = last, counter: Any = counter) -> None:
            k = next(counter)
            line = make_line(
                kb, psn_no="BENCH0001", fixmedins_code=SHOPS[1], drug_code=DRUGS[1],
                when=last + timedelta(hours=3 + k), feedetl_sn=f"NEW{k:06d}", admdvs="310101",
            )  # fmt: skip
            screen_lines([line], repo, kb)

        screen_s = _cpu(screen_one, repeats)
        rows.append(
            {
                "history_lines": n,
                "check_cpu_ms": round(check_s * 1000, 2),
                "check_again_cpu_ms": round(again_s * 1000, 3),  # the history kept (Engine.evaluate_patient_lines)
                "screen_cpu_ms": round(screen_s * 1000, 2),
            }
        )
    base = rows[0]
    for row in rows:
        scale = row["history_lines"] / base["history_lines"]
        row["check_ratio_to_smallest"] = round(row["check_cpu_ms"] / base["check_cpu_ms"], 2)
        row["screen_ratio_to_smallest"] = round(row["screen_cpu_ms"] / base["screen_cpu_ms"], 2)
        row["history_ratio"] = scale
    return {"rows": rows, "answer_200_lines": answer_size(kb), "answer_200_lines_20_drugs": answer_size(kb, drugs=20)}


def answer_size(kb: Any, history_lines: int = 960, proposed: int = 200, drugs: int = 3) -> dict[str, Any]:
    """Bytes of the API answer to one check of `proposed` lines against a heavy history: the
    lines cycle over the history's 3 drugs (`drugs=3`: 67 lines of one drug, one fill, every
    line carrying every finding of it) or over `drugs` monitored drugs."""
    from rxguard.api.resolver import handle
    from rxguard.api.serve import proxy_event
    from rxguard.api.service import Services
    from rxguard.api.settings import ApiSettings
    from rxguard.api.store import InMemoryFindingsStore
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import screen_lines

    repo = InMemoryRepository()
    # the history ends a day ago: a check is dated now (lines in the future are rejected)
    start = datetime.now() - timedelta(hours=18 * history_lines + 24)
    screen_lines(history(kb, history_lines, start=start), repo, kb)
    svc = Services(kb=kb, repo=repo, store=InMemoryFindingsStore(repo), settings=ApiSettings(auth_mode="open"))
    others = sorted(c for c in kb.monitored if c not in DRUGS)
    codes = [*DRUGS, *others[: max(0, drugs - len(DRUGS))]]
    body = {
        "psn_no": "BENCH0001",
        "fixmedins_code": SHOPS[0],
        "admdvs": "310101",
        "med_type": "41",
        "lines": [
            {"feedetl_sn": f"CHK{i:05d}", "med_list_codg": codes[i % len(codes)], "cnt": 1, "pric": 10.0}
            for i in range(proposed)
        ],
    }
    event = proxy_event("POST", "/v1/checks", {"Content-Type": "application/json"}, json.dumps(body))
    start = time.process_time()
    answer = handle(event, None, svc)
    cpu = time.process_time() - start
    text = answer.get("body", "")
    payload = json.loads(text) if text else {}
    evidence = 0
    for item in payload.get("lines", []):
        for hit in item.get("hits", []):
            evidence += len(hit.get("evidence", []))
    return {
        "history_lines": history_lines,
        "proposed_lines": proposed,
        "drugs": len(codes),
        "status": answer.get("statusCode"),
        "bytes": len(text.encode("utf-8")),
        "evidence_entries": evidence,
        "cpu_ms": round(cpu * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    result = measure(args.sizes, args.repeats)
    print(
        f"{'history':>8} {'check ms':>9} {'x':>6} {'again ms':>9} {'screen ms':>10} {'x':>6}"
        f"  (CPU, best of {args.repeats}; again: the same check, its history kept)"
    )
    for r in result["rows"]:
        print(
            f"{r['history_lines']:>8} {r['check_cpu_ms']:>9} {r['check_ratio_to_smallest']:>6} "
            f"{r['check_again_cpu_ms']:>9} {r['screen_cpu_ms']:>10} {r['screen_ratio_to_smallest']:>6}"
        )
    for key in ("answer_200_lines", "answer_200_lines_20_drugs"):
        a = result[key]
        print(
            f"200-line check ({a['drugs']} drugs) against {a['history_lines']} lines: {a['bytes']:,} bytes, "
            f"{a['evidence_entries']:,} evidence entries, status {a['status']}, {a['cpu_ms']} ms CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
