"""The persona rule judge: forbidden-ingredient detection, scoring, and order-independent comparison."""

import pytest

from dpo_tasks.config import load_personas
from dpo_tasks.judges import make_judge
from dpo_tasks.judges.base import CRITERIA, PairItem
from dpo_tasks.judges.rules import RuleJudge, violations

P = load_personas().personas
VEGAN = P["persona_e_mexican_vegan"]
INDIAN = P["persona_b_indian_veg"]
ITALIAN = P["persona_c_italian_gf"]
JAPANESE = P["persona_d_japanese_lowsodium"]
KETO = P["persona_f_chinese_keto"]
KOREAN = P["persona_a_korean_spicy"]

TACOS = """Smoky Black Bean Tacos

Ingredients:
- 1 can black beans, drained
- 8 corn tortillas
- 1 ripe avocado
- 1 lime, juiced
- a handful of cilantro
- 1 chipotle in adobo, minced

Instructions:
1. Warm the beans with cumin and the chipotle in a skillet for 5 minutes.
2. Char the corn tortillas over a flame until blistered.
3. Fill with beans, sliced avocado and cilantro, squeeze the lime over and serve.

A plant-based Mexican dinner that is smoky, zesty and fully vegan, with no cheese or sour cream needed."""


@pytest.mark.parametrize(
    ("persona", "text", "expected"),
    [
        pytest.param(VEGAN, "Tacos with chorizo and crumbled cotija.", [("chorizo", "meat"), ("cotija", "cheese")], id="vegan-chorizo-cotija"),
        pytest.param(VEGAN, "Fry the paneer cubes in oil.", [("paneer", "dairy")], id="synonym-paneer-is-dairy"),
        pytest.param(INDIAN, "Add the shrimp and simmer.", [("shrimp", "seafood")], id="synonym-shrimp-is-seafood"),
        pytest.param(INDIAN, "Toss in the PRAWNS and Anchovies.", [("prawns", "seafood"), ("anchovies", "seafood")], id="case-and-plural"),
        pytest.param(INDIAN, "Brown the ground beef first.", [("ground beef", "beef")], id="multiword-term-reported-whole"),
        pytest.param(INDIAN, "Marinate the chickens overnight.", [("chicken", "chicken")], id="plural-s"),
        pytest.param(VEGAN, "Whisk 2 eggs.", [("eggs", "eggs")], id="plural-listed-term"),
        pytest.param(VEGAN, "Roast the eggplant until soft.", [], id="eggplant-is-not-egg"),
        pytest.param(VEGAN, "Roast buttercup squash and butternut squash.", [], id="buttercup-is-not-butter"),
        pytest.param(VEGAN, "Spread with butter.", [("butter", "dairy")], id="butter-alone"),
        pytest.param(VEGAN, "Drizzle with peanut butter.", [], id="allowed-peanut-butter"),
        pytest.param(VEGAN, "Top with cashew crema.", [], id="allowed-cashew-crema"),
        pytest.param(KETO, "Serve over cauliflower rice.", [], id="allowed-cauliflower-rice"),
        pytest.param(KETO, "Serve over steamed rice.", [("rice", "rice")], id="plain-rice-for-keto"),
        pytest.param(KETO, "Splash of rice vinegar and Shaoxing rice wine.", [], id="allowed-rice-seasonings-for-keto"),
        pytest.param(VEGAN, "A buttermilk dressing.", [("buttermilk", "dairy")], id="buttermilk-listed-is-not-butter"),
        pytest.param(ITALIAN, "Toss with gluten-free pasta and basil.", [], id="allowed-gluten-free-pasta"),
        pytest.param(ITALIAN, "Toss spaghetti with basil.", [("spaghetti", "pasta")], id="spaghetti-is-pasta"),
        pytest.param(VEGAN, "No meat, dairy or eggs in this one.", [], id="negated-list"),
        pytest.param(VEGAN, "Made without cheese or sour cream.", [], id="without"),
        pytest.param(VEGAN, "Use cashew crema instead of sour cream.", [], id="instead-of"),
        pytest.param(VEGAN, "A meat-free, dairy-free and egg-free filling.", [], id="x-free"),
        pytest.param(VEGAN, "Non-dairy and vegan chorizo, or chorizo-style mushrooms.", [], id="substitute-modifiers"),
        pytest.param(VEGAN, "Swap the butter for olive oil.", [], id="swap-x-for-y"),
        pytest.param(VEGAN, "Plant based milk and dairy free yogurt.", [], id="substitutes-spelled-with-spaces"),
        pytest.param(VEGAN, "Melt the unsalted butter.", [("butter", "dairy")], id="unsalted-butter-is-butter-for-vegan"),
        pytest.param(KETO, "Toast gluten-free bread.", [("bread", "carbs")], id="gluten-free-bread-is-bread-for-keto"),
        pytest.param(KETO, "Keto bread and sugar-free syrup.", [], id="keto-substitutes"),
        pytest.param(INDIAN, "Vegan chorizo or mock meat.", [], id="imitations-for-vegetarians"),
        pytest.param(ITALIAN, "Mock pasta with vegan bread.", [("pasta", "pasta"), ("bread", "bread")], id="imitation-words-only-for-animal-free-diets"),
        pytest.param(VEGAN, "Made without cheese, then add chicken.", [("chicken", "meat")], id="negation-scope-ends-at-new-clause"),
        pytest.param(VEGAN, "No cheese. Top with sour cream.", [("sour cream", "dairy")], id="negation-scope-ends-at-sentence"),
        pytest.param(KETO, "Do not use sugar or honey.", [], id="do-not-use"),
        pytest.param(JAPANESE, "Never add salt or shoyu.", [], id="never-add"),
        pytest.param(VEGAN, "Be careful not to overcook the chicken.", [("chicken", "meat")], id="not-overcook-is-technique"),
        pytest.param(INDIAN, "Don't let the shrimp burn.", [("shrimp", "seafood")], id="dont-let-is-technique"),
        pytest.param(VEGAN, "Without stirring the cream, bake.", [("cream", "dairy")], id="without-stirring-is-technique"),
        pytest.param(INDIAN, "Avoid overcooking the beef.", [("beef", "beef")], id="avoid-overcooking-is-technique"),
        pytest.param(VEGAN, "Use no more than 2 eggs.", [("eggs", "eggs")], id="no-more-than-is-an-amount"),
        pytest.param(VEGAN, "Skip the bacon and avoid dairy.", [], id="skip-and-avoid"),
        pytest.param(VEGAN, "No need for butter.", [], id="no-need-for"),
        pytest.param(VEGAN, "Oil instead of butter for the chicken.", [("chicken", "meat")], id="scope-ends-at-for"),
        pytest.param(JAPANESE, "Use unsalted stock and low-sodium soy sauce.", [], id="low-sodium-substitute"),
        pytest.param(JAPANESE, "Season with a pinch of salt.", [("salt", "salt")], id="salt"),
        pytest.param(JAPANESE, "Salt-grilled mackerel.", [("salt", "salt")], id="hyphenated-compound-still-counts"),
        pytest.param(JAPANESE, "Mix soy\u2011sauce and MISO paste.", [("soy sauce", "soy sauce"), ("miso paste", "miso")], id="nonbreaking-hyphen-and-case"),
        pytest.param(KOREAN, "Pork, shrimp, cheese and rice.", [], id="no-forbidden-list"),
        pytest.param(VEGAN, "#12_Bacon_with_Cilantro_Chicken", [("bacon", "meat"), ("chicken", "meat")], id="underscores-separate-words"),
    ],
)
def test_violations(persona, text, expected):
    assert violations(persona, text) == expected
    assert RuleJudge().violations(persona, text) == expected


