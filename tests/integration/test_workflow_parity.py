"""The workflow's findings (handlers on moto, DynamoDB) equal the engine's own (in memory),
institution-outlier included, and do not depend on the order batches arrive in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ROOT, Stack, make_line
from test_workflow_handlers import Context, _screen_all, drop, handler, prepare

from rxguard.dynamo import DynamoRepository, finding_from_item
from rxguard.models import Finding

SAMPLES = sorted(p for p in (ROOT / "events" / "batches").iterdir() if p.suffix in (".csv", ".jsonl", ".json"))


def _run_batch(stack: Stack, body: bytes, key: str, execution: str) -> dict[str, Any]:
    state = prepare(stack, drop(stack, body, key=key), execution)
    state["chunk_results"] = _screen_all(stack, state)
    event = {"mode": "institutions", "batch_id": state["batch_id"], "chunk_results": state["chunk_results"]}
    state["institutions"] = {"result": handler("screen").lambda_handler(event, Context())}
    return state


def _stored_findings(stack: Stack) -> dict[str, Finding]:
    items = stack.ddb.scan(TableName=stack.table("FindingsTable"))["Items"]
    out = {}
    for item in items:
        finding = finding_from_item(item)
        if finding.status != "superseded":
            out[finding.finding_id] = finding
    return out


def _engine_findings(stack: Stack, states: list[dict[str, Any]], kb: Any) -> dict[str, Finding]:
    """The reference: the engine over the same chunks with the in-memory repository."""
    from rxguard.ingest import read_chunk
    from rxguard.repository import InMemoryRepository
    from rxguard.screening import institution_findings_from_lines

    memory = InMemoryRepository()
    for state in states:
        for chunk in state["chunks"]:
            body = stack.s3.get_object(Bucket=stack.results_bucket, Key=chunk["chunk_key"])["Body"].read()
            from rxguard.screening import screen_lines

            screen_lines(read_chunk(body), memory, kb)
    current = memory.all_current_findings()
    _, institutions = institution_findings_from_lines(memory.lines.values(), current, kb)
    return {f.finding_id: f for f in [*current, *institutions]}


def _public(findings: dict[str, Finding]) -> dict[str, Any]:
    return {k: f.model_dump(mode="json", exclude={"status"}) for k, f in sorted(findings.items())}


def test_the_sample_batches_give_the_engines_findings(stack: Stack, kb: Any) -> None:
    # Given the sample batches, each run through Prepare, Screen and ScreenInstitutions
    states = [_run_batch(stack, p.read_bytes(), f"incoming/{p.name}", f"exec-{i}") for i, p in enumerate(SAMPLES)]
    # When the stored findings are compared with the engine's over the same lines
    stored = _stored_findings(stack)
    expected = _engine_findings(stack, states, kb)
    # Then they are identical
    assert stored
    assert _public(stored) == _public(expected)


def _outlier_lines() -> list[Any]:
    """Three hospitals with 40 monitored lines each in March; at H1 every other patient
    buys 90 days of a 30-day drug (over-quantity), the others dispense normally."""
    lines = []
    for h in ("H31000000001", "H31000000002", "H31000000003"):
        for i in range(40):
            big = h.endswith("1") and i % 2 == 0
            lines.append(
                make_line(
                    f"{h[-1]}P{i:03d}",
                    f"{h[-1]}{i:04d}",
                    fixmedins_code=h,
                    time=f"2026-03-{1 + i % 28:02d} 09:00:00",
                    units=3000 if big else 30,
                )
            )
    return lines


@pytest.mark.parametrize("order", ["as_sent", "reversed"])
def test_two_batches_of_the_same_patients_in_either_order_give_the_engines_findings(
    stack: Stack, kb: Any, order: str
) -> None:
    # Given the sample lines of one bureau split into two batches (JSON Lines), sent in either order
    from rxguard.ingest import read_batch

    sample = ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv"
    lines = [x for x in read_batch(sample, kb) if hasattr(x, "psn_no")]
    half = len(lines) // 2
    parts = [lines[:half], lines[half:]]
    if order == "reversed":
        parts.reverse()
    # When each part is dropped as a batch of normalized JSON Lines
    states = []
    for i, part in enumerate(parts):
        body = "\n".join(_as_record(x) for x in part).encode()
        states.append(_run_batch(stack, body, f"incoming/part-{i}.jsonl", f"exec-{i}"))
    # Then the stored findings equal the engine's over all lines at once
    stored = _stored_findings(stack)
    expected = _engine_findings(stack, states, kb)
    assert _public(stored) == _public(expected)


def _as_record(line: Any) -> str:
    """A ClaimLine back as an input record (platform field names)."""
    rec = {
        "feedetl_sn": line.feedetl_sn,
        "fixmedins_code": line.fixmedins_code,
        "fixmedins_name": line.fixmedins_name,
        "admdvs": line.admdvs,
        "psn_no": line.psn_no,
        "mdtrt_id": line.mdtrt_id,
        "med_type": line.med_type,
        "fee_ocur_time": line.fee_ocur_time.strftime("%Y-%m-%d %H:%M:%S"),
        "med_list_codg": line.med_list_codg,
        "cnt": line.cnt,
        "trdn_flag": int(line.trdn_flag),
        "pric": line.pric,
        "det_item_fee_sumamt": line.det_item_fee_sumamt,
        "bilg_dr_codg": line.bilg_dr_codg,
        "dise_codg": ";".join(line.diagnoses),
        "dscg_tkdrug_flag": int(line.dscg_tkdrug_flag),
        "lt_rx_flag": int(line.lt_rx_flag),
        "drug_trac_codg": ",".join(line.trace_codes),
    }
    return json.dumps({k: v for k, v in rec.items() if v not in (None, "")}, ensure_ascii=False)


def test_institutions_step_finds_the_outlier_and_supersedes_it_when_flags_clear(stack: Stack, kb: Any) -> None:
    # Given March activity of three hospitals where H1's flagged share is far above its peers'
    repo = DynamoRepository(_tables(stack), stack.ddb)
    from rxguard.dynamo import activity_counts

    lines = _outlier_lines()
    repo.add_aggregates(activity_counts(lines))
    flagged = {x.line_id for x in lines if x.quantity_units == 3000}
    repo.update_flags({("2026-03", "institution:H31000000001"): flagged}, {})
    batch_id = "0" * 40
    from rxguard.workflow.contract import ChunkFindings

    key = f"batches/{batch_id}/results/00000.json"
    stack.s3.put_object(
        Bucket=stack.results_bucket,
        Key=key,
        Body=ChunkFindings(chunk_key="c", activity_periods=["2026-03"]).model_dump_json().encode(),
    )
    event = {
        "mode": "institutions",
        "batch_id": batch_id,
        "chunk_results": [{"chunk_key": "c", "ok": True, "result_key": key}],
    }
    # When the institutions step runs, then runs again after H1's flags are cleared
    first = handler("screen").lambda_handler(event, Context())
    stored = _stored_findings(stack)
    DynamoRepository(_tables(stack), stack.ddb).update_flags({}, {("2026-03", "institution:H31000000001"): flagged})
    second = handler("screen").lambda_handler(event, Context())
    # Then H1 (only) got an institution-outlier finding for March, superseded the second time
    outliers = [f for f in stored.values() if f.rule_id == "institution-outlier"]
    assert [(f.fixmedins_code, f.figures["period"], f.figures["flagged_lines"]) for f in outliers] == [
        ("H31000000001", "2026-03", len(flagged))
    ]
    assert first["findings"]["new"] == 1
    assert second["findings"]["superseded"] == 1
    assert not [f for f in _stored_findings(stack).values() if f.rule_id == "institution-outlier"]


def _tables(stack: Stack) -> Any:
    from conftest import tables_of

    return tables_of(stack)


def _outlier_records() -> list[dict[str, Any]]:
    """Three hospitals, 40 patients each buying entecavir in March 2026 from one prescriber
    per hospital; at H31000000001 every other patient gets 10 packs (140 days of a chronic
    drug: over-quantity), elsewhere 2 packs (28 days)."""
    out = []
    for h in ("H31000000001", "H31000000002", "H31000000003"):
        for i in range(40):
            packs = 10 if h.endswith("1") and i % 2 == 0 else 2
            out.append(
                {
                    "feedetl_sn": f"FD{h[-1]}{i:05d}",
                    "fixmedins_code": h,
                    "admdvs": "310000",
                    "psn_no": f"3100{h[-1]}{i:07d}",
                    "med_type": "11",
                    "fee_ocur_time": f"2026-03-{1 + i % 28:02d} 09:00:00",
                    "med_list_codg": "XJ05AF10A001",
                    "cnt": packs,
                    "pric": 18.6,
                    "det_item_fee_sumamt": round(18.6 * packs, 2),
                    "bilg_dr_codg": f"D{h[-1]}0001",
                    "dise_codg": "B18.1",
                }
            )
    return out


@pytest.mark.parametrize("order", ["as_sent", "reversed"])
def test_an_outlier_institution_split_over_two_batches_gives_the_engines_findings(
    stack: Stack, kb: Any, order: str
) -> None:
    # Given three hospitals' March lines split in two batches, sent in either order
    records = _outlier_records()
    parts = [records[0::2], records[1::2]]
    if order == "reversed":
        parts.reverse()
    # When each batch runs through Prepare, Screen and ScreenInstitutions
    states = [
        _run_batch(stack, "\n".join(json.dumps(r) for r in part).encode(), f"incoming/o-{i}.jsonl", f"exec-{i}")
        for i, part in enumerate(parts)
    ]
    # Then the stored findings equal the engine's over all lines, outliers included
    stored = _stored_findings(stack)
    expected = _engine_findings(stack, states, kb)
    assert any(f.rule_id == "institution-outlier" for f in expected.values())
    assert _public(stored) == _public(expected)
