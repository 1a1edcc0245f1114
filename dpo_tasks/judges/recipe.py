"""Reading a recipe and a request: shared by the rule judge and the checklist judge.

- `recipe_shape(text)`: how many ingredient lines and cooking steps an answer has.
  A line counts once however often a looping model repeats it.
- `looks_cut_off(text)`: the answer stops mid-sentence (the fallback when the
  generator did not record whether it hit the token limit).
- `request_constraints(prompt)`: what the request rules out ("no gochujang",
  "without pork", "dairy-free", "tofu instead of pork") and whether it asks for
  a mild dish ("mild", "not spicy", "without any heat").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# A header line, optionally decorated ("**Ingredients:**", "## Method").
_ING_HEADER = re.compile(r"^\W*(?:ingredients?|you(?:'ll| will)? need|what you need|shopping list)\b\W*(.*)$", re.I)
_STEP_HEADER = re.compile(r"^\W*(?:instructions?|method|steps|directions|preparation|how to (?:make|cook)(?: it)?)\b\W*(.*)$", re.I)
_ITEM = re.compile(r"^\s*(?:[-*\u2022+]|\d+\s*[.)]|step\s*\d+\s*[:.)-]?)\s*(\S.*)$", re.I)
_NUMBERED = re.compile(r"^\s*(?:\d+\s*[.)]|step\s*\d+)", re.I)
_SENTENCE = re.compile(r"[^.!?]+[.!?]")
# A step tells the cook to do something; three words is the shortest that does ("Serve with rice").
MIN_STEP_WORDS = 3
MAX_INGREDIENT_WORDS = 16

# Words that leave a sentence open: an answer ending on one was cut off.
_OPEN_ENDINGS = {"and", "or", "the", "a", "an", "of", "with", "to", "in", "for", "until", "then", "into", "on", "at",
                 "your", "some", "is", "are", "add", "stir", "cook", "about", "over", "from", "by", "as"}


@dataclass(frozen=True)
class Shape:
    ingredients: int
    steps: int


def _norm_line(line: str) -> str:
    return re.sub(r"\W+", " ", line.lower()).strip()


def recipe_shape(text: str) -> Shape:
    """Ingredient lines under an ingredients header (or bulleted lines without one) and steps
    under a method header (or numbered lines without one). Duplicate lines count once."""
    section: str | None = None
    ingredients: set[str] = set()
    steps: set[str] = set()
    for raw in (text or "").splitlines():
        line = raw.strip().strip("*_#").strip()
        if not line:
            continue
        head = _ING_HEADER.match(line)
        if head and len(line.split()) <= 6 or head and "," in head.group(1):
            section = "ingredients"
            # "Ingredients: tofu, kimchi, scallions" on one line.
            rest = head.group(1)
            if "," in rest:
                ingredients.update(_norm_line(p) for p in rest.split(",") if _norm_line(p))
            continue
        head = _STEP_HEADER.match(line)
        if head and len(line.split()) <= 6:
            section = "steps"
            rest = head.group(1)
            if rest:
                steps.update(_norm_line(s) for s in _SENTENCE.findall(rest) if len(s.split()) >= MIN_STEP_WORDS)
            continue
        item = _ITEM.match(raw)
        body = item.group(1) if item else line
        words = len(body.split())
        if section == "ingredients" and item and words <= MAX_INGREDIENT_WORDS:
            ingredients.add(_norm_line(body))
        elif section == "steps" and words >= MIN_STEP_WORDS:
            if item:
                steps.add(_norm_line(body))
            else:
                steps.update(_norm_line(s) for s in (_SENTENCE.findall(body) or [body]) if len(s.split()) >= MIN_STEP_WORDS)
        elif section is None and item:
            if _NUMBERED.match(raw) and words >= MIN_STEP_WORDS + 2:
                steps.add(_norm_line(body))
            elif words <= MAX_INGREDIENT_WORDS:
                ingredients.add(_norm_line(body))
    ingredients.discard("")
    steps.discard("")
    return Shape(len(ingredients), len(steps))


def looks_cut_off(text: str) -> bool:
    """True when the last line stops mid-sentence; a short list line ("- 1 lime") is a fine ending."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return True
    last = lines[-1].rstrip("*_ ")
    if re.search(r"[.!?)\"'\u201d:]$", last):
        return False
    words = re.findall(r"[a-z']+", last.lower())
    if words and words[-1] in _OPEN_ENDINGS:
        return True
    return not (_ITEM.match(last) and len(last.split()) <= 8)


# What "mild" rules out. "hot" alone is not here: "serve hot" is about temperature.
HEAT_TERMS = ("gochujang", "gochugaru", "chili", "chilli", "chile", "chili flakes", "chili oil", "red pepper flakes",
              "jalapeno", "jalapeño", "habanero", "serrano", "cayenne", "sriracha", "hot sauce", "sichuan peppercorn",
              "chipotle", "spicy", "fiery", "hot pepper", "bird's eye chili", "doubanjiang")
