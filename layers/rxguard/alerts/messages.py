"""Building alert messages (schema v1) from findings: per-finding alerts, digests,
letter announcements. Pure functions: no I/O."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from rxguard.alerts.schema import SCHEMA_VERSION, AlertMessage, pseudonym
from rxguard.kb import KnowledgeBase
from rxguard.models import Finding, Severity

NO_INSTITUTION = "-"  # digest key of findings without an institution (e.g. prescriber-only)


def _scrub(value: Any, psn_no: str | None, key: str) -> Any:
    """Replace patient numbers anywhere in figures: values under keys naming psn, and the
    finding's own psn_no inside any string."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if "psn" in str(k).lower():
                out[k] = _pseudonymize_any(v, key)
            else:
                out[k] = _scrub(v, psn_no, key)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v, psn_no, key) for v in value]
    if isinstance(value, str) and psn_no and psn_no in value:
        return value.replace(psn_no, pseudonym(psn_no, key))
    return value


def _pseudonymize_any(value: Any, key: str) -> Any:
    if isinstance(value, str):
        return pseudonym(value, key)
    if isinstance(value, list | tuple):
        return [_pseudonymize_any(v, key) for v in value]
    if isinstance(value, dict):
        return {pseudonym(str(k), key): _pseudonymize_any(v, key) for k, v in value.items()}
    return value


def rule_names(kb: KnowledgeBase, rule_id: str) -> tuple[str, str]:
    rule = kb.rules.get(rule_id)
    return (rule.name_zh, rule.name_en) if rule else (rule_id, rule_id)


def finding_payload(finding: Finding, kb: KnowledgeBase, key: str) -> dict[str, Any]:
    """The finding as it appears in messages: every field but psn_no, which becomes
    `psn_pseudonym`; explanations and figures are scrubbed of the patient number."""
    name_zh, name_en = rule_names(kb, finding.rule_id)
    psn = finding.psn_no
    return {
        "finding_id": finding.finding_id,
        "rule_id": finding.rule_id,
        "rule_version": finding.rule_version,
        "rule_name_zh": name_zh,
        "rule_name_en": name_en,
        "severity": finding.severity.value,
        "subject_type": finding.subject_type,
        "psn_pseudonym": pseudonym(psn, key) if psn else None,
        "fixmedins_code": finding.fixmedins_code,
        "bilg_dr_codg": finding.bilg_dr_codg,
        "admdvs": finding.admdvs,
        "occurred_at": finding.occurred_at.isoformat(),
        "evidence": list(finding.evidence),
        "figures": _scrub(dict(finding.figures), psn, key),
        "mitigations": list(finding.mitigations),
        "explanation_zh": _scrub(finding.explanation_zh, psn, key),
        "explanation_en": _scrub(finding.explanation_en, psn, key),
        "status": finding.status,
    }


def finding_alert(finding: Finding, *, batch_id: str, kb: KnowledgeBase, key: str) -> AlertMessage:
    body = {
        "finding": finding_payload(finding, kb, key),
    }
    subject = f"[rxguard] {finding.severity.value} {finding.rule_id} {finding.fixmedins_code or ''}".strip()
    return _message("finding", f"finding/{finding.finding_id}", subject, body, *_of_finding(finding, batch_id))


def _order(f: Finding) -> tuple[int, str, str]:
    return (-f.severity.rank, f.occurred_at.isoformat(), f.finding_id)


def _regions(findings: Sequence[Finding]) -> list[str]:
    """The regions (admdvs) of the findings, sorted."""
    return sorted({f.admdvs for f in findings if f.admdvs})


def _region(regions: list[str]) -> str | list[str]:
    """The region attribute of a message: one region as a string, several as a list."""
    return regions[0] if len(regions) == 1 else regions


def max_severity(findings: Sequence[Finding]) -> Severity:
    return max((f.severity for f in findings), key=lambda s: s.rank)


