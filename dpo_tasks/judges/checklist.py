"""The checklist judge: the offline evaluation judge, independent of the labeling judge.

Each evaluation case carries expectations written for it (`checklist` in
`dpo_tasks/data/eval/<persona>.jsonl`), in the spirit of verifiable-instruction
benchmarks: every check is a yes/no a program can decide.

    {"forbid": [words the answer must not use, beyond the persona's lists],
     "require_any": [[synonyms], ...],   # each group: the answer uses at least one
     "min_ingredients": 3, "min_steps": 2}

An answer is checked for:

    persona_rules   no forbidden ingredient of the persona (its `allowed` phrases excepted)
    forbid          none of the case's `forbid` words
    request_<i>     one check per `require_any` group: it addresses that part of the request
    ingredients     at least `min_ingredients` ingredient lines
    steps           at least `min_steps` cooking steps
    complete        not cut off (the generator's record when it has one, else the last line)
    not_repetitive  under 30% repeated word trigrams

Every word match is negation-aware ("no pork", "pork-free", "tofu instead of
pork", "cauliflower rice, not rice" do not use pork or rice). A case without a
written checklist gets a derived one: `forbid` from what its request rules out
("no gochujang", "mild", "dairy-free"), no `require_any` groups, and the default
minimums; the summary reports how many cases had a written one.

The answer's score is the share of checks it passes (0-10, `overall`); the
better share wins, an equal share is a tie. An answer is *usable* when it passes
every check: on the request, an ingredient list and steps, not cut off, within
the persona's rules. Scores map onto the shared criteria: constraint_compliance
(persona rules and forbid), persona_alignment (the request groups met),
preferred_ingredients (the persona's preferred ingredients used), structure
(ingredients, steps, complete, not repetitive) and overall.

It shares the word matcher and the recipe reader with the rule judge but not
its verdict: the rule judge scores persona keywords and style, this judge the
case's own expectations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from dpo_tasks.config import Persona
from dpo_tasks.judges.base import Judge, OrderedVerdict, Scores
from dpo_tasks.judges.recipe import looks_cut_off, recipe_shape, request_constraints
from dpo_tasks.judges.rules import PREFERRED_SCALE, mentions, repetition, violations

DEFAULT_MIN_INGREDIENTS = 3
DEFAULT_MIN_STEPS = 2
MAX_REPETITION = 0.3
CHECKLIST_KEYS = ("forbid", "require_any", "min_ingredients", "min_steps")


@dataclass(frozen=True)
class Checklist:
    forbid: tuple[str, ...] = ()
    require_any: tuple[tuple[str, ...], ...] = ()
    min_ingredients: int = DEFAULT_MIN_INGREDIENTS
    min_steps: int = DEFAULT_MIN_STEPS
    written: bool = False

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Checklist":
        """A case's `checklist` field; a bad one raises ValueError naming `where`, the field and the value."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: 'checklist' = {raw!r} must be a mapping with keys {', '.join(CHECKLIST_KEYS)}")
        unknown = set(raw) - set(CHECKLIST_KEYS)
        if unknown:
            raise ValueError(f"{where}: checklist has unknown key(s) {sorted(unknown)!r}; allowed: {', '.join(CHECKLIST_KEYS)}")
        forbid = raw.get("forbid", [])
        if not isinstance(forbid, list) or not all(isinstance(w, str) and w.strip() for w in forbid):
            raise ValueError(f"{where}: checklist.forbid = {forbid!r} must be a list of non-empty words")
        groups = raw.get("require_any", [])
        if not isinstance(groups, list) or not all(
            isinstance(g, list) and g and all(isinstance(w, str) and w.strip() for w in g) for g in groups
        ):
            raise ValueError(f"{where}: checklist.require_any = {groups!r} must be a list of non-empty lists of words")
        mins = {}
        for key, default in (("min_ingredients", DEFAULT_MIN_INGREDIENTS), ("min_steps", DEFAULT_MIN_STEPS)):
            value = raw.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 50:
                raise ValueError(f"{where}: checklist.{key} = {value!r} must be an integer from 0 to 50")
            mins[key] = value
        return cls(forbid=tuple(w.strip() for w in forbid), require_any=tuple(tuple(w.strip() for w in g) for g in groups),
                   written=True, **mins)

    @classmethod
    def derive(cls, prompt: str) -> "Checklist":
        """What can be read off a case without a written checklist: what its request rules out."""
        return cls(forbid=request_constraints(prompt).ruled_out)


@dataclass
class CheckResult:
    checks: dict[str, bool]
    ingredients: int
    steps: int
    persona_violations: list[str] = field(default_factory=list)
    forbidden_used: list[str] = field(default_factory=list)
    missing: list[list[str]] = field(default_factory=list)
    cut_off: bool = False

    @property
    def usable(self) -> bool:
        return all(self.checks.values())

    @property
    def passed(self) -> int:
        return sum(self.checks.values())

    def failed(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]

    def as_dict(self) -> dict[str, Any]:
        return {"usable": self.usable, "passed": self.passed, "total": len(self.checks), "failed": self.failed(),
                "ingredients": self.ingredients, "steps": self.steps, "cut_off": self.cut_off,
                "persona_violations": self.persona_violations, "forbidden_used": self.forbidden_used, "missing": self.missing}


