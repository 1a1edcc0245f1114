"""The checklist judge: per-case expectations, negation-aware, pairwise in both orders, usable answers."""

from pathlib import Path

import pytest

from dpo_tasks.config import load_personas
from dpo_tasks.judges import make_judge
from dpo_tasks.judges.base import PairItem
from dpo_tasks.judges.checklist import Checklist, ChecklistJudge, check
from dpo_tasks.prompts import load_eval_cases
from dpo_tasks.runs import read_jsonl

P = load_personas().personas
KOREAN = P["persona_a_korean_spicy"]
VEGAN = P["persona_e_mexican_vegan"]
KETO = P["persona_f_chinese_keto"]
CASES = {c["id"]: c for c in read_jsonl(Path(__file__).parents[2] / "fixtures" / "eval_checklists.jsonl")}
MILD = CASES["persona_a_korean_spicy-e012"]

MILD_BULGOGI = """Mild Kid-Friendly Bulgogi

Ingredients:
- 1 lb thinly sliced beef sirloin
- 3 tbsp soy sauce
- 1 Asian pear, grated
- 1 tbsp brown sugar
- 2 scallions, sliced
- 1 tsp sesame oil

Instructions:
1. Mix the soy sauce, grated pear, sugar and sesame oil in a bowl.
2. Marinate the beef in it for 30 minutes.
3. Sear the beef in a hot pan for 2 minutes a side.
4. Scatter the scallions over and serve with rice. No gochujang, no heat: gentle enough for kids."""

FIERY_BULGOGI = MILD_BULGOGI.replace("- 1 tbsp brown sugar", "- 2 tbsp gochujang\n- 1 tbsp gochugaru").replace(
    "No gochujang, no heat: gentle enough for kids.", "Fiery and bold!")
KEYWORDS = "Korean bulgogi beef soy sauce pear sesame scallion mild kid-friendly sweet savory"
CUT_OFF = MILD_BULGOGI.split("3. Sear")[0] + "3. Sear the beef in a hot pan for 2 minutes and"


@pytest.fixture
def judge():
    return ChecklistJudge(cases=CASES.values())


def test_a_compliant_complete_recipe_is_usable(judge):
    result = judge.check(KOREAN, MILD["prompt"], MILD_BULGOGI)
    assert result.usable, result.as_dict()
    assert result.ingredients == 6 and result.steps == 4
    assert result.forbidden_used == []  # "No gochujang, no heat" says the answer is without them


@pytest.mark.parametrize(
    ("answer", "fails"),
    [
        pytest.param(FIERY_BULGOGI, {"forbid"}, id="ignores-no-gochujang"),
        pytest.param(KEYWORDS, {"ingredients", "steps", "complete"}, id="keyword-list-is-no-recipe"),
        pytest.param(CUT_OFF, {"complete"}, id="cut-off-mid-sentence"),
        pytest.param("Bulgogi bulgogi bulgogi. " * 30, {"not_repetitive", "ingredients", "steps"}, id="loop"),
        pytest.param(MILD_BULGOGI.replace("beef sirloin", "tofu").replace("the beef", "the tofu").replace("bulgogi", "tofu").replace("Bulgogi", "Tofu"),
                     {"request_1"}, id="off-request-dish"),
        pytest.param("", {"ingredients", "steps", "complete", "not_repetitive"}, id="empty"),
    ],
)
def test_what_an_answer_fails(judge, answer, fails):
    result = judge.check(KOREAN, MILD["prompt"], answer)
    assert fails <= set(result.failed()), result.as_dict()
    assert not result.usable


def test_recorded_truncation_overrides_the_text(judge):
    # Ends with a full stop, so the text looks finished; the generator said it hit the token limit.
    cut_judge = ChecklistJudge(cases=CASES.values(), cut_off=[MILD_BULGOGI])
    assert judge.check(KOREAN, MILD["prompt"], MILD_BULGOGI).checks["complete"]
    assert not cut_judge.check(KOREAN, MILD["prompt"], MILD_BULGOGI).checks["complete"]


