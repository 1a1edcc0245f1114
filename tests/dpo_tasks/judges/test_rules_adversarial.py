"""Adversarial pairs for the rule judge: in each, any careful reader agrees which answer is better.

Every pair is judged in both orders and the better answer must win both times. The table
covers the ways the judge used to be fooled: requests it did not read ("no gochujang", "mild"),
keyword lists and filler scored as recipes, negations it missed ("cauliflower rice, not rice",
"no kimchi") or invented ("No-fuss chicken tacos"), loops and cut-off answers.
"""

import pytest

from dpo_tasks.config import load_personas
from dpo_tasks.judges.base import PairItem
from dpo_tasks.judges.rules import RuleJudge

P = load_personas().personas
KOREAN = P["persona_a_korean_spicy"]
INDIAN = P["persona_b_indian_veg"]
ITALIAN = P["persona_c_italian_gf"]
JAPANESE = P["persona_d_japanese_lowsodium"]
VEGAN = P["persona_e_mexican_vegan"]
KETO = P["persona_f_chinese_keto"]


def recipe(title: str, ingredients: list[str], steps: list[str], note: str = "") -> str:
    lines = [title, "", "Ingredients:", *(f"- {i}" for i in ingredients), "", "Instructions:"]
    lines += [f"{n}. {s}" for n, s in enumerate(steps, start=1)]
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


# --- Korean -----------------------------------------------------------------------------------
MILD_BULGOGI = recipe(
    "Mild Bulgogi for Kids",
    ["1 lb thinly sliced beef sirloin", "3 tbsp soy sauce", "1 Asian pear, grated", "2 cloves garlic", "1 tsp sesame oil", "2 scallions"],
    ["Mix the soy sauce, pear, garlic and sesame oil.", "Marinate the beef for 30 minutes.",
     "Sear the beef in a hot pan for 2 minutes a side.", "Top with scallions and serve with rice."],
    "Sweet and savory Korean flavours, gentle enough for kids.",
)
FIERY_BULGOGI = recipe(
    "Fiery Gochujang Bulgogi",
    ["1 lb thinly sliced beef sirloin", "3 tbsp gochujang", "1 tbsp gochugaru", "2 cloves garlic", "1 tsp sesame oil", "kimchi to serve"],
    ["Mix the gochujang, gochugaru, garlic and sesame oil.", "Marinate the beef for 30 minutes.",
     "Sear the beef in a hot pan for 2 minutes a side.", "Serve with kimchi."],
    "Bold, spicy and fiery Korean heat.",
)
KOREAN_KEYWORDS = "Korean spicy fiery bold fermented gochujang gochugaru kimchi garlic sesame oil scallion ginger tofu doenjang"
KIMCHI_JJIGAE = recipe(
    "Kimchi Jjigae",
    ["2 cups aged kimchi", "200 g pork belly", "1 block tofu", "1 tbsp gochugaru", "2 scallions", "3 cups water"],
    ["Fry the pork belly and kimchi in a pot for 5 minutes.", "Add the water and gochugaru and simmer 15 minutes.",
     "Add the sliced tofu and simmer 5 more minutes.", "Top with scallions and serve hot."],
)
KIMCHI_JJIGAE_NO_PORK = KIMCHI_JJIGAE.replace("200 g pork belly", "200 g shiitake mushrooms").replace("pork belly and kimchi", "mushrooms and kimchi")
NEGATED_PREFERRED = ("A Korean dish with no kimchi, no gochujang, no gochugaru, no garlic, no sesame oil and no tofu. "
                     "Not spicy, not fiery, not bold.")