MINIMAL = "Bean tacos\n\nIngredients:\n- beans\n- tortillas\n- salsa\n\nSteps:\n1. Warm the beans.\n2. Fill the tortillas and serve."


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        pytest.param(TACOS, 9, 10, id="full-recipe"),
        pytest.param(MINIMAL, 7, 9, id="short-but-structured"),
        pytest.param("Just mash some beans and put them on a tortilla, it tastes good", 0, 2, id="no-list-no-steps"),
        pytest.param(TACOS.rsplit("\n", 1)[0] + "\nFinish with a squeeze of lime and a", 7, 9, id="truncated-mid-sentence"),
        pytest.param(TACOS + "\n" + "\n".join(["Serve the tacos warm."] * 40), 0, 6, id="repetitive"),
        pytest.param("", 0, 0, id="empty"),
    ],
)
def test_structure_score(text, low, high):
    assert low <= RuleJudge().score(VEGAN, "tacos", text).structure <= high


def test_scores_cover_every_criterion_in_range():
    scores = RuleJudge().score(VEGAN, "tacos", TACOS).as_dict()
    assert list(scores) == list(CRITERIA)
    assert all(0 <= v <= 10 for v in scores.values())
    assert scores["constraint_compliance"] == 10 and scores["overall"] >= 9


