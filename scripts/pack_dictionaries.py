"""How `layers/rxguard/pack_dictionaries.json` was made (the preset deflate dictionaries of
`rxguard.dynamo.pack`, docs/storage-aws.md). Run once per dictionary version:

    python scripts/pack_dictionaries.py          # refuses to overwrite an existing version

A version is frozen the moment data is written with it (a pack names its dictionary, e.g.
`L1`, and is unreadable without the same bytes; tests/unit/test_dynamo_packs.py pins their
hashes). A better dictionary is a new version (`L2`) added beside the old one, never an edit.

What goes in (a preset dictionary is text the compressor may refer back to, the most useful
material last, at most 32 KB):
- `L` (a patient's purchase lines): the compact record's field names in the order
  `line_record` writes them, value shapes (times, amounts, visit ids), common Chinese words of
  institution and service names, and the knowledge base's monitored drugs (code, name, ATC);
- `F` (findings): one finding body per rule from a small synthetic run (the keys, rule ids,
  figure names and the explanation templates are the product's own text);
- `S` (trace-code sales): the shape of a bucket's sales (`line id -> [sale, code tails]`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers"), str(ROOT / "tools")]
OUT = ROOT / "layers" / "rxguard" / "pack_dictionaries.json"
VERSION = "1"

WORDS = (
    "有限公司 医药连锁 医药 大药房 药房 药店 连锁 分店 门店 诊所 卫生室 卫生院 社区卫生服务中心 "
    "中心医院 中医医院 妇幼保健院 附属医院 大学附属医院 分院 第一人民医院 第二人民医院 人民医院 医院 市第 区 县 "
    "片 胶囊 缓释片 肠溶片 分散片 颗粒 口服溶液 注射液 吸入气雾剂 滴眼液 软膏 盐酸 硫酸 "
    "床位费 诊查费 检测 测定 检查 血常规 尿常规 肝功能检测 肾功能检测 血糖测定 心电图 普通门诊诊查费 "
    "专家门诊诊查费 普通病房床位费 "
)

LINES = [
    {"sn": "2026010100000001", "fc": "P3101010001", "fn": "大药房1店", "ik": "pharmacy", "ad": "310101",
     "mi": "P3101010001202601010000001", "si": "SP3101010001202601010000001", "mt": "41",
     "t": "2026-01-01T09:00:00", "dc": "XB03AA07B011", "dn": "片", "n": 1.0, "pr": 9.9, "am": 9.9, "qu": 2.0,
     "dx": ["I10"], "sf": "batch.jsonl", "sl": 1, "~w": "batch-0"},
    {"sn": "2026010100000002", "fc": "H3101010001", "fn": "市第一人民医院", "ik": "hospital", "ad": "310101",
     "mi": "H3101010001202601010000002", "si": "SH3101010001202601010000002", "mt": "11",
     "t": "2026-01-01T10:00:00", "dc": "110200001", "dn": "普通门诊诊查费", "n": 1.0, "pr": 25.0, "am": 25.0,
     "qu": 1.0, "dr": "D3101010001001", "dx": ["E11.9"], "sf": "batch.jsonl", "sl": 2, "~w": "batch-0"},
    {"sn": "2026010100000003", "fc": "H3101010001", "fn": "市第一人民医院", "ik": "hospital", "ad": "310101",
     "mi": "H3101010001202601010000002", "si": "SH3101010001202601010000002", "mt": "14",
     "t": "2026-01-01T10:00:00", "dc": "XC09CA03A001", "dn": "片", "n": 2.0, "pr": 36.86, "am": 73.72,
     "qu": 56.0, "sd": "80mg", "uf": "qd", "pd": 28.0, "rx": "RX0000000001", "dr": "D3101010001001",
     "dx": ["I10"], "dg": True, "lt": True, "tc": ["81100010000000000001", "81100010000000000002"], "mo": True,
     "atc": "C09CA03", "ds": 28.0, "sf": "batch.jsonl", "sl": 3, "~w": "batch-0"},
]  # fmt: skip


def lines_dictionary() -> str:
    from rxguard.kb import get_knowledge_base

    drugs = "".join(f'"dc":"{d.drug_code}","dn":"{d.generic_name_zh}",' for d in get_knowledge_base().drugs.values())
    atcs = "".join(f'"mo":true,"atc":"{d.atc_code}","ds":' for d in get_knowledge_base().drugs.values())
    records = json.dumps(LINES, ensure_ascii=False, separators=(",", ":"))
    return WORDS + drugs + atcs + records


def findings_dictionary() -> str:
    import tempfile

    from rxguard.kb import get_knowledge_base
    from rxguard_tools.synth import SynthConfig, evaluate, generate

    kb = get_knowledge_base()
    records = generate(SynthConfig(patients=2000, seed=3, months=3), kb).records
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "population.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        findings, _ = evaluate.run_engine([path], kb)
    one: dict[str, dict[str, object]] = {}
    for finding in sorted(findings, key=lambda f: str(f["finding_id"])):
        one.setdefault(str(finding["rule_id"]), {k: v for k, v in finding.items() if k != "status"})
    return "".join(json.dumps(one[r], ensure_ascii=False, separators=(",", ":")) for r in sorted(one))


def sales_dictionary() -> str:
    sample = {
        "P3101010001/2026010100000001": ["2026-01-01T09:00:00|31010000000000000001|=", ["0000001", "0000002"]],
        "H3101010001/2026010100000002": ["2026-01-01T10:00:00|31010000000000000002|=|r=H3101010001/1", ["0000003"]],
        "P3101010002/2026010100000003": ["2026-01-01T11:00:00|31010000000000000003|=|p=XB03AA07B011:10.0", ["1"]],
    }
    return json.dumps(sample, ensure_ascii=False, separators=(",", ":"))


def main() -> int:
    existing = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {}
    made = {f"L{VERSION}": lines_dictionary(), f"F{VERSION}": findings_dictionary(), f"S{VERSION}": sales_dictionary()}
    clash = sorted(k for k in made if k in existing)
    if clash:
        print(f"{OUT}: {', '.join(clash)} exist and are frozen; raise VERSION for new ones", file=sys.stderr)
        return 1
    OUT.write_text(json.dumps({**existing, **made}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print({k: len(v.encode("utf-8")) for k, v in made.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
