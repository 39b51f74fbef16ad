"""Patient identifiers never reach a log in clear (docs/security.md, claim L1-L4).

Every test captures the real bytes a Powertools Logger (or a stdlib handler) writes and
searches them for the identifiers that went in.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime

import pytest
from aws_lambda_powertools import Logger
from hypothesis import given, settings
from hypothesis import strategies as st

from rxguard.models import ClaimLine, InstitutionKind
from rxguard.privacy import (
    Pseudonymizer,
    RedactionFilter,
    Redactor,
    install_log_redaction,
    mask,
    mask_certificate,
)

KEY = "test-pseudonym-key-0123456789"
PSN = "3301000000123456"  # 16 digits: caught both by key and by the digit-run rule
PSN_ALNUM = "PSN-Z7Q4"  # short, not numeric: caught only by key / context
CERT = "11010519491231002X"
TRACE = "81234567890123456789"


def _logger() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    # a unique service name gives a fresh stdlib logger (Powertools caches by name)
    log = Logger(service=f"sec-{uuid.uuid4().hex[:8]}", stream=stream, level="DEBUG")
    install_log_redaction(log, Redactor(Pseudonymizer(KEY)))
    return log, stream


def _line(psn_no: str) -> ClaimLine:
    return ClaimLine(
        feedetl_sn="F1",
        fixmedins_code="H0001",
        institution_kind=InstitutionKind.HOSPITAL,
        psn_no=psn_no,
        mdtrt_id="V1",
        med_type="11",
        fee_ocur_time=datetime(2026, 1, 2, 3, 4, 5),
        med_list_codg="XN02AA01A001",
        cnt=1,
        pric=1,
        det_item_fee_sumamt=1,
        quantity_units=10,
        trace_codes=[TRACE],
    )


def test_identifiers_in_message_extra_appended_keys_and_exception_are_redacted() -> None:
    # Given a Powertools Logger with redaction installed
    log, stream = _logger()
    # When identifiers are logged every way Powertools allows
    log.append_keys(psn_no=PSN_ALNUM, scope=f"patient:{PSN_ALNUM}")
    log.info(f"screening psn_no={PSN_ALNUM} cert {CERT} trace {TRACE}")
    log.info("line", extra={"claim_line": _line(PSN_ALNUM), "certno": CERT, "drug_trac_codg": f"{TRACE},{TRACE[::-1]}"})
    log.info({"psn_no": PSN, "nested": [{"patn_id": PSN_ALNUM}], "count": 3})
    try:
        raise ValueError(f"bad line of patient:{PSN_ALNUM} with 'psn_no': '{PSN_ALNUM}' id {CERT}")
    except ValueError:
        log.exception("failed")
    out = stream.getvalue()
    # Then none of the identifiers is in the output, in any form
    for secret in (PSN, PSN_ALNUM, CERT, TRACE, TRACE[::-1], CERT[:17]):
        assert secret not in out, secret
    # and the records are still valid JSON that carries the stable token instead
    records = [json.loads(x) for x in out.splitlines()]
    assert len(records) == 4
    token = Pseudonymizer(KEY).psn(PSN_ALNUM)
    assert records[0]["psn_no"] == token and f"patient:{token}" == records[0]["scope"]
    assert records[1]["claim_line"]["psn_no"] == token
    assert records[3]["exception_name"] == "ValueError" and token in records[3]["exception"]
    assert records[2]["message"]["count"] == 3  # non-personal data untouched


def test_non_personal_fields_stay_readable() -> None:
    # Given the redacting logger
    log, stream = _logger()
    # When a line id, batch id and counts are logged
    log.info(
        "chunk done", extra={"batch_id": "b-2026-01", "line_id": "H0001/F1", "lines": 5000, "feedetl_sn": "20260101"}
    )
    rec = json.loads(stream.getvalue())
    # Then they appear unchanged (logs stay useful for operations)
    assert (rec["batch_id"], rec["line_id"], rec["lines"], rec["feedetl_sn"]) == (
        "b-2026-01",
        "H0001/F1",
        5000,
        "20260101",
    )


def test_pseudonym_matches_the_alerts_pseudonym_for_the_same_key() -> None:
    # Given the alerts module's pseudonym (what subscribers see)
    from rxguard.alerts import pseudonym

    # When the log pseudonymizer uses the same key
    # Then a patient's token in the logs equals the one in the alerts, and differs per key
    assert Pseudonymizer(KEY).psn(PSN) == pseudonym(PSN, KEY)
    assert Pseudonymizer(KEY + "x").psn(PSN) != pseudonym(PSN, KEY)


def test_install_is_idempotent() -> None:
    # Given a logger with redaction installed twice
    log, stream = _logger()
    install_log_redaction(log, Redactor(Pseudonymizer(KEY)))
    # When a psn_no is logged
    log.info("x", extra={"psn_no": PSN_ALNUM})
    # Then it is tokenised once (not a token of a token)
    assert json.loads(stream.getvalue())["psn_no"] == Pseudonymizer(KEY).psn(PSN_ALNUM)


def test_without_a_key_tokens_are_random_per_process() -> None:
    # Given no RXGUARD_PSEUDONYM_KEY
    a, b = Pseudonymizer.from_env({}), Pseudonymizer.from_env({})
    # Then two pseudonymizers disagree (nobody can recompute a token without the key)
    assert a.psn(PSN) != b.psn(PSN)
    # and a configured key gives stable tokens
    assert Pseudonymizer.from_env({"RXGUARD_PSEUDONYM_KEY": KEY}).psn(PSN) == Pseudonymizer(KEY).psn(PSN)
    with pytest.raises(ValueError):
        Pseudonymizer("short")


def test_stdlib_filter_redacts_message_args_extras_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    # Given a plain stdlib logger whose handler carries the RedactionFilter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactionFilter(Redactor(Pseudonymizer(KEY))))
    handler.setFormatter(logging.Formatter("%(message)s %(psn_no)s"))
    std = logging.getLogger(f"sec-std-{uuid.uuid4().hex[:8]}")
    std.propagate = False
    std.addHandler(handler)
    # When identifiers come as args, extras and in an exception
    std.warning("patient %s cert %s", PSN, CERT, extra={"psn_no": PSN_ALNUM})
    try:
        raise KeyError(CERT)
    except KeyError:
        std.exception("lookup failed for trace %s", TRACE, extra={"psn_no": PSN_ALNUM})
    out = stream.getvalue()
    # Then nothing personal is written
    for secret in (PSN, PSN_ALNUM, CERT, TRACE):
        assert secret not in out
    assert "KeyError" in out


_digits = st.text(alphabet="0123456789", min_size=17, max_size=17)


@settings(max_examples=200, deadline=None)
@given(
    body=_digits,
    check=st.sampled_from("0123456789X"),
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    psn=st.text(
        alphabet=st.characters(min_codepoint=48, max_codepoint=122).filter(str.isalnum), min_size=4, max_size=30
    ),
)
def test_any_id_number_or_psn_in_free_text_is_redacted(
    body: str, check: str, prefix: str, suffix: str, psn: str
) -> None:
    # Given an 18-digit ID number and a psn_no embedded in arbitrary text
    cert = body + check
    text = f"{prefix} {cert} {suffix} psn_no={psn}; patient:{psn}"
    # When the text is redacted
    out = Redactor(Pseudonymizer(KEY)).text(text)
    # Then neither identifier survives
    assert cert not in out
    assert f"={psn};" not in out and f"patient:{psn}" not in out


def test_mask_keeps_at_most_a_third_of_the_value() -> None:
    # Given an ID number and a short value
    # When masked for display
    # Then the region prefix and the last 4 characters remain, and a short value is fully hidden
    assert mask_certificate(CERT) == "110" + "*" * 11 + "002X"
    assert mask("P123") == "****"
    assert mask("ABCDEFGHIJKL", head=1, tail=1) == "A**********L"
    assert mask("ABCDEFGHIJ", head=0, tail=4) == "**********"  # 4 of 10 would be more than a third


def test_the_project_logger_redacts() -> None:
    # Given rxguard's single Logger (rxguard.observability), writing to a captured stream
    from rxguard.observability import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        # When a handler logs a claim line and a psn_no
        logger.info(f"screen psn_no={PSN_ALNUM}", extra={"line": _line(PSN_ALNUM), "certno": CERT})
    finally:
        handler.setStream(previous)
    out = stream.getvalue()
    # Then neither the patient number nor the certificate nor the trace code is written
    assert out and PSN_ALNUM not in out and CERT not in out and TRACE not in out
