"""The next-fill search (`service.first_passing_day`): whatever the starting guess, the answer
is the first passing day of a monotone check, or None when the horizon fails; an exact guess
costs two checks, no guess the horizon and a bisection."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from rxguard.api.service import first_passing_day

HORIZON = 400


def _monotone(first: int | None) -> tuple[list[int], Callable[[int], bool]]:
    probes: list[int] = []

    def passes(days: int) -> bool:
        assert 1 <= days <= HORIZON, days  # never probes today (known to fail) nor past the horizon
        probes.append(days)
        return first is not None and days >= first

    return probes, passes


@given(
    first=st.one_of(st.none(), st.integers(1, HORIZON)),
    guess=st.one_of(st.none(), st.integers(-50, HORIZON + 50)),
)
def test_the_answer_is_the_first_passing_day_whatever_the_guess(first: int | None, guess: int | None) -> None:
    probes, passes = _monotone(first)
    assert first_passing_day(passes, guess, HORIZON) == first
    # And the guess only saves work: never more than galloping both ways plus a bisection
    assert len(probes) <= 2 * 9 + 2


def test_an_exact_guess_costs_two_checks_and_no_guess_a_bisection() -> None:
    probes, passes = _monotone(23)
    assert first_passing_day(passes, 23, HORIZON) == 23
    assert probes == [23, 22]
    probes, passes = _monotone(23)
    assert first_passing_day(passes, None, HORIZON) == 23
    assert probes[0] == HORIZON and len(probes) == 1 + 9
    probes, passes = _monotone(None)
    assert first_passing_day(passes, 30, HORIZON) is None
    assert probes[-1] == HORIZON