def digest(
    institution_id: str,
    findings: Sequence[Finding],
    *,
    batch_id: str,
    kb: KnowledgeBase,
    key: str,
    top: int,
    alerted: Sequence[str] = (),
    institution_name: str | None = None,
) -> AlertMessage:
    """One institution's digest for one batch: counts per rule and severity, top items."""
    ordered = sorted(findings, key=_order)
    by_rule: dict[str, dict[str, Any]] = {}
    for f in ordered:
        entry = by_rule.setdefault(
            f.rule_id,
            {"rule_name_zh": rule_names(kb, f.rule_id)[0], "count": 0, "by_severity": Counter()},
        )
        entry["count"] += 1
        entry["by_severity"][f.severity.value] += 1
    for entry in by_rule.values():
        entry["by_severity"] = dict(sorted(entry["by_severity"].items()))
    regions, severity = _regions(findings), max_severity(findings)
    body = {
        "institution_id": institution_id,
        "institution_name": institution_name,
        "regions": regions,
        "total": len(findings),
        "max_severity": severity.value,
        "by_severity": dict(sorted(Counter(f.severity.value for f in findings).items())),
        "by_rule": dict(sorted(by_rule.items())),
        "alerted_separately": sorted(alerted),
        "top": [
            _top_item(f, key, {"subject_type": f.subject_type}, {"evidence": list(f.evidence)}) for f in ordered[:top]
        ],
    }
    return _digest_message(
        f"digest/{batch_id}/{institution_id}",
        f"[rxguard] digest {institution_id}: {len(findings)} findings, max {severity.value}",
        body,
        findings,
        batch_id=batch_id,
        region=_region(regions),
        institution_id="" if institution_id == NO_INSTITUTION else institution_id,
    )


