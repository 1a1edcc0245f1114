"""Personal data out of feedback text before it becomes training data.

Users type e-mail addresses, phone numbers, card numbers and street addresses
into a recipe app's prompts ("send it to jane@example.com") and the app stores
them with the rating. `scrub(text)` replaces each one with its kind in angle
brackets (`<EMAIL_ADDRESS>`, `<PHONE_NUMBER>`, `<CREDIT_CARD>`, `<IBAN_CODE>`,
`<US_SSN>`, `<IP_ADDRESS>`, `<STREET_ADDRESS>`), so the prompt still reads as a
prompt and nothing personal reaches a run directory, the DVC remote or a model.

Detection uses Presidio's pattern recognizers (regular expressions with
checksums: Luhn for cards, IBAN check digits, `phonenumbers` for phones) called
directly, not through `AnalyzerEngine`: the engine would load a spaCy language
model, which needs a download; the pattern recognizers need none. Street
addresses have no Presidio pattern recognizer (Presidio finds them with NER), so
one pattern recognizer here covers the common "number, street name, street
type" form; other address forms are not detected.

Presidio's e-mail check asks tldextract for the public-suffix list, which goes
to the network on first use; it is pointed at the list bundled with tldextract.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

# Lower than Presidio's phone score (0.4 without context words) so phones count; card and IBAN matches
# are checksum-validated and score 1.0.
MIN_SCORE = 0.3
_STREET_TYPES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|way|terrace|parkway|pkwy"
    "|highway|hwy|square|sq|calle|rue|strasse|straße"
)


@lru_cache(maxsize=1)
def _recognizers() -> list[Any]:
    import tldextract
    import tldextract.tldextract
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # No network at run time: the suffix list that ships with tldextract, no cache directory.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    street = PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        patterns=[Pattern(
            "number street type",
            rf"(?i)\b\d{{1,6}}[a-z]?(?:\s+[a-z][a-z'.-]*){{1,4}}\s+(?:{_STREET_TYPES})\b\.?(?:\s+(?:n|s|e|w|ne|nw|se|sw)\b)?(?:,?\s+(?:apt|unit|suite|#)\s*\w+)?",
            0.5,
        )],
    )
    return [EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), IbanRecognizer(), UsSsnRecognizer(),
            IpRecognizer(), street]


def find(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of each personal-data span, overlaps merged (the wider span, the stronger kind)."""
    if not text:
        return []
    hits = []
    for recognizer in _recognizers():
        for r in recognizer.analyze(text, recognizer.supported_entities, None):
            if r.score >= MIN_SCORE:
                hits.append((r.start, r.end, r.entity_type, r.score))
    hits.sort(key=lambda h: (h[0], -h[1]))
    merged: list[list[Any]] = []
    for start, end, kind, score in hits:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if score > last[3]:
                last[2], last[3] = kind, score
            last[1] = max(last[1], end)
        else:
            merged.append([start, end, kind, score])
    return [(s, e, k) for s, e, k, _ in merged]


def scrub(text: str) -> tuple[str, Counter[str]]:
    """`text` with every personal-data span replaced by `<KIND>`, and how many of each kind."""
    spans = find(text)
    counts: Counter[str] = Counter(kind for _, _, kind in spans)
    for start, end, kind in reversed(spans):
        text = f"{text[:start]}<{kind}>{text[end:]}"
    return text, counts
