"""Win-rate statistics for pairwise evaluation.

A tie counts as half a win, so "no difference" sits at 0.5 and a gate on the
interval's lower bound at 0.5 means "better than the baseline, with 95%
confidence". The interval is Wilson's score interval: unlike the normal
approximation it stays inside [0, 1] and behaves at small n and at 0 or n
wins, which is exactly where 20 evaluation cases put us.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Iterable

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; `successes` may be fractional (ties as half).

    With no observations nothing is known: (0.0, 1.0).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    n: int
    wins: int
    losses: int
    ties: int
    win_rate: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def win_rate(outcomes: Iterable[str]) -> WinRate:
    """Outcomes are "win", "loss" or "tie" from the candidate's side."""
    counts = {"win": 0, "loss": 0, "tie": 0}
    for o in outcomes:
        if o not in counts:
            raise ValueError(f"outcome {o!r} is not one of 'win', 'loss', 'tie'")
        counts[o] += 1
    n = sum(counts.values())
    score = counts["win"] + 0.5 * counts["tie"]
    low, high = wilson_interval(score, n)
    return WinRate(
        n=n, wins=counts["win"], losses=counts["loss"], ties=counts["tie"],
        win_rate=score / n if n else 0.5, ci_low=low, ci_high=high,
    )