STEAMED_FISH_GARLIC = recipe(
    "Steamed Fish", ["1 white fish fillet", "4 cloves garlic, minced", "1 tbsp soy sauce", "2 scallions", "1 tsp sesame oil"],
    ["Put the fish on a plate and cover with the garlic.", "Steam for 10 minutes.", "Drizzle with soy sauce and sesame oil, top with scallions."],
)
STEAMED_FISH_PLAIN = recipe(
    "Plain Steamed Fish", ["1 white fish fillet", "1 thumb ginger, sliced", "1 tbsp soy sauce", "2 scallions", "1 tsp sesame oil"],
    ["Put the fish on a plate and cover with the ginger.", "Steam for 10 minutes.", "Drizzle with soy sauce and sesame oil, top with scallions."],
)

# --- Indian vegetarian ---------------------------------------------------------------------------
PANEER = recipe(
    "Palak Paneer",
    ["250 g paneer, cubed", "300 g spinach", "1 onion", "2 tomatoes", "1 tsp cumin", "1 tsp garam masala", "2 tbsp ghee"],
    ["Blanch the spinach and blend it smooth.", "Fry cumin and onion in ghee until golden, then add tomatoes.",
     "Stir in the spinach and garam masala and simmer 5 minutes.", "Add the paneer and cook 3 more minutes."],
)
NO_FUSS_CHICKEN = recipe(
    "No-fuss Chicken Tikka",
    ["500 g chicken thighs", "1 cup yogurt", "1 tsp cumin", "1 tsp garam masala", "1 tsp turmeric"],
    ["Mix the yogurt and spices.", "Coat the chicken and rest 1 hour.", "Grill the chicken for 15 minutes, turning once."],
)
NO_FUSS_CHANA = recipe(
    "No-fuss Chana Masala",
    ["2 cans chickpeas", "1 onion", "2 tomatoes", "1 tsp cumin", "1 tsp garam masala", "1 tsp turmeric"],
    ["Fry the onion and cumin in oil until golden.", "Add tomatoes and spices and cook 5 minutes.",
     "Add the chickpeas and simmer 15 minutes."],
)
DAL_NO_GHEE = recipe(
    "Dairy-free Tadka Dal",
    ["1 cup red lentils", "1 onion", "2 tomatoes", "1 tsp cumin", "1 tsp turmeric", "2 tbsp sunflower oil"],
    ["Boil the lentils with turmeric for 20 minutes.", "Fry cumin and onion in oil, add tomatoes.", "Pour the tadka over the dal and serve."],
)
DAL_GHEE = DAL_NO_GHEE.replace("Dairy-free ", "").replace("2 tbsp sunflower oil", "2 tbsp ghee").replace("in oil", "in ghee")
FILLER = ("This aromatic Indian masala curry is a wonderful dish that everyone will love. It is full of flavour and "
          "perfect for any occasion. Paneer, lentils, chickpeas, cumin, turmeric and garam masala make it special. "
          "Enjoy this delicious vegetarian curry with your family and friends.")

# --- Italian gluten-free ------------------------------------------------------------------------
GF_CARBONARA = recipe(
    "Gluten-free Carbonara",
    ["200 g gluten-free pasta", "2 eggs", "50 g parmesan", "100 g pancetta", "black pepper"],
    ["Cook the gluten-free pasta in boiling water until al dente.", "Crisp the pancetta in a pan.",
     "Whisk eggs and parmesan, toss with the hot pasta and pancetta off the heat.", "Season with pepper and serve."],
)
WHEAT_CARBONARA = GF_CARBONARA.replace("Gluten-free Carbonara", "Classic Carbonara").replace("gluten-free pasta", "spaghetti")
POLENTA = recipe(
    "Creamy Polenta with Mushrooms",
    ["1 cup polenta", "4 cups water", "200 g mushrooms", "2 cloves garlic", "olive oil", "50 g parmesan", "fresh basil"],
    ["Whisk the polenta into boiling water and stir 30 minutes.", "Saute the mushrooms and garlic in olive oil.",
     "Stir parmesan into the polenta and top with the mushrooms and basil."],
)
POLENTA_NO_MUSHROOM_REQUEST = POLENTA.replace("200 g mushrooms", "2 zucchini, diced").replace("the mushrooms", "the zucchini").replace(
    "Mushrooms", "Zucchini").replace("with the mushrooms", "with the zucchini")