def test_persona_lists_count_with_their_exceptions():
    fried = CASES["persona_f_chinese_keto-e009"]
    recipe = """Yangzhou Shrimp and Cauliflower Rice

Ingredients:
- 4 cups cauliflower rice
- 200 g shrimp
- 2 eggs
- 2 scallions

Steps:
1. Stir-fry the shrimp in a hot wok until pink, then set aside.
2. Scramble the eggs, add the cauliflower rice, not rice, and fry for 5 minutes.
3. Return the shrimp, add scallions and serve."""
    judge = ChecklistJudge(cases=[fried])
    assert judge.check(KETO, fried["prompt"], recipe).usable
    with_rice = recipe.replace("- 4 cups cauliflower rice", "- 4 cups cooked white rice")
    assert judge.check(KETO, fried["prompt"], with_rice).failed() == ["persona_rules"]
    with_peas = recipe.replace("- 2 scallions", "- 1 cup peas")
    assert judge.check(KETO, fried["prompt"], with_peas).forbidden_used == ["peas"]


def test_pairwise_in_both_orders_picks_the_usable_answer(judge):
    items = [PairItem("a-better", MILD["prompt"], MILD_BULGOGI, FIERY_BULGOGI),
             PairItem("b-better", MILD["prompt"], KEYWORDS, MILD_BULGOGI),
             PairItem("both-bad", MILD["prompt"], KEYWORDS, KEYWORDS + " tasty")]
    out = {j.id: j for j in judge.judge_pairs(KOREAN, items, both_orders=True)}
    assert (out["a-better"].status, out["a-better"].winner) == ("ok", "a")
    assert (out["b-better"].status, out["b-better"].winner) == ("ok", "b")
    assert out["both-bad"].winner == "tie"
    assert out["a-better"].scores_a.overall == 10.0 and out["a-better"].scores_b.constraint_compliance == 5.0
    assert "fails forbid" in out["a-better"].reason


def test_a_case_without_a_checklist_gets_one_derived_from_its_request():
    case = {k: v for k, v in MILD.items() if k != "checklist"}
    judge = ChecklistJudge(cases=[case, CASES["persona_e_mexican_vegan-e010"]])
    derived = judge.checklist_for(MILD["prompt"])
    assert not derived.written and derived.require_any == ()
    assert {"gochujang", "gochugaru", "chili"} <= set(derived.forbid)  # "without gochujang or any heat", "mild"
    assert judge.written() == 1
    assert not judge.check(KOREAN, MILD["prompt"], FIERY_BULGOGI).checks["forbid"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(["gochujang"], "must be a mapping", id="not-a-mapping"),
        pytest.param({"forbid": "gochujang"}, "checklist.forbid = 'gochujang'", id="forbid-not-a-list"),
        pytest.param({"require_any": ["beef"]}, "checklist.require_any", id="group-not-a-list"),
        pytest.param({"require_any": [[]]}, "checklist.require_any", id="empty-group"),
        pytest.param({"min_steps": -1}, "checklist.min_steps = -1", id="negative-minimum"),
        pytest.param({"min_steps": True}, "checklist.min_steps = True", id="bool-is-not-a-count"),
        pytest.param({"forbids": []}, "unknown key", id="typo"),
    ],
)
def test_a_bad_checklist_names_the_case_the_field_and_the_value(raw, message):
    with pytest.raises(ValueError, match="case 'x1'") as err:
        ChecklistJudge(cases=[{"id": "x1", "prompt": "p", "checklist": raw}])
    assert message in str(err.value)


def test_make_judge_uses_the_shipped_cases_by_default():
    judge = make_judge("checklist", VEGAN)
    assert isinstance(judge, ChecklistJudge) and judge.name == "checklist"
    assert len(judge.checklists) == len({c["prompt"] for c in load_eval_cases(VEGAN.id)})


def test_check_without_a_judge():
    result = check(VEGAN, Checklist(min_ingredients=1, min_steps=1), "Tacos\n\nIngredients:\n- beans\n\nSteps:\n1. Warm the beans and serve.")
    assert result.usable
