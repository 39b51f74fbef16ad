"""Letters rendered from a synthetic population of our own (rxguard_tools.synth, screened by the
real engine): what the addressee reads is Chinese (no English words, no finding ids, shares
as percentages) and Chinese line breaking holds on every line of every page."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import date
from html import unescape
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader

from rxguard import screening
from rxguard.alerts import AlertSettings, InMemorySink
from rxguard.ingest.normalize import LineRejected, normalize_record
from rxguard.kb import KnowledgeBase
from rxguard.letters import issue_letters
from rxguard.letters.linebreak import CANNOT_END, CANNOT_START
from rxguard.letters.numbers import InMemoryCounterStore
from rxguard.models import ClaimLine, Finding
from rxguard.repository import InMemoryRepository
from rxguard_tools.synth.generator import SynthConfig, generate

# codes (a digit in them), and numbers with a legal unit symbol (GB 3100: 4mg, 5ml, 100μg)
CODE = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9._\-/]*\d[A-Za-z0-9._\-/]*|\d[\d,.]*)(?:\s*(?:mg|μg|µg|g|ml|mL|kg|IU|U)(?![A-Za-z]))?"
)
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def population(kb: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], dict[str, str]]:
    pop = generate(SynthConfig(patients=150, months=2, seed=11), kb)
    lines: list[ClaimLine] = []
    for i, record in enumerate(pop.records):
        try:
            lines.append(normalize_record(record, kb, file="synth", line=i + 1))
        except LineRejected:
            continue
    repo = InMemoryRepository()
    screening.screen_lines(lines, repo, kb)
    findings: list[Finding] = repo.all_current_findings()
    _, outliers = screening.institution_findings_from_lines(lines, findings, kb)
    findings += outliers
    names = {ln.fixmedins_code: ln.fixmedins_name for ln in lines if ln.fixmedins_name}
    by_id = {ln.line_id: ln for ln in lines}
    # the institution with the most findings (a capped table) and three others; two patients
    busiest = [code for code, _ in Counter(f.fixmedins_code for f in findings if f.fixmedins_code).most_common(4)]
    patients = sorted({f.psn_no for f in findings if f.psn_no and f.subject_type == "patient"})[:2]
    people = tmp_path_factory.mktemp("persons") / "persons.csv"
    people.write_text(
        "psn_no,name,address,postcode\n"
        + "".join(f"{p},王五{i},某市某区某路{i}号,10000{i}\n" for i, p in enumerate(patients)),
        encoding="utf-8",
    )
    chosen = [f for f in findings if f.fixmedins_code in busiest or f.psn_no in patients]
    settings = AlertSettings(issuer_name_zh="示例市医疗保障局", person_file=Path(people))
    sink = InMemorySink()
    refs, _ = issue_letters(
        chosen, batch_id="pop", kb=kb, sink=sink, settings=settings, issued_on=date(2026, 3, 20),
        institution_names=names, lines=by_id, counters=InMemoryCounterStore(),
    )  # fmt: skip
    assert any(r.addressee_type == "patient" for r in refs) and len(refs) >= 4
    pdfs = {k: v[0] for k, v in sink.documents.items() if k.endswith(".pdf")}
    htmls = {
        k[: -len(".html")] + ".pdf": v[0].decode("utf-8") for k, v in sink.documents.items() if k.endswith(".html")
    }
    return pdfs, htmls


def runs(html: str) -> list[str]:
    """The texts the layout wraps: what lies between the template's own breaks."""
    body = html.split("<body>", 1)[-1]
    parts = re.split(r"<br\s*/?>|</?(?:p|td|th|tr|h\d|div|li|table)[^>]*>", body)
    return [re.sub(r"\s+", "", unescape(re.sub(r"<[^>]+>", "", part))) for part in parts if part.strip()]


def page_lines(pdf: bytes) -> list[list[str]]:
    out = []
    for page in PdfReader(BytesIO(pdf)).pages:
        lines = [ln.strip() for ln in page.extract_text().split("\n")]
        out.append([ln for ln in lines if ln and not re.fullmatch(r"—\s*\d+\s*—", ln)])
    return out


def test_the_letters_say_everything_in_chinese(population: tuple[dict[str, bytes], dict[str, str]]) -> None:
    pdfs, _ = population
    assert pdfs
    for key, pdf in pdfs.items():
        text = "\n".join(ln for page in page_lines(pdf) for ln in page)
        assert not HEX_ID.search(text), (key, HEX_ID.search(text))
        leftover = CODE.sub(" ", text)
        words = [
            (m.group(), leftover[max(m.start() - 20, 0) : m.end() + 5]) for m in re.finditer(r"[A-Za-z]+", leftover)
        ]
        assert not words, (key, words[:5])  # no English word, rule id, enum or version tag
        for label in ("已用比例", "占比"):
            for value in re.findall(rf"{label}[^：]*：([^\s，；]+)", text):
                assert value.endswith("%"), (key, label, value)  # shares as percentages
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text), key  # dates in Chinese form


def test_no_line_starts_with_closing_punctuation_and_no_word_is_broken(
    population: tuple[dict[str, bytes], dict[str, str]],
) -> None:
    pdfs, htmls = population
    checked = 0
    for key, pdf in pdfs.items():
        segments = runs(htmls[key])
        for page in page_lines(pdf):
            for previous, line in itertools.pairwise(page):
                joint = re.sub(r"\s+", "", previous[-3:] + line[:3])
                if not any(joint in seg for seg in segments):
                    continue  # a break the template makes (paragraph, cell, <br>), not a wrap
                checked += 1
                assert line[0] not in CANNOT_START, (key, previous, line)
                assert previous[-1] not in CANNOT_END, (key, previous, line)
                assert not (re.search(r"[A-Za-z]$", previous) and re.match(r"[A-Za-z]", line)), (key, previous, line)
                assert not (re.search(r"\d[,.]?$", previous) and re.match(r"[\d,.%]", line)), (key, previous, line)
    assert checked > 50
