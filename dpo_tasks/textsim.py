"""Near-duplicate detection for prompts: one measure shared by the data tests and the stages.

Used to keep evaluation cases out of the training data (the shipped pool, a
user's pool, feedback prompts) and to keep a prompt pool free of near-copies.

The measure is the Jaccard similarity of the character 5-gram sets of the two
texts after normalising (lower case, punctuation dropped, whitespace collapsed).
Character n-grams catch reworded copies that exact matching misses ("Spicy tofu
stew for two, please." / "spicy tofu stew for two please"), without a tokenizer
or a model.

`NEAR_DUPLICATE = 0.6`: a copy with a word or two changed scores above 0.7; two
prompts from the same request template with another dish score 0.3-0.6 (the
shipped pools are composed to stay below 0.6: their closest pair scores 0.599),
and the closest evaluation case to any shipped pool prompt scores 0.33. A short
prompt copied into a longer one ("I only have eggs and green onions" inside a
long request) is caught by `containment`, the share of the shorter text's
n-grams found in the longer one, at `CONTAINED = 0.9`, applied only when the
shorter text has at least `MIN_CONTAINED_NGRAMS` n-grams (a three-word prompt is
contained in many unrelated ones by chance). Shipped eval cases reach 0.72
containment in a pool prompt at most.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

NGRAM = 5
NEAR_DUPLICATE = 0.6
CONTAINED = 0.9
MIN_CONTAINED_NGRAMS = 30

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def shingles(text: str, n: int = NGRAM) -> frozenset[str]:
    """The set of character n-grams of the normalised text (the whole text if shorter than n)."""
    norm = normalise(text)
    if len(norm) <= n:
        return frozenset([norm]) if norm else frozenset()
    return frozenset(norm[i : i + n] for i in range(len(norm) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def containment(a: frozenset[str], b: frozenset[str]) -> float:
    """Share of the smaller set found in the larger one."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if not small:
        return 0.0
    return len(small & large) / len(small)


def similarity(a: str, b: str) -> float:
    return jaccard(shingles(a), shingles(b))


def is_near_duplicate(a: frozenset[str], b: frozenset[str]) -> bool:
    """The module's one rule, on precomputed shingle sets."""
    if jaccard(a, b) >= NEAR_DUPLICATE:
        return True
    return min(len(a), len(b)) >= MIN_CONTAINED_NGRAMS and containment(a, b) >= CONTAINED


class Index:
    """Reference texts to check candidates against (e.g. the evaluation cases).

    A candidate is compared only with references sharing at least one n-gram,
    found through an inverted index, so checking a 500-prompt pool against
    hundreds of cases stays fast.
    """

    def __init__(self, texts: Iterable[tuple[str, str]]):
        self.keys: list[str] = []
        self.sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = {}
        for key, text in texts:
            self.add(key, text)

    def add(self, key: str, text: str) -> None:
        grams = shingles(text)
        idx = len(self.keys)
        self.keys.append(key)
        self.sets.append(grams)
        for g in grams:
            self._postings.setdefault(g, []).append(idx)

    def matches(self, text: str) -> list[tuple[str, float]]:
        """(key, jaccard) of every reference `text` near-duplicates, most similar first."""
        grams = shingles(text)
        candidates: set[int] = set()
        for g in grams:
            candidates.update(self._postings.get(g, ()))
        hits = [(self.keys[i], jaccard(grams, self.sets[i])) for i in candidates if is_near_duplicate(grams, self.sets[i])]
        return sorted(hits, key=lambda kv: -kv[1])

    def __len__(self) -> int:
        return len(self.keys)


def near_duplicate_pairs(texts: Sequence[tuple[str, str]]) -> list[tuple[str, str, float]]:
    """(key_a, key_b, jaccard) for every near-duplicate pair within `texts`, in input order."""
    index = Index([])
    found = []
    for key, text in texts:
        found.extend((other, key, sim) for other, sim in index.matches(text))
        index.add(key, text)
    return found
