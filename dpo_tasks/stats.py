"""Win-rate statistics for pairwise evaluation.

A tie counts as half a win, so "no difference" sits at 0.5 and a gate on the
interval's lower bound at 0.5 means "better than the baseline, with 95%
confidence". The interval is Wilson's score interval: unlike the normal
approximation it stays inside [0, 1] and behaves at small n and at 0 or n
wins, which is exactly where 20 evaluation cases put us.

With `evaluation.samples_per_case` k > 1 each case is answered k times, and the
k outcomes of one case are not independent (a case the candidate is good at
tends to win every time). `clustered_win_rate` treats the case as the cluster:
the variance of the win rate is the cluster-robust (between-case) estimate,
its ratio to the variance the same outcomes would have if independent is the
design effect (Kish; never below 1), and Wilson's interval is taken at the
effective sample size n / design effect (Korn & Graubard's adaptation for
clustered samples). With one answer per case it is exactly `win_rate`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Iterable, Mapping

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; `successes` may be fractional (ties as half),
    and so may `n` (an effective sample size).

    With no observations nothing is known: (0.0, 1.0).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if n <= 0:
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
    # Distinct cases behind the n outcomes, and what they are worth as independent observations.
    clusters: int = 0
    effective_n: float = 0.0
    design_effect: float = 1.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def effective_wilson_interval(score: float, n: int, effective_n: float) -> tuple[float, float]:
    """Wilson's interval for `score` out of `n` outcomes that are worth `effective_n` independent ones."""
    return wilson_interval(score * effective_n / n if n else 0.0, effective_n)


OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def _score(outcome: str) -> float:
    if outcome not in OUTCOME_SCORE:
        raise ValueError(f"outcome {outcome!r} is not one of 'win', 'loss', 'tie'")
    return OUTCOME_SCORE[outcome]


def design_effect(clusters: list[list[float]]) -> float:
    """Variance of the mean score with clusters as the unit over its variance with independent outcomes (>= 1).

    Cluster-robust variance: C/(C-1) * sum_c (S_c - p m_c)^2 / N^2 (S_c the cluster's score, m_c its size);
    independent: N/(N-1) * sum_i (y_i - p)^2 / N^2. A single cluster is worth one observation.
    """
    sizes = [len(c) for c in clusters if c]
    n, c = sum(sizes), len(sizes)
    if n == 0 or all(m == 1 for m in sizes):
        return 1.0
    if c == 1:
        return float(n)
    p = sum(map(sum, clusters)) / n
    within = n / (n - 1) * sum((y - p) ** 2 for cl in clusters for y in cl)
    if within == 0:  # every outcome the same: nothing varies, clustered or not
        return 1.0
    between = c / (c - 1) * sum((sum(cl) - p * len(cl)) ** 2 for cl in clusters if cl)
    return max(1.0, between / within)


def clustered_win_rate(outcomes_by_case: Mapping[str, Iterable[str]]) -> WinRate:
    """Win rate over every judged answer pair, with the interval at the effective sample size.

    `outcomes_by_case`: case id -> the outcomes ("win", "loss", "tie") of its samples. Cases with no
    outcome are ignored.
    """
    clusters = [[_score(o) for o in outs] for outs in outcomes_by_case.values()]
    clusters = [c for c in clusters if c]
    flat = [y for c in clusters for y in c]
    n = len(flat)
    wins, ties = flat.count(1.0), flat.count(0.5)
    score = wins + 0.5 * ties
    deff = design_effect(clusters)
    n_eff = n / deff
    low, high = effective_wilson_interval(score, n, n_eff)
    return WinRate(
        n=n, wins=wins, losses=n - wins - ties, ties=ties,
        win_rate=score / n if n else 0.5, ci_low=low, ci_high=high,
        clusters=len(clusters), effective_n=round(n_eff, 4), design_effect=round(deff, 4),
    )


def win_rate(outcomes: Iterable[str]) -> WinRate:
    """Outcomes are "win", "loss" or "tie" from the candidate's side, one per independent case."""
    return clustered_win_rate({str(i): [o] for i, o in enumerate(outcomes)})


def describe_judged(s: dict[str, Any]) -> str:
    """'20 cases', or with several samples per case '60 pairs from 20 cases, 3 per case; effective n 31.2'."""
    samples = s.get("samples_per_case") or 1
    if samples == 1:
        return f"{s.get('n')} cases"
    return (f"{s.get('n')} pairs from {s.get('cases_judged', '?')} cases, {samples} per case; "
            f"effective n {s.get('effective_n', 0):.1f}")