ITALIAN_KEYWORDS = "- Italian\n- rustic\n- fresh herbs\n- tuscan\n- polenta\n- arborio\n- olive oil\n- basil\n- tomatoes\n- parmesan"
RISOTTO_CUT = recipe(
    "Tuscan Risotto", ["1 cup arborio rice", "1 onion", "4 cups vegetable stock", "50 g parmesan", "olive oil"],
    ["Soften the onion in olive oil.", "Toast the arborio for 2 minutes."],
) + "\n3. Add the stock one ladle at a time and stir until the"
RISOTTO = recipe(
    "Tuscan Risotto", ["1 cup arborio rice", "1 onion", "4 cups vegetable stock", "50 g parmesan", "olive oil"],
    ["Soften the onion in olive oil.", "Toast the arborio for 2 minutes.",
     "Add the stock one ladle at a time, stirring, for 18 minutes.", "Stir in the parmesan and serve."],
)

# --- Japanese low-sodium -------------------------------------------------------------------------
LOW_SODIUM_SOUP = recipe(
    "Light Kombu Shiitake Soup",
    ["1 piece kombu", "6 dried shiitake", "1 block tofu", "2 scallions", "1 tsp grated ginger", "1 tbsp mirin"],
    ["Soak the kombu and shiitake in 4 cups water for 30 minutes.", "Simmer gently for 10 minutes, then remove the kombu.",
     "Add tofu, ginger and mirin and warm through.", "Top with scallions; no soy sauce or miso needed."],
)
MISO_SOUP = LOW_SODIUM_SOUP.replace("1 tbsp mirin", "3 tbsp miso paste").replace("ginger and mirin", "ginger and miso").replace(
    "no soy sauce or miso needed", "season with soy sauce to taste").replace("Light Kombu Shiitake Soup", "Miso Soup")
SALMON_NO_SESAME = recipe(
    "Yuzu Salmon", ["2 salmon fillets", "1 tbsp yuzu juice", "1 tsp grated ginger", "1 tbsp mirin", "daikon, grated"],
    ["Mix yuzu, ginger and mirin.", "Brush the salmon and bake 12 minutes at 200C.", "Serve with grated daikon."],
)
SALMON_SESAME = SALMON_NO_SESAME.replace("1 tsp grated ginger", "1 tbsp sesame seeds").replace("yuzu, ginger", "yuzu, sesame seeds")
JAPANESE_LOOP = "Umami delicate Japanese light balanced kombu shiitake yuzu. " * 12
JAPANESE_REPETITIVE = LOW_SODIUM_SOUP + "\n" + "\n".join(["Simmer gently for 10 minutes, then remove the kombu."] * 6)

# --- Mexican vegan -------------------------------------------------------------------------------
TACOS = recipe(
    "Smoky Black Bean Tacos",
    ["1 can black beans", "8 corn tortillas", "1 avocado", "1 lime", "cilantro", "1 chipotle in adobo"],
    ["Warm the beans with cumin and chipotle for 5 minutes.", "Char the tortillas over a flame.",
     "Fill with beans, avocado and cilantro and squeeze lime over."],
)
CHEESE_TACOS = TACOS.replace("1 avocado", "100 g cotija cheese").replace("beans, avocado", "beans, cotija")
MILD_TACOS = TACOS.replace("1 chipotle in adobo", "1 tsp smoked paprika").replace("cumin and chipotle", "cumin and paprika").replace(
    "Smoky Black Bean Tacos", "Mild Black Bean Tacos")
