"""Delta debugging: the smallest case that still gives the same finding.

Two passes, both over a ``still_fails(case) -> bool`` test the caller runs against a
fresh back-end: Zeller's ddmin over the messages (across sessions, keeping their order
and their sessions), then each mutated message put back as recorded, one at a time,
where the finding survives without that mutation. Bounded by a number of tests. Pure:
the test is the only thing that touches the world.
"""

from __future__ import annotations

from collections.abc import Callable

from vhtrace.fuzz.case import Case, Message
from vhtrace.fuzz.rings import RingAttack

Unit = tuple[int, Message]
"""A message and the number of the session it is sent in."""


class Budget:
    def __init__(self, tests: int) -> None:
        self.left = tests
        self.used = 0

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self.used += 1
        return True


def units(case: Case) -> list[Unit]:
    return [(s, m) for s, session in enumerate(case.sessions) for m in session]


def from_units(
    items: list[Unit], mutations: tuple[str, ...] = (), attacks: tuple[RingAttack, ...] = ()
) -> Case:
    sessions: dict[int, list[Message]] = {}
    for number, message in items:
        sessions.setdefault(number, []).append(message)
    return Case(tuple(tuple(sessions[k]) for k in sorted(sessions)), mutations, attacks)


def ddmin(
    items: list[Unit], still_fails: Callable[[list[Unit]], bool], budget: Budget
) -> list[Unit]:
    """A 1-minimal sublist (as far as the budget goes) for which the test still fails."""
    n = 2
    while len(items) >= 2:
        chunk = max(1, len(items) // n)
        subsets = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for subset in subsets:  # a subset alone
            if len(subsets) > 2 and budget.take() and still_fails(subset):
                items, n, reduced = subset, 2, True
                break
        if not reduced:
            for i in range(len(subsets)):  # a complement
                complement = [u for j, s in enumerate(subsets) if j != i for u in s]
                if not budget.left:
                    return items
                if budget.take() and still_fails(complement):
                    items, n, reduced = complement, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items) or not budget.left:
                return items
            n = min(len(items), n * 2)
    return items


def minimize(case: Case, still_fails: Callable[[Case], bool], tests: int = 200) -> tuple[Case, int]:
    """The smallest case found that still fails, and how many tests it took."""
    budget = Budget(tests)
    attacks = case.attacks
    found = ddmin(units(case), lambda items: still_fails(from_units(items, (), attacks)), budget)
    for i, (number, message) in enumerate(found):
        if message.original is None or not budget.take():
            continue
        candidate = [*found[:i], (number, message.original), *found[i + 1 :]]
        if still_fails(from_units(candidate, (), attacks)):
            found = candidate
    if attacks and budget.take() and still_fails(from_units(found)):
        attacks = ()  # the finding does not need the ring attack
    kept = tuple(m.describe() for _, m in found if m.mutation) + tuple(a.what for a in attacks)
    return from_units(found, kept, attacks), budget.used
