"""What one photo may cost the analyzer (issue 12): at most :data:`MAX_PEOPLE` people and a time budget.

The web app sets the budget (``demo.handlers.REQUEST_BUDGET_S``) so one photo cannot hold the single processing
slot; the command lines run without one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from sibnet.boxes import box_area
from sibnet.detect import Person
from sibnet.errors import WorkLimitExceeded

# Work per photo is bounded: at most MAX_PEOPLE people are analysed, the largest faces first (a face's area is
# how much of the photo the person is), the others named in a notice. Each person costs three backbone
# passes per model and nine maps; measured on 2 cores, six people take about a second beyond one.
MAX_PEOPLE = 6


def at_most(people: Sequence[Person], limit: int, notices: list[str]) -> tuple[Person, ...]:
    """The ``limit`` people with the largest faces, renumbered left to right; a notice names how many were left."""
    if len(people) <= limit:
        return tuple(people)
    kept = sorted(people, key=lambda p: -box_area(p.face_box))[:limit]
    kept.sort(key=lambda p: p.id)  # pairing numbered them left to right
    notices.append(
        f"{len(people) - limit} more people were found but not analysed: at most {limit} per photo, "
        "the largest faces first"
    )
    return tuple(replace(p, id=i) for i, p in enumerate(kept))


def check_budget(started: float, budget_s: float | None, stage: str) -> None:
    if budget_s is not None and time.perf_counter() - started > budget_s:
        raise WorkLimitExceeded(
            f"this photo takes too long to analyse here (over {budget_s:g} s while {stage}); try a smaller "
            "photo or one with fewer people"
        )