def test_violation_caps_overall_below_a_plain_compliant_recipe():
    judge = RuleJudge()
    broken = TACOS.replace("no cheese or sour cream needed", "topped with cotija cheese and sour cream")
    s_broken, s_plain = judge.score(VEGAN, "tacos", broken), judge.score(VEGAN, "tacos", MINIMAL)
    assert s_broken.constraint_compliance < 4 and s_broken.structure == 10
    assert s_broken.overall <= 3 < s_plain.overall


def test_more_violations_score_lower():
    judge = RuleJudge()
    one = judge.score(VEGAN, "", TACOS + "\nAdd chicken.")
    three = judge.score(VEGAN, "", TACOS + "\nAdd chicken, milk and eggs.")
    assert three.constraint_compliance < one.constraint_compliance < 10


def test_persona_and_preferred_ingredients_count():
    judge = RuleJudge()
    on_persona = judge.score(VEGAN, "", TACOS)
    off_persona = judge.score(VEGAN, "", TACOS.replace("black beans", "lentils").replace("corn tortillas", "flatbreads")
                              .replace("avocado", "tomato").replace("cilantro", "parsley").replace("Mexican", "")
                              .replace("chipotle", "paprika").replace("lime", "lemon").replace("cumin", "salt")
                              .replace("smoky, zesty and fully vegan", "tasty").replace("plant-based", ""))
    assert on_persona.preferred_ingredients == 10 and off_persona.preferred_ingredients == 0
    assert off_persona.persona_alignment < 2 < 8 < on_persona.persona_alignment


@pytest.mark.parametrize(
    ("persona", "good", "bad", "winner"),
    [
        pytest.param(VEGAN, TACOS, TACOS.replace("black beans", "chorizo"), "first", id="violation-loses"),
        pytest.param(VEGAN, MINIMAL, TACOS, "second", id="better-recipe-wins"),
        pytest.param(VEGAN, TACOS, TACOS + " ", "tie", id="same-recipe-ties"),
        pytest.param(KOREAN, "Spicy gochujang tofu stew, Korean style.\n" + MINIMAL, MINIMAL, "first", id="korean-style-wins"),
    ],
)
def test_compare_is_the_same_in_both_orders(persona, good, bad, winner):
    judge = RuleJudge()
    ab = judge.compare_once(persona, "tacos", good, bad)
    ba = judge.compare_once(persona, "tacos", bad, good)
    flipped = {"first": "second", "second": "first", "tie": "tie"}
    assert ab.preferred == winner and ba.preferred == flipped[winner]
    assert ab.scores_first == ba.scores_second and ab.scores_second == ba.scores_first


def test_judge_pairs_through_the_factory_agree_in_both_orders():
    judge = make_judge("rules", VEGAN)
    items = [PairItem("p1", "tacos", TACOS, TACOS.replace("black beans", "beef")), PairItem("p2", "tacos", MINIMAL, MINIMAL)]
    out = judge.judge_pairs(VEGAN, items, both_orders=True)
    assert [(j.id, j.status, j.winner) for j in out] == [("p1", "ok", "a"), ("p2", "tie", "tie")]
    assert out[0].margin >= 7 and "beef (meat)" in out[0].reason


def test_epsilon_makes_close_scores_tie():
    # The Korean-style line only adds style points: a small gap.
    a, b = "Korean tofu stew.\n" + MINIMAL, MINIMAL
    gap = RuleJudge().score(KOREAN, "", a).overall - RuleJudge().score(KOREAN, "", b).overall
    assert 0 < gap
    assert RuleJudge(epsilon=gap).compare_once(KOREAN, "", a, b).preferred == "tie"
    assert RuleJudge(epsilon=gap / 2).compare_once(KOREAN, "", a, b).preferred == "first"


