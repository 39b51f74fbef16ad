"""notify_batch: per-finding alerts, digests, muting, dedupe, pseudonyms (in memory)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rxguard.alerts import AlertSettings, AlertSettingsError, InMemorySink, notify_batch, pseudonym
from rxguard.letters import issue_letters
from rxguard.models import Finding, Severity
from rxguard.scope import Scope

NO_LETTERS = AlertSettings(letters_enabled=False)


def make_finding(
    rule_id: str,
    severity: str,
    *,
    psn_no: str = "31010019800101001X",
    institution: str = "H310101001",
    admdvs: str = "310000",
    line: str = "1",
    **extra: Any,
) -> Finding:
    evidence = [f"{institution}/{line}"]
    return Finding(
        finding_id=Finding.make_id(rule_id, Scope.patient(psn_no), evidence),
        rule_id=rule_id,
        rule_version=1,
        severity=Severity(severity),
        subject_type=extra.pop("subject_type", "patient"),
        psn_no=psn_no,
        fixmedins_code=institution,
        admdvs=admdvs,
        occurred_at=datetime(2026, 3, 2, 10, 0),
        evidence=evidence,
        figures=extra.pop("figures", {"days_supply": 60.0, "allowed_days": 7}),
        explanation_zh=f"参保人{psn_no}单次购药60天",
        explanation_en=f"patient {psn_no} bought 60 days at once",
        **extra,
    )


def test_high_findings_are_alerted_one_by_one_and_every_institution_gets_one_digest(kb) -> None:  # type: ignore[no-untyped-def]
    # Given two institutions, one high and two medium findings at the first, one low at the second
    high = make_finding("trace-code-reuse", "high", line="1")
    medium = [make_finding("over-quantity", "medium", line=str(n)) for n in (2, 3)]
    low = make_finding("frequent-visits", "low", institution="P310101002", line="9")
    sink = InMemorySink()

    # When the batch is notified
    summary = notify_batch([high, *medium, low], batch_id="b1", kb=kb, sink=sink, settings=NO_LETTERS)

    # Then only the high finding has its own alert, with the filterable attributes
    finding_alerts = [m for m in sink.alerts if m.message_type == "finding"]
    assert [m.body["finding"]["finding_id"] for m in finding_alerts] == [high.finding_id]
    attrs = finding_alerts[0].attributes
    assert (attrs["severity"], attrs["rule_id"], attrs["region"], attrs["institution_id"], attrs["subject_type"]) == (
        "high",
        "trace-code-reuse",
        "310000",
        "H310101001",
        "patient",
    )
    # And each institution has one digest counting its own findings per rule and severity
    digests = {m.body["institution_id"]: m.body for m in sink.alerts if m.message_type == "digest"}
    assert set(digests) == {"H310101001", "P310101002"}
    first = digests["H310101001"]
    assert first["total"] == 3
    assert first["by_rule"]["over-quantity"]["by_severity"] == {"medium": 2}
    assert first["by_rule"]["trace-code-reuse"]["by_severity"] == {"high": 1}
    assert first["alerted_separately"] == [high.finding_id]
    assert first["top"][0]["finding_id"] == high.finding_id  # most severe first
    assert digests["P310101002"]["by_severity"] == {"low": 1}
    assert (summary.alerts_published, summary.digests_published) == (1, 2)


def test_a_retried_batch_publishes_nothing_twice(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a batch already notified once
    findings = [make_finding("trace-code-reuse", "high"), make_finding("over-quantity", "medium", line="2")]
    sink = InMemorySink()
    notify_batch(findings, batch_id="b1", kb=kb, sink=sink, settings=NO_LETTERS)
    published = list(sink.alerts)

    # When the same batch is notified again (a retry), findings in another order
    summary = notify_batch(findings[::-1], batch_id="b1", kb=kb, sink=sink, settings=NO_LETTERS)

    # Then no message is published again
    assert sink.alerts == published
    assert (summary.alerts_published, summary.alerts_duplicate) == (0, 1)
    assert (summary.digests_published, summary.digests_duplicate) == (0, 1)


def test_a_high_finding_seen_again_in_a_later_batch_is_not_alerted_again(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a high finding alerted with batch b1
    finding = make_finding("cumulative-oversupply", "high")
    sink = InMemorySink()
    notify_batch([finding], batch_id="b1", kb=kb, sink=sink, settings=NO_LETTERS)

    # When batch b2 brings the same finding (same deterministic id)
    summary = notify_batch([finding], batch_id="b2", kb=kb, sink=sink, settings=NO_LETTERS)

    # Then its alert is not repeated (b2 still has its digest)
    assert summary.alerts_published == 0
    assert [m.message_type for m in sink.alerts].count("finding") == 1


def test_low_severity_can_be_muted_per_rule_and_per_institution(kb) -> None:  # type: ignore[no-untyped-def]
    # Given low findings of a muted rule, of a muted institution, and a medium finding of the muted rule
    muted_rule = make_finding("frequent-visits", "low", line="1")
    muted_inst = make_finding("pharmacy-spend", "low", institution="P310101009", line="2")
    kept_low = make_finding("pharmacy-spend", "low", line="3")
    medium_same_rule = make_finding("frequent-visits", "medium", line="4")
    settings = AlertSettings(
        letters_enabled=False, mute_low_rules=frozenset({"frequent-visits"}), mute_low_institutions={"P310101009"}
    )
    sink = InMemorySink()

    # When notified
    summary = notify_batch(
        [muted_rule, muted_inst, kept_low, medium_same_rule], batch_id="b1", kb=kb, sink=sink, settings=settings
    )

    # Then the muted ones appear nowhere, the others are in the digest
    listed = {t["finding_id"] for m in sink.alerts for t in m.body.get("top", [])}
    assert listed == {kept_low.finding_id, medium_same_rule.finding_id}
    assert summary.muted == 2
    assert "P310101009" not in {m.body.get("institution_id") for m in sink.alerts}


def test_no_message_carries_the_patient_number_in_clear(kb) -> None:  # type: ignore[no-untyped-def]
    # Given a finding whose explanation and figures mention the patient number
    psn = "31010019800101001X"
    finding = make_finding("trace-code-reuse", "high", psn_no=psn, figures={"psn_nos": [psn, "OTHER1"], "count": 2})
    sink = InMemorySink()

    # When notified
    notify_batch([finding], batch_id="b1", kb=kb, sink=sink, settings=NO_LETTERS)

    # Then the number appears in no body and no attribute, and the pseudonym stands for it
    texts = [m.body_json() + json.dumps(m.attributes) for m in sink.alerts]
    assert all(psn not in t and "OTHER1" not in t for t in texts)
    alert = next(m for m in sink.alerts if m.message_type == "finding").body["finding"]
    assert alert["psn_pseudonym"] == pseudonym(psn, NO_LETTERS.pseudonym_key)
    assert alert["figures"]["psn_nos"][0] == alert["psn_pseudonym"]
    assert pseudonym(psn, "another-key-of-16-chars") != alert["psn_pseudonym"]


def test_settings_come_from_a_json_document_and_variables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a JSON config file and a variable overriding one field
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps({"mute_low_rules": ["frequent-visits"], "response_working_days": 10}), encoding="utf-8")
    env = {"RXGUARD_ALERTS_CONFIG": str(path), "RXGUARD_MUTE_LOW_INSTITUTIONS": "P1, P2"}

    # When parsed
    settings = AlertSettings.from_env(env)

    # Then both apply
    assert settings.mute_low_rules == {"frequent-visits"}
    assert settings.mute_low_institutions == {"P1", "P2"}
    assert settings.response_working_days == 10
    assert settings.alert_min_severity is Severity.HIGH


def test_bad_settings_name_the_source_and_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given a config with a wrong severity
    path = tmp_path / "alerts.json"
    path.write_text('{"alert_min_severity": "urgent"}', encoding="utf-8")

    # When parsed, Then the error names the file and the field
    with pytest.raises(AlertSettingsError, match=r"alerts\.json: field alert_min_severity"):
        AlertSettings.from_env({"RXGUARD_ALERTS_CONFIG": str(path)})


def test_every_message_validates_against_the_published_schema(kb) -> None:  # type: ignore[no-untyped-def]
    # Given the schema of docs/ and a batch producing findings, digests and letters
    import jsonschema

    path = Path(__file__).resolve().parents[2] / "docs" / "alert-message.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    findings = [
        make_finding("trace-code-reuse", "high", line="1", figures={"psn_nos": ["A1", "B2"]}),
        make_finding("over-quantity", "medium", institution="P310101002", line="2"),
    ]
    sink = InMemorySink()

    # When notified
    notify_batch(findings, batch_id="b1", kb=kb, sink=sink, letters=issue_letters)

    # Then every body validates, all three kinds are there, and a body of another version does not
    validator = jsonschema.Draft202012Validator(schema)
    messages = [*sink.alerts, *sink.letters]
    assert {m.message_type for m in messages} == {"finding", "digest", "letter"}
    for message in messages:
        validator.validate(json.loads(message.body_json()))
    broken = json.loads(sink.alerts[0].body_json()) | {"schema_version": "2"}
    assert not validator.is_valid(broken)


def test_a_lambda_without_a_pseudonym_key_is_warned(caplog) -> None:  # type: ignore[no-untyped-def]
    # Given a Lambda environment without RXGUARD_PSEUDONYM_KEY, and one with it
    # When the settings are read
    with caplog.at_level("WARNING", logger="rxguard.alerts.settings"):
        AlertSettings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "notify"})
        warned = len(caplog.records)
        AlertSettings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "notify", "RXGUARD_PSEUDONYM_KEY": "k" * 32})

    # Then only the first is warned that its pseudonyms are reversible
    assert warned == 1 and len(caplog.records) == 1
    assert "RXGUARD_PSEUDONYM_KEY" in caplog.records[0].getMessage()


def test_muting_an_unknown_rule_is_an_error_naming_it(kb) -> None:  # type: ignore[no-untyped-def]
    # Given settings muting a misspelt rule id
    settings = AlertSettings(letters_enabled=False, mute_low_rules=frozenset({"frequent-visit"}))

    # When a batch is notified, Then the error names the field and the unknown id, and nothing is sent
    sink = InMemorySink()
    with pytest.raises(AlertSettingsError, match=r"mute_low_rules: unknown rule id\(s\) frequent-visit "):
        notify_batch([make_finding("frequent-visits", "low")], batch_id="b1", kb=kb, sink=sink, settings=settings)
    assert sink.alerts == []


def test_letters_enabled_without_an_issuer_fails_before_publishing(kb) -> None:  # type: ignore[no-untyped-def]
    # Given letters enabled (the default) and a caller that wired no letter issuer
    sink = InMemorySink()
    # When notified, Then it fails naming the missing wiring, and nothing was published
    with pytest.raises(AlertSettingsError, match="no letter issuer"):
        notify_batch([make_finding("trace-code-reuse", "high")], batch_id="b1", kb=kb, sink=sink)
    assert sink.alerts == [] and sink.letters == []
