"""Building alert messages (schema v1) from findings: per-finding alerts, digests,
letter announcements. Pure functions: no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

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
        "schema_version": SCHEMA_VERSION,
        "message_type": "finding",
        "batch_id": batch_id,
        "finding": finding_payload(finding, kb, key),
    }
    subject = f"[rxguard] {finding.severity.value} {finding.rule_id} {finding.fixmedins_code or ''}".strip()
    return AlertMessage(
        message_id=f"finding/{finding.finding_id}",
        message_type="finding",
        subject=_ascii(subject),
        body=body,
        attributes={
            "message_type": "finding",
            "severity": finding.severity.value,
            "rule_id": finding.rule_id,
            "region": finding.admdvs or "",
            "institution_id": finding.fixmedins_code or "",
            "subject_type": finding.subject_type,
            "batch_id": batch_id,
        },
    )


def _order(f: Finding) -> tuple[int, str, str]:
    return (-f.severity.rank, f.occurred_at.isoformat(), f.finding_id)


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
    regions = sorted({f.admdvs for f in findings if f.admdvs})
    severity = max_severity(findings)
    body = {
        "schema_version": SCHEMA_VERSION,
        "message_type": "digest",
        "batch_id": batch_id,
        "institution_id": institution_id,
        "institution_name": institution_name,
        "regions": regions,
        "total": len(findings),
        "max_severity": severity.value,
        "by_severity": dict(sorted(Counter(f.severity.value for f in findings).items())),
        "by_rule": dict(sorted(by_rule.items())),
        "alerted_separately": sorted(alerted),
        "top": [
            {
                "finding_id": f.finding_id,
                "rule_id": f.rule_id,
                "severity": f.severity.value,
                "subject_type": f.subject_type,
                "psn_pseudonym": pseudonym(f.psn_no, key) if f.psn_no else None,
                "occurred_at": f.occurred_at.isoformat(),
                "evidence": list(f.evidence),
                "explanation_zh": _scrub(f.explanation_zh, f.psn_no, key),
            }
            for f in ordered[:top]
        ],
    }
    return AlertMessage(
        message_id=f"digest/{batch_id}/{institution_id}",
        message_type="digest",
        subject=_ascii(f"[rxguard] digest {institution_id}: {len(findings)} findings, max {severity.value}"),
        body=body,
        attributes={
            "message_type": "digest",
            "severity": severity.value,
            "rule_id": sorted(by_rule),
            "region": regions[0] if len(regions) == 1 else regions,
            "institution_id": "" if institution_id == NO_INSTITUTION else institution_id,
            "subject_type": sorted({f.subject_type for f in findings}),
            "batch_id": batch_id,
        },
    )


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
    regions = sorted({f.admdvs for f in findings if f.admdvs})
    severity = max_severity(findings)
    body = {
        "schema_version": SCHEMA_VERSION,
        "message_type": "letter",
        "batch_id": batch_id,
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
    return AlertMessage(
        message_id=message_id or f"letter/{batch_id}/{letter_id}",
        message_type="letter",
        subject=_ascii(f"[rxguard] letter {letter_id} ({len(findings)} findings)"),
        body=body,
        attributes={
            "message_type": "letter",
            "severity": severity.value,
            "rule_id": sorted({f.rule_id for f in findings}),
            "region": regions[0] if len(regions) == 1 else regions,
            "institution_id": institution_id or "",
            "subject_type": addressee_type,
            "batch_id": batch_id,
        },
    )


def correction(finding: Finding, *, batch_id: str, reason: str, key: str) -> AlertMessage:
    """Withdraws the alert of a finding that is no longer current (superseded by later
    lines, or withdrawn). Id `correction/<finding_id>/<batch_id>`: once per batch that
    withdrew it; subscribers match it to the alert `finding/<finding_id>`."""
    body = {
        "schema_version": SCHEMA_VERSION,
        "message_type": "correction",
        "batch_id": batch_id,
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
    return AlertMessage(
        message_id=f"correction/{finding.finding_id}/{batch_id}",
        message_type="correction",
        subject=_ascii(f"[rxguard] correction {finding.rule_id} {finding.fixmedins_code or ''}".strip()),
        body=body,
        attributes={
            "message_type": "correction",
            "severity": finding.severity.value,
            "rule_id": finding.rule_id,
            "region": finding.admdvs or "",
            "institution_id": finding.fixmedins_code or "",
            "subject_type": finding.subject_type,
            "batch_id": batch_id,
        },
    )


def _ascii(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean[:99]