@pytest.mark.parametrize(
    ("kind", "options", "error"),
    [
        pytest.param("nope", {}, "judge 'nope' is not known", id="unknown-kind"),
        pytest.param("rules", {"epsilon": -1}, "epsilon=-1", id="bad-option"),
    ],
)
def test_make_judge_errors_name_the_value(kind, options, error):
    with pytest.raises(ValueError, match=error):
        make_judge(kind, VEGAN, **options)


LOOP = "Tacos de papel " + "de papel " * 80


def test_a_degenerate_loop_is_capped_below_a_violation():
    judge = RuleJudge()
    loop, broken = judge.score(VEGAN, "", LOOP), judge.score(VEGAN, "", TACOS.replace("black beans", "chorizo"))
    assert loop.constraint_compliance == 10 and loop.structure == 0
    assert loop.overall <= 2 < broken.overall <= 3
    assert judge.score(VEGAN, "", MINIMAL).overall - loop.overall > 3
    # Two bad answers: the margin stays under the default labeling margin of 1.
    assert abs(broken.overall - loop.overall) <= 1


@pytest.mark.parametrize(
    ("persona", "text", "expected"),
    [
        pytest.param(INDIAN, "No-fuss chicken tacos for a weeknight.", [("chicken", "chicken")], id="no-fuss-is-not-a-negation"),
        pytest.param(ITALIAN, "No-bake spaghetti salad.", [("spaghetti", "pasta")], id="no-bake-is-not-a-negation"),
        pytest.param(KETO, "Serve over cauliflower rice, not rice.", [], id="x-not-y-contrast"),
        pytest.param(KETO, "Not rice but cauliflower rice.", [], id="not-x-at-the-start"),
        pytest.param(VEGAN, "Not only chicken but beans too.", [("chicken", "meat")], id="not-only-is-not-a-negation"),
        pytest.param(JAPANESE, "Use not too much salt.", [("salt", "salt")], id="not-too-much-is-an-amount"),
        pytest.param(ITALIAN, "Cook the gluten-free pasta, then toss the hot pasta with basil.", [], id="the-pasta-refers-back"),
        pytest.param(KETO, "Make cauliflower rice and serve with steamed rice.", [("rice", "rice")], id="new-rice-is-rice"),
        pytest.param(VEGAN, "No cheese and not too much cream.", [("cream", "dairy")], id="a-new-negator-ends-the-scope"),
    ],
)
def test_negation_reading(persona, text, expected):
    assert violations(persona, text) == expected


@pytest.mark.parametrize(
    ("prompt", "exclude", "mild"),
    [
        pytest.param("Write a mild, kid-friendly bulgogi recipe without gochujang or any heat.", ["gochujang"], True, id="mild-without"),
        pytest.param("Use tofu instead of pork in mapo tofu.", ["pork"], False, id="instead-of-ends-at-in"),
        pytest.param("I don't eat mushrooms or onions.", ["mushrooms", "onions"], False, id="dont-eat"),
        pytest.param("My son is allergic to peanuts; pad thai please.", ["peanuts"], False, id="allergic-to"),
        pytest.param("Kimchi jjigae, not too spicy, without pork belly.", ["pork belly"], True, id="not-too-spicy"),
        pytest.param("No-fuss chicken tacos.", [], False, id="no-fuss-rules-out-nothing"),
        pytest.param("A dairy-free korma with no fish sauce.", ["fish sauce", "dairy", "milk", "butter", "cream"], False, id="x-free-category"),
        pytest.param("Fiery kimchi stew with pork belly.", [], False, id="nothing-ruled-out"),
    ],
)
def test_what_a_request_rules_out(prompt, exclude, mild):
    from dpo_tasks.judges.recipe import request_constraints

    got = request_constraints(prompt)
    assert got.mild is mild
    assert got.exclude[: len(exclude)] == tuple(exclude) and (exclude or not got.exclude)


def test_the_request_counts_against_an_answer_that_ignores_it():
    prompt = "Write a mild, kid-friendly bulgogi recipe without gochujang or any heat."
    judge = RuleJudge()
    fiery = TACOS.replace("chipotle in adobo", "tbsp gochujang")
    assert ("gochujang", "the request") in judge.broken(KOREAN, prompt, fiery)
    assert judge.score(KOREAN, prompt, fiery).overall <= 3.0
    assert judge.score(KOREAN, "Tacos, please.", fiery).constraint_compliance == 10.0
