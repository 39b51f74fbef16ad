"""Generate the sample claim batches in events/batches/ (they drive `make run`, the demo).

    .venv/bin/python scripts/make_samples.py [--out events/batches]

Deterministic: the same script gives byte-identical files. Five batches over
September-November 2025, one per input format and encoding, telling one story: ordinary
patients and legitimate chronic care (monthly refills, a long-term prescription, a
discharge medication, an early refill with a documented travel reason), a handful of
clear abuse cases (one per rule), and a few bad lines (one per rejection reason).
events/batches/README.md lists every scenario with its patients and line ids.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from rxguard import claimline

ROOT = Path(__file__).resolve().parent.parent
START = date(2025, 9, 1)

# The contract's columns; the samples hold no reversal (退费), so no init_feedetl_sn column.
COLUMNS = [c for c in claimline.COLUMNS if c != "init_feedetl_sn"]

# file key -> (file name, region)
FILES = {
    "sh": ("01_shanghai_his_utf8.csv", "310000"),
    "hb": ("02_hebei_his_gb18030.csv", "130000"),
    "yl": ("03_yulin_bom.csv", "610800"),
    "pos": ("04_pharmacy_pos.jsonl", "310000"),
    "doc": ("05_platform_feedetail.json", "310000"),
}

INSTITUTIONS = {
    "H31000001": "浦东仁和医院",
    "H31000002": "徐汇康宁医院",
    "H31000003": "静安华山门诊部",
    "H31000004": "闵行中心医院",
    "P31000001": "康德大药房浦东店",
    "P31000002": "华联药房徐汇店",
    "P31000003": "益民大药房静安店",
    "H13000001": "石家庄仁济医院",
    "H13000002": "保定第二人民医院",
    "P13000001": "石家庄百姓大药房",
    "P13000002": "邯郸惠民药房",
    "H61080001": "榆林市康复医院",
    "P61080001": "榆林惠民大药房",
    "P61080002": "神木同仁堂药店",
}


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    price: float  # per pack


# Monitored drugs (codes from rules/drugs.json) and a few unmonitored ones (not in the catalogue).
AMLODIPINE = Product("XC08CA01A001", "苯磺酸氨氯地平片", 32.0)  # 28 x 5 mg, max 10 mg/day: 14 days a pack
ATORVASTATIN = Product("XC10AA05A001", "阿托伐他汀钙片", 42.0)  # 28 x 20 mg, max 80 mg/day: 7 days a pack
ENTECAVIR = Product("XJ05AF10A001", "恩替卡韦片", 18.6)  # 28 x 0.5 mg, max 1 mg/day: 14 days a pack
GLARGINE = Product("XA10AE04A001", "甘精胰岛素注射液", 78.0)  # 300 U pen, max 100 U/day: 3 days a pen
SEMAGLUTIDE = Product("XA10BJ06A001", "司美格鲁肽注射液", 392.0)  # 2.01 mg pen, max 0.143 mg/day: 14 days
ZOLPIDEM = Product("XN05CF02A001", "酒石酸唑吡坦片", 26.0)  # 10 x 10 mg, max 10 mg/day: 10 days a pack
TRAMADOL = Product("XN02AX02A001", "盐酸曲马多缓释片", 28.5)  # 10 x 100 mg, max 400 mg/day: 2.5 days
OSIMERTINIB = Product("XL01EB04A001", "甲磺酸奥希替尼片", 4776.0)  # 30 x 80 mg, max 80 mg/day: 30 days
METFORMIN = Product("XA10BA02A001", "盐酸二甲双胍片", 21.6)  # 60 x 500 mg, max 2550 mg/day: 11.8 days
AMOXICILLIN = Product("XJ01CA04B001", "阿莫西林胶囊", 12.5)  # unmonitored
PARACETAMOL = Product("XN02BE01B001", "对乙酰氨基酚片", 6.8)  # unmonitored
VITAMIN_C = Product("XA11GA01B001", "维生素C片", 3.2)  # unmonitored
COUGH = Product("XR05CB01B001", "乙酰半胱氨酸颗粒", 24.0)  # unmonitored
THYMALFASIN = Product("XL03AX99B001", "注射用胸腺法新", 620.0)  # unmonitored, expensive
UNMONITORED = (AMOXICILLIN, PARACETAMOL, VITAMIN_C, COUGH)


@dataclass
class Line:
    file: str
    values: dict[str, object]
    raw: str | bytes | None = None  # a deliberately bad line, written as is
    bad: bool = False


@dataclass
class Scenario:
    key: str
    title: str
    expect: str
    psn_no: list[str] = field(default_factory=list)
    line_ids: list[str] = field(default_factory=list)
    file_keys: set[str] = field(default_factory=set)


class Batch:
    """Collects the lines of every file and the scenarios that explain them."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.scenarios: list[Scenario] = []
        self._sn = 0
        self._trace = 0
        self._visit = 0
        self.rng = random.Random(20250901)

    def scenario(self, key: str, title: str, expect: str) -> Scenario:
        s = Scenario(key, title, expect)
        self.scenarios.append(s)
        return s

    def trace_code(self) -> str:
        self._trace += 1
        return f"8{self._trace:019d}"

    def add(
        self,
        file: str,
        psn_no: str,
        inst: str,
        when: datetime,
        product: Product,
        cnt: float,
        *,
        med_type: str | None = None,
        dx: str = "",
        scenario: Scenario | None = None,
        trace: int | list[str] | None = None,
        visit: str | None = None,
        **extra: object,
    ) -> dict[str, object]:
        self._sn += 1
        pharmacy = inst.startswith("P")
        if med_type is None:
            med_type = "41" if pharmacy else "11"
        monitored = not product.code.endswith("B001")
        if trace is None:
            trace = 1 if monitored else 0
        codes = trace if isinstance(trace, list) else [self.trace_code() for _ in range(trace)]
        values: dict[str, object] = {
            "feedetl_sn": f"FD{when:%Y%m%d}{self._sn:05d}",
            "fixmedins_code": inst,
            "fixmedins_name": INSTITUTIONS[inst],
            "admdvs": FILES[file][1] if inst[1:3] == "31" else {"13": "130000", "61": "610800"}[inst[1:3]],
            "psn_no": psn_no,
            "med_type": med_type,
            "fee_ocur_time": when.strftime("%Y-%m-%d %H:%M:%S"),
            "med_list_codg": product.code,
            "med_list_name": product.name,
            "cnt": cnt,
            "pric": product.price,
            "det_item_fee_sumamt": round(cnt * product.price, 2),
            "dise_codg": dx,
            "drug_trac_codg": ",".join(codes),
        }
        if not pharmacy:
            if visit is None:
                self._visit += 1
                visit = f"MD{when:%Y%m%d}{self._visit:05d}"
            values["mdtrt_id"] = visit
            values["setl_id"] = f"SE{visit[2:]}"
            values["bilg_dr_codg"] = f"D{inst[1:3]}{self.rng.randint(100, 999)}"
            values["rxno"] = f"RX{self._sn:06d}"
        values.update(extra)
        self.lines.append(Line(file, values))
        if scenario is not None:
            scenario.file_keys.add(file)
            if psn_no not in scenario.psn_no:
                scenario.psn_no.append(psn_no)
            scenario.line_ids.append(f"{inst}/{values['feedetl_sn']}")
        return values

    def bad(self, file: str, scenario: Scenario, raw: str | bytes | None = None, **values: object) -> None:
        """A deliberately bad line: `raw` text/bytes, or values written in the file's format."""
        self.lines.append(Line(file, dict(values), raw, bad=True))
        scenario.file_keys.add(file)


