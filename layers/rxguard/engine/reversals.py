"""Reversals (退费): a line with a negative `cnt` and amount that names, in
`init_feedetl_sn`, an original line of the same institution (2204's 原费用明细流水号)
cancels that line wholly or in part.

The engine judges a patient on the net timeline: a wholly cancelled line is gone (its
supply, spending, visit and trace codes with it), a partly cancelled one keeps the rest
(quantity, amount, days of supply in proportion; the codes the reversal lists are
released). Reversal lines themselves are not purchases. A reversal whose original is not
known yet (another batch, another order) stays recorded and is applied when the
original arrives, since every evaluation starts from the whole recorded timeline: the
result does not depend on the order in which lines arrive.
"""

from __future__ import annotations

from collections.abc import Sequence

from rxguard.models import ClaimLine

_EPS = 1e-9


def net_reversals(lines: Sequence[ClaimLine]) -> list[ClaimLine]:
    """The timeline with reversals applied to their originals (order kept)."""
    reversals: dict[str, list[ClaimLine]] = {}
    for line in lines:
        target = line.reverses
        if target is not None:
            reversals.setdefault(target, []).append(line)
    if not reversals:
        return list(lines)
    out: list[ClaimLine] = []
    for line in lines:
        if line.reverses is not None:
            continue  # applied to its original below, or held until the original arrives
        cancel = reversals.get(line.line_id)
        if not cancel:
            out.append(line)
            continue
        netted = apply(line, cancel)
        if netted is not None:
            out.append(netted)
    return out


def apply(original: ClaimLine, reversals: Sequence[ClaimLine]) -> ClaimLine | None:
    """`original` less `reversals`; None when nothing is left."""
    if original.cnt <= 0:
        return None
    cnt = original.cnt + sum(r.cnt for r in reversals)  # reversal counts are negative
    if cnt <= _EPS:
        return None
    share = cnt / original.cnt
    released = {code for r in reversals for code in r.trace_codes}
    return original.model_copy(
        update={
            "cnt": cnt,
            "det_item_fee_sumamt": round(
                original.det_item_fee_sumamt + sum(r.det_item_fee_sumamt for r in reversals), 2
            ),
            "quantity_units": original.quantity_units * share,
            "days_supply": None if original.days_supply is None else original.days_supply * share,
            "trace_codes": [c for c in original.trace_codes if c not in released],
        }
    )