def check(persona: Persona, checklist: Checklist, response: str, *, cut_off: bool | None = None) -> CheckResult:
    """Run every check on one answer. `cut_off`: whether generation hit the token limit, when known."""
    text = response or ""
    shape = recipe_shape(text)
    broken = [term for term, _ in violations(persona, text)]
    forbidden = mentions(text, checklist.forbid, persona.allowed) if checklist.forbid else []
    missing = [list(g) for g in checklist.require_any if not mentions(text, g)]
    truncated = looks_cut_off(text) if cut_off is None else (cut_off or not text.strip())
    checks = {"persona_rules": not broken, "forbid": not forbidden}
    for i, group in enumerate(checklist.require_any):
        checks[f"request_{i + 1}"] = list(group) not in missing
    checks |= {
        "ingredients": shape.ingredients >= checklist.min_ingredients and shape.ingredients > 0,
        "steps": shape.steps >= checklist.min_steps and shape.steps > 0,
        "complete": not truncated,
        "not_repetitive": bool(text.strip()) and repetition(text) <= MAX_REPETITION,
    }
    return CheckResult(checks=checks, ingredients=shape.ingredients, steps=shape.steps, persona_violations=broken,
                       forbidden_used=forbidden, missing=missing, cut_off=truncated)


def _scores(persona: Persona, result: CheckResult, response: str, groups: int) -> Scores:
    c = result.checks
    compliance = 10.0 * (c["persona_rules"] + c["forbid"]) / 2
    met = groups - len(result.missing)
    alignment = 10.0 * met / groups if groups else 10.0
    preferred_used = len(mentions(response, persona.preferred_ingredients)) if response else 0
    structure = 10.0 * (c["ingredients"] + c["steps"] + c["complete"] + c["not_repetitive"]) / 4
    overall = 10.0 * result.passed / len(c)
    return Scores(
        persona_alignment=round(alignment, 2), constraint_compliance=round(compliance, 2),
        preferred_ingredients=PREFERRED_SCALE[min(preferred_used, len(PREFERRED_SCALE) - 1)],
        structure=round(structure, 2), overall=round(overall, 2),
    )


class ChecklistJudge(Judge):
    """Judges each answer against its case's checklist; the case is found by its request text.

    `cases`: the evaluation cases ({id, prompt, checklist?}). A request not among them is judged
    with a derived checklist. `cut_off`: answers known to have stopped at the token limit.
    """

    name = "checklist"

    def __init__(self, *, cases: Iterable[dict[str, Any]] = (), cut_off: Iterable[str] = ()):
        self.checklists: dict[str, Checklist] = {}
        for n, case in enumerate(cases, start=1):
            prompt = case.get("prompt")
            if not isinstance(prompt, str):
                continue
            where = f"evaluation case {case.get('id', n)!r}"
            self.checklists[prompt] = Checklist.parse(case["checklist"], where) if "checklist" in case else Checklist.derive(prompt)
        self.cut_off = set(cut_off)

    def checklist_for(self, prompt: str) -> Checklist:
        if prompt not in self.checklists:
            self.checklists[prompt] = Checklist.derive(prompt)
        return self.checklists[prompt]

    def written(self) -> int:
        """How many of the known cases came with a written checklist."""
        return sum(c.written for c in self.checklists.values())

    def check(self, persona: Persona, prompt: str, response: str) -> CheckResult:
        return check(persona, self.checklist_for(prompt), response, cut_off=True if response in self.cut_off else None)

    def score(self, persona: Persona, prompt: str, response: str) -> tuple[Scores, CheckResult]:
        result = self.check(persona, prompt, response)
        return _scores(persona, result, response, len(self.checklist_for(prompt).require_any)), result

    def compare_once(self, persona: Persona, prompt: str, first: str, second: str) -> OrderedVerdict:
        (s1, r1), (s2, r2) = self.score(persona, prompt, first), self.score(persona, prompt, second)
        gap = s1.overall - s2.overall
        preferred = "tie" if abs(gap) < 1e-9 else "first" if gap > 0 else "second"
        confidence = "high" if abs(gap) >= 3 else "medium" if abs(gap) >= 1 else "low"
        why = "; ".join(
            f"{label} passes {r.passed}/{len(r.checks)}" + (f", fails {', '.join(r.failed())}" if r.failed() else "")
            for label, r in (("first", r1), ("second", r2))
        )
        return OrderedVerdict(preferred=preferred, scores_first=s1, scores_second=s2, confidence=confidence, reason=why)
