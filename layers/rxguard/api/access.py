"""Who may do what: the caller's IAM identity -> the institutions it acts for.

API Gateway authenticates every request with SigV4 (AWS_IAM authorizer) and passes the
principal in `requestContext.identity` (`userArn`, `caller`). `ApiSettings.callers` maps
principals to grants; this module is the ONE place that decides, so the security helper
extends it here (e.g. Cognito claims, a DynamoDB grant table) without touching routes.

Rules:
- an institution submits checks and dispensings for its own fixmedins_code only;
- an institution reads its own findings only (fixmedins_code of the finding);
- a regulator (bureau) reads every finding and reviews (PATCH) them;
- every granted caller reads the rule base and its precision figures (no grant: 403).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rxguard.api.errors import Forbidden, InvalidField, NotFound
from rxguard.api.settings import ApiSettings, CallerGrant


@dataclass(frozen=True)
class Caller:
    principal: str  # userArn, else caller, else "anonymous"
    institutions: frozenset[str]
    regulator: bool
    enforced: bool  # False in "open" mode (offline serve, tests): everything allowed
    patient_ids: bool = False  # the grant shows patient numbers in clear (console); never in open mode

    def may_act_for(self, institution: str) -> bool:
        return not self.enforced or self.regulator or institution in self.institutions

    @property
    def reads_all(self) -> bool:
        return not self.enforced or self.regulator

    @property
    def reviews(self) -> bool:
        return not self.enforced or self.regulator


def identify(event: Mapping[str, Any], settings: ApiSettings) -> Caller:
    """The caller of an API Gateway REST proxy event, with its grant."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    arn = str(identity.get("userArn") or "")
    caller_id = str(identity.get("caller") or "")
    principal = arn or caller_id or "anonymous"
    if settings.auth_mode == "open":
        return Caller(principal, frozenset(), regulator=True, enforced=False)
    grant = _grant_for(settings.callers, (arn, caller_id))
    if grant is None:
        return Caller(principal, frozenset(), regulator=False, enforced=True)
    # institution codes compare as the ingestion normalizes them (upper case)
    return Caller(
        principal,
        frozenset(c.upper() for c in grant.institutions),
        grant.regulator,
        enforced=True,
        patient_ids=grant.patient_ids,
    )


def _grant_for(callers: Mapping[str, CallerGrant], keys: Iterable[str]) -> CallerGrant | None:
    keys = [k for k in keys if k]
    for key in keys:
        if key in callers:
            return callers[key]
    # prefix patterns ("arn:aws:sts::123:assumed-role/his-H001/*"): longest prefix wins
    best: tuple[int, CallerGrant] | None = None
    for pattern, grant in callers.items():
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            if any(k.startswith(prefix) for k in keys) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), grant)
    return best[1] if best else None


def require_institutions(caller: Caller, institutions: Iterable[str]) -> None:
    for code in sorted({c.upper() for c in institutions}):
        if not caller.may_act_for(code):
            raise Forbidden(f"caller may not act for institution {code}", "fixmedins_code")


def require_grant(caller: Caller) -> None:
    """Any grant at all (an institution or the regulator's): an unknown principal gets 403."""
    if caller.enforced and not caller.regulator and not caller.institutions:
        raise Forbidden("caller is not granted any institution")


def require_reviewer(caller: Caller) -> None:
    if not caller.reviews:
        raise Forbidden("only a regulator may review findings")


def readable_institution(caller: Caller, requested: str | None) -> str | None:
    """The institution whose findings a listing may show: None = all (regulators)."""
    if caller.reads_all:
        return None if requested is None else requested.upper()
    if requested is not None:
        require_institutions(caller, [requested])
        return requested.upper()
    if len(caller.institutions) == 1:
        return next(iter(caller.institutions))
    if not caller.institutions:
        raise Forbidden("caller is not granted any institution")
    raise InvalidField("institution is required: the caller acts for several institutions", "institution")


def require_finding_access(caller: Caller, fixmedins_code: str | None) -> None:
    if caller.reads_all:
        return
    if fixmedins_code is None or fixmedins_code not in caller.institutions:
        # same answer as a missing finding: do not reveal that it exists
        raise NotFound("no such finding")
