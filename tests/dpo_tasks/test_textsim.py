"""Near-duplicate detection: the measure, the thresholds and the index agree with a reader."""

import pytest

from dpo_tasks import textsim


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [
        pytest.param("Spicy tofu stew for two, please.", "spicy tofu stew for two please", True, id="case-and-punctuation"),
        pytest.param(
            "Write a mild, kid-friendly bulgogi recipe without gochujang or any heat.",
            "Write a mild kid friendly bulgogi recipe without gochujang or any spice.",
            True, id="one-word-changed",
        ),
        pytest.param(
            "Give me a Korean recipe using eggplant, garlic and chili paste; I have 15 minutes and only a wok.",
            "Give me a Korean recipe using squid, carrots and gochujang; I have all afternoon and only a dutch oven.",
            False, id="same-template-other-dish",
        ),
        pytest.param("Dinner? I have rice.", "Kimchi fried rice with leftover rice and bacon.", False, id="unrelated"),
        pytest.param(
            "I only have eggs and green onions in the fridge. Something Korean?",
            "Tonight: I only have eggs and green onions in the fridge. Something Korean? Quick please, I am hungry.",
            True, id="contained-in-a-longer-prompt",
        ),
    ],
)
def test_near_duplicates(a, b, near):
    assert textsim.is_near_duplicate(textsim.shingles(a), textsim.shingles(b)) is near


def test_similarity_bounds():
    assert textsim.similarity("Mapo tofu", "mapo  TOFU!") == 1.0
    assert textsim.similarity("abcdefgh", "zyxwvuts") == 0.0
    assert textsim.shingles("") == frozenset()


def test_short_texts_are_not_judged_by_containment():
    """A three-word prompt appears inside many unrelated ones; only Jaccard decides for it."""
    short, long = textsim.shingles("tofu stew"), textsim.shingles("A long request for a spicy tofu stew with kimchi and pork belly.")
    assert textsim.containment(short, long) == 1.0
    assert not textsim.is_near_duplicate(short, long)


def test_index_and_pairs():
    texts = [("a", "Black bean tacos with avocado salsa."), ("b", "Black bean tacos with avocado salsa!"), ("c", "Miso soup.")]
    assert [(x, y) for x, y, _ in textsim.near_duplicate_pairs(texts)] == [("a", "b")]
    index = textsim.Index(texts[:1])
    assert [k for k, _ in index.matches("black bean tacos with avocado salsa")] == ["a"]
    assert index.matches("Miso soup with tofu") == [] and len(index) == 1
