"""The judge interface shared by labeling and evaluation.

A judge compares two responses to one request for one persona. Every judge
scores on the same five criteria (0-10), so reports and `summary_stats.json`
keep the same keys whichever judge ran.

Position bias: `judge_pairs` asks for a verdict in both orders (A,B) and (B,A)
and keeps a winner only when both agree; otherwise the pair is a
"disagree"-tie. API judges override `judge_pairs` to add concurrency, caching
and rate limits, but combine the two orders with `combine_orders`, so the rule
is the same everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from dpo_tasks.config import Persona

CRITERIA = (
    "persona_alignment",
    "constraint_compliance",
    "preferred_ingredients",
    "structure",
    "overall",
)

Preferred = Literal["first", "second", "tie"]
Winner = Literal["a", "b", "tie"]
# ok: a winner both orders agree on; tie: the judge called it even;
# disagree: the two orders picked different winners (position bias);
# invalid: the judge's answer could not be understood; failed: no answer after retries.
Status = Literal["ok", "tie", "disagree", "invalid", "failed"]


@dataclass(frozen=True)
class Scores:
    persona_alignment: float
    constraint_compliance: float
    preferred_ingredients: float
    structure: float
    overall: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scores":
        return cls(**{k: float(d[k]) for k in CRITERIA})


@dataclass(frozen=True)
class OrderedVerdict:
    """One judgement with the responses shown in one order."""

    preferred: Preferred
    scores_first: Scores | None = None
    scores_second: Scores | None = None
    confidence: str | None = None  # high / medium / low where the judge says
    reason: str = ""


@dataclass(frozen=True)
class PairItem:
    id: str
    prompt: str
    response_a: str
    response_b: str


@dataclass
class PairJudgement:
    id: str
    status: Status
    winner: Winner | None  # None for invalid/failed
    scores_a: Scores | None = None
    scores_b: Scores | None = None
    margin: float = 0.0  # |overall_a - overall_b|, averaged over orders
    confidence: str | None = None
    reason: str = ""
    source: str = "judge"  # judge / cache / hard-constraint / rules
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scores_a"] = self.scores_a.as_dict() if self.scores_a else None
        d["scores_b"] = self.scores_b.as_dict() if self.scores_b else None
        return d


def _mean_scores(a: Scores | None, b: Scores | None) -> Scores | None:
    if a is None or b is None:
        return a or b
    return Scores(**{k: (getattr(a, k) + getattr(b, k)) / 2 for k in CRITERIA})


def combine_orders(item_id: str, ab: OrderedVerdict | None, ba: OrderedVerdict | None, *, source: str = "judge") -> PairJudgement:
    """Combine the (A,B) verdict and the (B,A) verdict into one judgement.

    `ba` may be None when only one order was asked for (cost setting); the
    caller is then responsible for having randomised the order.
    """
    verdicts = [{"order": o, **asdict(v)} for o, v in (("ab", ab), ("ba", ba)) if v is not None]
    if ab is None:
        raise ValueError("combine_orders needs at least the (A,B) verdict")

    def to_winner(v: OrderedVerdict, first: Winner) -> Winner:
        if v.preferred == "tie":
            return "tie"
        second: Winner = "b" if first == "a" else "a"
        return first if v.preferred == "first" else second

    w_ab = to_winner(ab, "a")
    scores_a = ab.scores_first
    scores_b = ab.scores_second
    if ba is not None:
        w_ba = to_winner(ba, "b")
        scores_a = _mean_scores(scores_a, ba.scores_second)
        scores_b = _mean_scores(scores_b, ba.scores_first)
    else:
        w_ba = w_ab
    margin = abs(scores_a.overall - scores_b.overall) if scores_a and scores_b else 0.0
    confidence = ab.confidence if ba is None or ab.confidence == ba.confidence else _lower_confidence(ab.confidence, ba.confidence)
    reason = ab.reason if ba is None else " | ".join(r for r in (ab.reason, ba.reason) if r)
    if w_ab == w_ba == "tie":
        status, winner = "tie", "tie"
    elif w_ab == w_ba:
        status, winner = "ok", w_ab
    else:
        status, winner = "disagree", "tie"
    return PairJudgement(
        id=item_id, status=status, winner=winner, scores_a=scores_a, scores_b=scores_b,
        margin=margin, confidence=confidence, reason=reason, source=source, verdicts=verdicts,
    )


_CONF_ORDER = {"low": 0, "medium": 1, "high": 2}


def _lower_confidence(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return min((a, b), key=lambda c: _CONF_ORDER.get(c, -1))


class Judge(ABC):
    """Compares two responses for a persona. Subclasses implement `compare_once`."""

    name: str = "judge"

    @abstractmethod
    def compare_once(self, persona: Persona, prompt: str, first: str, second: str) -> OrderedVerdict:
        """Judge with `first` shown first. May raise on transport errors."""

    def judge_pairs(self, persona: Persona, items: Sequence[PairItem], *, both_orders: bool = True, progress: Any = None) -> list[PairJudgement]:
        out = []
        for item in items:
            ab = self.compare_once(persona, item.prompt, item.response_a, item.response_b)
            ba = self.compare_once(persona, item.prompt, item.response_b, item.response_a) if both_orders else None
            out.append(combine_orders(item.id, ab, ba, source=self.name))
            if progress is not None:
                progress.advance()
        return out

    def accounting(self) -> dict[str, Any]:
        """Calls made/saved, tokens, cost: whatever this judge tracks. Empty for local judges."""
        return {}
