"""`Scope`: the reconciliation unit of findings, one value type instead of strings built by
hand. The findings of one scope are a deterministic function of every line known for it,
so storing them is a replace, and late or repeated batches converge to the same set.

    Scope.patient(psn_no)        "patient:<psn_no>"       patient rules
    Scope.trace(code)            "trace:<code>"           trace-code reuse, across patients and institutions
    Scope.institution(code)      "institution:<code>"     institution-outlier of an institution
    Scope.prescriber(code)       "prescriber:<code>"      institution-outlier of a prescriber
    Scope.parse(text)            the inverse of str(); ValueError on anything else
    Scope.of(finding)            the scope a finding is reconciled in

A `Scope` is a `str` (its text is exactly the key every store already keeps), so adapters
store and compare it as text with no conversion, and `kind` / `key` read it back typed.
The text of a patient scope holds a psn_no: `rxguard.privacy` masks it in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, cast, get_args

ScopeKind = Literal["patient", "trace", "institution", "prescriber"]
KINDS: frozenset[str] = frozenset(get_args(ScopeKind))
_SEPARATOR = ":"


class Subject(Protocol):
    """What names a finding's subject: a `Finding`, or the API's view of one."""

    @property
    def subject_type(self) -> str: ...
    @property
    def psn_no(self) -> str | None: ...
    @property
    def fixmedins_code(self) -> str | None: ...
    @property
    def bilg_dr_codg(self) -> str | None: ...
    @property
    def figures(self) -> Mapping[str, Any]: ...


class Scope(str):
    """`<kind>:<key>`; build it with a constructor below, never by formatting a string."""

    __slots__ = ()

    def __new__(cls, kind: ScopeKind, key: str) -> Scope:
        if kind not in KINDS:
            raise ValueError(f"scope kind {kind!r} is not one of {sorted(KINDS)}")
        return super().__new__(cls, f"{kind}{_SEPARATOR}{key}")

    @classmethod
    def patient(cls, psn_no: str) -> Scope:
        return str.__new__(cls, f"patient{_SEPARATOR}{psn_no}")  # (a known kind: not checked again)

    @classmethod
    def trace(cls, code: str) -> Scope:
        return str.__new__(cls, f"trace{_SEPARATOR}{code}")  # (a known kind: not checked again)

    @classmethod
    def institution(cls, fixmedins_code: str) -> Scope:
        return str.__new__(cls, f"institution{_SEPARATOR}{fixmedins_code}")  # (a known kind: not checked again)

    @classmethod
    def prescriber(cls, bilg_dr_codg: str) -> Scope:
        return str.__new__(cls, f"prescriber{_SEPARATOR}{bilg_dr_codg}")  # (a known kind: not checked again)

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, sep, key = str(text).partition(_SEPARATOR)
        if not sep or kind not in KINDS:
            raise ValueError(f"not a scope: {text!r} (expected <{'|'.join(sorted(KINDS))}>:<key>)")
        return cls(cast(ScopeKind, kind), key)

    @classmethod
    def of(cls, finding: Subject) -> Scope:
        """The scope a finding belongs to (its subject)."""
        if finding.subject_type == "patient":
            return cls.patient(str(finding.psn_no))
        if finding.subject_type == "trace_code":
            return cls.trace(str(finding.figures.get("trace_code")))
        if finding.subject_type == "prescriber":
            return cls.prescriber(str(finding.bilg_dr_codg))
        return cls.institution(str(finding.fixmedins_code))

    @property
    def kind(self) -> ScopeKind:
        return cast(ScopeKind, self.partition(_SEPARATOR)[0])

    @property
    def key(self) -> str:
        return self.partition(_SEPARATOR)[2]

    def __repr__(self) -> str:
        return f"Scope({self.kind!r}, {self.key!r})"

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (self.kind, self.key)