BUTTER_SWAP = recipe(
    "Vegan Elote", ["4 ears corn", "2 tbsp vegan butter", "1 lime", "chili powder", "cilantro"],
    ["Grill the corn for 10 minutes, turning.", "Brush with vegan butter instead of dairy butter.", "Squeeze lime and dust with chili powder."],
)
BUTTER_REAL = BUTTER_SWAP.replace("2 tbsp vegan butter", "2 tbsp butter").replace("Brush with vegan butter instead of dairy butter.",
                                                                                "Brush with butter and crumble cotija over.")
VEGAN_KEYWORDS = "Mexican smoky zesty plant-based vegan black beans pinto beans avocado corn tortillas lime cilantro jalapeno chipotle"
NO_MUSHROOM_TACOS = TACOS
MUSHROOM_TACOS = TACOS.replace("1 can black beans", "300 g mushrooms").replace("Warm the beans", "Saute the mushrooms").replace(
    "with beans,", "with mushrooms,").replace("Black Bean", "Mushroom")

# --- Chinese keto --------------------------------------------------------------------------------
CAULI_FRIED = recipe(
    "Keto Egg Stir-fry with Cauliflower Rice",
    ["4 cups cauliflower rice", "3 eggs", "200 g shrimp", "2 scallions", "1 tbsp sesame oil"],
    ["Scramble the eggs in a hot wok and set aside.", "Stir-fry the shrimp for 2 minutes.",
     "Add the cauliflower rice, not rice, and fry 5 minutes.", "Return the eggs, add scallions and sesame oil."],
)
RICE_FRIED = CAULI_FRIED.replace("4 cups cauliflower rice", "4 cups cooked white rice").replace("the cauliflower rice, not rice,", "the rice").replace(
    " with Cauliflower Rice", " with Rice")
BROCCOLI_BEEF = recipe(
    "Keto Broccoli Beef",
    ["300 g flank steak", "1 head broccoli", "2 cloves garlic", "1 tbsp ginger", "2 tbsp coconut aminos", "1 tbsp sesame oil"],
    ["Slice the steak thin and sear in a hot wok.", "Stir-fry broccoli, garlic and ginger for 3 minutes.",
     "Return the beef, add coconut aminos and sesame oil and toss."],
)
HONEY_BEEF = BROCCOLI_BEEF.replace("2 tbsp coconut aminos", "2 tbsp honey").replace("add coconut aminos", "add honey")
NOODLE_BEEF = BROCCOLI_BEEF.replace("1 head broccoli", "200 g lo mein noodles").replace("Stir-fry broccoli", "Stir-fry noodles")
KETO_KEYWORDS = "Chinese wok stir-fry savory keto bok choy broccoli pork belly chicken thighs ginger garlic sichuan peppercorn mushrooms"
MILD_MAPO = recipe(
    "Mild Mapo Tofu",
    ["1 block tofu", "150 g ground pork", "2 cloves garlic", "1 tbsp ginger", "2 scallions", "1 tbsp sesame oil"],
    ["Brown the pork in a wok.", "Add garlic and ginger and fry 1 minute.", "Add cubed tofu and half a cup of water and simmer 5 minutes.",
     "Finish with sesame oil and scallions."],
)
FIERY_MAPO = MILD_MAPO.replace("2 cloves garlic", "2 tbsp chili oil").replace("1 tbsp ginger", "1 tbsp sichuan peppercorn").replace(
    "Add garlic and ginger", "Add chili oil and sichuan peppercorn").replace("Mild Mapo Tofu", "Fiery Mapo Tofu")
PORK_MAPO = MILD_MAPO
TOFU_ONLY_MAPO = MILD_MAPO.replace("150 g ground pork", "200 g shiitake mushrooms").replace("Brown the pork", "Brown the chopped mushrooms")


