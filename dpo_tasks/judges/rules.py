"""The persona rule judge: deterministic, offline, the default for labeling and evaluation.

Scores one recipe 0-10 on the five shared criteria:

- constraint_compliance: forbidden ingredients from personas.yaml (synonyms
  included), matched case-insensitively on word boundaries with plural forms
  ("prawns", "anchovies"). Phrases in the persona's `allowed` list are masked
  first ("cauliflower rice" for keto), and so are mentions that say the
  ingredient is absent or replaced: "no meat", "without cheese or cream",
  "instead of butter", "dairy-free", "non-dairy", "chorizo-style mushrooms",
  and substitutes named by what the persona needs ("vegan chorizo",
  "gluten-free pasta", "low-sodium soy sauce"; see _IMITATION). Cooking
  advice is not a negation: "do not overcook the chicken" and "no more than
  2 eggs" still count. One forbidden ingredient drops the score to 4, each
  further one by 1.5 more.
- persona_alignment: the persona's cuisine named, its style keywords and
  dietary labels, its preferred ingredients.
- preferred_ingredients: how many of the persona's preferred ingredients appear.
- structure: an ingredient list, numbered steps, a reasonable length, a title,
  not cut off mid-sentence, not repetitive.
- overall: weighted, compliance dominating; any violation caps it at 3, so a
  well-written recipe that breaks the diet never beats a plain one that keeps it,
  and a degenerate answer (a model stuck in a loop) is capped at 2, so it never
  beats a real compliant recipe and is rarely "chosen" over a bad one by the
  labeling margin.

Word boundaries are literal: "eggplant" is not "egg", "buttercup squash" and
"butternut" are not "butter", but "peanut butter" is butter unless the persona
allows it (the vegan persona does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from dpo_tasks.config import Persona
from dpo_tasks.judges.base import Judge, OrderedVerdict, Scores
from dpo_tasks.judges.recipe import looks_cut_off, recipe_shape, request_constraints

VIOLATION_CAP = 3.0
# A looping, degenerate answer keeps the diet only by saying nothing; capped
# below a violation so a pair of two bad answers rarely clears the label margin.
DEGENERATE_CAP = 2.0
DEGENERATE_REPETITION = 0.5
WEIGHTS = {"constraint_compliance": 0.35, "persona_alignment": 0.25, "preferred_ingredients": 0.2, "structure": 0.2}
PREFERRED_SCALE = (0.0, 4.0, 6.5, 8.5, 10.0)  # by number of distinct preferred ingredients used
# Overall is multiplied by these when the answer lacks an ingredient list or steps (both: NO_RECIPE).
PARTIAL_RECIPE = 0.7
NO_RECIPE = 0.4
# An answer that stops mid-sentence is missing its end: the step that finishes the dish.
CUT_OFF = 0.8
# Repeated word trigrams above REPETITION_FREE cost REPETITION_PENALTY times the excess (at most half).
REPETITION_FREE = 0.1
REPETITION_PENALTY = 1.5

# A negator opens a scope over the next few words ("no meat, dairy or eggs");
# the scope ends at sentence punctuation or at a word that starts a new clause
# ("without cheese, add chicken" still uses chicken).
_NEGATOR = re.compile(
    r"\b(?:no|not|never|nor|without|avoid(?:ing|s)?|omit(?:ting|s)?|skip(?:ping|s)?|exclud(?:e|es|ing)|"
    r"leave out|leaving out|hold the|instead of|in place of|rather than|free (?:of|from)|"
    r"replac(?:e|es|ed|ing)|swap(?:ped|ping|s)?(?: out)?|don't|do not|doesn't|does not|zero)\b"
    # "no-fuss", "no-bake", "no-knead": a hyphen makes "no" part of an adjective, not a negation.
    r"(?!-\w)"
)
# "not"/"never"/"don't" negate an ingredient only through a verb of using it:
# "do not add fish sauce" is a negation, "do not overcook the chicken" is not.
_VERBAL_NEGATORS = {"not", "never", "don't", "do not", "doesn't", "does not"}
_USE_VERBS = {"use", "using", "add", "adding", "added", "include", "including", "need", "needed", "contain",
              "containing", "require", "requires", "call", "calls"}
_FILLER = _USE_VERBS | {"any", "the", "a", "an", "some", "of", "for", "to", "it", "real", "traditional"}
# A bare "not"/"never" before a noun contrasts it away ("cauliflower rice, not rice"); before
# these words it qualifies something else ("not too much salt", "not only chicken").
_NOT_A_CONTRAST = {"too", "very", "so", "only", "just", "be", "been", "being", "have", "has", "had", "much", "quite",
                   "overly", "all", "enough", "that", "yet", "sure", "necessarily", "always", "even", "worry", "mind",
                   "forget", "miss", "go", "get", "make", "skip", "want", "need", "like"}
_CONTRAST_WORDS = 3
# "no more than 2 eggs" limits an amount; it does not remove the eggs.
_NOT_A_NEGATION_AFTER_NO = {"more", "less", "fewer", "longer", "later", "sooner", "matter", "doubt", "problem"}
# A negator followed by a cooking action is about technique, not ingredients
# ("without stirring the cream", "avoid overcooking the beef").
_COOKING_VERB = re.compile(r"^(?:\w+ing|over\w+|let|burn|cook|stir|crowd|rinse|forget|touch|move|flip|wash|rush|worry)$")
_SCOPE_STOP = {"but", "then", "with", "for", "by", "plus", "so", "add", "use", "serve", "top", "stir", "cook", "while",
               "until", "instead", "yet", "not", "never"}
_SCOPE_WORDS = 6
_SCOPE_BREAK = re.compile(r"[.;:!?\n()]")
_WORD = re.compile(r"[a-z][a-z'-]*")
# A word before a term makes it a substitute only when it promises what the
# persona needs: its own dietary labels ("gluten-free pasta" for gluten-free,
# "low-sodium soy sauce" for low-sodium), "<restriction>-free" / "non-<restriction>"
# ("dairy-free yogurt", "non-dairy milk"), and for vegetarians and vegans the
# words of meat and dairy imitations ("vegan chorizo", "plant-based milk").
# So "unsalted butter" is still butter for the vegan and "gluten-free bread"
# is still bread for keto.
_IMITATION = ("vegan", "vegetarian", "plant-based", "meatless", "veggie", "mock", "faux", "imitation")
_ANIMAL_FREE_DIETS = {"vegan", "vegetarian"}
# Suffixes after a term that say it is absent or imitated ("dairy-free", "chorizo-style").
_SUBSTITUTE_AFTER = r"[- ](?:free|style|like|less|substitute|alternative)\b"

_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", re.M)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|step\s*\d+\b)", re.M | re.I)
_BULLET = re.compile(r"^\s*[-*\u2022]\s+\S", re.M)
_INGREDIENTS_HEADER = re.compile(r"\bingredients?\b", re.I)
_STEPS_HEADER = re.compile(r"\b(?:instructions|method|steps|directions|preparation)\b", re.I)


def _term_pattern(term: str) -> str:
    """A term with flexible inner spacing/hyphens and its plural forms."""
    words = [re.escape(w) for w in re.split(r"[\s-]+", term.lower().strip())]
    last = words[-1]
    if last.endswith("y") and len(last) > 2 and last[-2] not in "aeiou":
        last = f"(?:{last}|{last[:-1]}ies)"
    else:
        last = f"{last}(?:s|es)?"
    return r"[\s-]+".join(words[:-1] + [last])


@dataclass(frozen=True)
class _Rules:
    forbidden: re.Pattern[str] | None
    term_category: dict[str, str]
    allowed: re.Pattern[str] | None
    substitute: re.Pattern[str] | None
    preferred: tuple[tuple[str, re.Pattern[str]], ...]
    cuisine: re.Pattern[str]
    style: tuple[re.Pattern[str], ...]
    style_names: tuple[str, ...]


@lru_cache(maxsize=64)
def _compile(
    forbidden: tuple[tuple[str, str], ...],
    substitute_words: tuple[str, ...],
    allowed: tuple[str, ...],
    preferred: tuple[str, ...],
    cuisines: tuple[str, ...],
    style: tuple[str, ...],
) -> _Rules:
    # Longest first so "ground beef" is reported as itself, not as "beef".
    terms = sorted((t for t, _ in forbidden), key=len, reverse=True)
    forbidden_re = substitute_re = None
    if terms:
        alts = "|".join(f"(?P<t{i}>{_term_pattern(t)})" for i, t in enumerate(terms))
        forbidden_re = re.compile(rf"\b(?:{alts})\b")
        any_term = "|".join(_term_pattern(t) for t in terms)
        before = "|".join(_term_pattern(w) for w in sorted(substitute_words, key=len, reverse=True))
        substitute_re = re.compile(
            rf"\b(?:{before})[- ](?:{any_term})\b|\bnon[- ]?(?:{any_term})\b|\b(?:{any_term}){_SUBSTITUTE_AFTER}"
        )
    allowed_sorted = sorted(allowed, key=len, reverse=True)
    allowed_re = re.compile(r"\b(?:" + "|".join(_term_pattern(a) for a in allowed_sorted) + r")\b") if allowed else None
    return _Rules(
        forbidden=forbidden_re,
        term_category={f"t{i}": t for i, t in enumerate(terms)},
        allowed=allowed_re,
        substitute=substitute_re,
        preferred=tuple((p, re.compile(rf"\b{_term_pattern(p)}\b")) for p in preferred),
        cuisine=re.compile(r"\b(?:" + "|".join(re.escape(c.lower()) for c in cuisines) + r")\b"),
        style=tuple(re.compile(rf"\b{_term_pattern(s)}\b") for s in style),
        style_names=style,
    )


def _rules_for(persona: Persona) -> tuple[_Rules, dict[str, str]]:
    terms = persona.forbidden_terms()
    diets = {d.lower() for d in persona.dietary_restrictions}
    substitute_words = set(diets)
    for category in persona.forbidden:
        substitute_words |= {f"{category.lower()}-free", f"non-{category.lower()}"}
    if diets & _ANIMAL_FREE_DIETS:
        substitute_words.update(_IMITATION)
    rules = _compile(
        tuple(sorted(terms.items())),
        tuple(sorted(substitute_words)),
        tuple(a.lower() for a in persona.allowed),
        tuple(p.lower() for p in persona.preferred_ingredients),
        tuple(persona.cuisines),
        tuple(s.lower() for s in (*persona.style_keywords, *persona.dietary_restrictions)),
    )
    return rules, terms


def _normalise(text: str) -> str:
    # Underscores join words for \b ("Cilantro_Chicken_Rice"); models emit them.
    return text.lower().replace("\u2019", "'").replace("\u2010", "-").replace("\u2011", "-").replace("_", " ")


def repetition(text: str) -> float:
    """Share of repeated word trigrams: 0 for varied text, near 1 for a model stuck in a loop."""
    words = text.lower().split()
    trigrams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _negated_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for neg in _NEGATOR.finditer(text):
        negator, pos = neg.group(), neg.end()
        brk = _SCOPE_BREAK.search(text, pos)
        limit = brk.start() if brk else len(text)
        words = list(_WORD.finditer(text, pos, limit))
        if not words:
            continue
        first = words[0].group()
        max_words = _SCOPE_WORDS
        if negator in _VERBAL_NEGATORS and first not in _USE_VERBS:
            if negator not in ("not", "never") or first in _NOT_A_CONTRAST or _COOKING_VERB.match(first):
                continue
            max_words = _CONTRAST_WORDS
        if negator == "no" and first in _NOT_A_NEGATION_AFTER_NO:
            continue
        end, counted, started = pos, 0, False
        for word in words:
            w = word.group()
            if not started and w in _FILLER:
                end = word.end()
                continue
            if not started and w not in _USE_VERBS and _COOKING_VERB.match(w):
                break
            if started and w in _SCOPE_STOP:
                break
            started = True
            counted += 1
            end = word.end()
            if counted >= max_words:
                break
        spans.append((neg.start(), end))
    return spans


def violations(persona: Persona, text: str) -> list[tuple[str, str]]:
    """Forbidden ingredients `text` uses, as (term as listed in personas.yaml, restriction), in order of appearance, each once."""
    rules, terms = _rules_for(persona)
    if rules.forbidden is None or not text:
        return []
    text = _normalise(text)
    # Spans found on the same text, so masking one kind cannot hide another.
    safe = [m for m in rules.substitute.finditer(text)] + ([m for m in rules.allowed.finditer(text)] if rules.allowed else [])
    spans = [m.span() for m in safe] + _negated_spans(text)
    masked = _blank(text, spans)
    found: dict[str, str] = {}
    for m in rules.forbidden.finditer(masked):
        term = rules.term_category[m.lastgroup]
        if _refers_back(text, m, safe):
            continue
        found.setdefault(term, terms[term])
    return list(found.items())


# "the pasta", "the hot pasta": a definite article and at most two words before the term.
_DEFINITE = re.compile(r"\bthe(?:\s+[a-z'-]+){0,2}\s+$")


def _refers_back(text: str, match: re.Match[str], safe: list[re.Match[str]]) -> bool:
    """"Cook the gluten-free pasta ... toss with the hot pasta": the second pasta is the first one.

    Only a mention with "the" after an earlier safe phrase ending in the same word refers back;
    "serve with steamed rice" after "cauliflower rice" is new rice.
    """
    word = match.group().split()[-1].rstrip("s")
    if not _DEFINITE.search(text[max(0, match.start() - 40):match.start()]):
        return False
    return any(m.end() <= match.start() and m.group().split()[-1].rstrip("s") == word for m in safe)


@lru_cache(maxsize=256)
def _mention_patterns(terms: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str] | None]:
    ordered = sorted(terms, key=len, reverse=True)
    alts = "|".join(f"(?P<t{i}>{_term_pattern(t)})" for i, t in enumerate(ordered))
    any_term = "|".join(_term_pattern(t) for t in ordered)
    found = re.compile(rf"\b(?:{alts})\b")
    absent = re.compile(rf"\bnon[- ]?(?:{any_term})\b|\b(?:{any_term}){_SUBSTITUTE_AFTER}")
    allowed_re = re.compile(r"\b(?:" + "|".join(_term_pattern(a) for a in sorted(allowed, key=len, reverse=True)) + r")\b") if allowed else None
    return found, absent, allowed_re


def mentions(text: str, terms: tuple[str, ...] | list[str], allowed: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The `terms` that `text` really uses, in order of first use, each once.

    The same reading as `violations` without a persona: negations ("no X", "without X",
    "X, not Y", "instead of X"), "X-free" / "non-X" and the `allowed` phrases do not count.
    """
    terms = tuple(t.lower().strip() for t in terms if t and t.strip())
    if not terms or not text:
        return []
    found_re, absent_re, allowed_re = _mention_patterns(terms, tuple(a.lower() for a in allowed))
    text = _normalise(text)
    spans = [m.span() for m in absent_re.finditer(text)] + _negated_spans(text)
    if allowed_re is not None:
        spans += [m.span() for m in allowed_re.finditer(text)]
    ordered = sorted(terms, key=len, reverse=True)
    out: dict[str, None] = {}
    for m in found_re.finditer(_blank(text, spans)):
        out.setdefault(ordered[int(m.lastgroup[1:])], None)
    return list(out)


