"""Warning letters: content of the PDF and HTML, official-document numbering, periods,
person file, deadlines, escaping, retries (docs/letters.md)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from datetime import date, datetime
from functools import partial
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader

from rxguard.alerts import AlertSettings, InMemorySink, notify_batch, pseudonym
from rxguard.letters import issue_letters, letter_groups, load_persons
from rxguard.letters.context import Person, add_working_days, build_letter
from rxguard.letters.numbers import InMemoryCounterStore
from rxguard.letters.pdf import LetterRenderError, html_to_pdf
from rxguard.letters.render import render_html
from rxguard.models import ClaimLine, Finding, InstitutionKind, Severity
from rxguard.scope import Scope
from tests.factories import make_finding

PSN_A = "31010019800101001X"
PSN_B = "310101197702020022"
HOSPITAL = "H310101001"
PHARMACY = "P310101002"
NAMES = {HOSPITAL: "上海市某某区中心医院", PHARMACY: "某某大药房"}


def line(institution: str, sn: str, psn: str, day: int, drug: str, cnt: float, amount: float) -> ClaimLine:
    return ClaimLine(
        feedetl_sn=sn,
        fixmedins_code=institution,
        fixmedins_name=NAMES[institution],
        institution_kind=InstitutionKind.from_code(institution),
        admdvs="310000",
        psn_no=psn,
        mdtrt_id=f"{institution}-{day}",
        med_type="11",
        fee_ocur_time=datetime(2026, 3, day, 9, 30),
        med_list_codg="XC10AA05A001",
        med_list_name=drug,
        cnt=cnt,
        pric=amount / cnt,
        det_item_fee_sumamt=amount,
        quantity_units=cnt * 28,
        monitored=True,
        days_supply=cnt * 28 / 2,
    )


LINES = {
    ln.line_id: ln
    for ln in (
        line(HOSPITAL, "RX1001", PSN_A, 2, "阿托伐他汀钙片", 6, 210.0),
        line(PHARMACY, "PS2001", PSN_A, 5, "阿托伐他汀钙片", 4, 140.0),
        line(HOSPITAL, "RX1002", PSN_B, 3, "氯吡格雷片", 10, 480.5),
    )
}


def finding(rule_id: str, severity: str, psn: str, evidence: list[str], institution: str = HOSPITAL) -> Finding:
    return make_finding(
        rule_id,
        psn,
        tuple(evidence),
        severity=Severity(severity),
        fixmedins_code=institution,
        occurred_at=LINES[evidence[-1]].fee_ocur_time,
        figures={"days_supply": 84.0, "allowed_days": 30},
        explanation_zh=f"{rule_id} 疑点说明",
        explanation_en=f"{rule_id} explanation",
    )


FINDINGS = [
    finding("early-refill", "high", PSN_A, [f"{HOSPITAL}/RX1001", f"{PHARMACY}/PS2001"]),
    finding("over-quantity", "medium", PSN_B, [f"{HOSPITAL}/RX1002"]),
]
ISSUED = date(2026, 3, 20)  # a Friday
PERSONS = {
    PSN_A: Person(name="张三", address="上海市某某区某某路100弄5号301室", postcode="200001"),
    PSN_B: Person(name="李四", address="上海市某某区某某街8号", postcode="200002"),
}


def hospital_pdf(sink: InMemorySink) -> bytes:
    return sink.documents[f"letters/2026-03/institution-{HOSPITAL}-2026-03.pdf"][0]


def pdf_text(data: bytes) -> str:
    reader = PdfReader(BytesIO(data))
    text = re.sub(r"\s+", "", "".join(page.extract_text() for page in reader.pages))
    return re.sub(r"—\d+—", "", text)  # page numbers (— 1 —) interleave with the text


def issue(sink: InMemorySink, kb, counters=None, settings=None, findings=None) -> object:  # type: ignore[no-untyped-def]
    return notify_batch(
        findings or FINDINGS, batch_id="b-2026-03", kb=kb, sink=sink, issued_on=ISSUED, institution_names=NAMES,
        lines=LINES, letters=partial(issue_letters, counters=counters or InMemoryCounterStore()), settings=settings,
    )  # fmt: skip


def test_the_institution_letter_pdf_names_the_institution_each_rule_and_evidence(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a batch with a high and a medium finding at one hospital
    sink = InMemorySink()

    # When its notifications are issued
    issue(sink, kb)

    # Then the hospital's letter of March exists as PDF and its text carries the addressee,
    # the sequential number, each finding's rule name (never its id) and legal basis, the
    # evidence lines by their serial numbers and the figures in Chinese
    data, content_type = sink.documents[f"letters/2026-03/institution-{HOSPITAL}-2026-03.pdf"]
    assert content_type == "application/pdf"
    text = pdf_text(data)
    assert NAMES[HOSPITAL] in text and "医保监函〔2026〕1号" in text
    assert f"关于{NAMES[HOSPITAL]}2026年3月医保药品超量开药疑点的警示函" in text  # high: a warning
    for f in FINDINGS:
        rule = kb.rule(f.rule_id)
        assert rule.name_zh in text and f.rule_id not in text
        assert re.sub(r"\s+", "", rule.legal_basis_zh) in text
        assert f.finding_id not in text  # short reference numbers instead
        for line_id in f.evidence:
            assert f"流水号{LINES[line_id].feedetl_sn}" in text
            assert LINES[line_id].med_list_name in text
    assert "480.5元" in text and "允许天数：30" in text
    assert "2026年4月10日" in text  # 15 working days after Friday 20 March
    assert PSN_A not in text and PSN_B not in text  # patients appear masked only


def test_the_pdf_embeds_its_font_and_the_letter_number_is_in_its_metadata(kb) -> None:  # type: ignore[no-untyped-def]
    # Given an issued batch
    sink = InMemorySink()
    summary = issue(sink, kb)

    # When the hospital letter's PDF is read
    ref = next(r for r in summary.letters if r.letter_id == f"institution-{HOSPITAL}-2026-03")  # type: ignore[attr-defined]
    reader = PdfReader(BytesIO(hospital_pdf(sink)))

    # Then every TrueType font used is embedded (FontFile2): the Fandol faces of GB/T 9704
    # (仿宋 body, 宋体 title, 黑体 headings); the subject is the letter number
    embedded = []
    faces = set()
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            if font["/Subtype"] == "/TrueType":
                embedded.append("/FontFile2" in font["/FontDescriptor"].get_object())
                faces.add(str(font["/BaseFont"]).split("+")[-1])
    assert embedded and all(embedded)
    assert {"FandolFang-Regular", "FandolSong-Bold", "FandolHei-Regular"} <= faces, faces
    assert reader.metadata is not None and reader.metadata.subject == ref.number


def test_patient_letters_need_the_person_file_and_are_addressed_by_it(kb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given no person file, When issued, Then no patient gets a letter (the institution is told)
    sink = InMemorySink()
    summary = issue(sink, kb)
    assert [r.addressee_type for r in summary.letters] == ["institution"]  # type: ignore[attr-defined]

    # Given the bureau's person file (GB18030, as its systems export it) naming both patients
    people = tmp_path / "persons.csv"
    rows = ["psn_no,name,address,postcode", *(f"{k},{p.name},{p.address},{p.postcode}" for k, p in PERSONS.items())]
    people.write_bytes("\n".join(rows).encode("gb18030"))
    sink = InMemorySink()
    summary = issue(sink, kb, settings=AlertSettings(person_file=people))

    # Then each patient gets one letter, keyed by pseudonym, addressed by name and address,
    # listing only their own lines
    key = AlertSettings().pseudonym_key
    patient_refs = [r for r in summary.letters if r.addressee_type == "patient"]  # type: ignore[attr-defined]
    assert len(patient_refs) == 2
    for ref in patient_refs:
        assert PSN_A not in ref.letter_id and PSN_B not in ref.letter_id
        text = pdf_text(sink.documents[f"letters/2026-03/{ref.letter_id}.pdf"][0])
        own = next(f for f in FINDINGS if ref.letter_id == f"patient-{pseudonym(f.psn_no, key)}-2026-03")
        other = next(f for f in FINDINGS if f is not own)
        person = PERSONS[own.psn_no or ""]
        assert f"{person.name}同志" in text and re.sub(r"\s+", "", person.address) in text
        assert all(LINES[e].feedetl_sn in text for e in own.evidence)
        assert not any(LINES[e].feedetl_sn in text for e in other.evidence)
    # And the announcements carry the S3 locations, and no patient number or name
    for message in sink.letters:
        assert set(message.body["locations"]) == {"pdf", "html"}
        assert PSN_A not in message.body_json() and PSN_B not in message.body_json()
        assert "张三" not in message.body_json()


def test_a_person_file_with_a_missing_field_names_file_line_and_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    people = tmp_path / "persons.csv"
    people.write_text("psn_no,name,address\nA1,张三,某地\nA2,,某地\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"persons\.csv, line 3: field name is empty"):
        load_persons(people)


def test_a_retried_batch_rewrites_the_same_letters_and_announces_none_twice(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a batch already issued
    sink = InMemorySink()
    first = issue(sink, kb)
    documents = dict(sink.documents)

    # When it is issued again
    second = issue(sink, kb)

    # Then the same keys hold the same bytes, and nothing is announced again
    assert sink.documents == documents
    assert len(sink.letters) == len(first.letters)  # type: ignore[attr-defined]
    assert not any(r.announced for r in second.letters)  # type: ignore[attr-defined]
    assert [r.number for r in second.letters] == [r.number for r in first.letters]  # type: ignore[attr-defined]


def test_a_run_cut_short_resumes_with_the_letters_not_yet_announced(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a run that stops (e.g. a timeout) while announcing its second letter
    class Stopping(InMemorySink):
        def publish_letter(self, message):  # type: ignore[no-untyped-def]
            if len(self.letters) == 1:
                raise TimeoutError("Lambda time is up")
            return super().publish_letter(message)

    two = [*FINDINGS, FINDINGS[1].model_copy(update={"fixmedins_code": PHARMACY, "finding_id": "e" * 32})]
    counters = InMemoryCounterStore()
    sink = Stopping()
    with pytest.raises(TimeoutError):
        issue(sink, kb, counters, findings=two)
    done = {m.body["letter_id"] for m in sink.letters}

    # When the retry runs with a sink that works
    retry = InMemorySink(sent=set(sink.sent), letters=list(sink.letters), alerts=list(sink.alerts))
    summary = issue(retry, kb, counters, findings=two)

    # Then only the letters not yet announced are rendered and announced, each once
    rendered = {r.letter_id for r in summary.letters if r.rendered}  # type: ignore[attr-defined]
    assert len(done) == 1 and rendered.isdisjoint(done)
    assert rendered | done == {r.letter_id for r in summary.letters}  # type: ignore[attr-defined]
    ids = [m.body["letter_id"] for m in retry.letters]
    assert sorted(ids) == sorted(set(ids)) and set(ids) == rendered | done


def test_letter_numbers_are_sequential_per_bureau_and_year_and_kept_per_letter(kb) -> None:  # type: ignore[no-untyped-def]
    # Given one counter store (the bureau's) and two batches of different institutions
    counters = InMemoryCounterStore()
    sink = InMemorySink()
    first = issue(sink, kb, counters)
    other = [f.model_copy(update={"fixmedins_code": PHARMACY}) for f in FINDINGS]
    second = notify_batch(
        other, batch_id="b2", kb=kb, sink=sink, issued_on=ISSUED, institution_names=NAMES, lines=LINES,
        letters=partial(issue_letters, counters=counters),
    )  # fmt: skip
    # Then the numbers run 1, 2 in the formal shape (no padding, 六角括号)
    numbers = [r.number for r in [*first.letters, *second.letters]]  # type: ignore[attr-defined]
    assert numbers == ["医保监函〔2026〕1号", "医保监函〔2026〕2号"]
    # And the same letter issued again keeps its number and takes no new one
    again = issue(InMemorySink(), kb, counters)
    assert [r.number for r in again.letters] == ["医保监函〔2026〕1号"]  # type: ignore[attr-defined]
    assert counters.counters == {"letter#医保监函#2026": 2}


def test_one_letter_per_institution_per_period_covering_all_its_findings() -> None:
    # Given the hospital's findings in March and one in April
    april = FINDINGS[1].model_copy(update={"occurred_at": datetime(2026, 4, 2, 9, 0), "finding_id": "f" * 32})
    findings = [*FINDINGS, april]
    # When grouped by month (the default), Then March and April are two letters
    groups = letter_groups(findings, AlertSettings())
    assert [(who, period[0], len(fs)) for _, who, period, fs in groups] == [
        (HOSPITAL, "2026-03", 2),
        (HOSPITAL, "2026-04", 1),
    ]
    # When grouped by quarter, Then one letter covers all three
    groups = letter_groups(findings, AlertSettings(letter_period="quarter"))
    assert [(who, period, len(fs)) for _, who, period, fs in groups] == [
        (HOSPITAL, ("2026-Q1", "2026年第一季度"), 2),
        (HOSPITAL, ("2026-Q2", "2026年第二季度"), 1),
    ]


def test_a_long_table_is_capped_and_every_finding_goes_to_the_csv_annex(kb) -> None:  # type: ignore[no-untyped-def]
    # Given 12 findings at the hospital in March and a table of 5 rows
    many = [
        finding("over-quantity", "medium", f"3101011990010100{i:02d}", [f"{HOSPITAL}/RX1002"]).model_copy(
            update={"finding_id": f"{i:032x}"}
        )
        for i in range(12)
    ]
    sink = InMemorySink()
    summary = notify_batch(
        many, batch_id="b", kb=kb, sink=sink, issued_on=ISSUED, institution_names=NAMES, lines=LINES,
        settings=AlertSettings(letter_table_rows=5), letters=partial(issue_letters, counters=InMemoryCounterStore()),
    )  # fmt: skip
    (ref,) = summary.letters  # type: ignore[attr-defined]
    # Then the letter shows 5 rows and says where the other 7 are
    text = pdf_text(sink.documents[f"letters/2026-03/{ref.letter_id}.pdf"][0])
    assert "1-5" in text and "1-6" not in text and "另有7项疑点，见附件2" in text and "附件：1．疑点明细表" in text
    # And the annex is a CSV (UTF-8 with BOM) with all 12, each with its reference and id
    body, content_type = sink.documents[f"letters/2026-03/{ref.letter_id}-annex.csv"]
    assert content_type.startswith("text/csv") and body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][0] == "疑点编号" and len(rows) == 13
    assert {r[0] for r in rows[1:]} == {f"1-{i}" for i in range(1, 13)}
    assert {r[-1] for r in rows[1:]} == {f.finding_id for f in many}
    assert ref.locations["annex"].endswith("-annex.csv")


def test_response_deadline_counts_working_days() -> None:
    # Given Friday 20 March 2026
    start = date(2026, 3, 20)
    # When 15 working days are added, Then weekends are skipped (three full weeks)
    assert add_working_days(start, 15) == date(2026, 4, 10)
    # And a configured holiday pushes it one working day further (Friday -> Monday)
    assert add_working_days(start, 15, [date(2026, 4, 6)]) == date(2026, 4, 13)
    assert add_working_days(start, 1) == date(2026, 3, 23)


def test_values_from_claim_data_are_escaped_in_the_html(kb) -> None:  # type: ignore[no-untyped-def]
    # Given an institution name containing markup
    settings = AlertSettings()
    letter = build_letter(
        "institution",
        HOSPITAL,
        FINDINGS,
        batch_id="b1",
        kb=kb,
        settings=settings,
        issued_on=ISSUED,
        institution_names={HOSPITAL: "<script>alert(1)</script>医院"},
        lines=LINES,
    )

    # When rendered to HTML
    html = render_html(letter)

    # Then the markup is escaped, and the PDF still renders the name as text
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>alert(1)</script>医院" in pdf_text(html_to_pdf(html))


def test_letters_respect_the_minimum_severity_and_the_patient_switch() -> None:
    # Given settings for letters about medium and above, without patient letters
    settings = AlertSettings(letter_min_severity=Severity.HIGH, patient_letters=False)
    # When the addressees are chosen
    groups = letter_groups(FINDINGS, settings, PERSONS)
    # Then only the hospital of the high finding gets a letter
    assert [(kind, who, [f.rule_id for f in fs]) for kind, who, _, fs in groups] == [
        ("institution", HOSPITAL, ["early-refill"])
    ]


def test_a_broken_template_is_reported_with_file_and_line(kb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a templates directory whose institution template has a syntax error on line 2
    (tmp_path / "institution_letter.html.j2").write_text("<p>ok</p>\n{% if %}\n", encoding="utf-8")
    settings = AlertSettings(templates_dir=tmp_path)
    letter = build_letter(
        "institution", HOSPITAL, FINDINGS, batch_id="b1", kb=kb, settings=settings, issued_on=ISSUED,
        institution_names=NAMES, lines=LINES,
    )  # fmt: skip

    # When rendered, Then the error names the file and the line
    with pytest.raises(LetterRenderError, match=r"institution_letter\.html\.j2, line 2"):
        render_html(letter, tmp_path)


def test_a_missing_font_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a font path that does not exist, When a PDF is made, Then the error names it
    missing = tmp_path / "none.ttf"
    with pytest.raises(LetterRenderError, match=r"none\.ttf: CJK font not found"):
        html_to_pdf("<p>测试</p>", font_path=missing)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) not installed")
def test_a_letter_page_renders_to_an_image(kb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given the hospital's letter as PDF
    sink = InMemorySink()
    issue(sink, kb)
    pdf = tmp_path / "letter.pdf"
    pdf.write_bytes(hospital_pdf(sink))

    # When its first page is rasterised
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)

    # Then a PNG page of A4 proportions exists (the image itself was checked by eye: docs/sample-letter.png)
    png = next(Path(tmp_path).glob("page*.png")).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert abs(height / width - 297 / 210) < 0.01


def test_a_finding_longer_than_a_page_is_split_across_pages(kb) -> None:  # type: ignore[no-untyped-def]
    # Given an institution finding with 40 detailed evidence lines and a long explanation
    many = [line(HOSPITAL, f"RX{i:04d}", PSN_A, 1 + i % 28, "阿托伐他汀钙片", 6, 210.0) for i in range(40)]
    lines = {ln.line_id: ln for ln in many}
    evidence = sorted(lines)
    big = Finding(
        finding_id=Finding.make_id("institution-outlier", Scope.institution(HOSPITAL), evidence),
        rule_id="institution-outlier",
        rule_version=1,
        severity=Severity.HIGH,
        subject_type="institution",
        fixmedins_code=HOSPITAL,
        admdvs="310000",
        occurred_at=datetime(2026, 3, 1),
        evidence=evidence,
        explanation_zh="该机构重点监控药品疑点明细占比显著高于同类机构。" * 60,
        explanation_en="outlier",
    )
    sink = InMemorySink()

    # When its letter is issued with every evidence line listed
    notify_batch(
        [big],
        batch_id="big",
        kb=kb,
        sink=sink,
        settings=AlertSettings(letter_evidence_cap=40),
        lines=lines,
        letters=issue_letters,
    )

    # Then the PDF spans pages (the table row splits) and still lists the last evidence line
    data = sink.documents[f"letters/2026-03/institution-{HOSPITAL}-2026-03.pdf"][0]
    reader = PdfReader(BytesIO(data))
    assert len(reader.pages) > 3
    assert "等40条结算明细" in pdf_text(data)


def test_the_evidence_listed_in_a_letter_is_capped_with_a_note(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a finding with 3 evidence lines and a cap of 2
    f = finding(
        "cross-institution-repeat", "medium", PSN_A, [f"{HOSPITAL}/RX1001", f"{PHARMACY}/PS2001", f"{HOSPITAL}/RX1002"]
    )
    settings = AlertSettings(letter_evidence_cap=2)

    # When the letter is built and rendered
    letter = build_letter(
        "institution", HOSPITAL, [f], batch_id="b", kb=kb, settings=settings, issued_on=ISSUED,
        institution_names=NAMES, lines=LINES,
    )  # fmt: skip
    html = render_html(letter)

    # Then two lines are listed and the third is counted
    assert len(letter.findings[0].evidence) == 2 and letter.findings[0].evidence_more == 1
    assert "等3条结算明细" in html


def test_a_later_batch_of_the_same_month_gets_a_supplementary_letter(kb) -> None:  # type: ignore[no-untyped-def]
    # Given the hospital's March letter issued from a first batch
    counters = InMemoryCounterStore()
    sink = InMemorySink()
    first = issue(sink, kb, counters, findings=FINDINGS[:1])
    # When a second batch brings another March finding of the hospital
    second = issue(sink, kb, counters, findings=FINDINGS[1:])
    # Then it is lettered too: a supplementary letter with its own number and file
    (a,) = first.letters  # type: ignore[attr-defined]
    (b,) = second.letters  # type: ignore[attr-defined]
    assert (a.number, b.number) == ("医保监函〔2026〕1号", "医保监函〔2026〕2号")
    assert b.letter_id == f"institution-{HOSPITAL}-2026-03-s2" and b.announced
    assert "警示函（补充）" in pdf_text(
        sink.documents[f"letters/2026-03/{b.letter_id}.pdf"][0]
    ) or "（补充）" in pdf_text(sink.documents[f"letters/2026-03/{b.letter_id}.pdf"][0])
    # And retrying either batch gives the same letters and takes no number
    again = issue(sink, kb, counters, findings=FINDINGS[1:])
    assert [r.number for r in again.letters] == ["医保监函〔2026〕2号"]  # type: ignore[attr-defined]
    assert not any(r.announced for r in again.letters)  # type: ignore[attr-defined]
    assert counters.counters == {"letter#医保监函#2026": 2}


def test_notify_reads_evidence_lines_from_results_files_as_the_letters_cite_them(kb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given two chunks' results files (ChunkFindings) citing the lines, one line in both
    from rxguard.local.objects import LocalObjects
    from rxguard.workflow.contract import ChunkFindings
    from rxguard.workflow.notify import findings_to_alert

    results = LocalObjects(tmp_path)
    first, second = list(LINES.values())[:2], list(LINES.values())[1:]
    for n, (found, cited) in enumerate([(FINDINGS[:1], first), (FINDINGS[1:], second)]):
        chunk = ChunkFindings(chunk_key=f"c{n}", new=found, institutions=NAMES, evidence_lines=cited)
        results.put_json(f"r{n}.json", chunk.model_dump(mode="json"))
    # When Notify gathers what it alerts
    todo = findings_to_alert(results, [{"ok": True, "result_key": f"r{n}.json"} for n in range(2)])
    # Then every cited line reads back equal to the line screened (decoded when read), once per id
    assert sorted(todo.lines) == sorted(LINES) and len(todo.lines) == 3
    assert all(todo.lines[line_id] == line for line_id, line in LINES.items())
    assert todo.lines.get("H310101001/NOPE") is None and "H310101001/NOPE" not in todo.lines
    assert [f.finding_id for f in todo.findings] == sorted(f.finding_id for f in FINDINGS)
    # and the letters made from them are the letters made from the lines themselves
    by_mapping, by_lines = InMemorySink(), InMemorySink()
    for sink, lines in ((by_mapping, todo.lines), (by_lines, LINES)):
        notify_batch(
            todo.findings, batch_id="b-2026-03", kb=kb, sink=sink, issued_on=ISSUED, institution_names=NAMES,
            lines=lines, letters=partial(issue_letters, counters=InMemoryCounterStore(), render=_html_only),
        )  # fmt: skip
    html = {k: v for k, v in by_lines.documents.items() if k.endswith(".html")}
    assert html and {k: v for k, v in by_mapping.documents.items() if k.endswith(".html")} == html


def _html_only(letter, settings):  # type: ignore[no-untyped-def]
    return render_html(letter, settings.templates_dir), None


def test_stored_letters_are_announced_together_in_order(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a sink that can announce several letters at once (the local outbox: one transaction)
    calls: list[list[str]] = []

    class Together(InMemorySink):
        def publish_letters(self, messages):  # type: ignore[no-untyped-def]
            calls.append([m.message_id for m in messages])
            return super().publish_letters(messages)

    two = [*FINDINGS, FINDINGS[1].model_copy(update={"fixmedins_code": PHARMACY, "finding_id": "e" * 32})]
    sink = Together()
    summary = issue(sink, kb, findings=two)

    # Then every letter was announced in one call, in the order of the letters, after its
    # documents were stored
    announced = [r.letter_id for r in summary.letters if r.announced]  # type: ignore[attr-defined]
    assert len(announced) >= 2 and len(calls) == 1
    assert [m.body["letter_id"] for m in sink.letters] == announced
    assert calls[0] == [m.message_id for m in sink.letters]
    assert all(m.body["locations"]["html"].removeprefix("memory://") in sink.documents for m in sink.letters)


def test_notify_that_rereads_stored_findings_takes_only_their_ids_from_results_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a results file whose findings are bare ids (as the local run reads them: it
    # re-reads each finding as stored, so a second copy of the batch's findings is not held)
    from rxguard.local.objects import LocalObjects
    from rxguard.workflow.notify import findings_to_alert

    results = LocalObjects(tmp_path)
    results.put_json(
        "r.json",
        {"chunk_key": "c", "new": [{"finding_id": "b"}, {"finding_id": "a"}], "updated": [{"finding_id": "c"}]},
    )
    stored = {
        "a": FINDINGS[0].model_copy(update={"finding_id": "a"}),
        "c": FINDINGS[1].model_copy(update={"finding_id": "c", "status": "superseded"}),
    }
    asked: list[list[str]] = []

    def current(ids):  # type: ignore[no-untyped-def]
        asked.append(list(ids))
        return {i: stored[i] for i in ids if i in stored}

    # When Notify gathers what it alerts
    todo = findings_to_alert(results, [{"ok": True, "result_key": "r.json"}], current)
    # Then it asked for every id once, in id order, and alerts the stored findings still current
    assert asked == [["a", "b", "c"]]
    assert todo.findings == [stored["a"]]


def test_evidence_lines_share_their_repeated_text_and_read_back_unchanged() -> None:
    # Given two evidence lines of one institution, patient and drug, as results files hold them
    from rxguard.workflow.notify import EvidenceLines

    a, b = (json.loads(x.model_dump_json()) for x in list(LINES.values())[:2])
    b = {**b, "fixmedins_code": a["fixmedins_code"], "fixmedins_name": a["fixmedins_name"], "psn_no": a["psn_no"]}
    b["fixmedins_name"] = "".join(a["fixmedins_name"])  # an equal string, another object
    lines = EvidenceLines()
    for line in (a, b):
        lines.add(line)
    # Then the repeated text is held once, and each line reads back as it was written
    (names, first), (_, second) = (lines._rows[ClaimLine.id_of(x["fixmedins_code"], x["feedetl_sn"])] for x in (a, b))
    at = names.index("fixmedins_name")
    assert first[at] and first[at] == second[at] and first[at] is second[at]
    for line in (a, b):
        assert lines[ClaimLine.id_of(line["fixmedins_code"], line["feedetl_sn"])] == ClaimLine.model_validate(line)