PAIRS = [
    # The request's own constraints: an answer that ignores them loses.
    pytest.param(KOREAN, "Write a mild, kid-friendly bulgogi recipe without gochujang or any heat.", MILD_BULGOGI, FIERY_BULGOGI, id="korean-mild-no-gochujang"),
    pytest.param(KOREAN, "Cook me a plain steamed fish with no garlic and no chili.", STEAMED_FISH_PLAIN, STEAMED_FISH_GARLIC, id="korean-no-garlic"),
    pytest.param(KOREAN, "Kimchi jjigae but without pork belly, I don't eat pork.", KIMCHI_JJIGAE_NO_PORK, KIMCHI_JJIGAE, id="korean-without-pork"),
    pytest.param(INDIAN, "A tadka dal that is dairy-free, please.", DAL_NO_GHEE, DAL_GHEE, id="indian-dairy-free-request"),
    pytest.param(ITALIAN, "Creamy polenta, but I don't like mushrooms.", POLENTA_NO_MUSHROOM_REQUEST, POLENTA, id="italian-dont-like-mushrooms"),
    pytest.param(JAPANESE, "Baked salmon, no sesame: I am allergic to sesame.", SALMON_NO_SESAME, SALMON_SESAME, id="japanese-allergic-to-sesame"),
    pytest.param(VEGAN, "Mild tacos for my kids, not spicy.", MILD_TACOS, TACOS, id="vegan-mild-tacos"),
    pytest.param(VEGAN, "Tacos without mushrooms.", NO_MUSHROOM_TACOS, MUSHROOM_TACOS, id="vegan-without-mushrooms"),
    pytest.param(KETO, "Mapo tofu, mild please, no chili.", MILD_MAPO, FIERY_MAPO, id="keto-mild-mapo"),
    pytest.param(KETO, "Mapo tofu with mushrooms instead of pork.", TOFU_ONLY_MAPO, PORK_MAPO, id="keto-instead-of-pork"),
    pytest.param(KETO, "Broccoli beef with no sugar or honey.", BROCCOLI_BEEF, HONEY_BEEF, id="keto-no-honey-request"),
    # The persona's own lists, as before.
    pytest.param(INDIAN, "A quick curry for tonight.", NO_FUSS_CHANA, NO_FUSS_CHICKEN, id="indian-no-fuss-chicken-is-chicken"),
    pytest.param(ITALIAN, "Carbonara for two.", GF_CARBONARA, WHEAT_CARBONARA, id="italian-gluten-free-pasta"),
    pytest.param(JAPANESE, "A light soup for a cold evening.", LOW_SODIUM_SOUP, MISO_SOUP, id="japanese-no-miso"),
    pytest.param(VEGAN, "Tacos for dinner.", TACOS, CHEESE_TACOS, id="vegan-cotija"),
    pytest.param(VEGAN, "Grilled corn, street style.", BUTTER_SWAP, BUTTER_REAL, id="vegan-butter-instead-of"),
    pytest.param(KETO, "A fried rice I can eat on keto.", CAULI_FRIED, RICE_FRIED, id="keto-cauliflower-rice-not-rice"),
    pytest.param(KETO, "Beef stir-fry.", BROCCOLI_BEEF, NOODLE_BEEF, id="keto-noodles"),
    pytest.param(KETO, "Beef stir-fry, something sweet.", BROCCOLI_BEEF, HONEY_BEEF, id="keto-honey-persona-list"),
    # Keyword lists, filler and negated keywords are not recipes.
    pytest.param(KOREAN, "Something spicy and Korean for dinner.", KIMCHI_JJIGAE, KOREAN_KEYWORDS, id="korean-keyword-list"),
    pytest.param(KOREAN, "Something Korean for dinner.", KIMCHI_JJIGAE, NEGATED_PREFERRED, id="korean-negated-keywords"),
    pytest.param(INDIAN, "A vegetarian curry.", PANEER, FILLER, id="indian-filler"),
    pytest.param(INDIAN, "A lentil dish.", DAL_NO_GHEE, "Dal. Lentils. Cumin. Turmeric. Garam masala. Indian. Aromatic. Tadka.", id="indian-keyword-sentences"),
    pytest.param(ITALIAN, "Something Tuscan.", POLENTA, ITALIAN_KEYWORDS, id="italian-bulleted-keywords"),
    pytest.param(JAPANESE, "A light Japanese soup.", LOW_SODIUM_SOUP, "Umami, delicate, Japanese, light, balanced: kombu, shiitake, yuzu, ginger, scallion, daikon.", id="japanese-keyword-list"),
    pytest.param(VEGAN, "Vegan tacos.", TACOS, VEGAN_KEYWORDS, id="vegan-keyword-list"),
    pytest.param(KETO, "A keto stir-fry.", BROCCOLI_BEEF, KETO_KEYWORDS, id="keto-keyword-list"),
    pytest.param(VEGAN, "Vegan tacos.", TACOS, "Mexican vegan tacos are delicious and plant-based. You will love these smoky, zesty tacos with avocado and lime. Enjoy!", id="vegan-prose-without-recipe"),
    # Loops, repetition and cut-off answers.
    pytest.param(JAPANESE, "A light Japanese soup.", LOW_SODIUM_SOUP, JAPANESE_LOOP, id="japanese-loop"),
    pytest.param(JAPANESE, "A light Japanese soup.", LOW_SODIUM_SOUP, JAPANESE_REPETITIVE, id="japanese-repeated-step"),
    pytest.param(ITALIAN, "Risotto for four.", RISOTTO, RISOTTO_CUT, id="italian-cut-off"),
    pytest.param(INDIAN, "Palak paneer.", PANEER, PANEER.split("3. Stir")[0] + "3. Stir in the", id="indian-cut-off"),
    pytest.param(KOREAN, "Kimchi jjigae.", KIMCHI_JJIGAE, ("Kimchi jjigae is spicy. " * 20).strip(), id="korean-loop"),
    pytest.param(VEGAN, "Black bean tacos.", TACOS, TACOS + "\n" + ("Enjoy your tacos! " * 15), id="vegan-repeated-sign-off"),
    pytest.param(KETO, "A keto stir-fry.", BROCCOLI_BEEF, "Keto stir-fry keto stir-fry keto stir-fry " * 10, id="keto-loop"),
    # A real recipe beats half a recipe.
    pytest.param(KOREAN, "Kimchi jjigae.", KIMCHI_JJIGAE, "Kimchi Jjigae\n\nFry kimchi and pork, add water, simmer, add tofu.", id="korean-no-list-no-steps"),
    pytest.param(ITALIAN, "Polenta.", POLENTA, POLENTA.split("Instructions:")[0].strip(), id="italian-ingredients-only"),
    pytest.param(JAPANESE, "Yuzu salmon.", SALMON_NO_SESAME, "Yuzu Salmon\n\n" + SALMON_NO_SESAME.split("Instructions:")[1].strip(), id="japanese-steps-only"),
    pytest.param(INDIAN, "Chana masala.", NO_FUSS_CHANA, "Chana masala is a chickpea curry with cumin, turmeric and garam masala. It is delicious.", id="indian-description-only"),
    pytest.param(VEGAN, "Elote.", BUTTER_SWAP, "Vegan elote: corn, vegan butter, lime, chili powder, cilantro.", id="vegan-one-line"),
    pytest.param(KETO, "Keto fried rice.", CAULI_FRIED, "Use cauliflower rice, not rice. Add eggs and shrimp. Keto!", id="keto-tip-not-recipe"),
]


@pytest.mark.parametrize(("persona", "prompt", "better", "worse"), PAIRS)
def test_the_better_answer_wins_in_both_orders(persona, prompt, better, worse):
    judge = RuleJudge()
    [j] = judge.judge_pairs(persona, [PairItem("pair", prompt, better, worse)], both_orders=True)
    assert (j.status, j.winner) == ("ok", "a"), f"{j.scores_a} vs {j.scores_b}: {j.reason}"


def test_the_table_is_large_and_covers_every_persona():
    assert len(PAIRS) >= 40
    assert {p.values[0].id for p in PAIRS} == set(P)