def at(day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime.combine(START + timedelta(days=day), datetime.min.time()).replace(hour=hour, minute=minute)


def psn(region: str, n: int) -> str:
    return f"{region}{n:08d}"


def build() -> Batch:
    b = Batch()
    rng = b.rng

    # --- legitimate care ---------------------------------------------------------------
    s = b.scenario(
        "chronic-refills",
        "Chronic patients with monthly refills at the same institution (hypertension, "
        "hyperlipidaemia, hepatitis B, insulin)",
        "no finding",
    )
    for day in (1, 29, 57, 85):
        b.add("sh", psn("310000", 101), "H31000001", at(day, 9, 10), AMLODIPINE, 2, med_type="14", dx="I10", scenario=s)
    for day in (2, 30, 58, 86):
        b.add("hb", psn("130000", 102), "P13000001", at(day, 15, 20), ATORVASTATIN, 4, dx="E78.0", scenario=s)
    for day in (3, 31, 59, 87):
        b.add(
            "yl", psn("610800", 103), "H61080001", at(day, 10, 5), ENTECAVIR, 2, med_type="14", dx="B18.1", scenario=s
        )
    for day in (4, 34, 64):
        b.add(
            "doc", psn("310000", 104), "H31000004", at(day, 8, 40), GLARGINE, 10, med_type="14", dx="E11.9", scenario=s
        )

    s = b.scenario(
        "long-term-prescription",
        "Long-term prescription (长期处方, lt_rx_flag=1): 12 weeks of amlodipine for stable hypertension",
        "no over-quantity finding (84 days allowed with a long-term prescription)",
    )
    for day in (5, 88):
        b.add("sh", psn("310000", 105), "H31000002", at(day, 14, 0), AMLODIPINE, 6, med_type="14", dx="I10",
              lt_rx_flag=1, prd_days=84, sin_dos_dscr="5mg", used_frqu_dscr="qd", scenario=s)  # fmt: skip

    s = b.scenario(
        "discharge-medication",
        "Discharge medication (出院带药, dscg_tkdrug_flag=1): 10 days of tramadol after hip surgery",
        "no over-quantity finding (discharge medication may cover 30 days)",
    )
    b.add("hb", psn("130000", 106), "H13000001", at(40, 11, 30), TRAMADOL, 4, med_type="21", dx="Z96.6",
          dscg_tkdrug_flag=1, scenario=s)  # fmt: skip

    s = b.scenario(
        "early-refill-travel",
        "Early refill with a documented reason: business trip (override_reason 出差 = travel)",
        "early-refill mitigated (lower severity, the finding names the reason)",
    )
    for day in (6, 34, 73):  # the refill after the trip comes 28 days after the early one
        b.add("hb", psn("130000", 107), "P13000002", at(day, 16, 0), ATORVASTATIN, 4, dx="E78.0", scenario=s)
    b.add("hb", psn("130000", 107), "P13000002", at(45, 9, 30), ATORVASTATIN, 4, dx="E78.0",
          override_reason="出差", scenario=s)  # fmt: skip

    # --- abuse -------------------------------------------------------------------------
    s = b.scenario(
        "early-refill-other-pharmacy",
        "Early refill at another pharmacy: entecavir for 28 days, again 6 days later elsewhere",
        "early-refill (high) and cross-institution-repeat",
    )
    b.add("pos", psn("310000", 201), "P31000001", at(32, 10, 0), ENTECAVIR, 2, dx="B18.1", scenario=s)
    b.add("pos", psn("310000", 201), "P31000002", at(38, 17, 45), ENTECAVIR, 2, dx="B18.1", scenario=s)

    s = b.scenario(
        "stockpiling",
        "Stockpiling: 28 days of atorvastatin every 9-10 days for three months, rotating institutions",
        "cumulative-oversupply (and early-refill, cross-institution-repeat)",
    )
    rotation = ("H61080001", "P61080001", "P61080002")
    for i, day in enumerate(range(0, 90, 9)):
        b.add("yl", psn("610800", 202), rotation[i % 3], at(day, 10 + i % 6, 15), ATORVASTATIN, 4, dx="E78.0",
              scenario=s)  # fmt: skip

    s = b.scenario(
        "excess-quantity",
        "Excess quantity on one line: 60 days of zolpidem (an acute, controlled hypnotic; 7 days allowed)",
        "over-quantity (high); 60 days on hand also exceed the stock allowed (cumulative-oversupply)",
    )
    b.add("sh", psn("310000", 203), "H31000003", at(44, 15, 10), ZOLPIDEM, 6, dx="G47.0", scenario=s)

    s = b.scenario(
        "trace-code-sold-twice",
        "A traceability code sold twice: the insulin pen sold to one patient is sold again, "
        "weeks later, at another pharmacy to someone else (resale, 回流)",
        "trace-code-reuse (high)",
    )
    code = b.trace_code()
    b.add("pos", psn("310000", 204), "P31000001", at(49, 11, 0), GLARGINE, 1, dx="E11.9", trace=[code], scenario=s)
    b.add("doc", psn("310000", 205), "P31000003", at(64, 16, 20), GLARGINE, 1, dx="E11.9", trace=[code], scenario=s)

    s = b.scenario(
        "restricted-without-diagnosis",
        "Restricted drug without a matching diagnosis: semaglutide (payment scope E11 diabetes) for obesity (E66.9)",
        "indication-mismatch",
    )
    b.add("hb", psn("130000", 206), "H13000002", at(37, 10, 40), SEMAGLUTIDE, 2, dx="E66.9", scenario=s)

    s = b.scenario(
        "frequent-visits",
        "16 outpatient visits in October at four hospitals (one a day)",
        "frequent-visits (>= 15 visits in a calendar month)",
    )
    hospitals = ("H31000001", "H31000002", "H31000003", "H31000004")
    for i, day in enumerate(range(30, 61, 2)):
        product = UNMONITORED[i % 4]
        b.add("sh", psn("310000", 207), hospitals[i % 4], at(day, 9 + i % 8, 30), product, 1, dx="R51", scenario=s)

    s = b.scenario(
        "multi-hospital-days",
        "Three hospitals in one day, on three days of November",
        "multi-hospital-days (>= 3 hospitals a day on >= 3 days of a month)",
    )
    for day in (63, 70, 77):
        for j, hospital in enumerate(("H31000001", "H31000002", "H31000003")):
            b.add("sh", psn("310000", 208), hospital, at(day, 8 + 3 * j, 15), AMOXICILLIN, 2, dx="J06.9", scenario=s)

    s = b.scenario(
        "pharmacy-spend",
        "More than 8000 yuan at pharmacies in November: 14 vials of thymalfasin (an unmonitored "
        "immune booster, 620 yuan each) at two pharmacies",
        "pharmacy-spend (> 8000 yuan in a calendar month)",
    )
    b.add("doc", psn("310000", 210), "P31000001", at(63, 10, 0), THYMALFASIN, 7, dx="Z51.8", scenario=s)
    b.add("doc", psn("310000", 210), "P31000002", at(80, 15, 30), THYMALFASIN, 7, dx="Z51.8", scenario=s)

    s = b.scenario(
        "specialty-drug-spend",
        "High pharmacy spending explained by a specialty cancer drug: osimertinib (4776 yuan a pack) "
        "for lung cancer, one pack a month at two pharmacies (双通道)",
        "pharmacy-spend only as low-severity information (specialty drug within the rules)",
    )
    b.add("doc", psn("310000", 209), "P31000001", at(61, 10, 0), OSIMERTINIB, 1, dx="C34.9", scenario=s)
    b.add("doc", psn("310000", 209), "P31000002", at(89, 10, 30), OSIMERTINIB, 1, dx="C34.9", scenario=s)

    # --- ordinary background patients: a few visits each, at most one modest monitored line
    s = b.scenario("background", "Ordinary patients: a few acute visits, occasional chronic medicine", "no finding")
    regions = (("sh", "310000", "H31000001 H31000002 H31000004 P31000002 P31000003"),
               ("hb", "130000", "H13000001 H13000002 P13000002"),
               ("yl", "610800", "H61080001 P61080001 P61080002"),
               ("pos", "310000", "P31000001 P31000002 P31000003"),
               ("doc", "310000", "H31000001 H31000003 P31000001"))  # fmt: skip
    n = 300
    for file, region, insts in regions:
        for _ in range(16):
            n += 1
            person = psn(region, n)
            chronic_bought = False  # one modest monitored purchase at most: nothing to flag
            for _ in range(rng.randint(2, 5)):
                inst = rng.choice(insts.split())
                when = at(rng.randrange(0, 91), rng.randint(8, 17), rng.randrange(0, 60, 5))
                if not chronic_bought and rng.random() < 0.3:
                    chronic_bought = True
                    b.add(file, person, inst, when, METFORMIN, 2, med_type="41" if inst[0] == "P" else "14",
                          dx="E11.9", scenario=s)  # fmt: skip
                else:
                    product = rng.choice(UNMONITORED)
                    b.add(file, person, inst, when, product, rng.randint(1, 3), dx="J06.9", scenario=s)

    # --- bad lines: one per rejection reason ---------------------------------------------
    s = b.scenario("bad-lines", "Bad lines, one per rejection reason (see the table below)", "rejected")
    good = dict(b.lines[0].values)
    b.bad("sh", s, **{**good, "feedetl_sn": "FDBAD0001", "psn_no": ""})  # missing
    b.bad("sh", s, **{**good, "feedetl_sn": "FDBAD0002", "drug_trac_codg": "8123456789012345678"})  # malformed
    b.bad("sh", s, **good)  # duplicate of line 2 (a resent line)
    encoded = ",".join(_csv_cell(v) for v in {**good, "feedetl_sn": "FDBAD0003"}.values())
    name = "浦东仁和医院"
    b.bad("sh", s, raw=encoded.encode("utf-8").replace(name.encode("utf-8"), name.encode("gbk")))
    hb = dict(next(line for line in b.lines if line.file == "hb").values)
    b.bad("hb", s, **{**hb, "feedetl_sn": "FDBAD0004", "cnt": -2, "det_item_fee_sumamt": -2 * float(str(hb["pric"]))})
    b.bad("hb", s, raw="FDBAD0005,H13000001,石家庄仁济医院,130000")  # ragged_row
    yl = dict(next(line for line in b.lines if line.file == "yl").values)
    b.bad("yl", s, **{**yl, "feedetl_sn": "FDBAD0006", "det_item_fee_sumamt": 99.99})  # amount_mismatch
    pos = dict(next(line for line in b.lines if line.file == "pos").values)
    b.bad("pos", s, **{**pos, "feedetl_sn": "FDBAD0007", "fee_ocur_time": "2025-13-45 25:00:00"})  # bad_time
    b.bad("pos", s, **{**pos, "feedetl_sn": "FDBAD0008", "sin_dos_dscr": "x" * 70_000})  # too_long
    doc = dict(next(line for line in b.lines if line.file == "doc").values)
    b.bad("doc", s, **{**doc, "feedetl_sn": "FDBAD0009", "cnt": {"value": 2, "unit": "盒"}})  # unknown_field_type
    return b


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _ordered(lines: list[Line]) -> list[Line]:
    """Good lines in time order, each bad line after the good line it was made next to."""

    def key(line: Line) -> str:
        return str(line.values.get("fee_ocur_time", ""))

    good = sorted((ln for ln in lines if not ln.bad), key=key)
    bad = [ln for ln in lines if ln.bad]
    return good[:40] + bad + good[40:]


def _csv_rows(lines: list[Line]) -> Iterator[str | bytes]:
    yield ",".join(COLUMNS)
    for line in lines:
        if line.raw is not None:
            yield line.raw
        else:
            yield ",".join(_csv_cell(line.values.get(c, "")) for c in COLUMNS)


def write(out: Path) -> dict[str, list[Line]]:
    b = build()
    out.mkdir(parents=True, exist_ok=True)
    by_file = {k: _ordered([ln for ln in b.lines if ln.file == k]) for k in FILES}
    for key, (name, _) in FILES.items():
        lines = by_file[key]
        path = out / name
        if key in ("sh", "hb", "yl"):
            encoding = {"sh": "utf-8", "hb": "gb18030", "yl": "utf-8"}[key]
            data = b"\r\n".join(r if isinstance(r, bytes) else r.encode(encoding) for r in _csv_rows(lines)) + b"\r\n"
            if key == "yl":
                data = b"\xef\xbb\xbf" + data
            path.write_bytes(data)
        elif key == "pos":
            rows = [json.dumps(_typed(ln.values), ensure_ascii=False) for ln in lines]
            path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        else:
            doc = {"infno": "2204", "msgid": "H31000000120251130000001",
                   "input": {"feedetail": [_as_text(ln.values) for ln in lines]}}  # fmt: skip
            path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(b, by_file), encoding="utf-8")
    return by_file


