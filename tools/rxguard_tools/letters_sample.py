"""A sample warning letter from illustrative data, for the docs and for trying templates:

    python -m rxguard_tools.letters_sample OUT_DIR [--templates DIR]

writes OUT_DIR/sample-letter.{html,pdf} (and sample-letter.png, sample-letter-signature.png,
sample-letter-last.png: its first page, the page with the signature and seal, and the annex
table, when pdftoppm is installed). Names, numbers and codes are fictitious.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from datetime import date, datetime
from pathlib import Path

from rxguard.alerts.settings import AlertSettings
from rxguard.engine.factory import make_finding, make_line
from rxguard.kb import KnowledgeBase, get_knowledge_base
from rxguard.letters import render_letter
from rxguard.letters.context import build_letter
from rxguard.models import ClaimLine, Finding, Severity

HOSPITAL, PHARMACY = "H310104001", "P310104017"
NAMES = {HOSPITAL: "示例市第一人民医院", PHARMACY: "示例大药房（滨江店）"}
PSN_A, PSN_B = "310104198203150017", "310104195511020026"


def _line(kb: KnowledgeBase, inst: str, sn: str, psn: str, when: datetime, code: str, packs: int) -> ClaimLine:
    return make_line(
        kb, psn_no=psn, fixmedins_code=inst, drug_code=code, when=when, packs=packs, feedetl_sn=sn,
        fixmedins_name=NAMES[inst], admdvs="310104",
    )  # fmt: skip


def sample(kb: KnowledgeBase) -> tuple[list[Finding], dict[str, ClaimLine]]:
    lines = [
        _line(kb, HOSPITAL, "MZ20260302-0117", PSN_A, datetime(2026, 3, 2, 9, 12), "XJ05AF10A001", 3),
        _line(kb, PHARMACY, "LS20260309-0542", PSN_A, datetime(2026, 3, 9, 16, 40), "XJ05AF10A001", 3),
        _line(kb, HOSPITAL, "MZ20260305-0388", PSN_B, datetime(2026, 3, 5, 10, 5), "XJ05AH02A001", 6),
    ]
    by_id = {ln.line_id: ln for ln in lines}
    a1, a2, b1 = (ln.line_id for ln in lines)

    def finding(rule: str, severity: Severity, psn: str, evidence: list[str], figures: dict[str, object], zh: str):  # type: ignore[no-untyped-def]
        at, where = by_id[evidence[-1]].fee_ocur_time, {"fixmedins_code": HOSPITAL, "admdvs": "310104"}
        text = {"explanation_zh": zh, "explanation_en": rule}
        return make_finding(rule, psn, evidence, severity=severity, occurred_at=at, figures=figures, **where, **text)

    findings = [
        finding(
            "early-refill", Severity.HIGH, PSN_A, [a1, a2],
            {"previous_days_supplied": 42.0, "elapsed_days": 7, "used_fraction": 0.17, "trigger_lines": [a2]},
            "恩替卡韦片前次供药42天，7天后即在另一机构再次购药，前次药量仅用去17%。",
        ),
        finding(
            "cross-institution-repeat", Severity.MEDIUM, PSN_A, [a1, a2],
            {"institutions": 2, "overlap_days": 35},
            "同一参保人在2家机构购买同一成分药品，供药期重叠35天。",
        ),
        finding(
            "over-quantity", Severity.MEDIUM, PSN_B, [b1],
            {"days_supply": 20.0, "allowed_days": 7, "ratio": 2.86},
            "磷酸奥司他韦胶囊（急性病用药）单次供药20天，超过7天限量。",
        ),
    ]  # fmt: skip
    return findings, by_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rxguard_tools.letters_sample", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--templates", type=Path, default=None)
    args = parser.parse_args(argv)
    kb = get_knowledge_base()
    settings = AlertSettings(issuer_name_zh="示例市医疗保障局", templates_dir=args.templates)
    findings, lines = sample(kb)
    letter = build_letter(
        "institution", HOSPITAL, findings, batch_id="sample-2026-03", kb=kb, settings=settings,
        issued_on=date(2026, 3, 20), institution_names=NAMES, lines=lines,
    )  # fmt: skip
    html, pdf = render_letter(letter, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sample-letter.html").write_text(html, encoding="utf-8")
    (args.out / "sample-letter.pdf").write_bytes(pdf)
    print(f"{args.out / 'sample-letter.pdf'}: {letter.kind} {letter.number}, {len(pdf)} bytes")
    if shutil.which("pdftoppm"):  # first page (版头, 标题), the signature and seal, the annex table (last)
        pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) or 1
        wanted = [(1, "sample-letter"), (max(pages - 1, 1), "sample-letter-signature"), (pages, "sample-letter-last")]
        for page, name in wanted:
            command = ["pdftoppm", "-r", "72", "-png", "-singlefile", "-f", str(page), "-l", str(page)]
            subprocess.run([*command, str(args.out / "sample-letter.pdf"), str(args.out / name)], check=True)
            print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
