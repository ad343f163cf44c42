"""The mixed-precision search: per-layer options under one or more budgets.

Each layer has options (weight widths, then float) with a measured error and a cost
per budget (bytes of weights, estimated latency). Assuming the layers' squared errors
add up, a greedy search starts every layer at its cheapest option and repeatedly takes
the upgrade with the largest squared-error reduction per unit of added cost (each
budget's added cost as a fraction of that budget, summed) that keeps every budget.
Every step lowers the predicted error and raises no cost more than it fits: the steps
form the trade-off curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs


@attrs.frozen
class Budget:
    """One limit: each layer's cost per option, and the most the chosen options may cost."""

    name: str
    costs: Sequence[Sequence[float]]
    limit: float

    def total(self, choice: Sequence[int]) -> float:
        """What ``choice`` (one option index per layer) costs."""
        return sum(self.costs[layer][option] for layer, option in enumerate(choice))


@attrs.frozen
class Step:
    """One point of the trade-off curve: every budget's total and the predicted error."""

    totals: tuple[float, ...]
    error: float


def predicted_error(errors: Sequence[Sequence[float]], choice: Sequence[int]) -> float:
    """The model-output error ``choice`` predicts: the root of the layers' squared sum."""
    return math.sqrt(sum(errors[layer][option] ** 2 for layer, option in enumerate(choice)))


def _cheapest(layer: int, errors: Sequence[float], budgets: Sequence[Budget]) -> int:
    """The option of ``layer`` costing least over all budgets (the lower error on a tie)."""

    def key(option: int) -> tuple[float, float]:
        return sum(b.costs[layer][option] / b.limit for b in budgets), errors[option]

    return min(range(len(errors)), key=key)


def search(
    errors: Sequence[Sequence[float]], budgets: Sequence[Budget]
) -> tuple[list[int], list[Step]]:
    """Greedy upgrades by error reduction per budget used; the choice and the curve."""
    choice = [_cheapest(layer, row, budgets) for layer, row in enumerate(errors)]
    totals = [b.total(choice) for b in budgets]
    curve = [Step(tuple(totals), predicted_error(errors, choice))]
    while True:
        best: tuple[float, int, int] | None = None
        for layer, current in enumerate(choice):
            for option in range(len(errors[layer])):
                gain = errors[layer][current] ** 2 - errors[layer][option] ** 2
                extra = [b.costs[layer][option] - b.costs[layer][current] for b in budgets]
                if gain <= 0 or any(
                    t + e > b.limit for t, e, b in zip(totals, extra, budgets, strict=True)
                ):
                    continue
                used = sum(max(e, 0.0) / b.limit for e, b in zip(extra, budgets, strict=True))
                ratio = math.inf if used == 0 else gain / used
                if best is None or ratio > best[0]:
                    best = (ratio, layer, option)
        if best is None:
            return choice, curve
        _, layer, option = best
        choice[layer] = option
        totals = [b.total(choice) for b in budgets]
        curve.append(Step(tuple(totals), predicted_error(errors, choice)))
