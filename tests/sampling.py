"""Drawing random programs until every advertised form has shown up (or a bound is hit).

A fixed sample of N programs sees a rare form on one Python version and not on another
(derandomized hypothesis draws differ between versions). Drawing until all forms are
seen, up to a generous bound, makes the check the same everywhere and stops as soon as
it can.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st


class _AllSeen(Exception):
    """Every wanted form showed up: the search can stop."""


def forms_seen(
    programs: st.SearchStrategy[str],
    forms: list[str],
    body: Callable[[str], str] = lambda source: source,
    bound: int = 3000,
) -> set[str]:
    """The ``forms`` that appear in the ``body`` of programs drawn, at most ``bound`` of them."""
    seen: set[str] = set()
    wanted = set(forms)

    @settings(
        max_examples=bound,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(programs)
    def collect(source: str) -> None:
        text = body(source)
        seen.update(form for form in wanted - seen if form in text)
        if seen >= wanted:
            raise _AllSeen

    try:
        collect()
    except _AllSeen:
        pass
    return seen