def _typed(values: dict[str, object]) -> dict[str, object]:
    """JSON Lines as POS systems send them: numbers as numbers, empty fields left out."""
    return {k: v for k, v in values.items() if v not in ("", None)}


def _as_text(values: dict[str, object]) -> dict[str, object]:
    """The platform's documents carry most values as strings."""
    return {k: (v if isinstance(v, dict) else str(v)) for k, v in values.items() if v not in ("", None)}


def _readme(b: Batch, by_file: dict[str, list[Line]]) -> str:
    out = [
        "# Sample claim batches",
        "",
        "Generated by `scripts/make_samples.py` (deterministic; edit the script, not these files).",
        "They drive `make run` (the offline demo). September-November 2025, three regions:",
        "310000 Shanghai, 130000 Hebei, 610800 Yulin. Hospitals `H...`, pharmacies `P...`.",
        "",
        "| file | format | encoding | lines |",
        "|---|---|---|---|",
    ]
    formats = {
        "sh": ("CSV", "UTF-8"),
        "hb": ("CSV", "GB18030 (Chinese names)"),
        "yl": ("CSV", "UTF-8 with BOM"),
        "pos": ("JSON Lines", "UTF-8"),
        "doc": ('JSON document `{"input": {"feedetail": [...]}}`', "UTF-8"),
    }
    for key, (name, _) in FILES.items():
        out.append(f"| `{name}` | {formats[key][0]} | {formats[key][1]} | {len(by_file[key])} |")
    out += ["", "## Scenarios", ""]
    for s in b.scenarios:
        if s.key in ("background", "bad-lines"):
            continue
        files = ", ".join(f"`{FILES[k][0]}`" for k in FILES if k in s.file_keys)
        out += [
            f"### {s.key}",
            "",
            s.title + ".",
            "",
            f"- expected: {s.expect}",
            f"- patients (psn_no): {', '.join(f'`{p}`' for p in s.psn_no)}",
            f"- files: {files}",
            f"- lines: {', '.join(f'`{x}`' for x in s.line_ids)}",
            "",
        ]
    background = next(s for s in b.scenarios if s.key == "background")
    out += [
        "### background",
        "",
        f"{len(background.psn_no)} ordinary patients ({len(background.line_ids)} lines): acute visits with "
        "unmonitored drugs, now and then two packs of metformin. Expected: no finding.",
        "",
        "## Bad lines (one per rejection reason)",
        "",
        "| reason | file | what |",
        "|---|---|---|",
        f"| missing | `{FILES['sh'][0]}` | `FDBAD0001`: psn_no empty |",
        f"| malformed | `{FILES['sh'][0]}` | `FDBAD0002`: a 19-digit trace code |",
        f"| duplicate | `{FILES['sh'][0]}` | a line of patient `31000000000101` sent again (same line id) |",
        f"| encoding | `{FILES['sh'][0]}` | `FDBAD0003`: the institution name in GBK bytes inside a UTF-8 file |",
        f"| not_positive | `{FILES['hb'][0]}` | `FDBAD0004`: cnt -2 (a refund) |",
        f"| ragged_row | `{FILES['hb'][0]}` | `FDBAD0005`: 4 fields instead of 25 |",
        f"| amount_mismatch | `{FILES['yl'][0]}` | `FDBAD0006`: total 99.99 is not cnt x pric |",
        f"| bad_time | `{FILES['pos'][0]}` | `FDBAD0007`: fee_ocur_time 2025-13-45 25:00:00 |",
        f"| too_long | `{FILES['pos'][0]}` | `FDBAD0008`: a 70,000-character line |",
        f"| unknown_field_type | `{FILES['doc'][0]}` | `FDBAD0009`: cnt is a JSON object |",
        "",
        "`.venv/bin/rxguard validate events/batches/*` shows them with file, line, field and reason.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "events" / "batches")
    args = parser.parse_args()
    by_file = write(args.out)
    for key, (name, _) in FILES.items():
        print(f"{args.out / name}: {len(by_file[key])} lines")


if __name__ == "__main__":
    main()
