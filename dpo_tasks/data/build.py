"""Write the shipped data: evaluation cases and training prompt pools, one JSONL file per persona.

    dpo_tasks/data/eval/<persona>.jsonl     from the hand-written cases in eval_cases.py
    dpo_tasks/data/prompts/<persona>.jsonl  the pool: the rows already there, kept as they
                                            are, topped up to POOL_SIZE by the composer below

The committed JSONL files are the source of truth; this script is how they were
made and how to grow them. The composer fills a request template (occasion,
time, equipment, servings) with a dish built from a persona's dish forms and
ingredients, draws candidates in a seeded order and keeps one only if it names
none of the persona's forbidden ingredients, is not a near-duplicate
(dpo_tasks.textsim) of a prompt already kept, and is not a near-duplicate of any
persona's evaluation case. Running it twice gives the same files.

Usage:
    python -m dpo_tasks.data.build            # rewrite the files
    python -m dpo_tasks.data.build --check    # exit 1 if the files differ from what it would write
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from dpo_tasks.config import Persona, load_personas
from dpo_tasks.data.eval_cases import CASES, checklist
from dpo_tasks.textsim import Index

DATA_DIR = Path(__file__).resolve().parent
POOL_SIZE = 500
SEED = 2026

TEMPLATES = (
    "Give me a {cuisine} recipe for {dish}; I have {time} and only {equip}.",
    "What's a good way to make {dish} for {occasion}?",
    "I'd like {dish} that serves {serves}, ready in {time}.",
    "Could you write a recipe for {dish}? I'm cooking with {equip} for {occasion}.",
    "Plan {dish} for {occasion}, and keep it under {time}.",
    "My {who} is coming over: can I make {dish} with {equip}?",
    "How do I cook {dish} for {serves} people?",
    "Looking for {dish} for {occasion}; I have {time}.",
    "Teach a beginner to make {dish} with {equip}.",
    "Tonight I want {dish}. I have {equip} and {time}.",
    "Suggest {dish} I can batch-cook for {occasion}.",
    "A {cuisine} idea, please: {dish} for {serves}, cooked with {equip}.",
    "Is {dish} doable with {equip}? It's for {occasion}.",
    "Write me a recipe for {dish} for {occasion}, nothing fussy.",
)
OCCASIONS = (
    "a weeknight dinner", "date night", "a potluck", "meal prep", "a rainy evening", "a picnic", "a birthday lunch",
    "a lazy Sunday brunch", "a post-workout meal", "a packed lunch", "a family dinner with kids", "a dinner party",
    "game night", "a holiday gathering", "a cosy night in", "a summer barbecue", "a work lunch", "guests on Saturday",
)
TIMES = ("15 minutes", "20 minutes", "half an hour", "45 minutes", "about an hour", "90 minutes", "all afternoon")
EQUIPMENT = (
    "one skillet", "a wok", "a single pot", "an air fryer", "a sheet pan and an oven", "a slow cooker",
    "a pressure cooker", "a grill pan", "a dutch oven", "a microwave", "a camping stove", "a steamer basket",
)
SERVES = ("two", "three", "four", "five", "six", "eight")
WHO = ("mother-in-law", "best friend", "neighbour", "brother", "grandmother", "new roommate", "boss", "sister")

# Per persona: dish forms ({main}, {veg}), mains, vegetables. Kept inside the persona's rules;
# the composer still checks every prompt against the persona's forbidden list.
DISHES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "persona_a_korean_spicy": (
        ("a spicy stew of {main} and {veg}", "a gochujang stir-fry with {main} and {veg}", "{main} and {veg} in a fiery kimchi broth",
         "a bibimbap bowl topped with {main} and {veg}", "crispy pancakes with {veg} and {main}", "spicy braised {main} with {veg}",
         "grilled {main} with spicy {veg} on the side", "lettuce wraps with {main} and spicy {veg}", "a doenjang soup with {main} and {veg}",
         "a rice bowl of gochugaru-rubbed {main} and {veg}"),
        ("pork shoulder", "pork belly", "chicken thighs", "beef brisket", "squid", "mackerel", "firm tofu", "soft tofu", "clams",
         "shrimp", "rice cakes", "fish cakes", "oyster mushrooms", "chicken wings", "ground beef"),
        ("zucchini", "napa cabbage", "radish", "spinach", "bean sprouts", "potatoes", "kimchi", "scallions", "perilla leaves",
         "cucumbers", "carrots", "onions", "eggplant", "kale", "leeks"),
    ),
    "persona_b_indian_veg": (
        ("a curry of {main} and {veg}", "{main} and {veg} masala", "a dry sabzi of {main} and {veg}", "a biryani layered with {main} and {veg}",
         "pakoras made with {main} and {veg}", "a coconut stew of {main} and {veg}", "parathas stuffed with {main} and {veg}",
         "a tandoori-spiced tray bake of {main} and {veg}", "a korma with {main} and {veg}", "a South Indian poriyal of {main} and {veg}"),
        ("paneer", "chickpeas", "red lentils", "toor dal", "kidney beans", "tofu", "potatoes", "cauliflower", "mushrooms",
         "black-eyed peas", "moong dal", "eggplant", "okra", "green peas", "sweet potato"),
        ("spinach", "tomatoes", "fenugreek leaves", "bell peppers", "carrots", "green beans", "coconut", "onions", "cabbage",
         "zucchini", "pumpkin", "peas", "kale", "corn", "curry leaves"),
    ),
    "persona_c_italian_gf": (
        ("a risotto with {main} and {veg}", "creamy polenta topped with {main} and {veg}", "a rustic stew of {main} and {veg}",
         "a frittata with {main} and {veg}", "baked {main} with {veg} and herbs", "a gluten-free pasta bake with {main} and {veg}",
         "a Tuscan soup with {main} and {veg}", "grilled {main} with a salad of {veg}", "a traybake of {main} and {veg} with olive oil",
         "a skillet of {main} and {veg} with basil"),
        ("chicken breast", "Italian sausage", "cannellini beans", "chickpeas", "shrimp", "cod", "salmon", "eggs", "ricotta",
         "veal", "mushrooms", "lentils", "pork tenderloin", "mozzarella", "tuna"),
        ("zucchini", "eggplant", "cherry tomatoes", "spinach", "kale", "peppers", "artichokes", "fennel", "asparagus",
         "broccoli rabe", "peas", "leeks", "butternut squash", "radicchio", "olives"),
    ),
    "persona_d_japanese_lowsodium": (
        ("a light hot pot with {main} and {veg}", "{main} simmered with {veg} in kombu stock", "a donburi of {main} and {veg}",
         "grilled {main} with a yuzu salad of {veg}", "a ginger stir-fry of {main} and {veg}", "steamed {main} with {veg} and citrus",
         "a ginger bento with {main} and {veg}", "a clear soup with {main} and {veg}", "{main} with a sesame-dressed side of {veg}",
         "a rice bowl of {main} and {veg} with sesame"),
        ("salmon", "chicken thighs", "silken tofu", "firm tofu", "cod", "mackerel", "pork loin", "shrimp", "eggs", "scallops",
         "beef sirloin", "tuna", "edamame", "shiitake mushrooms", "sea bream"),
        ("daikon", "spinach", "bok choy", "carrots", "lotus root", "burdock", "cabbage", "cucumber", "kabocha", "eggplant",
         "snap peas", "enoki mushrooms", "scallions", "sweet potato", "green beans"),
    ),
    "persona_e_mexican_vegan": (
        ("tacos filled with {main} and {veg}", "a burrito bowl with {main} and {veg}", "enchiladas stuffed with {main} and {veg}",
         "a smoky chili with {main} and {veg}", "a pozole with {main} and {veg}", "tostadas topped with {main} and {veg}", "fajitas with {main} and {veg}",
         "a lime-spiked soup of {main} and {veg}", "a chipotle casserole with {main} and {veg}", "tamales filled with {main} and {veg}"),
        ("black beans", "pinto beans", "jackfruit", "mushrooms", "tofu", "lentils", "chickpeas", "sweet potatoes", "cauliflower",
         "tempeh", "potatoes", "soyrizo", "hominy", "butternut squash", "zucchini"),
        ("poblano peppers", "corn", "tomatillos", "avocado", "red onion", "bell peppers", "spinach", "cabbage", "jalapenos",
         "roasted tomatoes", "kale", "nopales", "radishes", "chayote", "carrots"),
    ),
    "persona_f_chinese_keto": (
        ("a keto stir-fry of {main} and {veg}", "red-braised {main} with {veg}", "steamed {main} with {veg} and ginger",
         "a Sichuan dish of {main} and {veg}", "a low-carb soup with {main} and {veg}", "lettuce cups filled with {main} and {veg}",
         "a clay pot of {main} and {veg}", "garlic {main} with stir-fried {veg}", "{main} in black bean sauce with {veg}",
         "{main} over cauliflower rice with {veg}"),
        ("pork belly", "chicken thighs", "beef flank", "lamb shoulder", "shrimp", "sea bass", "firm tofu", "eggs", "duck breast",
         "squid", "ground pork", "salmon", "scallops", "pork ribs", "mushrooms"),
        ("bok choy", "broccoli", "napa cabbage", "green beans", "bell peppers", "snow peas", "celery", "cauliflower",
         "bean sprouts", "zucchini", "eggplant", "spinach", "leeks", "gai lan", "wood ear mushrooms"),
    ),
}


def eval_rows(persona_id: str) -> list[dict]:
    return [
        {"id": f"{persona_id}-e{i:03d}", "category": case.category, "prompt": case.prompt, "checklist": checklist(case)}
        for i, case in enumerate(CASES[persona_id], start=1)
    ]


def _candidates(persona: Persona, rng: random.Random):
    forms, mains, vegs = DISHES[persona.id]
    cuisine = persona.cuisines[0].title()
    while True:
        main, veg = rng.choice(mains), rng.choice(vegs)
        if main == veg:
            continue
        dish = rng.choice(forms).format(main=main, veg=veg)
        yield rng.choice(TEMPLATES).format(
            cuisine=cuisine, dish=dish, occasion=rng.choice(OCCASIONS), time=rng.choice(TIMES),
            equip=rng.choice(EQUIPMENT), serves=rng.choice(SERVES), who=rng.choice(WHO),
        )


def compose_pool(persona: Persona, existing: list[dict], eval_index: Index, size: int = POOL_SIZE) -> list[dict]:
    """`existing` rows kept as they are, then composed prompts up to `size`."""
    from dpo_tasks.judges.rules import violations

    pool = list(existing)
    kept = Index((row["id"], row["prompt"]) for row in pool)
    rng = random.Random(f"{SEED}:{persona.id}")
    n = len(pool)
    tries = 0
    for prompt in _candidates(persona, rng):
        if len(pool) >= size:
            break
        tries += 1
        if tries > 200 * size:
            raise RuntimeError(f"{persona.id}: only {len(pool)} distinct prompts after {tries} tries; add dish forms or ingredients")
        if violations(persona, prompt) or kept.matches(prompt) or eval_index.matches(prompt):
            continue
        n += 1
        row = {"id": f"{persona.id}-p{n:03d}", "prompt": prompt}
        pool.append(row)
        kept.add(row["id"], prompt)
    return pool


def _dump(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build() -> dict[Path, str]:
    """Every data file's path -> the text it should hold."""
    personas = load_personas().personas
    files: dict[Path, str] = {}
    evals = {pid: eval_rows(pid) for pid in sorted(CASES)}
    eval_index = Index((row["id"], row["prompt"]) for rows in evals.values() for row in rows)
    for pid, rows in evals.items():
        files[DATA_DIR / "eval" / f"{pid}.jsonl"] = _dump(rows)
    for pid in sorted(personas):
        path = DATA_DIR / "prompts" / f"{pid}.jsonl"
        existing = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        # The first 60 rows predate the composer; rows it added are recomposed, so --check is exact.
        existing = [row for row in existing if int(row["id"].rsplit("-p", 1)[1]) <= 60]
        files[path] = _dump(compose_pool(personas[pid], existing, eval_index))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report files that differ instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, text in build().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
    for path in stale:
        print(f"{path}: differs from what build.py writes", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