def _count(patterns: tuple[re.Pattern[str], ...], text: str) -> int:
    return sum(1 for p in patterns if p.search(text))


def _structure(text: str) -> float:
    words = text.split()
    if not words:
        return 0.0
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    bullets = len(_BULLET.findall(text))
    numbered = len(_NUMBERED.findall(text))
    score = 0.0
    if _INGREDIENTS_HEADER.search(text) and len(_LIST_LINE.findall(text)) >= 2 or bullets >= 3:
        score += 3
    if numbered >= 2 or (_STEPS_HEADER.search(text) and len(lines) >= 4):
        score += 3
    n = len(words)
    score += 2 if 40 <= n <= 700 else 1 if 20 <= n <= 1200 else 0
    first = lines[0]
    if len(first.split()) <= 12 and not _LIST_LINE.match(first):
        score += 1
    last = lines[-1]
    if re.search(r"[.!?)\"'*]$", last) or (_LIST_LINE.match(last) and len(last.split()) <= 10):
        score += 1
    # Small models loop; repeated word trigrams are the cheap tell.
    repeated = repetition(text)
    if repeated > 0.3:
        score -= 3 if repeated < 0.6 else 6
    return max(0.0, min(10.0, score))


class RuleJudge(Judge):
    """Deterministic persona judge; `epsilon` is the overall-score gap below which two responses tie."""

    name = "rules"

    def __init__(self, *, epsilon: float = 0.25):
        if epsilon < 0:
            raise ValueError(f"epsilon={epsilon!r} must be >= 0")
        self.epsilon = epsilon

    violations = staticmethod(violations)

    def broken(self, persona: Persona, prompt: str, response: str) -> list[tuple[str, str]]:
        """What the response uses against the persona's lists and against its request, as (term, why)."""
        found = violations(persona, response)
        ruled_out = request_constraints(prompt or "").ruled_out
        if ruled_out:
            seen = {t for t, _ in found}
            found += [(t, "the request") for t in mentions(response, ruled_out, persona.allowed) if t not in seen]
        return found

    def score(self, persona: Persona, prompt: str, response: str) -> Scores:
        if not response or not response.strip():
            return Scores(0.0, 0.0, 0.0, 0.0, 0.0)
        rules, _ = _rules_for(persona)
        request = request_constraints(prompt or "")
        text = _normalise(response)
        broken = self.broken(persona, prompt, response)
        compliance = 10.0 if not broken else max(0.0, 4.0 - 1.5 * (len(broken) - 1))
        # Keywords count only where the answer uses them: "no kimchi" earns no kimchi, and what
        # the request ruled out ("mild": spicy, gochujang) earns nothing even when it is the persona's taste.
        affirmed = _blank(text, _negated_spans(text))
        ruled_out = {t.lower() for t in request.ruled_out}
        preferred_used = _count(tuple(p for name, p in rules.preferred if name not in ruled_out), affirmed)
        preferred = PREFERRED_SCALE[min(preferred_used, len(PREFERRED_SCALE) - 1)]
        style_used = _count(tuple(p for name, p in zip(rules.style_names, rules.style) if name not in ruled_out), affirmed)
        alignment = (3.0 if rules.cuisine.search(affirmed) else 0.0) + min(4.0, 1.5 * style_used) + min(3.0, float(preferred_used))
        structure = _structure(response)
        parts = {"constraint_compliance": compliance, "persona_alignment": alignment,
                 "preferred_ingredients": preferred, "structure": structure}
        overall = sum(WEIGHTS[k] * v for k, v in parts.items())
        # Keywords are no recipe: without an ingredient list and steps the answer cannot be cooked from,
        # however on-persona its words are.
        repeated = repetition(response)
        if repeated > DEGENERATE_REPETITION:
            # Already at the bottom; kept at the cap so two bad answers stay under the labeling margin.
            overall = min(overall, DEGENERATE_CAP)
        else:
            shape = recipe_shape(response)
            has_list, has_steps = shape.ingredients >= 2, shape.steps >= 2
            overall *= 1.0 if has_list and has_steps else PARTIAL_RECIPE if has_list or has_steps else NO_RECIPE
            if looks_cut_off(response):
                overall *= CUT_OFF
            overall *= 1 - min(0.5, REPETITION_PENALTY * max(0.0, repeated - REPETITION_FREE))
        if broken:
            overall = min(overall, VIOLATION_CAP)
        return Scores(
            persona_alignment=round(alignment, 2),
            constraint_compliance=round(compliance, 2),
            preferred_ingredients=round(preferred, 2),
            structure=round(structure, 2),
            overall=round(overall, 2),
        )

    def compare_once(self, persona: Persona, prompt: str, first: str, second: str) -> OrderedVerdict:
        s1, s2 = self.score(persona, prompt, first), self.score(persona, prompt, second)
        gap = s1.overall - s2.overall
        if abs(gap) <= self.epsilon:
            preferred = "tie"
        else:
            preferred = "first" if gap > 0 else "second"
        confidence = "high" if abs(gap) >= 3 else "medium" if abs(gap) >= 1 else "low"
        return OrderedVerdict(
            preferred=preferred, scores_first=s1, scores_second=s2, confidence=confidence,
            reason=f"overall {s1.overall:.2f} vs {s2.overall:.2f}; {self._why(persona, prompt, first, second)}",
        )

    def _why(self, persona: Persona, prompt: str, first: str, second: str) -> str:
        notes = []
        for label, text in (("first", first), ("second", second)):
            broken = self.broken(persona, prompt, text)
            if broken:
                notes.append(f"{label} uses {', '.join(f'{t} ({c})' for t, c in broken)}")
        return "; ".join(notes) or "no forbidden ingredients"