def _top_item(f: Finding, key: str, where: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """One of a digest's most severe findings, psn_no as its pseudonym; `where` after its
    severity (subject type or institution), `more` after its time (evidence)."""
    return {
        "finding_id": f.finding_id,
        "rule_id": f.rule_id,
        "severity": f.severity.value,
        **where,
        "psn_pseudonym": pseudonym(f.psn_no, key) if f.psn_no else None,
        "occurred_at": f.occurred_at.isoformat(),
        **more,
        "explanation_zh": _scrub(f.explanation_zh, f.psn_no, key),
    }


def _digest_message(
    message_id: str,
    subject: str,
    fields: dict[str, Any],
    findings: Sequence[Finding],
    *,
    batch_id: str,
    region: Any,
    institution_id: str,
) -> AlertMessage:
    """A digest message; its attributes from its fields and findings."""
    severity, rules, subject_types = (
        fields["max_severity"],
        sorted(fields["by_rule"]),
        sorted({f.subject_type for f in findings}),
    )
    attributes = (severity, rules, region, institution_id, subject_types, batch_id)
    return _message("digest", message_id, subject, fields, *attributes)


# The SNS message attributes subscribers filter on (docs/alerts.md), after message_type, in order
ATTRIBUTES = ("severity", "rule_id", "region", "institution_id", "subject_type", "batch_id")


def _message(kind: str, message_id: str, subject: str, fields: dict[str, Any], *attributes: Any) -> AlertMessage:
    """A message of `kind`: its body is the schema version, the kind and the batch, then
    `fields`; `attributes` are the values of ATTRIBUTES, in order (the batch last)."""
    named = dict(zip(ATTRIBUTES, attributes, strict=True))
    body = {"schema_version": SCHEMA_VERSION, "message_type": kind, "batch_id": named["batch_id"], **fields}
    return AlertMessage(
        message_id=message_id,
        message_type=kind,
        subject=_ascii(subject),
        body=body,
        attributes={"message_type": kind, **named},
    )


def _of_finding(finding: Finding, batch_id: str) -> tuple[Any, ...]:
    """The attributes of a message about one finding (its alert, its correction)."""
    f = finding
    return (f.severity.value, f.rule_id, f.admdvs or "", f.fixmedins_code or "", f.subject_type, batch_id)


def letter_announcement(
    *,
    batch_id: str,
    letter_id: str,
    number: str,
    kind_zh: str,
    addressee_type: str,
    institution_id: str | None,
    psn_pseudonym: str | None,
    findings: Sequence[Finding],
    locations: Mapping[str, str],
    issued_on: str,
    response_due: str,
    message_id: str | None = None,
) -> AlertMessage:
    regions, severity = _regions(findings), max_severity(findings)
    body = {
        "letter_id": letter_id,
        "letter_number": number,
        "letter_kind_zh": kind_zh,
        "addressee_type": addressee_type,
        "institution_id": institution_id,
        "psn_pseudonym": psn_pseudonym,
        "issued_on": issued_on,
        "response_due": response_due,
        "finding_ids": sorted(f.finding_id for f in findings),
        "locations": dict(sorted(locations.items())),
    }
    rules, region = sorted({f.rule_id for f in findings}), _region(regions)
    attributes = (severity.value, rules, region, institution_id or "", addressee_type, batch_id)
    subject = f"[rxguard] letter {letter_id} ({len(findings)} findings)"
    return _message("letter", message_id or f"letter/{batch_id}/{letter_id}", subject, body, *attributes)


def correction(finding: Finding, *, batch_id: str, reason: str, key: str) -> AlertMessage:
    """Withdraws the alert of a finding that is no longer current (superseded by later
    lines, or withdrawn). Id `correction/<finding_id>/<batch_id>`: once per batch that
    withdrew it; subscribers match it to the alert `finding/<finding_id>`."""
    body = {
        "corrects": f"finding/{finding.finding_id}",
        "finding_id": finding.finding_id,
        "rule_id": finding.rule_id,
        "severity": finding.severity.value,
        "subject_type": finding.subject_type,
        "psn_pseudonym": pseudonym(finding.psn_no, key) if finding.psn_no else None,
        "fixmedins_code": finding.fixmedins_code,
        "status": finding.status,
        "reason": reason,
    }
    subject = f"[rxguard] correction {finding.rule_id} {finding.fixmedins_code or ''}".strip()
    return _message(
        "correction", f"correction/{finding.finding_id}/{batch_id}", subject, body, *_of_finding(finding, batch_id)
    )


def _ascii(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean[:99]


# ---------------------------------------------------------------- readable Chinese (email, SMS)

SEVERITY_ZH = {"high": "高", "medium": "中", "low": "低"}
TAG = "【医保智能监管】"
SMS_LIMIT = 70  # one SMS segment of Chinese text (UCS-2)


def _date_zh(text: str | None) -> str:
    if not text or len(text) < 10:
        return text or ""
    year, month, day = text[:4], text[5:7], text[8:10]
    if not (year.isdigit() and month.isdigit() and day.isdigit()):
        return text
    return f"{int(year)}年{int(month)}月{int(day)}日"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def readable(message: AlertMessage) -> tuple[str, str, str]:
    """(subject, email text, SMS text) in Chinese for people: what email and SMS
    subscribers receive (queues and functions keep the JSON body). Subject: one line,
    under 100 characters; SMS: one segment (70 characters)."""
    body = message.body
    kind = message.message_type
    if kind == "finding":
        f = body["finding"]
        where = f.get("fixmedins_code") or "—"
        subject = f"{TAG}{SEVERITY_ZH.get(f['severity'], '')}风险疑点：{f['rule_name_zh']}（{where}）"
        lines = [
            f"疑点类型：{f['rule_name_zh']}",
            f"风险等级：{SEVERITY_ZH.get(f['severity'], f['severity'])}",
            f"定点医药机构：{where}",
            f"发生日期：{_date_zh(f.get('occurred_at'))}",
            f"疑点说明：{f['explanation_zh']}",
            f"涉及结算明细：{len(f.get('evidence') or [])}条",
            f"疑点编号：{f['finding_id']}（可在监管平台查询明细）",
        ]
        level = SEVERITY_ZH.get(f["severity"], "")
        sms = f"{TAG}{where}{level}风险疑点：{f['rule_name_zh']}，{_date_zh(f.get('occurred_at'))}"
    elif kind == "digest":
        who = body.get("institution_name") or body.get("institution_id") or body.get("region") or "—"
        period = body.get("period_label") or ""
        counts = body.get("by_severity") or {}
        high = counts.get("high", 0)
        subject = f"{TAG}{who}{period}疑点汇总：共{body['total']}项（高风险{high}项）"
        lines = [f"{who}{period}医保药品疑点汇总", f"疑点总数：{body['total']}项"]
        lines += [f"{SEVERITY_ZH[s]}风险：{counts[s]}项" for s in ("high", "medium", "low") if counts.get(s)]
        lines.append("按疑点类型：")
        lines += [f"  {r['rule_name_zh']}：{r['count']}项" for r in (body.get("by_rule") or {}).values()]
        if body.get("by_institution"):
            lines.append("按定点医药机构：")
            lines += [f"  {code}：{n}项" for code, n in list(body["by_institution"].items())[:20]]
        if body.get("top"):
            lines.append("重点疑点：")
            lines += [
                f"  {_date_zh(t.get('occurred_at'))} {SEVERITY_ZH.get(t['severity'], '')}风险 {t['explanation_zh']}"
                for t in body["top"]
            ]
        sms = f"{TAG}{who}{period}疑点{body['total']}项，其中高风险{high}项，请登录监管平台查看。"
    elif kind == "letter":
        subject = f"{TAG}{body['letter_kind_zh']} {body['letter_number']}"
        lines = [
            f"文号：{body['letter_number']}",
            f"文种：{body['letter_kind_zh']}",
            f"主送：{'定点医药机构' if body['addressee_type'] == 'institution' else '参保人'}"
            + (f" {body['institution_id']}" if body.get("institution_id") else ""),
            f"疑点：{len(body.get('finding_ids') or [])}项",
            f"成文日期：{_date_zh(body.get('issued_on'))}",
            f"回复期限：{_date_zh(body.get('response_due'))}",
            "文件：" + "、".join(f"{k} {v}" for k, v in sorted((body.get("locations") or {}).items())),
        ]
        due = _date_zh(body.get("response_due"))
        sms = f"{TAG}已制发{body['letter_kind_zh']}{body['letter_number']}，请于{due}前回复。"
    else:
        subject = f"{TAG}通知"
        lines = [json.dumps(body, ensure_ascii=False)]
        sms = subject
    footer = ["", "本邮件由医保智能监管系统自动发送。疑点不等同于违规认定。"]
    return _one_line(subject, 99), "\n".join([*lines, *footer]), _one_line(sms, SMS_LIMIT)


def sns_publish_arguments(message: AlertMessage) -> dict[str, str]:
    """`Subject`, `Message` and `MessageStructure` of an SNS Publish: the JSON body for
    queues, functions and HTTP endpoints (`default`), Chinese text for email and SMS."""
    subject, email, sms = readable(message)
    structured = {"default": message.body_json(), "email": email, "sms": sms}
    return {
        "Subject": subject,
        "Message": json.dumps(structured, ensure_ascii=False),
        "MessageStructure": "json",
    }


# ---------------------------------------------------------------- daily and weekly digests

DigestScope = Literal["region", "institution"]


def periodic_digest(
    scope: DigestScope,
    key: str,
    findings: Sequence[Finding],
    *,
    period: str,
    period_label: str,
    kb: KnowledgeBase,
    pseudonym_key: str,
    top: int,
    institution_name: str | None = None,
) -> AlertMessage:
    """A daily or weekly digest of one region (admdvs prefix) or one institution:
    counts per severity, rule and institution, the most severe items. `period` is
    `daily/2026-03-05` or `weekly/2026-W10`; the message id `digest/<period>/<scope>/<key>`
    makes a re-run publish nothing twice."""
    ordered = sorted(findings, key=_order)
    by_rule: dict[str, dict[str, Any]] = {}
    for f in ordered:
        entry = by_rule.setdefault(f.rule_id, {"rule_name_zh": rule_names(kb, f.rule_id)[0], "count": 0})
        entry["count"] += 1
    severity = max_severity(findings)
    by_institution = Counter(f.fixmedins_code or NO_INSTITUTION for f in findings)
    regions = _regions(findings)
    body = {
        "period": period,
        "period_label": period_label,
        "scope": scope,
        "institution_id": key if scope == "institution" else None,
        "institution_name": institution_name,
        "region": key if scope == "region" else None,
        "regions": regions,
        "total": len(findings),
        "max_severity": severity.value,
        "by_severity": dict(sorted(Counter(f.severity.value for f in findings).items())),
        "by_rule": dict(sorted(by_rule.items())),
        "by_institution": dict(by_institution.most_common()),
        "top": [_top_item(f, pseudonym_key, {"fixmedins_code": f.fixmedins_code}, {}) for f in ordered[:top]],
    }
    return _digest_message(
        f"digest/{period}/{scope}/{key}",
        f"[rxguard] {period} digest {scope} {key}: {len(findings)} findings",
        body,
        findings,
        batch_id=period,
        region=key if scope == "region" else _region(regions),
        institution_id=key if scope == "institution" else "",
    )