_MILD = re.compile(
    r"\b(?:mild(?:er|ly)?|not (?:too |very |at all )?(?:spicy|hot)|no (?:heat|spice|chil+i(?:es)?)|"
    r"without (?:any |the )?(?:heat|spice|chil+i(?:es)?)|less spicy|(?:heat|spice)[- ]free|non[- ]spicy|kid[- ]friendly|toddler)\b"
)
# Everyday category words a request may rule out, with what they cover.
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "meat": ("meat", "beef", "pork", "chicken", "lamb", "bacon", "ham", "sausage", "turkey", "duck", "steak", "chorizo", "mutton"),
    "dairy": ("dairy", "milk", "butter", "cream", "cheese", "yogurt", "ghee", "paneer", "sour cream", "crema"),
    "seafood": ("seafood", "fish", "shrimp", "prawn", "crab", "lobster", "squid", "salmon", "tuna", "anchovy", "fish sauce"),
    "fish": ("fish", "salmon", "tuna", "cod", "anchovy", "fish sauce"),
    "shellfish": ("shellfish", "shrimp", "prawn", "crab", "lobster", "mussels", "clams", "oyster"),
    "nuts": ("nuts", "peanut", "peanuts", "cashew", "cashews", "almond", "almonds", "walnut", "walnuts", "pine nuts"),
    "nut": ("nuts", "peanut", "peanuts", "cashew", "cashews", "almond", "almonds", "walnut", "walnuts", "pine nuts"),
    "egg": ("egg", "eggs"),
    "eggs": ("egg", "eggs"),
    "gluten": ("wheat", "flour", "bread", "pasta", "noodles", "soy sauce", "breadcrumbs", "barley"),
    "soy": ("soy", "soy sauce", "tofu", "tempeh", "edamame", "miso"),
    "sugar": ("sugar", "honey", "syrup"),
}
# Words a negation in a request may cover that are not ingredients.
_NOT_INGREDIENTS = {"heat", "spice", "spices", "spiciness", "fuss", "time", "oven", "stove", "effort", "mess", "waste",
                    "leftovers", "cooking", "frying", "hassle", "fancy", "special", "equipment", "more", "less", "need",
                    "extra", "added", "too", "much", "many", "other", "way", "one", "anything", "everything", "stress",
                    "hands", "guilt", "cruelty", "hassle", "worries", "problem", "fat"}
_LEADING = re.compile(r"^(?:(?:any|the|a|an|some|too much|too many|extra|added|real|fresh|other|more|use|using|add|adding|"
                      r"include|including|of)\s+)+")
_SPLIT = re.compile(r",|\bor\b|\band\b|\bnor\b|/")
# The ruled-out phrase ends where a preposition starts the rest ("instead of pork in mapo tofu").
_PREPOSITION = re.compile(r"\b(?:in|on|at|to|from|for|into|please|thanks|because|since|as|so)\b")
# How people say it in a request, rewritten to a negation the scope reader knows.
_DISLIKE = re.compile(
    r"\b(?:(?:i|we|he|she|they|my \w+) )?(?:do not|don't|does not|doesn't|can't|cannot|won't|can not) "
    r"(?:want|like|eat|have|use|tolerate|handle|stand)\b|\b(?:allergic to|allergy to|intolerant to|hold the)\b"
)


@dataclass(frozen=True)
class RequestConstraints:
    exclude: tuple[str, ...] = ()
    mild: bool = False

    @property
    def ruled_out(self) -> tuple[str, ...]:
        """Every term an answer must not use: the exclusions, plus the heat terms for a mild request."""
        return self.exclude + (HEAT_TERMS if self.mild else ())


@lru_cache(maxsize=4096)
def request_constraints(prompt: str) -> RequestConstraints:
    from dpo_tasks.judges.rules import _NEGATOR, _negated_spans, _normalise

    text = _DISLIKE.sub("without", _normalise(prompt or ""))
    mild = bool(_MILD.search(text))
    exclude: dict[str, None] = {}
    phrases: list[str] = []
    for start, end in _negated_spans(text):
        span = text[start:end]
        neg = _NEGATOR.match(span)
        body = span[neg.end():] if neg else span
        cut = _PREPOSITION.search(body)
        phrases += _SPLIT.split(body[:cut.start()] if cut else body)
    # "dairy-free", "gluten free", "nut-free", "non-dairy"
    phrases += [m.group(1) for m in re.finditer(r"\b([a-z]+)[- ]free\b", text)]
    phrases += [m.group(1) for m in re.finditer(r"\bnon[- ]([a-z]+)\b", text)]
    for phrase in phrases:
        phrase = _LEADING.sub("", phrase.strip(" -'")).strip()
        words = phrase.split()
        if not words or len(words) > 3 or any(w in _NOT_INGREDIENTS for w in words):
            continue
        exclude.setdefault(phrase, None)
        for word in CATEGORY_WORDS.get(phrase, ()):
            exclude.setdefault(word, None)
    return RequestConstraints(exclude=tuple(exclude), mild=mild)
